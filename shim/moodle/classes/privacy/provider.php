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

namespace local_mih\privacy;

use core_privacy\local\metadata\collection;
use core_privacy\local\request\approved_contextlist;
use core_privacy\local\request\approved_userlist;
use core_privacy\local\request\contextlist;
use core_privacy\local\request\userlist;
use core_privacy\local\request\writer;

/**
 * What local_mih keeps and sends about users: events wait in the outbox (in the context they
 * happened in) until the hub stored them, and go to the hub, which is outside this site.
 * Inbound messages from the hub are kept nowhere by the plugin: they become events, which
 * Moodle's log stores keep under their own providers (and, like any event, may be forwarded).
 *
 * @package    local_mih
 * @copyright  2026 mih developers
 * @license    https://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */
class provider implements
        \core_privacy\local\metadata\provider,
        \core_privacy\local\request\plugin\provider,
        \core_privacy\local\request\core_userlist_provider {

    /** The outbox table. */
    private const TABLE = 'local_mih_outbox';

    /**
     * Declares the outbox and the hub.
     *
     * @param collection $collection
     * @return collection
     */
    public static function get_metadata(collection $collection): collection {
        $collection->add_database_table(self::TABLE, [
            'eventname' => 'privacy:metadata:outbox:eventname',
            'userid' => 'privacy:metadata:outbox:userid',
            'relateduserid' => 'privacy:metadata:outbox:relateduserid',
            'payload' => 'privacy:metadata:outbox:payload',
            'lasterror' => 'privacy:metadata:outbox:lasterror',
            'timecreated' => 'privacy:metadata:outbox:timecreated',
        ], 'privacy:metadata:outbox');
        $collection->add_external_location_link('mih_hub', [
            'eventname' => 'privacy:metadata:hub:eventname',
            'userid' => 'privacy:metadata:hub:userid',
            'relateduserid' => 'privacy:metadata:hub:relateduserid',
            'courseid' => 'privacy:metadata:hub:courseid',
            'other' => 'privacy:metadata:hub:other',
            'ip' => 'privacy:metadata:hub:ip',
            'realuserid' => 'privacy:metadata:hub:realuserid',
            'timecreated' => 'privacy:metadata:hub:timecreated',
        ], 'privacy:metadata:hub');
        return $collection;
    }

    /**
     * Contexts of the outbox rows by or about the user.
     *
     * @param int $userid
     * @return contextlist
     */
    public static function get_contexts_for_userid(int $userid): contextlist {
        $contextlist = new contextlist();
        $contextlist->add_from_sql(
            'SELECT DISTINCT contextid FROM {' . self::TABLE . '} WHERE userid = :userid OR relateduserid = :relateduserid',
            ['userid' => $userid, 'relateduserid' => $userid]
        );
        return $contextlist;
    }

    /**
     * Users with outbox rows in a context.
     *
     * @param userlist $userlist
     */
    public static function get_users_in_context(userlist $userlist): void {
        $params = ['contextid' => $userlist->get_context()->id];
        $userlist->add_from_sql('userid', 'SELECT userid FROM {' . self::TABLE . '} WHERE contextid = :contextid', $params);
        $userlist->add_from_sql('relateduserid',
            'SELECT relateduserid FROM {' . self::TABLE . '} WHERE contextid = :contextid', $params);
    }

    /**
     * Exports the user's outbox rows, per context.
     *
     * @param approved_contextlist $contextlist
     */
    public static function export_user_data(approved_contextlist $contextlist): void {
        global $DB;
        $userid = $contextlist->get_user()->id;
        foreach ($contextlist->get_contexts() as $context) {
            $rows = $DB->get_records_select(
                self::TABLE,
                'contextid = :contextid AND (userid = :userid OR relateduserid = :relateduserid)',
                ['contextid' => $context->id, 'userid' => $userid, 'relateduserid' => $userid],
                'id'
            );
            if (!$rows) {
                continue;
            }
            $events = [];
            foreach ($rows as $row) {
                $events[] = (object) [
                    'eventname' => $row->eventname,
                    'event' => json_decode($row->payload),
                    'waiting' => (int) $row->status === 0,
                    'lasterror' => $row->lasterror,
                    'timecreated' => \core_privacy\local\request\transform::datetime($row->timecreated),
                ];
            }
            writer::with_context($context)->export_data(
                [get_string('pluginname', 'local_mih'), get_string('privacy:outboxpath', 'local_mih')],
                (object) ['events' => $events]
            );
        }
    }

    /**
     * Deletes every outbox row of a context.
     *
     * @param \context $context
     */
    public static function delete_data_for_all_users_in_context(\context $context): void {
        global $DB;
        $DB->delete_records(self::TABLE, ['contextid' => $context->id]);
    }

    /**
     * Deletes the user's outbox rows in the approved contexts.
     *
     * @param approved_contextlist $contextlist
     */
    public static function delete_data_for_user(approved_contextlist $contextlist): void {
        global $DB;
        $userid = $contextlist->get_user()->id;
        foreach ($contextlist->get_contexts() as $context) {
            $DB->delete_records_select(
                self::TABLE,
                'contextid = :contextid AND (userid = :userid OR relateduserid = :relateduserid)',
                ['contextid' => $context->id, 'userid' => $userid, 'relateduserid' => $userid]
            );
        }
    }

    /**
     * Deletes the outbox rows of several users in one context.
     *
     * @param approved_userlist $userlist
     */
    public static function delete_data_for_users(approved_userlist $userlist): void {
        global $DB;
        $userids = $userlist->get_userids();
        if (!$userids) {
            return;
        }
        [$usersql, $userparams] = $DB->get_in_or_equal($userids, SQL_PARAMS_NAMED, 'u');
        [$relatedsql, $relatedparams] = $DB->get_in_or_equal($userids, SQL_PARAMS_NAMED, 'r');
        $DB->delete_records_select(
            self::TABLE,
            "contextid = :contextid AND (userid {$usersql} OR relateduserid {$relatedsql})",
            ['contextid' => $userlist->get_context()->id] + $userparams + $relatedparams
        );
    }
}
