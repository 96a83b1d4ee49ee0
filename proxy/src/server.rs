//! Listeners: bind them (after the config has passed validation), then run them.
//!
//! - edge TLS over TCP: h1 or h2 by ALPN, through hyper-util's `auto` builder with upgrades;
//! - edge QUIC on the same port over UDP (see [`crate::h3`]);
//! - plain HTTP: a redirect to HTTPS, or the same handler (`edge.plain_http`);
//! - admin: the admin API and `/metrics` (see [`crate::admin`]).
//!
//! Connection limits are checked at accept: a global cap (`limits.max_connections`) and a
//! per-client-address cap (`limits.max_connections_per_client`); the map of addresses is the
//! one lock, taken on open and close only. HTTP/1 connections get two timers from [`TimedIo`]:
//! a client that starts a request head has `limits.header_read_timeout_ms` to finish it (else
//! `408` and close), and a connection idle between requests is closed after
//! `limits.idle_timeout_ms`.
//!
//! Shutdown stops accepting, asks every connection to finish (hyper's graceful shutdown: h1
//! closes after the current response, h2 and h3 send GOAWAY), and waits up to
//! `limits.shutdown_grace_ms` before cutting what is left.

use crate::body::{BoxError, Guarded, RespBody};
use crate::config::{Config, PlainHttp};
use crate::edge::{self, ConnInfo};
use crate::Proxy;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_util::task::TaskTracker;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: io::Error,
    },
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// The bound listeners and the shared state, ready to run.
#[derive(Debug)]
pub struct Server {
    pub proxy: Arc<Proxy>,
    edge: TcpListener,
    quic: Option<quinn::Endpoint>,
    plain: Option<TcpListener>,
    admin: TcpListener,
}

/// Where the listeners ended up (ports are real even when the config said 0).
#[derive(Debug, Clone, Copy)]
pub struct Addrs {
    pub edge: SocketAddr,
    pub quic: Option<SocketAddr>,
    pub plain: Option<SocketAddr>,
    pub admin: SocketAddr,
}

impl Server {
    /// Binds every listener of a validated config.
    pub async fn bind(cfg: Config) -> Result<Server, ServerError> {
        let proxy = Proxy::new(cfg)?;
        Self::bind_with(proxy).await
    }

    pub async fn bind_with(proxy: Arc<Proxy>) -> Result<Server, ServerError> {
        let cfg = proxy.config.load_full();
        let (edge, quic) = bind_edge(&proxy, &cfg)?;
        let edge_addr = edge.local_addr().map_err(|e| ServerError::Bind {
            what: "the edge",
            addr: cfg.edge.addr,
            source: e,
        })?;
        proxy
            .edge_port
            .store(edge_addr.port(), std::sync::atomic::Ordering::Relaxed);
        if let Some(endpoint) = &quic {
            let port = endpoint.local_addr().map_or(edge_addr.port(), |a| a.port());
            let alt = format!("h3=\":{port}\"; ma={}", cfg.edge.alt_svc_max_age);
            proxy
                .alt_svc
                .store(Arc::new(HeaderValue::from_str(&alt).ok()));
        }
        let plain = match cfg.edge.plain_http {
            PlainHttp::Off => None,
            _ => Some(bind_tcp(cfg.edge.http_addr, "plain HTTP")?),
        };
        let admin = bind_tcp(cfg.admin.addr, "the admin API")?;
        Ok(Server {
            proxy,
            edge,
            quic,
            plain,
            admin,
        })
    }

    pub fn addrs(&self) -> Addrs {
        Addrs {
            edge: self.edge.local_addr().expect("bound"),
            quic: self.quic.as_ref().and_then(|q| q.local_addr().ok()),
            plain: self.plain.as_ref().and_then(|p| p.local_addr().ok()),
            admin: self.admin.local_addr().expect("bound"),
        }
    }

    /// Serves until `proxy.shutdown` is cancelled, then drains.
    pub async fn run(self) -> anyhow::Result<()> {
        let Server {
            proxy,
            edge,
            quic,
            plain,
            admin,
        } = self;
        let cfg = proxy.config.load_full();
        let tracker = TaskTracker::new();
        let limiter = Arc::new(ConnLimiter::new(&cfg));
        let tls =
            tokio_rustls::TlsAcceptor::from(crate::tls::tcp_config(Arc::clone(&proxy.certs))?);
        let health = crate::health::spawn_supervisor(&proxy);
        let feed = cfg.feed.clone().map(|f| {
            (
                crate::feed::spawn(Arc::clone(&proxy), f.clone()),
                crate::feed::spawn_reporter(Arc::clone(&proxy), f),
            )
        });

        let mut accept_loops = Vec::new();
        accept_loops.push(tokio::spawn(accept_loop(
            Arc::clone(&proxy),
            edge,
            Listener::Tls(tls),
            Arc::clone(&limiter),
            tracker.clone(),
        )));
        if let Some(plain) = plain {
            let kind = if cfg.edge.plain_http == PlainHttp::Serve {
                Listener::Plain
            } else {
                Listener::Redirect
            };
            accept_loops.push(tokio::spawn(accept_loop(
                Arc::clone(&proxy),
                plain,
                kind,
                Arc::clone(&limiter),
                tracker.clone(),
            )));
        }
        let quic_task = quic.clone().map(|endpoint| {
            tokio::spawn(crate::h3::serve(
                Arc::clone(&proxy),
                endpoint,
                Arc::clone(&limiter),
                tracker.clone(),
            ))
        });
        let admin_task = tokio::spawn(crate::admin::serve(
            Arc::clone(&proxy),
            admin,
            tracker.clone(),
        ));

        proxy.shutdown.cancelled().await;
        tracing::info!("shutting down: no new connections, draining the open ones");
        for task in accept_loops {
            let _ = task.await;
        }
        if let Some(t) = quic_task {
            let _ = t.await;
        }
        let _ = admin_task.await;
        health.abort();
        if let Some((feed, reporter)) = feed {
            feed.abort();
            reporter.abort();
        }
        tracker.close();
        let grace = proxy.config.load().limits.shutdown_grace;
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!(
                left = tracker.len(),
                "grace period over; closing the connections still open"
            );
        }
        if let Some(endpoint) = quic {
            endpoint.close(0u32.into(), b"shutdown");
            let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
        }
        Ok(())
    }
}

/// Binds the edge's TCP listener and, with HTTP/3 on, its QUIC endpoint on the same port.
/// When the config asks for port 0, the kernel picks the TCP port and its UDP twin may be
/// taken by someone else: then try another pair.
fn bind_edge(
    proxy: &Proxy,
    cfg: &Config,
) -> Result<(TcpListener, Option<quinn::Endpoint>), ServerError> {
    let mut attempts = 0;
    loop {
        let edge = bind_tcp(cfg.edge.addr, "the edge (TCP)")?;
        if !cfg.edge.http3 {
            return Ok((edge, None));
        }
        let addr = edge.local_addr().map_err(|e| ServerError::Bind {
            what: "the edge",
            addr: cfg.edge.addr,
            source: e,
        })?;
        match bind_quic(proxy, addr) {
            Ok(endpoint) => return Ok((edge, Some(endpoint))),
            Err(ServerError::Bind { source, .. })
                if cfg.edge.addr.port() == 0
                    && source.kind() == io::ErrorKind::AddrInUse
                    && attempts < 8 =>
            {
                attempts += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

fn bind_tcp(addr: SocketAddr, what: &'static str) -> Result<TcpListener, ServerError> {
    let err = |source| ServerError::Bind { what, addr, source };
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .map_err(err)?;
    if addr.is_ipv6() {
        // Dual-stack `[::]` takes IPv4 too, where the host allows it.
        let _ = socket.set_only_v6(false);
    }
    socket.set_reuse_address(true).map_err(err)?;
    socket.set_nonblocking(true).map_err(err)?;
    socket.bind(&addr.into()).map_err(err)?;
    socket.listen(4096).map_err(err)?;
    TcpListener::from_std(socket.into()).map_err(err)
}

/// Binds QUIC on the TCP listener's address and port. `[::]` is dual-stack; where the host has
/// no IPv6, falls back to `0.0.0.0` and says so.
fn bind_quic(proxy: &Proxy, addr: SocketAddr) -> Result<quinn::Endpoint, ServerError> {
    let server_config = crate::tls::quic_config(Arc::clone(&proxy.certs))?;
    let try_bind = |addr: SocketAddr| -> io::Result<quinn::Endpoint> {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )?;
        if addr.is_ipv6() {
            let _ = socket.set_only_v6(false);
        }
        socket.bind(&addr.into())?;
        let runtime = quinn::default_runtime()
            .ok_or_else(|| io::Error::other("no async runtime for QUIC"))?;
        quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(server_config.clone()),
            socket.into(),
            runtime,
        )
    };
    match try_bind(addr) {
        Ok(e) => Ok(e),
        Err(e) if addr.is_ipv6() && addr.ip().is_unspecified() => {
            let v4 = SocketAddr::new(IpAddr::from([0, 0, 0, 0]), addr.port());
            tracing::warn!(error = %e, "no IPv6 for QUIC; HTTP/3 listens on {v4} only, so browsers that resolve localhost to ::1 will stay on HTTP/2");
            try_bind(v4).map_err(|source| ServerError::Bind {
                what: "the edge (UDP, HTTP/3)",
                addr: v4,
                source,
            })
        }
        Err(source) => Err(ServerError::Bind {
            what: "the edge (UDP, HTTP/3)",
            addr,
            source,
        }),
    }
}

/// Caps connections overall and per client address.
#[derive(Debug)]
pub struct ConnLimiter {
    total: Arc<Semaphore>,
    per_client: Mutex<HashMap<IpAddr, usize>>,
    max_per_client: usize,
}

/// Holds a connection's place under both caps until dropped.
#[derive(Debug)]
pub struct ConnSlot {
    _permit: OwnedSemaphorePermit,
    limiter: Arc<ConnLimiter>,
    ip: IpAddr,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut map = self
            .limiter
            .per_client
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

impl ConnLimiter {
    pub fn new(cfg: &Config) -> Self {
        Self {
            total: Arc::new(Semaphore::new(cfg.limits.max_connections)),
            per_client: Mutex::new(HashMap::new()),
            max_per_client: cfg.limits.max_connections_per_client,
        }
    }

    /// A slot for a new connection from `ip`, or the name of the limit that refused it.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnSlot, &'static str> {
        let permit = Arc::clone(&self.total)
            .try_acquire_owned()
            .map_err(|_| "max_connections")?;
        let ip = ip.to_canonical();
        let mut map = self.per_client.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= self.max_per_client {
            return Err("max_connections_per_client");
        }
        *n += 1;
        Ok(ConnSlot {
            _permit: permit,
            limiter: Arc::clone(self),
            ip,
        })
    }
}

enum Listener {
    Tls(tokio_rustls::TlsAcceptor),
    Plain,
    Redirect,
}

impl Listener {
    fn label(&self) -> &'static str {
        match self {
            Listener::Tls(_) => "https",
            Listener::Plain | Listener::Redirect => "http",
        }
    }
}

async fn accept_loop(
    proxy: Arc<Proxy>,
    listener: TcpListener,
    kind: Listener,
    limiter: Arc<ConnLimiter>,
    tracker: TaskTracker,
) {
    let builder = Arc::new(http_builder(&proxy.config.load()));
    let kind = Arc::new(kind);
    let open = proxy
        .metrics
        .open_connections
        .with_label_values(&[kind.label()]);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = proxy.shutdown.cancelled() => return,
        };
        let slot = match limiter.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(limit) => {
                proxy
                    .metrics
                    .connections_rejected
                    .with_label_values(&[limit])
                    .inc();
                tracing::debug!(client = %peer.ip(), limit, "connection refused");
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (proxy, builder, kind, open) = (
            Arc::clone(&proxy),
            Arc::clone(&builder),
            Arc::clone(&kind),
            open.clone(),
        );
        tracker.spawn(async move {
            open.inc();
            serve_tcp(proxy, stream, peer, &kind, &builder).await;
            open.dec();
            drop(slot);
        });
    }
}

fn http_builder(cfg: &Config) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    // Headers get a generous parse buffer; the configured limit is checked by the handler so
    // the answer is a JSON 431 rather than hyper's bare one.
    let buf = (cfg.limits.max_header_bytes * 4).max(16 * 1024);
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(buf)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(buf as u32)
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    b
}

async fn serve_tcp(
    proxy: Arc<Proxy>,
    stream: TcpStream,
    peer: SocketAddr,
    kind: &Listener,
    builder: &auto::Builder<TokioExecutor>,
) {
    let limits = proxy.config.load().limits.clone();
    match kind {
        Listener::Tls(acceptor) => {
            let tls =
                match tokio::time::timeout(limits.tls_handshake_timeout, acceptor.accept(stream))
                    .await
                {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(client = %peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        proxy
                            .metrics
                            .connections_rejected
                            .with_label_values(&["tls_handshake_timeout"])
                            .inc();
                        return;
                    }
                };
            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
            let conn = ConnInfo::new(peer, true, false);
            serve_http(proxy, tls, conn, !h2, builder, &limits, false).await;
        }
        Listener::Plain => {
            let conn = ConnInfo::new(peer, false, false);
            serve_http(proxy, stream, conn, true, builder, &limits, false).await;
        }
        Listener::Redirect => {
            let conn = ConnInfo::new(peer, false, false);
            serve_http(proxy, stream, conn, true, builder, &limits, true).await;
        }
    }
}

async fn serve_http<IO>(
    proxy: Arc<Proxy>,
    io: IO,
    conn: ConnInfo,
    h1: bool,
    builder: &auto::Builder<TokioExecutor>,
    limits: &crate::config::Limits,
    redirect: bool,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let phase = Arc::new(Phase::default());
    let io = TokioIo::new(TimedIo::new(
        io,
        Arc::clone(&phase),
        h1,
        limits.header_read_timeout,
        limits.idle_timeout,
    ));
    let service_proxy = Arc::clone(&proxy);
    let peer = conn.peer;
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let proxy = Arc::clone(&service_proxy);
        let phase = Arc::clone(&phase);
        let conn = conn.clone();
        phase.enter();
        async move {
            let res = if redirect {
                redirect_to_https(&proxy, &req)
            } else {
                let req = req.map(|b| b.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync());
                edge::handle(proxy, conn, req).await
            };
            if res.status() == StatusCode::SWITCHING_PROTOCOLS {
                // The connection becomes a tunnel (WebSocket): it never waits for a request
                // head again, so it stays "in a request" and the HTTP timers stay off.
                return Ok(res);
            }
            Ok::<_, std::convert::Infallible>(
                res.map(|b| Guarded::new(b, PhaseGuard(phase)).boxed_unsync()),
            )
        }
    });
    let connection = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(connection);
    tokio::select! {
        res = connection.as_mut() => {
            if let Err(e) = res {
                tracing::debug!(client = %peer, error = %e, "connection ended with an error");
            }
        }
        () = proxy.shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(limits.shutdown_grace, connection.as_mut()).await;
        }
    }
}

fn redirect_to_https(proxy: &Proxy, req: &Request<Incoming>) -> Response<RespBody> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| {
            if h.starts_with('[') {
                h.split_inclusive(']').next().unwrap_or(h)
            } else {
                h.split(':').next().unwrap_or(h)
            }
        })
        .unwrap_or("localhost");
    let port = proxy.edge_port.load(Relaxed);
    let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = if port == 443 {
        format!("https://{host}{pq}")
    } else {
        format!("https://{host}:{port}{pq}")
    };
    let mut res = crate::error::json_response(
        StatusCode::PERMANENT_REDIRECT,
        bytes::Bytes::from(
            stacklab_types::ErrorBody::new(
                "use_https",
                format!("this address serves HTTPS only; go to {location}"),
            )
            .to_json(),
        ),
    );
    if let Ok(v) = HeaderValue::from_str(&location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    res
}

/// Where an HTTP/1 connection is between requests, for [`TimedIo`].
#[derive(Debug, Default)]
struct Phase {
    state: AtomicU8,
    active: AtomicU32,
    /// The reader parked while a request was in service, woken when the last response ends
    /// so the idle timer starts.
    reader: futures_util::task::AtomicWaker,
}

const IDLE: u8 = 0;
const HEAD: u8 = 1;
const BUSY: u8 = 2;

impl Phase {
    fn enter(&self) {
        self.active.fetch_add(1, Relaxed);
        self.state.store(BUSY, Relaxed);
    }
}

/// Marks the end of a response (its body sent or dropped).
struct PhaseGuard(Arc<Phase>);

impl Drop for PhaseGuard {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Relaxed) == 1 {
            self.0.state.store(IDLE, Relaxed);
            self.0.reader.wake();
        }
    }
}

/// Wraps a connection's IO with the header-read and idle timers (see the module doc).
struct TimedIo<T> {
    inner: T,
    phase: Arc<Phase>,
    /// HTTP/1: the header timer applies. HTTP/2 frames are not request heads, so there only
    /// the idle timer does.
    h1: bool,
    header_timeout: Duration,
    idle_timeout: Duration,
    timer: Pin<Box<Sleep>>,
    armed_for: u8,
}

impl<T> TimedIo<T> {
    fn new(
        inner: T,
        phase: Arc<Phase>,
        h1: bool,
        header_timeout: Duration,
        idle_timeout: Duration,
    ) -> Self {
        // A new connection is waiting for its first request head.
        phase.state.store(if h1 { HEAD } else { IDLE }, Relaxed);
        let first = if h1 { header_timeout } else { idle_timeout };
        Self {
            inner,
            phase,
            h1,
            header_timeout,
            idle_timeout,
            timer: Box::pin(tokio::time::sleep(first)),
            armed_for: if h1 { HEAD } else { IDLE },
        }
    }
}

static REQUEST_TIMEOUT: &[u8] = b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: 133\r\n\r\n{\"error\":{\"code\":\"request_timeout\",\"message\":\"the request head was not sent in time (limits.header_read_timeout_ms); send it again\"}}";

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for TimedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        match res {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                if self.h1 && self.phase.state.load(Relaxed) == IDLE {
                    self.phase.state.store(HEAD, Relaxed);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let state = self.phase.state.load(Relaxed);
                if state == BUSY {
                    self.armed_for = BUSY;
                    self.phase.reader.register(cx.waker());
                    // The response may have ended between the load and the register.
                    if self.phase.state.load(Relaxed) == BUSY {
                        return Poll::Pending;
                    }
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                if state != self.armed_for {
                    let wait = if state == HEAD {
                        self.header_timeout
                    } else {
                        self.idle_timeout
                    };
                    self.timer.as_mut().reset(Instant::now() + wait);
                    self.armed_for = state;
                }
                if self.timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                if state == HEAD {
                    // Best effort: the answer fits in the socket buffer of any live client.
                    let _ = Pin::new(&mut self.inner).poll_write(cx, REQUEST_TIMEOUT);
                    let _ = Pin::new(&mut self.inner).poll_flush(cx);
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "request head not received in time",
                    )))
                } else {
                    // Idle too long: end of stream, closed quietly.
                    Poll::Ready(Ok(()))
                }
            }
            other => other,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TimedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn timeout_answer_has_the_right_length() {
        let text = std::str::from_utf8(super::REQUEST_TIMEOUT).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{}",
            body.len()
        );
        serde_json::from_str::<stacklab_types::ErrorBody>(body).unwrap();
    }
}
