//! Whether the dispatcher will be allowed to reach a service, said when it is saved: an
//! address the SSRF guard refuses (loopback, private, link-local) is accepted — an operator may
//! be about to allow its network — but every delivery to it would fail, so the answer warns.

use std::time::Duration;

use serde::Serialize;
use utoipa::ToSchema;

use mih_shared::live::Transport;
use mih_shared::ssrf::{SsrfError, SsrfGuard};

/// Something about a saved object that will not work as it is.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
pub struct Warning {
    pub field: String,
    pub message: String,
}

/// Longest a host name's resolution may delay the answer.
const RESOLVE_PATIENCE: Duration = Duration::from_secs(3);

/// What the SSRF guard would say of each address the transport names.
pub async fn warnings(guard: &SsrfGuard, transport: &Transport) -> Vec<Warning> {
    let mut targets: Vec<(&str, String)> = Vec::new();
    match transport {
        Transport::Rest(rest) => targets.push(("transport.base_url", rest.base_url.clone())),
        Transport::Soap(soap) => {
            targets.push(("transport.endpoint", soap.endpoint.clone()));
            if let Some(wsdl) = &soap.wsdl_url {
                targets.push(("transport.wsdl_url", wsdl.clone()));
            }
        }
        Transport::Amqp(amqp) => {
            targets.push((
                "transport.host",
                format!("amqp://{}:{}", amqp.host, amqp.port),
            ));
        }
    }
    let mut warnings = Vec::new();
    for (field, url) in targets {
        if let Some(message) = check(guard, &url).await {
            warnings.push(Warning {
                field: field.to_owned(),
                message,
            });
        }
    }
    warnings
}

async fn check(guard: &SsrfGuard, url: &str) -> Option<String> {
    let url = url::Url::parse(url).ok()?;
    let port = url.port_or_known_default().unwrap_or(80);
    let refused = |error: SsrfError| {
        format!("deliveries will be refused: {error} (the dispatcher's SSRF guard)")
    };
    match url.host()? {
        url::Host::Ipv4(v4) => guard.check(&v4.to_string(), v4.into()).err().map(refused),
        url::Host::Ipv6(v6) => guard.check(&v6.to_string(), v6.into()).err().map(refused),
        url::Host::Domain(name) => {
            match tokio::time::timeout(RESOLVE_PATIENCE, guard.resolve(name, port)).await {
                Ok(Ok(_)) => None,
                Ok(Err(error @ SsrfError::Refused { .. })) => Some(refused(error)),
                Ok(Err(error)) => Some(format!(
                    "{error} from here now; deliveries are retried while it cannot be resolved"
                )),
                Err(_) => Some(format!(
                    "{name} did not resolve within {} s from here; deliveries are retried while \
                     it cannot be resolved",
                    RESOLVE_PATIENCE.as_secs()
                )),
            }
        }
    }
}
