//! Refusing, when a rule is saved, a body template that can never render a well-formed
//! document: `{"a": {{userid}}` for a JSON content type would otherwise be accepted and every
//! matching event dead-lettered.
//!
//! The template is turned into *skeletons*: its text with every expression replaced by a
//! stand-in that is valid where it stands (each value helper always writes one JSON value, or
//! escaped text inside a JSON string or in XML), and each block either taken or skipped
//! (`{{#each}}` zero, one or two times). The template is refused only when every skeleton fails
//! to parse: that is when no event can make it render a valid document. Triple-stash
//! expressions (`{{{raw}}}`) write anything, so a template with one is not judged.

use handlebars::template::{Template, TemplateElement};

use crate::template::{Mode, TemplateError};

/// Most skeletons tried. A template with more combinations of blocks is accepted when none of
/// these parse: the combinations left out might.
const MAX_SKELETONS: usize = 32;

/// Checks that `template` (compiled from the text as written) can render a valid document.
pub(crate) fn check(template: &Template, mode: Mode) -> Result<(), TemplateError> {
    if !matches!(mode, Mode::Json | Mode::Xml) || has_raw_output(template) {
        return Ok(());
    }
    let mut skeletons = vec![Skeleton::default()];
    let complete = expand(template, mode, &mut skeletons);
    let mut first_error = None;
    for skeleton in &skeletons {
        match parse(&skeleton.text, mode) {
            Ok(()) => return Ok(()),
            Err((message, offset)) => {
                if first_error.is_none() {
                    let (line, column) = skeleton.position(offset);
                    first_error = Some(TemplateError {
                        message: format!(
                            "the body can never be valid {}: {message}",
                            match mode {
                                Mode::Json => "JSON",
                                _ => "XML",
                            }
                        ),
                        line,
                        column,
                    });
                }
            }
        }
    }
    match (complete, first_error) {
        (true, Some(error)) => Err(error),
        _ => Ok(()),
    }
}

/// One way the template may render, with where each of its parts came from.
#[derive(Debug, Clone, Default)]
struct Skeleton {
    text: String,
    /// (offset in `text`, line and column in the template, whether the part is raw text whose
    /// characters map one to one).
    origins: Vec<(usize, (usize, usize), bool)>,
    in_string: bool,
    escaped: bool,
}

impl Skeleton {
    fn push_raw(&mut self, raw: &str, at: (usize, usize), mode: Mode) {
        self.origins.push((self.text.len(), at, true));
        self.text.push_str(raw);
        if mode == Mode::Json {
            for c in raw.chars() {
                if self.escaped {
                    self.escaped = false;
                } else if self.in_string && c == '\\' {
                    self.escaped = true;
                } else if c == '"' {
                    self.in_string = !self.in_string;
                }
            }
        }
    }

    /// What one value helper writes, as far as the document's shape is concerned.
    fn push_value(&mut self, at: (usize, usize), mode: Mode) {
        self.origins.push((self.text.len(), at, false));
        let stand_in = match mode {
            Mode::Json if !self.in_string => "0",
            _ => "x",
        };
        self.text.push_str(stand_in);
    }

    /// The template position of byte `offset` of the skeleton.
    fn position(&self, offset: usize) -> (usize, usize) {
        let Some(&(start, (line, column), raw)) = self
            .origins
            .iter()
            .rev()
            .find(|(start, ..)| *start <= offset)
        else {
            return (1, 1);
        };
        if !raw {
            return (line, column);
        }
        let end = offset.min(self.text.len());
        let within = self.text.get(start..end).unwrap_or_default();
        within.chars().fold((line, column), |(line, column), c| {
            if c == '\n' {
                (line + 1, 1)
            } else {
                (line, column + 1)
            }
        })
    }
}

/// Appends every way `template` may render to each skeleton. Returns false when the number
/// of ways passed [`MAX_SKELETONS`] and some were left out.
fn expand(template: &Template, mode: Mode, skeletons: &mut Vec<Skeleton>) -> bool {
    let mut complete = true;
    for (index, element) in template.elements.iter().enumerate() {
        let at = template
            .mapping
            .get(index)
            .map_or((1, 1), |mapping| (mapping.0, mapping.1));
        match element {
            TemplateElement::RawString(raw) => {
                skeletons.iter_mut().for_each(|s| s.push_raw(raw, at, mode));
            }
            TemplateElement::Expression(_) | TemplateElement::HtmlExpression(_) => {
                skeletons.iter_mut().for_each(|s| s.push_value(at, mode));
            }
            TemplateElement::HelperBlock(block) => {
                let each = block.name.as_name() == Some("each");
                let inner = block.template.as_ref();
                let inverse = block.inverse.as_ref();
                // Each way the block may go: the templates it renders, in order.
                let ways: Vec<Vec<&Template>> = if each {
                    vec![
                        inverse.into_iter().collect(),
                        inner.into_iter().collect(),
                        inner.into_iter().chain(inner).collect(),
                    ]
                } else {
                    vec![inner.into_iter().collect(), inverse.into_iter().collect()]
                };
                let mut next = Vec::new();
                for way in ways {
                    let mut branch = skeletons.clone();
                    for part in way {
                        complete &= expand(part, mode, &mut branch);
                    }
                    next.extend(branch);
                }
                if next.len() > MAX_SKELETONS {
                    next.truncate(MAX_SKELETONS);
                    complete = false;
                }
                *skeletons = next;
            }
            // Comments write nothing; decorators and partials are not available to rules.
            _ => {}
        }
    }
    complete
}

/// Whether the template writes raw output anywhere (`{{{…}}}`), whose shape is unknowable.
fn has_raw_output(template: &Template) -> bool {
    template.elements.iter().any(|element| match element {
        TemplateElement::HtmlExpression(_) => true,
        TemplateElement::HelperBlock(block) => [&block.template, &block.inverse]
            .into_iter()
            .flatten()
            .any(has_raw_output),
        _ => false,
    })
}

/// Parses a skeleton; on failure, why and at which byte.
fn parse(text: &str, mode: Mode) -> Result<(), (String, usize)> {
    match mode {
        Mode::Json => serde_json::from_str::<serde::de::IgnoredAny>(text)
            .map(|_| ())
            .map_err(|e| {
                let offset = byte_offset(text, e.line(), e.column());
                let message = e.to_string();
                // serde's message ends with its own position in the skeleton, which means
                // nothing to the author; the template position is given instead.
                let message = message
                    .split(" at line ")
                    .next()
                    .unwrap_or(&message)
                    .to_owned();
                (message, offset)
            }),
        _ => xml_well_formed(text),
    }
}

/// The byte offset of a 1-based line and column (serde_json counts columns in bytes).
fn byte_offset(text: &str, line: usize, column: usize) -> usize {
    let line_start: usize = text
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum();
    (line_start + column.saturating_sub(1)).min(text.len())
}

/// Whether `text` is well-formed XML content: tags balanced and properly nested, names and
/// attributes valid. Several top-level elements are allowed (a SOAP body may hold several).
fn xml_well_formed(text: &str) -> Result<(), (String, usize)> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(text);
    reader.config_mut().check_end_names = true;
    let mut open: Vec<(String, usize)> = Vec::new();
    loop {
        let at = usize::try_from(reader.buffer_position()).unwrap_or(text.len());
        match reader.read_event() {
            Ok(Event::Start(start)) => open.push((start.name().as_ref().to_owned(), at)),
            Ok(Event::End(_)) => {
                open.pop();
            }
            Ok(Event::Empty(element)) => {
                for attribute in element.attributes() {
                    attribute.map_err(|e| (e.to_string(), at))?;
                }
            }
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(error) => {
                let at = usize::try_from(reader.error_position()).unwrap_or(at);
                return Err((error.to_string(), at));
            }
        }
    }
    match open.pop() {
        Some((name, at)) => Err((format!("<{name}> is never closed"), at)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judged(source: &str, mode: Mode) -> Result<(), TemplateError> {
        let template = Template::compile(source).expect("compiles");
        check(&template, mode)
    }

    #[test]
    fn json_that_can_never_be_valid_is_refused_with_its_position() {
        let error = judged(r#"{"a": {{userid}}"#, Mode::Json).expect_err("unclosed object");
        assert!(error.message.contains("never be valid JSON"), "{error:?}");
        assert_eq!(error.line, 1);
        let error =
            judged("{\n  \"a\": {{userid}},\n  \"b\" 1\n}", Mode::Json).expect_err("no colon");
        assert_eq!(error.line, 3, "{error:?}");
        for source in [
            r#"{"a": "{{name}}" "b": 1}"#,
            r#"{"a": {{x}} {{y}}}"#,
            r#"["{{a}}", ]"#,
            "",
        ] {
            assert!(judged(source, Mode::Json).is_err(), "{source}");
        }
    }

    #[test]
    fn json_that_some_event_renders_validly_is_accepted() {
        for source in [
            r#"{"user": {{userid}}, "name": "{{other.name}}", "raw": {{json other}}}"#,
            r#"{"user": "{{userid}}"}"#,
            r#"{{#if x}}{"a": 1}{{else}}{"b": 2}{{/if}}"#,
            r#"{"items": [{{#each other.list}}{{this}}{{#unless @last}},{{/unless}}{{/each}}]}"#,
            // Valid only when the list is empty: still a template some event renders.
            r#"[{{#each other.list}}{{this}},{{/each}}]"#,
            r#"{"a": {{{raw}}} }"#,
            r#"{"quote": "a \" {{x}} \\"}"#,
            "{{! a comment }}{\"a\": {{x}}}",
        ] {
            assert_eq!(judged(source, Mode::Json), Ok(()), "{source}");
        }
    }

    #[test]
    fn xml_that_can_never_be_well_formed_is_refused() {
        for source in [
            "<enrol><user>{{userid}}</user>",
            "<a><b>{{x}}</a></b>",
            "<a x=\"{{x}}\"></b>",
        ] {
            let error = judged(source, Mode::Xml).expect_err(source);
            assert!(error.message.contains("never be valid XML"), "{error:?}");
        }
        for source in [
            "<enrol><user>{{userid}}</user><course>{{courseid}}</course></enrol>",
            "<a>{{x}}</a><b/>",
            "<a><![CDATA[{{x}}]]></a>",
            "{{#if x}}<a/>{{else}}<b/>{{/if}}",
        ] {
            assert_eq!(judged(source, Mode::Xml), Ok(()), "{source}");
        }
    }

    #[test]
    fn other_content_types_are_not_judged() {
        assert_eq!(judged("{\"a\": {{x}}", Mode::Text), Ok(()));
    }
}
