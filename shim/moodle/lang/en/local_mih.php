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

/**
 * English strings of local_mih.
 *
 * @package    local_mih
 * @category   string
 * @copyright  2026 mih developers
 * @license    https://www.gnu.org/copyleft/gpl.html GNU GPL v3 or later
 */

defined('MOODLE_INTERNAL') || die();

$string['apitoken'] = 'Hub API token';
$string['apitoken_desc'] = 'An API token of the hub with the operator role, used by plugins that call services through the hub (<code>\local_mih\hub::request()</code>). Create one with <code>mih token create --role operator</code>.';
$string['apiurl'] = 'Hub API URL';
$string['apiurl_desc'] = 'The address of the hub\'s API, for example <code>https://hub.example.org:8084</code>.';
$string['attempts'] = 'Attempts';
$string['batchsize'] = 'Batch size';
$string['batchsize_desc'] = 'Events sent to the hub in one request (1 to 1000).';
$string['check_api_forbidden'] = 'The hub knows the API token at {$a->url} but its role may not call services: give the token the operator role.';
$string['check_api_notconfigured'] = 'The hub API URL or the API token is not set: plugins cannot call services through the hub.';
$string['check_api_notfound'] = 'Nothing at {$a->url} answers like the hub\'s API (HTTP {$a->status}): check the hub API URL.';
$string['check_api_ok'] = 'The hub at {$a->url} accepts the API token for calls to services.';
$string['check_api_title'] = 'Calls to services';
$string['check_api_unauthorised'] = 'The hub at {$a->url} refused the API token: {$a->message}';
$string['check_badsecret'] = 'The signing secret is not a secret the hub issues: it starts with whsec_ followed by base64 text.';
$string['check_ingest_disabled'] = 'The hub knows this site but refuses its events: {$a->message}';
$string['check_ingest_notfound'] = 'Nothing at {$a->url} answers like the hub\'s ingest (HTTP 404): check the hub ingest URL.';
$string['check_ingest_ok'] = 'The hub at {$a->url} accepts events signed by this site.';
$string['check_ingest_title'] = 'Events';
$string['check_ingest_unauthorised'] = 'The hub at {$a->url} refused this site\'s signature: {$a->message}. Check the source id and the signing secret.';
$string['check_missing'] = 'Not set yet: {$a}.';
$string['check_unexpected'] = 'The hub at {$a->url} answered HTTP {$a->status}: {$a->message}';
$string['check_unreachable'] = 'Cannot reach the hub at {$a->url}: {$a->message}';
$string['circuit_open'] = 'The circuit of service {$a} is open: the hub sends nothing to it until it recovers.';
$string['confirmdiscard'] = 'Discard these events for good? They will never reach the hub.';
$string['discard'] = 'Discard';
$string['discardall'] = 'Discard all parked events';
$string['discarded'] = '{$a} parked events discarded.';
$string['enabled'] = 'Forward events';
$string['enabled_desc'] = 'Record every event of the site and send it to the hub. Events are recorded only while this is on and the ingest URL, source id and signing secret are set.';
$string['event_webhook_received'] = 'Message received from the hub';
$string['eventname'] = 'Event';
$string['exclude'] = 'Events never forwarded';
$string['exclude_desc'] = 'Event names, one per line; <code>*</code> matches anything. For example <code>\core\event\course_viewed</code> or <code>\mod_forum\event\*</code>. Exclusions win over inclusions.';
$string['facade_not_configured'] = 'The hub API URL or API token of local_mih is not set.';
$string['facade_refused'] = 'The hub refused the call (HTTP {$a->status}): {$a->message}';
$string['facade_unreachable'] = 'Cannot reach the hub at {$a->url}: {$a->error}';
$string['heading_events'] = 'Events to the hub';
$string['heading_events_desc'] = 'Create a source in the hub for this site, then paste its id and signing secret here. What waits to be sent and what the hub refused is on the <a href="{$a}">outbox page</a>, which also tests the connection.';
$string['heading_facade'] = 'Calls to services';
$string['heading_facade_desc'] = 'Other plugins call the hub\'s registered services through <code>\local_mih\hub</code>.';
$string['heading_inbound'] = 'Messages from the hub';
$string['heading_inbound_desc'] = 'External services send messages to the hub (by webhook or AMQP). Every minute this site pulls the ones for its source and raises each as the event <code>\local_mih\event\webhook_received</code>, which other plugins observe. Needs the hub API URL, the API token and the source id above.';
$string['inbound'] = 'Receive inbound messages';
$string['inbound_desc'] = 'Pull the messages the hub keeps for this site and raise one event per message, in order. While this is off, the messages wait in the hub for as long as its retention keeps them.';
$string['include'] = 'Events forwarded';
$string['include_desc'] = 'Event names, one per line; <code>*</code> matches anything. <code>*</code> alone forwards every event.';
$string['ingesturl'] = 'Hub ingest URL';
$string['ingesturl_desc'] = 'The address of the hub\'s ingest, for example <code>https://hub.example.org:8081</code> (<code>/v1/events</code> is added when missing).';
$string['invalidaction'] = 'Unknown action: {$a}';
$string['invalidsecret'] = 'This is not a signing secret of the hub: it starts with whsec_ followed by base64 text, as the hub shows it for the source.';
$string['lasterror'] = 'Last error';
$string['mih:manage'] = 'Send, retry and discard events of the hub outbox, and test the connection';
$string['mih:view'] = 'See the hub outbox';
$string['nextattempt'] = 'Next attempt';
$string['noparked'] = 'The hub has refused no events.';
$string['notforwarding'] = 'Events are not being recorded: forwarding is switched off or not configured (<a href="{$a}">settings</a>).';
$string['oldest'] = 'Oldest waiting event';
$string['outbox'] = 'Hub outbox';
$string['parked'] = 'Parked (refused by the hub)';
$string['parkedevents'] = 'Events the hub refused';
$string['pending'] = 'Waiting to be sent';
$string['pluginname'] = 'Moodle integration hub (mih)';
$string['privacy:metadata:hub'] = 'Every event of the site is sent to the mih integration hub, which passes it on to the external systems its administrators connect.';
$string['privacy:metadata:hub:courseid'] = 'The course the event happened in.';
$string['privacy:metadata:hub:eventname'] = 'What happened.';
$string['privacy:metadata:hub:ip'] = 'The IP address the event came from.';
$string['privacy:metadata:hub:other'] = 'Details of the event, which may include personal data.';
$string['privacy:metadata:hub:realuserid'] = 'The real user when someone was logged in as another user.';
$string['privacy:metadata:hub:relateduserid'] = 'The user the event is about.';
$string['privacy:metadata:hub:timecreated'] = 'When the event happened.';
$string['privacy:metadata:hub:userid'] = 'The user who caused the event.';
$string['privacy:metadata:outbox'] = 'Events wait here until the hub has stored them; events the hub refused stay until an administrator retries or discards them.';
$string['privacy:metadata:outbox:eventname'] = 'What happened.';
$string['privacy:metadata:outbox:lasterror'] = 'Why the hub did not store the event yet.';
$string['privacy:metadata:outbox:payload'] = 'The whole event as it will be sent, including the user ids, the IP address and its details.';
$string['privacy:metadata:outbox:relateduserid'] = 'The user the event is about.';
$string['privacy:metadata:outbox:timecreated'] = 'When the event happened.';
$string['privacy:metadata:outbox:userid'] = 'The user who caused the event.';
$string['privacy:outboxpath'] = 'Events waiting for the hub';
$string['reason'] = 'Reason';
$string['retried'] = '{$a} parked events put back in line.';
$string['retry'] = 'Retry';
$string['retryall'] = 'Retry all parked events';
$string['sendnow'] = 'Send now';
$string['sent_report'] = 'Sent {$a->sent} events in {$a->batches} requests; parked {$a->parked}; held back {$a->deferred}.';
$string['service_disabled'] = 'Service {$a} is disabled in the hub.';
$string['service_not_found'] = 'Service {$a} is not registered in the hub.';
$string['signingsecret'] = 'Signing secret';
$string['signingsecret_desc'] = 'The source\'s signing secret as the hub shows it (whsec_…). Every request to the hub is signed with it.';
$string['sourceid'] = 'Source id';
$string['sourceid_desc'] = 'The id of this site\'s source in the hub.';
$string['stopped'] = 'Stopped: {$a}';
$string['task_pull_inbound'] = 'Receive messages from the hub';
$string['task_send_outbox'] = 'Send events to the hub';
$string['testconnection'] = 'Test connection';
$string['timecreated'] = 'Happened';
$string['timeout'] = 'Request timeout';
$string['timeout_desc'] = 'Seconds a request to the hub may take (1 to 60). Sending happens after the page is delivered, so users never wait for it.';
$string['waiting'] = 'Held back after a failure';
