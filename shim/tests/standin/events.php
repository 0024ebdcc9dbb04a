<?php
// A stand-in for Moodle's events API as local_mih meets it: the event base class and the
// manager that dispatches to observers registered in db/events.php files. As in Moodle,
// 'internal' observers run at once (inside any open transaction); the others wait for the
// outermost transaction to commit and are dropped if it rolls back; an observer's exception
// is reported with debugging(), while an \Error reaches the code that triggered the event.
//
// Events defined by a class of their own (the plugin's) are created as in Moodle: init() sets
// the static data and may fix the context, then validate_data() checks what was given. The
// fixture events, replayed from recorded get_data(), keep every value they were given.

namespace core\event;

abstract class base {
    /** Levels of educational value, as Moodle's. */
    public const LEVEL_OTHER = 0;
    public const LEVEL_TEACHING = 1;
    public const LEVEL_PARTICIPATING = 2;

    /** The keys of get_data(), in Moodle's order. */
    public const KEYS = ['eventname', 'component', 'action', 'target', 'objecttable', 'objectid', 'crud', 'edulevel',
        'contextid', 'contextlevel', 'contextinstanceid', 'userid', 'courseid', 'relateduserid', 'anonymous', 'other',
        'timecreated'];

    protected array $data = [];
    protected ?array $logextra = null;
    /** @var object|null the context, when init() or create() gave one */
    protected $context = null;
    private bool $triggered = false;

    final protected function __construct() {
    }

    /** Builds an event from (mostly) get_data()-shaped values; eventname comes from the class. */
    public static function create(?array $data = null): static {
        $event = new static();
        $parts = explode('\\', static::class);
        // As Moodle: the class name is target_action.
        $short = end($parts);
        $split = strrpos($short, '_');
        $defaults = [
            'eventname' => '\\' . static::class,
            'component' => $parts[0],
            'action' => $split === false ? 'viewed' : substr($short, $split + 1),
            'target' => $split === false ? $short : substr($short, 0, $split),
            'objecttable' => null,
            'objectid' => null,
            'crud' => 'r',
            'edulevel' => 0,
            'contextid' => 1,
            'contextlevel' => 10,
            'contextinstanceid' => 0,
            'userid' => 0,
            'courseid' => 0,
            'relateduserid' => null,
            'anonymous' => 0,
            'other' => null,
            'timecreated' => time(),
        ];
        $data = (array) $data;
        $event->data = [];
        $event->init();
        if (isset($data['context'])) {
            $event->context = $data['context'];
        }
        if ($event->context !== null) {
            $defaults['contextid'] = $event->context->id;
            $defaults['contextlevel'] = $event->context->contextlevel;
            $defaults['contextinstanceid'] = $event->context->instanceid;
        }
        $defaults = array_merge($defaults, $event->data);
        $event->data = [];
        foreach (self::KEYS as $key) {
            $event->data[$key] = array_key_exists($key, $data) ? $data[$key] : $defaults[$key];
        }
        $event->data['eventname'] = '\\' . static::class;
        $event->validate_data();
        return $event;
    }

    /** Sets the static data of the event (crud, edulevel, objecttable) and may fix its context. */
    protected function init() {
    }

    /** Checks the data given to create(); throws a coding_exception when it is wrong. */
    protected function validate_data() {
    }

    public static function get_name() {
        return static::class;
    }

    public function get_description() {
        return null;
    }

    public function get_data(): array {
        return $this->data;
    }

    public function get_logextra(): ?array {
        return $this->logextra;
    }

    public function __get($name) {
        if (array_key_exists($name, $this->data)) {
            return $this->data[$name];
        }
        throw new \coding_exception("Accessing non-existent event property '{$name}'");
    }

    public function __isset($name) {
        return isset($this->data[$name]);
    }

    public function trigger(): void {
        if ($this->triggered) {
            throw new \coding_exception('Event already triggered');
        }
        $this->triggered = true;
        manager::dispatch($this);
    }
}

final class manager {
    /** @var array[]|null observers from every db/events.php, by priority */
    private static ?array $observers = null;
    /** @var array[] external observer calls waiting for the transaction to commit */
    private static array $buffer = [];
    /** @var string[] db/events.php files to load */
    public static array $files = [];

    public static function dispatch(base $event): void {
        global $DB;
        foreach (self::observers_for($event) as $observer) {
            if (!$observer['internal'] && $DB->is_transaction_started()) {
                self::$buffer[] = [$observer, $event];
                continue;
            }
            self::call($observer, $event);
        }
    }

    public static function database_transaction_commited(): void {
        $buffer = self::$buffer;
        self::$buffer = [];
        foreach ($buffer as [$observer, $event]) {
            self::call($observer, $event);
        }
    }

    public static function database_transaction_rolledback(): void {
        self::$buffer = [];
    }

    private static function call(array $observer, base $event): void {
        try {
            call_user_func($observer['callable'], $event);
        } catch (\Exception $e) {
            // As Moodle: exceptions are reported and swallowed, but an \Error escapes to the
            // code that triggered the event (the plugin's observer must catch everything).
            debugging("Exception encountered in event observer '{$observer['callable']}': " . $e->getMessage());
        }
    }

    private static function observers_for(base $event): array {
        if (self::$observers === null) {
            self::$observers = [];
            foreach (self::$files as $file) {
                $observers = [];
                include($file);
                foreach ($observers as $observer) {
                    self::$observers[] = [
                        'eventname' => '\\' . ltrim($observer['eventname'], '\\'),
                        'callable' => $observer['callback'],
                        'internal' => $observer['internal'] ?? true,
                        'priority' => $observer['priority'] ?? 0,
                    ];
                }
            }
            usort(self::$observers, static fn($a, $b) => $b['priority'] <=> $a['priority']);
        }
        $name = '\\' . get_class($event);
        return array_filter(self::$observers, static fn($o) =>
            $o['eventname'] === '\\*' || strcasecmp($o['eventname'], $name) === 0
            || is_a($event, ltrim($o['eventname'], '\\')));
    }
}
