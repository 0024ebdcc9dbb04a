//! The two durable pull consumers of the dlq service, shared by every replica:
//! `dlq` on `<NS>_DLQ` stores each dead letter, `dlq-replays` on the replay outcomes of
//! `<NS>_RESULTS` (their own subjects) removes the dead letters whose replay was delivered. A
//! message is acknowledged only after PostgreSQL committed its effect; a database outage hands
//! it back with a growing delay, and a message the database refuses (or that cannot be read)
//! is parked after a few tries ([`mih_shared::parking`]) so it never holds up the others.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull};
use metrics::counter;
use sqlx::PgPool;

use mih_shared::consumer::{DeadLetters, Handler, Settings, Settled};
use mih_shared::error::Disposition;
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

#[derive(Debug)]
pub struct Projector {
    pub db: PgPool,
    pub kind: Kind,
    /// `nats.ack_linger`.
    pub ack_linger: Duration,
}

impl Projector {
    /// Processes messages until shutdown; the messages in hand are finished first.
    pub async fn run(
        self: Arc<Self>,
        consumer: jetstream::consumer::Consumer<pull::Config>,
        shutdown: Shutdown,
    ) {
        let park = DeadLetters::Park {
            db: self.db.clone(),
            consumer: self.kind.consumer().to_owned(),
        };
        let settings =
            Settings::new(self.kind.consumer(), MAX_IN_FLIGHT, park).ack_linger(self.ack_linger);
        mih_shared::consumer::run(consumer, settings, self, shutdown).await;
    }

    async fn store(&self, message: &jetstream::Message) -> Disposition {
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
                Disposition::Ack
            }
            Ok(false) => {
                counter!(m::DUPLICATES).increment(1);
                Disposition::Ack
            }
            Err(error) => {
                tracing::warn!(%error, job_id = %dead.job.id, "cannot store a dead letter");
                parking::disposition(&error)
            }
        }
    }

    /// Resolves the dead letters whose replays a RESULTS message reports delivered (one
    /// outcome, or a batch of them).
    async fn resolve(&self, message: &jetstream::Message) -> Disposition {
        let outcomes = match messages::decode_outcomes(&message.payload) {
            Ok(outcomes) => outcomes,
            Err(error) => return unreadable(self.kind, message, &error),
        };
        for outcome in outcomes
            .iter()
            .filter(|outcome| outcome.replay_of.is_some())
        {
            // The first failure settles the message; the outcomes resolved before it are
            // found resolved when it comes again.
            let disposition = self.resolve_one(outcome).await;
            if !matches!(disposition, Disposition::Ack) {
                return disposition;
            }
        }
        Disposition::Ack
    }

    async fn resolve_one(&self, outcome: &Outcome) -> Disposition {
        match projection::resolve(&self.db, outcome).await {
            Ok(true) => {
                counter!(m::RESOLVED, "service" => outcome.service.to_string()).increment(1);
                tracing::info!(
                    job_id = %outcome.job_id,
                    replay_of = ?outcome.replay_of.map(|r| r.to_string()),
                    "replay delivered; dead letter resolved"
                );
                Disposition::Ack
            }
            Ok(false) => Disposition::Ack,
            Err(error) => {
                tracing::warn!(%error, job_id = %outcome.job_id, "cannot resolve a dead letter");
                parking::disposition(&error)
            }
        }
    }
}

impl Handler for Projector {
    async fn handle(&self, message: &jetstream::Message) -> Disposition {
        match self.kind {
            Kind::DeadLetters => self.store(message).await,
            Kind::Replays => self.resolve(message).await,
        }
    }

    fn settled(&self, _message: &jetstream::Message, settled: Settled) {
        if settled == Settled::Retried {
            counter!(m::RETRIES, "stream" => self.kind.label()).increment(1);
        }
    }
}

fn unreadable(kind: Kind, message: &jetstream::Message, error: &serde_json::Error) -> Disposition {
    counter!(m::UNREADABLE, "stream" => kind.label()).increment(1);
    tracing::error!(%error, subject = %message.subject, stream = kind.label(), "message is not readable");
    Disposition::DeadLetter {
        reason: format!("not readable: {error}"),
    }
}
