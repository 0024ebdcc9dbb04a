//! Headless Chromium for tests of the dashboard: Debian's `chromium` and `chromedriver`
//! (installed by `scripts/dev-deps`), driven over WebDriver with fantoccini. Nothing downloads
//! a browser.
//!
//! ```ignore
//! let browser = Browser::start().await?;
//! browser.goto(&url).await?;
//! browser.fill("#token", token).await?;
//! browser.click("button[type=submit]").await?;
//! browser.wait_for_text("h1", "Overview", Duration::from_secs(10)).await?;
//! browser.screenshot("overview").await?;      // target/dashboard-screenshots/overview.png
//! browser.assert_accessible("overview").await; // axe-core: no serious or critical violation
//! browser.close().await;
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use fantoccini::cookies::Cookie;
use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::{free_port, wait_until_ok, workspace_root};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A browser session; chromedriver and its Chromium are killed when it is dropped.
#[derive(Debug)]
pub struct Browser {
    client: Client,
    _driver: Child,
    profile: tempfile::TempDir,
}

impl Drop for Browser {
    /// chromedriver dies with its `Child`, but the Chromium it started outlived it whenever a
    /// test failed before closing the session (dozens were found running after a failed run).
    /// Every Chromium process of this session names the session's own profile directory.
    fn drop(&mut self) {
        let marker = format!("--user-data-dir={}", self.profile.path().display());
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return;
        };
        let pids: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let pid = entry.file_name().to_str()?.parse::<u32>().ok()?;
                let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
                let mentions = cmdline
                    .split(|&b| b == 0)
                    .any(|arg| arg == marker.as_bytes());
                mentions.then(|| pid.to_string())
            })
            .collect();
        if !pids.is_empty() {
            let _ = std::process::Command::new("kill")
                .arg("-KILL")
                .args(&pids)
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// One accessibility problem axe-core found.
#[derive(Debug, Clone)]
pub struct Violation {
    pub id: String,
    pub impact: String,
    pub help: String,
    /// Selectors of the first elements concerned.
    pub nodes: Vec<String>,
}

impl Violation {
    pub fn is_serious(&self) -> bool {
        matches!(self.impact.as_str(), "serious" | "critical")
    }
}

/// chromedriver on a free port, tried three times: the port chosen can be taken by another
/// test before chromedriver binds it, and then it never answers.
async fn start_driver() -> anyhow::Result<(Child, String)> {
    let mut last = None;
    for _ in 0..3 {
        let port = free_port()?;
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting chromedriver")?;
        let url = format!("http://127.0.0.1:{port}");
        match wait_until_ok(&format!("{url}/status"), Duration::from_secs(15)).await {
            Ok(()) => return Ok((driver, url)),
            Err(e) => last = Some(e),
        }
    }
    Err(anyhow!(
        "chromedriver did not start in three tries: {}",
        last.map(|e| e.to_string()).unwrap_or_default()
    ))
}

impl Browser {
    /// A 1366×768 headless Chromium speaking English.
    pub async fn start() -> anyhow::Result<Browser> {
        Self::start_with_lang("en").await
    }

    /// A browser whose `Accept-Language` asks for `lang` first.
    pub async fn start_with_lang(lang: &str) -> anyhow::Result<Browser> {
        for binary in [CHROMIUM, CHROMEDRIVER] {
            if !Path::new(binary).exists() {
                bail!(
                    "{binary} is missing: scripts/dev-deps installs Debian's chromium and chromium-driver"
                );
            }
        }
        let (driver, url) = start_driver().await?;
        let profile = tempfile::tempdir()?;
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run", "--disable-quic",
                    "--window-size=1366,768",
                    format!("--lang={lang}"),
                    format!("--user-data-dir={}", profile.path().display()),
                ],
                "prefs": {"intl.accept_languages": lang},
            }),
        );
        let client = ClientBuilder::rustls()
            .context("a WebDriver client")?
            .capabilities(capabilities)
            .connect(&url)
            .await
            .context("a Chromium session")?;
        Ok(Browser {
            client,
            _driver: driver,
            profile,
        })
    }

    /// The session's own Chromium profile directory (every Chromium process of the session
    /// names it).
    pub fn profile_dir(&self) -> String {
        self.profile.path().display().to_string()
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.client
            .goto(url)
            .await
            .with_context(|| format!("opening {url}"))
    }

    pub async fn current_url(&self) -> anyhow::Result<String> {
        Ok(self.client.current_url().await?.to_string())
    }

    async fn find(&self, css: &str) -> anyhow::Result<Element> {
        match self.client.find(Locator::Css(css)).await {
            Ok(element) => Ok(element),
            Err(error) => Err(anyhow!("no `{css}` ({error}) {}", self.where_am_i().await)),
        }
    }

    /// The page's URL and the start of its text, for error messages.
    async fn where_am_i(&self) -> String {
        let url = self.current_url().await.unwrap_or_default();
        let text = self
            .execute(
                "return document.body ? document.body.innerText : ''",
                vec![],
            )
            .await
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let start: String = text.chars().take(300).collect();
        format!("on {url}: {start:?}")
    }

    pub async fn text(&self, css: &str) -> anyhow::Result<String> {
        Ok(self.find(css).await?.text().await?)
    }

    pub async fn texts(&self, css: &str) -> anyhow::Result<Vec<String>> {
        let mut texts = Vec::new();
        for element in self.client.find_all(Locator::Css(css)).await? {
            texts.push(element.text().await?);
        }
        Ok(texts)
    }

    pub async fn exists(&self, css: &str) -> anyhow::Result<bool> {
        Ok(!self.client.find_all(Locator::Css(css)).await?.is_empty())
    }

    pub async fn click(&self, css: &str) -> anyhow::Result<()> {
        Ok(self.find(css).await?.click().await?)
    }

    /// Clears a field and types `value` into it.
    pub async fn fill(&self, css: &str, value: &str) -> anyhow::Result<()> {
        let element = self.find(css).await?;
        element.clear().await?;
        Ok(element.send_keys(value).await?)
    }

    /// Chooses the option with this value in a `<select>` (the page sees a change event).
    pub async fn select(&self, css: &str, value: &str) -> anyhow::Result<()> {
        Ok(self.find(css).await?.select_by_value(value).await?)
    }

    /// Polls until `css` matches an element.
    pub async fn wait_for(&self, css: &str, timeout: Duration) -> anyhow::Result<Element> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Ok(element) = self.client.find(Locator::Css(css)).await {
                return Ok(element);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "`{css}` did not appear within {timeout:?} {}",
                    self.where_am_i().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls until an element matching `css` contains `needle`.
    pub async fn wait_for_text(
        &self,
        css: &str,
        needle: &str,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            for text in self.texts(css).await.unwrap_or_default() {
                if text.contains(needle) {
                    return Ok(text);
                }
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "no `{css}` containing {needle:?} within {timeout:?} {}",
                    self.where_am_i().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn cookie(&self, name: &str) -> anyhow::Result<Option<Cookie<'static>>> {
        Ok(self
            .client
            .get_all_cookies()
            .await?
            .into_iter()
            .find(|cookie| cookie.name() == name))
    }

    pub async fn execute(&self, script: &str, args: Vec<Value>) -> anyhow::Result<Value> {
        Ok(self.client.execute(script, args).await?)
    }

    /// A PNG of the window in `<target>/dashboard-screenshots/<name>.png`.
    pub async fn screenshot(&self, name: &str) -> anyhow::Result<PathBuf> {
        let dir = target_dir().join("dashboard-screenshots");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, self.client.screenshot().await?)?;
        Ok(path)
    }

    /// Runs axe-core (the dashboard's npm dev dependency) on the page.
    pub async fn axe(&self) -> anyhow::Result<Vec<Violation>> {
        let script =
            workspace_root().join("services/api/dashboard/node_modules/axe-core/axe.min.js");
        let source = std::fs::read_to_string(&script).with_context(|| {
            format!(
                "reading {}: run scripts/dev-deps (it installs the dashboard's npm packages)",
                script.display()
            )
        })?;
        self.execute(&source, vec![]).await?;
        let result = self
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 axe.run(document, {resultTypes: ['violations']})
                    .then(r => done(r.violations.map(v => ({id: v.id, impact: v.impact || '',
                        help: v.help, nodes: v.nodes.slice(0, 5).map(n => n.target.join(' '))}))))
                    .catch(e => done({error: String(e)}));",
                vec![],
            )
            .await?;
        if let Some(error) = result.get("error") {
            bail!("axe-core failed: {error}");
        }
        let items = result.as_array().cloned().unwrap_or_default();
        Ok(items
            .iter()
            .map(|v| Violation {
                id: v["id"].as_str().unwrap_or_default().to_owned(),
                impact: v["impact"].as_str().unwrap_or_default().to_owned(),
                help: v["help"].as_str().unwrap_or_default().to_owned(),
                nodes: v["nodes"]
                    .as_array()
                    .map(|n| {
                        n.iter()
                            .filter_map(|s| s.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default(),
            })
            .collect())
    }

    /// Fails listing every serious or critical axe-core violation of the page.
    pub async fn assert_accessible(&self, page: &str) {
        let violations = self
            .axe()
            .await
            .unwrap_or_else(|e| panic!("axe-core on {page}: {e}"));
        let serious: Vec<String> = violations
            .iter()
            .filter(|v| v.is_serious())
            .map(|v| format!("{} ({}): {} at {:?}", v.id, v.impact, v.help, v.nodes))
            .collect();
        assert!(
            serious.is_empty(),
            "{page} has accessibility problems:\n{}",
            serious.join("\n")
        );
    }

    /// Ends the WebDriver session (the client is a handle; the clone closes the one session).
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

/// `$CARGO_TARGET_DIR`, or the workspace's `target`.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}
