//! A token as the API shows it: never its value, except once, when it is issued.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::store::TokenRow;
use crate::auth::Role;
use crate::error::ApiFailure;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TokenView {
    pub id: Uuid,
    pub label: String,
    pub role: Role,
    /// The first characters of the token.
    pub token_prefix: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub version: i64,
}

/// A newly issued token: the only time its value is shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct IssuedToken {
    #[serde(flatten)]
    pub view: TokenView,
    /// Send as `Authorization: Bearer <token>`. Not retrievable later.
    pub token: String,
}

impl TryFrom<&TokenRow> for TokenView {
    type Error = ApiFailure;

    fn try_from(row: &TokenRow) -> Result<Self, ApiFailure> {
        Ok(TokenView {
            id: row.id,
            label: row.label.clone(),
            role: row.role.parse().map_err(ApiFailure::Internal)?,
            token_prefix: row.token_prefix.clone(),
            created_by: row.created_by.clone(),
            created_at: row.created_at,
            last_used_at: row.last_used_at,
            expires_at: row.expires_at,
            revoked_at: row.revoked_at,
            version: row.version,
        })
    }
}
