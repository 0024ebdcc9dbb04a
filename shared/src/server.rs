//! The HTTP server behind every service's listener: axum's router on hyper, with the `[http]`
//! limits against clients that open connections and then send slowly, or nothing.
//!
//! Per connection, one watchdog knows what the connection is doing:
//!
//! - **reading a head**: from the connection's opening, or from the first byte after the
//!   previous response, the head must be complete within `header_read_timeout`;
//! - **busy**: a request is in progress, from its complete head until hyper has taken the last
//!   frame of its response body. No connection timeout applies, so a handler may work as long
//!   as it needs (a facade call waits for its target without a byte moving). A request body
//!   that stops arriving while the handler waits for it fails after `idle_timeout` (see
//!   `RequestBody`); hyper then answers and closes the connection, as it cannot drain the rest;
//! - **idle**: no request in progress and no byte since the last response: closed after
//!   `idle_timeout`. This also bounds a client that never reads its (buffered) response.
//!
//! On HTTP/2, bytes between requests are pings and window updates rather than a head, so after
//! the first request only the idle rule applies.
//!
//! hyper's own `header_read_timeout` is off: its timer also runs on an idle kept-alive
//! connection, which would close it after the header timeout instead of the idle timeout.

use std::convert::Infallible;
use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Once, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use http::{Request, Version};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use metrics::{Unit, counter, describe_counter, describe_gauge, gauge};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt as _;
use tracing::Instrument as _;

use crate::config::HttpConfig;
use crate::service::ServiceName;
use crate::shutdown::Shutdown;

pub const CONNECTIONS_OPEN: &str = "mih_http_connections_open";
pub const CONNECTIONS_CLOSED: &str = "mih_http_connections_closed_total";
pub const CAP_REACHED: &str = "mih_http_connection_cap_reached_total";

fn describe() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        describe_gauge!(
            CONNECTIONS_OPEN,
            Unit::Count,
            "HTTP connections open, by service"
        );
        describe_counter!(
            CONNECTIONS_CLOSED,
            Unit::Count,
            "HTTP connections closed by a timeout, by service and reason (header_timeout, \
             idle_timeout; body_timeout ends the request, and on HTTP/1.1 its connection)"
        );
        describe_counter!(
            CAP_REACHED,
            Unit::Count,
            "Times a listener stopped accepting because http.max_connections were open, by \
             service"
        );
    });
}

/// At most one warning per this interval that the connection cap was reached: a flood would
/// otherwise write one line per connection.
const CAP_WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// Serves `router` on `listener` with the `[http]` limits until `shutdown`; then stops
/// accepting and lets open connections finish their requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    service: ServiceName,
    limits: HttpConfig,
    shutdown: Shutdown,
) -> io::Result<()> {
    describe();
    let max = limits.max_connections;
    // At the cap the loop stops accepting rather than accepting and closing: the kernel queues
    // new connections in the listen backlog and they are served as soon as a slot frees (slow
    // clients are cut within the header timeout), where a closed connection would fail a
    // Moodle site's request outright. A flood then costs nothing but backlog entries.
    let slots = Arc::new(Semaphore::new(max as usize));
    let mut cap = CapWarnings::default();
    let builder = Arc::new(builder());
    loop {
        let slot = match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                cap.reached(service, max);
                tokio::select! {
                    slot = Arc::clone(&slots).acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                    () = shutdown.triggered() => break,
                }
            }
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(&error).await;
                    continue;
                }
            },
            () = shutdown.triggered() => break,
        };
        let connection = Connection {
            service,
            limits,
            router: router.clone(),
            builder: Arc::clone(&builder),
            shutdown: shutdown.clone(),
        };
        let span = tracing::debug_span!("http.connection", %peer);
        tokio::spawn(
            async move {
                let _slot = slot;
                connection.run(stream).await;
            }
            .instrument(span),
        );
    }
    drop(listener);
    // Every connection holds a slot until it ends, so all slots free means all are done.
    let _all = slots.acquire_many(max).await;
    Ok(())
}

fn builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None);
    builder.http2().timer(TokioTimer::new());
    builder
}

/// Connection errors belong to one client; anything else (out of file descriptors) would
/// repeat at once, so the loop pauses as hyper's own accept loop did.
async fn accept_failed(error: &io::Error) {
    if matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "cannot accept connections; retrying in 1s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

#[derive(Debug, Default)]
struct CapWarnings {
    last: Option<Instant>,
    unreported: u64,
}

impl CapWarnings {
    fn reached(&mut self, service: ServiceName, max: u32) {
        counter!(CAP_REACHED, "service" => service.as_str()).increment(1);
        self.unreported += 1;
        if self
            .last
            .is_none_or(|last| last.elapsed() >= CAP_WARNING_INTERVAL)
        {
            tracing::warn!(
                service = service.as_str(),
                max_connections = max,
                times = self.unreported,
                "connection cap reached; new connections wait in the listen backlog \
                 (http.max_connections)"
            );
            self.last = Some(Instant::now());
            self.unreported = 0;
        }
    }
}

struct Connection {
    service: ServiceName,
    limits: HttpConfig,
    router: Router,
    builder: Arc<auto::Builder<TokioExecutor>>,
    shutdown: Shutdown,
}

impl Connection {
    async fn run(self, stream: TcpStream) {
        let _open = OpenGauge::new(self.service);
        let activity = Arc::new(Activity::new(self.limits));
        let io = TokioIo::new(Watched {
            stream,
            activity: Arc::clone(&activity),
        });
        let (service, stall) = (self.service, self.limits.idle_timeout);
        let router = self.router;
        let requests = Arc::clone(&activity);
        let handler = hyper::service::service_fn(move |request: Request<Incoming>| {
            let in_flight = InFlight::start(Arc::clone(&requests), request.version());
            let request = request.map(|body| RequestBody::new(body, stall, service));
            let router = router.clone();
            async move {
                let response = router.oneshot(request).await?;
                Ok::<_, Infallible>(response.map(|body| ResponseBody {
                    body,
                    _in_flight: in_flight,
                }))
            }
        });
        let conn = self.builder.serve_connection(io, handler);
        tokio::pin!(conn);
        let mut draining = false;
        loop {
            let deadline = activity.deadline();
            tokio::select! {
                served = conn.as_mut() => {
                    if let Err(error) = served {
                        tracing::debug!(%error, "connection ended with an error");
                    }
                    return;
                }
                () = activity.changed.notified() => {}
                () = until(deadline) => {
                    if let Some(timeout) = activity.expired() {
                        counter!(
                            CONNECTIONS_CLOSED,
                            "service" => service.as_str(),
                            "reason" => timeout.reason(),
                        )
                        .increment(1);
                        tracing::debug!(reason = timeout.reason(), "closing connection");
                        // Dropping the connection closes the socket; no request is in
                        // progress on it.
                        return;
                    }
                }
                () = self.shutdown.triggered(), if !draining => {
                    draining = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timeout {
    Header,
    Idle,
    Body,
}

impl Timeout {
    /// The `reason` label of [`CONNECTIONS_CLOSED`].
    fn reason(self) -> &'static str {
        match self {
            Timeout::Header => "header_timeout",
            Timeout::Idle => "idle_timeout",
            Timeout::Body => "body_timeout",
        }
    }
}

/// What one connection is doing, told by its socket (bytes arrived) and its requests (started,
/// done), read by its watchdog.
#[derive(Debug)]
struct Activity {
    limits: HttpConfig,
    state: Mutex<State>,
    /// Wakes the watchdog when its deadline may have moved earlier or appeared.
    changed: Notify,
}

#[derive(Debug)]
struct State {
    requests: usize,
    /// Since when no request has been in progress.
    quiet_since: Instant,
    /// Since when a request head has been due: the connection's opening, or the first byte
    /// that arrived while quiet.
    head_since: Option<Instant>,
    /// HTTP/2: bytes between requests are pings and window updates, not a head.
    multiplexed: bool,
}

impl Activity {
    fn new(limits: HttpConfig) -> Self {
        let now = Instant::now();
        Self {
            limits,
            state: Mutex::new(State {
                requests: 0,
                quiet_since: now,
                head_since: Some(now),
                multiplexed: false,
            }),
            changed: Notify::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The lock guards plain fields that are always consistent; a panic elsewhere while
        // holding it leaves nothing half-written.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn bytes_arrived(&self) {
        let mut state = self.state();
        if state.requests == 0 && state.head_since.is_none() && !state.multiplexed {
            state.head_since = Some(Instant::now());
            drop(state);
            self.changed.notify_one();
        }
    }

    fn request_started(&self, version: Version) {
        let mut state = self.state();
        state.requests += 1;
        state.head_since = None;
        state.multiplexed |= version == Version::HTTP_2;
    }

    fn request_done(&self) {
        let mut state = self.state();
        state.requests = state.requests.saturating_sub(1);
        if state.requests == 0 {
            state.quiet_since = Instant::now();
            drop(state);
            self.changed.notify_one();
        }
    }

    fn next(&self) -> Option<(Instant, Timeout)> {
        let state = self.state();
        if state.requests > 0 {
            return None;
        }
        Some(match state.head_since {
            Some(since) => (since + self.limits.header_read_timeout, Timeout::Header),
            None => (state.quiet_since + self.limits.idle_timeout, Timeout::Idle),
        })
    }

    fn deadline(&self) -> Option<Instant> {
        self.next().map(|(deadline, _)| deadline)
    }

    /// The timeout that has run out, if one has (the state may have moved on since the
    /// watchdog's timer was set).
    fn expired(&self) -> Option<Timeout> {
        self.next()
            .and_then(|(deadline, reason)| (deadline <= Instant::now()).then_some(reason))
    }
}

/// The socket, reporting arriving bytes to the connection's [`Activity`].
struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.bytes_arrived();
        }
        read
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// A request in progress, from its complete head until its response body is done (or dropped,
/// when the client goes away first).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: Arc<Activity>, version: Version) -> Self {
        activity.request_started(version);
        Self(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_done();
    }
}

/// The response body, ending its request's [`InFlight`] when done. Size and end are passed
/// through so hyper still sends `content-length`.
struct ResponseBody {
    body: axum::body::Body,
    _in_flight: InFlight,
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The request body failed because no byte of it arrived for the idle timeout while the
/// handler was waiting for one.
#[derive(Debug, thiserror::Error)]
#[error("no byte of the request body arrived for {0:?}")]
pub struct BodyStalled(Duration);

/// The request body, failing with [`BodyStalled`] once the handler has waited `stall` for a
/// frame. tower-http's `TimeoutBody` times the same gap but hides the body's size and end,
/// which extractors and hyper use; and only time spent waiting counts, so a handler that is
/// not reading its body is never cut.
struct RequestBody {
    body: Incoming,
    stall: Duration,
    /// Armed at the first wait since the last frame; reset, not reallocated, for the next.
    timer: Pin<Box<Sleep>>,
    armed: bool,
    service: ServiceName,
}

impl RequestBody {
    fn new(body: Incoming, stall: Duration, service: ServiceName) -> Self {
        Self {
            body,
            stall,
            timer: Box::pin(tokio::time::sleep(stall)),
            armed: false,
            service,
        }
    }
}

type BoxError = Box<dyn StdError + Send + Sync>;

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.body).poll_frame(cx) {
            this.armed = false;
            return Poll::Ready(frame.map(|frame| frame.map_err(BoxError::from)));
        }
        if !this.armed {
            this.timer.as_mut().reset(Instant::now() + this.stall);
            this.armed = true;
        }
        if this.timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        this.armed = false;
        counter!(
            CONNECTIONS_CLOSED,
            "service" => this.service.as_str(),
            "reason" => Timeout::Body.reason(),
        )
        .increment(1);
        tracing::debug!("request body stalled; ending the request");
        Poll::Ready(Some(Err(BodyStalled(this.stall).into())))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Counts the connection in [`CONNECTIONS_OPEN`] while it lives, however its task ends.
struct OpenGauge(ServiceName);

impl OpenGauge {
    fn new(service: ServiceName) -> Self {
        gauge!(CONNECTIONS_OPEN, "service" => service.as_str()).increment(1.0);
        Self(service)
    }
}

impl Drop for OpenGauge {
    fn drop(&mut self) {
        gauge!(CONNECTIONS_OPEN, "service" => self.0.as_str()).decrement(1.0);
    }
}
