//! Settings that must never be printed: they serialise and debug-print redacted.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub const REDACTED: &str = "<redacted>";

/// A secret setting (password, token, signing secret).
#[derive(Clone)]
pub struct Secret(SecretString);

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        super::lenient::string(d).map(Secret::new)
    }
}

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(SecretString::from(value.into()))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(REDACTED)
    }
}

/// A connection URL whose password, if any, is redacted whenever it is shown.
#[derive(Clone)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any `user:password@` password replaced, safe for logs and errors.
    pub fn redacted(&self) -> String {
        redact_url_password(&self.0)
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for SecretUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

impl<'de> Deserialize<'de> for SecretUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        super::lenient::string(d).map(SecretUrl)
    }
}

/// Replaces the password of every `scheme://user:password@host` in `url` (NATS takes
/// comma-separated server lists, so there may be several).
pub fn redact_url_password(url: &str) -> String {
    url.split(',')
        .map(|one| {
            let Some(scheme_end) = one.find("://").map(|i| i + 3) else {
                return one.to_owned();
            };
            let rest = &one[scheme_end..];
            let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            let Some(at) = rest[..authority_end].rfind('@') else {
                return one.to_owned();
            };
            match rest[..at].find(':') {
                Some(colon) => format!(
                    "{}{}:{}{}",
                    &one[..scheme_end],
                    &rest[..colon],
                    REDACTED,
                    &rest[at..]
                ),
                // NATS reads a lone `token@` as an authentication token.
                None if is_nats_scheme(&one[..scheme_end]) => {
                    format!("{}{}{}", &one[..scheme_end], REDACTED, &rest[at..])
                }
                None => one.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn is_nats_scheme(scheme: &str) -> bool {
    ["nats://", "tls://", "ws://", "wss://"].contains(&scheme)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_redacted() {
        assert_eq!(
            redact_url_password("postgres://u:p%40ss@db:5432/mih?sslmode=require"),
            "postgres://u:<redacted>@db:5432/mih?sslmode=require"
        );
        assert_eq!(
            redact_url_password("nats://a:b@n1:4222,nats://n2:4222"),
            "nats://a:<redacted>@n1:4222,nats://n2:4222"
        );
        assert_eq!(
            redact_url_password("postgres://u@db/mih"),
            "postgres://u@db/mih"
        );
        assert_eq!(
            redact_url_password("nats://tok@n1:4222"),
            "nats://<redacted>@n1:4222"
        );
        assert_eq!(redact_url_password("127.0.0.1:4222"), "127.0.0.1:4222");
    }

    #[test]
    fn secrets_never_print() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), REDACTED);
        assert_eq!(
            serde_json::to_string(&secret).expect("serialises"),
            "\"<redacted>\""
        );
        assert_eq!(secret.expose(), "hunter2");
    }
}
