//! A Moodle site on the stand-in: its database, the plugin's settings, and `driver.php` runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::{Map, Value, json};
use tokio::process::Command;

use mih_shared::ServiceName;
use mih_testkit::TestDatabase;
use mih_testkit::sign::TEST_SECRET;

use crate::harness::{ADMIN_TOKEN, TestHub};

/// The repository's `shim/` directory.
pub fn shim_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("shim")
}

/// A site with the plugin installed in its own database.
pub struct Site {
    _db: TestDatabase,
    dsn: String,
    settings: Map<String, Value>,
    /// Stand-in hooks (`MIH_STANDIN_…` variables) for the following runs.
    env: BTreeMap<String, String>,
    dir: PathBuf,
}

impl Site {
    /// Installs the plugin's tables and configures it for `hub` (source `moodle`).
    pub async fn install(hub: &TestHub) -> Site {
        let db = TestDatabase::create().await.expect("site database");
        let dsn = format!(
            "pgsql:host=127.0.0.1;port=5432;dbname={};user=postgres",
            db.name()
        );
        let dir = std::env::temp_dir().join(format!("mih-site-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("site dir");
        let Value::Object(settings) = json!({
            "ingesturl": hub.url(ServiceName::Ingest, ""),
            "sourceid": "moodle",
            "signingsecret": TEST_SECRET,
            "apiurl": hub.url(ServiceName::Api, ""),
            "apitoken": ADMIN_TOKEN,
            "timeout": 5,
        }) else {
            unreachable!("an object literal")
        };
        let site = Site {
            _db: db,
            dsn,
            settings,
            env: BTreeMap::new(),
            dir,
        };
        site.run_raw(&["install"]).await;
        site
    }

    /// Changes a setting of the plugin for the following runs.
    pub fn set(&mut self, name: &str, value: impl Into<Value>) {
        self.settings.insert(name.to_owned(), value.into());
    }

    /// Sets (or with `None` removes) a variable of the stand-in for the following runs, e.g.
    /// `MIH_STANDIN_CRASH_AFTER` (`shim/tests/standin/recorder.php`).
    pub fn set_env(&mut self, name: &str, value: Option<&str>) {
        match value {
            Some(value) => self.env.insert(name.to_owned(), value.to_owned()),
            None => self.env.remove(name),
        };
    }

    /// Every `\local_mih\event\webhook_received` raised so far, as the stand-in's observer
    /// received it (`get_data()`), in order.
    pub fn raised(&self) -> Vec<Value> {
        match std::fs::read_to_string(self.event_log()) {
            Ok(text) => text
                .lines()
                .map(|line| serde_json::from_str(line).expect("a recorded event"))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => panic!("cannot read the recorded events: {e}"),
        }
    }

    fn event_log(&self) -> PathBuf {
        self.dir.join("raised.jsonl")
    }

    /// Writes events as a JSON-lines file for `raise`, answering its path.
    pub fn events_file(&self, name: &str, events: &[Value]) -> String {
        let path = self.dir.join(name);
        let lines: Vec<String> = events.iter().map(Value::to_string).collect();
        std::fs::write(&path, lines.join("\n")).expect("write events");
        path.to_string_lossy().into_owned()
    }

    /// Runs a driver command that prints JSON; panics with its output when it fails.
    pub async fn run(&self, args: &[&str]) -> Value {
        let output = self.run_raw(args).await;
        let stdout = String::from_utf8_lossy(&output.stdout);
        serde_json::from_str(&stdout).unwrap_or_else(|e| {
            panic!(
                "driver {args:?} printed no JSON ({e}):\n{stdout}\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        })
    }

    /// Runs a driver command; panics when it exits unsuccessfully.
    pub async fn run_raw(&self, args: &[&str]) -> Output {
        let output = self.run_any(args).await;
        assert!(
            output.status.success(),
            "driver {args:?} failed ({}):\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    /// Runs a driver command, however it ends.
    pub async fn run_any(&self, args: &[&str]) -> Output {
        self.command(args)
            .output()
            .await
            .unwrap_or_else(|e| panic!("cannot run php ({e}); scripts/dev-deps installs it"))
    }

    /// The command for a driver run, to start several at once.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("php");
        command
            .arg(shim_dir().join("tests/driver.php"))
            .args(args)
            .env("MIH_STANDIN_DSN", &self.dsn)
            .env(
                "MIH_STANDIN_CONFIG",
                Value::Object(self.settings.clone()).to_string(),
            )
            .env("MIH_STANDIN_EVENT_LOG", self.event_log())
            .envs(&self.env)
            .kill_on_drop(true);
        command
    }

    /// The outbox summary, parked rows and every row.
    pub async fn status(&self) -> Value {
        self.run(&["status"]).await
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
