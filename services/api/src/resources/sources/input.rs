//! What a client (or the configuration's `[sources.*]`) writes, checked and applied to a row.

use chrono::Utc;
use serde::Deserialize;
use sqlx::types::Json as SqlJson;
use utoipa::{IntoParams, ToSchema};

use mih_shared::crypto::random_hex;
use mih_shared::live::SealedSigningSecret;
use mih_shared::names::SourceId;
use mih_shared::sources::hash_token_hex;

use super::store::{self, SourceRow};
use crate::error::{ApiFailure, ApiResult};
use crate::resources::config_row;
use crate::resources::{Problems, Tri, check_text, seal, signing};
use crate::state::AppState;

/// A source as written by a client. Secrets are write-only: on update, leaving one out keeps
/// it, `null` removes it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceInput {
    /// Slug the site names in the `mih-source` header. Required on create; fixed afterwards.
    #[schema(pattern = "^[a-z0-9][a-z0-9_-]{0,63}$")]
    pub id: Option<String>,
    /// Display name (defaults to the id).
    #[schema(min_length = 1, max_length = 200)]
    pub name: Option<String>,
    /// Default true.
    pub enabled: Option<bool>,
    /// A Standard Webhooks secret (`whsec_…`, 24–64 bytes). Setting it rotates: earlier
    /// secrets stay valid for `rotation_overlap_secs`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub signing_secret: Tri<String>,
    /// How long the previous signing secrets remain valid after a rotation (default 86400).
    #[schema(maximum = 2592000)]
    pub rotation_overlap_secs: Option<u64>,
    /// A bearer token (at least 16 characters) the site may send instead of signing.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub bearer_token: Tri<String>,
    /// The version this update is based on (alternative to `If-Match`).
    pub version: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SourceFilter {
    /// Only enabled (true) or disabled (false) sources.
    pub enabled: Option<bool>,
    /// Part of the id or name, case-insensitive.
    pub q: Option<String>,
}

/// Applies an input to the current row (none when creating), validating everything.
pub(super) fn apply(
    state: &AppState,
    current: Option<&SourceRow>,
    input: SourceInput,
) -> ApiResult<SourceRow> {
    let mut problems = Problems::default();
    let id = match (current, &input.id) {
        (Some(row), Some(id)) if id != &row.id => {
            problems.add("id", "cannot change; create a new source instead");
            row.id.clone()
        }
        (Some(row), _) => row.id.clone(),
        (None, Some(id)) => {
            if let Err(e) = SourceId::parse(id.clone()) {
                problems.add("id", e.to_string());
            }
            id.clone()
        }
        (None, None) => {
            problems.add("id", "is required");
            String::new()
        }
    };
    let name = input
        .name
        .or_else(|| current.map(|r| r.name.clone()))
        .unwrap_or_else(|| id.clone());
    check_text(&mut problems, "name", &name, 1, 200);
    let overlap = signing::check(
        &mut problems,
        "",
        &input.signing_secret,
        input.rotation_overlap_secs,
    );
    signing::check_token(&mut problems, "bearer_token", &input.bearer_token);
    problems.into_result()?;

    let now = Utc::now();
    let signing_secrets = signing::rotate(
        state,
        "signing_secret",
        current
            .map(|r| r.signing_secrets.0.clone())
            .unwrap_or_default(),
        input.signing_secret,
        overlap,
        now,
    )?;
    let bearer_token_hashes = match input.bearer_token {
        Tri::Absent => current
            .map(|r| r.bearer_token_hashes.clone())
            .unwrap_or_default(),
        Tri::Null => Vec::new(),
        Tri::Value(token) => vec![hash_token_hex(&token)],
    };
    Ok(SourceRow {
        id,
        name,
        enabled: input.enabled.or(current.map(|r| r.enabled)).unwrap_or(true),
        signing_secrets: SqlJson(signing_secrets),
        bearer_token_hashes,
        version: current.map_or(0, |r| r.version),
        created_at: current.map_or(now, |r| r.created_at),
        updated_at: now,
    })
}

/// Creates the `[sources.*]` of the configuration that do not exist yet (never overwrites).
pub async fn import_seeds(
    state: &AppState,
    config: &mih_shared::config::Config,
) -> ApiResult<usize> {
    let mut created = 0;
    for (id, seed) in &config.sources {
        let mut tx = state.db.begin().await?;
        if store::load(&mut tx, id.as_str(), true).await?.is_some() {
            continue;
        }
        let now = Utc::now();
        let mut secrets = Vec::new();
        for secret in &seed.signing_secrets {
            secrets.push(SealedSigningSecret {
                id: format!("sec_{}", random_hex(6).map_err(ApiFailure::Crypto)?),
                secret: seal(
                    &state.keyring,
                    &format!("sources.{id}.signing_secrets"),
                    secret.expose(),
                )?,
                created_at: now,
                expires_at: None,
            });
        }
        let row = SourceRow {
            id: id.to_string(),
            name: seed.name.clone().unwrap_or_else(|| id.to_string()),
            enabled: seed.enabled,
            signing_secrets: SqlJson(secrets),
            bearer_token_hashes: seed
                .bearer_tokens
                .iter()
                .map(|t| hash_token_hex(t.expose()))
                .collect(),
            version: 0,
            created_at: now,
            updated_at: now,
        };
        config_row::commit(
            state,
            tx,
            "system (configuration seed)",
            "create",
            None,
            &row,
            true,
        )
        .await?;
        created += 1;
    }
    Ok(created)
}
