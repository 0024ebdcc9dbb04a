//! The Moodle sites allowed to send events, as ingest sees them: an in-memory snapshot read on
//! every request without locks, rebuilt from the live configuration whenever it changes.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::crypto::{CryptoError, Keyring};
use crate::live::{LiveSource, SealedSigningSecret};
use crate::names::SourceId;
use crate::signature::{SecretError, SigningSecret};

/// SHA-256 of a bearer token. Tokens are random and long, so a fast hash is enough to keep
/// them out of storage while allowing a direct lookup.
pub type TokenHash = [u8; 32];

pub fn hash_token(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// [`hash_token`] as stored: lowercase hex.
pub fn hash_token_hex(token: &str) -> String {
    hex::encode(hash_token(token))
}

/// Why the secrets of a source (or of a service's inbound endpoint) cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{owner}: cannot open signing secret {secret_id}: {error}")]
    Seal {
        owner: String,
        secret_id: String,
        error: CryptoError,
    },
    #[error("{owner}: signing secret {secret_id} is not a Standard Webhooks secret: {error}")]
    Secret {
        owner: String,
        secret_id: String,
        error: SecretError,
    },
    #[error("{owner}: a bearer token hash is not 64 hex digits")]
    TokenHash { owner: String },
}

/// Opens sealed signing secrets; `owner` names whose they are in errors.
pub fn open_secrets(
    owner: &str,
    sealed: &[SealedSigningSecret],
    keyring: &Keyring,
) -> Result<Vec<ActiveSecret>, SourceError> {
    sealed
        .iter()
        .map(|sealed| {
            let text = keyring
                .open(&sealed.secret)
                .map_err(|error| SourceError::Seal {
                    owner: owner.to_owned(),
                    secret_id: sealed.id.clone(),
                    error,
                })?;
            let secret = SigningSecret::parse(&text).map_err(|error| SourceError::Secret {
                owner: owner.to_owned(),
                secret_id: sealed.id.clone(),
                error,
            })?;
            Ok(ActiveSecret {
                secret,
                expires_at: sealed.expires_at,
            })
        })
        .collect()
}

/// Reads stored bearer token hashes (lowercase hex).
pub fn token_hashes(owner: &str, hex_hashes: &[String]) -> Result<Vec<TokenHash>, SourceError> {
    hex_hashes
        .iter()
        .map(|h| {
            hex::decode(h)
                .ok()
                .and_then(|bytes| TokenHash::try_from(bytes).ok())
                .ok_or_else(|| SourceError::TokenHash {
                    owner: owner.to_owned(),
                })
        })
        .collect()
}

/// A signing secret and, during a rotation, when it stops being accepted.
#[derive(Debug, Clone)]
pub struct ActiveSecret {
    pub secret: SigningSecret,
    pub expires_at: Option<DateTime<Utc>>,
}

/// One Moodle site, ready for authentication.
#[derive(Debug, Clone)]
pub struct Source {
    pub id: SourceId,
    pub name: String,
    pub enabled: bool,
    pub signing_secrets: Vec<ActiveSecret>,
    pub bearer_token_hashes: Vec<TokenHash>,
}

impl Source {
    /// Opens the sealed secrets of a live source.
    pub fn from_live(live: &LiveSource, keyring: &Keyring) -> Result<Self, SourceError> {
        let owner = format!("source `{}`", live.id);
        Ok(Self {
            id: live.id.clone(),
            name: live.name.clone(),
            enabled: live.enabled,
            signing_secrets: open_secrets(&owner, &live.signing_secrets, keyring)?,
            bearer_token_hashes: token_hashes(&owner, &live.bearer_token_hashes)?,
        })
    }

    /// The signing secrets accepted at `now` (a rotated-out secret expires).
    pub fn secrets_at(&self, now: DateTime<Utc>) -> impl Iterator<Item = &SigningSecret> + Clone {
        self.signing_secrets
            .iter()
            .filter(move |s| s.expires_at.is_none_or(|at| at > now))
            .map(|s| &s.secret)
    }
}

#[derive(Debug, Default)]
struct Snapshot {
    by_id: HashMap<SourceId, Arc<Source>>,
    by_token: HashMap<TokenHash, Arc<Source>>,
}

/// The current set of sources, shared by every request handler.
#[derive(Debug, Clone, Default)]
pub struct SourceDirectory {
    current: Arc<ArcSwap<Snapshot>>,
}

impl SourceDirectory {
    pub fn new(sources: Vec<Source>) -> Self {
        let directory = Self::default();
        directory.replace(sources);
        directory
    }

    /// Swaps in a new set of sources; requests in flight finish with the set they started with.
    pub fn replace(&self, sources: Vec<Source>) {
        let mut snapshot = Snapshot::default();
        for source in sources {
            let source = Arc::new(source);
            for hash in &source.bearer_token_hashes {
                snapshot.by_token.insert(*hash, Arc::clone(&source));
            }
            snapshot.by_id.insert(source.id.clone(), source);
        }
        self.current.store(Arc::new(snapshot));
    }

    pub fn get(&self, id: &SourceId) -> Option<Arc<Source>> {
        self.current.load().by_id.get(id).cloned()
    }

    pub fn by_bearer_token(&self, token: &str) -> Option<Arc<Source>> {
        self.current
            .load()
            .by_token
            .get(&hash_token(token))
            .cloned()
    }

    pub fn len(&self) -> usize {
        self.current.load().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;
    use crate::crypto::generate_key;
    use crate::live::SealedSigningSecret;
    use crate::messages::Version;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn live(keyring: &Keyring, expires_at: Option<DateTime<Utc>>) -> LiveSource {
        LiveSource {
            v: Version,
            id: SourceId::parse("a").expect("id"),
            name: "A".into(),
            enabled: true,
            signing_secrets: vec![SealedSigningSecret {
                id: "sec_1".into(),
                secret: keyring.seal(SECRET).expect("sealed"),
                created_at: Utc::now(),
                expires_at,
            }],
            bearer_token_hashes: vec![hash_token_hex("token-of-source-a-0001")],
            version: 1,
        }
    }

    #[test]
    fn live_sources_open_and_are_found_by_id_and_token() {
        let keyring = Keyring::new(Some(&generate_key().expect("key")), &[]).expect("keyring");
        let source = Source::from_live(&live(&keyring, None), &keyring).expect("opens");
        let directory = SourceDirectory::new(vec![source]);
        let id = SourceId::parse("a").expect("id");
        assert_eq!(
            directory.get(&id).map(|s| s.name.clone()).as_deref(),
            Some("A")
        );
        assert_eq!(
            directory
                .by_bearer_token("token-of-source-a-0001")
                .map(|s| s.id.clone()),
            Some(id.clone())
        );
        assert!(
            directory
                .by_bearer_token("token-of-source-a-0002")
                .is_none()
        );
        let clone = directory.clone();
        clone.replace(Vec::new());
        assert!(directory.get(&id).is_none(), "clones share one snapshot");
    }

    #[test]
    fn expired_secrets_are_not_offered_and_foreign_keys_are_errors() {
        let keyring = Keyring::new(Some(&generate_key().expect("key")), &[]).expect("keyring");
        let now = Utc::now();
        let source = Source::from_live(&live(&keyring, Some(now + Duration::hours(1))), &keyring)
            .expect("opens");
        assert_eq!(source.secrets_at(now).count(), 1);
        assert_eq!(source.secrets_at(now + Duration::hours(2)).count(), 0);
        let other = Keyring::new(Some(&generate_key().expect("key")), &[]).expect("keyring");
        assert!(matches!(
            Source::from_live(&live(&keyring, None), &other),
            Err(SourceError::Seal { .. })
        ));
    }
}
