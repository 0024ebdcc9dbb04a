//! The SSRF guard through the REST transport: every spelling of an internal address a URL
//! parser accepts — names resolving to loopback, decimal, hex, octal and short IPv4 forms,
//! IPv4-mapped and -compatible IPv6 — is refused by default, before anything is sent, and
//! reaches the target only when `dispatcher.allow_networks` permits it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use mih_dispatcher::ssrf::SsrfGuard;
use mih_dispatcher::transport::http::HttpTarget;
use mih_dispatcher::transport::{AttemptMeta, EXCERPT_LIMIT, TransportEnv, Verdict};
use mih_shared::crypto::Keyring;
use mih_shared::live::{Auth, BreakerPolicy, LiveService, RestTransport, RetryPolicy, Transport};
use mih_shared::messages::{EventId, HttpMethod, HttpRequest, JobId, Version};

const KEY: &str = "5f2b1c7e9a0d4e3f8b6a1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f";

/// A loopback HTTP server answering 204 to anything, counting the connections it gets.
async fn sink() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&connections);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let _ = socket
                    .write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    (addr, connections)
}

fn env(allow: &[&str]) -> TransportEnv {
    TransportEnv {
        keyring: Arc::new(Keyring::new(Some(KEY), &[]).expect("keyring")),
        guard: Arc::new(SsrfGuard::new(
            allow
                .iter()
                .map(|net| net.parse().expect("network"))
                .collect(),
        )),
    }
}

fn target(base_url: &str, env: &TransportEnv) -> HttpTarget {
    let rest = RestTransport {
        base_url: base_url.to_owned(),
    };
    let service = LiveService {
        v: Version,
        name: "sis".parse().expect("slug"),
        description: String::new(),
        enabled: true,
        transport: Transport::Rest(rest.clone()),
        auth: Auth::None,
        signing_secret: None,
        headers: BTreeMap::new(),
        timeout_ms: 3_000,
        retry: RetryPolicy {
            max_retries: 0,
            backoff_base_ms: 100,
            backoff_cap_ms: 1_000,
        },
        breaker: BreakerPolicy {
            failure_threshold: 5,
            cooldown_ms: 1_000,
            half_open_probes: 1,
        },
        concurrency: 1,
        rate_limit_per_sec: None,
        max_job_age_ms: 60_000,
        inbound: None,
        version: 1,
    };
    HttpTarget::new(&service, &rest, env).unwrap_or_else(|e| panic!("{base_url}: {e}"))
}

fn post() -> HttpRequest {
    HttpRequest {
        method: HttpMethod::Post,
        path: "/hook".into(),
        query: Vec::new(),
        headers: Vec::new(),
        body: Some("{}".into()),
        content_type: Some("application/json".into()),
    }
}

fn meta() -> AttemptMeta {
    AttemptMeta {
        job_id: JobId::new_v7(),
        event_id: Some(EventId::new_v7()),
        attempt: 1,
        traceparent: None,
        body_limit: EXCERPT_LIMIT,
    }
}

/// Spellings of 127.0.0.1 (and names for it) that a URL parser accepts.
fn loopback_spellings(port: u16) -> Vec<String> {
    let mut urls: Vec<String> = [
        "127.0.0.1",
        "2130706433",
        "0x7f000001",
        "0x7f.1",
        "0x7f.0.0.1",
        "0177.0.0.1",
        "017700000001",
        "127.1",
        "127.0.1",
        "127.0.0.1.",
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "localhost",
        "LOCALHOST",
    ]
    .iter()
    .map(|host| format!("http://{host}:{port}/"))
    .collect();
    // Other names /etc/hosts gives to loopback here (the sandbox's own hostnames).
    for name in [
        "localhost.",
        "runsc",
        "vm",
        "ip6-localhost",
        "ip6-loopback",
        "localhost.localdomain",
    ] {
        if std::net::ToSocketAddrs::to_socket_addrs(&(name, port))
            .is_ok_and(|mut addrs| addrs.all(|a| a.ip().is_loopback()))
        {
            urls.push(format!("http://{name}:{port}/"));
        }
    }
    urls
}

#[tokio::test]
async fn every_spelling_of_loopback_is_refused_by_default_and_nothing_is_sent() {
    let (addr, connections) = sink().await;
    let env = env(&[]);
    for url in loopback_spellings(addr.port()) {
        let attempt = target(&url, &env).deliver(&post(), &meta()).await;
        assert_eq!(attempt.verdict, Verdict::Permanent, "{url}: {attempt:?}");
        let error = attempt.error.unwrap_or_default();
        assert!(
            error.contains("dispatcher.allow_networks"),
            "{url}: {error}"
        );
        assert!(error.contains("loopback"), "{url}: {error}");
    }
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "nothing reached the sink"
    );
}

#[tokio::test]
async fn the_allowlist_lets_them_through() {
    let (addr, connections) = sink().await;
    let env = env(&["127.0.0.0/8"]);
    let urls = loopback_spellings(addr.port());
    for url in &urls {
        let attempt = target(url, &env).deliver(&post(), &meta()).await;
        assert_eq!(attempt.verdict, Verdict::Delivered, "{url}: {attempt:?}");
        assert_eq!(attempt.status, Some(204), "{url}");
    }
    assert_eq!(connections.load(Ordering::SeqCst), urls.len());
    // An allowlist for another network does not open loopback.
    let other = env_with_other_network();
    let attempt = target(&urls[0], &other).deliver(&post(), &meta()).await;
    assert_eq!(attempt.verdict, Verdict::Permanent, "{attempt:?}");
}

fn env_with_other_network() -> TransportEnv {
    env(&["10.0.0.0/8", "::1/128"])
}

#[tokio::test]
async fn internal_literals_of_every_kind_are_refused_before_connecting() {
    let env = env(&[]);
    for (url, kind) in [
        ("http://0/", "unspecified"),
        ("http://0.0.0.0:9/", "unspecified"),
        ("http://[::]:9/", "unspecified"),
        ("http://[::1]:9/", "loopback"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://2852039166/", "link-local"),
        ("http://0xa9.0xfe.0xa9.0xfe/", "link-local"),
        ("http://[::ffff:169.254.169.254]/", "link-local"),
        ("http://[fe80::1]/", "link-local"),
        ("http://10.0.0.1/", "private"),
        ("http://012.1/", "private"),
        ("http://172.16.0.1/", "private"),
        ("http://192.168.0.1/", "private"),
        ("http://3232235521/", "private"),
        ("http://[fd00::1]/", "private"),
        ("http://100.64.0.1/", "carrier-grade"),
        ("http://255.255.255.255/", "reserved"),
        ("http://224.0.0.1/", "reserved"),
        // IPv4-compatible and NAT64 forms: found here, fixed in `ssrf::canonical`.
        ("http://[::127.0.0.1]:9/", "loopback"),
        ("http://[::169.254.169.254]/", "link-local"),
        ("http://[64:ff9b::127.0.0.1]/", "loopback"),
        ("http://[64:ff9b::10.0.0.1]/", "private"),
    ] {
        let attempt = target(url, &env).deliver(&post(), &meta()).await;
        assert_eq!(attempt.verdict, Verdict::Permanent, "{url}: {attempt:?}");
        let error = attempt.error.unwrap_or_default();
        assert!(
            error.contains(kind) && error.contains("dispatcher.allow_networks"),
            "{url}: {error}"
        );
    }
}

#[test]
fn a_rendered_path_cannot_change_the_host() {
    // A public base whose rendered path tries to point at loopback instead.
    let base = url::Url::parse("http://192.0.2.10:9/api").expect("url");
    for path in [
        "//127.0.0.1:8080/x",
        "/@127.0.0.1:8080/x",
        "/..%2f..%2f127.0.0.1/x",
        "/../../../127.0.0.1",
        "http://127.0.0.1/x",
    ] {
        if let Ok(url) = mih_dispatcher::transport::http::join(&base, path, &[]) {
            assert_eq!(url.host_str(), Some("192.0.2.10"), "{path}: {url}");
        }
    }
}
