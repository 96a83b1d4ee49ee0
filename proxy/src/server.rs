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
//!
//! A zero-downtime upgrade ([`crate::upgrade`]) hands the listeners to a new process instead:
//! [`Server::listen_for_upgrades`] on the old side, [`Server::inherit`] on the new one. The
//! old process then drains more gently than at shutdown, since its clients have somewhere to
//! go: an HTTP/1.1 connection is not closed while idle (a request may be on its way) but
//! answers its next request with `Connection: close`, and is closed only after
//! [`UPGRADE_IDLE_DRAIN`] without one.

use crate::body::{BoxError, Guarded, RespBody};
use crate::config::{Config, Http1Server, PlainHttp};
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
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// After a handover, how long an idle HTTP/1.1 connection of the old process is kept for its
/// client's next request (answered with `Connection: close`) before it is closed.
pub const UPGRADE_IDLE_DRAIN: Duration = Duration::from_secs(2);
/// Header fields hyper's HTTP/1 parser holds without allocating (its default `max_headers`).
const HYPER_INLINE_HEADERS: usize = 100;
/// How long a new process waits for the route feed's first table before it gives up taking
/// over (the old process then keeps serving).
pub const UPGRADE_FEED_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: io::Error,
    },
    #[error("cannot use the listeners handed over: {0}")]
    Inherit(io::Error),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    Upgrade(#[from] crate::upgrade::UpgradeError),
}

/// The bound listeners and the shared state, ready to run.
#[derive(Debug)]
pub struct Server {
    pub proxy: Arc<Proxy>,
    edge: TcpListener,
    quic: Option<Quic>,
    plain: Option<TcpListener>,
    admin: TcpListener,
    /// Where a successor may take the listeners over, and the listener there.
    upgrade: Option<(PathBuf, Option<UnixListener>)>,
    /// Set when this process took the listeners over and the old one still accepts.
    taking: Option<crate::upgrade::Taking>,
}

#[derive(Debug)]
enum Quic {
    /// Serving; a duplicate of its UDP socket is kept to hand over.
    Running {
        endpoint: quinn::Endpoint,
        socket: OwnedFd,
    },
    /// Taken over: HTTP/3 starts on it once the old process has let go.
    Inherited(std::net::UdpSocket),
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
        proxy.edge_port.store(edge_addr.port(), Relaxed);
        if let Some(q) = &quic {
            set_alt_svc(
                &proxy,
                &cfg,
                q.local_addr().map_or(edge_addr.port(), |a| a.port()),
            );
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
            upgrade: None,
            taking: None,
        })
    }

    /// Uses the listeners a running proxy handed over (see [`crate::upgrade`]) instead of
    /// binding. Addresses come with the sockets: a changed `edge.addr`, `edge.http_addr` or
    /// `admin.addr` needs a restart, as with a reload. A listener the config wants and the old
    /// process did not have is bound anew.
    pub fn inherit(
        proxy: Arc<Proxy>,
        listeners: crate::upgrade::Listeners,
        taking: crate::upgrade::Taking,
    ) -> Result<Server, ServerError> {
        let cfg = proxy.config.load_full();
        let tcp = |l: std::net::TcpListener| TcpListener::from_std(l).map_err(ServerError::Inherit);
        let edge = tcp(listeners.edge)?;
        let admin = tcp(listeners.admin)?;
        let edge_addr = edge.local_addr().map_err(ServerError::Inherit)?;
        for (key, configured, got) in [
            ("edge.addr", cfg.edge.addr, Some(edge_addr)),
            ("admin.addr", cfg.admin.addr, admin.local_addr().ok()),
        ] {
            if let Some(got) = got.filter(|g| configured.port() != 0 && *g != configured) {
                tracing::warn!(key, %configured, "kept {got} from the old process; restart to bind the new address");
            }
        }
        proxy.edge_port.store(edge_addr.port(), Relaxed);
        let plain = match (cfg.edge.plain_http, listeners.plain) {
            (PlainHttp::Off, _) => None,
            (_, Some(l)) => Some(tcp(l)?),
            (_, None) => Some(bind_tcp(cfg.edge.http_addr, "plain HTTP")?),
        };
        let quic = match (cfg.edge.http3, listeners.quic) {
            (false, _) => None,
            (true, Some(socket)) => Some(Quic::Inherited(socket)),
            (true, None) => match bind_quic(&proxy, edge_addr) {
                Ok(q) => Some(q),
                Err(e) => {
                    tracing::warn!(error = %e, "the old process had no HTTP/3 socket and none could be bound; HTTP/3 is off");
                    None
                }
            },
        };
        if let Some(q) = &quic {
            set_alt_svc(
                &proxy,
                &cfg,
                q.local_addr().map_or(edge_addr.port(), |a| a.port()),
            );
        }
        Ok(Server {
            proxy,
            edge,
            quic,
            plain,
            admin,
            upgrade: Some((cfg.edge.upgrade_socket.clone(), None)),
            taking: Some(taking),
        })
    }

    /// Listens on `edge.upgrade_socket` for a successor (`stacklab proxy --upgrade`). A server
    /// that took its listeners over binds it once the old process has let go.
    pub fn listen_for_upgrades(&mut self) -> Result<(), ServerError> {
        let path = self.proxy.config.load().edge.upgrade_socket.clone();
        let listener = if self.taking.is_some() {
            None
        } else {
            Some(crate::upgrade::listen(&path)?)
        };
        self.upgrade = Some((path, listener));
        Ok(())
    }

    pub fn addrs(&self) -> Addrs {
        Addrs {
            edge: self.edge.local_addr().expect("bound"),
            quic: self.quic.as_ref().and_then(Quic::local_addr),
            plain: self.plain.as_ref().and_then(|p| p.local_addr().ok()),
            admin: self.admin.local_addr().expect("bound"),
        }
    }

    /// Serves until `proxy.shutdown` is cancelled or a successor takes the listeners over,
    /// then drains.
    pub async fn run(self) -> anyhow::Result<()> {
        let Server {
            proxy,
            edge,
            quic,
            plain,
            admin,
            upgrade,
            taking,
        } = self;
        let cfg = proxy.config.load_full();
        let tracker = TaskTracker::new();
        let limiter = Arc::new(ConnLimiter::new(&cfg));
        let tls =
            tokio_rustls::TlsAcceptor::from(crate::tls::tcp_config(Arc::clone(&proxy.certs))?);
        let health = crate::health::spawn_supervisor(&proxy);
        let feed_stop = CancellationToken::new();
        let feed = cfg.feed.clone().map(|f| {
            (
                crate::feed::spawn(Arc::clone(&proxy), f.clone(), feed_stop.clone()),
                crate::feed::spawn_reporter(Arc::clone(&proxy), f, feed_stop.clone()),
            )
        });
        if taking.is_some() && cfg.feed.is_some() {
            // Accepting with an empty table would answer 410 to every live session.
            let mut synced = proxy.feed_synced.subscribe();
            if tokio::time::timeout(UPGRADE_FEED_WAIT, synced.wait_for(|s| *s))
                .await
                .is_err()
            {
                feed_stop.cancel();
                health.abort();
                anyhow::bail!(
                    "the route feed gave no table within {UPGRADE_FEED_WAIT:?}; not taking over (the running proxy keeps serving)"
                );
            }
        }
        // Duplicates of the listening sockets, for a successor.
        let shareable = match &upgrade {
            Some(_) => Some(shareable(&edge, quic.as_ref(), plain.as_ref(), &admin)?),
            None => None,
        };

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
        let admin_task = tokio::spawn(crate::admin::serve(
            Arc::clone(&proxy),
            admin,
            tracker.clone(),
        ));
        let start_quic = |endpoint: &quinn::Endpoint| {
            tokio::spawn(crate::h3::serve(
                Arc::clone(&proxy),
                endpoint.clone(),
                Arc::clone(&limiter),
                tracker.clone(),
            ))
        };
        let (mut endpoint, mut quic_task, mut inherited_udp) = (None, None, None);
        match quic {
            Some(Quic::Running { endpoint: e, .. }) => {
                quic_task = Some(start_quic(&e));
                endpoint = Some(e);
            }
            Some(Quic::Inherited(socket)) => inherited_udp = Some(socket),
            None => {}
        }
        let mut upgrade_listener = None;
        let mut upgrade_path = None;
        if let Some((path, listener)) = upgrade {
            upgrade_listener = listener;
            upgrade_path = Some(path);
        }
        if let Some(taking) = taking {
            let old = taking.old_pid;
            match taking.ready().await {
                Ok(()) => tracing::info!(old, "took over the listeners; the old process drains"),
                Err(e) => {
                    tracing::warn!(old, error = %e, "the old process did not confirm it let go; serving anyway")
                }
            }
            if let Some(socket) = inherited_udp.take() {
                match endpoint_on(&proxy, socket) {
                    Ok(e) => {
                        quic_task = Some(start_quic(&e));
                        endpoint = Some(e);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot serve HTTP/3 on the socket handed over; HTTP/3 is off")
                    }
                }
            }
            if let Some(path) = &upgrade_path {
                match crate::upgrade::listen(path) {
                    Ok(l) => upgrade_listener = Some(l),
                    Err(e) => tracing::warn!(error = %e, "no further upgrade will be possible"),
                }
            }
        }
        let (handing_tx, handing_rx) = tokio::sync::oneshot::channel();
        let upgrade_task = match (upgrade_listener, shareable) {
            (Some(listener), Some(sockets)) => Some(tokio::spawn(async move {
                let handing = crate::upgrade::wait_for_successor(&listener, &sockets).await;
                let _ = handing_tx.send(handing);
                // Our duplicates of the sockets and the upgrade listener close here.
            })),
            _ => None,
        };

        let handing = tokio::select! {
            () = proxy.shutdown.cancelled() => None,
            Ok(h) = handing_rx => Some(h),
        };
        if handing.is_some() {
            proxy.handed_over.store(true, Relaxed);
            proxy.shutdown.cancel();
            tracing::info!(
                "handed the listeners over: no new connections here, draining the open ones"
            );
        } else {
            tracing::info!("shutting down: no new connections, draining the open ones");
        }
        for task in accept_loops {
            let _ = task.await;
        }
        if let Some(t) = quic_task {
            let _ = t.await;
        }
        let _ = admin_task.await;
        if let Some(t) = upgrade_task {
            t.abort();
            let _ = t.await;
        }
        health.abort();
        if let Some(h) = handing {
            // QUIC connections live in this process: closed now, their clients reconnect to
            // the new one, which reads the UDP socket only once we have let go of it.
            if let Some(e) = endpoint.take() {
                e.close(0u32.into(), b"upgrade");
                let _ = tokio::time::timeout(Duration::from_secs(1), e.wait_idle()).await;
            }
            h.released().await;
        } else {
            feed_stop.cancel();
            if let Some(path) = &upgrade_path {
                let _ = std::fs::remove_file(path);
            }
        }
        tracker.close();
        let grace = proxy.config.load().limits.shutdown_grace;
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::warn!(
                left = tracker.len(),
                "grace period over; closing the connections still open"
            );
        }
        feed_stop.cancel();
        if let Some((feed, reporter)) = feed {
            feed.abort();
            reporter.abort();
        }
        if let Some(endpoint) = endpoint {
            endpoint.close(0u32.into(), b"shutdown");
            let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
        }
        Ok(())
    }
}

fn set_alt_svc(proxy: &Proxy, cfg: &Config, port: u16) {
    let alt = format!("h3=\":{port}\"; ma={}", cfg.edge.alt_svc_max_age);
    proxy
        .alt_svc
        .store(Arc::new(HeaderValue::from_str(&alt).ok()));
}

impl Quic {
    fn local_addr(&self) -> Option<SocketAddr> {
        match self {
            Quic::Running { endpoint, .. } => endpoint.local_addr().ok(),
            Quic::Inherited(s) => s.local_addr().ok(),
        }
    }
}

fn shareable(
    edge: &TcpListener,
    quic: Option<&Quic>,
    plain: Option<&TcpListener>,
    admin: &TcpListener,
) -> Result<crate::upgrade::Shareable, ServerError> {
    let dup =
        |fd: std::os::fd::BorrowedFd<'_>| fd.try_clone_to_owned().map_err(ServerError::Inherit);
    Ok(crate::upgrade::Shareable {
        edge: dup(edge.as_fd())?,
        quic: match quic {
            Some(Quic::Running { socket, .. }) => Some(dup(socket.as_fd())?),
            Some(Quic::Inherited(s)) => Some(dup(s.as_fd())?),
            None => None,
        },
        plain: plain.map(|p| dup(p.as_fd())).transpose()?,
        admin: dup(admin.as_fd())?,
    })
}

/// Binds the edge's TCP listener and, with HTTP/3 on, its QUIC endpoint on the same port.
/// When the config asks for port 0, the kernel picks the TCP port and its UDP twin may be
/// taken by someone else: then try another pair.
fn bind_edge(proxy: &Proxy, cfg: &Config) -> Result<(TcpListener, Option<Quic>), ServerError> {
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
            Ok(quic) => return Ok((edge, Some(quic))),
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

/// A QUIC endpoint serving HTTP/3 on a bound UDP socket.
fn endpoint_on(proxy: &Proxy, socket: std::net::UdpSocket) -> io::Result<quinn::Endpoint> {
    let server_config =
        crate::tls::quic_config(Arc::clone(&proxy.certs)).map_err(io::Error::other)?;
    let runtime =
        quinn::default_runtime().ok_or_else(|| io::Error::other("no async runtime for QUIC"))?;
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server_config),
        socket,
        runtime,
    )
}

/// Binds QUIC on the TCP listener's address and port. `[::]` is dual-stack; where the host has
/// no IPv6, falls back to `0.0.0.0` and says so.
fn bind_quic(proxy: &Proxy, addr: SocketAddr) -> Result<Quic, ServerError> {
    // Fail on a bad certificate as a TLS error, before any socket is bound.
    crate::tls::quic_config(Arc::clone(&proxy.certs))?;
    let try_bind = |addr: SocketAddr| -> io::Result<Quic> {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )?;
        if addr.is_ipv6() {
            let _ = socket.set_only_v6(false);
        }
        socket.bind(&addr.into())?;
        let socket: std::net::UdpSocket = socket.into();
        let dup = OwnedFd::from(socket.try_clone()?);
        Ok(Quic::Running {
            endpoint: endpoint_on(proxy, socket)?,
            socket: dup,
        })
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
    let cfg = proxy.config.load_full();
    let builder = Arc::new(http_builder(&cfg));
    // Our HTTP/1.1 server's settings for this listener, or none when hyper serves HTTP/1.1.
    let h1 = (cfg.edge.http1 == Http1Server::Stacklab).then(|| {
        Arc::new(crate::h1::Settings::new(
            &cfg,
            matches!(kind, Listener::Tls(_)),
            matches!(kind, Listener::Redirect),
        ))
    });
    let kind = Arc::new(kind);
    let open = proxy
        .metrics
        .open_connections
        .with_label_values(&[kind.label()]);
    let shutdown = proxy.shutdown.clone();
    stacklab_serve::accept_loop(&listener, &shutdown, &tracker, |stream, peer| {
        let slot = match limiter.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(limit) => {
                proxy
                    .metrics
                    .connections_rejected
                    .with_label_values(&[limit])
                    .inc();
                tracing::debug!(client = %peer.ip(), limit, "connection refused");
                return None;
            }
        };
        let _ = stream.set_nodelay(true);
        let (proxy, builder, kind, open, h1) = (
            Arc::clone(&proxy),
            Arc::clone(&builder),
            Arc::clone(&kind),
            open.clone(),
            h1.clone(),
        );
        Some(async move {
            open.inc();
            serve_tcp(proxy, stream, peer, &kind, &builder, h1.as_deref()).await;
            open.dec();
            drop(slot);
        })
    })
    .await;
}

fn http_builder(cfg: &Config) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    // hyper reads request heads well past our limit (`PROTOCOL_HEADER_FACTOR` times it), so
    // that the handler's check decides and the answer is the JSON 431: over HTTP/1.1 hyper's
    // own is a bare 431, over HTTP/2 the h2 crate's a bare 431 or a reset. (HTTP/2 clients
    // also read this as SETTINGS_MAX_HEADER_LIST_SIZE and refuse to send more themselves.)
    let buf = cfg.limits.protocol_header_bytes();
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(buf)
        .keep_alive(true);
    // hyper parses up to 100 header fields on the stack and refuses more with a bare 431; a
    // fields limit of our own at or above that needs hyper to take more (on the heap).
    if cfg.limits.max_header_fields >= HYPER_INLINE_HEADERS {
        b.http1()
            .max_headers(cfg.limits.max_header_fields.saturating_mul(2));
    }
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
    h1: Option<&crate::h1::Settings>,
) {
    // This future is the connection's task for its whole life, sized by its largest state:
    // TLS connections and hyper's (HTTP/2, or HTTP/1.1 with `edge.http1 = "hyper"`) are boxed
    // so that an idle plain HTTP/1.1 connection of ours does not carry their room.
    let handshake_timeout = proxy.config.load().limits.tls_handshake_timeout;
    match kind {
        Listener::Tls(acceptor) => {
            let serve = serve_tls(
                proxy,
                stream,
                peer,
                acceptor,
                builder,
                h1,
                handshake_timeout,
            );
            Box::pin(serve).await;
        }
        Listener::Plain | Listener::Redirect => {
            let redirect = matches!(kind, Listener::Redirect);
            let conn = ConnInfo::new(peer, false, false);
            let Some(settings) = h1 else {
                Box::pin(serve_http(proxy, stream, conn, true, builder, redirect)).await;
                return;
            };
            if let crate::h1::Ended::H2c(stream, read) =
                crate::h1::serve(Arc::clone(&proxy), stream, conn.clone(), settings).await
            {
                // HTTP/2 with prior knowledge: hyper's, with the preface it already sent.
                let io = crate::h1::Rewind::new(read, stream);
                Box::pin(serve_http(proxy, io, conn, false, builder, redirect)).await;
            }
        }
    }
}

/// A TLS connection: the handshake, then HTTP/1.1 (ours, or hyper's) or HTTP/2 by ALPN.
async fn serve_tls(
    proxy: Arc<Proxy>,
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: &tokio_rustls::TlsAcceptor,
    builder: &auto::Builder<TokioExecutor>,
    h1: Option<&crate::h1::Settings>,
    handshake_timeout: Duration,
) {
    let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
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
    match h1 {
        Some(settings) if !h2 => {
            crate::h1::serve(proxy, tls, conn, settings).await;
        }
        _ => Box::pin(serve_http(proxy, tls, conn, !h2, builder, false)).await,
    }
}

async fn serve_http<IO>(
    proxy: Arc<Proxy>,
    io: IO,
    conn: ConnInfo,
    h1: bool,
    builder: &auto::Builder<TokioExecutor>,
    redirect: bool,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = &proxy.config.load().limits.clone();
    let phase = Arc::new(Phase::default());
    let io = TokioIo::new(TimedIo::new(
        io,
        Arc::clone(&phase),
        h1,
        limits.header_read_timeout,
        limits.idle_timeout,
        proxy
            .config
            .load()
            .edge
            .headers
            .head_timeout_answer(conn.secure),
    ));
    let service_proxy = Arc::clone(&proxy);
    let drain_phase = Arc::clone(&phase);
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
            let mut res = res;
            if h1 && phase.closing.load(Relaxed) {
                // Draining after a handover: this client's next request goes to the new
                // process, on a new connection.
                res.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
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
            if h1 && proxy.handed_over.load(Relaxed) {
                // Closing an idle HTTP/1.1 connection races with a request its client may be
                // sending: instead its next response carries `Connection: close`.
                drain_phase.closing.store(true, Relaxed);
                if let Ok(res) = tokio::time::timeout(UPGRADE_IDLE_DRAIN, connection.as_mut()).await {
                    if let Err(e) = res {
                        tracing::debug!(client = %peer, error = %e, "connection ended with an error");
                    }
                    return;
                }
            }
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(limits.shutdown_grace, connection.as_mut()).await;
        }
    }
}

pub(crate) fn redirect_to_https<B>(proxy: &Proxy, req: &Request<B>) -> Response<RespBody> {
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
    edge::security_headers(&proxy.config.load().edge.headers, false, res.headers_mut());
    res
}

/// Where an HTTP/1 connection is between requests, for [`TimedIo`].
#[derive(Debug, Default)]
struct Phase {
    state: AtomicU8,
    active: AtomicU32,
    /// Responses say `Connection: close` (draining after a handover).
    closing: AtomicBool,
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
    /// What a late request head is answered with (made once per config).
    timeout_answer: bytes::Bytes,
}

impl<T> TimedIo<T> {
    fn new(
        inner: T,
        phase: Arc<Phase>,
        h1: bool,
        header_timeout: Duration,
        idle_timeout: Duration,
        timeout_answer: bytes::Bytes,
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
            timeout_answer,
        }
    }
}

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
                    let answer = self.timeout_answer.clone();
                    let _ = Pin::new(&mut self.inner).poll_write(cx, &answer);
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
    fn timeout_answer_has_the_right_length_and_headers() {
        let cfg = crate::config::Config::from_toml(
            "",
            &std::collections::BTreeMap::<String, String>::new(),
        )
        .unwrap();
        for secure in [false, true] {
            let raw = cfg.edge.headers.head_timeout_answer(secure);
            let text = std::str::from_utf8(&raw).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            assert!(
                head.contains(&format!("content-length: {}", body.len())),
                "{}",
                body.len()
            );
            assert!(head.contains("x-content-type-options: nosniff"), "{head}");
            assert!(head.contains("referrer-policy: "), "{head}");
            assert_eq!(
                head.contains("strict-transport-security: "),
                secure,
                "{head}"
            );
            serde_json::from_str::<stacklab_types::ErrorBody>(body).unwrap();
        }
    }
}
