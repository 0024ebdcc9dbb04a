<?php
// Another plugin observing local_mih's inbound event, for the system tests. With
// MIH_STANDIN_EVENT_LOG set, every \local_mih\event\webhook_received is appended to that file
// as its get_data(), one JSON line each, in the order observers see them. Faults on demand:
//   MIH_STANDIN_FAIL_ON=<messageid>  the observer fails with a PHP \Error on that message, as
//                                    a buggy observer would (Moodle lets an \Error through
//                                    trigger()); that message is not recorded
//   MIH_STANDIN_CRASH_AFTER=<n>      the process is killed (SIGKILL) right after recording its
//                                    n-th event: a crash between raising and acknowledging

final class standin_recorder {
    /** @var int events recorded by this process */
    private static int $recorded = 0;

    public static function observe(\core\event\base $event): void {
        $data = $event->get_data();
        $messageid = $data['other']['messageid'] ?? null;
        if ($messageid !== null && getenv('MIH_STANDIN_FAIL_ON') === $messageid) {
            throw new \Error("the stand-in's observer fails on message {$messageid}");
        }
        $line = json_encode($data, JSON_UNESCAPED_SLASHES | JSON_PRESERVE_ZERO_FRACTION) . "\n";
        file_put_contents(getenv('MIH_STANDIN_EVENT_LOG'), $line, FILE_APPEND | LOCK_EX);
        self::$recorded++;
        if ((int) getenv('MIH_STANDIN_CRASH_AFTER') === self::$recorded) {
            posix_kill(posix_getpid(), SIGKILL);
        }
    }
}
