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
//!
//! What a condition may cost is bounded twice: [`Condition::compile`] refuses a condition whose
//! static estimate (see `cost`) exceeds [`MAX_CONDITION_COST`], and evaluation spends from the
//! thread's [`budget`](crate::budget), in the estimate's steps: every comprehension charges its
//! range's size times its loop's estimated work per element, and every `+` that may build a
//! string or list the size of what it built, through functions the compiled expression calls
//! (user conditions cannot call them).

use std::collections::HashMap;
use std::sync::Arc;

use cel::common::ast::{CallExpr, EntryExpr, Expr, LiteralValue, MapExpr, StructExpr};
use cel::common::types::{CelBytes, CelInt, CelString};
use cel::common::value::{CowVal, Val};
use cel::{Context, ExecutionError, FunctionContext, IdedExpr, Program, Value};
use serde_json::Map;

use crate::budget::{self, Exhausted};
use crate::cost;

pub(crate) use crate::cost::MAX_COST as MAX_CONDITION_COST;

/// A condition that does not parse, with where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (line {line}, column {column})")]
pub(crate) struct ConditionError {
    pub message: String,
    pub line: usize,
    pub column: usize,
}

/// Why a condition could not be decided for an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Undecided {
    /// A missing field, a type mismatch, an overflow…: CEL's message.
    #[error("{0}")]
    Error(String),
    /// The rule's evaluation budget ran out.
    #[error("the condition {0} for this event")]
    Budget(#[from] Exhausted),
}

impl Undecided {
    /// The `reason` label of the condition-error metric.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Undecided::Error(_) => "error",
            Undecided::Budget(_) => "budget",
        }
    }
}

#[derive(Debug)]
pub(crate) struct Condition {
    /// The parsed condition, rewritten to charge the budget (see [`meter`]).
    expression: IdedExpr,
    /// Whether it loops or builds strings and lists (see [`Condition::may_be_costly`]).
    costly: bool,
}

/// Estimated steps above which a condition without loops is still worth evaluating off the
/// async workers (about half a millisecond).
const INLINE_STEPS: f64 = 10_000.0;

/// Longest condition accepted, in bytes. The CEL parser recurses once per operator of a chain
/// like `a + a + a …`, and a few thousand of them overflow a worker thread's stack: an abort of
/// the whole process, not an error. 4 KiB holds at most about 2,000 such operators.
pub(crate) const MAX_CONDITION_LEN: usize = 4096;

/// Deepest expression tree accepted. Evaluation recurses once per level too; the parser
/// already refuses brackets and calls nested more than 96 deep, but not long operator chains.
pub(crate) const MAX_CONDITION_DEPTH: usize = 128;

/// Names the compiled expression calls to charge the budget; conditions may not use any name
/// starting with [`RESERVED_PREFIX`].
const RANGE_FN: &str = "__mih_range";
const BUILT_FN: &str = "__mih_built";
pub(crate) const RESERVED_PREFIX: &str = "__mih";

impl Condition {
    pub(crate) fn compile(source: &str) -> Result<Self, ConditionError> {
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
        let at = |message: String, id: Option<u64>| {
            let offset = id.and_then(|id| program.source_info().offset_for(id));
            let (line, column) = offset.map_or((1, 1), |(start, _)| position(source, start));
            ConditionError {
                message,
                line,
                column,
            }
        };
        if depth(program.expression()) > MAX_CONDITION_DEPTH {
            return Err(at(
                format!(
                    "the condition nests more than {MAX_CONDITION_DEPTH} levels deep; \
                     group long chains of operators with parentheses or use `in [...]`"
                ),
                None,
            ));
        }
        if let Some((id, name)) = reserved_name(program.expression()) {
            return Err(at(
                format!(
                    "`{name}` is reserved: names starting with `{RESERVED_PREFIX}` are mih's own"
                ),
                Some(id),
            ));
        }
        let estimate = cost::estimate(program.expression());
        // Estimates saturate and are never NaN, so this comparison always decides.
        if estimate.steps > MAX_CONDITION_COST {
            let hotspot = estimate.hotspot.as_ref();
            return Err(at(
                format!(
                    "the condition may cost about {:.1e} evaluation steps (at most {} are \
                     allowed){}",
                    estimate.steps,
                    budget::thousands(cost::whole(MAX_CONDITION_COST)),
                    hotspot.map_or_else(String::new, |h| format!(": {}", h.what)),
                ),
                hotspot.map(|h| h.id),
            ));
        }
        let mut expression = program.expression().clone();
        meter(&mut expression, &estimate);
        let costly = !estimate.per_element.is_empty()
            || !estimate.metered.is_empty()
            || estimate.steps > INLINE_STEPS;
        Ok(Self { expression, costly })
    }

    /// Whether evaluating it may take long on a large event: it has a comprehension, builds
    /// strings or lists with `+`, or is costly even on an ordinary event. Anything else does a
    /// fixed number of operations, each at most linear in the event's size.
    pub(crate) fn may_be_costly(&self) -> bool {
        self.costly
    }

    /// True when the condition holds; why not decided otherwise. Spends from the thread's budget
    /// (see [`budget::within`]); without one, nothing bounds it.
    pub(crate) fn evaluate(&self, variables: &Context<'_, '_>) -> Result<bool, Undecided> {
        let outcome = variables.resolve(&self.expression);
        // An exhausted budget is the answer whatever CEL made of it: `all()` and `exists()`
        // absorb errors (`error || true` is true), so it may have become a plain boolean.
        budget::spend(0)?;
        match outcome {
            Ok(Value::Bool(result)) => Ok(result),
            Ok(other) => Err(Undecided::Error(format!(
                "the condition gave {other:?}, not true or false"
            ))),
            Err(error) => Err(Undecided::Error(error.to_string())),
        }
    }
}

/// The root context conditions are evaluated in: CEL's standard library and the functions
/// that charge the budget. Built once per rule set; each event's variables go in a scope of it.
pub(crate) fn root() -> Context<'static, 'static> {
    let mut root = Context::default();
    for name in [RANGE_FN, BUILT_FN] {
        let charge: MeterFn = Box::new(metered);
        // Only names CEL's standard library declares can conflict, and these are mih's own.
        if let Err(error) = root.add_function(name, charge) {
            tracing::error!(%error, name, "cannot register a metering function; conditions with comprehensions will fail");
        }
    }
    root
}

/// A function the CEL context calls with its raw arguments.
type MeterFn = Box<
    dyn for<'c, 'k> Fn(&mut FunctionContext<'c, 'k>) -> Result<CowVal<'c, 'k>, ExecutionError>
        + Send
        + Sync,
>;

/// `__mih_range(x, k)` / `__mih_built(x)`: charges `x`'s size, `k` steps per element, to the
/// budget and gives `x` back untouched (not copied).
fn metered<'c, 'k>(ftx: &mut FunctionContext<'c, 'k>) -> Result<CowVal<'c, 'k>, ExecutionError> {
    let count = ftx.args.len();
    let mut args = std::mem::take(&mut ftx.args).into_iter();
    let (Some(value), per_element, None) = (args.next(), args.next(), args.next()) else {
        return Err(ExecutionError::invalid_argument_count(2, count));
    };
    let per_element = per_element
        .and_then(|k| k.downcast_ref::<CelInt>().map(|k| *k.inner()))
        .map_or(0, |k| u64::try_from(k).unwrap_or(0));
    charge(value.as_ref(), per_element).map_err(|exhausted| ftx.error(exhausted))?;
    Ok(value)
}

/// Spends what iterating `value` with `per_element` steps of work per element, or having built
/// it, costs, in the estimate's steps: each element plus its copy (one step, plus one per element
/// or hundred characters it holds), or a string's characters. The elements themselves are
/// charged before they are looked at, so a huge list fails without being walked.
fn charge(value: &dyn Val, per_element: u64) -> Result<(), Exhausted> {
    if let Some(bytes) = text_len(value) {
        return budget::spend(char_steps(bytes));
    }
    let len = value
        .as_sizer()
        .map_or(1, |sizer| u64::try_from(*sizer.size().inner()).unwrap_or(0));
    budget::spend(len.saturating_mul(per_element.saturating_add(1)))?;
    if let Some(items) = value.as_iterable() {
        let mut items = items.iter();
        let mut held = 0u64;
        while let Some(item) = items.next() {
            let size = match (text_len(item), item.as_sizer()) {
                (Some(bytes), _) => char_steps(bytes),
                (None, Some(sizer)) => u64::try_from(*sizer.size().inner()).unwrap_or(0),
                (None, None) => 0,
            };
            held = held.saturating_add(size);
        }
        budget::spend(held)?;
    }
    Ok(())
}

/// Bytes of a string or bytes value.
fn text_len(value: &dyn Val) -> Option<u64> {
    let len = if let Some(text) = value.downcast_ref::<CelString>() {
        text.inner().len()
    } else {
        value.downcast_ref::<CelBytes>()?.inner().len()
    };
    Some(u64::try_from(len).unwrap_or(u64::MAX))
}

/// Steps of copying or scanning `bytes` characters.
fn char_steps(bytes: u64) -> u64 {
    bytes.div_ceil(cost::CHARS_PER_STEP)
}

/// Rewrites a parsed condition so it charges the budget: every comprehension's range `r`
/// becomes `__mih_range(r, k)`, `k` being the estimated steps of one iteration, and every `+`
/// that may build a string or list `__mih_built(a + b)`. cel-rust resolves a comprehension's
/// range once, and recognises fast paths (`all`, `exists`, `map`, `filter`) by the exact shape of
/// its loop step and condition, so those are never wrapped (the estimate leaves loop steps out).
fn meter(expr: &mut IdedExpr, cost: &cost::Cost) {
    match &mut expr.expr {
        Expr::Call(call) => {
            if let Some(target) = &mut call.target {
                meter(target, cost);
            }
            for arg in &mut call.args {
                meter(arg, cost);
            }
        }
        Expr::Comprehension(c) => {
            for child in [
                &mut c.iter_range,
                &mut c.accu_init,
                &mut c.loop_cond,
                &mut c.loop_step,
                &mut c.result,
            ] {
                meter(child, cost);
            }
            let per_element = cost.per_element.get(&expr.id).copied().unwrap_or(1);
            let per_element = i64::try_from(per_element).unwrap_or(i64::MAX);
            wrap(
                &mut c.iter_range,
                RANGE_FN,
                Some(IdedExpr {
                    id: expr.id,
                    expr: Expr::Literal(LiteralValue::Int(per_element.into())),
                }),
            );
        }
        Expr::List(list) => {
            for element in &mut list.elements {
                meter(element, cost);
            }
        }
        Expr::Map(MapExpr { entries }) | Expr::Struct(StructExpr { entries, .. }) => {
            for entry in entries {
                match &mut entry.expr {
                    EntryExpr::MapEntry(e) => {
                        meter(&mut e.key, cost);
                        meter(&mut e.value, cost);
                    }
                    EntryExpr::StructField(f) => meter(&mut f.value, cost),
                }
            }
        }
        Expr::Select(select) => meter(&mut select.operand, cost),
        Expr::Unspecified | Expr::Ident(_) | Expr::Literal(_) => {}
    }
    if cost.metered.contains(&expr.id) {
        wrap(expr, BUILT_FN, None);
    }
}

/// `e` becomes `function(e)`, or `function(e, extra)`.
fn wrap(expr: &mut IdedExpr, function: &str, extra: Option<IdedExpr>) {
    let inner = std::mem::take(expr);
    let id = inner.id;
    *expr = IdedExpr {
        id,
        expr: Expr::Call(CallExpr {
            func_name: function.to_owned(),
            target: None,
            args: std::iter::once(inner).chain(extra).collect(),
        }),
    };
}

/// The first identifier or function in the reserved namespace, with its node.
fn reserved_name(root: &IdedExpr) -> Option<(u64, String)> {
    let mut stack = vec![root];
    while let Some(node) = stack.pop() {
        match &node.expr {
            Expr::Ident(name) if name.starts_with(RESERVED_PREFIX) => {
                return Some((node.id, name.clone()));
            }
            Expr::Call(call) if call.func_name.starts_with(RESERVED_PREFIX) => {
                return Some((node.id, call.func_name.clone()));
            }
            Expr::Select(select) if select.field.starts_with(RESERVED_PREFIX) => {
                // A field of that name is data, not a call: allowed.
                stack.push(&select.operand);
            }
            _ => stack.extend(children(node)),
        }
    }
    None
}

/// A node's direct children.
fn children(node: &IdedExpr) -> Vec<&IdedExpr> {
    match &node.expr {
        Expr::Call(call) => call
            .target
            .iter()
            .map(|target| target.as_ref())
            .chain(&call.args)
            .collect(),
        Expr::Comprehension(c) => vec![
            &c.iter_range,
            &c.accu_init,
            &c.loop_cond,
            &c.loop_step,
            &c.result,
        ],
        Expr::List(list) => list.elements.iter().collect(),
        Expr::Map(MapExpr { entries }) | Expr::Struct(StructExpr { entries, .. }) => entries
            .iter()
            .flat_map(|entry| match &entry.expr {
                EntryExpr::MapEntry(e) => vec![&e.key, &e.value],
                EntryExpr::StructField(f) => vec![&f.value],
            })
            .collect(),
        Expr::Select(select) => vec![&select.operand],
        Expr::Unspecified | Expr::Ident(_) | Expr::Literal(_) => Vec::new(),
    }
}

/// How deep an expression tree is, walked without recursion (the tree may be deep).
fn depth(root: &IdedExpr) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(root, 1usize)];
    while let Some((node, level)) = stack.pop() {
        deepest = deepest.max(level);
        stack.extend(children(node).into_iter().map(|child| (child, level + 1)));
    }
    deepest
}

/// Line and column (1-based, the column in characters) of a byte offset of `source`, as the
/// parser records positions.
fn position(source: &str, offset: u32) -> (usize, usize) {
    let offset = usize::try_from(offset).unwrap_or(usize::MAX);
    let (mut line, mut column) = (1, 1);
    for (at, c) in source.char_indices() {
        if at >= offset {
            break;
        }
        if c == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    (line, column)
}

/// The variables of one event, in a scope of the shared root context (which holds the
/// standard functions, built once).
pub(crate) fn variables<'p>(
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
        let root = root();
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
            .map_err(|e| e.to_string())
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
                let root = root();
                let _ = condition.evaluate(&variables(&root, &Map::new()));
            }
        }

        #[test]
        fn integer_comparisons_agree_with_rust(a in any::<i64>(), b in any::<i64>()) {
            let root = root();
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
        let root = root();
        Ok(fixture_fields()
            .iter()
            .map(|fields| {
                condition
                    .evaluate(&variables(&root, fields))
                    .map_err(|e| e.to_string())
            })
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
        let root = root();
        let overflow = Condition::compile("9223372036854775807 + 1 < 0").expect("compiles");
        assert!(overflow.evaluate(&variables(&root, &Map::new())).is_err());
    }

    #[test]
    fn event_values_at_the_edges_convert_and_compare() {
        let root = root();
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
                    let root = root();
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

/// The cost limit and the runtime budget: the attacker's probes, ordinary conditions, and
/// events far larger than the estimate assumes.
#[cfg(test)]
mod cost_tests {
    use std::time::{Duration, Instant};

    use serde_json::{Value as Json, json};

    use super::*;
    use crate::budget::Budget;

    /// `[0, 1, …, n-1]`.
    fn list(n: usize) -> String {
        let items: Vec<String> = (0..n).map(|i| i.to_string()).collect();
        format!("[{}]", items.join(", "))
    }

    /// `levels` nested `.all()` over `n`-element list literals, as the probe sent them.
    fn nested_all(levels: usize, n: usize) -> String {
        let vars: Vec<String> = (0..levels).map(|i| format!("v{i}")).collect();
        let mut body = format!("{} >= 0", vars.join(" + "));
        for var in vars.iter().rev() {
            body = format!("{}.all({var}, {body})", list(n));
        }
        body
    }

    fn fields(value: &Json) -> Map<String, Json> {
        value.as_object().cloned().unwrap_or_default()
    }

    /// Evaluates under a rule's budget, as the matcher does.
    fn run(source: &str, event: &Map<String, Json>) -> Result<bool, Undecided> {
        let condition = Condition::compile(source).expect("accepted");
        let root = root();
        let vars = variables(&root, event);
        budget::within(Budget::for_rule(), || condition.evaluate(&vars))
    }

    #[test]
    fn the_probes_nested_comprehensions_are_refused_with_where_and_why() {
        for levels in [3, 4] {
            let source = nested_all(levels, 100);
            let error = Condition::compile(&source).expect_err("too costly");
            assert!(
                error.message.starts_with("the condition may cost about ")
                    && error.message.contains("(at most 1,000,000 are allowed)")
                    && error.message.ends_with(&format!(
                        "`.all()` over a 100-element list nested {levels} deep"
                    )),
                "{error}"
            );
            // The outermost `.all(` (the parser places a macro at its bracket), right after the
            // first list literal.
            let column = list(100).len() + ".all(".len();
            assert_eq!((error.line, error.column), (1, column), "{error}");
        }
        let error = Condition::compile(&nested_all(4, 100)).expect_err("too costly");
        assert!(error.message.contains("about 2.0e9"), "{error}");
    }

    #[test]
    fn the_position_is_in_characters_on_the_right_line() {
        let source = format!("'ééé' == 'x' ||\n {}", nested_all(3, 100));
        let error = Condition::compile(&source).expect_err("too costly");
        assert_eq!(
            (error.line, error.column),
            (2, 1 + list(100).len() + ".all(".len()),
            "{error}"
        );
    }

    #[test]
    fn ordinary_conditions_are_accepted() {
        for source in [
            "courseid == 12 && other.enrol in ['manual', 'self']",
            "other.items.exists(i, i.grade > 50)",
            "other.items.all(i, has(i.grade) && i.grade >= 0.0) && size(other.items) < 100",
            "other.items.filter(i, i.kind == 'quiz').map(i, i.grade).exists(g, g > 50)",
            "[1, 2, 3, 4, 5, 6, 7, 8, 9, 10].exists(a, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10].exists(b, a * b == courseid))",
            "other.items.exists(i, ['a', 'b', 'c'].exists(k, i.kind == k))",
            "other.username.contains('@example.org') && eventname.matches('^\\\\\\\\mod_(quiz|assign)\\\\\\\\')",
            &nested_all(2, 100),
            &format!("courseid in {}", list(500)),
        ] {
            if let Err(error) = Condition::compile(source) {
                panic!("{source}: {error}");
            }
        }
    }

    #[test]
    fn values_that_double_at_every_step_are_refused() {
        // 60 chained `map`s are already deeper than MAX_CONDITION_DEPTH; 40 are not.
        let chained = |n: usize| format!("[[1, 2, 3]]{}.size() == 1", ".map(a, a + a)".repeat(n));
        assert!(Condition::compile(&chained(60)).is_err());
        let error = Condition::compile(&chained(40)).expect_err("doubles 40 times");
        assert!(
            error
                .message
                .contains("`+` building a value of about 3.3e12 elements"),
            "{error}"
        );
        // A string or list read from the event, copied by concatenation alone.
        let concatenated = format!("other.s{} == ''", " + other.s".repeat(60));
        let error = Condition::compile(&concatenated).expect_err("60 copies");
        assert!(error.message.contains("`+` building a value"), "{error}");
        let doubled = format!("[other.s]{}.size() > 0", ".map(a, a + a)".repeat(12));
        assert!(Condition::compile(&doubled).is_err());
        // Numbers added in a loop do not grow.
        let numbers = format!("[1]{}.size() == 1", ".map(a, a + a)".repeat(40));
        assert!(Condition::compile(&numbers).is_ok());
    }

    #[test]
    fn iterating_an_empty_list_costs_nothing_whatever_it_would_do() {
        let empty = format!("[].all(x, {})", nested_all(4, 100));
        assert!(Condition::compile(&empty).is_ok());
    }

    #[test]
    fn the_metering_functions_are_reserved() {
        for source in [
            "__mih_range([1, 2]).size() == 2",
            "[1].all(x, __mih_built(x))",
            "__mih_anything == 1",
        ] {
            let error = Condition::compile(source).expect_err("reserved");
            assert!(error.message.contains("is reserved"), "{error}");
        }
        assert!(
            Condition::compile("other.__mih_field == 1").is_ok(),
            "a field is data"
        );
    }

    #[test]
    fn a_large_event_list_in_a_nested_comprehension_runs_out_of_budget() {
        let items: Vec<Json> = (0..200_000).map(Json::from).collect();
        let event = fields(&json!({"other": {"items": items}}));
        let source = format!(
            "other.items.exists(i, {}.exists(j, i == j + 1000000))",
            list(30)
        );
        let started = Instant::now();
        let outcome = run(&source, &event);
        assert!(
            matches!(outcome, Err(Undecided::Budget(Exhausted::Steps { .. }))),
            "{outcome:?} after {:?}",
            started.elapsed()
        );
        assert_eq!(
            outcome.map_err(|e| e.to_string()),
            Err("the condition exceeded its evaluation budget (more than 5,000,000 steps) for this event".to_owned())
        );
    }

    #[test]
    fn a_budget_error_is_reported_even_where_cel_absorbs_errors() {
        let items: Vec<Json> = (0..200_000).map(Json::from).collect();
        let event = fields(&json!({"other": {"items": items}}));
        // `error || true` is true in CEL; the exhausted budget must still show.
        let source = format!(
            "other.items.exists(i, {}.exists(j, i == j + 1000000) || true)",
            list(30)
        );
        assert!(matches!(run(&source, &event), Err(Undecided::Budget(_))));
        let source = format!(
            "[1, 2].exists(k, other.items.exists(i, {}.exists(j, i == j)) || k == 1)",
            list(30)
        );
        assert!(matches!(run(&source, &event), Err(Undecided::Budget(_))));
    }

    #[test]
    fn lists_built_from_a_large_event_value_are_charged() {
        let source = format!("size(other.l{}) == 0", " + other.l".repeat(20));
        assert!(
            Condition::compile(&source).is_ok(),
            "accepted for ordinary sizes"
        );
        let items: Vec<Json> = (0..200_000).map(Json::from).collect();
        let event = fields(&json!({"other": {"l": items}}));
        assert!(matches!(run(&source, &event), Err(Undecided::Budget(_))));
        // The same condition on an ordinary event is decided.
        let small = fields(&json!({"other": {"l": [1]}}));
        assert_eq!(run(&source, &small), Ok(false));
        // Strings are charged by the hundred characters: 20 copies of 100,000 are cheap.
        let source = format!("size(other.s{}) == 0", " + other.s".repeat(20));
        let event = fields(&json!({"other": {"s": "x".repeat(100_000)}}));
        assert_eq!(run(&source, &event), Ok(false));
    }

    #[test]
    fn the_time_limit_stops_an_evaluation_too() {
        let items: Vec<Json> = (0..1_000).map(Json::from).collect();
        let event = fields(&json!({"other": {"items": items}}));
        let condition = Condition::compile(&format!(
            "other.items.all(i, {}.all(j, i + j >= 0))",
            list(30)
        ))
        .expect("accepted");
        let root = root();
        let vars = variables(&root, &event);
        let outcome = budget::within(Budget::new(u64::MAX, Duration::ZERO), || {
            condition.evaluate(&vars)
        });
        assert_eq!(
            outcome,
            Err(Undecided::Budget(Exhausted::Time {
                limit: Duration::ZERO
            }))
        );
    }

    #[test]
    fn metering_leaves_results_unchanged() {
        let event = fields(
            &json!({"other": {"items": [{"grade": 40}, {"grade": 70}], "tags": ["a", "b"], "s": "ab"}}),
        );
        for (source, expected) in [
            ("other.items.exists(i, i.grade > 50)", true),
            ("other.items.all(i, i.grade > 50)", false),
            ("other.items.exists_one(i, i.grade > 50)", true),
            ("other.items.map(i, i.grade) == [40, 70]", true),
            ("other.items.filter(i, i.grade > 50).size() == 1", true),
            ("other.items.map(i, i.grade > 50, i.grade) == [70]", true),
            ("(other.tags + ['c']).size() == 3", true),
            ("other.s + other.s == 'abab'", true),
            ("[[1, 2]].map(a, a + a) == [[1, 2, 1, 2]]", true),
            ("{'a': 1, 'b': 2}.all(k, k in ['a', 'b'])", true),
            ("other.tags.exists(t, t == 'c')", false),
        ] {
            assert_eq!(run(source, &event), Ok(expected), "{source}");
        }
    }
}

/// Calibration of [`MAX_CONDITION_COST`] and of the budget: how long cel-rust takes per
/// estimated step, and per step charged at runtime, on this machine. Run in release:
/// `cargo test --release -p mih-rules --lib measure_ -- --ignored --nocapture`.
#[cfg(test)]
mod calibration {
    use std::time::{Duration, Instant};

    use serde_json::{Value as Json, json};

    use super::*;
    use crate::budget::Budget;

    fn list(n: usize) -> String {
        let items: Vec<String> = (0..n).map(|i| i.to_string()).collect();
        format!("[{}]", items.join(", "))
    }

    #[test]
    #[ignore = "a measurement, not a test: run in release with --ignored --nocapture"]
    fn measure_evaluation_speed_per_estimated_step() {
        let n = usize::try_from(cost::whole(cost::ASSUMED_EVENT_SIZE)).unwrap_or(1_000);
        let items: Vec<Json> = (0..n)
            .map(|i| json!({"grade": i, "kind": "quiz", "name": "n".repeat(20)}))
            .collect();
        let names: Vec<Json> = (0..n).map(|_| Json::from("x".repeat(n))).collect();
        let numbers: Vec<Json> = (0..n).map(Json::from).collect();
        let event = json!({
            "courseid": 12, "other": {"enrol": "manual", "items": items, "names": names,
            "numbers": numbers, "s": "s".repeat(n)}
        });
        let event = event.as_object().cloned().unwrap_or_default();
        let cases = [
            "courseid == 12 && other.enrol in ['manual', 'self']".to_owned(),
            "other.items.exists(i, i.grade > 5000)".to_owned(),
            "other.items.filter(i, i.kind == 'quiz').map(i, i.grade).exists(g, g > 5000)"
                .to_owned(),
            "other.names.exists(s, s.contains('y'))".to_owned(),
            format!(
                "other.numbers.exists(i, {}.exists(j, i == j + 100000))",
                list(20)
            ),
            format!("{}.all(a, {}.all(b, a + b >= 0))", list(100), list(100)),
            format!(
                "{}.all(a, {}.all(b, {}.all(c, a + b + c >= 0)))",
                list(30),
                list(30),
                list(30)
            ),
            format!("[[1, 2, 3]]{}.size() == 1", ".map(a, a + a)".repeat(14)),
            format!("other.s{} == ''", " + other.s".repeat(20)),
            format!("size(other.numbers{}) == 0", " + other.numbers".repeat(20)),
            "other.items.map(i, i.grade).size() == 0".to_owned(),
            format!("courseid in {}", list(500)),
        ];
        let root = root();
        let vars = variables(&root, &event);
        eprintln!(
            "estimate\truntime steps\tµs/eval\tns/estimated step\tns/runtime step\tcondition"
        );
        for source in cases {
            let program = Program::compile(&source).expect("parses");
            let estimate = cost::estimate(program.expression()).steps;
            let condition = Condition::compile(&source).expect("accepted");
            let budget = Budget::new(u64::MAX, Duration::from_secs(3600));
            let (outcome, steps) = budget::within(budget, || {
                (condition.evaluate(&vars), budget::spent().unwrap_or(0))
            });
            assert!(outcome.is_ok(), "{source}: {outcome:?}");
            let (mut runs, started) = (0u32, Instant::now());
            while started.elapsed() < Duration::from_millis(300) {
                let _ = budget::within(budget, || condition.evaluate(&vars));
                runs += 1;
            }
            let per_eval = started.elapsed().as_secs_f64() / f64::from(runs);
            eprintln!(
                "{estimate:.2e}\t{steps}\t{:.1}\t{:.1}\t{:.1}\t{}",
                per_eval * 1e6,
                per_eval * 1e9 / estimate,
                per_eval * 1e9 / (steps.max(1) as f64),
                source.chars().take(70).collect::<String>(),
            );
        }
    }
}
