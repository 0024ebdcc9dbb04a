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

pub use consumer::{DEAD_LETTERS, Kind, REPLAYS, consumer_config};

pub async fn run(ctx: ServiceContext, shutdown: Shutdown) -> Result<(), RunError> {
    metrics::describe();
    mih_shared::parking::describe();
    let pool = ctx
        .db
        .clone()
        .ok_or_else(|| RunError::Other("dlq needs PostgreSQL (database.url)".into()))?;
    // The dlq may start before api: the schema is whoever's first.
    let applied = db::migrate(&pool)
        .await
        .map_err(|e| RunError::Other(format!("database migration failed: {e}")))?;
    tracing::info!(migrations = applied, "database schema up to date");
    ctx.ensure_topology().await?;
    // RESULTS is read too (resolving), so it must exist even if no dispatcher ran yet.
    ctx.topology()
        .ensure(&ctx.jetstream, &[Resource::Results])
        .await?;
    let other = |e: &dyn std::fmt::Display| RunError::Other(e.to_string());
    let mut workers = Vec::new();
    for (kind, stream, subject) in [
        (
            Kind::DeadLetters,
            ctx.names.dlq_stream(),
            ctx.names.dlq_all(),
        ),
        (
            Kind::Replays,
            ctx.names.results_stream(),
            ctx.names.replay_results_all(),
        ),
    ] {
        let consumer = ctx
            .jetstream
            .get_stream(&stream)
            .await
            .map_err(|e| other(&e))?
            .create_consumer(consumer_config(kind, subject))
            .await
            .map_err(|e| RunError::Other(format!("cannot create the consumer on {stream}: {e}")))?;
        let projector = Arc::new(consumer::Projector {
            db: pool.clone(),
            kind,
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
        worker
            .await
            .map_err(|e| RunError::Other(format!("dlq consumer: {e}")))?;
    }
    serving
        .await
        .map_err(|e| RunError::Other(format!("operational endpoints: {e}")))??;
    Ok(())
}
