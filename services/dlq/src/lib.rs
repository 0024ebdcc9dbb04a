//! dlq: keeps dead letters. It projects `<NS>_DLQ` into PostgreSQL's `dead_letters` (one row
//! per job, idempotent), and follows the replay outcomes in `<NS>_RESULTS` to remove a dead
//! letter once a replay of it is delivered. Replaying and deleting are the api's (and the
//! CLI's): they publish jobs the dispatcher delivers, and change the rows through [`store`],
//! which holds every statement on this crate's tables (`dead_letters`,
//! `dead_letter_operations`).

mod consumer;
mod metrics;
pub mod store;

use std::sync::Arc;

use mih_shared::topology::Resource;
use mih_shared::{RunError, ServiceContext, Shutdown, db, ops};

pub use consumer::DEAD_LETTERS;
use consumer::{Kind, REPLAYS, consumer_config};

pub async fn run(ctx: ServiceContext, shutdown: Shutdown) -> Result<(), RunError> {
    metrics::describe();
    mih_shared::parking::describe();
    let pool = ctx.database()?.clone();
    // The dlq may start before api: the schema is whoever's first.
    let applied = db::migrate(&pool)
        .await
        .map_err(|cause| RunError::Migrate { cause })?;
    tracing::info!(migrations = applied, "database schema up to date");
    ctx.ensure_topology().await?;
    // RESULTS is read too (resolving), so it must exist even if no dispatcher ran yet.
    ctx.topology()
        .ensure(&ctx.jetstream, &[Resource::Results])
        .await?;
    let mut workers = Vec::new();
    for (kind, durable, stream, subject) in [
        (
            Kind::DeadLetters,
            DEAD_LETTERS,
            ctx.names.dlq_stream(),
            ctx.names.dlq_all(),
        ),
        (
            Kind::Replays,
            REPLAYS,
            ctx.names.results_stream(),
            ctx.names.replay_results_all(),
        ),
    ] {
        let consumer = ctx
            .jetstream
            .get_stream(&stream)
            .await
            .map_err(|e| RunError::Open {
                what: format!("stream {stream}"),
                cause: e.into(),
            })?
            .create_consumer(consumer_config(kind, subject))
            .await
            .map_err(|e| RunError::Consumer {
                consumer: durable.to_owned(),
                stream: stream.clone(),
                cause: e.into(),
            })?;
        let projector = Arc::new(consumer::Projector {
            db: pool.clone(),
            kind,
            ack_linger: ctx.config.nats.ack_linger,
        });
        workers.push(tokio::spawn(projector.run(consumer, shutdown.clone())));
    }
    let serving = tokio::spawn(ops::serve(
        ctx.listener,
        ops::router(ctx.readiness.clone(), ctx.metrics.clone()),
        ctx.service,
        ctx.config.http,
        shutdown.clone(),
    ));
    ctx.readiness.mark_started();
    tracing::info!("projecting dead letters");
    for worker in workers {
        worker.await.map_err(|cause| RunError::Task {
            what: "a dlq consumer",
            cause,
        })?;
    }
    serving.await.map_err(|cause| RunError::Task {
        what: "the operational endpoints",
        cause,
    })??;
    Ok(())
}
