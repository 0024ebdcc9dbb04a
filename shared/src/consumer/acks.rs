//! Acknowledgements sent together (`nats.ack_linger`).
//!
//! At a moderate rate every message is settled on its own, so each acknowledgement is its own
//! write to the NATS connection and its own wake-up of nats-server's reader for that client:
//! one per consumer hop of every event. An acknowledgement is not on anyone's critical path
//! (the effect is stored before it is sent, and JetStream does not confirm it), so it can wait
//! a few milliseconds for others and leave with them in one write.
//!
//! A consumer's `max_ack_pending` counts a message until the server has its ack. Where the
//! loop's slots mirror that bound (one message per slot), a message's slot stays taken until
//! its acknowledgement has left; batch loops, whose consumers leave room above their slots,
//! free a batch's slot at once. So that waiting acknowledgements never hold back a busy
//! consumer, they leave as soon as an eighth of the messages the loop may hold are waiting;
//! a loop that holds fewer than [`MIN_TO_LINGER`] (a service of low concurrency)
//! acknowledges at once.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio::task::JoinHandle;

/// Below this many messages held at once, a lingering ack would hold back a noticeable share
/// of them.
const MIN_TO_LINGER: usize = 16;

/// One acknowledgement waiting to leave, with the slot its message held.
struct Waiting {
    message: jetstream::Message,
    kind: AckKind,
    _slot: Option<OwnedSemaphorePermit>,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<Waiting>,
    closed: bool,
}

pub(super) struct Shared {
    queue: Mutex<Queue>,
    /// Woken by the first acknowledgement after a send, by the one that fills a batch, and on
    /// close; the others wait without waking anyone.
    wake: Notify,
    flush_at: usize,
}

impl Shared {
    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Where a consumer loop's acknowledgements go.
pub(super) enum Acks {
    /// Each sent by the handler that settled it.
    AtOnce,
    Together {
        shared: Arc<Shared>,
        sender: Mutex<Option<JoinHandle<()>>>,
    },
}

impl Acks {
    /// Acknowledgements for a loop that holds up to `messages` at once, waiting up to `linger`
    /// for company.
    pub(super) fn new(linger: Duration, messages: usize, consumer: &str) -> Self {
        if linger.is_zero() || messages < MIN_TO_LINGER {
            return Acks::AtOnce;
        }
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
            flush_at: messages / 8,
        });
        let sender = tokio::spawn(send(Arc::clone(&shared), linger, consumer.to_owned()));
        Acks::Together {
            shared,
            sender: Mutex::new(Some(sender)),
        }
    }

    /// Sends `kind` for `message`, now or with the next batch; `slot` is freed once it left.
    pub(super) async fn send(
        &self,
        consumer: &str,
        message: jetstream::Message,
        kind: AckKind,
        slot: Option<OwnedSemaphorePermit>,
    ) {
        match self {
            Acks::AtOnce => {
                ack(consumer, &message, kind).await;
                drop(slot);
            }
            Acks::Together { shared, .. } => {
                let waiting = Waiting {
                    message,
                    kind,
                    _slot: slot,
                };
                let queued = {
                    let mut queue = shared.queue();
                    if queue.closed {
                        Err(waiting)
                    } else {
                        queue.waiting.push(waiting);
                        Ok(queue.waiting.len())
                    }
                };
                match queued {
                    Ok(waiting) if waiting == 1 || waiting == shared.flush_at => {
                        shared.wake.notify_one();
                    }
                    Ok(_) => {}
                    Err(late) => ack(consumer, &late.message, late.kind).await,
                }
            }
        }
    }

    /// Sends what waits and stops; returns once it has left.
    pub(super) async fn close(&self) {
        if let Acks::Together { shared, sender } = self {
            shared.queue().closed = true;
            shared.wake.notify_one();
            let sender = sender.lock().unwrap_or_else(PoisonError::into_inner).take();
            if let Some(sender) = sender
                && let Err(error) = sender.await
            {
                tracing::error!(%error, "the acknowledgement sender panicked");
            }
        }
    }
}

async fn send(shared: Arc<Shared>, linger: Duration, consumer: String) {
    loop {
        shared.wake.notified().await;
        let deadline = tokio::time::Instant::now() + linger;
        loop {
            {
                let queue = shared.queue();
                if queue.closed || queue.waiting.len() >= shared.flush_at {
                    break;
                }
            }
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => break,
                () = shared.wake.notified() => {}
            }
        }
        let (batch, closed) = {
            let mut queue = shared.queue();
            (std::mem::take(&mut queue.waiting), queue.closed)
        };
        for waiting in &batch {
            ack(&consumer, &waiting.message, waiting.kind).await;
        }
        // The slots are freed only now, after their acknowledgements left.
        drop(batch);
        if closed {
            return;
        }
    }
}

async fn ack(consumer: &str, message: &jetstream::Message, kind: AckKind) {
    if let Err(error) = message.ack_with(kind).await {
        // JetStream delivers it again after the ack wait; every handler is idempotent.
        tracing::warn!(%error, consumer, "could not acknowledge a message");
    }
}
