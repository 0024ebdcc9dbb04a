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
 * Standard Webhooks signatures (https://www.standardwebhooks.com), as the hub verifies them.
 *
 * @package    local_mih
 * @copyright  2026 mih developers
 * @license    https://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */
final class signer {
    /**
     * The headers of a signed request from this site.
     *
     * @param string $secret whsec_… as the hub issued it
     * @param string $sourceid the site's source id in the hub
     * @param string $body the exact bytes sent
     * @param string|null $messageid webhook-id (a fresh one when null)
     * @param int|null $timestamp Unix seconds (now when null)
     * @return string[] "Name: value" lines
     */
    public static function headers(string $secret, string $sourceid, string $body, ?string $messageid = null,
            ?int $timestamp = null): array {
        $messageid ??= 'msg_' . bin2hex(random_bytes(12));
        $timestamp ??= time();
        return [
            'webhook-id: ' . $messageid,
            'webhook-timestamp: ' . $timestamp,
            'webhook-signature: ' . self::signature($secret, $messageid, $timestamp, $body),
            'mih-source: ' . $sourceid,
        ];
    }

    /**
     * The signature of a request: v1, then base64 of HMAC-SHA256 over "id.timestamp.body".
     *
     * @param string $secret whsec_ and the base64 key
     * @param string $messageid
     * @param int $timestamp
     * @param string $body
     * @return string
     * @throws \invalid_parameter_exception when the secret is not a whsec_ secret
     */
    public static function signature(string $secret, string $messageid, int $timestamp, string $body): string {
        $mac = hash_hmac('sha256', $messageid . '.' . $timestamp . '.' . $body, self::key($secret), true);
        return 'v1,' . base64_encode($mac);
    }

    /**
     * The key inside a secret.
     *
     * @param string $secret
     * @return string raw bytes
     * @throws \invalid_parameter_exception
     */
    private static function key(string $secret): string {
        $encoded = str_starts_with($secret, 'whsec_') ? substr($secret, 6) : $secret;
        $key = base64_decode($encoded, true);
        if ($key === false || strlen($key) < 16) {
            throw new \invalid_parameter_exception(
                'the signing secret must be the whsec_… value the hub shows for this source'
            );
        }
        return $key;
    }
}
