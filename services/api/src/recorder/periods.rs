//! The period rollups (`delivery_period_rollups`, `delivery_period_latency`): the per-minute
//! figures summed again over 15 minutes and over UTC days, so a long window reads one row per
//! period instead of one per minute. Their latency histograms are sparse (a row per bucket with
//! samples): a period's attempts fill a few of the 244 buckets, and it is summing the dense
//! per-minute arrays element by element that made a day or a week of figures slow.
//!
//! They are written with the delivery rows, in the same statement ([`super::record`]) or
//! transaction ([`super::record_batch`]), so they count exactly what the minutes count.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use mih_shared::pgtext::storable;

use super::batch::{Increment, RollupKey};

/// The period widths kept, in seconds, narrowest first; each divides the next, and each is a
/// whole number of minutes. Migration 0010 fills the same widths from the minutes.
pub const WIDTHS: [i32; 2] = [900, 86_400];

/// The period of `width_s` seconds (aligned to the epoch, so days start at midnight UTC) that
/// `at` falls in.
pub fn start_of(at: DateTime<Utc>, width_s: i32) -> DateTime<Utc> {
    let width = i64::from(width_s.max(1));
    let start = at.timestamp().div_euclid(width) * width;
    DateTime::from_timestamp(start, 0).unwrap_or(at)
}

/// The widest period that fits whole in buckets of `bucket_s` seconds aligned to the epoch:
/// the stats read it instead of the minutes. `None` below the narrowest.
pub fn width_for(bucket_s: i64) -> Option<i32> {
    WIDTHS
        .iter()
        .rev()
        .copied()
        .find(|&width| bucket_s % i64::from(width) == 0)
}

/// (width, period start, service, rule key): a period rollup row.
type PeriodKey = (i32, DateTime<Utc>, String, String);

/// Sums minute increments into period increments, ordered by key so concurrent batches lock
/// the same rows in the same order.
fn periods(minutes: &BTreeMap<RollupKey, Increment>) -> BTreeMap<PeriodKey, Increment> {
    let mut periods: BTreeMap<PeriodKey, Increment> = BTreeMap::new();
    for ((minute, service, rule_key), increment) in minutes {
        for width in WIDTHS {
            let key = (
                width,
                start_of(*minute, width),
                service.clone(),
                rule_key.clone(),
            );
            periods.entry(key).or_default().merge(increment);
        }
    }
    periods
}

/// The period rows of a batch, column by column, for `UNNEST`.
#[derive(Default)]
struct Counts {
    width_s: Vec<i32>,
    at: Vec<DateTime<Utc>>,
    service: Vec<String>,
    rule_key: Vec<String>,
    delivered: Vec<i64>,
    failed_retryable: Vec<i64>,
    failed_permanent: Vec<i64>,
    timeout: Vec<i64>,
    circuit_open: Vec<i64>,
    latency_sum_ms: Vec<i64>,
    latency_max_ms: Vec<i64>,
}

/// The non-empty histogram buckets of a batch's periods, column by column.
#[derive(Default)]
struct Latencies {
    width_s: Vec<i32>,
    at: Vec<DateTime<Utc>>,
    service: Vec<String>,
    rule_key: Vec<String>,
    bucket: Vec<i16>,
    samples: Vec<i64>,
}

/// Adds a batch's minute increments to the period rollups: two statements whatever the batch.
pub(super) async fn add(
    tx: &mut PgConnection,
    minutes: &BTreeMap<RollupKey, Increment>,
) -> Result<(), sqlx::Error> {
    let mut counts = Counts::default();
    let mut latencies = Latencies::default();
    for ((width, at, service, rule_key), inc) in periods(minutes) {
        let service = storable(&service).into_owned();
        for (bucket, &samples) in inc.buckets.iter().enumerate() {
            if samples > 0 {
                latencies.width_s.push(width);
                latencies.at.push(at);
                latencies.service.push(service.clone());
                latencies.rule_key.push(rule_key.clone());
                latencies
                    .bucket
                    .push(i16::try_from(bucket).unwrap_or(i16::MAX));
                latencies.samples.push(i64::from(samples));
            }
        }
        counts.width_s.push(width);
        counts.at.push(at);
        counts.service.push(service);
        counts.rule_key.push(rule_key);
        counts.delivered.push(inc.delivered);
        counts.failed_retryable.push(inc.failed_retryable);
        counts.failed_permanent.push(inc.failed_permanent);
        counts.timeout.push(inc.timeout);
        counts.circuit_open.push(inc.circuit_open);
        counts.latency_sum_ms.push(inc.latency_sum_ms);
        counts.latency_max_ms.push(inc.latency_max_ms);
    }
    sqlx::query(concat!(
        "INSERT INTO delivery_period_rollups (width_s, at, service, rule_key, delivered, \
           failed_retryable, failed_permanent, timeout, circuit_open, latency_sum_ms, \
           latency_max_ms) \
         SELECT * FROM UNNEST($1::int4[], $2::timestamptz[], $3::text[], $4::text[], \
           $5::int8[], $6::int8[], $7::int8[], $8::int8[], $9::int8[], $10::int8[], $11::int8[]) \
         ON CONFLICT (width_s, at, service, rule_key) DO UPDATE SET ",
        add_counts!("delivery_period_rollups")
    ))
    .bind(&counts.width_s)
    .bind(&counts.at)
    .bind(&counts.service)
    .bind(&counts.rule_key)
    .bind(&counts.delivered)
    .bind(&counts.failed_retryable)
    .bind(&counts.failed_permanent)
    .bind(&counts.timeout)
    .bind(&counts.circuit_open)
    .bind(&counts.latency_sum_ms)
    .bind(&counts.latency_max_ms)
    .execute(&mut *tx)
    .await?;
    if latencies.bucket.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO delivery_period_latency (width_s, at, service, rule_key, bucket, samples) \
         SELECT * FROM UNNEST($1::int4[], $2::timestamptz[], $3::text[], $4::text[], \
           $5::int2[], $6::int8[]) \
         ON CONFLICT (width_s, at, service, rule_key, bucket) DO UPDATE SET \
           samples = delivery_period_latency.samples + EXCLUDED.samples",
    )
    .bind(&latencies.width_s)
    .bind(&latencies.at)
    .bind(&latencies.service)
    .bind(&latencies.rule_key)
    .bind(&latencies.bucket)
    .bind(&latencies.samples)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("time")
            .with_timezone(&Utc)
    }

    #[test]
    fn periods_start_on_the_epoch_grid() {
        let t = at("2026-03-01T10:44:59Z");
        assert_eq!(start_of(t, 900), at("2026-03-01T10:30:00Z"));
        assert_eq!(start_of(t, 86_400), at("2026-03-01T00:00:00Z"));
    }

    #[test]
    fn a_bucket_reads_the_widest_period_that_divides_it() {
        assert_eq!(width_for(60), None);
        assert_eq!(width_for(300), None);
        assert_eq!(width_for(900), Some(900));
        assert_eq!(width_for(3600), Some(900));
        assert_eq!(width_for(86_400), Some(86_400));
        for pair in WIDTHS.windows(2) {
            assert_eq!(pair[1] % pair[0], 0, "each width divides the next");
        }
        assert!(WIDTHS.iter().all(|w| w % 60 == 0), "whole minutes");
    }

    #[test]
    fn minutes_sum_into_each_width() {
        let mut minutes = BTreeMap::new();
        for (minute, delivered) in [("2026-03-01T10:14:00Z", 2), ("2026-03-01T10:15:00Z", 3)] {
            let inc = Increment {
                delivered,
                ..Increment::default()
            };
            minutes.insert((at(minute), "crm".to_owned(), String::new()), inc);
        }
        let sums: Vec<(i32, DateTime<Utc>, i64)> = periods(&minutes)
            .into_iter()
            .map(|((width, at, _, _), inc)| (width, at, inc.delivered))
            .collect();
        assert_eq!(
            sums,
            vec![
                (900, at("2026-03-01T10:00:00Z"), 2),
                (900, at("2026-03-01T10:15:00Z"), 3),
                (86_400, at("2026-03-01T00:00:00Z"), 5),
            ]
        );
    }
}
