//! What a client writes for a service, turned into a validated row: URLs, AMQP names, auth
//! secrets (kept when left out), and the ranges of the delivery policy.

use std::collections::BTreeMap;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use sqlx::types::Json as SqlJson;
use utoipa::{IntoParams, ToSchema};

use mih_shared::crypto::Sealed;
use mih_shared::live::{
    AmqpTransport, Auth, BreakerPolicy, LiveInbound, RestTransport, RetryPolicy, SoapTransport,
    SoapVersion, Transport,
};
use mih_shared::names::{ServiceSlug, SourceId};
use mih_shared::sources::hash_token_hex;

use super::store::{ServiceRow, i32_of, i64_of, u32_of, u64_of};
use crate::error::ApiResult;
use crate::resources::{Problems, Tri, check_header_name, check_text, seal, signing};
use crate::state::AppState;

/// Defaults for the delivery policy of a new service.
mod defaults {
    pub const TIMEOUT_MS: u64 = 5_000;
    pub const MAX_RETRIES: u32 = 5;
    pub const BACKOFF_BASE_MS: u64 = 1_000;
    pub const BACKOFF_CAP_MS: u64 = 300_000;
    pub const FAILURE_THRESHOLD: u32 = 5;
    pub const COOLDOWN_MS: u64 = 30_000;
    pub const HALF_OPEN_PROBES: u32 = 1;
    pub const CONCURRENCY: u32 = 10;
    pub const MAX_JOB_AGE_MS: u64 = 24 * 3600 * 1000;
    pub const API_KEY_HEADER: &str = "X-API-Key";
    pub const INBOUND_RATE: u32 = 10;
}

/// How the service is reached. Secrets (`password`) are write-only.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum TransportInput {
    /// REST/HTTP: rules' paths are joined to `base_url`.
    Rest { base_url: String },
    /// RabbitMQ (AMQP 0-9-1).
    Amqp {
        host: String,
        /// Default 5672, or 5671 with `tls`.
        port: Option<u16>,
        /// Default `/`.
        vhost: Option<String>,
        /// Default `guest`.
        username: Option<String>,
        #[serde(default)]
        #[schema(value_type = Option<String>)]
        password: Tri<String>,
        /// amqps with the certificate verified (default false).
        tls: Option<bool>,
        /// Default: the default exchange (`""`), where the routing key names a queue.
        exchange: Option<String>,
        /// Used when a rule gives none.
        routing_key: Option<String>,
        /// A durable queue to declare before publishing.
        queue_declare: Option<String>,
        /// A queue the service puts replies in; they are delivered to the `inbound` source's
        /// Moodle site. Needs `inbound`.
        response_queue: Option<String>,
    },
    /// SOAP 1.1 or 1.2 over HTTP.
    Soap {
        endpoint: String,
        wsdl_url: Option<String>,
        /// `1.1` (default) or `1.2`.
        version: Option<String>,
        /// The service's target namespace: the default namespace of an unqualified body, and
        /// the prefix of the SOAP action (`<namespace>/<operation>`).
        namespace: Option<String>,
        /// Send basic auth's credentials as a WS-Security UsernameToken (PasswordText) in the
        /// envelope instead of an HTTP `Authorization` header. Needs `auth.type` `basic`.
        /// Default false.
        ws_security: Option<bool>,
    },
}

/// How mih authenticates to the service. Secrets are write-only: on update, leaving one out
/// keeps it (when the type stays the same).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthInput {
    None,
    /// `Authorization: Bearer <token>`.
    Bearer {
        token: Option<String>,
    },
    /// `<header>: <key>` (header default `X-API-Key`).
    ApiKey {
        header: Option<String>,
        key: Option<String>,
    },
    /// HTTP Basic.
    Basic {
        username: String,
        password: Option<String>,
    },
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetrySettings {
    /// Retries after the first attempt (default 5).
    #[schema(maximum = 100)]
    pub max_retries: Option<u32>,
    /// First retry delay; doubles each retry with full jitter (default 1000).
    #[schema(minimum = 10, maximum = 3600000)]
    pub backoff_base_ms: Option<u64>,
    /// Longest retry delay (default 300000).
    #[schema(minimum = 10, maximum = 86400000)]
    pub backoff_cap_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BreakerSettings {
    /// Consecutive failures that open the circuit (default 5).
    #[schema(minimum = 1, maximum = 1000)]
    pub failure_threshold: Option<u32>,
    /// How long the circuit stays open before probing (default 30000).
    #[schema(minimum = 100, maximum = 3600000)]
    pub cooldown_ms: Option<u64>,
    /// Probes admitted while half-open (default 1).
    #[schema(minimum = 1, maximum = 100)]
    pub half_open_probes: Option<u32>,
}

/// What the service sends back towards Moodle: webhooks to ingest's
/// `POST /v1/inbound/{service}`, and the replies of an AMQP `transport.response_queue`.
/// Secrets are write-only: on update, leaving one out keeps it, `null` removes it. There is no
/// open mode: an enabled endpoint needs a signing secret or a bearer token.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InboundInput {
    /// The Moodle site (source id) whose plugin receives the messages. Required when the
    /// service has no inbound settings yet.
    pub source: Option<String>,
    /// Default true.
    pub enabled: Option<bool>,
    /// A Standard Webhooks secret (`whsec_…`) the service signs its webhooks with. Setting it
    /// rotates: earlier secrets stay valid for `rotation_overlap_secs`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub signing_secret: Tri<String>,
    /// How long the previous signing secrets remain valid after a rotation (default 86400).
    #[schema(maximum = 2592000)]
    pub rotation_overlap_secs: Option<u64>,
    /// A bearer token (16–512 characters) the service may send instead of signing; it must
    /// differ from the credentials mih uses to reach the service.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub bearer_token: Tri<String>,
    /// Webhooks accepted per second (default 10); more are answered 429 with `Retry-After`.
    #[schema(minimum = 1, maximum = 100000)]
    pub rate_limit_per_sec: Option<u32>,
    /// How many may arrive at once above the rate (default twice the rate).
    #[schema(minimum = 1, maximum = 100000)]
    pub burst: Option<u32>,
}

/// A service as written by a client. On update, fields left out keep their value.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceInput {
    /// The slug rules and facade callers use. Required on create; fixed afterwards.
    #[schema(pattern = "^[a-z0-9][a-z0-9_-]{0,63}$")]
    pub name: Option<String>,
    pub description: Option<String>,
    /// Default true.
    pub enabled: Option<bool>,
    /// Required on create.
    pub transport: Option<TransportInput>,
    /// Default `{"type": "none"}`.
    pub auth: Option<AuthInput>,
    /// Standard Webhooks secret (`whsec_…`) to sign each delivery, independent of `auth`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub signing_secret: Tri<String>,
    /// Static headers sent with every request.
    pub headers: Option<BTreeMap<String, String>>,
    /// Per-attempt timeout (default 5000).
    #[schema(minimum = 1, maximum = 300000)]
    pub timeout_ms: Option<u64>,
    pub retry: Option<RetrySettings>,
    pub breaker: Option<BreakerSettings>,
    /// Most deliveries in flight at once (default 10).
    #[schema(minimum = 1, maximum = 1000)]
    pub concurrency: Option<u32>,
    /// Most deliveries started per second; `null` for no limit.
    #[serde(default)]
    #[schema(value_type = Option<u32>)]
    pub rate_limit_per_sec: Tri<u32>,
    /// A job older than this is dead-lettered instead of attempted (default 86400000).
    #[schema(minimum = 60000, maximum = 2592000000_u64)]
    pub max_job_age_ms: Option<u64>,
    /// What the service sends back towards Moodle; `null` turns it off and forgets its
    /// secrets.
    #[serde(default)]
    #[schema(value_type = Option<InboundInput>)]
    pub inbound: Tri<InboundInput>,
    /// The version this update is based on (alternative to `If-Match`).
    pub version: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ServiceFilter {
    /// `rest`, `amqp` or `soap`.
    pub kind: Option<String>,
    pub enabled: Option<bool>,
    /// Part of the name or description, case-insensitive.
    pub q: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteOptions {
    /// Also delete the rules that target the service (otherwise they make the delete fail).
    pub cascade: Option<bool>,
}

/// An absolute http(s) URL without credentials.
fn check_http_url(problems: &mut Problems, field: &str, value: &str) {
    match url::Url::parse(value) {
        Ok(url) => {
            problems.check(
                matches!(url.scheme(), "http" | "https"),
                field,
                "must be an http:// or https:// URL",
            );
            problems.check(
                url.host_str().is_some_and(|h| !h.is_empty()),
                field,
                "must name a host",
            );
            problems.check(
                url.username().is_empty() && url.password().is_none(),
                field,
                "must not carry credentials; configure `auth` instead",
            );
            problems.check(url.fragment().is_none(), field, "must not have a #fragment");
        }
        Err(e) => problems.add(field, format!("is not a URL: {e}")),
    }
    problems.check(
        value.len() <= 2048,
        field,
        "must be at most 2048 characters",
    );
}

/// AMQP short strings (exchange, queue, routing key) are at most 255 bytes.
fn check_short_string(problems: &mut Problems, field: &str, value: &str) {
    problems.check(
        value.len() <= 255,
        field,
        "must be at most 255 bytes (an AMQP short string)",
    );
}

fn check_secret(problems: &mut Problems, field: &str, value: &str) {
    problems.check(
        (1..=4096).contains(&value.len()),
        field,
        "must be 1 to 4096 characters long",
    );
}

fn in_range(problems: &mut Problems, field: &str, value: u64, min: u64, max: u64) {
    problems.check(
        (min..=max).contains(&value),
        field,
        format!("must be between {min} and {max} (is {value})"),
    );
}

/// Builds the transport, keeping a stored AMQP password the input leaves out.
fn transport(
    state: &AppState,
    problems: &mut Problems,
    input: TransportInput,
    current: Option<&Transport>,
) -> ApiResult<Transport> {
    Ok(match input {
        TransportInput::Rest { base_url } => {
            check_http_url(problems, "transport.base_url", &base_url);
            Transport::Rest(RestTransport { base_url })
        }
        TransportInput::Amqp {
            host,
            port,
            vhost,
            username,
            password,
            tls,
            exchange,
            routing_key,
            queue_declare,
            response_queue,
        } => {
            let tls = tls.unwrap_or(false);
            check_text(problems, "transport.host", &host, 1, 255);
            problems.check(
                !host.contains(['/', ' ', '@', '?', '#']),
                "transport.host",
                "must be a host name or address",
            );
            let port = port.unwrap_or(if tls { 5671 } else { 5672 });
            problems.check(port > 0, "transport.port", "must be between 1 and 65535");
            let vhost = vhost.unwrap_or_else(|| "/".into());
            check_short_string(problems, "transport.vhost", &vhost);
            let username = username.unwrap_or_else(|| "guest".into());
            check_text(problems, "transport.username", &username, 1, 255);
            let exchange = exchange.unwrap_or_default();
            check_short_string(problems, "transport.exchange", &exchange);
            let routing_key = routing_key.unwrap_or_default();
            check_short_string(problems, "transport.routing_key", &routing_key);
            for (field, queue) in [
                ("transport.queue_declare", &queue_declare),
                ("transport.response_queue", &response_queue),
            ] {
                if let Some(queue) = queue {
                    check_text(problems, field, queue, 1, 255);
                    problems.check(
                        !queue.starts_with("amq."),
                        field,
                        "names starting with `amq.` are reserved by the broker",
                    );
                }
            }
            let kept = match current {
                Some(Transport::Amqp(t)) => t.password.clone(),
                _ => None,
            };
            let password = match password {
                Tri::Absent => kept,
                Tri::Null => None,
                Tri::Value(p) => {
                    check_secret(problems, "transport.password", &p);
                    Some(seal(&state.keyring, "transport.password", &p)?)
                }
            };
            Transport::Amqp(AmqpTransport {
                host,
                port,
                vhost,
                username,
                password,
                tls,
                exchange,
                routing_key,
                queue_declare,
                response_queue,
            })
        }
        TransportInput::Soap {
            endpoint,
            wsdl_url,
            version,
            namespace,
            ws_security,
        } => {
            check_http_url(problems, "transport.endpoint", &endpoint);
            if let Some(wsdl) = &wsdl_url {
                check_http_url(problems, "transport.wsdl_url", wsdl);
            }
            if let Some(ns) = &namespace {
                check_text(problems, "transport.namespace", ns, 1, 1024);
            }
            let version = match version.as_deref() {
                None | Some("1.1") => SoapVersion::V11,
                Some("1.2") => SoapVersion::V12,
                Some(other) => {
                    problems.add(
                        "transport.version",
                        format!("must be \"1.1\" or \"1.2\", not `{other}`"),
                    );
                    SoapVersion::V11
                }
            };
            Transport::Soap(SoapTransport {
                endpoint,
                wsdl_url,
                version,
                namespace,
                ws_security: ws_security.unwrap_or(false),
            })
        }
    })
}

/// A write-only secret of `auth`: the given value (sealed), else the kept one, else missing.
fn auth_secret(
    state: &AppState,
    problems: &mut Problems,
    field: &str,
    given: Option<String>,
    kept: Option<&Sealed>,
) -> ApiResult<Sealed> {
    match (given, kept) {
        (Some(value), _) => {
            check_secret(problems, field, &value);
            seal(&state.keyring, field, &value)
        }
        (None, Some(kept)) => Ok(kept.clone()),
        (None, None) => {
            problems.add(field, "is required");
            // Never stored: the problem above turns the request into a 422.
            Ok(Sealed::default())
        }
    }
}

/// Builds the auth, keeping stored secrets the input leaves out when the type is unchanged.
fn auth(
    state: &AppState,
    problems: &mut Problems,
    input: AuthInput,
    current: Option<&Auth>,
) -> ApiResult<Auth> {
    Ok(match input {
        AuthInput::None => Auth::None,
        AuthInput::Bearer { token } => {
            let kept = match current {
                Some(Auth::Bearer { token }) => Some(token),
                _ => None,
            };
            Auth::Bearer {
                token: auth_secret(state, problems, "auth.token", token, kept)?,
            }
        }
        AuthInput::ApiKey { header, key } => {
            let kept = match current {
                Some(Auth::ApiKey { key, .. }) => Some(key),
                _ => None,
            };
            let key = auth_secret(state, problems, "auth.key", key, kept)?;
            let header = header.unwrap_or_else(|| defaults::API_KEY_HEADER.into());
            check_header_name(problems, "auth.header", &header);
            Auth::ApiKey { header, key }
        }
        AuthInput::Basic { username, password } => {
            let kept = match current {
                Some(Auth::Basic { password, .. }) => Some(password),
                _ => None,
            };
            let password = auth_secret(state, problems, "auth.password", password, kept)?;
            check_text(problems, "auth.username", &username, 1, 255);
            problems.check(
                !username.contains(':'),
                "auth.username",
                "must not contain `:`",
            );
            Auth::Basic { username, password }
        }
    })
}

/// The inbound settings after applying `input` to `current`: secrets kept, rotated or removed,
/// and refused when an enabled endpoint would be open or reuse an outbound credential.
fn inbound(
    state: &AppState,
    problems: &mut Problems,
    input: InboundInput,
    current: Option<&LiveInbound>,
    auth: &Auth,
) -> ApiResult<Option<LiveInbound>> {
    let source = match (input.source, current) {
        (Some(source), _) => source,
        (None, Some(current)) => current.source.to_string(),
        (None, None) => {
            problems.add("inbound.source", "is required");
            String::new()
        }
    };
    let source = match SourceId::parse(source.clone()) {
        Ok(source) => Some(source),
        Err(e) => {
            if !source.is_empty() {
                problems.add("inbound.source", e.to_string());
            }
            None
        }
    };
    let overlap = signing::check(
        problems,
        "inbound.",
        &input.signing_secret,
        input.rotation_overlap_secs,
    );
    signing::check_token(problems, "inbound.bearer_token", &input.bearer_token);
    if let Tri::Value(token) = &input.bearer_token
        && outbound_secrets(state, auth).iter().any(|s| s == token)
    {
        problems.add(
            "inbound.bearer_token",
            "must differ from the credentials mih uses to reach the service (`auth`)",
        );
    }
    let rate = input
        .rate_limit_per_sec
        .unwrap_or(current.map_or(defaults::INBOUND_RATE, |c| c.rate_limit_per_sec));
    in_range(
        problems,
        "inbound.rate_limit_per_sec",
        rate.into(),
        1,
        100_000,
    );
    let burst = input
        .burst
        .or(current.map(|c| c.burst))
        .unwrap_or(rate.saturating_mul(2).max(1));
    in_range(problems, "inbound.burst", burst.into(), 1, 100_000);
    let now = Utc::now();
    let signing_secrets = signing::rotate(
        state,
        "inbound.signing_secret",
        current
            .map(|c| c.signing_secrets.clone())
            .unwrap_or_default(),
        input.signing_secret,
        overlap,
        now,
    )?;
    let bearer_token_hashes = match input.bearer_token {
        Tri::Absent => current
            .map(|c| c.bearer_token_hashes.clone())
            .unwrap_or_default(),
        Tri::Null => Vec::new(),
        Tri::Value(token) => vec![hash_token_hex(&token)],
    };
    let enabled = input.enabled.or(current.map(|c| c.enabled)).unwrap_or(true);
    // Without a source a problem was recorded: the request is refused anyway.
    Ok(source.map(|source| LiveInbound {
        source,
        enabled,
        signing_secrets,
        bearer_token_hashes,
        rate_limit_per_sec: rate,
        burst,
    }))
}

/// The outbound credentials in clear, to refuse an inbound token that reuses one. A secret
/// that cannot be opened is left out (it cannot be compared, and saving will not need it).
fn outbound_secrets(state: &AppState, auth: &Auth) -> Vec<String> {
    let sealed = match auth {
        Auth::None => return Vec::new(),
        Auth::Bearer { token } => token,
        Auth::ApiKey { key, .. } => key,
        Auth::Basic { password, .. } => password,
    };
    state.keyring.open(sealed).into_iter().collect()
}

/// Applies an input to the current row (none when creating), validating everything.
pub(super) fn apply(
    state: &AppState,
    current: Option<&ServiceRow>,
    input: ServiceInput,
) -> ApiResult<ServiceRow> {
    let mut problems = Problems::default();
    let name = match (current, input.name) {
        (Some(row), Some(name)) if name != row.name => {
            problems.add("name", "cannot change; rules and callers use it");
            row.name.clone()
        }
        (Some(row), _) => row.name.clone(),
        (None, Some(name)) => {
            if let Err(e) = ServiceSlug::parse(name.clone()) {
                problems.add("name", e.to_string());
            }
            name
        }
        (None, None) => {
            problems.add("name", "is required");
            String::new()
        }
    };
    let description = input
        .description
        .or_else(|| current.map(|r| r.description.clone()))
        .unwrap_or_default();
    check_text(&mut problems, "description", &description, 0, 2000);

    let transport = match (input.transport, current) {
        (Some(t), _) => transport(state, &mut problems, t, current.map(|r| &r.transport.0))?,
        (None, Some(row)) => row.transport.0.clone(),
        (None, None) => {
            problems.add("transport", "is required");
            Transport::Rest(RestTransport {
                base_url: String::new(),
            })
        }
    };
    let auth = match (input.auth, current) {
        (Some(a), _) => auth(state, &mut problems, a, current.map(|r| &r.auth.0))?,
        (None, Some(row)) => row.auth.0.clone(),
        (None, None) => Auth::None,
    };
    // Checked on the result, since either side may come from the stored service.
    if let Transport::Soap(SoapTransport {
        ws_security: true, ..
    }) = &transport
    {
        problems.check(
            matches!(auth, Auth::Basic { .. }),
            "transport.ws_security",
            "needs `auth` of type `basic`: its username and password are what the \
             UsernameToken carries",
        );
    }
    let signing_secret = match input.signing_secret {
        Tri::Absent => current.and_then(|r| r.signing_secret.as_ref().map(|s| s.0.clone())),
        Tri::Null => None,
        Tri::Value(secret) => {
            if let Err(e) = mih_shared::signature::SigningSecret::parse(&secret) {
                problems.add("signing_secret", e.to_string());
            }
            Some(seal(&state.keyring, "signing_secret", &secret)?)
        }
    };
    let headers = input
        .headers
        .or_else(|| current.map(|r| r.headers.0.clone()))
        .unwrap_or_default();
    problems.check(headers.len() <= 50, "headers", "at most 50 headers");
    for (name, value) in &headers {
        let field = format!("headers.{name}");
        check_header_name(&mut problems, &field, name);
        problems.check(
            http::HeaderValue::from_str(value).is_ok() && value.len() <= 4096,
            &field,
            "must be a valid header value of at most 4096 characters",
        );
    }

    let timeout_ms = input
        .timeout_ms
        .unwrap_or_else(|| current.map_or(defaults::TIMEOUT_MS, |r| u64_of(r.timeout_ms)));
    in_range(&mut problems, "timeout_ms", timeout_ms, 1, 300_000);

    let old_retry = current.map(ServiceRow::retry);
    let retry_input = input.retry.unwrap_or_default();
    let retry = RetryPolicy {
        max_retries: retry_input
            .max_retries
            .unwrap_or(old_retry.map_or(defaults::MAX_RETRIES, |r| r.max_retries)),
        backoff_base_ms: retry_input
            .backoff_base_ms
            .unwrap_or(old_retry.map_or(defaults::BACKOFF_BASE_MS, |r| r.backoff_base_ms)),
        backoff_cap_ms: retry_input
            .backoff_cap_ms
            .unwrap_or(old_retry.map_or(defaults::BACKOFF_CAP_MS, |r| r.backoff_cap_ms)),
    };
    in_range(
        &mut problems,
        "retry.max_retries",
        retry.max_retries.into(),
        0,
        100,
    );
    in_range(
        &mut problems,
        "retry.backoff_base_ms",
        retry.backoff_base_ms,
        10,
        3_600_000,
    );
    in_range(
        &mut problems,
        "retry.backoff_cap_ms",
        retry.backoff_cap_ms,
        10,
        86_400_000,
    );
    problems.check(
        retry.backoff_cap_ms >= retry.backoff_base_ms,
        "retry.backoff_cap_ms",
        "must not be below retry.backoff_base_ms",
    );

    let old_breaker = current.map(ServiceRow::breaker);
    let breaker_input = input.breaker.unwrap_or_default();
    let breaker = BreakerPolicy {
        failure_threshold: breaker_input
            .failure_threshold
            .unwrap_or(old_breaker.map_or(defaults::FAILURE_THRESHOLD, |b| b.failure_threshold)),
        cooldown_ms: breaker_input
            .cooldown_ms
            .unwrap_or(old_breaker.map_or(defaults::COOLDOWN_MS, |b| b.cooldown_ms)),
        half_open_probes: breaker_input
            .half_open_probes
            .unwrap_or(old_breaker.map_or(defaults::HALF_OPEN_PROBES, |b| b.half_open_probes)),
    };
    in_range(
        &mut problems,
        "breaker.failure_threshold",
        breaker.failure_threshold.into(),
        1,
        1000,
    );
    in_range(
        &mut problems,
        "breaker.cooldown_ms",
        breaker.cooldown_ms,
        100,
        3_600_000,
    );
    in_range(
        &mut problems,
        "breaker.half_open_probes",
        breaker.half_open_probes.into(),
        1,
        100,
    );

    let concurrency = input
        .concurrency
        .unwrap_or_else(|| current.map_or(defaults::CONCURRENCY, |r| u32_of(r.concurrency)));
    in_range(&mut problems, "concurrency", concurrency.into(), 1, 1000);
    let rate_limit_per_sec = match input.rate_limit_per_sec {
        Tri::Absent => current.and_then(|r| r.rate_limit_per_sec.map(u32_of)),
        Tri::Null => None,
        Tri::Value(n) => {
            in_range(&mut problems, "rate_limit_per_sec", n.into(), 1, 100_000);
            Some(n)
        }
    };
    let max_job_age_ms = input
        .max_job_age_ms
        .unwrap_or_else(|| current.map_or(defaults::MAX_JOB_AGE_MS, |r| u64_of(r.max_job_age_ms)));
    in_range(
        &mut problems,
        "max_job_age_ms",
        max_job_age_ms,
        60_000,
        30 * 86_400_000,
    );
    let inbound = match input.inbound {
        Tri::Absent => current.and_then(|r| r.inbound.as_ref().map(|i| i.0.clone())),
        Tri::Null => None,
        Tri::Value(given) => inbound(
            state,
            &mut problems,
            given,
            current.and_then(|r| r.inbound.as_ref().map(|i| &i.0)),
            &auth,
        )?,
    };
    let replies_by_queue = matches!(
        &transport,
        Transport::Amqp(AmqpTransport {
            response_queue: Some(_),
            ..
        })
    );
    if replies_by_queue {
        problems.check(
            inbound.is_some(),
            "transport.response_queue",
            "needs `inbound` with the `source` (Moodle site) that receives the replies",
        );
    }
    // Webhooks without credentials could never be accepted (there is no open mode), so an
    // enabled endpoint needs one — unless the service only replies on its AMQP queue.
    if let Some(inbound) = &inbound {
        problems.check(
            !inbound.enabled
                || replies_by_queue
                || !inbound.signing_secrets.is_empty()
                || !inbound.bearer_token_hashes.is_empty(),
            "inbound",
            "an enabled inbound endpoint needs a `signing_secret` or a `bearer_token` (there is \
             no open mode), unless the service only replies on its AMQP `transport.response_queue`",
        );
    }
    problems.into_result()?;

    let now = Utc::now();
    Ok(ServiceRow {
        name,
        description,
        enabled: input.enabled.or(current.map(|r| r.enabled)).unwrap_or(true),
        kind: transport.kind().to_owned(),
        transport: SqlJson(transport),
        auth: SqlJson(auth),
        signing_secret: signing_secret.map(SqlJson),
        headers: SqlJson(headers),
        timeout_ms: i64_of(timeout_ms),
        max_retries: i32_of(retry.max_retries),
        backoff_base_ms: i64_of(retry.backoff_base_ms),
        backoff_cap_ms: i64_of(retry.backoff_cap_ms),
        breaker_failure_threshold: i32_of(breaker.failure_threshold),
        breaker_cooldown_ms: i64_of(breaker.cooldown_ms),
        breaker_half_open_probes: i32_of(breaker.half_open_probes),
        concurrency: i32_of(concurrency),
        rate_limit_per_sec: rate_limit_per_sec.map(i32_of),
        max_job_age_ms: i64_of(max_job_age_ms),
        inbound: inbound.map(SqlJson),
        version: current.map_or(0, |r| r.version),
        created_at: current.map_or(now, |r| r.created_at),
        updated_at: now,
    })
}
