//! The audit of configuration changes: who changed what, when, before and after (API views,
//! so secrets appear only as "is set" flags).

use serde_json::Value;
use sqlx::PgConnection;

/// Records one change inside the transaction that makes it.
pub async fn record(
    tx: &mut PgConnection,
    actor: &str,
    action: &str,
    kind: &str,
    id: &str,
    before: Option<Value>,
    after: Option<Value>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO config_audit (actor, action, resource_kind, resource_id, before, after) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(actor)
    .bind(action)
    .bind(kind)
    .bind(id)
    .bind(before)
    .bind(after)
    .execute(tx)
    .await?;
    Ok(())
}
