//! Rule templates: handlebars in strict mode, with every value escaped for where it lands.
//!
//! Before compiling, each `{{expression}}` is wrapped in an output helper chosen by its place:
//! in a JSON body, inside a string literal `{{str …}}` (escaped string content) and elsewhere
//! `{{json …}}` (a typed JSON value: numbers stay numbers, null is `null`, strings are quoted);
//! in XML `{{xml …}}`; in a URL path `{{urlpart …}}`; in headers and routing keys `{{text …}}`.
//! So `{"user": "{{userid}}"}` renders `{"user": "27"}` as the original plugin did, while
//! quotes, backslashes, braces or unicode in values can never break the document.
//! `{{{expression}}}` is the escape hatch: the value verbatim.
//!
//! Templates cannot read files or run code: the only helpers are the ones registered here.

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, Utc};
use handlebars::{
    Context, Handlebars, Helper, HelperDef, RenderContext, RenderError, RenderErrorReason,
    Renderable, ScopedJson,
};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

/// Where a template's output goes, which decides how values are escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// A JSON document; the result must parse as JSON.
    Json,
    /// XML text (SOAP bodies, XML content types).
    Xml,
    /// A URL path (and query): values are percent-encoded.
    Path,
    /// Plain text: headers, routing keys, ordering keys, other content types.
    Text,
}

impl Mode {
    /// The body mode for a content type.
    pub(crate) fn for_content_type(content_type: &str) -> Mode {
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if essence == "application/json" || essence.ends_with("+json") {
            Mode::Json
        } else if essence.ends_with("/xml") || essence.ends_with("+xml") {
            Mode::Xml
        } else {
            Mode::Text
        }
    }

    fn helper(self, inside: Inside) -> &'static str {
        match (self, inside) {
            (Mode::Json, Inside::JsonString) => "str",
            (Mode::Json, _) => "json",
            (Mode::Xml, Inside::Cdata) => "cdata",
            (Mode::Xml, _) => "xml",
            (Mode::Path, _) => "urlpart",
            (Mode::Text, _) => "text",
        }
    }
}

/// Where in the document an expression stands, when that changes how it is escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Inside {
    Plain,
    /// Between the quotes of a JSON string literal.
    JsonString,
    /// In an XML `<![CDATA[ … ]]>` section, where entities are not decoded.
    Cdata,
}

const CDATA_OPEN: &str = "<![CDATA[";
const CDATA_CLOSE: &str = "]]>";

/// A template that does not compile, with where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (line {line}, column {column})")]
pub(crate) struct TemplateError {
    pub message: String,
    pub line: usize,
    pub column: usize,
}

/// Wraps each expression in the output helper its position calls for.
pub(crate) fn rewrite(source: &str, mode: Mode) -> String {
    let mut out = String::with_capacity(source.len() + 32);
    let mut inside = Inside::Plain;
    let mut rest = source;
    while !rest.is_empty() {
        if rest.starts_with("{{") {
            let triple = rest.starts_with("{{{");
            let close = if triple { "}}}" } else { "}}" };
            let open_len = if triple { 3 } else { 2 };
            let Some(end) = rest[open_len..].find(close) else {
                // Unterminated: leave it for the handlebars parser to report.
                out.push_str(rest);
                break;
            };
            let token = &rest[..open_len + end + close.len()];
            if triple {
                out.push_str(token);
            } else {
                out.push_str(&wrap(&rest[2..2 + end], mode, inside));
            }
            rest = &rest[token.len()..];
            continue;
        }
        if mode == Mode::Xml {
            let marker = match inside {
                Inside::Cdata => CDATA_CLOSE,
                _ => CDATA_OPEN,
            };
            if let Some(after) = rest.strip_prefix(marker) {
                out.push_str(marker);
                inside = if inside == Inside::Cdata {
                    Inside::Plain
                } else {
                    Inside::Cdata
                };
                rest = after;
                continue;
            }
        }
        let mut chars = rest.chars();
        let Some(c) = chars.next() else { break };
        out.push(c);
        if mode == Mode::Json {
            if inside == Inside::JsonString && c == '\\' {
                // An escaped character (`\"`) cannot end the string.
                if let Some(next) = chars.next() {
                    out.push(next);
                }
            } else if c == '"' {
                inside = if inside == Inside::JsonString {
                    Inside::Plain
                } else {
                    Inside::JsonString
                };
            }
        }
        rest = chars.as_str();
    }
    out
}

/// `inner` is what stands between `{{` and `}}`.
fn wrap(inner: &str, mode: Mode, inside: Inside) -> String {
    let (left_tilde, rest) = match inner.strip_prefix('~') {
        Some(rest) => (true, rest),
        None => (false, inner),
    };
    let (right_tilde, body) = match rest.strip_suffix('~') {
        Some(body) => (true, body),
        None => (false, rest),
    };
    let body = body.trim();
    let structural = body.is_empty()
        || body.starts_with(['#', '/', '^', '!', '>', '&', '*'])
        || body == "else"
        || body.starts_with("else ");
    let first_word = body.split_whitespace().next().unwrap_or("");
    let already_json = mode == Mode::Json && inside == Inside::Plain && first_word == "json";
    if structural || already_json {
        return format!("{{{{{inner}}}}}");
    }
    let helper = mode.helper(inside);
    let argument = if body.contains(char::is_whitespace) {
        format!("({body})")
    } else {
        body.to_owned()
    };
    format!(
        "{{{{{}{helper} {argument}{}}}}}",
        if left_tilde { "~" } else { "" },
        if right_tilde { "~" } else { "" }
    )
}

/// Every helper a template may use, and strict mode.
pub(crate) fn registry() -> Handlebars<'static> {
    let mut hb = Handlebars::new();
    hb.set_strict_mode(true);
    hb.set_prevent_indent(true);
    hb.register_escape_fn(handlebars::no_escape);
    hb.register_helper(
        "json",
        Box::new(Output(|v: &Value| {
            serde_json::to_string(v).unwrap_or_default()
        })),
    );
    hb.register_helper(
        "str",
        Box::new(Output(|v: &Value| json_string_content(&as_text(v)))),
    );
    hb.register_helper("xml", Box::new(Output(|v: &Value| xml_escape(&as_text(v)))));
    hb.register_helper(
        "cdata",
        Box::new(Output(|v: &Value| cdata_text(&as_text(v)))),
    );
    hb.register_helper(
        "urlpart",
        Box::new(Output(|v: &Value| {
            utf8_percent_encode(&as_text(v), PATH_UNSAFE).to_string()
        })),
    );
    hb.register_helper("text", Box::new(Output(|v: &Value| as_text(v))));
    hb.register_helper(
        "upper",
        Box::new(Output(|v: &Value| as_text(v).to_uppercase())),
    );
    hb.register_helper(
        "lower",
        Box::new(Output(|v: &Value| as_text(v).to_lowercase())),
    );
    hb.register_helper("default", Box::new(DefaultHelper));
    hb.register_helper("date", Box::new(DateHelper));
    hb.register_helper("each", Box::new(BudgetedEach));
    hb
}

/// Checks that a template compiles; positions refer to the text as written.
#[cfg(test)]
pub fn check(source: &str, mode: Mode) -> Result<(), TemplateError> {
    let mut hb = registry();
    register(&mut hb, "check", source, mode)
}

/// Compiles `source` under `name`.
pub(crate) fn register(
    hb: &mut Handlebars<'static>,
    name: &str,
    source: &str,
    mode: Mode,
) -> Result<(), TemplateError> {
    // Syntax errors are reported against the original, whose positions the author knows.
    let original = handlebars::Template::compile(source).map_err(|e| template_error(&e))?;
    if block_depth(&original) > MAX_BLOCK_DEPTH {
        return Err(TemplateError {
            message: format!("blocks are nested more than {MAX_BLOCK_DEPTH} deep"),
            line: 1,
            column: 1,
        });
    }
    refuse_partials(&original)?;
    crate::shape::check(&original, mode)?;
    drop(original);
    hb.register_template_string(name, rewrite(source, mode))
        .map_err(|e| template_error(&e))
}

/// Deepest nesting of blocks (`{{#if}}`, `{{#each}}`, `{{else if}}` chains) accepted. Rendering
/// recurses once per level, and about 2,000 nested blocks overflow a worker thread's stack: an
/// abort of the whole process, not an error.
pub(crate) const MAX_BLOCK_DEPTH: usize = 64;

/// Partials and decorators have no use in a rule (nothing registers a partial), and an inline
/// partial that includes itself recurses until the thread's stack overflows: an abort of the
/// whole process, in the matcher or in api's preview. They are refused where they are written.
fn refuse_partials(template: &handlebars::Template) -> Result<(), TemplateError> {
    use handlebars::template::TemplateElement;
    let mut stack = vec![template];
    while let Some(template) = stack.pop() {
        for (index, element) in template.elements.iter().enumerate() {
            match element {
                TemplateElement::PartialExpression(_)
                | TemplateElement::PartialBlock(_)
                | TemplateElement::DecoratorExpression(_)
                | TemplateElement::DecoratorBlock(_) => {
                    let (line, column) = template
                        .mapping
                        .get(index)
                        .map_or((1, 1), |mapping| (mapping.0, mapping.1));
                    return Err(TemplateError {
                        message: "partials (`{{> …}}`) and decorators (`{{* …}}`) are not \
                                  available in rule templates"
                            .into(),
                        line,
                        column,
                    });
                }
                TemplateElement::HelperBlock(block) => {
                    stack.extend([&block.template, &block.inverse].into_iter().flatten());
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// How deep blocks nest in a template, walked without recursion.
fn block_depth(template: &handlebars::Template) -> usize {
    use handlebars::template::TemplateElement;
    let mut deepest = 0;
    let mut stack = vec![(template, 0usize)];
    while let Some((template, depth)) = stack.pop() {
        deepest = deepest.max(depth);
        for element in &template.elements {
            match element {
                TemplateElement::HelperBlock(block) => {
                    for inner in [&block.template, &block.inverse].into_iter().flatten() {
                        stack.push((inner, depth + 1));
                    }
                }
                TemplateElement::DecoratorBlock(block) | TemplateElement::PartialBlock(block) => {
                    if let Some(inner) = &block.template {
                        stack.push((inner, depth + 1));
                    }
                }
                _ => {}
            }
        }
    }
    deepest
}

fn template_error(error: &handlebars::TemplateError) -> TemplateError {
    let (line, column) = error.pos().unwrap_or((1, 1));
    TemplateError {
        line,
        column,
        message: error.reason().to_string(),
    }
}

/// Renders a registered template against a prepared context.
#[cfg(test)]
pub fn render(hb: &Handlebars<'static>, name: &str, context: &Context) -> Result<String, String> {
    hb.render_with_context(name, context)
        .map_err(|e| describe(&e))
}

/// Renders like [`render`], writing at most `room` bytes and taking what it wrote from it. A
/// template that would write more is stopped there — a nested `{{#each}}` can render
/// megabytes from a small event — instead of allocating its whole output first.
pub(crate) fn render_within(
    hb: &Handlebars<'static>,
    name: &str,
    context: &Context,
    room: &mut usize,
) -> Result<String, RenderFailure> {
    let mut bounded = Bounded {
        written: Vec::new(),
        room: *room,
        exceeded: false,
    };
    let rendered = hb.render_with_context_to_write(name, context, &mut bounded);
    if bounded.exceeded {
        return Err(RenderFailure::TooLarge);
    }
    rendered.map_err(|e| RenderFailure::Template(describe(&e)))?;
    *room = bounded.room;
    String::from_utf8(bounded.written)
        .map_err(|_| RenderFailure::Template("the rendered text is not UTF-8".into()))
}

/// Why a template could not be rendered for an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RenderFailure {
    /// The output would pass the room it was given.
    TooLarge,
    /// A missing variable, a helper's error: the message says which, and where.
    Template(String),
}

/// The rendered bytes, refusing to grow past `room`.
struct Bounded {
    written: Vec<u8>,
    room: usize,
    exceeded: bool,
}

impl std::io::Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.len() > self.room {
            self.exceeded = true;
            return Err(std::io::Error::other("the rendered request is too large"));
        }
        self.room -= buf.len();
        self.written.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Render errors as authors read them: the variable a strict lookup missed, and where.
fn describe(error: &RenderError) -> String {
    let what = match error.reason() {
        RenderErrorReason::MissingVariable(Some(path)) => {
            format!("variable `{path}` is missing from the event")
        }
        RenderErrorReason::MissingVariable(None) => {
            "a variable is missing from the event".to_owned()
        }
        other => other.to_string(),
    };
    match (error.line_no, error.column_no) {
        (Some(line), Some(column)) => format!("{what} (line {line}, column {column})"),
        _ => what,
    }
}

/// Characters left alone in a path segment: RFC 3986 unreserved.
const PATH_UNSAFE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A value as text: strings as they are, null as nothing, other values as compact JSON.
fn as_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The content of a JSON string literal for `text` (without the surrounding quotes).
fn json_string_content(text: &str) -> String {
    let quoted = serde_json::to_string(text).unwrap_or_default();
    quoted
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or_default()
        .to_owned()
}

fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 cannot carry most control characters, even escaped.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

/// Text inside a CDATA section: verbatim (entities mean nothing there), except that `]]>`
/// would end the section, so it is split across two sections, and characters XML cannot carry
/// are left out.
fn cdata_text(text: &str) -> String {
    let storable: String = text
        .chars()
        .filter(|&c| (c as u32) >= 0x20 || matches!(c, '\t' | '\n' | '\r'))
        .collect();
    storable.replace("]]>", "]]]]><![CDATA[>")
}

/// The first parameter's value, or an error naming the missing variable (strict mode).
fn first_param<'a>(h: &'a Helper<'_>) -> Result<&'a Value, RenderError> {
    let param = h
        .param(0)
        .ok_or(RenderErrorReason::ParamNotFoundForIndex("output", 0))?;
    if param.is_value_missing() {
        return Err(RenderErrorReason::MissingVariable(param.relative_path().cloned()).into());
    }
    Ok(param.value())
}

/// A helper that formats its one argument as text.
struct Output<F>(F);

impl<F: Fn(&Value) -> String + Send + Sync> HelperDef for Output<F> {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        Ok(ScopedJson::Derived(Value::String((self.0)(first_param(
            h,
        )?))))
    }
}

/// `{{#each}}` as handlebars has it (`this`, `@index`, `@key`, `@first`, `@last`, block
/// parameters, `{{else}}` for nothing to iterate), but every iteration spends a step of the
/// rule's budget: nested loops over an event's lists multiply, and a template that writes
/// nothing per iteration is otherwise never stopped by the size limit.
struct BudgetedEach;

impl HelperDef for BudgetedEach {
    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        r: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        rc: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn handlebars::Output,
    ) -> handlebars::HelperResult {
        let param = h
            .param(0)
            .ok_or(RenderErrorReason::ParamNotFoundForIndex("each", 0))?;
        let Some(template) = h.template() else {
            return Ok(());
        };
        let items: Vec<(Value, &Value)> = match param.value() {
            Value::Array(list) if !list.is_empty() || h.inverse().is_none() => list
                .iter()
                .enumerate()
                .map(|(i, v)| (Value::from(i), v))
                .collect(),
            Value::Object(map) if !map.is_empty() || h.inverse().is_none() => map
                .iter()
                .map(|(k, v)| (Value::String(k.clone()), v))
                .collect(),
            _ => {
                return match h.inverse() {
                    Some(inverse) => inverse.render(r, ctx, rc, out),
                    None if r.strict_mode() => Err(RenderErrorReason::MissingVariable(
                        param.relative_path().cloned(),
                    )
                    .into()),
                    None => Ok(()),
                };
            }
        };
        let is_object = param.value().is_object();
        let base_path = param.context_path();
        let mut block = handlebars::BlockContext::new();
        match base_path {
            Some(path) => block.base_path_mut().clone_from(path),
            None => block.set_base_value(param.value().clone()),
        }
        rc.push_block(block);
        let last = items.len().saturating_sub(1);
        for (i, (key, value)) in items.into_iter().enumerate() {
            crate::budget::spend(1)
                .map_err(|e| RenderErrorReason::Other(format!("the template {e}")))?;
            if let Some(block) = rc.block_mut() {
                block.set_local_var("first", Value::Bool(i == 0));
                block.set_local_var("last", Value::Bool(i == last));
                block.set_local_var("index", Value::from(i));
                if is_object {
                    block.set_local_var("key", key.clone());
                }
                let segment = match &key {
                    Value::String(k) => k.clone(),
                    other => other.to_string(),
                };
                match base_path {
                    Some(path) => {
                        let mut item_path = path.clone();
                        item_path.push(segment);
                        *block.base_path_mut() = item_path;
                    }
                    None => block.set_base_value(value.clone()),
                }
                let mut params = handlebars::BlockParams::new();
                let mut add = |name: &'rc str, holder_value: &Value, is_item: bool| {
                    if is_item && base_path.is_some() {
                        params.add_path(name, Vec::new())
                    } else {
                        params.add_value(name, holder_value.clone())
                    }
                };
                if let Some(name) = h.block_param() {
                    add(name, value, true)?;
                    block.set_block_params(params);
                } else if let Some((item, index)) = h.block_param_pair() {
                    add(item, value, true)?;
                    add(index, &key, false)?;
                    block.set_block_params(params);
                }
            }
            template.render(r, ctx, rc, out)?;
        }
        rc.pop_block();
        Ok(())
    }
}

/// `{{default value fallback}}`: the value, or the fallback when it is missing or null.
struct DefaultHelper;

impl HelperDef for DefaultHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let fallback = h
            .param(1)
            .ok_or(RenderErrorReason::ParamNotFoundForIndex("default", 1))?;
        let value = h
            .param(0)
            .filter(|p| !p.is_value_missing() && !p.value().is_null())
            .map_or_else(|| fallback.value().clone(), |p| p.value().clone());
        Ok(ScopedJson::Derived(value))
    }
}

/// `{{date value [format]}}`: Unix seconds or an RFC 3339 time, formatted with strftime
/// (default RFC 3339, UTC).
struct DateHelper;

impl HelperDef for DateHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let value = first_param(h)?;
        let time: DateTime<Utc> = match value {
            Value::Number(n) => n
                .as_i64()
                .and_then(|secs| DateTime::from_timestamp(secs, 0)),
            Value::String(s) => s
                .parse::<i64>()
                .ok()
                .and_then(|secs| DateTime::from_timestamp(secs, 0))
                .or_else(|| {
                    DateTime::parse_from_rfc3339(s)
                        .ok()
                        .map(|t| t.with_timezone(&Utc))
                }),
            _ => None,
        }
        .ok_or_else(|| {
            RenderErrorReason::Other(format!(
                "date: `{value}` is not a Unix time or an RFC 3339 time"
            ))
        })?;
        let formatted = match h.param(1).map(|p| p.value()) {
            None => time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            Some(Value::String(format)) => {
                let items: Vec<Item<'_>> = StrftimeItems::new(format).collect();
                if items.iter().any(|item| matches!(item, Item::Error)) {
                    return Err(RenderErrorReason::Other(format!(
                        "date: `{format}` is not a valid strftime format"
                    ))
                    .into());
                }
                time.format_with_items(items.into_iter()).to_string()
            }
            Some(other) => {
                return Err(RenderErrorReason::Other(format!(
                    "date: the format must be a string, not {other}"
                ))
                .into());
            }
        };
        Ok(ScopedJson::Derived(Value::String(formatted)))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn render_one(source: &str, mode: Mode, data: &Value) -> Result<String, String> {
        let mut hb = registry();
        register(&mut hb, "t", source, mode).map_err(|e| e.to_string())?;
        let context = Context::wraps(data).map_err(|e| e.to_string())?;
        render(&hb, "t", &context)
    }

    fn event() -> Value {
        json!({"eventname": "\\core\\event\\user_created", "userid": 27, "courseid": 12,
               "relateduserid": null, "other": {"grade": 72.5, "name": "O'Brien \"Bob\" \\ {{x}} ü", "list": [1, 2]},
               "timecreated": 1772006400})
    }

    #[test]
    fn expressions_are_wrapped_by_position() {
        assert_eq!(
            rewrite(r#"{"a": "{{x}}", "b": {{y}}}"#, Mode::Json),
            r#"{"a": "{{str x}}", "b": {{json y}}}"#
        );
        assert_eq!(
            rewrite(r#"{"a": "\"{{x}}"}"#, Mode::Json),
            r#"{"a": "\"{{str x}}"}"#
        );
        assert_eq!(
            rewrite(r#"{{default x 1}}"#, Mode::Json),
            r#"{{json (default x 1)}}"#
        );
        assert_eq!(
            rewrite(r#"{{json other}}"#, Mode::Json),
            r#"{{json other}}"#
        );
        assert_eq!(
            rewrite(r#"{{#if x}}{{y}}{{else}}{{z}}{{/if}}"#, Mode::Text),
            r#"{{#if x}}{{text y}}{{else}}{{text z}}{{/if}}"#
        );
        assert_eq!(
            rewrite(r#"{{{raw}}} {{~ x ~}}"#, Mode::Xml),
            r#"{{{raw}}} {{~xml x~}}"#
        );
        assert_eq!(
            rewrite("/users/{{userid}}", Mode::Path),
            "/users/{{urlpart userid}}"
        );
    }

    #[test]
    fn original_plugin_templates_render_the_same() {
        let data = event();
        let rendered = render_one(
            r#"{"event": "{{eventname}}", "user": "{{userid}}"}"#,
            Mode::Json,
            &data,
        )
        .expect("renders");
        assert_eq!(
            rendered,
            r#"{"event": "\\core\\event\\user_created", "user": "27"}"#
        );
        let unquoted = render_one(
            r#"{"user": {{userid}}, "course": {{courseid}}}"#,
            Mode::Json,
            &data,
        )
        .expect("renders");
        assert_eq!(unquoted, r#"{"user": 27, "course": 12}"#);
    }

    #[test]
    fn values_are_typed_outside_strings_and_escaped_inside() {
        let data = event();
        let rendered = render_one(
            r#"{"name": "{{other.name}}", "raw": {{other.name}}, "rel": {{relateduserid}}, "grade": {{other.grade}}, "list": {{other.list}}, "listtext": "{{other.list}}"}"#,
            Mode::Json,
            &data,
        )
        .expect("renders");
        let parsed: Value = serde_json::from_str(&rendered).expect("valid JSON");
        assert_eq!(parsed["name"], data["other"]["name"]);
        assert_eq!(parsed["raw"], data["other"]["name"]);
        assert_eq!(parsed["rel"], Value::Null);
        assert_eq!(parsed["grade"], 72.5);
        assert_eq!(parsed["list"], json!([1, 2]));
        assert_eq!(parsed["listtext"], "[1,2]");
    }

    #[test]
    fn helpers_work() {
        let data = event();
        let cases = [
            ("{{upper other.name}}", "O'BRIEN \"BOB\" \\ {{X}} Ü"),
            ("{{default relateduserid 'nobody'}}", "nobody"),
            ("{{default other.missing 0}}", "0"),
            ("{{date timecreated}}", "2026-02-25T08:00:00Z"),
            ("{{date timecreated '%Y-%m-%d'}}", "2026-02-25"),
            (
                "{{xml other.name}}",
                "O&apos;Brien &quot;Bob&quot; \\ {{x}} ü",
            ),
        ];
        for (source, expected) in cases {
            assert_eq!(
                render_one(source, Mode::Text, &data).as_deref(),
                Ok(expected),
                "{source}"
            );
        }
        assert_eq!(
            render_one("<n>{{other.name}}</n>", Mode::Xml, &data).as_deref(),
            Ok("<n>O&apos;Brien &quot;Bob&quot; \\ {{x}} ü</n>")
        );
        assert_eq!(
            render_one("/u/{{other.name}}", Mode::Path, &data).as_deref(),
            Ok("/u/O%27Brien%20%22Bob%22%20%5C%20%7B%7Bx%7D%7D%20%C3%BC")
        );
    }

    #[test]
    fn each_iterates_as_handlebars_does_and_spends_the_budget() {
        let data = json!({"list": ["a", "b", "c"], "map": {"x": 1, "y": 2}, "empty": [],
                          "outer": "o", "rows": [{"n": 1}, {"n": 2}]});
        let cases = [
            (
                "{{#each list}}{{@index}}{{this}}{{#if @first}}<{{/if}}{{#if @last}}>{{/if}},{{/each}}",
                "0a<,1b,2c>,",
            ),
            ("{{#each map}}{{@key}}={{this}};{{/each}}", "x=1;y=2;"),
            (
                "{{#each list as |item i|}}{{i}}:{{item}} {{/each}}",
                "0:a 1:b 2:c ",
            ),
            ("{{#each map as |v k|}}{{k}}{{v}}{{/each}}", "x1y2"),
            (
                "{{#each rows}}{{n}}{{../outer}}{{@root.outer}}{{/each}}",
                "1oo2oo",
            ),
            ("{{#each empty}}x{{else}}none{{/each}}", "none"),
            ("{{#each empty}}x{{/each}}", ""),
            (
                "{{#each list}}{{#each ../map}}{{@../index}}{{@key}}{{/each}}{{/each}}",
                "0x0y1x1y2x2y",
            ),
        ];
        for (source, expected) in cases {
            assert_eq!(
                render_one(source, Mode::Text, &data).as_deref(),
                Ok(expected),
                "{source}"
            );
        }
        assert!(
            render_one("{{#each nope}}x{{/each}}", Mode::Text, &data)
                .is_err_and(|e| e.contains("nope")),
            "strict: a missing list is an error"
        );
        // Nested loops that write nothing are stopped by the budget, not by the size limit.
        let data = json!({"l": (0..100).collect::<Vec<_>>()});
        let silent = "{{#each l}}{{#each @root.l}}{{#each @root.l}}{{#each @root.l}}{{/each}}{{/each}}{{/each}}{{/each}}";
        let mut hb = registry();
        register(&mut hb, "t", silent, Mode::Text).expect("compiles");
        let context = Context::wraps(&data).expect("context");
        let outcome = crate::budget::within(
            crate::budget::Budget::new(10_000, std::time::Duration::from_secs(60)),
            || render(&hb, "t", &context),
        );
        assert!(
            outcome
                .as_ref()
                .is_err_and(|e| e.contains("evaluation budget")),
            "{outcome:?}"
        );
    }

    #[test]
    fn partials_are_refused_so_none_can_recurse() {
        // Found while bounding templates: this one compiled, and rendering it overflowed the
        // stack (an abort of the matcher, or of api on a viewer's preview).
        for source in [
            "{{#*inline \"p\"}}x{{> p}}{{/inline}}{{> p}}",
            "{{> layout}}",
            "{{#> layout}}x{{/layout}}",
            "{{#if x}}{{*decorator}}{{/if}}",
        ] {
            let error = check(source, Mode::Text).expect_err(source);
            assert!(error.message.contains("partials"), "{source}: {error:?}");
        }
    }

    #[test]
    fn renders_stop_at_their_room() {
        let data = json!({"l": (0..20).collect::<Vec<_>>()});
        let mut hb = registry();
        register(
            &mut hb,
            "t",
            "{{#each l}}{{#each @root.l}}0123456789{{/each}}{{/each}}",
            Mode::Text,
        )
        .expect("compiles");
        let context = Context::wraps(&data).expect("context");
        let mut room = 1000;
        assert_eq!(
            render_within(&hb, "t", &context, &mut room),
            Err(RenderFailure::TooLarge)
        );
        let mut room = 4000;
        let rendered = render_within(&hb, "t", &context, &mut room).expect("fits");
        assert_eq!((rendered.len(), room), (4000, 0));
    }

    #[test]
    fn cdata_sections_hold_values_verbatim() {
        let data = json!({"v": "a \"b\" & <c> ]]> d"});
        assert_eq!(
            render_one("<x><![CDATA[{{v}}]]></x><y a=\"{{v}}\"/>", Mode::Xml, &data).as_deref(),
            Ok(
                "<x><![CDATA[a \"b\" & <c> ]]]]><![CDATA[> d]]></x><y a=\"a &quot;b&quot; &amp; &lt;c&gt; ]]&gt; d\"/>"
            )
        );
    }

    #[test]
    fn strict_mode_names_the_missing_variable() {
        let error =
            render_one(r#"{"x": "{{other.nope}}"}"#, Mode::Json, &event()).expect_err("missing");
        assert!(error.contains("`other.nope`"), "{error}");
        let error =
            render_one("{{date other.name}}", Mode::Text, &event()).expect_err("not a date");
        assert!(error.contains("not a Unix time"), "{error}");
        let error =
            render_one("{{date timecreated '%Q'}}", Mode::Text, &event()).expect_err("bad format");
        assert!(error.contains("strftime"), "{error}");
    }

    #[test]
    fn syntax_errors_carry_positions_of_the_text_as_written() {
        let error = check("{\n  \"a\": {{#if x}}\n}", Mode::Json).expect_err("unclosed block");
        assert!(error.line >= 2, "{error:?}");
        let error = check("{{userid", Mode::Json).expect_err("unterminated");
        assert_eq!(error.line, 1);
    }

    #[test]
    fn content_types_choose_the_mode() {
        assert_eq!(
            Mode::for_content_type("application/json; charset=utf-8"),
            Mode::Json
        );
        assert_eq!(
            Mode::for_content_type("application/vnd.api+json"),
            Mode::Json
        );
        assert_eq!(Mode::for_content_type("text/xml"), Mode::Xml);
        assert_eq!(Mode::for_content_type("application/soap+xml"), Mode::Xml);
        assert_eq!(Mode::for_content_type("text/plain"), Mode::Text);
    }

    proptest! {
        #[test]
        fn hostile_strings_never_break_json(name in ".*", key in "k_[a-z]{1,8}") {
            let data = json!({"other": {"name": name, "n": 1}});
            let rendered = render_one(
                &format!(r#"{{"{key}": "{{{{other.name}}}}", "v": {{{{other.name}}}}, "n": {{{{other.n}}}}}}"#),
                Mode::Json,
                &data,
            ).map_err(TestCaseError::fail)?;
            let parsed: Value = serde_json::from_str(&rendered).map_err(|e| TestCaseError::fail(format!("{e}: {rendered}")))?;
            prop_assert_eq!(&parsed[&key], &data["other"]["name"]);
            prop_assert_eq!(&parsed["v"], &data["other"]["name"]);
            prop_assert_eq!(&parsed["n"], &json!(1));
        }

        #[test]
        fn hostile_strings_never_break_xml(text in ".*") {
            let data = json!({"t": text});
            let rendered = render_one("<a>{{t}}</a>", Mode::Xml, &data).map_err(TestCaseError::fail)?;
            let inner = &rendered[3..rendered.len() - 4];
            prop_assert!(!inner.contains('<') && !inner.contains('>'));
            prop_assert!(inner.replace("&amp;", "").replace("&lt;", "").replace("&gt;", "").replace("&quot;", "").replace("&apos;", "").find('&').is_none());
        }

        #[test]
        fn rewrite_never_panics(source in ".{0,200}") {
            let _ = rewrite(&source, Mode::Json);
            let _ = check(&source, Mode::Json);
        }
    }
}

/// Hostile templates and values: any template checks or fails with a position, and rendering
/// hostile values never breaks the output format.
#[cfg(test)]
mod proptests {
    use percent_encoding::percent_decode_str;
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn render_one(source: &str, mode: Mode, data: &Value) -> Result<String, String> {
        let mut hb = registry();
        register(&mut hb, "t", source, mode).map_err(|e| e.to_string())?;
        let context = Context::wraps(data).map_err(|e| e.to_string())?;
        render(&hb, "t", &context)
    }

    /// Values meant to break out of JSON strings, XML text, URL segments and templates.
    fn hostile_corpus() -> Vec<String> {
        let mut corpus: Vec<String> = [
            "",
            "\"",
            "\\",
            "\\\"",
            "'",
            "\"}, \"x\": 1, \"y\": \"",
            "{{",
            "}}",
            "{{x}}",
            "{{{x}}}",
            "{{#each this}}{{/each}}",
            "</x>",
            "<x>",
            "]]>",
            "<![CDATA[",
            "&",
            "&amp;",
            "&#0;",
            "<?xml?>",
            "<!--",
            "\u{0}",
            "\u{1}\u{8}\u{b}\u{c}\u{1f}\u{7f}",
            "\u{feff}",
            "\u{202e}",
            "\u{2028}\u{2029}",
            "\u{fffe}\u{ffff}",
            "\u{10ffff}",
            "😀",
            "日本語",
            "/",
            "?",
            "#",
            "%",
            "%2F",
            "../..",
            "a/b?c#d",
            " ",
            "\r\n",
            "\t",
            "+",
            "@",
            ":",
            "null",
            "true",
            "1e308",
            "-0",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        corpus.push("x".repeat(1 << 20));
        corpus.push("\"{{</x>\u{0}".repeat(10_000));
        corpus
    }

    /// Every text of the XML document, unescaped; an error if it is not well-formed.
    fn xml_texts(xml: &str) -> Result<Vec<String>, String> {
        use quick_xml::events::Event;
        let mut reader = quick_xml::Reader::from_str(xml);
        let mut texts = Vec::new();
        let mut depth = 0usize;
        loop {
            match reader
                .read_event()
                .map_err(|e| format!("{e}: {xml:.200}"))?
            {
                Event::Start(_) => depth += 1,
                Event::End(_) => depth = depth.checked_sub(1).ok_or("unbalanced")?,
                Event::Text(text) => texts.push(text.into_inner().into_owned()),
                Event::GeneralRef(entity) => {
                    if let Some(c) = entity.resolve_char_ref().map_err(|e| e.to_string())? {
                        texts.push(c.to_string());
                    } else {
                        let name = entity.into_inner();
                        let resolved = quick_xml::escape::resolve_predefined_entity(&name)
                            .ok_or_else(|| format!("unknown entity &{name};"))?;
                        texts.push(resolved.to_owned());
                    }
                }
                Event::Eof => break,
                Event::Empty(_) => {}
                other => return Err(format!("unexpected {other:?}")),
            }
        }
        if depth == 0 {
            Ok(texts)
        } else {
            Err("unclosed element".into())
        }
    }

    /// What XML 1.0 can carry of a value: the text without the control characters it forbids.
    fn xml_storable(text: &str) -> String {
        text.chars()
            .filter(|c| (*c as u32) >= 0x20 || matches!(c, '\t' | '\n' | '\r'))
            .collect()
    }

    fn check_json(value: &str) -> Result<(), String> {
        let data = json!({"v": value, "o": {"v": value, "n": -0.0, "list": [value, null]}});
        let source = r#"{"in_string": "{{v}}", "prefixed": "a\"b {{o.v}} c", "bare": {{v}}, "obj": {{o}}, "list": [{{v}}, "{{upper v}}", {{default o.missing v}}], "nested": {"deep": "{{o.list}}"}}"#;
        let rendered = render_one(source, Mode::Json, &data)?;
        let parsed: Value =
            serde_json::from_str(&rendered).map_err(|e| format!("{e}: {:.300}", rendered))?;
        let ok = parsed["in_string"] == value
            && parsed["prefixed"] == format!("a\"b {value} c")
            && parsed["bare"] == value
            && parsed["obj"] == data["o"]
            && parsed["list"][0] == value
            && parsed["list"][1] == value.to_uppercase()
            && parsed["list"][2] == value
            && parsed["nested"]["deep"].as_str() == Some(data["o"]["list"].to_string().as_str());
        if ok {
            Ok(())
        } else {
            Err(format!("values changed: {:.300}", rendered))
        }
    }

    fn check_xml(value: &str) -> Result<(), String> {
        let data = json!({"v": value});
        let rendered = render_one(
            "<a><b>{{v}}</b><c x=\"1\">[{{upper v}}]</c></a>",
            Mode::Xml,
            &data,
        )?;
        let texts = xml_texts(&rendered)?.concat();
        let expected = format!(
            "{}[{}]",
            xml_storable(value),
            xml_storable(&value.to_uppercase())
        );
        if texts == expected {
            Ok(())
        } else {
            Err(format!("text changed: {:.300}", rendered))
        }
    }

    fn check_path(value: &str) -> Result<(), String> {
        let data = json!({"v": value});
        let rendered = render_one("/users/{{v}}/x", Mode::Path, &data)?;
        let segment = rendered
            .strip_prefix("/users/")
            .and_then(|r| r.strip_suffix("/x"))
            .ok_or_else(|| format!("shape changed: {rendered:.300}"))?;
        if segment.contains(['/', '?', '#', ' ', '\\', '"', '<', '>', '{', '}'])
            || !segment.is_ascii()
        {
            return Err(format!("unescaped character in {segment:.300}"));
        }
        let decoded = percent_decode_str(segment)
            .decode_utf8()
            .map_err(|e| e.to_string())?;
        if decoded == value {
            Ok(())
        } else {
            Err(format!("value changed: {segment:.300}"))
        }
    }

    #[test]
    fn the_hostile_corpus_never_breaks_the_output_format() {
        for value in hostile_corpus() {
            let short: String = value.chars().take(40).collect();
            check_json(&value).unwrap_or_else(|e| panic!("JSON, {short:?}: {e}"));
            check_xml(&value).unwrap_or_else(|e| panic!("XML, {short:?}: {e}"));
            check_path(&value).unwrap_or_else(|e| panic!("path, {short:?}: {e}"));
            let text = render_one("{{v}}", Mode::Text, &json!({"v": value}));
            assert_eq!(text.as_deref(), Ok(value.as_str()), "text, {short:?}");
        }
    }

    #[test]
    fn hostile_keys_and_structures_stay_valid_json() {
        let data = json!({
            "o": {"\"k\"": "v", "</x>": [1, {"{{": null}], "\u{0}": -0.0, "big": u64::MAX, "neg": i64::MIN, "f": 1e308},
        });
        let rendered =
            render_one(r#"{"o": {{o}}, "s": "{{o}}"}"#, Mode::Json, &data).expect("renders");
        let parsed: Value = serde_json::from_str(&rendered).expect("valid JSON");
        assert_eq!(parsed["o"], data["o"]);
        assert_eq!(parsed["s"], data["o"].to_string());
    }

    #[test]
    fn deeply_nested_blocks_are_refused_not_a_stack_overflow() {
        // Found by the corpus below: 2,000 nested `{{#if x}}` compiled, then overflowed the
        // stack while rendering (an abort of the matcher on the first matching event).
        for n in [MAX_BLOCK_DEPTH + 1, 2_000, 20_000] {
            for (open, close) in [("{{#if x}}", "{{/if}}"), ("{{#each o}}", "{{/each}}")] {
                let source = format!("{}{}", open.repeat(n), close.repeat(n));
                let error = std::thread::Builder::new()
                    .stack_size(2 * 1024 * 1024)
                    .spawn(move || check(&source, Mode::Text))
                    .expect("thread")
                    .join()
                    .expect("no panic")
                    .expect_err("too deep");
                assert!(error.line >= 1 && error.column >= 1, "{error:?}");
            }
        }
        let chain = format!(
            "{{{{#if a}}}}{}{{{{/if}}}}",
            (0..200)
                .map(|i| format!("{{{{else if b{i}}}}}"))
                .collect::<String>()
        );
        assert!(
            check(&chain, Mode::Text).is_err(),
            "else-if chains nest too"
        );
        let fine = format!(
            "{}x{}",
            "{{#if x}}".repeat(MAX_BLOCK_DEPTH),
            "{{/if}}".repeat(MAX_BLOCK_DEPTH)
        );
        assert_eq!(
            render_one(&fine, Mode::Text, &json!({"x": true})).as_deref(),
            Ok("x")
        );
    }

    #[test]
    fn template_syntax_corpus_checks_or_fails_with_a_position() {
        let corpus = [
            "{{",
            "}}",
            "{{{",
            "}}}",
            "{{{{",
            "{{{{raw}}}}",
            "{{{{raw}}}}x{{{{/raw}}}}",
            "{{#if}}",
            "{{#if x}}",
            "{{/if}}",
            "{{#each x}}{{/if}}",
            "{{> partial}}",
            "{{#> layout}}{{/layout}}",
            "{{!-- unterminated",
            "{{! }}",
            "{{else}}",
            "{{x.[}}",
            "{{x.[y]}}",
            "{{@root}}",
            "{{../x}}",
            "{{this}}",
            "{{lookup x \"y\"}}",
            "{{log x}}",
            "{{x (y (z (w)))}}",
            "{{~}}",
            "{{~~}}",
            "{{ ~x~ }}",
            "\"{{x}}",
            "\\\"{{x}}\"",
            "{\"a\": \"{{x}}\\\"}",
            "{{x\0}}",
            "{{\u{feff}x}}",
            "{{x}}}",
            "{{{x}}",
            "{{&x}}",
            "{{*x}}",
            "{{^x}}{{/x}}",
            "{{#*inline \"p\"}}{{/inline}}",
        ];
        let deep_subexpressions =
            format!("{{{{x {}y{}}}}}", "(lower ".repeat(200), ")".repeat(200));
        let many = "{{x}}".repeat(2_000);
        for source in corpus
            .iter()
            .map(|s| (*s).to_owned())
            .chain([deep_subexpressions, many])
        {
            for mode in [Mode::Json, Mode::Xml, Mode::Path, Mode::Text] {
                let source = source.clone();
                let outcome = std::thread::Builder::new()
                    .stack_size(2 * 1024 * 1024)
                    .spawn(move || {
                        let checked = check(&source, mode);
                        if checked.is_ok() {
                            let _ = render_one(&source, mode, &json!({"x": "\"</x>{{", "y": 1}));
                        }
                        checked
                    })
                    .expect("thread")
                    .join()
                    .expect("no panic");
                if let Err(error) = outcome {
                    assert!(error.line >= 1 && error.column >= 1, "{error:?}");
                }
            }
        }
    }

    fn template_piece() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "{{",
                "}}",
                "{{{",
                "}}}",
                "{{x}}",
                "{{o.v}}",
                "{{#if x}}",
                "{{/if}}",
                "{{else}}",
                "{{#each o}}",
                "{{/each}}",
                "{{this}}",
                "{{@key}}",
                "{{json o}}",
                "{{upper x}}",
                "{{default nope x}}",
                "{{date t}}",
                "{{date t '%Y'}}",
                "{{~x~}}",
                "{{!c}}",
                "\"",
                "\\",
                "{",
                "}",
                "[",
                "]",
                ":",
                ",",
                "<a>",
                "</a>",
                "&",
                "/",
                "?",
                "#",
            ])
            .prop_map(str::to_owned),
            "[a-z \"\\\\{}<>/]{0,6}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn arbitrary_templates_check_or_fail_with_a_position(
            pieces in prop::collection::vec(template_piece(), 0..16),
            raw in "\\PC{0,60}",
            which in any::<bool>(),
        ) {
            let source = if which { pieces.concat() } else { raw };
            let data = json!({"x": "\"</x>{{", "o": {"v": "}}", "w": [1]}, "t": 1772006400});
            for mode in [Mode::Json, Mode::Xml, Mode::Path, Mode::Text] {
                match check(&source, mode) {
                    Ok(()) => { let _ = render_one(&source, mode, &data); }
                    Err(error) => prop_assert!(error.line >= 1 && error.column >= 1, "{:?}", error),
                }
            }
        }

        #[test]
        fn hostile_values_keep_every_format(
            value in prop_oneof![
                "\\PC{0,40}",
                ".{0,40}",
                prop::collection::vec(prop::sample::select(vec![
                    "\"", "\\", "{{", "}}", "</x>", "<", ">", "&", "'", "\u{0}", "\u{1f}",
                    "\u{2028}", "😀", "/", "?", "#", "%", "]]>",
                ]), 0..12).prop_map(|parts| parts.concat()),
            ],
        ) {
            check_json(&value).map_err(TestCaseError::fail)?;
            check_xml(&value).map_err(TestCaseError::fail)?;
            check_path(&value).map_err(TestCaseError::fail)?;
        }
    }
}
