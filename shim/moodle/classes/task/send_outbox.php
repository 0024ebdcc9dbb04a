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
use local_mih\outbox;
use local_mih\sender;

/**
 * Every minute: sends what the end-of-request sends left in the outbox (a hub outage's
 * backlog, in batches), within most of the minute.
 *
 * @package    local_mih
 * @copyright  2026 mih developers
 * @license    https://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */
class send_outbox extends \core\task\scheduled_task {
    /** Seconds a run may start new batches for, so runs do not pile up. */
    private const BUDGET = 50;

    /**
     * The task's name on the scheduled tasks page.
     *
     * @return string
     */
    public function get_name() {
        return get_string('task_send_outbox', 'local_mih');
    }

    /**
     * Sends the outbox.
     */
    public function execute() {
        $config = config::load();
        if (!$config->enabled) {
            mtrace('local_mih: forwarding is switched off; nothing sent.');
            return;
        }
        $report = (new sender($config))->send(PHP_INT_MAX, time() + self::BUDGET);
        $summary = outbox::summary();
        mtrace("local_mih: sent {$report->sent} events in {$report->batches} requests, parked {$report->parked}, "
            . "held back {$report->deferred}; {$summary->pending} waiting, {$summary->parked} parked.");
        if ($report->stopped !== null) {
            // Details of the events stay out of the task log: they may be personal data.
            mtrace('local_mih: stopped: ' . $report->stopped);
        }
    }
}
