<?php
// Inbound messages without a hub: a message's mapping to the event, the event's own checks,
// the pull's URL, the hub's refusals in words, and what a pass does when it cannot start.

use local_mih\config;
use local_mih\event\webhook_received;
use local_mih\http_answer;
use local_mih\inbound;
use local_mih\outbox;
use PHPUnit\Framework\TestCase;

final class InboundTest extends TestCase {
    private const ID = '0193a8f0-6c1e-7cc4-9b0e-4f1f6d2b9a11';

    protected function setUp(): void {
        standin_config::$values = [];
        standin_debugging::$messages = [];
        core_shutdown_manager::standin_forget();
    }

    protected function tearDown(): void {
        core_shutdown_manager::standin_forget();
    }

    private static function message(array $changes = []): array {
        return array_merge([
            'cursor' => 17,
            'id' => self::ID,
            'service' => 'crm',
            'via' => 'webhook',
            'received_at' => '2026-12-06T10:00:00Z',
            'content_type' => 'application/json',
            'payload' => ['user' => ['id' => 7, 'tags' => ['a', 'b']], 'score' => 1.5, 'note' => null],
        ], $changes);
    }

    public function test_a_message_becomes_the_events_other(): void {
        $other = inbound::other(self::message());
        $this->assertSame([
            'serviceid' => 'crm',
            'servicename' => 'crm',
            'source' => 'webhook',
            'payload' => ['user' => ['id' => 7, 'tags' => ['a', 'b']], 'score' => 1.5, 'note' => null],
            'messageid' => self::ID,
        ], $other);
        $this->assertSame(17, inbound::cursor(self::message()));

        $text = inbound::other(self::message(['via' => 'amqp', 'payload' => 'plain text, not JSON']));
        $this->assertSame(['amqp', 'plain text, not JSON'], [$text['source'], $text['payload']]);
        $this->assertNull(inbound::other(self::message(['payload' => null]))['payload'], 'a JSON null body stays null');

        // Moodle (in developer mode) wants `other` to survive a JSON round trip unchanged.
        $this->assertSame($other, json_decode(json_encode($other), true));
    }

    public function test_a_message_without_what_the_event_needs_is_refused(): void {
        $broken = [
            'not an object' => 'just text',
            'no id' => self::message(['id' => null]),
            'empty service' => self::message(['service' => '']),
            'numeric via' => self::message(['via' => 3]),
        ];
        $withoutpayload = self::message();
        unset($withoutpayload['payload']);
        $broken['no payload'] = $withoutpayload;
        foreach ($broken as $case => $message) {
            try {
                inbound::other($message);
                $this->fail("{$case}: accepted");
            } catch (invalid_parameter_exception $e) {
                $this->assertNotSame('', $e->getMessage());
            }
        }
        $this->expectException(invalid_parameter_exception::class);
        inbound::cursor(self::message(['cursor' => '17']));
    }

    public function test_the_event_is_a_system_event_of_the_plugin_with_its_other(): void {
        $event = webhook_received::create(['userid' => 0, 'other' => inbound::other(self::message())]);
        $data = $event->get_data();
        $this->assertSame('\\local_mih\\event\\webhook_received', $data['eventname']);
        $this->assertSame(['local_mih', 'webhook', 'received'], [$data['component'], $data['target'], $data['action']]);
        $this->assertSame(['c', webhook_received::LEVEL_OTHER], [$data['crud'], $data['edulevel']]);
        $this->assertSame([1, 10, 0, 0], [$data['contextid'], $data['contextlevel'], $data['contextinstanceid'], $data['userid']]);
        $this->assertSame(self::ID, $data['other']['messageid']);
        $this->assertSame('Message received from the hub', webhook_received::get_name());
        $this->assertStringContainsString(self::ID, $event->get_description());
        $this->assertStringContainsString("'crm'", $event->get_description());
        $this->assertFalse(webhook_received::get_other_mapping());

        $nullpayload = inbound::other(self::message(['payload' => null]));
        $this->assertNull(webhook_received::create(['other' => $nullpayload])->get_data()['other']['payload']);
    }

    public function test_the_event_refuses_an_incomplete_other(): void {
        $good = inbound::other(self::message());
        $withoutpayload = $good;
        unset($withoutpayload['payload']);
        $cases = [
            'no other' => null,
            'a list' => ['crm'],
            'no messageid' => array_diff_key($good, ['messageid' => 1]),
            'empty servicename' => ['servicename' => ''] + $good,
            'numeric serviceid' => ['serviceid' => 4] + $good,
            'no payload' => $withoutpayload,
        ];
        foreach ($cases as $case => $other) {
            try {
                webhook_received::create(['other' => $other]);
                $this->fail("{$case}: created");
            } catch (coding_exception $e) {
                $this->assertStringContainsString('other', $e->getMessage(), $case);
            }
        }
    }

    public function test_the_plugins_own_observer_forwards_it_like_any_event(): void {
        // The hub, not the plugin, keeps inbound events from going back out (unless a rule names them).
        global $DB;
        $DB->install_schema(STANDIN_PLUGIN . '/db/install.xml');
        foreach (['ingesturl' => 'http://127.0.0.1:9', 'sourceid' => 'site',
                'signingsecret' => 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw'] as $name => $value) {
            set_config($name, $value, 'local_mih');
        }
        webhook_received::create(['userid' => 0, 'other' => inbound::other(self::message())])->trigger();
        $this->assertSame(1, outbox::summary()->pending);
        $this->assertSame([], standin_debugging::$messages);
    }

    public function test_the_pull_url_names_the_source_and_reads_after_a_cursor_only_when_given(): void {
        $this->assertSame('https://hub.example.org/api/v1/inbound?source=campus&limit=100&wait=5',
            inbound::pull_url('https://hub.example.org', 'campus', null, 100, 5));
        $this->assertSame('http://h/api/v1/inbound?source=a%20b&after=0&limit=1&wait=0',
            inbound::pull_url('http://h', 'a b', 0, 1, 0));
    }

    public function test_the_hubs_refusals_are_said_in_words(): void {
        $url = 'https://hub.example.org';
        $answer = static fn(int $status, string $body, ?string $error = null) => new http_answer($status, $body, [], $error);
        $this->assertNull(inbound::refusal($answer(200, '{"messages": []}'), $url));

        $cases = [
            [$answer(0, '', 'Failed to connect to hub.example.org port 443'), ['did not answer', $url, 'Failed to connect']],
            [$answer(200, '<html>proxy</html>'), ['not the JSON expected', 'proxy']],
            [$answer(401, '{"error": "unauthorized", "message": "the token is unknown"}'),
                ['refused the API token', 'the token is unknown', 'Hub API token']],
            [$answer(403, '{"error": "forbidden", "message": "viewers may not"}'), ['HTTP 403', 'viewers may not', 'operator role']],
            [$answer(404, 'Not Found'), ['HTTP 404', 'Hub API URL']],
            [$answer(422, '{"error": "unprocessable", "message": "the request is invalid; see errors", '
                . '"errors": [{"field": "source", "message": "no source `x`"}, {"field": "wait", "message": "at most 30"}]}'),
                ['HTTP 422', 'source: no source `x`; wait: at most 30', 'source id']],
            [$answer(503, '{"error": "unavailable", "message": "the database is down"}'), ['HTTP 503', 'the database is down', 'next run']],
            [$answer(500, ''), ['HTTP 500']],
            [$answer(418, 'teapot'), ['HTTP 418', 'teapot']],
        ];
        foreach ($cases as [$refused, $words]) {
            $said = inbound::refusal($refused, $url);
            foreach ($words as $word) {
                $this->assertStringContainsString($word, (string) $said, "HTTP {$refused->status}");
            }
        }
    }

    public function test_inbound_needs_the_api_url_token_and_source_and_can_be_switched_off(): void {
        $config = config::load();
        $this->assertTrue($config->receive, 'on by default');
        $this->assertSame(['apiurl', 'apitoken', 'sourceid'], $config->missing_for_inbound());
        $report = (new inbound($config))->pull();
        $this->assertSame([0, 0, 'not configured: apiurl, apitoken, sourceid'], [$report->pulls, $report->raised, $report->stopped]);

        foreach (['apiurl' => 'http://127.0.0.1:9/', 'apitoken' => 't', 'sourceid' => 's', 'inbound' => '0'] as $name => $value) {
            set_config($name, $value, 'local_mih');
        }
        $config = config::load();
        $this->assertFalse($config->receive);
        $this->assertSame([], $config->missing_for_inbound());
        $this->assertFalse($config->with_timeout(9)->receive, 'kept by with_timeout()');
    }

    public function test_an_unreachable_hub_stops_the_pass_in_words_and_raises_nothing(): void {
        foreach (['apiurl' => 'http://127.0.0.1:9', 'apitoken' => 't', 'sourceid' => 's', 'timeout' => 1] as $name => $value) {
            set_config($name, $value, 'local_mih');
        }
        $report = (new inbound(config::load()))->pull(0, 0);
        $this->assertSame([1, 0, null], [$report->pulls, $report->raised, $report->acknowledged]);
        $this->assertStringContainsString('the hub did not answer at http://127.0.0.1:9', (string) $report->stopped);
    }
}
