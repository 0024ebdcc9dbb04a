//! dispatcher: delivers jobs over REST, AMQP and SOAP. One worker per enabled service (its own
//! consumer, concurrency and rate limits, so a slow or dead service never delays another),
//! retries by delayed redelivery, a circuit breaker per service shared by every replica, an
//! Outcome for every attempt and a DeadLetter for every job given up on. It also consumes the
//! AMQP services' response queues into `<NS>_INBOUND` (`inbound`).

mod breaker;
mod facade;
mod fleet;
mod held;
mod inbound;
mod metrics;
mod ordered;
mod outcome_batch;
mod rate;
mod record;
mod redact;
mod replicas;
pub mod ssrf;
pub mod transport;
mod uncounted;
mod worker;

use std::sync::Arc;

use mih_shared::circuit::CircuitStore;
use mih_shared::live::ConfigSnapshot;
use mih_shared::{RunError, ServiceContext, Shutdown, ops};

use crate::fleet::Fleet;
use crate::held::HeldKeys;
use crate::ssrf::SsrfGuard;
use crate::transport::TransportEnv;
use crate::uncounted::Uncounted;

pub async fn run(ctx: ServiceContext, shutdown: Shutdown) -> Result<(), RunError> {
    metrics::describe();
    ctx.ensure_topology().await?;
    let settings = &ctx.config.dispatcher;
    let keyring = ctx.config.keyring().map_err(|e| RunError::Setting {
        setting: "secret_key (MIH_SECRET_KEY)",
        problem: e.into(),
    })?;
    let env = TransportEnv {
        keyring: Arc::new(keyring),
        guard: Arc::new(SsrfGuard::new(settings.allow_networks.clone())),
    };
    let max_payload = ctx.nats.server_info().max_payload;
    if settings.reply_max_bytes.saturating_mul(2) + inbound::HEADER_ROOM > max_payload {
        // Twice: a text body is stored as a JSON string, where escaping can double it.
        return Err(RunError::Setting {
            setting: "dispatcher.reply_max_bytes (MIH_DISPATCHER_REPLY_MAX_BYTES)",
            problem: format!(
                "twice {} does not fit the NATS server's max_payload ({max_payload}); lower \
                 the setting or raise max_payload on the server",
                settings.reply_max_bytes
            )
            .into(),
        });
    }
    let js = &ctx.jetstream;
    let bucket = ctx.names.circuits_bucket();
    let circuits = ctx
        .open_at_start(format!("bucket {bucket}"), || {
            CircuitStore::open(js, &bucket)
        })
        .await?;
    let bucket = ctx.names.attempts_bucket();
    let uncounted = ctx
        .open_at_start(format!("bucket {bucket}"), || Uncounted::open(js, &bucket))
        .await?;
    let bucket = ctx.names.held_keys_bucket();
    let held = ctx
        .open_at_start(format!("bucket {bucket}"), || {
            HeldKeys::open(js, &bucket, shutdown.clone())
        })
        .await?;
    let bucket = ctx.names.dispatchers_bucket();
    let membership = ctx
        .open_at_start(format!("bucket {bucket}"), || {
            replicas::Membership::join(js, &bucket)
        })
        .await?;
    let bucket = ctx.names.config_bucket();
    let snapshot = ctx
        .open_at_start(format!("the live configuration ({bucket})"), || {
            ConfigSnapshot::start(js, &bucket, "dispatcher", shutdown.clone())
        })
        .await?;
    let replies = inbound::Replies::new(
        env.clone(),
        inbound::Store {
            nats: ctx.nats.clone(),
            js: ctx.jetstream.clone(),
            names: ctx.names.clone(),
            max_payload,
            send_timeout: ctx.config.nats.request_timeout,
        },
        inbound::ReplySettings {
            prefetch: settings.reply_prefetch,
            max_bytes: settings.reply_max_bytes,
        },
    );
    let fleet = Fleet::new(
        ctx.jetstream.clone(),
        ctx.nats.clone(),
        ctx.names.clone(),
        env,
        circuits,
        worker::SharedState {
            uncounted,
            held,
            replicas: membership.count(),
            ack_linger: ctx.config.nats.ack_linger,
        },
        &ctx.config,
    );
    let serving = tokio::spawn(ops::serve(
        ctx.listener,
        ops::router(ctx.readiness.clone(), ctx.metrics.clone()),
        ctx.service,
        ctx.config.http,
        shutdown.clone(),
    ));
    let limits = facade::FacadeLimits::new(
        settings.facade_max_body_bytes,
        ctx.nats.server_info().max_payload,
    );
    let facade = tokio::spawn(facade::serve(
        ctx.nats.clone(),
        ctx.names.clone(),
        fleet.clone(),
        limits,
        shutdown.clone(),
    ));
    let replies = tokio::spawn(replies.follow(snapshot.clone(), shutdown.clone()));
    ctx.readiness.mark_started();
    fleet.follow(snapshot, shutdown).await;
    // After the last delivery, so the others never take up a share still in use.
    membership.leave().await;
    if let Err(error) = replies.await {
        tracing::warn!(%error, "reply consumers ended abnormally");
    }
    if let Err(error) = facade.await {
        tracing::warn!(%error, "facade responder ended abnormally");
    }
    serving.await.map_err(|cause| RunError::Task {
        what: "the operational endpoints",
        cause,
    })??;
    Ok(())
}
