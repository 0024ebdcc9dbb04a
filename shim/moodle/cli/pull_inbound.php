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
 * Pulls the messages the hub keeps for this site now and raises them as events, as the
 * scheduled task does every minute.
 *
 * @package    local_mih
 * @copyright  2026 mih developers
 * @license    https://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */

define('CLI_SCRIPT', true);
require(__DIR__ . '/../../../config.php');
require_once($CFG->libdir . '/clilib.php');

[$options, $unrecognised] = cli_get_params(
    ['wait' => 0, 'limit' => \local_mih\inbound::LIMIT, 'json' => false, 'help' => false],
    ['h' => 'help']
);
if ($unrecognised) {
    cli_error(get_string('cliunknowoption', 'admin', implode("\n  ", $unrecognised)));
}
if ($options['help']) {
    echo "Pulls the messages the hub keeps for this site and raises one
\\local_mih\\event\\webhook_received event per message, in order, until the hub has no more.

Options:
  --wait=N   seconds each pull may wait for a message to arrive (0 to 30; default 0)
  --limit=N  messages per pull (1 to 500; default 100)
  --json     print what was done as JSON, with every message raised
  -h, --help this help

Exit status: 0 when every message was raised and acknowledged, 1 when the pass stopped
(the reason is printed; the messages not acknowledged are raised by the next pass).
";
    exit(0);
}

$config = \local_mih\config::load();
if (!$config->receive) {
    cli_problem('Receiving inbound messages is switched off (setting "' . get_string('inbound', 'local_mih')
        . '"); nothing pulled.');
    exit(1);
}
// The scheduled task's own lock: a pass running alongside it would raise the same messages twice.
$lock = \core\lock\lock_config::get_lock_factory('cron')->get_lock('\\' . \local_mih\task\pull_inbound::class, 10);
if (!$lock) {
    cli_problem('Another pass is pulling inbound messages (the scheduled task?); try again in a minute.');
    exit(1);
}
try {
    $report = (new \local_mih\inbound($config))->pull(0, (int) $options['wait'], (int) $options['limit']);
} finally {
    $lock->release();
}
if ($options['json']) {
    echo json_encode($report, JSON_PRETTY_PRINT | JSON_UNESCAPED_SLASHES) . "\n";
} else {
    $acknowledged = $report->acknowledged === null ? 'nothing acknowledged' : "acknowledged up to cursor {$report->acknowledged}";
    echo "raised {$report->raised} events from {$report->pulls} pulls; {$acknowledged}\n";
}
if ($report->stopped !== null) {
    cli_problem('stopped: ' . $report->stopped);
    exit(1);
}
