//! Pages from handlebars templates (`dashboard/templates/*.hbs`, embedded in the binary).
//! Handlebars escapes every `{{value}}` as HTML, so whatever came from an event, a target or a
//! user shows as text; the templates never use the unescaped `{{{…}}}` form.

use std::sync::OnceLock;

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use fluent_bundle::{FluentArgs, FluentValue};
use handlebars::{
    Context, Handlebars, Helper, HelperResult, Output, RenderContext, RenderErrorReason,
};
use rust_embed::Embed;
use serde_json::{Value, json};

use super::i18n::{self, Lang};
use super::session::Session;

#[derive(Embed)]
#[folder = "dashboard/templates/"]
struct Templates;

fn registry() -> &'static Handlebars<'static> {
    static REGISTRY: OnceLock<Handlebars<'static>> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let mut registry = Handlebars::new();
        registry.set_strict_mode(true);
        registry.register_helper("t", Box::new(translate));
        registry.register_helper("eq", Box::new(equal));
        for name in Templates::iter() {
            let Some(file) = Templates::get(&name) else {
                continue;
            };
            let template = name.trim_end_matches(".hbs");
            let text = String::from_utf8_lossy(&file.data);
            if let Err(error) = registry.register_template_string(template, text) {
                tracing::error!(template, %error, "dashboard template does not compile");
            }
        }
        registry
    })
}

/// `{{t "key" name=value …}}`: the message in the page's language (`@root.lang`).
fn translate(
    helper: &Helper<'_>,
    _: &Handlebars<'_>,
    context: &Context,
    _: &mut RenderContext<'_, '_>,
    out: &mut dyn Output,
) -> HelperResult {
    let key = helper
        .param(0)
        .and_then(|p| p.value().as_str())
        .ok_or(RenderErrorReason::ParamNotFoundForIndex("t", 0))?;
    let lang = context
        .data()
        .get("lang")
        .and_then(Value::as_str)
        .and_then(Lang::parse)
        .unwrap_or(Lang::En);
    let mut args = FluentArgs::new();
    for (name, value) in helper.hash() {
        let value = match value.value() {
            Value::Number(n) => n
                .as_f64()
                .map_or_else(|| FluentValue::from(n.to_string()), FluentValue::from),
            Value::String(s) => FluentValue::from(s.clone()),
            other => FluentValue::from(other.to_string()),
        };
        args.set(*name, value);
    }
    let text = i18n::t(lang, key, Some(&args));
    out.write(&handlebars::html_escape(&text))?;
    Ok(())
}

/// `{{#if (eq a b)}}`.
fn equal(
    helper: &Helper<'_>,
    _: &Handlebars<'_>,
    _: &Context,
    _: &mut RenderContext<'_, '_>,
    out: &mut dyn Output,
) -> HelperResult {
    let same = helper.param(0).map(|p| p.value()) == helper.param(1).map(|p| p.value());
    if same {
        out.write("true")?;
    }
    Ok(())
}

/// Renders `template` with `data`, plus what every page needs: the language, the languages
/// of the picker, and the visitor (name, role, CSRF token) when logged in.
pub fn render(
    template: &str,
    lang: Lang,
    session: Option<&Session>,
    path: &str,
    mut data: Value,
) -> Result<String, String> {
    if let Value::Object(map) = &mut data {
        map.insert("lang".into(), json!(lang.tag()));
        map.insert(
            "langs".into(),
            Value::Array(
                Lang::ALL
                    .iter()
                    .map(|l| json!({"tag": l.tag(), "name": l.name(), "selected": *l == lang}))
                    .collect(),
            ),
        );
        map.insert("path".into(), json!(path));
        if let Some(session) = session {
            map.insert(
                "session".into(),
                json!({
                    "label": session.caller.label,
                    "role": session.caller.role.as_str(),
                    "role_name": i18n::t(lang, &format!("role-{}", session.caller.role.as_str()), None),
                    "csrf": session.csrf,
                }),
            );
        }
    }
    registry()
        .render(template, &data)
        .map_err(|e| format!("template {template}: {e}"))
}

/// A whole page as a response (500 with the reason when a template fails).
pub fn page(
    status: StatusCode,
    template: &str,
    lang: Lang,
    session: Option<&Session>,
    path: &str,
    data: Value,
) -> Response {
    match render(template, lang, session, path, data) {
        Ok(html) => (status, Html(html)).into_response(),
        Err(error) => {
            tracing::error!(%error, "dashboard page");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Html(format!(
                    "<!doctype html><title>mih</title><p>{}</p>",
                    handlebars::html_escape(&error)
                )),
            )
                .into_response()
        }
    }
}

/// The page for a refused or failed action: the API's status and its words.
pub fn failure_page(session: &Session, path: &str, failure: &crate::error::ApiFailure) -> Response {
    let status = match failure {
        crate::error::ApiFailure::Forbidden(_) => StatusCode::FORBIDDEN,
        crate::error::ApiFailure::NotFound { .. } => StatusCode::NOT_FOUND,
        crate::error::ApiFailure::Conflict(_) => StatusCode::CONFLICT,
        crate::error::ApiFailure::Invalid(_) | crate::error::ApiFailure::BadRequest(_) => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let message = if status == StatusCode::FORBIDDEN {
        format!(
            "{} ({failure})",
            i18n::t(session.lang, "error-forbidden", None)
        )
    } else {
        failure.to_string()
    };
    page(
        status,
        "error",
        session.lang,
        Some(session),
        path,
        json!({"title": i18n::t(session.lang, "error-title", None), "page": "error", "message": message}),
    )
}

/// The JSON an API handler answered (the dashboard calls the API's handlers directly).
pub async fn json_of(response: Response) -> Value {
    let bytes = axum::body::to_bytes(response.into_body(), 16 * 1024 * 1024)
        .await
        .unwrap_or_default();
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_compiles() {
        let names: Vec<String> = Templates::iter().map(|n| n.to_string()).collect();
        assert!(names.len() >= 3, "{names:?}");
        for name in names {
            let file = Templates::get(&name).expect("listed");
            let mut registry = Handlebars::new();
            registry
                .register_template_string(&name, String::from_utf8_lossy(&file.data))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let text = String::from_utf8_lossy(&file.data);
            assert!(!text.contains("{{{"), "{name} renders something unescaped");
        }
    }
}
