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
 * How long to hold events back after the hub failed to store them.
 *
 * @package    local_mih
 * @copyright  2026 mih developers
 * @license    https://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */
final class backoff {
    /** Seconds after the first failure. */
    public const FIRST = 15;
    /** Never longer than this between tries. */
    public const LONGEST = 900;

    /**
     * Seconds before the next try: doubling from FIRST up to LONGEST, with up to 20% jitter so
     * sites recovering together do not return at once, and never less than the hub asked.
     *
     * @param int $attempts failed attempts so far (1 after the first failure)
     * @param int $retryafter seconds the hub's Retry-After asked for (0 when absent)
     * @return int
     */
    public static function delay(int $attempts, int $retryafter = 0): int {
        $exponent = max(0, min($attempts - 1, 16));
        $base = min(self::LONGEST, self::FIRST * (2 ** $exponent));
        $jittered = $base + random_int(0, intdiv($base, 5));
        return max($jittered, min($retryafter, 86400));
    }

    /**
     * Seconds a Retry-After header asks for: delay-seconds or an HTTP date; 0 when absent or
     * unreadable.
     *
     * @param string|null $value
     * @return int
     */
    public static function retry_after(?string $value): int {
        $value = trim((string) $value);
        if ($value === '') {
            return 0;
        }
        if (ctype_digit($value)) {
            return (int) $value;
        }
        $when = strtotime($value);
        return $when === false ? 0 : max(0, $when - time());
    }
}
