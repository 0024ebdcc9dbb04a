//! The five services of mih, named once.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// One of mih's services. Every place that wires services matches on this exhaustively, so
/// adding a service makes the compiler list each spot to update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceName {
    Ingest,
    Matcher,
    Dispatcher,
    Dlq,
    Api,
}

impl ServiceName {
    pub const ALL: [ServiceName; 5] = [
        ServiceName::Ingest,
        ServiceName::Matcher,
        ServiceName::Dispatcher,
        ServiceName::Dlq,
        ServiceName::Api,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ServiceName::Ingest => "ingest",
            ServiceName::Matcher => "matcher",
            ServiceName::Dispatcher => "dispatcher",
            ServiceName::Dlq => "dlq",
            ServiceName::Api => "api",
        }
    }

    /// Whether the service keeps state in PostgreSQL. The others run from NATS alone.
    pub fn uses_database(self) -> bool {
        match self {
            ServiceName::Ingest | ServiceName::Matcher | ServiceName::Dispatcher => false,
            ServiceName::Dlq | ServiceName::Api => true,
        }
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown service `{0}`: expected one of ingest, matcher, dispatcher, dlq, api")]
pub struct UnknownService(String);

impl FromStr for ServiceName {
    type Err = UnknownService;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ServiceName::ALL
            .into_iter()
            .find(|name| name.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownService(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_text() {
        for name in ServiceName::ALL {
            assert_eq!(name.as_str().parse::<ServiceName>().ok(), Some(name));
        }
        assert!("matchr".parse::<ServiceName>().is_err());
    }
}
