//! An HTTP target for tests: records every request and answers as told.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// One request the sink received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub received_at: Instant,
    /// The status the sink answered with.
    pub status: u16,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> serde_json::Result<serde_json::Value> {
        serde_json::from_slice(&self.body)
    }
}

/// How the sink answers one request.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub delay: Duration,
    pub body: String,
    pub headers: Vec<(String, String)>,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            delay: Duration::ZERO,
            body: String::new(),
            headers: Vec::new(),
        }
    }

    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    pub fn with_body(mut self, body: impl Into<String>) -> Self {
        self.body = body.into();
        self
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

#[derive(Debug)]
struct Inner {
    requests: Vec<Recorded>,
    /// Replies used in order before falling back to `default`.
    scripted: VecDeque<Reply>,
    /// Replies for one path, used in order before any other.
    by_path: HashMap<String, VecDeque<Reply>>,
    default: Reply,
}

#[derive(Debug)]
struct Shared {
    inner: Mutex<Inner>,
    arrived: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A test that panicked while holding the lock has failed already; keep serving.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[derive(Debug)]
pub struct HttpSink {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl HttpSink {
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_at("127.0.0.1:0".parse()?).await
    }

    /// A sink on a given address: a target that comes back where it was before an outage.
    pub async fn start_at(addr: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                requests: Vec::new(),
                scripted: VecDeque::new(),
                by_path: HashMap::new(),
                default: Reply::status(200),
            }),
            arrived: Notify::new(),
        });
        let app = Router::new()
            .fallback(record)
            .with_state(Arc::clone(&shared));
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "http sink stopped");
            }
        });
        Ok(Self {
            addr,
            shared,
            server,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How every request is answered from now on (after any scripted replies).
    pub fn set_reply(&self, reply: Reply) {
        self.shared.lock().default = reply;
    }

    /// Replies for the next requests, in order.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.shared.lock().scripted.extend(replies);
    }

    /// Replies for the next requests to `path` (without the query), in order.
    pub fn script_path(&self, path: &str, replies: impl IntoIterator<Item = Reply>) {
        self.shared
            .lock()
            .by_path
            .entry(path.to_owned())
            .or_default()
            .extend(replies);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.lock().requests.clone()
    }

    pub fn count(&self) -> usize {
        self.shared.lock().requests.len()
    }

    /// Waits until at least `n` requests arrived.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> anyhow::Result<Vec<Recorded>> {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.shared.arrived.notified();
            let seen = self.count();
            if seen >= n {
                return Ok(self.requests());
            }
            if tokio::time::timeout_at(deadline.into(), notified)
                .await
                .is_err()
            {
                anyhow::bail!(
                    "the sink received {seen} requests, expected {n}, within {timeout:?}"
                );
            }
        }
    }
}

impl Drop for HttpSink {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn record(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let reply = {
        let mut inner = shared.lock();
        let reply = inner
            .by_path
            .get_mut(uri.path())
            .and_then(VecDeque::pop_front)
            .or_else(|| inner.scripted.pop_front())
            .unwrap_or_else(|| inner.default.clone());
        inner.requests.push(Recorded {
            method,
            uri,
            headers,
            body,
            received_at: Instant::now(),
            status: reply.status,
        });
        reply
    };
    shared.arrived.notify_waiters();
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, reply.body).into_response();
    for (name, value) in reply.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn records_requests_and_answers_as_scripted_then_by_default() {
        let sink = HttpSink::start().await.expect("sink");
        sink.script([
            Reply::status(503).with_header("retry-after", "1"),
            Reply::status(400).with_body("no"),
        ]);
        sink.set_reply(Reply::status(201));
        let http = reqwest::Client::new();
        let mut statuses = Vec::new();
        for i in 0..3 {
            let response = http
                .post(format!("{}/hook?n={i}", sink.url()))
                .header("x-test", i.to_string())
                .body(format!("body {i}"))
                .send()
                .await
                .expect("answer");
            statuses.push(response.status().as_u16());
        }
        assert_eq!(statuses, [503, 400, 201]);
        let seen = sink
            .wait_for(3, Duration::from_secs(1))
            .await
            .expect("three requests");
        assert_eq!(seen[1].uri.query(), Some("n=1"));
        assert_eq!(seen[2].header("x-test"), Some("2"));
        assert_eq!(&seen[0].body[..], b"body 0");
        assert!(sink.wait_for(4, Duration::from_millis(50)).await.is_err());
    }
}
