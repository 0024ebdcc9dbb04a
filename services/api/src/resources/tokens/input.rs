//! What a client writes for a token, and the checks on it.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::store::TokenRow;
use crate::auth::Role;
use crate::error::{ApiFailure, ApiResult};
use crate::resources::{Problems, check_text};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenInput {
    /// What the token is for. Required on create.
    #[schema(min_length = 1, max_length = 200)]
    pub label: Option<String>,
    /// Required on create.
    pub role: Option<Role>,
    /// When the token stops working (create only; default: never).
    pub expires_at: Option<DateTime<Utc>>,
    /// The version this update is based on (alternative to `If-Match`).
    pub version: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TokenFilter {
    pub role: Option<Role>,
    /// Only revoked (true) or only active (false) tokens.
    pub revoked: Option<bool>,
}

fn check_label(problems: &mut Problems, label: &str) {
    check_text(problems, "label", label, 1, 200);
}

/// A token about to be issued: a label and an expiry in the future.
pub(super) fn check_new(label: &str, expires_at: Option<DateTime<Utc>>) -> ApiResult<()> {
    let mut problems = Problems::default();
    check_label(&mut problems, label);
    if let Some(at) = expires_at {
        problems.check(at > Utc::now(), "expires_at", "must be in the future");
    }
    problems.into_result()
}

/// What a create must name: the label and the role.
pub(super) fn required(input: TokenInput) -> ApiResult<(String, Role, Option<DateTime<Utc>>)> {
    let mut problems = Problems::default();
    problems.check(input.label.is_some(), "label", "is required");
    problems.check(input.role.is_some(), "role", "is required");
    problems.into_result()?;
    let (Some(label), Some(role)) = (input.label, input.role) else {
        return Err(ApiFailure::Internal(
            "token validation passed without label or role".into(),
        ));
    };
    Ok((label, role, input.expires_at))
}

/// The label an update leaves; a token's expiry is fixed when it is issued.
pub(super) fn changed_label(input: &TokenInput, current: &TokenRow) -> ApiResult<String> {
    let mut problems = Problems::default();
    problems.check(
        input.expires_at.is_none(),
        "expires_at",
        "is set when a token is issued; issue a new token instead",
    );
    let label = input.label.clone().unwrap_or_else(|| current.label.clone());
    check_label(&mut problems, &label);
    problems.into_result()?;
    Ok(label)
}
