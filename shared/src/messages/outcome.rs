use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{EventId, JobId, Origin, Request, RuleId, Version};
use crate::names::{ServiceSlug, SourceId};

/// The result of one delivery attempt, published to `<NS>_RESULTS`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub v: Version<1>,
    pub job_id: JobId,
    pub service: ServiceSlug,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub started_at: DateTime<Utc>,
    pub duration_ms: u64,
    pub status: OutcomeStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_status: Option<u16>,
    /// The start of the response body, bounded so one chatty target cannot bloat the log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_excerpt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<EventId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_id: Option<RuleId>,
    pub origin: Origin,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eventname: Option<String>,
    /// For a replay: the dead job it retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_of: Option<JobId>,
    /// The request as sent; carried by the first attempt's outcome only (the job's request
    /// does not change between attempts), so the log can show it without bloating RESULTS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<Request>,
    /// For a failure that will be retried: when the next attempt is due (the delay the
    /// dispatcher drew — backoff with full jitter — or the target's `Retry-After`). The queue
    /// shows it; nothing else can know it, since the delay is random.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeStatus {
    Delivered,
    FailedRetryable,
    FailedPermanent,
    Timeout,
    CircuitOpen,
}

impl OutcomeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeStatus::Delivered => "delivered",
            OutcomeStatus::FailedRetryable => "failed_retryable",
            OutcomeStatus::FailedPermanent => "failed_permanent",
            OutcomeStatus::Timeout => "timeout",
            OutcomeStatus::CircuitOpen => "circuit_open",
        }
    }
}
