<?php
// A stand-in for Moodle's lock API (\core\lock\lock_config::get_lock_factory()) over file
// locks: one lock per factory type, resource and database, held by the process until
// released or until it ends (a crashed process holds nothing), as Moodle's locks behave.

namespace core\lock;

final class lock_config {
    public static function get_lock_factory(string $type): lock_factory {
        return new lock_factory($type);
    }
}

final class lock_factory {
    public function __construct(private string $type) {
    }

    /** The lock, or false when another process still holds it after $timeout seconds. */
    public function get_lock(string $resource, int $timeout, int $maxlifetime = 86400) {
        $name = sys_get_temp_dir() . '/mih-standin-lock-' . md5(getenv('MIH_STANDIN_DSN') . "\n{$this->type}\n{$resource}");
        $handle = fopen($name, 'c');
        $until = microtime(true) + $timeout;
        while (!flock($handle, LOCK_EX | LOCK_NB)) {
            if (microtime(true) >= $until) {
                fclose($handle);
                return false;
            }
            usleep(100000);
        }
        return new lock($handle);
    }
}

final class lock {
    /** @param resource|null $handle */
    public function __construct(private $handle) {
    }

    public function release(): bool {
        if ($this->handle === null) {
            return false;
        }
        flock($this->handle, LOCK_UN);
        fclose($this->handle);
        $this->handle = null;
        return true;
    }
}
