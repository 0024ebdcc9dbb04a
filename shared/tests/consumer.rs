//! The consumer loop against a real nats-server (and PostgreSQL for parking): what it does with
//! each disposition, how many messages it handles at once, and how it stops.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::PullConsumer, consumer::pull};
use sqlx::PgPool;

use mih_shared::Shutdown;
use mih_shared::consumer::{
    self, BatchHandler, DeadLetters, Handler, Settings, Settled, delivered,
};
use mih_shared::error::Disposition;
use mih_shared::parking;
use mih_testkit::{NatsServer, TestDatabase, eventually, unique_namespace};

const WAIT: Duration = Duration::from_secs(20);

/// A stream of its own on a fresh server, with one durable pull consumer.
struct Setup {
    _nats: NatsServer,
    js: jetstream::Context,
    stream: String,
    subject: String,
}

impl Setup {
    async fn start() -> Setup {
        let nats = NatsServer::start().await.expect("nats-server");
        let client = async_nats::connect(nats.url()).await.expect("connect");
        let js = jetstream::new(client);
        let ns = unique_namespace();
        let (stream, subject) = (ns.to_uppercase(), format!("{ns}.work"));
        js.create_stream(jetstream::stream::Config {
            name: stream.clone(),
            subjects: vec![subject.clone()],
            ..Default::default()
        })
        .await
        .expect("stream");
        Setup {
            _nats: nats,
            js,
            stream,
            subject,
        }
    }

    async fn consumer(&self, max_ack_pending: i64) -> PullConsumer {
        self.js
            .get_stream(&self.stream)
            .await
            .expect("stream")
            .create_consumer(pull::Config {
                durable_name: Some("work".into()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                max_ack_pending,
                max_deliver: -1,
                ..Default::default()
            })
            .await
            .expect("consumer")
    }

    async fn publish(&self, n: usize) {
        for i in 0..n {
            self.js
                .publish(self.subject.clone(), i.to_string().into())
                .await
                .expect("publish")
                .await
                .expect("stored");
        }
    }
}

/// Waits until the consumer holds no message: all acknowledged (or terminated) and none left.
async fn all_settled(consumer: &mut PullConsumer) {
    eventually(WAIT, || {
        let mut consumer = consumer.clone();
        async move {
            let info = consumer.info().await.map_err(|e| e.to_string())?;
            if info.num_ack_pending == 0 && info.num_pending == 0 {
                Ok(())
            } else {
                Err(format!(
                    "{} unacknowledged, {} pending",
                    info.num_ack_pending, info.num_pending
                ))
            }
        }
    })
    .await
    .expect("every message settled");
}

/// Answers with what `decide` says for each delivery and remembers what it saw.
struct Scripted<F> {
    decide: F,
    deliveries: Mutex<Vec<(String, u64, Instant)>>,
    settled: Mutex<Vec<Settled>>,
}

impl<F> Scripted<F>
where
    F: Fn(u64) -> Disposition + Send + Sync + 'static,
{
    fn new(decide: F) -> Arc<Self> {
        Arc::new(Scripted {
            decide,
            deliveries: Mutex::new(Vec::new()),
            settled: Mutex::new(Vec::new()),
        })
    }

    fn deliveries(&self) -> Vec<(String, u64, Instant)> {
        self.deliveries.lock().expect("lock").clone()
    }

    fn settled(&self) -> Vec<Settled> {
        self.settled.lock().expect("lock").clone()
    }
}

impl<F> Handler for Scripted<F>
where
    F: Fn(u64) -> Disposition + Send + Sync + 'static,
{
    async fn handle(&self, message: &jetstream::Message) -> Disposition {
        let delivered = delivered(message);
        let payload = String::from_utf8_lossy(&message.payload).into_owned();
        self.deliveries
            .lock()
            .expect("lock")
            .push((payload, delivered, Instant::now()));
        (self.decide)(delivered)
    }

    fn settled(&self, _message: &jetstream::Message, settled: Settled) {
        self.settled.lock().expect("lock").push(settled);
    }
}

/// A consumer loop running in the background until [`Running::stop`].
struct Running {
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    fn messages<H: Handler>(pulled: &PullConsumer, settings: Settings, handler: &Arc<H>) -> Self {
        let shutdown = Shutdown::new();
        let task = tokio::spawn(consumer::run(
            pulled.clone(),
            settings,
            Arc::clone(handler),
            shutdown.clone(),
        ));
        Running { shutdown, task }
    }

    fn batches<H: BatchHandler>(
        pulled: &PullConsumer,
        settings: Settings,
        max_batch: usize,
        handler: &Arc<H>,
    ) -> Self {
        let shutdown = Shutdown::new();
        let task = tokio::spawn(consumer::run_batches(
            pulled.clone(),
            settings,
            max_batch,
            Arc::clone(handler),
            shutdown.clone(),
        ));
        Running { shutdown, task }
    }

    /// Shuts the loop down and waits until it has returned.
    async fn stop(self) {
        self.shutdown.trigger();
        self.task.await.expect("loop ends");
    }
}

fn terminate(max_in_flight: usize) -> Settings {
    Settings::new("test", max_in_flight, DeadLetters::Terminate)
}

#[tokio::test]
async fn handled_messages_are_acknowledged_once() {
    let setup = Setup::start().await;
    let mut pulled = setup.consumer(64).await;
    let handler = Scripted::new(|_| Disposition::Ack);
    let running = Running::messages(&pulled, terminate(8), &handler);
    setup.publish(5).await;
    all_settled(&mut pulled).await;
    running.stop().await;
    let mut seen: Vec<String> = handler.deliveries().into_iter().map(|d| d.0).collect();
    seen.sort();
    assert_eq!(seen, ["0", "1", "2", "3", "4"]);
    assert_eq!(handler.settled(), [Settled::Acked; 5]);
}

#[tokio::test]
async fn a_retried_message_comes_again_after_the_retry_delay() {
    let setup = Setup::start().await;
    let mut pulled = setup.consumer(64).await;
    let handler = Scripted::new(|delivered| {
        if delivered == 1 {
            Disposition::Retry { after: None }
        } else {
            Disposition::Ack
        }
    });
    let running = Running::messages(&pulled, terminate(8), &handler);
    setup.publish(1).await;
    eventually(WAIT, || async {
        let n = handler.settled().len();
        if n == 2 {
            Ok(())
        } else {
            Err(format!("{n} settled"))
        }
    })
    .await
    .expect("delivered twice");
    all_settled(&mut pulled).await;
    running.stop().await;
    let deliveries = handler.deliveries();
    assert_eq!(
        deliveries.iter().map(|d| d.1).collect::<Vec<_>>(),
        [1, 2],
        "the second delivery is the retry"
    );
    let waited = deliveries[1].2 - deliveries[0].2;
    assert!(
        waited >= consumer::retry_delay(1) - Duration::from_millis(50),
        "came again after {waited:?}"
    );
    assert_eq!(handler.settled(), [Settled::Retried, Settled::Acked]);
}

#[tokio::test]
async fn a_message_refused_too_often_is_terminated() {
    let setup = Setup::start().await;
    let mut pulled = setup.consumer(64).await;
    let handler = Scripted::new(|_| Disposition::Refused {
        reason: "refused".into(),
    });
    let running = Running::messages(&pulled, terminate(8).give_up_after(3), &handler);
    setup.publish(1).await;
    eventually(WAIT, || async {
        if handler.settled().contains(&Settled::GaveUp) {
            Ok(())
        } else {
            Err(format!("settled so far: {:?}", handler.settled()))
        }
    })
    .await
    .expect("given up");
    // Terminated: nothing left to deliver, so the third delivery was the last.
    all_settled(&mut pulled).await;
    running.stop().await;
    assert_eq!(
        handler.deliveries().iter().map(|d| d.1).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(
        handler.settled(),
        [Settled::Retried, Settled::Retried, Settled::GaveUp]
    );
}

async fn database() -> (TestDatabase, PgPool) {
    let db = TestDatabase::create().await.expect("database");
    let pool = PgPool::connect(db.url()).await.expect("connect");
    mih_shared::db::migrate(&pool).await.expect("migrations");
    (db, pool)
}

#[tokio::test]
async fn refused_and_dead_lettered_messages_are_parked_when_the_policy_parks() {
    let setup = Setup::start().await;
    let (_db, pool) = database().await;
    let mut pulled = setup.consumer(64).await;
    // "0" is refused every time, "1" cannot be used at all.
    let handler = Arc::new(ByPayload {
        seen: Mutex::new(HashMap::new()),
    });
    let settings = Settings::new(
        "test",
        8,
        DeadLetters::Park {
            db: pool.clone(),
            consumer: "parking-test".into(),
        },
    )
    .give_up_after(2);
    let running = Running::messages(&pulled, settings, &handler);
    setup.publish(2).await;
    let parked = eventually(WAIT, || {
        let pool = pool.clone();
        async move {
            let parked = parking::list(&pool, Some("parking-test"), None, 10)
                .await
                .map_err(|e| e.to_string())?;
            if parked.len() == 2 {
                Ok(parked)
            } else {
                Err(format!("{} parked", parked.len()))
            }
        }
    })
    .await
    .expect("both parked");
    all_settled(&mut pulled).await;
    running.stop().await;
    let by_payload: HashMap<String, (i32, String)> = parked
        .iter()
        .map(|p| (p.payload_text(), (p.deliveries, p.error.clone())))
        .collect();
    assert_eq!(by_payload["0"], (2, "refused".to_owned()));
    assert_eq!(by_payload["1"], (1, "unusable".to_owned()));
    let seen = handler.seen.lock().expect("lock").clone();
    assert_eq!(
        (seen["0"], seen["1"]),
        (2, 1),
        "parked messages do not come again"
    );
}

struct ByPayload {
    seen: Mutex<HashMap<String, usize>>,
}

impl Handler for ByPayload {
    async fn handle(&self, message: &jetstream::Message) -> Disposition {
        let payload = String::from_utf8_lossy(&message.payload).into_owned();
        *self
            .seen
            .lock()
            .expect("lock")
            .entry(payload.clone())
            .or_default() += 1;
        if payload == "0" {
            Disposition::Refused {
                reason: "refused".into(),
            }
        } else {
            Disposition::DeadLetter {
                reason: "unusable".into(),
            }
        }
    }
}

/// Holds each message for a while, counting how many it holds at once.
struct Slow {
    hold: Duration,
    now: AtomicUsize,
    most: AtomicUsize,
    finished: AtomicUsize,
}

impl Slow {
    fn new(hold: Duration) -> Arc<Self> {
        Arc::new(Slow {
            hold,
            now: AtomicUsize::new(0),
            most: AtomicUsize::new(0),
            finished: AtomicUsize::new(0),
        })
    }
}

impl Handler for Slow {
    async fn handle(&self, _message: &jetstream::Message) -> Disposition {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.hold).await;
        self.now.fetch_sub(1, Ordering::SeqCst);
        self.finished.fetch_add(1, Ordering::SeqCst);
        Disposition::Ack
    }
}

#[tokio::test]
async fn no_more_than_max_in_flight_messages_are_handled_at_once() {
    let setup = Setup::start().await;
    // The consumer would hand out many more: the loop is what bounds the work.
    let mut pulled = setup.consumer(1_000).await;
    setup.publish(24).await;
    let handler = Slow::new(Duration::from_millis(50));
    let running = Running::messages(&pulled, terminate(3).pull_batch(100), &handler);
    all_settled(&mut pulled).await;
    running.stop().await;
    assert_eq!(handler.finished.load(Ordering::SeqCst), 24);
    assert_eq!(handler.most.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn shutdown_lets_the_messages_in_hand_finish_and_settles_them() {
    let setup = Setup::start().await;
    let mut pulled = setup.consumer(64).await;
    setup.publish(2).await;
    let handler = Slow::new(Duration::from_millis(700));
    let running = Running::messages(&pulled, terminate(8), &handler);
    eventually(WAIT, || async {
        match handler.now.load(Ordering::SeqCst) {
            2 => Ok(()),
            n => Err(format!("{n} in hand")),
        }
    })
    .await
    .expect("both in hand");
    running.stop().await;
    assert_eq!(
        handler.finished.load(Ordering::SeqCst),
        2,
        "the loop returned only after its handlers finished"
    );
    all_settled(&mut pulled).await;
}

/// Records batch sizes; hands the first delivery of "3" back.
struct Batches {
    sizes: Mutex<Vec<usize>>,
}

impl BatchHandler for Batches {
    async fn handle(&self, messages: &[jetstream::Message]) -> Vec<Disposition> {
        self.sizes.lock().expect("lock").push(messages.len());
        messages
            .iter()
            .map(|message| {
                if message.payload.as_ref() == b"3" && delivered(message) == 1 {
                    Disposition::Retry {
                        after: Some(Duration::from_millis(10)),
                    }
                } else {
                    Disposition::Ack
                }
            })
            .collect()
    }
}

#[tokio::test]
async fn a_backlog_is_handled_in_batches_and_each_message_disposed_of() {
    let setup = Setup::start().await;
    let mut pulled = setup.consumer(1_000).await;
    setup.publish(40).await;
    let handler = Arc::new(Batches {
        sizes: Mutex::new(Vec::new()),
    });
    let running = Running::batches(&pulled, terminate(2).pull_batch(16), 16, &handler);
    all_settled(&mut pulled).await;
    running.stop().await;
    let sizes = handler.sizes.lock().expect("lock").clone();
    assert_eq!(
        sizes.iter().sum::<usize>(),
        41,
        "40 and one retry: {sizes:?}"
    );
    assert!(sizes.iter().all(|&n| n <= 16), "{sizes:?}");
    assert!(
        sizes.iter().any(|&n| n > 1),
        "a backlog comes in batches: {sizes:?}"
    );
}

/// How many messages the consumer holds unacknowledged now.
async fn unacknowledged(consumer: &PullConsumer) -> u64 {
    let mut consumer = consumer.clone();
    let info = consumer.info().await.expect("consumer info");
    u64::try_from(info.num_ack_pending).expect("a count")
}

/// Counts the acknowledgements JetStream receives for the stream, as they arrive.
async fn ack_watch(setup: &Setup) -> Arc<Mutex<Vec<Instant>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut acks = setup
        .js
        .client()
        .subscribe(format!("$JS.ACK.{}.work.>", setup.stream))
        .await
        .expect("subscribe to acks");
    setup.js.client().flush().await.expect("flush");
    let record = Arc::clone(&seen);
    tokio::spawn(async move {
        use futures::StreamExt;
        while acks.next().await.is_some() {
            record.lock().expect("lock").push(Instant::now());
        }
    });
    seen
}

/// Waits until `handler` has handled `n` deliveries.
async fn handled<F>(handler: &Scripted<F>, n: usize)
where
    F: Fn(u64) -> Disposition + Send + Sync + 'static,
{
    eventually(WAIT, || async {
        match handler.deliveries().len() {
            seen if seen == n => Ok(()),
            seen => Err(format!("{seen} of {n} handled")),
        }
    })
    .await
    .expect("messages handled");
}

#[tokio::test]
async fn a_lingering_acknowledgement_waits_for_company_and_leaves_with_it() {
    let setup = Setup::start().await;
    let mut pulled = setup.consumer(1_000).await;
    let acks = ack_watch(&setup).await;
    let handler = Scripted::new(|_| Disposition::Ack);
    // 16 slots: acknowledgements leave as soon as 2 wait, or after the linger.
    let settings = terminate(16).ack_linger(Duration::from_millis(300));
    let running = Running::messages(&pulled, settings, &handler);

    setup.publish(1).await;
    handled(&handler, 1).await;
    let handled_at = handler.deliveries()[0].2;
    all_settled(&mut pulled).await;
    let first_ack = acks.lock().expect("lock")[0];
    assert!(
        first_ack.duration_since(handled_at) >= Duration::from_millis(250),
        "a lone acknowledgement waited out the linger: {:?}",
        first_ack.duration_since(handled_at)
    );

    // Two together fill the batch: they leave at once, long before a linger of a minute.
    running.stop().await;
    let handler = Scripted::new(|_| Disposition::Ack);
    let settings = terminate(16).ack_linger(Duration::from_secs(60));
    let running = Running::messages(&pulled, settings, &handler);
    setup.publish(2).await;
    all_settled(&mut pulled).await;
    assert_eq!(acks.lock().expect("lock").len(), 3);

    // A third waits for company, and stopping the loop sends it.
    setup.publish(1).await;
    handled(&handler, 3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        unacknowledged(&pulled).await,
        1,
        "its acknowledgement waits"
    );
    running.stop().await;
    setup.js.client().flush().await.expect("flush");
    all_settled(&mut pulled).await;
    assert_eq!(acks.lock().expect("lock").len(), 4);
    assert_eq!(handler.settled(), vec![Settled::Acked; 3]);
}

#[tokio::test]
async fn batches_acknowledged_together_are_all_settled_when_the_loop_stops() {
    let setup = Setup::start().await;
    let mut pulled = setup.consumer(1_000).await;
    setup.publish(40).await;
    let handler = Arc::new(Batches {
        sizes: Mutex::new(Vec::new()),
    });
    // 2 batches of up to 16: acknowledgements leave by 4, or when the loop stops.
    let settings = terminate(2)
        .pull_batch(16)
        .ack_linger(Duration::from_secs(60));
    let running = Running::batches(&pulled, settings, 16, &handler);
    eventually(WAIT, || async {
        match handler.sizes.lock().expect("lock").iter().sum::<usize>() {
            41 => Ok(()),
            n => Err(format!("{n} handled")),
        }
    })
    .await
    .expect("40 handled, one twice");
    running.stop().await;
    setup.js.client().flush().await.expect("flush");
    all_settled(&mut pulled).await;
}
