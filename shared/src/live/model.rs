use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::crypto::Sealed;
use crate::messages::{HttpMethod, RuleId, Version};
use crate::moodle::EventPattern;
use crate::names::{ServiceSlug, SourceId};

/// A Moodle site allowed to send events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveSource {
    pub v: Version<1>,
    pub id: SourceId,
    pub name: String,
    pub enabled: bool,
    /// Current signing secrets; during a rotation the old one carries an `expires_at`.
    pub signing_secrets: Vec<SealedSigningSecret>,
    /// SHA-256 (hex) of the accepted bearer tokens.
    pub bearer_token_hashes: Vec<String>,
    /// Increases with every change; a stale writer never overwrites a newer value.
    pub version: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SealedSigningSecret {
    pub id: String,
    pub secret: Sealed,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

impl SealedSigningSecret {
    pub fn active_at(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_none_or(|expiry| expiry > now)
    }
}

/// An external system mih delivers to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveService {
    pub v: Version<1>,
    pub name: ServiceSlug,
    pub description: String,
    pub enabled: bool,
    pub transport: Transport,
    pub auth: Auth,
    /// Signs each delivery the Standard Webhooks way, independent of `auth`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_secret: Option<Sealed>,
    /// Static headers sent with every request.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub timeout_ms: u64,
    pub retry: RetryPolicy,
    pub breaker: BreakerPolicy,
    /// Most deliveries in flight at once.
    pub concurrency: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_per_sec: Option<u32>,
    /// A job older than this is dead-lettered instead of attempted.
    pub max_job_age_ms: u64,
    /// Messages the service sends back (webhooks to ingest, replies on an AMQP response
    /// queue), and the Moodle site they go to; none: the service sends nothing back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound: Option<LiveInbound>,
    pub version: i64,
}

/// How a service's inbound messages are accepted. There is no open mode: a webhook must be
/// signed with one of `signing_secrets` or carry one of the bearer tokens, credentials the
/// service holds apart from the ones mih uses to reach it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveInbound {
    /// The Moodle site whose plugin receives the messages.
    pub source: SourceId,
    pub enabled: bool,
    /// Standard Webhooks secrets; during a rotation the old one carries an `expires_at`.
    #[serde(default)]
    pub signing_secrets: Vec<SealedSigningSecret>,
    /// SHA-256 (hex) of the accepted bearer tokens.
    #[serde(default)]
    pub bearer_token_hashes: Vec<String>,
    /// Webhooks accepted per second (a token bucket of `burst`), per service.
    pub rate_limit_per_sec: u32,
    pub burst: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Transport {
    Rest(RestTransport),
    Amqp(AmqpTransport),
    Soap(SoapTransport),
}

impl Transport {
    pub fn kind(&self) -> &'static str {
        match self {
            Transport::Rest(_) => "rest",
            Transport::Amqp(_) => "amqp",
            Transport::Soap(_) => "soap",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestTransport {
    pub base_url: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AmqpTransport {
    pub host: String,
    pub port: u16,
    pub vhost: String,
    pub username: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Sealed>,
    /// amqps, with the server certificate verified.
    pub tls: bool,
    /// Empty: the default exchange (routing key = queue name).
    pub exchange: String,
    /// Used when a rule gives no routing key.
    pub routing_key: String,
    /// A durable queue to declare before publishing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_declare: Option<String>,
    /// A queue the service puts its replies in: consumed into `<NS>_INBOUND` for the
    /// service's inbound source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_queue: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SoapTransport {
    pub endpoint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wsdl_url: Option<String>,
    pub version: SoapVersion,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Basic auth's credentials go in a WS-Security UsernameToken inside the envelope instead
    /// of an HTTP `Authorization` header.
    #[serde(default)]
    pub ws_security: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SoapVersion {
    #[serde(rename = "1.1")]
    V11,
    #[serde(rename = "1.2")]
    V12,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Auth {
    None,
    Bearer { token: Sealed },
    ApiKey { header: String, key: Sealed },
    Basic { username: String, password: Sealed },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    pub backoff_base_ms: u64,
    pub backoff_cap_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakerPolicy {
    /// Consecutive failures that open the circuit.
    pub failure_threshold: u32,
    /// How long it stays open before admitting probes.
    pub cooldown_ms: u64,
    /// Probes admitted while half-open.
    pub half_open_probes: u32,
}

/// Which events go to which service, and how the request is built.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveRule {
    pub v: Version<1>,
    pub id: RuleId,
    pub name: String,
    pub description: String,
    pub enabled: bool,
    /// Sources whose events the rule takes; empty means every source.
    pub sources: Vec<SourceId>,
    pub events: Vec<EventPattern>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    pub service: ServiceSlug,
    pub target: RuleTarget,
    /// Header name → template.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Body template; `None` sends the event as Moodle gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    pub content_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering_key: Option<String>,
    /// What the key's later jobs do when one of its jobs is dead-lettered.
    #[serde(default, skip_serializing_if = "AfterDeadLetter::is_skip")]
    pub ordering_on_dead_letter: AfterDeadLetter,
    pub version: i64,
}

/// What an ordering key's later jobs do when one of its jobs is dead-lettered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AfterDeadLetter {
    /// Go on with the next job of the key.
    #[default]
    Skip,
    /// Wait until the dead letter is replayed and delivered, or deleted.
    Hold,
}

impl AfterDeadLetter {
    pub fn is_skip(&self) -> bool {
        *self == AfterDeadLetter::Skip
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AfterDeadLetter::Skip => "skip",
            AfterDeadLetter::Hold => "hold",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "skip" => Some(AfterDeadLetter::Skip),
            "hold" => Some(AfterDeadLetter::Hold),
            _ => None,
        }
    }
}

/// Where a rule's request goes, by the kind of its service. Paths and routing keys are templates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum RuleTarget {
    Rest {
        method: HttpMethod,
        path: String,
    },
    Amqp {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        routing_key: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exchange: Option<String>,
    },
    Soap {
        operation: String,
    },
}

impl RuleTarget {
    pub fn kind(&self) -> &'static str {
        match self {
            RuleTarget::Rest { .. } => "rest",
            RuleTarget::Amqp { .. } => "amqp",
            RuleTarget::Soap { .. } => "soap",
        }
    }
}
