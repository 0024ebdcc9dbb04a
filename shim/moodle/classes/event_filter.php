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
 * Which events are forwarded: include and exclude patterns over event names, `*` matching
 * any run of characters (so `\mod_forum\*` is every forum event).
 *
 * @package    local_mih
 * @copyright  2026 mih developers
 * @license    https://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */
final class event_filter {
    /** @var string|null regular expression of the included names; null includes nothing */
    private ?string $include;
    /** @var string|null regular expression of the excluded names; null excludes nothing */
    private ?string $exclude;

    /**
     * Compiles the patterns (one per line or separated by commas; the leading backslash and
     * case do not matter).
     *
     * @param string $include names to forward, `*` for all
     * @param string $exclude names never to forward, even when included
     */
    public function __construct(string $include, string $exclude) {
        $this->include = self::compile($include);
        $this->exclude = self::compile($exclude);
    }

    /**
     * Whether an event of this name is forwarded.
     *
     * @param string $eventname e.g. \core\event\user_created
     * @return bool
     */
    public function accepts(string $eventname): bool {
        $name = '\\' . ltrim($eventname, '\\');
        if ($this->include === null || !preg_match($this->include, $name)) {
            return false;
        }
        return $this->exclude === null || !preg_match($this->exclude, $name);
    }

    /**
     * The patterns of a setting, normalised (for display and checks).
     *
     * @param string $patterns as typed
     * @return string[]
     */
    public static function patterns(string $patterns): array {
        $out = [];
        foreach (preg_split('/[\s,]+/', $patterns, -1, PREG_SPLIT_NO_EMPTY) as $pattern) {
            $out[] = $pattern === '*' ? '*' : '\\' . ltrim($pattern, '\\');
        }
        return $out;
    }

    /**
     * One anchored, case-insensitive expression matching any of the patterns.
     *
     * @param string $patterns as typed
     * @return string|null
     */
    private static function compile(string $patterns): ?string {
        $alternatives = [];
        foreach (self::patterns($patterns) as $pattern) {
            if ($pattern === '*') {
                $alternatives[] = '.*';
                continue;
            }
            $alternatives[] = implode('.*', array_map(
                static fn(string $part): string => preg_quote($part, '/'),
                explode('*', $pattern)
            ));
        }
        if (!$alternatives) {
            return null;
        }
        return '/^(?:' . implode('|', $alternatives) . ')$/i';
    }
}
