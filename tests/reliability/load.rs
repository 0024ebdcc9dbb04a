//! A steady load: one event per request, posted to ingest at a fixed rate with the bearer token,
//! each with its own `Idempotency-Key`. Requests are not retried: a request that got no 202 is
//! simply "not accepted".

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use mih_testkit::sign::TEST_TOKEN;

/// What became of one request.
#[derive(Debug, Clone)]
pub struct Sent {
    pub key: String,
    /// The event id ingest gave it, when it answered 202.
    pub accepted: Option<String>,
    /// The status or the error otherwise.
    pub refusal: Option<String>,
    /// When the answer (or the error) came.
    pub answered_at: Instant,
}

pub struct Load {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Vec<Sent>>,
}

/// The event sent as number `n`: a real Moodle event, told apart by `objectid`.
pub fn event(n: u64) -> Value {
    let mut event = mih_testkit::fixtures::moodle_events()
        .into_iter()
        .next()
        .expect("a fixture event");
    event["objectid"] = Value::from(n);
    // Forty learners: what a rule ordered by learner keeps in order.
    event["relateduserid"] = Value::from(1000 + n % 40);
    event
}

/// Posts one event with `key`; `Ok(event id)` on 202.
pub async fn post(http: &reqwest::Client, url: &str, key: &str, n: u64) -> Result<String, String> {
    let response = http
        .post(url)
        .bearer_auth(TEST_TOKEN)
        .header("idempotency-key", key)
        .json(&event(n))
        .send()
        .await
        .map_err(|e| format!("error: {e}"))?;
    let status = response.status();
    if status != StatusCode::ACCEPTED {
        return Err(status.as_u16().to_string());
    }
    let body: Value = response
        .json()
        .await
        .map_err(|e| format!("202 body: {e}"))?;
    body["events"][0]["id"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("202 without an event id: {body}"))
}

impl Load {
    /// Starts posting `rate` events a second, keys `<prefix>-<n>`, to the `urls` in turn (the
    /// ingest replicas).
    pub fn start(http: reqwest::Client, urls: Vec<String>, rate: u32, prefix: String) -> Self {
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut requests = JoinSet::new();
            let mut n = 0u64;
            loop {
                tokio::select! {
                    _ = stopped.cancelled() => break,
                    _ = ticks.tick() => {
                        n += 1;
                        let http = http.clone();
                        let url = urls[usize::try_from(n).unwrap_or(0) % urls.len().max(1)].clone();
                        let key = format!("{prefix}-{n}");
                        requests.spawn(async move {
                            let outcome = post(&http, &url, &key, n).await;
                            let (accepted, refusal) = match outcome {
                                Ok(id) => (Some(id), None),
                                Err(why) => (None, Some(why)),
                            };
                            Sent { key, accepted, refusal, answered_at: Instant::now() }
                        });
                    }
                }
            }
            let mut sent = Vec::new();
            while let Some(done) = requests.join_next().await {
                sent.push(done.expect("request task"));
            }
            sent
        });
        Self { stop, task }
    }

    /// Stops sending, waits for the answers still due, returns every request's fate.
    pub async fn stop(self) -> Vec<Sent> {
        self.stop.cancel();
        self.task.await.expect("load task")
    }
}
