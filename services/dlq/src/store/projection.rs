//! The `dead_letters` projection: written from DLQ, resolved from RESULTS. Both functions are
//! idempotent, so a redelivered message, or `mih rebuild-projections` reading the streams from
//! the start, leaves the table as one pass would. The rebuild also empties the table
//! ([`truncate`]) and marks what its replays' outcomes say is being replayed
//! ([`mark_replaying`]).

use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use mih_shared::messages::{DeadLetter, FailureStage, Outcome, OutcomeStatus};
use mih_shared::pgtext;

/// Stores a dead letter; `Ok(true)` if it was new.
///
/// A dead letter whose replay is known to have been delivered (the delivery log has it) is not
/// stored again: it was resolved, and a redelivery or a rebuild must not bring it back.
pub async fn store(db: &PgPool, dead: &DeadLetter) -> Result<bool, sqlx::Error> {
    let job = &dead.job;
    let event = dead.event.as_ref();
    let source = job
        .source
        .as_ref()
        .map(|s| s.as_str().to_owned())
        .or_else(|| event.map(|e| e.source.as_str().to_owned()));
    let eventname = job.eventname.clone().or_else(|| {
        event
            .and_then(|e| e.data.get("eventname"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    let stage = match dead.stage {
        FailureStage::Render => "render",
        FailureStage::Delivery => "delivery",
    };
    let encode_error = |e: serde_json::Error| sqlx::Error::Encode(Box::new(e));
    // jsonb cannot hold NUL: the columns get storable copies, and the exact message is kept
    // beside them when a copy differs, so a replay sends what the job held.
    let mut altered = false;
    let mut storable = |value: Result<Value, serde_json::Error>| {
        let mut value = value.map_err(encode_error)?;
        altered |= pgtext::make_storable(&mut value);
        Ok::<_, sqlx::Error>(value)
    };
    let job_json = storable(serde_json::to_value(job))?;
    let last_outcome = dead
        .last_outcome
        .as_ref()
        .map(|o| storable(serde_json::to_value(o)))
        .transpose()?;
    let event_json = event
        .map(|e| storable(serde_json::to_value(e)))
        .transpose()?;
    let exact = if altered {
        Some(serde_json::to_string(dead).map_err(encode_error)?)
    } else {
        None
    };
    let origin = job_json
        .get("origin")
        .and_then(Value::as_str)
        .unwrap_or("rule")
        .to_owned();
    // The one read of a table this crate does not own: `deliveries` is the api recorder's. It
    // stays a sub-select, because asking the recorder instead would make this crate depend on
    // api, which depends on this crate for every dead-letter query; and in one statement the
    // check and the insert cannot be separated by a delivered replay.
    let inserted = sqlx::query(
        "INSERT INTO dead_letters (job_id, service, rule_id, event_id, source, eventname, origin, \
             stage, reason, attempts, job, last_outcome, event, replay_of, dead_lettered_at, exact) \
         SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16 \
         WHERE NOT EXISTS ( \
             SELECT 1 FROM deliveries WHERE replay_of = $1 AND status = 'delivered') \
         ON CONFLICT (job_id) DO NOTHING",
    )
    .bind(job.id.0)
    .bind(job.service.as_str())
    .bind(job.rule_id.map(|r| r.0))
    .bind(job.event_id.map(|e| e.0))
    .bind(source.as_deref().map(|s| pgtext::storable(s).into_owned()))
    .bind(pgtext::storable_opt(eventname.as_deref()))
    .bind(origin)
    .bind(stage)
    .bind(pgtext::storable(&dead.reason).as_ref())
    .bind(i32::try_from(dead.attempts).unwrap_or(i32::MAX))
    .bind(job_json)
    .bind(last_outcome)
    .bind(event_json)
    .bind(job.replay_of.map(|r| r.0))
    .bind(dead.dead_lettered_at)
    .bind(exact)
    .execute(db)
    .await?;
    Ok(inserted.rows_affected() > 0)
}

/// Applies one outcome: a delivered replay removes the dead letter it retried; `Ok(true)` if a
/// dead letter was removed. Every other outcome changes nothing.
///
/// The whole chain goes: when a replay of a replay is delivered, the original dead letter
/// (still `replaying`, linked to the first replay) and every other failed replay of the same
/// job are resolved with it.
pub async fn resolve(db: &PgPool, outcome: &Outcome) -> Result<bool, sqlx::Error> {
    let Some(replayed) = outcome.replay_of else {
        return Ok(false);
    };
    if outcome.status != OutcomeStatus::Delivered {
        return Ok(false);
    }
    Ok(remove_chain(db, replayed.0).await? > 0)
}

/// Removes a dead letter and every dead letter linked to it through `replay_of`, up and down.
async fn remove_chain(db: &PgPool, job_id: Uuid) -> Result<u64, sqlx::Error> {
    let removed = sqlx::query(
        "WITH RECURSIVE up AS ( \
             SELECT job_id, replay_of FROM dead_letters WHERE job_id = $1 \
             UNION \
             SELECT d.job_id, d.replay_of FROM dead_letters d JOIN up ON d.job_id = up.replay_of \
         ), down AS ( \
             SELECT job_id FROM up \
             UNION \
             SELECT d.job_id FROM dead_letters d JOIN down ON d.replay_of = down.job_id \
         ) \
         DELETE FROM dead_letters WHERE job_id IN (SELECT job_id FROM down)",
    )
    .bind(job_id)
    .execute(db)
    .await?;
    Ok(removed.rows_affected())
}

/// A replay whose outcome was not a delivery (yet): the dead letter it retried is being
/// replayed, by that job. `Ok(true)` if such a dead letter was there to mark.
pub async fn mark_replaying(db: &PgPool, outcome: &Outcome) -> Result<bool, sqlx::Error> {
    let Some(original) = outcome.replay_of else {
        return Ok(false);
    };
    let marked = sqlx::query(
        "UPDATE dead_letters SET status = 'replaying', replay_job_id = $2,
                replayed_at = coalesce(replayed_at, $3)
         WHERE job_id = $1",
    )
    .bind(original.0)
    .bind(outcome.job_id.0)
    .bind(outcome.started_at)
    .execute(db)
    .await?;
    Ok(marked.rows_affected() > 0)
}

/// Empties the projection, for a rebuild from the streams. Bulk operations are kept: they
/// are the operators' own records, not a projection.
pub async fn truncate(db: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("TRUNCATE dead_letters").execute(db).await?;
    Ok(())
}
