-- Dead letters, projected from <NS>_DLQ by the dlq service (idempotent on job id). A replay
-- publishes the stored job again as a new job (origin replay, replay_of = this job id); the row
-- stays, status `replaying` and linked to that job, until the new job is delivered, and is then
-- removed. If the replay fails for good, its own dead letter arrives with `replay_of` set.

CREATE TABLE dead_letters (
    job_id           UUID PRIMARY KEY,
    service          TEXT NOT NULL,
    rule_id          UUID,
    event_id         UUID,
    source           TEXT,
    eventname        TEXT,
    origin           TEXT NOT NULL,
    -- render | delivery
    stage            TEXT NOT NULL,
    reason           TEXT NOT NULL,
    attempts         INTEGER NOT NULL,
    -- The job exactly as it was (the rendered request), its last outcome, and for render
    -- failures the event to render again.
    job              JSONB NOT NULL,
    last_outcome     JSONB,
    event            JSONB,
    -- The job this one replayed, when it was itself a replay.
    replay_of        UUID,
    dead_lettered_at TIMESTAMPTZ NOT NULL,
    status           TEXT NOT NULL DEFAULT 'dead' CHECK (status IN ('dead', 'replaying')),
    -- The newest replay of this dead letter.
    replay_job_id    UUID,
    replayed_at      TIMESTAMPTZ,
    replayed_by      TEXT,
    recorded_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX dead_letters_at ON dead_letters (dead_lettered_at DESC);
CREATE INDEX dead_letters_service ON dead_letters (service, dead_lettered_at DESC);
CREATE INDEX dead_letters_replay_job ON dead_letters (replay_job_id);
-- Resolving a delivered replay walks `replay_of` links both ways.
CREATE INDEX dead_letters_replay_of ON dead_letters (replay_of) WHERE replay_of IS NOT NULL;

-- Bulk operations on dead letters (replay of a filtered set), tracked so they can be followed
-- and cancelled, and resumed by another api replica.
CREATE TABLE dead_letter_operations (
    id               UUID PRIMARY KEY,
    kind             TEXT NOT NULL CHECK (kind IN ('replay')),
    filter           JSONB NOT NULL,
    status           TEXT NOT NULL DEFAULT 'running'
                     CHECK (status IN ('running', 'completed', 'cancelled', 'failed')),
    total            BIGINT NOT NULL DEFAULT 0,
    done             BIGINT NOT NULL DEFAULT 0,
    failed           BIGINT NOT NULL DEFAULT 0,
    -- The last dead letter handled (operations walk the set by job id), so a replica that
    -- takes over resumes after it.
    position         UUID,
    error            TEXT,
    created_by       TEXT NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at      TIMESTAMPTZ
);
