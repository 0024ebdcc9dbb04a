//! The three ways a job reaches its service. A [`Target`] is built once per service (and
//! rebuilt when the service changes): it owns the long-lived client — a pooled HTTP client, an
//! AMQP connection and channel — so no delivery pays for a connection of its own.
//!
//! Every transport answers an attempt with an [`Attempt`]; what to do next (ack, retry later,
//! dead-letter) is decided from its [`Verdict`] by the worker, never by the transport.

pub mod amqp;
pub mod http;
pub mod soap;

use std::sync::Arc;
use std::time::Duration;

use mih_shared::crypto::{CryptoError, Keyring};
use mih_shared::live::{Auth, LiveService, Transport};
use mih_shared::messages::{EventId, Header, JobId, Request};

use crate::ssrf::SsrfGuard;

/// Most bytes of a response body kept in an outcome; the facade returns up to
/// [`FACADE_BODY_LIMIT`].
pub const EXCERPT_LIMIT: usize = 2048;
pub const FACADE_BODY_LIMIT: usize = 1024 * 1024;

/// What every transport needs to build its client.
#[derive(Debug, Clone)]
pub struct TransportEnv {
    pub keyring: Arc<Keyring>,
    pub guard: Arc<SsrfGuard>,
}

/// Who is being delivered, for the headers that let a target recognise duplicates.
#[derive(Debug, Clone)]
pub struct AttemptMeta {
    pub job_id: JobId,
    pub event_id: Option<EventId>,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// W3C `traceparent` of the current span, sent on to the target.
    pub traceparent: Option<String>,
    /// How much of the response body to keep (an excerpt for the log, more for the facade).
    pub body_limit: usize,
}

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    pub verdict: Verdict,
    /// HTTP status (REST, SOAP); `None` for AMQP and for failures before a response.
    pub status: Option<u16>,
    pub headers: Vec<Header>,
    /// The start of the response body, at most `AttemptMeta::body_limit` bytes.
    pub body: Option<String>,
    /// Why it failed, for people: the transport error, the SOAP fault, the AMQP reply.
    pub error: Option<String>,
}

impl Attempt {
    pub fn failed(verdict: Verdict, error: impl Into<String>) -> Self {
        Attempt {
            verdict,
            status: None,
            headers: Vec::new(),
            body: None,
            error: Some(error.into()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The target took it (2xx, SOAP response without fault, AMQP confirm ack).
    Delivered,
    /// Worth another attempt: 408, 429, 5xx, SOAP server fault, connection failures, nack.
    /// `retry_after` is what the target asked for, if anything.
    Retryable { retry_after: Option<Duration> },
    /// No answer within the service's timeout.
    Timeout,
    /// Retrying cannot help: other 4xx, SOAP client fault, unroutable AMQP message, a request
    /// that does not fit the service.
    Permanent,
}

impl Verdict {
    /// Whether the attempt counts against the circuit breaker. A permanent failure is the
    /// request's fault, not the service's.
    pub fn counts_as_failure(self) -> bool {
        matches!(self, Verdict::Retryable { .. } | Verdict::Timeout)
    }
}

/// A service's transport could not be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("cannot open the service's secret: {0}")]
    Secret(#[from] CryptoError),
    #[error("{setting}: {message}")]
    Invalid {
        setting: &'static str,
        message: String,
    },
}

/// A service's transport, ready to deliver.
pub enum Target {
    Http(http::HttpTarget),
    Amqp(amqp::AmqpTarget),
    Soap(soap::SoapTarget),
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Target").field(&self.kind()).finish()
    }
}

impl Target {
    pub fn build(service: &LiveService, env: &TransportEnv) -> Result<Target, TargetError> {
        Ok(match &service.transport {
            Transport::Rest(rest) => Target::Http(http::HttpTarget::new(service, rest, env)?),
            Transport::Amqp(amqp) => Target::Amqp(amqp::AmqpTarget::new(service, amqp, env)?),
            Transport::Soap(soap) => Target::Soap(soap::SoapTarget::new(service, soap, env)?),
        })
    }

    pub async fn deliver(&self, request: &Request, meta: &AttemptMeta) -> Attempt {
        match (self, request) {
            (Target::Http(target), Request::Http(request)) => target.deliver(request, meta).await,
            (Target::Amqp(target), Request::Amqp(request)) => target.deliver(request, meta).await,
            (Target::Soap(target), Request::Soap(request)) => target.deliver(request, meta).await,
            (_, request) => Attempt::failed(
                Verdict::Permanent,
                format!(
                    "the job is a {} request but the service's transport is {}",
                    request_kind(request),
                    self.kind()
                ),
            ),
        }
    }

    /// Closes long-lived connections (AMQP) when the service is removed or changed.
    pub async fn close(&self) {
        if let Target::Amqp(target) = self {
            target.close().await;
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Target::Http(_) => "rest",
            Target::Amqp(_) => "amqp",
            Target::Soap(_) => "soap",
        }
    }
}

fn request_kind(request: &Request) -> &'static str {
    match request {
        Request::Http(_) => "rest",
        Request::Amqp(_) => "amqp",
        Request::Soap(_) => "soap",
    }
}

/// The `authorization`-style header a service's auth adds to HTTP requests (REST and SOAP).
pub fn auth_header(
    auth: &Auth,
    keyring: &Keyring,
) -> Result<Option<(String, String)>, TargetError> {
    use base64::Engine as _;
    Ok(match auth {
        Auth::None => None,
        Auth::Bearer { token } => Some((
            "authorization".to_owned(),
            format!("Bearer {}", keyring.open(token)?),
        )),
        Auth::ApiKey { header, key } => Some((header.clone(), keyring.open(key)?)),
        Auth::Basic { username, password } => {
            let pair = format!("{username}:{}", keyring.open(password)?);
            Some((
                "authorization".to_owned(),
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                ),
            ))
        }
    })
}

/// Cuts `bytes` to at most `limit` bytes on a character boundary, lossily decoded.
pub fn excerpt(bytes: &[u8], limit: usize) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(limit)]);
    // A cut through a multi-byte character leaves a replacement character at the end.
    text.trim_end_matches('\u{FFFD}').to_owned()
}
