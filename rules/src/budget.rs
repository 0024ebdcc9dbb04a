//! What one rule may spend on one event, and where such work runs.
//!
//! A condition's cost is bounded twice. When it is saved, a static estimate refuses what could
//! be costly on an event of ordinary size (see `condition`). When it runs, the event may be far
//! larger than assumed, so the rule's evaluation spends from a [`Budget`] of steps and wall time:
//! conditions spend, in the estimate's steps, what each comprehension's range and each string
//! or list built with `+` cost; templates spend as they render. An exhausted budget is the
//! rule's error for this event, never a long stall.
//!
//! The budget is per thread: [`within`] installs it for the length of a closure and [`spend`]
//! draws from it, so code deep inside a CEL function or a handlebars helper can charge it
//! without a handle being threaded through. Costly evaluations run off the async workers, on
//! tokio's blocking pool, through an [`Evaluators`] pool that bounds how many run at once.

use std::cell::Cell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

/// Steps one rule may spend on one event, in the steps of the static estimate (about one node
/// evaluated, or one list element copied): five times the most a condition may be estimated to
/// cost (`condition::MAX_CONDITION_COST`), so an accepted condition still decides events several
/// times larger than assumed. Measured on the development machine (release build, 2 vCPUs):
/// 20–40 ns a step, about 90 ns under load, so 0.1–0.2 s at most (0.45 s loaded).
pub const RULE_STEPS: u64 = 5_000_000;

/// Wall time one rule may take on one event. The step limit is the deterministic bound; this one
/// catches steps costlier than estimated (a large regular expression, a slow machine). It is
/// checked whenever steps are spent (at every comprehension and every `+` building a string or
/// list), and generous, so that a busy machine does not fail ordinary evaluations: an accepted
/// condition on an event of the assumed size takes at most about 0.2 s there.
pub const RULE_TIME: Duration = Duration::from_millis(500);

/// What one rule may spend on one event: evaluation steps and wall time.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    steps: u64,
    time: Duration,
}

impl Budget {
    pub fn new(steps: u64, time: Duration) -> Self {
        Self { steps, time }
    }

    /// [`RULE_STEPS`] and [`RULE_TIME`].
    pub fn for_rule() -> Self {
        Self::new(RULE_STEPS, RULE_TIME)
    }

    pub fn steps(&self) -> u64 {
        self.steps
    }

    pub fn time(&self) -> Duration {
        self.time
    }
}

/// A budget ran out. Once it has, every later [`spend`] under the same [`within`] fails the same
/// way, so an exhaustion that CEL's error absorption swallowed (`error || true` is `true`) is
/// still seen by the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Exhausted {
    #[error("exceeded its evaluation budget (more than {} steps)", thousands(*limit))]
    Steps { limit: u64 },
    #[error("exceeded its evaluation budget (more than {} ms)", limit.as_millis())]
    Time { limit: Duration },
}

/// The budget of the current thread while it runs under [`within`].
#[derive(Debug, Clone, Copy)]
struct Running {
    budget: Budget,
    spent: u64,
    /// `None` when the time limit is too large to be a point in time: no deadline.
    deadline: Option<Instant>,
    exhausted: Option<Cause>,
}

#[derive(Debug, Clone, Copy)]
enum Cause {
    Steps,
    Time,
}

impl Running {
    fn start(budget: Budget) -> Self {
        Self {
            budget,
            spent: 0,
            deadline: Instant::now().checked_add(budget.time),
            exhausted: None,
        }
    }

    fn spend(&mut self, steps: u64) -> Result<(), Exhausted> {
        if self.exhausted.is_none() {
            self.spent = self.spent.saturating_add(steps);
            if self.spent > self.budget.steps {
                self.exhausted = Some(Cause::Steps);
            } else if self
                .deadline
                .is_some_and(|deadline| Instant::now() > deadline)
            {
                self.exhausted = Some(Cause::Time);
            }
        }
        match self.exhausted {
            None => Ok(()),
            Some(Cause::Steps) => Err(Exhausted::Steps {
                limit: self.budget.steps,
            }),
            Some(Cause::Time) => Err(Exhausted::Time {
                limit: self.budget.time,
            }),
        }
    }
}

thread_local! {
    static CURRENT: Cell<Option<Running>> = const { Cell::new(None) };
}

/// Runs `f` with `budget` as this thread's budget (the previous one restored afterwards, also on
/// panic).
pub fn within<R>(budget: Budget, f: impl FnOnce() -> R) -> R {
    /// Puts the outer budget back when `f` returns or unwinds.
    struct Restore(Option<Running>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            CURRENT.with(|current| current.set(previous));
        }
    }
    let previous = CURRENT.with(|current| current.replace(Some(Running::start(budget))));
    let _restore = Restore(previous);
    f()
}

/// Spends `steps`; Err once the steps or the deadline are exceeded. Outside `within`: always Ok.
pub fn spend(steps: u64) -> Result<(), Exhausted> {
    CURRENT.with(|current| {
        let Some(mut running) = current.get() else {
            return Ok(());
        };
        let result = running.spend(steps);
        current.set(Some(running));
        result
    })
}

/// Steps spent so far under the current [`within`] (for measurements).
#[cfg(test)]
pub(crate) fn spent() -> Option<u64> {
    CURRENT.with(|current| current.get().map(|running| running.spent))
}

/// `12345678` as `12,345,678`.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// Runs rule evaluations on tokio's blocking pool, a bounded number at a time.
///
/// Evaluating rules is CPU work whose length depends on the rule and the event: on an async
/// worker it would stall every task sharing that worker (health checks, the admin API, other
/// rules' deliveries). The blocking pool has its own threads, but up to 512 of them: a flood of
/// costly evaluations there would still take the CPU from the workers. So at most `permits`
/// evaluations run at once (about one per core); further ones wait for a permit without holding
/// a thread, and each one that runs is bounded by its rules' budgets.
#[derive(Debug, Clone)]
pub struct Evaluators {
    permits: Arc<Semaphore>,
    size: usize,
}

/// An offloaded evaluation did not give its result.
#[derive(Debug, thiserror::Error)]
pub enum OffloadError {
    /// Every permit stayed taken for the caller's whole wait.
    #[error("every evaluator stayed busy for {0:?}")]
    Busy(Duration),
    /// The evaluation panicked (a bug); the message is the panic's.
    #[error("the evaluation panicked: {0}")]
    Panicked(String),
}

impl Evaluators {
    pub fn new(permits: usize) -> Self {
        let size = permits.max(1);
        Self {
            permits: Arc::new(Semaphore::new(size)),
            size,
        }
    }

    /// One evaluator per core the process may use (at least one).
    pub fn per_core() -> Self {
        Self::new(cores())
    }

    /// How many evaluations may run at once.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Runs `f` on the blocking pool once a permit is free, waiting at most `wait` for one.
    pub async fn run<R: Send + 'static>(
        &self,
        wait: Duration,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, OffloadError> {
        let permit = tokio::time::timeout(wait, Arc::clone(&self.permits).acquire_owned())
            .await
            .map_err(|_elapsed| OffloadError::Busy(wait))?
            // The semaphore is never closed; treat it as busy should that change.
            .map_err(|_closed| OffloadError::Busy(wait))?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            f()
        })
        .await
        .map_err(|error| {
            let message = match error.try_into_panic() {
                Ok(panic) => panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "(no message)".to_owned()),
                Err(error) => error.to_string(),
            };
            OffloadError::Panicked(message)
        })
    }
}

/// The cores this process may use, at least one.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spending_outside_a_budget_always_succeeds() {
        assert_eq!(spend(u64::MAX), Ok(()));
        assert_eq!(spend(u64::MAX), Ok(()));
    }

    #[test]
    fn steps_run_out_and_stay_out() {
        within(Budget::new(10, Duration::from_secs(60)), || {
            assert_eq!(spend(4), Ok(()));
            assert_eq!(spend(6), Ok(()));
            assert_eq!(spend(1), Err(Exhausted::Steps { limit: 10 }));
            assert_eq!(spend(0), Err(Exhausted::Steps { limit: 10 }), "sticky");
        });
        assert_eq!(spend(1), Ok(()), "the budget ended with `within`");
    }

    #[test]
    fn the_deadline_is_checked_when_spending() {
        within(Budget::new(u64::MAX, Duration::ZERO), || {
            std::thread::sleep(Duration::from_millis(2));
            assert_eq!(
                spend(0),
                Err(Exhausted::Time {
                    limit: Duration::ZERO
                })
            );
        });
    }

    #[test]
    fn a_nested_budget_is_separate_and_the_outer_one_comes_back() {
        within(Budget::new(5, Duration::from_secs(60)), || {
            assert_eq!(spend(5), Ok(()));
            within(Budget::new(100, Duration::from_secs(60)), || {
                assert_eq!(spend(50), Ok(()));
            });
            assert_eq!(spend(1), Err(Exhausted::Steps { limit: 5 }));
        });
    }

    #[test]
    fn the_outer_budget_comes_back_after_a_panic() {
        within(Budget::new(5, Duration::from_secs(60)), || {
            let unwound = std::panic::catch_unwind(|| {
                within(Budget::new(1, Duration::from_secs(60)), || {
                    panic!("inside");
                })
            });
            assert!(unwound.is_err());
            assert_eq!(spend(5), Ok(()), "the outer budget, not the inner one");
            assert_eq!(spend(1), Err(Exhausted::Steps { limit: 5 }));
        });
    }

    #[test]
    fn a_huge_time_limit_means_no_deadline() {
        within(Budget::new(3, Duration::MAX), || {
            assert_eq!(spend(3), Ok(()));
            assert_eq!(spend(1), Err(Exhausted::Steps { limit: 3 }));
        });
    }

    #[test]
    fn exhaustion_reads_well() {
        assert_eq!(
            Exhausted::Steps { limit: 10_000_000 }.to_string(),
            "exceeded its evaluation budget (more than 10,000,000 steps)"
        );
        assert_eq!(
            Exhausted::Time {
                limit: Duration::from_millis(250)
            }
            .to_string(),
            "exceeded its evaluation budget (more than 250 ms)"
        );
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
    }

    #[tokio::test]
    async fn evaluators_run_off_the_worker_and_report_panics() {
        let pool = Evaluators::new(1);
        let worker = std::thread::current().id();
        let ran_on = pool
            .run(Duration::from_secs(5), move || std::thread::current().id())
            .await
            .expect("ran");
        assert_ne!(ran_on, worker);
        let panicked = pool
            .run(Duration::from_secs(5), || -> u8 { panic!("a bug") })
            .await;
        assert!(
            matches!(&panicked, Err(OffloadError::Panicked(m)) if m == "a bug"),
            "{panicked:?}"
        );
        assert_eq!(
            pool.run(Duration::from_secs(5), || 7).await.ok(),
            Some(7),
            "the permit came back after the panic"
        );
    }

    #[tokio::test]
    async fn a_busy_pool_answers_busy_after_the_wait() {
        let pool = Evaluators::new(1);
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let holder = {
            let pool = pool.clone();
            tokio::spawn(async move {
                pool.run(Duration::from_secs(5), move || hold.recv().ok())
                    .await
            })
        };
        // Wait for the holder to take the only permit.
        while pool.permits.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        let busy = pool.run(Duration::from_millis(10), || ()).await;
        assert!(matches!(busy, Err(OffloadError::Busy(_))), "{busy:?}");
        release.send(()).expect("holder waits");
        assert!(holder.await.expect("joined").is_ok());
    }
}
