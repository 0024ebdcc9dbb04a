//! Rule conditions in CEL, the Common Expression Language (<https://cel.dev>): a small,
//! side-effect-free, well-specified language also used by Kubernetes and Envoy.
//!
//! Variables are the event's top-level fields (`courseid`, `crud`, `other`, the shim's extras)
//! and `event` (`event.source`, `event.id`, `event.received_at`). Ids Moodle sends as numeric
//! strings are numbers here, so `userid == 27` holds for `"userid": "27"`. Examples:
//!
//! ```text
//! courseid == 12 && other.enrol in ["manual", "self"]
//! has(other.grade) && other.grade >= 50.0
//! !(crud == "r") || eventname.startsWith("\\mod_quiz\\")
//! event.source == "moodle-prod" && other.username.contains("@example.org")
//! ```
//!
//! A field that is missing makes the condition an error, reported by preview and counted;
//! the rule then does not match. Guard optional fields with `has(…)`.

use std::collections::HashMap;
use std::sync::Arc;

use cel::{Context, Program, Value};
use serde_json::Map;

/// A condition that does not parse, with where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (line {line}, column {column})")]
pub struct ConditionError {
    pub message: String,
    pub line: usize,
    pub column: usize,
}

#[derive(Debug)]
pub struct Condition {
    program: Program,
}

impl Condition {
    pub fn compile(source: &str) -> Result<Self, ConditionError> {
        Program::compile(source)
            .map(|program| Self { program })
            .map_err(|errors| {
                let first = errors.errors.first();
                let (line, column) = first.map_or((1, 1), |e| e.pos);
                ConditionError {
                    message: first.map_or_else(|| errors.to_string(), |e| e.msg.clone()),
                    line: usize::try_from(line).unwrap_or(1).max(1),
                    column: usize::try_from(column).unwrap_or(0) + 1,
                }
            })
    }

    /// True when the condition holds; an error when it cannot be decided for this event.
    pub fn evaluate(&self, variables: &Context<'_, '_>) -> Result<bool, String> {
        match self.program.execute(variables) {
            Ok(Value::Bool(result)) => Ok(result),
            Ok(other) => Err(format!("the condition gave {other:?}, not true or false")),
            Err(error) => Err(error.to_string()),
        }
    }
}

/// The variables of one event, in a scope of the shared root context (which holds the
/// standard functions, built once).
pub fn variables<'p>(
    root: &'p Context<'static, 'static>,
    fields: &Map<String, serde_json::Value>,
) -> Context<'p, 'static> {
    let mut scope = root.new_inner_scope();
    for (name, value) in fields {
        // A plain CEL value always converts; a failure would only skip a variable.
        let _ = scope.add_variable(name.as_str(), to_cel(value));
    }
    scope
}

/// JSON as CEL sees it. Integers are CEL `int` whenever they fit: serde's default would make
/// every positive number a `uint`, and CEL refuses arithmetic mixing the two, so
/// `courseid % 2 == 0` would never hold.
fn to_cel(value: &serde_json::Value) -> Value {
    use serde_json::Value as Json;
    match value {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Value::Int(i),
            (None, Some(u)) => Value::UInt(u),
            (None, None) => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Value::String(Arc::new(s.clone())),
        Json::Array(items) => Value::List(Arc::new(items.iter().map(to_cel).collect())),
        Json::Object(map) => Value::Map(
            map.iter()
                .map(|(k, v)| (k.clone(), to_cel(v)))
                .collect::<HashMap<String, Value>>()
                .into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn holds(source: &str) -> Result<bool, String> {
        let root = Context::default();
        let fields = json!({
            "courseid": 12, "userid": 27, "crud": "u", "relateduserid": null,
            "eventname": "\\mod_quiz\\event\\attempt_submitted",
            "other": {"grade": 72.5, "enrol": "manual", "quizid": 88, "nested": {"deep": [1, 2, 3]}},
            "event": {"source": "moodle"}
        });
        let fields = fields.as_object().cloned().unwrap_or_default();
        Condition::compile(source)
            .map_err(|e| e.to_string())?
            .evaluate(&variables(&root, &fields))
    }

    #[test]
    fn the_documented_operators_work() {
        let cases = [
            ("courseid == 12", true),
            ("courseid != 12", false),
            ("userid > 20 && userid <= 27", true),
            ("other.grade >= 50", true),
            ("other.grade < 50.0 || crud == 'u'", true),
            ("!(crud == 'r')", true),
            ("other.enrol in ['manual', 'self']", true),
            ("userid in [1, 2]", false),
            ("has(other.grade)", true),
            ("has(other.missing)", false),
            ("relateduserid == null", true),
            ("eventname.startsWith('\\\\mod_quiz\\\\')", true),
            ("other.enrol.contains('anu')", true),
            ("size(other.nested.deep) == 3", true),
            ("event.source == 'moodle'", true),
            // Arithmetic on event numbers (int, not uint, so it mixes with literals).
            ("courseid % 5 == 2", true),
            ("other.quizid / 8 == 11 && userid - 7 == 20", true),
            ("other.nested.deep[2] * 2 == 6", true),
        ];
        for (source, expected) in cases {
            assert_eq!(holds(source), Ok(expected), "{source}");
        }
    }

    #[test]
    fn undecidable_conditions_are_errors_not_panics() {
        assert!(holds("other.missing == 1").is_err());
        assert!(holds("courseid").is_err(), "not a boolean");
    }

    #[test]
    fn parse_errors_say_where() {
        let error = Condition::compile("courseid == 12 &&& x").expect_err("bad");
        assert_eq!((error.line, error.column), (1, 19));
        let error = Condition::compile("courseid ==\n  ").expect_err("bad");
        assert_eq!(error.line, 2);
    }

    proptest! {
        #[test]
        fn any_text_compiles_or_errors_without_panicking(source in ".{0,80}") {
            if let Ok(condition) = Condition::compile(&source) {
                let root = Context::default();
                let _ = condition.evaluate(&variables(&root, &Map::new()));
            }
        }

        #[test]
        fn integer_comparisons_agree_with_rust(a in any::<i64>(), b in any::<i64>()) {
            let root = Context::default();
            let fields = json!({"a": a, "b": b});
            let fields = fields.as_object().cloned().unwrap_or_default();
            let vars = variables(&root, &fields);
            for (op, expected) in [("<", a < b), ("<=", a <= b), ("==", a == b), ("!=", a != b), (">", a > b)] {
                let condition = Condition::compile(&format!("a {op} b")).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(condition.evaluate(&vars), Ok(expected));
            }
        }
    }
}
