//! The plugin in a real Moodle 4.4 (installed by `scripts/moodle-dev` into `.tools/moodle`):
//! installed and configured with Moodle's own tools, events raised through Moodle's own APIs
//! arrive at the sink once, a rolled-back one never, the facade answers, and a message from a
//! service is raised by the scheduled task into Moodle's log. Skipped, saying
//! so, where no such Moodle is installed (CI cannot fetch one).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::process::Command;

use mih_shared::ServiceName;
use mih_testkit::HttpSink;
use mih_testkit::sign::TEST_SECRET;

use super::driver::shim_dir;
use super::events::{by_key, hub_to};
use super::inbound::{add_inbound_service, send_inbound};
use crate::harness::ADMIN_TOKEN;

fn moodle_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/moodle")
}

/// Runs PHP and answers what it printed.
async fn php_text(args: &[&str], dir: &Path) -> String {
    let output = Command::new("php")
        .args(["-d", "max_input_vars=5000"])
        .args(args)
        .current_dir(dir)
        .output()
        .await
        .expect("php runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "php {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Runs PHP that prints one JSON document (or text, answered as null).
async fn php(args: &[&str], dir: &Path) -> Value {
    serde_json::from_str(&php_text(args, dir).await).unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_real_moodle_events_from_moodle_apis_arrive_once() {
    let root = moodle_root();
    if !root.join("installed").exists() {
        eprintln!(
            "SKIPPED: no real Moodle at {} (run scripts/moodle-dev where a Moodle mirror is \
             available); the stand-in tests cover the plugin meanwhile",
            root.display()
        );
        return;
    }
    let www = root.join("www");
    let sink = HttpSink::start().await.expect("sink");
    let hub = hub_to(&sink, None).await;

    // Install the plugin as an administrator would: copy it into local/mih and upgrade.
    let target = www.join("local/mih");
    let _ = std::fs::remove_dir_all(&target);
    let copied = std::process::Command::new("cp")
        .arg("-r")
        .arg(shim_dir().join("moodle"))
        .arg(&target)
        .status()
        .expect("cp");
    assert!(copied.success());
    php(
        &[
            "admin/cli/upgrade.php",
            "--non-interactive",
            "--allow-unstable",
        ],
        &www,
    )
    .await;

    let site = shim_dir().join("tests/real/site.php");
    let site = site.to_string_lossy();
    let moodle = format!("--moodle={}", www.display());
    let settings = json!({
        "enabled": 1,
        "ingesturl": hub.url(ServiceName::Ingest, ""),
        "sourceid": "moodle",
        "signingsecret": TEST_SECRET,
        "apiurl": hub.url(ServiceName::Api, ""),
        "apitoken": ADMIN_TOKEN,
    });
    php(&[&site, &moodle, "configure", &settings.to_string()], &www).await;
    let before = sink.count();

    let raised = php(&[&site, &moodle, "raise", "mih"], &www).await;
    let (userid, courseid) = (&raised["userid"], &raised["courseid"]);
    let status = php(&[&site, &moodle, "status"], &www).await;
    assert_eq!(
        status["pending"], 0,
        "the request's own send emptied the outbox: {status}"
    );

    let wanted = [
        ("\\core\\event\\user_created", json!({"objectid": userid})),
        (
            "\\core\\event\\course_created",
            json!({"objectid": courseid}),
        ),
        (
            "\\core\\event\\user_enrolment_created",
            json!({"relateduserid": userid, "courseid": courseid}),
        ),
        (
            "\\core\\event\\user_graded",
            json!({"relateduserid": userid, "courseid": courseid}),
        ),
    ];
    let matches = |event: &Value, name: &str, fields: &Value| {
        event["eventname"] == name
            && fields
                .as_object()
                .is_some_and(|f| f.iter().all(|(k, v)| id_text(&event[k]) == id_text(v)))
    };
    let events = mih_testkit::eventually(Duration::from_secs(30), || async {
        let events: Vec<Value> = by_key(&sink.requests()[before..]).into_values().collect();
        match wanted
            .iter()
            .find(|(name, fields)| !events.iter().any(|e| matches(e, name, fields)))
        {
            None => Ok(events),
            Some((name, _)) => Err(format!(
                "{name} has not arrived; {} events did",
                events.len()
            )),
        }
    })
    .await
    .expect("Moodle's events arrive");
    let rolled_back = json!({"objectid": raised["rolledbackuserid"]});
    assert!(
        !events
            .iter()
            .any(|e| matches(e, "\\core\\event\\user_created", &rolled_back)),
        "the user created in a rolled-back transaction was never sent"
    );
    assert!(
        events.iter().all(|e| e["origin"] == "cli"),
        "Moodle's origin travels with each event"
    );

    // A data request: the user's waiting events are found, exported and deleted.
    let privacy = php(&[&site, &moodle, "privacy", &userid.to_string()], &www).await;
    assert_eq!(privacy["compliant"], true, "{privacy}");
    assert!(
        privacy["usersincontext"]
            .as_array()
            .is_some_and(|users| users.contains(userid)),
        "{privacy}"
    );
    let exported: Vec<&Value> = privacy["exported"]
        .as_object()
        .expect("exported files")
        .iter()
        .filter(|(name, _)| name.ends_with("Events waiting for the hub/data.json"))
        .flat_map(|(_, data)| data["events"].as_array().into_iter().flatten())
        .collect();
    assert!(
        exported
            .iter()
            .any(|e| e["eventname"] == "\\core\\event\\user_updated"),
        "{privacy}"
    );
    assert!(privacy["rowsbefore"].as_u64() >= Some(1), "{privacy}");
    assert_eq!(privacy["rowsafter"], 0, "{privacy}");

    // The administrator's command-line tools and the scheduled task, as cron runs it.
    let cli = php(&["local/mih/cli/status.php", "--json"], &www).await;
    assert_eq!(
        (&cli["pending"], &cli["forwarding"]),
        (&json!(0), &json!(true)),
        "{cli}"
    );
    let flushed = php_text(&["local/mih/cli/flush.php"], &www).await;
    assert!(flushed.starts_with("sent 0 events"), "{flushed}");
    let retried = php_text(&["local/mih/cli/retry_parked.php", "--all"], &www).await;
    assert!(retried.contains("put 0 parked events back"), "{retried}");
    let task = php_text(
        &[
            "admin/cli/scheduled_task.php",
            "--execute=\\local_mih\\task\\send_outbox",
        ],
        &www,
    )
    .await;
    assert!(task.contains("local_mih: sent 0 events"), "{task}");

    let called = php(&[&site, &moodle, "facade", "lms", "/ping"], &www).await;
    assert_eq!(called["success"], true, "{called}");

    // A message from a service, raised in this Moodle by the scheduled task as cron runs it,
    // and kept by Moodle's standard log with its other.
    add_inbound_service(&hub).await;
    send_inbound(&hub, r#"{"paid": true}"#, "application/json").await;
    let logged = |log: &Value| log.as_array().cloned().unwrap_or_default();
    let before = logged(&php(&[&site, &moodle, "inbound-log"], &www).await).len();
    let task = php_text(
        &[
            "admin/cli/scheduled_task.php",
            "--execute=\\local_mih\\task\\pull_inbound",
        ],
        &www,
    )
    .await;
    assert!(
        task.contains("local_mih: raised 1 inbound messages"),
        "{task}"
    );
    let log = logged(&php(&[&site, &moodle, "inbound-log"], &www).await);
    assert_eq!(log.len(), before + 1, "{log:?}");
    let event = &log[before];
    assert_eq!(
        (&event["crud"], &event["name"]),
        (&json!("c"), &json!("Message received from the hub")),
        "{event}"
    );
    assert_eq!(
        (
            &event["other"]["servicename"],
            &event["other"]["source"],
            &event["other"]["payload"]
        ),
        (&json!("crm"), &json!("webhook"), &json!({"paid": true})),
        "{event}"
    );
    let pulled = php_text(&["local/mih/cli/pull_inbound.php"], &www).await;
    assert!(
        pulled.starts_with("raised 0 events"),
        "acknowledged: {pulled}"
    );

    // The administrator's pages, served by PHP's web server and used as a browser would.
    let mut web = MoodleWeb::start(&www).await;
    let settings = web.get("/admin/settings.php?section=local_mih").await;
    for shown in [
        "Receive inbound messages",
        "Hub ingest URL",
        "Signing secret",
        "Events never forwarded",
        "id_s_local_mih_sourceid",
    ] {
        assert!(settings.contains(shown), "the settings page shows {shown}");
    }
    let outbox = web.get("/local/mih/index.php").await;
    assert!(outbox.contains("Hub outbox") && outbox.contains("The hub has refused no events."));
    let sesskey = between(&outbox, "\"sesskey\":\"", "\"").expect("the page's sesskey");
    let tested = web
        .post(
            "/local/mih/index.php",
            &[("action", "test"), ("sesskey", &sesskey)],
        )
        .await;
    assert!(
        tested.contains("accepts events signed by this site"),
        "{tested}"
    );
    assert!(tested.contains("accepts the API token"), "{tested}");
    // An event the hub refuses is parked, listed with the hub's reason, and can be discarded.
    php(&[&site, &moodle, "inject-invalid"], &www).await;
    let flushed = php_text(&["local/mih/cli/flush.php"], &www).await;
    assert!(flushed.contains("parked 1"), "{flushed}");
    let outbox = web.get("/local/mih/index.php").await;
    assert!(
        outbox.contains("thing_done") && outbox.contains("crud"),
        "the reason is shown"
    );
    let discarded = web
        .post(
            "/local/mih/index.php",
            &[("action", "discard"), ("sesskey", &sesskey)],
        )
        .await;
    assert!(
        discarded.contains("1 parked events discarded"),
        "{discarded}"
    );
    let without_sesskey = web
        .post("/local/mih/index.php", &[("action", "send")])
        .await;
    assert!(
        !without_sesskey.contains("Sent "),
        "actions need the session key"
    );
    hub.stop().await;
}

/// Moodle under `php -S` at its wwwroot, logged in as the administrator.
struct MoodleWeb {
    _server: tokio::process::Child,
    http: reqwest::Client,
    cookie: String,
}

const WWWROOT: &str = "http://127.0.0.1:8085";

impl MoodleWeb {
    async fn start(www: &Path) -> MoodleWeb {
        let server = Command::new("php")
            .args(["-d", "max_input_vars=5000", "-S", "127.0.0.1:8085", "-t"])
            .arg(www)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("php -S starts");
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        mih_testkit::wait_until_ok(
            &format!("{WWWROOT}/login/index.php"),
            Duration::from_secs(20),
        )
        .await
        .expect("Moodle answers");
        let mut web = MoodleWeb {
            _server: server,
            http,
            cookie: String::new(),
        };
        let login = web.get("/login/index.php").await;
        let token = between(&login, "name=\"logintoken\" value=\"", "\"").expect("login token");
        web.post(
            "/login/index.php",
            &[
                ("username", "admin"),
                ("password", "Admin-1234!"),
                ("logintoken", &token),
            ],
        )
        .await;
        web
    }

    async fn get(&mut self, path: &str) -> String {
        let request = self.http.get(format!("{WWWROOT}{path}"));
        self.send(request).await
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> String {
        let request = self
            .http
            .post(format!("{WWWROOT}{path}"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(mih_testkit::form_body(form));
        self.send(request).await
    }

    /// Sends with the session cookie, keeps the newest one, and follows redirects.
    async fn send(&mut self, request: reqwest::RequestBuilder) -> String {
        let mut request = request;
        for _ in 0..5 {
            let response = request
                .header("cookie", &self.cookie)
                .send()
                .await
                .expect("Moodle answers");
            for value in response.headers().get_all("set-cookie") {
                let value = value.to_str().unwrap_or_default();
                if value.starts_with("MoodleSession=") {
                    self.cookie = value.split(';').next().unwrap_or_default().to_owned();
                }
            }
            let Some(location) = response
                .headers()
                .get("location")
                .and_then(|l| l.to_str().ok())
            else {
                return response.text().await.expect("page");
            };
            let location = if location.starts_with("http") {
                location.to_owned()
            } else {
                format!("{WWWROOT}{location}")
            };
            request = self.http.get(location);
        }
        panic!("too many redirects");
    }
}

fn between(text: &str, start: &str, end: &str) -> Option<String> {
    let from = text.find(start)? + start.len();
    let to = text[from..].find(end)? + from;
    Some(text[from..to].to_owned())
}

/// Moodle gives ids as numbers or numeric strings; compare them as text.
fn id_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}
