//! Backfills: the historical events of `<NS>_EVENTS` replayed through one rule as jobs with
//! origin `backfill`.
//!
//! PostgreSQL holds each run's state (`backfills`); a runner in every api replica sweeps for
//! running ones and takes each under a PostgreSQL advisory lock, so exactly one replica scans
//! it and another resumes it from its last checkpoint if that replica dies. Jobs keep the id a
//! live match would have (event id + rule id): a chunk re-published after a crash, or a job
//! the live matcher already published moments ago, is recognised by JetStream.

mod scan;
pub mod store;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use uuid::Uuid;

use mih_rules::dedup::Dedup;
use mih_shared::Shutdown;

use crate::advisory::AdvisoryLock;
use crate::state::AppState;

/// How often to look for runs that no replica is scanning (new ones wake the runner at once).
const SWEEP: Duration = Duration::from_secs(5);
/// The advisory lock class of backfills ("mihb"), so their locks meet no one else's.
const LOCK_CLASS: i32 = 0x6d69_6862;

/// Sweeps for running backfills and scans each one this replica can lock.
pub async fn runner(state: AppState, shutdown: Shutdown) {
    let dedup = match Dedup::open(&state.js, &state.names.dedup_bucket()).await {
        Ok(dedup) => dedup,
        Err(error) => {
            tracing::error!(%error, "backfills cannot run without the dedup bucket");
            return;
        }
    };
    let active: Arc<Mutex<HashSet<Uuid>>> = Arc::default();
    loop {
        match store::running(&state.db).await {
            Ok(ids) => {
                for id in ids {
                    let newly_active = active.lock().map(|mut a| a.insert(id)).unwrap_or(false);
                    if newly_active {
                        let (state, dedup, shutdown, active) = (
                            state.clone(),
                            dedup.clone(),
                            shutdown.clone(),
                            Arc::clone(&active),
                        );
                        tokio::spawn(async move {
                            attempt(&state, &dedup, id, &shutdown).await;
                            if let Ok(mut active) = active.lock() {
                                active.remove(&id);
                            }
                        });
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "cannot list running backfills; retrying"),
        }
        tokio::select! {
            () = shutdown.triggered() => return,
            () = state.backfill_wake.notified() => {}
            () = tokio::time::sleep(SWEEP) => {}
        }
    }
}

/// Scans one backfill if no other replica does; leaves it running on a transient failure so
/// the next sweep resumes it.
async fn attempt(state: &AppState, dedup: &Dedup, id: Uuid, shutdown: &Shutdown) {
    let Some(lock) = AdvisoryLock::take(&state.db, LOCK_CLASS, id, "a backfill").await else {
        return;
    };
    let outcome = scan::run(state, dedup, id, shutdown).await;
    lock.release().await;
    match outcome {
        Ok(scan::End::Done) => {
            match store::finish(&state.db, id, store::Status::Completed, None).await {
                Ok(true) => tracing::info!(backfill = %id, "backfill completed"),
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(backfill = %id, %error, "cannot record the end of a backfill; it will be resumed")
                }
            }
        }
        Ok(scan::End::Stopped) => {}
        Err(scan::ScanError::Permanent(reason)) => {
            tracing::warn!(backfill = %id, %reason, "backfill failed");
            if let Err(error) =
                store::finish(&state.db, id, store::Status::Failed, Some(&reason)).await
            {
                tracing::warn!(backfill = %id, %error, "cannot record a failed backfill");
            }
        }
        Err(scan::ScanError::Transient(reason)) => {
            tracing::warn!(backfill = %id, %reason, "backfill interrupted; resuming from its last checkpoint");
        }
    }
}
