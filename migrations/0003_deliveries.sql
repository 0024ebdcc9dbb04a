-- The delivery log: one row per attempt, projected from <NS>_RESULTS by api's recorder
-- (idempotent on job id + attempt), and per-minute rollups kept in the same transaction as the
-- row they count, so a redelivered outcome is counted once. Both can be rebuilt from RESULTS
-- (`mih rebuild-projections`).

CREATE TABLE deliveries (
    job_id           UUID NOT NULL,
    attempt          INTEGER NOT NULL,
    service          TEXT NOT NULL,
    rule_id          UUID,
    event_id         UUID,
    source           TEXT,
    eventname        TEXT,
    -- rule | facade | replay | backfill
    origin           TEXT NOT NULL,
    -- delivered | failed_retryable | failed_permanent | timeout | circuit_open
    status           TEXT NOT NULL,
    started_at       TIMESTAMPTZ NOT NULL,
    duration_ms      BIGINT NOT NULL,
    response_status  INTEGER,
    response_excerpt TEXT,
    error            TEXT,
    trace_id         TEXT,
    -- For a replay: the dead letter's job id it retries.
    replay_of        UUID,
    -- The request as sent (the first attempt's outcome carries it).
    request          JSONB,
    recorded_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, attempt)
);
CREATE INDEX deliveries_started ON deliveries (started_at DESC);
CREATE INDEX deliveries_service_started ON deliveries (service, started_at DESC);
CREATE INDEX deliveries_rule_started ON deliveries (rule_id, started_at DESC);
CREATE INDEX deliveries_event ON deliveries (event_id);
CREATE INDEX deliveries_status_started ON deliveries (status, started_at DESC);
CREATE INDEX deliveries_replay_of ON deliveries (replay_of) WHERE replay_of IS NOT NULL;

-- One row per minute, service and rule (rule_key = the rule id, or '' for calls without a
-- rule: the facade). Latencies are a fixed-boundary histogram (boundaries and their error
-- bound in services/api/src/recorder/histogram.rs), so windows of any length merge by adding
-- buckets. Latency columns count only attempts that went out (not `circuit_open` refusals).
-- Bucket counts are per minute, so 32-bit integers are plenty and keep the row small.
CREATE TABLE delivery_rollups (
    minute           TIMESTAMPTZ NOT NULL,
    service          TEXT NOT NULL,
    rule_key         TEXT NOT NULL,
    delivered        BIGINT NOT NULL DEFAULT 0,
    failed_retryable BIGINT NOT NULL DEFAULT 0,
    failed_permanent BIGINT NOT NULL DEFAULT 0,
    timeout          BIGINT NOT NULL DEFAULT 0,
    circuit_open     BIGINT NOT NULL DEFAULT 0,
    latency_sum_ms   BIGINT NOT NULL DEFAULT 0,
    latency_max_ms   BIGINT NOT NULL DEFAULT 0,
    latency_buckets  INTEGER[] NOT NULL,
    PRIMARY KEY (minute, service, rule_key)
);
CREATE INDEX delivery_rollups_service ON delivery_rollups (service, minute);
CREATE INDEX delivery_rollups_rule ON delivery_rollups (rule_key, minute);

-- Every stored state of each circuit (one row per revision of its key in the <ns>_circuits
-- bucket, followed with history by the recorder), for the dashboard and the stats; a change of
-- state is a row whose state differs from the service's previous row. `changed_at` is the
-- circuit's own `changed_at` (when it last changed state).
CREATE TABLE circuit_changes (
    service          TEXT NOT NULL,
    revision         BIGINT NOT NULL,
    state            TEXT NOT NULL,
    changed_at       TIMESTAMPTZ NOT NULL,
    consecutive_failures INTEGER NOT NULL,
    last_error       TEXT,
    PRIMARY KEY (service, revision)
);
CREATE INDEX circuit_changes_at ON circuit_changes (changed_at);
