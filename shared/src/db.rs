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
