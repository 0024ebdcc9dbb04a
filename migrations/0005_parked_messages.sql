-- Projection poison policy and exact dead letters.
--
-- A message a projection consumer (dlq, recorder) cannot store because PostgreSQL refuses its
-- content is parked here after a few tries, with why, and the consumer goes on; an operator
-- lists, retries or deletes parked messages through /api/v1/parked. The payload is kept as
-- bytes, which PostgreSQL always accepts.
CREATE TABLE parked_messages (
    id          UUID PRIMARY KEY,
    -- The durable consumer that gave up on it (dlq, dlq-replays, recorder).
    consumer    TEXT NOT NULL,
    stream      TEXT NOT NULL,
    subject     TEXT NOT NULL,
    -- The message's sequence in its stream: parking the same message twice is one row.
    sequence    BIGINT NOT NULL,
    payload     BYTEA NOT NULL,
    error       TEXT NOT NULL,
    deliveries  INTEGER NOT NULL,
    parked_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (stream, sequence, consumer)
);
CREATE INDEX parked_messages_at ON parked_messages (parked_at DESC);

-- jsonb cannot hold the NUL character (U+0000). Text shown and searched (reasons, excerpts,
-- the JSON views) stores it as U+FFFD; a dead letter whose job or event carried NUL also keeps
-- its exact message here, as JSON text (where NUL is the escape `\u0000`), so a replay sends
-- exactly what the job held.
ALTER TABLE dead_letters ADD COLUMN exact TEXT;
