-- The inbound log: every message in <NS>_INBOUND (stored for a Moodle site, or parked because
-- it could not be), projected by api's inbound recorder for the API, the dashboard and the
-- statistics. Whether a stored message reached Moodle is not kept here: it is its source's
-- acknowledgement (inbound_cursors) compared with `sequence`. Rebuilt from the stream by
-- `mih rebuild-projections` as far as the stream still holds it.
CREATE TABLE inbound_messages (
    id            UUID PRIMARY KEY,
    sequence      BIGINT NOT NULL,
    service       TEXT NOT NULL,
    -- NULL for a parked message: it never reached a site.
    source        TEXT,
    -- webhook | amqp
    via           TEXT NOT NULL,
    received_at   TIMESTAMPTZ NOT NULL,
    content_type  TEXT,
    size_bytes    INTEGER NOT NULL,
    -- The start of the payload as text, bounded.
    excerpt       TEXT NOT NULL,
    external_id   TEXT,
    -- Why it was parked; NULL when it was stored for its site.
    parked_reason TEXT
);
CREATE INDEX inbound_messages_received ON inbound_messages (received_at DESC, id DESC);
CREATE INDEX inbound_messages_service ON inbound_messages (service, received_at DESC, id DESC);
