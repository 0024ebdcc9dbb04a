//! Connecting to NATS and PostgreSQL at startup: retry with backoff for a bounded time, then
//! fail naming the setting to fix. Refuses NATS servers older than 2.10.

use std::time::{Duration, Instant};

use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::config::{DatabaseConfig, NatsConfig, env_var_for};

/// Oldest nats-server mih supports: it relies on 2.10 semantics and refuses older servers
/// rather than having them silently ignore settings.
pub const MIN_NATS_VERSION: (u64, u64) = (2, 10);

const FIRST_RETRY: Duration = Duration::from_millis(200);
const MAX_RETRY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(
        "cannot reach NATS at {url} after {} (setting `nats.url`, {}): {cause}",
        seconds(*waited),
        env_var_for("nats.url")
    )]
    NatsUnreachable {
        url: String,
        waited: Duration,
        cause: String,
    },
    #[error("cannot read the NATS credentials file (setting `nats.creds_file`): {0}")]
    NatsCredentials(std::io::Error),
    #[error(
        "NATS server at {url} runs version {found}; mih needs nats-server {}.{} or newer \
         (upgrade the server or point `nats.url` at a newer one)",
        MIN_NATS_VERSION.0, MIN_NATS_VERSION.1
    )]
    NatsTooOld { url: String, found: String },
    #[error("NATS server at {url} has JetStream disabled; start nats-server with `-js`")]
    NatsNoJetStream { url: String },
    #[error(
        "cannot reach PostgreSQL at {url} after {} (setting `database.url`, {}): {cause}",
        seconds(*waited),
        env_var_for("database.url")
    )]
    DatabaseUnreachable {
        url: String,
        waited: Duration,
        cause: String,
    },
    #[error(
        "PostgreSQL at {url} refused the connection (setting `database.url`, {}): {cause}",
        env_var_for("database.url")
    )]
    DatabaseRefused { url: String, cause: String },
}

fn seconds(waited: Duration) -> String {
    format!("{:.1} s", waited.as_secs_f64())
}

/// Delays between startup attempts: 200 ms doubling to 5 s.
fn next_delay(previous: Duration) -> Duration {
    (previous * 2).min(MAX_RETRY)
}

async fn nats_options(
    config: &NatsConfig,
    client_name: &str,
) -> Result<async_nats::ConnectOptions, ConnectError> {
    let mut options = async_nats::ConnectOptions::new()
        .name(client_name)
        .connection_timeout(config.request_timeout.min(Duration::from_secs(5)))
        .request_timeout(Some(config.request_timeout))
        .require_tls(config.require_tls)
        // Reconnect forever, quickly at first: ingest answers 503 while disconnected, so a
        // short outage should end as soon as the server is back.
        .max_reconnects(None)
        .reconnect_delay_callback(|attempts| {
            let exp = u32::try_from(attempts.min(5)).unwrap_or(5);
            (Duration::from_millis(100) * 2u32.pow(exp)).min(Duration::from_secs(2))
        })
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => tracing::info!("nats connected"),
                async_nats::Event::Disconnected => tracing::warn!("nats disconnected"),
                // Each failed reconnect attempt reports a client error; the disconnect was
                // already logged once.
                async_nats::Event::Closed
                | async_nats::Event::Draining
                | async_nats::Event::ClientError(_) => {
                    tracing::debug!(event = %event, "nats connection event")
                }
                other => tracing::warn!(event = %other, "nats event"),
            }
        });
    if let (Some(user), Some(password)) = (&config.user, &config.password) {
        options = options.user_and_password(user.clone(), password.expose().to_owned());
    }
    if let Some(token) = &config.token {
        options = options.token(token.expose().to_owned());
    }
    if let Some(path) = &config.creds_file {
        options = options
            .credentials_file(path)
            .await
            .map_err(ConnectError::NatsCredentials)?;
    }
    if let Some(ca) = &config.tls_ca_file {
        options = options.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&config.tls_cert_file, &config.tls_key_file) {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    Ok(options)
}

/// Connects to NATS, retrying for `nats.connect_timeout`, and checks the server can run mih.
pub async fn connect_nats(
    config: &NatsConfig,
    client_name: &str,
) -> Result<async_nats::Client, ConnectError> {
    let started = Instant::now();
    let mut delay = FIRST_RETRY;
    let url = config.url.redacted();
    let client = loop {
        let options = nats_options(config, client_name).await?;
        match options.connect(server_list(config.url.expose())).await {
            Ok(client) => break client,
            Err(error) => {
                let waited = started.elapsed();
                if waited + delay > config.connect_timeout {
                    return Err(ConnectError::NatsUnreachable {
                        url,
                        waited,
                        cause: error.to_string(),
                    });
                }
                tracing::warn!(%url, error = %error, retry_in = ?delay, "nats not reachable yet");
                tokio::time::sleep(delay).await;
                delay = next_delay(delay);
            }
        }
    };
    let info = client.server_info();
    if !version_supported(&info.version) {
        return Err(ConnectError::NatsTooOld {
            url,
            found: info.version,
        });
    }
    if !info.jetstream {
        return Err(ConnectError::NatsNoJetStream { url });
    }
    tracing::info!(%url, version = %info.version, "nats ready");
    Ok(client)
}

/// Runs `open` (a bucket, the live configuration: what a service opens once at start, after
/// the topology is ensured) until it succeeds, trying again with the startup backoff for up to
/// `patience`; then its last error. A JetStream leader elected in between, or a stream whose
/// interest has not reached every node yet, fails an open that works a moment later: the
/// service should wait for that, not exit.
pub async fn open_with_patience<T, E, F, Fut>(
    patience: Duration,
    what: &str,
    mut open: F,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let started = tokio::time::Instant::now();
    let mut delay = FIRST_RETRY;
    loop {
        match open().await {
            Ok(opened) => return Ok(opened),
            Err(error) if started.elapsed() + delay <= patience => {
                tracing::warn!(%what, error = %error, retry_in = ?delay, "cannot open yet; retrying");
                tokio::time::sleep(delay).await;
                delay = next_delay(delay);
            }
            Err(error) => return Err(error),
        }
    }
}

/// `nats.url` may name several servers of a cluster, comma-separated: the client starts with
/// whichever answers and learns the rest of the cluster from it.
fn server_list(url: &str) -> Vec<&str> {
    url.split(',')
        .map(str::trim)
        .filter(|one| !one.is_empty())
        .collect()
}

/// Whether a `major.minor.patch[-suffix]` nats-server version is at least [`MIN_NATS_VERSION`].
pub fn version_supported(version: &str) -> bool {
    let mut parts = version
        .trim_start_matches('v')
        .split(['.', '-'])
        .map(|p| p.parse::<u64>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= MIN_NATS_VERSION,
        _ => false,
    }
}

/// Connects to PostgreSQL, retrying for `database.connect_timeout`. Errors a retry cannot fix
/// (unknown database, bad password) end the wait at once.
pub async fn connect_database(config: &DatabaseConfig) -> Result<PgPool, ConnectError> {
    let url = config.url.redacted();
    let options: PgConnectOptions =
        config
            .url
            .expose()
            .parse()
            .map_err(|e: sqlx::Error| ConnectError::DatabaseRefused {
                url: url.clone(),
                cause: e.to_string(),
            })?;
    let started = Instant::now();
    let mut delay = FIRST_RETRY;
    loop {
        let attempt = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.connect_timeout.min(Duration::from_secs(5)))
            .connect_with(options.clone())
            .await;
        match attempt {
            Ok(pool) => return Ok(pool),
            Err(error) if is_permanent(&error) => {
                return Err(ConnectError::DatabaseRefused {
                    url,
                    cause: describe_sqlx(&error),
                });
            }
            Err(error) => {
                let waited = started.elapsed();
                if waited + delay > config.connect_timeout {
                    return Err(ConnectError::DatabaseUnreachable {
                        url,
                        waited,
                        cause: describe_sqlx(&error),
                    });
                }
                tracing::warn!(%url, error = %error, retry_in = ?delay, "postgres not reachable yet");
                tokio::time::sleep(delay).await;
                delay = next_delay(delay);
            }
        }
    }
}

/// The server's own message for database errors (sqlx's display adds noise such as the
/// server's source line), the full text otherwise.
fn describe_sqlx(error: &sqlx::Error) -> String {
    match error {
        sqlx::Error::Database(db) => db.message().to_owned(),
        other => other.to_string(),
    }
}

/// Unknown database (3D000), bad credentials (28000, 28P01): waiting will not fix them.
fn is_permanent(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => {
            matches!(db.code().as_deref(), Some("3D000" | "28000" | "28P01"))
        }
        sqlx::Error::Configuration(_) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_open_is_tried_again_until_it_works_within_patience() {
        let mut tries = 0;
        let started = tokio::time::Instant::now();
        let opened = open_with_patience(Duration::from_secs(10), "bucket b", || {
            tries += 1;
            let attempt = tries;
            async move {
                if attempt < 3 {
                    Err(format!("no responders ({attempt})"))
                } else {
                    Ok(attempt)
                }
            }
        })
        .await;
        assert_eq!(opened, Ok(3));
        // 200 ms, then 400 ms.
        assert_eq!(started.elapsed(), Duration::from_millis(600));
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_that_keeps_failing_gives_its_last_error_once_patience_runs_out() {
        let mut tries = 0u32;
        let started = tokio::time::Instant::now();
        let opened: Result<(), String> =
            open_with_patience(Duration::from_secs(3), "bucket b", || {
                tries += 1;
                let attempt = tries;
                async move { Err(format!("stream not found ({attempt})")) }
            })
            .await;
        // Waits of 0.2, 0.4, 0.8 and 1.6 s fit in 3 s; a 3.2 s one would not.
        assert_eq!(opened, Err("stream not found (5)".to_owned()));
        assert_eq!(started.elapsed(), Duration::from_millis(3_000));
    }

    #[test]
    fn versions_from_2_10_are_supported() {
        for ok in ["2.10.0", "2.10.26", "v2.11.1", "2.15.1-beta.1", "3.0.0"] {
            assert!(version_supported(ok), "{ok}");
        }
        for old in ["2.9.10", "2.2.0", "1.99.0", "", "garbage"] {
            assert!(!version_supported(old), "{old}");
        }
    }

    #[test]
    fn startup_backoff_doubles_to_a_cap() {
        assert_eq!(next_delay(FIRST_RETRY), Duration::from_millis(400));
        assert_eq!(next_delay(Duration::from_secs(4)), MAX_RETRY);
    }
}
