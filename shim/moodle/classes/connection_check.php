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
 * "Test connection": asks the hub whether it accepts this site's events and its API token,
 * and says in words what is wrong.
 *
 * @package    local_mih
 * @copyright  2026 mih developers
 * @license    https://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */
final class connection_check {
    /**
     * Checks with the given HTTP client.
     *
     * @param config $config
     * @param http_client $http
     */
    public function __construct(private readonly config $config, private readonly http_client $http = new http_client()) {
    }

    /**
     * Runs every check.
     *
     * @return array<string, array{ok: bool, message: string}> keyed ingest, api
     */
    public function run(): array {
        return ['ingest' => $this->ingest(), 'api' => $this->api()];
    }

    /**
     * Sends a signed empty batch: the hub checks the signature before the body, so its refusal
     * of the empty batch (400) means the source and secret are right, and nothing is stored.
     *
     * @return array{ok: bool, message: string}
     */
    public function ingest(): array {
        $missing = $this->config->missing_for_sending();
        if ($missing) {
            return self::result(false, 'check_missing', implode(', ', array_map(
                static fn($name) => get_string($name, 'local_mih'), $missing)));
        }
        try {
            $headers = array_merge(['Content-Type: application/json'],
                signer::headers($this->config->secret, $this->config->sourceid, '[]'));
        } catch (\invalid_parameter_exception $e) {
            return self::result(false, 'check_badsecret');
        }
        $answer = $this->http->post($this->config->ingesturl, '[]', $headers, $this->config->timeout);
        $words = (object) ['url' => $this->config->ingesturl, 'status' => $answer->status, 'message' => $answer->message()];
        return match (true) {
            $answer->status === 0 => self::result(false, 'check_unreachable', $words),
            $answer->status === 400 && $answer->json() !== null => self::result(true, 'check_ingest_ok', $words),
            $answer->status === 401 => self::result(false, 'check_ingest_unauthorised', $words),
            $answer->status === 403 => self::result(false, 'check_ingest_disabled', $words),
            $answer->status === 404 => self::result(false, 'check_ingest_notfound', $words),
            default => self::result(false, 'check_unexpected', $words),
        };
    }

    /**
     * Calls the facade for a service that cannot exist: 404 means the token may call services.
     *
     * @return array{ok: bool, message: string}
     */
    public function api(): array {
        if ($this->config->apiurl === '' || $this->config->apitoken === '') {
            return self::result(false, 'check_api_notconfigured');
        }
        $url = $this->config->apiurl . '/api/v1/services/-connection-check-/request';
        $headers = ['Content-Type: application/json', 'Authorization: Bearer ' . $this->config->apitoken];
        $answer = $this->http->post($url, '{}', $headers, $this->config->timeout);
        $words = (object) ['url' => $this->config->apiurl, 'status' => $answer->status, 'message' => $answer->message()];
        return match ($answer->status) {
            0 => self::result(false, 'check_unreachable', $words),
            404 => $answer->json() !== null
                ? self::result(true, 'check_api_ok', $words)
                : self::result(false, 'check_api_notfound', $words),
            401 => self::result(false, 'check_api_unauthorised', $words),
            403 => self::result(false, 'check_api_forbidden', $words),
            default => self::result(false, 'check_unexpected', $words),
        };
    }

    /**
     * One check's outcome, in the site's language.
     *
     * @param bool $ok
     * @param string $identifier language string
     * @param mixed $a its parameters
     * @return array{ok: bool, message: string}
     */
    private static function result(bool $ok, string $identifier, mixed $a = null): array {
        return ['ok' => $ok, 'message' => get_string($identifier, 'local_mih', $a)];
    }
}
