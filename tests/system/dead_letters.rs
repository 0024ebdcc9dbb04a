//! Dead letters end to end: the dispatcher (or the matcher) gives a job up, the dlq service
//! keeps it in PostgreSQL, the api (and `mih dlq`) search, replay and delete it, and a replay
//! resolves the dead letter only once it is delivered.

use std::time::Duration;

use chrono::Utc;
use reqwest::StatusCode;
use serde_json::{Value, json};

use mih_shared::ServiceName;
use mih_shared::messages::{self, DeadLetter, Job};
use mih_shared::names::{ServiceSlug, SourceId};
use mih_testkit::fixtures::{dead_letter, job};
use mih_testkit::{HttpSink, Reply};

use crate::harness::{Answer, SECRET_KEY, TestHub};
use crate::process::MihProcess;

const WAIT: Duration = Duration::from_secs(30);
const DELIVERY: &[ServiceName] = &[ServiceName::Api, ServiceName::Dispatcher, ServiceName::Dlq];
const BASE: &str = "/api/v1/dead-letters";

async fn hub() -> TestHub {
    TestHub::builder().services(DELIVERY).start().await
}

/// A REST service at `sink` that gives up after one attempt.
async fn service(hub: &TestHub, name: &str, sink: &HttpSink) {
    let answer = hub
        .api()
        .post(
            "/api/v1/services",
            &json!({
                "name": name,
                "transport": {"kind": "rest", "base_url": format!("{}/api", sink.url())},
                "retry": {"max_retries": 0, "backoff_base_ms": 10, "backoff_cap_ms": 20},
                "concurrency": 50,
            }),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    hub.wait_for_config(ServiceName::Dispatcher).await;
}

async fn publish_job(hub: &TestHub, job: &Job) {
    hub.js
        .publish(
            hub.names().job_subject(&job.service),
            messages::encode(job).expect("encodes"),
        )
        .await
        .expect("publish")
        .await
        .expect("stored");
}

/// Asks for a replay of the dead letter of job `id`.
async fn replay(hub: &TestHub, id: &str) -> Answer {
    hub.api()
        .post(&format!("{BASE}/{id}/replay"), &json!({}))
        .await
}

/// Replays the dead letter of job `id`, asserting it was accepted; the replay's job id.
async fn replayed(hub: &TestHub, id: &str) -> String {
    let answer = replay(hub, id).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
    answer.body["replay_job_id"]
        .as_str()
        .expect("new job")
        .to_owned()
}

async fn publish_dead(hub: &TestHub, dead: &DeadLetter, message_id: &str) {
    let message = async_nats::jetstream::message::PublishMessage::build()
        .payload(messages::encode(dead).expect("encodes"))
        .message_id(message_id);
    hub.js
        .send_publish(hub.names().dlq_subject(&dead.job.service), message)
        .await
        .expect("publish")
        .await
        .expect("stored");
}

/// Publishes many dead letters, awaiting the acks together.
async fn publish_many(hub: &TestHub, letters: &[DeadLetter]) {
    let mut acks = Vec::new();
    for dead in letters {
        let message = async_nats::jetstream::message::PublishMessage::build()
            .payload(messages::encode(dead).expect("encodes"))
            .message_id(format!("dead:{}", dead.job.id));
        acks.push(
            hub.js
                .send_publish(hub.names().dlq_subject(&dead.job.service), message)
                .await
                .expect("publish"),
        );
    }
    let stored = futures::future::join_all(acks.into_iter().map(|ack| ack.into_future())).await;
    for ack in stored {
        ack.expect("stored");
    }
}

/// Waits until `query` lists exactly `count` dead letters (on one page of up to 500).
async fn wait_for_list(hub: &TestHub, query: &str, count: usize) -> Vec<Value> {
    let path = format!("{BASE}?limit=500&{query}");
    mih_testkit::eventually(WAIT, || async {
        let answer = hub.api().get(&path).await;
        let items = answer.body["items"].as_array().cloned().unwrap_or_default();
        if answer.status == StatusCode::OK && items.len() == count {
            Ok(items)
        } else {
            Err(format!("{}: {} items", answer.status, items.len()))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{query} never listed {count}: {e}"))
}

async fn detail(hub: &TestHub, job_id: &str) -> Answer {
    hub.api().get(&format!("{BASE}/{job_id}")).await
}

async fn wait_until_gone(hub: &TestHub, job_id: &str) {
    mih_testkit::eventually(WAIT, || async {
        let answer = detail(hub, job_id).await;
        if answer.status == StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(format!("{}: {}", answer.status, answer.body["status"]))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("dead letter {job_id} never resolved: {e}"));
}

/// Waits until the dlq service acknowledged everything DLQ holds so far.
async fn wait_for_dlq_idle(hub: &TestHub) {
    hub.wait_for_consumer(&hub.names().dlq_stream(), mih_dlq::DEAD_LETTERS)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_failure_is_listed_and_a_replay_after_the_fix_resolves_it() {
    let hub = hub().await;
    let sink = HttpSink::start().await.expect("sink");
    sink.set_reply(Reply::status(400).with_body(r#"{"error": "courseid is unknown"}"#));
    service(&hub, "strict", &sink).await;
    let failing = job("strict", "/enrol", r#"{"user": 27}"#);
    publish_job(&hub, &failing).await;

    let items = wait_for_list(&hub, "service=strict", 1).await;
    let id = failing.id.to_string();
    assert_eq!(items[0]["job_id"], id);
    assert_eq!(items[0]["status"], "dead");
    assert_eq!(items[0]["last_response_status"], 400);
    let one = detail(&hub, &id).await;
    assert_eq!(one.status, StatusCode::OK, "{}", one.body);
    assert_eq!(one.body["request"]["path"], "/enrol");
    assert_eq!(one.body["request"]["body"], r#"{"user": 27}"#);
    assert_eq!(one.body["request"]["method"], "POST");
    assert_eq!(
        one.body["event_id"],
        failing.event_id.expect("event").to_string()
    );
    assert_eq!(one.body["source"], "moodle");
    assert_eq!(one.body["eventname"], "\\core\\event\\user_created");
    assert_eq!(one.body["stage"], "delivery");
    assert_eq!(one.body["attempts"], 1);
    assert!(
        one.body["reason"]
            .as_str()
            .expect("reason")
            .starts_with("permanent failure"),
        "{}",
        one.body
    );
    assert_eq!(one.body["last_outcome"]["status"], "failed_permanent");
    assert_eq!(
        one.body["last_outcome"]["response_excerpt"],
        r#"{"error": "courseid is unknown"}"#
    );
    // The delivery log holds the attempts once the recorder has them; none belong elsewhere.
    for attempt in one.body["deliveries"].as_array().expect("deliveries") {
        assert_eq!(attempt["status"], "failed_permanent");
    }

    sink.set_reply(Reply::status(200));
    let replay_job = replayed(&hub, &id).await;
    assert_ne!(replay_job, id);
    let received = sink.wait_for(2, WAIT).await.expect("the replay delivered");
    let again = &received[1];
    assert_eq!(again.uri.path(), "/api/enrol");
    assert_eq!(
        again.body.as_ref(),
        br#"{"user": 27}"#,
        "the exact stored request"
    );
    assert_eq!(again.header("idempotency-key"), Some(replay_job.as_str()));
    wait_until_gone(&hub, &id).await;
    let audit = hub
        .api()
        .get(&format!(
            "/api/v1/audit?resource_kind=dead_letter&resource_id={id}"
        ))
        .await;
    assert_eq!(audit.body["items"][0]["action"], "replay", "{}", audit.body);
    assert_eq!(audit.body["items"][0]["after"]["status"], "replaying");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_that_fails_again_keeps_the_original_and_links_the_new_one() {
    let hub = hub().await;
    let sink = HttpSink::start().await.expect("sink");
    sink.set_reply(Reply::status(400));
    service(&hub, "strict", &sink).await;
    let failing = job("strict", "/enrol", "{}");
    publish_job(&hub, &failing).await;
    wait_for_list(&hub, "service=strict", 1).await;
    let id = failing.id.to_string();

    let replay_job = replayed(&hub, &id).await;
    let items = wait_for_list(&hub, "service=strict", 2).await;
    let original = items
        .iter()
        .find(|i| i["job_id"] == id)
        .expect("original kept");
    assert_eq!(original["status"], "replaying");
    assert_eq!(original["replay_job_id"], replay_job);
    assert_eq!(
        original["replayed_by"]
            .as_str()
            .map(|s| s.starts_with("token:")),
        Some(true)
    );
    let linked = items
        .iter()
        .find(|i| i["job_id"] == replay_job)
        .expect("new dead letter");
    assert_eq!(linked["replay_of"], id);
    assert_eq!(linked["origin"], "replay");
    assert_eq!(linked["status"], "dead");
    let replaying = wait_for_list(&hub, "service=strict&status=replaying", 1).await;
    assert_eq!(replaying[0]["job_id"], id);

    // Replaying the replay once the target is fixed resolves the whole chain.
    sink.set_reply(Reply::status(200));
    let again = replay(&hub, &replay_job).await;
    assert_eq!(again.status, StatusCode::ACCEPTED, "{}", again.body);
    wait_until_gone(&hub, &replay_job).await;
    wait_until_gone(&hub, &id).await;
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_replay_of_500_filtered_dead_letters_leaves_the_others() {
    let hub = hub().await;
    let sink = HttpSink::start().await.expect("sink");
    service(&hub, "bulk", &sink).await;
    service(&hub, "other", &sink).await;
    let now = Utc::now();
    let letters: Vec<DeadLetter> = (0..500)
        .map(|n| {
            dead_letter(
                job("bulk", &format!("/b/{n}"), "{}"),
                "permanent failure: HTTP 422",
                Some("no"),
                now,
            )
        })
        .chain((0..20).map(|n| {
            dead_letter(
                job("other", &format!("/o/{n}"), "{}"),
                "permanent failure: HTTP 422",
                Some("no"),
                now,
            )
        }))
        .collect();
    publish_many(&hub, &letters).await;
    wait_for_list(&hub, "service=bulk", 500).await;
    wait_for_list(&hub, "service=other", 20).await;

    let refused = hub.api().post(&format!("{BASE}/replay"), &json!({})).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(refused.fields(), ["all"]);
    let started = hub
        .api()
        .post(&format!("{BASE}/replay"), &json!({"service": "bulk"}))
        .await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
    assert_eq!(started.body["total"], 500);
    let location = started.headers["location"]
        .to_str()
        .expect("location")
        .to_owned();
    let finished = mih_testkit::eventually(WAIT, || async {
        let answer = hub.api().get(&location).await;
        if answer.body["status"] == "running" {
            Err(format!("{}", answer.body))
        } else {
            Ok(answer.body)
        }
    })
    .await
    .expect("the operation ends");
    assert_eq!(finished["status"], "completed", "{finished}");
    assert_eq!(finished["done"], 500);
    assert_eq!(finished["failed"], 0);
    let received = sink
        .wait_for(500, WAIT)
        .await
        .expect("every replay delivered");
    assert!(received.iter().all(|r| r.uri.path().starts_with("/api/b/")));
    wait_for_list(&hub, "service=bulk", 0).await;
    let others = wait_for_list(&hub, "service=other&status=dead", 20).await;
    assert!(others.iter().all(|o| o["replay_job_id"].is_null()));

    let cancel = hub
        .api()
        .post(&format!("{location}/cancel"), &json!({}))
        .await;
    assert_eq!(cancel.status, StatusCode::CONFLICT, "an ended operation");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_search_paging_and_delete_by_filter() {
    let hub = hub().await;
    let rule = uuid::Uuid::now_v7();
    let old = Utc::now() - chrono::Duration::days(3);
    let now = Utc::now();
    let mut a = job("alpha", "/a", "{}");
    a.rule_id = Some(messages::RuleId(rule));
    let mut b = job("alpha", "/b", "{}");
    b.eventname = Some("\\mod_quiz\\event\\attempt_submitted".into());
    let mut c = job("beta", "/c", "{}");
    c.source = Some(SourceId::parse("other-site").expect("source"));
    let letters = vec![
        dead_letter(
            a.clone(),
            "permanent failure: HTTP 400",
            Some("Course NOT found"),
            now,
        ),
        dead_letter(b.clone(), "max job age exceeded", None, old),
        dead_letter(
            c.clone(),
            "permanent failure: HTTP 409",
            Some("duplicate 50%_user"),
            now,
        ),
    ];
    publish_many(&hub, &letters).await;
    wait_for_list(&hub, "", 3).await;

    let ids = |items: Vec<Value>| -> Vec<String> {
        let mut ids: Vec<String> = items
            .iter()
            .map(|i| i["job_id"].as_str().expect("id").to_owned())
            .collect();
        ids.sort();
        ids
    };
    let of = |jobs: &[&Job]| -> Vec<String> {
        let mut ids: Vec<String> = jobs.iter().map(|j| j.id.to_string()).collect();
        ids.sort();
        ids
    };
    assert_eq!(
        ids(wait_for_list(&hub, "service=alpha", 2).await),
        of(&[&a, &b])
    );
    assert_eq!(
        ids(wait_for_list(&hub, &format!("rule_id={rule}"), 1).await),
        of(&[&a])
    );
    assert_eq!(
        ids(wait_for_list(&hub, "eventname=mod_quiz%5Cevent%5Cattempt_submitted", 1).await),
        of(&[&b])
    );
    assert_eq!(
        ids(wait_for_list(&hub, "source=other-site", 1).await),
        of(&[&c])
    );
    assert_eq!(
        ids(wait_for_list(&hub, "q=course%20not", 1).await),
        of(&[&a]),
        "the error, any case"
    );
    assert_eq!(
        ids(wait_for_list(&hub, "q=AGE%20EXCEEDED", 1).await),
        of(&[&b]),
        "the reason"
    );
    assert_eq!(
        ids(wait_for_list(&hub, "q=50%25_", 1).await),
        of(&[&c]),
        "literally"
    );
    wait_for_list(&hub, "q=5%25x", 0).await;
    let from =
        (now - chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert_eq!(
        ids(wait_for_list(&hub, &format!("from={from}"), 2).await),
        of(&[&a, &c])
    );
    assert_eq!(
        ids(wait_for_list(&hub, &format!("to={from}"), 1).await),
        of(&[&b])
    );
    wait_for_list(&hub, "stage=render", 0).await;
    wait_for_list(&hub, "stage=delivery", 3).await;

    // Newest first, a page at a time.
    let first = hub.api().get(&format!("{BASE}?limit=2")).await;
    assert_eq!(first.body["items"].as_array().map(Vec::len), Some(2));
    // a and c died at the same instant: the later job id first.
    assert_eq!(first.body["items"][0]["job_id"], c.id.to_string());
    assert_eq!(first.body["items"][1]["job_id"], a.id.to_string());
    let cursor = first.body["next_cursor"].as_str().expect("more");
    let second = hub
        .api()
        .get(&format!("{BASE}?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(second.body["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        second.body["items"][0]["job_id"],
        b.id.to_string(),
        "the oldest last"
    );
    assert!(second.body["next_cursor"].is_null());

    let bad = hub
        .api()
        .get(&format!("{BASE}?stage=sending&status=x&colour=red"))
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.body);
    let bad = hub
        .api()
        .get(&format!("{BASE}?stage=sending&status=x"))
        .await;
    assert_eq!(bad.fields(), ["stage", "status"]);

    let everything = hub.api().post(&format!("{BASE}/delete"), &json!({})).await;
    assert_eq!(everything.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(everything.fields(), ["all"]);
    let typo = hub
        .api()
        .post(&format!("{BASE}/delete"), &json!({"sevice": "alpha"}))
        .await;
    assert_eq!(
        typo.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown fields are refused"
    );
    let deleted = hub
        .api()
        .post(&format!("{BASE}/delete"), &json!({"service": "alpha"}))
        .await;
    assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.body);
    assert_eq!(deleted.body["deleted"], 2);
    assert_eq!(ids(wait_for_list(&hub, "", 1).await), of(&[&c]));
    let issued = hub
        .api()
        .post(
            "/api/v1/tokens",
            &json!({"label": "dashboard", "role": "viewer"}),
        )
        .await;
    let viewer = issued.body["token"].as_str().expect("token").to_owned();
    let refused = hub
        .api_as(&viewer)
        .delete(&format!("{BASE}/{}", c.id))
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(
        hub.api_as(&viewer)
            .get(&format!("{BASE}/{}", c.id))
            .await
            .status,
        StatusCode::OK
    );
    let gone = hub.api().delete(&format!("{BASE}/{}", c.id)).await;
    assert_eq!(gone.status, StatusCode::NO_CONTENT);
    assert_eq!(
        detail(&hub, &c.id.to_string()).await.status,
        StatusCode::NOT_FOUND
    );
    let all = hub
        .api()
        .post(&format!("{BASE}/delete"), &json!({"all": true}))
        .await;
    assert_eq!(all.body["deleted"], 0);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_dead_letter_twice_is_one_row_and_a_gone_service_cannot_be_replayed() {
    let hub = hub().await;
    let letter = dead_letter(
        job("vanished", "/x", "{}"),
        "permanent failure",
        Some("no"),
        Utc::now(),
    );
    // Different message ids, so JetStream stores both and the table must dedupe.
    publish_dead(&hub, &letter, "first").await;
    publish_dead(&hub, &letter, "second").await;
    hub.js
        .publish(
            hub.names().dlq_subject(&letter.job.service),
            "not json".into(),
        )
        .await
        .expect("publish")
        .await
        .expect("stored");
    wait_for_dlq_idle(&hub).await;
    let items = wait_for_list(&hub, "", 1).await;
    assert_eq!(items[0]["job_id"], letter.job.id.to_string());
    let metrics = hub.metrics(ServiceName::Dlq).await;
    assert!(
        metrics.contains("mih_dlq_dead_letters_duplicate_total"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mih_dlq_unreadable_total{stream=\"dlq\"}"),
        "{metrics}"
    );

    let replay = replay(&hub, &letter.job.id.to_string()).await;
    assert_eq!(replay.status, StatusCode::CONFLICT, "{}", replay.body);
    assert!(
        replay.body.to_string().contains("no longer exists"),
        "{}",
        replay.body
    );
    assert_eq!(
        wait_for_list(&hub, "status=dead", 1).await.len(),
        1,
        "nothing changed"
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_render_failure_is_replayed_after_fixing_the_rule() {
    let hub = TestHub::builder().start().await;
    let sink = HttpSink::start().await.expect("sink");
    service(&hub, "sis", &sink).await;
    let rule = crate::matcher::create_rule(
        &hub,
        json!({"name": "needs grade", "events": ["*"], "service": "sis",
               "target": {"kind": "rest", "method": "POST", "path": "/grades/{{courseid}}"},
               "body": "{\"grade\": {{other.finalgrade}}}"}),
    )
    .await;
    crate::matcher::settle(&hub).await;
    crate::matcher::post(&hub, &crate::matcher::enrolment(), &[]).await;
    let items = wait_for_list(&hub, "stage=render", 1).await;
    let id = items[0]["job_id"].as_str().expect("id").to_owned();
    assert_eq!(items[0]["rule_id"], rule);
    assert!(
        items[0]["reason"]
            .as_str()
            .expect("reason")
            .contains("other.finalgrade")
    );
    let one = detail(&hub, &id).await;
    assert!(
        one.body["event"]["data"].is_object() || one.body["event"].is_object(),
        "{}",
        one.body
    );

    let still = replay(&hub, &id).await;
    assert_eq!(
        still.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        still.body
    );
    assert_eq!(still.fields(), ["rule"]);
    assert!(
        still.body.to_string().contains("other.finalgrade"),
        "{}",
        still.body
    );
    assert_eq!(
        detail(&hub, &id).await.body["status"],
        "dead",
        "nothing was published"
    );

    let fixed = hub
        .api()
        .patch(
            &format!("/api/v1/rules/{rule}"),
            &json!({"body": "{\"course\": {{courseid}}}"}),
        )
        .await;
    assert_eq!(fixed.status, StatusCode::OK, "{}", fixed.body);
    let replayed = replay(&hub, &id).await;
    assert_eq!(replayed.status, StatusCode::ACCEPTED, "{}", replayed.body);
    let received = sink.wait_for(1, WAIT).await.expect("delivered");
    assert_eq!(received[0].uri.path(), "/api/grades/12");
    assert_eq!(received[0].json().expect("json"), json!({"course": 12}));
    wait_until_gone(&hub, &id).await;
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mih_dlq_lists_replays_and_deletes_from_the_command_line() {
    let hub = hub().await;
    let sink = HttpSink::start().await.expect("sink");
    service(&hub, "cli", &sink).await;
    let now = Utc::now();
    let letters: Vec<DeadLetter> = (0..4)
        .map(|n| {
            let reason = if n < 2 {
                "permanent failure: boom"
            } else {
                "permanent failure: fizz"
            };
            dead_letter(
                job("cli", &format!("/c/{n}"), "{}"),
                reason,
                Some("no"),
                now,
            )
        })
        .collect();
    publish_many(&hub, &letters).await;
    wait_for_list(&hub, "service=cli", 4).await;
    let env = [
        ("MIH_NAMESPACE", hub.config.namespace.to_string()),
        ("MIH_NATS_URL", hub.nats.url().to_owned()),
        (
            "MIH_DATABASE_URL",
            hub.config.database.url.expose().to_owned(),
        ),
        ("MIH_SECRET_KEY", SECRET_KEY.to_owned()),
    ];
    let mih = |args: &[&str]| MihProcess::spawn(args, &env).wait(WAIT);

    let (status, output) = mih(&["dlq", "list", "--service", "cli", "-q", "BOOM"]).await;
    assert!(status.success(), "{output}");
    assert!(output.contains(&letters[0].job.id.to_string()), "{output}");
    assert!(output.contains(&letters[1].job.id.to_string()), "{output}");
    assert!(!output.contains(&letters[2].job.id.to_string()), "{output}");
    assert!(output.contains("2 of 2 dead letter(s)"), "{output}");

    let one = letters[0].job.id.to_string();
    let (status, output) = mih(&["dlq", "replay", "--id", &one]).await;
    assert!(status.success(), "{output}");
    assert!(output.contains("replayed as job"), "{output}");
    wait_until_gone(&hub, &one).await;

    let (status, output) = mih(&["dlq", "replay", "--filter", "service=cli,q=boom"]).await;
    assert!(status.success(), "{output}");
    assert!(
        output.contains("completed: 1 replayed, 0 failed of 1"),
        "{output}"
    );
    wait_until_gone(&hub, &letters[1].job.id.to_string()).await;
    assert_eq!(
        sink.wait_for(2, WAIT).await.expect("both delivered").len(),
        2
    );

    let (status, output) = mih(&["dlq", "delete"]).await;
    assert!(
        !status.success(),
        "an empty filter deletes nothing: {output}"
    );
    assert!(output.contains("all"), "{output}");
    let (status, output) = mih(&["dlq", "delete", "--id", &letters[2].job.id.to_string()]).await;
    assert!(status.success(), "{output}");
    let (status, output) = mih(&["dlq", "delete", "--filter", "service=cli"]).await;
    assert!(status.success(), "{output}");
    assert!(output.contains("1 dead letter(s) deleted"), "{output}");
    wait_for_list(&hub, "", 0).await;
    let audit = hub
        .api()
        .get("/api/v1/audit?resource_kind=dead_letters")
        .await;
    assert_eq!(audit.body["items"][0]["actor"], "cli", "{}", audit.body);
    hub.stop().await;
}

/// Moodle may send NUL in event text; jsonb refuses it. A dead letter carrying it used to be
/// retried forever by the dlq service, and 80 of them blocked every later dead letter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_with_nul_is_kept_and_replayed_exactly() {
    let hub = hub().await;
    let sink = HttpSink::start().await.expect("sink");
    sink.set_reply(Reply::status(422).with_body("no\u{0}thanks"));
    service(&hub, "sis", &sink).await;
    // A NUL character itself (what `\u0000` in a Moodle event's JSON becomes).
    let body = "{\"name\":\"Ana\u{0}María\"}";
    let nul_job = job("sis", "/users/nul", body);
    // More than the dlq service takes at once (64), then one without NUL behind them.
    let letters: Vec<DeadLetter> = (0..80)
        .map(|i| {
            let mut nul = job("sis", &format!("/users/{i}"), body);
            nul.eventname = Some(format!("\\core\\event\\user_created\u{0}{i}"));
            dead_letter(
                nul,
                "permanent failure: HTTP 422\u{0}",
                Some("HTTP 422"),
                Utc::now(),
            )
        })
        .collect();
    publish_many(&hub, &letters).await;
    let clean = dead_letter(
        job("sis", "/users/clean", "{}"),
        "HTTP 422",
        Some("HTTP 422"),
        Utc::now(),
    );
    publish_dead(&hub, &clean, "dead:clean").await;
    wait_for_list(&hub, "service=sis", 81).await;

    // A real one through the dispatcher, then a replay that must send the body byte for byte.
    publish_job(&hub, &nul_job).await;
    wait_for_list(&hub, "service=sis", 82).await;
    let shown = detail(&hub, &nul_job.id.to_string()).await;
    assert_eq!(shown.status, StatusCode::OK, "{}", shown.body);
    assert_eq!(
        shown.body["request"]["body"], "{\"name\":\"Ana\u{FFFD}María\"}",
        "shown with U+FFFD in place of NUL"
    );
    sink.set_reply(Reply::status(200));
    let replayed = replay(&hub, &nul_job.id.to_string()).await;
    assert_eq!(replayed.status, StatusCode::ACCEPTED, "{}", replayed.body);
    let received = sink.wait_for(2, WAIT).await.expect("the replay");
    assert_eq!(
        &received[1].body[..],
        body.as_bytes(),
        "the exact body, NUL included"
    );
    wait_until_gone(&hub, &nul_job.id.to_string()).await;
    hub.stop().await;
}

/// The poison policy: a dead letter PostgreSQL refuses is tried a few times, then parked,
/// and the ones behind it are stored; a parked one can be retried once the cause is fixed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_the_database_refuses_are_parked_and_never_block_the_others() {
    let hub = TestHub::builder()
        .services(&[ServiceName::Api, ServiceName::Dlq])
        .start()
        .await;
    let db = sqlx::PgPool::connect(hub.config.database.url.expose())
        .await
        .expect("database");
    // A refusal PostgreSQL will give for these rows' content, whatever it is.
    sqlx::query(
        "ALTER TABLE dead_letters ADD CONSTRAINT no_poison CHECK (reason NOT LIKE 'poison%')",
    )
    .execute(&db)
    .await
    .expect("constraint");
    let poison: Vec<DeadLetter> = (0..80)
        .map(|i| {
            dead_letter(
                job("sis", &format!("/p/{i}"), "{}"),
                &format!("poison {i}"),
                None,
                Utc::now(),
            )
        })
        .collect();
    publish_many(&hub, &poison).await;
    // And one that is not even a dead letter.
    hub.js
        .publish(
            hub.names()
                .dlq_subject(&ServiceSlug::parse("sis").expect("slug")),
            "not json".into(),
        )
        .await
        .expect("publish")
        .await
        .expect("stored");
    let fine: Vec<DeadLetter> = (0..5)
        .map(|i| {
            dead_letter(
                job("sis", &format!("/f/{i}"), "{}"),
                "HTTP 422",
                None,
                Utc::now(),
            )
        })
        .collect();
    publish_many(&hub, &fine).await;
    wait_for_list(&hub, "service=sis", 5).await;

    let parked = mih_testkit::eventually(Duration::from_secs(60), || async {
        let page = hub.api().get("/api/v1/parked?limit=500").await;
        let items = page.body["items"].as_array().cloned().unwrap_or_default();
        if items.len() == 81 {
            Ok(items)
        } else {
            Err(format!("{} parked", items.len()))
        }
    })
    .await
    .expect("every refused message parked");
    assert!(parked.iter().all(|p| p["consumer"] == "dlq"));
    let refused = parked
        .iter()
        .find(|p| {
            p["payload"]
                .as_str()
                .is_some_and(|t| t.contains("poison 7"))
        })
        .expect("a poison letter");
    assert!(
        refused["error"]
            .as_str()
            .unwrap_or_default()
            .contains("no_poison"),
        "{refused}"
    );
    assert!(refused["deliveries"].as_i64().unwrap_or_default() >= 5);
    let unreadable = parked
        .iter()
        .find(|p| p["payload"] == "not json")
        .expect("the unreadable message");
    assert!(
        unreadable["error"]
            .as_str()
            .unwrap_or_default()
            .contains("not readable"),
        "{unreadable}"
    );
    let metrics = hub.metrics(ServiceName::Dlq).await;
    assert!(
        metrics.contains("mih_projection_parked_total{consumer=\"dlq\"} 81"),
        "{metrics}"
    );

    // Fixed: a retry stores it, and it leaves the parked list.
    sqlx::query("ALTER TABLE dead_letters DROP CONSTRAINT no_poison")
        .execute(&db)
        .await
        .expect("drop constraint");
    let id = refused["id"].as_str().expect("id");
    let retried = hub
        .api()
        .post(&format!("/api/v1/parked/{id}/retry"), &json!({}))
        .await;
    assert_eq!(retried.status, StatusCode::ACCEPTED, "{}", retried.body);
    wait_for_list(&hub, "service=sis", 6).await;
    assert_eq!(
        hub.api().get(&format!("/api/v1/parked/{id}")).await.status,
        StatusCode::NOT_FOUND
    );
    let deleted = hub
        .api()
        .delete(&format!(
            "/api/v1/parked/{}",
            unreadable["id"].as_str().expect("id")
        ))
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let viewer = hub.api_as("nobody");
    assert_eq!(
        viewer.get("/api/v1/parked").await.status,
        StatusCode::UNAUTHORIZED
    );
    hub.stop().await;
}
