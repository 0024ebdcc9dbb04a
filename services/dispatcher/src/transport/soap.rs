//! SOAP 1.1 / 1.2 over HTTP. There is no WSDL processing: the matcher renders the operation's
//! element (the `<soap:Body>` content) and this transport wraps it in an envelope, POSTs it with
//! the service's pooled client and reads a fault, if any, from the answer.
//!
//! - Action: an operation that already is a URI (`urn:…`, `http://…`) is the action as given;
//!   otherwise it is `<namespace>/<operation>` (the ASMX convention), or the bare operation
//!   without a namespace (what spyne, among others, advertises in its WSDL). 1.1 sends it as
//!   `SOAPAction`, 1.2 as the `action` parameter of the content type.
//! - Namespace: when the service has one and the body's first element is unqualified (no prefix,
//!   no `xmlns` of its own), the namespace becomes the default namespace of `<soap:Body>`, so a
//!   plain `<EnrolUser><userid>…` lands in the service's (qualified) schema. A body that
//!   qualifies itself is left alone.
//! - Auth: like REST (HTTP headers), except that with `ws_security` and basic auth the
//!   credentials travel as a WS-Security UsernameToken (PasswordText, nonce, created) inside
//!   the envelope instead of an `Authorization` header.
//! - Verdicts: a client/sender fault is permanent; a server/receiver fault, 408, 429 and 5xx
//!   without a fault are worth retrying; other statuses are classified like REST.

use std::sync::Arc;
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use quick_xml::escape::escape;
use quick_xml::events::Event;
use quick_xml::name::PrefixDeclaration;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;
use url::Url;

use mih_shared::live::{Auth, LiveService, SoapTransport, SoapVersion};
use mih_shared::messages::SoapRequest;

use super::http::{add_headers, classify, client, identify, parse_base, retry_after, sign};
use super::http::{check_literal, failure, read_body, response_headers, service_headers, signer};
use super::{Attempt, AttemptMeta, TargetError, TransportEnv, Verdict};
use crate::ssrf::SsrfGuard;

const SOAP11_ENVELOPE: &str = "http://schemas.xmlsoap.org/soap/envelope/";
const SOAP12_ENVELOPE: &str = "http://www.w3.org/2003/05/soap-envelope";
const WSSE: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd";
const WSU: &str =
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd";
const PASSWORD_TEXT: &str = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordText";
const BASE64_BINARY: &str = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary";

/// How much of a response is read to find a fault, even when less is kept: a fault with a long
/// `detail` must still be recognised when the caller only wants a short excerpt.
const FAULT_READ_LIMIT: usize = 64 * 1024;

pub struct SoapTarget {
    client: reqwest::Client,
    endpoint: Url,
    guard: Arc<SsrfGuard>,
    version: SoapVersion,
    namespace: Option<String>,
    headers: HeaderMap,
    security: Option<UsernameToken>,
    signer: Option<standardwebhooks::Webhook>,
}

/// Leaves out the client, the headers (they may carry secrets) and the credentials.
impl std::fmt::Debug for SoapTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SoapTarget")
            .field("endpoint", &self.endpoint.as_str())
            .field("version", &self.version)
            .field("namespace", &self.namespace)
            .field("ws_security", &self.security.is_some())
            .field("signed", &self.signer.is_some())
            .finish_non_exhaustive()
    }
}

/// WS-Security credentials, opened once when the target is built. No `Debug`: it holds the
/// password in clear.
struct UsernameToken {
    username: String,
    password: String,
}

impl SoapTarget {
    pub fn new(
        service: &LiveService,
        soap: &SoapTransport,
        env: &TransportEnv,
    ) -> Result<Self, TargetError> {
        let endpoint = parse_base(&soap.endpoint, "transport.endpoint")?;
        let (headers, security) = match (&service.auth, soap.ws_security) {
            (Auth::Basic { username, password }, true) => {
                // The envelope only: a second copy in an Authorization header would be one
                // more place (proxy and access logs) for the password to leak from.
                let without_auth = LiveService {
                    auth: Auth::None,
                    ..service.clone()
                };
                let token = UsernameToken {
                    username: username.clone(),
                    password: env.keyring.open(password)?,
                };
                (service_headers(&without_auth, env)?, Some(token))
            }
            (_, ws_security) => {
                if ws_security {
                    tracing::warn!(
                        service = %service.name,
                        "ws_security needs basic auth; the service's auth is sent as HTTP headers"
                    );
                }
                (service_headers(service, env)?, None)
            }
        };
        Ok(SoapTarget {
            client: client(env, Duration::from_millis(service.timeout_ms))?,
            endpoint,
            guard: Arc::clone(&env.guard),
            version: soap.version,
            namespace: soap.namespace.clone().filter(|ns| !ns.is_empty()),
            headers,
            security,
            signer: signer(service, env)?,
        })
    }

    /// The client span of one attempt: an HTTP `POST` to the endpoint, with the operation.
    pub fn span(&self, request: &SoapRequest) -> tracing::Span {
        let span = super::http::client_span(&reqwest::Method::POST, &self.endpoint);
        mih_shared::telemetry::set_attribute(&span, "mih.soap.operation", &request.operation);
        span
    }

    pub async fn deliver(&self, request: &SoapRequest, meta: &AttemptMeta) -> Attempt {
        if let Err(refused) = check_literal(&self.guard, &self.endpoint) {
            return Attempt::failed(Verdict::Permanent, refused.to_string());
        }
        let (envelope, mut headers) = match self.prepare(request) {
            Ok(prepared) => prepared,
            Err(error) => return Attempt::failed(Verdict::Permanent, error.to_string()),
        };
        identify(&mut headers, meta);
        if let Some(signer) = &self.signer {
            sign(signer, &mut headers, meta, envelope.as_bytes());
        }
        let sent = self
            .client
            .post(self.endpoint.clone())
            .headers(headers)
            .body(envelope)
            .send()
            .await;
        match sent {
            Ok(response) => read_response(response, meta.body_limit).await,
            Err(error) => failure(&error),
        }
    }

    /// The envelope and the HTTP headers: the service's, the rule's, then the SOAP ones, which
    /// nothing may override.
    fn prepare(&self, request: &SoapRequest) -> Result<(String, HeaderMap), RequestError> {
        let body = check_body(&request.body)?;
        let body_namespace = match (&self.namespace, body.qualified) {
            (Some(ns), false) => Some(ns.as_str()),
            _ => None,
        };
        let security = self.security.as_ref().map(|token| {
            token.header(
                &Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
                &nonce(),
            )
        });
        let envelope = envelope(
            self.version,
            security.as_deref(),
            body_namespace,
            &request.body,
        );
        let mut headers = self.headers.clone();
        add_headers(&mut headers, &request.headers).map_err(RequestError::Header)?;
        let action = action(&request.operation, self.namespace.as_deref())?;
        for (name, value) in soap_headers(self.version, &action)? {
            headers.insert(name, value);
        }
        Ok((envelope, headers))
    }
}

/// Why a request could not be sent; each is permanent (the same job fails the same way again).
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("the SOAP body is not well-formed XML: {0}")]
    Body(String),
    #[error("the SOAP operation is empty")]
    NoOperation,
    #[error("the SOAP action `{0}` cannot be sent in an HTTP header")]
    Action(String),
    #[error("{0}")]
    Header(String),
}

/// A SOAP envelope around `body`, which is inserted as given (the matcher rendered it, escaping
/// values). `header` is the content of `<soap:Header>`, if any; `body_namespace` becomes the
/// default namespace of `<soap:Body>`.
pub fn envelope(
    version: SoapVersion,
    header: Option<&str>,
    body_namespace: Option<&str>,
    body: &str,
) -> String {
    let soap_ns = match version {
        SoapVersion::V11 => SOAP11_ENVELOPE,
        SoapVersion::V12 => SOAP12_ENVELOPE,
    };
    let mut xml = String::with_capacity(body.len() + header.map_or(0, str::len) + 256);
    xml.push_str(r#"<?xml version="1.0" encoding="utf-8"?>"#);
    xml.push_str(&format!(r#"<soap:Envelope xmlns:soap="{soap_ns}">"#));
    if let Some(header) = header {
        xml.push_str(&format!("<soap:Header>{header}</soap:Header>"));
    }
    match body_namespace {
        Some(ns) => xml.push_str(&format!(r#"<soap:Body xmlns="{}">"#, escape(ns))),
        None => xml.push_str("<soap:Body>"),
    }
    xml.push_str(body);
    xml.push_str("</soap:Body></soap:Envelope>");
    xml
}

impl UsernameToken {
    /// A `wsse:Security` header block (UsernameToken profile 1.0, PasswordText). The `soap`
    /// prefix is the envelope's. `mustUnderstand`: a server that ignores the header must not
    /// act as if the call were authenticated.
    fn header(&self, created: &str, nonce: &str) -> String {
        format!(
            concat!(
                r#"<wsse:Security soap:mustUnderstand="1" xmlns:wsse="{wsse}" xmlns:wsu="{wsu}">"#,
                "<wsse:UsernameToken>",
                "<wsse:Username>{username}</wsse:Username>",
                r#"<wsse:Password Type="{password_type}">{password}</wsse:Password>"#,
                r#"<wsse:Nonce EncodingType="{base64}">{nonce}</wsse:Nonce>"#,
                "<wsu:Created>{created}</wsu:Created>",
                "</wsse:UsernameToken></wsse:Security>",
            ),
            wsse = WSSE,
            wsu = WSU,
            username = escape(self.username.as_str()),
            password_type = PASSWORD_TEXT,
            password = escape(self.password.as_str()),
            base64 = BASE64_BINARY,
            nonce = escape(nonce),
            created = escape(created),
        )
    }
}

/// 16 random bytes, base64: lets the server reject a replayed token.
fn nonce() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 16]>())
}

/// The action URI of an operation (see the module documentation).
pub fn action(operation: &str, namespace: Option<&str>) -> Result<String, RequestError> {
    let operation = operation.trim();
    if operation.is_empty() {
        return Err(RequestError::NoOperation);
    }
    let is_uri = operation.contains("://") || operation.starts_with("urn:");
    Ok(match namespace {
        Some(ns) if !is_uri => format!("{}/{operation}", ns.trim_end_matches('/')),
        _ => operation.to_owned(),
    })
}

/// `SOAPAction` and `Content-Type` (1.1), or `Content-Type` with the action (1.2).
fn soap_headers(
    version: SoapVersion,
    action: &str,
) -> Result<Vec<(HeaderName, HeaderValue)>, RequestError> {
    let quoted = format!("\"{}\"", action.replace('\\', "\\\\").replace('"', "\\\""));
    let value = |text: String| {
        HeaderValue::from_str(&text).map_err(|_| RequestError::Action(action.to_owned()))
    };
    Ok(match version {
        SoapVersion::V11 => vec![
            (
                CONTENT_TYPE,
                HeaderValue::from_static("text/xml; charset=utf-8"),
            ),
            (HeaderName::from_static("soapaction"), value(quoted)?),
        ],
        SoapVersion::V12 => vec![(
            CONTENT_TYPE,
            value(format!(
                "application/soap+xml; charset=utf-8; action={quoted}"
            ))?,
        )],
    })
}

/// What [`check_body`] learnt about a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyShape {
    /// The first element has a prefix or declares a default namespace itself.
    pub qualified: bool,
}

/// Checks that `body` is a well-formed fragment: balanced elements, valid attributes and
/// references, no declaration, DOCTYPE or processing instruction. A template cannot close
/// `<soap:Body>` early and smuggle in a second one, and a broken template fails here, clearly,
/// instead of as a fault from the target.
pub fn check_body(body: &str) -> Result<BodyShape, RequestError> {
    let mut reader = quick_xml::Reader::from_str(body);
    let mut depth = 0usize;
    let mut qualified = None;
    let bad = |message: String| RequestError::Body(message);
    loop {
        let position = reader.buffer_position();
        let event = reader
            .read_event()
            .map_err(|e| bad(format!("at byte {position}: {e}")))?;
        match event {
            Event::Start(ref element) | Event::Empty(ref element) => {
                let mut declares_default = false;
                for attribute in element.attributes() {
                    let attribute =
                        attribute.map_err(|e| bad(format!("at byte {position}: {e}")))?;
                    declares_default |= matches!(
                        attribute.key.as_namespace_binding(),
                        Some(PrefixDeclaration::Default)
                    );
                }
                qualified.get_or_insert(element.name().prefix().is_some() || declares_default);
                if matches!(event, Event::Start(_)) {
                    depth += 1;
                }
            }
            Event::End(_) => {
                depth = depth.checked_sub(1).ok_or_else(|| {
                    bad(format!(
                        "at byte {position}: a closing tag without its opening tag"
                    ))
                })?;
            }
            Event::GeneralRef(reference) => {
                let known = matches!(&*reference, "lt" | "gt" | "amp" | "apos" | "quot");
                let char_ref = reference
                    .resolve_char_ref()
                    .map_err(|e| bad(format!("at byte {position}: {e}")))?;
                if !known && char_ref.is_none() {
                    return Err(bad(format!(
                        "at byte {position}: unknown entity `&{};`",
                        &*reference
                    )));
                }
            }
            Event::Decl(_) | Event::DocType(_) | Event::PI(_) => {
                return Err(bad(format!(
                    "at byte {position}: an XML declaration, DOCTYPE or processing instruction \
                     has no place in a SOAP body"
                )));
            }
            Event::Eof => break,
            Event::Text(_) | Event::CData(_) | Event::Comment(_) => {}
        }
    }
    if depth > 0 {
        return Err(bad(format!("{depth} elements are not closed")));
    }
    Ok(BodyShape {
        qualified: qualified.unwrap_or(false),
    })
}

/// A SOAP fault read from a response, either version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// As the server wrote it: `soap:Client`, `Server.Database`, `env:Sender`.
    pub code: String,
    /// SOAP 1.2 `Subcode/Value`.
    pub subcode: Option<String>,
    /// `faultstring` (1.1) or the first `Reason/Text` (1.2).
    pub reason: String,
}

/// Who a fault blames, from its code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// `Client` (1.1), `Sender` (1.2): the request is wrong.
    Sender,
    /// `Server` (1.1), `Receiver` (1.2): the service could not process it now.
    Receiver,
    /// `VersionMismatch`, `MustUnderstand`, `DataEncodingUnknown`: mih and the service disagree
    /// on the protocol, which a retry does not change.
    Protocol,
    /// A code outside the standard ones.
    Unknown,
}

impl Fault {
    /// The code's local name (prefix dropped) up to the first `.` (1.1 subcodes like
    /// `Client.InvalidId`).
    pub fn kind(&self) -> FaultKind {
        let local = self.code.rsplit(':').next().unwrap_or_default();
        let base = local.split('.').next().unwrap_or_default();
        match base {
            "Client" | "Sender" => FaultKind::Sender,
            "Server" | "Receiver" => FaultKind::Receiver,
            "VersionMismatch" | "MustUnderstand" | "DataEncodingUnknown" => FaultKind::Protocol,
            _ => FaultKind::Unknown,
        }
    }

    /// What the attempt's error says: `SOAP fault soap:Client: no such user`.
    pub fn describe(&self) -> String {
        match &self.subcode {
            Some(subcode) => format!("SOAP fault {} ({subcode}): {}", self.code, self.reason),
            None => format!("SOAP fault {}: {}", self.code, self.reason),
        }
    }
}

/// The response's shape as far as faults go. The deserializer matches local names, so the
/// envelope's prefix and version do not matter; anything else in the body is skipped.
#[derive(Deserialize)]
struct EnvelopeXml {
    #[serde(rename = "Body")]
    body: BodyXml,
}

#[derive(Deserialize)]
struct BodyXml {
    #[serde(rename = "Fault")]
    fault: Option<FaultXml>,
}

#[derive(Deserialize)]
struct FaultXml {
    faultcode: Option<String>,
    faultstring: Option<String>,
    #[serde(rename = "Code")]
    code: Option<CodeXml>,
    #[serde(rename = "Reason")]
    reason: Option<ReasonXml>,
}

#[derive(Deserialize)]
struct CodeXml {
    #[serde(rename = "Value")]
    value: String,
    #[serde(rename = "Subcode")]
    subcode: Option<SubcodeXml>,
}

#[derive(Deserialize)]
struct SubcodeXml {
    #[serde(rename = "Value")]
    value: String,
}

#[derive(Deserialize)]
struct ReasonXml {
    #[serde(rename = "Text", default)]
    text: Vec<TextXml>,
}

#[derive(Deserialize)]
struct TextXml {
    #[serde(rename = "$text", default)]
    text: String,
}

/// The fault in a SOAP response, if it is one.
pub fn parse_fault(xml: &str) -> Option<Fault> {
    let fault = quick_xml::de::from_str::<EnvelopeXml>(xml)
        .ok()?
        .body
        .fault?;
    let trimmed = |text: String| text.trim().to_owned();
    if let Some(code) = fault.code {
        let reason = fault
            .reason
            .and_then(|reason| reason.text.into_iter().next())
            .map(|text| trimmed(text.text))
            .unwrap_or_default();
        return Some(Fault {
            code: trimmed(code.value),
            subcode: code.subcode.map(|subcode| trimmed(subcode.value)),
            reason,
        });
    }
    Some(Fault {
        code: trimmed(fault.faultcode?),
        subcode: None,
        reason: fault.faultstring.map(trimmed).unwrap_or_default(),
    })
}

/// The verdict on a fault; an unknown code goes by the HTTP status, and never counts as
/// delivered.
fn fault_verdict(fault: &Fault, status: StatusCode, retry_after: Option<Duration>) -> Verdict {
    match fault.kind() {
        FaultKind::Sender | FaultKind::Protocol => Verdict::Permanent,
        FaultKind::Receiver => Verdict::Retryable { retry_after },
        FaultKind::Unknown => match classify(status, retry_after) {
            Verdict::Delivered => Verdict::Permanent,
            verdict => verdict,
        },
    }
}

async fn read_response(mut response: reqwest::Response, limit: usize) -> Attempt {
    let status = response.status();
    let headers = response_headers(response.headers());
    let retry_after = retry_after(response.headers(), Utc::now());
    // A fault is read whole even when the kept excerpt is shorter; one cut short fails to
    // parse and the status decides.
    let body = read_body(&mut response, limit.max(FAULT_READ_LIMIT)).await;
    let fault = std::str::from_utf8(&body).ok().and_then(parse_fault);
    let (verdict, error) = match fault {
        Some(fault) => (
            fault_verdict(&fault, status, retry_after),
            Some(fault.describe()),
        ),
        None => match classify(status, retry_after) {
            Verdict::Delivered => (Verdict::Delivered, None),
            verdict => (verdict, Some(format!("HTTP {status}"))),
        },
    };
    Attempt {
        verdict,
        status: Some(status.as_u16()),
        headers,
        body_truncated: body.len() > limit,
        body: Some(super::excerpt(&body, limit)),
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_of_both_versions() {
        let body = "<EnrolUser><userid>5</userid></EnrolUser>";
        assert_eq!(
            envelope(SoapVersion::V11, None, None, body),
            concat!(
                r#"<?xml version="1.0" encoding="utf-8"?>"#,
                r#"<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/">"#,
                "<soap:Body><EnrolUser><userid>5</userid></EnrolUser></soap:Body></soap:Envelope>"
            )
        );
        assert_eq!(
            envelope(SoapVersion::V12, Some("<h/>"), Some("urn:a&\"b"), body),
            concat!(
                r#"<?xml version="1.0" encoding="utf-8"?>"#,
                r#"<soap:Envelope xmlns:soap="http://www.w3.org/2003/05/soap-envelope">"#,
                "<soap:Header><h/></soap:Header>",
                r#"<soap:Body xmlns="urn:a&amp;&quot;b">"#,
                "<EnrolUser><userid>5</userid></EnrolUser></soap:Body></soap:Envelope>"
            )
        );
    }

    #[test]
    fn the_username_token_escapes_what_it_inserts() {
        let token = UsernameToken {
            username: "moodle<&>".into(),
            password: "p\"w'<".into(),
        };
        let header = token.header("2026-11-25T10:00:00.000Z", "bm9uY2U=");
        assert!(
            header.contains("<wsse:Username>moodle&lt;&amp;&gt;</wsse:Username>"),
            "{header}"
        );
        assert!(
            header.contains(">p&quot;w&apos;&lt;</wsse:Password>"),
            "{header}"
        );
        assert!(header.contains(r#"soap:mustUnderstand="1""#), "{header}");
        assert!(header.contains("#PasswordText\">"), "{header}");
        assert!(header.contains(">bm9uY2U=</wsse:Nonce>"), "{header}");
        assert!(
            header.contains("<wsu:Created>2026-11-25T10:00:00.000Z</wsu:Created>"),
            "{header}"
        );
        let whole = envelope(SoapVersion::V11, Some(&header), None, "<a/>");
        check_body(&whole.replace(r#"<?xml version="1.0" encoding="utf-8"?>"#, ""))
            .expect("the envelope is well-formed");
        assert_ne!(nonce(), nonce());
    }

    #[test]
    fn actions_follow_the_namespace_unless_the_operation_is_a_uri() {
        let ns = Some("urn:mih:test:moodle");
        assert_eq!(
            action("EnrolUser", ns).expect("action"),
            "urn:mih:test:moodle/EnrolUser"
        );
        assert_eq!(
            action("EnrolUser", Some("http://tempuri.org/")).expect("action"),
            "http://tempuri.org/EnrolUser"
        );
        assert_eq!(action("EnrolUser", None).expect("action"), "EnrolUser");
        assert_eq!(
            action("http://erp.example/IEnrol/Enrol", ns).expect("action"),
            "http://erp.example/IEnrol/Enrol"
        );
        assert_eq!(action("urn:enrol", ns).expect("action"), "urn:enrol");
        assert!(matches!(action(" ", ns), Err(RequestError::NoOperation)));
    }

    #[test]
    fn soap_headers_quote_the_action() {
        let v11 = soap_headers(SoapVersion::V11, "urn:a/\"b\"").expect("headers");
        assert_eq!(v11[0].1, "text/xml; charset=utf-8");
        assert_eq!(v11[1].0, "soapaction");
        assert_eq!(v11[1].1, r#""urn:a/\"b\"""#);
        let v12 = soap_headers(SoapVersion::V12, "urn:a/b").expect("headers");
        assert_eq!(v12.len(), 1);
        assert_eq!(
            v12[0].1,
            r#"application/soap+xml; charset=utf-8; action="urn:a/b""#
        );
        assert!(matches!(
            soap_headers(SoapVersion::V11, "a\nb"),
            Err(RequestError::Action(_))
        ));
    }

    #[test]
    fn bodies_are_checked_and_their_qualification_seen() {
        let shape = |body: &str| check_body(body).map(|shape| shape.qualified);
        assert_eq!(
            shape("<Op><a>1 &lt; 2 &amp; &#x41;</a><b/></Op>").ok(),
            Some(false)
        );
        assert_eq!(shape("  <Op/>").ok(), Some(false));
        assert_eq!(shape("").ok(), Some(false));
        assert_eq!(
            shape(r#"<t:Op xmlns:t="urn:x"><a/></t:Op>"#).ok(),
            Some(true)
        );
        assert_eq!(shape(r#"<Op xmlns="urn:x"/>"#).ok(), Some(true));
        assert_eq!(
            shape(r#"<Op xmlns:t="urn:x"><t:a/></Op>"#).ok(),
            Some(false)
        );
        for broken in [
            "<Op>",
            "<Op></Other>",
            "</soap:Body><soap:Body><Evil/>",
            "<Op a=1/>",
            "<Op>&nbsp;</Op>",
            "<Op>a & b</Op>",
            r#"<?xml version="1.0"?><Op/>"#,
            "<!DOCTYPE x [<!ENTITY e 'x'>]><Op/>",
            "<?php echo 1; ?>",
        ] {
            assert!(
                matches!(check_body(broken), Err(RequestError::Body(_))),
                "accepted {broken}"
            );
        }
    }

    #[test]
    fn soap11_faults_with_and_without_prefixes() {
        let spyne = concat!(
            "<?xml version='1.0' encoding='UTF-8'?>\n",
            r#"<soap11env:Envelope xmlns:soap11env="http://schemas.xmlsoap.org/soap/envelope/">"#,
            "<soap11env:Body><soap11env:Fault><faultcode>soap11env:Client.InvalidId</faultcode>",
            "<faultstring>no such user &lt;27&gt; &amp; course</faultstring><faultactor></faultactor>",
            "</soap11env:Fault></soap11env:Body></soap11env:Envelope>"
        );
        let fault = parse_fault(spyne).expect("a fault");
        assert_eq!(fault.code, "soap11env:Client.InvalidId");
        assert_eq!(fault.reason, "no such user <27> & course");
        assert_eq!(fault.kind(), FaultKind::Sender);
        assert_eq!(
            fault.describe(),
            "SOAP fault soap11env:Client.InvalidId: no such user <27> & course"
        );

        let bare = concat!(
            r#"<Envelope xmlns="http://schemas.xmlsoap.org/soap/envelope/"><Header/><Body>"#,
            "<Fault><faultcode>Server</faultcode><faultstring xml:lang=\"en\">database down</faultstring>",
            "<detail><trace><frame>1</frame></trace></detail></Fault></Body></Envelope>"
        );
        let fault = parse_fault(bare).expect("a fault");
        assert_eq!(
            (fault.code.as_str(), fault.reason.as_str()),
            ("Server", "database down")
        );
        assert_eq!(fault.kind(), FaultKind::Receiver);

        let prefixed_children = concat!(
            r#"<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault>"#,
            "<s:faultcode>s:VersionMismatch</s:faultcode><s:faultstring>1.2 only</s:faultstring>",
            "</s:Fault></s:Body></s:Envelope>"
        );
        let fault = parse_fault(prefixed_children).expect("a fault");
        assert_eq!(fault.kind(), FaultKind::Protocol);
        assert_eq!(fault.describe(), "SOAP fault s:VersionMismatch: 1.2 only");
    }

    #[test]
    fn soap12_faults() {
        let spyne = concat!(
            r#"<soap12env:Envelope xmlns:soap12env="http://www.w3.org/2003/05/soap-envelope">"#,
            "<soap12env:Body><soap12env:Fault><soap12env:Code><soap12env:Value>soap12env:Sender",
            "</soap12env:Value><soap12env:Subcode><soap12env:Value>InvalidId</soap12env:Value>",
            "</soap12env:Subcode></soap12env:Code><soap12env:Reason>",
            r#"<soap12env:Text xml:lang="en">no such user</soap12env:Text>"#,
            r#"<soap12env:Text xml:lang="fr">utilisateur inconnu</soap12env:Text>"#,
            "</soap12env:Reason><soap12env:Role></soap12env:Role></soap12env:Fault>",
            "</soap12env:Body></soap12env:Envelope>"
        );
        let fault = parse_fault(spyne).expect("a fault");
        assert_eq!(fault.code, "soap12env:Sender");
        assert_eq!(fault.subcode.as_deref(), Some("InvalidId"));
        assert_eq!(fault.reason, "no such user");
        assert_eq!(fault.kind(), FaultKind::Sender);
        assert_eq!(
            fault.describe(),
            "SOAP fault soap12env:Sender (InvalidId): no such user"
        );

        let receiver = concat!(
            r#"<env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope"><env:Body>"#,
            "<env:Fault><env:Code><env:Value>env:Receiver</env:Value></env:Code>",
            "<env:Reason><env:Text>busy</env:Text></env:Reason></env:Fault></env:Body></env:Envelope>"
        );
        let fault = parse_fault(receiver).expect("a fault");
        assert_eq!(fault.kind(), FaultKind::Receiver);
        assert_eq!(fault.reason, "busy");
    }

    #[test]
    fn responses_without_a_fault_are_not_faults() {
        let ok = concat!(
            r#"<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>"#,
            r#"<tns:EnrolUserResponse xmlns:tns="urn:x"><tns:EnrolUserResult>ok</tns:EnrolUserResult>"#,
            "</tns:EnrolUserResponse></soap:Body></soap:Envelope>"
        );
        assert_eq!(parse_fault(ok), None);
        assert_eq!(
            parse_fault("<html><body>502 Bad Gateway</body></html>"),
            None
        );
        assert_eq!(parse_fault("not xml at all"), None);
        assert_eq!(parse_fault(""), None);
    }

    #[test]
    fn fault_verdicts() {
        let fault = |code: &str| Fault {
            code: code.into(),
            subcode: None,
            reason: String::new(),
        };
        let wait = Some(Duration::from_secs(4));
        let error = StatusCode::INTERNAL_SERVER_ERROR;
        for code in [
            "soap:Client",
            "Client",
            "Client.Auth",
            "env:Sender",
            "s:MustUnderstand",
        ] {
            assert_eq!(
                fault_verdict(&fault(code), error, wait),
                Verdict::Permanent,
                "{code}"
            );
        }
        for code in ["soap:Server", "Server.Db", "env:Receiver"] {
            assert_eq!(
                fault_verdict(&fault(code), error, wait),
                Verdict::Retryable { retry_after: wait },
                "{code}"
            );
        }
        assert_eq!(
            fault_verdict(&fault("x:Custom"), error, None),
            Verdict::Retryable { retry_after: None }
        );
        assert_eq!(
            fault_verdict(&fault("x:Custom"), StatusCode::OK, None),
            Verdict::Permanent
        );
        assert_eq!(
            fault_verdict(&fault("Client"), StatusCode::OK, None),
            Verdict::Permanent,
            "a fault in a 200 is still a fault"
        );
    }
}
