<?php
// Drives local_mih inside a real Moodle (scripts/moodle-dev installs one), one step per run:
//
//   php site.php --moodle=DIR configure JSON   set local_mih's settings, empty its outbox
//   php site.php --moodle=DIR raise PREFIX     as admin: create a user and a course, enrol and
//                                              grade the user, and create a user in a
//                                              transaction that rolls back; prints their ids
//   php site.php --moodle=DIR inject-invalid   add an event the hub refuses to the outbox
//   php site.php --moodle=DIR privacy USERID   the privacy provider over that user's rows
//   php site.php --moodle=DIR status           the outbox summary
//   php site.php --moodle=DIR facade SERVICE PATH   call a service through \local_mih\hub
//   php site.php --moodle=DIR inbound-log      the webhook_received events in Moodle's standard
//                                              log, oldest first, with their description
//
// Prints JSON. Every run is a Moodle CLI request: its end-of-request send runs as it would.

define('CLI_SCRIPT', true);

$args = array_slice($argv, 1);
$moodle = null;
foreach ($args as $i => $arg) {
    if (str_starts_with($arg, '--moodle=')) {
        $moodle = substr($arg, strlen('--moodle='));
        unset($args[$i]);
    }
}
$args = array_values($args);
if ($moodle === null || !is_readable("{$moodle}/config.php")) {
    fwrite(STDERR, "give --moodle=DIR, a Moodle tree with config.php (scripts/moodle-dev)\n");
    exit(2);
}
// Moodle's CLI parser would see our arguments; hide them.
$_SERVER['argv'] = [$argv[0]];
require("{$moodle}/config.php");

$out = static function ($value): void {
    echo json_encode($value, JSON_PRETTY_PRINT | JSON_UNESCAPED_SLASHES) . "\n";
};

switch ($args[0] ?? '') {
    case 'configure':
        foreach (json_decode($args[1], true, 512, JSON_THROW_ON_ERROR) as $name => $value) {
            set_config($name, is_bool($value) ? (int) $value : $value, 'local_mih');
        }
        // Rows left by earlier runs (sent to hubs long gone) would only be noise.
        $DB->delete_records('local_mih_outbox');
        $out(['configured' => true]);
        break;

    case 'raise':
        require_once($CFG->dirroot . '/user/lib.php');
        require_once($CFG->dirroot . '/course/lib.php');
        require_once($CFG->libdir . '/enrollib.php');
        require_once($CFG->libdir . '/gradelib.php');
        require_once($CFG->libdir . '/testing/generator/lib.php');
        \core\session\manager::set_user(get_admin());
        $prefix = clean_param($args[1] ?? 'mih', PARAM_ALPHANUMEXT) . '_' . random_int(100000, 999999);
        $user = static fn(string $name) => [
            'username' => strtolower($name), 'password' => 'Secret-Pass-1!', 'firstname' => 'Mih',
            'lastname' => $name, 'email' => strtolower($name) . '@example.com', 'auth' => 'manual',
            'confirmed' => 1, 'mnethostid' => $CFG->mnet_localhost_id,
        ];
        $userid = user_create_user($user($prefix));
        $course = create_course((object) ['fullname' => "Course {$prefix}", 'shortname' => $prefix,
            'category' => core_course_category::get_default()->id]);
        $instance = $DB->get_record('enrol', ['courseid' => $course->id, 'enrol' => 'manual'], '*', MUST_EXIST);
        $student = $DB->get_field('role', 'id', ['shortname' => 'student'], MUST_EXIST);
        enrol_get_plugin('manual')->enrol_user($instance, $userid, $student);
        $assign = (new testing_data_generator())->create_module('assign', ['course' => $course->id, 'grade' => 100]);
        grade_update('mod/assign', $course->id, 'mod', 'assign', $assign->id, 0,
            [$userid => (object) ['userid' => $userid, 'rawgrade' => 87.5]]);

        $transaction = $DB->start_delegated_transaction();
        $rolledback = null;
        try {
            $rolledback = user_create_user($user("{$prefix}_rolledback"));
            throw new moodle_exception('generalexceptionmessage', 'error', '', 'the change failed');
        } catch (moodle_exception $e) {
            try {
                $transaction->rollback($e);
            } catch (moodle_exception $rethrown) {
                // Moodle rethrows the exception given to rollback().
            }
        }
        $out(['userid' => (int) $userid, 'courseid' => (int) $course->id, 'rolledbackuserid' => (int) $rolledback,
            'pending' => $DB->count_records('local_mih_outbox')]);
        break;

    case 'inject-invalid':
        // An event no hub accepts (crud "x"), as a buggy plugin's custom event might carry.
        $record = new \local_mih\event_record(\local_mih\event_record::new_uuid(), '\\local_buggy\\event\\thing_done',
            1, 0, null, json_encode(['eventname' => '\\local_buggy\\event\\thing_done', 'component' => 'local_buggy',
            'action' => 'done', 'target' => 'thing', 'crud' => 'x', 'edulevel' => 0, 'contextid' => 1, 'contextlevel' => 10,
            'contextinstanceid' => 0, 'userid' => 2, 'courseid' => 0, 'relateduserid' => null, 'anonymous' => 0,
            'other' => null, 'timecreated' => time()]), time());
        \local_mih\outbox::add($record);
        $out(['injected' => $record->uuid]);
        break;

    case 'privacy':
        // Rows by and about a user (held back: the hub is a closed port for this run), then the
        // privacy API over them as Moodle's data requests call it.
        require_once($CFG->dirroot . '/user/lib.php');
        $CFG->forced_plugin_settings['local_mih'] = ['ingesturl' => 'http://127.0.0.1:9'];
        \core\session\manager::set_user(get_admin());
        $userid = (int) $args[1];
        user_update_user((object) ['id' => $userid, 'firstname' => 'Renamed'], false);
        $provider = \local_mih\privacy\provider::class;
        $user = \core_user::get_user($userid, '*', MUST_EXIST);
        $contexts = $provider::get_contexts_for_userid($userid);
        $usercontext = context_user::instance($userid);
        $userlist = new \core_privacy\local\request\userlist($usercontext, 'local_mih');
        $provider::get_users_in_context($userlist);
        $approved = new \core_privacy\local\request\approved_contextlist($user, 'local_mih', $contexts->get_contextids());
        $provider::export_user_data($approved);
        $zip = \core_privacy\local\request\writer::with_context($usercontext)->finalise_content();
        $archive = new ZipArchive();
        $files = [];
        if ($archive->open($zip) === true) {
            for ($i = 0; $i < $archive->numFiles; $i++) {
                $name = $archive->getNameIndex($i);
                $files[$name] = str_ends_with($name, '.json') ? json_decode($archive->getFromIndex($i), true) : null;
            }
        }
        $before = $DB->count_records_select('local_mih_outbox', 'userid = ? OR relateduserid = ?', [$userid, $userid]);
        $provider::delete_data_for_user($approved);
        $out([
            'compliant' => (new \core_privacy\manager())->component_is_compliant('local_mih'),
            'contexts' => $contexts->get_contextids(),
            'usercontext' => $usercontext->id,
            'usersincontext' => array_values($userlist->get_userids()),
            'exported' => $files,
            'rowsbefore' => $before,
            'rowsafter' => $DB->count_records_select('local_mih_outbox', 'userid = ? OR relateduserid = ?', [$userid, $userid]),
        ]);
        break;

    case 'status':
        $out(\local_mih\outbox::summary());
        break;

    case 'facade':
        $response = \local_mih\hub::request($args[1], $args[2] ?? '/', ['from' => 'moodle']);
        $out(['success' => $response->success, 'httpstatus' => $response->httpstatus, 'circuit' => $response->circuit,
            'error' => $response->error]);
        break;

    case 'inbound-log':
        $reader = get_log_manager()->get_readers('\core\log\sql_reader')['logstore_standard'];
        $events = $reader->get_events_select('eventname = :name', ['name' => '\local_mih\event\webhook_received'], 'id', 0, 0);
        $out(array_values(array_map(static fn($event) => $event->get_data() + [
            'name' => $event::get_name(), 'description' => $event->get_description()], $events)));
        break;

    default:
        fwrite(STDERR, "unknown command; see the top of site.php\n");
        exit(2);
}
