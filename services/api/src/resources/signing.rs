//! Standard Webhooks signing secrets as clients write them (a source's, a service's inbound
//! endpoint's): checked, sealed, and rotated with an overlap during which the previous
//! secrets stay valid, so the sender can switch without a refused request.

use chrono::{DateTime, Utc};

use mih_shared::crypto::random_hex;
use mih_shared::live::SealedSigningSecret;
use mih_shared::signature::SigningSecret;

use super::{Problems, Tri, seal};
use crate::error::{ApiFailure, ApiResult};
use crate::state::AppState;

pub const DEFAULT_OVERLAP_SECS: u64 = 24 * 3600;
pub const MAX_OVERLAP_SECS: u64 = 30 * 24 * 3600;
/// The shortest bearer token accepted anywhere a client sets one.
pub const MIN_TOKEN_LEN: usize = 16;

/// Checks a new secret and the overlap; problems are named after `prefix` (`""` or
/// `"inbound."`).
pub fn check(
    problems: &mut Problems,
    prefix: &str,
    secret: &Tri<String>,
    overlap: Option<u64>,
) -> u64 {
    let overlap = overlap.unwrap_or(DEFAULT_OVERLAP_SECS);
    problems.check(
        overlap <= MAX_OVERLAP_SECS,
        &format!("{prefix}rotation_overlap_secs"),
        format!("must be at most {MAX_OVERLAP_SECS} (30 days)"),
    );
    if let Tri::Value(secret) = secret
        && let Err(e) = SigningSecret::parse(secret)
    {
        problems.add(&format!("{prefix}signing_secret"), e.to_string());
    }
    overlap
}

/// Checks a bearer token's length; the problem is named after `field`.
pub fn check_token(problems: &mut Problems, field: &str, token: &Tri<String>) {
    if let Tri::Value(token) = token {
        problems.check(
            (MIN_TOKEN_LEN..=512).contains(&token.len()),
            field,
            format!("must be {MIN_TOKEN_LEN} to 512 characters long"),
        );
    }
}

/// The secrets after applying `input` to `current` at `now`: expired ones dropped; a new one
/// added with the previous ones expiring after `overlap` seconds; `null` removes them all.
pub fn rotate(
    state: &AppState,
    field: &str,
    mut current: Vec<SealedSigningSecret>,
    input: Tri<String>,
    overlap: u64,
    now: DateTime<Utc>,
) -> ApiResult<Vec<SealedSigningSecret>> {
    current.retain(|s| s.active_at(now));
    match input {
        Tri::Absent => {}
        Tri::Null => current.clear(),
        Tri::Value(secret) => {
            let expires =
                now + chrono::Duration::seconds(i64::try_from(overlap).unwrap_or(i64::MAX / 2));
            for old in &mut current {
                old.expires_at = Some(old.expires_at.map_or(expires, |at| at.min(expires)));
            }
            if overlap == 0 {
                current.clear();
            }
            current.push(SealedSigningSecret {
                id: format!("sec_{}", random_hex(6).map_err(ApiFailure::Crypto)?),
                secret: seal(&state.keyring, field, &secret)?,
                created_at: now,
                expires_at: None,
            });
        }
    }
    Ok(current)
}
