//! The accounting after a scenario: every accepted event delivered or dead-lettered, every
//! duplicate recognisable by an `Idempotency-Key` the target saw before.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::hub::output_dir;
use crate::load::Sent;

/// One delivery the target took (answered 2xx in time).
#[derive(Debug, Clone)]
pub struct Delivery {
    pub event_id: String,
    /// What the target can deduplicate by (HTTP: the `Idempotency-Key` header).
    pub key: Option<String>,
    /// When the target received it (HTTP targets).
    pub at: Option<Instant>,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: String,
    pub load_seconds: f64,
    pub rate_per_s: u32,
    pub sent: usize,
    pub accepted: usize,
    pub not_accepted: usize,
    /// Accepted events the target took at least once.
    pub delivered: usize,
    /// Deliveries of accepted events beyond the first of each.
    pub duplicates: usize,
    /// Accepted events in the DLQ stream.
    pub dead_lettered: usize,
    /// Accepted events neither delivered nor dead-lettered.
    pub lost: usize,
    /// Events delivered again under an Idempotency-Key the target had not seen for them.
    pub unrecognisable_duplicates: Vec<String>,
    /// `<event id> (<Idempotency-Key>)` of each repeated delivery.
    pub duplicated: Vec<String>,
    /// `<event id> (<Idempotency-Key>)` of each lost event.
    pub lost_events: Vec<String>,
    /// Why requests were not accepted (status or error → count).
    pub refusals: BTreeMap<String, usize>,
    pub recovery_seconds: f64,
    /// Longest time without a new accepted event reaching the target (HTTP targets): how long
    /// delivery stood still around the fault.
    pub delivery_stall_ms: Option<u64>,
    /// Longest time without ingest answering 202.
    pub acceptance_stall_ms: Option<u64>,
    /// What the fault did (e.g. which node it killed and which streams that node led).
    pub notes: Vec<String>,
}

pub fn accepted_ids(sent: &[Sent]) -> HashSet<String> {
    sent.iter().filter_map(|s| s.accepted.clone()).collect()
}

/// Accepted events neither delivered nor dead-lettered.
pub fn missing(
    accepted: &HashSet<String>,
    deliveries: &[Delivery],
    dead: &HashSet<String>,
) -> Vec<String> {
    let delivered: HashSet<&str> = deliveries.iter().map(|d| d.event_id.as_str()).collect();
    let mut lost: Vec<String> = accepted
        .iter()
        .filter(|id| !delivered.contains(id.as_str()) && !dead.contains(*id))
        .cloned()
        .collect();
    lost.sort();
    lost
}

pub struct Inputs<'a> {
    pub scenario: &'a str,
    pub load_seconds: f64,
    pub rate: u32,
    pub recovery_seconds: f64,
    pub sent: &'a [Sent],
    pub deliveries: &'a [Delivery],
    pub dead: &'a HashSet<String>,
    pub notes: &'a [String],
}

/// The longest gap between consecutive instants.
fn longest_gap(mut times: Vec<Instant>) -> Option<u64> {
    times.sort();
    times
        .windows(2)
        .map(|pair| pair[1].duration_since(pair[0]))
        .max()
        .map(|gap: Duration| u64::try_from(gap.as_millis()).unwrap_or(u64::MAX))
}

pub fn account(inputs: &Inputs<'_>) -> Report {
    let accepted = accepted_ids(inputs.sent);
    let mut keys: HashMap<&str, Vec<Option<&str>>> = HashMap::new();
    let mut duplicates = 0;
    let mut unrecognisable = Vec::new();
    let mut duplicated = Vec::new();
    for delivery in inputs.deliveries {
        if !accepted.contains(&delivery.event_id) {
            continue;
        }
        let seen = keys.entry(delivery.event_id.as_str()).or_default();
        let key = delivery.key.as_deref();
        if !seen.is_empty() {
            duplicates += 1;
            duplicated.push(format!(
                "{} ({})",
                delivery.event_id,
                key.unwrap_or("no key")
            ));
            if key.is_none() || !seen.contains(&key) {
                unrecognisable.push(delivery.event_id.clone());
            }
        }
        seen.push(key);
    }
    let dead_lettered = accepted
        .iter()
        .filter(|id| inputs.dead.contains(*id))
        .count();
    let keys_of: HashMap<&str, &str> = inputs
        .sent
        .iter()
        .filter_map(|s| Some((s.accepted.as_deref()?, s.key.as_str())))
        .collect();
    let lost_events: Vec<String> = missing(&accepted, inputs.deliveries, inputs.dead)
        .into_iter()
        .map(|id| format!("{id} ({})", keys_of.get(id.as_str()).unwrap_or(&"?")))
        .collect();
    let mut refusals = BTreeMap::new();
    for why in inputs.sent.iter().filter_map(|s| s.refusal.as_ref()) {
        // Errors carry addresses and details; keep their kind.
        let kind = why.split(':').next().unwrap_or(why).to_owned();
        *refusals.entry(kind).or_insert(0) += 1;
    }
    let first_arrivals: HashMap<&str, Instant> = inputs
        .deliveries
        .iter()
        .filter(|d| accepted.contains(&d.event_id))
        .filter_map(|d| Some((d.event_id.as_str(), d.at?)))
        .fold(HashMap::new(), |mut first, (id, at)| {
            first
                .entry(id)
                .and_modify(|t: &mut Instant| *t = (*t).min(at))
                .or_insert(at);
            first
        });
    let acceptances = inputs
        .sent
        .iter()
        .filter(|s| s.accepted.is_some())
        .map(|s| s.answered_at)
        .collect();
    Report {
        scenario: inputs.scenario.to_owned(),
        load_seconds: inputs.load_seconds,
        rate_per_s: inputs.rate,
        sent: inputs.sent.len(),
        accepted: accepted.len(),
        not_accepted: inputs.sent.len() - accepted.len(),
        delivered: keys.len(),
        duplicates,
        dead_lettered,
        lost: lost_events.len(),
        unrecognisable_duplicates: unrecognisable,
        duplicated,
        lost_events,
        refusals,
        recovery_seconds: inputs.recovery_seconds,
        delivery_stall_ms: longest_gap(first_arrivals.into_values().collect()),
        acceptance_stall_ms: longest_gap(acceptances),
        notes: inputs.notes.to_vec(),
    }
}

impl Report {
    /// Prints the table row (with its header, so parallel runs stay readable) and writes
    /// `target/reliability/<scenario>.json`.
    pub fn publish(&self) {
        eprintln!(
            "\n{:<22} {:>6} {:>8} {:>9} {:>10} {:>13} {:>5}\n{:<22} {:>6} {:>8} {:>9} {:>10} {:>13} {:>5}   (not accepted: {:?}; drained {:.1}s after the load; longest stall: delivery {:?} ms, acceptance {:?} ms; {})\n",
            "scenario",
            "sent",
            "accepted",
            "delivered",
            "duplicates",
            "dead-lettered",
            "lost",
            self.scenario,
            self.sent,
            self.accepted,
            self.delivered,
            self.duplicates,
            self.dead_lettered,
            self.lost,
            self.refusals,
            self.recovery_seconds,
            self.delivery_stall_ms,
            self.acceptance_stall_ms,
            self.notes.join("; "),
        );
        let dir = output_dir();
        std::fs::create_dir_all(&dir).expect("report directory");
        let json = serde_json::to_string_pretty(self).expect("report serialises");
        std::fs::write(dir.join(format!("{}.json", self.scenario)), json).expect("report written");
    }
}
