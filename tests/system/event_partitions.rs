//! EVENTS split into partitions: events spread by learner, one learner's events share a
//! partition in Moodle's order, the matcher reads every partition, a re-sent event is known
//! again in its partition, and recent events and backfills read every partition.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};

use mih_shared::messages::{self, Event};
use mih_shared::partition::Partitions;
use mih_testkit::sign::TEST_TOKEN;

use crate::harness::TestHub;
use crate::matcher::{create_rule, create_service, enrolment, jobs, pipeline, settle};

const PARTITIONS: u16 = 4;

/// An enrolment of `user` in course `course`: distinct content, so a distinct dedup key.
fn enrolled(user: u64, course: u64) -> Value {
    let mut event = enrolment();
    event["relateduserid"] = json!(user);
    event["courseid"] = json!(course);
    event["objectid"] = json!(user * 1000 + course);
    event
}

async fn post(hub: &TestHub, body: &Value) -> Value {
    let bearer = [("authorization".to_owned(), format!("Bearer {TEST_TOKEN}"))];
    let answer = hub
        .post_events(body.to_string().into_bytes(), "application/json", &bearer)
        .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
    answer.body
}

/// The events the jobs of `rule` in JOBS came from.
async fn events_queued_by(hub: &TestHub, rule: &str) -> HashSet<String> {
    jobs(hub)
        .await
        .into_iter()
        .filter(|(_, job)| job.rule_id.is_some_and(|id| id.to_string() == rule))
        .map(|(_, job)| job.event_id.expect("event").to_string())
        .collect()
}

fn user_of(event: &Event) -> u64 {
    event.data["relateduserid"].as_u64().expect("relateduserid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_spread_by_learner_and_every_reader_sees_every_partition() {
    let hub = pipeline(&format!("[streams]\nevent_partitions = {PARTITIONS}\n")).await;
    let from = Utc::now() - chrono::Duration::seconds(5);
    create_service(&hub, "sis").await;
    create_service(&hub, "lms").await;
    let live = create_rule(
        &hub,
        json!({"name": "enrolments", "events": ["\\core\\event\\user_enrolment_created"], "service": "sis"}),
    )
    .await;
    settle(&hub).await;

    // 50 learners × 4 enrolments, in one batch, each learner's in course order.
    let batch: Vec<Value> = (1..=4)
        .flat_map(|course| (1..=50).map(move |user| enrolled(user, course)))
        .collect();
    let answer = post(&hub, &Value::from(batch)).await;
    let mut posted: HashSet<String> = answer["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(posted.len(), 200);

    let partitions = Partitions::new(PARTITIONS);
    let mut home: BTreeMap<u64, u16> = BTreeMap::new();
    let mut total = 0;
    for partition in 0..PARTITIONS {
        let stored = hub
            .stored(&hub.names().events_partition_stream(partition))
            .await;
        assert!(!stored.is_empty(), "partition {partition} holds no event");
        total += stored.len();
        let mut last_course: BTreeMap<u64, u64> = BTreeMap::new();
        for message in stored {
            let event: Event = messages::decode(&message.payload).expect("an event");
            let user = user_of(&event);
            assert_eq!(
                partitions.of_event(&event.source, &event.data, &event.dedup_key),
                partition,
                "{} is in the partition of its learner",
                event.id
            );
            assert!(message.subject.ends_with(&format!(".{partition}")) || partition == 0);
            assert_eq!(*home.entry(user).or_insert(partition), partition);
            let course = event.data["courseid"].as_u64().expect("courseid");
            let before = last_course.insert(user, course).unwrap_or(0);
            assert!(
                before < course,
                "user {user}: course {course} after {before}"
            );
        }
    }
    assert_eq!(total, 200);
    assert_eq!(home.len(), 50);

    // Re-sent: known again in its own partition, with the first copy's id.
    let (&user, &partition) = home
        .iter()
        .find(|(_, p)| **p > 0)
        .expect("a learner beyond 0");
    let again = post(&hub, &enrolled(user, 1)).await;
    assert_eq!(
        again["events"][0]["status"], "duplicate",
        "{again} (partition {partition})"
    );
    let original = again["events"][0]["id"]
        .as_str()
        .expect("the original's id");
    assert!(posted.contains(original), "{again}");

    // Three more, one request each, from learners of three different partitions.
    let mut newest = Vec::new();
    let mut used = HashSet::new();
    for user in 1000.. {
        let event = enrolled(user, 9);
        let Value::Object(data) = &event else {
            unreachable!("an object")
        };
        let source = "moodle".parse().expect("source");
        if !used.insert(partitions.of_event(&source, data, "")) {
            continue;
        }
        let answer = post(&hub, &event).await;
        let id = answer["events"][0]["id"].as_str().expect("id").to_owned();
        posted.insert(id.clone());
        newest.push(id);
        if newest.len() == 3 {
            break;
        }
        // Distinct arrival times, however coarse the clock.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    hub.wait_for_matcher_idle().await;
    let queued: HashSet<String> = events_queued_by(&hub, &live).await;
    assert_eq!(
        queued, posted,
        "every event of every partition matched once"
    );

    let preview = hub
        .api()
        .post(
            "/api/v1/rules/preview",
            &json!({"rule_id": live, "recent": {"source": "moodle", "last": 3}}),
        )
        .await;
    assert_eq!(preview.status, StatusCode::OK, "{}", preview.body);
    let seen: Vec<&str> = preview.body["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter_map(|r| r["event_id"].as_str())
        .collect();
    let expected: Vec<&str> = newest.iter().rev().map(String::as_str).collect();
    assert_eq!(
        seen, expected,
        "the latest of every partition, newest first"
    );

    let added = create_rule(
        &hub,
        json!({"name": "enrolments to lms", "events": ["\\core\\event\\user_enrolment_created"], "service": "lms"}),
    )
    .await;
    let started = hub
        .api()
        .post(
            &format!("/api/v1/rules/{added}/backfill"),
            &json!({"from": from.to_rfc3339_opts(SecondsFormat::Millis, true)}),
        )
        .await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
    let id = started.body["id"].as_str().expect("id").to_owned();
    let done = mih_testkit::eventually(Duration::from_secs(60), || async {
        let answer = hub.api().get(&format!("/api/v1/backfills/{id}")).await;
        match answer.body["status"].as_str() {
            Some("completed") => Ok(answer.body),
            _ => Err(answer.body.to_string()),
        }
    })
    .await
    .unwrap_or_else(|last| panic!("the backfill never completed: {last}"));
    assert_eq!(done["scanned"], 203, "{done}");
    assert_eq!(done["jobs"], 203, "{done}");
    assert_eq!(done["progress"], 1.0, "{done}");
    assert_eq!(
        done["partition"],
        PARTITIONS - 1,
        "it ended in the last partition"
    );
    let backfilled: HashSet<String> = events_queued_by(&hub, &added).await;
    assert_eq!(
        backfilled, posted,
        "one backfilled job per event of every partition"
    );
    hub.stop().await;
}

/// A hub of `services` with `partitions` EVENTS partitions, service `sis` and a rule for
/// enrolments; the rule's id.
async fn enrolments_hub(
    services: &[mih_shared::ServiceName],
    partitions: u16,
) -> (TestHub, String) {
    let hub = TestHub::builder()
        .services(services)
        .toml(&format!("[streams]\nevent_partitions = {partitions}\n"))
        .start()
        .await;
    create_service(&hub, "sis").await;
    let rule = create_rule(
        &hub,
        json!({"name": "enrolments", "events": ["\\core\\event\\user_enrolment_created"], "service": "sis"}),
    )
    .await;
    (hub, rule)
}

/// Creates the streams of `partitions` EVENTS partitions, as a service set to that many does.
async fn create_partitions(hub: &TestHub, partitions: u16) {
    let config = mih_shared::config::ConfigLoader::new()
        .toml(&format!("[streams]\nevent_partitions = {partitions}\n"))
        .load()
        .expect("valid");
    mih_shared::topology::Topology::new(hub.names(), &config)
        .ensure(&hub.js, &[mih_shared::topology::Resource::Events])
        .await
        .expect("the partitions");
}

/// Stores `count` enrolments straight into `partitions`, in turn; their event ids.
async fn store_enrolments(hub: &TestHub, partitions: &[u16], count: u16) -> HashSet<String> {
    let source: mih_shared::names::SourceId = "moodle".parse().expect("source");
    let name = mih_shared::moodle::EventName::parse("\\core\\event\\user_enrolment_created")
        .expect("name");
    let mut stored = HashSet::new();
    for n in 0..count {
        let Value::Object(data) = enrolled(u64::from(n) + 1, 1) else {
            unreachable!("an object")
        };
        let id = messages::EventId::new_v7();
        let event = Event {
            v: messages::Version,
            id,
            source: source.clone(),
            received_at: Utc::now(),
            dedup_key: format!("stored-{id}"),
            data: data.into(),
        };
        stored.insert(event.id.to_string());
        let partition = partitions[usize::from(n) % partitions.len()];
        hub.js
            .publish(
                hub.names().event_subject_in(&source, &name, partition),
                messages::encode(&event).expect("encodes"),
            )
            .await
            .expect("publish")
            .await
            .expect("stored");
    }
    stored
}

#[tokio::test]
async fn events_left_in_partitions_of_a_higher_setting_are_matched() {
    // The api makes two partitions; a former setting of four left events in partitions 2 and 3.
    let (mut hub, rule) = enrolments_hub(&[mih_shared::ServiceName::Api], 2).await;
    create_partitions(&hub, 4).await;
    let left = store_enrolments(&hub, &[2, 3], 12).await;

    hub.add_services(&[mih_shared::ServiceName::Matcher]).await;
    hub.wait_for_matcher_idle().await;
    assert_eq!(
        events_queued_by(&hub, &rule).await,
        left,
        "every event of the left-over partitions matched"
    );
    hub.stop().await;
}

/// Ingest given more partitions creates their streams; a running matcher set to fewer finds
/// them at its next look (every 30 s) and matches their events, without a restart.
#[tokio::test]
async fn a_running_matcher_takes_up_partitions_created_after_it_started() {
    let (hub, rule) = enrolments_hub(
        &[
            mih_shared::ServiceName::Api,
            mih_shared::ServiceName::Matcher,
        ],
        1,
    )
    .await;
    settle(&hub).await;
    create_partitions(&hub, 3).await;
    let added = store_enrolments(&hub, &[1, 2], 8).await;
    let queued = mih_testkit::eventually(Duration::from_secs(60), || async {
        let queued = events_queued_by(&hub, &rule).await;
        if queued == added {
            Ok(queued)
        } else {
            Err(format!("{} of {} matched", queued.len(), added.len()))
        }
    })
    .await
    .unwrap_or_else(|last| panic!("the new partitions were not read: {last}"));
    assert_eq!(queued.len(), 8);
    // And what comes to partition 0 is still matched after the restart of the loops.
    let more = store_enrolments(&hub, &[0], 1).await;
    hub.wait_for_matcher_idle().await;
    let all: HashSet<String> = added.union(&more).cloned().collect();
    assert_eq!(events_queued_by(&hub, &rule).await, all);
    hub.stop().await;
}
