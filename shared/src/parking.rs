//! The poison policy of every projection consumer (the dlq service's consumers, api's
//! recorder): a message PostgreSQL refuses for its content is tried a few times, then *parked*
//! — kept in `parked_messages` with why — and acknowledged, so it never holds up the messages
//! behind it, even across restarts. A database that cannot be reached is not the message's
//! fault: such messages are retried for as long as it takes and never parked. The consumer
//! loop ([`crate::consumer`], with [`crate::consumer::DeadLetters::Park`]) carries the policy
//! out; this module says which failures are whose ([`disposition`]) and keeps what is parked.
//!
//! This module is the only one with SQL for `parked_messages`; the api lists, retries and
//! deletes parked messages through it.

use async_nats::jetstream;
use chrono::{DateTime, Utc};
use metrics::{Unit, counter, describe_counter};
use sqlx::PgPool;
use uuid::Uuid;

use crate::consumer::delivered;
use crate::error::Disposition;

pub const PARKED: &str = "mih_projection_parked_total";

pub fn describe() {
    describe_counter!(
        PARKED,
        Unit::Count,
        "Messages a projection consumer gave up storing and parked (see /api/v1/parked), by \
         consumer"
    );
}

/// What a failure to store a message says about the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The database is unreachable, overloaded or restarting, or the transaction lost a race:
    /// the same message will go through later.
    Transient,
    /// The database refused this message's content (or a statement failed for it): trying it
    /// forever would hold up every message behind it.
    Refused,
}

impl Failure {
    pub fn of(error: &sqlx::Error) -> Failure {
        match error {
            sqlx::Error::Database(db) => {
                let code = db.code();
                let code = code.as_deref().unwrap_or_default();
                // 08 connection, 40 rollback (serialization, deadlock), 53 resources,
                // 57 operator intervention (shutdown), 58 system errors, 55P03 lock timeout.
                let transient = ["08", "40", "53", "57", "58"]
                    .iter()
                    .any(|class| code.starts_with(class))
                    || code == "55P03";
                if transient {
                    Failure::Transient
                } else {
                    Failure::Refused
                }
            }
            sqlx::Error::Encode(_) | sqlx::Error::Decode(_) | sqlx::Error::ColumnDecode { .. } => {
                Failure::Refused
            }
            _ => Failure::Transient,
        }
    }
}

/// The disposition of a message whose storing failed with `error`: retried for as long as
/// the database is away, given up on (parked) after a few refusals of its content.
pub fn disposition(error: &sqlx::Error) -> Disposition {
    match Failure::of(error) {
        Failure::Transient => Disposition::Retry { after: None },
        Failure::Refused => Disposition::Refused {
            reason: error.to_string(),
        },
    }
}

/// Parks `message`: stores it with why `consumer` could not take it. Idempotent per stream
/// sequence and consumer.
pub async fn park(
    db: &PgPool,
    consumer: &str,
    message: &jetstream::Message,
    error: &str,
) -> Result<(), sqlx::Error> {
    let (stream, sequence) = match message.info() {
        Ok(info) => (info.stream.to_owned(), info.stream_sequence),
        Err(_) => (String::new(), 0),
    };
    sqlx::query(
        "INSERT INTO parked_messages (id, consumer, stream, subject, sequence, payload, error, \
           deliveries) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (stream, sequence, consumer) DO NOTHING",
    )
    .bind(Uuid::now_v7())
    .bind(consumer)
    .bind(crate::pgtext::storable(&stream).as_ref())
    .bind(crate::pgtext::storable(message.subject.as_str()).as_ref())
    .bind(i64::try_from(sequence).unwrap_or(i64::MAX))
    .bind(message.payload.as_ref())
    .bind(crate::pgtext::storable(error).as_ref())
    .bind(i32::try_from(delivered(message)).unwrap_or(i32::MAX))
    .execute(db)
    .await?;
    counter!(PARKED, "consumer" => consumer.to_owned()).increment(1);
    tracing::error!(
        consumer,
        stream,
        sequence,
        subject = %message.subject,
        %error,
        "message parked: the database refused it; see /api/v1/parked"
    );
    Ok(())
}

/// A parked message.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Parked {
    pub id: Uuid,
    pub consumer: String,
    pub stream: String,
    pub subject: String,
    pub sequence: i64,
    pub error: String,
    pub deliveries: i32,
    pub parked_at: DateTime<Utc>,
    pub payload: Vec<u8>,
}

impl Parked {
    /// The payload as text for people: invalid UTF-8 and NUL shown as U+FFFD.
    pub fn payload_text(&self) -> String {
        crate::pgtext::storable(&String::from_utf8_lossy(&self.payload)).into_owned()
    }
}

const COLUMNS: &str =
    "id, consumer, stream, subject, sequence, error, deliveries, parked_at, payload";

/// Parked messages, newest first, `limit` at most, after the cursor `(parked_at, id)`.
pub async fn list(
    db: &PgPool,
    consumer: Option<&str>,
    before: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<Parked>, sqlx::Error> {
    let mut sql = sqlx::QueryBuilder::<sqlx::Postgres>::new(format!(
        "SELECT {COLUMNS} FROM parked_messages WHERE TRUE"
    ));
    if let Some(consumer) = consumer {
        sql.push(" AND consumer = ").push_bind(consumer.to_owned());
    }
    if let Some((at, id)) = before {
        sql.push(" AND (parked_at, id) < (")
            .push_bind(at)
            .push(", ")
            .push_bind(id)
            .push(")");
    }
    sql.push(" ORDER BY parked_at DESC, id DESC LIMIT ")
        .push_bind(limit);
    sql.build_query_as().fetch_all(db).await
}

/// How many messages are parked.
pub async fn count(db: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM parked_messages")
        .fetch_one(db)
        .await
}

pub async fn get(db: &PgPool, id: Uuid) -> Result<Option<Parked>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM parked_messages WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(db)
    .await
}

/// Removes a parked message; whether it existed.
pub async fn delete(db: &PgPool, id: Uuid) -> Result<bool, sqlx::Error> {
    let deleted = sqlx::query("DELETE FROM parked_messages WHERE id = $1")
        .bind(id)
        .execute(db)
        .await?;
    Ok(deleted.rows_affected() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_content_is_retried_then_parked_and_outages_only_retried() {
        assert_eq!(Failure::of(&sqlx::Error::PoolTimedOut), Failure::Transient);
        assert_eq!(
            disposition(&sqlx::Error::PoolTimedOut),
            Disposition::Retry { after: None }
        );
        let refused = sqlx::Error::Decode("not a number".into());
        assert!(matches!(disposition(&refused), Disposition::Refused { .. }));
    }
}
