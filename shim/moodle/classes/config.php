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
 * The plugin's settings, read once per request and typed.
 *
 * @package    local_mih
 * @copyright  2026 mih developers
 * @license    https://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */
final class config {
    /** Events per request to ingest when nothing is configured. */
    public const DEFAULT_BATCH_SIZE = 100;
    /** Ingest accepts at most this many events per request by default (ingest.max_batch_events). */
    public const MAX_BATCH_SIZE = 1000;
    /** Seconds a request to ingest may take when nothing is configured. */
    public const DEFAULT_TIMEOUT = 3;

    /**
     * Builds the settings; use {@see self::load()} to read them from Moodle.
     *
     * @param bool $enabled forwarding is switched on
     * @param string $ingesturl the hub's ingest endpoint, e.g. https://hub.example.org/v1/events
     * @param string $apiurl the hub's API base URL, e.g. https://hub.example.org
     * @param string $sourceid the source this site is in the hub
     * @param string $secret the source's signing secret (whsec_…)
     * @param string $apitoken the API token the facade calls with
     * @param event_filter $filter which events are forwarded
     * @param int $batchsize events per request to ingest
     * @param int $timeout seconds a request to ingest may take
     * @param bool $receive inbound messages are pulled from the hub and raised as events
     */
    public function __construct(
        public readonly bool $enabled,
        public readonly string $ingesturl,
        public readonly string $apiurl,
        public readonly string $sourceid,
        public readonly string $secret,
        public readonly string $apitoken,
        public readonly event_filter $filter,
        public readonly int $batchsize,
        public readonly int $timeout,
        public readonly bool $receive = true,
    ) {
    }

    /**
     * Reads the settings from Moodle's configuration (cached by Moodle).
     *
     * @return self
     */
    public static function load(): self {
        $raw = get_config('local_mih');
        $get = static fn(string $name, string $default = ''): string =>
            isset($raw->$name) ? trim((string) $raw->$name) : $default;
        $batchsize = (int) $get('batchsize', (string) self::DEFAULT_BATCH_SIZE);
        $timeout = (int) $get('timeout', (string) self::DEFAULT_TIMEOUT);
        return new self(
            enabled: $get('enabled', '1') === '1',
            ingesturl: self::ingest_endpoint($get('ingesturl')),
            apiurl: rtrim($get('apiurl'), '/'),
            sourceid: $get('sourceid'),
            secret: $get('signingsecret'),
            apitoken: $get('apitoken'),
            filter: new event_filter($get('include', '*'), $get('exclude')),
            batchsize: max(1, min(self::MAX_BATCH_SIZE, $batchsize ?: self::DEFAULT_BATCH_SIZE)),
            timeout: max(1, min(60, $timeout ?: self::DEFAULT_TIMEOUT)),
            receive: $get('inbound', '1') === '1',
        );
    }

    /**
     * The same settings with another request timeout.
     *
     * @param int $timeout seconds
     * @return self
     */
    public function with_timeout(int $timeout): self {
        return new self($this->enabled, $this->ingesturl, $this->apiurl, $this->sourceid, $this->secret,
            $this->apitoken, $this->filter, $this->batchsize, max(1, $timeout), $this->receive);
    }

    /**
     * Whether events are recorded: switched on and enough is configured to send them later.
     *
     * @return bool
     */
    public function forwarding(): bool {
        return $this->enabled && $this->ingesturl !== '' && $this->sourceid !== '' && $this->secret !== '';
    }

    /**
     * What is missing before events can be sent, as setting names (empty when nothing is).
     *
     * @return string[]
     */
    public function missing_for_sending(): array {
        $missing = [];
        foreach (['ingesturl' => $this->ingesturl, 'sourceid' => $this->sourceid, 'signingsecret' => $this->secret] as $name => $value) {
            if ($value === '') {
                $missing[] = $name;
            }
        }
        return $missing;
    }

    /**
     * What is missing before inbound messages can be pulled, as setting names (empty when
     * nothing is): the hub's API answers for this site's source to its API token.
     *
     * @return string[]
     */
    public function missing_for_inbound(): array {
        $missing = [];
        foreach (['apiurl' => $this->apiurl, 'apitoken' => $this->apitoken, 'sourceid' => $this->sourceid] as $name => $value) {
            if ($value === '') {
                $missing[] = $name;
            }
        }
        return $missing;
    }

    /**
     * Accepts the hub's base URL or its ingest endpoint; answers the endpoint.
     *
     * @param string $url as the administrator typed it
     * @return string
     */
    public static function ingest_endpoint(string $url): string {
        $url = rtrim(trim($url), '/');
        if ($url === '' || str_ends_with($url, '/v1/events')) {
            return $url;
        }
        return $url . '/v1/events';
    }
}
