//! The two durable pull consumers of the dlq service, shared by every replica:
//! `dlq` on `<NS>_DLQ` stores each dead letter, `dlq-replays` on the replay outcomes of
//! `<NS>_RESULTS` (their own subjects) removes the dead letters whose replay was delivered. A message is acknowledged only after PostgreSQL
//! committed its effect; a database failure hands it back with a growing delay.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::pull};
use futures::StreamExt;
use metrics::counter;
use sqlx::PgPool;

use mih_shared::Shutdown;
use mih_shared::messages::{self, DeadLetter, Outcome};

use crate::metrics as m;
use crate::store as projection;

/// The durable consumer on DLQ.
pub const DEAD_LETTERS: &str = "dlq";
/// The durable consumer on RESULTS.
pub const REPLAYS: &str = "dlq-replays";

const MAX_IN_FLIGHT: usize = 64;
const ACK_WAIT: Duration = Duration::from_secs(60);
const FIRST_RETRY: Duration = Duration::from_millis(500);
const MAX_RETRY: Duration = Duration::from_secs(30);
const RESUBSCRIBE_DELAY: Duration = Duration::from_secs(1);

/// Which stream a consumer reads, and therefore what its messages are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    DeadLetters,
    Replays,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::DeadLetters => "dlq",
            Kind::Replays => "results",
        }
    }
}

/// The consumer's declared configuration; re-applied at every start.
pub fn consumer_config(kind: Kind, filter_subject: String) -> pull::Config {
    let (name, description) = match kind {
        Kind::DeadLetters => (DEAD_LETTERS, "mih dlq: dead letters into PostgreSQL"),
        Kind::Replays => (REPLAYS, "mih dlq: delivered replays resolve dead letters"),
    };
    pull::Config {
        durable_name: Some(name.into()),
        description: Some(description.into()),
        filter_subject,
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        ack_wait: ACK_WAIT,
        max_ack_pending: i64::try_from(MAX_IN_FLIGHT).unwrap_or(i64::MAX),
        // Whatever the streams hold from before the first start is projected too.
        deliver_policy: jetstream::consumer::DeliverPolicy::All,
        max_deliver: -1,
        ..Default::default()
    }
}

enum Done {
    Ack,
    Retry(Duration),
    Terminate,
}

#[derive(Debug)]
pub struct Projector {
    pub db: PgPool,
    pub kind: Kind,
}

impl Projector {
    /// Processes messages until shutdown.
    pub async fn run(
        self: Arc<Self>,
        consumer: jetstream::consumer::Consumer<pull::Config>,
        shutdown: Shutdown,
    ) {
        while !shutdown.is_triggered() {
            let messages = match consumer
                .stream()
                .max_messages_per_batch(MAX_IN_FLIGHT)
                .messages()
                .await
            {
                Ok(messages) => messages,
                Err(error) => {
                    tracing::warn!(%error, stream = self.kind.label(), "cannot pull messages yet");
                    tokio::select! {
                        () = shutdown.triggered() => return,
                        () = tokio::time::sleep(RESUBSCRIBE_DELAY) => continue,
                    }
                }
            };
            messages
                .take_until(shutdown.triggered_owned())
                .for_each_concurrent(MAX_IN_FLIGHT, |message| {
                    let this = Arc::clone(&self);
                    async move {
                        match message {
                            Ok(message) => this.handle(message).await,
                            Err(error) => {
                                tracing::warn!(%error, stream = this.kind.label(), "pulling messages failed")
                            }
                        }
                    }
                })
                .await;
        }
    }

    async fn handle(&self, message: jetstream::Message) {
        let done = match self.kind {
            Kind::DeadLetters => self.store(&message).await,
            Kind::Replays => self.resolve(&message).await,
        };
        let kind = match done {
            Done::Ack => AckKind::Ack,
            Done::Retry(delay) => {
                counter!(m::RETRIES, "stream" => self.kind.label()).increment(1);
                AckKind::Nak(Some(delay))
            }
            Done::Terminate => AckKind::Term,
        };
        if let Err(error) = message.ack_with(kind).await {
            // Redelivered after ack_wait; storing and resolving are idempotent.
            tracing::warn!(%error, stream = self.kind.label(), "could not acknowledge a message");
        }
    }

    async fn store(&self, message: &jetstream::Message) -> Done {
        let dead: DeadLetter = match messages::decode(&message.payload) {
            Ok(dead) => dead,
            Err(error) => return unreadable(self.kind, message, &error),
        };
        match projection::store(&self.db, &dead).await {
            Ok(true) => {
                let stage = match dead.stage {
                    messages::FailureStage::Render => "render",
                    messages::FailureStage::Delivery => "delivery",
                };
                counter!(m::STORED, "service" => dead.job.service.to_string(), "stage" => stage)
                    .increment(1);
                tracing::info!(
                    job_id = %dead.job.id,
                    service = %dead.job.service,
                    replay_of = ?dead.job.replay_of.map(|r| r.to_string()),
                    reason = %dead.reason,
                    "dead letter stored"
                );
                Done::Ack
            }
            Ok(false) => {
                counter!(m::DUPLICATES).increment(1);
                Done::Ack
            }
            Err(error) => {
                tracing::warn!(%error, job_id = %dead.job.id, "cannot store a dead letter; retrying");
                Done::Retry(retry_delay(message))
            }
        }
    }

    async fn resolve(&self, message: &jetstream::Message) -> Done {
        let outcome: Outcome = match messages::decode(&message.payload) {
            Ok(outcome) => outcome,
            Err(error) => return unreadable(self.kind, message, &error),
        };
        if outcome.replay_of.is_none() {
            return Done::Ack;
        }
        match projection::resolve(&self.db, &outcome).await {
            Ok(true) => {
                counter!(m::RESOLVED, "service" => outcome.service.to_string()).increment(1);
                tracing::info!(
                    job_id = %outcome.job_id,
                    replay_of = ?outcome.replay_of.map(|r| r.to_string()),
                    "replay delivered; dead letter resolved"
                );
                Done::Ack
            }
            Ok(false) => Done::Ack,
            Err(error) => {
                tracing::warn!(%error, job_id = %outcome.job_id, "cannot resolve a dead letter; retrying");
                Done::Retry(retry_delay(message))
            }
        }
    }
}

fn unreadable(kind: Kind, message: &jetstream::Message, error: &serde_json::Error) -> Done {
    counter!(m::UNREADABLE, "stream" => kind.label()).increment(1);
    tracing::error!(%error, subject = %message.subject, stream = kind.label(), "message is not readable; dropped");
    Done::Terminate
}

/// 0.5 s doubling per delivery, at most 30 s.
fn retry_delay(message: &jetstream::Message) -> Duration {
    let delivered = message.info().map(|info| info.delivered).unwrap_or(1);
    let exponent = u32::try_from(delivered.clamp(1, 7) - 1).unwrap_or(0);
    (FIRST_RETRY * 2u32.pow(exponent)).min(MAX_RETRY)
}
