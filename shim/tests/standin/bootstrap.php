<?php
// Loads the stand-in for the Moodle APIs local_mih calls, so the plugin's classes run
// unchanged outside Moodle: against a real database (MIH_STANDIN_DSN, a PDO DSN) with the
// plugin's settings from MIH_STANDIN_CONFIG (a JSON object of local_mih settings).
// MIH_STANDIN_EVENT_LOG (a file) adds an observer recording local_mih's inbound events
// (recorder.php).

define('STANDIN_PLUGIN', dirname(__DIR__, 2) . '/moodle');
if (!defined('CLI_SCRIPT')) {
    define('CLI_SCRIPT', true);
}

require_once(__DIR__ . '/moodle.php');
require_once(__DIR__ . '/database.php');
require_once(__DIR__ . '/events.php');
require_once(__DIR__ . '/tasks.php');
require_once(__DIR__ . '/lock.php');
require_once(__DIR__ . '/recorder.php');

$GLOBALS['CFG'] = (object) ['libdir' => __DIR__ . '/lib', 'dirroot' => dirname(STANDIN_PLUGIN), 'prefix' => 'mdl_'];

// Moodle's class loader: \local_mih\a\b lives in classes/a/b.php.
spl_autoload_register(static function (string $class): void {
    if (str_starts_with($class, 'local_mih\\')) {
        $file = STANDIN_PLUGIN . '/classes/' . str_replace('\\', '/', substr($class, strlen('local_mih\\'))) . '.php';
        if (is_file($file)) {
            require_once($file);
        }
    }
});

\core\event\manager::$files = [STANDIN_PLUGIN . '/db/events.php'];
if (getenv('MIH_STANDIN_EVENT_LOG')) {
    \core\event\manager::$files[] = __DIR__ . '/observers.php';
}

$dsn = getenv('MIH_STANDIN_DSN');
if (!$dsn) {
    fwrite(STDERR, "MIH_STANDIN_DSN is not set: give a PDO DSN, e.g. pgsql:host=127.0.0.1;dbname=x;user=postgres\n");
    exit(2);
}
$GLOBALS['DB'] = new \standin\database($dsn, getenv('MIH_STANDIN_PREFIX') ?: 'mdl_');

$config = getenv('MIH_STANDIN_CONFIG');
if ($config) {
    $settings = json_decode($config, true);
    if (!is_array($settings)) {
        fwrite(STDERR, "MIH_STANDIN_CONFIG is not a JSON object\n");
        exit(2);
    }
    foreach ($settings as $name => $value) {
        set_config($name, is_bool($value) ? (int) $value : $value, 'local_mih');
    }
}

/**
 * The class of an event named like a Moodle event (\core\event\user_created), defined on first
 * use so fixture events trigger as instances of their own classes, as they do in Moodle.
 */
function standin_event_class(string $eventname): string {
    $class = ltrim($eventname, '\\');
    if (!preg_match('/^[a-z][a-z0-9_]*(\\\\[a-z][a-z0-9_]*)+$/i', $class)) {
        throw new InvalidArgumentException("not an event class name: {$eventname}");
    }
    if (!class_exists($class, false)) {
        $pos = strrpos($class, '\\');
        eval('namespace ' . substr($class, 0, $pos) . '; class ' . substr($class, $pos + 1) . ' extends \core\event\base {}');
    }
    return $class;
}

/** Triggers an event with the given get_data() values. */
function standin_trigger(array $data): void {
    $class = standin_event_class($data['eventname']);
    $class::create($data)->trigger();
}
