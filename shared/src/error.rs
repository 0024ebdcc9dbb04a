//! A small closed set of error kinds, mapped in one place to HTTP statuses and to what a
//! consumer does with the message it was processing.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The input is malformed or breaks a rule; sending it again will not help.
    InvalidInput,
    /// The input is well-formed but not processable as given (validation of a resource).
    Unprocessable,
    Unauthorized,
    Forbidden,
    NotFound,
    /// The request conflicts with the current state (duplicate name, wrong state).
    Conflict,
    /// An optimistic-concurrency precondition (version, ETag) failed.
    PreconditionFailed,
    PayloadTooLarge,
    UnsupportedMediaType,
    /// A downstream asked us to slow down.
    RateLimited,
    /// A dependency (NATS, PostgreSQL, a target) cannot be reached right now.
    Unavailable,
    Timeout,
    /// A bug or an unexpected state; details go to the log, not to the caller.
    Internal,
}

/// What a consumer does with a message it handled: the answer of a
/// [`crate::consumer::Handler`], which the consumer loop carries out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Done with it (processed, or a harmless duplicate).
    Ack,
    /// Let JetStream redeliver it after `after`; `None` takes the growing
    /// [`crate::consumer::retry_delay`] of its delivery count, `Some(Duration::ZERO)` hands it
    /// back at once.
    Retry { after: Option<Duration> },
    /// The message itself failed (the database refused its content): retried like
    /// `Retry { after: None }` until the consumer's `give_up_after`th delivery, then given up
    /// on like `DeadLetter`.
    Refused { reason: String },
    /// Retrying cannot help: give it up now, as the consumer's
    /// [`crate::consumer::DeadLetters`] says (terminate or park).
    DeadLetter { reason: String },
}

impl ErrorKind {
    pub fn http_status(self) -> StatusCode {
        match self {
            ErrorKind::InvalidInput => StatusCode::BAD_REQUEST,
            ErrorKind::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorKind::Forbidden => StatusCode::FORBIDDEN,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Whether trying the same thing again later can succeed.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ErrorKind::RateLimited
                | ErrorKind::Unavailable
                | ErrorKind::Timeout
                | ErrorKind::Internal
        )
    }

    /// The consumer disposition for a message whose processing failed with this kind.
    /// `Internal` retries: a bug fixed by a deploy should not have dead-lettered everything.
    pub fn disposition(self, message: &str, retry_after: Option<Duration>) -> Disposition {
        match self {
            ErrorKind::Conflict => Disposition::Ack,
            kind if kind.is_transient() => Disposition::Retry { after: retry_after },
            _ => Disposition::DeadLetter {
                reason: message.to_owned(),
            },
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::Unprocessable => "unprocessable",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::PreconditionFailed => "precondition_failed",
            ErrorKind::PayloadTooLarge => "payload_too_large",
            ErrorKind::UnsupportedMediaType => "unsupported_media_type",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Internal => "internal",
        }
    }
}

/// Implemented by each crate's error enum, so statuses and dispositions are decided here.
pub trait HasErrorKind {
    fn kind(&self) -> ErrorKind;
}

/// One problem with one part of the input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// Position of the item in a batch, when the request carried several.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
    /// The offending field (dotted path), when one can be named.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub message: String,
}

impl FieldError {
    pub fn new(index: Option<usize>, field: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            index,
            field: field.map(str::to_owned),
            message: message.into(),
        }
    }

    /// Every problem on one line, `field: message; …`, for an error's `Display`.
    pub fn summary(errors: &[FieldError]) -> String {
        errors
            .iter()
            .map(|e| match &e.field {
                Some(field) => format!("{field}: {}", e.message),
                None => e.message.clone(),
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// The JSON error body every mih HTTP endpoint answers with:
/// `{"error": "<kind>", "message": "…", "errors": [{"index", "field", "message"}]}`.
#[derive(Debug, Clone, Serialize)]
pub struct ApiError {
    #[serde(rename = "error")]
    pub kind: ErrorKind,
    pub message: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    #[serde(skip)]
    pub retry_after: Option<Duration>,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            errors: Vec::new(),
            retry_after: None,
        }
    }

    pub fn with_errors(mut self, errors: Vec<FieldError>) -> Self {
        self.errors = errors;
        self
    }

    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// An internal error: the caller learns only that it happened; the log gets the details.
    pub fn internal(error: &(dyn std::error::Error + 'static)) -> Self {
        tracing::error!(error = %error_chain(error), "internal error");
        Self::new(ErrorKind::Internal, "internal error; see the server log")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (kind, retry_after) = (self.kind, self.retry_after);
        error_response(kind, retry_after, &self)
    }
}

/// An error answer: the kind's status, `Retry-After` when given, and `body` as JSON. For
/// services whose error bodies extend [`ApiError`].
pub fn error_response<T: Serialize>(
    kind: ErrorKind,
    retry_after: Option<Duration>,
    body: &T,
) -> Response {
    let mut response = (kind.http_status(), Json(body)).into_response();
    if let Some(value) = retry_after
        .and_then(|after| HeaderValue::from_str(&after.as_secs().max(1).to_string()).ok())
    {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// `error: cause: cause` — the whole chain on one line, for logs.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_statuses_and_dispositions() {
        assert_eq!(
            ErrorKind::InvalidInput.http_status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            ErrorKind::Unavailable.http_status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            ErrorKind::Unavailable.disposition("down", Some(Duration::from_secs(3))),
            Disposition::Retry {
                after: Some(Duration::from_secs(3))
            }
        );
        assert_eq!(
            ErrorKind::InvalidInput.disposition("bad template", None),
            Disposition::DeadLetter {
                reason: "bad template".into()
            }
        );
        assert_eq!(
            ErrorKind::Conflict.disposition("dup", None),
            Disposition::Ack
        );
        assert!(matches!(
            ErrorKind::Internal.disposition("bug", None),
            Disposition::Retry { .. }
        ));
    }

    #[test]
    fn api_errors_serialise_with_field_errors_and_retry_after() {
        let err = ApiError::new(ErrorKind::InvalidInput, "2 events are invalid").with_errors(vec![
            FieldError::new(Some(3), Some("crud"), "must be one of c, r, u, d"),
        ]);
        let body = serde_json::to_value(&err).expect("serialises");
        assert_eq!(body["error"], "invalid_input");
        assert_eq!(body["errors"][0]["index"], 3);
        assert_eq!(body["errors"][0]["field"], "crud");
        let response = ApiError::new(ErrorKind::Unavailable, "down")
            .with_retry_after(Duration::from_secs(5))
            .into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "5");
    }

    #[test]
    fn a_summary_names_the_fields_it_can() {
        let errors = [
            FieldError::new(None, Some("service"), "unknown"),
            FieldError::new(Some(0), None, "not JSON"),
        ];
        assert_eq!(FieldError::summary(&errors), "service: unknown; not JSON");
    }
}
