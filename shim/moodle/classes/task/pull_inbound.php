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

namespace local_mih\task;

use local_mih\config;
use local_mih\inbound;

/**
 * Every minute: raises the messages the hub keeps for this site as
 * `\local_mih\event\webhook_received` events, within most of the minute.
 *
 * @package    local_mih
 * @copyright  2026 mih developers
 * @license    https://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */
class pull_inbound extends \core\task\scheduled_task {
    /** Seconds a run may start new pulls for, so it is over before the next run is due. */
    private const BUDGET = 50;

    /**
     * The task's name on the scheduled tasks page.
     *
     * @return string
     */
    public function get_name() {
        return get_string('task_pull_inbound', 'local_mih');
    }

    /**
     * Pulls and raises the messages. A failure is reported in the task's output, never thrown:
     * the messages stay in the hub and the next run tries again.
     */
    public function execute() {
        $config = config::load();
        if (!$config->receive) {
            mtrace('local_mih: receiving inbound messages is switched off; nothing pulled.');
            return;
        }
        $missing = $config->missing_for_inbound();
        if ($missing) {
            mtrace('local_mih: inbound messages are not pulled until these settings are set: ' . implode(', ', array_map(
                static fn($name) => get_string($name, 'local_mih'), $missing)) . '.');
            return;
        }
        $report = (new inbound($config))->pull(time() + self::BUDGET, inbound::WAIT);
        $acknowledged = $report->acknowledged === null
            ? 'nothing acknowledged'
            : "acknowledged up to cursor {$report->acknowledged}";
        mtrace("local_mih: raised {$report->raised} inbound messages from {$report->pulls} pulls; {$acknowledged}.");
        if ($report->stopped !== null) {
            mtrace('local_mih: stopped: ' . $report->stopped);
        }
    }
}
