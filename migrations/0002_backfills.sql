-- Backfills: historical events of <NS>_EVENTS replayed through one rule as jobs (origin backfill).
-- A row is the whole state of a run, so any api replica can resume it from `position`.

CREATE TABLE backfills (
    id                 UUID PRIMARY KEY,
    -- Kept when the rule is deleted; the run then fails saying so.
    rule_id            UUID REFERENCES rules (id) ON DELETE SET NULL,
    rule_name          TEXT NOT NULL,
    -- Events received in [from_time, to_time].
    from_time          TIMESTAMPTZ NOT NULL,
    to_time            TIMESTAMPTZ NOT NULL,
    status             TEXT NOT NULL DEFAULT 'running'
                       CHECK (status IN ('running', 'completed', 'cancelled', 'failed')),
    -- EVENTS stream sequences: the first event in range, the last one handled (0 before the
    -- first), and the stream's last sequence when the backfill was created (never beyond it).
    start_sequence     BIGINT,
    position           BIGINT NOT NULL DEFAULT 0,
    end_sequence       BIGINT NOT NULL,
    scanned            BIGINT NOT NULL DEFAULT 0,
    matched            BIGINT NOT NULL DEFAULT 0,
    jobs               BIGINT NOT NULL DEFAULT 0,
    render_failures    BIGINT NOT NULL DEFAULT 0,
    skipped_duplicates BIGINT NOT NULL DEFAULT 0,
    error              TEXT,
    created_by         TEXT NOT NULL,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at        TIMESTAMPTZ,
    CHECK (from_time <= to_time)
);
-- One running backfill per rule: two would only race each other's jobs.
CREATE UNIQUE INDEX backfills_running ON backfills (rule_id) WHERE status = 'running';
CREATE INDEX backfills_rule ON backfills (rule_id, id DESC);
