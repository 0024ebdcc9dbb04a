//! matcher: turns events into jobs. Each event is matched against the rules of the live
//! configuration (no database on the hot path), deduplicated, and every matching rule's request
//! is rendered and published to `<NS>_JOBS` before the event is acknowledged. Matching, dedup and
//! publishing are `mih_rules`'; this crate is the EVENTS consumer that runs them, with its metrics.

mod consumer;
mod metrics;

use std::sync::Arc;

use arc_swap::ArcSwap;

use mih_rules::RuleSet;
use mih_rules::budget::Evaluators;
use mih_rules::dedup::Dedup;
use mih_shared::live::ConfigSnapshot;
use mih_shared::names::MATCHER_CONSUMER;
use mih_shared::{RunError, ServiceContext, Shutdown, ops};

use crate::consumer::Matcher;

pub use consumer::consumer_config;

pub async fn run(ctx: ServiceContext, shutdown: Shutdown) -> Result<(), RunError> {
    metrics::describe();
    ctx.ensure_topology().await?;
    let other = |e: &dyn std::fmt::Display| RunError::Other(e.to_string());
    let snapshot = ConfigSnapshot::start(
        &ctx.jetstream,
        &ctx.names.config_bucket(),
        "matcher",
        shutdown.clone(),
    )
    .await
    .map_err(|e| other(&e))?;
    let max_request_bytes = ctx.config.matcher.max_request_bytes;
    let rules = Arc::new(ArcSwap::from_pointee(
        RuleSet::build(&snapshot.current()).limit_requests(max_request_bytes),
    ));
    tokio::spawn(follow_rules(
        snapshot,
        Arc::clone(&rules),
        max_request_bytes,
        shutdown.clone(),
    ));
    let dedup = Dedup::open(&ctx.jetstream, &ctx.names.dedup_bucket())
        .await
        .map_err(|e| other(&e))?;
    let settings = &ctx.config.matcher;
    let events = ctx
        .jetstream
        .get_stream(ctx.names.events_stream())
        .await
        .map_err(|e| other(&e))?;
    let consumer = events
        .create_consumer(consumer_config(
            &ctx.names,
            settings.max_in_flight,
            settings.ack_wait,
        ))
        .await
        .map_err(|e| {
            RunError::Other(format!(
                "cannot create the {MATCHER_CONSUMER} consumer: {e}"
            ))
        })?;
    let matcher = Arc::new(Matcher {
        js: ctx.jetstream.clone(),
        names: ctx.names.clone(),
        rules,
        dedup,
        evaluators: Evaluators::per_core(),
    });
    let serving = tokio::spawn(ops::serve(
        ctx.listener,
        ops::router(ctx.readiness.clone(), ctx.metrics.clone()),
        ctx.service,
        ctx.config.http,
        shutdown.clone(),
    ));
    ctx.readiness.mark_started();
    tracing::info!(rules = matcher.rules.load().len(), "matching events");
    matcher
        .run(consumer, settings.max_in_flight, shutdown)
        .await;
    serving
        .await
        .map_err(|e| RunError::Other(format!("operational endpoints: {e}")))??;
    Ok(())
}

/// Rebuilds the rule set whenever the live configuration changes.
async fn follow_rules(
    snapshot: ConfigSnapshot,
    rules: Arc<ArcSwap<RuleSet>>,
    max_request_bytes: usize,
    shutdown: Shutdown,
) {
    let mut changes = snapshot.changes();
    loop {
        tokio::select! {
            () = shutdown.triggered() => return,
            changed = changes.changed() => if changed.is_err() { return },
        }
        let set = RuleSet::build(&snapshot.current()).limit_requests(max_request_bytes);
        tracing::debug!(rules = set.len(), "rules updated");
        rules.store(Arc::new(set));
    }
}
