//! Configuration: defaults, then the TOML file, then environment variables, the later winning.
//!
//! ```text
//!  TOML text ──toml──▶ table ──env overrides──▶ table ──read──▶ RawConfig ──validate()──▶ Config
//!                             (STACKLAB_*, put in        (serde, all optional,   (typed, checked,
//!                              at the keys they name)     unknown keys named)     every error at once)
//! ```
//!
//! The reading and the overrides are `stacklab_types::config`'s, the same for every part's
//! section: an unknown key and a value that does not fit are errors naming the key by its
//! whole path, a bad variable is named as `STACKLAB_ADMIN_ADDR (admin.addr)`.
//!
//! Nothing binds a port before [`Config::validate`] has passed. Every problem is reported with
//! the key's path (`limits.max_body_bytes`, `routes[2].pool`), all at once, so a person fixes
//! the file in one go. A key nobody reads is an error too (a misspelt limit would otherwise
//! stay at its default unnoticed).
//!
//! The sections owned by other parts of stacklab (`control`, `backend`, `docker`, `shared`)
//! are carried through untouched as raw TOML for those parts to validate.

use serde::Deserialize;
use stacklab_types::config;
use stacklab_types::routes::{HealthSpec, PoolSpec};
use stacklab_types::Secret;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default edge address: TCP (h1, h2) and UDP (h3), dual-stack.
pub const DEFAULT_EDGE_ADDR: &str = "[::]:8443";
/// Default plain-HTTP address (redirects to HTTPS unless `plain_http = "serve"`).
pub const DEFAULT_HTTP_ADDR: &str = "[::]:8080";
/// Default admin address: loopback only, since it can change routing.
pub const DEFAULT_ADMIN_ADDR: &str = "127.0.0.1:9000";
/// Default data directory, relative to where stacklab starts.
pub const DEFAULT_DATA_DIR: &str = "data";
/// Open client connections accepted at once, over all listeners.
pub const DEFAULT_MAX_CONNECTIONS: usize = 20_000;
/// Open connections per client address; one host cannot take the whole edge.
pub const DEFAULT_MAX_CONNECTIONS_PER_CLIENT: usize = 512;
/// QUIC handshakes whose client address is not proven yet, at once; past it, new ones get a
/// QUIC Retry (see [`crate::h3`]).
pub const DEFAULT_QUIC_UNVALIDATED_HANDSHAKES: usize = 64;
/// Request head (request line and headers) size; past it, `431`.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
/// `limits.max_header_fields` when not set: members built on hyper (the backends) answer more
/// than 100 fields with an empty `431`; this leaves room for the few the proxy adds.
pub const DEFAULT_MAX_HEADER_FIELDS: usize = 90;
/// How many times `limits.max_header_bytes` the protocol libraries (hyper for HTTP/1.1 and
/// HTTP/2, h3 for HTTP/3) read of a request head before refusing it themselves: far enough
/// above the limit that the proxy's own check decides and answers the JSON `431`. Only a head
/// past this (128 KiB on the defaults) gets the library's bare refusal.
pub const PROTOCOL_HEADER_FACTOR: usize = 8;
/// The least the protocol libraries are given, whatever `limits.max_header_bytes` says.
pub const MIN_PROTOCOL_HEADER_BYTES: usize = 64 * 1024;
/// Request body size; past it, `413`.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 8 * 1024 * 1024;
/// Time a client has to send a request head once it has started one; past it, `408`.
pub const DEFAULT_HEADER_READ_TIMEOUT_MS: u64 = 10_000;
/// Longest pause a client may make while the proxy waits for more of its request body; past
/// it, `408` (the client's fault, never the member's).
pub const DEFAULT_BODY_READ_TIMEOUT_MS: u64 = 10_000;
/// Time a keep-alive connection may sit idle between requests before it is closed.
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 60_000;
/// Time to finish a TLS handshake.
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
/// Time to connect to an upstream member; past it, the next member, then `502`.
pub const DEFAULT_UPSTREAM_CONNECT_TIMEOUT_MS: u64 = 2_000;
/// Time for an upstream member to start its response; past it, `504`.
pub const DEFAULT_UPSTREAM_RESPONSE_TIMEOUT_MS: u64 = 30_000;
/// Idle upstream keep-alive connections kept per member.
pub const DEFAULT_UPSTREAM_IDLE_PER_MEMBER: usize = 256;
/// Request bodies up to this size are held so the request can be retried on another member.
pub const DEFAULT_RETRY_BUFFER_BYTES: usize = 64 * 1024;
/// Time in-flight requests get to finish at shutdown before connections are cut.
pub const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 10_000;
/// How long a request waits for a route table or a pool's first member (see [`crate::hold`]).
pub const DEFAULT_START_HOLD_MS: u64 = 10_000;
/// Requests that may wait so at once.
pub const DEFAULT_MAX_HELD_REQUESTS: usize = 1024;
/// Captured requests kept per session for the inspector.
pub const DEFAULT_CAPTURE_PER_SESSION: usize = 100;
/// Sessions whose requests are captured at once (least recently used dropped past it).
pub const DEFAULT_CAPTURE_SESSIONS: usize = 10_000;
/// Captured body prefix.
pub const DEFAULT_CAPTURE_BODY_BYTES: usize = 4 * 1024;
/// Share of requests that may be retried, on top of [`DEFAULT_RETRY_MIN_PER_SECOND`].
pub const DEFAULT_RETRY_BUDGET_RATIO: f64 = 0.2;
/// Retries always allowed per second, so a quiet proxy can still fail over.
pub const DEFAULT_RETRY_MIN_PER_SECOND: u32 = 10;
/// Attempts per request, the first included.
pub const DEFAULT_RETRY_MAX_ATTEMPTS: u32 = 3;
/// Consecutive failures (no connection, a reset before the response head, a response
/// timeout; never a status the member chose to send) that eject a member.
pub const DEFAULT_EJECT_CONSECUTIVE_FAILURES: u32 = 5;
/// First ejection length; doubled on each ejection in a row.
pub const DEFAULT_EJECT_BASE_MS: u64 = 1_000;
/// Longest ejection.
pub const DEFAULT_EJECT_MAX_MS: u64 = 30_000;
/// `Alt-Svc` max age advertised for HTTP/3.
pub const DEFAULT_ALT_SVC_MAX_AGE: u64 = 86_400;
/// `Strict-Transport-Security` on every response over HTTPS and HTTP/3: a year, this host
/// only (a `includeSubDomains` would bind every other service under the name too).
pub const DEFAULT_STRICT_TRANSPORT_SECURITY: &str = "max-age=31536000";
/// `Referrer-Policy` on every response. Not `no-referrer`: under it browsers send
/// `Origin: null` on same-origin POSTs, and control checks `Origin` on state-changing requests.
pub const DEFAULT_REFERRER_POLICY: &str = "strict-origin-when-cross-origin";
/// `Content-Security-Policy` of the web UI's files: its own scripts, styles and API only, no
/// inline script or style, never framed. (`data:` images: the page's empty favicon.)
pub const DEFAULT_CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";
/// The values `Referrer-Policy` may take (W3C Referrer Policy §3).
pub const REFERRER_POLICIES: &[&str] = &[
    "no-referrer",
    "no-referrer-when-downgrade",
    "same-origin",
    "origin",
    "strict-origin",
    "origin-when-cross-origin",
    "strict-origin-when-cross-origin",
    "unsafe-url",
];
/// The Unix socket a running `stacklab proxy` hands its listeners over on, under `data_dir`
/// (see [`crate::upgrade`]).
pub const DEFAULT_UPGRADE_SOCKET: &str = "upgrade.sock";
/// Longest path a Unix socket address holds on Linux (`sun_path` less its NUL).
pub const MAX_UNIX_SOCKET_PATH: usize = 107;

/// Sections of the file that belong to other parts of stacklab.
pub const OTHER_PARTS: &[&str] = &["control", "backend", "docker", "shared"];

// ---------------------------------------------------------------------------------------------
// Raw: what the file says.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
pub struct RawConfig {
    pub data_dir: Option<PathBuf>,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub edge: RawEdge,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub retry: RawRetry,
    #[serde(default)]
    pub passive_health: RawPassiveHealth,
    #[serde(default)]
    pub feed: Option<RawFeed>,
    #[serde(default)]
    pub sessions: RawSessions,
    #[serde(default)]
    pub pools: Vec<toml::Value>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    /// Sections of other parts, passed on unvalidated.
    #[serde(flatten)]
    pub other: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawLog {
    pub filter: Option<String>,
    pub access_log: Option<bool>,
    pub json: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawEdge {
    pub addr: Option<String>,
    pub http_addr: Option<String>,
    pub plain_http: Option<String>,
    pub http1: Option<String>,
    pub http3: Option<bool>,
    pub alt_svc_max_age: Option<u64>,
    pub static_dir: Option<PathBuf>,
    pub workers: Option<usize>,
    pub upgrade_socket: Option<PathBuf>,
    pub strict_transport_security: Option<String>,
    pub referrer_policy: Option<String>,
    pub content_security_policy: Option<String>,
    #[serde(default)]
    pub certificates: Vec<RawCertificate>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawCertificate {
    #[serde(default)]
    pub server_names: Vec<String>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawAdmin {
    pub addr: Option<String>,
    pub token: Option<Secret>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawLimits {
    pub max_connections: Option<usize>,
    pub max_connections_per_client: Option<usize>,
    pub quic_unvalidated_handshakes: Option<usize>,
    pub max_header_bytes: Option<usize>,
    pub max_header_fields: Option<usize>,
    pub max_body_bytes: Option<u64>,
    pub header_read_timeout_ms: Option<u64>,
    pub body_read_timeout_ms: Option<u64>,
    pub idle_timeout_ms: Option<u64>,
    pub tls_handshake_timeout_ms: Option<u64>,
    pub upstream_connect_timeout_ms: Option<u64>,
    pub upstream_response_timeout_ms: Option<u64>,
    pub upstream_idle_per_member: Option<usize>,
    pub retry_buffer_bytes: Option<usize>,
    pub start_hold_ms: Option<u64>,
    pub max_held_requests: Option<usize>,
    pub shutdown_grace_ms: Option<u64>,
    pub capture_per_session: Option<usize>,
    pub capture_sessions: Option<usize>,
    pub capture_body_bytes: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawRetry {
    pub budget_ratio: Option<f64>,
    pub min_per_second: Option<u32>,
    pub max_attempts: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawPassiveHealth {
    pub consecutive_failures: Option<u32>,
    pub base_ejection_ms: Option<u64>,
    pub max_ejection_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawFeed {
    pub url: Option<String>,
    pub token: Option<Secret>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawSessions {
    pub idle_timeout_ms: Option<u64>,
    pub hard_lifetime_ms: Option<u64>,
    pub max_live: Option<usize>,
    pub max_new_per_client_per_minute: Option<u32>,
    pub report_interval_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawRoute {
    pub host: Option<String>,
    pub path: Option<String>,
    #[serde(default)]
    pub methods: Vec<String>,
    pub pool: Option<String>,
    #[serde(default)]
    pub session_pool: bool,
    #[serde(default)]
    pub static_files: bool,
    #[serde(default)]
    pub captures: bool,
    pub require_session: Option<bool>,
    pub touches_session: Option<bool>,
}

// ---------------------------------------------------------------------------------------------
// Validated: what the proxy runs on.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub log: LogConfig,
    pub edge: EdgeConfig,
    pub admin: AdminConfig,
    pub limits: Limits,
    pub retry: RetryConfig,
    pub passive_health: PassiveHealth,
    pub feed: Option<FeedConfig>,
    pub sessions: SessionsConfig,
    pub pools: Vec<PoolSpec>,
    pub routes: Vec<RouteConfig>,
    /// Sections owned by other parts, for them to validate.
    pub other: BTreeMap<String, toml::Value>,
    /// Where the config was read from, for reload.
    pub source: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    /// A `tracing` filter (`info`, `stacklab_proxy=debug,info`); `STACKLAB_LOG` overrides.
    pub filter: String,
    /// One line per request at target `access`.
    pub access_log: bool,
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlainHttp {
    /// Answer every plain-HTTP request with a redirect to HTTPS.
    Redirect,
    /// Serve plain HTTP like HTTPS (for a proxy behind a TLS terminator).
    Serve,
    /// No plain-HTTP listener.
    Off,
}

/// Which HTTP/1.1 server the edge runs (`edge.http1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Http1Server {
    /// Our own ([`crate::h1`]): no buffers held between requests.
    Stacklab,
    /// hyper's, as before `crate::h1` (for the bench's before/after).
    Hyper,
}

#[derive(Debug, Clone)]
pub struct EdgeConfig {
    pub addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub plain_http: PlainHttp,
    pub http1: Http1Server,
    pub http3: bool,
    pub alt_svc_max_age: u64,
    /// Serve the web UI from this folder instead of the copy embedded in the binary.
    pub static_dir: Option<PathBuf>,
    /// Runtime worker threads; `None` is one per core.
    pub workers: Option<usize>,
    /// Where `stacklab proxy` listens for its successor (`stacklab proxy --upgrade`), which
    /// takes over the listening sockets with no downtime; default `<data_dir>/upgrade.sock`.
    pub upgrade_socket: PathBuf,
    pub certificates: Vec<CertificateConfig>,
    /// Security headers, parsed once per config load.
    pub headers: SecurityHeaders,
}

/// The security headers the edge puts on responses, as header values made when the config is
/// read (nothing is parsed per request). `None` is "not sent" (the key set to `""`).
#[derive(Debug, Clone)]
pub struct SecurityHeaders {
    /// On every response over HTTPS or HTTP/3 (never over plain HTTP, RFC 6797 §7.2).
    pub strict_transport_security: Option<http::HeaderValue>,
    /// On every response; a member's own value is kept.
    pub referrer_policy: Option<http::HeaderValue>,
    /// On the web UI's files.
    pub content_security_policy: Option<http::HeaderValue>,
    /// The raw `408` an HTTP/1.1 connection gets when its request head is late (written
    /// below hyper, see [`crate::server`]), with the headers above: over plain HTTP, over TLS.
    head_timeout: [bytes::Bytes; 2],
}

/// The body of the `408` for a request head not sent in time.
const HEAD_TIMEOUT_BODY: &str = r#"{"error":{"code":"request_timeout","message":"the request head was not sent in time (limits.header_read_timeout_ms); send it again"}}"#;

impl SecurityHeaders {
    /// `nosniff` is not a policy: every response carries it.
    pub const X_CONTENT_TYPE_OPTIONS: http::HeaderValue = http::HeaderValue::from_static("nosniff");

    fn new(
        strict_transport_security: Option<http::HeaderValue>,
        referrer_policy: Option<http::HeaderValue>,
        content_security_policy: Option<http::HeaderValue>,
    ) -> Self {
        let answer = |secure: bool| {
            let mut head = String::from(
                "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\ncache-control: no-store\r\nx-content-type-options: nosniff\r\n",
            );
            let mut add = |name: &str, v: &Option<http::HeaderValue>| {
                if let Some(v) = v.as_ref().and_then(|v| v.to_str().ok()) {
                    head.push_str(&format!("{name}: {v}\r\n"));
                }
            };
            add("referrer-policy", &referrer_policy);
            if secure {
                add("strict-transport-security", &strict_transport_security);
            }
            bytes::Bytes::from(format!(
                "{head}content-length: {}\r\n\r\n{HEAD_TIMEOUT_BODY}",
                HEAD_TIMEOUT_BODY.len()
            ))
        };
        Self {
            head_timeout: [answer(false), answer(true)],
            strict_transport_security,
            referrer_policy,
            content_security_policy,
        }
    }

    /// The raw `408` for a late request head on a connection over TLS (`secure`) or not.
    pub fn head_timeout_answer(&self, secure: bool) -> bytes::Bytes {
        self.head_timeout[usize::from(secure)].clone()
    }
}

#[derive(Debug, Clone)]
pub struct CertificateConfig {
    /// SNI names this certificate answers; the first certificate is also the default.
    pub server_names: Vec<String>,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub addr: SocketAddr,
    /// Bearer token for `/admin/*`; when empty, one is generated at start and written to
    /// `<data_dir>/admin.token` (mode 0600).
    pub token: Secret,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    pub max_connections_per_client: usize,
    /// QUIC handshakes from addresses not proven yet, at once; past it, QUIC Retry.
    pub quic_unvalidated_handshakes: usize,
    pub max_header_bytes: usize,
    /// Header fields a request may have (all `Cookie` fields counting as one).
    pub max_header_fields: usize,
    pub max_body_bytes: u64,
    pub header_read_timeout: Duration,
    /// Longest pause in a request body while the proxy waits for it; past it, `408`.
    pub body_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub tls_handshake_timeout: Duration,
    pub upstream_connect_timeout: Duration,
    pub upstream_response_timeout: Duration,
    pub upstream_idle_per_member: usize,
    pub retry_buffer_bytes: usize,
    /// Longest wait for what a request needs that is still starting (see [`crate::hold`]);
    /// zero answers at once.
    pub start_hold: Duration,
    /// Requests waiting so at once; past it, answered at once.
    pub max_held_requests: usize,
    pub shutdown_grace: Duration,
    pub capture_per_session: usize,
    pub capture_sessions: usize,
    pub capture_body_bytes: usize,
}

impl Limits {
    /// The request-head size hyper and h3 are told to accept (see [`PROTOCOL_HEADER_FACTOR`]).
    pub fn protocol_header_bytes(&self) -> usize {
        self.max_header_bytes
            .saturating_mul(PROTOCOL_HEADER_FACTOR)
            .max(MIN_PROTOCOL_HEADER_BYTES)
    }
}

#[derive(Debug, Clone)]
pub struct RetryConfig {
    pub budget_ratio: f64,
    pub min_per_second: u32,
    pub max_attempts: u32,
}

#[derive(Debug, Clone)]
pub struct PassiveHealth {
    pub consecutive_failures: u32,
    pub base_ejection: Duration,
    pub max_ejection: Duration,
}

#[derive(Debug, Clone)]
pub struct FeedConfig {
    /// `http://host:port/admin/routes/feed` of control.
    pub url: http::Uri,
    pub token: Secret,
}

/// Session lifetimes: the proxy refreshes the cookie and reports use; control expires and caps.
#[derive(Debug, Clone)]
pub struct SessionsConfig {
    /// A session unused this long ends; a data request moves it (the cookie's `Max-Age`).
    pub idle_timeout: Duration,
    /// A session ends this long after it was created, used or not.
    pub hard_lifetime: Duration,
    /// Live sessions at once; past it `503 out_of_capacity`.
    pub max_live: usize,
    /// Sessions one client address may create per minute; past it `429`.
    pub max_new_per_client_per_minute: u32,
    /// How often a proxy reports which sessions were used to control.
    pub report_interval: Duration,
}

/// Where a matched request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteTarget {
    /// A named pool.
    Pool(String),
    /// The pool named by the session's route.
    SessionPool,
    /// The web UI's static files.
    Static,
}

#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// Exact host, `*.suffix`, or `None` for any.
    pub host: Option<String>,
    /// Path prefix, matched on segment boundaries: `/api` matches `/api` and `/api/x`, not `/apix`.
    pub path: String,
    /// Methods this route takes; empty means all.
    pub methods: Vec<http::Method>,
    pub target: RouteTarget,
    /// Answer `401 session_missing` / `410 session_expired` unless the cookie names a live session.
    pub require_session: bool,
    /// A request here counts as use of the session (moves its expiry).
    pub touches_session: bool,
    /// Record requests here in the session's inspector ring.
    pub captures: bool,
}

/// One problem in a config, with the key it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found.
#[derive(Debug, Clone, Default)]
pub struct ConfigReport {
    pub errors: Vec<ConfigError>,
}

impl ConfigReport {
    pub fn one(path: String, message: String) -> Self {
        Self {
            errors: vec![ConfigError { path, message }],
        }
    }
}

impl fmt::Display for ConfigReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "the configuration has {} error(s):", self.errors.len())?;
        for e in &self.errors {
            writeln!(f, "  - {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigReport {}

/// The process environment, or a map in tests.
pub trait Env {
    fn var(&self, key: &str) -> Option<String>;
}

/// Reads `std::env`.
#[derive(Debug, Clone, Copy)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, key: &str) -> Option<String> {
        std::env::var(key).ok().filter(|v| !v.is_empty())
    }
}

impl Env for BTreeMap<String, String> {
    fn var(&self, key: &str) -> Option<String> {
        self.get(key).cloned()
    }
}

impl Config {
    /// Reads, overrides and validates the file at `path` (or the embedded
    /// `config/stacklab.toml` when `None`).
    pub fn load(path: Option<&Path>, env: &dyn Env) -> Result<Config, ConfigReport> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|e| {
                ConfigReport::one(
                    p.display().to_string(),
                    format!("cannot read the file: {e}"),
                )
            })?,
            None => crate::DEFAULT_CONFIG.to_owned(),
        };
        let mut cfg = Self::from_toml(&text, env)?;
        cfg.source = path.map(Path::to_path_buf);
        Ok(cfg)
    }

    /// Parses TOML text, applies the environment, validates: every problem of the proxy's
    /// sections at once (the sections of other parts are theirs to check).
    pub fn from_toml(text: &str, env: &dyn Env) -> Result<Config, ConfigReport> {
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            ConfigReport::one("(file)".into(), format!("not valid TOML: {}", e.message()))
        })?;
        let applied = config::apply_env(&mut table, &ENV_KEYS, &|k| env.var(k));
        // The same reading as every other part's section (`stacklab_types::config`).
        let mut problems = Vec::new();
        let raw: Option<RawConfig> = config::read("", toml::Value::Table(table), &mut problems);
        if let Some(raw) = &raw {
            for key in raw.other.keys() {
                if !OTHER_PARTS.contains(&key.as_str()) {
                    problems.push((key.clone(), config::UNKNOWN_KEY.into()));
                }
            }
        }
        let mut errors: Vec<ConfigError> = problems
            .into_iter()
            .map(|(path, message)| ConfigError {
                path: if path.is_empty() {
                    "(file)".into()
                } else {
                    path
                },
                message,
            })
            .collect();
        let validated = raw.map(RawConfig::validate);
        if let Some(Err(report)) = &validated {
            errors.extend(report.errors.iter().cloned());
        }
        match validated {
            Some(Ok(cfg)) if errors.is_empty() => Ok(cfg),
            _ => {
                for e in &mut errors {
                    e.path = config::blamed(&e.path, &applied);
                }
                Err(ConfigReport { errors })
            }
        }
    }
}

/// Environment variables win over the file (read as the keys they stand for).
const ENV_KEYS: [config::EnvKey; 6] = [
    config::EnvKey::text("STACKLAB_EDGE_ADDR", "edge.addr"),
    config::EnvKey::text("STACKLAB_HTTP_ADDR", "edge.http_addr"),
    config::EnvKey::text("STACKLAB_ADMIN_ADDR", "admin.addr"),
    config::EnvKey::text("STACKLAB_ADMIN_TOKEN", "admin.token"),
    config::EnvKey::text("STACKLAB_DATA_DIR", "data_dir"),
    config::EnvKey::text("STACKLAB_LOG", "log.filter"),
];

/// Collects errors while validating.
struct Check {
    errors: Vec<ConfigError>,
}

impl Check {
    fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }

    fn addr(&mut self, path: &str, value: Option<&str>, default: &str) -> SocketAddr {
        let value = value.unwrap_or(default);
        match value.parse() {
            Ok(a) => a,
            Err(_) => {
                self.err(path, format!("`{value}` is not an address; write `host:port`, e.g. `127.0.0.1:9000` or `[::]:8443`"));
                default.parse().expect("default addresses parse")
            }
        }
    }

    fn positive<T: PartialOrd + Default + Copy + fmt::Display>(
        &mut self,
        path: &str,
        value: Option<T>,
        default: T,
    ) -> T {
        let v = value.unwrap_or(default);
        if v <= T::default() {
            self.err(path, format!("must be greater than 0 (got {v})"));
            return default;
        }
        v
    }

    fn millis(&mut self, path: &str, value: Option<u64>, default: u64) -> Duration {
        Duration::from_millis(self.positive(path, value, default))
    }
}

impl RawConfig {
    /// Turns the raw file into the runtime config, reporting every problem at once.
    pub fn validate(self) -> Result<Config, ConfigReport> {
        let mut c = Check { errors: Vec::new() };

        let log = LogConfig {
            filter: self.log.filter.unwrap_or_else(|| "info".to_owned()),
            access_log: self.log.access_log.unwrap_or(true),
            json: self.log.json.unwrap_or(false),
        };

        let plain_http = match self.edge.plain_http.as_deref() {
            None | Some("redirect") => PlainHttp::Redirect,
            Some("serve") => PlainHttp::Serve,
            Some("off") => PlainHttp::Off,
            Some(other) => {
                c.err(
                    "edge.plain_http",
                    format!("`{other}` is not one of `redirect`, `serve`, `off`"),
                );
                PlainHttp::Redirect
            }
        };
        let http1 = match self.edge.http1.as_deref() {
            None | Some("stacklab") => Http1Server::Stacklab,
            Some("hyper") => Http1Server::Hyper,
            Some(other) => {
                c.err(
                    "edge.http1",
                    format!("`{other}` is not one of `stacklab`, `hyper`"),
                );
                Http1Server::Stacklab
            }
        };
        let mut certificates = Vec::new();
        for (i, cert) in self.edge.certificates.into_iter().enumerate() {
            let path = format!("edge.certificates[{i}]");
            match (cert.cert, cert.key) {
                (Some(cert_path), Some(key_path)) => {
                    for (k, p) in [("cert", &cert_path), ("key", &key_path)] {
                        if !p.is_file() {
                            c.err(
                                format!("{path}.{k}"),
                                format!("`{}` is not a readable file", p.display()),
                            );
                        }
                    }
                    if cert.server_names.is_empty() && i > 0 {
                        c.err(format!("{path}.server_names"), "name the SNI host names this certificate serves (only the first certificate may omit them)");
                    }
                    certificates.push(CertificateConfig {
                        server_names: cert.server_names,
                        cert: cert_path,
                        key: key_path,
                    });
                }
                _ => c.err(
                    &path,
                    "a certificate needs both `cert` and `key` (PEM files)",
                ),
            }
        }
        let header = |c: &mut Check, key: &str, value: Option<String>, default: &str| {
            let value = value.unwrap_or_else(|| default.to_owned());
            let value = value.trim();
            if value.is_empty() {
                return None;
            }
            match http::HeaderValue::from_str(value) {
                Ok(v) => Some(v),
                Err(_) => {
                    c.err(
                        format!("edge.{key}"),
                        "must be printable ASCII on one line (a header value)",
                    );
                    None
                }
            }
        };
        let hsts = header(
            &mut c,
            "strict_transport_security",
            self.edge.strict_transport_security,
            DEFAULT_STRICT_TRANSPORT_SECURITY,
        );
        if let Some(v) = &hsts {
            let ok = v.to_str().ok().and_then(|v| {
                let first = v.split(';').next()?.trim();
                first.strip_prefix("max-age=")?.parse::<u64>().ok()
            });
            if ok.is_none() {
                c.err(
                    "edge.strict_transport_security",
                    "must start with `max-age=SECONDS`, e.g. \"max-age=31536000\" (or be \"\" to send none)",
                );
            }
        }
        let referrer = header(
            &mut c,
            "referrer_policy",
            self.edge.referrer_policy,
            DEFAULT_REFERRER_POLICY,
        );
        if let Some(v) = &referrer {
            let all_known = v.to_str().is_ok_and(|v| {
                v.split(',')
                    .all(|t| REFERRER_POLICIES.contains(&t.trim().to_ascii_lowercase().as_str()))
            });
            if !all_known {
                c.err(
                    "edge.referrer_policy",
                    format!(
                        "must be one of {} (or \"\" to send none)",
                        REFERRER_POLICIES.join(", ")
                    ),
                );
            }
        }
        let csp = header(
            &mut c,
            "content_security_policy",
            self.edge.content_security_policy,
            DEFAULT_CONTENT_SECURITY_POLICY,
        );
        let edge = EdgeConfig {
            addr: c.addr("edge.addr", self.edge.addr.as_deref(), DEFAULT_EDGE_ADDR),
            http_addr: c.addr(
                "edge.http_addr",
                self.edge.http_addr.as_deref(),
                DEFAULT_HTTP_ADDR,
            ),
            plain_http,
            http1,
            http3: self.edge.http3.unwrap_or(true),
            alt_svc_max_age: self.edge.alt_svc_max_age.unwrap_or(DEFAULT_ALT_SVC_MAX_AGE),
            static_dir: self.edge.static_dir.filter(|p| !p.as_os_str().is_empty()),
            workers: match self.edge.workers {
                None | Some(0) => None,
                Some(n) if n > 1024 => {
                    c.err("edge.workers", "at most 1024 worker threads");
                    None
                }
                Some(n) => Some(n),
            },
            upgrade_socket: {
                let dir = self
                    .data_dir
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
                match self
                    .edge
                    .upgrade_socket
                    .filter(|p| !p.as_os_str().is_empty())
                {
                    Some(p) => p,
                    None => dir.join(DEFAULT_UPGRADE_SOCKET),
                }
            },
            certificates,
            headers: SecurityHeaders::new(hsts, referrer, csp),
        };
        if edge.upgrade_socket.as_os_str().len() > MAX_UNIX_SOCKET_PATH {
            c.err(
                "edge.upgrade_socket",
                format!(
                    "`{}` is longer than a Unix socket path can be ({MAX_UNIX_SOCKET_PATH} bytes); set a shorter one",
                    edge.upgrade_socket.display()
                ),
            );
        }
        if let Some(dir) = &edge.static_dir {
            if !dir.is_dir() {
                c.err(
                    "edge.static_dir",
                    format!("`{}` is not a folder", dir.display()),
                );
            }
        }

        let admin = AdminConfig {
            addr: c.addr("admin.addr", self.admin.addr.as_deref(), DEFAULT_ADMIN_ADDR),
            token: self.admin.token.unwrap_or_default(),
        };
        if !admin.token.is_empty() && admin.token.expose().len() < 16 {
            c.err(
                "admin.token",
                "use at least 16 characters (or leave it empty to have one generated)",
            );
        }

        let l = self.limits;
        let limits = Limits {
            max_connections: c.positive(
                "limits.max_connections",
                l.max_connections,
                DEFAULT_MAX_CONNECTIONS,
            ),
            max_connections_per_client: c.positive(
                "limits.max_connections_per_client",
                l.max_connections_per_client,
                DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
            ),
            quic_unvalidated_handshakes: c.positive(
                "limits.quic_unvalidated_handshakes",
                l.quic_unvalidated_handshakes,
                DEFAULT_QUIC_UNVALIDATED_HANDSHAKES,
            ),
            max_header_bytes: c.positive(
                "limits.max_header_bytes",
                l.max_header_bytes,
                DEFAULT_MAX_HEADER_BYTES,
            ),
            max_header_fields: c.positive(
                "limits.max_header_fields",
                l.max_header_fields,
                DEFAULT_MAX_HEADER_FIELDS,
            ),
            max_body_bytes: c.positive(
                "limits.max_body_bytes",
                l.max_body_bytes,
                DEFAULT_MAX_BODY_BYTES,
            ),
            header_read_timeout: c.millis(
                "limits.header_read_timeout_ms",
                l.header_read_timeout_ms,
                DEFAULT_HEADER_READ_TIMEOUT_MS,
            ),
            body_read_timeout: c.millis(
                "limits.body_read_timeout_ms",
                l.body_read_timeout_ms,
                DEFAULT_BODY_READ_TIMEOUT_MS,
            ),
            idle_timeout: c.millis(
                "limits.idle_timeout_ms",
                l.idle_timeout_ms,
                DEFAULT_IDLE_TIMEOUT_MS,
            ),
            tls_handshake_timeout: c.millis(
                "limits.tls_handshake_timeout_ms",
                l.tls_handshake_timeout_ms,
                DEFAULT_TLS_HANDSHAKE_TIMEOUT_MS,
            ),
            upstream_connect_timeout: c.millis(
                "limits.upstream_connect_timeout_ms",
                l.upstream_connect_timeout_ms,
                DEFAULT_UPSTREAM_CONNECT_TIMEOUT_MS,
            ),
            upstream_response_timeout: c.millis(
                "limits.upstream_response_timeout_ms",
                l.upstream_response_timeout_ms,
                DEFAULT_UPSTREAM_RESPONSE_TIMEOUT_MS,
            ),
            upstream_idle_per_member: l
                .upstream_idle_per_member
                .unwrap_or(DEFAULT_UPSTREAM_IDLE_PER_MEMBER),
            retry_buffer_bytes: l.retry_buffer_bytes.unwrap_or(DEFAULT_RETRY_BUFFER_BYTES),
            start_hold: Duration::from_millis(l.start_hold_ms.unwrap_or(DEFAULT_START_HOLD_MS)),
            max_held_requests: l.max_held_requests.unwrap_or(DEFAULT_MAX_HELD_REQUESTS),
            shutdown_grace: c.millis(
                "limits.shutdown_grace_ms",
                l.shutdown_grace_ms,
                DEFAULT_SHUTDOWN_GRACE_MS,
            ),
            capture_per_session: l.capture_per_session.unwrap_or(DEFAULT_CAPTURE_PER_SESSION),
            capture_sessions: l.capture_sessions.unwrap_or(DEFAULT_CAPTURE_SESSIONS),
            capture_body_bytes: l.capture_body_bytes.unwrap_or(DEFAULT_CAPTURE_BODY_BYTES),
        };
        if limits.max_connections_per_client > limits.max_connections {
            c.err(
                "limits.max_connections_per_client",
                "cannot be more than limits.max_connections",
            );
        }
        if limits.max_header_bytes < 1024 {
            c.err(
                "limits.max_header_bytes",
                "must be at least 1024: browsers send several hundred bytes of headers",
            );
        }

        let retry = RetryConfig {
            budget_ratio: self
                .retry
                .budget_ratio
                .unwrap_or(DEFAULT_RETRY_BUDGET_RATIO),
            min_per_second: self
                .retry
                .min_per_second
                .unwrap_or(DEFAULT_RETRY_MIN_PER_SECOND),
            max_attempts: c.positive(
                "retry.max_attempts",
                self.retry.max_attempts,
                DEFAULT_RETRY_MAX_ATTEMPTS,
            ),
        };
        if !(0.0..=1.0).contains(&retry.budget_ratio) {
            c.err(
                "retry.budget_ratio",
                "must be between 0.0 and 1.0 (the share of requests that may be retried)",
            );
        }

        let passive_health = PassiveHealth {
            consecutive_failures: c.positive(
                "passive_health.consecutive_failures",
                self.passive_health.consecutive_failures,
                DEFAULT_EJECT_CONSECUTIVE_FAILURES,
            ),
            base_ejection: c.millis(
                "passive_health.base_ejection_ms",
                self.passive_health.base_ejection_ms,
                DEFAULT_EJECT_BASE_MS,
            ),
            max_ejection: c.millis(
                "passive_health.max_ejection_ms",
                self.passive_health.max_ejection_ms,
                DEFAULT_EJECT_MAX_MS,
            ),
        };
        if passive_health.max_ejection < passive_health.base_ejection {
            c.err(
                "passive_health.max_ejection_ms",
                "cannot be less than passive_health.base_ejection_ms",
            );
        }

        let feed = match self.feed {
            None => None,
            Some(f) => match f.url.as_deref().map(str::parse::<http::Uri>) {
                Some(Ok(url)) if url.scheme_str() == Some("http") && url.authority().is_some() => {
                    Some(FeedConfig {
                        url,
                        token: f.token.unwrap_or_default(),
                    })
                }
                Some(_) => {
                    c.err(
                        "feed.url",
                        "must be an `http://host:port/admin/routes/feed` URL",
                    );
                    None
                }
                None => {
                    c.err("feed.url", "a [feed] section needs `url`");
                    None
                }
            },
        };

        let sessions = SessionsConfig {
            idle_timeout: c.millis(
                "sessions.idle_timeout_ms",
                self.sessions.idle_timeout_ms,
                3_600_000,
            ),
            hard_lifetime: c.millis(
                "sessions.hard_lifetime_ms",
                self.sessions.hard_lifetime_ms,
                8 * 3_600_000,
            ),
            max_live: c.positive("sessions.max_live", self.sessions.max_live, 1000),
            max_new_per_client_per_minute: c.positive(
                "sessions.max_new_per_client_per_minute",
                self.sessions.max_new_per_client_per_minute,
                20,
            ),
            report_interval: c.millis(
                "sessions.report_interval_ms",
                self.sessions.report_interval_ms,
                5_000,
            ),
        };
        if sessions.hard_lifetime < sessions.idle_timeout {
            c.err(
                "sessions.hard_lifetime_ms",
                "cannot be less than sessions.idle_timeout_ms",
            );
        }

        let mut pools = Vec::new();
        let mut pool_names = HashSet::new();
        for (i, value) in self.pools.into_iter().enumerate() {
            let path = format!("pools[{i}]");
            let mut problems = Vec::new();
            let pool: Option<PoolSpec> = config::read(&path, value, &mut problems);
            for (key, message) in problems {
                c.err(key, message);
            }
            let Some(pool) = pool else { continue };
            for problem in check_pool(&pool) {
                c.err(format!("{path}.{}", problem.path), problem.message);
            }
            if !pool_names.insert(pool.name.clone()) {
                c.err(
                    format!("{path}.name"),
                    format!("pool `{}` is defined twice", pool.name),
                );
            }
            pools.push(pool);
        }

        let mut routes = Vec::new();
        for (i, r) in self.routes.into_iter().enumerate() {
            let path = format!("routes[{i}]");
            let targets = usize::from(r.pool.is_some())
                + usize::from(r.session_pool)
                + usize::from(r.static_files);
            let target = match (r.pool, r.session_pool, r.static_files) {
                _ if targets != 1 => {
                    c.err(&path, "give exactly one target: `pool = \"name\"`, `session_pool = true` or `static_files = true`");
                    continue;
                }
                (Some(pool), _, _) => {
                    if !pool_names.contains(&pool) {
                        c.err(
                            format!("{path}.pool"),
                            format!("no pool named `{pool}` in [[pools]]"),
                        );
                    }
                    RouteTarget::Pool(pool)
                }
                (None, true, _) => RouteTarget::SessionPool,
                _ => RouteTarget::Static,
            };
            let route_path = r.path.unwrap_or_else(|| "/".to_owned());
            if !route_path.starts_with('/') {
                c.err(format!("{path}.path"), "must start with `/`");
            }
            let mut methods = Vec::new();
            for (j, m) in r.methods.iter().enumerate() {
                match http::Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
                    Ok(m) => methods.push(m),
                    Err(_) => c.err(
                        format!("{path}.methods[{j}]"),
                        format!("`{m}` is not an HTTP method"),
                    ),
                }
            }
            let require_session = r
                .require_session
                .unwrap_or(target == RouteTarget::SessionPool);
            if target == RouteTarget::SessionPool && !require_session {
                c.err(
                    format!("{path}.require_session"),
                    "a session_pool route needs a session; remove `require_session = false`",
                );
            }
            routes.push(RouteConfig {
                host: r.host.filter(|h| h != "*").map(|h| h.to_ascii_lowercase()),
                path: route_path,
                methods,
                touches_session: r
                    .touches_session
                    .unwrap_or(target == RouteTarget::SessionPool),
                target,
                require_session,
                captures: r.captures,
            });
        }

        if !c.errors.is_empty() {
            return Err(ConfigReport { errors: c.errors });
        }
        Ok(Config {
            data_dir: self
                .data_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            log,
            edge,
            admin,
            limits,
            retry,
            passive_health,
            feed,
            sessions,
            pools,
            routes,
            other: self.other,
            source: None,
        })
    }
}

/// Makes sure the admin API has a token: the configured one, else the one kept in
/// `<data_dir>/admin.token`, else a new random one written there (mode 0600).
pub fn ensure_admin_token(cfg: &mut Config) -> std::io::Result<PathBuf> {
    let path = cfg.data_dir.join("admin.token");
    if !cfg.admin.token.is_empty() {
        return Ok(path);
    }
    create_private_dir(&cfg.data_dir)?;
    cfg.admin.token = load_or_create_token(&path)?;
    Ok(path)
}

/// Makes `dir` (and its parents) and leaves it readable by its owner only (0700): the data
/// folder holds tokens, the master key, the registry and sessions' databases.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Makes `path` (empty) unless it exists, and leaves it readable by its owner only (0600).
/// Made before SQLite opens it, its `-wal` and `-shm` files get the same mode.
pub fn create_private_file(path: &Path) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// The token kept in `path` (at least 16 characters), or a new random one of 40 written there
/// with mode 0600: the admin token, and control's runtime credential beside it.
pub fn load_or_create_token(path: &Path) -> std::io::Result<Secret> {
    if let Ok(existing) = std::fs::read_to_string(path) {
        let existing = existing.trim();
        if existing.len() >= 16 {
            return Ok(Secret::new(existing));
        }
    }
    use rand::Rng;
    let token: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(40)
        .map(char::from)
        .collect();
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    use std::io::Write;
    opts.open(path)?.write_all(token.as_bytes())?;
    Ok(Secret::new(token))
}

/// Problems in a pool spec, with paths relative to the pool. Used for config and admin input.
pub fn check_pool(pool: &PoolSpec) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let mut err = |path: String, message: String| errors.push(ConfigError { path, message });
    if !valid_name(&pool.name) {
        err("name".into(), "use 1-64 letters, digits, `-` or `_`".into());
    }
    let mut ids = HashSet::new();
    for (j, m) in pool.members.iter().enumerate() {
        if let Err(e) = check_member(&m.id, &m.addr, m.weight) {
            err(format!("members[{j}].{}", e.path), e.message);
        }
        if !ids.insert(&m.id) {
            err(
                format!("members[{j}].id"),
                format!("member `{}` appears twice", m.id),
            );
        }
    }
    if let Some(h) = &pool.health {
        if let Err(e) = check_health(h) {
            err(format!("health.{}", e.path), e.message);
        }
    }
    errors
}

/// A member's id, address and weight.
pub fn check_member(id: &str, addr: &str, weight: u32) -> Result<(), ConfigError> {
    if !valid_name(id) {
        return Err(ConfigError {
            path: "id".into(),
            message: "use 1-64 letters, digits, `-` or `_`".into(),
        });
    }
    if addr.parse::<SocketAddr>().is_err()
        && http::uri::Authority::try_from(addr)
            .map(|a| a.port_u16().is_none())
            .unwrap_or(true)
    {
        return Err(ConfigError {
            path: "addr".into(),
            message: format!("`{addr}` is not `host:port`"),
        });
    }
    if weight == 0 || weight > 1000 {
        return Err(ConfigError {
            path: "weight".into(),
            message: "must be between 1 and 1000".into(),
        });
    }
    Ok(())
}

fn check_health(h: &HealthSpec) -> Result<(), ConfigError> {
    let e = |path: &str, message: &str| {
        Err(ConfigError {
            path: path.into(),
            message: message.into(),
        })
    };
    if !h.path.starts_with('/') {
        return e("path", "must start with `/`");
    }
    if h.interval_ms == 0 || h.timeout_ms == 0 {
        return e(
            "interval_ms",
            "interval_ms and timeout_ms must be greater than 0",
        );
    }
    if h.rise == 0 || h.fall == 0 {
        return e("rise", "rise and fall must be at least 1");
    }
    Ok(())
}

/// Pool, member and session names: short, printable, safe in URLs and metric labels.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_then_file_then_env() {
        let text = "[edge]\naddr = \"127.0.0.1:1111\"\n[admin]\naddr = \"127.0.0.1:2222\"\n";
        let cfg =
            Config::from_toml(text, &env(&[("STACKLAB_ADMIN_ADDR", "127.0.0.1:3333")])).unwrap();
        assert_eq!(cfg.edge.addr, "127.0.0.1:1111".parse().unwrap());
        assert_eq!(cfg.admin.addr, "127.0.0.1:3333".parse().unwrap());
        assert_eq!(cfg.edge.http_addr, DEFAULT_HTTP_ADDR.parse().unwrap());
        assert_eq!(cfg.limits.max_header_bytes, DEFAULT_MAX_HEADER_BYTES);
    }

    #[test]
    fn every_error_is_reported_with_its_path() {
        let text = r#"
            [edge]
            addr = "nope"
            plain_http = "sometimes"
            [limits]
            max_connections = 0
            [[pools]]
            name = "bad name"
            members = [{ id = "a", addr = "x" }]
            [[routes]]
            path = "/api"
            pool = "missing"
        "#;
        let report = Config::from_toml(text, &env(&[])).unwrap_err();
        let paths: Vec<_> = report.errors.iter().map(|e| e.path.as_str()).collect();
        for want in [
            "edge.addr",
            "edge.plain_http",
            "limits.max_connections",
            "pools[0].name",
            "pools[0].members[0].addr",
            "routes[0].pool",
        ] {
            assert!(paths.contains(&want), "missing {want} in {paths:?}");
        }
    }

    #[test]
    fn workers_zero_means_one_per_core() {
        let cfg = Config::from_toml("[edge]\nworkers = 0\n", &env(&[])).unwrap();
        assert_eq!(cfg.edge.workers, None);
        let cfg = Config::from_toml("[edge]\nworkers = 3\n", &env(&[])).unwrap();
        assert_eq!(cfg.edge.workers, Some(3));
        let report = Config::from_toml("[edge]\nworkers = 5000\n", &env(&[])).unwrap_err();
        assert_eq!(report.errors[0].path, "edge.workers");
    }

    #[test]
    fn security_headers_are_checked_and_can_be_turned_off() {
        let cfg = Config::from_toml("", &env(&[])).unwrap();
        let h = &cfg.edge.headers;
        assert_eq!(
            h.strict_transport_security.as_ref().unwrap(),
            DEFAULT_STRICT_TRANSPORT_SECURITY
        );
        assert_eq!(h.referrer_policy.as_ref().unwrap(), DEFAULT_REFERRER_POLICY);
        let csp = h
            .content_security_policy
            .as_ref()
            .unwrap()
            .to_str()
            .unwrap();
        assert!(csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe-inline"));

        let text = "[edge]\nstrict_transport_security = \"forever\"\nreferrer_policy = \"sometimes\"\ncontent_security_policy = \"a\\nb\"\n";
        let report = Config::from_toml(text, &env(&[])).unwrap_err();
        let paths: Vec<_> = report.errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "edge.strict_transport_security",
                "edge.referrer_policy",
                "edge.content_security_policy"
            ]
        );

        let text = "[edge]\nstrict_transport_security = \"\"\nreferrer_policy = \"no-referrer, same-origin\"\n";
        let cfg = Config::from_toml(text, &env(&[])).unwrap();
        assert!(cfg.edge.headers.strict_transport_security.is_none());
        assert_eq!(
            cfg.edge.headers.referrer_policy.as_ref().unwrap(),
            "no-referrer, same-origin"
        );
    }

    /// Issue 19: one policy for every section. An unknown key of the proxy's was a warning
    /// while control's, docker's and the backend's refused; now every one is an error with
    /// its whole path, reported with the other problems (other parts' sections are theirs).
    #[test]
    fn unknown_keys_are_errors_with_their_path() {
        let report = Config::from_toml(
            "[edge]\nadr = \"x\"\n[[pools]]\nname = \"p\"\nwieght = 2\n[[routes]]\npath = \"/\"\nsession_pool = true\npriority = 1\n[limits]\nmax_connections = 0\n[control]\nanything = 1\n[contrl]\n",
            &env(&[]),
        )
        .unwrap_err();
        let paths: Vec<_> = report.errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths[..4],
            [
                "edge.adr",
                "routes[0].priority",
                "contrl",
                "limits.max_connections"
            ],
            "{report}"
        );
        assert!(
            report.errors[0].message.starts_with("unknown key"),
            "{report}"
        );
        assert!(
            report
                .errors
                .iter()
                .any(|e| e.path.starts_with("pools[0]") && e.message.contains("wieght")),
            "{report}"
        );
        assert_eq!(report.errors.len(), 5, "{report}");
    }

    #[test]
    fn a_bad_variable_is_named_with_the_key_it_sets() {
        let report =
            Config::from_toml("", &env(&[("STACKLAB_ADMIN_ADDR", "nowhere")])).unwrap_err();
        assert_eq!(report.errors.len(), 1, "{report}");
        assert_eq!(
            report.errors[0].path, "STACKLAB_ADMIN_ADDR (admin.addr)",
            "{report}"
        );
    }

    /// Issue 19: a value of the wrong type is named by its key, not by `(file)`.
    #[test]
    fn a_value_of_the_wrong_type_names_its_key() {
        let report =
            Config::from_toml("[limits]\nmax_body_bytes = \"big\"\n", &env(&[])).unwrap_err();
        assert_eq!(report.errors.len(), 1, "{report}");
        assert_eq!(report.errors[0].path, "limits.max_body_bytes", "{report}");
        assert!(
            report.errors[0].message.contains("invalid type"),
            "{report}"
        );
    }

    #[test]
    fn admin_token_is_never_debug_printed() {
        let cfg = Config::from_toml(
            "",
            &env(&[("STACKLAB_ADMIN_TOKEN", "s3cret-s3cret-s3cret")]),
        )
        .unwrap();
        assert!(!format!("{cfg:?}").contains("s3cret"));
        assert!(cfg.admin.token.matches(b"s3cret-s3cret-s3cret"));
    }
}
