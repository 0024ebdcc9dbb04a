//! Hostile bodies against a real ingest: over the size limit (streamed, so nothing tells the
//! server the size up front), nested 50,000 deep, invalid UTF-8 and truncated. Each is refused
//! with a clean answer, without the server buffering the stream or overflowing its stack, and
//! ingest stays ready and keeps accepting events.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use mih_shared::ServiceName;
use mih_testkit::fixtures;
use mih_testkit::sign::TEST_TOKEN;

use crate::harness::TestHub;

const LIMIT: usize = 256 * 1024;
/// What a client would send if the server never stopped reading: 1 GiB.
const ENDLESS: u64 = 1 << 30;

async fn hub() -> TestHub {
    TestHub::builder()
        .services(&[ServiceName::Ingest, ServiceName::Api])
        .toml(&format!(
            "[ingest]\nmax_body_bytes = {LIMIT}\nmax_event_bytes = 65536\n"
        ))
        .start()
        .await
}

/// Peak resident memory of this process (the hub runs in it), in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Streams a body of up to [`ENDLESS`] bytes, chunked or with a `Content-Length` claiming it
/// all, and returns the status line ingest answered with and how much had been sent by then.
async fn stream_endless_body(hub: &TestHub, chunked: bool) -> (String, u64) {
    let stream = TcpStream::connect(hub.addr(ServiceName::Ingest))
        .await
        .expect("connect");
    let (mut reader, mut writer) = stream.into_split();
    let framing = if chunked {
        "transfer-encoding: chunked".to_owned()
    } else {
        format!("content-length: {ENDLESS}")
    };
    let head = format!(
        "POST /v1/events HTTP/1.1\r\nhost: ingest\r\ncontent-type: application/json\r\n\
         authorization: Bearer {TEST_TOKEN}\r\n{framing}\r\n\r\n"
    );
    writer.write_all(head.as_bytes()).await.expect("head");
    let sent = Arc::new(AtomicU64::new(0));
    let writing = tokio::spawn({
        let sent = Arc::clone(&sent);
        async move {
            // `[1,1,1,…` — valid JSON as far as it goes, so only the size can stop it.
            let mut piece = b"[".to_vec();
            piece.extend(b"1,".repeat(32 * 1024 - 1));
            let piece = piece;
            let filler = b"1,".repeat(32 * 1024);
            let mut first = true;
            while sent.load(Ordering::Relaxed) < ENDLESS {
                let data = if first { &piece } else { &filler };
                first = false;
                let frame = if chunked {
                    let mut frame = format!("{:x}\r\n", data.len()).into_bytes();
                    frame.extend_from_slice(data);
                    frame.extend_from_slice(b"\r\n");
                    frame
                } else {
                    data.clone()
                };
                if writer.write_all(&frame).await.is_err() {
                    return;
                }
                sent.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
        }
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(30), async {
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let sent_when_answered = sent.load(Ordering::Relaxed);
    writing.abort();
    assert!(
        read.is_ok(),
        "ingest did not answer a streamed oversized body"
    );
    let text = String::from_utf8_lossy(&answer);
    let status = text.lines().next().unwrap_or_default().to_owned();
    (status, sent_when_answered)
}

#[tokio::test]
async fn oversized_streams_are_answered_413_without_being_buffered() {
    let hub = hub().await;
    let before = peak_rss();
    for chunked in [true, false] {
        let (status, sent) = stream_endless_body(&hub, chunked).await;
        assert!(
            status.starts_with("HTTP/1.1 413"),
            "chunked={chunked}: {status:?}"
        );
        // The answer came while the client was still sending: ingest read about the limit
        // (plus what the sockets' buffers hold), not the gigabyte on offer.
        assert!(
            sent < 64 * 1024 * 1024,
            "chunked={chunked}: {sent} bytes were taken before the answer"
        );
    }
    let grown = peak_rss().saturating_sub(before);
    assert!(
        grown < 64 * 1024 * 1024,
        "peak memory grew by {grown} bytes"
    );
    assert_still_healthy(&hub).await;
    hub.stop().await;
}

#[tokio::test]
async fn nested_invalid_and_truncated_bodies_are_clean_400s() {
    let hub = hub().await;
    let before = peak_rss();
    let arrays = format!("{}{}", "[".repeat(50_000), "]".repeat(50_000));
    assert_eq!(arrays.len(), 100_000);
    let objects = format!("{}1{}", "{\"a\":".repeat(16_000), "}".repeat(16_000));
    let mut invalid_utf8 = fixtures::moodle_events()[0].to_string().into_bytes();
    invalid_utf8.splice(30..30, [0xff, 0xc0, 0x80, 0xed, 0xa0, 0x80]);
    let event = fixtures::moodle_events()[0].to_string();
    let truncated = &event[..event.len() / 2];
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "50,000 nested arrays",
            arrays.clone().into_bytes(),
            "application/json",
        ),
        (
            "50,000 nested arrays as NDJSON",
            arrays.into_bytes(),
            "application/x-ndjson",
        ),
        (
            "16,000 nested objects",
            objects.into_bytes(),
            "application/json",
        ),
        (
            "10,000 unclosed brackets",
            "[".repeat(10_000).into_bytes(),
            "application/json",
        ),
        ("invalid UTF-8", invalid_utf8, "application/json"),
        (
            "truncated JSON",
            truncated.as_bytes().to_vec(),
            "application/json",
        ),
        (
            "truncated NDJSON",
            format!("{event}\n{truncated}").into_bytes(),
            "application/x-ndjson",
        ),
        (
            "a byte order mark",
            format!("\u{feff}{event}").into_bytes(),
            "application/json",
        ),
        ("a NUL byte", b"\0".to_vec(), "application/json"),
        (
            "a lone surrogate",
            br#"{"eventname": "\ud800"}"#.to_vec(),
            "application/json",
        ),
    ];
    for (what, body, content_type) in cases {
        let answer = hub.post_bearer(&body, content_type).await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{what}: {}",
            answer.body
        );
        assert_eq!(answer.body["error"], "invalid_input", "{what}");
        let message = answer.body["errors"][0]["message"]
            .as_str()
            .unwrap_or_default();
        assert!(message.contains("not valid JSON"), "{what}: {message}");
    }
    let grown = peak_rss().saturating_sub(before);
    assert!(
        grown < 64 * 1024 * 1024,
        "peak memory grew by {grown} bytes"
    );
    assert!(hub.stored_events().await.is_empty(), "nothing stored");
    assert_still_healthy(&hub).await;
    hub.stop().await;
}

/// `/readyz` answers 200 and a valid event is still accepted.
async fn assert_still_healthy(hub: &TestHub) {
    let ready = hub
        .http
        .get(hub.url(ServiceName::Ingest, "/readyz"))
        .send()
        .await
        .expect("readyz answers");
    assert_eq!(ready.status(), StatusCode::OK);
    let event = fixtures::moodle_events()[0].to_string();
    let answer = hub.post_bearer(event.as_bytes(), "application/json").await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
}
