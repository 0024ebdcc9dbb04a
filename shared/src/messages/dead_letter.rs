use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Event, Job, Outcome, Version};

/// A job that will not be delivered without help, published to `<NS>_DLQ`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub v: Version<1>,
    /// The job exactly as it was, so a replay sends the same request.
    pub job: Job,
    /// The last attempt's outcome; absent when the job never ran (too old, service deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_outcome: Option<Outcome>,
    pub attempts: u32,
    pub reason: String,
    pub dead_lettered_at: DateTime<Utc>,
    /// Where the job failed. A render failure never reached the target: its `job` carries the
    /// rule's unrendered target, and `event` what to render again once the rule is fixed.
    #[serde(default)]
    pub stage: FailureStage,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<Event>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureStage {
    /// The matcher could not render the rule's request for the event.
    Render,
    /// The dispatcher could not deliver it.
    #[default]
    Delivery,
}
