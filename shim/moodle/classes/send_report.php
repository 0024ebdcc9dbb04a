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
 * What one run of the sender did.
 *
 * @package    local_mih
 * @copyright  2026 mih developers
 * @license    https://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */
final class send_report {
    /** @var int requests made to the hub */
    public int $batches = 0;
    /** @var int events the hub stored (or already had) */
    public int $sent = 0;
    /** @var int events the hub refused, now parked */
    public int $parked = 0;
    /** @var int events held back for a later try */
    public int $deferred = 0;
    /** @var string|null why sending stopped before the outbox was empty */
    public ?string $stopped = null;
    /** @var string[] identities of the events sent */
    public array $keys = [];
}
