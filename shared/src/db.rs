//! PostgreSQL schema migrations, embedded in the binary.

use sqlx::PgPool;
use sqlx::migrate::{MigrateError, Migrator};

/// Every migration in `migrations/`, applied in order.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Applies pending migrations; returns how many the schema now has.
pub async fn migrate(pool: &PgPool) -> Result<usize, MigrateError> {
    MIGRATOR.run(pool).await?;
    Ok(MIGRATOR.iter().count())
}

/// How retention prunes one projection table: by the age its `age_column` gives a row, and
/// beyond a row count by its oldest rows, deleting in batches by `key`. The crate that owns the
/// table declares it (it alone has SQL for the table otherwise); api's retention applies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionSpec {
    pub table: &'static str,
    /// A timestamp column: how old a row is.
    pub age_column: &'static str,
    /// The columns that identify a row, comma-separated.
    pub key: &'static str,
}
