//! The latency histogram of the rollups: fixed bucket boundaries, defined here once, so the
//! histograms of any minutes, services and rules merge by adding counts bucket by bucket.
//!
//! Durations are whole milliseconds. Below [`EXACT_BELOW`] every millisecond has its own bucket;
//! from there up to [`LOG_CEILING`] each bucket `[lo, hi)` is `lo / 20` wide (at most 5 % of its
//! lower bound); everything from [`LOG_CEILING`] on falls into one overflow bucket.
//!
//! **Error bound.** A percentile is the nearest-rank value (the smallest duration with at least
//! p % of the samples at or below it). It is estimated by the middle of the integer range its
//! bucket holds, `(lo + hi - 1) / 2`, and never above the window's exact maximum. The true
//! value `v` lies in `[lo, hi - 1]`, so the estimate is off by at most `(hi - 1 - lo) / 2 ≤
//! lo / 40 ≤ v / 40`: **within 2.5 % of the true value, exact below 20 ms**; the highest rank
//! (p100, and any p whose rank is the last sample) is the exact maximum. In the overflow bucket
//! (10 minutes and longer) the estimate is the window's maximum latency.
//!
//! Changing the boundaries changes the meaning of stored rollups: rebuild them afterwards
//! (`mih rebuild-projections`).

/// Durations below this many ms are counted exactly (one bucket per millisecond).
pub const EXACT_BELOW: u64 = 20;
/// Durations from this many ms on (10 minutes) share the overflow bucket.
pub const LOG_CEILING: u64 = 600_000;
/// The relative error bound of a percentile estimate, as documented above.
pub const RELATIVE_ERROR: f64 = 0.025;

const fn next_lower(lo: u64) -> u64 {
    if lo < EXACT_BELOW {
        lo + 1
    } else {
        lo + lo / 20
    }
}

const fn count_buckets() -> usize {
    let mut lo = 0;
    let mut n = 1; // the overflow bucket
    while lo < LOG_CEILING {
        n += 1;
        lo = next_lower(lo);
    }
    n
}

/// How many buckets a histogram has (the length of `delivery_rollups.latency_buckets`).
pub const BUCKETS: usize = count_buckets();

const fn lower_bounds() -> [u64; BUCKETS] {
    let mut bounds = [0; BUCKETS];
    let mut lo = 0;
    let mut i = 0;
    while lo < LOG_CEILING {
        bounds[i] = lo;
        lo = next_lower(lo);
        i += 1;
    }
    // The overflow bucket starts where the last regular bucket ends (≥ LOG_CEILING).
    bounds[i] = lo;
    bounds
}

/// The lower bound (inclusive, ms) of each bucket; bucket `i` ends where `i + 1` starts.
pub const LOWER_BOUNDS: [u64; BUCKETS] = lower_bounds();

/// The bucket a duration falls into (0-based).
pub fn bucket_of(duration_ms: u64) -> usize {
    LOWER_BOUNDS
        .partition_point(|&lo| lo <= duration_ms)
        .saturating_sub(1)
}

/// A merged histogram: counts per bucket plus the exact maximum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Histogram {
    counts: Vec<u64>,
    max_ms: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            max_ms: 0,
        }
    }
}

impl Histogram {
    /// Adds `count` samples in bucket `index` (0-based); indexes past the end are ignored
    /// (they could only come from rollups written with other boundaries).
    pub fn add_bucket(&mut self, index: usize, count: u64) {
        if let Some(slot) = self.counts.get_mut(index) {
            *slot += count;
        }
    }

    pub fn add_max(&mut self, max_ms: u64) {
        self.max_ms = self.max_ms.max(max_ms);
    }

    // The recorder adds whole buckets from the rollups; one sample at a time is for tests.
    #[cfg(test)]
    pub fn record(&mut self, duration_ms: u64) {
        self.add_bucket(bucket_of(duration_ms), 1);
        self.add_max(duration_ms);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.add_max(other.max_ms);
    }

    pub fn samples(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The exact maximum; `None` without samples.
    pub fn max_ms(&self) -> Option<u64> {
        (self.samples() > 0).then_some(self.max_ms)
    }

    /// The nearest-rank `p`-th percentile (0 < p ≤ 100) in ms, within the documented error;
    /// `None` without samples.
    #[allow(clippy::cast_precision_loss)]
    pub fn percentile(&self, p: f64) -> Option<f64> {
        let total = self.samples();
        if total == 0 {
            return None;
        }
        // Rank in 1..=total; computed in f64 (exact for any realistic count) and clamped.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let rank = ((p / 100.0 * total as f64).ceil() as u64).clamp(1, total);
        if rank == total {
            // The highest rank is the maximum, which is known exactly.
            return Some(self.max_ms as f64);
        }
        let mut seen = 0;
        for (i, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let lo = LOWER_BOUNDS[i];
                let estimate = match LOWER_BOUNDS.get(i + 1) {
                    Some(&hi) => (lo + hi - 1) as f64 / 2.0,
                    None => self.max_ms as f64,
                };
                return Some(estimate.min(self.max_ms as f64));
            }
        }
        Some(self.max_ms as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries_are_exact_then_at_most_five_percent_wide() {
        assert_eq!(LOWER_BOUNDS[0], 0);
        for (i, pair) in LOWER_BOUNDS.windows(2).enumerate() {
            let (lo, hi) = (pair[0], pair[1]);
            assert!(hi > lo, "bucket {i} is empty");
            if lo < EXACT_BELOW {
                assert_eq!(hi - lo, 1);
            } else {
                assert!((hi - lo) * 20 <= lo, "bucket {i} [{lo}, {hi}) is too wide");
            }
        }
        assert!(LOWER_BOUNDS[BUCKETS - 1] >= LOG_CEILING);
        assert!(LOWER_BOUNDS[BUCKETS - 2] < LOG_CEILING);
        // Small enough to keep a rollup row compact.
        const { assert!(BUCKETS < 260) };
    }

    #[test]
    fn durations_land_in_the_bucket_that_holds_them() {
        for d in [
            0,
            1,
            19,
            20,
            21,
            99,
            100,
            1234,
            59_999,
            599_999,
            600_000,
            u64::MAX,
        ] {
            let i = bucket_of(d);
            assert!(LOWER_BOUNDS[i] <= d);
            if let Some(&hi) = LOWER_BOUNDS.get(i + 1) {
                assert!(d < hi, "{d} in [{}, {hi})", LOWER_BOUNDS[i]);
            }
        }
    }

    /// Nearest rank on the exact samples, for comparison.
    fn exact(samples: &mut [u64], p: f64) -> f64 {
        samples.sort_unstable();
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let rank = ((p / 100.0 * samples.len() as f64).ceil() as usize).max(1);
        #[allow(clippy::cast_precision_loss)]
        let value = samples[rank - 1] as f64;
        value
    }

    #[test]
    fn percentiles_are_within_the_documented_error() {
        // A deterministic spread from 0 ms to ~15 minutes.
        let mut samples: Vec<u64> = (0..5000u64).map(|i| (i * i * 7919) % 900_000).collect();
        samples.extend(0..40);
        let mut histogram = Histogram::default();
        for &s in &samples {
            histogram.record(s);
        }
        for p in [1.0, 10.0, 50.0, 90.0, 95.0, 99.0, 99.9, 100.0] {
            let truth = exact(&mut samples, p);
            let estimate = histogram.percentile(p).expect("samples");
            if truth < LOG_CEILING as f64 {
                assert!(
                    (estimate - truth).abs() <= truth * RELATIVE_ERROR,
                    "p{p}: {estimate} vs {truth}"
                );
            } else {
                assert!(estimate >= truth);
            }
        }
        let mut small: Vec<u64> = vec![3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5];
        let mut h = Histogram::default();
        small.iter().for_each(|&s| h.record(s));
        for p in [50.0, 95.0, 99.0] {
            assert_eq!(
                h.percentile(p),
                Some(exact(&mut small, p)),
                "exact below 20 ms"
            );
        }
        assert_eq!(Histogram::default().percentile(50.0), None);
    }

    #[test]
    fn merged_histograms_equal_one_over_all_samples() {
        let (mut a, mut b, mut all) = (
            Histogram::default(),
            Histogram::default(),
            Histogram::default(),
        );
        for d in 0..300 {
            let d = d * 37;
            if d % 2 == 0 {
                a.record(d)
            } else {
                b.record(d)
            }
            all.record(d);
        }
        a.merge(&b);
        assert_eq!(a, all);
    }
}
