//! The circuit breaker of each service: one state shared by every dispatcher replica, kept in
//! the `<ns>_circuits` bucket and changed only by compare-and-set writes, so two replicas that
//! decide at once cannot overwrite each other (one retries with the other's result).
//!
//! closed → open after `failure_threshold` consecutive failures (permanent failures — the
//! request's fault — do not count) → half-open once `cooldown` passed, admitting
//! `half_open_probes` attempts → closed when a probe succeeds, open again when one fails.
//!
//! Beside the breaker, the circuit carries a pause a target asked for: a 429 answer pauses
//! the whole service, on every replica, until its `Retry-After` (see [`Circuit::pause`]).

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::live::BreakerPolicy;
use crate::messages::Version;
use crate::names::ServiceSlug;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

impl CircuitState {
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }
}

/// One service's breaker, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Circuit {
    pub v: Version<1>,
    pub state: CircuitState,
    pub consecutive_failures: u32,
    /// When it last opened; the cooldown runs from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opened_at: Option<DateTime<Utc>>,
    /// Probes admitted in the current half-open period.
    #[serde(default)]
    pub probes: u32,
    pub changed_at: DateTime<Utc>,
    /// The failure that last counted, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// No attempt before then: the service answered 429 (Too Many Requests). Replicas
    /// older than this field ignore it and drop it when they write, which only shortens a
    /// pause.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_until: Option<DateTime<Utc>>,
}

/// May an attempt go out now?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admit {
        probe: bool,
    },
    /// Not before `until` (the end of the cooldown), or until the state changes.
    Wait {
        until: DateTime<Utc>,
    },
    /// Not before `until`: the service asked for a pause (429 with `Retry-After`).
    Paused {
        until: DateTime<Utc>,
    },
}

impl Admission {
    /// When to ask again, if the attempt may not go out now.
    pub fn wait_until(self) -> Option<DateTime<Utc>> {
        match self {
            Admission::Admit { .. } => None,
            Admission::Wait { until } | Admission::Paused { until } => Some(until),
        }
    }
}

/// What an attempt says about the service's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// It answered as it should.
    Up,
    /// It failed in a way retrying may fix (5xx, timeout, connection refused).
    Down(String),
    /// It answered, but refused this request (4xx): says nothing against the service.
    Answered,
}

impl Circuit {
    pub fn closed(now: DateTime<Utc>) -> Self {
        Circuit {
            v: Version,
            state: CircuitState::Closed,
            consecutive_failures: 0,
            opened_at: None,
            probes: 0,
            changed_at: now,
            last_error: None,
            paused_until: None,
        }
    }

    /// The pause the service asked for, if it still runs at `now`.
    pub fn pause_at(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.paused_until.filter(|until| *until > now)
    }

    /// Pauses every attempt until `until` (a later pause already set stays). Returns whether
    /// it changed anything.
    pub fn pause(&mut self, until: DateTime<Utc>) -> bool {
        if self.paused_until.is_some_and(|current| current >= until) {
            return false;
        }
        self.paused_until = Some(until);
        true
    }

    /// Decides whether an attempt may go out, changing the state when the decision does (a
    /// cooldown ended, a probe slot was taken). Returns whether it changed.
    pub fn admit(&mut self, policy: &BreakerPolicy, now: DateTime<Utc>) -> (Admission, bool) {
        if let Some(until) = self.pause_at(now) {
            return (Admission::Paused { until }, false);
        }
        let cooldown =
            chrono::Duration::milliseconds(i64::try_from(policy.cooldown_ms).unwrap_or(i64::MAX));
        match self.state {
            CircuitState::Closed => (Admission::Admit { probe: false }, false),
            CircuitState::Open => {
                let until = self.opened_at.unwrap_or(self.changed_at) + cooldown;
                if now < until {
                    return (Admission::Wait { until }, false);
                }
                self.state = CircuitState::HalfOpen;
                self.probes = 1;
                self.changed_at = now;
                (Admission::Admit { probe: true }, true)
            }
            CircuitState::HalfOpen => {
                if self.probes < policy.half_open_probes.max(1) {
                    self.probes += 1;
                    return (Admission::Admit { probe: true }, true);
                }
                // Probes that never reported (their dispatcher died) must not hold the circuit
                // half-open forever: after another cooldown a new round of probes starts.
                let until = self.changed_at + cooldown;
                if now < until {
                    return (Admission::Wait { until }, false);
                }
                self.probes = 1;
                self.changed_at = now;
                (Admission::Admit { probe: true }, true)
            }
        }
    }

    /// Takes an attempt's result into account. Returns whether the state changed.
    pub fn record(&mut self, policy: &BreakerPolicy, health: &Health, now: DateTime<Utc>) -> bool {
        match (self.state, health) {
            (CircuitState::Closed, Health::Up) => {
                let changed = self.consecutive_failures > 0;
                self.consecutive_failures = 0;
                changed
            }
            (CircuitState::Closed, Health::Answered) => false,
            (CircuitState::Closed, Health::Down(error)) => {
                self.consecutive_failures += 1;
                self.last_error = Some(error.clone());
                if self.consecutive_failures >= policy.failure_threshold.max(1) {
                    self.open(now);
                }
                true
            }
            (CircuitState::HalfOpen, Health::Up | Health::Answered) => {
                *self = Circuit {
                    paused_until: self.paused_until,
                    ..Circuit::closed(now)
                };
                true
            }
            (CircuitState::HalfOpen, Health::Down(error)) => {
                self.last_error = Some(error.clone());
                self.consecutive_failures += 1;
                self.open(now);
                true
            }
            // An attempt admitted before the circuit opened: the circuit already knows.
            (CircuitState::Open, Health::Down(_) | Health::Up | Health::Answered) => false,
        }
    }

    fn open(&mut self, now: DateTime<Utc>) {
        self.state = CircuitState::Open;
        self.opened_at = Some(now);
        self.probes = 0;
        self.changed_at = now;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CircuitError {
    #[error("circuits bucket: {cause}")]
    Store { cause: String },
    #[error("circuit of {service} is not readable: {cause}")]
    Corrupt { service: String, cause: String },
    #[error("circuit of {service} kept changing under concurrent writers")]
    Contended { service: String },
}

fn store_error(cause: impl std::fmt::Display) -> CircuitError {
    CircuitError::Store {
        cause: cause.to_string(),
    }
}

/// The `<ns>_circuits` bucket.
#[derive(Debug, Clone)]
pub struct CircuitStore {
    kv: kv::Store,
}

/// Attempts of one compare-and-set change before giving up; each failure means another
/// replica wrote in between, so the next try starts from its result.
const CAS_ATTEMPTS: usize = 16;

impl CircuitStore {
    pub async fn open(js: &jetstream::Context, bucket: &str) -> Result<Self, CircuitError> {
        let kv = js.get_key_value(bucket).await.map_err(store_error)?;
        Ok(CircuitStore { kv })
    }

    pub fn kv(&self) -> &kv::Store {
        &self.kv
    }

    /// The stored circuit (closed when none is stored) and its revision.
    pub async fn load(
        &self,
        service: &ServiceSlug,
    ) -> Result<(Circuit, Option<u64>), CircuitError> {
        let entry = self.kv.entry(service.as_str()).await.map_err(store_error)?;
        match entry {
            Some(entry) if entry.operation == kv::Operation::Put => {
                let circuit = decode(service.as_str(), &entry.value)?;
                Ok((circuit, Some(entry.revision)))
            }
            _ => Ok((Circuit::closed(Utc::now()), None)),
        }
    }

    /// Applies `change` with compare-and-set until it sticks; `change` returns whether it
    /// changed anything (nothing is written otherwise). Returns the circuit after the change and
    /// whether it was written.
    pub async fn modify<F>(
        &self,
        service: &ServiceSlug,
        mut change: F,
    ) -> Result<(Circuit, bool), CircuitError>
    where
        F: FnMut(&mut Circuit) -> bool,
    {
        for _ in 0..CAS_ATTEMPTS {
            let (mut circuit, revision) = self.load(service).await?;
            if !change(&mut circuit) {
                return Ok((circuit, false));
            }
            let bytes = Bytes::from(serde_json::to_vec(&circuit).map_err(store_error)?);
            let written = match revision {
                Some(revision) => self
                    .kv
                    .update(service.as_str(), bytes, revision)
                    .await
                    .map(|_| ())
                    .map_err(|e| {
                        (
                            e.kind() == kv::UpdateErrorKind::WrongLastRevision,
                            e.to_string(),
                        )
                    }),
                None => self
                    .kv
                    .create(service.as_str(), bytes)
                    .await
                    .map(|_| ())
                    .map_err(|e| {
                        (
                            e.kind() == kv::CreateErrorKind::AlreadyExists,
                            e.to_string(),
                        )
                    }),
            };
            match written {
                Ok(()) => return Ok((circuit, true)),
                Err((true, _)) => continue,
                Err((false, cause)) => return Err(CircuitError::Store { cause }),
            }
        }
        Err(CircuitError::Contended {
            service: service.to_string(),
        })
    }

    /// Every stored circuit.
    pub async fn all(&self) -> Result<Vec<(String, Circuit)>, CircuitError> {
        use futures::TryStreamExt;
        let keys: Vec<String> = match self.kv.keys().await {
            Ok(keys) => keys.try_collect().await.map_err(store_error)?,
            Err(e) => return Err(store_error(e)),
        };
        let mut circuits = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(bytes) = self.kv.get(&key).await.map_err(store_error)? {
                circuits.push((key.clone(), decode(&key, &bytes)?));
            }
        }
        Ok(circuits)
    }
}

fn decode(service: &str, bytes: &[u8]) -> Result<Circuit, CircuitError> {
    serde_json::from_slice(bytes).map_err(|e| CircuitError::Corrupt {
        service: service.to_owned(),
        cause: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: BreakerPolicy = BreakerPolicy {
        failure_threshold: 3,
        cooldown_ms: 10_000,
        half_open_probes: 1,
    };

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).expect("time")
    }

    fn down() -> Health {
        Health::Down("HTTP 503".into())
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let mut c = Circuit::closed(at(0));
        assert!(c.record(&POLICY, &down(), at(1)));
        assert!(c.record(&POLICY, &down(), at(2)));
        assert!(
            c.record(&POLICY, &Health::Up, at(3)),
            "a success resets the count"
        );
        assert_eq!(c.consecutive_failures, 0);
        assert!(!c.record(&POLICY, &Health::Up, at(3)), "nothing to write");
        for t in 4..6 {
            c.record(&POLICY, &down(), at(t));
            assert!(
                !c.record(&POLICY, &Health::Answered, at(t)),
                "4xx neither counts nor resets"
            );
        }
        assert_eq!(c.state, CircuitState::Closed);
        c.record(&POLICY, &down(), at(7));
        assert_eq!(c.state, CircuitState::Open);
        assert_eq!(c.opened_at, Some(at(7)));
        assert_eq!(c.last_error.as_deref(), Some("HTTP 503"));
    }

    #[test]
    fn half_opens_after_the_cooldown_with_bounded_probes() {
        let mut c = Circuit::closed(at(0));
        for t in 0..3 {
            c.record(&POLICY, &down(), at(t));
        }
        assert_eq!(
            c.admit(&POLICY, at(5)),
            (Admission::Wait { until: at(12) }, false)
        );
        assert_eq!(
            c.admit(&POLICY, at(12)),
            (Admission::Admit { probe: true }, true)
        );
        assert_eq!(c.state, CircuitState::HalfOpen);
        assert_eq!(
            c.admit(&POLICY, at(13)),
            (Admission::Wait { until: at(22) }, false)
        );
        // A probe that never reports does not hold the circuit forever.
        assert_eq!(
            c.admit(&POLICY, at(22)),
            (Admission::Admit { probe: true }, true)
        );
    }

    #[test]
    fn a_probe_closes_or_reopens() {
        let mut c = Circuit::closed(at(0));
        for t in 0..3 {
            c.record(&POLICY, &down(), at(t));
        }
        c.admit(&POLICY, at(20));
        assert!(c.record(&POLICY, &down(), at(21)));
        assert_eq!((c.state, c.opened_at), (CircuitState::Open, Some(at(21))));
        c.admit(&POLICY, at(31));
        assert!(c.record(&POLICY, &Health::Up, at(32)));
        assert_eq!(c, Circuit::closed(at(32)));
        let policy = BreakerPolicy {
            half_open_probes: 2,
            ..POLICY
        };
        let mut c = Circuit::closed(at(0));
        for t in 0..3 {
            c.record(&policy, &down(), at(t));
        }
        assert_eq!(c.admit(&policy, at(20)).0, Admission::Admit { probe: true });
        assert_eq!(c.admit(&policy, at(20)).0, Admission::Admit { probe: true });
        assert!(matches!(c.admit(&policy, at(20)).0, Admission::Wait { .. }));
        assert!(
            c.record(&policy, &Health::Answered, at(21)),
            "a 4xx answer shows it is up"
        );
        assert_eq!(c.state, CircuitState::Closed);
    }

    #[test]
    fn a_pause_holds_every_attempt_back_until_it_ends_and_only_lengthens() {
        let mut c = Circuit::closed(at(0));
        assert!(c.pause(at(5)));
        assert!(!c.pause(at(3)), "a shorter pause changes nothing");
        assert_eq!(
            c.admit(&POLICY, at(1)),
            (Admission::Paused { until: at(5) }, false)
        );
        assert_eq!(c.admit(&POLICY, at(5)).0, Admission::Admit { probe: false });
        assert!(c.pause(at(8)));
        // Paused while open: the pause comes first, then the cooldown still applies.
        for t in 0..3 {
            c.record(&POLICY, &down(), at(t));
        }
        assert_eq!(
            c.admit(&POLICY, at(6)).0,
            Admission::Paused { until: at(8) }
        );
        assert_eq!(c.admit(&POLICY, at(9)).0, Admission::Wait { until: at(12) });
        c.admit(&POLICY, at(12));
        assert!(c.pause(at(30)));
        assert!(c.record(&POLICY, &Health::Up, at(13)));
        assert_eq!(c.state, CircuitState::Closed);
        assert_eq!(c.paused_until, Some(at(30)), "closing keeps the pause");
    }

    #[test]
    fn a_circuit_written_before_pauses_existed_reads_as_not_paused() {
        let old = r#"{"v":1,"state":"closed","consecutive_failures":0,"changed_at":"2027-01-15T08:00:00Z"}"#;
        let c: Circuit = serde_json::from_str(old).expect("reads");
        assert_eq!(c.paused_until, None);
        let written = serde_json::to_string(&c).expect("writes");
        assert!(!written.contains("paused_until"), "{written}");
    }
}
