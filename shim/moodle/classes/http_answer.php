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
 * What the hub answered, or why it did not.
 *
 * @package    local_mih
 * @copyright  2026 mih developers
 * @license    https://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */
final class http_answer {
    /**
     * The answer.
     *
     * @param int $status HTTP status, 0 when there was no answer
     * @param string $body
     * @param array<string, string> $headers lower-case names
     * @param string|null $error why there was no answer (connection refused, timeout…)
     */
    public function __construct(
        public readonly int $status,
        public readonly string $body,
        public readonly array $headers,
        public readonly ?string $error,
    ) {
    }

    /**
     * The body as JSON, or null when it is not JSON.
     *
     * @return array|null
     */
    public function json(): ?array {
        $decoded = json_decode($this->body, true);
        return is_array($decoded) ? $decoded : null;
    }

    /**
     * The hub's own words for a refusal: its JSON message, else the start of the body.
     *
     * @return string
     */
    public function message(): string {
        if ($this->error !== null) {
            return $this->error;
        }
        $json = $this->json();
        if (isset($json['message']) && is_string($json['message'])) {
            return $json['message'];
        }
        $text = trim(strip_tags($this->body));
        return $text === '' ? 'HTTP ' . $this->status : mb_substr($text, 0, 300);
    }
}
