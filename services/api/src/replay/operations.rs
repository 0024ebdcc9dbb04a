//! Bulk replays for the API and `mih dlq`: started and cancelled with their audit entries; the
//! rows are [`mih_dlq::store::operations`]'. Running one is [`super::Replayer::run_operation`].

use sqlx::PgPool;
use uuid::Uuid;

use mih_dlq::store::filter::DeadLetterFilter;
use mih_dlq::store::operations::{self as stored, Operation};

use super::Replayer;
use crate::audit;
use crate::error::{ApiFailure, ApiResult};
use crate::resources::not_found;

pub async fn get(db: &PgPool, id: &str) -> ApiResult<Operation> {
    let missing = || not_found("dead-letter operation", id);
    let uuid = Uuid::parse_str(id).map_err(|_| missing())?;
    stored::get(db, uuid).await?.ok_or_else(missing)
}

impl Replayer {
    /// Starts a bulk replay of the dead letters matching `filter` (a condition or `all` is
    /// required). Dead letters arriving after this moment are not part of it.
    pub async fn start_replay(
        &self,
        filter: DeadLetterFilter,
        actor: &str,
    ) -> ApiResult<Operation> {
        let filter = filter.validated_for_bulk()?;
        let mut tx = self.db.begin().await?;
        let operation = stored::create_replay(&mut tx, &filter, actor).await?;
        audit::record(
            &mut tx,
            actor,
            "create",
            "dead_letter_operation",
            &operation.id.to_string(),
            None,
            serde_json::to_value(&operation).ok(),
        )
        .await?;
        tx.commit().await?;
        super::wake();
        Ok(operation)
    }

    /// Cancels a running operation; dead letters replayed so far stay replayed.
    pub async fn cancel(&self, id: &str, actor: &str) -> ApiResult<Operation> {
        let before = get(&self.db, id).await?;
        if !stored::cancel(&self.db, before.id).await? {
            let now = get(&self.db, id).await?;
            return Err(ApiFailure::Conflict(format!(
                "the operation is {} already",
                now.status
            )));
        }
        let after = get(&self.db, id).await?;
        let mut conn = self.db.acquire().await?;
        audit::record(
            &mut conn,
            actor,
            "cancel",
            "dead_letter_operation",
            id,
            serde_json::to_value(&before).ok(),
            serde_json::to_value(&after).ok(),
        )
        .await?;
        Ok(after)
    }
}
