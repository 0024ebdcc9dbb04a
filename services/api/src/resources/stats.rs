//! `GET /api/v1/stats` (viewer role): delivery figures over a window — totals and a time
//! series — overall, for one service or for one rule, from the recorder's rollups (per minute
//! for buckets under 15 minutes, else the widest period that divides the bucket), the dead
//! letters and the circuit changes.
//!
//! The window is aligned to whole buckets (UTC; `1d` buckets start at midnight UTC): `from` is
//! rounded down and `to` up, and the answer says which window it covers. Latency percentiles
//! are nearest-rank values estimated from merged fixed-boundary histograms, within
//! [`histogram::RELATIVE_ERROR`] of the true value (see `crate::recorder::histogram`).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::Problems;
use super::deliveries::{parse_field, parse_time, parse_uuid};
use crate::auth::{Caller, Role};
use crate::error::ApiResult;
use crate::extract::ApiQuery;
use crate::recorder::histogram::{self, Histogram};
use crate::recorder::periods;
use crate::state::AppState;

/// The bucket sizes offered, smallest first.
const BUCKETS: &[(&str, i64)] = &[
    ("1m", 60),
    ("5m", 300),
    ("15m", 900),
    ("1h", 3600),
    ("1d", 86_400),
];
/// Without `bucket`, the smallest bucket giving at most this many points is chosen.
const TARGET_POINTS: i64 = 120;
/// More points than this is refused.
const MAX_POINTS: i64 = 2000;
const DEFAULT_WINDOW: TimeDelta = TimeDelta::hours(1);

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatsQuery {
    /// RFC 3339; start of the window (default: an hour before `to`).
    pub from: Option<String>,
    /// RFC 3339; end of the window (default: now).
    pub to: Option<String>,
    /// 1m, 5m, 15m, 1h or 1d (default: the smallest giving at most 120 points).
    pub bucket: Option<String>,
    /// Figures of this service only.
    pub service: Option<String>,
    /// Figures of this rule only (UUID).
    pub rule_id: Option<String>,
}

/// Latencies of the attempts that went out (refusals by an open circuit are not timed), in ms.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct Latency {
    /// Nearest-rank percentiles, within `latency_error` (relative) of the true value.
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Exact.
    pub max_ms: Option<f64>,
    /// Exact.
    pub mean_ms: Option<f64>,
}

/// Delivery figures of a window or of one bucket of it.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct Figures {
    /// Delivery attempts started (every retry counts).
    pub attempts: i64,
    pub delivered: i64,
    /// Attempts that did not deliver: the sum of the four kinds below.
    pub failed: i64,
    pub failed_retryable: i64,
    pub failed_permanent: i64,
    pub timeout: i64,
    pub circuit_open: i64,
    /// delivered / attempts, 0 to 1; absent without attempts.
    pub success_rate: Option<f64>,
    pub latency: Latency,
    /// Attempts per second over the part of the period that has passed.
    pub throughput_per_s: f64,
    /// Dead letters that arrived in the period and are still kept (a dead letter resolved by
    /// a replay, deleted or pruned no longer counts).
    pub dead_letters: i64,
    /// Circuit state changes (closed/open/half-open) of the services in scope.
    pub circuit_changes: i64,
    /// How many of those opened a circuit.
    pub circuit_opened: i64,
    /// Messages the services in scope sent back towards Moodle (webhooks, AMQP replies),
    /// parked ones included; none in a rule's figures.
    pub inbound: i64,
    /// How many of those were parked (oversized, unreadable).
    pub inbound_parked: i64,
}

/// One bucket of the series.
#[derive(Debug, Serialize, ToSchema)]
pub struct Point {
    /// Start of the bucket.
    pub at: DateTime<Utc>,
    #[serde(flatten)]
    pub figures: Figures,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Stats {
    /// The window covered: the requested one aligned to whole buckets.
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// The bucket size of the series (1m, 5m, 15m, 1h or 1d).
    pub bucket: String,
    pub service: Option<String>,
    pub rule_id: Option<Uuid>,
    /// The relative error bound of latency percentiles (0.025 = 2.5 %).
    pub latency_error: f64,
    pub totals: Figures,
    /// One point per bucket, oldest first, empty buckets included.
    pub series: Vec<Point>,
}

/// Counts of one bucket before figures are derived.
#[derive(Default)]
struct Acc {
    delivered: i64,
    failed_retryable: i64,
    failed_permanent: i64,
    timeout: i64,
    circuit_open: i64,
    latency_sum_ms: i64,
    histogram: Histogram,
    dead_letters: i64,
    circuit_changes: i64,
    circuit_opened: i64,
    inbound: i64,
    inbound_parked: i64,
}

impl Acc {
    fn merge(&mut self, other: &Acc) {
        self.delivered += other.delivered;
        self.failed_retryable += other.failed_retryable;
        self.failed_permanent += other.failed_permanent;
        self.timeout += other.timeout;
        self.circuit_open += other.circuit_open;
        self.latency_sum_ms += other.latency_sum_ms;
        self.histogram.merge(&other.histogram);
        self.dead_letters += other.dead_letters;
        self.circuit_changes += other.circuit_changes;
        self.circuit_opened += other.circuit_opened;
        self.inbound += other.inbound;
        self.inbound_parked += other.inbound_parked;
    }

    /// The figures of a period of `seconds` that have passed.
    #[allow(clippy::cast_precision_loss)]
    fn figures(&self, seconds: i64) -> Figures {
        let failed =
            self.failed_retryable + self.failed_permanent + self.timeout + self.circuit_open;
        let attempts = self.delivered + failed;
        let timed = self.histogram.samples();
        let ratio = |part: i64, whole: i64| (whole > 0).then(|| part as f64 / whole as f64);
        Figures {
            attempts,
            delivered: self.delivered,
            failed,
            failed_retryable: self.failed_retryable,
            failed_permanent: self.failed_permanent,
            timeout: self.timeout,
            circuit_open: self.circuit_open,
            success_rate: ratio(self.delivered, attempts),
            latency: Latency {
                p50_ms: self.histogram.percentile(50.0),
                p95_ms: self.histogram.percentile(95.0),
                p99_ms: self.histogram.percentile(99.0),
                #[allow(clippy::cast_precision_loss)]
                max_ms: self.histogram.max_ms().map(|m| m as f64),
                mean_ms: ratio(
                    self.latency_sum_ms,
                    i64::try_from(timed).unwrap_or(i64::MAX),
                ),
            },
            throughput_per_s: if seconds > 0 {
                attempts as f64 / seconds as f64
            } else {
                0.0
            },
            dead_letters: self.dead_letters,
            circuit_changes: self.circuit_changes,
            circuit_opened: self.circuit_opened,
            inbound: self.inbound,
            inbound_parked: self.inbound_parked,
        }
    }
}

/// What to answer for: the aligned window, the bucket, the rule.
#[derive(Debug)]
struct Plan {
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    bucket: &'static str,
    seconds: i64,
    rule_id: Option<Uuid>,
}

/// The window and bucket to answer for, or 422 naming the field.
fn plan(query: &StatsQuery, now: DateTime<Utc>) -> Result<Plan, crate::ApiFailure> {
    let mut problems = Problems::default();
    let from = parse_field(
        &mut problems,
        "from",
        query.from.as_deref(),
        parse_time,
        "an RFC 3339 time",
    );
    let to = parse_field(
        &mut problems,
        "to",
        query.to.as_deref(),
        parse_time,
        "an RFC 3339 time",
    );
    let rule_id = parse_field(
        &mut problems,
        "rule_id",
        query.rule_id.as_deref(),
        parse_uuid,
        "a rule id (UUID)",
    );
    let bucket = parse_field(
        &mut problems,
        "bucket",
        query.bucket.as_deref(),
        |raw| BUCKETS.iter().find(|(name, _)| *name == raw).copied(),
        "a bucket: 1m, 5m, 15m, 1h or 1d",
    );
    problems.into_result()?;
    let to = to.unwrap_or(now);
    let from = from.unwrap_or(to - DEFAULT_WINDOW);
    if from >= to {
        return Err(crate::ApiFailure::invalid("from", "must be before to"));
    }
    let (from_s, to_s) = (
        from.timestamp(),
        to.timestamp() + i64::from(to.timestamp_subsec_nanos() > 0),
    );
    let points = |seconds: i64| {
        to_s.div_euclid(seconds) + i64::from(to_s.rem_euclid(seconds) > 0)
            - from_s.div_euclid(seconds)
    };
    let (name, seconds) = match bucket {
        Some((name, seconds)) => {
            let n = points(seconds);
            if n > MAX_POINTS {
                return Err(crate::ApiFailure::invalid(
                    "bucket",
                    format!(
                        "{name} buckets make {n} points; at most {MAX_POINTS}: choose a larger \
                         bucket or a shorter window"
                    ),
                ));
            }
            (name, seconds)
        }
        None => {
            let chosen = BUCKETS
                .iter()
                .find(|(_, seconds)| points(*seconds) <= TARGET_POINTS)
                .or(BUCKETS.last())
                .copied()
                .unwrap_or(("1d", 86_400));
            if points(chosen.1) > MAX_POINTS {
                return Err(crate::ApiFailure::invalid(
                    "from",
                    format!("the window is too long: at most {MAX_POINTS} days"),
                ));
            }
            chosen
        }
    };
    let start = from_s.div_euclid(seconds) * seconds;
    let end = start + points(seconds) * seconds;
    let at = |s: i64| {
        DateTime::from_timestamp(s, 0)
            .ok_or_else(|| crate::ApiFailure::invalid("from", "is out of range"))
    };
    Ok(Plan {
        from: at(start)?,
        to: at(end)?,
        bucket: name,
        seconds,
        rule_id,
    })
}

#[derive(sqlx::FromRow)]
struct RollupRow {
    at: DateTime<Utc>,
    delivered: i64,
    failed_retryable: i64,
    failed_permanent: i64,
    timeout: i64,
    circuit_open: i64,
    latency_sum_ms: i64,
    latency_max_ms: i64,
}

/// SQL for the start of the bucket (of `$1` seconds, aligned to the epoch) a time column falls
/// into. A macro, so every query stays one static string.
macro_rules! bucket_of {
    ($column:literal) => {
        concat!(
            "to_timestamp(floor(extract(epoch FROM ",
            $column,
            ")::float8 / $1) * $1)"
        )
    };
}

/// SQL for the rollup counts summed over a group. A macro, so every query stays one static
/// string.
macro_rules! sum_counts {
    () => {
        "sum(delivered)::bigint AS delivered, \
         sum(failed_retryable)::bigint AS failed_retryable, \
         sum(failed_permanent)::bigint AS failed_permanent, sum(timeout)::bigint AS timeout, \
         sum(circuit_open)::bigint AS circuit_open, sum(latency_sum_ms)::bigint AS latency_sum_ms, \
         max(latency_max_ms) AS latency_max_ms"
    };
}

/// Delivery figures over a window: totals and a time series.
#[utoipa::path(get, path = "/api/v1/stats", tag = "stats", params(StatsQuery),
    responses((status = 200, body = Stats), (status = 401), (status = 403), (status = 422)))]
pub(crate) async fn get_stats(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<StatsQuery>,
) -> ApiResult<Json<Stats>> {
    caller.require(Role::Viewer)?;
    stats(&state, query).await.map(Json)
}

/// The figures of a window, for the API and the dashboard.
pub(crate) async fn stats(state: &AppState, query: StatsQuery) -> ApiResult<Stats> {
    let now = Utc::now();
    let Plan {
        from,
        to,
        bucket,
        seconds,
        rule_id,
    } = plan(&query, now)?;
    let rule_key = rule_id.map(|r| r.to_string());
    #[allow(clippy::cast_precision_loss)]
    let width = seconds as f64;
    let mut buckets: BTreeMap<DateTime<Utc>, Acc> = BTreeMap::new();

    let width_s = periods::width_for(seconds);
    // Both queries of each pair take the same six parameters; the minutes' ones only check
    // that `$6` (the period width) is absent, which it is whenever they are chosen.
    let rows: Vec<RollupRow> = sqlx::query_as(match width_s {
        None => concat!(
            "SELECT ",
            bucket_of!("minute"),
            " AS at, ",
            sum_counts!(),
            " FROM delivery_rollups WHERE minute >= $2 AND minute < $3 \
             AND ($4::text IS NULL OR service = $4) AND ($5::text IS NULL OR rule_key = $5) \
             AND $6::int4 IS NULL GROUP BY 1"
        ),
        Some(_) => concat!(
            "SELECT ",
            bucket_of!("at"),
            " AS at, ",
            sum_counts!(),
            " FROM delivery_period_rollups WHERE width_s = $6 AND at >= $2 AND at < $3 \
             AND ($4::text IS NULL OR service = $4) AND ($5::text IS NULL OR rule_key = $5) \
             GROUP BY 1"
        ),
    })
    .bind(width)
    .bind(from)
    .bind(to)
    .bind(&query.service)
    .bind(&rule_key)
    .bind(width_s)
    .fetch_all(&state.db)
    .await?;
    for row in rows {
        let acc = buckets.entry(row.at).or_default();
        acc.delivered += row.delivered;
        acc.failed_retryable += row.failed_retryable;
        acc.failed_permanent += row.failed_permanent;
        acc.timeout += row.timeout;
        acc.circuit_open += row.circuit_open;
        acc.latency_sum_ms += row.latency_sum_ms;
        acc.histogram
            .add_max(u64::try_from(row.latency_max_ms).unwrap_or(0));
    }

    // Histogram buckets as (bucket start, 1-based index, samples).
    let counts: Vec<(DateTime<Utc>, i64, i64)> = sqlx::query_as(match width_s {
        None => concat!(
            "SELECT ",
            bucket_of!("r.minute"),
            " AS at, u.i AS i, sum(u.c)::bigint AS n \
             FROM delivery_rollups r, unnest(r.latency_buckets) WITH ORDINALITY AS u(c, i) \
             WHERE r.minute >= $2 AND r.minute < $3 \
             AND ($4::text IS NULL OR r.service = $4) AND ($5::text IS NULL OR r.rule_key = $5) \
             AND $6::int4 IS NULL AND u.c > 0 GROUP BY 1, 2"
        ),
        Some(_) => concat!(
            "SELECT ",
            bucket_of!("at"),
            " AS at, bucket::bigint + 1 AS i, sum(samples)::bigint AS n \
             FROM delivery_period_latency WHERE width_s = $6 AND at >= $2 AND at < $3 \
             AND ($4::text IS NULL OR service = $4) AND ($5::text IS NULL OR rule_key = $5) \
             GROUP BY 1, 2"
        ),
    })
    .bind(width)
    .bind(from)
    .bind(to)
    .bind(&query.service)
    .bind(&rule_key)
    .bind(width_s)
    .fetch_all(&state.db)
    .await?;
    for (at, index, count) in counts {
        // PostgreSQL arrays count from 1.
        let index = usize::try_from(index - 1).unwrap_or(usize::MAX);
        buckets
            .entry(at)
            .or_default()
            .histogram
            .add_bucket(index, u64::try_from(count).unwrap_or(0));
    }

    let dead = mih_dlq::store::letters::per_bucket(
        &state.db,
        width,
        from,
        to,
        query.service.as_deref(),
        rule_id,
    )
    .await?;
    for (at, n) in dead {
        buckets.entry(at).or_default().dead_letters += n;
    }

    // Circuits are per service: a rule's figures show its service's circuit.
    let circuit_service = match (&query.service, rule_id) {
        (Some(service), _) => Some(service.clone()),
        (None, Some(rule)) => Some(
            sqlx::query_scalar::<_, String>("SELECT service FROM rules WHERE id = $1")
                .bind(rule)
                .fetch_optional(&state.db)
                .await?
                // A deleted rule: no service's circuit is in scope.
                .unwrap_or_default(),
        ),
        (None, None) => None,
    };
    // A change is a stored state that differs from the service's previous one (the one
    // before the window included); a circuit's history starts closed.
    let changes: Vec<(DateTime<Utc>, i64, i64)> = sqlx::query_as(concat!(
        "WITH scoped AS ( \
           SELECT service, revision, state, changed_at FROM circuit_changes \
            WHERE ($4::text IS NULL OR service = $4) AND changed_at >= $2 AND changed_at < $3 \
           UNION ALL \
           SELECT * FROM (SELECT DISTINCT ON (service) service, revision, state, changed_at \
            FROM circuit_changes WHERE ($4::text IS NULL OR service = $4) AND changed_at < $2 \
            ORDER BY service, revision DESC) AS before \
         ), ordered AS ( \
           SELECT state, changed_at, \
             lag(state) OVER (PARTITION BY service ORDER BY revision) AS previous \
           FROM scoped \
         ) \
         SELECT ",
        bucket_of!("changed_at"),
        " AS at, count(*)::bigint, (count(*) FILTER (WHERE state = 'open'))::bigint \
         FROM ordered WHERE changed_at >= $2 AND state <> coalesce(previous, 'closed') \
         GROUP BY 1"
    ))
    .bind(width)
    .bind(from)
    .bind(to)
    .bind(&circuit_service)
    .fetch_all(&state.db)
    .await?;
    for (at, n, opened) in changes {
        let acc = buckets.entry(at).or_default();
        acc.circuit_changes += n;
        acc.circuit_opened += opened;
    }

    // Inbound messages belong to services, not rules.
    if rule_id.is_none() {
        let inbound = crate::inbound_log::store::per_bucket(
            &state.db,
            width,
            from,
            to,
            query.service.as_deref(),
        )
        .await?;
        for (at, received, parked) in inbound {
            let acc = buckets.entry(at).or_default();
            acc.inbound += received;
            acc.inbound_parked += parked;
        }
    }

    let passed = |start: DateTime<Utc>, end: DateTime<Utc>| (end.min(now) - start).num_seconds();
    let mut totals = Acc::default();
    let mut series = Vec::new();
    let mut at = from;
    let step = TimeDelta::seconds(seconds);
    while at < to {
        let acc = buckets.remove(&at).unwrap_or_default();
        totals.merge(&acc);
        series.push(Point {
            at,
            figures: acc.figures(passed(at, at + step)),
        });
        at += step;
    }
    Ok(Stats {
        from,
        to,
        bucket: bucket.to_owned(),
        service: query.service,
        rule_id,
        latency_error: histogram::RELATIVE_ERROR,
        totals: totals.figures(passed(from, to)),
        series,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(from: &str, to: &str, bucket: Option<&str>) -> StatsQuery {
        StatsQuery {
            from: Some(from.into()),
            to: Some(to.into()),
            bucket: bucket.map(str::to_owned),
            service: None,
            rule_id: None,
        }
    }

    fn field(result: Result<impl std::fmt::Debug, crate::ApiFailure>) -> String {
        match result {
            Err(crate::ApiFailure::Invalid(errors)) => errors[0].field.clone().unwrap_or_default(),
            other => panic!("expected 422, got {other:?}"),
        }
    }

    #[test]
    fn windows_align_to_buckets_and_default_to_at_most_120_points() {
        let now = Utc::now();
        let p = plan(
            &query("2026-03-01T10:00:30Z", "2026-03-01T11:00:00Z", None),
            now,
        )
        .expect("ok");
        assert_eq!(p.bucket, "1m");
        assert_eq!(p.from.to_rfc3339(), "2026-03-01T10:00:00+00:00");
        assert_eq!(p.to.to_rfc3339(), "2026-03-01T11:00:00+00:00");
        let p = plan(
            &query("2026-03-01T00:00:00Z", "2026-03-02T00:00:00Z", None),
            now,
        )
        .expect("ok");
        assert_eq!(p.bucket, "15m");
        let p = plan(
            &query("2026-01-01T05:00:00Z", "2026-03-01T00:00:01Z", None),
            now,
        )
        .expect("ok");
        assert_eq!(p.bucket, "1d");
        assert_eq!(p.from.to_rfc3339(), "2026-01-01T00:00:00+00:00");
        assert_eq!(p.to.to_rfc3339(), "2026-03-02T00:00:00+00:00");
    }

    #[test]
    fn bad_windows_name_the_field() {
        let now = Utc::now();
        let t = "2026-03-01T10:00:00Z";
        assert_eq!(field(plan(&query(t, t, None), now)), "from");
        assert_eq!(
            field(plan(&query(t, "2026-03-01T11:00:00Z", Some("2m")), now)),
            "bucket"
        );
        assert_eq!(
            field(plan(
                &query("2026-01-01T00:00:00Z", "2026-03-01T00:00:00Z", Some("1m")),
                now
            )),
            "bucket"
        );
        assert_eq!(field(plan(&query("yesterday", t, None), now)), "from");
    }
}
