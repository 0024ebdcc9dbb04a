use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The `v` field of a message: always serialises as `N` and refuses any other number, so a
/// reader never half-understands a message from a newer writer.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct Version<const N: u16>;

impl<const N: u16> fmt::Debug for Version<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{N}")
    }
}

impl<const N: u16> Serialize for Version<N> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u16(N)
    }
}

impl<'de, const N: u16> Deserialize<'de> for Version<N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let found = u16::deserialize(d)?;
        if found == N {
            Ok(Version)
        } else {
            Err(serde::de::Error::custom(format!(
                "unsupported message version {found}; this build reads version {N}"
            )))
        }
    }
}
