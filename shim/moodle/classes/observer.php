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
 * Records every event of the site in the outbox, for sending after the response.
 *
 * @package    local_mih
 * @copyright  2026 mih developers
 * @license    https://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */
final class observer {
    /**
     * Called by Moodle for every event, inside the event's database transaction when there is
     * one. Costs one insert; never throws, so forwarding can never break the user's request.
     *
     * @param \core\event\base $event the event just triggered
     */
    public static function record(\core\event\base $event): void {
        try {
            $config = config::load();
            if (!$config->forwarding() || !$config->filter->accepts($event->eventname)) {
                return;
            }
            outbox::add(event_record::of($event));
            sender::send_at_shutdown();
        } catch (\Throwable $e) {
            $name = isset($event->eventname) ? (string) $event->eventname : get_class($event);
            self::report("could not record {$name} in the outbox", $e);
        }
    }

    /**
     * Logs a failure for the site's administrators without showing it to the user.
     *
     * @param string $what what failed
     * @param \Throwable $e why
     */
    public static function report(string $what, \Throwable $e): void {
        $message = 'local_mih: ' . $what . ': ' . get_class($e) . ': ' . $e->getMessage();
        error_log($message);
        if (function_exists('debugging')) {
            debugging($message, DEBUG_DEVELOPER);
        }
    }
}
