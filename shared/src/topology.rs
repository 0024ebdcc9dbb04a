//! The JetStream topology — streams and KV buckets — as data, and an idempotent `ensure`.
//!
//! Every service ensures what it touches at start (create, or update to the declared config),
//! so any service can start first and a changed retention setting takes effect on restart.

use std::time::{Duration, Instant};

use async_nats::jetstream::context::{
    CreateKeyValueError, CreateKeyValueErrorKind, CreateStreamError, CreateStreamErrorKind,
    PublishErrorKind,
};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, ErrorCode, kv, stream};

use crate::config::{Config, StreamsConfig};
use crate::names::Names;
use crate::partition::Partitions;
use crate::service::ServiceName;

/// One stream or bucket of a hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource {
    Events,
    Jobs,
    Results,
    Dlq,
    Inbound,
    ConfigKv,
    CircuitsKv,
    DedupKv,
    AttemptsKv,
    HeldKeysKv,
    DispatchersKv,
}

impl Resource {
    pub const ALL: [Resource; 11] = [
        Resource::Events,
        Resource::Jobs,
        Resource::Results,
        Resource::Dlq,
        Resource::Inbound,
        Resource::ConfigKv,
        Resource::CircuitsKv,
        Resource::DedupKv,
        Resource::AttemptsKv,
        Resource::HeldKeysKv,
        Resource::DispatchersKv,
    ];

    /// What each service reads or writes, and therefore ensures at start.
    pub fn used_by(service: ServiceName) -> &'static [Resource] {
        use Resource::*;
        match service {
            ServiceName::Ingest => &[Events, Inbound, ConfigKv],
            ServiceName::Matcher => &[Events, Jobs, Dlq, ConfigKv, DedupKv],
            ServiceName::Dispatcher => &[
                Jobs,
                Results,
                Dlq,
                Inbound,
                ConfigKv,
                CircuitsKv,
                AttemptsKv,
                HeldKeysKv,
                DispatchersKv,
            ],
            ServiceName::Dlq => &[Dlq, Jobs, ConfigKv],
            ServiceName::Api => &[
                Events, Jobs, Results, Dlq, Inbound, ConfigKv, CircuitsKv, DedupKv, HeldKeysKv,
            ],
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    // The cause is in the message, not a `#[source]`, so chains print it once.
    #[error("cannot create or update stream `{name}`: {cause}")]
    Stream {
        name: String,
        cause: CreateStreamError,
    },
    #[error("cannot create or update KV bucket `{bucket}`: {cause}")]
    Kv {
        bucket: String,
        cause: CreateKeyValueError,
    },
    #[error("stream `{name}` was created but cannot be read yet: {cause}")]
    NotReadable { name: String, cause: String },
    #[error("stream `{name}` does not take messages published from here yet: {cause}")]
    NotWritable { name: String, cause: String },
}

/// The declared configuration of every stream and bucket of one hub.
#[derive(Debug, Clone)]
pub struct Topology {
    names: Names,
    replicas: usize,
    placement: Option<stream::Placement>,
    max_bytes: i64,
    events_max_age: Duration,
    duplicate_window: Duration,
    results_max_age: Duration,
    dlq_max_age: Duration,
    inbound_max_age: Duration,
    inbound_duplicate_window: Duration,
    dedup_horizon: Duration,
    dedup_max_claims: i64,
    job_partitions: Partitions,
    event_partitions: Partitions,
    /// How long `ensure` keeps retrying what a busy or electing cluster did not answer.
    patience: Duration,
}

/// Revisions kept per key in the config and circuits buckets, for debugging and watchers.
const KV_HISTORY: i64 = 5;
/// How long a dispatcher replica counts as alive after it last renewed its presence (the
/// `<ns>_dispatchers` bucket's max age); each replica takes an equal share of rate limits.
pub const DISPATCHER_PRESENCE_TTL: Duration = Duration::from_secs(15);

/// How long a job's count of uncounted deliveries is kept: longer than the longest max job age
/// a service may have (30 days), so the count outlives every job it belongs to.
const UNCOUNTED_KEPT: Duration = Duration::from_secs(31 * 24 * 3600);

impl Topology {
    pub fn new(names: Names, config: &Config) -> Self {
        Self {
            names,
            replicas: config.streams.replicas,
            placement: placement(&config.streams),
            max_bytes: config.streams.max_bytes,
            events_max_age: config.streams.events_max_age,
            duplicate_window: config.streams.duplicate_window,
            results_max_age: config.streams.results_max_age,
            dlq_max_age: config.streams.dlq_max_age,
            inbound_max_age: config.streams.inbound_max_age,
            inbound_duplicate_window: config.streams.inbound_duplicate_window,
            dedup_horizon: config.matcher.dedup_horizon,
            dedup_max_claims: config.matcher.dedup_max_claims,
            job_partitions: config.streams.job_partitions(),
            event_partitions: config.streams.event_partitions(),
            patience: config.nats.connect_timeout,
        }
    }

    pub fn names(&self) -> &Names {
        &self.names
    }

    fn stream(&self, name: String, subjects: Vec<String>, max_age: Duration) -> stream::Config {
        stream::Config {
            name,
            subjects,
            retention: stream::RetentionPolicy::Limits,
            discard: stream::DiscardPolicy::Old,
            storage: stream::StorageType::File,
            num_replicas: self.replicas,
            placement: self.placement.clone(),
            max_age,
            max_bytes: self.max_bytes,
            duplicate_window: self.duplicate_window,
            allow_direct: true,
            ..Default::default()
        }
    }

    /// The stream behind a resource (EVENTS' and JOBS' partition 0), or `None` for KV buckets.
    pub fn stream_config(&self, resource: Resource) -> Option<stream::Config> {
        self.stream_configs(resource).into_iter().next()
    }

    /// The streams behind a resource: one per partition for EVENTS and JOBS, partition 0
    /// first (it is narrowed from the old `.>` subjects before the others can exist), one for
    /// every other stream, none for KV buckets.
    pub fn stream_configs(&self, resource: Resource) -> Vec<stream::Config> {
        match resource {
            Resource::Jobs => self
                .job_partitions
                .all()
                .map(|partition| self.jobs_partition(partition))
                .collect(),
            Resource::Events => self
                .event_partitions
                .all()
                .map(|partition| self.events_partition(partition))
                .collect(),
            _ => self.single_stream_config(resource).into_iter().collect(),
        }
    }

    fn events_partition(&self, partition: u16) -> stream::Config {
        let n = &self.names;
        stream::Config {
            description: Some(if partition == 0 {
                "Moodle events accepted by ingest".into()
            } else {
                format!("Moodle events accepted by ingest: partition {partition}")
            }),
            ..self.stream(
                n.events_partition_stream(partition),
                vec![n.events_of_partition(partition)],
                self.events_max_age,
            )
        }
    }

    fn jobs_partition(&self, partition: u16) -> stream::Config {
        let n = &self.names;
        stream::Config {
            description: Some(if partition == 0 {
                "Deliveries to do: one subject per service, one per service and ordering key".into()
            } else {
                format!(
                    "Deliveries to do: one subject per service, one per service and ordering key: partition {partition}"
                )
            }),
            retention: stream::RetentionPolicy::WorkQueue,
            // A full work queue must refuse new jobs, never drop pending ones.
            discard: stream::DiscardPolicy::New,
            // No max age: an expiring job would vanish silently. Age-outs are the
            // dispatcher's decision, into the DLQ.
            ..self.stream(
                n.jobs_partition_stream(partition),
                n.jobs_of_partition(partition),
                Duration::ZERO,
            )
        }
    }

    fn single_stream_config(&self, resource: Resource) -> Option<stream::Config> {
        let n = &self.names;
        match resource {
            Resource::Events => Some(self.events_partition(0)),
            Resource::Jobs => Some(self.jobs_partition(0)),
            Resource::Results => Some(stream::Config {
                description: Some("Outcome of every delivery attempt".into()),
                ..self.stream(
                    n.results_stream(),
                    vec![n.results_all()],
                    self.results_max_age,
                )
            }),
            Resource::Dlq => Some(stream::Config {
                description: Some("Jobs that failed for good".into()),
                ..self.stream(n.dlq_stream(), vec![n.dlq_all()], self.dlq_max_age)
            }),
            Resource::Inbound => Some(stream::Config {
                description: Some(
                    "Messages from services for Moodle sites, until their plugin pulls them".into(),
                ),
                duplicate_window: self.inbound_duplicate_window,
                ..self.stream(
                    n.inbound_stream(),
                    vec![n.inbound_all(), n.inbound_parked_all()],
                    self.inbound_max_age,
                )
            }),
            Resource::ConfigKv
            | Resource::CircuitsKv
            | Resource::DedupKv
            | Resource::AttemptsKv
            | Resource::HeldKeysKv
            | Resource::DispatchersKv => None,
        }
    }

    /// The bucket behind a resource, or `None` for streams.
    pub fn kv_config(&self, resource: Resource) -> Option<kv::Config> {
        let n = &self.names;
        let bucket =
            |bucket: String, history: i64, max_age: Duration, description: &str| kv::Config {
                bucket,
                description: description.into(),
                history,
                max_age,
                max_bytes: self.max_bytes,
                storage: stream::StorageType::File,
                num_replicas: self.replicas,
                placement: self.placement.clone(),
                ..Default::default()
            };
        match resource {
            Resource::ConfigKv => Some(bucket(
                n.config_bucket(),
                KV_HISTORY,
                Duration::ZERO,
                "Live configuration: sources, services, rules",
            )),
            Resource::CircuitsKv => Some(bucket(
                n.circuits_bucket(),
                KV_HISTORY,
                Duration::ZERO,
                "Circuit breaker state per service",
            )),
            Resource::DedupKv => Some(bucket(
                n.dedup_bucket(),
                1,
                self.dedup_horizon,
                "Dedup claims: source + dedup key -> event id",
            )),
            Resource::AttemptsKv => Some(bucket(
                n.attempts_bucket(),
                1,
                UNCOUNTED_KEPT,
                "Deliveries of a job that did not count against its retries",
            )),
            Resource::HeldKeysKv => Some(bucket(
                n.held_keys_bucket(),
                1,
                // Never expires: a held key waits for someone to resolve its dead letter.
                Duration::ZERO,
                "Ordering keys held by a dead letter: service.key hash -> dead job id",
            )),
            Resource::DispatchersKv => Some(bucket(
                n.dispatchers_bucket(),
                1,
                DISPATCHER_PRESENCE_TTL,
                "Dispatcher replicas alive, renewed every few seconds: replica id -> since",
            )),
            Resource::Events
            | Resource::Jobs
            | Resource::Results
            | Resource::Dlq
            | Resource::Inbound => None,
        }
    }

    /// Creates or updates each resource to its declared configuration. On a cluster a create
    /// is a Raft proposal that can time out while a leader is elected or while several
    /// services start at once; such answers are retried for `nats.connect_timeout`, a refusal
    /// of the configuration is not.
    pub async fn ensure(
        &self,
        js: &jetstream::Context,
        resources: &[Resource],
    ) -> Result<(), TopologyError> {
        let units = resources.iter().flat_map(|&resource| {
            let streams = self.stream_configs(resource);
            let kv = self.kv_config(resource);
            streams
                .into_iter()
                .map(|config| Unit::Stream(Box::new(config)))
                .chain(kv.map(|kv| Unit::Kv(resource, Box::new(kv))))
        });
        for unit in units {
            let started = Instant::now();
            let mut delay = Duration::from_millis(200);
            let mut races = 0;
            loop {
                // Boxed: inline, its state made every service's start future too large.
                let error = match Box::pin(self.ensure_one(js, &unit)).await {
                    Ok(()) => break,
                    Err(error) => error,
                };
                // Replicas starting together: a peer created the stream between our lookup and
                // our create, and the cluster refused the second create ("subjects overlap",
                // "name in use"). If the stream is there now, trying again updates it; if it
                // does not read yet, the peer's create is waited for like any late answer
                // (seen in CI: a replica exited on "subjects overlap" for a bucket a peer was
                // still creating). A real overlap with a stream of another name never reads,
                // and is reported when patience runs out.
                let raced = error.lost_a_create_race();
                if raced && races < 3 && js.get_stream(unit.stream_name()).await.is_ok() {
                    races += 1;
                    tracing::debug!(error = %error, "another replica created it first; updating");
                    continue;
                }
                if !(error.is_transient() || raced) || started.elapsed() + delay > self.patience {
                    return Err(error);
                }
                tracing::warn!(error = %error, retry_in = ?delay, "JetStream did not answer; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
        Ok(())
    }

    async fn ensure_one(&self, js: &jetstream::Context, unit: &Unit) -> Result<(), TopologyError> {
        let name = unit.stream_name();
        match unit {
            Unit::Stream(config) => {
                if let Ok(stored) = stored_config(js, &name).await
                    && declared_settings_match(config, &stored)
                {
                    // Read just now, so readable; a peer may have created it a moment ago.
                    return accepts_messages(js, &name, &stored.subjects).await;
                }
                js.create_or_update_stream(config.as_ref().clone())
                    .await
                    .map_err(|cause| TopologyError::Stream {
                        name: name.clone(),
                        cause,
                    })?;
            }
            Unit::Kv(resource, config) => {
                js.create_or_update_key_value(config.as_ref().clone())
                    .await
                    .map_err(|cause| TopologyError::Kv {
                        bucket: config.bucket.clone(),
                        cause,
                    })?;
                if *resource == Resource::DedupKv {
                    self.bound_claims(js, &name).await?;
                }
            }
        }
        // On a cluster the create is answered by the meta leader before the stream's own
        // group serves reads; a service that opened the bucket right after was told "stream
        // not found". Return only once it reads, and takes messages.
        let stream = js
            .get_stream(&name)
            .await
            .map_err(|cause| TopologyError::NotReadable {
                name: name.clone(),
                cause: cause.to_string(),
            })?;
        accepts_messages(js, &name, &stream.cached_info().config.subjects).await
    }

    /// Caps the dedup bucket at `matcher.dedup_max_claims` keys, dropping the oldest past it.
    /// A KV bucket is created refusing writes when full (discard new), which for claims would
    /// stop the matcher; async-nats' bucket settings have no message count, hence a second
    /// update of the bucket's stream, made only when it differs.
    async fn bound_claims(&self, js: &jetstream::Context, name: &str) -> Result<(), TopologyError> {
        let mut config =
            stored_config(js, name)
                .await
                .map_err(|cause| TopologyError::NotReadable {
                    name: name.to_owned(),
                    cause,
                })?;
        if config.max_messages == self.dedup_max_claims
            && config.discard == stream::DiscardPolicy::Old
        {
            return Ok(());
        }
        config.max_messages = self.dedup_max_claims;
        config.discard = stream::DiscardPolicy::Old;
        js.update_stream(config)
            .await
            .map_err(|cause| TopologyError::Stream {
                name: name.to_owned(),
                cause,
            })?;
        Ok(())
    }
}

/// One stream or bucket to ensure.
enum Unit {
    Stream(Box<stream::Config>),
    Kv(Resource, Box<kv::Config>),
}

impl Unit {
    /// The JetStream stream behind it (a bucket's is `KV_<bucket>`).
    fn stream_name(&self) -> String {
        match self {
            Unit::Stream(config) => config.name.clone(),
            Unit::Kv(_, config) => format!("KV_{}", config.bucket),
        }
    }
}

/// Whether a message published on this connection reaches the stream's leader. On a cluster
/// the leader's interest in its subjects reaches the other nodes a moment after the stream
/// reads: a dispatcher's first put into a bucket it had just ensured was answered "no stream
/// found for given subject" (no responders) and the dispatcher exited (seen in CI). The probe
/// expects a stream of another name, so the leader answers with a refusal and stores nothing.
async fn accepts_messages(
    js: &jetstream::Context,
    name: &str,
    subjects: &[String],
) -> Result<(), TopologyError> {
    let Some(subject) = subjects.first() else {
        return Ok(());
    };
    let not_writable = |cause: String| TopologyError::NotWritable {
        name: name.to_owned(),
        cause,
    };
    let probe = PublishMessage::build().expected_stream(PROBE_EXPECTED_STREAM);
    let answer = match js.send_publish(concrete_subject(subject), probe).await {
        Ok(ack) => ack.await,
        Err(error) => Err(error),
    };
    match answer {
        Err(error)
            if matches!(
                error.kind(),
                PublishErrorKind::StreamNotFound
                    | PublishErrorKind::TimedOut
                    | PublishErrorKind::BrokenPipe
            ) =>
        {
            Err(not_writable(error.to_string()))
        }
        // Any other answer came from the stream's leader: messages reach it.
        Err(_) => Ok(()),
        Ok(ack) => {
            tracing::error!(stream = %ack.stream, sequence = ack.sequence, "a readiness probe was stored; the server ignored Nats-Expected-Stream");
            Ok(())
        }
    }
}

/// A stream name no stream has (names cannot contain `.`), for probes to be refused.
const PROBE_EXPECTED_STREAM: &str = "mih.readiness.probe";

/// A subject a stream's subject filter takes: each wildcard token made a literal one.
fn concrete_subject(filter: &str) -> String {
    filter
        .split('.')
        .map(|token| match token {
            "*" | ">" => "probe",
            literal => literal,
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// The configuration JetStream holds for stream `name` (the lookup already brings the stream's
/// info; asking again would be a second request to the cluster for each stream at each start).
async fn stored_config(js: &jetstream::Context, name: &str) -> Result<stream::Config, String> {
    let stream = js.get_stream(name).await.map_err(|e| e.to_string())?;
    Ok(stream.cached_info().config.clone())
}

/// The settings `Topology` declares, compared with a stream's stored configuration (which has
/// the server's defaults filled in for the rest). An update is a proposal to a cluster's meta
/// leader even when it changes nothing, and with every replica of every service starting at
/// once those queue up (10–30 s on a three-node cluster), so a stream already as declared is
/// left alone; any doubt (not found, no answer) means update.
fn declared_settings_match(declared: &stream::Config, stored: &stream::Config) -> bool {
    declared.name == stored.name
        && declared.subjects == stored.subjects
        && declared.description == stored.description
        && declared.retention == stored.retention
        && declared.discard == stored.discard
        && declared.storage == stored.storage
        && declared.num_replicas.max(1) == stored.num_replicas.max(1)
        && declared.placement == stored.placement
        && declared.max_age == stored.max_age
        && declared.max_bytes == stored.max_bytes
        && declared.duplicate_window == stored.duplicate_window
        && declared.allow_direct == stored.allow_direct
}

/// `None` when nothing is asked for, so that JetStream is free to place (and a stream created
/// before the settings existed compares equal).
fn placement(streams: &StreamsConfig) -> Option<stream::Placement> {
    let cluster = Some(streams.placement_cluster.trim())
        .filter(|c| !c.is_empty())
        .map(str::to_owned);
    if cluster.is_none() && streams.placement_tags.is_empty() {
        return None;
    }
    Some(stream::Placement {
        cluster,
        tags: streams.placement_tags.clone(),
    })
}

impl TopologyError {
    /// The refusals a create gets when the same stream was created a moment before.
    fn lost_a_create_race(&self) -> bool {
        let stream = match self {
            TopologyError::Stream { cause, .. } => Some(cause),
            TopologyError::Kv { cause, .. } => {
                use std::error::Error as _;
                cause
                    .source()
                    .and_then(|source| source.downcast_ref::<CreateStreamError>())
            }
            TopologyError::NotReadable { .. } | TopologyError::NotWritable { .. } => None,
        };
        let code = match stream.map(CreateStreamError::kind) {
            Some(CreateStreamErrorKind::JetStream(api)) => Some(api.error_code()),
            _ => None,
        };
        // Without the typed error (a bucket's is sometimes only text), the message says it.
        code.map_or_else(
            || {
                let text = self.to_string();
                text.contains("error code 10065") || text.contains("error code 10058")
            },
            |code| {
                code == ErrorCode::STREAM_SUBJECT_OVERLAP || code == ErrorCode::STREAM_NAME_EXIST
            },
        )
    }

    /// Whether trying again can succeed: no answer, JetStream unavailable for now, or a server
    /// error (5xx) such as "no suitable peers" while a node is down. A 4xx is a refusal of the
    /// configuration and stays one.
    fn is_transient(&self) -> bool {
        match self {
            TopologyError::Stream { cause, .. } => stream_error_is_transient(cause),
            TopologyError::Kv { cause, .. } => match cause.kind() {
                CreateKeyValueErrorKind::TimedOut => true,
                CreateKeyValueErrorKind::JetStream | CreateKeyValueErrorKind::BucketCreate => {
                    kv_source_is_transient(cause)
                }
                CreateKeyValueErrorKind::InvalidStoreName
                | CreateKeyValueErrorKind::TooLongHistory
                | CreateKeyValueErrorKind::LimitMarkersNotSupported => false,
            },
            TopologyError::NotReadable { .. } | TopologyError::NotWritable { .. } => true,
        }
    }
}

fn stream_error_is_transient(error: &CreateStreamError) -> bool {
    match error.kind() {
        CreateStreamErrorKind::TimedOut
        | CreateStreamErrorKind::JetStreamUnavailable
        | CreateStreamErrorKind::Response => true,
        // "No suitable peers for placement": on a cluster that is still forming, the meta
        // leader has not heard from enough peers yet (seen in CI with two clusters starting
        // at once). Too few nodes or unmatched placement tags give it too, and then `ensure`
        // reports it when its patience runs out.
        CreateStreamErrorKind::JetStream(api) => {
            api.code() >= 500 || api.error_code() == ErrorCode::CLUSTER_NO_PEERS
        }
        CreateStreamErrorKind::EmptyStreamName
        | CreateStreamErrorKind::InvalidStreamName
        | CreateStreamErrorKind::DomainAndExternalSet
        | CreateStreamErrorKind::NotFound
        | CreateStreamErrorKind::ResponseParse => false,
    }
}

/// A bucket is a stream underneath; async-nats keeps the stream's error as the source, or
/// only its text.
fn kv_source_is_transient(error: &CreateKeyValueError) -> bool {
    use std::error::Error as _;
    match error
        .source()
        .and_then(|source| source.downcast_ref::<CreateStreamError>())
    {
        Some(stream) => stream_error_is_transient(stream),
        None => error.to_string().contains("timed out"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigLoader;
    use crate::names::Namespace;

    fn topology() -> Topology {
        let config = ConfigLoader::new().load().expect("defaults");
        Topology::new(Names::new(Namespace::parse("t").expect("ns")), &config)
    }

    #[test]
    fn a_cluster_without_enough_peers_yet_is_retried_and_a_bad_request_is_not() {
        let api = |json: &str| {
            let error: jetstream::Error = serde_json::from_str(json).expect("an API error");
            CreateStreamError::new(CreateStreamErrorKind::JetStream(error))
        };
        assert!(stream_error_is_transient(&api(
            r#"{"code": 400, "err_code": 10005, "description": "no suitable peers for placement"}"#
        )));
        assert!(stream_error_is_transient(&api(
            r#"{"code": 503, "err_code": 10008, "description": "JetStream system temporarily unavailable"}"#
        )));
        assert!(!stream_error_is_transient(&api(
            r#"{"code": 400, "err_code": 10052, "description": "replicas > 1 not supported in non-clustered mode"}"#
        )));
    }

    #[test]
    fn a_stored_stream_matches_when_every_declared_setting_does() {
        let declared = topology().stream_config(Resource::Events).expect("stream");
        // What the server answers: the declared settings plus its own defaults.
        let stored = stream::Config {
            max_messages: -1,
            max_messages_per_subject: -1,
            max_message_size: -1,
            ..declared.clone()
        };
        assert!(declared_settings_match(&declared, &stored));
        for changed in [
            stream::Config {
                max_age: Duration::from_secs(60),
                ..stored.clone()
            },
            stream::Config {
                num_replicas: 3,
                ..stored.clone()
            },
            stream::Config {
                subjects: vec!["other.>".into()],
                ..stored.clone()
            },
            stream::Config {
                discard: stream::DiscardPolicy::New,
                ..stored.clone()
            },
        ] {
            assert!(!declared_settings_match(&declared, &changed), "{changed:?}");
        }
    }

    #[test]
    fn a_probe_subject_is_one_the_stream_takes() {
        assert_eq!(
            concrete_subject("$KV.ns_dispatchers.>"),
            "$KV.ns_dispatchers.probe"
        );
        assert_eq!(concrete_subject("ns.jobs.*.p3.>"), "ns.jobs.probe.p3.probe");
        assert_eq!(concrete_subject("ns.results"), "ns.results");
    }

    #[test]
    fn every_resource_is_a_stream_or_a_bucket() {
        let t = topology();
        for r in Resource::ALL {
            assert!(
                t.stream_config(r).is_some() != t.kv_config(r).is_some(),
                "{r:?} must be exactly one of stream or bucket"
            );
        }
    }

    #[test]
    fn jobs_never_expire_and_never_drop_pending_work() {
        let jobs = topology().stream_config(Resource::Jobs).expect("stream");
        assert_eq!(jobs.max_age, Duration::ZERO);
        assert_eq!(jobs.retention, stream::RetentionPolicy::WorkQueue);
        assert_eq!(jobs.discard, stream::DiscardPolicy::New);
        assert_eq!(jobs.subjects, ["t.jobs.*", "t.jobs.*.0.*"]);
    }

    #[test]
    fn every_job_partition_is_a_work_queue_of_its_own() {
        let config = ConfigLoader::new()
            .toml("[streams]\njob_partitions = 3\n")
            .load()
            .expect("valid");
        let t = Topology::new(Names::new(Namespace::parse("t").expect("ns")), &config);
        let jobs = t.stream_configs(Resource::Jobs);
        let names: Vec<&str> = jobs.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["T_JOBS", "T_JOBS_1", "T_JOBS_2"]);
        let subjects: Vec<&[String]> = jobs.iter().map(|c| c.subjects.as_slice()).collect();
        assert_eq!(
            subjects,
            [
                ["t.jobs.*", "t.jobs.*.0.*"],
                ["t.jobs.*.1", "t.jobs.*.1.*"],
                ["t.jobs.*.2", "t.jobs.*.2.*"]
            ]
        );
        for partition in &jobs {
            assert_eq!(partition.retention, stream::RetentionPolicy::WorkQueue);
            assert_eq!(partition.discard, stream::DiscardPolicy::New);
            assert_eq!(partition.max_age, Duration::ZERO);
        }
    }

    #[test]
    fn events_keep_a_dedup_window_and_their_age_limit() {
        let events = topology().stream_config(Resource::Events).expect("stream");
        assert_eq!(events.name, "T_EVENTS");
        assert_eq!(events.duplicate_window, Duration::from_secs(120));
        assert_eq!(events.max_age, Duration::from_secs(7 * 24 * 3600));
    }

    #[test]
    fn every_service_uses_the_config_bucket() {
        for service in ServiceName::ALL {
            assert!(Resource::used_by(service).contains(&Resource::ConfigKv));
        }
    }
}
