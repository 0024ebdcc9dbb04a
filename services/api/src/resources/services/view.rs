//! A service as the API shows it: secrets never appear, only whether they are set.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use mih_shared::live::{Auth, SoapVersion, Transport};

use super::input::{BreakerSettings, RetrySettings};
use super::reach::Warning;
use super::store::{ServiceRow, u32_of, u64_of};

#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum TransportView {
    Rest {
        base_url: String,
    },
    Amqp {
        host: String,
        port: u16,
        vhost: String,
        username: String,
        password_set: bool,
        tls: bool,
        exchange: String,
        routing_key: String,
        queue_declare: Option<String>,
        response_queue: Option<String>,
    },
    Soap {
        endpoint: String,
        wsdl_url: Option<String>,
        #[schema(value_type = String)]
        version: SoapVersion,
        namespace: Option<String>,
        ws_security: bool,
    },
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AuthView {
    None,
    Bearer {
        token_set: bool,
    },
    ApiKey {
        header: String,
        key_set: bool,
    },
    Basic {
        username: String,
        password_set: bool,
    },
}

/// A service's inbound endpoint as the API shows it: whether secrets are set, never them.
#[derive(Debug, Serialize, ToSchema)]
pub struct InboundView {
    /// The Moodle site that receives the messages.
    pub source: String,
    pub enabled: bool,
    /// Where the service sends its webhooks, on ingest.
    pub path: String,
    /// Signing secrets currently accepted (two during a rotation).
    pub signing_secrets: usize,
    pub bearer_token_set: bool,
    pub rate_limit_per_sec: u32,
    pub burst: u32,
}

/// A service as the API shows it: secrets never appear, only whether they are set.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServiceView {
    pub name: String,
    pub description: String,
    pub enabled: bool,
    pub transport: TransportView,
    pub auth: AuthView,
    pub signing_secret_set: bool,
    pub headers: BTreeMap<String, String>,
    pub timeout_ms: u64,
    pub retry: RetrySettings,
    pub breaker: BreakerSettings,
    pub concurrency: u32,
    pub rate_limit_per_sec: Option<u32>,
    pub max_job_age_ms: u64,
    pub inbound: Option<InboundView>,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// In the answer to a create or update only: what will not work as configured (an address
    /// the dispatcher's SSRF guard refuses, a host that does not resolve).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Warning>,
}

impl From<&ServiceRow> for ServiceView {
    fn from(row: &ServiceRow) -> Self {
        let transport = match &row.transport.0 {
            Transport::Rest(t) => TransportView::Rest {
                base_url: t.base_url.clone(),
            },
            Transport::Amqp(t) => TransportView::Amqp {
                host: t.host.clone(),
                port: t.port,
                vhost: t.vhost.clone(),
                username: t.username.clone(),
                password_set: t.password.is_some(),
                tls: t.tls,
                exchange: t.exchange.clone(),
                routing_key: t.routing_key.clone(),
                queue_declare: t.queue_declare.clone(),
                response_queue: t.response_queue.clone(),
            },
            Transport::Soap(t) => TransportView::Soap {
                endpoint: t.endpoint.clone(),
                wsdl_url: t.wsdl_url.clone(),
                version: t.version,
                namespace: t.namespace.clone(),
                ws_security: t.ws_security,
            },
        };
        let auth = match &row.auth.0 {
            Auth::None => AuthView::None,
            Auth::Bearer { .. } => AuthView::Bearer { token_set: true },
            Auth::ApiKey { header, .. } => AuthView::ApiKey {
                header: header.clone(),
                key_set: true,
            },
            Auth::Basic { username, .. } => AuthView::Basic {
                username: username.clone(),
                password_set: true,
            },
        };
        let retry = row.retry();
        let breaker = row.breaker();
        ServiceView {
            name: row.name.clone(),
            description: row.description.clone(),
            enabled: row.enabled,
            transport,
            auth,
            signing_secret_set: row.signing_secret.is_some(),
            headers: row.headers.0.clone(),
            timeout_ms: u64_of(row.timeout_ms),
            retry: RetrySettings {
                max_retries: Some(retry.max_retries),
                backoff_base_ms: Some(retry.backoff_base_ms),
                backoff_cap_ms: Some(retry.backoff_cap_ms),
            },
            breaker: BreakerSettings {
                failure_threshold: Some(breaker.failure_threshold),
                cooldown_ms: Some(breaker.cooldown_ms),
                half_open_probes: Some(breaker.half_open_probes),
            },
            concurrency: u32_of(row.concurrency),
            rate_limit_per_sec: row.rate_limit_per_sec.map(u32_of),
            max_job_age_ms: u64_of(row.max_job_age_ms),
            inbound: row.inbound.as_ref().map(|i| InboundView {
                source: i.0.source.to_string(),
                enabled: i.0.enabled,
                path: format!("/v1/inbound/{}", row.name),
                signing_secrets: i
                    .0
                    .signing_secrets
                    .iter()
                    .filter(|s| s.active_at(Utc::now()))
                    .count(),
                bearer_token_set: !i.0.bearer_token_hashes.is_empty(),
                rate_limit_per_sec: i.0.rate_limit_per_sec,
                burst: i.0.burst,
            }),
            version: row.version,
            created_at: row.created_at,
            updated_at: row.updated_at,
            warnings: Vec::new(),
        }
    }
}
