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

namespace local_mih\admin;

/**
 * The signing secret setting: refuses anything but a whsec_ secret, so a typo shows on save
 * instead of as refused events later.
 *
 * @package    local_mih
 * @copyright  2026 mih developers
 * @license    https://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */
class setting_secret extends \admin_setting_configpasswordunmask {
    /**
     * Validates the secret.
     *
     * @param string $data what was typed
     * @return true|string true, or the problem in words
     */
    public function validate($data) {
        $data = trim((string) $data);
        if ($data === '') {
            return true;
        }
        $key = str_starts_with($data, 'whsec_') ? base64_decode(substr($data, 6), true) : false;
        if ($key === false || strlen($key) < 16) {
            return get_string('invalidsecret', 'local_mih');
        }
        return true;
    }
}
