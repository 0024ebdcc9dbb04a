<?php
// The observer on the user's request: one row per forwarded event, nothing when switched off
// or excluded, and never an exception or error reaching the code that triggered the event.

use local_mih\outbox;
use PHPUnit\Framework\TestCase;

final class ObserverTest extends TestCase {
    protected function setUp(): void {
        global $DB;
        $DB->install_schema(STANDIN_PLUGIN . '/db/install.xml');
        foreach (['enabled' => 1, 'ingesturl' => 'http://127.0.0.1:9', 'sourceid' => 'site',
                'signingsecret' => 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'include' => '*', 'exclude' => ''] as $name => $value) {
            set_config($name, $value, 'local_mih');
        }
        standin_debugging::$messages = [];
        core_shutdown_manager::standin_forget();
    }

    protected function tearDown(): void {
        core_shutdown_manager::standin_forget();
    }

    private function trigger(string $name): void {
        standin_trigger(['eventname' => $name, 'crud' => 'c', 'userid' => 2]);
    }

    public function test_each_forwarded_event_is_one_row(): void {
        $this->trigger('\\core\\event\\user_created');
        $this->trigger('\\core\\event\\user_created');
        $this->assertSame(2, outbox::summary()->pending);
    }

    public function test_excluded_events_and_a_switched_off_plugin_record_nothing(): void {
        set_config('exclude', '\\core\\event\\course_viewed', 'local_mih');
        $this->trigger('\\core\\event\\course_viewed');
        set_config('exclude', '', 'local_mih');
        set_config('enabled', 0, 'local_mih');
        $this->trigger('\\core\\event\\user_created');
        set_config('enabled', 1, 'local_mih');
        set_config('signingsecret', '', 'local_mih');
        $this->trigger('\\core\\event\\user_created');
        $this->assertSame(0, outbox::summary()->pending);
    }

    public function test_a_failing_database_never_reaches_the_users_request(): void {
        global $DB;
        $DB->pdo->exec('DROP TABLE mdl_local_mih_outbox');
        $this->trigger('\\core\\event\\user_created');
        $this->assertStringContainsString('could not record \\core\\event\\user_created', implode("\n", standin_debugging::$messages));
    }

    public function test_even_a_php_error_in_the_observer_is_caught(): void {
        // Moodle's event manager catches exceptions only: an \Error would break the request.
        $db = $GLOBALS['DB'];
        $GLOBALS['DB'] = null;
        try {
            $this->trigger('\\core\\event\\user_created');
        } finally {
            $GLOBALS['DB'] = $db;
        }
        $this->assertStringContainsString('Error', implode("\n", standin_debugging::$messages));
    }
}
