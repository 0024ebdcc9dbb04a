//! Writing the projections one outcome at a time: its delivery row and its rollups (the
//! minute's and its periods'), in one statement (`mih rebuild-projections`, and the recorder's fallback when a batch is refused).

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use sqlx::PgPool;

use mih_shared::circuit::Circuit;
use mih_shared::db::RetentionSpec;
use mih_shared::messages::{Origin, Outcome, OutcomeStatus};
use mih_shared::pgtext::{make_storable, storable, storable_opt};

use super::{histogram, periods};

pub(super) fn origin_str(origin: Origin) -> &'static str {
    match origin {
        Origin::Rule => "rule",
        Origin::Facade => "facade",
        Origin::Replay => "replay",
        Origin::Backfill => "backfill",
    }
}

/// The rollup minute of an attempt: when it started, truncated to the minute (UTC).
pub fn minute_of(started_at: DateTime<Utc>) -> DateTime<Utc> {
    started_at
        .duration_trunc(TimeDelta::minutes(1))
        .unwrap_or(started_at)
}

/// Whether an attempt's duration says anything about the target's latency: an attempt refused
/// by an open circuit never went out.
pub(super) fn measures_latency(status: OutcomeStatus) -> bool {
    status != OutcomeStatus::CircuitOpen
}

/// Records one outcome; Ok(true) if it was new. Idempotent on (job_id, attempt): the rollup is
/// updated in the same transaction, only when the row was inserted.
pub async fn record(db: &PgPool, outcome: &Outcome) -> Result<bool, sqlx::Error> {
    let request = match &outcome.request {
        Some(request) => {
            let mut value =
                serde_json::to_value(request).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
            make_storable(&mut value);
            Some(value)
        }
        None => None,
    };
    let duration = i64::try_from(outcome.duration_ms).unwrap_or(i64::MAX);
    let count = |s: OutcomeStatus| i64::from(outcome.status == s);
    let timed = measures_latency(outcome.status);
    let bucket = histogram::bucket_of(outcome.duration_ms);
    let mut buckets = vec![0_i32; histogram::BUCKETS];
    if timed {
        buckets[bucket] = 1;
    }
    let rule_key = outcome.rule_id.map(|r| r.to_string()).unwrap_or_default();
    let widths = periods::WIDTHS;
    let period_starts = widths.map(|width| periods::start_of(outcome.started_at, width));
    // One statement, so one round trip and atomic on its own: the rollups are counted only from
    // the row the insert returns, i.e. only when this attempt is new. PostgreSQL runs the
    // parts of a WITH in no set order, so each part reads the one before it: the rows are then
    // locked in the order a batch ([`super::record_batch`]) locks them — the minute row, the
    // period rows by width, then their latency rows — and a lone outcome and a batch that
    // share rows wait on each other instead of deadlocking.
    let recorded: i64 = sqlx::query_scalar(concat!(
        "WITH inserted AS ( \
           INSERT INTO deliveries (job_id, attempt, service, rule_id, event_id, source, eventname, \
             origin, status, started_at, duration_ms, response_status, response_excerpt, error, \
             trace_id, replay_of, request, retry_at) \
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
             $29) \
           ON CONFLICT (job_id, attempt) DO NOTHING \
           RETURNING 1 \
         ), rolled AS ( \
           INSERT INTO delivery_rollups (minute, service, rule_key, delivered, failed_retryable, \
             failed_permanent, timeout, circuit_open, latency_sum_ms, latency_max_ms, latency_buckets) \
           SELECT $18, $3, $19, $20, $21, $22, $23, $24, $25, $25, $26 FROM inserted \
           ON CONFLICT (minute, service, rule_key) DO UPDATE SET ",
        add_counts!("delivery_rollups"),
        ", latency_buckets[$27] = delivery_rollups.latency_buckets[$27] + $28 \
           RETURNING 1 \
         ), periods AS ( \
           INSERT INTO delivery_period_rollups (width_s, at, service, rule_key, delivered, \
             failed_retryable, failed_permanent, timeout, circuit_open, latency_sum_ms, \
             latency_max_ms) \
           SELECT p.width_s, p.at, $3, $19, $20, $21, $22, $23, $24, $25, $25 \
           FROM rolled, UNNEST($30::int4[], $31::timestamptz[]) AS p(width_s, at) \
           ON CONFLICT (width_s, at, service, rule_key) DO UPDATE SET ",
        add_counts!("delivery_period_rollups"),
        " RETURNING 1 \
         ), latencies AS ( \
           INSERT INTO delivery_period_latency (width_s, at, service, rule_key, bucket, samples) \
           SELECT p.width_s, p.at, $3, $19, ($27 - 1)::int2, 1 \
           FROM (SELECT count(*) AS n FROM periods) AS done, \
             UNNEST($30::int4[], $31::timestamptz[]) AS p(width_s, at) \
           WHERE $28 = 1 AND done.n > 0 \
           ON CONFLICT (width_s, at, service, rule_key, bucket) DO UPDATE SET \
             samples = delivery_period_latency.samples + EXCLUDED.samples \
           RETURNING 1 \
         ) \
         SELECT count(*) FROM inserted"
    ))
    .bind(outcome.job_id.0)
    .bind(i32::try_from(outcome.attempt).unwrap_or(i32::MAX))
    .bind(outcome.service.as_str())
    .bind(outcome.rule_id.map(|r| r.0))
    .bind(outcome.event_id.map(|e| e.0))
    .bind(outcome.source.as_ref().map(|s| storable(s.as_str()).into_owned()))
    .bind(storable_opt(outcome.eventname.as_deref()))
    .bind(origin_str(outcome.origin))
    .bind(outcome.status.as_str())
    .bind(outcome.started_at)
    .bind(duration)
    .bind(outcome.response_status.map(i32::from))
    .bind(storable_opt(outcome.response_excerpt.as_deref()))
    .bind(storable_opt(outcome.error.as_deref()))
    .bind(storable_opt(outcome.trace_id.as_deref()))
    .bind(outcome.replay_of.map(|j| j.0))
    .bind(request)
    .bind(minute_of(outcome.started_at))
    .bind(rule_key)
    .bind(count(OutcomeStatus::Delivered))
    .bind(count(OutcomeStatus::FailedRetryable))
    .bind(count(OutcomeStatus::FailedPermanent))
    .bind(count(OutcomeStatus::Timeout))
    .bind(count(OutcomeStatus::CircuitOpen))
    .bind(if timed { duration } else { 0 })
    .bind(buckets)
    // PostgreSQL arrays count from 1.
    .bind(i32::try_from(bucket + 1).unwrap_or(i32::MAX))
    .bind(i32::from(timed))
    .bind(outcome.retry_at)
    .bind(&widths[..])
    .bind(&period_starts[..])
    .fetch_one(db)
    .await?;
    Ok(recorded == 1)
}

/// Records one state of a circuit (KV revision), idempotent on (service, revision).
pub async fn record_circuit(
    db: &PgPool,
    service: &str,
    revision: u64,
    circuit: &Circuit,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO circuit_changes (service, revision, state, changed_at, \
         consecutive_failures, last_error) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (service, revision) DO NOTHING",
    )
    .bind(storable(service).into_owned())
    .bind(i64::try_from(revision).unwrap_or(i64::MAX))
    .bind(circuit.state.as_str())
    .bind(circuit.changed_at)
    .bind(i32::try_from(circuit.consecutive_failures).unwrap_or(i32::MAX))
    .bind(storable_opt(circuit.last_error.as_deref()))
    .execute(db)
    .await?
    .rows_affected()
        == 1;
    Ok(inserted)
}

/// The highest circuit revision recorded: the watch resumes after it.
pub async fn last_circuit_revision(db: &PgPool) -> Result<u64, sqlx::Error> {
    let last: Option<i64> = sqlx::query_scalar("SELECT max(revision) FROM circuit_changes")
        .fetch_one(db)
        .await?;
    Ok(last.and_then(|r| u64::try_from(r).ok()).unwrap_or(0))
}

/// Empties the delivery log, its rollups and the circuit changes, for a rebuild from the
/// streams (`mih rebuild-projections`).
pub async fn truncate(db: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query(
        "TRUNCATE deliveries, delivery_rollups, delivery_period_rollups, \
         delivery_period_latency, circuit_changes",
    )
    .execute(db)
    .await?;
    Ok(())
}

/// How retention prunes the delivery log: by when each attempt started.
pub const DELIVERIES_RETENTION: RetentionSpec = RetentionSpec {
    table: "deliveries",
    age_column: "started_at",
    key: "job_id, attempt",
};

/// How retention prunes the rollups: by their minute.
pub const ROLLUPS_RETENTION: RetentionSpec = RetentionSpec {
    table: "delivery_rollups",
    age_column: "minute",
    key: "minute, service, rule_key",
};

/// How retention prunes the period rollups: by when their period started (a day's row goes
/// when its first minute is older than the limit).
pub const PERIOD_ROLLUPS_RETENTION: RetentionSpec = RetentionSpec {
    table: "delivery_period_rollups",
    age_column: "at",
    key: "width_s, at, service, rule_key",
};

/// How retention prunes the period latency histograms: as their rollups.
pub const PERIOD_LATENCY_RETENTION: RetentionSpec = RetentionSpec {
    table: "delivery_period_latency",
    age_column: "at",
    key: "width_s, at, service, rule_key, bucket",
};

/// How retention prunes the circuit changes: by when the circuit changed state.
pub const CIRCUIT_CHANGES_RETENTION: RetentionSpec = RetentionSpec {
    table: "circuit_changes",
    age_column: "changed_at",
    key: "service, revision",
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minutes_are_truncated_in_utc() {
        let at = DateTime::parse_from_rfc3339("2026-03-01T10:15:59.999+00:00")
            .expect("time")
            .with_timezone(&Utc);
        assert_eq!(minute_of(at).to_rfc3339(), "2026-03-01T10:15:00+00:00");
    }
}
