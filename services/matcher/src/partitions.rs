//! One EVENTS consumer per partition: every matcher replica pulls from every partition's
//! durable `matcher` consumer, so JetStream shares the events among the replicas and hands a dead
//! replica's unacknowledged ones to the others.
//!
//! The partitions are the configured ones plus any stream left by a higher
//! `streams.event_partitions` (still drained), looked up again every [`CHECK`]: an ingest that
//! was given more partitions creates their streams, and this matcher starts reading them
//! without a restart.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, stream::Stream};
use tokio::task::JoinSet;

use mih_shared::names::{MATCHER_CONSUMER, Names};
use mih_shared::partition::{self, Partitioned, Partitions, PartitionsError};
use mih_shared::{RunError, Shutdown};

use crate::consumer::{Matcher, consumer_config};

/// How often the set of EVENTS partitions is looked up again.
const CHECK: Duration = Duration::from_secs(30);
/// How soon after consumers could not be started the set is looked up again (a stream
/// deleted between the lookup and the start is then left out).
const RETRY: Duration = Duration::from_secs(1);

/// What the consumers read with.
pub(crate) struct Reading {
    pub js: jetstream::Context,
    pub names: Names,
    pub configured: Partitions,
    pub max_in_flight: usize,
    pub ack_wait: Duration,
}

/// The pull loops of one set of partitions.
struct Running {
    partitions: Vec<u16>,
    stop: Shutdown,
    loops: JoinSet<()>,
}

impl Running {
    async fn stop(mut self) {
        self.stop.trigger();
        while self.loops.join_next().await.is_some() {}
    }
}

/// Starts a consumer on every partition (an error if the first set cannot be read), then
/// follows the set until shutdown; the events in hand are finished first.
pub(crate) async fn consume(
    matcher: Arc<Matcher>,
    reading: Reading,
    shutdown: Shutdown,
    started: impl FnOnce(),
) -> Result<(), RunError> {
    let streams = find(&reading).await.map_err(|e| RunError::Open {
        what: format!("the partitions of {}", reading.names.events_stream()),
        cause: e.into(),
    })?;
    let mut running = Some(start(&matcher, &reading, streams, &shutdown).await?);
    started();
    let mut wait = CHECK;
    loop {
        tokio::select! {
            () = shutdown.triggered() => break,
            () = tokio::time::sleep(wait) => {}
        }
        wait = CHECK;
        let streams = match find(&reading).await {
            Ok(streams) => streams,
            Err(error) => {
                tracing::warn!(%error, "cannot read the partitions of EVENTS; trying again later");
                continue;
            }
        };
        let numbers: Vec<u16> = streams.iter().map(|(p, _)| *p).collect();
        if running.as_ref().is_some_and(|r| r.partitions == numbers) {
            continue;
        }
        if let Some(previous) = running.take() {
            tracing::info!(from = ?previous.partitions, to = ?numbers, "the partitions of EVENTS changed; restarting the consumers");
            previous.stop().await;
        }
        match start(&matcher, &reading, streams, &shutdown).await {
            Ok(loops) => running = Some(loops),
            Err(error) => {
                // Looked up again, not retried as they were: one of them may be gone for good.
                tracing::warn!(%error, "cannot start the EVENTS consumers; looking at the partitions again");
                wait = RETRY;
            }
        }
    }
    if let Some(running) = running {
        running.stop().await;
    }
    Ok(())
}

async fn find(reading: &Reading) -> Result<Vec<(u16, Stream)>, PartitionsError> {
    let streams = partition::streams(
        &reading.js,
        &reading.names,
        Partitioned::Events,
        reading.configured,
    )
    .await?;
    if streams.len() > usize::from(reading.configured.count()) {
        tracing::warn!(
            configured = reading.configured.count(),
            in_use = streams.len(),
            "more EVENTS partitions exist than streams.event_partitions: their events are still matched; delete a partition's stream once its consumer has nothing pending"
        );
    }
    Ok(streams)
}

/// A pull loop per partition, `max_in_flight` shared out among them.
async fn start(
    matcher: &Arc<Matcher>,
    reading: &Reading,
    streams: Vec<(u16, Stream)>,
    shutdown: &Shutdown,
) -> Result<Running, RunError> {
    let stop = shutdown.child();
    let count = streams.len();
    let mut partitions = Vec::with_capacity(count);
    let mut consumers = Vec::with_capacity(count);
    for (index, (number, stream)) in streams.into_iter().enumerate() {
        let share = partition::share(reading.max_in_flight, count, index);
        let consumer = stream
            .create_consumer(consumer_config(share, reading.ack_wait))
            .await
            .map_err(|e| RunError::Consumer {
                consumer: MATCHER_CONSUMER.to_owned(),
                stream: reading.names.events_partition_stream(number),
                cause: e.into(),
            })?;
        partitions.push(number);
        consumers.push((consumer, share));
    }
    let mut loops = JoinSet::new();
    for (consumer, share) in consumers {
        loops.spawn(Arc::clone(matcher).run(consumer, share, stop.clone()));
    }
    Ok(Running {
        partitions,
        stop,
        loops,
    })
}
