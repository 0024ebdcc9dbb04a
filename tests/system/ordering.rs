//! Per-key ordered delivery through the whole pipeline: a rule with an ordering key gets each
//! key's events delivered in the order EVENTS stored them, keys in parallel, through retries
//! and with several dispatcher replicas.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use rand::seq::SliceRandom;
use reqwest::StatusCode;
use serde_json::{Value, json};

use mih_shared::ServiceName;
use mih_shared::messages::{self, Event, Job, Request};
use mih_testkit::sign::TEST_TOKEN;
use mih_testkit::{HttpSink, Recorded, Reply};

use crate::harness::TestHub;
use crate::matcher::{create_rule, enrolment};

const WAIT: Duration = Duration::from_secs(90);
/// Ingest, api and matcher: no dispatcher yet, so jobs wait in JOBS.
const NO_DISPATCHER: &[ServiceName] =
    &[ServiceName::Ingest, ServiceName::Api, ServiceName::Matcher];

async fn hub(toml: &str) -> TestHub {
    TestHub::builder()
        .services(NO_DISPATCHER)
        .toml(toml)
        .start()
        .await
}

/// Service `sis` at `sink` with `concurrency`, and a rule sending each enrolment to
/// `/u/<learner>/<n>`, ordered by learner.
async fn ordered_rule(hub: &TestHub, sink: &HttpSink, concurrency: u32) {
    let created = hub
        .api()
        .post(
            "/api/v1/services",
            &json!({"name": "sis", "transport": {"kind": "rest", "base_url": sink.url()},
                    "concurrency": concurrency,
                    "retry": {"max_retries": 10, "backoff_base_ms": 50, "backoff_cap_ms": 200},
                    "breaker": {"failure_threshold": 1000}}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    create_rule(
        hub,
        json!({"name": "enrolments in order", "events": ["\\core\\event\\user_enrolment_created"],
               "service": "sis", "ordering_key": "{{relateduserid}}",
               "target": {"kind": "rest", "method": "POST", "path": "/u/{{relateduserid}}/{{other.n}}"}}),
    )
    .await;
    hub.wait_for_config(ServiceName::Matcher).await;
}

/// Learner `user`'s `n`th enrolment event.
fn enrolled(user: usize, n: usize) -> Value {
    let mut event = enrolment();
    event["relateduserid"] = json!(user);
    event["objectid"] = json!(user * 1000 + n);
    event["other"] = json!({"n": n});
    event
}

/// Posts `rounds` enrolments of each of `users` learners: round by round, the learners in a
/// new random order each round, so keys interleave while each key's events go in order.
async fn post_rounds(hub: &TestHub, users: usize, rounds: usize) {
    let mut rng = rand::rng();
    for n in 0..rounds {
        let mut learners: Vec<usize> = (1..=users).collect();
        learners.shuffle(&mut rng);
        post_batch(hub, learners.into_iter().map(|u| enrolled(u, n)).collect()).await;
    }
}

/// Posts `events` in one request, asserting they were accepted.
async fn post_batch(hub: &TestHub, events: Vec<Value>) {
    let bearer = [("authorization".to_owned(), format!("Bearer {TEST_TOKEN}"))];
    let answer = hub
        .post_events(
            Value::from(events).to_string().into_bytes(),
            "application/json",
            &bearer,
        )
        .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
}

/// `(learner, n)` of a request to `/u/<learner>/<n>`.
fn parse(request: &Recorded) -> (usize, usize) {
    parse_path(request.uri.path())
}

fn parse_path(path: &str) -> (usize, usize) {
    let mut parts = path.trim_start_matches("/u/").split('/');
    let mut next = || {
        parts
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected path {path}"))
    };
    (next(), next())
}

/// Waits until every one of `users` × `rounds` events was delivered (answered 2xx).
async fn wait_delivered(sink: &HttpSink, users: usize, rounds: usize) -> Vec<Recorded> {
    mih_testkit::eventually(WAIT, || async {
        let requests = sink.requests();
        let delivered: std::collections::HashSet<(usize, usize)> = requests
            .iter()
            .filter(|r| r.status < 300)
            .map(parse)
            .collect();
        if delivered.len() >= users * rounds {
            Ok(requests)
        } else {
            Err(format!(
                "{} of {} delivered",
                delivered.len(),
                users * rounds
            ))
        }
    })
    .await
    .unwrap_or_else(|last| panic!("not everything delivered: {last}"))
}

/// Asserts that every learner's requests came in order: no request for `n` before `n - 1`
/// was delivered (a repeat of what was just delivered is the at-least-once promise, not
/// disorder), and that learners interleaved.
fn assert_in_order_per_key(requests: &[Recorded], users: usize, rounds: usize) {
    let mut delivered_up_to: HashMap<usize, Option<usize>> = HashMap::new();
    for request in requests {
        let (user, n) = parse(request);
        let last = delivered_up_to.entry(user).or_insert(None);
        let expected = last.map_or(0, |l| l + 1);
        assert!(
            n == expected || Some(n) == *last,
            "learner {user}: request for {n} when {last:?} was the last delivered"
        );
        if request.status < 300 && n == expected {
            *last = Some(n);
        }
    }
    assert_eq!(delivered_up_to.len(), users);
    assert!(
        delivered_up_to
            .values()
            .all(|last| *last == Some(rounds - 1)),
        "every learner got all {rounds}"
    );
    let switches = requests
        .windows(2)
        .filter(|pair| parse(&pair[0]).0 != parse(&pair[1]).0)
        .count();
    assert!(
        switches > requests.len() / 2,
        "keys interleave ({switches} switches in {} requests)",
        requests.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_learners_events_arrive_in_order_while_learners_interleave() {
    // No dispatcher yet: every job waits in JOBS, so the dispatcher finds each learner's 20
    // together.
    let mut hub = hub("").await;
    let sink = HttpSink::start().await.expect("sink");
    // The first enrolment of every tenth learner fails twice: it is retried, and that
    // learner's later ones wait.
    for user in (7..=200).step_by(10) {
        sink.script_path(
            &format!("/u/{user}/0"),
            [Reply::status(503), Reply::status(503)],
        );
    }
    ordered_rule(&hub, &sink, 16).await;

    post_rounds(&hub, 200, 20).await;
    let stored = stored_order(&hub, 1).await;
    assert_eq!(stored.len(), 200);
    let queued = queued_order(&hub, 4000).await;
    assert_eq!(
        queued, stored,
        "JOBS holds each learner's jobs in EVENTS order"
    );

    hub.add_services(&[ServiceName::Dispatcher]).await;
    let requests = wait_delivered(&sink, 200, 20).await;
    assert_in_order_per_key(&requests, 200, 20);
    let learner_7: Vec<(usize, u16)> = requests
        .iter()
        .filter(|r| parse(r).0 == 7)
        .map(|r| (parse(r).1, r.status))
        .take(4)
        .collect();
    assert_eq!(learner_7, [(0, 503), (0, 503), (0, 200), (1, 200)]);
    // Other learners did not wait for learner 7's retries.
    let position = |status: u16| {
        requests
            .iter()
            .position(|r| parse(r) == (7, 0) && r.status == status)
            .expect("attempted")
    };
    let (failed, delivered) = (position(503), position(200));
    let others_meanwhile = requests[failed..delivered]
        .iter()
        .filter(|r| parse(r).0 != 7 && r.status == 200)
        .count();
    assert!(
        others_meanwhile > 0,
        "other learners went on while learner 7 waited for its retries"
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_dispatchers_and_two_partitions_keep_each_learners_order() {
    let mut hub = hub("[streams]\njob_partitions = 2\nevent_partitions = 2\n").await;
    let sink = HttpSink::start().await.expect("sink");
    for user in (3..=100).step_by(10) {
        sink.script_path(&format!("/u/{user}/0"), [Reply::status(503)]);
        sink.script_path(&format!("/u/{user}/4"), [Reply::status(503)]);
    }
    ordered_rule(&hub, &sink, 16).await;
    post_rounds(&hub, 100, 10).await;
    hub.wait_for_matcher_idle().await;
    // Both replicas start with every learner's jobs waiting.
    hub.add_services(&[ServiceName::Dispatcher]).await;
    hub.add_services(&[ServiceName::Dispatcher]).await;

    let requests = wait_delivered(&sink, 100, 10).await;
    assert_in_order_per_key(&requests, 100, 10);
    assert_eq!(
        stored_order(&hub, 2).await.len(),
        100,
        "events of every learner stored"
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_dispatchers_together_keep_to_the_services_concurrency() {
    let mut hub = hub("").await;
    let sink = HttpSink::start().await.expect("sink");
    let answer_after = Duration::from_millis(150);
    sink.set_reply(Reply::status(200).with_delay(answer_after));
    ordered_rule(&hub, &sink, 4).await;
    // Both replicas wait for jobs, so both pull them as they come.
    hub.add_services(&[ServiceName::Dispatcher]).await;
    hub.add_services(&[ServiceName::Dispatcher]).await;
    post_rounds(&hub, 40, 3).await;

    let requests = wait_delivered(&sink, 40, 3).await;
    assert_in_order_per_key(&requests, 40, 3);
    // Each request is in flight from its arrival until the sink answers.
    let mut arrivals: Vec<std::time::Instant> = requests.iter().map(|r| r.received_at).collect();
    arrivals.sort();
    let most_at_once = arrivals
        .iter()
        .map(|at| {
            arrivals
                .iter()
                .filter(|other| *other <= at && at.duration_since(**other) < answer_after)
                .count()
        })
        .max()
        .unwrap_or(0);
    assert!(
        most_at_once <= 4,
        "the two replicas together attempted {most_at_once} at once; the service allows 4"
    );
    assert!(most_at_once > 1, "keys went in parallel");
    hub.stop().await;
}

/// Whether JOBS has `service`'s consumer `name`.
async fn has_consumer(hub: &TestHub, name: &str) -> bool {
    let jobs = hub
        .js
        .get_stream(hub.names().jobs_stream())
        .await
        .expect("jobs");
    jobs.consumer_info(name).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_keyed_lane_starts_with_the_first_rule_that_orders() {
    let mut hub = hub("").await;
    hub.add_services(&[ServiceName::Dispatcher]).await;
    let sink = HttpSink::start().await.expect("sink");
    let created = hub
        .api()
        .post(
            "/api/v1/services",
            &json!({"name": "sis", "transport": {"kind": "rest", "base_url": sink.url()}}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    mih_testkit::eventually(WAIT, || async {
        if has_consumer(&hub, "dispatch-sis").await {
            Ok(())
        } else {
            Err("no worker yet".to_owned())
        }
    })
    .await
    .expect("the service's worker runs");
    assert!(
        !has_consumer(&hub, "ordered-sis").await,
        "no keyed lane for a service no rule orders"
    );

    create_rule(
        &hub,
        json!({"name": "enrolments in order", "events": ["\\core\\event\\user_enrolment_created"],
               "service": "sis", "ordering_key": "{{relateduserid}}",
               "target": {"kind": "rest", "method": "POST", "path": "/u/{{relateduserid}}/{{other.n}}"}}),
    )
    .await;
    hub.wait_for_config(ServiceName::Matcher).await;
    post_rounds(&hub, 10, 5).await;
    let requests = wait_delivered(&sink, 10, 5).await;
    assert_in_order_per_key(&requests, 10, 5);
    assert!(has_consumer(&hub, "ordered-sis").await);
    hub.stop().await;
}

/// The order JOBS holds each learner's jobs in, once it holds `count`.
async fn queued_order(hub: &TestHub, count: usize) -> BTreeMap<u64, Vec<u64>> {
    let jobs = mih_testkit::eventually(WAIT, || async {
        let jobs = hub.stored(&hub.names().jobs_stream()).await;
        if jobs.len() >= count {
            Ok(jobs)
        } else {
            Err(format!("{} of {count} jobs queued", jobs.len()))
        }
    })
    .await
    .unwrap_or_else(|last| panic!("jobs not queued: {last}"));
    let mut order: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for message in jobs {
        let job: Job = messages::decode(&message.payload).expect("a job");
        let Request::Http(request) = &job.request else {
            panic!("an HTTP job");
        };
        let (user, n) = parse_path(&request.path);
        order.entry(user as u64).or_default().push(n as u64);
    }
    order
}

/// The order EVENTS stored each learner's events in, over `partitions` partitions.
async fn stored_order(hub: &TestHub, partitions: u16) -> BTreeMap<u64, Vec<u64>> {
    let mut order: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for partition in 0..partitions {
        for message in hub
            .stored(&hub.names().events_partition_stream(partition))
            .await
        {
            let event: Event = messages::decode(&message.payload).expect("an event");
            let user = event.data["relateduserid"].as_u64().expect("learner");
            let n = event.data["other"]["n"].as_u64().expect("n");
            order.entry(user).or_default().push(n);
        }
    }
    for (user, ns) in &order {
        assert!(
            ns.windows(2).all(|pair| pair[0] < pair[1]),
            "learner {user}'s events stored in the order posted: {ns:?}"
        );
    }
    order
}

/// Services `skip` and `hold` at `sink`, each with a rule ordered by learner whose
/// `ordering_on_dead_letter` is the service's name; a 422 is dead-lettered at once.
async fn dead_letter_rules(hub: &TestHub, sink: &HttpSink) {
    for choice in ["skip", "hold"] {
        let created = hub
            .api()
            .post(
                "/api/v1/services",
                &json!({"name": choice, "transport": {"kind": "rest", "base_url": format!("{}/{choice}", sink.url())},
                        "retry": {"max_retries": 1, "backoff_base_ms": 10, "backoff_cap_ms": 10}}),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
        let rule = create_rule(
            hub,
            json!({"name": format!("in order, {choice}"), "events": ["\\core\\event\\user_enrolment_created"],
                   "service": choice, "ordering_key": "{{relateduserid}}", "ordering_on_dead_letter": choice,
                   "target": {"kind": "rest", "method": "POST", "path": "/u/{{relateduserid}}/{{other.n}}"}}),
        )
        .await;
        let stored = hub.api().get(&format!("/api/v1/rules/{rule}")).await;
        assert_eq!(stored.body["ordering_on_dead_letter"], choice);
    }
    hub.wait_for_config(ServiceName::Matcher).await;
    hub.wait_for_config(ServiceName::Dispatcher).await;
}

/// Paths the sink answered 2xx, in order.
fn delivered_paths(sink: &HttpSink) -> Vec<String> {
    sink.requests()
        .iter()
        .filter(|r| r.status < 300)
        .map(|r| r.uri.path().to_owned())
        .collect()
}

async fn wait_for_paths(sink: &HttpSink, paths: &[&str]) {
    mih_testkit::eventually(WAIT, || async {
        let delivered = delivered_paths(sink);
        match paths.iter().find(|p| !delivered.iter().any(|d| d == *p)) {
            None => Ok(()),
            Some(missing) => Err(format!("{missing} not delivered; delivered: {delivered:?}")),
        }
    })
    .await
    .unwrap_or_else(|last| panic!("{last}"));
}

/// The dead letter of `service` for learner `user`'s first enrolment.
async fn dead_letter_of(hub: &TestHub, service: &str, user: usize) -> String {
    let path = format!("/u/{user}/0");
    mih_testkit::eventually(WAIT, || async {
        let listed = hub
            .api()
            .get(&format!(
                "/api/v1/dead-letters?service={service}&status=dead"
            ))
            .await;
        for item in listed.body["items"].as_array().into_iter().flatten() {
            let Some(id) = item["job_id"].as_str() else {
                continue;
            };
            let detail = hub.api().get(&format!("/api/v1/dead-letters/{id}")).await;
            if detail.body["request"]["path"] == path.as_str() {
                return Ok(id.to_owned());
            }
        }
        Err(format!("no dead letter for {path} yet: {}", listed.body))
    })
    .await
    .unwrap_or_else(|last| panic!("{last}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_skips_or_holds_its_key_as_the_rule_says() {
    let hub = TestHub::builder()
        .services(&[
            ServiceName::Ingest,
            ServiceName::Api,
            ServiceName::Matcher,
            ServiceName::Dispatcher,
            ServiceName::Dlq,
        ])
        .start()
        .await;
    let sink = HttpSink::start().await.expect("sink");
    for choice in ["skip", "hold"] {
        sink.script_path(&format!("/{choice}/u/1/0"), [Reply::status(422)]);
    }
    dead_letter_rules(&hub, &sink).await;
    post_rounds(&hub, 2, 3).await;

    // Skip: learner 1's later enrolments go on. Hold: learner 2 is not held back by learner 1.
    wait_for_paths(
        &sink,
        &[
            "/skip/u/1/1",
            "/skip/u/1/2",
            "/hold/u/2/0",
            "/hold/u/2/1",
            "/hold/u/2/2",
        ],
    )
    .await;
    // Hold: learner 1's later enrolments wait for the dead letter.
    let held = dead_letter_of(&hub, "hold", 1).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let delivered = delivered_paths(&sink);
    assert!(
        !delivered.iter().any(|p| p.starts_with("/hold/u/1/")),
        "learner 1 is held: {delivered:?}"
    );

    // Its replay is delivered ahead of them, then they follow in order.
    let replayed = hub
        .api()
        .post(&format!("/api/v1/dead-letters/{held}/replay"), &json!({}))
        .await;
    assert_eq!(replayed.status, StatusCode::ACCEPTED, "{}", replayed.body);
    wait_for_paths(&sink, &["/hold/u/1/0", "/hold/u/1/1", "/hold/u/1/2"]).await;
    let learner_1: Vec<String> = delivered_paths(&sink)
        .into_iter()
        .filter(|p| p.starts_with("/hold/u/1/"))
        .collect();
    assert_eq!(learner_1, ["/hold/u/1/0", "/hold/u/1/1", "/hold/u/1/2"]);

    // Held again by a new failure, and released by deleting the dead letter.
    sink.script_path("/hold/u/3/0", [Reply::status(422)]);
    post_batch(&hub, (0..2).map(|n| enrolled(3, n)).collect()).await;
    let held = dead_letter_of(&hub, "hold", 3).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!delivered_paths(&sink).iter().any(|p| p == "/hold/u/3/1"));
    let deleted = hub
        .api()
        .delete(&format!("/api/v1/dead-letters/{held}"))
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.body);
    wait_for_paths(&sink, &["/hold/u/3/1"]).await;
    assert!(
        !delivered_paths(&sink).iter().any(|p| p == "/hold/u/3/0"),
        "a deleted dead letter is not delivered"
    );
    hub.stop().await;
}
