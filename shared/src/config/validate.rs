//! Checks across settings that types alone cannot express.

use std::time::Duration;

use super::{Config, SettingError};
use crate::crypto::Keyring;
use crate::signature::SigningSecret;

/// Bearer tokens shorter than this are guessable.
pub const MIN_BEARER_TOKEN_LEN: usize = 16;

pub(super) fn validate(config: &Config) -> Vec<SettingError> {
    let mut problems = Vec::new();
    let mut problem = |setting: &str, message: String| {
        problems.push(SettingError {
            setting: setting.to_owned(),
            message,
        })
    };

    let positive = [
        ("nats.connect_timeout", config.nats.connect_timeout),
        ("nats.request_timeout", config.nats.request_timeout),
        ("database.connect_timeout", config.database.connect_timeout),
        ("streams.events_max_age", config.streams.events_max_age),
        ("streams.duplicate_window", config.streams.duplicate_window),
        ("streams.results_max_age", config.streams.results_max_age),
        ("streams.dlq_max_age", config.streams.dlq_max_age),
        ("streams.inbound_max_age", config.streams.inbound_max_age),
        (
            "streams.inbound_duplicate_window",
            config.streams.inbound_duplicate_window,
        ),
        ("shutdown.drain_timeout", config.shutdown.drain_timeout),
        ("http.header_read_timeout", config.http.header_read_timeout),
        ("http.idle_timeout", config.http.idle_timeout),
        ("ingest.publish_timeout", config.ingest.publish_timeout),
        (
            "ingest.signature_tolerance",
            config.ingest.signature_tolerance,
        ),
        ("matcher.dedup_horizon", config.matcher.dedup_horizon),
        ("matcher.ack_wait", config.matcher.ack_wait),
        ("api.reconcile_interval", config.api.reconcile_interval),
        (
            "dispatcher.ack_wait_margin",
            config.dispatcher.ack_wait_margin,
        ),
        (
            "dispatcher.facade_timeout",
            config.dispatcher.facade_timeout,
        ),
    ];
    for (setting, value) in positive {
        if value == Duration::ZERO {
            problem(setting, "must be longer than zero".into());
        }
    }
    if let Some(Err(e)) = config
        .secret_key
        .as_ref()
        .map(|key| Keyring::check_key(key.expose()))
    {
        problem("secret_key", e.to_string());
    }
    for (i, key) in config.secret_keys_previous.iter().enumerate() {
        if let Err(e) = Keyring::check_key(key.expose()) {
            problem("secret_keys_previous", format!("entry {i}: {e}"));
        }
    }
    if config
        .bootstrap_admin_token
        .as_ref()
        .is_some_and(|token| token.expose().len() < MIN_BEARER_TOKEN_LEN)
    {
        problem(
            "bootstrap_admin_token",
            format!("is shorter than {MIN_BEARER_TOKEN_LEN} characters"),
        );
    }
    if config.streams.duplicate_window > config.streams.events_max_age {
        problem(
            "streams.duplicate_window",
            "must not be longer than streams.events_max_age (JetStream refuses it)".into(),
        );
    }
    if config.streams.inbound_duplicate_window > config.streams.inbound_max_age {
        problem(
            "streams.inbound_duplicate_window",
            "must not be longer than streams.inbound_max_age (JetStream refuses it)".into(),
        );
    }
    if config.streams.max_bytes == 0 || config.streams.max_bytes < -1 {
        problem(
            "streams.max_bytes",
            "must be -1 (unlimited) or a positive size in bytes".into(),
        );
    }
    // JetStream's own limit: an odd count up to 5 is what a Raft group sensibly has, but R2
    // and R4 are legal too.
    for (setting, count) in [
        ("streams.job_partitions", config.streams.job_partitions),
        ("streams.event_partitions", config.streams.event_partitions),
    ] {
        if !(1..=crate::partition::MAX_PARTITIONS).contains(&count) {
            problem(
                setting,
                format!("must be between 1 and {}", crate::partition::MAX_PARTITIONS),
            );
        }
    }
    if !(1..=5).contains(&config.streams.replicas) {
        problem("streams.replicas", "must be between 1 and 5".into());
    }
    if config
        .streams
        .placement_tags
        .iter()
        .any(|tag| tag.trim().is_empty() || tag.chars().any(char::is_whitespace))
    {
        problem(
            "streams.placement_tags",
            "tags are non-empty and without spaces, as in a server's server_tags".into(),
        );
    }
    if config.nats.replicas.is_some() {
        problem(
            "nats.replicas",
            "moved to streams.replicas (MIH_STREAMS_REPLICAS); set it there".into(),
        );
    }
    if config.nats.password.is_some() && config.nats.user.is_none() {
        problem("nats.user", "must be set when nats.password is".into());
    }
    if config.nats.tls_cert_file.is_some() != config.nats.tls_key_file.is_some() {
        problem(
            "nats.tls_key_file",
            "nats.tls_cert_file and nats.tls_key_file go together".into(),
        );
    }
    if !(1_000..=1_000_000_000).contains(&config.matcher.dedup_max_claims) {
        problem(
            "matcher.dedup_max_claims",
            "must be between 1000 and 1000000000".into(),
        );
    }
    if !(1..=10_000).contains(&config.matcher.max_in_flight) {
        problem(
            "matcher.max_in_flight",
            "must be between 1 and 10000".into(),
        );
    }
    if !(100..=100_000).contains(&config.retention.batch_size) {
        problem(
            "retention.batch_size",
            "must be between 100 and 100000".into(),
        );
    }
    // A rendered request and a facade answer each travel in one NATS message, whose size
    // the server caps (max_payload, 1 MiB by default; checked against the server at start).
    if !(1024..=64 * 1024 * 1024).contains(&config.matcher.max_request_bytes) {
        problem(
            "matcher.max_request_bytes",
            "must be between 1024 and 67108864 bytes".into(),
        );
    }
    if !(1024..=64 * 1024 * 1024).contains(&config.dispatcher.facade_max_body_bytes) {
        problem(
            "dispatcher.facade_max_body_bytes",
            "must be between 1024 and 67108864 bytes".into(),
        );
    }
    if !(1..=10_000).contains(&config.dispatcher.outcome_batch_max) {
        problem(
            "dispatcher.outcome_batch_max",
            "must be between 1 and 10000 outcomes".into(),
        );
    }
    if config.nats.ack_linger > Duration::from_millis(100) {
        problem(
            "nats.ack_linger",
            "must be at most 100ms: a message's slot stays taken until its acknowledgement \
             has left"
                .into(),
        );
    }
    if config.dispatcher.outcome_linger > Duration::from_secs(1) {
        problem(
            "dispatcher.outcome_linger",
            "must be at most 1s: every job of the service waits that long for its \
             acknowledgement"
                .into(),
        );
    }
    if config.api.record_linger > Duration::from_secs(1) {
        problem(
            "api.record_linger",
            "must be at most 1s: outcomes wait that long to reach the delivery log".into(),
        );
    }
    if config.dispatcher.reply_prefetch == 0 {
        problem(
            "dispatcher.reply_prefetch",
            "must be between 1 and 65535".into(),
        );
    }
    if !(1..=64 * 1024 * 1024).contains(&config.dispatcher.reply_max_bytes) {
        problem(
            "dispatcher.reply_max_bytes",
            "must be between 1 and 67108864 bytes".into(),
        );
    }
    // NaN fails the range check too, which is what it should do.
    if !(0.0..=1.0).contains(&config.telemetry.trace_sample_ratio) {
        problem(
            "telemetry.trace_sample_ratio",
            "must be between 0.0 (record no new trace) and 1.0 (record all)".into(),
        );
    }
    if let Some(endpoint) = config.telemetry.otlp_endpoint() {
        let scheme = url::Url::parse(endpoint).map(|url| url.scheme().to_owned());
        if !matches!(scheme.as_deref(), Ok("http" | "https")) {
            problem(
                "telemetry.otlp_endpoint",
                format!(
                    "`{endpoint}` is not an http(s) URL; give the collector's OTLP/HTTP base, \
                     e.g. http://otel-collector:4318"
                ),
            );
        }
    }
    if config.database.max_connections == 0 {
        problem("database.max_connections", "must be at least 1".into());
    }
    if config.http.max_connections == 0 {
        problem("http.max_connections", "must be at least 1".into());
    }

    let ingest = &config.ingest;
    if ingest.max_body_bytes == 0 {
        problem("ingest.max_body_bytes", "must be at least 1".into());
    }
    if ingest.max_batch_events == 0 {
        problem("ingest.max_batch_events", "must be at least 1".into());
    }
    if ingest.max_event_bytes == 0 || ingest.max_event_bytes > ingest.max_body_bytes {
        problem(
            "ingest.max_event_bytes",
            format!(
                "must be between 1 and ingest.max_body_bytes ({})",
                ingest.max_body_bytes
            ),
        );
    }

    for (id, source) in &config.sources {
        if source.signing_secrets.is_empty() && source.bearer_tokens.is_empty() {
            problem(
                &format!("sources.{id}"),
                "needs signing_secrets or bearer_tokens; a source nobody can authenticate as is useless".into(),
            );
        }
        for (i, secret) in source.signing_secrets.iter().enumerate() {
            if let Err(e) = SigningSecret::parse(secret.expose()) {
                problem(
                    &format!("sources.{id}.signing_secrets"),
                    format!("entry {i}: {e}"),
                );
            }
        }
        for (i, token) in source.bearer_tokens.iter().enumerate() {
            if token.expose().len() < MIN_BEARER_TOKEN_LEN {
                problem(
                    &format!("sources.{id}.bearer_tokens"),
                    format!("entry {i} is shorter than {MIN_BEARER_TOKEN_LEN} characters"),
                );
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::super::{ConfigError, ConfigLoader};

    fn problems(toml: &str) -> Vec<String> {
        match ConfigLoader::new().toml(toml).load() {
            Err(ConfigError::Invalid(problems)) => {
                problems.into_iter().map(|p| p.setting).collect()
            }
            Err(other) => panic!("expected validation errors, got {other}"),
            Ok(_) => Vec::new(),
        }
    }

    #[test]
    fn cross_setting_rules_name_the_setting() {
        assert_eq!(
            problems("[ingest]\nmax_body_bytes = 100\nmax_event_bytes = 200\n"),
            ["ingest.max_event_bytes"]
        );
        assert_eq!(
            problems("[ingest]\nmax_batch_events = 0\n"),
            ["ingest.max_batch_events"]
        );
        assert_eq!(
            problems("[nats]\nconnect_timeout = \"0s\"\n"),
            ["nats.connect_timeout"]
        );
        assert_eq!(problems("[streams]\nreplicas = 7\n"), ["streams.replicas"]);
        for bad in [0, 65] {
            assert_eq!(
                problems(&format!("[streams]\njob_partitions = {bad}\n")),
                ["streams.job_partitions"]
            );
            assert_eq!(
                problems(&format!("[streams]\nevent_partitions = {bad}\n")),
                ["streams.event_partitions"]
            );
        }
        assert_eq!(problems("[nats]\nreplicas = 3\n"), ["nats.replicas"]);
        assert_eq!(
            problems("[streams]\nplacement_tags = [\"ssd\", \"\"]\n"),
            ["streams.placement_tags"]
        );
        assert_eq!(
            problems("[streams]\nevents_max_age = \"1m\"\nduplicate_window = \"2m\"\n"),
            ["streams.duplicate_window"]
        );
    }

    #[test]
    fn trace_settings_are_checked() {
        for bad in ["1.5", "-0.1"] {
            assert_eq!(
                problems(&format!("[telemetry]\ntrace_sample_ratio = {bad}\n")),
                ["telemetry.trace_sample_ratio"]
            );
        }
        assert_eq!(
            problems("[telemetry]\notlp_endpoint = \"collector:4318\"\n"),
            ["telemetry.otlp_endpoint"]
        );
        assert!(
            problems(
                "[telemetry]\ntrace_sample_ratio = 0.25\notlp_endpoint = \"http://otel:4318\"\n"
            )
            .is_empty()
        );
    }

    #[test]
    fn http_limits_must_be_positive() {
        assert_eq!(
            problems("[http]\nheader_read_timeout = \"0s\"\n"),
            ["http.header_read_timeout"]
        );
        assert_eq!(
            problems("[http]\nidle_timeout = \"0s\"\n"),
            ["http.idle_timeout"]
        );
        assert_eq!(
            problems("[http]\nmax_connections = 0\n"),
            ["http.max_connections"]
        );
        assert!(
            problems(
                "[http]\nheader_read_timeout = \"1s\"\nidle_timeout = \"2s\"\nmax_connections = 1\n"
            )
            .is_empty()
        );
    }

    #[test]
    fn a_zero_connection_cap_is_refused_with_its_name_and_variable() {
        let err = ConfigLoader::new()
            .toml("[http]\nmax_connections = 0\n")
            .load()
            .expect_err("zero cap");
        let text = err.to_string();
        assert!(text.contains("http.max_connections"), "{text}");
        assert!(text.contains("MIH_HTTP_MAX_CONNECTIONS"), "{text}");
        assert!(text.contains("must be at least 1"), "{text}");
    }

    #[test]
    fn the_dedup_claims_bound_is_checked_with_its_name() {
        assert_eq!(
            problems("[matcher]\ndedup_max_claims = 10\n"),
            ["matcher.dedup_max_claims"]
        );
        assert_eq!(
            problems("[matcher]\ndedup_max_claims = -1\n"),
            ["matcher.dedup_max_claims"]
        );
        assert!(problems("[matcher]\ndedup_max_claims = 1000\n").is_empty());
    }

    #[test]
    fn secret_keys_must_be_32_bytes() {
        assert_eq!(problems("secret_key = \"short\"\n"), ["secret_key"]);
        assert_eq!(
            problems("secret_keys_previous = [\"x\"]\n"),
            ["secret_keys_previous"]
        );
        let key = crate::crypto::generate_key().expect("key");
        assert!(problems(&format!("secret_key = \"{key}\"\n")).is_empty());
        assert_eq!(
            problems("bootstrap_admin_token = \"short\"\n"),
            ["bootstrap_admin_token"]
        );
    }

    #[test]
    fn sources_need_usable_credentials() {
        assert_eq!(problems("[sources.a]\n"), ["sources.a"]);
        assert_eq!(
            problems("[sources.a]\nsigning_secrets = [\"whsec_%%%\"]\n"),
            ["sources.a.signing_secrets"]
        );
        assert_eq!(
            problems("[sources.a]\nbearer_tokens = [\"short\"]\n"),
            ["sources.a.bearer_tokens"]
        );
        assert!(problems("[sources.a]\nbearer_tokens = [\"0123456789abcdef\"]\n").is_empty());
    }

    #[test]
    fn invalid_source_ids_are_refused() {
        let err = ConfigLoader::new()
            .toml("[sources.\"Bad Id\"]\nbearer_tokens = [\"0123456789abcdef\"]\n")
            .load()
            .expect_err("bad id");
        assert!(err.to_string().contains("Bad Id"), "{err}");
    }
}
