//! mih's configuration: typed, layered, validated, dumpable with secrets redacted.

pub(crate) mod lenient;
mod load;
mod secret;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use load::{ConfigError, ConfigLoader, SettingError, env_var_for};
pub use secret::{REDACTED, Secret, SecretUrl, redact_url_password};

use crate::names::{Namespace, SourceId};
use crate::service::ServiceName;

/// The embedded defaults, every key commented. Shipped in the binary and printed by docs.
pub const DEFAULTS_TOML: &str = include_str!("../../config/default.toml");

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub namespace: Namespace,
    /// Encrypts secrets at rest; see [`crate::crypto`].
    #[serde(default)]
    pub secret_key: Option<Secret>,
    #[serde(default)]
    pub secret_keys_previous: Vec<Secret>,
    /// An admin token api makes sure exists at start.
    #[serde(default)]
    pub bootstrap_admin_token: Option<Secret>,
    pub nats: NatsConfig,
    pub database: DatabaseConfig,
    pub streams: StreamsConfig,
    pub telemetry: TelemetryConfig,
    pub shutdown: ShutdownConfig,
    /// Limits of every service's HTTP listener.
    pub http: HttpConfig,
    pub ingest: IngestConfig,
    pub matcher: MatcherConfig,
    pub dispatcher: DispatcherConfig,
    pub dlq: ListenConfig,
    pub api: ApiConfig,
    pub retention: RetentionConfig,
    /// Moodle sites allowed to send events, by id.
    #[serde(default)]
    pub sources: BTreeMap<SourceId, SourceSeed>,
}

impl Config {
    /// Where a service listens for HTTP (its API, if any, and /healthz, /readyz, /metrics).
    pub fn listen_addr(&self, service: ServiceName) -> SocketAddr {
        match service {
            ServiceName::Ingest => self.ingest.listen,
            ServiceName::Matcher => self.matcher.listen,
            ServiceName::Dispatcher => self.dispatcher.listen,
            ServiceName::Dlq => self.dlq.listen,
            ServiceName::Api => self.api.listen,
        }
    }

    /// The setting that holds [`Config::listen_addr`], for error messages.
    pub fn listen_setting(service: ServiceName) -> String {
        format!("{service}.listen")
    }

    /// The keyring built from `secret_key` and `secret_keys_previous` (validated at load).
    pub fn keyring(&self) -> Result<crate::crypto::Keyring, crate::crypto::CryptoError> {
        let previous: Vec<&str> = self
            .secret_keys_previous
            .iter()
            .map(Secret::expose)
            .collect();
        crate::crypto::Keyring::new(self.secret_key.as_ref().map(Secret::expose), &previous)
    }

    /// The effective configuration as TOML, secrets redacted.
    pub fn dump(&self) -> Result<String, toml::ser::Error> {
        toml::to_string_pretty(self)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    pub url: SecretUrl,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub user: Option<String>,
    pub password: Option<Secret>,
    pub token: Option<Secret>,
    pub creds_file: Option<PathBuf>,
    pub tls_ca_file: Option<PathBuf>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    pub require_tls: bool,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// How long a consumer's acknowledgement waits for others to leave in the same write to
    /// NATS. Zero: each leaves at once (one write, and one wake-up of the server, per message).
    #[serde(
        default,
        serialize_with = "humantime_serde::serialize",
        deserialize_with = "lenient::duration_or_zero"
    )]
    pub ack_linger: Duration,
    /// Moved to `streams.replicas`; kept only to tell whoever still sets it where it went.
    #[serde(default, skip_serializing)]
    pub replicas: Option<usize>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    pub url: SecretUrl,
    pub max_connections: u32,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamsConfig {
    pub replicas: usize,
    pub placement_tags: Vec<String>,
    #[serde(deserialize_with = "lenient::string")]
    pub placement_cluster: String,
    #[serde(with = "humantime_serde")]
    pub events_max_age: Duration,
    #[serde(with = "humantime_serde")]
    pub duplicate_window: Duration,
    #[serde(with = "humantime_serde")]
    pub results_max_age: Duration,
    #[serde(with = "humantime_serde")]
    pub dlq_max_age: Duration,
    #[serde(with = "humantime_serde")]
    pub inbound_max_age: Duration,
    #[serde(with = "humantime_serde")]
    pub inbound_duplicate_window: Duration,
    pub max_bytes: i64,
    pub job_partitions: u16,
    pub event_partitions: u16,
}

impl StreamsConfig {
    pub fn job_partitions(&self) -> crate::partition::Partitions {
        crate::partition::Partitions::new(self.job_partitions)
    }
    pub fn event_partitions(&self) -> crate::partition::Partitions {
        crate::partition::Partitions::new(self.event_partitions)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    pub log_format: LogFormat,
    #[serde(deserialize_with = "lenient::string")]
    pub log_level: String,
    /// OTLP/HTTP collector base URL (`/v1/traces` is appended); empty = the standard
    /// `OTEL_EXPORTER_OTLP_*ENDPOINT` variables decide, and without them nothing is exported.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub otlp_endpoint: Option<String>,
    /// Share of new traces recorded, 0.0–1.0. A trace started elsewhere keeps its caller's
    /// decision (the sampled flag of `traceparent`), so one trace is never half recorded.
    #[serde(
        default = "TelemetryConfig::default_ratio",
        deserialize_with = "lenient::float"
    )]
    pub trace_sample_ratio: f64,
}

impl TelemetryConfig {
    fn default_ratio() -> f64 {
        1.0
    }

    /// The collector URL, if one is set.
    pub fn otlp_endpoint(&self) -> Option<&str> {
        self.otlp_endpoint
            .as_deref()
            .map(str::trim)
            .filter(|url| !url.is_empty())
    }

    /// Quiet logs, every trace sampled, nothing exported unless the environment says so.
    pub fn for_tests() -> Self {
        Self {
            log_format: LogFormat::Text,
            log_level: "warn".into(),
            otlp_endpoint: None,
            trace_sample_ratio: 1.0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
}

/// Limits every HTTP listener applies, so slow or silent clients cannot hold connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Longest wait for a complete request head: from the connection's opening, or from the
    /// first byte of the next request on a kept-alive connection.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Longest silence on a connection with no request in progress, and between the chunks of
    /// a request body the handler is waiting for.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Most connections one listener holds at once; more wait in the listen backlog.
    pub max_connections: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    pub inbound_max_body_bytes: usize,
    pub max_batch_events: usize,
    pub max_event_bytes: usize,
    #[serde(with = "humantime_serde")]
    pub signature_tolerance: Duration,
    #[serde(with = "humantime_serde")]
    pub publish_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_after: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatcherConfig {
    pub listen: SocketAddr,
    /// How long a dedup key is remembered; a repeat within it is dropped.
    #[serde(with = "humantime_serde")]
    pub dedup_horizon: Duration,
    /// Most dedup claims kept; past it the oldest go first, so the horizon shrinks rather than
    /// nats-server's memory growing (it indexes every key in memory, ~0.25–0.5 KiB each).
    pub dedup_max_claims: i64,
    pub max_in_flight: usize,
    #[serde(with = "humantime_serde")]
    pub ack_wait: Duration,
    /// Largest request a rule may render for one event (body, path, headers); more is a
    /// render failure, dead-lettered. Checked while rendering.
    pub max_request_bytes: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DispatcherConfig {
    pub listen: SocketAddr,
    /// Networks (CIDR) deliveries may reach although they are loopback, link-local or private.
    #[serde(default)]
    pub allow_networks: Vec<ipnet::IpNet>,
    /// Added to a service's timeout to make its consumer's ack wait: JetStream redelivers a job
    /// only when its dispatcher stopped answering for that long.
    #[serde(with = "humantime_serde")]
    pub ack_wait_margin: Duration,
    /// Longest a facade call may take, retries included, unless the caller asks for less.
    #[serde(with = "humantime_serde")]
    pub facade_timeout: Duration,
    /// Most bytes of a target's response body a facade call returns; a longer one is cut and
    /// flagged `body_truncated`.
    pub facade_max_body_bytes: usize,
    /// Messages RabbitMQ hands a response-queue consumer ahead of its acknowledgements (the
    /// channel's QoS prefetch), per service and replica.
    pub reply_prefetch: u16,
    /// Largest body of a message on a response queue; a larger one is parked on
    /// `<ns>.inbound-parked.<service>` instead of stored.
    pub reply_max_bytes: usize,
    /// Whether a job's first outcome carries the rendered request into the delivery log.
    /// Off: less work per delivery, and no request bodies (often personal data) in RESULTS
    /// or PostgreSQL; the job in JOBS and its dead letter still hold the request.
    #[serde(default = "default_true")]
    pub record_requests: bool,
    /// Most outcomes in one RESULTS message. Outcomes of one service that are ready together
    /// share a message (fewer messages for JetStream to store and the recorder to take); 1
    /// sends each alone.
    #[serde(default = "default_outcome_batch_max")]
    pub outcome_batch_max: usize,
    /// How long a RESULTS message waits for more outcomes once it has one. Zero: it leaves as
    /// soon as a publish slot is free (batches still form while earlier ones are stored). A
    /// job is acknowledged only after its outcome is stored, so this holds its concurrency
    /// slot that much longer; the delivery itself is not delayed.
    #[serde(
        default,
        serialize_with = "humantime_serde::serialize",
        deserialize_with = "lenient::duration_or_zero"
    )]
    pub outcome_linger: Duration,
}

fn default_outcome_batch_max() -> usize {
    8
}

fn default_true() -> bool {
    true
}

/// How long the PostgreSQL projections keep rows. A zero age or row count means unlimited.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    #[serde(
        serialize_with = "humantime_serde::serialize",
        deserialize_with = "lenient::duration_or_zero"
    )]
    pub deliveries_max_age: Duration,
    pub deliveries_max_rows: u64,
    #[serde(
        serialize_with = "humantime_serde::serialize",
        deserialize_with = "lenient::duration_or_zero"
    )]
    pub rollups_max_age: Duration,
    pub rollups_max_rows: u64,
    #[serde(
        serialize_with = "humantime_serde::serialize",
        deserialize_with = "lenient::duration_or_zero"
    )]
    pub dead_letters_max_age: Duration,
    pub dead_letters_max_rows: u64,
    #[serde(
        serialize_with = "humantime_serde::serialize",
        deserialize_with = "lenient::duration_or_zero"
    )]
    pub circuit_changes_max_age: Duration,
    pub batch_size: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    #[serde(with = "humantime_serde")]
    pub reconcile_interval: Duration,
    /// How long the recorder, once it holds an outcome, waits for more to write with it in
    /// one statement. Zero: it writes what is ready at once (one statement per outcome at a
    /// moderate rate). Only the delivery log waits; deliveries do not.
    #[serde(
        default = "default_record_linger",
        serialize_with = "humantime_serde::serialize",
        deserialize_with = "lenient::duration_or_zero"
    )]
    pub record_linger: Duration,
}

fn default_record_linger() -> Duration {
    Duration::from_millis(20)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    pub listen: SocketAddr,
}

/// A source declared in the configuration file or environment.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSeed {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub name: Option<String>,
    #[serde(default = "enabled_by_default")]
    pub enabled: bool,
    /// Standard Webhooks secrets (`whsec_…`); several are valid at once while rotating.
    #[serde(default)]
    pub signing_secrets: Vec<Secret>,
    /// Bearer tokens accepted for this source, as the simpler alternative to signatures.
    #[serde(default)]
    pub bearer_tokens: Vec<Secret>,
}

fn enabled_by_default() -> bool {
    true
}
