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
 * Sends the outbox to the hub now, including events held back after a failure.
 *
 * @package    local_mih
 * @copyright  2026 mih developers
 * @license    https://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */

define('CLI_SCRIPT', true);
require(__DIR__ . '/../../../config.php');
require_once($CFG->libdir . '/clilib.php');

[$options, $unrecognised] = cli_get_params(['wait' => false, 'keys' => false, 'help' => false], ['h' => 'help']);
if ($unrecognised) {
    cli_error(get_string('cliunknowoption', 'admin', implode("\n  ", $unrecognised)));
}
if ($options['help']) {
    echo "Sends local_mih's outbox to the hub now.

Options:
  --wait     respect the backoff after a failure (by default held-back events go too)
  --keys     print the identity of every event sent
  -h, --help this help

Exit status: 0 when the outbox was emptied (parked events aside), 1 when sending stopped.
";
    exit(0);
}

$report = (new \local_mih\sender(\local_mih\config::load()))->send(PHP_INT_MAX, 0, !$options['wait']);
echo "sent {$report->sent} events in {$report->batches} requests; parked {$report->parked}; held back {$report->deferred}\n";
if ($options['keys']) {
    foreach ($report->keys as $key) {
        echo "sent-key: {$key}\n";
    }
}
if ($report->stopped !== null) {
    cli_problem('stopped: ' . $report->stopped);
    exit(1);
}
