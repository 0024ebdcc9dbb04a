<?php
// This file is part of local_mih, the Moodle side of mih (Moodle integration hub).
//
// local_mih is free software: you can redistribute it and/or modify it under the terms of
// the GNU General Public License as published by the Free Software Foundation, either
// version 3 of the License, or (at your option) any later version.
//
// local_mih is distributed in the hope that it will be useful, but WITHOUT ANY WARRANTY;
// without even the implied warranty of MERCHANTABILITY or FITNESS FOR A PARTICULAR PURPOSE.
// See the GNU General Public License for more details: <https://www.gnu.org/licenses/>.

namespace local_mih;

/**
 * Sends the outbox to the hub's ingest in signed batches, each event with its own identity,
 * and settles every row by the hub's answer: stored rows are deleted, refused ones parked,
 * the rest held back and tried again later.
 *
 * @package    local_mih
 * @copyright  2026 mih developers
 * @license    https://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */
final class sender {
    /** Batches sent at the end of a request at most; the scheduled task sends the rest. */
    public const SHUTDOWN_BATCHES = 3;
    /** Seconds an end-of-request send may take when the user's response waits for it. */
    public const BLOCKING_TIMEOUT = 1;

    /** @var bool whether this request already arranged to send at its end */
    private static bool $atshutdown = false;

    /** @var bool whether this run already ended the backoff of earlier failures */
    private bool $recovered = false;

    /** @var int events per request, lowered for this run when the hub finds a batch too big */
    private int $batchsize;

    /**
     * A sender with the site's settings.
     *
     * @param config $config
     * @param http_client $http
     */
    public function __construct(private readonly config $config, private readonly http_client $http = new http_client()) {
        $this->batchsize = $config->batchsize;
    }

    /**
     * Arranges, once per request, to send what the request recorded after its response is out.
     */
    public static function send_at_shutdown(): void {
        if (self::$atshutdown) {
            return;
        }
        self::$atshutdown = true;
        \core_shutdown_manager::register_function([self::class, 'shutdown']);
    }

    /**
     * The end-of-request send: one short attempt unless the hub is known to be failing (the
     * scheduled task then carries on at its own pace). Never throws.
     */
    public static function shutdown(): void {
        global $DB;
        try {
            // A request that ends inside a transaction (an error) has nothing committed to send.
            if ($DB->is_transaction_started() || outbox::backing_off()) {
                return;
            }
            $config = config::load();
            if (!CLI_SCRIPT && !self::release_browser()) {
                // The user's page waits for this send (no PHP-FPM): a healthy hub answers in
                // milliseconds, so a hung one may cost at most this, once per backoff.
                $config = $config->with_timeout(min($config->timeout, self::BLOCKING_TIMEOUT));
            }
            (new self($config))->send(self::SHUTDOWN_BATCHES);
        } catch (\Throwable $e) {
            observer::report('could not send the outbox at the end of the request', $e);
        }
    }

    /**
     * Moodle writes the session and ends the response only after every shutdown function has
     * run: release both first, so neither this response nor the user's next request (waiting
     * on the session lock) waits for the hub. Ending the response needs PHP-FPM.
     *
     * @return bool whether the response is finished
     */
    private static function release_browser(): bool {
        if (class_exists('\core\session\manager')) {
            \core\session\manager::write_close();
        }
        return function_exists('fastcgi_finish_request') && fastcgi_finish_request();
    }

    /**
     * Sends pending rows until the outbox is empty, the hub fails, or a limit is reached.
     *
     * @param int $maxbatches most requests to make
     * @param int $deadline stop starting new batches after this time (0: no deadline)
     * @param bool $ignorebackoff also send rows held back after a failure
     * @return send_report
     */
    public function send(int $maxbatches = PHP_INT_MAX, int $deadline = 0, bool $ignorebackoff = false): send_report {
        $report = new send_report();
        $missing = $this->config->missing_for_sending();
        if ($missing) {
            $report->stopped = 'not configured: ' . implode(', ', $missing);
            return $report;
        }
        for ($batch = 0; $batch < $maxbatches; $batch++) {
            if ($deadline && time() >= $deadline) {
                break;
            }
            $token = bin2hex(random_bytes(16));
            $rows = outbox::claim($this->batchsize, $token, $this->config->timeout + 30, $ignorebackoff);
            if (!$rows) {
                break;
            }
            $report->batches++;
            if (!$this->send_batch($rows, $token, $report)) {
                break;
            }
        }
        return $report;
    }

    /**
     * Sends one batch and settles its rows.
     *
     * @param \stdClass[] $rows claimed rows
     * @param string $token their claim
     * @param send_report $report
     * @return bool whether to go on with the next batch
     */
    private function send_batch(array $rows, string $token, send_report $report): bool {
        $items = [];
        foreach ($rows as $row) {
            $items[] = '{"idempotency_key":' . json_encode($row->uuid) . ',"event":' . $row->payload . '}';
        }
        $body = '[' . implode(',', $items) . ']';
        $headers = array_merge(
            ['Content-Type: application/json', 'Accept: application/json'],
            signer::headers($this->config->secret, $this->config->sourceid, $body)
        );
        $answer = $this->http->post($this->config->ingesturl, $body, $headers, $this->config->timeout);
        $status = $answer->status;

        if ($status >= 200 && $status < 300) {
            $this->stored($rows, $token, $report);
            if (!$this->recovered) {
                // The hub stores events again: what an earlier failure held back goes now.
                outbox::end_backoff();
                $this->recovered = true;
            }
            return true;
        }
        $retryafter = backoff::retry_after($answer->headers['retry-after'] ?? null);
        if ($status === 0) {
            return $this->hold($rows, $token, $report, 'the hub did not answer at ' . $this->config->ingesturl . ': ' . $answer->message(), 0);
        }
        if ($status === 503 || $status === 429 || $status >= 500) {
            $left = $this->settle_partial($rows, $token, $answer, $report);
            return $this->hold($left, $token, $report, "the hub could not store the events (HTTP {$status}): " . $answer->message(), $retryafter);
        }
        if ($status === 401 || $status === 403) {
            return $this->hold($rows, $token, $report, "the hub refused this site (HTTP {$status}): " . $answer->message()
                . ' — check the source id and signing secret in the plugin settings', $retryafter);
        }
        if ($status === 400 || $status === 413 || $status === 422) {
            return $this->refused($rows, $token, $answer, $report);
        }
        return $this->hold($rows, $token, $report, "the hub answered HTTP {$status} at " . $this->config->ingesturl
            . ': ' . $answer->message() . ' — check the hub ingest URL in the plugin settings', $retryafter);
    }

    /**
     * Deletes rows the hub stored (or already had).
     *
     * @param \stdClass[] $rows
     * @param string $token
     * @param send_report $report
     */
    private function stored(array $rows, string $token, send_report $report): void {
        outbox::delete(array_map(static fn($row) => (int) $row->id, $rows), $token);
        $report->sent += count($rows);
        foreach ($rows as $row) {
            $report->keys[] = $row->uuid;
        }
    }

    /**
     * From a 503 that lists which events were stored before the failure, deletes those.
     *
     * @param \stdClass[] $rows
     * @param string $token
     * @param http_answer $answer
     * @param send_report $report
     * @return \stdClass[] the rows not stored
     */
    private function settle_partial(array $rows, string $token, http_answer $answer, send_report $report): array {
        $stored = [];
        foreach (($answer->json()['events'] ?? []) as $item) {
            $index = $item['index'] ?? null;
            if (is_int($index) && isset($rows[$index]) && in_array($item['status'] ?? '', ['accepted', 'duplicate'], true)) {
                $stored[$index] = $rows[$index];
            }
        }
        if ($stored) {
            $this->stored(array_values($stored), $token, $report);
        }
        return array_values(array_diff_key($rows, $stored));
    }

    /**
     * The hub refused the request as invalid: parks the events it named, sends the others
     * again; when it named none, halves the batch until the culprit is alone, then parks it.
     *
     * @param \stdClass[] $rows
     * @param string $token
     * @param http_answer $answer
     * @param send_report $report
     * @return bool go on
     */
    private function refused(array $rows, string $token, http_answer $answer, send_report $report): bool {
        $reasons = [];
        foreach (($answer->json()['errors'] ?? []) as $error) {
            $index = $error['index'] ?? null;
            if (is_int($index) && isset($rows[$index])) {
                $field = isset($error['field']) ? $error['field'] . ': ' : '';
                $reasons[$index][] = $field . ($error['message'] ?? 'refused');
            }
        }
        if (!$reasons && count($rows) === 1) {
            $reasons[0][] = $answer->message();
        }
        if (!$reasons) {
            $this->batchsize = max(1, intdiv(count($rows), 2));
            outbox::release(array_map(static fn($row) => (int) $row->id, $rows), $token);
            return true;
        }
        foreach ($reasons as $index => $messages) {
            outbox::park((int) $rows[$index]->id, $token, "the hub refused the event (HTTP {$answer->status}): "
                . implode('; ', $messages));
            $report->parked++;
        }
        $others = array_diff_key($rows, $reasons);
        outbox::release(array_map(static fn($row) => (int) $row->id, $others), $token);
        return true;
    }

    /**
     * Holds rows back for a later try.
     *
     * @param \stdClass[] $rows
     * @param string $token
     * @param send_report $report
     * @param string $reason
     * @param int $retryafter seconds the hub asked for
     * @return bool false: stop sending for now
     */
    private function hold(array $rows, string $token, send_report $report, string $reason, int $retryafter): bool {
        if ($rows) {
            outbox::back_off($rows, $token, $reason, $retryafter);
        }
        $report->deferred += count($rows);
        $report->stopped = $reason;
        return false;
    }
}
