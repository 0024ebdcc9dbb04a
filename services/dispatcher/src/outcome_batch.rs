//! Outcomes leave for RESULTS in batches: the outcomes of one subject that are ready together
//! travel in one message (a JSON array; a lone outcome as itself), so JetStream stores,
//! acknowledges and redelivers one message where it would handle several.
//!
//! Batches form by group commit: while a publish waits for its acknowledgement, the outcomes
//! that arrive meanwhile gather for the next one, so an idle hub sends each outcome at once
//! and a busy one sends fewer, larger messages without waiting on a timer. An optional linger
//! (`dispatcher.outcome_linger`) waits a little longer for company. A caller learns that its
//! outcome was stored only when the whole message was, and acknowledges its job after that.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use bytes::Bytes;
use tokio::sync::{Semaphore, mpsc, oneshot};

use mih_shared::messages;

/// Outcomes waiting for a batch before senders wait in turn.
const QUEUE: usize = 4096;
/// Outcomes whose publish awaits its acknowledgement, at most (as whole batches, and at least
/// two of those): what arrives meanwhile forms the next batch. With batches of one, as many
/// publishes are in flight as the dispatcher has deliveries, as before batching.
const IN_FLIGHT_OUTCOMES: usize = 256;
/// Room left in a NATS message for its headers and the array's punctuation.
const ENVELOPE: usize = 4096;

/// How batches are cut.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchLimits {
    /// Most outcomes in one message.
    pub max_outcomes: usize,
    /// Most bytes in one message (the server's max_payload, less room for headers).
    pub max_bytes: usize,
    /// How long a batch may wait for more outcomes once it has one.
    pub linger: Duration,
}

impl BatchLimits {
    pub(crate) fn new(max_outcomes: usize, max_payload: usize, linger: Duration) -> Self {
        BatchLimits {
            max_outcomes: max_outcomes.max(1),
            max_bytes: max_payload.saturating_sub(ENVELOPE).max(1),
            linger,
        }
    }
}

/// Hands outcomes to the batching task; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct OutcomeBatcher {
    queue: mpsc::Sender<Pending>,
}

struct Pending {
    subject: String,
    encoded: Bytes,
    stored: oneshot::Sender<Result<(), String>>,
}

impl OutcomeBatcher {
    /// Starts the batching task; it ends when the last clone of the batcher is dropped, after
    /// publishing what it holds.
    pub(crate) fn start(js: jetstream::Context, limits: BatchLimits) -> Self {
        let (queue, pending) = mpsc::channel(QUEUE);
        tokio::spawn(run(js, pending, limits));
        OutcomeBatcher { queue }
    }

    /// Publishes one encoded outcome on `subject`; returns once the message holding it was
    /// stored, or why it was not.
    pub(crate) async fn publish(&self, subject: String, encoded: Bytes) -> Result<(), String> {
        let (stored, result) = oneshot::channel();
        self.queue
            .send(Pending {
                subject,
                encoded,
                stored,
            })
            .await
            .map_err(|_| "the outcome publisher has stopped".to_owned())?;
        result
            .await
            .map_err(|_| "the outcome publisher dropped the outcome".to_owned())?
    }
}

async fn run(js: jetstream::Context, mut pending: mpsc::Receiver<Pending>, limits: BatchLimits) {
    let in_flight = Arc::new(Semaphore::new(
        (IN_FLIGHT_OUTCOMES / limits.max_outcomes).max(2),
    ));
    while let Some(first) = pending.recv().await {
        // Waiting for a free publish slot is what lets a batch grow under load.
        let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
            return;
        };
        let mut ready = vec![first];
        gather(&mut pending, &mut ready, &limits).await;
        let mut permit = Some(permit);
        for batch in cut(ready, &limits) {
            let permit = match permit.take() {
                Some(permit) => permit,
                None => match Arc::clone(&in_flight).acquire_owned().await {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
            };
            let js = js.clone();
            tokio::spawn(async move {
                send(&js, batch).await;
                drop(permit);
            });
        }
    }
}

/// Takes what is queued already, then (with a linger) what comes within it.
async fn gather(
    pending: &mut mpsc::Receiver<Pending>,
    ready: &mut Vec<Pending>,
    limits: &BatchLimits,
) {
    while ready.len() < limits.max_outcomes {
        match pending.try_recv() {
            Ok(next) => ready.push(next),
            Err(_) => break,
        }
    }
    if limits.linger.is_zero() {
        return;
    }
    let deadline = tokio::time::Instant::now() + limits.linger;
    while ready.len() < limits.max_outcomes {
        match tokio::time::timeout_at(deadline, pending.recv()).await {
            Ok(Some(next)) => ready.push(next),
            Ok(None) | Err(_) => break,
        }
    }
}

/// Groups the ready outcomes by subject, in arrival order, into messages within the limits.
fn cut(ready: Vec<Pending>, limits: &BatchLimits) -> Vec<Vec<Pending>> {
    let mut batches: Vec<(String, usize, Vec<Pending>)> = Vec::new();
    let mut full = Vec::new();
    for outcome in ready {
        let size = outcome.encoded.len() + 1;
        let open = batches
            .iter()
            .position(|(subject, _, _)| *subject == outcome.subject);
        if let Some(i) = open {
            let (_, bytes, batch) = &mut batches[i];
            if batch.len() < limits.max_outcomes && *bytes + size <= limits.max_bytes {
                *bytes += size;
                batch.push(outcome);
                continue;
            }
            let (_, _, done) = batches.swap_remove(i);
            full.push(done);
        }
        batches.push((outcome.subject.clone(), size, vec![outcome]));
    }
    full.extend(batches.into_iter().map(|(_, _, batch)| batch));
    full
}

/// Publishes one batch and tells each of its outcomes' callers how it went.
async fn send(js: &jetstream::Context, batch: Vec<Pending>) {
    let Some(subject) = batch.first().map(|outcome| outcome.subject.clone()) else {
        return;
    };
    let encoded: Vec<Bytes> = batch.iter().map(|p| p.encoded.clone()).collect();
    let payload = messages::join_outcomes(&encoded);
    let result = match js.publish(subject, payload).await {
        Ok(ack) => ack.await.map(drop).map_err(|e| e.to_string()),
        Err(error) => Err(error.to_string()),
    };
    metrics::histogram!(crate::metrics::OUTCOMES_PER_MESSAGE).record(batch.len() as f64);
    for outcome in batch {
        // The caller may be gone (its worker stopped); the outcome is stored all the same.
        let _ = outcome.stored.send(result.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(subject: &str, bytes: usize) -> Pending {
        let (stored, _) = oneshot::channel();
        Pending {
            subject: subject.to_owned(),
            encoded: Bytes::from(vec![b'x'; bytes]),
            stored,
        }
    }

    fn shape(batches: &[Vec<Pending>]) -> Vec<(String, usize)> {
        batches
            .iter()
            .map(|b| (b[0].subject.clone(), b.len()))
            .collect()
    }

    #[test]
    fn batches_hold_one_subject_each_within_count_and_bytes() {
        let limits = BatchLimits {
            max_outcomes: 3,
            max_bytes: 100,
            linger: Duration::ZERO,
        };
        let ready = vec![
            pending("a", 10),
            pending("b", 10),
            pending("a", 10),
            pending("a", 10),
            pending("a", 10),
            pending("b", 60),
            pending("b", 60),
        ];
        let batches = cut(ready, &limits);
        let mut seen = shape(&batches);
        seen.sort();
        assert_eq!(
            seen,
            vec![
                ("a".into(), 1),
                ("a".into(), 3),
                ("b".into(), 1),
                ("b".into(), 2)
            ]
        );
        for batch in &batches {
            assert!(batch.iter().all(|p| p.subject == batch[0].subject));
            assert!(batch.iter().map(|p| p.encoded.len() + 1).sum::<usize>() <= 100);
        }
    }

    #[test]
    fn an_outcome_larger_than_a_batch_travels_alone() {
        let limits = BatchLimits::new(10, 8192, Duration::ZERO);
        let batches = cut(vec![pending("a", 9000), pending("a", 5)], &limits);
        assert_eq!(shape(&batches), vec![("a".into(), 1), ("a".into(), 1)]);
    }
}
