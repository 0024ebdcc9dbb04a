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
 * What a call through the hub's facade returned: the fields of the original plugin's
 * mih_response, plus the state of the service's circuit and the call's id in the hub's log.
 *
 * @package    local_mih
 * @copyright  2026 mih developers
 * @license    https://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */
final class response {
    /**
     * The answer.
     *
     * @param bool $success the target answered with success
     * @param int|null $httpstatus the target's HTTP status (null when it was not reached)
     * @param string|null $body the target's response body (also on failure, to help debugging)
     * @param string|null $error why the call failed
     * @param int $latencyms how long the call took in the hub
     * @param int $attempts attempts the hub made (0 when nothing was sent)
     * @param string $circuit closed, open, half_open, or unknown
     * @param string|null $callid the call's id in the hub's delivery log
     * @param array<string, string> $headers the target's response headers
     */
    public function __construct(
        public readonly bool $success,
        public readonly ?int $httpstatus,
        public readonly ?string $body,
        public readonly ?string $error,
        public readonly int $latencyms,
        public readonly int $attempts,
        public readonly string $circuit,
        public readonly ?string $callid = null,
        public readonly array $headers = [],
    ) {
    }

    /**
     * The body decoded as JSON; null when there is no body.
     *
     * @param bool $assoc arrays rather than objects
     * @return mixed
     * @throws \coding_exception when the body is not JSON
     */
    public function json(bool $assoc = true): mixed {
        if ($this->body === null) {
            return null;
        }
        try {
            return json_decode($this->body, $assoc, 512, JSON_THROW_ON_ERROR);
        } catch (\JsonException $e) {
            throw new \coding_exception('Invalid JSON response: ' . $e->getMessage());
        }
    }

    /**
     * Whether the call succeeded.
     *
     * @return bool
     */
    public function is_ok(): bool {
        return $this->success;
    }
}
