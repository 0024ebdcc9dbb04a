//! Secrets at rest: AES-256-GCM with the key from `MIH_SECRET_KEY`.
//!
//! A sealed value is `v1:<key id>:<base64(nonce ‖ ciphertext ‖ tag)>`. The key id (the first 8
//! hex digits of the key's SHA-256) lets a keyring hold the current key and previous ones: values
//! sealed with a previous key still open, and `mih secrets reencrypt` moves them to the current
//! one. A fresh random 96-bit nonce is drawn for every seal.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const PREFIX: &str = "v1";
const NONCE_LEN: usize = 12;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("no secret key is configured: set `secret_key` (MIH_SECRET_KEY) to store secrets")]
    NoKey,
    #[error(
        "the secret key must be 32 bytes, base64- or hex-encoded (for example `openssl rand -base64 32`)"
    )]
    BadKey,
    #[error(
        "the secret was sealed with key {0}, which is neither `secret_key` nor in `secret_keys_previous`"
    )]
    UnknownKey(String),
    #[error("the sealed secret is corrupt or was not sealed by mih")]
    Corrupt,
    #[error("the random number generator failed")]
    Random,
}

/// A secret as stored: encrypted, safe to keep in PostgreSQL and KV and to log. The default
/// (empty) value opens to nothing: it stands in only where validation has already failed.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Sealed(String);

impl Sealed {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id of the key that sealed it.
    pub fn key_id(&self) -> Option<&str> {
        let mut parts = self.0.splitn(3, ':');
        match (parts.next(), parts.next()) {
            (Some(PREFIX), Some(id)) => Some(id),
            _ => None,
        }
    }
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sealed({})", self.key_id().unwrap_or("?"))
    }
}

struct Key {
    id: String,
    cipher: Aes256Gcm,
}

/// The current key (if any) and previous keys still accepted for opening.
#[derive(Default)]
pub struct Keyring {
    current: Option<Key>,
    previous: Vec<Key>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("current", &self.current.as_ref().map(|k| &k.id))
            .field(
                "previous",
                &self.previous.iter().map(|k| &k.id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn parse_key(text: &str) -> Result<Key, CryptoError> {
    let text = text.trim();
    let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        hex::decode(text).map_err(|_| CryptoError::BadKey)?
    } else {
        BASE64.decode(text).map_err(|_| CryptoError::BadKey)?
    };
    if bytes.len() != 32 {
        return Err(CryptoError::BadKey);
    }
    let id = hex::encode(&Sha256::digest(&bytes)[..4]);
    let cipher = Aes256Gcm::new_from_slice(&bytes).map_err(|_| CryptoError::BadKey)?;
    Ok(Key { id, cipher })
}

impl Keyring {
    /// A keyring from the current key (optional) and previous keys.
    pub fn new(current: Option<&str>, previous: &[&str]) -> Result<Self, CryptoError> {
        Ok(Self {
            current: current.map(parse_key).transpose()?,
            previous: previous
                .iter()
                .map(|k| parse_key(k))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Checks a key's form without building a keyring (config validation).
    pub fn check_key(text: &str) -> Result<(), CryptoError> {
        parse_key(text).map(|_| ())
    }

    pub fn has_key(&self) -> bool {
        self.current.is_some()
    }

    pub fn current_key_id(&self) -> Option<&str> {
        self.current.as_ref().map(|k| k.id.as_str())
    }

    pub fn seal(&self, plaintext: &str) -> Result<Sealed, CryptoError> {
        let key = self.current.as_ref().ok_or(CryptoError::NoKey)?;
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|_| CryptoError::Random)?;
        let ciphertext = key
            .cipher
            .encrypt(Nonce::from_slice(&nonce), plaintext.as_bytes())
            .map_err(|_| CryptoError::Corrupt)?;
        let mut blob = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&ciphertext);
        Ok(Sealed(format!(
            "{PREFIX}:{}:{}",
            key.id,
            BASE64.encode(blob)
        )))
    }

    pub fn open(&self, sealed: &Sealed) -> Result<String, CryptoError> {
        let mut parts = sealed.0.splitn(3, ':');
        let (Some(PREFIX), Some(id), Some(data)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(CryptoError::Corrupt);
        };
        let key = self
            .current
            .iter()
            .chain(&self.previous)
            .find(|k| k.id == id)
            .ok_or_else(|| CryptoError::UnknownKey(id.to_owned()))?;
        let blob = BASE64.decode(data).map_err(|_| CryptoError::Corrupt)?;
        if blob.len() < NONCE_LEN {
            return Err(CryptoError::Corrupt);
        }
        let (nonce, ciphertext) = blob.split_at(NONCE_LEN);
        let plaintext = key
            .cipher
            .decrypt(Nonce::from_slice(nonce), ciphertext)
            .map_err(|_| CryptoError::Corrupt)?;
        String::from_utf8(plaintext).map_err(|_| CryptoError::Corrupt)
    }

    /// Whether `sealed` was sealed with the current key (re-encryption skips those).
    pub fn is_current(&self, sealed: &Sealed) -> bool {
        sealed.key_id().is_some() && sealed.key_id() == self.current_key_id()
    }
}

/// A fresh random key in the form `secret_key` takes (base64 of 32 bytes).
pub fn generate_key() -> Result<String, CryptoError> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|_| CryptoError::Random)?;
    Ok(BASE64.encode(key))
}

/// `bytes` random bytes as lowercase hex (tokens, ids).
pub fn random_hex(bytes: usize) -> Result<String, CryptoError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|_| CryptoError::Random)?;
    Ok(hex::encode(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "q2Vp2Nv5rPfBk0pO2Kq7pZbJm0Ck4YqZp0dJmQ8v3Xo=";

    #[test]
    fn seal_then_open_round_trips_and_hides_the_text() {
        let ring = Keyring::new(Some(KEY_A), &[]).expect("key");
        let sealed = ring.seal("hunter2 ünïcode").expect("sealed");
        assert!(!sealed.as_str().contains("hunter2"));
        assert_eq!(sealed.key_id(), ring.current_key_id());
        assert_eq!(ring.open(&sealed).expect("opens"), "hunter2 ünïcode");
        assert_ne!(
            ring.seal("x").expect("a"),
            ring.seal("x").expect("b"),
            "fresh nonce each time"
        );
    }

    #[test]
    fn previous_keys_open_and_unknown_keys_are_named() {
        let new = generate_key().expect("key");
        let old_ring = Keyring::new(Some(KEY_A), &[]).expect("key");
        let sealed_old = old_ring.seal("secret").expect("sealed");
        let rotated = Keyring::new(Some(&new), &[KEY_A]).expect("keys");
        assert_eq!(
            rotated.open(&sealed_old).expect("opens with previous"),
            "secret"
        );
        assert!(!rotated.is_current(&sealed_old));
        let only_new = Keyring::new(Some(&new), &[]).expect("key");
        assert!(matches!(
            only_new.open(&sealed_old),
            Err(CryptoError::UnknownKey(_))
        ));
    }

    #[test]
    fn tampering_and_missing_keys_are_errors() {
        let ring = Keyring::new(Some(KEY_A), &[]).expect("key");
        let sealed = ring.seal("secret").expect("sealed");
        let mut text = sealed.as_str().to_owned();
        let last = text.pop().map_or('A', |c| if c == 'A' { 'B' } else { 'A' });
        text.push(last);
        assert_eq!(ring.open(&Sealed(text)), Err(CryptoError::Corrupt));
        assert_eq!(Keyring::default().seal("x"), Err(CryptoError::NoKey));
        assert_eq!(Keyring::check_key("c2hvcnQ="), Err(CryptoError::BadKey));
        assert!(
            Keyring::check_key(&"ab".repeat(32)).is_ok(),
            "hex keys work too"
        );
    }
}
