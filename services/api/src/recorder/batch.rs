//! Writing many outcomes at once, in one statement: a multi-row insert of their delivery rows,
//! and, from the rows it inserted, one upsert per rollup row they fall in: per minute, service
//! and rule (`delivery_rollups`), and per period ([`super::periods`]) with its latency buckets.
//!
//! Per-outcome transactions cost PostgreSQL a commit each, and all of them fight over the same
//! rollup row (one per minute, service and rule); a batch commits once and touches each rollup
//! row once. One statement is one round trip, where a transaction of the same steps is six:
//! at a moderate rate `api.record_linger` gathers a batch of the outcomes that come within it
//! (about 20 at 1,000 a second), and there the round trips were the cost.
//! Idempotency is the same as [`super::record`]: the rollups count only the rows the insert
//! returned, so a redelivered outcome changes nothing.
//!
//! The rows are locked in one order, that of a lone outcome too: delivery rows by key, then
//! the minute rows, the period rows by width, their latency rows; each part of the statement
//! reads the one before it, as PostgreSQL runs the parts of a `WITH` in no set order. So
//! batches and lone outcomes that share rows wait on each other instead of deadlocking.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use mih_shared::messages::{Outcome, OutcomeStatus};

use super::histogram;
use super::periods::{WIDTHS, start_of};
use mih_shared::pgtext::{make_storable, storable, storable_opt};

use super::store::{measures_latency, minute_of, origin_str};

/// The outcomes of a batch, column by column, for `UNNEST`: their delivery rows, and what each
/// adds to its rollups.
#[derive(Default)]
struct Columns {
    job_id: Vec<Uuid>,
    attempt: Vec<i32>,
    service: Vec<String>,
    rule_id: Vec<Option<Uuid>>,
    event_id: Vec<Option<Uuid>>,
    source: Vec<Option<String>>,
    eventname: Vec<Option<String>>,
    origin: Vec<&'static str>,
    status: Vec<&'static str>,
    started_at: Vec<DateTime<Utc>>,
    duration_ms: Vec<i64>,
    response_status: Vec<Option<i32>>,
    response_excerpt: Vec<Option<String>>,
    error: Vec<Option<String>>,
    trace_id: Vec<Option<String>>,
    replay_of: Vec<Option<Uuid>>,
    request: Vec<Option<Value>>,
    retry_at: Vec<Option<DateTime<Utc>>>,
    /// Its rollup minute and rule key.
    minute: Vec<DateTime<Utc>>,
    rule_key: Vec<String>,
    /// 1 in the column of its status.
    delivered: Vec<i64>,
    failed_retryable: Vec<i64>,
    failed_permanent: Vec<i64>,
    timeout: Vec<i64>,
    circuit_open: Vec<i64>,
    /// Its duration where it measures the target's latency, else 0 (and `timed` 0).
    latency_ms: Vec<i64>,
    timed: Vec<i32>,
    /// Its histogram bucket, counted from 1 as PostgreSQL's arrays are.
    bucket: Vec<i32>,
}

/// The period each outcome falls in, for each width: `WIDTHS.len()` rows per outcome.
#[derive(Default)]
struct PeriodColumns {
    job_id: Vec<Uuid>,
    attempt: Vec<i32>,
    width_s: Vec<i32>,
    at: Vec<DateTime<Utc>>,
}

impl Columns {
    fn push(&mut self, outcome: &Outcome) -> Result<(), sqlx::Error> {
        let request = match &outcome.request {
            Some(request) => {
                let mut value =
                    serde_json::to_value(request).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
                make_storable(&mut value);
                Some(value)
            }
            None => None,
        };
        self.retry_at.push(outcome.retry_at);
        self.job_id.push(outcome.job_id.0);
        self.attempt
            .push(i32::try_from(outcome.attempt).unwrap_or(i32::MAX));
        self.service
            .push(storable(outcome.service.as_str()).into_owned());
        self.rule_id.push(outcome.rule_id.map(|r| r.0));
        self.event_id.push(outcome.event_id.map(|e| e.0));
        self.source.push(
            outcome
                .source
                .as_ref()
                .map(|s| storable(s.as_str()).into_owned()),
        );
        self.eventname
            .push(storable_opt(outcome.eventname.as_deref()));
        self.origin.push(origin_str(outcome.origin));
        self.status.push(outcome.status.as_str());
        self.started_at.push(outcome.started_at);
        let duration = i64::try_from(outcome.duration_ms).unwrap_or(i64::MAX);
        self.duration_ms.push(duration);
        self.response_status
            .push(outcome.response_status.map(i32::from));
        self.response_excerpt
            .push(storable_opt(outcome.response_excerpt.as_deref()));
        self.error.push(storable_opt(outcome.error.as_deref()));
        self.trace_id
            .push(storable_opt(outcome.trace_id.as_deref()));
        self.replay_of.push(outcome.replay_of.map(|j| j.0));
        self.request.push(request);

        self.minute.push(minute_of(outcome.started_at));
        self.rule_key
            .push(outcome.rule_id.map(|r| r.to_string()).unwrap_or_default());
        let count = |status: OutcomeStatus| i64::from(outcome.status == status);
        self.delivered.push(count(OutcomeStatus::Delivered));
        self.failed_retryable
            .push(count(OutcomeStatus::FailedRetryable));
        self.failed_permanent
            .push(count(OutcomeStatus::FailedPermanent));
        self.timeout.push(count(OutcomeStatus::Timeout));
        self.circuit_open.push(count(OutcomeStatus::CircuitOpen));
        let timed = measures_latency(outcome.status);
        self.latency_ms.push(if timed { duration } else { 0 });
        self.timed.push(i32::from(timed));
        let bucket = histogram::bucket_of(outcome.duration_ms) + 1;
        self.bucket.push(i32::try_from(bucket).unwrap_or(i32::MAX));
        Ok(())
    }
}

impl PeriodColumns {
    fn push(&mut self, outcome: &Outcome) {
        for width in WIDTHS {
            self.job_id.push(outcome.job_id.0);
            self.attempt
                .push(i32::try_from(outcome.attempt).unwrap_or(i32::MAX));
            self.width_s.push(width);
            self.at.push(start_of(outcome.started_at, width));
        }
    }
}

/// The one statement of a batch. `$1`–`$18` are the delivery rows' columns, `$19`–`$28` what
/// each adds to its rollups, `$29` the number of histogram buckets, `$30`–`$33` the periods.
const RECORD_BATCH: &str = concat!(
    "WITH input AS ( \
       SELECT * FROM UNNEST($1::uuid[], $2::int4[], $3::text[], $4::uuid[], $5::uuid[], \
         $6::text[], $7::text[], $8::text[], $9::text[], $10::timestamptz[], $11::int8[], \
         $12::int4[], $13::text[], $14::text[], $15::text[], $16::uuid[], $17::jsonb[], \
         $18::timestamptz[], $19::timestamptz[], $20::text[], $21::int8[], $22::int8[], \
         $23::int8[], $24::int8[], $25::int8[], $26::int8[], $27::int4[], $28::int4[]) \
       AS t(job_id, attempt, service, rule_id, event_id, source, eventname, origin, status, \
         started_at, duration_ms, response_status, response_excerpt, error, trace_id, \
         replay_of, request, retry_at, minute, rule_key, delivered, failed_retryable, \
         failed_permanent, timeout, circuit_open, latency_ms, timed, bucket) \
     ), inserted AS ( \
       INSERT INTO deliveries (job_id, attempt, service, rule_id, event_id, source, eventname, \
         origin, status, started_at, duration_ms, response_status, response_excerpt, error, \
         trace_id, replay_of, request, retry_at) \
       SELECT job_id, attempt, service, rule_id, event_id, source, eventname, origin, status, \
         started_at, duration_ms, response_status, response_excerpt, error, trace_id, \
         replay_of, request, retry_at \
       FROM input ORDER BY job_id, attempt \
       ON CONFLICT (job_id, attempt) DO NOTHING \
       RETURNING job_id, attempt \
     ), fresh AS ( \
       SELECT input.* FROM input JOIN inserted USING (job_id, attempt) \
     ), minute_buckets AS ( \
       SELECT k.minute, k.service, k.rule_key, \
         array_agg(coalesce(f.samples, 0)::int4 ORDER BY g) AS buckets \
       FROM (SELECT DISTINCT minute, service, rule_key FROM fresh) AS k \
         CROSS JOIN generate_series(1, $29::int4) AS g \
         LEFT JOIN (SELECT minute, service, rule_key, bucket, sum(timed) AS samples \
           FROM fresh GROUP BY minute, service, rule_key, bucket) AS f \
         ON f.minute = k.minute AND f.service = k.service AND f.rule_key = k.rule_key \
           AND f.bucket = g \
       GROUP BY k.minute, k.service, k.rule_key \
     ), rolled AS ( \
       INSERT INTO delivery_rollups (minute, service, rule_key, delivered, failed_retryable, \
         failed_permanent, timeout, circuit_open, latency_sum_ms, latency_max_ms, \
         latency_buckets) \
       SELECT f.minute, f.service, f.rule_key, sum(f.delivered), sum(f.failed_retryable), \
         sum(f.failed_permanent), sum(f.timeout), sum(f.circuit_open), sum(f.latency_ms), \
         max(f.latency_ms), b.buckets \
       FROM fresh AS f JOIN minute_buckets AS b \
         ON b.minute = f.minute AND b.service = f.service AND b.rule_key = f.rule_key \
       GROUP BY f.minute, f.service, f.rule_key, b.buckets \
       ORDER BY f.minute, f.service, f.rule_key \
       ON CONFLICT (minute, service, rule_key) DO UPDATE SET ",
    add_counts!("delivery_rollups"),
    ", latency_buckets = ARRAY( \
         SELECT coalesce(old, 0) + coalesce(add, 0) \
         FROM unnest(delivery_rollups.latency_buckets, EXCLUDED.latency_buckets) \
           WITH ORDINALITY AS b(old, add, position) \
         ORDER BY position) \
       RETURNING 1 \
     ), in_periods AS ( \
       SELECT p.width_s, p.at, f.* \
       FROM fresh AS f \
         JOIN UNNEST($30::uuid[], $31::int4[], $32::int4[], $33::timestamptz[]) \
           AS p(job_id, attempt, width_s, at) USING (job_id, attempt) \
     ), periods AS ( \
       INSERT INTO delivery_period_rollups (width_s, at, service, rule_key, delivered, \
         failed_retryable, failed_permanent, timeout, circuit_open, latency_sum_ms, \
         latency_max_ms) \
       SELECT width_s, at, service, rule_key, sum(delivered), sum(failed_retryable), \
         sum(failed_permanent), sum(timeout), sum(circuit_open), sum(latency_ms), \
         max(latency_ms) \
       FROM in_periods, (SELECT count(*) AS n FROM rolled) AS done \
       WHERE done.n > 0 \
       GROUP BY width_s, at, service, rule_key \
       ORDER BY width_s, at, service, rule_key \
       ON CONFLICT (width_s, at, service, rule_key) DO UPDATE SET ",
    add_counts!("delivery_period_rollups"),
    " RETURNING 1 \
     ), latencies AS ( \
       INSERT INTO delivery_period_latency (width_s, at, service, rule_key, bucket, samples) \
       SELECT width_s, at, service, rule_key, (bucket - 1)::int2, sum(timed)::int8 \
       FROM in_periods, (SELECT count(*) AS n FROM periods) AS done \
       WHERE done.n > 0 AND timed = 1 \
       GROUP BY width_s, at, service, rule_key, bucket \
       ORDER BY width_s, at, service, rule_key, bucket \
       ON CONFLICT (width_s, at, service, rule_key, bucket) DO UPDATE SET \
         samples = delivery_period_latency.samples + EXCLUDED.samples \
       RETURNING 1 \
     ) \
     SELECT job_id, attempt FROM inserted"
);

/// Records `outcomes` in one statement; for each, in order, whether it was new. Idempotent
/// on (job_id, attempt), like [`super::record`]. An outcome that appears twice in the batch is
/// new at most once.
pub async fn record_batch(db: &PgPool, outcomes: &[Outcome]) -> Result<Vec<bool>, sqlx::Error> {
    if outcomes.is_empty() {
        return Ok(Vec::new());
    }
    // Each attempt once (a second copy is never new), in key order: two batches that share
    // rows (a redelivery racing its original) then wait on each other instead of deadlocking.
    let mut order: Vec<usize> = (0..outcomes.len()).collect();
    order.sort_by_key(|&i| (outcomes[i].job_id.0, outcomes[i].attempt));
    order.dedup_by_key(|i| (outcomes[*i].job_id.0, outcomes[*i].attempt));
    let mut columns = Columns::default();
    let mut periods = PeriodColumns::default();
    for &i in &order {
        columns.push(&outcomes[i])?;
        periods.push(&outcomes[i]);
    }
    let inserted: Vec<(Uuid, i32)> = sqlx::query_as(RECORD_BATCH)
        .bind(&columns.job_id)
        .bind(&columns.attempt)
        .bind(&columns.service)
        .bind(&columns.rule_id)
        .bind(&columns.event_id)
        .bind(&columns.source)
        .bind(&columns.eventname)
        .bind(&columns.origin)
        .bind(&columns.status)
        .bind(&columns.started_at)
        .bind(&columns.duration_ms)
        .bind(&columns.response_status)
        .bind(&columns.response_excerpt)
        .bind(&columns.error)
        .bind(&columns.trace_id)
        .bind(&columns.replay_of)
        .bind(&columns.request)
        .bind(&columns.retry_at)
        .bind(&columns.minute)
        .bind(&columns.rule_key)
        .bind(&columns.delivered)
        .bind(&columns.failed_retryable)
        .bind(&columns.failed_permanent)
        .bind(&columns.timeout)
        .bind(&columns.circuit_open)
        .bind(&columns.latency_ms)
        .bind(&columns.timed)
        .bind(&columns.bucket)
        .bind(i32::try_from(histogram::BUCKETS).unwrap_or(i32::MAX))
        .bind(&periods.job_id)
        .bind(&periods.attempt)
        .bind(&periods.width_s)
        .bind(&periods.at)
        .fetch_all(db)
        .await?;
    let mut new: HashSet<(Uuid, i32)> = inserted.into_iter().collect();
    let fresh = outcomes
        .iter()
        .map(|outcome| {
            let key = (
                outcome.job_id.0,
                i32::try_from(outcome.attempt).unwrap_or(i32::MAX),
            );
            // `remove`: a second copy of the same outcome in this batch is not new.
            new.remove(&key)
        })
        .collect();
    Ok(fresh)
}
