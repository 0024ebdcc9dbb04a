//! Test and benchmark harness for mih: real servers, never mocks.
//!
//! - [`NatsServer`]: the pinned nats-server (installed by `scripts/dev-deps`) on a free port
//!   with a temporary store; stoppable and restartable on the same port. [`NatsCluster`]: three
//!   of them as a JetStream cluster.
//! - [`TestDatabase`]: a fresh PostgreSQL database, dropped afterwards.
//! - [`HttpSink`]: an HTTP target on an ephemeral port that records what it receives and
//!   answers with a settable status and delay.
//! - [`eventually`]: wait for a fact instead of sleeping.
//! - [`fixtures`]: real Moodle events; [`sign`]: Standard Webhooks headers for requests.
//! - [`MihProcesses`]: a hub run as separate `mih` processes (reliability suite, benchmarks).

pub mod browser;
pub mod fixtures;
mod nats;
pub mod otlp;
mod postgres;
pub mod private_postgres;
mod processes;
pub mod rabbitmq;
pub mod sign;
mod sink;
pub mod soap;
mod wait;

pub use nats::{NatsCluster, NatsServer};
pub use otlp::{CollectedSpan, OtlpCollector};
pub use postgres::TestDatabase;
pub use processes::{ADMIN_TOKEN, MihProcesses, Output};
pub use sink::{HttpSink, Recorded, Reply};
pub use wait::{Timeout, eventually, wait_until_ok};

use std::path::PathBuf;

/// The repository root (where `scripts/dev-deps` puts `.tools/`).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// A namespace no other test uses: `t` and 10 random hex digits.
pub fn unique_namespace() -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("t{}", &id[..10])
}

/// A port that was free a moment ago (bind to 0, read, release).
pub fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// `n` distinct ports that were free a moment ago. Each is held until all are chosen: ports
/// released one by one can be handed out again at once (two services of one hub were given
/// the same port that way, and the second could not listen).
pub fn free_ports(n: usize) -> std::io::Result<Vec<u16>> {
    let held = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    held.iter()
        .map(|listener| Ok(listener.local_addr()?.port()))
        .collect()
}

/// An `application/x-www-form-urlencoded` body, as a browser posts a form.
pub fn form_body(fields: &[(&str, &str)]) -> String {
    let encode = |text: &str| -> String {
        text.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    char::from(b).to_string()
                }
                b' ' => "+".to_owned(),
                other => format!("%{other:02X}"),
            })
            .collect()
    };
    fields
        .iter()
        .map(|(name, value)| format!("{}={}", encode(name), encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}
