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

use sqlx::Postgres;
use sqlx::pool::PoolConnection;
use uuid::Uuid;

use mih_matcher::dedup::Dedup;
use mih_shared::Shutdown;

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
    let Some(lock) = Lock::take(state, id).await else {
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

/// A session-level advisory lock on one backfill, held by a connection taken out of the pool.
struct Lock {
    conn: Option<PoolConnection<Postgres>>,
    key: i32,
}

impl Lock {
    async fn take(state: &AppState, id: Uuid) -> Option<Lock> {
        let key = lock_key(id);
        let mut conn = match state.db.acquire().await {
            Ok(conn) => conn,
            Err(error) => {
                tracing::warn!(backfill = %id, %error, "no database connection for a backfill");
                return None;
            }
        };
        let taken: Result<bool, _> = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
            .bind(LOCK_CLASS)
            .bind(key)
            .fetch_one(&mut *conn)
            .await;
        match taken {
            Ok(true) => Some(Lock {
                conn: Some(conn),
                key,
            }),
            Ok(false) => None,
            Err(error) => {
                tracing::warn!(backfill = %id, %error, "cannot lock a backfill");
                None
            }
        }
    }

    async fn release(mut self) {
        if let Some(mut conn) = self.conn.take() {
            let released = sqlx::query("SELECT pg_advisory_unlock($1, $2)")
                .bind(LOCK_CLASS)
                .bind(self.key)
                .execute(&mut *conn)
                .await;
            if released.is_err() {
                drop(conn.detach());
            }
        }
    }
}

impl Drop for Lock {
    /// Not released (a panic): the connection must not go back to the pool holding the lock;
    /// detached, it closes, and its session's locks go with it.
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            drop(conn.detach());
        }
    }
}

/// Two backfills whose ids share a key only wait for each other.
fn lock_key(id: Uuid) -> i32 {
    let bytes = id.as_bytes();
    i32::from_be_bytes([bytes[12], bytes[13], bytes[14], bytes[15]])
}
