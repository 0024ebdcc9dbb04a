<?php
// Every language pack has exactly the English keys, with the same placeholders.

use PHPUnit\Framework\TestCase;

final class LangTest extends TestCase {
    private const LANGUAGES = ['es', 'fr', 'it', 'pt_br'];

    private static function pack(string $lang): array {
        $string = [];
        include(STANDIN_PLUGIN . "/lang/{$lang}/local_mih.php");
        return $string;
    }

    private static function placeholders(string $text): array {
        preg_match_all('/\{\$a(?:->[a-z_]+)?\}/', $text, $matches);
        sort($matches[0]);
        return $matches[0];
    }

    public function test_english_has_the_strings_the_code_uses(): void {
        $en = self::pack('en');
        $code = '';
        $files = new RecursiveIteratorIterator(new RecursiveDirectoryIterator(STANDIN_PLUGIN));
        foreach ($files as $file) {
            if ($file->getExtension() === 'php' && !str_contains($file->getPathname(), '/lang/')) {
                $code .= file_get_contents($file->getPathname());
            }
        }
        preg_match_all("/(?:get_string|moodle_exception)\('([a-z_:]+)', '(local_mih)'/", $code, $calls);
        preg_match_all("/'(privacy:[a-z:_]+)'/", $code, $privacy);
        preg_match_all("/self::result\((?:true|false), '([a-z_]+)'/", $code, $checks);
        $used = array_unique(array_merge($calls[1], $privacy[1], $checks[1]));
        $missing = array_diff($used, array_keys($en));
        $this->assertSame([], array_values($missing), 'strings used but not in lang/en');
        foreach (['ingest', 'api'] as $check) {
            $this->assertArrayHasKey("check_{$check}_title", $en);
        }
    }

    public function test_every_pack_has_every_key_and_placeholder_of_english(): void {
        $en = self::pack('en');
        foreach (self::LANGUAGES as $lang) {
            $pack = self::pack($lang);
            $this->assertSame([], array_keys(array_diff_key($en, $pack)), "{$lang} lacks these keys");
            $this->assertSame([], array_keys(array_diff_key($pack, $en)), "{$lang} has keys English does not");
            foreach ($en as $key => $text) {
                $this->assertSame(self::placeholders($text), self::placeholders($pack[$key]), "{$lang}: {$key}");
                $this->assertNotSame('', trim($pack[$key]), "{$lang}: {$key} is empty");
            }
        }
    }
}
