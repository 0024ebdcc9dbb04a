use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{EventId, JobId, RuleId, Version};
use crate::names::{ServiceSlug, SourceId};

/// One delivery to do, published to `<NS>_JOBS` on the subject of its service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub v: Version<1>,
    pub id: JobId,
    /// The event that caused the job; absent for facade calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<EventId>,
    /// The rule that rendered the job; absent for facade calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_id: Option<RuleId>,
    pub service: ServiceSlug,
    /// The request exactly as it will be sent, already rendered.
    pub request: Request,
    pub origin: Origin,
    pub created_at: DateTime<Utc>,
    /// For replays: the job whose dead letter this one retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_of: Option<JobId>,
    /// Jobs with the same key are delivered in order (rendered from the rule's template).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering_key: Option<String>,
    /// When this job is dead-lettered, the key's later jobs wait until the dead letter is
    /// replayed and delivered, or deleted (the rule's `ordering_on_dead_letter: hold`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hold_key: bool,
    /// The Moodle site the event came from (for searching the delivery log and dead letters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceId>,
    /// The Moodle event's name, e.g. `\core\event\user_created`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eventname: Option<String>,
}

impl Job {
    /// The key the job is delivered in order by, if it has one: an empty rendered key orders
    /// nothing.
    pub fn ordering_key(&self) -> Option<&str> {
        self.ordering_key.as_deref().filter(|key| !key.is_empty())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    Rule,
    Facade,
    Replay,
    Backfill,
}

/// A rendered request for one of the three transports. Read by `super::request_tag`, which
/// takes the tag where it is written, first.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "transport", rename_all = "lowercase")]
pub enum Request {
    Http(HttpRequest),
    Amqp(AmqpRequest),
    Soap(SoapRequest),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpRequest {
    pub method: HttpMethod,
    /// Joined to the service's base URL.
    pub path: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<Header>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl HttpMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Post => "POST",
            HttpMethod::Put => "PUT",
            HttpMethod::Patch => "PATCH",
            HttpMethod::Delete => "DELETE",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AmqpRequest {
    /// Overrides the service's exchange; `None` uses the service's (or the default exchange).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange: Option<String>,
    pub routing_key: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<Header>,
    pub body: String,
    pub content_type: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SoapRequest {
    pub operation: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<Header>,
    /// The XML placed inside `<soap:Body>`.
    pub body: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub name: String,
    pub value: String,
}
