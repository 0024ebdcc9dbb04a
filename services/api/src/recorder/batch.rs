//! Writing many outcomes at once: one multi-row insert of their delivery rows and one rollup
//! upsert per (minute, service, rule) among the rows that were new, and one upsert each of
//! their period rollups ([`super::periods`]), in one transaction.
//!
//! Per-outcome transactions cost PostgreSQL a commit each, and all of them fight over the same
//! rollup row (one per minute, service and rule); a batch commits once and touches each rollup
//! row once. Idempotency is the same as [`super::record`]: a rollup counts only the rows the
//! insert returned, so a redelivered outcome changes nothing.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use mih_shared::messages::{Outcome, OutcomeStatus};

use super::histogram;
use mih_shared::pgtext::{make_storable, storable, storable_opt};

use super::store::{measures_latency, minute_of, origin_str};

/// One rollup row's increments, summed over a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Increment {
    pub(super) delivered: i64,
    pub(super) failed_retryable: i64,
    pub(super) failed_permanent: i64,
    pub(super) timeout: i64,
    pub(super) circuit_open: i64,
    pub(super) latency_sum_ms: i64,
    pub(super) latency_max_ms: i64,
    pub(super) buckets: Vec<i32>,
}

impl Default for Increment {
    fn default() -> Self {
        Increment {
            delivered: 0,
            failed_retryable: 0,
            failed_permanent: 0,
            timeout: 0,
            circuit_open: 0,
            latency_sum_ms: 0,
            latency_max_ms: 0,
            buckets: vec![0; histogram::BUCKETS],
        }
    }
}

impl Increment {
    /// Adds another row's increments (a minute's into its period's).
    pub(super) fn merge(&mut self, other: &Increment) {
        self.delivered += other.delivered;
        self.failed_retryable += other.failed_retryable;
        self.failed_permanent += other.failed_permanent;
        self.timeout += other.timeout;
        self.circuit_open += other.circuit_open;
        self.latency_sum_ms = self.latency_sum_ms.saturating_add(other.latency_sum_ms);
        self.latency_max_ms = self.latency_max_ms.max(other.latency_max_ms);
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            *mine = mine.saturating_add(*theirs);
        }
    }

    fn add(&mut self, outcome: &Outcome) {
        match outcome.status {
            OutcomeStatus::Delivered => self.delivered += 1,
            OutcomeStatus::FailedRetryable => self.failed_retryable += 1,
            OutcomeStatus::FailedPermanent => self.failed_permanent += 1,
            OutcomeStatus::Timeout => self.timeout += 1,
            OutcomeStatus::CircuitOpen => self.circuit_open += 1,
        }
        if measures_latency(outcome.status) {
            let duration = i64::try_from(outcome.duration_ms).unwrap_or(i64::MAX);
            self.latency_sum_ms = self.latency_sum_ms.saturating_add(duration);
            self.latency_max_ms = self.latency_max_ms.max(duration);
            let bucket = &mut self.buckets[histogram::bucket_of(outcome.duration_ms)];
            *bucket = bucket.saturating_add(1);
        }
    }
}

/// (minute, service, rule key): a rollup row. Ordered, so concurrent batches lock rows in the
/// same order and cannot deadlock each other.
pub(super) type RollupKey = (DateTime<Utc>, String, String);

fn rollups<'a>(outcomes: impl Iterator<Item = &'a Outcome>) -> BTreeMap<RollupKey, Increment> {
    let mut rollups: BTreeMap<RollupKey, Increment> = BTreeMap::new();
    for outcome in outcomes {
        let key = (
            minute_of(outcome.started_at),
            outcome.service.to_string(),
            outcome.rule_id.map(|r| r.to_string()).unwrap_or_default(),
        );
        rollups.entry(key).or_default().add(outcome);
    }
    rollups
}

/// The delivery rows of a batch, column by column, for `UNNEST`.
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
        self.service.push(outcome.service.to_string());
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
        self.duration_ms
            .push(i64::try_from(outcome.duration_ms).unwrap_or(i64::MAX));
        self.response_status
            .push(outcome.response_status.map(i32::from));
        self.response_excerpt
            .push(storable_opt(outcome.response_excerpt.as_deref()));
        self.error.push(storable_opt(outcome.error.as_deref()));
        self.trace_id
            .push(storable_opt(outcome.trace_id.as_deref()));
        self.replay_of.push(outcome.replay_of.map(|j| j.0));
        self.request.push(request);
        Ok(())
    }
}

/// Records `outcomes` in one transaction; for each, in order, whether it was new. Idempotent
/// on (job_id, attempt), like [`super::record`]. An outcome that appears twice in the batch is
/// new at most once.
pub async fn record_batch(db: &PgPool, outcomes: &[Outcome]) -> Result<Vec<bool>, sqlx::Error> {
    if outcomes.is_empty() {
        return Ok(Vec::new());
    }
    // Rows are inserted in key order: two batches that share rows (a redelivery racing its
    // original) then wait on each other instead of deadlocking.
    let mut order: Vec<usize> = (0..outcomes.len()).collect();
    order.sort_by_key(|&i| (outcomes[i].job_id.0, outcomes[i].attempt));
    let mut columns = Columns::default();
    for &i in &order {
        columns.push(&outcomes[i])?;
    }
    let mut tx = db.begin().await?;
    let inserted: Vec<(Uuid, i32)> = sqlx::query_as(
        "INSERT INTO deliveries (job_id, attempt, service, rule_id, event_id, source, eventname, \
           origin, status, started_at, duration_ms, response_status, response_excerpt, error, \
           trace_id, replay_of, request, retry_at) \
         SELECT * FROM UNNEST($1::uuid[], $2::int4[], $3::text[], $4::uuid[], $5::uuid[], \
           $6::text[], $7::text[], $8::text[], $9::text[], $10::timestamptz[], $11::int8[], \
           $12::int4[], $13::text[], $14::text[], $15::text[], $16::uuid[], $17::jsonb[], \
           $18::timestamptz[]) \
         ON CONFLICT (job_id, attempt) DO NOTHING \
         RETURNING job_id, attempt",
    )
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
    .fetch_all(&mut *tx)
    .await?;
    let mut new: HashSet<(Uuid, i32)> = inserted.into_iter().collect();
    let mut fresh = vec![false; outcomes.len()];
    for &i in &order {
        let key = (
            outcomes[i].job_id.0,
            i32::try_from(outcomes[i].attempt).unwrap_or(i32::MAX),
        );
        // `remove`: a second copy of the same outcome in this batch is not new.
        fresh[i] = new.remove(&key);
    }
    let counted = outcomes
        .iter()
        .zip(&fresh)
        .filter_map(|(outcome, &is_new)| is_new.then_some(outcome));
    let minutes = rollups(counted);
    if minutes.is_empty() {
        // Every outcome was a duplicate: nothing to count.
        tx.commit().await?;
        return Ok(fresh);
    }
    for ((minute, service, rule_key), inc) in &minutes {
        sqlx::query(concat!(
            "INSERT INTO delivery_rollups (minute, service, rule_key, delivered, \
               failed_retryable, failed_permanent, timeout, circuit_open, latency_sum_ms, \
               latency_max_ms, latency_buckets) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (minute, service, rule_key) DO UPDATE SET ",
            add_counts!("delivery_rollups"),
            ", latency_buckets = ARRAY( \
                 SELECT coalesce(old, 0) + coalesce(add, 0) \
                 FROM unnest(delivery_rollups.latency_buckets, EXCLUDED.latency_buckets) \
                   WITH ORDINALITY AS b(old, add, position) \
                 ORDER BY position)"
        ))
        .bind(minute)
        .bind(storable(service).into_owned())
        .bind(rule_key)
        .bind(inc.delivered)
        .bind(inc.failed_retryable)
        .bind(inc.failed_permanent)
        .bind(inc.timeout)
        .bind(inc.circuit_open)
        .bind(inc.latency_sum_ms)
        .bind(inc.latency_max_ms)
        .bind(&inc.buckets)
        .execute(&mut *tx)
        .await?;
    }
    super::periods::add(&mut tx, &minutes).await?;
    tx.commit().await?;
    Ok(fresh)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mih_shared::messages::{JobId, Origin, Version};
    use mih_shared::names::ServiceSlug;

    fn outcome(status: OutcomeStatus, duration_ms: u64, second: u32) -> Outcome {
        Outcome {
            v: Version,
            job_id: JobId(Uuid::now_v7()),
            service: ServiceSlug::parse("crm").expect("slug"),
            attempt: 1,
            started_at: DateTime::parse_from_rfc3339(&format!("2026-03-01T10:15:{second:02}Z"))
                .expect("time")
                .with_timezone(&Utc),
            duration_ms,
            status,
            response_status: None,
            response_excerpt: None,
            error: None,
            event_id: None,
            rule_id: None,
            origin: Origin::Facade,
            trace_id: None,
            source: None,
            eventname: None,
            replay_of: None,
            request: None,
            retry_at: None,
        }
    }

    #[test]
    fn a_batch_sums_into_one_increment_per_minute_service_and_rule() {
        let outcomes = [
            outcome(OutcomeStatus::Delivered, 3, 1),
            outcome(OutcomeStatus::Delivered, 7, 59),
            outcome(OutcomeStatus::Timeout, 40, 30),
            // Refused by an open circuit: counted, but it never went out, so no latency.
            outcome(OutcomeStatus::CircuitOpen, 900, 2),
        ];
        let sums = rollups(outcomes.iter());
        assert_eq!(sums.len(), 1);
        let inc = sums.values().next().expect("one rollup");
        assert_eq!(
            (inc.delivered, inc.timeout, inc.circuit_open),
            (2, 1, 1),
            "{inc:?}"
        );
        assert_eq!(inc.latency_sum_ms, 50);
        assert_eq!(inc.latency_max_ms, 40);
        assert_eq!(inc.buckets.iter().sum::<i32>(), 3);
        assert_eq!(inc.buckets[histogram::bucket_of(7)], 1);
    }
}
