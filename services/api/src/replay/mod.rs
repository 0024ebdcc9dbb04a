//! Dead letters: reading, replaying (one, or a filtered set as a tracked operation) and
//! deleting them. The HTTP handlers (`resources::dead_letters`) and `mih dlq` both use this
//! module, so the API and the command line behave the same. The rows are the dlq crate's:
//! every statement on them is in [`mih_dlq::store`]; this module decides what to publish and
//! records who did what in the audit log.
//!
//! A bulk replay lives in `dead_letter_operations`; a runner in every api replica sweeps for
//! running ones and takes each under a PostgreSQL advisory lock, so exactly one process walks
//! it (by job id, checkpointing after each batch) and another resumes it if that one dies.
//! Dead letters replayed since the operation started are counted, not replayed again, so a
//! batch interrupted before its checkpoint is not sent twice.

mod held;
mod letters;
pub(crate) mod operations;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use sqlx::PgPool;
use tokio::sync::Notify;
use uuid::Uuid;

use mih_dlq::store::filter::{DeadLetterFilter, InvalidFilter};
use mih_dlq::store::operations as stored;
use mih_shared::Shutdown;
use mih_shared::names::Names;

use crate::advisory::AdvisoryLock;
use crate::error::ApiFailure;

pub use letters::Replayed;
pub(crate) use letters::{DeadLetterDetail, get, list};
pub(crate) use operations::get as get_operation;

/// What replaying needs: the database, and JetStream to queue the new jobs on the namespace's
/// subjects. The api's state gives one ([`crate::AppState::replayer`]); `mih dlq` builds one
/// without the rest of the api.
#[derive(Debug, Clone)]
pub struct Replayer {
    /// Also for reading dead letters with [`mih_dlq::store::letters`].
    pub db: PgPool,
    js: async_nats::jetstream::Context,
    names: Names,
    partitions: mih_shared::partition::Partitions,
}

impl Replayer {
    pub fn new(
        db: PgPool,
        js: async_nats::jetstream::Context,
        names: Names,
        partitions: mih_shared::partition::Partitions,
    ) -> Self {
        Replayer {
            db,
            js,
            names,
            partitions,
        }
    }
}

impl From<InvalidFilter> for ApiFailure {
    fn from(invalid: InvalidFilter) -> Self {
        ApiFailure::Invalid(invalid.errors)
    }
}

/// How often to look for operations no replica is running (new ones wake the runner at once).
const SWEEP: Duration = Duration::from_secs(5);
/// Dead letters replayed between two checkpoints.
const BATCH: i64 = 100;
/// Replays published at once within a batch.
const CONCURRENCY: usize = 16;
/// The advisory lock class of dead-letter operations ("mihr"), apart from backfills'.
const LOCK_CLASS: i32 = 0x6d69_6872;

/// Wakes this process's runner; `AppState` has no slot for it, and one per process suffices.
static WAKE: Notify = Notify::const_new();

pub(crate) fn wake() {
    WAKE.notify_one();
}

/// Sweeps for running operations and runs each one this replica can lock.
pub(crate) async fn runner(replayer: Replayer, shutdown: Shutdown) {
    let active: Arc<Mutex<HashSet<Uuid>>> = Arc::default();
    loop {
        match stored::running(&replayer.db).await {
            Ok(ids) => {
                for id in ids {
                    let newly_active = active.lock().map(|mut a| a.insert(id)).unwrap_or(false);
                    if newly_active {
                        let (replayer, shutdown, active) =
                            (replayer.clone(), shutdown.clone(), Arc::clone(&active));
                        tokio::spawn(async move {
                            if let Err(error) = replayer.run_operation(id, &shutdown).await {
                                tracing::warn!(operation = %id, %error, "dead-letter replay interrupted; it will be resumed");
                            }
                            if let Ok(mut active) = active.lock() {
                                active.remove(&id);
                            }
                        });
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "cannot list running dead-letter operations"),
        }
        tokio::select! {
            () = shutdown.triggered() => return,
            () = WAKE.notified() => {}
            () = tokio::time::sleep(SWEEP) => {}
        }
    }
}

/// How a call to [`Replayer::run_operation`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunEnd {
    /// The operation is no longer running (completed here, or ended before).
    Ended,
    /// Another process holds it.
    Busy,
    /// Shutdown came first; it stays running for the next sweep.
    Stopped,
}

impl Replayer {
    /// Runs one operation to its end if no other process runs it. An error (NATS or
    /// PostgreSQL unavailable) leaves it running, to be resumed from its last checkpoint.
    pub async fn run_operation(&self, id: Uuid, shutdown: &Shutdown) -> Result<RunEnd, ApiFailure> {
        let Some(lock) =
            AdvisoryLock::take(&self.db, LOCK_CLASS, id, "a dead-letter operation").await
        else {
            return Ok(RunEnd::Busy);
        };
        let end = self.walk(id, shutdown).await;
        lock.release().await;
        end
    }

    async fn walk(&self, id: Uuid, shutdown: &Shutdown) -> Result<RunEnd, ApiFailure> {
        let Some(progress) = stored::progress(&self.db, id).await? else {
            return Ok(RunEnd::Ended);
        };
        if progress.status != "running" {
            return Ok(RunEnd::Ended);
        }
        let filter: DeadLetterFilter = match serde_json::from_value(progress.filter) {
            Ok(filter) => filter,
            Err(error) => {
                let reason = format!("the stored filter is unreadable: {error}");
                stored::finish(&self.db, id, "failed", Some(&reason)).await?;
                return Ok(RunEnd::Ended);
            }
        };
        let replayed_by = format!("{} (operation {id})", progress.created_by);
        let mut position = progress.position;
        loop {
            if shutdown.is_triggered() {
                return Ok(RunEnd::Stopped);
            }
            let batch =
                stored::next_batch(&self.db, &filter, progress.created_at, position, BATCH).await?;
            let Some(last) = batch.last().map(|item| item.job_id) else {
                if stored::finish(&self.db, id, "completed", None).await? {
                    tracing::info!(operation = %id, "dead-letter replay completed");
                }
                return Ok(RunEnd::Ended);
            };
            let results: Vec<Result<(), ApiFailure>> = futures::stream::iter(batch)
                .map(|item| {
                    let replayed_by = replayed_by.as_str();
                    async move {
                        if item.already {
                            return Ok(());
                        }
                        self.republish(item.job_id, replayed_by).await.map(|_| ())
                    }
                })
                .buffer_unordered(CONCURRENCY)
                .collect()
                .await;
            let (mut done, mut failed, mut last_error) = (0i64, 0i64, None);
            for result in results {
                match result {
                    Ok(()) => done += 1,
                    // Resolved or deleted meanwhile: nothing left to replay.
                    Err(ApiFailure::NotFound { .. }) => {}
                    Err(error @ (ApiFailure::Conflict(_) | ApiFailure::Invalid(_))) => {
                        failed += 1;
                        last_error = Some(error.to_string());
                    }
                    // Not checkpointed: the batch is walked again on resume, and what it already
                    // replayed is recognised then.
                    Err(error) => return Err(error),
                }
            }
            if !stored::checkpoint(&self.db, id, done, failed, last, last_error.as_deref()).await? {
                tracing::info!(operation = %id, "dead-letter replay cancelled");
                return Ok(RunEnd::Ended);
            }
            position = Some(last);
        }
    }
}
