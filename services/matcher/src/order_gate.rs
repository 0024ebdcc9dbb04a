//! Moodle's order for keyed jobs: in one EVENTS partition, the keyed jobs of an event are
//! published only after every earlier event of the partition is done with (its jobs stored,
//! or nothing to publish). The matcher handles many events at once, and on several replicas,
//! so without this two events of one learner could have their jobs stored the other way round;
//! the dispatcher keeps each key's jobs in the order JOBS stored them.
//!
//! "Done" is known here for the events this replica settled, and from the consumer's ack floor
//! (every event up to it is acknowledged, by whichever replica) for the others. The floor is
//! read only when the next event not yet done is not held here, by one waiter at a time. An
//! event whose turn does not come within [`PATIENCE`] is handed back (nothing of it is
//! published, so its slot is never held hostage); after [`PROCEED_AFTER`] such deliveries it is
//! published anyway, so that an event stuck for good earlier in the stream cannot stall its
//! partition's keyed events for ever (logged, and counted in
//! `mih_matcher_order_gate_timeouts_total`).
//!
//! Events with no keyed job never wait.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use tokio::sync::Notify;
use tokio::time::Instant;

/// How long a keyed event waits for its turn before it is handed back.
pub(crate) const PATIENCE: Duration = Duration::from_secs(5);
/// Deliveries of an event that waited in vain before it is published out of turn.
pub(crate) const PROCEED_AFTER: u64 = 6;
/// Events done here remembered above a gap in the floor (another replica's events): beyond it
/// the oldest are forgotten, and a keyed event behind them reads the ack floor instead.
const DONE_MEMORY: usize = 8192;
/// Shortest and longest pause between two reads of the ack floor.
const FIRST_POLL: Duration = Duration::from_millis(2);
const LONGEST_POLL: Duration = Duration::from_millis(100);

/// One partition's gate.
pub(crate) struct OrderGate {
    consumer: PullConsumer,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Every event up to here is done.
    floor: u64,
    /// Events above the floor done here.
    done: BTreeSet<u64>,
    /// Events being handled here now.
    held: BTreeSet<u64>,
    /// Keyed events waiting for their turn, woken when the floor reaches them.
    waiting: BTreeMap<u64, Arc<Notify>>,
    /// Someone reads the ack floor now.
    polling: bool,
}

impl State {
    fn settle(&mut self, sequence: u64, done: bool) {
        self.held.remove(&sequence);
        if done && sequence > self.floor {
            self.done.insert(sequence);
            let floor = self.floor;
            self.advance(floor);
            if self.done.len() > DONE_MEMORY {
                let keep_from =
                    sequence.saturating_sub(u64::try_from(DONE_MEMORY / 2).unwrap_or(u64::MAX));
                self.done = self.done.split_off(&keep_from);
            }
        }
    }

    /// Moves the floor over the events done in a row above it, and wakes whom it reached.
    fn advance(&mut self, to: u64) {
        if to > self.floor {
            self.floor = to;
            self.done = self.done.split_off(&(to + 1));
        }
        while self.done.remove(&(self.floor + 1)) {
            self.floor += 1;
        }
        for (_, notify) in self.waiting.range(..=self.floor + 1) {
            notify.notify_one();
        }
    }
}

/// What a waiting event does next.
enum Step {
    Go,
    WaitHere,
    ReadFloor,
    WaitForReader,
}

impl OrderGate {
    pub(crate) fn new(consumer: PullConsumer) -> Self {
        OrderGate {
            consumer,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An event starts being handled here.
    pub(crate) fn hold(&self, sequence: u64) {
        self.state().held.insert(sequence);
    }

    /// An event was settled: `done` unless it was handed back to come again.
    pub(crate) fn settle(&self, sequence: u64, done: bool) {
        self.state().settle(sequence, done);
    }

    /// Waits until every event before `sequence` is done; `false` when [`PATIENCE`] ran out.
    pub(crate) async fn wait_turn(&self, sequence: u64) -> bool {
        let deadline = Instant::now() + PATIENCE;
        let notify = Arc::new(Notify::new());
        let mut pause = FIRST_POLL;
        let turn = loop {
            let step = {
                let mut state = self.state();
                if state.floor + 1 >= sequence {
                    Step::Go
                } else if state.held.contains(&(state.floor + 1)) {
                    state.waiting.insert(sequence, Arc::clone(&notify));
                    Step::WaitHere
                } else if state.polling {
                    state.waiting.insert(sequence, Arc::clone(&notify));
                    Step::WaitForReader
                } else {
                    state.polling = true;
                    Step::ReadFloor
                }
            };
            if Instant::now() >= deadline && !matches!(step, Step::Go) {
                if matches!(step, Step::ReadFloor) {
                    self.state().polling = false;
                }
                break false;
            }
            match step {
                Step::Go => break true,
                Step::WaitHere | Step::WaitForReader => {
                    // A wake-up sent before this wait is kept by the Notify (notify_one).
                    let _ = tokio::time::timeout_at(
                        deadline.min(Instant::now() + LONGEST_POLL),
                        notify.notified(),
                    )
                    .await;
                }
                Step::ReadFloor => {
                    let floor = self
                        .consumer
                        .get_info()
                        .await
                        .map(|info| info.ack_floor.stream_sequence);
                    let moved = {
                        let mut state = self.state();
                        state.polling = false;
                        let before = state.floor;
                        if let Ok(floor) = &floor {
                            state.advance(*floor);
                        }
                        // The next reader, if any, goes now.
                        if let Some((_, next)) = state.waiting.iter().next() {
                            next.notify_one();
                        }
                        state.floor > before
                    };
                    if let Err(error) = floor {
                        tracing::debug!(%error, "cannot read the consumer's ack floor");
                    }
                    if moved {
                        pause = FIRST_POLL;
                    } else {
                        tokio::time::sleep(pause.min(deadline - Instant::now())).await;
                        pause = (pause * 2).min(LONGEST_POLL);
                    }
                }
            }
        };
        self.state().waiting.remove(&sequence);
        turn
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_nats::jetstream::{self, AckKind, consumer::pull};
    use futures::StreamExt;
    use mih_testkit::NatsServer;

    /// Whether `task` is still waiting after a moment.
    async fn still_waiting(task: &tokio::task::JoinHandle<bool>) -> bool {
        tokio::time::sleep(Duration::from_millis(150)).await;
        !task.is_finished()
    }

    async fn turn_of(gate: &Arc<OrderGate>, sequence: u64) -> tokio::task::JoinHandle<bool> {
        let gate = Arc::clone(gate);
        tokio::spawn(async move { gate.wait_turn(sequence).await })
    }

    /// A stream holding `events` events and the `matcher` consumer on it (the server is kept
    /// with them).
    async fn events(events: usize) -> (NatsServer, PullConsumer) {
        let nats = NatsServer::start().await.expect("nats-server");
        let js = jetstream::new(async_nats::connect(nats.url()).await.expect("connect"));
        let stream = js
            .create_stream(jetstream::stream::Config {
                name: "EVENTS".into(),
                subjects: vec!["events".into()],
                ..Default::default()
            })
            .await
            .expect("stream");
        for _ in 0..events {
            js.publish("events", "{}".into())
                .await
                .expect("publish")
                .await
                .expect("stored");
        }
        let consumer = stream
            .create_consumer(pull::Config {
                durable_name: Some("matcher".into()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ..Default::default()
            })
            .await
            .expect("consumer");
        (nats, consumer)
    }

    #[tokio::test]
    async fn an_event_waits_for_every_earlier_one_here_and_on_other_replicas() {
        let (_nats, consumer) = events(5).await;
        let messages: Vec<jetstream::Message> = consumer
            .fetch()
            .max_messages(5)
            .messages()
            .await
            .expect("fetch")
            .map(|m| m.expect("message"))
            .collect()
            .await;
        assert_eq!(messages.len(), 5);

        // This replica holds 1 to 3.
        let here = Arc::new(OrderGate::new(consumer.clone()));
        for sequence in 1..=3 {
            here.hold(sequence);
        }
        assert!(
            turn_of(&here, 1).await.await.expect("joins"),
            "the first never waits"
        );
        let third = turn_of(&here, 3).await;
        assert!(still_waiting(&third).await, "1 and 2 are not done");
        here.settle(2, true);
        assert!(still_waiting(&third).await, "1 is not done");
        here.settle(1, true);
        assert!(third.await.expect("joins"), "1 and 2 done: 3's turn");
        here.settle(3, true);
        for message in &messages[..3] {
            message.double_ack().await.expect("ack");
        }

        // Another replica holds 5; 4 is held by neither (its replica died, or it waits for a
        // redelivery): 5 waits until the consumer's ack floor passes 4.
        let there = Arc::new(OrderGate::new(consumer.clone()));
        there.hold(5);
        let fifth = turn_of(&there, 5).await;
        assert!(still_waiting(&fifth).await, "4 is not acknowledged");
        messages[3].ack_with(AckKind::Ack).await.expect("ack 4");
        assert!(fifth.await.expect("joins"), "4 acknowledged: 5's turn");
    }

    #[tokio::test]
    async fn an_event_whose_turn_does_not_come_is_handed_back_after_its_patience() {
        let (_nats, consumer) = events(0).await;
        let gate = Arc::new(OrderGate::new(consumer));
        gate.hold(1);
        gate.hold(2);
        let started = Instant::now();
        assert!(!gate.wait_turn(2).await, "1 is never done");
        assert!(started.elapsed() >= PATIENCE);
        assert!(gate.state().waiting.is_empty(), "no waiter left behind");
    }

    #[test]
    fn what_is_done_above_a_gap_is_remembered_within_bounds() {
        let mut state = State::default();
        // Another replica holds the odd events: the floor never moves here.
        for sequence in (2..200_000u64).step_by(2) {
            state.held.insert(sequence);
            state.settle(sequence, true);
        }
        assert!(state.done.len() <= DONE_MEMORY, "{}", state.done.len());
        assert!(state.held.is_empty());
        assert_eq!(state.floor, 0);
        assert!(state.done.contains(&199_998), "the newest are remembered");
    }

    #[test]
    fn the_floor_moves_over_events_done_in_a_row_and_stops_at_a_gap() {
        let mut state = State::default();
        state.advance(10);
        state.done.extend([11, 12, 14]);
        state.advance(10);
        assert_eq!(state.floor, 12);
        assert_eq!(state.done.iter().copied().collect::<Vec<_>>(), [14]);
        // The server's floor passes the gap: what lay below it is forgotten.
        state.advance(15);
        assert_eq!(state.floor, 15);
        assert!(state.done.is_empty());
    }
}
