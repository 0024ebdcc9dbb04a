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
 * Version information for local_mih.
 *
 * @package    local_mih
 * @copyright  2026 mih developers
 * @license    https://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */

defined('MOODLE_INTERNAL') || die();

$plugin->component = 'local_mih';
$plugin->version = 2026120600;
$plugin->requires = 2022112800; // Moodle 4.1.
$plugin->supported = [401, 405];
$plugin->maturity = MATURITY_BETA;
$plugin->release = '0.2.0';
