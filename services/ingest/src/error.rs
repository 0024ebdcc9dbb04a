//! Why ingest refused a request, mapped to the shared error kinds and JSON body.

use std::time::Duration;

use mih_shared::error::{ApiError, ErrorKind, FieldError, HasErrorKind, error_response};
use mih_shared::signature::SignatureError;

use crate::publish::ItemReport;

#[derive(Debug, thiserror::Error)]
pub(crate) enum IngestError {
    #[error("the request body is larger than {max} bytes (ingest.max_body_bytes)")]
    BodyTooLarge { max: usize },
    #[error("the request body could not be read: {0}")]
    BodyUnreadable(String),
    #[error(
        "Content-Type `{0}` is not supported: send application/json (one event or an array) or application/x-ndjson"
    )]
    UnsupportedMediaType(String),
    #[error("the request is not valid JSON")]
    Malformed(Vec<FieldError>),
    #[error(
        "the batch has {count} events; at most {max} are accepted per request (ingest.max_batch_events)"
    )]
    BatchTooLarge { count: usize, max: usize },
    #[error("{invalid} of {total} events are invalid; nothing was stored")]
    Invalid {
        invalid: usize,
        total: usize,
        errors: Vec<FieldError>,
    },
    #[error(
        "{count} events are larger than {max} bytes (ingest.max_event_bytes); nothing was stored"
    )]
    EventsTooLarge {
        count: usize,
        max: usize,
        errors: Vec<FieldError>,
    },
    #[error("`{0}` must be at most {max} printable ASCII characters", max = mih_shared::signature::MAX_ID_LEN)]
    BadIdempotencyKey(&'static str),
    #[error(
        "missing credentials: sign the request (webhook-id, webhook-timestamp, webhook-signature and mih-source headers) or send `Authorization: Bearer <token>`"
    )]
    MissingCredentials,
    #[error("signed requests must name their source in the `mih-source` header")]
    MissingSource,
    #[error("unknown source `{0}`")]
    UnknownSource(String),
    #[error("invalid signature: {0}")]
    BadSignature(#[from] SignatureError),
    #[error("the bearer token is not valid for any source")]
    BadToken,
    #[error("the bearer token belongs to another source than `mih-source: {0}`")]
    TokenSourceMismatch(String),
    #[error("source `{0}` is disabled")]
    SourceDisabled(String),
    #[error("an event could not be encoded: {0}")]
    Encode(serde_json::Error),
    #[error("JetStream is unavailable: {reason}; nothing was stored, retry later")]
    Unavailable {
        reason: String,
        retry_after: Duration,
    },
    #[error(
        "JetStream did not acknowledge {unconfirmed} of {total} events; retry the request (events already stored are recognised as duplicates)"
    )]
    PartiallyStored {
        unconfirmed: usize,
        total: usize,
        items: Vec<ItemReport>,
        retry_after: Duration,
    },
}

impl HasErrorKind for IngestError {
    fn kind(&self) -> ErrorKind {
        use IngestError::*;
        match self {
            BodyTooLarge { .. } | BatchTooLarge { .. } | EventsTooLarge { .. } => {
                ErrorKind::PayloadTooLarge
            }
            BodyUnreadable(_) | Malformed(_) | Invalid { .. } | BadIdempotencyKey(_) => {
                ErrorKind::InvalidInput
            }
            UnsupportedMediaType(_) => ErrorKind::UnsupportedMediaType,
            MissingCredentials
            | MissingSource
            | UnknownSource(_)
            | BadSignature(_)
            | BadToken
            | TokenSourceMismatch(_) => ErrorKind::Unauthorized,
            SourceDisabled(_) => ErrorKind::Forbidden,
            Unavailable { .. } | PartiallyStored { .. } => ErrorKind::Unavailable,
            Encode(_) => ErrorKind::Internal,
        }
    }
}

impl IngestError {
    /// The reason label of `mih_ingest_rejected_total`.
    pub(crate) fn metric_reason(&self) -> &'static str {
        use IngestError::*;
        match self {
            BodyTooLarge { .. } | BatchTooLarge { .. } | EventsTooLarge { .. } => "too_large",
            BodyUnreadable(_) | Malformed(_) => "malformed",
            Invalid { .. } | BadIdempotencyKey(_) => "invalid",
            UnsupportedMediaType(_) => "unsupported_media_type",
            MissingCredentials
            | MissingSource
            | UnknownSource(_)
            | BadSignature(_)
            | BadToken
            | TokenSourceMismatch(_) => "unauthorized",
            SourceDisabled(_) => "source_disabled",
            Unavailable { .. } | PartiallyStored { .. } => "unavailable",
            Encode(_) => "internal",
        }
    }
}

/// The JSON body of a refusal: which items failed and why, or which were stored.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Refusal {
    #[serde(flatten)]
    pub error: ApiError,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<ItemReport>,
}

impl From<IngestError> for Refusal {
    fn from(error: IngestError) -> Self {
        let kind = error.kind();
        let message = error.to_string();
        let (errors, events, retry_after) = match error {
            IngestError::Malformed(errors)
            | IngestError::Invalid { errors, .. }
            | IngestError::EventsTooLarge { errors, .. } => (errors, Vec::new(), None),
            IngestError::BatchTooLarge { .. } => (
                vec![FieldError::new(None, Some("batch"), message.clone())],
                Vec::new(),
                None,
            ),
            IngestError::Unavailable { retry_after, .. } => {
                (Vec::new(), Vec::new(), Some(retry_after))
            }
            IngestError::PartiallyStored {
                items, retry_after, ..
            } => (Vec::new(), items, Some(retry_after)),
            _ => (Vec::new(), Vec::new(), None),
        };
        let mut error = ApiError::new(kind, message).with_errors(errors);
        error.retry_after = retry_after;
        Refusal { error, events }
    }
}

impl axum::response::IntoResponse for Refusal {
    fn into_response(self) -> axum::response::Response {
        let mut response = error_response(self.error.kind, self.error.retry_after, &self);
        if self.error.kind == ErrorKind::Unauthorized {
            response.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer realm=\"mih-ingest\""),
            );
        }
        response
    }
}
