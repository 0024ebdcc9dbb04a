//! Moodle's own vocabulary: event names as `\component\event\name`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest event name accepted; the original plugin stores them in a `char(255)` column.
pub const MAX_EVENT_NAME_LEN: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventNameError {
    #[error("must not be empty")]
    Empty,
    #[error("is {0} characters long; at most {MAX_EVENT_NAME_LEN} are allowed")]
    TooLong(usize),
    #[error(
        "must look like \\component\\event\\name (for example \\core\\event\\user_created), got `{0}`"
    )]
    NotMoodleForm(String),
}

/// A fully qualified Moodle event class name, normalised to Moodle's form with the leading
/// backslash (`\mod_quiz\event\attempt_submitted`). Shims that strip the backslash are accepted.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventName {
    full: String,
    /// Byte offset where the class part (after `\event\`) starts in `full`.
    class_start: usize,
    /// Byte length of the component (after the leading backslash).
    component_len: usize,
}

impl EventName {
    pub fn parse(raw: &str) -> Result<Self, EventNameError> {
        let trimmed = raw.strip_prefix('\\').unwrap_or(raw);
        if trimmed.is_empty() {
            return Err(EventNameError::Empty);
        }
        if trimmed.len() + 1 > MAX_EVENT_NAME_LEN {
            return Err(EventNameError::TooLong(trimmed.len() + 1));
        }
        let not_form = || EventNameError::NotMoodleForm(raw.to_owned());
        let mut parts = trimmed.split('\\');
        let component = parts.next().ok_or_else(not_form)?;
        if !is_frankenstyle(component) || parts.next() != Some("event") {
            return Err(not_form());
        }
        let mut class_parts = 0usize;
        for part in parts {
            if part.is_empty() || !part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(not_form());
            }
            class_parts += 1;
        }
        if class_parts == 0 {
            return Err(not_form());
        }
        let full = format!("\\{trimmed}");
        let class_start = 1 + component.len() + "\\event\\".len();
        Ok(Self {
            full,
            class_start,
            component_len: component.len(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// The Frankenstyle component (`core`, `mod_assign`, `local_integrationhub`).
    pub fn component(&self) -> &str {
        &self.full[1..1 + self.component_len]
    }

    /// The class path after `\event\` (`user_created`, or `sub\thing` for nested namespaces).
    pub fn class(&self) -> &str {
        &self.full[self.class_start..]
    }

    /// The component as a subject token; Frankenstyle names are already token-safe.
    pub fn component_token(&self) -> &str {
        self.component()
    }

    /// The class as one subject token: nested namespace separators become `__`.
    pub fn event_token(&self) -> String {
        self.class().replace('\\', "__")
    }
}

/// Frankenstyle component names: lowercase letter first, then lowercase letters, digits, `_`.
fn is_frankenstyle(component: &str) -> bool {
    let mut chars = component.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

impl fmt::Display for EventName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl Serialize for EventName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.full)
    }
}

impl<'de> Deserialize<'de> for EventName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        EventName::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_moodle_names_with_or_without_leading_backslash() {
        let with = EventName::parse(r"\core\event\user_created").expect("valid");
        let without = EventName::parse(r"core\event\user_created").expect("valid");
        assert_eq!(with, without);
        assert_eq!(with.as_str(), r"\core\event\user_created");
        assert_eq!(with.component(), "core");
        assert_eq!(with.class(), "user_created");
    }

    #[test]
    fn nested_class_namespaces_are_kept() {
        let name = EventName::parse(r"\local_x\event\sub\thing").expect("valid");
        assert_eq!(name.class(), r"sub\thing");
        assert_eq!(name.event_token(), "sub__thing");
    }

    #[test]
    fn refuses_what_is_not_moodle_form() {
        for bad in [
            "",
            "\\",
            "user_created",
            r"\core\user_created",
            r"\Core\event\x",
            r"\core\event\",
            r"\core\event\a.b",
            r"\core\event\a\\b",
            r"\core\events\x",
            r"\1core\event\x",
            "\\core\\event\\x y",
        ] {
            assert!(EventName::parse(bad).is_err(), "{bad:?} should be refused");
        }
        let long = format!(r"\core\event\{}", "a".repeat(300));
        assert!(matches!(
            EventName::parse(&long),
            Err(EventNameError::TooLong(_))
        ));
    }
}

/// Which events a rule listens to: every event, every event of one component, or one event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EventPattern {
    /// `*`
    All,
    /// `\mod_quiz\event\*`
    Component(String),
    /// `\core\event\user_created`
    Exact(EventName),
}

/// The event `local_mih` raises for each inbound message it pulls from the hub.
pub const INBOUND_EVENT: &str = r"\local_mih\event\webhook_received";

impl EventPattern {
    pub fn parse(raw: &str) -> Result<Self, EventNameError> {
        let trimmed = raw.trim();
        if trimmed == "*" {
            return Ok(EventPattern::All);
        }
        let body = trimmed.strip_prefix('\\').unwrap_or(trimmed);
        if let Some(component) = body.strip_suffix("\\event\\*") {
            return if is_frankenstyle(component) {
                Ok(EventPattern::Component(component.to_owned()))
            } else {
                Err(EventNameError::NotMoodleForm(raw.to_owned()))
            };
        }
        EventName::parse(trimmed).map(EventPattern::Exact)
    }

    /// Whether an event of this name is for the rule. The event the Moodle plugin raises for
    /// an inbound message ([`INBOUND_EVENT`]) is matched only by a pattern naming it: a
    /// catch-all rule would otherwise send every message a service sent back out again, to
    /// that service too — the loop the original plugin had.
    pub fn matches(&self, name: &EventName) -> bool {
        match self {
            EventPattern::All => name.as_str() != INBOUND_EVENT,
            EventPattern::Component(component) => {
                name.component() == component && name.as_str() != INBOUND_EVENT
            }
            EventPattern::Exact(exact) => exact == name,
        }
    }
}

impl fmt::Display for EventPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EventPattern::All => f.write_str("*"),
            EventPattern::Component(component) => write!(f, "\\{component}\\event\\*"),
            EventPattern::Exact(name) => name.fmt(f),
        }
    }
}

impl Serialize for EventPattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EventPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        EventPattern::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod pattern_tests {
    use super::*;

    #[test]
    fn patterns_parse_normalise_and_match() {
        let created = EventName::parse(r"\core\event\user_created").expect("valid");
        let quiz = EventName::parse(r"\mod_quiz\event\attempt_submitted").expect("valid");
        let all = EventPattern::parse("*").expect("valid");
        let quiz_any = EventPattern::parse(r"mod_quiz\event\*").expect("valid");
        let exact = EventPattern::parse(r"core\event\user_created").expect("valid");
        assert_eq!(quiz_any.to_string(), r"\mod_quiz\event\*");
        assert_eq!(exact.to_string(), r"\core\event\user_created");
        assert!(all.matches(&created) && all.matches(&quiz));
        assert!(quiz_any.matches(&quiz) && !quiz_any.matches(&created));
        assert!(exact.matches(&created) && !exact.matches(&quiz));
        for bad in ["", "**", r"\Mod\event\*", r"\core\*", "user_created"] {
            assert!(EventPattern::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn inbound_events_go_out_again_only_to_rules_that_name_them() {
        let inbound = EventName::parse(INBOUND_EVENT).expect("valid");
        let other = EventName::parse(r"\local_mih\event\something_else").expect("valid");
        let named = EventPattern::parse(r"\local_mih\event\webhook_received").expect("valid");
        let all = EventPattern::parse("*").expect("valid");
        let component = EventPattern::parse(r"\local_mih\event\*").expect("valid");
        assert!(named.matches(&inbound));
        assert!(!all.matches(&inbound) && !component.matches(&inbound));
        assert!(all.matches(&other) && component.matches(&other));
    }
}

/// Hostile event names: parsing never panics, and whatever it accepts is safe as NATS subject
/// tokens (no `.`, `*`, `>`, whitespace or empty token) and round-trips.
#[cfg(test)]
mod proptests {
    use proptest::prelude::*;

    use super::*;

    fn assert_subject_safe(name: &EventName) {
        for token in [name.component_token().to_owned(), name.event_token()] {
            assert!(!token.is_empty(), "{name}");
            assert!(
                token
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_'),
                "token `{token}` of {name} is not subject-safe"
            );
        }
        assert!(name.as_str().len() <= MAX_EVENT_NAME_LEN);
        assert_eq!(EventName::parse(name.as_str()).as_ref(), Ok(name));
    }

    #[test]
    fn nats_wildcards_dots_and_odd_characters_are_refused() {
        let long = format!(r"\core\event\{}", "a".repeat(100_000));
        let corpus = [
            r"\core\event\*",
            r"\core\event\>",
            r"\*\event\x",
            r"\>\event\x",
            r"\core.x\event\y",
            r"\core\event\a.b",
            r"\core\event\..",
            r"\core\event\a\..\b",
            r"\..\event\x",
            r"\core\event\x.>",
            r"\core\event\x y",
            "\\core\\event\\x\t",
            "\\core\\event\\x\u{0}",
            "\\core\\event\\x\n",
            "\\core\\event\\\u{feff}x",
            "\u{feff}\\core\\event\\x",
            "\\core\\event\\\u{0441}x",  // Cyrillic с
            "\\c\u{043e}re\\event\\x",   // Cyrillic о
            "\\core\\event\\x\u{ff0e}y", // fullwidth full stop
            r"\\core\event\x",
            r"\core\\event\x",
            r"\core\event\\",
            r"\core\event",
            r"core\event",
            "",
            "\\",
            &long,
        ];
        for raw in corpus {
            assert!(EventName::parse(raw).is_err(), "{raw:?} should be refused");
        }
        for raw in [r"\core\event\*", r"*\event\*", r"\core\event\>"] {
            assert!(
                !matches!(EventPattern::parse(raw), Ok(EventPattern::Exact(_))),
                "{raw}"
            );
        }
        // The longest name allowed is accepted, one more byte is not.
        let prefix = r"\core\event\";
        let longest = format!("{prefix}{}", "a".repeat(MAX_EVENT_NAME_LEN - prefix.len()));
        assert_subject_safe(&EventName::parse(&longest).expect("at the limit"));
        let over = format!("{longest}a");
        assert!(matches!(
            EventName::parse(&over),
            Err(EventNameError::TooLong(256))
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_text_parses_to_a_subject_safe_name_or_errors(raw in prop_oneof![
            ".{0,300}",
            r"\\?[a-z_*>.]{1,12}\\event\\[a-zA-Z0-9_.*> \\]{0,40}",
        ]) {
            if let Ok(name) = EventName::parse(&raw) {
                assert_subject_safe(&name);
            }
            let _ = EventPattern::parse(&raw);
        }

        #[test]
        fn moodle_names_round_trip(
            backslash in any::<bool>(),
            component in "[a-z][a-z0-9_]{0,30}",
            class in prop::collection::vec("[a-zA-Z0-9_]{1,20}", 1..4),
        ) {
            let raw = format!("{}{component}\\event\\{}", if backslash { "\\" } else { "" }, class.join("\\"));
            let name = EventName::parse(&raw).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(name.component(), component.as_str());
            prop_assert_eq!(name.class(), class.join("\\"));
            assert_subject_safe(&name);
            let json = serde_json::to_string(&name).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let back: EventName = serde_json::from_str(&json).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(back, name);
        }
    }
}
