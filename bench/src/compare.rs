//! `compare`: stacklab's proxy, nginx and HAProxy in front of one upstream, driven in turn.
//!
//! For every scenario, every round runs each peer once (A, B, C, A, B, C …), each on a
//! freshly started process so that its peak RSS belongs to that run. CPU time is read from
//! `/proc` at the edges of the measured window, so connection set-up and warm-up are not
//! charged. Where `wrk` and `h2load` apply, they drive the same process right after our
//! generator, so a generator bottleneck shows as a gap between the two.
//!
//! The fixed-rate scenario's rate is half of nginx's median closed-loop HTTP/1.1 throughput
//! measured earlier in the same run, the offered load at which the issue compares p99.

pub mod report;

use crate::external::{self, ToolReport};
use crate::feed;
use crate::load::{self, LoadReport, LoadSpec, Protocol, Sampler};
use crate::peers::{self, PeerKind, Running, Setup, StacklabExtra};
use crate::procstat;
use crate::tls;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Connections of the HTTP/1.1 scenarios (and `wrk -c`).
pub const H1_CONNECTIONS: usize = 64;
/// Connections and streams per connection of HTTP/2 and HTTP/3 (and `h2load -c -m`).
pub const MUX_CONNECTIONS: usize = 8;
pub const MUX_STREAMS: usize = 8;
/// Concurrent handshakes in the new-connection scenario.
pub const HANDSHAKE_WORKERS: usize = 16;
/// Connections of the 1 MiB scenario.
pub const LARGE_CONNECTIONS: usize = 8;
/// Connections opened at once while filling the idle scenario.
const IDLE_PARALLEL: usize = 256;

/// Errors of a comparison.
#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error(transparent)]
    Peer(#[from] peers::PeerError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("the upstream: {0}")]
    Upstream(String),
    #[error("cannot write the results to {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The scenarios, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    H1KeepAlive,
    H1FixedRate,
    H2Tls,
    H3,
    NewTls,
    Large,
    Idle,
    Sessions,
}

impl Scenario {
    pub const ALL: [Scenario; 8] = [
        Scenario::H1KeepAlive,
        Scenario::H1FixedRate,
        Scenario::H2Tls,
        Scenario::H3,
        Scenario::NewTls,
        Scenario::Large,
        Scenario::Idle,
        Scenario::Sessions,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Scenario::H1KeepAlive => "HTTP/1.1 keep-alive, 13 B responses, 64 connections",
            Scenario::H1FixedRate => "HTTP/1.1 at half nginx's max rate (open loop)",
            Scenario::H2Tls => "HTTPS HTTP/2, 8 connections x 8 streams",
            Scenario::H3 => "HTTP/3, 8 connections x 8 streams",
            Scenario::NewTls => "new TLS connection per request (TLS 1.3, ECDSA P-256), 16 at once",
            Scenario::Large => "1 MiB response streamed, HTTP/1.1, 8 connections",
            Scenario::Idle => "idle keep-alive connections (memory)",
            Scenario::Sessions => "session-cookie routing, HTTP/1.1, 64 connections",
        }
    }

    fn peers(self, all: &[PeerKind]) -> Vec<PeerKind> {
        match self {
            Scenario::H3 => all.iter().copied().filter(|p| p.has_http3()).collect(),
            Scenario::Sessions => all
                .iter()
                .copied()
                .filter(|p| *p == PeerKind::Stacklab)
                .collect(),
            _ => all.to_vec(),
        }
    }
}

/// How a comparison runs.
#[derive(Debug, Clone, Serialize)]
pub struct Options {
    pub quick: bool,
    pub rounds: usize,
    pub warmup: Duration,
    pub duration: Duration,
    pub idle_connections: usize,
    pub sessions: usize,
    pub peers: Vec<PeerKind>,
    pub scenarios: Vec<Scenario>,
    pub cross_check: bool,
    pub out_dir: PathBuf,
    pub stacklab_bin: PathBuf,
    /// This binary, run as `upstream`.
    pub self_bin: PathBuf,
    pub workers: usize,
}

impl Options {
    /// `--quick` (under two minutes) or the full run.
    pub fn new(quick: bool, out_dir: PathBuf, stacklab_bin: PathBuf, self_bin: PathBuf) -> Options {
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        Options {
            quick,
            rounds: if quick { 1 } else { 3 },
            warmup: Duration::from_millis(if quick { 500 } else { 2000 }),
            duration: Duration::from_secs(if quick { 2 } else { 10 }),
            idle_connections: 10_000,
            sessions: 100_000,
            peers: PeerKind::ALL.to_vec(),
            scenarios: Scenario::ALL.to_vec(),
            cross_check: true,
            out_dir,
            stacklab_bin,
            self_bin,
            workers,
        }
    }
}

/// Memory at rest and with the idle connections open.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdleReport {
    pub connections: usize,
    pub failed: usize,
    pub first_error: Option<String>,
    pub seconds_to_open: f64,
    pub rss_before_bytes: u64,
    pub rss_idle_bytes: u64,
    /// (RSS with the connections open − RSS before) / connections.
    pub bytes_per_connection: f64,
}

/// One peer driven once by one tool.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub scenario: Scenario,
    /// The routing scenario's table: "1 session" or "100000 sessions"; else empty.
    pub variant: String,
    pub peer: PeerKind,
    pub round: usize,
    /// "stacklab-bench", "wrk" or "h2load".
    pub tool: String,
    pub load: Option<LoadReport>,
    pub external: Option<ToolReport>,
    pub idle: Option<IdleReport>,
    /// CPU seconds of the proxy's processes over the measured window.
    pub proxy_cpu_seconds: f64,
    pub generator_cpu_seconds: f64,
    pub upstream_cpu_seconds: f64,
    /// Share of all cores busy over the measured window (0 to 1).
    pub machine_busy: f64,
    /// VmHWM summed over the proxy's processes, at the end of the run.
    pub peak_rss_bytes: u64,
    pub processes: usize,
    pub error: Option<String>,
}

impl RunRecord {
    fn new(scenario: Scenario, variant: &str, peer: PeerKind, round: usize, tool: &str) -> Self {
        RunRecord {
            scenario,
            variant: variant.to_owned(),
            peer,
            round,
            tool: tool.to_owned(),
            load: None,
            external: None,
            idle: None,
            proxy_cpu_seconds: 0.0,
            generator_cpu_seconds: 0.0,
            upstream_cpu_seconds: 0.0,
            machine_busy: 0.0,
            peak_rss_bytes: 0,
            processes: 0,
            error: None,
        }
    }
}

/// Everything a comparison measured.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub machine: report::Machine,
    pub options: Options,
    pub runs: Vec<RunRecord>,
    pub rows: Vec<report::Row>,
    pub cross_checks: Vec<report::CrossCheck>,
    pub targets: Vec<report::Target>,
    pub seconds: f64,
}

struct Upstream {
    child: std::process::Child,
    addr: std::net::SocketAddr,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_upstream(self_bin: &PathBuf) -> Result<Upstream, CompareError> {
    use std::io::BufRead;
    let port = peers::free_port()?;
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    let mut child = std::process::Command::new(self_bin)
        .args(["upstream", "--addr", &addr.to_string()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .map_err(|e| CompareError::Upstream(format!("cannot start {}: {e}", self_bin.display())))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| CompareError::Upstream("no stdout".into()))?;
    let mut line = String::new();
    std::io::BufReader::new(stdout).read_line(&mut line)?;
    if !line.starts_with("listening") {
        let _ = child.kill();
        return Err(CompareError::Upstream(format!("it said {line:?}")));
    }
    Ok(Upstream { child, addr })
}

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// Runs the comparison and writes its JSON and Markdown under `options.out_dir`.
pub async fn run(options: Options) -> Result<Results, CompareError> {
    let started = std::time::Instant::now();
    let nofile = procstat::raise_nofile();
    let mut options = options;
    // Both ends of every idle connection live on this machine, and HAProxy wants two
    // descriptors per connection: keep to what the limit allows, the same for every peer.
    options.idle_connections = options
        .idle_connections
        .min((nofile / 2).saturating_sub(200) as usize);
    let dir = std::env::temp_dir().join(format!("stacklab-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let certs = tls::generate(&dir)?;
    let upstream = start_upstream(&options.self_bin)?;
    let setup = Setup {
        dir: dir.clone(),
        certs: certs.clone(),
        upstream: upstream.addr,
        workers: options.workers,
        stacklab_bin: options.stacklab_bin.clone(),
        nofile,
        single_process: false,
    };
    // Fail early, with the install hint, for a missing peer.
    for p in &options.peers {
        peers::find(*p, &setup)?;
    }
    let h1_plain = tls::client_config(&certs.cert, &[b"http/1.1"])?;
    let h2_tls = tls::client_config(&certs.cert, &[b"h2"])?;
    let h3_tls = tls::client_config(&certs.cert, &[b"h3"])?;

    let total_steps: usize = options
        .scenarios
        .iter()
        .map(|s| {
            let variants = if *s == Scenario::Sessions { 2 } else { 1 };
            s.peers(&options.peers).len() * variants * options.rounds
        })
        .sum();
    let bar = ProgressBar::new(total_steps as u64);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );

    let mut runs: Vec<RunRecord> = Vec::new();
    let upstream_pid = upstream.child.id();
    let ctx = Ctx {
        options: &options,
        setup: &setup,
        h1_tls: h1_plain,
        h2_tls,
        h3_tls,
        upstream_pid,
    };
    for &scenario in &options.scenarios {
        let peers_here = scenario.peers(&options.peers);
        let variants: Vec<usize> = if scenario == Scenario::Sessions {
            vec![1, options.sessions + 1]
        } else {
            vec![0]
        };
        // The snapshots are built once; the feed serves whichever the run needs.
        let mut feeds = Vec::new();
        for &n in &variants {
            if scenario == Scenario::Sessions {
                let (url, task) = feed::serve(feed::snapshot(upstream.addr, n)).await?;
                feeds.push(Some((url, task)));
            } else {
                feeds.push(None);
            }
        }
        let rate = report::median(
            runs.iter()
                .filter(|r| {
                    r.scenario == Scenario::H1KeepAlive
                        && r.tool == "stacklab-bench"
                        && r.peer == PeerKind::Nginx
                })
                .chain(runs.iter().filter(|r| {
                    r.scenario == Scenario::H1KeepAlive
                        && r.tool == "stacklab-bench"
                        && r.peer == PeerKind::Stacklab
                }))
                .filter_map(|r| r.load.as_ref().map(|l| l.rps))
                .take(options.rounds)
                .collect(),
        ) / 2.0;
        for round in 0..options.rounds {
            for (vi, &n) in variants.iter().enumerate() {
                for &peer in &peers_here {
                    let variant = match scenario {
                        Scenario::Sessions if n == 1 => "1 session".to_owned(),
                        Scenario::Sessions => format!("{n} sessions"),
                        Scenario::Idle => format!("{} connections", options.idle_connections),
                        _ => String::new(),
                    };
                    bar.set_message(format!(
                        "{} · {}{} · round {}",
                        scenario.title(),
                        peer.name(),
                        if variant.is_empty() {
                            String::new()
                        } else {
                            format!(" ({variant})")
                        },
                        round + 1
                    ));
                    let extra = StacklabExtra {
                        feed_url: feeds[vi].as_ref().map(|(u, _)| u.clone()),
                        ..StacklabExtra::default()
                    };
                    let records = ctx.one(scenario, &variant, peer, round, &extra, rate).await;
                    for r in &records {
                        // A hidden bar (output not a terminal) prints nothing: say it plainly.
                        if bar.is_hidden() {
                            eprintln!("{}", report::one_line(r));
                        } else {
                            bar.println(report::one_line(r));
                        }
                    }
                    runs.extend(records);
                    bar.inc(1);
                }
            }
        }
        for (_, task) in feeds.into_iter().flatten() {
            task.abort();
        }
    }
    bar.finish_and_clear();
    drop(upstream);
    let _ = std::fs::remove_dir_all(&dir);

    let rows = report::rows(&runs);
    let cross_checks = report::cross_checks(&runs);
    let targets = report::targets(&rows);
    let results = Results {
        machine: report::Machine::describe(&options),
        options,
        runs,
        rows,
        cross_checks,
        targets,
        seconds: started.elapsed().as_secs_f64(),
    };
    report::write(&results)?;
    Ok(results)
}

struct Ctx<'a> {
    options: &'a Options,
    setup: &'a Setup,
    h1_tls: Arc<rustls::ClientConfig>,
    h2_tls: Arc<rustls::ClientConfig>,
    h3_tls: Arc<rustls::ClientConfig>,
    upstream_pid: u32,
}

impl Ctx<'_> {
    fn sampler(&self, proxy_pid: u32) -> Sampler {
        let up = self.upstream_pid;
        Arc::new(move || {
            vec![
                procstat::sample(proxy_pid),
                procstat::sample_self(),
                procstat::sample(up),
                procstat::machine(),
            ]
        })
    }

    /// Starts `peer`, runs `scenario` on it (and the matching external tool), stops it.
    async fn one(
        &self,
        scenario: Scenario,
        variant: &str,
        peer: PeerKind,
        round: usize,
        extra: &StacklabExtra,
        rate: f64,
    ) -> Vec<RunRecord> {
        let mut rec = RunRecord::new(scenario, variant, peer, round, "stacklab-bench");
        let running = match blocking(|| peers::start(peer, self.setup, extra)) {
            Ok(r) => r,
            Err(e) => {
                rec.error = Some(e.to_string());
                return vec![rec];
            }
        };
        let mut out = Vec::new();
        match self.drive(scenario, &running, rate, &mut rec).await {
            Ok(()) => {}
            Err(e) => rec.error = Some(e),
        }
        let s = procstat::sample(running.pid);
        rec.peak_rss_bytes = s.hwm_bytes;
        rec.processes = s.processes;
        out.push(rec);
        if self.options.cross_check {
            if let Some(ext) = self.external(scenario, variant, peer, round, &running) {
                out.push(ext);
            }
        }
        blocking(|| running.stop());
        out
    }

    fn spec(
        &self,
        scenario: Scenario,
        running: &Running,
        rate: f64,
        pid: u32,
    ) -> Result<LoadSpec, String> {
        let (addr, protocol, tls, path, headers, conns, streams, new_conn, rate) = match scenario {
            Scenario::H1KeepAlive => (
                running.plain,
                Protocol::H1,
                None,
                "/",
                vec![],
                H1_CONNECTIONS,
                1,
                false,
                None,
            ),
            Scenario::H1FixedRate => (
                running.plain,
                Protocol::H1,
                None,
                "/",
                vec![],
                H1_CONNECTIONS,
                1,
                false,
                Some(rate.max(100.0)),
            ),
            Scenario::H2Tls => (
                running.tls,
                Protocol::H2,
                Some(Arc::clone(&self.h2_tls)),
                "/",
                vec![],
                MUX_CONNECTIONS,
                MUX_STREAMS,
                false,
                None,
            ),
            Scenario::H3 => (
                running.tls,
                Protocol::H3,
                Some(Arc::clone(&self.h3_tls)),
                "/",
                vec![],
                MUX_CONNECTIONS,
                MUX_STREAMS,
                false,
                None,
            ),
            Scenario::NewTls => (
                running.tls,
                Protocol::H1,
                Some(Arc::clone(&self.h1_tls)),
                "/",
                vec![],
                HANDSHAKE_WORKERS,
                1,
                true,
                None,
            ),
            Scenario::Large => (
                running.plain,
                Protocol::H1,
                None,
                "/1mib",
                vec![],
                LARGE_CONNECTIONS,
                1,
                false,
                None,
            ),
            Scenario::Sessions => (
                running.plain,
                Protocol::H1,
                None,
                "/api/bench",
                vec![(
                    "cookie".to_owned(),
                    format!("stacklab_session={}", feed::code(0)),
                )],
                H1_CONNECTIONS,
                1,
                false,
                None,
            ),
            Scenario::Idle => return Err("the idle scenario has no load".into()),
        };
        let dialer = load::dialer(addr, protocol, tls, "localhost", path, &headers)
            .map_err(|e| e.to_string())?;
        Ok(LoadSpec {
            dialer,
            connections: conns,
            streams,
            duration: self.options.duration,
            warmup: self.options.warmup,
            rate,
            new_connection_per_request: new_conn,
            sampler: Some(self.sampler(pid)),
        })
    }

    async fn drive(
        &self,
        scenario: Scenario,
        running: &Running,
        rate: f64,
        rec: &mut RunRecord,
    ) -> Result<(), String> {
        if scenario == Scenario::Idle {
            return self.idle(running, rec).await;
        }
        if scenario == Scenario::Sessions {
            // Wait until the feed's snapshot is in the table: the last session routes.
            let last = format!("cookie: stacklab_session={}\r\n", feed::code(0));
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while !blocking(|| peers::probe(running.plain, "/api/bench", &last)) {
                if std::time::Instant::now() > deadline {
                    return Err("the route feed's sessions never reached the proxy".into());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let spec = self.spec(scenario, running, rate, running.pid)?;
        let report = load::run(&spec).await.map_err(|e| e.to_string())?;
        if let Some((a, b)) = &report.window {
            let d = |i: usize| {
                b.get(i).map_or(0.0, |s| s.cpu_seconds) - a.get(i).map_or(0.0, |s| s.cpu_seconds)
            };
            rec.proxy_cpu_seconds = d(0);
            rec.generator_cpu_seconds = d(1);
            rec.upstream_cpu_seconds = d(2);
            rec.machine_busy =
                d(3) / (self.options.workers as f64 * self.options.duration.as_secs_f64());
        }
        rec.load = Some(report);
        Ok(())
    }

    async fn idle(&self, running: &Running, rec: &mut RunRecord) -> Result<(), String> {
        let before = procstat::sample(running.pid);
        let dialer = load::dialer(running.plain, Protocol::H1, None, "localhost", "/", &[])
            .map_err(|e| e.to_string())?;
        let t = std::time::Instant::now();
        let set = load::open_idle(&dialer, self.options.idle_connections, IDLE_PARALLEL).await;
        let seconds_to_open = t.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let with = procstat::sample(running.pid);
        let n = set.conns.len();
        rec.idle = Some(IdleReport {
            connections: n,
            failed: set.failed,
            first_error: set.first_error.clone(),
            seconds_to_open,
            rss_before_bytes: before.rss_bytes,
            rss_idle_bytes: with.rss_bytes,
            bytes_per_connection: if n > 0 {
                (with.rss_bytes as f64 - before.rss_bytes as f64) / n as f64
            } else {
                0.0
            },
        });
        drop(set);
        if n == 0 {
            return Err("no idle connection could be opened".into());
        }
        Ok(())
    }

    fn external(
        &self,
        scenario: Scenario,
        variant: &str,
        peer: PeerKind,
        round: usize,
        running: &Running,
    ) -> Option<RunRecord> {
        let d = self.options.duration;
        let (tool, result) = match scenario {
            Scenario::H1KeepAlive => (
                "wrk",
                blocking(|| {
                    external::wrk(&format!("http://{}/", running.plain), 2, H1_CONNECTIONS, d)
                }),
            ),
            Scenario::H2Tls => (
                "h2load",
                blocking(|| {
                    external::h2load(
                        &format!("https://{}/", running.tls),
                        2,
                        MUX_CONNECTIONS,
                        MUX_STREAMS,
                        d,
                    )
                }),
            ),
            _ => return None,
        };
        let mut rec = RunRecord::new(scenario, variant, peer, round, tool);
        match result {
            Ok(r) => rec.external = Some(r),
            Err(e) => rec.error = Some(e.to_string()),
        }
        Some(rec)
    }
}
