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
 * Shows what the outbox holds; --parked lists the events the hub refused, with its reasons.
 *
 * @package    local_mih
 * @copyright  2026 mih developers
 * @license    https://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */

define('CLI_SCRIPT', true);
require(__DIR__ . '/../../../config.php');
require_once($CFG->libdir . '/clilib.php');

[$options, $unrecognised] = cli_get_params(['parked' => false, 'json' => false, 'help' => false], ['h' => 'help']);
if ($unrecognised) {
    cli_error(get_string('cliunknowoption', 'admin', implode("\n  ", $unrecognised)));
}
if ($options['help']) {
    echo "Shows what local_mih's outbox holds.

Options:
  --parked   also list the parked events (refused by the hub) with the hub's reasons
  --json     print JSON instead of text
  -h, --help this help

Example: php local/mih/cli/status.php --parked
";
    exit(0);
}

$summary = \local_mih\outbox::summary();
$config = \local_mih\config::load();
$summary->forwarding = $config->forwarding();
if ($options['parked']) {
    $summary->parkedevents = \local_mih\outbox::parked(1000);
}
if ($options['json']) {
    echo json_encode($summary, JSON_PRETTY_PRINT | JSON_UNESCAPED_SLASHES) . "\n";
    exit(0);
}
$when = static fn($time) => $time ? date('Y-m-d H:i:s', (int) $time) : '-';
echo "forwarding:   " . ($summary->forwarding ? 'on' : 'off (switched off or not configured)') . "\n";
echo "pending:      {$summary->pending} (of which {$summary->waiting} held back after a failure)\n";
echo "parked:       {$summary->parked}\n";
echo "oldest:       " . $when($summary->oldest) . "\n";
echo "next attempt: " . $when($summary->nextattempt) . "\n";
echo "last error:   " . ($summary->lasterror ?? '-') . "\n";
foreach ($summary->parkedevents ?? [] as $row) {
    echo "  #{$row->id} {$row->eventname} at " . $when($row->timecreated) . ": {$row->lasterror}\n";
}
