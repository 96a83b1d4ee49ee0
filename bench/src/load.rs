//! The load generator: closed-loop or open-loop, over HTTP/1.1, HTTP/2 or HTTP/3.
//!
//! **Closed loop**: `connections × streams` workers each send a request, wait for the answer
//! and send the next; throughput is what the server sustains at that concurrency.
//!
//! **Open loop**: requests are due on a fixed schedule (`rate` per second over all workers,
//! staggered evenly), whether or not earlier ones have been answered. A request's latency is
//! measured from when it was *due*, not from when a worker got round to sending it, so a
//! server that stalls is charged for the requests that queued behind the stall (the
//! correction for coordinated omission that wrk2 made known). Workers never skip a due
//! request; one that falls behind sends at once until it has caught up.
//!
//! Each worker keeps its own HDR histogram (microseconds, 3 significant figures, up to 60 s)
//! and counters; they are merged once at the end, so nothing is shared on the request path.
//! Only requests *due* after the warm-up and before the end count.

pub mod conn;
pub mod h1;

use conn::{Conn, Dialer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::RwLock;
use tokio::time::Instant;

/// Longest a single request may take before it counts as an error.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Highest latency the histograms hold (larger values are clamped), in microseconds.
const MAX_LATENCY_US: u64 = 60_000_000;

/// Protocol spoken to the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    H1,
    H2,
    H3,
}

impl Protocol {
    pub fn label(self) -> &'static str {
        match self {
            Protocol::H1 => "HTTP/1.1",
            Protocol::H2 => "HTTP/2",
            Protocol::H3 => "HTTP/3",
        }
    }
}

/// Errors of the generator.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{what}: {message}")]
    Failed { what: &'static str, message: String },
    #[error("the request took longer than {0:?}")]
    Timeout(Duration),
    #[error("no connection could be opened to {addr}: {first}")]
    NoConnection { addr: SocketAddr, first: String },
    #[error("bad target: {0}")]
    Target(String),
}

/// What to load and how.
#[derive(Clone)]
pub struct LoadSpec {
    pub dialer: Dialer,
    /// Connections kept open (closed loop and open loop alike).
    pub connections: usize,
    /// Concurrent requests per connection (HTTP/2 and HTTP/3; HTTP/1.1 is always 1).
    pub streams: usize,
    /// Measured time, after the warm-up.
    pub duration: Duration,
    pub warmup: Duration,
    /// Requests per second over all workers; `None`: closed loop.
    pub rate: Option<f64>,
    /// Open a new connection for every request (measures handshakes).
    pub new_connection_per_request: bool,
    /// Called when the measured window opens and when it closes (to read the CPU time of
    /// the processes under test over exactly that window).
    pub sampler: Option<Sampler>,
}

/// See [`LoadSpec::sampler`].
pub type Sampler = Arc<dyn Fn() -> Vec<crate::procstat::Sample> + Send + Sync>;

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Latency {
    pub fn from_histogram(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        Latency {
            mean: h.mean(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// The result of one run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadReport {
    pub protocol: Protocol,
    pub connections: usize,
    pub streams: usize,
    /// Offered rate (open loop); `None` for closed loop.
    pub rate: Option<f64>,
    pub new_connection_per_request: bool,
    /// Measured seconds (the warm-up excluded).
    pub seconds: f64,
    /// Requests answered with 2xx/3xx.
    pub ok: u64,
    /// Answers with another status.
    pub bad_status: u64,
    /// Transport errors and timeouts.
    pub errors: u64,
    pub first_error: Option<String>,
    pub body_bytes: u64,
    /// `ok` per second.
    pub rps: f64,
    /// Body bytes per second, in MiB.
    pub mib_per_s: f64,
    pub latency_us: Latency,
    #[serde(skip)]
    pub histogram: Option<Histogram<u64>>,
    /// The sampler's readings at the start and the end of the measured window.
    #[serde(skip)]
    pub window: Option<(Vec<crate::procstat::Sample>, Vec<crate::procstat::Sample>)>,
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

struct WorkerStats {
    hist: Histogram<u64>,
    ok: u64,
    bad_status: u64,
    errors: u64,
    first_error: Option<String>,
    bytes: u64,
}

impl WorkerStats {
    fn new() -> Self {
        WorkerStats {
            hist: new_histogram(),
            ok: 0,
            bad_status: 0,
            errors: 0,
            first_error: None,
            bytes: 0,
        }
    }
    fn error(&mut self, e: &LoadError) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(e.to_string());
        }
    }
}

/// A connection shared by the stream workers of one HTTP/2 or HTTP/3 connection, with a
/// generation so that only the first worker to see it broken reconnects.
struct Shared {
    conn: RwLock<(u64, Option<Conn>)>,
}

impl Shared {
    async fn get(&self, dialer: &Dialer) -> Result<(u64, Conn), LoadError> {
        {
            let g = self.conn.read().await;
            if let (generation, Some(c)) = &*g {
                if let Some(c) = c.share().filter(|c| !c.is_closed()) {
                    return Ok((*generation, c));
                }
            }
        }
        let mut g = self.conn.write().await;
        if let Some(c) =
            g.1.as_ref()
                .and_then(Conn::share)
                .filter(|c| !c.is_closed())
        {
            return Ok((g.0, c));
        }
        let c = dialer.connect().await?;
        let handle = c
            .share()
            .ok_or_else(|| LoadError::Target("only HTTP/2 and HTTP/3 share a connection".into()))?;
        g.0 += 1;
        g.1 = Some(c);
        Ok((g.0, handle))
    }

    async fn broken(&self, generation: u64) {
        let mut g = self.conn.write().await;
        if g.0 == generation {
            g.1 = None;
        }
    }
}

#[derive(Clone, Copy)]
struct Schedule {
    first: Instant,
    interval: Option<Duration>,
    measure_from: Instant,
    end: Instant,
}

impl Schedule {
    /// When request `k` is due, or `None` past the end; closed loop: now.
    async fn next(&self, k: &mut u64) -> Option<Instant> {
        let due = match self.interval {
            Some(iv) => {
                let t = self.first + Duration::from_nanos(iv.as_nanos() as u64 * *k);
                *k += 1;
                tokio::time::sleep_until(t).await;
                t
            }
            None => Instant::now(),
        };
        (due < self.end).then_some(due)
    }
}

async fn one(conn: &mut Conn, dialer: &Dialer) -> Result<conn::Answer, LoadError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, conn.request(dialer)).await {
        Ok(r) => r,
        Err(_) => Err(LoadError::Timeout(REQUEST_TIMEOUT)),
    }
}

fn record(
    stats: &mut WorkerStats,
    s: &Schedule,
    due: Instant,
    r: &Result<conn::Answer, LoadError>,
) {
    if due < s.measure_from {
        return;
    }
    match r {
        Ok(a) => {
            let us = Instant::now().duration_since(due).as_micros() as u64;
            stats.hist.saturating_record(us.clamp(1, MAX_LATENCY_US));
            stats.bytes += a.bytes;
            if a.status < 400 {
                stats.ok += 1;
            } else {
                stats.bad_status += 1;
                if stats.first_error.is_none() {
                    stats.first_error = Some(format!("status {}", a.status));
                }
            }
        }
        Err(e) => stats.error(e),
    }
}

/// A worker on its own connection: HTTP/1.1, or any protocol with a connection per request.
async fn solo_worker(
    dialer: Arc<Dialer>,
    s: Schedule,
    new_each: bool,
    mut conn: Option<Conn>,
) -> WorkerStats {
    let mut stats = WorkerStats::new();
    let mut k = 0;
    while let Some(due) = s.next(&mut k).await {
        let c = match conn.take() {
            Some(c) if !c.is_closed() && !new_each => Some(c),
            _ => match dialer.connect().await {
                Ok(c) => Some(c),
                Err(e) => {
                    if due >= s.measure_from {
                        stats.error(&e);
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    None
                }
            },
        };
        let Some(mut c) = c else { continue };
        let r = one(&mut c, &dialer).await;
        record(&mut stats, &s, due, &r);
        if r.is_ok() && !new_each {
            conn = Some(c);
        }
    }
    stats
}

/// One of several workers sharing an HTTP/2 or HTTP/3 connection.
async fn stream_worker(dialer: Arc<Dialer>, s: Schedule, shared: Arc<Shared>) -> WorkerStats {
    let mut stats = WorkerStats::new();
    let mut k = 0;
    // A handle of its own on the shared connection: the lock is taken only to replace it.
    let mut local: Option<(u64, Conn)> = None;
    while let Some(due) = s.next(&mut k).await {
        if local.as_ref().is_none_or(|(_, c)| c.is_closed()) {
            match shared.get(&dialer).await {
                Ok(x) => local = Some(x),
                Err(e) => {
                    if due >= s.measure_from {
                        stats.error(&e);
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
            }
        }
        let Some((generation, c)) = local.as_mut() else {
            continue;
        };
        let r = one(c, &dialer).await;
        if matches!(r, Err(LoadError::Failed { .. })) {
            shared.broken(*generation).await;
            local = None;
        }
        record(&mut stats, &s, due, &r);
    }
    stats
}

/// Runs the load described by `spec` and reports what it measured.
pub async fn run(spec: &LoadSpec) -> Result<LoadReport, LoadError> {
    let dialer = Arc::new(spec.dialer.clone());
    let streams = if dialer.protocol == Protocol::H1 || spec.new_connection_per_request {
        1
    } else {
        spec.streams.max(1)
    };
    let connections = spec.connections.max(1);
    let workers = connections * streams;

    // Open the connections first, so the handshakes are not part of the measurement (unless
    // a connection per request is the point).
    let mut conns: Vec<Option<Conn>> = Vec::with_capacity(connections);
    if !spec.new_connection_per_request {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..connections {
            let d = Arc::clone(&dialer);
            set.spawn(async move { d.connect().await });
        }
        let mut first_err = None;
        while let Some(r) = set.join_next().await {
            match r {
                Ok(Ok(c)) => conns.push(Some(c)),
                Ok(Err(e)) => {
                    first_err.get_or_insert(e.to_string());
                }
                Err(e) => {
                    first_err.get_or_insert(e.to_string());
                }
            }
        }
        if conns.is_empty() {
            return Err(LoadError::NoConnection {
                addr: dialer.addr,
                first: first_err.unwrap_or_default(),
            });
        }
        conns.resize_with(connections, || None);
    } else {
        conns.resize_with(connections, || None);
    }

    let start = Instant::now() + Duration::from_millis(20);
    let measure_from = start + spec.warmup;
    let end = measure_from + spec.duration;
    let interval = spec
        .rate
        .filter(|r| *r > 0.0)
        .map(|r| Duration::from_secs_f64(workers as f64 / r));
    let mut set = tokio::task::JoinSet::new();
    let mut w = 0usize;
    for c in conns {
        let mut solo = None;
        let shared = if streams > 1 {
            Some(Arc::new(Shared {
                conn: RwLock::new((0, c)),
            }))
        } else {
            solo = c;
            None
        };
        for _ in 0..streams {
            // Stagger open-loop workers evenly over one interval.
            let first = match (interval, spec.rate) {
                (Some(_), Some(r)) => start + Duration::from_secs_f64(w as f64 / r),
                _ => start,
            };
            w += 1;
            let s = Schedule {
                first,
                interval,
                measure_from,
                end,
            };
            let d = Arc::clone(&dialer);
            match &shared {
                Some(sh) => {
                    set.spawn(stream_worker(d, s, Arc::clone(sh)));
                }
                None => {
                    set.spawn(solo_worker(
                        d,
                        s,
                        spec.new_connection_per_request,
                        solo.take(),
                    ));
                }
            }
        }
    }
    let mut window = None;
    if let Some(sampler) = &spec.sampler {
        tokio::time::sleep_until(measure_from).await;
        let a = sampler();
        tokio::time::sleep_until(end).await;
        window = Some((a, sampler()));
    }
    let mut total = WorkerStats::new();
    while let Some(r) = set.join_next().await {
        let Ok(ws) = r else { continue };
        let _ = total.hist.add(&ws.hist);
        total.ok += ws.ok;
        total.bad_status += ws.bad_status;
        total.errors += ws.errors;
        total.bytes += ws.bytes;
        if total.first_error.is_none() {
            total.first_error = ws.first_error;
        }
    }
    let seconds = spec.duration.as_secs_f64();
    Ok(LoadReport {
        protocol: dialer.protocol,
        connections,
        streams,
        rate: spec.rate,
        new_connection_per_request: spec.new_connection_per_request,
        seconds,
        ok: total.ok,
        bad_status: total.bad_status,
        errors: total.errors,
        first_error: total.first_error,
        body_bytes: total.bytes,
        rps: total.ok as f64 / seconds,
        mib_per_s: total.bytes as f64 / seconds / (1024.0 * 1024.0),
        latency_us: Latency::from_histogram(&total.hist),
        histogram: Some(total.hist),
        window,
    })
}

/// Connections held open and idle (each has answered one request).
pub struct IdleSet {
    pub conns: Vec<Conn>,
    pub failed: usize,
    pub first_error: Option<String>,
}

/// Opens `n` connections, `parallel` at a time, sends one request on each and keeps them.
pub async fn open_idle(dialer: &Dialer, n: usize, parallel: usize) -> IdleSet {
    let dialer = Arc::new(dialer.clone());
    let sem = Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let d = Arc::clone(&dialer);
        let sem = Arc::clone(&sem);
        set.spawn(async move {
            let _permit = sem.acquire().await;
            let mut c = d.connect().await?;
            let a = one(&mut c, &d).await?;
            if a.status >= 400 {
                return Err(LoadError::Failed {
                    what: "idle connection's request",
                    message: format!("status {}", a.status),
                });
            }
            Ok(c)
        });
    }
    let mut out = IdleSet {
        conns: Vec::with_capacity(n),
        failed: 0,
        first_error: None,
    };
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Ok(c)) => out.conns.push(c),
            Ok(Err(e)) => {
                out.failed += 1;
                out.first_error.get_or_insert(e.to_string());
            }
            Err(e) => {
                out.failed += 1;
                out.first_error.get_or_insert(e.to_string());
            }
        }
    }
    out
}

/// A dialer for `GET path` on `addr`.
pub fn dialer(
    addr: SocketAddr,
    protocol: Protocol,
    tls: Option<Arc<rustls::ClientConfig>>,
    host: &str,
    path: &str,
    extra_headers: &[(String, String)],
) -> Result<Dialer, LoadError> {
    let bad = |e: &dyn std::fmt::Display| LoadError::Target(e.to_string());
    let authority = format!("{host}:{}", addr.port());
    let uri: http::Uri = match protocol {
        Protocol::H1 => path.parse().map_err(|e| bad(&e))?,
        Protocol::H2 | Protocol::H3 => {
            let scheme = if tls.is_some() { "https" } else { "http" };
            format!("{scheme}://{authority}{path}")
                .parse()
                .map_err(|e| bad(&e))?
        }
    };
    let mut headers = http::HeaderMap::new();
    if protocol == Protocol::H1 {
        headers.insert(http::header::HOST, authority.parse().map_err(|e| bad(&e))?);
    }
    for (k, v) in extra_headers {
        let name: http::HeaderName = k.parse().map_err(|e| bad(&e))?;
        headers.append(name, v.parse().map_err(|e| bad(&e))?);
    }
    let server_name =
        rustls_pki_types::ServerName::try_from(host.to_owned()).map_err(|e| bad(&e))?;
    let mut h1 = format!("GET {path} HTTP/1.1\r\nhost: {authority}\r\n");
    for (k, v) in extra_headers {
        h1.push_str(&format!("{k}: {v}\r\n"));
    }
    h1.push_str("\r\n");
    Ok(Dialer {
        addr,
        protocol,
        tls,
        server_name,
        uri,
        headers,
        h1_request: bytes::Bytes::from(h1),
    })
}
