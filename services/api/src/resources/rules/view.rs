//! A rule as the API shows it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use mih_shared::live::RuleTarget;

use super::store::RuleRow;

/// Where the request goes; its kind must be the kind of the rule's service. Paths and routing
/// keys may be templates.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum TargetInput {
    Rest {
        /// GET, POST (default), PUT, PATCH or DELETE.
        #[schema(example = "POST")]
        method: Option<String>,
        /// Joined to the service's base URL (default `/`).
        path: Option<String>,
    },
    Amqp {
        /// Default: the service's routing key.
        routing_key: Option<String>,
        /// Default: the service's exchange.
        exchange: Option<String>,
    },
    Soap {
        operation: String,
    },
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RuleView {
    pub id: Uuid,
    pub name: String,
    pub description: String,
    pub enabled: bool,
    pub sources: Vec<String>,
    pub events: Vec<String>,
    pub condition: Option<String>,
    pub service: String,
    pub target: TargetInput,
    pub headers: BTreeMap<String, String>,
    pub body: Option<String>,
    pub content_type: String,
    pub ordering_key: Option<String>,
    /// `skip` or `hold`: what a key's later jobs do when one of its jobs is dead-lettered.
    pub ordering_on_dead_letter: String,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A stored target as a client would write it.
pub(super) fn target_view(target: &RuleTarget) -> TargetInput {
    match target {
        RuleTarget::Rest { method, path } => TargetInput::Rest {
            method: Some(method.as_str().to_owned()),
            path: Some(path.clone()),
        },
        RuleTarget::Amqp {
            routing_key,
            exchange,
        } => TargetInput::Amqp {
            routing_key: routing_key.clone(),
            exchange: exchange.clone(),
        },
        RuleTarget::Soap { operation } => TargetInput::Soap {
            operation: operation.clone(),
        },
    }
}

impl From<&RuleRow> for RuleView {
    fn from(row: &RuleRow) -> Self {
        RuleView {
            id: row.id,
            name: row.name.clone(),
            description: row.description.clone(),
            enabled: row.enabled,
            sources: row.sources.clone(),
            events: row.events.clone(),
            condition: row.condition.clone(),
            service: row.service.clone(),
            target: target_view(&row.target.0),
            headers: row.headers.0.clone(),
            body: row.body.clone(),
            content_type: row.content_type.clone(),
            ordering_key: row.ordering_key.clone(),
            ordering_on_dead_letter: row.ordering_on_dead_letter.clone(),
            version: row.version,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}
