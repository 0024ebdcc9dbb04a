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
 * Upgrade steps of local_mih's database tables.
 *
 * @package    local_mih
 * @copyright  2026 mih developers
 * @license    https://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */

/**
 * Brings the plugin's tables from an older version to this one.
 *
 * @param int $oldversion the version installed before this upgrade
 * @return bool
 */
function xmldb_local_mih_upgrade($oldversion) {
    // The first release: every later schema change adds a step here, guarded by
    // `if ($oldversion < YYYYMMDDXX)` and ending with upgrade_plugin_savepoint().
    return true;
}
