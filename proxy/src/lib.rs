//! stacklab's edge proxy: a reverse proxy and load balancer on hyper (HTTP/1.1 and HTTP/2 over
//! rustls, chosen by ALPN) and quinn + h3 (HTTP/3 on the same port over UDP).
//!
//! It routes by host and path prefix, and by the `stacklab_session` cookie to the session's
//! pool; it balances across pool members (round robin, weighted, least in flight, p2c on peak
//! EWMA, consistent hashing), ejects and restores members by active and passive health, retries
//! what is safe to retry, and follows control's route feed so pools and sessions change at run
//! time without a reload.
//!
//! # Layout
//! - [`config`]: defaults < TOML < environment, validated in one step.
//! - [`server`]: binds the listeners (TLS over TCP, QUIC, plain HTTP, admin) and runs them with
//!   connection limits, timeouts and graceful shutdown; [`h1`] is our HTTP/1.1 server (no
//!   buffer held between requests), hyper serves HTTP/2 and [`h3`] the QUIC side.
//! - [`edge`]: the one request handler all three protocols share.
//! - [`table`]: the route table, swapped atomically on every change; [`pool`]: members and the
//!   balancing algorithms; [`health`]: active checks, passive ejection, member events.
//! - [`upstream`]: keep-alive client pools, retries, failover, the retry budget.
//! - [`session`]: the session cookie; [`capture`]: per-session request capture for the inspector.
//! - [`admin`]: the admin API and `/metrics`; [`feed`]: follows control's route feed.
//! - [`tls`]: certificates by SNI, the self-signed default; [`statics`]: the embedded web UI.
//! - [`upgrade`]: hands the listening sockets to a new process (zero-downtime upgrade).
//! - [`metrics`], [`error`], [`body`], [`clock`]: shared pieces.

pub mod admin;
pub mod body;
pub mod capture;
pub mod clock;
pub mod config;
pub mod edge;
pub mod error;
pub mod feed;
pub mod h1;
pub mod h3;
pub mod health;
pub mod hold;
pub mod metrics;
pub mod pool;
pub mod server;
pub mod session;
pub mod statics;
pub mod table;
pub mod tls;
pub mod upgrade;
pub mod upstream;

use arc_swap::ArcSwap;
use config::{Config, ConfigError, ConfigReport, Env};
use http::HeaderValue;
use std::sync::Arc;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

pub use server::Server;

/// The configuration stacklab runs on when no file is given: `config/stacklab.toml`.
pub const DEFAULT_CONFIG: &str = include_str!("../../config/stacklab.toml");

/// Everything the request path and the admin API share.
#[derive(Debug)]
pub struct Proxy {
    pub config: ArcSwap<Config>,
    pub routing: table::Routing,
    pub clock: clock::Clock,
    pub metrics: metrics::Metrics,
    pub upstream: ArcSwap<upstream::Upstream>,
    pub retry_budget: upstream::RetryBudget,
    pub capture: capture::CaptureStore,
    pub events: broadcast::Sender<health::MemberEvent>,
    pub statics: statics::Statics,
    pub certs: Arc<tls::CertResolver>,
    /// `Alt-Svc` for TCP responses, set once the UDP port is bound.
    pub alt_svc: ArcSwap<Option<HeaderValue>>,
    /// The edge's bound TCP port (the config may say 0), for redirects.
    pub edge_port: std::sync::atomic::AtomicU16,
    /// Cancelled to shut down (or, after a handover, to stop accepting and drain).
    pub shutdown: CancellationToken,
    /// Set when a new process took the listeners over (see [`upgrade`]): connections drain
    /// with `Connection: close` instead of being closed while idle.
    pub handed_over: std::sync::atomic::AtomicBool,
    /// True once the route feed has delivered its first update (a new process waits for it
    /// before it accepts on sockets it took over).
    pub feed_synced: tokio::sync::watch::Sender<bool>,
    /// The same, read on the request path without the watch's lock.
    feed_ready: std::sync::atomic::AtomicBool,
    /// Requests waiting for a table or a pool's first member (see [`hold`]).
    pub holds: hold::Holds,
    /// Control's admin routes when it shares this process and admin address (`stacklab up`).
    pub admin_ext: std::sync::OnceLock<Arc<dyn admin::AdminExtension>>,
}

impl Proxy {
    /// Builds the shared state from a validated config. Binds nothing.
    pub fn new(cfg: Config) -> Result<Arc<Self>, tls::TlsError> {
        let metrics = metrics::Metrics::new();
        let routing = table::Routing::new(metrics.clone());
        routing.set_config(&cfg.routes, &cfg.pools);
        let certs = Arc::new(tls::CertResolver::default());
        certs.load(&cfg)?;
        Ok(Arc::new(Self {
            routing,
            clock: clock::Clock::new(),
            upstream: ArcSwap::from_pointee(upstream::Upstream::new(&cfg.limits)),
            retry_budget: upstream::RetryBudget::new(&cfg.retry),
            capture: capture::CaptureStore::new(
                cfg.limits.capture_per_session,
                cfg.limits.capture_sessions,
            ),
            events: broadcast::channel(1024).0,
            statics: statics::Statics::new(cfg.edge.static_dir.clone()),
            certs,
            alt_svc: ArcSwap::from_pointee(None),
            edge_port: std::sync::atomic::AtomicU16::new(cfg.edge.addr.port()),
            shutdown: CancellationToken::new(),
            handed_over: std::sync::atomic::AtomicBool::new(false),
            feed_synced: tokio::sync::watch::Sender::new(false),
            feed_ready: std::sync::atomic::AtomicBool::new(false),
            holds: hold::Holds::default(),
            admin_ext: std::sync::OnceLock::new(),
            config: ArcSwap::from_pointee(cfg),
            metrics,
        }))
    }

    /// The route feed has delivered its first table (called by the feed follower).
    pub fn mark_feed_synced(&self) {
        self.feed_ready
            .store(true, std::sync::atomic::Ordering::Relaxed);
        self.feed_synced
            .send_if_modified(|synced| !std::mem::replace(synced, true));
    }

    /// This proxy follows a feed that has not delivered its first table yet: it knows no
    /// session so far (see [`hold`]).
    #[inline]
    pub fn feed_pending(&self, cfg: &Config) -> bool {
        cfg.feed.is_some() && !self.feed_ready.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Re-reads the config from where it came from and applies what can change while running:
    /// routes, config pools, limits, timeouts, certificates. Listener addresses need a restart
    /// (a warning says so). On any error nothing changes.
    pub fn reload(&self, env: &dyn Env) -> Result<Vec<ConfigError>, ConfigReport> {
        let old = self.config.load_full();
        let mut cfg = Config::load(old.source.as_deref(), env)?;
        let mut warnings = Vec::new();
        // What was settled at start and is not in the file: a generated admin token (kept in
        // <data_dir>/admin.token) and the feed `stacklab up` points at its own control.
        // Without this a reload left the admin API refusing every token.
        if cfg.admin.token.is_empty() {
            cfg.admin.token = old.admin.token.clone();
        }
        if cfg.feed.is_none() {
            cfg.feed = old.feed.clone();
        }
        self.certs
            .load(&cfg)
            .map_err(|e| ConfigReport::one("edge.certificates".into(), e.to_string()))?;
        for (key, was, now) in [
            ("edge.addr", old.edge.addr, cfg.edge.addr),
            ("edge.http_addr", old.edge.http_addr, cfg.edge.http_addr),
            ("admin.addr", old.admin.addr, cfg.admin.addr),
        ] {
            if was != now {
                warnings.push(ConfigError {
                    path: key.into(),
                    message: format!("changed from {was} to {now}; restart to bind it"),
                });
            }
        }
        self.routing.set_config(&cfg.routes, &cfg.pools);
        self.upstream
            .store(Arc::new(upstream::Upstream::new(&cfg.limits)));
        self.config.store(Arc::new(cfg));
        for w in &warnings {
            tracing::warn!(key = %w.path, "{}", w.message);
        }
        tracing::info!("configuration reloaded");
        Ok(warnings)
    }
}
