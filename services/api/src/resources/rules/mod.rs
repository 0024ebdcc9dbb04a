//! Rules: which events go to which service, and how each request is built. `input` checks what
//! a client writes, `store` is the table, `view` what the API shows, `handlers` the HTTP
//! operations, `references` what rules ask of the sources and services they name; this file
//! makes the pieces a [`ConfigRow`].

pub(crate) mod handlers;
mod input;
mod references;
mod store;
mod view;

pub(crate) use input::{RuleFilter, RuleInput, apply};
pub use store::{RuleRow, load_all};

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use mih_shared::live::{self, AfterDeadLetter, LiveRule};
use mih_shared::messages::{RuleId, Version};
use mih_shared::moodle::EventPattern;

use crate::auth::Role;
use crate::error::{ApiFailure, ApiResult};
use crate::resources::config_row::ConfigRow;
use crate::resources::crud::Resource;
use crate::state::AppState;
use view::RuleView;

impl Resource for RuleRow {
    const KIND: &'static str = "rule";
    const READ_ROLE: Role = Role::Viewer;
    const WRITE_ROLE: Role = Role::Operator;
    type View = RuleView;
    type Filter = RuleFilter;

    fn id(&self) -> String {
        self.id.to_string()
    }

    fn version(&self) -> i64 {
        self.version
    }

    fn view(&self) -> ApiResult<RuleView> {
        Ok(RuleView::from(self))
    }

    /// A malformed id names no rule.
    async fn load(db: &mut PgConnection, id: &str, for_update: bool) -> ApiResult<Option<Self>> {
        match Uuid::parse_str(id) {
            Ok(uuid) => Ok(store::load(db, uuid, for_update).await?),
            Err(_) => Ok(None),
        }
    }

    async fn page(
        db: &PgPool,
        filter: &RuleFilter,
        after: Option<&str>,
        limit: i64,
    ) -> ApiResult<Vec<Self>> {
        let after =
            match after {
                Some(raw) => Some(Uuid::parse_str(raw).map_err(|_| {
                    ApiFailure::invalid("cursor", "is not a cursor this API issued")
                })?),
                None => None,
            };
        let event = match &filter.event {
            Some(raw) => Some(
                EventPattern::parse(raw)
                    .map_err(|e| ApiFailure::invalid("event", e.to_string()))?
                    .to_string(),
            ),
            None => None,
        };
        let wanted = store::Wanted {
            service: filter.service.as_deref(),
            enabled: filter.enabled,
            source: filter.source.as_deref(),
            event: event.as_deref(),
            q: filter.q.as_deref(),
        };
        Ok(store::page(db, &wanted, after, limit).await?)
    }
}

impl ConfigRow for RuleRow {
    type Input = RuleInput;
    type Live = LiveRule;

    fn live(&self) -> ApiResult<(String, LiveRule)> {
        let internal = |what: &str, e: &dyn std::fmt::Display| {
            ApiFailure::Internal(format!("stored rule {}: {what}: {e}", self.id))
        };
        let live = LiveRule {
            v: Version,
            id: RuleId(self.id),
            name: self.name.clone(),
            description: self.description.clone(),
            enabled: self.enabled,
            sources: self
                .sources
                .iter()
                .map(|s| s.parse().map_err(|e| internal("source", &e)))
                .collect::<Result<_, _>>()?,
            events: self
                .events
                .iter()
                .map(|e| EventPattern::parse(e).map_err(|err| internal("event", &err)))
                .collect::<Result<_, _>>()?,
            condition: self.condition.clone(),
            service: self.service.parse().map_err(|e| internal("service", &e))?,
            target: self.target.0.clone(),
            headers: self.headers.0.clone(),
            body: self.body.clone(),
            content_type: self.content_type.clone(),
            ordering_key: self.ordering_key.clone(),
            ordering_on_dead_letter: AfterDeadLetter::parse(&self.ordering_on_dead_letter)
                .ok_or_else(|| {
                    internal("ordering_on_dead_letter", &self.ordering_on_dead_letter)
                })?,
            version: self.version,
        };
        Ok((live::rule_key(&live.id), live))
    }

    fn with_enabled(&self, enabled: bool) -> Self {
        RuleRow {
            enabled,
            ..self.clone()
        }
    }

    fn input_version(input: &RuleInput) -> Option<i64> {
        input.version
    }

    async fn apply(
        _state: &AppState,
        db: &mut PgConnection,
        current: Option<&Self>,
        input: RuleInput,
    ) -> ApiResult<Self> {
        input::apply(db, current, input).await
    }

    async fn save(db: &mut PgConnection, row: &Self, insert: bool) -> ApiResult<Self> {
        Ok(store::save(db, row, insert).await?)
    }

    async fn delete(db: &mut PgConnection, row: &Self) -> ApiResult<()> {
        Ok(store::delete(db, row.id).await?)
    }
}
