//! Events from the plugin's observer to the hub: exactly once through a rule, never when
//! rolled back, through outages and lost answers, with invalid events parked and concurrent
//! senders splitting the outbox.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use mih_shared::ServiceName;
use mih_testkit::fixtures;
use mih_testkit::{HttpSink, Recorded};

use super::driver::Site;
use crate::harness::TestHub;

const WAIT: Duration = Duration::from_secs(30);

/// A hub with a rule sending every event to `sink`; ingest on a fixed port when given, so it
/// keeps its address across a restart.
pub(super) async fn hub_to(sink: &HttpSink, ingest_port: Option<u16>) -> TestHub {
    let mut builder = TestHub::builder();
    if let Some(port) = ingest_port {
        builder = builder.toml(&format!("[ingest]\nlisten = \"127.0.0.1:{port}\""));
    }
    let hub = builder.start().await;
    hub.deliver_everything_to(sink, "lms", "/events").await;
    hub
}

/// Each event as the sink received it, by its idempotency key; panics on a key seen twice.
pub(super) fn by_key(requests: &[Recorded]) -> BTreeMap<String, Value> {
    let mut events = BTreeMap::new();
    for request in requests {
        let key = request
            .header("idempotency-key")
            .expect("idempotency key")
            .to_owned();
        let body = request.json().expect("JSON body");
        assert!(
            events.insert(key.clone(), body).is_none(),
            "delivered twice: {key}"
        );
    }
    events
}

/// Events as a sorted list of their JSON texts, to compare as multisets.
fn multiset<'a>(events: impl IntoIterator<Item = &'a Value>) -> Vec<String> {
    let mut texts: Vec<String> = events.into_iter().map(Value::to_string).collect();
    texts.sort();
    texts
}

/// Waits for `n` deliveries, then a moment more to see that no extra one follows.
async fn exactly(sink: &HttpSink, n: usize) -> Vec<Recorded> {
    sink.wait_for(n, WAIT)
        .await
        .unwrap_or_else(|e| panic!("{e}: {} of {n} arrived", sink.count()));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let requests = sink.requests();
    assert_eq!(requests.len(), n, "no extra deliveries");
    requests
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fixture_event_arrives_once_and_a_rolled_back_one_never() {
    let sink = HttpSink::start().await.expect("sink");
    let hub = hub_to(&sink, None).await;
    let site = Site::install(&hub).await;
    let fixtures = fixtures::moodle_events();
    let file = site.events_file("fixtures.jsonl", &fixtures);

    site.run(&["raise-rollback", &file]).await;
    assert_eq!(
        site.status().await["pending"],
        0,
        "a rolled-back event is never recorded"
    );

    let raised = site.run(&["raise", &file]).await;
    assert_eq!(raised["raised"], fixtures.len());
    assert_eq!(
        raised["debugging"],
        json!([]),
        "the observer reported no problem"
    );
    // The end-of-request send delivered them: nothing is left for the scheduled task.
    let status = site.status().await;
    assert_eq!(
        (status["pending"].as_i64(), status["parked"].as_i64()),
        (Some(0), Some(0)),
        "{status}"
    );

    let requests = exactly(&sink, fixtures.len()).await;
    assert!(requests.iter().all(|r| r.uri.path() == "/api/events"));
    let delivered = by_key(&requests);
    assert_eq!(
        multiset(delivered.values()),
        multiset(&fixtures),
        "each event as Moodle gave it"
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_wait_out_an_outage_and_lost_answers_without_duplicates() {
    let sink = HttpSink::start().await.expect("sink");
    let mut hub = hub_to(&sink, Some(free_port())).await;
    let mut site = Site::install(&hub).await;
    let fixtures = fixtures::moodle_events();
    let first = site.events_file("first.jsonl", &fixtures[..10]);
    let second = site.events_file("second.jsonl", &fixtures[10..20]);

    // The hub is down: the request's send fails fast and the events wait in the outbox.
    hub.stop_services().await;
    site.run(&["raise", &first]).await;
    let status = site.status().await;
    assert_eq!(status["pending"], 10, "{status}");
    assert_eq!(
        status["waiting"], 10,
        "held back after the failure: {status}"
    );
    let reason = status["lasterror"].as_str().expect("a reason");
    assert!(reason.contains("did not answer"), "{reason}");
    // The scheduled task respects the backoff and loses nothing.
    site.run_raw(&["task"]).await;
    assert_eq!(site.status().await["pending"], 10);

    hub.start_services().await;
    let report = site.run(&["send"]).await;
    assert_eq!(report["sent"], 10, "{report}");
    sink.wait_for(10, WAIT)
        .await
        .expect("the backlog is delivered");

    // The hub stores a batch but its answer is lost; the plugin sends again, in other batches.
    let proxy = AnswerLosingProxy::start(hub.url(ServiceName::Ingest, "")).await;
    site.set("ingesturl", proxy.url());
    site.set("batchsize", 4);
    site.run(&["raise", &second, "--no-send"]).await;
    let lost = site.run(&["send"]).await;
    assert_eq!(
        (lost["sent"].as_i64(), lost["deferred"].as_i64()),
        (Some(0), Some(4)),
        "{lost}"
    );
    assert_eq!(proxy.forwarded(), 1, "the hub got the batch");
    site.set("ingesturl", hub.url(ServiceName::Ingest, ""));
    site.set("batchsize", 3);
    let resent = site.run(&["send"]).await;
    assert_eq!(resent["sent"], 10, "{resent}");
    assert_eq!(
        resent["batches"], 4,
        "batches of 3, unlike the lost one: {resent}"
    );

    let delivered = by_key(&exactly(&sink, 20).await);
    assert_eq!(multiset(delivered.values()), multiset(&fixtures[..20]));
    assert_eq!(site.status().await["pending"], 0);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_event_is_parked_and_the_rest_of_its_batch_delivered() {
    let sink = HttpSink::start().await.expect("sink");
    let hub = hub_to(&sink, None).await;
    let site = Site::install(&hub).await;
    let fixtures = fixtures::moodle_events();
    let mut bad = fixtures[7].clone();
    bad["contextid"] = json!("the course");
    let mut events = fixtures[..3].to_vec();
    events.push(bad);
    events.extend_from_slice(&fixtures[3..6]);
    let file = site.events_file("mixed.jsonl", &events);

    site.run(&["raise", &file, "--no-send"]).await;
    let report = site.run(&["send"]).await;
    assert_eq!(
        (report["sent"].as_i64(), report["parked"].as_i64()),
        (Some(6), Some(1)),
        "{report}"
    );
    let delivered = by_key(&exactly(&sink, 6).await);
    let good: Vec<Value> = events
        .iter()
        .filter(|e| e["contextid"].is_number())
        .cloned()
        .collect();
    assert_eq!(multiset(delivered.values()), multiset(&good));

    let status = site.status().await;
    assert_eq!(
        (status["pending"].as_i64(), status["parked"].as_i64()),
        (Some(0), Some(1)),
        "{status}"
    );
    let reason = status["parkedrows"][0]["lasterror"]
        .as_str()
        .expect("reason");
    assert!(
        reason.contains("contextid"),
        "the hub's reason names the field: {reason}"
    );

    // Retrying it changes nothing the hub would accept: it is parked again, not lost or looping.
    assert_eq!(site.run(&["retry-parked"]).await["retried"], 1);
    let again = site.run(&["send"]).await;
    assert_eq!(
        (again["sent"].as_i64(), again["parked"].as_i64()),
        (Some(0), Some(1)),
        "{again}"
    );
    assert_eq!(sink.count(), 6);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_senders_at_once_send_each_event_once() {
    let sink = HttpSink::start().await.expect("sink");
    let hub = hub_to(&sink, None).await;
    let mut site = Site::install(&hub).await;
    let events: Vec<Value> = fixtures::moodle_events()
        .into_iter()
        .cycle()
        .take(600)
        .collect();
    let file = site.events_file("many.jsonl", &events);
    site.set("batchsize", 5);
    site.run(&["raise", &file, "--no-send"]).await;

    // Both start at the same moment (PHP's own start-up would otherwise decide who goes first).
    let start = format!(
        "--start-at={}",
        chrono::Utc::now().timestamp_millis() + 1000
    );
    let (one, two) = tokio::join!(
        site.command(&["send", "--keys", &start]).output(),
        site.command(&["send", "--keys", &start]).output()
    );
    let keys = |output: std::io::Result<std::process::Output>| -> BTreeSet<String> {
        let output = output.expect("driver runs");
        let report: Value = serde_json::from_slice(&output.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stderr)));
        assert_eq!(report["stopped"], Value::Null, "{report}");
        report["keys"]
            .as_array()
            .expect("keys")
            .iter()
            .map(|k| k.as_str().expect("key").to_owned())
            .collect()
    };
    let (one, two) = (keys(one), keys(two));
    eprintln!("the senders sent {} and {} events", one.len(), two.len());
    assert!(
        one.is_disjoint(&two),
        "a row went out twice: {:?}",
        one.intersection(&two).collect::<Vec<_>>()
    );
    assert_eq!(one.len() + two.len(), 600);
    assert!(
        !one.is_empty() && !two.is_empty(),
        "both senders took part: {} and {}",
        one.len(),
        two.len()
    );

    by_key(&exactly(&sink, 600).await);
    assert_eq!(site.status().await["pending"], 0);
    hub.stop().await;
}

/// Forwards each request to the hub, waits for the hub's answer, then closes the connection
/// without passing the answer on: the hub stored the events, the sender does not know it.
struct AnswerLosingProxy {
    addr: SocketAddr,
    forwarded: Arc<AtomicUsize>,
    server: tokio::task::JoinHandle<()>,
}

impl AnswerLosingProxy {
    async fn start(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let forwarded = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&forwarded);
        let server = tokio::spawn(async move {
            let http = reqwest::Client::new();
            while let Ok((mut socket, _)) = listener.accept().await {
                let (http, upstream, count) = (http.clone(), upstream.clone(), Arc::clone(&count));
                tokio::spawn(async move {
                    let Some((path, headers, body)) = read_request(&mut socket).await else {
                        return;
                    };
                    let mut request = http.post(format!("{upstream}{path}")).body(body);
                    for (name, value) in headers {
                        request = request.header(name, value);
                    }
                    if request.send().await.is_ok() {
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                    let _ = socket.shutdown().await;
                });
            }
        });
        AnswerLosingProxy {
            addr,
            forwarded,
            server,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn forwarded(&self) -> usize {
        self.forwarded.load(Ordering::SeqCst)
    }
}

impl Drop for AnswerLosingProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Reads one HTTP/1.1 request with a Content-Length body: its path, headers and body.
async fn read_request(
    socket: &mut tokio::net::TcpStream,
) -> Option<(String, Vec<(String, String)>, Vec<u8>)> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..n]);
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let path = lines.next()?.split(' ').nth(1)?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .filter(|(n, _)| {
            !["host", "content-length", "expect"]
                .iter()
                .any(|skip| n.eq_ignore_ascii_case(skip))
        })
        .collect();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().ok())
        })
        .flatten()?;
    let mut body = buffer[head_end..].to_vec();
    while body.len() < length {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some((path, headers, body))
}
