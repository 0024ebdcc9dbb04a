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

use local_mih\event\webhook_received;

/**
 * Messages from external services, which the hub keeps for this site's source, raised here as
 * `\local_mih\event\webhook_received` events: pull a batch, raise one event per message in
 * order, then acknowledge the last one raised. Only raised messages are acknowledged, so a
 * run that stops anywhere (an error, a crash) leaves the rest, and at worst raises the last
 * few again with the same message ids: nothing is ever skipped.
 *
 * @package    local_mih
 * @copyright  2026 mih developers
 * @license    https://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */
final class inbound {
    /**
     * Seconds a pull of the scheduled task waits for a message to arrive: cron runs its tasks
     * one after another, so a longer wait would hold the others up every minute.
     */
    public const WAIT = 5;
    /** The hub waits at most this long. */
    public const MAX_WAIT = 30;
    /** Messages per pull. */
    public const LIMIT = 100;
    /** The hub gives at most this many messages per pull. */
    public const MAX_LIMIT = 500;
    /** Seconds a request may take beyond the pull's wait, at least. */
    private const REQUEST_TIMEOUT = 10;

    /**
     * Pulls with the site's settings.
     *
     * @param config $config
     * @param http_client $http
     */
    public function __construct(private readonly config $config, private readonly http_client $http = new http_client()) {
    }

    /**
     * One pass: pulls, raises and acknowledges batches until the hub has nothing more, a
     * request fails, a message cannot be raised, or the deadline passes. Never throws.
     *
     * @param int $deadline start nothing new after this time (0: no deadline)
     * @param int $wait seconds each pull may wait for a message (0 to 30)
     * @param int $limit messages per pull (1 to 500)
     * @return inbound_report
     */
    public function pull(int $deadline = 0, int $wait = self::WAIT, int $limit = self::LIMIT): inbound_report {
        $report = new inbound_report();
        $missing = $this->config->missing_for_inbound();
        if ($missing) {
            $report->stopped = 'not configured: ' . implode(', ', $missing);
            return $report;
        }
        $wait = max(0, min(self::MAX_WAIT, $wait));
        $limit = max(1, min(self::MAX_LIMIT, $limit));
        $after = null;
        while (!$deadline || time() < $deadline) {
            $thiswait = $deadline ? min($wait, max(0, $deadline - time())) : $wait;
            $messages = $this->fetch($after, $limit, $thiswait, $report);
            if (!$messages) {
                break;
            }
            $last = $this->raise($messages, $deadline, $report);
            if ($last === null || !$this->acknowledge($last, $report) || $report->stopped !== null) {
                break;
            }
            $after = $last;
        }
        return $report;
    }

    /**
     * The URL of a pull.
     *
     * @param string $apiurl the hub's API base URL, without a trailing slash
     * @param string $source this site's source id
     * @param int|null $after the cursor to read after (null: after the source's acknowledged one)
     * @param int $limit
     * @param int $wait
     * @return string
     */
    public static function pull_url(string $apiurl, string $source, ?int $after, int $limit, int $wait): string {
        $query = ['source' => $source];
        if ($after !== null) {
            $query['after'] = $after;
        }
        $query += ['limit' => $limit, 'wait' => $wait];
        return $apiurl . '/api/v1/inbound?' . http_build_query($query, '', '&', PHP_QUERY_RFC3986);
    }

    /**
     * The event's `other` for a message as the hub gives it.
     *
     * @param mixed $message one item of the pull's `messages`
     * @return array{serviceid: string, servicename: string, source: string, payload: mixed, messageid: string}
     * @throws \invalid_parameter_exception when the message lacks what the event needs
     */
    public static function other(mixed $message): array {
        if (!is_array($message)) {
            throw new \invalid_parameter_exception('a message is not a JSON object');
        }
        foreach (['id', 'service', 'via'] as $key) {
            if (!isset($message[$key]) || !is_string($message[$key]) || $message[$key] === '') {
                throw new \invalid_parameter_exception("the message has no {$key}");
            }
        }
        if (!array_key_exists('payload', $message)) {
            throw new \invalid_parameter_exception('the message has no payload');
        }
        return [
            'serviceid' => $message['service'],
            'servicename' => $message['service'],
            'source' => $message['via'],
            'payload' => $message['payload'],
            'messageid' => $message['id'],
        ];
    }

    /**
     * A message's cursor, which acknowledges it and every message before it.
     *
     * @param mixed $message
     * @return int
     * @throws \invalid_parameter_exception
     */
    public static function cursor(mixed $message): int {
        if (!is_array($message) || !is_int($message['cursor'] ?? null)) {
            throw new \invalid_parameter_exception('the message has no integer cursor');
        }
        return $message['cursor'];
    }

    /**
     * Why an answer of the hub is not the JSON object asked for, in words for the task's
     * output, or null when it is.
     *
     * @param http_answer $answer
     * @param string $apiurl where the hub's API was called
     * @return string|null
     */
    public static function refusal(http_answer $answer, string $apiurl): ?string {
        $status = $answer->status;
        if ($status === 200 && $answer->json() !== null) {
            return null;
        }
        $words = self::hub_words($answer);
        return match (true) {
            $status === 0 => "the hub did not answer at {$apiurl}: {$words}",
            $status === 200 => "the hub's answer is not the JSON expected: {$words}",
            $status === 401 => "the hub refused the API token (HTTP 401): {$words} — "
                . 'check the Hub API token in the plugin settings',
            $status === 403 => "the hub does not let the API token read inbound messages (HTTP 403): {$words} — "
                . 'give the token the operator role',
            $status === 404 => "the hub answered HTTP 404 at {$apiurl}: {$words} — check the Hub API URL and the source id",
            $status === 422 => "the hub refused the request (HTTP 422): {$words} — check the source id in the plugin settings",
            $status >= 500 => "the hub could not answer (HTTP {$status}): {$words} — the next run tries again",
            default => "the hub answered HTTP {$status} at {$apiurl}: {$words}",
        };
    }

    /**
     * The hub's own words: its message, and for an invalid request which field is wrong.
     *
     * @param http_answer $answer
     * @return string
     */
    private static function hub_words(http_answer $answer): string {
        $words = $answer->message();
        $details = [];
        foreach (($answer->json()['errors'] ?? []) as $error) {
            if (is_array($error) && isset($error['message']) && is_string($error['message'])) {
                $field = isset($error['field']) && is_string($error['field']) ? $error['field'] . ': ' : '';
                $details[] = $field . $error['message'];
            }
        }
        return $details ? $words . ' (' . implode('; ', $details) . ')' : $words;
    }

    /**
     * Asks the hub for the next messages.
     *
     * @param int|null $after
     * @param int $limit
     * @param int $wait
     * @param inbound_report $report
     * @return array|null the messages (empty when there are none), null when the request failed
     */
    private function fetch(?int $after, int $limit, int $wait, inbound_report $report): ?array {
        $url = self::pull_url($this->config->apiurl, $this->config->sourceid, $after, $limit, $wait);
        $answer = $this->http->get($url, $this->headers(), $wait + max(self::REQUEST_TIMEOUT, $this->config->timeout));
        $report->pulls++;
        $refusal = self::refusal($answer, $this->config->apiurl);
        if ($refusal !== null) {
            $report->stopped = $refusal;
            return null;
        }
        $messages = $answer->json()['messages'] ?? null;
        if (!is_array($messages) || !array_is_list($messages)) {
            $report->stopped = "the hub's answer has no list of messages: " . mb_substr($answer->body, 0, 300);
            return null;
        }
        return $messages;
    }

    /**
     * Raises one event per message, in order, until one cannot be raised or time is up.
     *
     * @param array $messages
     * @param int $deadline
     * @param inbound_report $report
     * @return int|null the cursor of the last message raised, null when none was
     */
    private function raise(array $messages, int $deadline, inbound_report $report): ?int {
        $last = null;
        foreach ($messages as $message) {
            $cursor = null;
            try {
                $cursor = self::cursor($message);
                $other = self::other($message);
                // The message comes from an external system, not from whoever runs cron.
                webhook_received::create(['userid' => 0, 'other' => $other])->trigger();
            } catch (\Throwable $e) {
                // An \Error from an observer leaves Moodle's event manager mid-dispatch, so
                // nothing more can be raised in this process: stop, and leave this message and
                // those after it for the next run.
                $where = $cursor !== null ? "at cursor {$cursor}" : 'after cursor ' . ($last ?? 'the acknowledged one');
                $id = is_array($message) && is_string($message['id'] ?? null) ? " ({$message['id']})" : '';
                $report->stopped = "the message {$where}{$id} could not be raised: " . get_class($e) . ': '
                    . $e->getMessage() . ' — it and the messages after it wait for the next run';
                return $last;
            }
            $report->raised++;
            $report->messages[] = ['cursor' => $cursor, 'id' => $other['messageid'], 'service' => $other['servicename']];
            $last = $cursor;
            if ($deadline && time() >= $deadline) {
                break;
            }
        }
        return $last;
    }

    /**
     * Tells the hub every message up to a cursor was raised.
     *
     * @param int $cursor
     * @param inbound_report $report
     * @return bool whether the hub took it
     */
    private function acknowledge(int $cursor, inbound_report $report): bool {
        $body = json_encode(['source' => $this->config->sourceid, 'cursor' => $cursor]);
        $headers = array_merge(['Content-Type: application/json'], $this->headers());
        $answer = $this->http->post($this->config->apiurl . '/api/v1/inbound/ack', $body, $headers,
            max(self::REQUEST_TIMEOUT, $this->config->timeout));
        $refusal = self::refusal($answer, $this->config->apiurl);
        $acknowledged = $answer->json()['acknowledged'] ?? null;
        if ($refusal === null && !is_int($acknowledged)) {
            $refusal = "the hub's answer does not say what is acknowledged: " . mb_substr($answer->body, 0, 300);
        }
        if ($refusal !== null) {
            $report->stopped = "acknowledging up to cursor {$cursor} failed: {$refusal}; those messages will be raised again";
            return false;
        }
        $report->acknowledged = $acknowledged;
        return true;
    }

    /**
     * Headers of every request to the hub's API.
     *
     * @return string[]
     */
    private function headers(): array {
        return ['Accept: application/json', 'Authorization: Bearer ' . $this->config->apitoken];
    }
}
