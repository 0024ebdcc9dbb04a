//! The one pull loop of every JetStream consumer in mih (the matcher, the dlq projections, the
//! recorder, the dispatcher's workers).
//!
//! The loop pulls from a durable pull consumer, hands each message (or each batch, for
//! [`run_batches`]) to a handler, and does what the handler's [`Disposition`] says: ack, `nak`
//! with a delay, or give the message up — terminate it or park it, as the consumer's
//! [`DeadLetters`] policy says. At most `max_in_flight` messages (batches) are being handled at
//! once; the loop stops pulling while that many are, so a slow handler is never buried under
//! messages whose ack wait runs out. On shutdown it stops pulling, lets the handlers it started
//! finish and settle their messages, and returns; messages pulled but not started are left
//! unacknowledged and come again after their ack wait.
//!
//! A handler never acks itself: the loop settles every message exactly once, after the handler
//! returned, so "ack only after the effect is stored" holds by construction.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use futures::{FutureExt, Stream, StreamExt};
use sqlx::PgPool;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::Shutdown;
use crate::error::Disposition;
use crate::parking;

mod acks;

use acks::Acks;

/// Deliveries of a message its handler keeps refusing ([`Disposition::Refused`]) before it is
/// given up on: a refusal can come from a passing state (a row another transaction was
/// changing), rarely twice in a row.
pub const GIVE_UP_AFTER: u64 = 5;
const FIRST_RETRY: Duration = Duration::from_millis(500);
const MAX_RETRY: Duration = Duration::from_secs(30);
/// Pause before pulling again after the consumer could not be read.
const RESUBSCRIBE_DELAY: Duration = Duration::from_secs(1);

/// A pull request stands for this long before it is renewed.
const PULL_EXPIRES: Duration = Duration::from_secs(20);
/// The server says "nothing for you" this often while a pull stands; two missed in a row and
/// the request is issued again. When the node leading a consumer dies (a NATS cluster losing
/// one node), the standing request dies with it and only this notices. async-nats' default
/// (15 s, so 30 s to notice) could leave a consumer idle long after the cluster elected a new
/// leader, which takes 4–9 s (JetStream's Raft election timeout); 2 s notices within that.
const IDLE_HEARTBEAT: Duration = Duration::from_secs(2);

/// How long a message handed back without a delay of its own waits before it comes again:
/// 0.5 s doubling per delivery, at most 30 s.
pub fn retry_delay(delivered: u64) -> Duration {
    let exponent = u32::try_from(delivered.clamp(1, 7) - 1).unwrap_or(0);
    (FIRST_RETRY * 2u32.pow(exponent)).min(MAX_RETRY)
}

/// How many times JetStream has delivered `message` (1 the first time).
pub fn delivered(message: &jetstream::Message) -> u64 {
    message
        .info()
        .map(|info| u64::try_from(info.delivered).unwrap_or(1))
        .unwrap_or(1)
}

/// What happens to a message given up on ([`Disposition::DeadLetter`], or
/// [`Disposition::Refused`] once too often).
#[derive(Debug, Clone)]
pub enum DeadLetters {
    /// Tell JetStream never to deliver it again (`term`): for messages nobody can use, such as
    /// an event or a job that cannot be read.
    Terminate,
    /// Keep it in `parked_messages` with why, under `consumer`, then acknowledge it: the
    /// projections' poison policy ([`crate::parking`]). A message that cannot be parked yet
    /// (the database is away) is handed back and parked when it comes again.
    Park { db: PgPool, consumer: String },
}

/// How a consumer loop runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Names the consumer in log lines.
    pub name: String,
    /// Most messages ([`run`]) or batches ([`run_batches`]) handled at once.
    pub max_in_flight: usize,
    /// Most messages one pull request asks for.
    pub pull_batch: usize,
    /// Most bytes one pull request asks for; `None`: bounded by the message count only. Must
    /// exceed the largest message (the server's max_payload), or that message never comes.
    pub pull_bytes: Option<usize>,
    /// Pull request expiry and idle heartbeat; `None` keeps async-nats' defaults (30 s, 15 s).
    pub expires: Option<Duration>,
    pub heartbeat: Option<Duration>,
    /// The delivery at which a message still [`Disposition::Refused`] is given up on.
    pub give_up_after: u64,
    pub dead_letters: DeadLetters,
    /// How long an acknowledgement waits for others to leave with (see [`acks`]); zero sends
    /// each at once.
    pub ack_linger: Duration,
    /// [`run_batches`] only: how long a batch that has its first message waits for more
    /// before it goes to the handler; zero takes only what is ready at once.
    pub batch_linger: Duration,
}

impl Settings {
    pub fn new(name: impl Into<String>, max_in_flight: usize, dead_letters: DeadLetters) -> Self {
        let max_in_flight = max_in_flight.max(1);
        Settings {
            name: name.into(),
            max_in_flight,
            pull_batch: max_in_flight,
            pull_bytes: None,
            expires: Some(PULL_EXPIRES),
            heartbeat: Some(IDLE_HEARTBEAT),
            give_up_after: GIVE_UP_AFTER,
            dead_letters,
            ack_linger: Duration::ZERO,
            batch_linger: Duration::ZERO,
        }
    }

    pub fn batch_linger(mut self, linger: Duration) -> Self {
        self.batch_linger = linger;
        self
    }

    pub fn ack_linger(mut self, linger: Duration) -> Self {
        self.ack_linger = linger;
        self
    }

    pub fn pull_batch(mut self, messages: usize) -> Self {
        self.pull_batch = messages.max(1);
        self
    }

    pub fn pull_bytes(mut self, bytes: usize) -> Self {
        self.pull_bytes = Some(bytes.max(1));
        self
    }

    pub fn expires(mut self, expires: Duration, heartbeat: Duration) -> Self {
        self.expires = Some(expires);
        self.heartbeat = Some(heartbeat);
        self
    }

    pub fn give_up_after(mut self, deliveries: u64) -> Self {
        self.give_up_after = deliveries.max(1);
        self
    }
}

/// What the loop did with a message, for the handler's metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    Acked,
    /// Handed back to come again later.
    Retried,
    /// Refused once too often, then dead-lettered.
    GaveUp,
    /// Dead-lettered as the handler asked.
    DeadLettered,
}

/// Handles one message at a time (several at once, up to the loop's `max_in_flight`).
pub trait Handler: Send + Sync + 'static {
    /// What to do with `message`. Must not acknowledge it: the loop does, after this returns.
    fn handle(&self, message: &jetstream::Message) -> impl Future<Output = Disposition> + Send;

    /// Waits until another message may start (a rate limit), with an in-flight slot held.
    fn ready(&self) -> impl Future<Output = ()> + Send {
        std::future::ready(())
    }

    /// Told of each message as it gets its slot, in the order the consumer delivered them
    /// (handlers start concurrently, so `handle` may begin in another order).
    fn received(&self, _message: &jetstream::Message) {}

    /// Told what became of each message, once it is settled (its acknowledgement may still be
    /// waiting to leave, see `nats.ack_linger`).
    fn settled(&self, _message: &jetstream::Message, _settled: Settled) {}
}

/// Handles the messages that are ready together as one batch (one transaction, say).
pub trait BatchHandler: Send + Sync + 'static {
    /// One disposition per message, in the same order. A message left without one is handed
    /// back.
    fn handle(
        &self,
        messages: &[jetstream::Message],
    ) -> impl Future<Output = Vec<Disposition>> + Send;

    /// Told what became of each message, once it is settled (its acknowledgement may still be
    /// waiting to leave, see `nats.ack_linger`).
    fn settled(&self, _message: &jetstream::Message, _settled: Settled) {}
}

/// Runs `handler` on the consumer's messages until `shutdown`; returns once the messages being
/// handled are settled.
/// Opens (creates or updates) the durable pull consumer `config` on `stream`, trying again
/// every `retry` while NATS or the stream is not there yet; `None` on shutdown.
pub async fn open_durable(
    js: &jetstream::Context,
    stream: &str,
    config: jetstream::consumer::pull::Config,
    retry: Duration,
    shutdown: &Shutdown,
) -> Option<PullConsumer> {
    let name = config.durable_name.clone().unwrap_or_default();
    loop {
        let created = match js.get_stream(stream).await {
            Ok(stream) => stream
                .create_consumer(config.clone())
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match created {
            Ok(consumer) => return Some(consumer),
            Err(error) => {
                tracing::warn!(%error, consumer = %name, "cannot open the consumer yet; retrying");
                tokio::select! {
                    () = shutdown.triggered() => return None,
                    () = tokio::time::sleep(retry) => {}
                }
            }
        }
    }
}

pub async fn run<H: Handler>(
    consumer: PullConsumer,
    settings: Settings,
    handler: Arc<H>,
    shutdown: Shutdown,
) {
    let settings = Arc::new(settings);
    let mut in_flight = InFlight::new(&settings, settings.max_in_flight);
    while let Some(messages) = subscribe(&consumer, &settings, &shutdown).await {
        let mut messages = pin!(messages.take_until(shutdown.triggered_owned()));
        while let Some(message) = messages.next().await {
            let message = match pulled(message, &settings) {
                Pulled::Message(message) => *message,
                Pulled::Nothing => continue,
                Pulled::RequestLost => break,
            };
            let Some(slot) = in_flight.slot(&shutdown).await else {
                break;
            };
            handler.ready().await;
            handler.received(&message);
            let (handler, shared) = (Arc::clone(&handler), Arc::clone(&settings));
            let acks = Arc::clone(&in_flight.acks);
            in_flight.spawn(async move {
                let disposition = handler.handle(&message).await;
                let (kind, settled) = settle(&shared, &message, disposition).await;
                handler.settled(&message, settled);
                acks.send(&shared.name, message, kind, Some(slot)).await;
            });
        }
    }
    in_flight.drain().await;
}

/// Like [`run`], for batches: whatever the pull has ready at once, up to `max_batch` messages,
/// goes to `handler` together (a lone message at once, a backlog in full batches), at most
/// `max_in_flight` batches at a time.
pub async fn run_batches<H: BatchHandler>(
    consumer: PullConsumer,
    settings: Settings,
    max_batch: usize,
    handler: Arc<H>,
    shutdown: Shutdown,
) {
    let settings = Arc::new(settings);
    let max_batch = max_batch.max(1);
    let mut in_flight = InFlight::new(&settings, settings.max_in_flight * max_batch);
    while let Some(messages) = subscribe(&consumer, &settings, &shutdown).await {
        let messages = messages
            .take_until(shutdown.triggered_owned())
            .map(|message| pulled(message, &settings))
            .take_while(|pulled| std::future::ready(!matches!(pulled, Pulled::RequestLost)))
            .filter_map(|pulled| {
                std::future::ready(match pulled {
                    Pulled::Message(message) => Some(*message),
                    Pulled::Nothing | Pulled::RequestLost => None,
                })
            });
        let mut batches = pin!(ready_batches(
            Box::pin(messages),
            max_batch,
            settings.batch_linger
        ));
        while let Some(batch) = batches.next().await {
            let Some(slot) = in_flight.slot(&shutdown).await else {
                break;
            };
            let (handler, shared) = (Arc::clone(&handler), Arc::clone(&settings));
            let acks = Arc::clone(&in_flight.acks);
            in_flight.spawn(async move {
                let mut dispositions = handler.handle(&batch).await.into_iter();
                for message in batch {
                    let disposition = dispositions
                        .next()
                        .unwrap_or(Disposition::Retry { after: None });
                    let (kind, settled) = settle(&shared, &message, disposition).await;
                    handler.settled(&message, settled);
                    acks.send(&shared.name, message, kind, None).await;
                }
                // A batch's slot is free once its acknowledgements are on their way: a
                // batch consumer's `max_ack_pending` leaves room for those that wait.
                drop(slot);
            });
        }
    }
    in_flight.drain().await;
}

/// A fresh pull subscription, retried until it opens; `None` on shutdown.
async fn subscribe(
    consumer: &PullConsumer,
    settings: &Settings,
    shutdown: &Shutdown,
) -> Option<jetstream::consumer::pull::Stream> {
    while !shutdown.is_triggered() {
        let mut pull = consumer
            .stream()
            .max_messages_per_batch(settings.pull_batch);
        if let Some(bytes) = settings.pull_bytes {
            pull = pull.max_bytes_per_batch(bytes);
        }
        if let Some(heartbeat) = settings.heartbeat {
            pull = pull.heartbeat(heartbeat);
        }
        if let Some(expires) = settings.expires {
            pull = pull.expires(expires);
        }
        match pull.messages().await {
            Ok(messages) => return Some(messages),
            Err(error) => {
                tracing::warn!(%error, consumer = %settings.name, "cannot pull messages yet");
                tokio::select! {
                    () = shutdown.triggered() => return None,
                    () = tokio::time::sleep(RESUBSCRIBE_DELAY) => {}
                }
            }
        }
    }
    None
}

/// What one item of a pull subscription means for the loop.
enum Pulled {
    // Boxed: a message is ~400 bytes and the other variants none.
    Message(Box<jetstream::Message>),
    /// An error the subscription goes on after.
    Nothing,
    /// The standing pull request is gone: a fresh subscription must issue another.
    RequestLost,
}

fn pulled(
    message: Result<jetstream::Message, jetstream::consumer::pull::MessagesError>,
    settings: &Settings,
) -> Pulled {
    use jetstream::consumer::pull::MessagesErrorKind;
    match message {
        Ok(message) => Pulled::Message(Box::new(message)),
        // The server sends heartbeats for as long as it holds the request; none means it no
        // longer does (its node died, or it dropped it). async-nats only reports this and
        // issues the next request when the old one's expiry has passed (`expires` + 5 s, 25 s
        // here), so without a new subscription the consumer would sit idle that long.
        Err(error) if error.kind() == MessagesErrorKind::MissingHeartbeat => {
            tracing::warn!(consumer = %settings.name, "no heartbeat for the standing pull request; issuing a new one");
            Pulled::RequestLost
        }
        Err(error) => {
            tracing::warn!(%error, consumer = %settings.name, "pulling messages failed");
            Pulled::Nothing
        }
    }
}

/// The handlers running now: at most `max_in_flight`, each holding a slot until its
/// messages' acknowledgements have left.
struct InFlight {
    settings: Arc<Settings>,
    slots: Arc<Semaphore>,
    tasks: JoinSet<()>,
    acks: Arc<Acks>,
}

impl InFlight {
    /// `messages`: the most messages held at once, which decides how many acknowledgements
    /// may wait together.
    fn new(settings: &Arc<Settings>, messages: usize) -> Self {
        InFlight {
            settings: Arc::clone(settings),
            slots: Arc::new(Semaphore::new(settings.max_in_flight)),
            tasks: JoinSet::new(),
            acks: Arc::new(Acks::new(settings.ack_linger, messages, &settings.name)),
        }
    }

    /// A slot, waiting for one to free up; `None` when shutdown comes first (the pulled
    /// message is then left to its ack wait).
    async fn slot(&self, shutdown: &Shutdown) -> Option<OwnedSemaphorePermit> {
        tokio::select! {
            biased;
            () = shutdown.triggered() => None,
            permit = Arc::clone(&self.slots).acquire_owned() => permit.ok(),
        }
    }

    /// Runs `work` (which frees its slot), and forgets the handlers that have finished, so the
    /// set does not grow with every message.
    fn spawn(&mut self, work: impl Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(work);
        while let Some(finished) = self.tasks.try_join_next() {
            report_panic(finished, &self.settings);
        }
    }

    /// Waits for every running handler, and for their acknowledgements to leave.
    async fn drain(mut self) {
        while let Some(finished) = self.tasks.join_next().await {
            report_panic(finished, &self.settings);
        }
        self.acks.close().await;
    }
}

fn report_panic(finished: Result<(), tokio::task::JoinError>, settings: &Settings) {
    if let Err(error) = finished {
        // The message is not settled: JetStream delivers it again after its ack wait.
        tracing::error!(%error, consumer = %settings.name, "a message handler panicked");
    }
}

/// What the loop does with a message, before it does it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Action {
    Ack,
    Nak(Option<Duration>),
    GiveUp(String),
}

/// The one place a disposition becomes an action: retries without a delay of their own take
/// [`retry_delay`], refusals turn into dead letters at the `give_up_after`th delivery.
fn decide(disposition: Disposition, delivered: u64, give_up_after: u64) -> (Action, Settled) {
    match disposition {
        Disposition::Ack => (Action::Ack, Settled::Acked),
        // Zero: at once, as a plain `nak` does.
        Disposition::Retry {
            after: Some(Duration::ZERO),
        } => (Action::Nak(None), Settled::Retried),
        Disposition::Retry { after } => (
            Action::Nak(Some(after.unwrap_or_else(|| retry_delay(delivered)))),
            Settled::Retried,
        ),
        Disposition::Refused { reason } if delivered >= give_up_after => {
            (Action::GiveUp(reason), Settled::GaveUp)
        }
        Disposition::Refused { .. } => {
            (Action::Nak(Some(retry_delay(delivered))), Settled::Retried)
        }
        Disposition::DeadLetter { reason } => (Action::GiveUp(reason), Settled::DeadLettered),
    }
}

/// What to tell JetStream of `message`, having done what giving it up takes.
async fn settle(
    settings: &Settings,
    message: &jetstream::Message,
    disposition: Disposition,
) -> (AckKind, Settled) {
    let delivered = delivered(message);
    let (action, settled) = decide(disposition, delivered, settings.give_up_after);
    let kind = match action {
        Action::Ack => AckKind::Ack,
        Action::Nak(delay) => AckKind::Nak(delay),
        Action::GiveUp(reason) => give_up(settings, message, delivered, &reason).await,
    };
    (kind, settled)
}

async fn give_up(
    settings: &Settings,
    message: &jetstream::Message,
    delivered: u64,
    reason: &str,
) -> AckKind {
    match &settings.dead_letters {
        DeadLetters::Terminate => {
            tracing::debug!(consumer = %settings.name, subject = %message.subject, delivered,
                %reason, "message terminated");
            AckKind::Term
        }
        DeadLetters::Park { db, consumer } => {
            match parking::park(db, consumer, message, reason).await {
                Ok(()) => AckKind::Ack,
                Err(error) => {
                    tracing::warn!(%error, consumer = %settings.name,
                        "cannot park a message yet; retrying it");
                    AckKind::Nak(Some(retry_delay(delivered)))
                }
            }
        }
    }
}

/// Groups a stream into what is ready at once, up to `max`; with a `linger`, a batch also takes
/// what comes within it of the batch's first item (a full batch leaves at once). (`ready_chunks` would do, but it
/// allocates room for `max` items for every chunk, which at low rates means a large allocation
/// per message.)
fn ready_batches<S>(stream: S, max: usize, linger: Duration) -> impl Stream<Item = Vec<S::Item>>
where
    S: Stream + Unpin,
{
    futures::stream::unfold(stream, move |mut stream| async move {
        let first = stream.next().await?;
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + linger;
        while batch.len() < max {
            let next = match stream.next().now_or_never() {
                Some(next) => next,
                None if linger.is_zero() => break,
                None => match tokio::time::timeout_at(deadline, stream.next()).await {
                    Ok(next) => next,
                    Err(_) => break,
                },
            };
            match next {
                Some(item) => batch.push(item),
                None => break,
            }
        }
        Some((batch, stream))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_messages_are_given_up_at_the_fifth_delivery_and_retries_never() {
        let refused = || Disposition::Refused {
            reason: "bad row".into(),
        };
        assert_eq!(
            decide(refused(), 1, GIVE_UP_AFTER),
            (
                Action::Nak(Some(Duration::from_millis(500))),
                Settled::Retried
            )
        );
        assert_eq!(
            decide(refused(), GIVE_UP_AFTER - 1, GIVE_UP_AFTER),
            (Action::Nak(Some(Duration::from_secs(4))), Settled::Retried)
        );
        assert_eq!(
            decide(refused(), GIVE_UP_AFTER, GIVE_UP_AFTER),
            (Action::GiveUp("bad row".into()), Settled::GaveUp)
        );
        assert_eq!(
            decide(Disposition::Retry { after: None }, 10_000, GIVE_UP_AFTER),
            (Action::Nak(Some(MAX_RETRY)), Settled::Retried)
        );
        assert_eq!(
            decide(
                Disposition::Retry {
                    after: Some(Duration::ZERO)
                },
                3,
                GIVE_UP_AFTER
            ),
            (Action::Nak(None), Settled::Retried)
        );
        assert_eq!(
            decide(
                Disposition::DeadLetter {
                    reason: "unreadable".into()
                },
                1,
                GIVE_UP_AFTER
            ),
            (Action::GiveUp("unreadable".into()), Settled::DeadLettered)
        );
    }

    #[test]
    fn the_retry_delay_doubles_from_half_a_second_to_thirty() {
        let delays: Vec<Duration> = (0..=9).map(retry_delay).collect();
        let ms = |n| Duration::from_millis(n);
        assert_eq!(
            delays,
            [
                ms(500),
                ms(500),
                ms(1000),
                ms(2000),
                ms(4000),
                ms(8000),
                ms(16000),
                ms(30000),
                ms(30000),
                ms(30000)
            ]
        );
    }

    #[tokio::test]
    async fn batches_take_what_is_ready_up_to_the_limit() {
        let ready = futures::stream::iter(1..=7);
        let got: Vec<Vec<i32>> = ready_batches(ready, 3, Duration::ZERO).collect().await;
        assert_eq!(got, vec![vec![1, 2, 3], vec![4, 5, 6], vec![7]]);

        // An item that is not ready yet ends the batch instead of being waited for.
        let (tx, rx) = futures::channel::mpsc::unbounded();
        tx.unbounded_send(1).expect("open");
        tx.unbounded_send(2).expect("open");
        let mut grouped = Box::pin(ready_batches(rx, 10, Duration::ZERO));
        assert_eq!(grouped.next().await, Some(vec![1, 2]));
        tx.unbounded_send(3).expect("open");
        drop(tx);
        assert_eq!(grouped.next().await, Some(vec![3]));
        assert_eq!(grouped.next().await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lingering_batch_takes_what_comes_within_the_linger_and_no_more() {
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let linger = Duration::from_millis(20);
        let mut grouped = Box::pin(ready_batches(rx, 3, linger));
        let sender = tokio::spawn(async move {
            for (item, after_ms) in [(1, 0), (2, 5), (3, 5), (4, 0), (5, 30), (6, 0)] {
                tokio::time::sleep(Duration::from_millis(after_ms)).await;
                tx.unbounded_send(item).expect("open");
            }
            // The stream ends while a batch waits: it goes with what it has.
            tokio::time::sleep(Duration::from_millis(5)).await;
        });
        let started = tokio::time::Instant::now();
        // Full before the linger ran out: it leaves at once with the third.
        assert_eq!(grouped.next().await, Some(vec![1, 2, 3]));
        assert_eq!(started.elapsed(), Duration::from_millis(10));
        // 4 waits the whole linger; 5 comes after it, for the next batch.
        assert_eq!(grouped.next().await, Some(vec![4]));
        assert_eq!(started.elapsed(), Duration::from_millis(30));
        assert_eq!(grouped.next().await, Some(vec![5, 6]));
        assert_eq!(started.elapsed(), Duration::from_millis(45));
        sender.await.expect("sender");
        assert_eq!(grouped.next().await, None);
    }
}
