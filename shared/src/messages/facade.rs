use serde::{Deserialize, Serialize};

use super::{Header, HttpMethod, Version};
use crate::names::ServiceSlug;

/// A synchronous call to a service through the facade, sent by api to the dispatchers on
/// `<ns>.rpc.request`. For a REST service `path` is joined to its base URL; for SOAP it is the
/// operation, for AMQP the routing key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FacadeRequest {
    pub v: Version<1>,
    pub service: ServiceSlug,
    pub method: HttpMethod,
    pub path: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<Header>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// The whole call, retries included, must end within this.
    pub timeout_ms: u64,
    /// The caller, for the delivery log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub caller: Option<String>,
    /// The id to log the call under (its `Idempotency-Key`), chosen by the caller so it can
    /// look the call up even when no answer reaches it. A new one when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<super::JobId>,
}

/// The answer of a facade call: always this shape, whatever happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FacadeResponse {
    pub v: Version<1>,
    /// The target answered with success (2xx, no SOAP fault, AMQP confirm).
    pub ok: bool,
    /// The target's HTTP status of the last attempt, if it answered.
    #[serde(default)]
    pub status: Option<u16>,
    #[serde(default)]
    pub headers: Vec<Header>,
    #[serde(default)]
    pub body: Option<String>,
    /// The target's body was longer than `body` (cut at the facade's body limit).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub body_truncated: bool,
    pub attempts: u32,
    pub duration_ms: u64,
    #[serde(default)]
    pub error: Option<String>,
    /// The service's circuit: `closed`, `open` (nothing was sent) or `half_open`.
    pub circuit: String,
    /// The job id the attempts were logged under (`Idempotency-Key` at the target).
    #[serde(default)]
    pub call_id: Option<String>,
    /// When nothing was sent: when the service may be called again (the circuit's next probe,
    /// the end of a pause the service asked for with 429, the next rate-limit slot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<chrono::DateTime<chrono::Utc>>,
}
