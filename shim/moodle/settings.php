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
 * Settings of local_mih, and its outbox page in the site administration.
 *
 * @package    local_mih
 * @copyright  2026 mih developers
 * @license    https://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */

defined('MOODLE_INTERNAL') || die();

if ($hassiteconfig) {
    $settings = new admin_settingpage('local_mih', get_string('pluginname', 'local_mih'));
    $ADMIN->add('localplugins', $settings);

    if ($ADMIN->fulltree) {
        $outboxurl = (new moodle_url('/local/mih/index.php'))->out(false);
        $settings->add(new admin_setting_heading('local_mih/events',
            get_string('heading_events', 'local_mih'), get_string('heading_events_desc', 'local_mih', $outboxurl)));
        $settings->add(new admin_setting_configcheckbox('local_mih/enabled',
            get_string('enabled', 'local_mih'), get_string('enabled_desc', 'local_mih'), 1));
        $settings->add(new admin_setting_configtext('local_mih/ingesturl',
            get_string('ingesturl', 'local_mih'), get_string('ingesturl_desc', 'local_mih'), '', PARAM_URL, 60));
        $settings->add(new admin_setting_configtext('local_mih/sourceid',
            get_string('sourceid', 'local_mih'), get_string('sourceid_desc', 'local_mih'), '', PARAM_ALPHANUMEXT, 30));
        $settings->add(new \local_mih\admin\setting_secret('local_mih/signingsecret',
            get_string('signingsecret', 'local_mih'), get_string('signingsecret_desc', 'local_mih'), ''));
        $settings->add(new admin_setting_configtextarea('local_mih/include',
            get_string('include', 'local_mih'), get_string('include_desc', 'local_mih'), '*', PARAM_RAW_TRIMMED, 60, 4));
        $settings->add(new admin_setting_configtextarea('local_mih/exclude',
            get_string('exclude', 'local_mih'), get_string('exclude_desc', 'local_mih'), '', PARAM_RAW_TRIMMED, 60, 4));
        $settings->add(new admin_setting_configtext('local_mih/batchsize',
            get_string('batchsize', 'local_mih'), get_string('batchsize_desc', 'local_mih'),
            \local_mih\config::DEFAULT_BATCH_SIZE, PARAM_INT, 6));
        $settings->add(new admin_setting_configtext('local_mih/timeout',
            get_string('timeout', 'local_mih'), get_string('timeout_desc', 'local_mih'),
            \local_mih\config::DEFAULT_TIMEOUT, PARAM_INT, 4));

        $settings->add(new admin_setting_heading('local_mih/facade',
            get_string('heading_facade', 'local_mih'), get_string('heading_facade_desc', 'local_mih')));
        $settings->add(new admin_setting_configtext('local_mih/apiurl',
            get_string('apiurl', 'local_mih'), get_string('apiurl_desc', 'local_mih'), '', PARAM_URL, 60));
        $settings->add(new admin_setting_configpasswordunmask('local_mih/apitoken',
            get_string('apitoken', 'local_mih'), get_string('apitoken_desc', 'local_mih'), ''));

        $settings->add(new admin_setting_heading('local_mih/inboundheading',
            get_string('heading_inbound', 'local_mih'), get_string('heading_inbound_desc', 'local_mih')));
        $settings->add(new admin_setting_configcheckbox('local_mih/inbound',
            get_string('inbound', 'local_mih'), get_string('inbound_desc', 'local_mih'), 1));
    }
}

// The outbox page is for whoever may see it, not only site administrators.
$ADMIN->add('reports', new admin_externalpage('local_mih_outbox', get_string('outbox', 'local_mih'),
    new moodle_url('/local/mih/index.php'), 'local/mih:view'));
