//! The SOAP transport against a real SOAP server (spyne, see `mih_testkit::soap`): envelopes of
//! both versions, faults and how they are judged, WS-Security, identification and signature
//! headers, HTTP statuses without a fault, timeouts and the SSRF guard.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use quick_xml::escape::escape;

use mih_dispatcher::ssrf::SsrfGuard;
use mih_dispatcher::transport::soap::SoapTarget;
use mih_dispatcher::transport::{AttemptMeta, EXCERPT_LIMIT, TransportEnv, Verdict};
use mih_shared::crypto::Keyring;
use mih_shared::live::{
    Auth, BreakerPolicy, LiveService, RetryPolicy, SoapTransport, SoapVersion, Transport,
};
use mih_shared::messages::{EventId, Header, JobId, SoapRequest, Version};
use mih_testkit::soap::{NAMESPACE, ReceivedSoap, SoapServer};

const KEY: &str = "5f2b1c7e9a0d4e3f8b6a1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f";
const SIGNING_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn env(guard: SsrfGuard) -> TransportEnv {
    TransportEnv {
        keyring: Arc::new(Keyring::new(Some(KEY), &[]).expect("keyring")),
        guard: Arc::new(guard),
    }
}

/// Tests run against 127.0.0.1, which the guard refuses unless allowed.
fn loopback_allowed() -> TransportEnv {
    env(SsrfGuard::new(vec![
        "127.0.0.0/8".parse().expect("network"),
    ]))
}

fn soap(endpoint: String, version: SoapVersion) -> SoapTransport {
    SoapTransport {
        endpoint,
        wsdl_url: None,
        version,
        namespace: Some(NAMESPACE.to_owned()),
        ws_security: false,
    }
}

fn service(soap: &SoapTransport, auth: Auth) -> LiveService {
    LiveService {
        v: Version,
        name: "sis-soap".parse().expect("slug"),
        description: String::new(),
        enabled: true,
        transport: Transport::Soap(soap.clone()),
        auth,
        signing_secret: None,
        headers: BTreeMap::new(),
        timeout_ms: 5_000,
        retry: RetryPolicy {
            max_retries: 3,
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
    }
}

fn target(service: &LiveService, env: &TransportEnv) -> SoapTarget {
    let Transport::Soap(soap) = &service.transport else {
        panic!("not a SOAP service");
    };
    SoapTarget::new(service, soap, env).expect("target")
}

/// A target without auth or signature.
fn plain(endpoint: String, version: SoapVersion, env: &TransportEnv) -> SoapTarget {
    target(&service(&soap(endpoint, version), Auth::None), env)
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

/// The body as the matcher renders it: the values XML-escaped, the elements unqualified.
fn request(operation: &str, fields: &[(&str, &str)]) -> SoapRequest {
    let fields: String = fields
        .iter()
        .map(|(name, value)| format!("<{name}>{}</{name}>", escape(*value)))
        .collect();
    SoapRequest {
        operation: operation.to_owned(),
        headers: Vec::new(),
        body: format!("<{operation}>{fields}</{operation}>"),
    }
}

fn enrol(userid: i64, courseid: i64, role: &str) -> SoapRequest {
    request(
        "EnrolUser",
        &[
            ("userid", &userid.to_string()),
            ("courseid", &courseid.to_string()),
            ("role", role),
        ],
    )
}

async fn start() -> SoapServer {
    SoapServer::start()
        .await
        .expect("the spyne server (run scripts/dev-deps)")
}

async fn only_request(server: &SoapServer) -> ReceivedSoap {
    let mut received = server.received().await.expect("received");
    assert_eq!(received.len(), 1, "{received:#?}");
    received.remove(0)
}

fn arg<'a>(received: &'a ReceivedSoap, name: &str) -> &'a serde_json::Value {
    let call = received.call.as_ref().expect("spyne ran an operation");
    &call.args[name]
}

#[tokio::test]
async fn a_soap11_call_is_delivered_and_its_response_kept() {
    let server = start().await;
    let env = loopback_allowed();
    let target = plain(server.url(), SoapVersion::V11, &env);

    let attempt = target.deliver(&enrol(27, 12, "student"), &meta()).await;

    assert_eq!(
        attempt.verdict,
        Verdict::Delivered,
        "{attempt:?}\n{}",
        server.log()
    );
    assert_eq!(attempt.status, Some(200));
    assert_eq!(attempt.error, None);
    let body = attempt.body.as_deref().unwrap_or_default();
    assert!(body.contains("EnrolUserResponse"), "{body}");
    assert!(
        body.contains("enrolled user 27 in course 12 as student"),
        "{body}"
    );
    assert!(
        attempt
            .headers
            .iter()
            .any(|h| h.name == "content-type" && h.value.starts_with("text/xml")),
        "{:?}",
        attempt.headers
    );

    let received = only_request(&server).await;
    assert_eq!(
        (received.method.as_str(), received.path.as_str()),
        ("POST", "/soap11")
    );
    assert_eq!(
        received.header("content-type"),
        Some("text/xml; charset=utf-8")
    );
    assert_eq!(
        received.header("soapaction"),
        Some("\"urn:mih:test:moodle/EnrolUser\"")
    );
    assert_eq!(received.header("authorization"), None);
    assert_eq!(received.ws_security, None);
    assert!(
        received
            .envelope
            .contains("http://schemas.xmlsoap.org/soap/envelope/"),
        "{}",
        received.envelope
    );
    let call = received.call.as_ref().expect("spyne ran the operation");
    assert_eq!(call.operation, "EnrolUser");
    assert_eq!(arg(&received, "userid"), 27);
    assert_eq!(arg(&received, "courseid"), 12);
    assert_eq!(arg(&received, "role"), "student");
}

#[tokio::test]
async fn markup_characters_in_values_arrive_intact() {
    let server = start().await;
    let env = loopback_allowed();
    let target = plain(server.url(), SoapVersion::V11, &env);
    let values = [
        ("username", "o'brien"),
        ("firstname", "<b>Ana & \"Jo\"</b>"),
        ("lastname", "Müller–Łukasz 日本 ]]> &amp;"),
        ("email", "a+b@example.org"),
    ];

    let attempt = target
        .deliver(&request("CreateUser", &values), &meta())
        .await;

    assert_eq!(
        attempt.verdict,
        Verdict::Delivered,
        "{attempt:?}\n{}",
        server.log()
    );
    let received = only_request(&server).await;
    for (name, value) in values {
        assert_eq!(arg(&received, name), value, "{name}");
    }
}

#[tokio::test]
async fn a_client_fault_is_permanent_and_says_why() {
    let server = start().await;
    let env = loopback_allowed();
    let target = plain(server.url(), SoapVersion::V11, &env);

    let attempt = target.deliver(&enrol(-1, 12, "student"), &meta()).await;

    assert_eq!(attempt.verdict, Verdict::Permanent, "{attempt:?}");
    assert!(!attempt.verdict.counts_as_failure());
    assert_eq!(attempt.status, Some(500));
    assert_eq!(
        attempt.error.as_deref(),
        Some("SOAP fault soap11env:Client.InvalidId: no such user or course (user -1, course 12)")
    );
    assert!(
        attempt
            .body
            .as_deref()
            .unwrap_or_default()
            .contains("Fault")
    );
}

#[tokio::test]
async fn a_server_fault_is_retryable() {
    let server = start().await;
    let env = loopback_allowed();
    let target = plain(server.url(), SoapVersion::V11, &env);

    let attempt = target
        .deliver(&request("SyncGrades", &[("courseid", "12")]), &meta())
        .await;

    assert_eq!(
        attempt.verdict,
        Verdict::Retryable { retry_after: None },
        "{attempt:?}"
    );
    assert!(attempt.verdict.counts_as_failure());
    assert_eq!(
        attempt.error.as_deref(),
        Some("SOAP fault soap11env:Server: the gradebook backend is unavailable")
    );
}

#[tokio::test]
async fn a_fault_is_recognised_even_when_little_of_the_body_is_kept() {
    let server = start().await;
    let env = loopback_allowed();
    let target = plain(server.url(), SoapVersion::V11, &env);
    let meta = AttemptMeta {
        body_limit: 16,
        ..meta()
    };

    let attempt = target.deliver(&enrol(-1, 12, "student"), &meta).await;

    assert_eq!(attempt.verdict, Verdict::Permanent, "{attempt:?}");
    assert!(
        attempt.body.as_deref().is_some_and(|b| b.len() <= 16),
        "{attempt:?}"
    );
    assert!(
        attempt
            .error
            .as_deref()
            .is_some_and(|e| e.contains("no such user or course")),
        "{attempt:?}"
    );
}

#[tokio::test]
async fn soap12_calls_and_faults() {
    let server = start().await;
    let env = loopback_allowed();
    let target = plain(server.url_12(), SoapVersion::V12, &env);

    let delivered = target.deliver(&enrol(27, 12, "teacher"), &meta()).await;
    let client_fault = target.deliver(&enrol(27, -12, "teacher"), &meta()).await;
    let server_fault = target
        .deliver(&request("SyncGrades", &[("courseid", "12")]), &meta())
        .await;

    assert_eq!(
        delivered.verdict,
        Verdict::Delivered,
        "{delivered:?}\n{}",
        server.log()
    );
    assert!(
        delivered
            .body
            .as_deref()
            .is_some_and(|b| b.contains("enrolled user 27 in course 12 as teacher")),
        "{delivered:?}"
    );
    assert_eq!(client_fault.verdict, Verdict::Permanent, "{client_fault:?}");
    assert_eq!(
        client_fault.error.as_deref(),
        Some(
            "SOAP fault soap12env:Sender (InvalidId): no such user or course (user 27, course -12)"
        )
    );
    assert_eq!(
        server_fault.verdict,
        Verdict::Retryable { retry_after: None },
        "{server_fault:?}"
    );
    assert_eq!(
        server_fault.error.as_deref(),
        Some("SOAP fault soap12env:Receiver: the gradebook backend is unavailable")
    );

    let received = server.received().await.expect("received");
    assert_eq!(received.len(), 3);
    let first = &received[0];
    assert_eq!(first.path, "/soap12");
    assert_eq!(
        first.header("content-type"),
        Some("application/soap+xml; charset=utf-8; action=\"urn:mih:test:moodle/EnrolUser\"")
    );
    assert_eq!(first.header("soapaction"), None);
    assert!(
        first
            .envelope
            .contains(r#"xmlns:soap="http://www.w3.org/2003/05/soap-envelope""#),
        "{}",
        first.envelope
    );
    assert_eq!(arg(first, "role"), "teacher");
}

#[tokio::test]
async fn ws_security_carries_basic_credentials_in_the_envelope() {
    let server = start().await;
    let env = loopback_allowed();
    let mut transport = soap(server.url(), SoapVersion::V11);
    transport.ws_security = true;
    let password = "s3cr&t<\"pw'>";
    let auth = Auth::Basic {
        username: "moodle<svc>".into(),
        password: env.keyring.seal(password).expect("seal"),
    };
    let target = target(&service(&transport, auth), &env);

    let first = target.deliver(&enrol(27, 12, "student"), &meta()).await;
    let second = target.deliver(&enrol(28, 12, "student"), &meta()).await;

    assert_eq!(
        first.verdict,
        Verdict::Delivered,
        "{first:?}\n{}",
        server.log()
    );
    assert_eq!(second.verdict, Verdict::Delivered, "{second:?}");
    let received = server.received().await.expect("received");
    assert_eq!(received.len(), 2);
    let tokens: Vec<_> = received
        .iter()
        .map(|r| {
            assert_eq!(r.header("authorization"), None, "no HTTP Basic as well");
            r.ws_security.clone().expect("a WS-Security header")
        })
        .collect();
    for token in &tokens {
        assert_eq!(token.username.as_deref(), Some("moodle<svc>"));
        assert_eq!(token.password.as_deref(), Some(password));
        assert!(
            token
                .password_type
                .as_deref()
                .is_some_and(|t| t.ends_with("#PasswordText")),
            "{token:?}"
        );
        assert_eq!(token.must_understand.as_deref(), Some("1"));
        assert!(
            token
                .nonce_encoding
                .as_deref()
                .is_some_and(|t| t.ends_with("#Base64Binary")),
            "{token:?}"
        );
        let nonce = base64::engine::general_purpose::STANDARD
            .decode(token.nonce.as_deref().unwrap_or_default())
            .expect("a base64 nonce");
        assert_eq!(nonce.len(), 16);
        let created =
            chrono::DateTime::parse_from_rfc3339(token.created.as_deref().unwrap_or_default())
                .expect("an RFC 3339 timestamp");
        let age = chrono::Utc::now().signed_duration_since(created);
        assert!(age.num_seconds().abs() < 60, "created {created}");
    }
    assert_ne!(
        tokens[0].nonce, tokens[1].nonce,
        "a fresh nonce per request"
    );
}

#[tokio::test]
async fn without_ws_security_basic_auth_is_an_http_header() {
    let server = start().await;
    let env = loopback_allowed();
    let auth = Auth::Basic {
        username: "moodle".into(),
        password: env.keyring.seal("pw").expect("seal"),
    };
    let target = target(&service(&soap(server.url(), SoapVersion::V11), auth), &env);

    let attempt = target.deliver(&enrol(27, 12, "student"), &meta()).await;

    assert_eq!(attempt.verdict, Verdict::Delivered, "{attempt:?}");
    let received = only_request(&server).await;
    assert_eq!(received.header("authorization"), Some("Basic bW9vZGxlOnB3"));
    assert_eq!(received.ws_security, None);
}

#[tokio::test]
async fn identification_signature_and_custom_headers_arrive() {
    let server = start().await;
    let env = loopback_allowed();
    let mut service = service(&soap(server.url(), SoapVersion::V11), Auth::None);
    service.signing_secret = Some(env.keyring.seal(SIGNING_SECRET).expect("seal"));
    service
        .headers
        .insert("X-Tenant".into(), "campus-north".into());
    let target = target(&service, &env);
    let meta = AttemptMeta {
        attempt: 3,
        traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        ..meta()
    };
    let mut request = enrol(27, 12, "student");
    request.headers.push(Header {
        name: "X-Moodle-Course".into(),
        value: "12".into(),
    });
    // A rule cannot take over the SOAP headers.
    request.headers.push(Header {
        name: "Content-Type".into(),
        value: "application/json".into(),
    });

    let attempt = target.deliver(&request, &meta).await;

    assert_eq!(
        attempt.verdict,
        Verdict::Delivered,
        "{attempt:?}\n{}",
        server.log()
    );
    let received = only_request(&server).await;
    let job = meta.job_id.to_string();
    let event = meta.event_id.map(|e| e.to_string());
    assert_eq!(received.header("idempotency-key"), Some(job.as_str()));
    assert_eq!(received.header("mih-job-id"), Some(job.as_str()));
    assert_eq!(received.header("mih-event-id"), event.as_deref());
    assert_eq!(received.header("mih-attempt"), Some("3"));
    assert_eq!(received.header("traceparent"), meta.traceparent.as_deref());
    assert_eq!(received.header("x-tenant"), Some("campus-north"));
    assert_eq!(received.header("x-moodle-course"), Some("12"));
    assert_eq!(
        received.header("content-type"),
        Some("text/xml; charset=utf-8")
    );
    assert_eq!(received.header("webhook-id"), Some(job.as_str()));

    let mut headers = http::HeaderMap::new();
    for name in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        let value = received
            .header(name)
            .unwrap_or_else(|| panic!("{name} is missing"));
        headers.insert(name, value.parse().expect("header value"));
    }
    standardwebhooks::Webhook::new(SIGNING_SECRET)
        .expect("secret")
        .verify(received.envelope.as_bytes(), &headers)
        .expect("the signature covers the envelope as received");
}

#[tokio::test]
async fn the_namespace_qualifies_plain_bodies_and_leaves_qualified_ones_alone() {
    let server = start().await;
    let env = loopback_allowed();
    let mut without_namespace = soap(server.url(), SoapVersion::V11);
    without_namespace.namespace = None;
    let target = target(&service(&without_namespace, Auth::None), &env);
    let qualified = SoapRequest {
        operation: "EnrolUser".into(),
        headers: Vec::new(),
        body: format!(
            r#"<m:EnrolUser xmlns:m="{NAMESPACE}"><m:userid>27</m:userid><m:courseid>12</m:courseid><m:role>student</m:role></m:EnrolUser>"#
        ),
    };

    let plain = target.deliver(&enrol(27, 12, "student"), &meta()).await;
    let self_qualified = target.deliver(&qualified, &meta()).await;

    // Unqualified elements do not match the service's schema.
    assert_eq!(plain.verdict, Verdict::Permanent, "{plain:?}");
    assert!(
        plain
            .error
            .as_deref()
            .is_some_and(|e| e.starts_with("SOAP fault soap11env:Client")),
        "{plain:?}"
    );
    assert_eq!(
        self_qualified.verdict,
        Verdict::Delivered,
        "{self_qualified:?}"
    );
    let received = server.received().await.expect("received");
    assert_eq!(received[1].header("soapaction"), Some("\"EnrolUser\""));
    assert_eq!(arg(&received[1], "userid"), 27);
}

#[tokio::test]
async fn a_malformed_body_is_permanent_and_never_sent() {
    let server = start().await;
    let env = loopback_allowed();
    let target = plain(server.url(), SoapVersion::V11, &env);
    let smuggling = SoapRequest {
        operation: "EnrolUser".into(),
        headers: Vec::new(),
        body: "<EnrolUser/></soap:Body><soap:Body><SyncGrades/>".into(),
    };

    let attempt = target.deliver(&smuggling, &meta()).await;

    assert_eq!(attempt.verdict, Verdict::Permanent, "{attempt:?}");
    assert!(
        attempt
            .error
            .as_deref()
            .is_some_and(|e| e.starts_with("the SOAP body is not well-formed XML")),
        "{attempt:?}"
    );
    assert!(server.received().await.expect("received").is_empty());
}

#[tokio::test]
async fn statuses_without_a_fault_are_judged_like_rest() {
    let server = start().await;
    let env = loopback_allowed();
    let seven = Some(Duration::from_secs(7));
    let cases = [
        (503, Verdict::Retryable { retry_after: seven }),
        (502, Verdict::Retryable { retry_after: None }),
        (429, Verdict::Retryable { retry_after: seven }),
        (408, Verdict::Retryable { retry_after: None }),
        (404, Verdict::Permanent),
        (401, Verdict::Permanent),
    ];
    for (status, expected) in cases {
        let target = target(
            &service(
                &soap(server.status_url(status), SoapVersion::V11),
                Auth::None,
            ),
            &env,
        );
        let attempt = target.deliver(&enrol(27, 12, "student"), &meta()).await;
        assert_eq!(attempt.verdict, expected, "{status}: {attempt:?}");
        assert_eq!(attempt.status, Some(status));
        assert!(
            attempt
                .error
                .as_deref()
                .is_some_and(|e| e.starts_with(&format!("HTTP {status}"))),
            "{status}: {attempt:?}"
        );
    }
}

#[tokio::test]
async fn a_slow_service_times_out() {
    let server = start().await;
    let env = loopback_allowed();
    let mut service = service(
        &soap(format!("{}?delay_ms=5000", server.url()), SoapVersion::V11),
        Auth::None,
    );
    service.timeout_ms = 300;
    let target = target(&service, &env);

    let attempt = target.deliver(&enrol(27, 12, "student"), &meta()).await;

    assert_eq!(attempt.verdict, Verdict::Timeout, "{attempt:?}");
    assert!(attempt.verdict.counts_as_failure());
}

#[tokio::test]
async fn a_refused_connection_is_retryable() {
    let env = loopback_allowed();
    let port = mih_testkit::free_port().expect("port");
    let target = target(
        &service(
            &soap(format!("http://127.0.0.1:{port}/soap11"), SoapVersion::V11),
            Auth::None,
        ),
        &env,
    );

    let attempt = target.deliver(&enrol(27, 12, "student"), &meta()).await;

    assert_eq!(
        attempt.verdict,
        Verdict::Retryable { retry_after: None },
        "{attempt:?}"
    );
    assert_eq!(attempt.status, None);
}

#[tokio::test]
async fn loopback_is_refused_without_an_allowlist() {
    let server = start().await;
    let env = env(SsrfGuard::default());
    let by_address = plain(server.url(), SoapVersion::V11, &env);
    let by_name = target(
        &service(
            &soap(
                format!("http://localhost:{}/soap11", server.port()),
                SoapVersion::V11,
            ),
            Auth::None,
        ),
        &env,
    );

    for target in [by_address, by_name] {
        let attempt = target.deliver(&enrol(27, 12, "student"), &meta()).await;
        assert_eq!(attempt.verdict, Verdict::Permanent, "{attempt:?}");
        assert!(
            attempt
                .error
                .as_deref()
                .is_some_and(|e| e.contains("loopback") && e.contains("dispatcher.allow_networks")),
            "{attempt:?}"
        );
    }
    assert!(server.received().await.expect("received").is_empty());
}

#[tokio::test]
async fn the_server_records_requests_for_waiting_tests() {
    let server = start().await;
    let env = loopback_allowed();
    let target = Arc::new(target(
        &service(&soap(server.url(), SoapVersion::V11), Auth::None),
        &env,
    ));
    let delivery = tokio::spawn({
        let target = Arc::clone(&target);
        async move { target.deliver(&enrol(27, 12, "student"), &meta()).await }
    });

    let received = server
        .wait_for(1, Duration::from_secs(10))
        .await
        .expect("the request arrives");

    assert_eq!(
        received[0].call.as_ref().map(|c| c.operation.as_str()),
        Some("EnrolUser")
    );
    assert_eq!(delivery.await.expect("task").verdict, Verdict::Delivered);
}
