//! A service's rate limit as it holds for the service as a whole: each of the `n` dispatcher
//! replicas alive lets attempts start at most `rate / n` per second.
//!
//! Shares rather than a token bucket in KV: a shared bucket costs a compare-and-set round
//! trip per attempt (or per chunk of tokens), contended by every replica at the target's
//! rate; a share costs nothing per attempt, and work spreads evenly because every replica
//! pulls from the same consumers and a replica at its share leaves jobs for the others. The
//! price: a replica with no work for the service leaves its share unused.
//!
//! Attempts are spaced evenly (a GCRA from `governor`) with a burst of a hundredth of a
//! second's share, at least one (it absorbs timer lateness at high rates), so no window of
//! one second sees more than the limit plus a hundredth plus one per replica. Every limiter
//! (a worker's first, and one for a new share when the number of replicas changes) starts
//! with its burst spent, so starting or scaling adds no burst; only a replica that was idle
//! has one.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use metrics::histogram;

use crate::metrics as m;
use crate::replicas::ReplicaCount;

#[derive(Debug)]
pub(crate) struct RateLimit {
    service: String,
    rate: NonZeroU32,
    replicas: ReplicaCount,
    /// The limiter of the current share, and the number of replicas it was made for.
    current: Mutex<(usize, Arc<DefaultDirectRateLimiter>)>,
}

impl RateLimit {
    pub(crate) fn new(service: String, rate: NonZeroU32, replicas: ReplicaCount) -> Self {
        let n = replicas.borrow().count.max(1);
        RateLimit {
            service,
            rate,
            replicas,
            current: Mutex::new((n, spent(rate, n))),
        }
    }

    /// Waits until this replica's share lets another attempt start.
    pub(crate) async fn until_ready(&self) {
        let started = Instant::now();
        self.limiter().until_ready().await;
        histogram!(m::RATE_WAIT_SECONDS, "service" => self.service.clone())
            .record(started.elapsed().as_secs_f64());
    }

    fn limiter(&self) -> Arc<DefaultDirectRateLimiter> {
        let n = self.replicas.borrow().count.max(1);
        // A poisoned lock only means a panic elsewhere mid-swap; the value is still whole.
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if current.0 != n {
            *current = (n, spent(self.rate, n));
        }
        Arc::clone(&current.1)
    }
}

/// A limiter of this replica's share with its burst spent: a fresh burst on top of what the
/// other replicas (or this one's previous share) just sent could exceed the limit.
fn spent(rate: NonZeroU32, replicas: usize) -> Arc<DefaultDirectRateLimiter> {
    let quota = share(rate, replicas);
    let limiter = RateLimiter::direct(quota);
    // Cannot fail: the burst is the limiter's whole capacity.
    let _ = limiter.check_n(quota.burst_size());
    Arc::new(limiter)
}

/// One replica's share of `rate` per second among `replicas`: evenly spaced, with a burst of
/// a hundredth of a second's share (at least one).
pub(crate) fn share(rate: NonZeroU32, replicas: usize) -> Quota {
    let replicas = u32::try_from(replicas.max(1)).unwrap_or(u32::MAX);
    let burst =
        NonZeroU32::new(rate.get() / replicas.saturating_mul(100)).unwrap_or(NonZeroU32::MIN);
    Duration::try_from_secs_f64(f64::from(replicas) / f64::from(rate.get()))
        .ok()
        .and_then(Quota::with_period)
        .map_or_else(|| Quota::per_second(rate), |quota| quota.allow_burst(burst))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(r: u32) -> NonZeroU32 {
        NonZeroU32::new(r).expect("non-zero")
    }

    #[test]
    fn each_replica_gets_an_even_share_with_a_hundredth_of_a_second_of_burst() {
        let quota = share(rate(50), 3);
        assert_eq!(quota.replenish_interval(), Duration::from_millis(60));
        assert_eq!(quota.burst_size().get(), 1);
        let quota = share(rate(1000), 2);
        assert_eq!(quota.replenish_interval(), Duration::from_millis(2));
        assert_eq!(quota.burst_size().get(), 5);
        let quota = share(rate(1), 4);
        assert_eq!(quota.replenish_interval(), Duration::from_secs(4));
        assert_eq!(quota.burst_size().get(), 1);
    }

    #[test]
    fn a_change_in_replicas_changes_the_share() {
        let (tell, replicas) = tokio::sync::watch::channel(crate::replicas::Place::ALONE);
        let limit = RateLimit::new("svc".into(), rate(10), replicas);
        let alone = limit.limiter();
        assert!(alone.check().is_err(), "the first share starts spent too");
        tell.send_replace(crate::replicas::Place { count: 2, index: 1 });
        let shared = limit.limiter();
        assert!(!Arc::ptr_eq(&alone, &shared));
        assert!(
            shared.check().is_err(),
            "a new share starts with its burst spent"
        );
        assert!(
            Arc::ptr_eq(&shared, &limit.limiter()),
            "kept while unchanged"
        );
    }
}
