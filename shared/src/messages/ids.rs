use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            pub fn as_uuid(&self) -> &Uuid {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

uuid_id!(
    /// Identity of an accepted event: a UUIDv7, so ids sort by arrival time.
    EventId
);
uuid_id!(
    /// Identity of one delivery to do; targets receive it as `Idempotency-Key`.
    JobId
);
uuid_id!(
    /// Identity of a rule.
    RuleId
);
uuid_id!(
    /// Identity of an inbound message (a UUIDv7, so ids sort by arrival time).
    InboundId
);

impl InboundId {
    pub fn new_v7() -> Self {
        Self(Uuid::now_v7())
    }
}

impl EventId {
    pub fn new_v7() -> Self {
        Self(Uuid::now_v7())
    }
}

impl JobId {
    /// The job of `rule` for `event`. Derived, not random, so publishing it twice (a matcher
    /// crash between publish and ack) is recognised as the same job by JetStream and by targets.
    pub fn for_rule(event: EventId, rule: RuleId) -> Self {
        Self(Uuid::new_v5(&event.0, rule.0.as_bytes()))
    }

    /// A fresh job id, for jobs that do not come from an (event, rule) pair: facade calls and
    /// replays.
    pub fn new_v7() -> Self {
        Self(Uuid::now_v7())
    }
}
