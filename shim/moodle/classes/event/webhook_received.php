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

namespace local_mih\event;

/**
 * A message from an external service, delivered back into Moodle by the hub: other plugins
 * observe this event to act on it. Raised by the scheduled task "Receive messages from the
 * hub" (or cli/pull_inbound.php), once per message, in the hub's order.
 *
 * `other`:
 * - `serviceid`: the hub service's name, e.g. "crm". The hub identifies services by name
 *   only; the original local_integrationhub plugin put a number here, so `serviceid` keeps its
 *   key for observers written for it and holds the same name as `servicename`.
 * - `servicename`: the same name.
 * - `source`: how the hub received the message: "webhook" or "amqp".
 * - `payload`: the message's body: its decoded JSON value (objects as associative arrays), or
 *   the body as a string when it was not JSON.
 * - `messageid`: the hub's id of the message (a UUID). A message is raised again when the
 *   plugin stopped before the hub learnt it was raised (a crash, a lost answer): observers
 *   that must act once remember the ids they have seen.
 *
 * @package    local_mih
 * @copyright  2026 mih developers
 * @license    https://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */
class webhook_received extends \core\event\base {
    /** The keys of `other` that hold text and must be set. */
    private const TEXT_KEYS = ['serviceid', 'servicename', 'source', 'messageid'];

    /**
     * Static data of the event.
     *
     * 'c': a message that was not in the site before has arrived, and observers usually create
     * or change something from it. 'r' (which the original plugin used) is what Moodle's log
     * report lists as a view, and nobody viewed anything here.
     */
    protected function init() {
        $this->data['crud'] = 'c';
        $this->data['edulevel'] = self::LEVEL_OTHER;
        $this->context = \context_system::instance();
    }

    /**
     * The event's name.
     *
     * @return string
     */
    public static function get_name() {
        return get_string('event_webhook_received', 'local_mih');
    }

    /**
     * What happened, for the logs (not localised, as Moodle's own events).
     *
     * @return string
     */
    public function get_description() {
        $other = $this->other;
        return "The hub delivered the message '{$other['messageid']}' that service '{$other['servicename']}' "
            . "sent by {$other['source']}.";
    }

    /**
     * Checks `other` when the event is created, so an observer can rely on every key.
     *
     * @throws \coding_exception
     */
    protected function validate_data() {
        parent::validate_data();
        if (!is_array($this->other)) {
            throw new \coding_exception('The \'other\' value must be an array.');
        }
        foreach (self::TEXT_KEYS as $key) {
            if (!isset($this->other[$key]) || !is_string($this->other[$key]) || $this->other[$key] === '') {
                throw new \coding_exception("The '{$key}' value must be set in other, as a non-empty string.");
            }
        }
        if (!array_key_exists('payload', $this->other)) {
            throw new \coding_exception('The \'payload\' value must be set in other (it may be null).');
        }
    }

    /**
     * Nothing in `other` is an id of this site: restoring logs maps nothing.
     *
     * @return bool
     */
    public static function get_other_mapping() {
        return false;
    }
}
