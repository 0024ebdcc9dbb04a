//! Session-level PostgreSQL advisory locks, so that of several api replicas one runs a given
//! background task (a backfill, a bulk replay). The lock lives on a connection taken out of
//! the pool for as long as it is held.

use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres};
use uuid::Uuid;

#[derive(Debug)]
pub struct AdvisoryLock {
    conn: Option<PoolConnection<Postgres>>,
    class: i32,
    key: i32,
}

impl AdvisoryLock {
    /// Takes the lock on `id` within `class` unless another session holds it (then `None`).
    /// `what` names the task in warnings.
    pub async fn take(db: &PgPool, class: i32, id: Uuid, what: &str) -> Option<AdvisoryLock> {
        let key = key(id);
        let mut conn = match db.acquire().await {
            Ok(conn) => conn,
            Err(error) => {
                tracing::warn!(%id, %error, "no database connection for {what}");
                return None;
            }
        };
        let taken: Result<bool, _> = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
            .bind(class)
            .bind(key)
            .fetch_one(&mut *conn)
            .await;
        match taken {
            Ok(true) => Some(AdvisoryLock {
                conn: Some(conn),
                class,
                key,
            }),
            Ok(false) => None,
            Err(error) => {
                tracing::warn!(%id, %error, "cannot lock {what}");
                None
            }
        }
    }

    pub async fn release(mut self) {
        if let Some(mut conn) = self.conn.take() {
            let released = sqlx::query("SELECT pg_advisory_unlock($1, $2)")
                .bind(self.class)
                .bind(self.key)
                .execute(&mut *conn)
                .await;
            if released.is_err() {
                drop(conn.detach());
            }
        }
    }
}

impl Drop for AdvisoryLock {
    /// Not released (a panic): the connection must not go back to the pool holding the lock;
    /// detached, it closes, and its session's locks go with it.
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            drop(conn.detach());
        }
    }
}

/// Two ids that share a key only wait for each other. UUIDv7's last bytes are random, unlike
/// its first.
fn key(id: Uuid) -> i32 {
    let bytes = id.as_bytes();
    i32::from_be_bytes([bytes[12], bytes[13], bytes[14], bytes[15]])
}
