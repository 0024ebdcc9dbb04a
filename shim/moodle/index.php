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
 * The outbox page: what waits to be sent, what the hub refused and why; send now, retry or
 * discard refused events, and test the connection to the hub.
 *
 * @package    local_mih
 * @copyright  2026 mih developers
 * @license    https://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */

require_once(__DIR__ . '/../../config.php');
require_once($CFG->libdir . '/adminlib.php');

use local_mih\config;
use local_mih\connection_check;
use local_mih\outbox;
use local_mih\sender;

admin_externalpage_setup('local_mih_outbox');
$context = context_system::instance();
$pageurl = new moodle_url('/local/mih/index.php');
$action = optional_param('action', '', PARAM_ALPHA);
$id = optional_param('id', 0, PARAM_INT);

$checks = null;
if ($action !== '') {
    require_sesskey();
    require_capability('local/mih:manage', $context);
    $ids = $id ? [$id] : null;
    switch ($action) {
        case 'send':
            $report = (new sender(config::load()))->send(PHP_INT_MAX, time() + 20, true);
            $message = get_string('sent_report', 'local_mih', $report);
            if ($report->stopped !== null) {
                $message .= ' ' . get_string('stopped', 'local_mih', s($report->stopped));
            }
            redirect($pageurl, $message, null,
                $report->stopped === null ? \core\output\notification::NOTIFY_SUCCESS : \core\output\notification::NOTIFY_WARNING);
            break;
        case 'retry':
            redirect($pageurl, get_string('retried', 'local_mih', outbox::retry_parked($ids)));
            break;
        case 'discard':
            redirect($pageurl, get_string('discarded', 'local_mih', outbox::discard_parked($ids)));
            break;
        case 'test':
            $checks = (new connection_check(config::load()))->run();
            break;
        default:
            throw new moodle_exception('invalidaction', 'local_mih', $pageurl, s($action));
    }
}

$canmanage = has_capability('local/mih:manage', $context);
$summary = outbox::summary();
$button = static function (string $action, string $label, int $id = 0) use ($pageurl, $OUTPUT): string {
    $params = ['action' => $action, 'sesskey' => sesskey()] + ($id ? ['id' => $id] : []);
    $button = new single_button(new moodle_url($pageurl, $params), $label, 'post');
    if ($action === 'discard') {
        $button->add_confirm_action(get_string('confirmdiscard', 'local_mih'));
    }
    return $OUTPUT->render($button);
};

echo $OUTPUT->header();
echo $OUTPUT->heading(get_string('outbox', 'local_mih'));

if ($checks !== null) {
    foreach ($checks as $name => $check) {
        echo $OUTPUT->notification(get_string('check_' . $name . '_title', 'local_mih') . ': ' . s($check['message']),
            $check['ok'] ? \core\output\notification::NOTIFY_SUCCESS : \core\output\notification::NOTIFY_ERROR);
    }
}
if (!config::load()->forwarding()) {
    echo $OUTPUT->notification(get_string('notforwarding', 'local_mih',
        (new moodle_url('/admin/settings.php', ['section' => 'local_mih']))->out(false)), 'warning');
}

$table = new html_table();
$table->attributes['class'] = 'generaltable';
$when = static fn($time) => $time ? userdate((int) $time) : '-';
$table->data = [
    [get_string('pending', 'local_mih'), $summary->pending],
    [get_string('waiting', 'local_mih'), $summary->waiting],
    [get_string('parked', 'local_mih'), $summary->parked],
    [get_string('oldest', 'local_mih'), $when($summary->oldest)],
    [get_string('nextattempt', 'local_mih'), $when($summary->nextattempt)],
    [get_string('lasterror', 'local_mih'), s($summary->lasterror ?? '-')],
];
echo html_writer::table($table);

if ($canmanage) {
    echo html_writer::div($button('send', get_string('sendnow', 'local_mih')) . ' '
        . $button('test', get_string('testconnection', 'local_mih')), 'mb-3');
}

echo $OUTPUT->heading(get_string('parkedevents', 'local_mih'), 3);
$parked = outbox::parked(100);
if (!$parked) {
    echo html_writer::tag('p', get_string('noparked', 'local_mih'));
} else {
    $table = new html_table();
    $table->attributes['class'] = 'generaltable';
    $table->head = [get_string('eventname', 'local_mih'), get_string('timecreated', 'local_mih'),
        get_string('attempts', 'local_mih'), get_string('reason', 'local_mih'), ''];
    foreach ($parked as $row) {
        $table->data[] = [
            s($row->eventname),
            userdate((int) $row->timecreated),
            (int) $row->attempts,
            s($row->lasterror),
            $canmanage ? $button('retry', get_string('retry', 'local_mih'), (int) $row->id)
                . $button('discard', get_string('discard', 'local_mih'), (int) $row->id) : '',
        ];
    }
    echo html_writer::table($table);
    if ($canmanage) {
        echo html_writer::div($button('retry', get_string('retryall', 'local_mih')) . ' '
            . $button('discard', get_string('discardall', 'local_mih')));
    }
}

echo $OUTPUT->footer();
