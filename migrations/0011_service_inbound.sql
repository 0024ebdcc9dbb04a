-- What a service sends back towards Moodle (issue 15): the Moodle site (source) that receives
-- its inbound messages, whether its inbound endpoint is on, its sealed Standard Webhooks
-- secrets and bearer token hashes (credentials apart from the ones mih uses to reach it), and
-- its rate limit. NULL: the service sends nothing back. The shape is mih_shared's LiveInbound.
ALTER TABLE services ADD COLUMN inbound JSONB;
