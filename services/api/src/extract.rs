//! Request extractors that answer in mih's JSON error shape: bodies (422 naming the field),
//! `If-Match`, and list paging.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use bytes::Bytes;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use mih_shared::error::FieldError;

use crate::error::ApiFailure;

/// A JSON body. Syntax errors are 400; a well-formed body of the wrong shape is 422 naming
/// the field (`auth.type`, `retry.max_retries`).
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiFailure;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .is_some_and(|essence| essence == "application/json" || essence.ends_with("+json"));
        if !json {
            return Err(ApiFailure::UnsupportedMediaType(
                "send the body as JSON with Content-Type: application/json".into(),
            ));
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|e| ApiFailure::BadRequest(e.body_text()))?;
        parse(&bytes).map(ApiJson)
    }
}

pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiFailure> {
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiFailure::BadRequest(format!("the body is not valid JSON: {e}")))?;
    // PostgreSQL cannot store NUL in text; refuse it here rather than fail on write.
    if let Some(path) = find_nul(&value, String::new()) {
        let field = if path.is_empty() {
            None
        } else {
            Some(path.as_str())
        };
        return Err(ApiFailure::Invalid(vec![FieldError::new(
            None,
            field,
            "must not contain NUL characters",
        )]));
    }
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let field = if path == "." {
            None
        } else {
            Some(path.as_str())
        };
        ApiFailure::Invalid(vec![FieldError::new(
            None,
            field,
            strip_position(&error.into_inner().to_string()),
        )])
    })
}

/// The path of the first string (or key) holding a NUL character.
fn find_nul(value: &serde_json::Value, path: String) -> Option<String> {
    let join = |key: &str| {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    };
    match value {
        serde_json::Value::String(s) => s.contains('\0').then_some(path),
        serde_json::Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| find_nul(item, format!("{path}[{i}]"))),
        serde_json::Value::Object(map) => map.iter().find_map(|(key, item)| {
            if key.contains('\0') {
                Some(join("<key>"))
            } else {
                find_nul(item, join(key))
            }
        }),
        _ => None,
    }
}

/// Query parameters; a malformed one is 422 naming the problem.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiFailure;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // As for bodies: PostgreSQL cannot compare with NUL, so it is refused here.
        if parts
            .uri
            .query()
            .is_some_and(|query| query.to_ascii_lowercase().contains("%00"))
        {
            return Err(ApiFailure::Invalid(vec![FieldError::new(
                None,
                Some("query"),
                "must not contain NUL characters",
            )]));
        }
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|e| {
                ApiFailure::Invalid(vec![FieldError::new(None, Some("query"), e.body_text())])
            })
    }
}

/// serde_json appends " at line 1 column 20"; the field path says more.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// The version an update expects, from `If-Match: "3"` (or `W/"3"`).
#[derive(Debug, Clone, Copy)]
pub struct IfMatch(pub Option<i64>);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiFailure;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(http::header::IF_MATCH) else {
            return Ok(IfMatch(None));
        };
        let text = value.to_str().unwrap_or_default().trim();
        let text = text.strip_prefix("W/").unwrap_or(text);
        text.trim_matches('"')
            .parse()
            .map(|v| IfMatch(Some(v)))
            .map_err(|_| {
                ApiFailure::BadRequest(format!("If-Match `{text}` is not an ETag this API issued"))
            })
    }
}

/// The ETag of a versioned resource.
pub fn etag(version: i64) -> String {
    format!("\"{version}\"")
}

/// Checks the expected version: `If-Match` mismatch is 412, body `version` mismatch 409.
pub fn check_version(
    current: i64,
    if_match: IfMatch,
    body_version: Option<i64>,
) -> Result<(), ApiFailure> {
    if let Some(expected) = if_match.0
        && expected != current
    {
        return Err(ApiFailure::PreconditionFailed(format!(
            "If-Match expects version {expected}, the resource is at version {current}; read it again"
        )));
    }
    if let Some(expected) = body_version
        && expected != current
    {
        return Err(ApiFailure::Conflict(format!(
            "the update is based on version {expected}, the resource is at version {current}; read it again"
        )));
    }
    Ok(())
}

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 500;

/// Keyset paging: `limit` items after `cursor` (the last id of the previous page).
#[derive(Debug, Clone, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl PageQuery {
    pub fn limit(&self) -> Result<i64, ApiFailure> {
        match self.limit {
            None => Ok(DEFAULT_LIMIT),
            Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            Some(_) => Err(ApiFailure::invalid(
                "limit",
                format!("must be between 1 and {MAX_LIMIT}"),
            )),
        }
    }
}

/// One page of a list.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` rows (the extra one says there is more).
    pub fn from_rows(mut items: Vec<T>, limit: i64, cursor_of: impl Fn(&T) -> String) -> Self {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let more = items.len() > limit;
        items.truncate(limit);
        let next_cursor = if more {
            items.last().map(cursor_of)
        } else {
            None
        };
        Page { items, next_cursor }
    }

    /// The same page with each item converted; the first failure fails the page.
    pub fn try_map<U, E>(self, convert: impl FnMut(T) -> Result<U, E>) -> Result<Page<U>, E> {
        Ok(Page {
            items: self
                .items
                .into_iter()
                .map(convert)
                .collect::<Result<_, _>>()?,
            next_cursor: self.next_cursor,
        })
    }
}

/// A keyset cursor for lists ordered by (time, id), newest first: the last item's key.
pub fn time_cursor(at: chrono::DateTime<chrono::Utc>, id: uuid::Uuid) -> String {
    format!("{}_{id}", at.timestamp_micros())
}

/// Reads a cursor made by [`time_cursor`].
pub fn parse_time_cursor(
    raw: &str,
) -> Result<(chrono::DateTime<chrono::Utc>, uuid::Uuid), ApiFailure> {
    let bad = || ApiFailure::invalid("cursor", "is not a cursor this API issued");
    let (micros, id) = raw.split_once('_').ok_or_else(bad)?;
    let at = micros
        .parse::<i64>()
        .ok()
        .and_then(chrono::DateTime::from_timestamp_micros)
        .ok_or_else(bad)?;
    Ok((at, uuid::Uuid::parse_str(id).map_err(|_| bad())?))
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Shape {
        retry: Retry,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Retry {
        max_retries: u32,
    }

    #[test]
    fn shape_errors_name_the_field_and_syntax_errors_are_400() {
        match parse::<Shape>(br#"{"retry": {"max_retries": -1}}"#) {
            Err(ApiFailure::Invalid(errors)) => {
                assert_eq!(errors[0].field.as_deref(), Some("retry.max_retries"));
                assert!(!errors[0].message.contains("line"), "{}", errors[0].message);
            }
            other => panic!("expected 422, got {other:?}"),
        }
        match parse::<Shape>(b"{\"retry\": {\"max_retries\": 1, \"x\": \"a\\u0000b\"}}") {
            Err(ApiFailure::Invalid(errors)) => {
                assert_eq!(errors[0].field.as_deref(), Some("retry.x"))
            }
            other => panic!("expected 422 for NUL, got {other:?}"),
        }
        match parse::<Shape>(br#"{"retry": {"max_retries": 1, "extra": 2}}"#) {
            Err(ApiFailure::Invalid(errors)) => {
                assert_eq!(errors[0].field.as_deref(), Some("retry.extra"))
            }
            other => panic!("expected 422, got {other:?}"),
        }
        assert!(matches!(
            parse::<Shape>(b"{\"retry\": "),
            Err(ApiFailure::BadRequest(_))
        ));
    }

    #[test]
    fn versions_are_checked_both_ways() {
        assert!(check_version(3, IfMatch(Some(3)), None).is_ok());
        assert!(matches!(
            check_version(3, IfMatch(Some(2)), None),
            Err(ApiFailure::PreconditionFailed(_))
        ));
        assert!(matches!(
            check_version(3, IfMatch(None), Some(2)),
            Err(ApiFailure::Conflict(_))
        ));
        assert!(check_version(3, IfMatch(None), None).is_ok());
    }

    #[test]
    fn pages_know_whether_more_follow() {
        let page = Page::from_rows(vec![1, 2, 3], 2, |n| n.to_string());
        assert_eq!(page.items, [1, 2]);
        assert_eq!(page.next_cursor.as_deref(), Some("2"));
        let last = Page::from_rows(vec![1, 2], 2, |n| n.to_string());
        assert!(last.next_cursor.is_none());
    }
}
