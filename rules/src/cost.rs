//! A static upper bound of what a condition may cost to evaluate, in the manner of Kubernetes'
//! CEL cost estimate: refused when saved rather than discovered on the matcher.
//!
//! The expression tree is walked bottom-up and every node gets an upper bound of its cost, in
//! *steps*, and of the *shape* of its value: how many elements or characters it can hold, and
//! for a list or map what its elements can hold. A step is about one node evaluated, or one
//! list element built, copied or compared (cel-rust boxes every element); a character costs a
//! hundredth of that. Literals have known shapes; whatever is read from the event is assumed to
//! hold [`ASSUMED_EVENT_SIZE`] elements or characters at every level (an event larger than that
//! is the runtime budget's business, see `budget`), and is charged as a list when its type is
//! not known. A comprehension costs its range's size times its loop, with the loop variable as
//! large as the range's elements; `+` on strings and lists adds their sizes and pays for the
//! copy, so a value that doubles in each of several chained `map`s grows exponentially here as
//! it would when evaluated. Arithmetic saturates at [`CAP`]: a bound that large is refused.
//!
//! The estimate also says what evaluation must charge to the budget, in the same steps:
//! per element of each comprehension's range, the loop's own work; for each `+` that may build
//! a string or list, what it built (see `condition::meter`).

use std::collections::HashMap;
use std::rc::Rc;

use cel::IdedExpr;
use cel::common::ast::{ComprehensionExpr, EntryExpr, Expr, LiteralValue, operators};

use crate::budget::thousands;

/// Highest estimated cost accepted, in steps.
///
/// Calibration (`calibration::measure_evaluation_speed_per_estimated_step` in `condition`,
/// release build, the 2-vCPU development machine): 22–24 ns per estimated step for loops over
/// literal lists, 39 ns for concatenating lists, 2–45 ns for loops over event lists (whose
/// elements were smaller than assumed); about 90 ns with other builds loading the machine. The
/// steps charged at runtime matched the estimate within 1 % where the event had the assumed
/// sizes. So an accepted condition takes at most about 25–40 ms (0.1 s on a loaded machine) on
/// an event of the assumed size. The probe's three levels of `.all()` over 100-element lists
/// estimate 1.8e7 steps (0.4–1.6 s), four levels 2.0e9: both are refused; two levels over
/// 100-element lists estimate 1.6e5 (3.6 ms measured).
pub(crate) const MAX_COST: f64 = 1_000_000.0;

/// Elements (of a list or map) or characters (of a string) assumed of any value read from the
/// event, and of any field of it. An ordinary Moodle event holds a few dozen fields, `other` a
/// handful, rarely a list; a list of 1,000 is generous. A comprehension over such a list with a
/// cheap body is accepted; one nested in another over an event list (a million iterations) is
/// not.
pub(crate) const ASSUMED_EVENT_SIZE: f64 = 1_000.0;

/// Elements or characters assumed of each element of a list or map read from the event (a
/// thousand elements of a thousand each would be far beyond the largest event ingest takes).
pub(crate) const ASSUMED_ELEMENT_SIZE: f64 = 100.0;

/// Steps per list or map element built, copied or compared.
const PER_ELEMENT: f64 = 1.0;

/// Characters copied, compared or scanned per step (measured: about 0.15 ns a character).
pub(crate) const CHARS_PER_STEP: u64 = 100;
const PER_CHAR: f64 = 1.0 / CHARS_PER_STEP as f64;

/// Steps per comprehension iteration beyond its loop condition and step: binding the loop
/// variable (a named entry in a fresh scope) and advancing. The copy of the element bound is
/// charged apart, by its size.
const PER_ITERATION: f64 = 3.0;

/// Steps of a call to a function this estimate does not know, besides its operands' copy.
const UNKNOWN_CALL: f64 = 10.0;

/// Steps to compile a regular expression (`matches` compiles it on every call), and per
/// character of it.
const REGEX: f64 = 50.0;
const REGEX_PER_CHAR: f64 = 10.0;

/// Where saturating arithmetic stops: far above any limit, finite so no NaN can arise.
const CAP: f64 = 1e300;

fn sat(x: f64) -> f64 {
    if x.is_nan() { CAP } else { x.clamp(0.0, CAP) }
}

fn add(a: f64, b: f64) -> f64 {
    sat(a + b)
}

/// A bound as a whole number of steps, rounded up.
pub(crate) fn whole(x: f64) -> u64 {
    // `as` saturates (and maps NaN to 0); estimates are never negative nor NaN.
    #[allow(clippy::cast_possible_truncation)]
    let whole = sat(x).ceil() as u64;
    whole
}

/// `0 × anything` is 0, even when the other factor is at the cap.
fn mul(a: f64, b: f64) -> f64 {
    if a == 0.0 || b == 0.0 {
        0.0
    } else {
        sat(a * b)
    }
}

/// What a value can hold, as an upper bound.
#[derive(Debug, Clone, PartialEq)]
enum Shape {
    /// A number, boolean, null, timestamp or duration: constant size.
    Scalar,
    /// A string or bytes of at most this many characters or bytes.
    Text(f64),
    /// A list or map of at most `len` entries, each (key or value) at most `item`.
    Collection { len: f64, item: Rc<Shape> },
    /// Read from the event, or from a function this estimate does not know: any type, at most
    /// this many elements or characters (so are its fields), its elements at most
    /// [`ASSUMED_ELEMENT_SIZE`] each.
    Unknown(f64),
}

impl Shape {
    fn event() -> Self {
        Shape::Unknown(ASSUMED_EVENT_SIZE)
    }

    /// An element of a list or map read from the event.
    fn event_element() -> Self {
        Shape::Unknown(ASSUMED_ELEMENT_SIZE)
    }

    /// Elements or characters: what a comprehension over it iterates, or a string function
    /// scans.
    fn len(&self) -> f64 {
        match self {
            Shape::Scalar => 1.0,
            Shape::Text(len) | Shape::Unknown(len) | Shape::Collection { len, .. } => *len,
        }
    }

    /// Steps to copy it whole (or compare it with something as large): a value not known to be
    /// a string is charged as a list.
    fn copy(&self) -> f64 {
        match self {
            Shape::Scalar => PER_ELEMENT,
            Shape::Text(len) => add(PER_ELEMENT, mul(PER_CHAR, *len)),
            Shape::Unknown(len) => add(PER_ELEMENT, mul(PER_ELEMENT, *len)),
            Shape::Collection { len, item } => add(PER_ELEMENT, mul(*len, item.copy())),
        }
    }

    /// Elements or characters in all, at every level: how large a value `+` built.
    fn size(&self) -> f64 {
        match self {
            Shape::Scalar => 1.0,
            Shape::Text(len) | Shape::Unknown(len) => *len,
            Shape::Collection { len, item } => mul(*len, item.size().max(1.0)),
        }
    }

    /// An element of it.
    fn item(&self) -> Shape {
        match self {
            Shape::Collection { item, .. } => Shape::clone(item),
            Shape::Unknown(len) => Shape::Unknown(len.min(ASSUMED_ELEMENT_SIZE)),
            Shape::Scalar | Shape::Text(_) => Shape::Scalar,
        }
    }

    /// A field of it: a map literal's values; a part of an event value, no larger than it.
    fn field(&self) -> Shape {
        match self {
            Shape::Collection { item, .. } => Shape::clone(item),
            Shape::Unknown(len) => Shape::Unknown(*len),
            Shape::Scalar | Shape::Text(_) => Shape::event(),
        }
    }

    /// A bound of both: the value is one or the other.
    fn join(&self, other: &Shape) -> Shape {
        use Shape::{Collection, Scalar, Text, Unknown};
        match (self, other) {
            (Scalar, x) | (x, Scalar) => x.clone(),
            (Text(a), Text(b)) => Text(a.max(*b)),
            (Unknown(a), Unknown(b)) => Unknown(a.max(*b)),
            (Unknown(a), Text(b)) | (Text(b), Unknown(a)) => Unknown(a.max(*b)),
            (Collection { len: a, item: x }, Collection { len: b, item: y }) => Collection {
                len: a.max(*b),
                item: Rc::new(x.join(y)),
            },
            (Collection { len, item }, Unknown(u)) | (Unknown(u), Collection { len, item }) => {
                Collection {
                    len: len.max(*u),
                    item: Rc::new(item.join(&Shape::event_element())),
                }
            }
            (Collection { len, item }, Text(t)) | (Text(t), Collection { len, item }) => {
                Collection {
                    len: len.max(*t),
                    item: Rc::clone(item),
                }
            }
        }
    }

    /// `self + other`: numbers stay numbers, strings and lists add up.
    fn concat(&self, other: &Shape) -> Shape {
        use Shape::{Collection, Scalar, Text, Unknown};
        match (self, other) {
            // A number plus anything is arithmetic (or an error): constant size.
            (Scalar, _) | (_, Scalar) => Scalar,
            (Text(a), Text(b)) => Text(add(*a, *b)),
            (Unknown(a), Unknown(b)) => Unknown(add(*a, *b)),
            (Unknown(a), Text(b)) | (Text(a), Unknown(b)) => Text(add(*a, *b)),
            (Collection { len: a, item: x }, Collection { len: b, item: y }) => Collection {
                len: add(*a, *b),
                item: Rc::new(x.join(y)),
            },
            (Collection { len, item }, Unknown(u)) | (Unknown(u), Collection { len, item }) => {
                Collection {
                    len: add(*len, *u),
                    item: Rc::new(item.join(&Shape::event_element())),
                }
            }
            // A type error when evaluated; bounded like the longer operand.
            (Collection { .. }, Text(_)) | (Text(_), Collection { .. }) => self.join(other),
        }
    }

    /// The accumulator after `iterations` steps, each making it like `step`.
    fn grown(&self, step: &Shape, iterations: f64) -> Shape {
        match step {
            Shape::Scalar => self.join(step),
            Shape::Text(len) => Shape::Text(mul(*len, iterations)),
            Shape::Unknown(len) => Shape::Unknown(mul(*len, iterations)),
            Shape::Collection { len, item } => Shape::Collection {
                len: mul(*len, iterations),
                item: Rc::clone(item),
            },
        }
    }
}

/// The part of a condition its cost mostly comes from, to say where to look.
#[derive(Debug, Clone)]
pub(crate) struct Hotspot {
    /// The node, for its position in the source.
    pub id: u64,
    /// What it is, in words: "`.all()` over a 100-element list nested 4 deep".
    pub what: String,
}

/// A condition's estimate.
#[derive(Debug, Clone)]
pub(crate) struct Cost {
    pub steps: f64,
    pub hotspot: Option<Hotspot>,
    /// Comprehensions (by node id) and the steps each element of their range must be charged
    /// when evaluated: the loop's own work per iteration (nested loops charge theirs).
    pub per_element: HashMap<u64, u64>,
    /// The `+` nodes that may build a string or list (rather than add numbers): what they build
    /// grows with the event, so evaluation charges its size.
    pub metered: Vec<u64>,
}

/// Estimates `expr`, a parsed (macro-expanded) condition.
pub(crate) fn estimate(expr: &IdedExpr) -> Cost {
    let mut estimator = Estimator::default();
    let estimate = estimator.node(expr);
    Cost {
        steps: estimate.cost,
        hotspot: estimate.hot.map(|hot| Hotspot {
            id: hot.id,
            what: hot.describe(),
        }),
        per_element: estimator.per_element,
        metered: estimator.metered,
    }
}

/// What a hotspot is, before it is put in words.
#[derive(Debug, Clone)]
enum Kind {
    /// A comprehension over `range`, with `depth` comprehensions nested in it (itself included).
    Loop {
        name: &'static str,
        range: String,
        depth: usize,
    },
    /// `+` building a value of this size.
    Build(f64),
    /// An operator or call whose own work (copying, scanning) is this large.
    Call { name: String, size: f64 },
}

#[derive(Debug, Clone)]
struct Hot {
    id: u64,
    /// The cost this node is responsible for: what it multiplies or does itself.
    cost: f64,
    kind: Kind,
}

impl Hot {
    fn describe(&self) -> String {
        match &self.kind {
            Kind::Loop {
                name,
                range,
                depth: 1,
            } => format!("`.{name}()` over {range}"),
            Kind::Loop { name, range, depth } => {
                format!("`.{name}()` over {range} nested {depth} deep")
            }
            Kind::Build(size) => {
                format!("`+` building a value of about {size:.1e} elements or characters")
            }
            Kind::Call { name, size } => {
                format!("`{name}` on values of about {size:.1e} elements or characters")
            }
        }
    }
}

#[derive(Debug, Clone)]
struct Estimate {
    cost: f64,
    /// The part of `cost` that evaluation charges to the budget as it goes (comprehensions,
    /// and `+` building strings or lists).
    metered: f64,
    shape: Shape,
    hot: Option<Hot>,
}

/// The costliest hotspot of several.
fn hottest<'a>(hots: impl IntoIterator<Item = &'a Option<Hot>>) -> Option<Hot> {
    hots.into_iter()
        .flatten()
        .max_by(|a, b| a.cost.total_cmp(&b.cost))
        .cloned()
}

#[derive(Default)]
struct Estimator {
    /// Comprehension variables in scope, innermost last.
    scope: Vec<(String, Shape)>,
    per_element: HashMap<u64, u64>,
    metered: Vec<u64>,
}

impl Estimator {
    fn lookup(&self, name: &str) -> Shape {
        self.scope
            .iter()
            .rev()
            .find(|(bound, _)| bound == name)
            .map_or_else(Shape::event, |(_, shape)| shape.clone())
    }

    fn node(&mut self, expr: &IdedExpr) -> Estimate {
        let leaf = |shape| Estimate {
            cost: 1.0,
            metered: 0.0,
            shape,
            hot: None,
        };
        match &expr.expr {
            Expr::Literal(literal) => leaf(match literal {
                LiteralValue::String(s) => Shape::Text(s.inner().chars().count() as f64),
                LiteralValue::Bytes(b) => Shape::Text(b.inner().len() as f64),
                _ => Shape::Scalar,
            }),
            Expr::Ident(name) => leaf(self.lookup(name)),
            Expr::Select(select) => {
                let operand = self.node(&select.operand);
                Estimate {
                    cost: add(operand.cost, 1.0),
                    shape: if select.test {
                        Shape::Scalar
                    } else {
                        operand.shape.field()
                    },
                    ..operand
                }
            }
            Expr::List(list) => self.collection(&list.elements.iter().collect::<Vec<_>>()),
            Expr::Map(map) => self.collection(&entries(&map.entries)),
            Expr::Struct(strct) => self.collection(&entries(&strct.entries)),
            Expr::Comprehension(comprehension) => self.comprehension(expr.id, comprehension),
            Expr::Call(call) => {
                let operands: Vec<Estimate> = call
                    .target
                    .iter()
                    .map(|target| target.as_ref())
                    .chain(&call.args)
                    .map(|operand| self.node(operand))
                    .collect();
                self.call(expr.id, &call.func_name, &operands)
            }
            Expr::Unspecified => leaf(Shape::Scalar),
        }
    }

    /// A list, map or struct literal: each entry evaluated and copied in.
    fn collection(&mut self, entries: &[&IdedExpr]) -> Estimate {
        let mut built = Estimate {
            cost: 1.0,
            metered: 0.0,
            shape: Shape::Scalar,
            hot: None,
        };
        let mut item = Shape::Scalar;
        for entry in entries {
            let estimate = self.node(entry);
            built.cost = add(built.cost, add(estimate.cost, estimate.shape.copy()));
            built.metered = add(built.metered, estimate.metered);
            item = item.join(&estimate.shape);
            built.hot = hottest([&built.hot, &estimate.hot]);
        }
        built.shape = Shape::Collection {
            len: entries.len() as f64,
            item: Rc::new(item),
        };
        built
    }

    fn comprehension(&mut self, id: u64, c: &ComprehensionExpr) -> Estimate {
        let range = self.node(&c.iter_range);
        let iterations = range.shape.len();
        let element = range.shape.item();
        let init = self.node(&c.accu_init);
        let outer = self.scope.len();
        self.scope.push((c.iter_var.clone(), element.clone()));
        if let Some(second) = &c.iter_var2 {
            self.scope.push((second.clone(), element.clone()));
        }
        self.scope.push((c.accu_var.clone(), init.shape.clone()));
        let condition = self.node(&c.loop_cond);
        // One iteration: its cost, and the part of it nested loops and `+` charge themselves.
        let mut body = add(PER_ITERATION, condition.cost);
        let mut body_metered = condition.metered;
        let (body_hot, result) = match append_step(c) {
            // `map` / `filter`: cel-rust appends to the accumulator in place (`AppendStep`), so
            // no iteration copies what was accumulated before it.
            Some((guard, items)) => {
                let guard = guard.map(|guard| self.node(guard));
                let items = self.node(items);
                if let Some(guard) = &guard {
                    body = add(body, guard.cost);
                    body_metered = add(body_metered, guard.metered);
                }
                body = add(body, add(items.cost, items.shape.copy()));
                body_metered = add(body_metered, items.metered);
                let result = Estimate {
                    cost: 1.0,
                    metered: 0.0,
                    shape: Shape::Collection {
                        len: mul(iterations, items.shape.len()),
                        item: Rc::new(items.shape.item()),
                    },
                    hot: None,
                };
                let guard_hot = guard.and_then(|g| g.hot);
                (hottest([&condition.hot, &guard_hot, &items.hot]), result)
            }
            None => {
                let step = self.node(&c.loop_step);
                // cel-rust recognises some loop steps by their exact shape (`&&`, `||`, the
                // append of `map`): metering must not wrap them.
                let unwrappable: Vec<u64> = match &c.loop_step.expr {
                    Expr::Call(call) if call.func_name == operators::CONDITIONAL => {
                        call.args.iter().map(|a| a.id).collect()
                    }
                    _ => Vec::new(),
                };
                self.metered
                    .retain(|id| *id != c.loop_step.id && !unwrappable.contains(id));
                body = add(body, step.cost);
                body_metered = add(body_metered, step.metered);
                if step.shape.size() > init.shape.size() {
                    // The accumulator grows; evaluated generically, every step copies it.
                    let grown = init.shape.grown(&step.shape, iterations);
                    body = add(body, grown.copy());
                    if let Some(slot) = self.scope.last_mut() {
                        slot.1 = grown;
                    }
                }
                let result = self.node(&c.result);
                (hottest([&condition.hot, &step.hot]), result)
            }
        };
        self.scope.truncate(outer);
        // What the range's charge covers per element: the iteration minus its nested loops.
        let own = (body - body_metered).max(0.0);
        self.per_element.insert(id, whole(own));
        // Binding the loop variable copies each element: the range's size, once.
        let looping = add(mul(iterations, body), range.shape.copy());
        let cost = add(add(range.cost, init.cost), add(looping, result.cost));
        let metered = add(
            add(range.metered, init.metered),
            add(looping, result.metered),
        );
        let name = macro_name(c);
        let described = describe_range(&c.iter_range, &range.shape);
        let hot = match body_hot {
            // Iterating at most once multiplies nothing: the cost is whatever the body does
            // (a value doubling in a chain of one-element `map`s).
            Some(inner) if iterations <= 1.0 => Some(inner),
            Some(Hot {
                kind: Kind::Loop { depth, .. },
                ..
            }) => Some(Hot {
                id,
                cost: looping,
                kind: Kind::Loop {
                    name,
                    range: described,
                    depth: depth + 1,
                },
            }),
            _ => Some(Hot {
                id,
                cost: looping,
                kind: Kind::Loop {
                    name,
                    range: described,
                    depth: 1,
                },
            }),
        };
        Estimate {
            cost,
            metered,
            shape: result.shape,
            hot: hottest([&hot, &range.hot, &init.hot, &result.hot]),
        }
    }

    fn call(&mut self, id: u64, name: &str, operands: &[Estimate]) -> Estimate {
        let cost = operands.iter().fold(0.0, |sum, o| add(sum, o.cost));
        let metered = operands.iter().fold(0.0, |sum, o| add(sum, o.metered));
        let hot = hottest(operands.iter().map(|o| &o.hot));
        let shape = |i: usize| operands.get(i).map_or(Shape::Scalar, |o| o.shape.clone());
        let copy = |i: usize| operands.get(i).map_or(0.0, |o| o.shape.copy());
        let chars = |i: usize| operands.get(i).map_or(0.0, |o| o.shape.len());
        let copy_all = operands.iter().fold(0.0, |sum, o| add(sum, o.shape.copy()));
        // Own cost (beyond one step for the node itself) and the result's shape.
        let (own, result) = match name {
            operators::CONDITIONAL => {
                // Only one branch is evaluated.
                let branch = |i: usize| operands.get(i).map_or(0.0, |o| o.cost);
                let branch_metered = |i: usize| operands.get(i).map_or(0.0, |o| o.metered);
                return Estimate {
                    cost: add(add(branch(0), branch(1).max(branch(2))), 1.0),
                    metered: add(branch_metered(0), branch_metered(1).max(branch_metered(2))),
                    shape: shape(1).join(&shape(2)),
                    hot,
                };
            }
            operators::ADD => {
                let built = shape(0).concat(&shape(1));
                match built {
                    Shape::Scalar => (0.0, built),
                    _ => {
                        let copy = built.copy();
                        self.metered.push(id);
                        return Estimate {
                            cost: add(cost, add(1.0, copy)),
                            metered: add(metered, copy),
                            hot: hottest([
                                &hot,
                                &Some(Hot {
                                    id,
                                    cost: copy,
                                    kind: Kind::Build(built.size()),
                                }),
                            ]),
                            shape: built,
                        };
                    }
                }
            }
            // Lists and maps compare element by element, strings character by character.
            operators::EQUALS
            | operators::NOT_EQUALS
            | operators::LESS
            | operators::LESS_EQUALS
            | operators::GREATER
            | operators::GREATER_EQUALS => (copy(0).min(copy(1)), Shape::Scalar),
            operators::IN => {
                let each = add(1.0, copy(0).min(shape(1).item().copy()));
                (mul(shape(1).len(), each), Shape::Scalar)
            }
            operators::INDEX | operators::OPT_INDEX => (0.0, shape(0).item()),
            operators::OPT_SELECT => (0.0, shape(0).field()),
            operators::LOGICAL_AND
            | operators::LOGICAL_OR
            | operators::LOGICAL_NOT
            | operators::NOT_STRICTLY_FALSE
            | operators::NEGATE
            | operators::SUBSTRACT
            | operators::MULTIPLY
            | operators::DIVIDE
            | operators::MODULO => (0.0, Shape::Scalar),
            // Counting a string's characters scans it.
            "size" => (mul(PER_CHAR, chars(0)), Shape::Scalar),
            "contains" | "startsWith" | "endsWith" => {
                (mul(PER_CHAR, add(chars(0), chars(1))), Shape::Scalar)
            }
            "matches" => {
                let compile = add(REGEX, mul(REGEX_PER_CHAR, chars(1)));
                (add(mul(PER_CHAR, chars(0)), compile), Shape::Scalar)
            }
            "int" | "uint" | "double" | "bool" | "type" | "duration" | "timestamp" => {
                (copy(0), Shape::Scalar)
            }
            "string" | "bytes" => (
                copy(0),
                match shape(0) {
                    Shape::Scalar => Shape::Text(32.0),
                    other => Shape::Text(other.size()),
                },
            ),
            "dyn" | "optional.of" | "optional.ofNonZeroValue" | "value" | "or" | "orValue" => {
                (copy(0), shape(0).join(&shape(1)))
            }
            "hasValue" | "optional.none" => (0.0, Shape::Scalar),
            getter if getter.starts_with("get") => (copy_all, Shape::Scalar),
            // `max` / `min` convert every argument (a copy) and compare them.
            "max" | "min" => {
                let joined = operands
                    .iter()
                    .fold(Shape::Scalar, |joined, o| joined.join(&o.shape.item()));
                (copy_all, joined)
            }
            // Unknown: an error when evaluated, or a function of an extension; assume it
            // reads all of its operands and returns as much.
            _ => (
                add(UNKNOWN_CALL, copy_all),
                Shape::Unknown(copy_all.max(ASSUMED_EVENT_SIZE)),
            ),
        };
        let own_hot = (own > 1.0).then(|| Hot {
            id,
            cost: own,
            kind: Kind::Call {
                name: display_name(name),
                size: operands.iter().fold(0.0, |sum, o| add(sum, o.shape.size())),
            },
        });
        Estimate {
            cost: add(cost, add(1.0, own)),
            metered,
            shape: result,
            hot: hottest([&own_hot, &hot]),
        }
    }
}

/// The keys and values of a map or struct literal.
fn entries(entries: &[cel::common::ast::IdedEntryExpr]) -> Vec<&IdedExpr> {
    entries
        .iter()
        .flat_map(|entry| match &entry.expr {
            EntryExpr::MapEntry(e) => vec![&e.key, &e.value],
            EntryExpr::StructField(f) => vec![&f.value],
        })
        .collect()
}

/// `map` / `filter` as cel-rust runs them in place: `@result + [x]`, optionally guarded as
/// `g ? @result + [x] : @result`, with a literal loop condition and `@result` as the result.
/// Returns the guard and the appended list.
fn append_step(c: &ComprehensionExpr) -> Option<(Option<&IdedExpr>, &IdedExpr)> {
    let is_accu = |e: &IdedExpr| matches!(&e.expr, Expr::Ident(name) if *name == c.accu_var);
    /// `@result + [x]`: the `[x]`.
    fn appended(e: &IdedExpr, is_accu: impl Fn(&IdedExpr) -> bool) -> Option<&IdedExpr> {
        match &e.expr {
            Expr::Call(call) if call.func_name == operators::ADD && call.target.is_none() => {
                match call.args.as_slice() {
                    [lhs, rhs] if is_accu(lhs) && matches!(rhs.expr, Expr::List(_)) => Some(rhs),
                    _ => None,
                }
            }
            _ => None,
        }
    }
    let empty_init = matches!(&c.accu_init.expr, Expr::List(list) if list.elements.is_empty());
    if !empty_init || !is_accu(&c.result) || !matches!(c.loop_cond.expr, Expr::Literal(_)) {
        return None;
    }
    match &c.loop_step.expr {
        Expr::Call(call) if call.func_name == operators::CONDITIONAL && call.target.is_none() => {
            match call.args.as_slice() {
                [guard, step, otherwise] if is_accu(otherwise) => {
                    Some((Some(guard), appended(step, is_accu)?))
                }
                _ => None,
            }
        }
        _ => Some((None, appended(&c.loop_step, is_accu)?)),
    }
}

/// The macro a comprehension was written as, recognised by its accumulator.
fn macro_name(c: &ComprehensionExpr) -> &'static str {
    let filters = |items: &IdedExpr| match &items.expr {
        Expr::List(list) => {
            matches!(list.elements.as_slice(), [only] if matches!(&only.expr, Expr::Ident(v) if *v == c.iter_var))
        }
        _ => false,
    };
    match &c.accu_init.expr {
        Expr::Literal(LiteralValue::Boolean(b)) if *b.inner() => "all",
        Expr::Literal(LiteralValue::Boolean(_)) => "exists",
        Expr::Literal(LiteralValue::Int(_)) => "exists_one",
        Expr::List(_) => match append_step(c) {
            Some((Some(_), items)) if filters(items) => "filter",
            _ => "map",
        },
        _ => "fold",
    }
}

/// A comprehension's range in words.
fn describe_range(range: &IdedExpr, shape: &Shape) -> String {
    let len = shape.len();
    match (&range.expr, shape) {
        (Expr::List(_), _) => format!("a {}-element list", thousands(whole(len))),
        (Expr::Map(_), _) => format!("a {}-entry map", thousands(whole(len))),
        (_, Shape::Unknown(_)) if len <= ASSUMED_EVENT_SIZE => format!(
            "a value of the event (assumed to hold {} elements)",
            thousands(whole(ASSUMED_EVENT_SIZE))
        ),
        _ => format!("a list of up to {len:.1e} elements"),
    }
}

/// `_==_` as `==`, `@in` as `in`, a function by its name and parentheses.
fn display_name(name: &str) -> String {
    if name.starts_with('_') || name.starts_with('@') || name.starts_with('!') {
        name.trim_start_matches('@').replace('_', "")
    } else {
        format!("{name}()")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steps(source: &str) -> f64 {
        let program = cel::Program::compile(source).expect("parses");
        estimate(program.expression()).steps
    }

    #[test]
    fn saturating_arithmetic_never_overflows_nor_makes_nan() {
        assert_eq!(mul(CAP, CAP), CAP);
        assert_eq!(add(CAP, CAP), CAP);
        assert_eq!(mul(0.0, CAP), 0.0, "an empty range multiplies nothing");
        assert_eq!(sat(f64::NAN), CAP);
        assert_eq!(sat(f64::INFINITY), CAP);
    }

    #[test]
    fn nesting_multiplies_and_literals_are_exact() {
        let one = steps("[1, 2, 3].all(x, x > 0)");
        let two = steps("[1, 2, 3].all(x, [1, 2, 3].all(y, x + y > 0))");
        assert!(one > 3.0 * PER_ITERATION && one < 60.0, "{one}");
        assert!(two > 3.0 * one, "{two} vs {one}");
        assert!(steps("[].all(x, x > 0)") < 10.0);
    }

    #[test]
    fn event_values_have_the_assumed_size() {
        let over_event = steps("other.items.exists(i, i > 0)");
        assert!(
            over_event > ASSUMED_EVENT_SIZE * PER_ITERATION,
            "{over_event}"
        );
        assert!(over_event < 20.0 * ASSUMED_EVENT_SIZE, "{over_event}");
    }

    #[test]
    fn comprehensions_say_what_to_charge_per_element() {
        let program = cel::Program::compile("[1, 2].all(x, [3, 4].all(y, x < y))").expect("parses");
        let cost = estimate(program.expression());
        assert_eq!(cost.per_element.len(), 2);
        let (outer, inner) = {
            let mut values: Vec<u64> = cost.per_element.values().copied().collect();
            values.sort_unstable();
            (values[1], values[0])
        };
        // The outer loop builds the inner list each time; the inner loop's iterations are
        // charged by the inner range itself.
        assert!(outer > inner, "{outer} {inner}");
        assert!(inner >= whole(PER_ITERATION));
    }

    #[test]
    fn only_plus_that_builds_strings_or_lists_is_metered() {
        let metered = |source: &str| {
            let program = cel::Program::compile(source).expect("parses");
            estimate(program.expression()).metered.len()
        };
        assert_eq!(metered("courseid + 1 > 2"), 0);
        assert_eq!(metered("other.a + other.b == ''"), 1);
        assert_eq!(metered("'a' + 'b' + other.s == ''"), 2);
        // map's `@result + [x]` is cel-rust's in-place append: never metered.
        assert_eq!(metered("[1, 2].map(x, x * 2) == [2, 4]"), 0);
        assert_eq!(metered("[1, 2].exists_one(x, x > 1)"), 0);
    }
}
