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

namespace local_mih;

/**
 * One event as the outbox stores it: get_data() plus where it came from, encoded once.
 *
 * @package    local_mih
 * @copyright  2026 mih developers
 * @license    https://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */
final class event_record {
    /**
     * Builds a record; use {@see self::of()} for an event.
     *
     * @param string $uuid the event's stable identity (the hub's dedup key)
     * @param string $eventname e.g. \core\event\user_created
     * @param int|null $contextid the event's context
     * @param int|null $userid the user who caused it
     * @param int|null $relateduserid the user it is about
     * @param string $payload the event as JSON
     * @param int $timecreated when it happened
     */
    public function __construct(
        public readonly string $uuid,
        public readonly string $eventname,
        public readonly ?int $contextid,
        public readonly ?int $userid,
        public readonly ?int $relateduserid,
        public readonly string $payload,
        public readonly int $timecreated,
    ) {
    }

    /**
     * The record of an event: its get_data(), with origin, ip and realuserid when Moodle has them.
     *
     * @param \core\event\base $event
     * @return self
     */
    public static function of(\core\event\base $event): self {
        $data = $event->get_data();
        foreach (self::logextra($event) as $key => $value) {
            if ($value !== null && $value !== '' && !array_key_exists($key, $data)) {
                $data[$key] = $value;
            }
        }
        $name = '\\' . ltrim((string) ($data['eventname'] ?? $event->eventname), '\\');
        return new self(
            uuid: self::new_uuid(),
            eventname: substr($name, 0, 255),
            contextid: self::id($data['contextid'] ?? null),
            userid: self::id($data['userid'] ?? null),
            relateduserid: self::id($data['relateduserid'] ?? null),
            payload: self::encode($data),
            timecreated: self::id($data['timecreated'] ?? null) ?? time(),
        );
    }

    /**
     * A random (version 4) UUID.
     *
     * @return string
     */
    public static function new_uuid(): string {
        $bytes = random_bytes(16);
        $bytes[6] = chr((ord($bytes[6]) & 0x0f) | 0x40);
        $bytes[8] = chr((ord($bytes[8]) & 0x3f) | 0x80);
        return vsprintf('%s%s-%s-%s-%s-%s%s%s', str_split(bin2hex($bytes), 4));
    }

    /**
     * Encodes the event; a value JSON cannot hold (an invalid float, a resource) becomes null
     * rather than losing the event.
     *
     * @param array $data
     * @return string
     */
    private static function encode(array $data): string {
        $flags = JSON_UNESCAPED_SLASHES | JSON_UNESCAPED_UNICODE | JSON_INVALID_UTF8_SUBSTITUTE
            | JSON_PRESERVE_ZERO_FRACTION;
        try {
            return json_encode($data, $flags | JSON_THROW_ON_ERROR);
        } catch (\JsonException $e) {
            return (string) json_encode($data, $flags | JSON_PARTIAL_OUTPUT_ON_ERROR);
        }
    }

    /**
     * Where the event came from, as the standard log would record it.
     *
     * @param \core\event\base $event
     * @return array origin, ip and realuserid (values may be null)
     */
    private static function logextra(\core\event\base $event): array {
        $extra = method_exists($event, 'get_logextra') ? $event->get_logextra() : null;
        if (is_array($extra)) {
            return array_intersect_key($extra, ['origin' => 1, 'ip' => 1, 'realuserid' => 1]);
        }
        global $PAGE;
        $extra = ['origin' => null, 'ip' => null, 'realuserid' => null];
        // Extras are a courtesy: failing to read them must not cost the event itself.
        try {
            if (isset($PAGE) && is_object($PAGE)) {
                $extra['origin'] = $PAGE->requestorigin;
                $extra['ip'] = $PAGE->requestip;
            }
            if (class_exists('\core\session\manager') && \core\session\manager::is_loggedinas()) {
                global $USER;
                $extra['realuserid'] = $USER->realuser ?? null;
            }
        } catch (\Throwable $e) {
            observer::report('could not read where the event came from', $e);
        }
        return $extra;
    }

    /**
     * An id as Moodle stores it (int or numeric string), or null.
     *
     * @param mixed $value
     * @return int|null
     */
    private static function id(mixed $value): ?int {
        if (is_int($value)) {
            return $value;
        }
        if (is_string($value) && preg_match('/^-?\d{1,18}$/', $value)) {
            return (int) $value;
        }
        return null;
    }
}
