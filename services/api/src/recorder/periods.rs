//! The period rollups (`delivery_period_rollups`, `delivery_period_latency`): the per-minute
//! figures summed again over 15 minutes and over UTC days, so a long window reads one row per
//! period instead of one per minute. Their latency histograms are sparse (a row per bucket with
//! samples): a period's attempts fill a few of the 244 buckets, and it is summing the dense
//! per-minute arrays element by element that made a day or a week of figures slow.
//!
//! They are written with the delivery rows, in the same statement ([`super::record`],
//! [`super::record_batch`]), so they count exactly what the minutes count.

use chrono::{DateTime, Utc};

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
}
