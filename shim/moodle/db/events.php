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

/**
 * Event observers: one for every event of the site.
 *
 * @package    local_mih
 * @copyright  2026 mih developers
 * @license    https://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */

defined('MOODLE_INTERNAL') || die();

// `internal => true` runs the observer inside the event's own database transaction, so the
// outbox row commits or rolls back with the change that raised the event (a transactional
// outbox). The observer only inserts one row; sending happens after the response.
$observers = [
    [
        'eventname' => '*',
        'callback' => '\local_mih\observer::record',
        'internal' => true,
        'priority' => -1000,
    ],
];
