//! The `inbound_messages` table: the inbound log.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use mih_shared::db::RetentionSpec;
use mih_shared::pgtext::{storable, storable_opt};

/// The longest excerpt of a payload kept in the log, in characters.
pub const EXCERPT_CHARS: usize = 1024;

/// One row to record.
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: Uuid,
    pub sequence: u64,
    pub service: String,
    pub source: Option<String>,
    pub via: &'static str,
    pub received_at: DateTime<Utc>,
    pub content_type: Option<String>,
    pub size_bytes: usize,
    pub excerpt: String,
    pub external_id: Option<String>,
    pub parked_reason: Option<String>,
}

/// A logged message with where it stands, as the API shows it.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize, utoipa::ToSchema)]
pub struct Logged {
    /// The Moodle event's `messageid`.
    pub id: Uuid,
    /// Its position in the site's inbound messages (its stream sequence).
    #[serde(rename = "cursor")]
    pub sequence: i64,
    pub service: String,
    /// The Moodle site it is for (none when parked).
    pub source: Option<String>,
    /// `webhook` or `amqp`.
    pub via: String,
    pub received_at: DateTime<Utc>,
    pub content_type: Option<String>,
    pub size_bytes: i32,
    /// The start of the payload as text.
    pub excerpt: String,
    pub external_id: Option<String>,
    /// Why it was parked.
    pub parked_reason: Option<String>,
    /// `pending` (waiting for its site to pull and acknowledge it), `delivered` (its site
    /// acknowledged it) or `parked`.
    pub status: String,
}

/// What to list.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub service: Option<String>,
    pub source: Option<String>,
    /// `pending`, `delivered` or `parked`.
    pub status: Option<String>,
}

/// Records one message; false if it was already recorded (a redelivery).
pub async fn record(db: &PgPool, entry: &Entry) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO inbound_messages (id, sequence, service, source, via, received_at, \
           content_type, size_bytes, excerpt, external_id, parked_reason) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (id) DO NOTHING",
    )
    .bind(entry.id)
    .bind(i64::try_from(entry.sequence).unwrap_or(i64::MAX))
    .bind(storable(&entry.service).into_owned())
    .bind(storable_opt(entry.source.as_deref()))
    .bind(entry.via)
    .bind(entry.received_at)
    .bind(storable_opt(entry.content_type.as_deref()))
    .bind(i32::try_from(entry.size_bytes).unwrap_or(i32::MAX))
    .bind(storable(&entry.excerpt).into_owned())
    .bind(storable_opt(entry.external_id.as_deref()))
    .bind(storable_opt(entry.parked_reason.as_deref()))
    .execute(db)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// The status of a row, from its parked reason and its source's acknowledgement.
const STATUS: &str = "CASE WHEN m.parked_reason IS NOT NULL THEN 'parked' \
    WHEN m.sequence <= coalesce(c.acknowledged, 0) THEN 'delivered' ELSE 'pending' END";

/// Up to `limit` messages matching `filter`, newest first, before `before` (a keyset).
pub async fn list(
    db: &PgPool,
    filter: &Filter,
    before: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<Logged>, sqlx::Error> {
    let mut sql = QueryBuilder::<Postgres>::new(format!(
        "SELECT m.id, m.sequence, m.service, m.source, m.via, m.received_at, m.content_type, \
         m.size_bytes, m.excerpt, m.external_id, m.parked_reason, {STATUS} AS status \
         FROM inbound_messages m LEFT JOIN inbound_cursors c ON c.source = m.source WHERE TRUE"
    ));
    if let Some(service) = &filter.service {
        sql.push(" AND m.service = ").push_bind(service.clone());
    }
    if let Some(source) = &filter.source {
        sql.push(" AND m.source = ").push_bind(source.clone());
    }
    if let Some(status) = &filter.status {
        sql.push(format!(" AND {STATUS} = "))
            .push_bind(status.clone());
    }
    if let Some((at, id)) = before {
        sql.push(" AND (m.received_at, m.id) < (")
            .push_bind(at)
            .push(", ")
            .push_bind(id)
            .push(")");
    }
    sql.push(" ORDER BY m.received_at DESC, m.id DESC LIMIT ")
        .push_bind(limit);
    sql.build_query_as().fetch_all(db).await
}

/// Inbound messages per time bucket of `width` seconds (aligned to the epoch, as the other
/// series of the stats), received in [from, to), optionally of one service: (bucket start,
/// received, parked).
pub async fn per_bucket(
    db: &PgPool,
    width: f64,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    service: Option<&str>,
) -> Result<Vec<(DateTime<Utc>, i64, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT to_timestamp(floor(extract(epoch FROM received_at)::float8 / $1) * $1) AS at, \
         count(*), count(*) FILTER (WHERE parked_reason IS NOT NULL) \
         FROM inbound_messages WHERE received_at >= $2 AND received_at < $3 \
         AND ($4::text IS NULL OR service = $4) GROUP BY 1",
    )
    .bind(width)
    .bind(from)
    .bind(to)
    .bind(service)
    .fetch_all(db)
    .await
}

/// Empties the log, for a rebuild from the stream.
pub async fn truncate(db: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("TRUNCATE inbound_messages").execute(db).await?;
    Ok(())
}

/// How retention prunes the inbound log: by when each message arrived (it goes with the
/// delivery log's settings).
pub const RETENTION: RetentionSpec = RetentionSpec {
    table: "inbound_messages",
    age_column: "received_at",
    key: "id",
};
