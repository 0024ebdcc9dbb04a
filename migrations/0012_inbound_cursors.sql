-- How far each Moodle site (source) has acknowledged its inbound messages: the <NS>_INBOUND
-- stream sequence of the last one its plugin raised as a Moodle event. A pull without `after`
-- starts after it. Messages are not deleted on acknowledgement; the stream's age limit
-- (streams.inbound_max_age) decides how long they stay.
CREATE TABLE inbound_cursors (
    source       TEXT PRIMARY KEY,
    acknowledged BIGINT NOT NULL CHECK (acknowledged >= 0),
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
