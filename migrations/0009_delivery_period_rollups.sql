-- Coarser rollups beside the per-minute ones, so a day or a week of figures reads a few
-- thousand rows instead of every minute's: the same counts per period (`width_s` seconds,
-- aligned to the epoch: 900 = 15 minutes, 86400 = a UTC day), service and rule, and the
-- latency histogram kept sparse (one row per bucket that has samples, `bucket` 0-based as in
-- services/api/src/recorder/histogram.rs) because a period's attempts fill only a few of its
-- buckets and summing dense arrays row by row is what made long windows slow. The recorder
-- writes them in the same statement or transaction as the delivery row, like the minutes.
CREATE TABLE delivery_period_rollups (
    width_s          INTEGER NOT NULL,
    at               TIMESTAMPTZ NOT NULL,
    service          TEXT NOT NULL,
    rule_key         TEXT NOT NULL,
    delivered        BIGINT NOT NULL DEFAULT 0,
    failed_retryable BIGINT NOT NULL DEFAULT 0,
    failed_permanent BIGINT NOT NULL DEFAULT 0,
    timeout          BIGINT NOT NULL DEFAULT 0,
    circuit_open     BIGINT NOT NULL DEFAULT 0,
    latency_sum_ms   BIGINT NOT NULL DEFAULT 0,
    latency_max_ms   BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (width_s, at, service, rule_key)
);
CREATE INDEX delivery_period_rollups_at ON delivery_period_rollups (at);

CREATE TABLE delivery_period_latency (
    width_s  INTEGER NOT NULL,
    at       TIMESTAMPTZ NOT NULL,
    service  TEXT NOT NULL,
    rule_key TEXT NOT NULL,
    bucket   SMALLINT NOT NULL,
    samples  BIGINT NOT NULL,
    PRIMARY KEY (width_s, at, service, rule_key, bucket)
);
CREATE INDEX delivery_period_latency_at ON delivery_period_latency (at);
