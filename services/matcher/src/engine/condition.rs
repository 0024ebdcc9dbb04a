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

use cel::common::ast::{EntryExpr, Expr, MapExpr, StructExpr};
use cel::{Context, IdedExpr, Program, Value};
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

/// Longest condition accepted, in bytes. The CEL parser recurses once per operator of a chain
/// like `a + a + a …`, and a few thousand of them overflow a worker thread's stack: an abort of
/// the whole process, not an error. 4 KiB holds at most about 2,000 such operators.
pub const MAX_CONDITION_LEN: usize = 4096;

/// Deepest expression tree accepted. Evaluation recurses once per level too; the parser
/// already refuses brackets and calls nested more than 96 deep, but not long operator chains.
pub const MAX_CONDITION_DEPTH: usize = 128;

impl Condition {
    pub fn compile(source: &str) -> Result<Self, ConditionError> {
        if source.len() > MAX_CONDITION_LEN {
            return Err(ConditionError {
                message: format!(
                    "the condition is {} bytes long; at most {MAX_CONDITION_LEN} are allowed",
                    source.len()
                ),
                line: 1,
                column: 1,
            });
        }
        let program = Program::compile(source).map_err(|errors| {
            let first = errors.errors.first();
            let (line, column) = first.map_or((1, 1), |e| e.pos);
            ConditionError {
                message: first.map_or_else(|| errors.to_string(), |e| e.msg.clone()),
                line: usize::try_from(line).unwrap_or(1).max(1),
                column: usize::try_from(column).unwrap_or(0) + 1,
            }
        })?;
        if depth(program.expression()) > MAX_CONDITION_DEPTH {
            return Err(ConditionError {
                message: format!(
                    "the condition nests more than {MAX_CONDITION_DEPTH} levels deep; \
                     group long chains of operators with parentheses or use `in [...]`"
                ),
                line: 1,
                column: 1,
            });
        }
        Ok(Self { program })
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

/// How deep an expression tree is, walked without recursion (the tree may be deep).
fn depth<'a>(root: &'a IdedExpr) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(root, 1usize)];
    while let Some((node, level)) = stack.pop() {
        deepest = deepest.max(level);
        let mut push = |child: &'a IdedExpr| stack.push((child, level + 1));
        match &node.expr {
            Expr::Call(call) => {
                if let Some(target) = &call.target {
                    push(target);
                }
                call.args.iter().for_each(push);
            }
            Expr::Comprehension(c) => {
                for child in [
                    &c.iter_range,
                    &c.accu_init,
                    &c.loop_cond,
                    &c.loop_step,
                    &c.result,
                ] {
                    push(child);
                }
            }
            Expr::List(list) => list.elements.iter().for_each(push),
            Expr::Map(MapExpr { entries }) | Expr::Struct(StructExpr { entries, .. }) => {
                for entry in entries {
                    match &entry.expr {
                        EntryExpr::MapEntry(e) => {
                            push(&e.key);
                            push(&e.value);
                        }
                        EntryExpr::StructField(f) => push(&f.value),
                    }
                }
            }
            Expr::Select(select) => push(&select.operand),
            Expr::Unspecified | Expr::Ident(_) | Expr::Literal(_) => {}
        }
    }
    deepest
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

/// Hostile conditions: arbitrary text and generated expressions must compile or fail with a
/// position, and whatever compiles must evaluate against real Moodle events without panicking
/// or overflowing the stack (a 2 MiB stack, as on tokio's worker threads).
#[cfg(test)]
mod proptests {
    use proptest::prelude::*;
    use serde_json::{Value as Json, json};

    use super::*;

    /// The events of the test fixtures, each with the `event` variable rules see.
    fn fixture_fields() -> Vec<Map<String, Json>> {
        mih_testkit::fixtures::moodle_events()
            .into_iter()
            .filter_map(|event| {
                let mut fields = event.as_object().cloned()?;
                fields.insert(
                    "event".into(),
                    json!({"source": "moodle", "id": "0190f3a0-0000-7000-8000-000000000000",
                           "received_at": "2026-02-25T08:00:00Z"}),
                );
                Some(fields)
            })
            .collect()
    }

    /// Compiles, then evaluates against every fixture; any outcome but a panic is fine.
    fn compile_and_run(source: &str) -> Result<Vec<Result<bool, String>>, ConditionError> {
        let condition = Condition::compile(source)?;
        let root = Context::default();
        Ok(fixture_fields()
            .iter()
            .map(|fields| condition.evaluate(&variables(&root, fields)))
            .collect())
    }

    /// Runs `f` on a thread with tokio's default worker stack, where conditions really run.
    fn on_worker_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(f)
            .expect("thread")
            .join()
            .expect("no panic")
    }

    fn assert_positioned(error: &ConditionError, source: &str) {
        assert!(error.line >= 1 && error.column >= 1, "{error:?}");
        assert!(
            error.line <= source.lines().count().max(1) + 1,
            "line {} beyond the text: {error:?}",
            error.line
        );
        assert!(!error.message.is_empty());
    }

    #[test]
    fn long_operator_chains_are_refused_not_a_stack_overflow() {
        // Found by the probes below: 10,000 `+1` overflowed the stack while parsing (an abort of
        // the matcher on every rule load), 2,000 while evaluating.
        type Shape = (&'static str, fn(usize) -> String);
        let shapes: [Shape; 9] = [
            ("plus", |n| format!("1{} == 1", "+1".repeat(n))),
            ("select", |n| format!("other{} == 1", ".b".repeat(n))),
            ("index", |n| format!("[1]{} == 1", "[0]".repeat(n))),
            ("method", |n| {
                format!("'a'{} == 'a'", ".lowerAscii()".repeat(n))
            }),
            ("eq", |n| format!("true{}", " == true".repeat(n))),
            ("in", |n| format!("1{}", " in [1]".repeat(n))),
            ("mul", |n| format!("1{} == 1", "*1".repeat(n))),
            ("and", |n| format!("true{}", "&&true".repeat(n))),
            ("not", |n| format!("{}true", "!".repeat(n))),
        ];
        for (name, shape) in shapes {
            for n in [150, 1_000, 2_000, 10_000, 100_000] {
                let source = shape(n);
                let outcome = on_worker_stack({
                    let source = source.clone();
                    move || compile_and_run(&source).map(|results| results.len())
                });
                match outcome {
                    Err(error) => assert_positioned(&error, &source),
                    Ok(_) => assert!(
                        source.len() <= MAX_CONDITION_LEN,
                        "{name} × {n} compiled though longer than the limit"
                    ),
                }
            }
        }
    }

    #[test]
    fn deep_brackets_and_calls_are_refused_with_a_position() {
        for n in [97, 1_000, 100_000] {
            for source in [
                format!("{}1{} == 1", "(".repeat(n), ")".repeat(n)),
                format!("{}1{} == [1]", "[".repeat(n), "]".repeat(n)),
                format!("{}1{} == 1", "int(".repeat(n), ")".repeat(n)),
                format!("{}1 == 1", "true ? 1 : ".repeat(n)),
                "(".repeat(n),
            ] {
                let error = on_worker_stack({
                    let source = source.clone();
                    move || compile_and_run(&source).map(|_| ())
                })
                .expect_err("too deep");
                assert_positioned(&error, &source);
            }
        }
    }

    #[test]
    fn realistic_long_conditions_still_compile() {
        let many_courses: Vec<String> = (1..=500).map(|id| id.to_string()).collect();
        let list = format!("courseid in [{}]", many_courses.join(", "));
        assert!(list.len() < MAX_CONDITION_LEN);
        assert!(Condition::compile(&list).is_ok());
        let alternatives: Vec<String> = (1..=60).map(|id| format!("courseid == {id}")).collect();
        assert!(Condition::compile(&alternatives.join(" || ")).is_ok());
        let conjunction: Vec<String> = (1..=60).map(|id| format!("userid != {id}")).collect();
        assert!(Condition::compile(&conjunction.join(" && ")).is_ok());
    }

    #[test]
    fn huge_numbers_and_odd_literals_are_errors_or_values_never_panics() {
        let corpus = [
            "9223372036854775807 + 1 == 0",
            "-9223372036854775808 - 1 == 0",
            "-9223372036854775808 / -1 == 0",
            "-9223372036854775808 % -1 == 0",
            "-(-9223372036854775808) == 1",
            "9223372036854775807 * 2 == 0",
            "1 / 0 == 0",
            "1 % 0 == 0",
            "1u / 0u == 0u",
            "18446744073709551615u + 1u == 0u",
            "0u - 1u == 0u",
            "9223372036854775808 == 1",
            "-9223372036854775809 == 1",
            "99999999999999999999999999999 == 1",
            "1e308 * 10.0 == 1.0",
            "1e309 == 1.0",
            "-0.0 == 0.0",
            "int(1e308) == 1",
            "int(-9.3e18) == 1",
            "uint(-1) == 1u",
            "uint(1.9e19) == 1u",
            "int(18446744073709551615u) == 1",
            "double(9223372036854775807) == 1.0",
            "int('99999999999999999999') == 1",
            "duration('999999999999999h') > duration('1s')",
            "duration('-9223372036854775808s') < duration('1s')",
            "timestamp('9999-12-31T23:59:59Z') + duration('100000h') > timestamp('1970-01-01T00:00:00Z')",
            "timestamp(9223372036854775807) > timestamp(0)",
            "timestamp(-9223372036854775808) > timestamp(0)",
            "'aaaaaaaaaaaaaaaaaaaaaaaaaaaa!'.matches('(a+)+$')",
            "'a'.matches('[')",
            "'\\u0000' == '\\x00'",
            "'\\ud800' == 'x'",
            "b'\\377' == b'\\xff'",
            "string(b'\\xff') == 'x'",
            "size(other) == 1",
            "userid + courseid > 0",
            "userid * 9223372036854775807 > 0",
            "objectid - -9223372036854775808 > 0",
            "timecreated * timecreated * timecreated > 0",
            "[1, 2, 3].map(x, [x, x, x, x].map(y, [y, y, y, y])).size() == 3",
            "[1, 2, 3].all(x, [1, 2, 3].all(y, [1, 2, 3].all(z, x + y + z > 0)))",
            "{'a': 1}['b'] == 1",
            "[][0] == 1",
            "[1][-1] == 1",
            "[1][9223372036854775807] == 1",
            "other.x.y.z == 1",
            "has(event.source.nope)",
            "eventname.substring(-1) == ''",
            "eventname[0] == 'x'",
            "dyn(1) == dyn('1')",
            "type(other) == map",
            "null.x == 1",
            "\u{feff}true",
            "true\u{0}",
            "userid == 27 ? true : 1",
        ];
        for source in corpus {
            match on_worker_stack(move || compile_and_run(source)) {
                Ok(_) => {}
                Err(error) => assert_positioned(&error, source),
            }
        }
        // Overflow is an error, not a wrapped value.
        let root = Context::default();
        let overflow = Condition::compile("9223372036854775807 + 1 < 0").expect("compiles");
        assert!(overflow.evaluate(&variables(&root, &Map::new())).is_err());
    }

    #[test]
    fn event_values_at_the_edges_convert_and_compare() {
        let root = Context::default();
        let fields = json!({
            "max": i64::MAX, "min": i64::MIN, "big": u64::MAX, "huge": 1e308, "negzero": -0.0,
            "nul": "\u{0}",
        });
        let mut fields = fields.as_object().cloned().unwrap_or_default();
        let deep = format!("{}1{}", "[".repeat(120), "]".repeat(120));
        fields.insert(
            "deep".into(),
            serde_json::from_str(&deep).expect("within serde_json's limit"),
        );
        let vars = variables(&root, &fields);
        for (source, expected) in [
            ("max == 9223372036854775807", Ok(true)),
            ("min == -9223372036854775808", Ok(true)),
            ("big == 18446744073709551615u", Ok(true)),
            ("huge > 1e307", Ok(true)),
            ("negzero == 0.0", Ok(true)),
            ("nul == '\\u0000'", Ok(true)),
            ("size(deep) == 1", Ok(true)),
        ] {
            let condition = Condition::compile(source).expect(source);
            assert_eq!(condition.evaluate(&vars), expected, "{source}");
        }
        let condition = Condition::compile("max + 1 > 0").expect("compiles");
        assert!(condition.evaluate(&vars).is_err(), "overflow is an error");
    }

    /// Pieces of CEL, hostile ones included, strung together into mostly-plausible text.
    fn token() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "courseid",
                "userid",
                "objectid",
                "relateduserid",
                "crud",
                "other",
                "eventname",
                "event",
                "event.source",
                "other.enrol",
                "timecreated",
                "anonymous",
                "x",
                "nope",
            ])
            .prop_map(str::to_owned),
            prop::sample::select(vec![
                "==",
                "!=",
                "<",
                "<=",
                ">",
                ">=",
                "&&",
                "||",
                "!",
                "+",
                "-",
                "*",
                "/",
                "%",
                "in",
                "?",
                ":",
                ".",
                ",",
                "(",
                ")",
                "[",
                "]",
                "{",
                "}",
                "has(",
                "size(",
                "int(",
                "uint(",
                "double(",
                "string(",
                "bytes(",
                "dyn(",
                "type(",
                "duration(",
                "timestamp(",
                ".all(x, ",
                ".exists(x, ",
                ".map(x, ",
                ".filter(x, ",
                ".exists_one(x, ",
                ".startsWith(",
                ".endsWith(",
                ".contains(",
                ".matches(",
                ".size()",
                "null",
                "true",
                "false",
            ])
            .prop_map(str::to_owned),
            prop::sample::select(vec![
                "9223372036854775807",
                "9223372036854775808",
                "-9223372036854775808",
                "18446744073709551615u",
                "18446744073709551616u",
                "0",
                "-0",
                "1e308",
                "1e309",
                "-0.0",
                "0x7fffffffffffffff",
                "0xffffffffffffffffu",
                "1.5",
                "'1s'",
                "'999999999999h'",
                "'2026-02-25T08:00:00Z'",
                "'(a+)+$'",
                "'['",
                "'\\u0000'",
                "'\\ud800'",
                "b'\\xff'",
                "'''x'''",
                "r'\\d'",
                "\"\\\"\"",
            ])
            .prop_map(str::to_owned),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| format!("{n}u")),
            any::<f64>().prop_map(|f| format!("{f:?}")),
            "'[^']{0,12}'",
        ]
    }

    fn expression() -> impl Strategy<Value = String> {
        prop::collection::vec(token(), 1..24).prop_map(|tokens| tokens.join(" "))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_text_compiles_or_fails_with_a_position(source in "\\PC{0,120}|[ -~\\n]{0,120}") {
            match Condition::compile(&source) {
                Ok(condition) => {
                    let root = Context::default();
                    for fields in fixture_fields() {
                        let _ = condition.evaluate(&variables(&root, &fields));
                    }
                }
                Err(error) => {
                    prop_assert!(error.line >= 1 && error.column >= 1, "{:?}", error);
                    prop_assert!(error.line <= source.split('\n').count() + 1, "{:?}", error);
                }
            }
        }

        #[test]
        fn generated_conditions_evaluate_against_fixtures_without_panicking(source in expression()) {
            match compile_and_run(&source) {
                Ok(results) => {
                    for result in results {
                        // Either a boolean or a message saying why not.
                        if let Err(message) = result {
                            prop_assert!(!message.is_empty());
                        }
                    }
                }
                Err(error) => {
                    prop_assert!(error.line >= 1 && error.column >= 1, "{:?}", error);
                }
            }
        }

        #[test]
        fn comparisons_of_generated_conditions_are_boolean(
            left in token(), op in prop::sample::select(vec!["==", "!=", "<", ">", "in"]), right in token()
        ) {
            let source = format!("{left} {op} {right}");
            if let Ok(results) = compile_and_run(&source) {
                prop_assert_eq!(results.len(), fixture_fields().len());
            }
        }
    }
}
