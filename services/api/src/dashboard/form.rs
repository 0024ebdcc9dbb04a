//! Forms described as data: each field names the API field it fills (the dotted path the API
//! names in its errors), so an API refusal puts each message next to its own input, and one
//! template (`form_field.hbs`) draws every kind of input with its label, hint and error.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::error::ApiFailure;

/// What a submitted form holds: input name → value (an unchecked checkbox is absent).
pub type Submitted = BTreeMap<String, String>;

#[derive(Debug, Clone, Copy)]
pub enum Input {
    Text,
    Url,
    Number,
    /// Write-only: never filled in; the page says whether a value is stored.
    Secret,
    Checkbox,
    /// (value, catalogue key of its label)
    Select(&'static [(&'static str, &'static str)]),
    TextArea,
}

#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// The API's dotted path, also the input's name.
    pub name: &'static str,
    /// Catalogue key of the label; a hint, when there is one, is under `<label>-hint`.
    pub label: &'static str,
    pub input: Input,
    pub hint: bool,
    pub required: bool,
    /// Shown only while another field (a select) has this value: `(field, value)`. Without
    /// JavaScript every field shows, and the server reads only the ones that apply.
    pub when: Option<(&'static str, &'static str)>,
}

impl Field {
    pub const fn new(name: &'static str, label: &'static str, input: Input) -> Self {
        Field {
            name,
            label,
            input,
            hint: false,
            required: false,
            when: None,
        }
    }

    pub const fn hint(self) -> Self {
        Field { hint: true, ..self }
    }

    pub const fn required(self) -> Self {
        Field {
            required: true,
            ..self
        }
    }

    pub const fn when(self, field: &'static str, value: &'static str) -> Self {
        Field {
            when: Some((field, value)),
            ..self
        }
    }
}

/// The API's refusal, split into messages for named inputs and the rest.
#[derive(Debug, Default)]
pub struct Problems {
    pub by_field: BTreeMap<String, String>,
    pub general: Vec<String>,
}

impl Problems {
    pub fn is_empty(&self) -> bool {
        self.by_field.is_empty() && self.general.is_empty()
    }

    pub fn add(&mut self, field: &str, message: impl Into<String>) {
        self.by_field
            .entry(field.to_owned())
            .or_insert_with(|| message.into());
    }

    /// Sorts an API failure's messages: those naming an input of `fields` go next to it.
    pub fn from_failure(failure: &ApiFailure, fields: &[Field]) -> Self {
        let mut problems = Problems::default();
        match failure {
            ApiFailure::Invalid(errors) => {
                for error in errors {
                    let field = error
                        .field
                        .as_deref()
                        .filter(|f| fields.iter().any(|known| known.name == *f));
                    match field {
                        Some(field) => problems.add(field, error.message.clone()),
                        None => problems.general.push(match &error.field {
                            Some(field) => format!("{field}: {}", error.message),
                            None => error.message.clone(),
                        }),
                    }
                }
            }
            other => problems.general.push(other.to_string()),
        }
        problems
    }

    pub fn into_failure(self) -> ApiFailure {
        ApiFailure::Invalid(
            self.by_field
                .into_iter()
                .map(|(field, message)| {
                    mih_shared::error::FieldError::new(None, Some(&field), message)
                })
                .collect(),
        )
    }
}

/// What the template needs to draw `fields`: values from `values` (what was submitted, or the
/// stored row), secrets as "set or not" from `secrets_set`, errors from `problems`.
pub fn describe(
    fields: &[Field],
    values: &Submitted,
    secrets_set: &BTreeMap<&str, bool>,
    problems: &Problems,
) -> Vec<Value> {
    fields
        .iter()
        .map(|field| {
            let value = values.get(field.name).cloned().unwrap_or_default();
            let (kind, options) = match field.input {
                Input::Text => ("text", Value::Null),
                Input::Url => ("url", Value::Null),
                Input::Number => ("number", Value::Null),
                Input::Secret => ("secret", Value::Null),
                Input::Checkbox => ("checkbox", Value::Null),
                Input::TextArea => ("textarea", Value::Null),
                Input::Select(options) => (
                    "select",
                    Value::Array(
                        options
                            .iter()
                            .map(|(option, label)| {
                                json!({"value": option, "label": label, "text": null, "kind": null, "selected": *option == value})
                            })
                            .collect(),
                    ),
                ),
            };
            json!({
                "name": field.name,
                "id": format!("f-{}", field.name.replace('.', "-")),
                "label": field.label,
                "hint": field.hint.then(|| format!("{}-hint", field.label)),
                "type": kind,
                "html_type": if matches!(field.input, Input::Url) { "url" } else { "text" },
                "numeric": matches!(field.input, Input::Number),
                "value": if matches!(field.input, Input::Secret) { String::new() } else { value.clone() },
                "checked": matches!(field.input, Input::Checkbox) && !value.is_empty(),
                "options": options,
                "required": field.required,
                "secret_set": secrets_set.get(field.name).copied().unwrap_or(false),
                "when_field": field.when.map(|(f, _)| f.replace('.', "-")),
                "when_value": field.when.map(|(_, v)| v),
                "error": problems.by_field.get(field.name),
            })
        })
        .collect()
}

/// A trimmed, non-empty value.
pub fn given<'a>(values: &'a Submitted, name: &str) -> Option<&'a str> {
    values.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
}

/// A non-negative whole number, or a problem naming the field.
pub fn number(values: &Submitted, name: &str, problems: &mut Problems) -> Option<u64> {
    let text = given(values, name)?;
    match text.parse::<u64>() {
        Ok(n) => Some(n),
        Err(_) => {
            problems.add(name, format!("must be a whole number (is `{text}`)"));
            None
        }
    }
}

/// Sets `path` (dotted) in a JSON object, creating the objects on the way.
pub fn put(target: &mut Value, path: &str, value: Value) {
    let mut node = target;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        if !node.is_object() {
            *node = json!({});
        }
        let Value::Object(map) = node else { return };
        if parts.peek().is_none() {
            map.insert(part.to_owned(), value);
            return;
        }
        node = map.entry(part.to_owned()).or_insert_with(|| json!({}));
    }
}

/// The text of the form's values as the stored row has them: `{"a": {"b": 1}}` → `a.b` = "1".
pub fn flatten(value: &Value, prefix: &str, into: &mut Submitted) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(inner, &path, into);
            }
        }
        Value::Null => {}
        Value::Bool(true) => {
            into.insert(prefix.to_owned(), "on".into());
        }
        Value::Bool(false) => {}
        Value::String(s) => {
            into.insert(prefix.to_owned(), s.clone());
        }
        other => {
            into.insert(prefix.to_owned(), other.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_and_flatten_are_inverse_for_nested_values() {
        let mut value = json!({});
        put(&mut value, "retry.max_retries", json!(3));
        put(&mut value, "transport.kind", json!("rest"));
        put(&mut value, "enabled", json!(true));
        assert_eq!(
            value,
            json!({"retry": {"max_retries": 3}, "transport": {"kind": "rest"}, "enabled": true})
        );
        let mut flat = Submitted::new();
        flatten(&value, "", &mut flat);
        assert_eq!(flat["retry.max_retries"], "3");
        assert_eq!(flat["transport.kind"], "rest");
        assert_eq!(flat["enabled"], "on");
    }

    #[test]
    fn a_number_that_is_not_one_names_its_field() {
        let mut values = Submitted::new();
        values.insert("timeout_ms".into(), " 12x ".into());
        let mut problems = Problems::default();
        assert_eq!(number(&values, "timeout_ms", &mut problems), None);
        assert!(problems.by_field["timeout_ms"].contains("12x"));
    }

    #[test]
    fn api_errors_go_next_to_their_inputs_and_the_rest_above() {
        let fields = [Field::new("transport.base_url", "x", Input::Url)];
        let failure = ApiFailure::Invalid(vec![
            mih_shared::error::FieldError::new(None, Some("transport.base_url"), "not a URL"),
            mih_shared::error::FieldError::new(None, Some("elsewhere"), "wrong"),
        ]);
        let problems = Problems::from_failure(&failure, &fields);
        assert_eq!(problems.by_field["transport.base_url"], "not a URL");
        assert_eq!(problems.general, vec!["elsewhere: wrong".to_owned()]);
    }
}
