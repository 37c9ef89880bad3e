//! Serves accepted connections with hyper, with the bounds hyper does not give by itself: a cap on
//! open connections per port (at the cap, the connection idle the longest makes room, so held
//! keep-alive connections cannot starve the probes), a time limit for the TLS handshake and the
//! first request, an idle timeout that also ends HTTP/2 connections kept alive by PINGs, a write
//! timeout that closes a connection whose reader stops draining its answers, and a deadline from an
//! answer being ready to its last byte being sent (an HTTP/2 peer that announces a zero window
//! never lets hyper write a byte, so the write timeout alone never arms).

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

use crate::shell::metrics::{Metrics, PortLabels};

/// The bounds of one listening port.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Open connections at most; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// For the TLS handshake, and from the connection's start to its first request.
    pub first_request_timeout: Duration,
    /// With no request in flight for this long, a connection is closed (HTTP/2: GOAWAY).
    pub idle_timeout: Duration,
    /// A write that makes no progress for this long closes the connection, and so does an answer
    /// not sent whole this long after it was ready.
    pub write_timeout: Duration,
}

/// The client's address, as a request extension for the audit log.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// A listening port and what it serves.
pub struct Port {
    pub name: &'static str,
    pub listener: TcpListener,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub router: Router,
    pub limits: ConnectionLimits,
}

fn builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // Bounds slow clients in the headers; also the most a client can make us buffer before
        // its headers end (hyper's default is ~400 KiB per connection).
        .header_read_timeout(Duration::from_secs(10))
        .max_buf_size(64 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(250)
        // A peer that does not answer a PING within 20 s (hyper's default) is gone.
        .keep_alive_interval(Duration::from_secs(30))
        // Body data a peer may send before the handler reads it: hyper's 1 MiB per connection and
        // per stream, made explicit because the memory bound of the server counts on it.
        .initial_connection_window_size(1024 * 1024)
        .initial_stream_window_size(1024 * 1024);
    builder
}

/// Accepts and serves connections until `shutdown` turns true, then lets every connection finish
/// its requests (HTTP/2 GOAWAY, HTTP/1.1 close after the answer) and returns once all are gone or
/// after `drain_timeout`.
pub async fn serve(port: Port, metrics: Arc<Metrics>, mut shutdown: watch::Receiver<bool>, drain_timeout: Duration) {
    let Port {
        name,
        listener,
        tls,
        router,
        limits,
    } = port;
    let builder = Arc::new(builder());
    let open = Arc::new(Semaphore::new(limits.max_connections));
    let live = Arc::new(LiveConnections::default());
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // EMFILE and the like: keep the loop, but do not spin on it.
                    tracing::error!(port = name, error = %err, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stopping(&mut shutdown) => break,
        };
        let Some(permit) = connection_slot(&open, &live).await else {
            metrics
                .connections_refused
                .get_or_create(&PortLabels { port: name })
                .inc();
            tracing::warn!(port = name, %peer, max = limits.max_connections, "connection refused: too many open connections");
            continue;
        };
        let (id, activity) = live.add();
        let connection = Connection {
            builder: builder.clone(),
            tls: tls.clone(),
            router: router.clone(),
            limits,
            peer,
            activity,
        };
        let (shutdown, live) = (shutdown.clone(), live.clone());
        tokio::spawn(async move {
            connection.run(stream, shutdown).await;
            live.remove(id);
            drop(permit);
        });
    }
    drop(listener);
    drain(name, &open, limits.max_connections, drain_timeout).await;
}

/// A slot for a new connection: a free one, else the one of the longest idle connection, evicted
/// (waiting up to `EVICTION_WAIT` for it to close); `None` when no slot frees up.
async fn connection_slot(open: &Arc<Semaphore>, live: &LiveConnections) -> Option<OwnedSemaphorePermit> {
    match open.clone().try_acquire_owned() {
        Ok(permit) => Some(permit),
        Err(_) if live.evict_longest_idle() => tokio::time::timeout(EVICTION_WAIT, open.clone().acquire_owned())
            .await
            .ok()
            .and_then(Result::ok),
        Err(_) => None,
    }
}

/// Waits until every connection has ended (each holds a slot until then), or `drain_timeout`.
async fn drain(name: &'static str, open: &Semaphore, max_connections: usize, drain_timeout: Duration) {
    let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(drain_timeout, open.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(port = name, timeout = ?drain_timeout, "connections still open after the drain timeout; closing them");
    }
}

/// How long a new connection waits for the evicted one's slot before it is refused.
const EVICTION_WAIT: Duration = Duration::from_secs(1);

/// The open connections of a port, each with its [`Activity`], to find the one idle the longest.
#[derive(Default)]
struct LiveConnections {
    next_id: AtomicU64,
    all: Mutex<HashMap<u64, Arc<Activity>>>,
}

impl LiveConnections {
    fn add(&self) -> (u64, Arc<Activity>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let activity = Arc::new(Activity {
            state: Mutex::new(ActivityState {
                in_flight: 0,
                last_end: None,
                idle_since: Instant::now(),
                unsent: BTreeSet::new(),
                next_answer: 0,
            }),
            ended: tokio::sync::Notify::new(),
            evict: tokio::sync::Notify::new(),
            evicted: AtomicBool::new(false),
        });
        self.all
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, activity.clone());
        (id, activity)
    }

    fn remove(&self, id: u64) {
        self.all.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
    }

    /// Tells the connection idle the longest (no request in flight, no answer unsent) to close;
    /// false when every connection is busy.
    fn evict_longest_idle(&self) -> bool {
        let all = self.all.lock().unwrap_or_else(PoisonError::into_inner);
        let longest = all
            .values()
            .filter(|activity| !activity.evicted.load(Ordering::Relaxed))
            .filter_map(|activity| Some((activity.idle_since()?, activity)))
            .min_by_key(|(since, _)| *since);
        match longest {
            Some((_, activity)) => {
                activity.evicted.store(true, Ordering::Relaxed);
                activity.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

struct Connection {
    builder: Arc<auto::Builder<TokioExecutor>>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    router: Router,
    limits: ConnectionLimits,
    peer: SocketAddr,
    activity: Arc<Activity>,
}

impl Connection {
    async fn run(self, stream: TcpStream, shutdown: watch::Receiver<bool>) {
        // Without TCP_NODELAY, Nagle and delayed ACKs stall small HTTP/2 frames (measured p99 27 ms).
        let _ = stream.set_nodelay(true);
        let stream = WriteDeadline::new(stream, self.limits.write_timeout);
        match self.tls.clone() {
            None => self.http(stream, shutdown).await,
            Some(acceptor) => {
                match tokio::time::timeout(self.limits.first_request_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => self.http(stream, shutdown).await,
                    Ok(Err(err)) => tracing::debug!(peer = %self.peer, error = %err, "TLS handshake failed"),
                    Err(_) => tracing::debug!(peer = %self.peer, "TLS handshake timed out"),
                }
            }
        }
    }

    async fn http<S>(self, stream: S, mut shutdown: watch::Receiver<bool>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let activity = self.activity.clone();
        let peer = self.peer;
        let service = tracked_service(self.router, peer, activity.clone());
        let connection = self
            .builder
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let mut connection = std::pin::pin!(connection);
        let started = Instant::now();
        let mut closing: Option<Pin<Box<Sleep>>> = None;
        loop {
            let (deadline, _) = activity.idle_deadline(started, &self.limits);
            let answer_deadline = activity.answer_deadline(&self.limits);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(err) = result {
                        tracing::debug!(%peer, error = %err, "connection ended with an error");
                    }
                    return;
                }
                () = activity.ended.notified(), if closing.is_none() => {}
                () = tokio::time::sleep_until(deadline), if closing.is_none() => {
                    let (deadline, idle) = activity.idle_deadline(started, &self.limits);
                    if idle && deadline <= Instant::now() {
                        connection.as_mut().graceful_shutdown();
                        closing = Some(Box::pin(tokio::time::sleep(self.limits.first_request_timeout)));
                    }
                }
                () = stopping(&mut shutdown), if closing.is_none() => {
                    connection.as_mut().graceful_shutdown();
                    // The server's drain timeout ends what is still running.
                    closing = Some(Box::pin(tokio::time::sleep(Duration::from_secs(86_400))));
                }
                // A client that ignores GOAWAY or never finishes its request.
                _ = async { closing.as_mut().expect("armed").await }, if closing.is_some() => return,
                // Another connection needs the slot of this idle one.
                () = activity.evict.notified() => {
                    tracing::debug!(%peer, "idle connection closed to make room for a new one");
                    return;
                }
                () = async { tokio::time::sleep_until(answer_deadline.expect("armed")).await }, if answer_deadline.is_some() => {
                    if activity.answer_deadline(&self.limits).is_some_and(|deadline| deadline <= Instant::now()) {
                        tracing::debug!(%peer, timeout = ?self.limits.write_timeout, "answer not sent in time; connection closed");
                        return;
                    }
                }
            }
        }
    }
}

/// Resolves once the server is told to stop (or the sender is gone).
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// The router as the service of one connection: each request tagged with the peer and in flight
/// until its answer's last byte is handed to the connection.
fn tracked_service(
    router: Router,
    peer: SocketAddr,
    tracked: Arc<Activity>,
) -> impl tower::Service<
    Request<hyper::body::Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<axum::response::Response, std::convert::Infallible>> + Send,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |mut request: Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(Peer(peer));
        let guard = tracked.start();
        let response = router.clone().oneshot(request.map(axum::body::Body::new));
        async move {
            let mut guard = guard;
            let response = response.await?;
            guard.answer_ready();
            Ok::<_, std::convert::Infallible>(
                response.map(|body| axum::body::Body::new(Unsent { body, _guard: guard })),
            )
        }
    })
}

/// Requests in flight on one connection (from their arrival until their answer is sent), and when
/// the last one ended.
struct Activity {
    state: Mutex<ActivityState>,
    /// Wakes the connection's timers when a request ends or an answer is ready.
    ended: tokio::sync::Notify,
    /// Tells an idle connection to close to make room for a new one.
    evict: tokio::sync::Notify,
    evicted: AtomicBool,
}

struct ActivityState {
    in_flight: usize,
    /// `None` before the first request.
    last_end: Option<Instant>,
    /// When the connection was accepted, or its last request ended.
    idle_since: Instant,
    /// Answers ready but not yet sent whole, by when they were ready.
    unsent: BTreeSet<(Instant, u64)>,
    next_answer: u64,
}

/// One request, from its arrival until its answer has been sent (or the connection is gone).
struct InFlight {
    activity: Arc<Activity>,
    ready: Option<(Instant, u64)>,
}

/// An answer's body, holding its request [`InFlight`] until hyper drops it: once sent whole.
struct Unsent {
    body: axum::body::Body,
    _guard: InFlight,
}

impl hyper::body::Body for Unsent {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

impl Activity {
    fn start(self: &Arc<Self>) -> InFlight {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.in_flight += 1;
        state.last_end.get_or_insert_with(Instant::now);
        InFlight {
            activity: self.clone(),
            ready: None,
        }
    }

    /// Since when the connection has had nothing in flight; `None` while it has.
    fn idle_since(&self) -> Option<Instant> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        (state.in_flight == 0).then_some(state.idle_since)
    }

    /// When the oldest answer not yet sent whole is overdue.
    fn answer_deadline(&self, limits: &ConnectionLimits) -> Option<Instant> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.unsent.first().map(|(ready, _)| *ready + limits.write_timeout)
    }

    /// When the connection becomes idle; with a request in flight, when to look again.
    fn idle_deadline(&self, connection_start: Instant, limits: &ConnectionLimits) -> (Instant, bool) {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match state.last_end {
            _ if state.in_flight > 0 => (Instant::now() + limits.idle_timeout, false),
            None => (connection_start + limits.first_request_timeout, true),
            Some(last_end) => (last_end + limits.idle_timeout, true),
        }
    }
}

impl InFlight {
    fn answer_ready(&mut self) {
        let mut state = self.activity.state.lock().unwrap_or_else(PoisonError::into_inner);
        let ready = (Instant::now(), state.next_answer);
        state.next_answer += 1;
        state.unsent.insert(ready);
        self.ready = Some(ready);
        drop(state);
        self.activity.ended.notify_one();
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut state = self.activity.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.in_flight -= 1;
        let now = Instant::now();
        state.last_end = Some(now);
        state.idle_since = now;
        if let Some(ready) = self.ready {
            state.unsent.remove(&ready);
        }
        drop(state);
        self.activity.ended.notify_one();
    }
}

/// A TCP stream whose writes fail once the peer has refused data for `timeout`: armed when a
/// write cannot proceed, disarmed once everything queued has been flushed, so a reader that
/// drains a byte now and then cannot keep an answer (and its memory) here forever.
struct WriteDeadline<S> {
    inner: S,
    timeout: Duration,
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<S> WriteDeadline<S> {
    fn new(inner: S, timeout: Duration) -> Self {
        WriteDeadline {
            inner,
            timeout,
            deadline: None,
        }
    }

    /// Called when the inner stream is not ready: arms the deadline, or fails once it passed.
    fn blocked(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        let timeout = self.timeout;
        let deadline = self
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the peer did not read the answer in time",
            )),
            Poll::Pending => Ok(()),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Pending => {
                self.blocked(cx)?;
                Poll::Pending
            }
            ready => ready,
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => {
                self.blocked(cx)?;
                Poll::Pending
            }
            ready => ready,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => {
                self.blocked(cx)?;
                Poll::Pending
            }
            Poll::Ready(result) => {
                self.deadline = None;
                Poll::Ready(result)
            }
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use axum::Extension;
    use axum::body::Body;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    const BIG: usize = 32 * 1024 * 1024;

    fn router() -> Router {
        Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route(
                "/peer",
                get(|Extension(Peer(peer)): Extension<Peer>| async move { peer.to_string() }),
            )
            .route("/big", get(|| async { vec![b'x'; BIG] }))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    "slow"
                }),
            )
    }

    struct Server {
        address: SocketAddr,
        metrics: Arc<Metrics>,
        /// Serving stops when this is dropped.
        _stop: watch::Sender<bool>,
    }

    async fn start(limits: ConnectionLimits) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let metrics = Arc::new(Metrics::default());
        let port = Port {
            name: "metrics",
            listener,
            tls: None,
            router: router(),
            limits,
        };
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(serve(port, metrics.clone(), stopped, Duration::from_secs(1)));
        Server {
            address,
            metrics,
            _stop: stop,
        }
    }

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            max_connections: 64,
            first_request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(1),
            write_timeout: Duration::from_secs(1),
        }
    }

    /// Whether the server closed the connection within `limit` (EOF or reset), reading and
    /// discarding whatever arrives; also returns the bytes read.
    async fn closed_within(stream: &mut TcpStream, limit: Duration) -> (bool, usize) {
        let deadline = Instant::now() + limit;
        let mut buffer = vec![0; 64 * 1024];
        let mut total = 0;
        loop {
            match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
                Err(_) => return (false, total),
                Ok(Ok(0) | Err(_)) => return (true, total),
                Ok(Ok(read)) => total += read,
            }
        }
    }

    async fn get_h1(stream: &mut TcpStream, path: &str) -> String {
        let request = format!("GET {path} HTTP/1.1\r\nhost: test\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut buffer = vec![0; 4096];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buffer))
            .await
            .expect("answered")
            .expect("read");
        String::from_utf8_lossy(&buffer[..read]).into_owned()
    }

    #[tokio::test]
    async fn connections_beyond_the_cap_are_closed_at_once_when_none_is_idle_and_the_peer_is_known() {
        let server = start(ConnectionLimits {
            max_connections: 2,
            ..limits()
        })
        .await;
        let mut first = TcpStream::connect(server.address).await.expect("connect");
        let mut second = TcpStream::connect(server.address).await.expect("connect");
        let answer = get_h1(&mut first, "/peer").await;
        assert!(
            answer.ends_with(&first.local_addr().expect("address").to_string()),
            "{answer}"
        );
        // Both busy: nothing to evict.
        for stream in [&mut first, &mut second] {
            stream
                .write_all(b"GET /slow HTTP/1.1\r\nhost: test\r\n\r\n")
                .await
                .expect("write");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut third = TcpStream::connect(server.address).await.expect("the kernel accepts");
        assert!(
            closed_within(&mut third, Duration::from_secs(1)).await.0,
            "the third is closed"
        );
        assert!(
            server
                .metrics
                .encode()
                .contains("workload_identity_webhook_connections_refused_total{port=\"metrics\"} 1")
        );
        assert!(
            get_h1(&mut first, "/slow").await.contains("slow"),
            "the busy ones are served"
        );
    }

    /// F3 (issue 21): clients holding every slot with keep-alive connections (a request now and
    /// then) cannot starve the probes: the connection idle the longest makes room.
    #[tokio::test]
    async fn at_the_cap_the_longest_idle_connection_makes_room() {
        let server = start(ConnectionLimits {
            max_connections: 4,
            idle_timeout: Duration::from_secs(60),
            ..limits()
        })
        .await;
        let mut held = Vec::new();
        for _ in 0..4 {
            let mut stream = TcpStream::connect(server.address).await.expect("connect");
            assert!(get_h1(&mut stream, "/healthz").await.starts_with("HTTP/1.1 200"));
            held.push(stream);
        }
        for probe in 0..3 {
            let mut stream = TcpStream::connect(server.address).await.expect("connect");
            let answer = get_h1(&mut stream, "/healthz").await;
            assert!(answer.starts_with("HTTP/1.1 200"), "probe {probe}: {answer:?}");
            // The oldest held connection was closed for it.
            let mut oldest = held.remove(0);
            assert!(
                closed_within(&mut oldest, Duration::from_secs(2)).await.0,
                "probe {probe}"
            );
            held.push(stream);
        }
        assert!(
            !server
                .metrics
                .encode()
                .contains("connections_refused_total{port=\"metrics\"} 1"),
            "{}",
            server.metrics.encode()
        );
    }

    #[tokio::test]
    async fn an_http2_connection_answering_pings_is_closed_when_idle() {
        let server = start(limits()).await;
        let stream = TcpStream::connect(server.address).await.expect("connect");
        let (mut sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_millis(200))
            .keep_alive_while_idle(true)
            .handshake::<_, Body>(TokioIo::new(stream))
            .await
            .expect("h2 handshake");
        let connection = tokio::spawn(connection);
        let request = hyper::Request::get("http://test/healthz")
            .body(Body::empty())
            .expect("request");
        let response = sender.send_request(request).await.expect("answered");
        assert_eq!(response.status(), 200);
        let started = Instant::now();
        // The client PINGs every 200 ms and the server answers, but no request comes: idle after 1 s.
        let ended = tokio::time::timeout(Duration::from_secs(5), connection).await;
        assert!(ended.is_ok(), "the idle HTTP/2 connection is still open after 5 s");
        assert!(started.elapsed() >= Duration::from_millis(900), "closed too early");
    }

    #[tokio::test]
    async fn an_idle_http1_keep_alive_connection_is_closed() {
        let server = start(limits()).await;
        let mut stream = TcpStream::connect(server.address).await.expect("connect");
        assert!(get_h1(&mut stream, "/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(closed_within(&mut stream, Duration::from_secs(5)).await.0);
    }

    #[tokio::test]
    async fn a_client_that_does_not_read_its_answer_is_disconnected() {
        let server = start(limits()).await;
        let mut stream = TcpStream::connect(server.address).await.expect("connect");
        stream
            .write_all(b"GET /big HTTP/1.1\r\nhost: test\r\n\r\n")
            .await
            .expect("write");
        // Not reading: the answer fills the socket buffers and the server's writes stall.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (closed, read) = closed_within(&mut stream, Duration::from_secs(5)).await;
        assert!(closed, "still open after the write timeout");
        assert!(
            read < BIG,
            "the whole answer arrived ({read} bytes): the writes never stalled"
        );
    }

    /// F4 (issue 21): an HTTP/2 peer that announces a zero window never lets an answer out, so no
    /// write ever blocks; the answer deadline closes the connection (and frees what it held).
    #[tokio::test]
    async fn an_answer_not_sent_in_time_behind_a_zero_window_closes_the_connection() {
        let server = start(ConnectionLimits {
            idle_timeout: Duration::from_secs(60),
            ..limits()
        })
        .await;
        let stream = TcpStream::connect(server.address).await.expect("connect");
        let (mut sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .initial_stream_window_size(0)
            .handshake::<_, Body>(TokioIo::new(stream))
            .await
            .expect("h2 handshake");
        let connection = tokio::spawn(connection);
        let request = hyper::Request::get("http://test/healthz")
            .body(Body::empty())
            .expect("request");
        let response = sender.send_request(request).await.expect("headers arrive");
        assert_eq!(response.status(), 200);
        let started = Instant::now();
        let ended = tokio::time::timeout(Duration::from_secs(5), connection).await;
        assert!(
            ended.is_ok(),
            "the connection with an unsent answer is still open after 5 s"
        );
        assert!(started.elapsed() >= Duration::from_millis(800), "closed too early");
    }

    #[tokio::test]
    async fn slow_headers_are_cut_off_on_a_plain_http_port() {
        let server = start(ConnectionLimits {
            idle_timeout: Duration::from_secs(60),
            ..limits()
        })
        .await;
        let mut stream = TcpStream::connect(server.address).await.expect("connect");
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost:")
            .await
            .expect("write");
        let started = Instant::now();
        assert!(closed_within(&mut stream, Duration::from_secs(15)).await.0);
        assert!(started.elapsed() >= Duration::from_secs(9), "{:?}", started.elapsed());
    }
}
