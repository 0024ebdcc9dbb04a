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
 * Requests to the hub through Moodle's curl wrapper (so the site's proxy settings apply).
 *
 * @package    local_mih
 * @copyright  2026 mih developers
 * @license    https://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */
final class http_client {
    /**
     * POSTs a body.
     *
     * @param string $url
     * @param string $body
     * @param string[] $headers "Name: value" lines
     * @param int $timeout seconds the whole request may take
     * @return http_answer
     */
    public function post(string $url, string $body, array $headers, int $timeout): http_answer {
        return $this->request('post', $url, $body, $headers, $timeout);
    }

    /**
     * GETs a URL.
     *
     * @param string $url
     * @param string[] $headers "Name: value" lines
     * @param int $timeout seconds
     * @return http_answer
     */
    public function get(string $url, array $headers, int $timeout): http_answer {
        return $this->request('get', $url, '', $headers, $timeout);
    }

    /**
     * Makes the request; a network failure is an answer with status 0 and the reason.
     *
     * @param string $method post or get
     * @param string $url
     * @param string $body
     * @param string[] $headers
     * @param int $timeout
     * @return http_answer
     */
    private function request(string $method, string $url, string $body, array $headers, int $timeout): http_answer {
        global $CFG;
        require_once($CFG->libdir . '/filelib.php');
        // The hub's address is set by a site administrator on this plugin's settings page;
        // it is usually on the local network, which Moodle's curl security blocks by default.
        $curl = new \curl(['ignoresecurity' => true]);
        // No "Expect: 100-continue" round trip before larger bodies.
        $curl->setHeader(array_merge($headers, ['Expect:']));
        $options = [
            'CURLOPT_TIMEOUT' => $timeout,
            'CURLOPT_CONNECTTIMEOUT' => min($timeout, 5),
            'CURLOPT_FOLLOWLOCATION' => false,
        ];
        $answer = $method === 'post' ? $curl->post($url, $body, $options) : $curl->get($url, [], $options);
        $info = $curl->get_info();
        $status = (int) ($info['http_code'] ?? 0);
        if ($curl->get_errno() !== 0 || $status === 0) {
            $reason = trim((string) $curl->error) ?: 'no answer';
            return new http_answer(0, '', [], $reason);
        }
        return new http_answer($status, is_string($answer) ? $answer : '', self::headers($curl->getResponse()), null);
    }

    /**
     * Response headers keyed by lower-case name.
     *
     * @param mixed $raw what \curl::getResponse() returned
     * @return array<string, string>
     */
    private static function headers(mixed $raw): array {
        $headers = [];
        foreach ((array) $raw as $name => $value) {
            $headers[strtolower(trim((string) $name))] = trim(is_array($value) ? (string) end($value) : (string) $value);
        }
        return $headers;
    }
}
