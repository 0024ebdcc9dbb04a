//! The live configuration: what api materialises into the `<ns>_config` KV bucket after every
//! committed change, and what ingest, matcher and dispatcher read from it. Secrets stay sealed
//! (see [`crate::crypto`]); readers open them in memory.

mod model;
mod snapshot;

pub use model::{
    AfterDeadLetter, AmqpTransport, Auth, BreakerPolicy, LiveInbound, LiveRule, LiveService,
    LiveSource, RestTransport, RetryPolicy, RuleTarget, SealedSigningSecret, SoapTransport,
    SoapVersion, Transport,
};
pub use snapshot::{ConfigSnapshot, LiveConfig, REVISION_GAUGE, SnapshotError};

/// KV key of a source.
pub fn source_key(id: &crate::names::SourceId) -> String {
    format!("source.{id}")
}

/// KV key of a service.
pub fn service_key(name: &crate::names::ServiceSlug) -> String {
    format!("service.{name}")
}

/// KV key of a rule.
pub fn rule_key(id: &crate::messages::RuleId) -> String {
    format!("rule.{id}")
}
