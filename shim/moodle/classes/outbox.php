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
 * The outbox table: events waiting for the hub, claimed by one sender at a time, deleted only
 * once the hub stored them, parked when the hub refused them.
 *
 * @package    local_mih
 * @copyright  2026 mih developers
 * @license    https://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */
final class outbox {
    /** The table's name. */
    public const TABLE = 'local_mih_outbox';
    /** A row waiting to be sent (perhaps after a backoff). */
    public const PENDING = 0;
    /** A row the hub refused; it waits for an administrator. */
    public const PARKED = 1;
    /** Times a sender looks for rows when others keep taking the ones it found. */
    private const CLAIM_ROUNDS = 5;

    /**
     * Adds an event: the only work done on the user's request.
     *
     * @param event_record $record
     */
    public static function add(event_record $record): void {
        global $DB;
        $DB->insert_record(self::TABLE, (object) [
            'uuid' => $record->uuid,
            'eventname' => $record->eventname,
            'contextid' => $record->contextid,
            'userid' => $record->userid,
            'relateduserid' => $record->relateduserid,
            'payload' => $record->payload,
            'status' => self::PENDING,
            'attempts' => 0,
            'nextattempt' => 0,
            'claimeduntil' => 0,
            'timecreated' => $record->timecreated,
        ], false);
    }

    /**
     * Claims up to $limit pending rows, oldest first, for one sender. The update re-checks that
     * each row is unclaimed, so two senders racing for the same rows split them: each row goes
     * to exactly one (on every database Moodle supports, without locking the table).
     *
     * @param int $limit most rows to claim
     * @param string $token the sender's claim token
     * @param int $hold seconds the claim lasts (a sender that dies releases its rows then)
     * @param bool $ignorebackoff claim rows waiting for a backoff too
     * @return \stdClass[] the claimed rows (id, uuid, payload, attempts), oldest first
     */
    public static function claim(int $limit, string $token, int $hold, bool $ignorebackoff = false): array {
        global $DB;
        $now = time();
        $select = 'status = :status AND claimeduntil < :now';
        $params = ['status' => self::PENDING, 'now' => $now];
        if (!$ignorebackoff) {
            $select .= ' AND nextattempt <= :now2';
            $params['now2'] = $now;
        }
        // A sender that loses every candidate to another one looks again: the rows the other
        // took are claimed now and no longer candidates, so an empty answer means none is left.
        for ($round = 0; $round < self::CLAIM_ROUNDS; $round++) {
            $candidates = array_keys($DB->get_records_sql(
                'SELECT id FROM {' . self::TABLE . '} WHERE ' . $select . ' ORDER BY id',
                $params,
                0,
                $limit
            ));
            if (!$candidates) {
                return [];
            }
            [$insql, $inparams] = $DB->get_in_or_equal($candidates, SQL_PARAMS_NAMED, 'cand');
            $DB->execute(
                'UPDATE {' . self::TABLE . '} SET claimtoken = :token, claimeduntil = :until
                  WHERE id ' . $insql . ' AND ' . $select,
                $inparams + $params + ['token' => $token, 'until' => $now + $hold]
            );
            $claimed = array_values($DB->get_records(
                self::TABLE,
                ['claimtoken' => $token, 'status' => self::PENDING],
                'id',
                'id, uuid, payload, attempts'
            ));
            if ($claimed) {
                return $claimed;
            }
        }
        return [];
    }

    /**
     * Deletes rows the hub stored.
     *
     * @param int[] $ids
     * @param string $token the claim they were sent under
     */
    public static function delete(array $ids, string $token): void {
        self::update_claimed($ids, $token, null);
    }

    /**
     * Makes claimed rows available again at once, with no attempt counted.
     *
     * @param int[] $ids
     * @param string $token
     */
    public static function release(array $ids, string $token): void {
        self::update_claimed($ids, $token, 'claimeduntil = 0, claimtoken = NULL');
    }

    /**
     * Counts a failed attempt on claimed rows and holds them back: exponentially longer after
     * each failure, and at least as long as the hub asked.
     *
     * @param \stdClass[] $rows claimed rows (id, attempts)
     * @param string $token
     * @param string $reason why they were not stored
     * @param int $retryafter seconds the hub asked to wait (0 when it did not say)
     */
    public static function back_off(array $rows, string $token, string $reason, int $retryafter): void {
        global $DB;
        $now = time();
        foreach (self::by_attempts($rows) as $attempts => $ids) {
            [$insql, $params] = $DB->get_in_or_equal($ids, SQL_PARAMS_NAMED, 'row');
            $DB->execute(
                'UPDATE {' . self::TABLE . '}
                    SET attempts = :attempts, nextattempt = :next, lasterror = :reason,
                        claimeduntil = 0, claimtoken = NULL
                  WHERE id ' . $insql . ' AND claimtoken = :token',
                $params + [
                    'attempts' => $attempts + 1,
                    'next' => $now + backoff::delay($attempts + 1, $retryafter),
                    'reason' => self::clip($reason),
                    'token' => $token,
                ]
            );
        }
    }

    /**
     * Parks a claimed row the hub refused: it stays, with the reason, until an administrator
     * retries or discards it.
     *
     * @param int $id
     * @param string $token
     * @param string $reason the hub's words
     */
    public static function park(int $id, string $token, string $reason): void {
        global $DB;
        $DB->execute(
            'UPDATE {' . self::TABLE . '}
                SET status = :parked, lasterror = :reason, attempts = attempts + 1,
                    claimeduntil = 0, claimtoken = NULL
              WHERE id = :id AND claimtoken = :token',
            ['parked' => self::PARKED, 'reason' => self::clip($reason), 'id' => $id, 'token' => $token]
        );
    }

    /**
     * After the hub stored events: rows held back by an earlier failure need not wait longer.
     */
    public static function end_backoff(): void {
        global $DB;
        $DB->execute(
            'UPDATE {' . self::TABLE . '} SET nextattempt = 0 WHERE status = :status AND nextattempt > 0',
            ['status' => self::PENDING]
        );
    }

    /**
     * Whether rows wait for a backoff, i.e. the last sends failed and the hub is being spared.
     *
     * @return bool
     */
    public static function backing_off(): bool {
        global $DB;
        return $DB->record_exists_select(
            self::TABLE,
            'status = :status AND nextattempt > :now',
            ['status' => self::PENDING, 'now' => time()]
        );
    }

    /**
     * Puts parked rows back in line to be sent.
     *
     * @param int[]|null $ids the rows, or null for every parked row
     * @return int how many
     */
    public static function retry_parked(?array $ids = null): int {
        return self::change_parked($ids, false);
    }

    /**
     * Deletes parked rows for good.
     *
     * @param int[]|null $ids the rows, or null for every parked row
     * @return int how many
     */
    public static function discard_parked(?array $ids = null): int {
        return self::change_parked($ids, true);
    }

    /**
     * What the outbox holds, for the status page and the CLI.
     *
     * @return \stdClass pending, waiting (held back after a failure), parked, oldest (time or
     *     null), nextattempt (time or null), lasterror (of the pending rows, or null)
     */
    public static function summary(): \stdClass {
        global $DB;
        $now = time();
        $pending = ['status' => self::PENDING];
        $last = $DB->get_records_select(
            self::TABLE,
            'status = :status AND lasterror IS NOT NULL',
            $pending,
            'id DESC',
            'id, lasterror',
            0,
            1
        );
        return (object) [
            'pending' => $DB->count_records(self::TABLE, $pending),
            'waiting' => $DB->count_records_select(
                self::TABLE,
                'status = :status AND nextattempt > :now',
                $pending + ['now' => $now]
            ),
            'parked' => $DB->count_records(self::TABLE, ['status' => self::PARKED]),
            'oldest' => $DB->get_field_select(self::TABLE, 'MIN(timecreated)', 'status = :status', $pending) ?: null,
            'nextattempt' => $DB->get_field_select(
                self::TABLE,
                'MIN(nextattempt)',
                'status = :status AND nextattempt > :now',
                $pending + ['now' => $now]
            ) ?: null,
            'lasterror' => $last ? reset($last)->lasterror : null,
        ];
    }

    /**
     * Parked rows, newest first.
     *
     * @param int $limit
     * @param int $offset
     * @return \stdClass[] id, uuid, eventname, timecreated, attempts, lasterror
     */
    public static function parked(int $limit = 50, int $offset = 0): array {
        global $DB;
        return array_values($DB->get_records(
            self::TABLE,
            ['status' => self::PARKED],
            'id DESC',
            'id, uuid, eventname, timecreated, attempts, lasterror',
            $offset,
            $limit
        ));
    }

    /**
     * Updates (or with a null $set deletes) claimed rows, only while the claim is still ours.
     *
     * @param int[] $ids
     * @param string $token
     * @param string|null $set the SET clause, or null to delete
     */
    private static function update_claimed(array $ids, string $token, ?string $set): void {
        global $DB;
        if (!$ids) {
            return;
        }
        [$insql, $params] = $DB->get_in_or_equal($ids, SQL_PARAMS_NAMED, 'row');
        $params['token'] = $token;
        if ($set === null) {
            $DB->delete_records_select(self::TABLE, 'id ' . $insql . ' AND claimtoken = :token', $params);
            return;
        }
        $DB->execute('UPDATE {' . self::TABLE . '} SET ' . $set . ' WHERE id ' . $insql . ' AND claimtoken = :token', $params);
    }

    /**
     * Retries or discards parked rows.
     *
     * @param int[]|null $ids
     * @param bool $discard
     * @return int how many rows changed
     */
    private static function change_parked(?array $ids, bool $discard): int {
        global $DB;
        $select = 'status = :parked';
        $params = ['parked' => self::PARKED];
        if ($ids !== null) {
            if (!$ids) {
                return 0;
            }
            [$insql, $inparams] = $DB->get_in_or_equal(array_map('intval', $ids), SQL_PARAMS_NAMED, 'row');
            $select .= ' AND id ' . $insql;
            $params += $inparams;
        }
        $count = $DB->count_records_select(self::TABLE, $select, $params);
        if ($discard) {
            $DB->delete_records_select(self::TABLE, $select, $params);
        } else {
            $DB->execute(
                'UPDATE {' . self::TABLE . '} SET status = :pending, attempts = 0, nextattempt = 0,
                        claimeduntil = 0, claimtoken = NULL WHERE ' . $select,
                $params + ['pending' => self::PENDING]
            );
        }
        return $count;
    }

    /**
     * Groups claimed rows by their attempt count, so one update serves each group.
     *
     * @param \stdClass[] $rows
     * @return array<int, int[]>
     */
    private static function by_attempts(array $rows): array {
        $groups = [];
        foreach ($rows as $row) {
            $groups[(int) $row->attempts][] = (int) $row->id;
        }
        return $groups;
    }

    /**
     * Keeps stored reasons readable and bounded.
     *
     * @param string $reason
     * @return string
     */
    private static function clip(string $reason): string {
        return mb_strlen($reason) > 2000 ? mb_substr($reason, 0, 2000) . '…' : $reason;
    }
}
