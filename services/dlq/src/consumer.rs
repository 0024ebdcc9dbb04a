//! The two durable pull consumers of the dlq service, shared by every replica:
//! `dlq` on `<NS>_DLQ` stores each dead letter, `dlq-replays` on the replay outcomes of
//! `<NS>_RESULTS` (their own subjects) removes the dead letters whose replay was delivered. A
//! message is acknowledged only after PostgreSQL committed its effect; a database outage hands
//! it back with a growing delay, and a message the database refuses (or that cannot be read)
//! is parked after a few tries ([`mih_shared::parking`]) so it never holds up the others.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::pull};
use futures::StreamExt;
use metrics::counter;
use sqlx::PgPool;

use mih_shared::messages::{self, DeadLetter, Outcome};
use mih_shared::{Shutdown, parking};

use crate::metrics as m;
use crate::store as projection;

/// The durable consumer on DLQ.
pub const DEAD_LETTERS: &str = "dlq";
/// The durable consumer on RESULTS.
pub const REPLAYS: &str = "dlq-replays";

const MAX_IN_FLIGHT: usize = 64;
const ACK_WAIT: Duration = Duration::from_secs(60);
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

    fn consumer(self) -> &'static str {
        match self {
            Kind::DeadLetters => DEAD_LETTERS,
            Kind::Replays => REPLAYS,
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
    /// Keep it aside with why, and acknowledge it.
    Park(String),
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
            Done::Park(error) => {
                match parking::park(&self.db, self.kind.consumer(), &message, &error).await {
                    Ok(()) => AckKind::Ack,
                    Err(park_error) => {
                        tracing::warn!(error = %park_error, "cannot park a message yet; retrying it");
                        AckKind::Nak(Some(parking::retry_delay(parking::delivered(&message))))
                    }
                }
            }
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
                tracing::warn!(%error, job_id = %dead.job.id, "cannot store a dead letter");
                after_failure(&error, message)
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
                tracing::warn!(%error, job_id = %outcome.job_id, "cannot resolve a dead letter");
                after_failure(&error, message)
            }
        }
    }
}

fn unreadable(kind: Kind, message: &jetstream::Message, error: &serde_json::Error) -> Done {
    counter!(m::UNREADABLE, "stream" => kind.label()).increment(1);
    tracing::error!(%error, subject = %message.subject, stream = kind.label(), "message is not readable");
    Done::Park(format!("not readable: {error}"))
}

/// The poison policy: retried while the database is away, parked once it refused the message
/// a few times.
fn after_failure(error: &sqlx::Error, message: &jetstream::Message) -> Done {
    match parking::after(parking::Failure::of(error), parking::delivered(message)) {
        parking::Next::Retry(delay) => Done::Retry(delay),
        parking::Next::Park => Done::Park(error.to_string()),
    }
}
