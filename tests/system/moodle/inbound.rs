//! Messages from external services, delivered back into Moodle: the plugin pulls what the hub
//! keeps for its source (`cli/pull_inbound.php`, the scheduled task `pull_inbound`), raises
//! `\local_mih\event\webhook_received` once per message in order, and acknowledges only what
//! it raised — through a crash, a failing observer and a wrong token, nothing is skipped.

use std::os::unix::process::ExitStatusExt;
use std::process::Output;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use mih_shared::ServiceName;
use mih_testkit::sign::OTHER_SECRET;
use mih_testkit::{HttpSink, fixtures};

use super::driver::Site;
use super::events::hub_to;
use crate::harness::TestHub;

const EVENT: &str = "\\local_mih\\event\\webhook_received";
/// The service that sends messages back, and the Moodle site they go to.
const SERVICE: &str = "crm";
const SOURCE: &str = "moodle";

/// A hub whose service `crm` sends its inbound messages to the `moodle` source, with a rule
/// delivering every event to `sink` (as `events.rs`'s hub).
async fn hub_with_inbound(sink: &HttpSink) -> TestHub {
    let hub = hub_to(sink, None).await;
    add_inbound_service(&hub).await;
    hub
}

/// Registers the service `crm`, whose inbound messages go to the `moodle` source, signed with
/// a secret of its own.
pub(super) async fn add_inbound_service(hub: &TestHub) {
    let target = format!("http://{}", hub.addr(ServiceName::Api));
    let created = hub
        .api()
        .post(
            "/api/v1/services",
            &json!({
                "name": SERVICE,
                "transport": {"kind": "rest", "base_url": target},
                "inbound": {"source": SOURCE, "signing_secret": OTHER_SECRET},
            }),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
}

/// The service posts a webhook to the hub, signed with its inbound secret (again, freshly
/// signed, until ingest has the service's new settings and takes it).
pub(super) async fn send_inbound(hub: &TestHub, body: &str, content_type: &str) {
    let url = hub.url(ServiceName::Ingest, &format!("/v1/inbound/{SERVICE}"));
    mih_testkit::eventually(Duration::from_secs(20), || {
        let url = url.clone();
        async move {
            let headers = mih_testkit::sign::signed_now(OTHER_SECRET, SERVICE, body.as_bytes());
            let mut request = hub
                .http
                .post(url)
                .header("content-type", content_type)
                .body(body.to_owned());
            for (name, value) in headers {
                request = request.header(name, value);
            }
            let response = request.send().await.map_err(|e| e.to_string())?;
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("{status} {text}"))
            }
        }
    })
    .await
    .unwrap_or_else(|e| panic!("the hub never took the message: {e}"));
}

/// What the hub holds for the site past its acknowledged cursor, without acknowledging.
async fn waiting(hub: &TestHub) -> Value {
    let answer = hub
        .api()
        .get(&format!("/api/v1/inbound?source={SOURCE}&limit=500"))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.body
}

/// One pass of `cli/pull_inbound.php --json`: its report (null when it printed none), and how
/// it ended.
async fn pull(site: &Site) -> (Value, Output) {
    let output = site.run_any(&["cli", "pull_inbound.php", "--json"]).await;
    let report = serde_json::from_slice(&output.stdout).unwrap_or(Value::Null);
    (report, output)
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            e["other"]["messageid"]
                .as_str()
                .expect("messageid")
                .to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_message_is_raised_once_in_order_with_its_other_then_acknowledged() {
    let sink = HttpSink::start().await.expect("sink");
    let hub = hub_with_inbound(&sink).await;
    let site = Site::install(&hub).await;
    send_inbound(
        &hub,
        r#"{"user": {"id": 7}, "status": "paid"}"#,
        "application/json",
    )
    .await;
    send_inbound(&hub, "[1, 2.5, null]", "application/json").await;
    send_inbound(&hub, "plain words, not JSON", "text/plain").await;
    let held = waiting(&hub).await;
    let messages = held["messages"].as_array().expect("messages").clone();
    assert_eq!(messages.len(), 3, "{held}");

    let (report, output) = pull(&site).await;
    assert!(output.status.success(), "{report}\n{}", stderr(&output));
    assert_eq!(report["raised"], 3, "{report}");
    let last = messages[2]["cursor"].as_i64().expect("cursor");
    assert_eq!(report["acknowledged"], last, "{report}");
    assert!(report["stopped"].is_null(), "{report}");

    let raised = site.raised();
    assert_eq!(raised.len(), 3, "once each: {raised:?}");
    let payloads = [
        json!({"user": {"id": 7}, "status": "paid"}),
        json!([1, 2.5, null]),
        json!("plain words, not JSON"),
    ];
    for ((event, message), payload) in raised.iter().zip(&messages).zip(&payloads) {
        assert_eq!(event["eventname"], EVENT);
        assert_eq!(
            (&event["crud"], &event["edulevel"], &event["contextid"]),
            (&json!("c"), &json!(0), &json!(1)),
            "{event}"
        );
        assert_eq!(
            event["other"],
            json!({
                "serviceid": SERVICE,
                "servicename": SERVICE,
                "source": "webhook",
                "payload": payload,
                "messageid": message["id"],
            }),
            "in the hub's order, with the hub's id"
        );
    }
    let reported: Vec<&Value> = report["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| &m["id"])
        .collect();
    assert_eq!(
        reported,
        messages.iter().map(|m| &m["id"]).collect::<Vec<_>>()
    );

    // Acknowledged: the hub holds nothing more for the site, and a second pass raises nothing.
    let after = waiting(&hub).await;
    assert_eq!(after["messages"], json!([]), "{after}");
    assert_eq!(after["acknowledged"], last, "{after}");
    let (again, output) = pull(&site).await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(again["raised"], 0, "{again}");

    // The scheduled task does the same, and says so in the task's output.
    send_inbound(&hub, r#"{"late": true}"#, "application/json").await;
    let task = site.run_raw(&["task", "pull_inbound"]).await;
    let said = String::from_utf8_lossy(&task.stdout);
    assert!(said.contains("raised 1 inbound messages"), "{said}");
    let raised = site.raised();
    assert_eq!(raised.len(), 4);
    assert_eq!(raised[3]["other"]["payload"], json!({"late": true}));

    // The plugin's own observer sent the raised events to the hub like any other event; the
    // hub's catch-all rule does not deliver them (only a rule naming the event would).
    assert_eq!(site.status().await["pending"], 0, "the hub stored them");
    let ordinary = fixtures::moodle_events()[0].clone();
    let file = site.events_file("ordinary.jsonl", std::slice::from_ref(&ordinary));
    site.run(&["raise", &file]).await;
    sink.wait_for(1, Duration::from_secs(30))
        .await
        .expect("the ordinary event is delivered");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let delivered: Vec<Value> = sink
        .requests()
        .iter()
        .map(|r| r.json().expect("JSON"))
        .collect();
    assert_eq!(delivered, vec![ordinary], "no inbound event went back out");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_crash_or_a_failing_observer_the_same_messages_come_again_and_none_is_skipped() {
    let sink = HttpSink::start().await.expect("sink");
    let hub = hub_with_inbound(&sink).await;
    let mut site = Site::install(&hub).await;
    for n in 1..=3 {
        send_inbound(&hub, &json!({"n": n}).to_string(), "application/json").await;
    }
    let first: Vec<String> = waiting(&hub).await["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["id"].as_str().expect("id").to_owned())
        .collect();

    // The process dies after its observers saw all three, before it acknowledged them.
    site.set_env("MIH_STANDIN_CRASH_AFTER", Some("3"));
    let (_, crashed) = pull(&site).await;
    assert_eq!(crashed.status.signal(), Some(9), "{}", stderr(&crashed));
    site.set_env("MIH_STANDIN_CRASH_AFTER", None);
    assert_eq!(ids(&site.raised()), first);
    let held = waiting(&hub).await;
    assert_eq!(
        held["messages"].as_array().map(Vec::len),
        Some(3),
        "nothing was acknowledged: {held}"
    );

    // The next pass raises the same three again, with the same ids: observers can tell.
    let (report, output) = pull(&site).await;
    assert!(output.status.success(), "{report}\n{}", stderr(&output));
    assert_eq!(report["raised"], 3, "{report}");
    let raised = site.raised();
    assert_eq!(ids(&raised[3..]), first);
    for (before, again) in raised[..3].iter().zip(&raised[3..]) {
        assert_eq!(
            before["other"], again["other"],
            "the same message, the same other"
        );
    }

    // An observer fails on the fifth message: the fourth is raised and acknowledged, the
    // fifth and sixth wait; the next pass starts at the fifth.
    for n in 4..=6 {
        send_inbound(&hub, &json!({"n": n}).to_string(), "application/json").await;
    }
    let held = waiting(&hub).await;
    let next = held["messages"].as_array().expect("messages").clone();
    assert_eq!(next.len(), 3, "{held}");
    let fifth = next[1]["id"].as_str().expect("id").to_owned();
    site.set_env("MIH_STANDIN_FAIL_ON", Some(&fifth));
    let (report, output) = pull(&site).await;
    assert_eq!(output.status.code(), Some(1), "{report}");
    assert_eq!(report["raised"], 1, "{report}");
    assert_eq!(report["acknowledged"], next[0]["cursor"], "{report}");
    let why = stderr(&output);
    assert!(
        why.contains("could not be raised") && why.contains(&fifth),
        "the task's output names the message: {why}"
    );
    site.set_env("MIH_STANDIN_FAIL_ON", None);
    let (report, output) = pull(&site).await;
    assert!(output.status.success(), "{report}\n{}", stderr(&output));
    assert_eq!(report["raised"], 2, "{report}");

    let all = ids(&site.raised());
    let mut distinct: Vec<String> = Vec::new();
    for id in &all {
        if !distinct.contains(id) {
            distinct.push(id.clone());
        }
    }
    let sent: Vec<String> = first
        .iter()
        .cloned()
        .chain(
            next.iter()
                .map(|m| m["id"].as_str().expect("id").to_owned()),
        )
        .collect();
    assert_eq!(distinct, sent, "every message, in order, none skipped");
    assert_eq!(all.len(), 9, "only the crashed batch came twice: {all:?}");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_said_clearly_and_raises_nothing_until_fixed() {
    let sink = HttpSink::start().await.expect("sink");
    let hub = hub_with_inbound(&sink).await;
    let mut site = Site::install(&hub).await;
    send_inbound(&hub, r#"{"waits": true}"#, "application/json").await;

    site.set("apitoken", "not-a-token-of-this-hub-00");
    let (report, output) = pull(&site).await;
    assert_eq!(output.status.code(), Some(1), "{report}");
    let why = stderr(&output);
    assert!(
        why.contains("refused the API token (HTTP 401)") && why.contains("Hub API token"),
        "{why}"
    );
    let task = site.run_raw(&["task", "pull_inbound"]).await;
    let said = String::from_utf8_lossy(&task.stdout);
    assert!(
        said.contains("raised 0 inbound messages") && said.contains("refused the API token"),
        "the task says why and does not fail: {said}"
    );

    let issued = hub
        .api()
        .post(
            "/api/v1/tokens",
            &json!({"label": "moodle", "role": "viewer"}),
        )
        .await;
    assert_eq!(issued.status, StatusCode::CREATED, "{}", issued.body);
    site.set("apitoken", issued.body["token"].as_str().expect("token"));
    let (report, output) = pull(&site).await;
    assert_eq!(output.status.code(), Some(1), "{report}");
    assert!(
        stderr(&output).contains("operator role"),
        "{}",
        stderr(&output)
    );

    site.set("apitoken", crate::harness::ADMIN_TOKEN);
    site.set("inbound", 0);
    let (_, output) = pull(&site).await;
    assert!(
        stderr(&output).contains("switched off"),
        "{}",
        stderr(&output)
    );
    assert_eq!(site.raised(), Vec::<Value>::new(), "nothing raised so far");

    site.set("inbound", 1);
    let (report, output) = pull(&site).await;
    assert!(output.status.success(), "{report}\n{}", stderr(&output));
    let raised = site.raised();
    assert_eq!(raised.len(), 1, "the message waited in the hub");
    assert_eq!(raised[0]["other"]["payload"], json!({"waits": true}));
    hub.stop().await;
}
