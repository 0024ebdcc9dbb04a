//! Dead letters for the API and `mih dlq`: one read with its attempts, one replayed, one or
//! a filtered set deleted, each change with its audit entry. The rows are read and changed
//! through [`mih_dlq::store::letters`].

use std::sync::Arc;

use async_nats::HeaderMap;
use async_nats::jetstream::message::PublishMessage;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::PgPool;
use tracing::Instrument as _;
use utoipa::ToSchema;
use uuid::Uuid;

use mih_dlq::store::filter::DeadLetterFilter;
use mih_dlq::store::letters::{self as dead_letters, DeadLetterSummary, ReadError, Replayable};
use mih_rules::CompiledRule;
use mih_shared::messages::{self, Event, Job, JobId, Origin};
use mih_shared::telemetry;

use super::Replayer;
use crate::audit;
use crate::error::{ApiFailure, ApiResult};
use crate::extract::{Page, parse_time_cursor, time_cursor};
use crate::resources::config_row::ConfigRow;
use crate::resources::crud::Resource;
use crate::resources::rules::RuleRow;
use crate::resources::{not_found, services};

/// One attempt, from the delivery log.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct AttemptView {
    pub attempt: i32,
    /// delivered, failed_retryable, failed_permanent, timeout, or circuit_open (a facade call
    /// the open circuit refused: queued jobs are never refused, they wait).
    pub status: String,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i64,
    pub response_status: Option<i32>,
    pub response_excerpt: Option<String>,
    pub error: Option<String>,
    pub trace_id: Option<String>,
}

/// One dead letter with everything it carries.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeadLetterDetail {
    #[serde(flatten)]
    pub summary: DeadLetterSummary,
    /// The request exactly as rendered (for a render failure: the rule's unrendered target).
    #[schema(value_type = Object)]
    pub request: Value,
    /// The job as it was queued.
    #[schema(value_type = Object)]
    pub job: Value,
    /// The last attempt's outcome (absent when the job never ran).
    #[schema(value_type = Option<Object>)]
    pub last_outcome: Option<Value>,
    /// For a render failure: the event, rendered again on replay.
    #[schema(value_type = Option<Object>)]
    pub event: Option<Value>,
    /// Every attempt the delivery log holds for this job, in order.
    pub deliveries: Vec<AttemptView>,
}

/// What replaying one dead letter did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Replayed {
    /// The dead letter, now `replaying`.
    pub job_id: Uuid,
    /// The new job, queued with origin `replay` and `replay_of` = `job_id`.
    pub replay_job_id: Uuid,
    pub service: String,
}

/// A keyset cursor: the sort key (dead_lettered_at, job_id) of the last item of a page.
fn cursor_of(item: &DeadLetterSummary) -> String {
    time_cursor(item.dead_lettered_at, item.job_id)
}

/// One page of the dead letters matching `filter`, newest first.
pub async fn list(
    db: &PgPool,
    filter: &DeadLetterFilter,
    cursor: Option<&str>,
    limit: i64,
) -> ApiResult<Page<DeadLetterSummary>> {
    let after = cursor.map(parse_time_cursor).transpose()?;
    let rows = dead_letters::list(db, filter, after, limit + 1).await?;
    Ok(Page::from_rows(rows, limit, cursor_of))
}

fn parse_id(id: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(id).map_err(|_| not_found("dead letter", id))
}

/// One dead letter with its request, last outcome and every logged attempt.
pub async fn get(db: &PgPool, id: &str) -> ApiResult<DeadLetterDetail> {
    let job_id = parse_id(id)?;
    let stored = dead_letters::get(db, job_id)
        .await?
        .ok_or_else(|| not_found("dead letter", id))?;
    // The delivery log is this crate's (the recorder's): read here, beside the dead letter.
    let deliveries: Vec<AttemptView> = sqlx::query_as(
        "SELECT attempt, status, started_at, duration_ms, response_status, response_excerpt, \
         error, trace_id FROM deliveries WHERE job_id = $1 ORDER BY attempt",
    )
    .bind(job_id)
    .fetch_all(db)
    .await?;
    Ok(DeadLetterDetail {
        request: stored.job.get("request").cloned().unwrap_or(Value::Null),
        summary: stored.summary,
        job: stored.job,
        last_outcome: stored.last_outcome,
        event: stored.event,
        deliveries,
    })
}

impl From<ReadError> for ApiFailure {
    fn from(error: ReadError) -> Self {
        match error {
            ReadError::Database(error) => error.into(),
            unreadable @ ReadError::Unreadable { .. } => {
                ApiFailure::Internal(unreadable.to_string())
            }
        }
    }
}

impl Replayer {
    /// Replays one dead letter (see [`Replayer::republish`]) and records who did it in the
    /// audit log.
    pub async fn replay(&self, id: &str, actor: &str) -> ApiResult<Replayed> {
        let job_id = parse_id(id)?;
        let before = dead_letters::summary(&self.db, job_id)
            .await?
            .ok_or_else(|| not_found("dead letter", id))?;
        let replayed = self.republish(job_id, actor).await?;
        // Built, not read back: a fast delivery may have resolved the row already.
        let after = DeadLetterSummary {
            status: "replaying".into(),
            replay_job_id: Some(replayed.replay_job_id),
            replayed_at: Some(Utc::now()),
            replayed_by: Some(actor.to_owned()),
            ..before.clone()
        };
        let mut conn = self.db.acquire().await?;
        audit::record(
            &mut conn,
            actor,
            "replay",
            "dead_letter",
            &job_id.to_string(),
            serde_json::to_value(&before).ok(),
            serde_json::to_value(&after).ok(),
        )
        .await?;
        Ok(replayed)
    }

    /// Publishes the dead job again as a new job and marks the dead letter `replaying`.
    ///
    /// The new job has a fresh id, origin `replay`, `replay_of` = the dead job and a new
    /// attempt budget; its request is the stored one, byte for byte, or for a render failure
    /// the stored event rendered by the rule as it is now. The dead letter is kept: the dlq
    /// service removes it when the new job is delivered; if that fails too, the new job's own
    /// dead letter arrives, linked by `replay_of`.
    ///
    /// Each replay is a span of its own: within the API request that asked for it (so the
    /// operator's trace reaches the service), or a new trace for a bulk replay's items.
    pub(super) async fn republish(&self, job_id: Uuid, actor: &str) -> ApiResult<Replayed> {
        let span = tracing::info_span!(
            "dlq.replay",
            otel.name = "replay dead letter",
            mih.dead_letter.job_id = %job_id,
            mih.actor = actor,
        );
        self.republish_now(job_id, actor).instrument(span).await
    }

    async fn republish_now(&self, job_id: Uuid, actor: &str) -> ApiResult<Replayed> {
        let row = dead_letters::replayable(&self.db, job_id)
            .await?
            .ok_or_else(|| not_found("dead letter", job_id.to_string()))?;
        let stored: Job = serde_json::from_value(row.job.clone()).map_err(|e| {
            ApiFailure::Internal(format!("stored dead letter {job_id} is unreadable: {e}"))
        })?;
        let job = if row.stage == "render" {
            self.rerender(&row, &stored).await?
        } else {
            let exists: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM services WHERE name = $1)")
                    .bind(&row.service)
                    .fetch_one(&self.db)
                    .await?;
            if !exists {
                return Err(ApiFailure::Conflict(format!(
                    "service `{}` no longer exists; create it again to replay, or delete the dead letter",
                    row.service
                )));
            }
            Job {
                id: JobId::new_v7(),
                origin: Origin::Replay,
                replay_of: Some(JobId(row.job_id)),
                created_at: Utc::now(),
                ..stored
            }
        };
        self.publish(&job).await?;
        dead_letters::mark_replayed(&self.db, row.job_id, job.id.0, actor).await?;
        metrics::counter!("mih_api_dead_letter_replays_total", "service" => job.service.to_string())
            .increment(1);
        Ok(Replayed {
            job_id: row.job_id,
            replay_job_id: job.id.0,
            service: job.service.to_string(),
        })
    }

    /// The job a render failure becomes with the rule as it is now.
    async fn rerender(&self, row: &Replayable, stored: &Job) -> ApiResult<Job> {
        let conflict = |why: String| ApiFailure::Conflict(why);
        let Some(rule_id) = stored.rule_id else {
            return Err(conflict(
                "the dead letter names no rule to render with".into(),
            ));
        };
        let Some(event) = &row.event else {
            return Err(conflict(
                "the dead letter carries no event to render again".into(),
            ));
        };
        let event: Event = serde_json::from_value(event.clone()).map_err(|e| {
            ApiFailure::Internal(format!(
                "stored event of dead letter {} is unreadable: {e}",
                row.job_id
            ))
        })?;
        let mut conn = self.db.acquire().await?;
        let rule = RuleRow::load(&mut conn, &rule_id.to_string(), false)
            .await?
            .ok_or_else(|| {
                conflict(format!(
                    "rule {rule_id} no longer exists; the event cannot be rendered again"
                ))
            })?;
        drop(conn);
        let (_, live) = rule.live()?;
        let compiled = CompiledRule::compile(Arc::new(live));
        let services = services::load_live(&self.db).await?;
        let explanation = compiled.explain(&event, &services);
        if let Some(error) = explanation.render_error {
            return Err(ApiFailure::invalid(
                "rule",
                format!("the rule still cannot render the request: {error}"),
            ));
        }
        let Some(request) = explanation.request else {
            let why = explanation.checks.iter().find(|c| !c.passed).map_or_else(
                || "the rule no longer matches".to_owned(),
                |c| c.detail.clone(),
            );
            return Err(conflict(format!(
                "rule `{}` no longer takes this event: {why}",
                rule.name
            )));
        };
        Ok(Job {
            id: JobId::new_v7(),
            service: compiled.live.service.clone(),
            request,
            ordering_key: explanation.ordering_key,
            origin: Origin::Replay,
            replay_of: Some(JobId(row.job_id)),
            created_at: Utc::now(),
            ..stored.clone()
        })
    }

    /// Publishes a job to its service's subject in its partition and waits until JetStream stored it.
    async fn publish(&self, job: &Job) -> ApiResult<()> {
        let unavailable = |e: &dyn std::fmt::Display| {
            ApiFailure::Unavailable(format!("cannot queue the replay: {e}"))
        };
        let payload = messages::encode(job).map_err(|e| ApiFailure::Internal(e.to_string()))?;
        let subject = self.names.job_subject_for(job, self.partitions);
        let span = telemetry::publish_span(&subject, 1);
        let mut headers = HeaderMap::new();
        span.in_scope(|| telemetry::inject_current(&mut headers));
        if let Some(event) = job.event_id {
            headers.insert("Mih-Event-Id", event.to_string().as_str());
        }
        if let Some(rule) = job.rule_id {
            headers.insert("Mih-Rule-Id", rule.to_string().as_str());
        }
        let message = PublishMessage::build()
            .payload(payload)
            .headers(headers)
            .message_id(job.id.to_string());
        async {
            self.js
                .send_publish(subject, message)
                .await
                .map_err(|e| unavailable(&e))?
                .await
                .map_err(|e| unavailable(&e))
        }
        .instrument(span)
        .await?;
        Ok(())
    }

    /// Deletes one dead letter, with an audit entry.
    pub async fn delete(&self, id: &str, actor: &str) -> ApiResult<()> {
        let job_id = parse_id(id)?;
        let mut tx = self.db.begin().await?;
        let before = dead_letters::delete(&mut tx, job_id)
            .await?
            .ok_or_else(|| not_found("dead letter", id))?;
        audit::record(
            &mut tx,
            actor,
            "delete",
            "dead_letter",
            &job_id.to_string(),
            serde_json::to_value(&before).ok(),
            None,
        )
        .await?;
        tx.commit().await?;
        metrics::counter!("mih_api_dead_letters_deleted_total").increment(1);
        self.release_held_keys(Some(job_id)).await;
        Ok(())
    }

    /// Deletes every dead letter matching `filter` (which must name a condition or `all`),
    /// with one audit entry naming the filter and the count.
    pub async fn delete_matching(&self, filter: DeadLetterFilter, actor: &str) -> ApiResult<u64> {
        let filter = filter.validated_for_bulk()?;
        let mut tx = self.db.begin().await?;
        let deleted = dead_letters::delete_matching(&mut tx, &filter).await?;
        audit::record(
            &mut tx,
            actor,
            "delete",
            "dead_letters",
            "filter",
            serde_json::to_value(&filter).ok(),
            Some(serde_json::json!({ "deleted": deleted })),
        )
        .await?;
        tx.commit().await?;
        metrics::counter!("mih_api_dead_letters_deleted_total").increment(deleted);
        if deleted > 0 {
            self.release_held_keys(None).await;
        }
        Ok(deleted)
    }
}
