<?php
// What local_mih adds to a user's request: the cost of its observer per event, timed call by
// call, outside and inside a transaction. Run by `mih-bench moodle`:
//
//   MIH_STANDIN_DSN=... php observer.php --standin [--events=N]   on the stand-in (PDO)
//   php observer.php --moodle=DIR [--events=N]                    in a real Moodle
//
// Prints JSON: per mode, the count and the per-event cost in microseconds (mean, p50, p95,
// p99, max). The rows it adds are deleted afterwards; nothing is sent (the hub address is a
// closed port, and the send at the end of the run is the only attempt).

$options = getopt('', ['standin', 'moodle:', 'events:']);
$count = (int) ($options['events'] ?? 5000);
$settings = ['enabled' => 1, 'ingesturl' => 'http://127.0.0.1:9', 'sourceid' => 'bench',
    'signingsecret' => 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw', 'include' => '*', 'exclude' => '\\core\\event\\course_viewed_nothing'];

if (isset($options['standin'])) {
    require(__DIR__ . '/../standin/bootstrap.php');
    $DB->install_schema(STANDIN_PLUGIN . '/db/install.xml');
    foreach ($settings as $name => $value) {
        set_config($name, $value, 'local_mih');
    }
    $class = standin_event_class('\\core\\event\\course_viewed');
    $make = static fn(int $i) => $class::create(['contextid' => 2, 'contextlevel' => 50, 'contextinstanceid' => 2,
        'courseid' => 2, 'userid' => 3, 'other' => ['i' => $i]]);
    $where = 'stand-in';
} else if (isset($options['moodle'])) {
    define('CLI_SCRIPT', true);
    $_SERVER['argv'] = [$argv[0]];
    require($options['moodle'] . '/config.php');
    // Forced settings: the site's own configuration stays as it is.
    $CFG->forced_plugin_settings['local_mih'] = $settings;
    \core\session\manager::set_user(get_admin());
    $context = context_course::instance(SITEID);
    $make = static fn(int $i) => \core\event\course_viewed::create(['context' => $context]);
    $where = 'moodle';
} else {
    fwrite(STDERR, "give --standin or --moodle=DIR\n");
    exit(2);
}

$before = (int) $DB->get_field_sql('SELECT COALESCE(MAX(id), 0) FROM {local_mih_outbox}');
$percentile = static function (array $sorted, float $q): float {
    return $sorted[min(count($sorted) - 1, (int) floor($q * count($sorted)))];
};
$measure = static function (bool $intransaction) use ($count, $make, $DB, $percentile): array {
    $times = [];
    $transaction = $intransaction ? $DB->start_delegated_transaction() : null;
    for ($i = 0; $i < $count; $i++) {
        $event = $make($i);
        $start = hrtime(true);
        \local_mih\observer::record($event);
        $times[] = (hrtime(true) - $start) / 1000;
    }
    $transaction?->allow_commit();
    sort($times);
    return ['events' => $count, 'mean_us' => array_sum($times) / $count, 'p50_us' => $percentile($times, 0.50),
        'p95_us' => $percentile($times, 0.95), 'p99_us' => $percentile($times, 0.99), 'max_us' => end($times)];
};
// Warm up the caches and the connection, as on a site that has been running.
$measure(false);
$result = ['where' => $where, 'no_transaction' => $measure(false), 'in_transaction' => $measure(true)];
$recorded = $DB->count_records_select('local_mih_outbox', 'id > ?', [$before]);
$DB->delete_records_select('local_mih_outbox', 'id > ?', [$before]);
$result['recorded'] = $recorded;
echo json_encode($result, JSON_PRETTY_PRINT) . "\n";
