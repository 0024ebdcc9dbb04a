<?php
// Stand-ins for the Moodle functions and classes local_mih calls outside $DB and events:
// plugin configuration, language strings, debugging, exceptions, the shutdown manager,
// scheduled tasks and the CLI helpers. Strings come from the plugin's own English pack.

define('MOODLE_INTERNAL', true);
define('DEBUG_DEVELOPER', 32767);
define('SQL_PARAMS_NAMED', 1);
define('SQL_PARAMS_QM', 2);
define('PARAM_INT', 'int');

final class standin_config {
    /** @var array<string, array<string, string>> plugin => name => value */
    public static array $values = [];
}

function get_config(string $plugin, ?string $name = null) {
    $values = standin_config::$values[$plugin] ?? [];
    if ($name !== null) {
        return $values[$name] ?? false;
    }
    return (object) $values;
}

function set_config(string $name, $value, ?string $plugin = null): bool {
    standin_config::$values[$plugin ?? 'core'][$name] = (string) $value;
    return true;
}

function get_string(string $identifier, string $component = '', $a = null): string {
    static $strings = [];
    if (!isset($strings[$component])) {
        $string = [];
        if ($component === 'local_mih') {
            include(STANDIN_PLUGIN . '/lang/en/local_mih.php');
        }
        $strings[$component] = $string;
    }
    if (!isset($strings[$component][$identifier])) {
        throw new coding_exception("Invalid get_string() identifier: '{$identifier}' or component '{$component}'");
    }
    $text = $strings[$component][$identifier];
    if (is_object($a) || is_array($a)) {
        foreach ((array) $a as $key => $value) {
            if (is_scalar($value) || $value === null) {
                $text = str_replace('{$a->' . $key . '}', (string) $value, $text);
            }
        }
    } else if ($a !== null) {
        $text = str_replace('{$a}', (string) $a, $text);
    }
    return $text;
}

/** The system context, the only one local_mih raises events in. */
final class context_system {
    public int $id = 1;
    public int $contextlevel = 10;
    public int $instanceid = 0;

    public static function instance(): self {
        return new self();
    }
}

final class standin_debugging {
    /** @var string[] every debugging() message of the run */
    public static array $messages = [];
}

function debugging(string $message = '', int $level = DEBUG_DEVELOPER): bool {
    standin_debugging::$messages[] = $message;
    fwrite(STDERR, "debugging: {$message}\n");
    return true;
}

function mtrace(string $string, string $eol = "\n"): void {
    echo $string . $eol;
}

class moodle_exception extends Exception {
    public string $errorcode;
    public string $module;
    public $a;
    public ?string $debuginfo;

    public function __construct($errorcode, $module = '', $link = '', $a = null, $debuginfo = null) {
        $this->errorcode = $errorcode;
        $this->module = $module;
        $this->a = $a;
        $this->debuginfo = $debuginfo;
        $message = $module === 'local_mih' ? get_string($errorcode, $module, $a) : $errorcode;
        parent::__construct($message);
    }
}

class coding_exception extends moodle_exception {
    public function __construct($hint, $debuginfo = null) {
        parent::__construct('codingerror', 'debug', '', $hint, $debuginfo);
        $this->message = 'Coding error detected, it must be fixed by a programmer: ' . $hint;
    }
}

class invalid_parameter_exception extends moodle_exception {
    public function __construct($debuginfo = null) {
        parent::__construct('invalidparameter', 'debug', '', null, $debuginfo);
        $this->message = 'Invalid parameter value detected (' . $debuginfo . ')';
    }
}

class dml_write_exception extends moodle_exception {
    public function __construct($dberror, $sql = null, array $params = null) {
        parent::__construct('dmlwriteexception', 'error', '', null, $dberror);
        $this->message = 'Error writing to database: ' . $dberror;
    }
}

final class core_shutdown_manager {
    private static array $callbacks = [];
    private static bool $registered = false;

    public static function register_function($callback, array $params = []): void {
        self::$callbacks[] = [$callback, $params];
        if (!self::$registered) {
            self::$registered = true;
            register_shutdown_function([self::class, 'shutdown_handler']);
        }
    }

    /** Stand-in only: drops the registered functions, as if the request ended without them. */
    public static function standin_forget(): void {
        self::$callbacks = [];
    }

    public static function shutdown_handler(): void {
        while ($entry = array_shift(self::$callbacks)) {
            try {
                call_user_func_array($entry[0], $entry[1]);
            } catch (\Throwable $e) {
                error_log('Exception ignored in shutdown function: ' . $e->getMessage());
            }
        }
    }
}

function cli_get_params(array $longoptions, ?array $shortmapping = null): array {
    $unrecognised = [];
    $options = $longoptions;
    foreach (array_slice($_SERVER['argv'], 1) as $arg) {
        if (!preg_match('/^--([^=]+)(?:=(.*))?$/', $arg, $m)) {
            $unrecognised[] = $arg;
            continue;
        }
        if (!array_key_exists($m[1], $longoptions)) {
            $unrecognised[] = $arg;
            continue;
        }
        $options[$m[1]] = isset($m[2]) ? $m[2] : true;
    }
    return [$options, $unrecognised];
}

function cli_error(string $text, int $errorcode = 1): void {
    fwrite(STDERR, $text . "\n");
    exit($errorcode);
}

function cli_problem(string $text): void {
    fwrite(STDERR, $text . "\n");
}
