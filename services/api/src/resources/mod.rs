//! The API's resources: their request and response shapes, validation, SQL and handlers.
//! `routes.rs` mounts every handler. The configuration resources (sources, services, rules,
//! tokens) are folders — `input` (request shapes, validation), `store` (SQL), `view` (response
//! shapes), `handlers` — whose shared list/get/create/update/delete shells are [`crud`] and
//! [`config_row`]. Imports run one way: stores import no other resource; rules name sources
//! and services, never the reverse (`rules/references.rs` holds what rules ask of them).

pub mod audit;
pub mod backfills;
pub mod circuits;
pub mod config_row;
pub mod crud;
pub mod dead_letters;
pub mod deliveries;
pub mod facade;
mod handlers;
pub mod inbound;
pub mod parked;
pub mod preview;
pub mod queue;
pub mod rules;
pub mod services;
pub mod signing;
pub mod sources;
pub mod stats;
pub mod tokens;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Deserializer, Serialize};

use mih_shared::crypto::{CryptoError, Keyring, Sealed};
use mih_shared::error::FieldError;

use crate::error::ApiFailure;
use crate::extract::etag;
use crate::state::AppState;

/// A write-only field on update: absent keeps the stored value, `null` removes it, a value
/// replaces it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Tri<T> {
    #[default]
    Absent,
    Null,
    Value(T),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Tri<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Only called when the field is present; `#[serde(default)]` covers absence.
        Ok(match Option::<T>::deserialize(d)? {
            Some(value) => Tri::Value(value),
            None => Tri::Null,
        })
    }
}

/// Collects every problem of an input before answering 422 with all of them.
#[derive(Debug, Default)]
pub struct Problems(Vec<FieldError>);

impl Problems {
    pub fn add(&mut self, field: &str, message: impl Into<String>) {
        self.0.push(FieldError::new(None, Some(field), message));
    }

    pub fn check(&mut self, ok: bool, field: &str, message: impl Into<String>) {
        if !ok {
            self.add(field, message);
        }
    }

    pub fn into_result(self) -> Result<(), ApiFailure> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiFailure::Invalid(self.0))
        }
    }
}

/// Seals a secret for `field`, naming the field when the server has no key.
pub fn seal(keyring: &Keyring, field: &str, plaintext: &str) -> Result<Sealed, ApiFailure> {
    keyring.seal(plaintext).map_err(|e| match e {
        CryptoError::NoKey => ApiFailure::invalid(
            field,
            "cannot store secrets: the server has no secret_key (MIH_SECRET_KEY) configured",
        ),
        other => ApiFailure::Crypto(other),
    })
}

/// A resource view with its ETag.
pub fn with_etag<T: Serialize>(status: StatusCode, version: i64, view: &T) -> Response {
    let mut response = (status, Json(view)).into_response();
    if let Ok(value) = HeaderValue::from_str(&etag(version)) {
        response.headers_mut().insert(header::ETAG, value);
    }
    response
}

/// Publishes a committed change to the live config. A failure is logged, not returned: the
/// change is committed, and the periodic reconcile repairs the bucket.
pub async fn publish_live<T: Serialize>(state: &AppState, key: &str, version: i64, live: &T) {
    if let Err(error) = state.live.publish(key, version, live).await {
        tracing::error!(%error, key, "committed change not yet in the live config; reconcile will repair it");
    }
}

pub async fn remove_live(state: &AppState, key: &str) {
    if let Err(error) = state.live.remove(key).await {
        tracing::error!(%error, key, "deleted item still in the live config; reconcile will repair it");
    }
}

/// Length check for free text.
pub fn check_text(problems: &mut Problems, field: &str, value: &str, min: usize, max: usize) {
    let len = value.chars().count();
    problems.check(
        (min..=max).contains(&len),
        field,
        format!("must be {min} to {max} characters long (is {len})"),
    );
}

/// `404` for a missing `kind` named `id`.
pub fn not_found(kind: &'static str, id: impl Into<String>) -> ApiFailure {
    ApiFailure::NotFound {
        kind,
        id: id.into(),
    }
}

/// Header names are HTTP tokens; these are set by mih itself or by the transport.
pub fn check_header_name(problems: &mut Problems, field: &str, name: &str) {
    const RESERVED: &[&str] = &[
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "te",
        "upgrade",
        "trailer",
        "proxy-authorization",
    ];
    let valid = http::HeaderName::from_bytes(name.as_bytes()).is_ok();
    problems.check(valid, field, format!("`{name}` is not a valid header name"));
    problems.check(
        !RESERVED.contains(&name.to_ascii_lowercase().as_str()),
        field,
        format!("`{name}` is set by the transport and cannot be configured"),
    );
}
