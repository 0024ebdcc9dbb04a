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
 * Puts parked events (refused by the hub) back in line, or discards them.
 *
 * @package    local_mih
 * @copyright  2026 mih developers
 * @license    https://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */

define('CLI_SCRIPT', true);
require(__DIR__ . '/../../../config.php');
require_once($CFG->libdir . '/clilib.php');

[$options, $unrecognised] = cli_get_params(
    ['id' => '', 'all' => false, 'discard' => false, 'help' => false],
    ['h' => 'help']
);
if ($unrecognised) {
    cli_error(get_string('cliunknowoption', 'admin', implode("\n  ", $unrecognised)));
}
$ids = array_values(array_filter(array_map('intval', explode(',', (string) $options['id']))));
if ($options['help'] || (!$ids && !$options['all'])) {
    echo "Puts parked events back in line to be sent (or discards them).

Options:
  --id=N[,M…]  these parked events (ids from cli/status.php --parked)
  --all        every parked event
  --discard    delete them instead of retrying
  -h, --help   this help
";
    exit($options['help'] ? 0 : 2);
}
$which = $options['all'] ? null : $ids;
if ($options['discard']) {
    echo "discarded " . \local_mih\outbox::discard_parked($which) . " parked events\n";
} else {
    echo "put " . \local_mih\outbox::retry_parked($which) . " parked events back in line; they go with the next send\n";
}
