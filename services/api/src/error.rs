//! Why an API request failed, mapped onto the shared error kinds and JSON body.

use axum::response::{IntoResponse, Response};

use mih_shared::crypto::CryptoError;
use mih_shared::error::{ApiError, ErrorKind, FieldError, HasErrorKind};

#[derive(Debug, thiserror::Error)]
pub enum ApiFailure {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{kind} `{id}` does not exist")]
    NotFound { kind: &'static str, id: String },
    #[error("{0}")]
    BadRequest(String),
    #[error("the request is invalid: {}", FieldError::summary(.0))]
    Invalid(Vec<FieldError>),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// A dependency (a dispatcher, NATS) cannot serve the request now.
    #[error("{0}")]
    Unavailable(String),
    #[error("database error: {0}")]
    Database(sqlx::Error),
    #[error("secret handling failed: {0}")]
    Crypto(CryptoError),
    #[error("{0}")]
    Internal(String),
}

impl ApiFailure {
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        ApiFailure::Invalid(vec![FieldError::new(None, Some(field), message)])
    }
}

impl HasErrorKind for ApiFailure {
    fn kind(&self) -> ErrorKind {
        match self {
            ApiFailure::Unauthorized(_) => ErrorKind::Unauthorized,
            ApiFailure::Forbidden(_) => ErrorKind::Forbidden,
            ApiFailure::NotFound { .. } => ErrorKind::NotFound,
            ApiFailure::BadRequest(_) => ErrorKind::InvalidInput,
            ApiFailure::Invalid(_) => ErrorKind::Unprocessable,
            ApiFailure::UnsupportedMediaType(_) => ErrorKind::UnsupportedMediaType,
            ApiFailure::Conflict(_) => ErrorKind::Conflict,
            ApiFailure::PreconditionFailed(_) => ErrorKind::PreconditionFailed,
            ApiFailure::PayloadTooLarge(_) => ErrorKind::PayloadTooLarge,
            ApiFailure::Unavailable(_) => ErrorKind::Unavailable,
            ApiFailure::Database(_) | ApiFailure::Crypto(_) | ApiFailure::Internal(_) => {
                ErrorKind::Internal
            }
        }
    }
}

impl From<sqlx::Error> for ApiFailure {
    fn from(error: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &error {
            match db.code().as_deref() {
                Some("23505") => return ApiFailure::Conflict("it already exists".into()),
                Some("23503") => {
                    return ApiFailure::Conflict(
                        "it is referenced by, or references, something that does not allow this"
                            .into(),
                    );
                }
                _ => {}
            }
        }
        ApiFailure::Database(error)
    }
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        let kind = self.kind();
        match self {
            ApiFailure::Invalid(errors) => {
                ApiError::new(kind, "the request is invalid; see errors")
                    .with_errors(errors)
                    .into_response()
            }
            ApiFailure::Database(_) | ApiFailure::Crypto(_) | ApiFailure::Internal(_) => {
                ApiError::internal(&self).into_response()
            }
            other => ApiError::new(kind, other.to_string()).into_response(),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiFailure>;
