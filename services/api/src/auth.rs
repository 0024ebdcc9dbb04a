//! Who is calling: an admin token (`Authorization: Bearer mih_…`) and its role.
//!
//! viewer reads everything but tokens; operator also manages rules, dead letters and circuits;
//! admin manages everything, tokens included.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::ApiFailure;
use crate::state::AppState;

/// Prefix of every admin token, so a leaked one is recognisable in logs and scanners.
pub const TOKEN_PREFIX: &str = "mih_";

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Operator,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            other => Err(format!(
                "unknown role `{other}`: expected viewer, operator or admin"
            )),
        }
    }
}

/// SHA-256 (hex) of a token; tokens are random, so a fast hash suffices.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub token_id: Uuid,
    pub label: String,
    pub role: Role,
}

impl Caller {
    /// Refuses callers below `role`.
    pub fn require(&self, role: Role) -> Result<(), ApiFailure> {
        if self.role >= role {
            Ok(())
        } else {
            Err(ApiFailure::Forbidden(format!(
                "this needs the {} role; the token `{}` has {}",
                role.as_str(),
                self.label,
                self.role.as_str()
            )))
        }
    }

    /// How the audit log names the caller.
    pub fn actor(&self) -> String {
        format!("token:{} ({})", self.token_id, self.label)
    }
}

#[derive(sqlx::FromRow)]
struct TokenRow {
    id: Uuid,
    label: String,
    role: String,
    expires_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
    last_used_at: Option<DateTime<Utc>>,
}

/// Looks a presented token up; `None` when unknown, revoked or expired.
pub async fn authenticate(db: &PgPool, token: &str) -> Result<Option<Caller>, ApiFailure> {
    let row: Option<TokenRow> = sqlx::query_as(
        "SELECT id, label, role, expires_at, revoked_at, last_used_at FROM admin_tokens WHERE token_hash = $1",
    )
    .bind(hash_token(token))
    .fetch_optional(db)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let now = Utc::now();
    if row.revoked_at.is_some() || row.expires_at.is_some_and(|at| at <= now) {
        return Ok(None);
    }
    // One write a minute per token at most: `last used` is for humans, not an access log.
    if row
        .last_used_at
        .is_none_or(|at| now - at > chrono::Duration::minutes(1))
    {
        sqlx::query("UPDATE admin_tokens SET last_used_at = now() WHERE id = $1")
            .bind(row.id)
            .execute(db)
            .await?;
    }
    let role = row
        .role
        .parse()
        .map_err(|e: String| ApiFailure::Internal(format!("token {}: {e}", row.id)))?;
    Ok(Some(Caller {
        token_id: row.id,
        label: row.label,
        role,
    }))
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiFailure;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                ApiFailure::Unauthorized("send an admin token: Authorization: Bearer mih_…".into())
            })?;
        let token = header
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .ok_or_else(|| {
                ApiFailure::Unauthorized("the Authorization header must be `Bearer <token>`".into())
            })?;
        authenticate(&state.db, token).await?.ok_or_else(|| {
            ApiFailure::Unauthorized("the token is unknown, revoked or expired".into())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_by_power() {
        let caller = |role| Caller {
            token_id: Uuid::nil(),
            label: "t".into(),
            role,
        };
        assert!(caller(Role::Admin).require(Role::Operator).is_ok());
        assert!(caller(Role::Operator).require(Role::Operator).is_ok());
        assert!(matches!(
            caller(Role::Viewer).require(Role::Operator),
            Err(ApiFailure::Forbidden(_))
        ));
        assert_eq!("operator".parse::<Role>(), Ok(Role::Operator));
        assert!("root".parse::<Role>().is_err());
    }
}
