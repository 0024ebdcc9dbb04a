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
 * What one pass over the hub's inbound messages did.
 *
 * @package    local_mih
 * @copyright  2026 mih developers
 * @license    https://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */
final class inbound_report {
    /** @var int requests for messages made to the hub */
    public int $pulls = 0;
    /** @var int events raised, one per message */
    public int $raised = 0;
    /** @var int|null the source's acknowledged cursor as the hub last answered it (null: nothing acknowledged) */
    public ?int $acknowledged = null;
    /** @var array<int, array{cursor: int, id: string, service: string}> the messages raised, in order */
    public array $messages = [];
    /** @var string|null why the pass stopped before the hub had nothing more to give */
    public ?string $stopped = null;
}
