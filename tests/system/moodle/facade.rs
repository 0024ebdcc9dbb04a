//! `\local_mih\hub`, the facade other plugins call services through, and the settings page's
//! connection check, against a running hub.

use reqwest::StatusCode;
use serde_json::{Value, json};

use mih_shared::ServiceName;
use mih_testkit::sign::OTHER_SECRET;
use mih_testkit::{HttpSink, Reply};

use super::driver::Site;
use crate::harness::TestHub;

async fn rest_service(hub: &TestHub, name: &str, sink: &HttpSink, extra: Value) {
    let mut body = json!({
        "name": name,
        "transport": {"kind": "rest", "base_url": format!("{}/api", sink.url())},
        "retry": {"max_retries": 0},
    });
    if let (Value::Object(body), Value::Object(extra)) = (&mut body, extra) {
        body.extend(extra);
    }
    let answer = hub.api().post("/api/v1/services", &body).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_facade_answers_in_the_original_shape_and_throws_its_exceptions() {
    let hub = TestHub::builder()
        .services(&[
            ServiceName::Ingest,
            ServiceName::Api,
            ServiceName::Dispatcher,
        ])
        .start()
        .await;
    let good = HttpSink::start().await.expect("sink");
    good.set_reply(
        Reply::status(200)
            .with_body(r#"{"points": 5}"#)
            .with_header("content-type", "application/json"),
    );
    let failing = HttpSink::start().await.expect("sink");
    failing.set_reply(Reply::status(500).with_body("database on fire"));
    rest_service(&hub, "points", &good, json!({})).await;
    rest_service(
        &hub,
        "grades",
        &failing,
        json!({"breaker": {"failure_threshold": 1, "cooldown_ms": 60000}}),
    )
    .await;
    rest_service(&hub, "archive", &good, json!({"enabled": false})).await;
    hub.wait_for_config(ServiceName::Dispatcher).await;
    let site = Site::install(&hub).await;

    let ok = site
        .run(&["facade", "points", "/award", "POST", r#"{"user": 7}"#])
        .await;
    assert_eq!(ok["class"], "local_mih\\response");
    assert_eq!(
        (&ok["success"], &ok["is_ok"], &ok["httpstatus"]),
        (&json!(true), &json!(true), &json!(200)),
        "{ok}"
    );
    assert_eq!(
        (&ok["attempts"], &ok["circuit"], &ok["error"]),
        (&json!(1), &json!("closed"), &Value::Null),
        "{ok}"
    );
    assert_eq!(ok["json"], json!({"points": 5}));
    assert!(ok["latencyms"].is_u64(), "{ok}");
    let sent = &good.requests()[0];
    assert_eq!(
        (sent.method.as_str(), sent.uri.path()),
        ("POST", "/api/award")
    );
    assert_eq!(sent.json().expect("json"), json!({"user": 7}));

    let fluent = site
        .run(&["fluent", "points", "/users/7", "put", r#"{"name": "Ada"}"#])
        .await;
    assert_eq!(fluent["success"], true, "{fluent}");
    let sent = &good.requests()[1];
    assert_eq!(
        (sent.method.as_str(), sent.uri.path()),
        ("PUT", "/api/users/7")
    );
    assert_eq!(sent.json().expect("json"), json!({"name": "Ada"}));

    let failed = site.run(&["facade", "grades", "/sync", "POST", "{}"]).await;
    assert_eq!(
        (
            &failed["success"],
            &failed["httpstatus"],
            &failed["attempts"]
        ),
        (&json!(false), &json!(500), &json!(1)),
        "{failed}"
    );
    assert_eq!(
        failed["body"], "database on fire",
        "the target's answer helps debugging"
    );
    assert!(failed["error"].is_string(), "{failed}");

    for (service, errorcode) in [
        ("grades", "circuit_open"),
        ("nosuch", "service_not_found"),
        ("archive", "service_disabled"),
    ] {
        let thrown = site.run(&["facade", service, "/", "POST", "{}"]).await;
        assert_eq!(
            thrown["exception"], "moodle_exception",
            "{service}: {thrown}"
        );
        assert_eq!(
            (&thrown["errorcode"], &thrown["module"]),
            (&json!(errorcode), &json!("local_mih")),
            "{thrown}"
        );
        assert!(
            thrown["message"]
                .as_str()
                .is_some_and(|m| m.contains(service)),
            "{thrown}"
        );
    }
    assert_eq!(
        failing.count(),
        1,
        "nothing was sent through the open circuit"
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_check_says_what_is_wrong() {
    let hub = TestHub::builder()
        .services(&[ServiceName::Ingest, ServiceName::Api])
        .start()
        .await;
    let mut site = Site::install(&hub).await;
    let check = site.run(&["check"]).await;
    assert_eq!(
        (&check["ingest"]["ok"], &check["api"]["ok"]),
        (&json!(true), &json!(true)),
        "{check}"
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
    site.set("signingsecret", OTHER_SECRET);
    let check = site.run(&["check"]).await;
    let words = |part: &str| {
        check[part]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(check["ingest"]["ok"], false);
    assert!(
        words("ingest").contains("signature") && words("ingest").contains("signing secret"),
        "{check}"
    );
    assert_eq!(check["api"]["ok"], false);
    assert!(words("api").contains("operator role"), "{check}");

    site.set("apitoken", "not-a-token-of-this-hub-00");
    site.set("ingesturl", "http://127.0.0.1:9");
    let check = site.run(&["check"]).await;
    assert!(
        words_of(&check, "ingest").contains("Cannot reach the hub"),
        "{check}"
    );
    assert!(
        words_of(&check, "api").contains("refused the API token"),
        "{check}"
    );
    hub.stop().await;
}

fn words_of(check: &Value, part: &str) -> String {
    check[part]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}
