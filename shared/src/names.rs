//! Namespaced names of every NATS stream, subject, KV bucket and consumer.
//!
//! This module is the only place that formats subject strings: services ask it for names, so a
//! namespace can never be forgotten and two hubs (or two tests) on one NATS server never meet.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::partition::Partitions;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{what} must not be empty")]
    Empty { what: &'static str },
    #[error("{what} `{value}` is too long ({len} characters; at most {max})")]
    TooLong {
        what: &'static str,
        value: String,
        len: usize,
        max: usize,
    },
    #[error(
        "{what} `{value}` is not valid: use lowercase letters, digits, `-` and `_`, starting with a letter or digit"
    )]
    Invalid { what: &'static str, value: String },
}

/// A slug: lowercase ASCII letters, digits, `-` and `_`, starting with a letter or digit. Safe as a
/// NATS subject token, a stream or bucket name part, and a URL path segment.
fn check_slug(what: &'static str, value: &str, max: usize) -> Result<(), NameError> {
    if value.is_empty() {
        return Err(NameError::Empty { what });
    }
    if value.len() > max {
        return Err(NameError::TooLong {
            what,
            value: value.to_owned(),
            len: value.len(),
            max,
        });
    }
    let mut chars = value.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok =
        chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if first_ok && rest_ok {
        Ok(())
    } else {
        Err(NameError::Invalid {
            what,
            value: value.to_owned(),
        })
    }
}

macro_rules! slug_type {
    ($(#[$doc:meta])* $name:ident, $what:literal, $max:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn parse(value: impl Into<String>) -> Result<Self, NameError> {
                let value = value.into();
                check_slug($what, &value, $max)?;
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                Self::parse(raw).map_err(serde::de::Error::custom)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

slug_type!(
    /// Prefix of every stream, subject and bucket of one hub (`MIH_NAMESPACE`).
    Namespace,
    "namespace",
    32
);
slug_type!(
    /// Identifier of a source: one Moodle site that sends events.
    SourceId,
    "source id",
    64
);
slug_type!(
    /// Name of a registered external service (the slug callers and rules use).
    ServiceSlug,
    "service name",
    64
);

/// Turns arbitrary text into one NATS subject token: anything outside `[A-Za-z0-9_-]` becomes `_`.
pub fn subject_token(raw: &str) -> String {
    if raw.is_empty() {
        return "_".to_owned();
    }
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The matcher's durable consumer of `<NS>_EVENTS`, shared by all its replicas.
pub const MATCHER_CONSUMER: &str = "matcher";

/// The names of one hub's streams, subjects, buckets and consumers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    ns: Namespace,
    stream_prefix: String,
}

impl Names {
    pub fn new(ns: Namespace) -> Self {
        let stream_prefix = ns.as_str().to_ascii_uppercase();
        Self { ns, stream_prefix }
    }

    pub fn namespace(&self) -> &Namespace {
        &self.ns
    }

    pub fn events_stream(&self) -> String {
        format!("{}_EVENTS", self.stream_prefix)
    }
    pub fn jobs_stream(&self) -> String {
        format!("{}_JOBS", self.stream_prefix)
    }
    pub fn results_stream(&self) -> String {
        format!("{}_RESULTS", self.stream_prefix)
    }
    pub fn dlq_stream(&self) -> String {
        format!("{}_DLQ", self.stream_prefix)
    }
    pub fn inbound_stream(&self) -> String {
        format!("{}_INBOUND", self.stream_prefix)
    }

    pub fn config_bucket(&self) -> String {
        format!("{}_config", self.ns)
    }
    pub fn circuits_bucket(&self) -> String {
        format!("{}_circuits", self.ns)
    }
    pub fn dedup_bucket(&self) -> String {
        format!("{}_dedup", self.ns)
    }
    pub fn attempts_bucket(&self) -> String {
        format!("{}_attempts", self.ns)
    }
    /// Ordering keys held by a dead letter (rules with `ordering_on_dead_letter: hold`).
    pub fn held_keys_bucket(&self) -> String {
        format!("{}_held_keys", self.ns)
    }
    /// Dispatcher replicas alive, for sharing rate limits.
    pub fn dispatchers_bucket(&self) -> String {
        format!("{}_dispatchers", self.ns)
    }
    /// The held-keys entry of one service's key: `<service>.<key hash>`.
    pub fn held_key(&self, service: &ServiceSlug, key_hash: &str) -> String {
        format!("{service}.{key_hash}")
    }

    /// `<ns>.events.<source>.<component>.<event>` for a Moodle event.
    pub fn event_subject(&self, source: &SourceId, event: &crate::moodle::EventName) -> String {
        format!(
            "{}.events.{}.{}.{}",
            self.ns,
            source,
            event.component_token(),
            event.event_token()
        )
    }
    /// `event_subject` in `partition`: unchanged in partition 0 (so a hub of one partition is
    /// what it was before partitions), `.<p>` appended in the others.
    pub fn event_subject_in(
        &self,
        source: &SourceId,
        event: &crate::moodle::EventName,
        partition: u16,
    ) -> String {
        Self::in_event_partition(self.event_subject(source, event), partition)
    }
    /// A filter of event subjects (from `events_matching`, `events_of_source`…) as it must
    /// read in `partition`'s stream, whose subjects carry the partition as a last token.
    pub fn in_event_partition(filter: String, partition: u16) -> String {
        if partition == 0 || filter.ends_with('>') {
            filter
        } else {
            format!("{filter}.{partition}")
        }
    }
    /// The subjects of event partition `partition`'s stream; no two partitions' overlap.
    pub fn events_of_partition(&self, partition: u16) -> String {
        if partition == 0 {
            format!("{}.events.*.*.*", self.ns)
        } else {
            format!("{}.events.*.*.*.{partition}", self.ns)
        }
    }
    /// `<NS>_EVENTS` for partition 0, `<NS>_EVENTS_<p>` for the others.
    pub fn events_partition_stream(&self, partition: u16) -> String {
        Self::partition_stream(self.events_stream(), partition)
    }
    /// The partition whose stream is `stream`, if it is one of this hub's EVENTS partitions.
    pub fn events_partition_of_stream(&self, stream: &str) -> Option<u16> {
        self.partition_of_stream(stream, &self.events_stream())
    }
    /// Every event of every source.
    pub fn events_all(&self) -> String {
        format!("{}.events.>", self.ns)
    }
    /// Every event of one source.
    pub fn events_of_source(&self, source: &SourceId) -> String {
        format!("{}.events.{}.>", self.ns, source)
    }

    /// Non-overlapping subject filters for the events of `sources` (none: every source) whose
    /// names match `patterns`, as JetStream requires of a consumer's filters. More than
    /// `max` filters collapse to every event; callers still match each event themselves.
    pub fn events_matching(
        &self,
        sources: &[SourceId],
        patterns: &[crate::moodle::EventPattern],
        max: usize,
    ) -> Vec<String> {
        use crate::moodle::EventPattern;
        let all = patterns.iter().any(|p| matches!(p, EventPattern::All));
        let components: std::collections::BTreeSet<&str> = patterns
            .iter()
            .filter_map(|p| match p {
                EventPattern::Component(c) => Some(c.as_str()),
                _ => None,
            })
            .collect();
        let mut tails: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
        if all {
            tails.insert(">".to_owned());
        } else {
            for component in &components {
                tails.insert(format!("{component}.*"));
            }
            for pattern in patterns {
                if let EventPattern::Exact(name) = pattern
                    && !components.contains(name.component_token())
                {
                    tails.insert(format!("{}.{}", name.component_token(), name.event_token()));
                }
            }
        }
        let heads: Vec<String> = if sources.is_empty() {
            vec!["*".to_owned()]
        } else {
            let unique: std::collections::BTreeSet<&str> =
                sources.iter().map(SourceId::as_str).collect();
            unique.into_iter().map(str::to_owned).collect()
        };
        if tails.is_empty() || heads.len() * tails.len() > max {
            return vec![self.events_all()];
        }
        heads
            .iter()
            .flat_map(|head| {
                tails
                    .iter()
                    .map(move |tail| format!("{}.events.{head}.{tail}", self.ns))
            })
            .collect()
    }

    /// A service's jobs in partition 0, the stream every hub had before partitions.
    pub fn job_subject(&self, service: &ServiceSlug) -> String {
        format!("{}.jobs.{}", self.ns, service)
    }
    /// A service's jobs in `partition`: `<ns>.jobs.<service>` in partition 0 (so a hub of one
    /// partition is what it was before partitions), `<ns>.jobs.<service>.<p>` in the others.
    pub fn job_subject_in(&self, service: &ServiceSlug, partition: u16) -> String {
        if partition == 0 {
            self.job_subject(service)
        } else {
            format!("{}.jobs.{}.{partition}", self.ns, service)
        }
    }
    /// A service's jobs of one ordering key, in the key's partition: one subject per key, so
    /// the key's first job in the stream is the next to deliver (a work queue forgets a job
    /// once it is settled). `key_hash` is [`crate::partition::key_hash`] of the key.
    pub fn keyed_job_subject(
        &self,
        service: &ServiceSlug,
        partition: u16,
        key_hash: &str,
    ) -> String {
        format!("{}.jobs.{}.{partition}.{key_hash}", self.ns, service)
    }
    /// Every keyed job of a service in `partition`: what its ordered consumer reads.
    pub fn keyed_jobs_in(&self, service: &ServiceSlug, partition: u16) -> String {
        format!("{}.jobs.{}.{partition}.*", self.ns, service)
    }
    /// Where `job` goes among `partitions`: its key's subject when it has an ordering key,
    /// else the service's subject in the partition.
    pub fn job_subject_for(&self, job: &crate::messages::Job, partitions: Partitions) -> String {
        let partition = partitions.of_job(job);
        match job.ordering_key() {
            Some(key) => {
                self.keyed_job_subject(&job.service, partition, &crate::partition::key_hash(key))
            }
            None => self.job_subject_in(&job.service, partition),
        }
    }
    /// Every job of every partition.
    pub fn jobs_all(&self) -> String {
        format!("{}.jobs.>", self.ns)
    }
    /// The subjects of partition `partition`'s stream, unkeyed jobs first; no two partitions'
    /// overlap.
    pub fn jobs_of_partition(&self, partition: u16) -> Vec<String> {
        let unkeyed = if partition == 0 {
            format!("{}.jobs.*", self.ns)
        } else {
            format!("{}.jobs.*.{partition}", self.ns)
        };
        vec![unkeyed, format!("{}.jobs.*.{partition}.*", self.ns)]
    }
    /// `<NS>_JOBS` for partition 0, `<NS>_JOBS_<p>` for the others.
    pub fn jobs_partition_stream(&self, partition: u16) -> String {
        Self::partition_stream(self.jobs_stream(), partition)
    }
    /// The partition whose stream is `stream`, if it is one of this hub's JOBS partitions.
    pub fn jobs_partition_of_stream(&self, stream: &str) -> Option<u16> {
        self.partition_of_stream(stream, &self.jobs_stream())
    }
    /// Partition `partition` of the stream whose partition 0 is `first`: `first` itself, else
    /// `<first>_<p>` (what [`Self::partition_of_stream`] reads back).
    fn partition_stream(first: String, partition: u16) -> String {
        if partition == 0 {
            first
        } else {
            format!("{first}_{partition}")
        }
    }
    fn partition_of_stream(&self, stream: &str, first: &str) -> Option<u16> {
        if stream == first {
            return Some(0);
        }
        let number = stream.strip_prefix(first)?.strip_prefix('_')?;
        // Only the spelling this hub writes: "01" or "+1" would be another stream's name.
        let partition: u16 = number.parse().ok()?;
        (partition > 0 && partition.to_string() == number).then_some(partition)
    }
    pub fn result_subject(&self, service: &ServiceSlug) -> String {
        format!("{}.results.{}", self.ns, service)
    }
    /// Outcomes of replayed dead letters get a subject of their own, so the dlq service reads
    /// only those instead of every outcome; `results_all` still covers them.
    pub fn replay_result_subject(&self, service: &ServiceSlug) -> String {
        format!("{}.results.{}.replay", self.ns, service)
    }
    pub fn results_all(&self) -> String {
        format!("{}.results.>", self.ns)
    }
    /// The outcomes of every replay, of every service.
    pub fn replay_results_all(&self) -> String {
        format!("{}.results.*.replay", self.ns)
    }
    pub fn dlq_subject(&self, service: &ServiceSlug) -> String {
        format!("{}.dlq.{}", self.ns, service)
    }
    pub fn dlq_all(&self) -> String {
        format!("{}.dlq.>", self.ns)
    }
    /// `<ns>.inbound.<source>.<service>`: a service's messages for one Moodle site.
    pub fn inbound_subject(&self, source: &SourceId, service: &ServiceSlug) -> String {
        format!("{}.inbound.{}.{}", self.ns, source, service)
    }
    /// Every inbound message for one Moodle site, whichever service sent it.
    pub fn inbound_of_source(&self, source: &SourceId) -> String {
        format!("{}.inbound.{}.*", self.ns, source)
    }
    pub fn inbound_all(&self) -> String {
        format!("{}.inbound.>", self.ns)
    }
    /// Inbound messages set aside (oversized, unreadable), one subject per service.
    pub fn inbound_parked_subject(&self, service: &ServiceSlug) -> String {
        format!("{}.inbound-parked.{}", self.ns, service)
    }
    pub fn inbound_parked_all(&self) -> String {
        format!("{}.inbound-parked.>", self.ns)
    }
    /// Circuit state changes, for whoever watches (the dashboard); core NATS, not stored.
    pub fn circuit_subject(&self, service: &ServiceSlug) -> String {
        format!("{}.circuits.{}", self.ns, service)
    }
    /// Durable consumer of one service's jobs.
    pub fn dispatch_consumer(&self, service: &ServiceSlug) -> String {
        format!("dispatch-{service}")
    }
    /// Durable consumer of one service's keyed jobs, delivered in order per key.
    pub fn ordered_consumer(&self, service: &ServiceSlug) -> String {
        format!("ordered-{service}")
    }
    /// Facade request/reply subject, served by dispatchers in one queue group.
    pub fn rpc_request(&self) -> String {
        format!("{}.rpc.request", self.ns)
    }
    /// Queue group of the facade responders.
    pub fn rpc_queue_group(&self) -> String {
        format!("{}-dispatchers", self.ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::moodle::EventName;

    fn names() -> Names {
        Names::new(Namespace::parse("t-1").expect("valid namespace"))
    }

    #[test]
    fn job_partitions_have_disjoint_subjects_and_partition_0_is_the_old_stream() {
        let n = names();
        let sis = ServiceSlug::parse("sis").expect("slug");
        assert_eq!(n.jobs_partition_stream(0), "T-1_JOBS");
        assert_eq!(n.jobs_partition_stream(3), "T-1_JOBS_3");
        assert_eq!(n.job_subject_in(&sis, 0), n.job_subject(&sis));
        assert_eq!(n.job_subject_in(&sis, 3), "t-1.jobs.sis.3");
        // Partition 0's filter takes two tokens after `jobs`; the others three.
        assert_eq!(n.jobs_of_partition(0), ["t-1.jobs.*", "t-1.jobs.*.0.*"]);
        assert_eq!(n.jobs_of_partition(3), ["t-1.jobs.*.3", "t-1.jobs.*.3.*"]);
        assert_eq!(n.keyed_job_subject(&sis, 3, "ab"), "t-1.jobs.sis.3.ab");
        assert_eq!(n.keyed_jobs_in(&sis, 0), "t-1.jobs.sis.0.*");
        for p in [0, 1, 12] {
            assert_eq!(
                n.jobs_partition_of_stream(&n.jobs_partition_stream(p)),
                Some(p)
            );
        }
        for other in [
            "T-1_JOBS_0",
            "T-1_JOBS_01",
            "T-1_JOBS_x",
            "T-1_EVENTS",
            "T-2_JOBS_1",
        ] {
            assert_eq!(n.jobs_partition_of_stream(other), None, "{other}");
        }
    }

    #[test]
    fn event_partitions_have_disjoint_subjects_and_partition_0_is_the_old_stream() {
        let n = names();
        let moodle: SourceId = "moodle".parse().expect("source");
        let graded = EventName::parse("\\core\\event\\user_graded").expect("name");
        assert_eq!(n.events_partition_stream(0), "T-1_EVENTS");
        assert_eq!(n.events_partition_stream(5), "T-1_EVENTS_5");
        assert_eq!(
            n.event_subject_in(&moodle, &graded, 0),
            n.event_subject(&moodle, &graded)
        );
        assert_eq!(
            n.event_subject_in(&moodle, &graded, 5),
            "t-1.events.moodle.core.user_graded.5"
        );
        assert_eq!(n.events_of_partition(0), "t-1.events.*.*.*");
        assert_eq!(n.events_of_partition(5), "t-1.events.*.*.*.5");
        // Filters: exact ones gain the partition token, `>` ones already cover it.
        assert_eq!(
            Names::in_event_partition("t-1.events.moodle.core.*".into(), 5),
            "t-1.events.moodle.core.*.5"
        );
        assert_eq!(
            Names::in_event_partition(n.events_of_source(&moodle), 5),
            "t-1.events.moodle.>"
        );
        assert_eq!(
            Names::in_event_partition("t-1.events.moodle.core.x".into(), 0),
            "t-1.events.moodle.core.x"
        );
        assert_eq!(n.events_partition_of_stream("T-1_EVENTS_5"), Some(5));
        assert_eq!(n.events_partition_of_stream("T-1_EVENTS"), Some(0));
        for other in ["T-1_EVENTS_0", "T-1_EVENTS_05", "T-1_JOBS_1", "T-1_EVENTSX"] {
            assert_eq!(n.events_partition_of_stream(other), None, "{other}");
        }
    }

    #[test]
    fn event_filters_never_overlap() {
        use crate::moodle::EventPattern;
        let names = names();
        let p = |raw: &str| EventPattern::parse(raw).expect("pattern");
        let moodle: SourceId = "moodle".parse().expect("source");
        let other: SourceId = "other".parse().expect("source");
        assert_eq!(
            names.events_matching(&[], &[p("\\core\\event\\user_created")], 16),
            ["t-1.events.*.core.user_created"]
        );
        assert_eq!(
            names.events_matching(
                &[moodle.clone(), other],
                &[
                    p("\\mod_quiz\\event\\*"),
                    p("\\mod_quiz\\event\\attempt_submitted"),
                    p("\\core\\event\\x")
                ],
                16
            ),
            [
                "t-1.events.moodle.core.x",
                "t-1.events.moodle.mod_quiz.*",
                "t-1.events.other.core.x",
                "t-1.events.other.mod_quiz.*"
            ]
        );
        assert_eq!(
            names.events_matching(
                std::slice::from_ref(&moodle),
                &[p("*"), p("\\core\\event\\x")],
                16
            ),
            ["t-1.events.moodle.>"]
        );
        assert_eq!(
            names.events_matching(
                &[moodle],
                &[p("\\core\\event\\x"), p("\\core\\event\\y")],
                1
            ),
            ["t-1.events.>"]
        );
    }

    #[test]
    fn slugs_accept_simple_names_and_refuse_the_rest() {
        assert!(SourceId::parse("moodle-prod_2").is_ok());
        for bad in ["", "Moodle", "-x", "a.b", "a b", "a*", "a>", "é"] {
            assert!(SourceId::parse(bad).is_err(), "{bad:?} should be refused");
        }
        let long = "a".repeat(65);
        assert!(matches!(
            SourceId::parse(long),
            Err(NameError::TooLong { max: 64, .. })
        ));
    }

    #[test]
    fn stream_and_bucket_names_carry_the_namespace() {
        let n = names();
        assert_eq!(n.events_stream(), "T-1_EVENTS");
        assert_eq!(n.jobs_stream(), "T-1_JOBS");
        assert_eq!(n.config_bucket(), "t-1_config");
        assert_eq!(n.dedup_bucket(), "t-1_dedup");
        assert_eq!(n.attempts_bucket(), "t-1_attempts");
    }

    #[test]
    fn replay_outcomes_have_their_own_subject_inside_results() {
        let n = names();
        let crm = ServiceSlug::parse("crm").expect("slug");
        assert_eq!(n.result_subject(&crm), "t-1.results.crm");
        assert_eq!(n.replay_result_subject(&crm), "t-1.results.crm.replay");
        // The recorder's filter covers both; the dlq's only the second.
        assert_eq!(n.results_all(), "t-1.results.>");
        assert_eq!(n.replay_results_all(), "t-1.results.*.replay");
    }

    #[test]
    fn event_subject_sanitises_moodle_names() {
        let n = names();
        let source = SourceId::parse("moodle").expect("valid source");
        let event = EventName::parse(r"\mod_assign\event\assessable_submitted").expect("valid");
        assert_eq!(
            n.event_subject(&source, &event),
            "t-1.events.moodle.mod_assign.assessable_submitted"
        );
        let nested = EventName::parse(r"\local_x\event\sub\thing_done").expect("valid");
        assert_eq!(
            n.event_subject(&source, &nested),
            "t-1.events.moodle.local_x.sub__thing_done"
        );
    }

    #[test]
    fn subject_token_replaces_separators_and_wildcards() {
        assert_eq!(subject_token("a.b*c>d e"), "a_b_c_d_e");
        assert_eq!(subject_token(""), "_");
    }
}
