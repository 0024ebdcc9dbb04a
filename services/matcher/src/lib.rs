//! matcher: turns events into jobs. Each event is matched against the rules of the live
//! configuration (no database on the hot path), deduplicated, and every matching rule's request
//! is rendered and published to `<NS>_JOBS` before the event is acknowledged. Matching, dedup and
//! publishing are `mih_rules`'; this crate is the EVENTS consumer that runs them, with its metrics.

mod claims;
mod consumer;
mod metrics;
mod order_gate;
mod partitions;

use std::sync::Arc;

use arc_swap::ArcSwap;

use mih_rules::RuleSet;
use mih_rules::budget::Evaluators;
use mih_rules::dedup::Dedup;
use mih_shared::live::ConfigSnapshot;
use mih_shared::{RunError, ServiceContext, Shutdown, ops};

use crate::consumer::Matcher;

pub use consumer::consumer_config;

pub async fn run(ctx: ServiceContext, shutdown: Shutdown) -> Result<(), RunError> {
    metrics::describe();
    ctx.ensure_topology().await?;
    let js = &ctx.jetstream;
    let bucket = ctx.names.config_bucket();
    let snapshot = ctx
        .open_at_start(format!("the live configuration ({bucket})"), || {
            ConfigSnapshot::start(js, &bucket, "matcher", shutdown.clone())
        })
        .await?;
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
    let bucket = ctx.names.dedup_bucket();
    let dedup = ctx
        .open_at_start(format!("bucket {bucket}"), || Dedup::open(js, &bucket))
        .await?;
    let settings = &ctx.config.matcher;
    tokio::spawn(claims::watch(
        ctx.jetstream.clone(),
        format!("KV_{}", ctx.names.dedup_bucket()),
        settings.dedup_max_claims,
        settings.dedup_horizon,
        shutdown.clone(),
    ));
    let matcher = Arc::new(Matcher {
        js: ctx.jetstream.clone(),
        names: ctx.names.clone(),
        partitions: ctx.config.streams.job_partitions(),
        rules,
        dedup,
        evaluators: Evaluators::per_core(),
        ack_linger: ctx.config.nats.ack_linger,
    });
    let serving = tokio::spawn(ops::serve(
        ctx.listener,
        ops::router(ctx.readiness.clone(), ctx.metrics.clone()),
        ctx.service,
        ctx.config.http,
        shutdown.clone(),
    ));
    let reading = partitions::Reading {
        js: ctx.jetstream.clone(),
        names: ctx.names.clone(),
        configured: ctx.config.streams.event_partitions(),
        max_in_flight: settings.max_in_flight,
        ack_wait: settings.ack_wait,
    };
    let readiness = ctx.readiness.clone();
    let rule_count = matcher.rules.load().len();
    partitions::consume(matcher, reading, shutdown, move || {
        readiness.mark_started();
        tracing::info!(rules = rule_count, "matching events");
    })
    .await?;
    serving.await.map_err(|cause| RunError::Task {
        what: "the operational endpoints",
        cause,
    })??;
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
