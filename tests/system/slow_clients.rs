//! Clients that connect and then send slowly, or nothing: every listener cuts them after its
//! `[http]` timeouts and holds at most `http.max_connections` at once, while requests that are
//! merely slow to answer, or whose body arrives slowly but steadily, still get through.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

use mih_shared::ServiceName;
use mih_testkit::sign::TEST_TOKEN;
use mih_testkit::{HttpSink, Reply, fixtures};

use crate::harness::TestHub;

const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(1);
const IDLE_TIMEOUT: Duration = Duration::from_secs(3);
const MAX_CONNECTIONS: u32 = 8;
/// Far longer than any timeout under test: what a listener must have done by then, it does.
const GENEROUS: Duration = Duration::from_secs(15);

async fn hub(services: &[ServiceName], idle_timeout: Duration) -> TestHub {
    TestHub::builder()
        .services(services)
        .toml(&format!(
            "[http]\nheader_read_timeout = \"{}ms\"\nidle_timeout = \"{}ms\"\nmax_connections = {MAX_CONNECTIONS}\n",
            HEADER_READ_TIMEOUT.as_millis(),
            idle_timeout.as_millis(),
        ))
        .start()
        .await
}

async fn ingest_hub() -> TestHub {
    hub(&[ServiceName::Ingest, ServiceName::Api], IDLE_TIMEOUT).await
}

/// Reads until the server closes the connection (EOF or reset); what arrived before is returned.
async fn until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return received,
            Ok(n) => received.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads one HTTP/1.1 response with a `content-length`; its status and body.
async fn read_response(stream: &mut TcpStream) -> Result<(u16, String), String> {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&received[..end]).to_string();
            let status = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse::<u16>().ok())
                .ok_or_else(|| format!("no status in `{head}`"))?;
            let length = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .ok_or_else(|| format!("no content-length in `{head}`"))?;
            if received.len() >= end + 4 + length {
                let body = String::from_utf8_lossy(&received[end + 4..end + 4 + length]);
                return Ok((status, body.to_string()));
            }
        }
        match stream.read(&mut buf).await {
            Ok(0) => return Err("closed before a whole response".into()),
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("read failed: {e}")),
        }
    }
}

/// Sends a request head on `stream` a byte every 100 ms, never finishing it (that would take a
/// minute). Returns how long the connection lived, from `opened`, before the server closed it.
async fn trickle_head(stream: TcpStream, opened: Instant) -> Result<Duration, String> {
    let (mut reader, mut writer) = stream.into_split();
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nhost: mih\r\nx-padding: {}",
        "a".repeat(600)
    );
    let trickle = async move {
        for byte in head.as_bytes() {
            if writer.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Keep the connection open rather than half-closing it when the bytes run out.
        std::future::pending::<()>().await;
    };
    let closed = async move {
        let mut buf = [0u8; 1024];
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    timeout(GENEROUS, async {
        tokio::select! {
            () = trickle => {}
            () = closed => {}
        }
        opened.elapsed()
    })
    .await
    .map_err(|_| format!("still open after {GENEROUS:?}"))
}

/// `name{labels} value` from Prometheus text, or 0 when the series is absent.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series))
        .and_then(|rest| rest.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_heads_are_cut_after_the_header_timeout_and_the_cap_makes_others_wait() {
    let hub = ingest_hub().await;
    let ingest = hub.addr(ServiceName::Ingest);
    let slow = MAX_CONNECTIONS + 4;
    let mut trickles = Vec::new();
    for _ in 0..slow {
        // Beyond the cap the kernel still completes the handshake; the connection waits in
        // the listen backlog.
        let stream = TcpStream::connect(ingest).await.expect("connects");
        trickles.push(tokio::spawn(trickle_head(stream, Instant::now())));
    }

    // A Moodle site posting now waits behind the slow clients until their slots free up.
    let client = reqwest::Client::new();
    let sent = Instant::now();
    let post = client
        .post(hub.url(ServiceName::Ingest, "/v1/events"))
        .header("authorization", format!("Bearer {TEST_TOKEN}"))
        .header("content-type", "application/json")
        .body("[]")
        .send();
    let answer = timeout(GENEROUS, post)
        .await
        .expect("the request got through once slots freed up")
        .expect("ingest answered");
    let waited = sent.elapsed();
    assert_eq!(
        answer.status(),
        StatusCode::BAD_REQUEST,
        "the empty batch reached the handler"
    );
    drop(client);

    for trickle in trickles {
        let lived = trickle
            .await
            .expect("trickle task")
            .expect("the slow client was disconnected");
        assert!(
            lived >= HEADER_READ_TIMEOUT / 2,
            "cut after {lived:?}, before its header timeout could have passed"
        );
    }
    assert!(
        waited >= HEADER_READ_TIMEOUT / 2,
        "answered after {waited:?}: it should have waited for a slow client's slot"
    );
    let text = hub.metrics(ServiceName::Api).await;
    let cut = metric(
        &text,
        "mih_http_connections_closed_total{service=\"ingest\",reason=\"header_timeout\"}",
    );
    assert!(
        cut >= f64::from(slow),
        "{cut} header timeouts counted:\n{text}"
    );
    assert!(
        metric(
            &text,
            "mih_http_connection_cap_reached_total{service=\"ingest\"}"
        ) >= 1.0,
        "the cap was counted:\n{text}"
    );
    // The metrics come from api's listener: ingest's may still be busy.
    mih_testkit::eventually(GENEROUS, || async {
        let text = hub.metrics(ServiceName::Api).await;
        let open = metric(&text, "mih_http_connections_open{service=\"ingest\"}");
        if open == 0.0 {
            Ok(())
        } else {
            Err(format!("{open} connections still open on ingest"))
        }
    })
    .await
    .expect("every connection was let go");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_alive_connection_outlives_the_header_timeout_and_is_closed_when_idle() {
    let hub = ingest_hub().await;
    let mut stream = TcpStream::connect(hub.addr(ServiceName::Ingest))
        .await
        .expect("connects");
    let request = b"GET /healthz HTTP/1.1\r\nhost: mih\r\n\r\n";
    stream.write_all(request).await.expect("sends");
    let (status, _) = read_response(&mut stream).await.expect("first answer");
    assert_eq!(status, 200);

    // Quiet for longer than the header timeout, shorter than the idle timeout: still usable.
    tokio::time::sleep(HEADER_READ_TIMEOUT + HEADER_READ_TIMEOUT / 2).await;
    stream.write_all(request).await.expect("sends again");
    let (status, _) = read_response(&mut stream)
        .await
        .expect("the kept-alive connection answered again");
    assert_eq!(status, 200);
    let idle_from = Instant::now();

    let leftover = timeout(GENEROUS, until_closed(&mut stream))
        .await
        .expect("the idle connection was closed");
    assert!(
        leftover.is_empty(),
        "{}",
        String::from_utf8_lossy(&leftover)
    );
    let idled = idle_from.elapsed();
    assert!(
        idled >= IDLE_TIMEOUT / 2,
        "closed after {idled:?} idle, before the idle timeout could have passed"
    );
    let text = hub.metrics(ServiceName::Api).await;
    assert!(
        metric(
            &text,
            "mih_http_connections_closed_total{service=\"ingest\",reason=\"idle_timeout\"}"
        ) >= 1.0,
        "{text}"
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_is_ended_after_the_idle_timeout_while_a_steady_one_goes_through() {
    let hub = ingest_hub().await;
    let ingest = hub.addr(ServiceName::Ingest);
    let head = |length: usize| {
        format!(
            "POST /v1/events HTTP/1.1\r\nhost: mih\r\nauthorization: Bearer {TEST_TOKEN}\r\n\
             content-type: application/json\r\ncontent-length: {length}\r\n\r\n"
        )
    };

    // Steady: a chunk every half second, longer in total than the idle timeout.
    let body = serde_json::to_vec_pretty(&json!([fixtures::moodle_events()[0]])).expect("json");
    let mut steady = TcpStream::connect(ingest).await.expect("connects");
    steady
        .write_all(head(body.len()).as_bytes())
        .await
        .expect("head");
    let started = Instant::now();
    for chunk in body.chunks(body.len().div_ceil(8)) {
        steady.write_all(chunk).await.expect("chunk");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        started.elapsed() > IDLE_TIMEOUT,
        "the body took longer than the idle timeout"
    );
    let (status, answer) = timeout(GENEROUS, read_response(&mut steady))
        .await
        .expect("answered")
        .expect("a whole response");
    assert_eq!(status, 202, "{answer}");

    // Stalled: the head and a few bytes, then nothing.
    let mut stalled = TcpStream::connect(ingest).await.expect("connects");
    stalled
        .write_all(head(1000).as_bytes())
        .await
        .expect("head");
    stalled.write_all(b"[{\"eventn").await.expect("some body");
    let stalled_from = Instant::now();
    let (status, answer) = timeout(GENEROUS, read_response(&mut stalled))
        .await
        .expect("the stalled request was ended")
        .expect("a whole response");
    assert_eq!(status, 400, "{answer}");
    let waited = stalled_from.elapsed();
    assert!(
        waited >= IDLE_TIMEOUT / 2,
        "ended after {waited:?}, before the idle timeout could have passed"
    );
    let leftover = timeout(GENEROUS, until_closed(&mut stalled))
        .await
        .expect("the connection was closed after the answer");
    assert!(
        leftover.is_empty(),
        "{}",
        String::from_utf8_lossy(&leftover)
    );
    let text = hub.metrics(ServiceName::Api).await;
    assert!(
        metric(
            &text,
            "mih_http_connections_closed_total{service=\"ingest\",reason=\"body_timeout\"}"
        ) >= 1.0,
        "{text}"
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_facade_call_waiting_longer_than_the_idle_timeout_is_answered() {
    // The target answers after twice the idle timeout, within the harness's NATS request
    // timeout (3 s), with no byte moving on the caller's connection meanwhile.
    let idle_timeout = Duration::from_secs(1);
    let hub = hub(&[ServiceName::Api, ServiceName::Dispatcher], idle_timeout).await;
    let sink = HttpSink::start().await.expect("sink");
    sink.set_reply(
        Reply::status(200)
            .with_body("slow but fine")
            .with_delay(idle_timeout * 2),
    );
    let service = json!({
        "name": "slow",
        "transport": {"kind": "rest", "base_url": sink.url()},
        "retry": {"max_retries": 0, "backoff_base_ms": 10, "backoff_cap_ms": 200},
    });
    let created = hub.api().post("/api/v1/services", &service).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    hub.wait_for_config(ServiceName::Dispatcher).await;

    let answer = hub
        .api()
        .post(
            "/api/v1/services/slow/request",
            &json!({"method": "GET", "path": "/"}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body["ok"], true, "{}", answer.body);
    assert_eq!(answer.body["body"], "slow but fine");
    hub.stop().await;
}
