<?php
// The plugin's logic that needs no database: filters, signatures, backoff, records, responses.

use local_mih\backoff;
use local_mih\config;
use local_mih\event_filter;
use local_mih\event_record;
use local_mih\response;
use local_mih\signer;
use PHPUnit\Framework\TestCase;

final class PureTest extends TestCase {
    public function test_patterns_include_and_exclude_with_wildcards(): void {
        $all = new event_filter('*', "\\core\\event\\course_viewed\n\\mod_forum\\*");
        $this->assertTrue($all->accepts('\\core\\event\\user_created'));
        $this->assertFalse($all->accepts('\\core\\event\\course_viewed'));
        $this->assertFalse($all->accepts('\\mod_forum\\event\\post_created'));
        $this->assertTrue($all->accepts('\\mod_forumng\\event\\x'), 'a component prefix is not a wildcard');

        $some = new event_filter('core\\event\\user_*, \\core\\event\\COURSE_created', '');
        $this->assertTrue($some->accepts('\\core\\event\\user_graded'), 'leading backslash optional');
        $this->assertTrue($some->accepts('\\core\\event\\course_created'), 'case does not matter');
        $this->assertFalse($some->accepts('\\core\\event\\course_deleted'));
        $this->assertFalse((new event_filter('', ''))->accepts('\\core\\event\\user_created'), 'nothing included');
        $this->assertFalse((new event_filter('a.b', ''))->accepts('\\aXb'), 'dots are literal');
    }

    public function test_signatures_match_the_standard_webhooks_reference_vector(): void {
        $this->assertSame(
            'v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=',
            signer::signature('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'msg_p5jXN8AQM9LWM0D4loKWxJek', 1614265330,
                '{"test": 2432232314}')
        );
        $headers = signer::headers('whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'site-a', '[]');
        $this->assertCount(4, $headers);
        $this->assertContains('mih-source: site-a', $headers);
        $this->expectException(invalid_parameter_exception::class);
        signer::signature('not-a-secret', 'msg', 1, '');
    }

    public function test_backoff_doubles_up_to_a_cap_and_honours_retry_after(): void {
        $first = backoff::delay(1);
        $this->assertGreaterThanOrEqual(backoff::FIRST, $first);
        $this->assertLessThanOrEqual(backoff::FIRST * 1.2, $first);
        $this->assertGreaterThanOrEqual(backoff::FIRST * 8, backoff::delay(4));
        $this->assertLessThanOrEqual(backoff::LONGEST * 1.2, backoff::delay(40));
        $this->assertGreaterThanOrEqual(600, backoff::delay(1, 600));
        $this->assertSame(30, backoff::retry_after('30'));
        $this->assertSame(0, backoff::retry_after('soon'));
        $this->assertEqualsWithDelta(120, backoff::retry_after(gmdate('D, d M Y H:i:s \G\M\T', time() + 120)), 2);
    }

    public function test_a_record_keeps_the_event_and_its_ids(): void {
        $class = standin_event_class('\\core\\event\\user_graded');
        $event = $class::create(['objectid' => '41', 'contextid' => 12, 'userid' => '2', 'relateduserid' => null,
            'other' => ['itemid' => 3, 'name' => "bad \xB1 utf-8"], 'timecreated' => 1772000000]);
        $record = event_record::of($event);
        $this->assertMatchesRegularExpression('/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/', $record->uuid);
        $this->assertNotSame($record->uuid, event_record::of($event)->uuid);
        $this->assertSame('\\core\\event\\user_graded', $record->eventname);
        $this->assertSame([12, 2, null, 1772000000], [$record->contextid, $record->userid, $record->relateduserid, $record->timecreated]);
        $payload = json_decode($record->payload, true);
        $this->assertSame($event->get_data()['objectid'], $payload['objectid'], 'values keep their PHP types');
        $this->assertSame(array_keys($event->get_data()), array_slice(array_keys($payload), 0, 17));
        $this->assertStringContainsString("\u{FFFD}", $payload['other']['name'], 'invalid UTF-8 is replaced, not fatal');
    }

    public function test_settings_are_typed_and_bounded(): void {
        set_config('ingesturl', 'https://hub.example.org/', 'local_mih');
        set_config('batchsize', '100000', 'local_mih');
        set_config('timeout', '0', 'local_mih');
        $config = config::load();
        $this->assertSame('https://hub.example.org/v1/events', $config->ingesturl);
        $this->assertSame(config::MAX_BATCH_SIZE, $config->batchsize);
        $this->assertSame(config::DEFAULT_TIMEOUT, $config->timeout);
        $this->assertSame('https://hub.example.org/v1/events', config::ingest_endpoint('https://hub.example.org/v1/events'));
    }

    public function test_responses_decode_their_body_or_say_it_is_not_json(): void {
        $ok = new response(true, 200, '{"a": 1}', null, 12, 1, 'closed');
        $this->assertSame(['a' => 1], $ok->json());
        $this->assertSame(1, $ok->json(false)->a);
        $this->assertTrue($ok->is_ok());
        $this->assertNull((new response(false, null, null, 'x', 0, 0, 'open'))->json());
        $this->expectException(coding_exception::class);
        (new response(true, 200, 'not json', null, 1, 1, 'closed'))->json();
    }
}
