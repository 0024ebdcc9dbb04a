//! Secrets at rest and in motion, against the real binary: never in a response, a log line
//! (at debug level), the live config or the database in clear; api refuses to start without
//! the key that sealed them; rotating the key with `mih secrets reencrypt`; bootstrapping the
//! first admin token from the command line.

use std::time::Duration;

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};

use mih_shared::crypto::Keyring;
use mih_shared::names::{Names, Namespace};
use mih_testkit::sign::{OTHER_SECRET, TEST_SECRET, signed_headers};
use mih_testkit::{NatsServer, TestDatabase, free_port, unique_namespace, wait_until_ok};

use crate::harness::Answer;
use crate::process::MihProcess;

const KEY_A: &str = "q2Vp2Nv5rPfBk0pO2Kq7pZbJm0Ck4YqZp0dJmQ8v3Xo=";
const KEY_B: &str = "3mX8d1YcQz0Vw6s9Jk2Lr5Tn7Pb4Hg1Fa8Ue3Wy6Iq0=";
const ADMIN: &str = "secrets-test-admin-token-0001";

/// One hub's coordinates, reused across restarts of the binary.
struct Setup {
    nats: NatsServer,
    db: TestDatabase,
    namespace: String,
    api_port: u16,
    ingest_port: u16,
    http: reqwest::Client,
}

impl Setup {
    async fn new() -> Self {
        Self {
            nats: NatsServer::start().await.expect("nats"),
            db: TestDatabase::create().await.expect("database"),
            namespace: unique_namespace(),
            api_port: free_port().expect("port"),
            ingest_port: free_port().expect("port"),
            http: reqwest::Client::new(),
        }
    }

    fn env(&self, key: Option<&str>) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("MIH_NAMESPACE", self.namespace.clone()),
            ("MIH_NATS_URL", self.nats.url()),
            ("MIH_DATABASE_URL", self.db.url().to_owned()),
            ("MIH_API_LISTEN", format!("127.0.0.1:{}", self.api_port)),
            (
                "MIH_INGEST_LISTEN",
                format!("127.0.0.1:{}", self.ingest_port),
            ),
            ("MIH_BOOTSTRAP_ADMIN_TOKEN", ADMIN.to_owned()),
            ("MIH_DATABASE_CONNECT_TIMEOUT", "5s".to_owned()),
        ];
        if let Some(key) = key {
            env.push(("MIH_SECRET_KEY", key.to_owned()));
        }
        env
    }

    async fn start(&self, key: Option<&str>, extra: &[(&'static str, String)]) -> MihProcess {
        let mut env = self.env(key);
        env.extend_from_slice(extra);
        let process = MihProcess::spawn(&["run", "--service", "ingest,api"], &env);
        for port in [self.api_port, self.ingest_port] {
            if let Err(e) = wait_until_ok(
                &format!("http://127.0.0.1:{port}/readyz"),
                Duration::from_secs(20),
            )
            .await
            {
                panic!("mih not ready: {e}\n{}", process.output());
            }
        }
        process
    }

    async fn api(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Answer {
        let mut request = self
            .http
            .request(method, format!("http://127.0.0.1:{}{path}", self.api_port))
            .bearer_auth(ADMIN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        Answer::read(request.send().await.expect("api answers")).await
    }

    async fn bucket_text(&self) -> String {
        let js = async_nats::jetstream::new(
            async_nats::connect(self.nats.url()).await.expect("connect"),
        );
        let names = Names::new(Namespace::parse(self.namespace.clone()).expect("namespace"));
        let kv = js
            .get_key_value(names.config_bucket())
            .await
            .expect("bucket");
        let keys: Vec<String> = kv
            .keys()
            .await
            .expect("keys")
            .filter_map(|k| async { k.ok() })
            .collect()
            .await;
        let mut text = String::new();
        for key in keys {
            if let Some(value) = kv.get(&key).await.expect("get") {
                text.push_str(&String::from_utf8_lossy(&value));
                text.push('\n');
            }
        }
        text
    }

    async fn database_text(&self) -> String {
        let pool = sqlx::PgPool::connect(self.db.url())
            .await
            .expect("database");
        let mut text = String::new();
        for table in [
            "sources",
            "services",
            "rules",
            "admin_tokens",
            "config_audit",
        ] {
            let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT row_to_json(t)::text FROM {table} t"
            )))
            .fetch_all(&pool)
            .await
            .expect("rows");
            text.push_str(&rows.join("\n"));
        }
        text
    }

    async fn post_signed(&self, secret: &str) -> StatusCode {
        let body = mih_testkit::fixtures::moodle_events()[3].to_string();
        let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
        let mut request = self
            .http
            .post(format!("http://127.0.0.1:{}/v1/events", self.ingest_port))
            .header("content-type", "application/json")
            .body(body.clone());
        for (name, value) in signed_headers(
            secret,
            "site",
            &id,
            chrono::Utc::now().timestamp(),
            body.as_bytes(),
        ) {
            request = request.header(name, value);
        }
        request.send().await.expect("ingest answers").status()
    }
}

#[tokio::test]
async fn secrets_never_appear_in_responses_logs_the_live_config_or_the_database() {
    let setup = Setup::new().await;
    let secrets = [
        TEST_SECRET.to_owned(),
        OTHER_SECRET.to_owned(),
        "leaky-source-bearer-0001".to_owned(),
        "leaky-service-bearer-token".to_owned(),
        "leaky-api-key-value".to_owned(),
        "leaky-basic-password".to_owned(),
        "leaky-amqp-p@ss:word".to_owned(),
        "leaky-rotated-bearer".to_owned(),
    ];
    let process = setup
        .start(
            Some(KEY_A),
            &[
                ("RUST_LOG", "debug".to_owned()),
                ("MIH_TELEMETRY_LOG_FORMAT", "json".to_owned()),
            ],
        )
        .await;
    let post = reqwest::Method::POST;
    let mut responses = Vec::new();
    let calls: Vec<(reqwest::Method, &str, Option<Value>)> = vec![
        (
            post.clone(),
            "/api/v1/sources",
            Some(json!({"id": "site", "signing_secret": TEST_SECRET, "bearer_token": secrets[2]})),
        ),
        (
            post.clone(),
            "/api/v1/services",
            Some(
                json!({"name": "a", "transport": {"kind": "rest", "base_url": "https://a.example"},
            "auth": {"type": "bearer", "token": secrets[3]}, "signing_secret": OTHER_SECRET}),
            ),
        ),
        (
            post.clone(),
            "/api/v1/services",
            Some(
                json!({"name": "b", "transport": {"kind": "rest", "base_url": "https://b.example"},
            "auth": {"type": "api_key", "key": secrets[4]}}),
            ),
        ),
        (
            post.clone(),
            "/api/v1/services",
            Some(
                json!({"name": "c", "transport": {"kind": "soap", "endpoint": "https://c.example"},
            "auth": {"type": "basic", "username": "u", "password": secrets[5]}}),
            ),
        ),
        (
            post.clone(),
            "/api/v1/services",
            Some(
                json!({"name": "d", "transport": {"kind": "amqp", "host": "rabbit", "password": secrets[6]}}),
            ),
        ),
        (
            reqwest::Method::PATCH,
            "/api/v1/services/a",
            Some(json!({"auth": {"type": "bearer", "token": secrets[7]}})),
        ),
        (
            reqwest::Method::PATCH,
            "/api/v1/sources/site",
            Some(json!({"signing_secret": OTHER_SECRET})),
        ),
        (reqwest::Method::GET, "/api/v1/sources", None),
        (reqwest::Method::GET, "/api/v1/sources/site", None),
        (reqwest::Method::GET, "/api/v1/services", None),
        (reqwest::Method::GET, "/api/v1/services/a", None),
        (reqwest::Method::GET, "/api/v1/services/d", None),
        (reqwest::Method::GET, "/api/v1/audit", None),
        (reqwest::Method::GET, "/api/v1/tokens", None),
    ];
    for (method, path, body) in calls {
        let answer = setup.api(method.clone(), path, body).await;
        assert!(
            answer.status.is_success(),
            "{method} {path}: {} {}",
            answer.status,
            answer.body
        );
        responses.push(answer.body.to_string());
    }
    // ingest handles requests authenticated with those secrets, logging at debug.
    assert_eq!(setup.post_signed(OTHER_SECRET).await, StatusCode::ACCEPTED);
    let bearer = setup
        .http
        .post(format!("http://127.0.0.1:{}/v1/events", setup.ingest_port))
        .bearer_auth(&secrets[2])
        .header("content-type", "application/json")
        .body(mih_testkit::fixtures::moodle_events()[5].to_string())
        .send()
        .await
        .expect("answer");
    assert_eq!(bearer.status(), StatusCode::ACCEPTED);

    let (status, logs) = process.stop().await;
    assert!(status.success(), "{logs}");
    let kv = setup.bucket_text().await;
    let database = setup.database_text().await;
    // The places looked at are real: debug logs, all live objects, every table.
    assert!(
        logs.contains("\"level\":\"DEBUG\"") && logs.contains("event stored"),
        "debug logs were captured"
    );
    for key in ["\"site\"", "\"a\"", "\"b\"", "\"c\"", "\"d\""] {
        assert!(kv.contains(key), "KV holds {key}");
    }
    assert!(
        database.contains("api_key") && database.contains("\"site\""),
        "database rows were read"
    );

    let places = [
        ("responses", responses.join("\n")),
        ("logs", logs),
        ("live config", kv),
        ("database", database),
    ];
    for secret in &secrets {
        let bare = secret.strip_prefix("whsec_").unwrap_or(secret);
        for (place, text) in &places {
            assert!(
                !text.contains(bare),
                "{place} contain the secret `{secret}`"
            );
        }
    }
    for (place, text) in &places[1..] {
        assert!(!text.contains(ADMIN), "{place} contain the admin token");
    }
}

#[tokio::test]
async fn api_refuses_to_start_without_the_key_that_sealed_its_secrets() {
    let setup = Setup::new().await;
    let first = setup.start(Some(KEY_A), &[]).await;
    let created = setup
        .api(
            reqwest::Method::POST,
            "/api/v1/services",
            Some(
                json!({"name": "a", "transport": {"kind": "rest", "base_url": "https://a.example"},
                        "auth": {"type": "bearer", "token": "sealed-token"}}),
            ),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert!(first.stop().await.0.success());

    for (key, expected) in [
        (None, "secret_key (MIH_SECRET_KEY) is not set"),
        (Some(KEY_B), "cannot open service `a` auth.token"),
    ] {
        let mut env = setup.env(key);
        env.push(("MIH_SERVICES", "api".to_owned()));
        let (status, output) = MihProcess::spawn(&["run"], &env)
            .wait(Duration::from_secs(30))
            .await;
        assert!(!status.success(), "api must refuse to start:\n{output}");
        assert!(
            output.contains(expected),
            "expected `{expected}` in:\n{output}"
        );
        let last = output
            .lines()
            .rfind(|line| line.starts_with("mih: "))
            .expect("a final error line");
        assert_eq!(
            last.matches(expected).count(),
            1,
            "the cause is stated once: {last}"
        );
    }
}

#[tokio::test]
async fn rotating_the_secret_key_with_reencrypt() {
    let setup = Setup::new().await;
    let first = setup.start(Some(KEY_A), &[]).await;
    let created = setup
        .api(
            reqwest::Method::POST,
            "/api/v1/sources",
            Some(json!({"id": "site", "signing_secret": TEST_SECRET})),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert!(first.stop().await.0.success());

    let mut env = setup.env(Some(KEY_B));
    env.push(("MIH_SECRET_KEYS_PREVIOUS", format!("[\"{KEY_A}\"]")));
    let (status, output) = MihProcess::spawn(&["secrets", "reencrypt"], &env)
        .wait(Duration::from_secs(30))
        .await;
    assert!(status.success(), "{output}");
    assert!(output.contains("moved=1"), "{output}");

    // Only the new key now: api starts, ingest verifies signatures with the re-sealed secret.
    let second = setup.start(Some(KEY_B), &[]).await;
    let mut accepted = StatusCode::UNAUTHORIZED;
    for _ in 0..100 {
        accepted = setup.post_signed(TEST_SECRET).await;
        if accepted == StatusCode::ACCEPTED {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(accepted, StatusCode::ACCEPTED);
    let key_b_id = Keyring::new(Some(KEY_B), &[])
        .expect("key")
        .current_key_id()
        .map(str::to_owned)
        .expect("id");
    assert!(
        setup
            .bucket_text()
            .await
            .contains(&format!("v1:{key_b_id}:")),
        "live config sealed with the new key"
    );
    let audit = setup
        .api(reqwest::Method::GET, "/api/v1/audit?action=reencrypt", None)
        .await;
    assert_eq!(audit.body["items"][0]["actor"], "cli");
    assert!(second.stop().await.0.success());
}

#[tokio::test]
async fn mih_token_create_bootstraps_the_first_admin() {
    let setup = Setup::new().await;
    let env: Vec<(&str, String)> = setup
        .env(None)
        .into_iter()
        .filter(|(name, _)| *name != "MIH_BOOTSTRAP_ADMIN_TOKEN")
        .collect();
    let (status, output) = MihProcess::spawn(
        &["token", "create", "--role", "admin", "--label", "first"],
        &env,
    )
    .wait(Duration::from_secs(30))
    .await;
    assert!(status.success(), "{output}");
    let token = output
        .lines()
        .find(|line| line.starts_with("mih_"))
        .expect("the token is printed")
        .to_owned();

    let mut run_env = env.clone();
    run_env.push(("MIH_SERVICES", "api".to_owned()));
    let process = MihProcess::spawn(&["run"], &run_env);
    wait_until_ok(
        &format!("http://127.0.0.1:{}/readyz", setup.api_port),
        Duration::from_secs(20),
    )
    .await
    .expect("api ready");
    let tokens = setup
        .http
        .get(format!("http://127.0.0.1:{}/api/v1/tokens", setup.api_port))
        .bearer_auth(&token)
        .send()
        .await
        .expect("answer");
    assert_eq!(tokens.status(), StatusCode::OK);
    let body: Value = tokens.json().await.expect("json");
    assert_eq!(body["items"][0]["created_by"], "cli");
    assert_eq!(body["items"][0]["label"], "first");
    assert!(process.stop().await.0.success());
}
