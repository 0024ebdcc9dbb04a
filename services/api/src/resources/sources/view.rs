//! A source as the API shows it: secrets never appear, only whether they are set.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::store::SourceRow;

#[derive(Debug, Serialize, ToSchema)]
pub struct SigningSecretView {
    pub id: String,
    pub created_at: DateTime<Utc>,
    /// Set while a newer secret is taking over.
    pub expires_at: Option<DateTime<Utc>>,
}

/// A source as the API shows it: secrets never appear, only whether they are set.
#[derive(Debug, Serialize, ToSchema)]
pub struct SourceView {
    pub id: String,
    pub name: String,
    pub enabled: bool,
    pub signing_secrets: Vec<SigningSecretView>,
    pub bearer_token_set: bool,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<&SourceRow> for SourceView {
    fn from(row: &SourceRow) -> Self {
        SourceView {
            id: row.id.clone(),
            name: row.name.clone(),
            enabled: row.enabled,
            signing_secrets: row
                .signing_secrets
                .iter()
                .map(|s| SigningSecretView {
                    id: s.id.clone(),
                    created_at: s.created_at,
                    expires_at: s.expires_at,
                })
                .collect(),
            bearer_token_set: !row.bearer_token_hashes.is_empty(),
            version: row.version,
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}
