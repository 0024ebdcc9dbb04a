//! The matcher against real NATS: events become jobs, once, through crashes and duplicates.

use std::time::Duration;

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

use mih_shared::ServiceName;
use mih_shared::live::ConfigSnapshot;
use mih_shared::messages::{self, DeadLetter, FailureStage, Job, JobId, Origin, Request};
use mih_testkit::fixtures;
use mih_testkit::sign::TEST_TOKEN;

use crate::harness::TestHub;

const PIPELINE: &[ServiceName] = &[ServiceName::Ingest, ServiceName::Api, ServiceName::Matcher];

pub(crate) async fn pipeline(extra_toml: &str) -> TestHub {
    TestHub::builder()
        .services(PIPELINE)
        .toml(extra_toml)
        .start()
        .await
}

pub(crate) async fn create_service(hub: &TestHub, name: &str) {
    let answer = hub
        .api()
        .post(
            "/api/v1/services",
            &json!({"name": name, "transport": {"kind": "rest", "base_url": "https://sis.example.org/api"}}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
}

pub(crate) async fn create_rule(hub: &TestHub, body: Value) -> String {
    let answer = hub.api().post("/api/v1/rules", &body).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    answer.body["id"].as_str().expect("id").to_owned()
}

/// Waits until the matcher applied every rule written so far.
pub(crate) async fn settle(hub: &TestHub) {
    hub.wait_for_config(ServiceName::Matcher).await;
}

pub(crate) async fn jobs(hub: &TestHub) -> Vec<(crate::harness::Stored, Job)> {
    hub.stored(&hub.names().jobs_stream())
        .await
        .into_iter()
        .map(|m| {
            let job: Job = messages::decode(&m.payload).expect("a job");
            (m, job)
        })
        .collect()
}

pub(crate) async fn wait_for_jobs(
    hub: &TestHub,
    count: usize,
) -> Vec<(crate::harness::Stored, Job)> {
    wait_for_jobs_within(hub, count, Duration::from_secs(15)).await
}

pub(crate) async fn wait_for_jobs_within(
    hub: &TestHub,
    count: usize,
    patience: Duration,
) -> Vec<(crate::harness::Stored, Job)> {
    mih_testkit::eventually(patience, || async {
        let found = jobs(hub).await;
        if found.len() >= count {
            Ok(found)
        } else {
            Err(format!("{} jobs of {count}", found.len()))
        }
    })
    .await
    .expect("jobs published")
}

pub(crate) async fn post(hub: &TestHub, event: &Value, headers: &[(String, String)]) -> String {
    let mut all = vec![("authorization".to_owned(), format!("Bearer {TEST_TOKEN}"))];
    all.extend_from_slice(headers);
    let answer = hub
        .post_events(event.to_string().into_bytes(), "application/json", &all)
        .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
    answer.body["events"][0]["id"]
        .as_str()
        .expect("id")
        .to_owned()
}

pub(crate) fn enrolment() -> Value {
    fixtures::moodle_events()
        .into_iter()
        .find(|e| e["eventname"] == "\\core\\event\\user_enrolment_created")
        .expect("fixture")
}

#[tokio::test]
async fn a_matching_event_becomes_one_job_per_matching_rule() {
    let hub = pipeline("").await;
    create_service(&hub, "sis").await;
    let enrolments = create_rule(
        &hub,
        json!({"name": "enrolments", "events": ["\\core\\event\\user_enrolment_created"], "service": "sis",
               "target": {"kind": "rest", "method": "PUT", "path": "/enrolments/{{objectid}}"},
               "body": "{\"user\": {{relateduserid}}, \"course\": \"{{courseid}}\", \"rule\": \"{{rule.name}}\"}",
               "headers": {"X-Event": "{{event.id}}"}}),
    )
    .await;
    let _other = create_rule(
        &hub,
        json!({"name": "quiz", "events": ["\\mod_quiz\\event\\*"], "service": "sis"}),
    )
    .await;
    let conditional = create_rule(&hub, json!({"name": "course 12", "events": ["*"], "service": "sis", "condition": "courseid == 12"})).await;
    settle(&hub).await;

    let event_id = post(&hub, &enrolment(), &[]).await;
    let found = wait_for_jobs(&hub, 2).await;
    hub.wait_for_matcher_idle().await;
    let found_again = jobs(&hub).await;
    assert_eq!(found_again.len(), 2, "exactly the two matching rules");

    let event = hub
        .stored_events()
        .await
        .into_iter()
        .next()
        .expect("the event");
    let event_trace = event.header("traceparent").expect("traceparent");
    for (stored, job) in &found {
        assert_eq!(
            stored.subject,
            hub.names().job_subject(&"sis".parse().expect("slug"))
        );
        assert_eq!(stored.header("Nats-Msg-Id"), Some(job.id.to_string()));
        assert_eq!(
            job.event_id.map(|id| id.to_string()).as_deref(),
            Some(event_id.as_str())
        );
        assert_eq!(
            job.id,
            JobId::for_rule(job.event_id.expect("event"), job.rule_id.expect("rule"))
        );
        assert_eq!(job.origin, Origin::Rule);
        let trace = stored.header("traceparent").expect("traceparent");
        assert_eq!(
            trace.split('-').nth(1),
            event_trace.split('-').nth(1),
            "one trace from ingest on"
        );
    }
    let (_, templated) = found
        .iter()
        .find(|(_, j)| j.rule_id.map(|r| r.to_string()) == Some(enrolments.clone()))
        .expect("templated job");
    let Request::Http(request) = &templated.request else {
        panic!("http")
    };
    assert_eq!(request.path, "/enrolments/4411");
    assert_eq!(request.headers[0].value, event_id);
    let body: Value = serde_json::from_str(request.body.as_deref().expect("body")).expect("JSON");
    assert_eq!(
        body,
        json!({"user": 27, "course": "12", "rule": "enrolments"})
    );
    let (_, raw) = found
        .iter()
        .find(|(_, j)| j.rule_id.map(|r| r.to_string()) == Some(conditional.clone()))
        .expect("raw job");
    let Request::Http(request) = &raw.request else {
        panic!("http")
    };
    let sent: Value = serde_json::from_str(request.body.as_deref().expect("body")).expect("JSON");
    assert_eq!(
        sent,
        enrolment(),
        "no template: the event as Moodle gave it"
    );
    hub.stop().await;
}

#[tokio::test]
async fn unmatched_events_are_acknowledged_and_produce_nothing() {
    let hub = pipeline("").await;
    create_service(&hub, "sis").await;
    create_rule(
        &hub,
        json!({"name": "quiz", "events": ["\\mod_quiz\\event\\*"], "service": "sis"}),
    )
    .await;
    settle(&hub).await;
    post(&hub, &enrolment(), &[]).await;
    let consumer_idle = mih_testkit::eventually(Duration::from_secs(10), || async {
        let stream = hub
            .js
            .get_stream(hub.names().events_stream())
            .await
            .map_err(|e| e.to_string())?;
        let info = stream
            .consumer_info(mih_shared::names::MATCHER_CONSUMER)
            .await
            .map_err(|e| e.to_string())?;
        if info.num_pending == 0 && info.num_ack_pending == 0 && info.delivered.stream_sequence >= 1
        {
            Ok(())
        } else {
            Err(format!(
                "pending {} ack pending {}",
                info.num_pending, info.num_ack_pending
            ))
        }
    })
    .await;
    consumer_idle.expect("the event was processed and acknowledged");
    assert!(jobs(&hub).await.is_empty());
    hub.stop().await;
}

#[tokio::test]
async fn equal_mih_style_tuples_are_different_events_but_equal_dedup_keys_are_not() {
    // A 1 s JetStream window lets the second post with the same key reach the matcher.
    let hub = pipeline("[streams]\nduplicate_window = \"1s\"\n").await;
    create_service(&hub, "sis").await;
    create_rule(
        &hub,
        json!({"name": "views", "events": ["\\core\\event\\course_viewed"], "service": "sis"}),
    )
    .await;
    settle(&hub).await;
    let viewed = fixtures::moodle_events()
        .into_iter()
        .find(|e| e["eventname"] == "\\core\\event\\course_viewed")
        .expect("fixture");
    // Same (eventname, objectid, userid, relateduserid, crud) — the original plugin's key —
    // but two courses: two events, two jobs.
    let mut other_course = viewed.clone();
    other_course["courseid"] = json!(57);
    other_course["contextinstanceid"] = json!(57);
    post(&hub, &viewed, &[]).await;
    post(&hub, &other_course, &[]).await;
    wait_for_jobs(&hub, 2).await;

    // The same dedup key (Idempotency-Key) again after the JetStream window: ingest stores a
    // new event, the matcher drops it as a duplicate.
    let key = vec![("idempotency-key".to_owned(), "moodle-task-991".to_owned())];
    let mut third = viewed.clone();
    third["courseid"] = json!(64);
    post(&hub, &third, &key).await;
    wait_for_jobs(&hub, 3).await;
    let mut fourth = viewed.clone();
    fourth["courseid"] = json!(61);
    // Re-sent until the 1 s window has passed and ingest stores it instead of calling it a duplicate.
    let fourth_id = mih_testkit::eventually(Duration::from_secs(10), || async {
        let mut headers = vec![("authorization".to_owned(), format!("Bearer {TEST_TOKEN}"))];
        headers.extend_from_slice(&key);
        let answer = hub
            .post_events(
                fourth.to_string().into_bytes(),
                "application/json",
                &headers,
            )
            .await;
        match answer.body["duplicates"].as_u64() {
            Some(0) => Ok(answer.body["events"][0]["id"]
                .as_str()
                .unwrap_or_default()
                .to_owned()),
            _ => Err(format!("{}: {}", answer.status, answer.body)),
        }
    })
    .await
    .expect("stored once the window passed");
    assert_eq!(
        hub.stored_events().await.len(),
        4,
        "ingest stored the late repeat as a new event"
    );
    let metrics_url = hub.url(ServiceName::Matcher, "/metrics");
    mih_testkit::eventually(Duration::from_secs(10), || async {
        let text = hub
            .http
            .get(&metrics_url)
            .send()
            .await
            .map_err(|e| e.to_string())?
            .text()
            .await
            .map_err(|e| e.to_string())?;
        if text.contains("mih_matcher_events_total{outcome=\"duplicate\"} 1") {
            Ok(())
        } else {
            Err("no duplicate counted yet".into())
        }
    })
    .await
    .expect("the duplicate is counted");
    let all = jobs(&hub).await;
    assert_eq!(all.len(), 3, "no job for the duplicate");
    assert!(
        all.iter()
            .all(|(_, j)| j.event_id.map(|id| id.to_string()) != Some(fourth_id.clone()))
    );
    hub.stop().await;
}

/// nats-server keeps every key of a bucket in memory, so the dedup claims are bounded: past
/// `matcher.dedup_max_claims` the oldest go first. A full bucket must never refuse a claim
/// (which would stop the matcher): every event still becomes its job, a repeat of a recent
/// event is still a duplicate, and only a repeat of a dropped claim gets through again.
#[tokio::test]
async fn a_full_dedup_bucket_drops_its_oldest_claims_and_keeps_matching() {
    const CAP: usize = 1_000;
    const SENT: usize = 1_100;
    let hub = pipeline(&format!(
        "[streams]\nduplicate_window = \"1s\"\n[matcher]\ndedup_max_claims = {CAP}\n"
    ))
    .await;
    create_service(&hub, "sis").await;
    create_rule(
        &hub,
        json!({"name": "views", "events": ["\\core\\event\\course_viewed"], "service": "sis"}),
    )
    .await;
    settle(&hub).await;
    let viewed = fixtures::moodle_events()
        .into_iter()
        .find(|e| e["eventname"] == "\\core\\event\\course_viewed")
        .expect("fixture");
    let keyed = |i: usize| json!({"idempotency_key": format!("row-{i}"), "event": viewed});
    for (n, chunk) in (0..SENT).collect::<Vec<_>>().chunks(100).enumerate() {
        let batch: Vec<Value> = chunk.iter().map(|&i| keyed(i)).collect();
        post(&hub, &Value::Array(batch), &[]).await;
        if n == 0 {
            // The matcher claims concurrently: the first hundred are the oldest claims only
            // once they are all made before the rest arrive.
            wait_for_jobs(&hub, chunk.len()).await;
        }
    }
    wait_for_jobs_within(&hub, SENT, Duration::from_secs(90)).await;
    let claims = hub
        .js
        .get_stream(format!("KV_{}", hub.names().dedup_bucket()))
        .await
        .expect("dedup bucket")
        .info()
        .await
        .expect("bucket info")
        .state
        .messages;
    assert_eq!(
        claims, CAP as u64,
        "the bucket keeps its newest claims only"
    );

    // Past the 1 s JetStream window, ingest stores both repeats and the matcher decides.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    post(&hub, &json!([keyed(SENT - 1)]), &[]).await;
    let dropped_claim = post(&hub, &json!([keyed(0)]), &[]).await;
    wait_for_jobs(&hub, SENT + 1).await;
    let text = mih_testkit::eventually(Duration::from_secs(10), || async {
        let text = hub.metrics(ServiceName::Matcher).await;
        if text.contains("mih_matcher_events_total{outcome=\"duplicate\"} 1") {
            Ok(text)
        } else {
            Err("the recent repeat is not counted as a duplicate yet".to_owned())
        }
    })
    .await
    .expect("the repeat of a kept claim is a duplicate");
    assert!(
        text.contains("mih_matcher_dedup_claims"),
        "the bucket's size is exported"
    );
    let all = jobs(&hub).await;
    assert_eq!(
        all.len(),
        SENT + 1,
        "one job more: the repeat whose claim was dropped"
    );
    assert!(
        all.iter()
            .any(|(_, j)| j.event_id.map(|id| id.to_string()) == Some(dropped_claim.clone())),
        "the repeat of the oldest event got through"
    );
    hub.stop().await;
}

#[tokio::test]
async fn a_crash_between_publishing_jobs_and_acknowledging_publishes_them_once() {
    let mut hub = TestHub::builder()
        .services(&[ServiceName::Ingest, ServiceName::Api])
        .toml("[matcher]\nack_wait = \"1s\"\n")
        .start()
        .await;
    create_service(&hub, "sis").await;
    create_rule(
        &hub,
        json!({"name": "a", "events": ["*"], "service": "sis"}),
    )
    .await;
    create_rule(&hub, json!({"name": "b", "events": ["\\core\\event\\*"], "service": "sis", "condition": "courseid == 12"})).await;
    post(&hub, &enrolment(), &[]).await;

    // A matcher replica takes the event from the shared durable consumer, claims its dedup key
    // and publishes its jobs with the matcher's own code, then dies before acknowledging.
    let config = &hub.config;
    let events = hub
        .js
        .get_stream(hub.names().events_stream())
        .await
        .expect("stream");
    let consumer = events
        .create_consumer(mih_matcher_consumer_config(
            &hub,
            config.matcher.max_in_flight,
        ))
        .await
        .expect("consumer");
    let mut pulled = consumer
        .fetch()
        .max_messages(1)
        .messages()
        .await
        .expect("fetch");
    let message = pulled.next().await.expect("the event").expect("message");
    let event: messages::Event = messages::decode(&message.payload).expect("event");
    let snapshot = ConfigSnapshot::start(
        &hub.js,
        &hub.names().config_bucket(),
        "test",
        mih_shared::Shutdown::new(),
    )
    .await
    .expect("snapshot");
    let rules = mih_rules::RuleSet::build(&snapshot.current());
    let matches = rules.matches(&event, Origin::Rule).expect("usable");
    assert_eq!(matches.len(), 2);
    // What a matcher does at start: provision its bucket.
    mih_shared::topology::Topology::new(hub.names(), &hub.config)
        .ensure(&hub.js, &[mih_shared::topology::Resource::DedupKv])
        .await
        .expect("dedup bucket");
    let dedup = mih_rules::dedup::Dedup::open(&hub.js, &hub.names().dedup_bucket())
        .await
        .expect("bucket");
    assert_eq!(
        dedup.claim(&event).await.expect("claim"),
        mih_rules::dedup::Claim::Claimed
    );
    let published = mih_rules::publish::publish(
        &hub.js,
        &hub.names(),
        mih_shared::partition::Partitions::ONE,
        &event,
        matches,
    )
    .await
    .expect("published");
    assert_eq!(published.jobs, 2);
    drop(pulled);
    drop(message); // the crash: never acknowledged
    assert_eq!(jobs(&hub).await.len(), 2);

    // The real matcher starts, receives the redelivery, finds its own claim, publishes again:
    // JetStream recognises the job ids. Still two jobs, and the event is acknowledged.
    hub.add_services(&[ServiceName::Matcher]).await;
    let stream = hub
        .js
        .get_stream(hub.names().events_stream())
        .await
        .expect("stream");
    mih_testkit::eventually(Duration::from_secs(15), || async {
        let info = stream
            .consumer_info(mih_shared::names::MATCHER_CONSUMER)
            .await
            .map_err(|e| e.to_string())?;
        if info.num_ack_pending == 0
            && info.num_pending == 0
            && info.delivered.consumer_sequence >= 2
        {
            Ok(())
        } else {
            Err(format!(
                "ack pending {} deliveries {}",
                info.num_ack_pending, info.delivered.consumer_sequence
            ))
        }
    })
    .await
    .expect("the redelivered event was processed and acknowledged");
    let after = jobs(&hub).await;
    assert_eq!(after.len(), 2, "published once");
    let ids: std::collections::BTreeSet<_> = after.iter().map(|(_, j)| j.id).collect();
    assert_eq!(ids.len(), 2);
    hub.stop().await;
}

#[tokio::test]
async fn a_consumer_made_with_the_former_filter_loses_it_and_matches_what_waits() {
    let mut hub = TestHub::builder()
        .services(&[ServiceName::Ingest, ServiceName::Api])
        .start()
        .await;
    create_service(&hub, "sis").await;
    create_rule(
        &hub,
        json!({"name": "all", "events": ["*"], "service": "sis"}),
    )
    .await;
    post(&hub, &enrolment(), &[]).await;
    // What matchers before this release declared: every event subject, as a filter.
    let events = hub
        .js
        .get_stream(hub.names().events_stream())
        .await
        .expect("stream");
    events
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            filter_subject: hub.names().events_all(),
            ..mih_matcher_consumer_config(&hub, hub.config.matcher.max_in_flight)
        })
        .await
        .expect("the former consumer");

    hub.add_services(&[ServiceName::Matcher]).await;
    wait_for_jobs(&hub, 1).await;
    let info = events
        .consumer_info(mih_shared::names::MATCHER_CONSUMER)
        .await
        .expect("consumer info");
    assert_eq!(
        info.config.filter_subject, "",
        "the matcher takes its partition's stream whole"
    );
    let viewed = fixtures::moodle_events()
        .into_iter()
        .find(|e| e["eventname"] == "\\core\\event\\course_viewed")
        .expect("fixture");
    post(&hub, &viewed, &[]).await;
    wait_for_jobs(&hub, 2).await;
    hub.stop().await;
}

fn mih_matcher_consumer_config(
    hub: &TestHub,
    max_in_flight: usize,
) -> async_nats::jetstream::consumer::pull::Config {
    mih_matcher::consumer_config(max_in_flight, hub.config.matcher.ack_wait)
}

#[tokio::test]
async fn a_rule_that_cannot_render_dead_letters_the_job_with_the_reason() {
    let hub = pipeline("").await;
    create_service(&hub, "sis").await;
    let rule = create_rule(
        &hub,
        json!({"name": "needs grade", "events": ["*"], "service": "sis", "body": "{\"grade\": {{other.finalgrade}}}"}),
    )
    .await;
    settle(&hub).await;
    post(&hub, &enrolment(), &[]).await;
    let dead = mih_testkit::eventually(Duration::from_secs(15), || async {
        let stored = hub.stored(&hub.names().dlq_stream()).await;
        stored
            .first()
            .map(|m| messages::decode::<DeadLetter>(&m.payload).expect("dead letter"))
            .ok_or_else(|| "no dead letter".to_owned())
    })
    .await
    .expect("dead-lettered");
    assert_eq!(dead.stage, FailureStage::Render);
    assert!(dead.reason.contains("other.finalgrade"), "{}", dead.reason);
    assert_eq!(dead.job.rule_id.map(|r| r.to_string()), Some(rule));
    assert!(
        dead.event.is_some(),
        "the event travels with it, to render again once fixed"
    );
    assert!(jobs(&hub).await.is_empty(), "no retry loop: nothing sent");
    hub.stop().await;
}

#[tokio::test]
async fn rule_changes_apply_to_the_next_event() {
    let hub = pipeline("").await;
    create_service(&hub, "sis").await;
    let rule = create_rule(
        &hub,
        json!({"name": "r", "events": ["*"], "service": "sis", "condition": "courseid == 999"}),
    )
    .await;
    settle(&hub).await;
    post(&hub, &enrolment(), &[]).await;
    hub.wait_for_matcher_idle().await;
    assert!(jobs(&hub).await.is_empty());
    let patched = hub
        .api()
        .patch(
            &format!("/api/v1/rules/{rule}"),
            &json!({"condition": "courseid == 12"}),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK);
    settle(&hub).await;
    let mut again = enrolment();
    again["timecreated"] = json!(1772008999);
    post(&hub, &again, &[]).await;
    wait_for_jobs(&hub, 1).await;
    hub.stop().await;
}

/// Four nested `{{#each}}` over a 20-element list would render 6.4 MB from a small event; the
/// render stops at matcher.max_request_bytes, the job is dead-lettered with the reason, and the
/// event is done with (before, the publish failed as "transient" and the event came back
/// forever).
#[tokio::test]
async fn a_render_larger_than_the_cap_is_dead_lettered_and_the_event_is_done() {
    let hub = pipeline("[matcher]\nmax_request_bytes = 65536").await;
    create_service(&hub, "sis").await;
    let each = |inner: &str| format!("{{{{#each @root.other.list}}}}{inner}{{{{/each}}}}");
    let bomb = each(&each(&each(&each(&"x".repeat(40)))));
    let huge = create_rule(
        &hub,
        json!({"name": "bomb", "events": ["*"], "service": "sis", "body": bomb, "content_type": "text/plain"}),
    )
    .await;
    create_rule(
        &hub,
        json!({"name": "plain", "events": ["*"], "service": "sis"}),
    )
    .await;
    settle(&hub).await;
    let mut event = enrolment();
    event["other"] = json!({"list": (0..20).collect::<Vec<_>>()});
    post(&hub, &event, &[]).await;
    let dead = mih_testkit::eventually(Duration::from_secs(15), || async {
        let stored = hub.stored(&hub.names().dlq_stream()).await;
        stored
            .first()
            .map(|m| messages::decode::<DeadLetter>(&m.payload).expect("dead letter"))
            .ok_or_else(|| "no dead letter".to_owned())
    })
    .await
    .expect("dead-lettered");
    assert_eq!(dead.stage, FailureStage::Render);
    assert_eq!(dead.job.rule_id.map(|r| r.to_string()), Some(huge));
    assert!(
        dead.reason
            .contains("matcher.max_request_bytes (65536 bytes)"),
        "{}",
        dead.reason
    );
    let published = wait_for_jobs(&hub, 1).await;
    assert_eq!(published.len(), 1, "the other rule's job went out");
    hub.wait_for_matcher_idle().await;
    hub.stop().await;
}

/// Values in an XML CDATA section are written as they are (entities mean nothing there); a
/// value holding `]]>` is split over two sections instead of ending the first.
#[tokio::test]
async fn values_inside_cdata_are_not_escaped_twice() {
    let hub = pipeline("").await;
    create_service(&hub, "sis").await;
    create_rule(
        &hub,
        json!({"name": "xml", "events": ["*"], "service": "sis", "content_type": "text/xml",
               "body": "<user><name><![CDATA[{{other.name}}]]></name><plain>{{other.name}}</plain></user>"}),
    )
    .await;
    settle(&hub).await;
    let mut event = enrolment();
    event["other"] = json!({"name": "O'Brien \"Bob\" & <x> ]]> end"});
    post(&hub, &event, &[]).await;
    let jobs = wait_for_jobs(&hub, 1).await;
    let Request::Http(request) = &jobs[0].1.request else {
        panic!("a REST job");
    };
    assert_eq!(
        request.body.as_deref(),
        Some(
            "<user><name><![CDATA[O'Brien \"Bob\" & <x> ]]]]><![CDATA[> end]]></name>\
             <plain>O&apos;Brien &quot;Bob&quot; &amp; &lt;x&gt; ]]&gt; end</plain></user>"
        )
    );
    hub.stop().await;
}
