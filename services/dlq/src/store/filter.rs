//! Which dead letters a list, a bulk replay or a bulk delete is about: parsed, validated and
//! turned into SQL in one place, for the API and the CLI alike.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, QueryBuilder};
use utoipa::ToSchema;
use uuid::Uuid;

use mih_shared::error::FieldError;
use mih_shared::moodle::EventName;
use mih_shared::names::{ServiceSlug, SourceId};

/// Longest text search accepted.
const MAX_QUERY: usize = 200;

/// Why a filter was refused: every bad field, named (the API answers 422 with them).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the filter is invalid: {}", FieldError::summary(.errors))]
pub struct InvalidFilter {
    pub errors: Vec<FieldError>,
}

/// The problems found so far, field by field.
#[derive(Debug, Default)]
struct Problems(Vec<FieldError>);

impl Problems {
    fn add(&mut self, field: &str, message: impl Into<String>) {
        self.0.push(FieldError::new(None, Some(field), message));
    }

    fn check(&mut self, ok: bool, field: &str, message: impl Into<String>) {
        if !ok {
            self.add(field, message);
        }
    }

    fn into_result(self) -> Result<(), InvalidFilter> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(InvalidFilter { errors: self.0 })
        }
    }
}

/// A set of dead letters. Every given field must match; text fields match exactly except `q`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterFilter {
    /// The service the job was for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The rule that rendered the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule_id: Option<Uuid>,
    /// The Moodle event's name, e.g. `\core\event\user_created` (the leading `\` is optional).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eventname: Option<String>,
    /// The source (Moodle site) the event came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// `render` (the request could not be rendered) or `delivery` (the target refused it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// `dead`, or `replaying` (replayed, waiting for the replay to be delivered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Case-insensitive text searched in the reason and in the last attempt's error and
    /// response excerpt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub q: Option<String>,
    /// RFC 3339; dead-lettered at or after this instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<DateTime<Utc>>,
    /// RFC 3339; dead-lettered at or before this instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<DateTime<Utc>>,
    /// Bulk replay and delete only: `true` selects every dead letter. Required when no other
    /// field is given, so an empty filter never acts on everything by accident.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all: bool,
}

impl DeadLetterFilter {
    /// Checks every field (naming each bad one) and returns the filter normalised: event
    /// names with their leading `\`, blank text as absent.
    pub fn validated(self) -> Result<DeadLetterFilter, InvalidFilter> {
        let mut problems = Problems::default();
        let blank_is_none =
            |value: Option<String>| value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let service = blank_is_none(self.service);
        if let Some(service) = &service
            && let Err(e) = ServiceSlug::parse(service.clone())
        {
            problems.add("service", e.to_string());
        }
        let source = blank_is_none(self.source);
        if let Some(source) = &source
            && let Err(e) = SourceId::parse(source.clone())
        {
            problems.add("source", e.to_string());
        }
        let eventname = match blank_is_none(self.eventname) {
            Some(raw) => match EventName::parse(&raw) {
                Ok(name) => Some(name.as_str().to_owned()),
                Err(e) => {
                    problems.add("eventname", e.to_string());
                    None
                }
            },
            None => None,
        };
        let stage = blank_is_none(self.stage);
        if let Some(stage) = &stage {
            problems.check(
                ["render", "delivery"].contains(&stage.as_str()),
                "stage",
                "must be render or delivery",
            );
        }
        let status = blank_is_none(self.status);
        if let Some(status) = &status {
            problems.check(
                ["dead", "replaying"].contains(&status.as_str()),
                "status",
                "must be dead or replaying",
            );
        }
        let q = blank_is_none(self.q);
        if let Some(q) = &q {
            problems.check(
                q.chars().count() <= MAX_QUERY,
                "q",
                format!("must be at most {MAX_QUERY} characters long"),
            );
        }
        if let (Some(from), Some(to)) = (self.from, self.to) {
            problems.check(from <= to, "to", "must not be before from");
        }
        let filter = DeadLetterFilter {
            service,
            rule_id: self.rule_id,
            eventname,
            source,
            stage,
            status,
            q,
            from: self.from,
            to: self.to,
            all: self.all,
        };
        problems.check(
            !(filter.all && filter.has_conditions()),
            "all",
            "selects every dead letter; do not combine it with other filters",
        );
        problems.into_result()?;
        Ok(filter)
    }

    /// For acting on a set: validated, and either some condition or an explicit `all`.
    pub fn validated_for_bulk(self) -> Result<DeadLetterFilter, InvalidFilter> {
        let filter = self.validated()?;
        let mut problems = Problems::default();
        problems.check(
            filter.all || filter.has_conditions(),
            "all",
            "give at least one filter, or all: true to select every dead letter",
        );
        problems.into_result()?;
        Ok(filter)
    }

    /// Whether any field narrows the set.
    pub fn has_conditions(&self) -> bool {
        let DeadLetterFilter {
            service,
            rule_id,
            eventname,
            source,
            stage,
            status,
            q,
            from,
            to,
            all: _,
        } = self;
        service.is_some()
            || rule_id.is_some()
            || eventname.is_some()
            || source.is_some()
            || stage.is_some()
            || status.is_some()
            || q.is_some()
            || from.is_some()
            || to.is_some()
    }

    /// Appends ` AND …` for every condition, on the table aliased `d`. Values are bound, never
    /// spliced into the SQL.
    pub(crate) fn push_conditions(&self, sql: &mut QueryBuilder<Postgres>) {
        let mut equals = |column: &str, value: &Option<String>| {
            if let Some(value) = value {
                sql.push(format_args!(" AND d.{column} = "))
                    .push_bind(value.clone());
            }
        };
        equals("service", &self.service);
        equals("eventname", &self.eventname);
        equals("source", &self.source);
        equals("stage", &self.stage);
        equals("status", &self.status);
        if let Some(rule_id) = self.rule_id {
            sql.push(" AND d.rule_id = ").push_bind(rule_id);
        }
        if let Some(from) = self.from {
            sql.push(" AND d.dead_lettered_at >= ").push_bind(from);
        }
        if let Some(to) = self.to {
            sql.push(" AND d.dead_lettered_at <= ").push_bind(to);
        }
        if let Some(q) = &self.q {
            let pattern = format!("%{}%", like_escaped(q));
            sql.push(" AND (d.reason ILIKE ")
                .push_bind(pattern.clone())
                .push(" OR d.last_outcome->>'error' ILIKE ")
                .push_bind(pattern.clone())
                .push(" OR d.last_outcome->>'response_excerpt' ILIKE ")
                .push_bind(pattern)
                .push(")");
        }
    }
}

/// `text` matched literally by LIKE (whose escape character is `\` by default).
fn like_escaped(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '\\' | '%' | '_') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(result: Result<DeadLetterFilter, InvalidFilter>) -> Vec<String> {
        match result {
            Err(invalid) => invalid.errors.into_iter().filter_map(|e| e.field).collect(),
            Ok(filter) => panic!("expected a refusal, got {filter:?}"),
        }
    }

    #[test]
    fn every_bad_field_is_named() {
        let filter = DeadLetterFilter {
            service: Some("Not A Slug".into()),
            eventname: Some("user_created".into()),
            stage: Some("sending".into()),
            status: Some("gone".into()),
            from: Some(Utc::now()),
            to: Some(Utc::now() - chrono::Duration::hours(1)),
            ..Default::default()
        };
        assert_eq!(
            fields(filter.validated()),
            ["service", "eventname", "stage", "status", "to"]
        );
    }

    #[test]
    fn bulk_needs_a_condition_or_an_explicit_all() {
        assert_eq!(
            fields(DeadLetterFilter::default().validated_for_bulk()),
            ["all"]
        );
        let all = DeadLetterFilter {
            all: true,
            ..Default::default()
        };
        assert!(all.validated_for_bulk().is_ok());
        let both = DeadLetterFilter {
            all: true,
            service: Some("sis".into()),
            ..Default::default()
        };
        assert_eq!(fields(both.validated_for_bulk()), ["all"]);
        let blank = DeadLetterFilter {
            q: Some("  ".into()),
            ..Default::default()
        };
        assert_eq!(
            fields(blank.validated_for_bulk()),
            ["all"],
            "blank is absent"
        );
    }

    #[test]
    fn event_names_are_normalised_and_search_text_is_literal() {
        let filter = DeadLetterFilter {
            eventname: Some("core\\event\\user_created".into()),
            ..Default::default()
        }
        .validated()
        .expect("valid");
        assert_eq!(
            filter.eventname.as_deref(),
            Some("\\core\\event\\user_created")
        );
        assert_eq!(like_escaped("50%_a\\b"), "50\\%\\_a\\\\b");
    }

    #[test]
    fn conditions_are_bound_not_spliced() {
        let filter = DeadLetterFilter {
            service: Some("sis".into()),
            q: Some("'; DROP TABLE x".into()),
            ..Default::default()
        };
        let mut sql = QueryBuilder::<Postgres>::new("SELECT 1 FROM dead_letters d WHERE TRUE");
        filter.push_conditions(&mut sql);
        let text = sql.sql().as_str().to_owned();
        assert!(text.contains("d.service = $1"), "{text}");
        assert!(!text.contains("DROP"), "{text}");
    }
}
