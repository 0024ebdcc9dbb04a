//! ingest: where Moodle sites POST their events. Authenticates the source, validates each
//! event, stores it in `<NS>_EVENTS` and answers 202 only once JetStream acknowledged it.

mod auth;
mod canonical;
mod decode;
mod error;
mod inbound;
mod metrics;
mod publish;
mod routes;
mod validate;

use std::sync::Arc;

use async_nats::jetstream;

use inbound::InboundDirectory;
use mih_shared::crypto::Keyring;
use mih_shared::live::ConfigSnapshot;
use mih_shared::sources::{Source, SourceDirectory, SourceError};
use mih_shared::{RunError, ServiceContext, Shutdown, ops};

pub use auth::SOURCE_HEADER;

/// Rebuilds the directories (sources, inbound endpoints) from the live config; returns the
/// sources and services whose secrets could not be opened.
fn refresh_sources(
    directory: &SourceDirectory,
    inbound: &InboundDirectory,
    snapshot: &ConfigSnapshot,
    keyring: &Keyring,
) -> Vec<SourceError> {
    let config = snapshot.current();
    let mut problems = Vec::new();
    let mut sources = Vec::with_capacity(config.sources.len());
    for live in config.sources.values() {
        match Source::from_live(live, keyring) {
            Ok(source) => sources.push(source),
            Err(error) => problems.push(error),
        }
    }
    directory.replace(sources);
    problems.extend(inbound.refresh(&config, keyring));
    problems
}

async fn follow_sources(
    directory: SourceDirectory,
    inbound: InboundDirectory,
    snapshot: ConfigSnapshot,
    keyring: Arc<Keyring>,
    shutdown: Shutdown,
) {
    let mut changes = snapshot.changes();
    loop {
        tokio::select! {
            () = shutdown.triggered() => return,
            changed = changes.changed() => if changed.is_err() { return },
        }
        for error in refresh_sources(&directory, &inbound, &snapshot, &keyring) {
            tracing::error!(%error, "refused until its secrets can be opened");
        }
        tracing::debug!(sources = directory.len(), "sources updated");
    }
}

/// Room left in a NATS message for the envelope headers next to the event itself.
const HEADER_ROOM: usize = 4096;

pub async fn run(ctx: ServiceContext, shutdown: Shutdown) -> Result<(), RunError> {
    metrics::describe();
    ctx.ensure_topology().await?;
    let config = ctx.config.ingest.clone();
    let max_payload = ctx.nats.server_info().max_payload;
    if config.inbound_max_body_bytes.saturating_mul(2) + HEADER_ROOM > max_payload {
        // Twice: a text body is stored as a JSON string, where escaping can double it.
        return Err(RunError::Setting {
            setting: "ingest.inbound_max_body_bytes (MIH_INGEST_INBOUND_MAX_BODY_BYTES)",
            problem: format!(
                "twice {} does not fit the NATS server's max_payload ({max_payload}); lower \
                 the setting or raise max_payload on the server",
                config.inbound_max_body_bytes
            )
            .into(),
        });
    }
    if config.max_event_bytes + HEADER_ROOM > max_payload {
        return Err(RunError::Setting {
            setting: "ingest.max_event_bytes (MIH_INGEST_MAX_EVENT_BYTES)",
            problem: format!(
                "{} does not fit the NATS server's max_payload ({max_payload}); lower the \
                 setting or raise max_payload on the server",
                config.max_event_bytes
            )
            .into(),
        });
    }
    let keyring = Arc::new(ctx.config.keyring().map_err(|e| RunError::Setting {
        setting: "secret_key (MIH_SECRET_KEY)",
        problem: e.into(),
    })?);
    let bucket = ctx.names.config_bucket();
    let snapshot = ctx
        .open_at_start(format!("the live configuration ({bucket})"), || {
            ConfigSnapshot::start(&ctx.jetstream, &bucket, "ingest", shutdown.clone())
        })
        .await?;
    let sources = SourceDirectory::default();
    let inbound = InboundDirectory::default();
    // At start an unreadable secret is fatal (a missing or wrong secret_key); later it is
    // logged and that source or service refused until fixed, while the others keep working.
    let problems = refresh_sources(&sources, &inbound, &snapshot, &keyring);
    if let Some(first) = problems.into_iter().next() {
        return Err(RunError::Setting {
            setting: "secret_key (MIH_SECRET_KEY)",
            problem: format!("{first}; it must be the key api uses").into(),
        });
    }
    if sources.is_empty() {
        tracing::warn!(
            "no sources yet: requests are refused until one is created (POST /api/v1/sources)"
        );
    }
    tokio::spawn(follow_sources(
        sources.clone(),
        inbound.clone(),
        snapshot,
        keyring,
        shutdown.clone(),
    ));
    let js = jetstream::ContextBuilder::new()
        .timeout(config.publish_timeout)
        .backpressure_on_inflight(true)
        .build(ctx.nats.clone());
    let events = ctx
        .jetstream
        .get_stream(ctx.names.events_stream())
        .await
        .map_err(|e| RunError::Open {
            what: format!("stream {}", ctx.names.events_stream()),
            cause: e.into(),
        })?;
    let inbound_stream = ctx
        .jetstream
        .get_stream(ctx.names.inbound_stream())
        .await
        .map_err(|e| RunError::Open {
            what: format!("stream {}", ctx.names.inbound_stream()),
            cause: e.into(),
        })?;
    let state = Arc::new(routes::IngestState {
        config,
        names: ctx.names.clone(),
        sources,
        inbound,
        inbound_stream,
        nats: ctx.nats.clone(),
        publisher: publish::Publisher::new(js, events),
        partitions: ctx.config.streams.event_partitions(),
    });
    let app = routes::router(state).merge(ops::router(ctx.readiness.clone(), ctx.metrics.clone()));
    ctx.readiness.mark_started();
    ops::serve(ctx.listener, app, ctx.service, ctx.config.http, shutdown).await?;
    Ok(())
}
