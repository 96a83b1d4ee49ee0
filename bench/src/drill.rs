//! `stacklab-bench drill`: faults injected into real `stacklab` processes under steady load,
//! each drill printing one line of figures and whether its goals held.
//!
//! Every drill starts its own processes (`stacklab up`, or `control`, `backend` and `proxy`
//! apart) on loopback ports picked by the kernel, with a data folder of its own under the
//! temporary folder; creates real sessions through the edge (`POST /api/sessions`, then a
//! user in each through `/api/users`); drives a steady closed-loop load of idempotent GETs and
//! non-idempotent POSTs over HTTPS keep-alive connections; injects its fault part-way; and
//! stops everything it started. Traffic goes to loopback only, and each drill is bounded by
//! `--seconds` of load plus a few seconds of setup and checks.
//!
//! The client behaves as HTTP clients do: it reconnects when the server closed a keep-alive
//! connection (`Connection: close`, idle timeout), and resends a request that hyper reports
//! as never written to the connection (counted as `client_resent`). Any request that got no
//! HTTP answer, or a 5xx, counts as failed.
//!
//! # Adding a drill
//!
//! Write `async fn my_drill(o: &Options) -> anyhow::Result<Outcome>` with the helpers below
//! ([`Stack`], [`Edge`], [`Load`]) and add one line to [`DRILLS`].

use anyhow::{bail, Context};
use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::time::Instant;

/// The admin token every drill's processes share.
const TOKEN: &str = "drill-admin-token-0123456789abcdef";
/// Longest a drill request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How the drills run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `stacklab` binary.
    pub stacklab: PathBuf,
    /// Seconds of load in each drill.
    pub seconds: f64,
    /// Keep each drill's folder (logs, data) instead of removing it.
    pub keep: bool,
}

/// What a drill measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub name: String,
    pub figures: String,
    pub pass: bool,
}

impl Outcome {
    /// The one line a drill prints.
    pub fn line(&self) -> String {
        format!(
            "drill {}: {} {}",
            self.name,
            self.figures,
            if self.pass { "PASS" } else { "FAIL" }
        )
    }
}

type DrillFuture<'a> = Pin<Box<dyn Future<Output = anyhow::Result<Outcome>> + Send + 'a>>;
type DrillFn = for<'a> fn(&'a Options) -> DrillFuture<'a>;

/// Every drill, in the order `all` runs them.
pub const DRILLS: &[(&str, DrillFn)] = &[
    ("instance-kill", |o| Box::pin(instance_kill(o))),
    ("instance-kill-container", |o| {
        Box::pin(instance_kill_container(o))
    }),
    ("db-container-kill", |o| Box::pin(db_container_kill(o))),
    ("control-restart", |o| Box::pin(control_restart(o))),
    ("proxy-reload", |o| Box::pin(proxy_reload(o))),
    ("proxy-upgrade", |o| Box::pin(proxy_upgrade(o))),
    ("edge-abuse", |o| Box::pin(edge_abuse(o))),
];

/// Runs the named drills (`all`: every one), printing each line as it is known.
pub async fn run(o: &Options, names: &[String]) -> anyhow::Result<Vec<Outcome>> {
    crate::procstat::raise_nofile();
    let chosen: Vec<&(&str, DrillFn)> = if names.iter().any(|n| n == "all") {
        DRILLS.iter().collect()
    } else {
        names
            .iter()
            .map(|n| {
                DRILLS.iter().find(|(d, _)| d == n).with_context(|| {
                    let known: Vec<_> = DRILLS.iter().map(|(d, _)| *d).collect();
                    format!("no drill named {n}; known: {}, all", known.join(", "))
                })
            })
            .collect::<anyhow::Result<_>>()?
    };
    let mut out = Vec::new();
    for (name, f) in chosen {
        let outcome = match f(o).await {
            Ok(x) => x,
            Err(e) => Outcome {
                name: (*name).to_owned(),
                figures: format!("error: {e:#}"),
                pass: false,
            },
        };
        println!("{}", outcome.line());
        out.push(outcome);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// Processes

/// A drill's folder, its config and the `stacklab` processes it started.
pub struct Stack {
    pub dir: PathBuf,
    pub config: PathBuf,
    bin: PathBuf,
    keep: bool,
    procs: Vec<Proc>,
}

/// One `stacklab` process: its stdout lines are kept, stderr goes to `<dir>/<name>.log`.
pub struct Proc {
    pub name: String,
    child: tokio::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
    got_line: Arc<tokio::sync::Notify>,
}

impl Stack {
    /// A fresh folder and a config from the reference one with `edits` applied
    /// (`("key = old", "key = new")` line replacements) and `extra` appended.
    pub fn new(
        o: &Options,
        name: &str,
        edits: &[(&str, &str)],
        extra: &str,
    ) -> anyhow::Result<Stack> {
        let dir = std::env::temp_dir().join(format!("sl-drill-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data"))?;
        let mut text = include_str!("../../config/stacklab.toml").to_owned();
        let mut edits = edits.to_vec();
        // Every drill: a short report interval, no per-client cap on launches, no plain HTTP.
        edits.extend([
            ("report_interval_ms = 5000", "report_interval_ms = 200"),
            (
                "max_new_per_client_per_minute = 20",
                "max_new_per_client_per_minute = 100000",
            ),
            ("plain_http = \"redirect\"", "plain_http = \"off\""),
        ]);
        for (from, to) in edits {
            if !text.contains(from) {
                bail!("the reference config has no line `{from}`");
            }
            text = text.replacen(from, to, 1);
        }
        text.push_str(extra);
        let config = dir.join("drill.toml");
        std::fs::write(&config, text)?;
        Ok(Stack {
            dir,
            config,
            bin: o.stacklab.clone(),
            keep: o.keep,
            procs: Vec::new(),
        })
    }

    /// Starts `stacklab ARGS` with the drill's environment plus `env`; returns its index.
    pub fn spawn(
        &mut self,
        name: &str,
        args: &[&str],
        env: &[(&str, String)],
    ) -> anyhow::Result<usize> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{name}.log")))?;
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.args(args)
            .env("STACKLAB_EDGE_ADDR", "127.0.0.1:0")
            .env("STACKLAB_HTTP_ADDR", "127.0.0.1:0")
            .env("STACKLAB_ADMIN_ADDR", "127.0.0.1:0")
            .env("STACKLAB_ADMIN_TOKEN", TOKEN)
            .env("STACKLAB_DATA_DIR", self.dir.join("data"))
            .env("STACKLAB_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", self.bin.display()))?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let got_line = Arc::new(tokio::sync::Notify::new());
        if let Some(stdout) = child.stdout.take() {
            let (lines, got_line) = (Arc::clone(&lines), Arc::clone(&got_line));
            tokio::spawn(async move {
                let mut r = BufReader::new(stdout).lines();
                while let Ok(Some(l)) = r.next_line().await {
                    lines.lock().unwrap_or_else(|e| e.into_inner()).push(l);
                    got_line.notify_waiters();
                }
            });
        }
        self.procs.push(Proc {
            name: name.to_owned(),
            child,
            lines,
            got_line,
        });
        Ok(self.procs.len() - 1)
    }

    pub fn proc(&mut self, i: usize) -> &mut Proc {
        &mut self.procs[i]
    }

    /// `stacklab up` with `instances` backend instances: (edge, admin).
    pub async fn up(
        &mut self,
        instances: usize,
    ) -> anyhow::Result<(usize, SocketAddr, SocketAddr)> {
        let config = self.config.display().to_string();
        let i = self.spawn(
            "up",
            &["up", "--config", &config],
            &[("STACKLAB_BACKEND_INSTANCES", instances.to_string())],
        )?;
        let edge = self.procs[i]
            .wait_line("stacklab is up: https://localhost:")
            .await?;
        let port: u16 = edge
            .trim_start_matches("stacklab is up: https://localhost:")
            .trim_end_matches('/')
            .parse()
            .context("the edge's port")?;
        let admin = self.procs[i].admin_addr().await?;
        Ok((i, SocketAddr::from(([127, 0, 0, 1], port)), admin))
    }

    /// The proxy's client TLS config (trusting the self-signed certificate it made).
    pub fn edge(&self, addr: SocketAddr) -> anyhow::Result<Edge> {
        let ca = self.dir.join("data/tls/self-signed.crt");
        Ok(Edge {
            addr,
            tls: crate::tls::client_config(&ca, &[b"http/1.1"])?,
            src: None,
        })
    }

    /// Stops every process still running (SIGTERM, then SIGKILL after 15 s).
    pub async fn stop(mut self) {
        for p in &mut self.procs {
            p.stop().await;
        }
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Proc {
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Sends a signal by name (`KILL`, `TERM`, `HUP`) with kill(1).
    pub fn signal(&self, sig: &str) -> anyhow::Result<()> {
        signal(self.pid().context("the process has exited")?, sig)
    }

    /// The first stdout line containing `pat` (waits up to 30 s).
    pub async fn wait_line(&mut self, pat: &str) -> anyhow::Result<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let notified = self.got_line.notified();
            if let Some(l) = self
                .lines
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .find(|l| l.contains(pat))
            {
                return Ok(l.clone());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!("{} exited ({status}) before printing `{pat}`", self.name);
            }
            if Instant::now() > deadline {
                bail!("{} did not print `{pat}` within 30 s", self.name);
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
        }
    }

    /// The admin address from the `admin API on http://ADDR` or `admin on http://ADDR` line.
    pub async fn admin_addr(&mut self) -> anyhow::Result<SocketAddr> {
        let l = self.wait_line("admin").await?;
        let at = l.find("admin").unwrap_or(0);
        let url = l[at..]
            .split_whitespace()
            .find_map(|w| w.strip_prefix("http://"))
            .context("no admin address in the output")?;
        url.trim_end_matches(|c: char| !c.is_ascii_digit())
            .parse()
            .context("the admin address")
    }

    /// Waits for the process to exit, up to `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(limit, self.child.wait())
            .await
            .ok()?
            .ok()
    }

    async fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = self.signal("TERM");
        if self.wait_exit(Duration::from_secs(15)).await.is_none() {
            let _ = self.child.kill().await;
        }
    }
}

fn signal(pid: u32, sig: &str) -> anyhow::Result<()> {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()?
        .success();
    if !ok {
        bail!("kill -{sig} {pid} failed");
    }
    Ok(())
}

/// A loopback port free at the moment (for a process that must come back on the same one).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

// ---------------------------------------------------------------------------------------
// Client

/// The edge, as a browser reaches it: HTTPS, HTTP/1.1 keep-alive.
#[derive(Clone)]
pub struct Edge {
    pub addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    /// Source address (another loopback address plays another client).
    pub src: Option<IpAddr>,
}

/// An answer, read whole.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    fn is_json_error(&self) -> bool {
        self.json()["error"]["code"].is_string()
    }
}

type Send1 = SendRequest<Full<Bytes>>;

impl Edge {
    pub fn from(&self, src: IpAddr) -> Edge {
        Edge {
            src: Some(src),
            ..self.clone()
        }
    }

    async fn tcp(&self) -> std::io::Result<tokio::net::TcpStream> {
        let socket = if self.addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        if let Some(ip) = self.src {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        let s = socket.connect(self.addr).await?;
        let _ = s.set_nodelay(true);
        let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
        Ok(s)
    }

    async fn connect(&self) -> anyhow::Result<Send1> {
        let tcp = self.tcp().await.context("connect")?;
        let tls = tokio_rustls::TlsConnector::from(Arc::clone(&self.tls))
            .connect(rustls_pki_types::ServerName::try_from("localhost")?, tcp)
            .await
            .context("TLS handshake")?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        Ok(send)
    }

    /// One request on a new connection (setup and checks).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        cookie: Option<&str>,
        body: Option<Value>,
    ) -> anyhow::Result<Resp> {
        let mut send = self.connect().await?;
        let req = request(self.addr, method, path, cookie, body.map(|b| b.to_string()))?;
        let res = tokio::time::timeout(REQUEST_TIMEOUT, send.send_request(req))
            .await
            .context("timed out")??;
        read(res).await
    }
}

fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    body: Option<String>,
) -> anyhow::Result<Request<Full<Bytes>>> {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header("host", format!("localhost:{}", addr.port()));
    if let Some(c) = cookie {
        b = b.header("cookie", format!("stacklab_session={c}"));
    }
    Ok(match body {
        Some(text) => b
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(text)))?,
        None => b.body(Full::new(Bytes::new()))?,
    })
}

async fn read(res: http::Response<hyper::body::Incoming>) -> anyhow::Result<Resp> {
    let status = res.status().as_u16();
    let (parts, body) = res.into_parts();
    let body = body.collect().await.context("response body")?.to_bytes();
    Ok(Resp {
        status,
        headers: parts.headers,
        body,
    })
}

/// Waits until `f` holds, up to `limit`.
async fn eventually<F, Fut>(what: &str, limit: Duration, mut f: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !f().await {
        if Instant::now() > deadline {
            bail!("{what}: not within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Admin API call with the drill's token.
async fn admin(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Resp> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .header("authorization", format!("Bearer {TOKEN}"));
    if body.is_some() {
        b = b.header("content-type", "application/json");
    }
    let req = b.body(Full::new(Bytes::from(
        body.map(|v| v.to_string()).unwrap_or_default(),
    )))?;
    let res = tokio::time::timeout(REQUEST_TIMEOUT, send.send_request(req))
        .await
        .context("timed out")??;
    read(res).await
}

/// Creates `n` sessions through the edge, each with one user; returns their codes.
pub async fn sessions(edge: &Edge, n: usize, choices: Value) -> anyhow::Result<Vec<String>> {
    let mut codes = Vec::new();
    for i in 0..n {
        let r = edge
            .call("POST", "/api/sessions", None, Some(choices.clone()))
            .await?;
        if r.status != 201 {
            bail!(
                "POST /api/sessions answered {}: {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            );
        }
        let code = r.json()["code"]
            .as_str()
            .context("no code in the answer")?
            .to_owned();
        // The session's route reaches the proxy through the feed: moments.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let body = json!({"username": format!("seed{i}"), "email": format!("seed{i}@example.com"), "password": "drill password"});
            let last = match edge
                .call("POST", "/api/users", Some(&code), Some(body))
                .await
            {
                Ok(r) if r.status == 201 => break,
                Ok(r) => format!("{} {}", r.status, String::from_utf8_lossy(&r.body)),
                Err(e) => e.to_string(),
            };
            if Instant::now() > deadline {
                bail!("the session's first user: not made within 10 s; last answer: {last}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        codes.push(code);
    }
    Ok(codes)
}

/// One request's outcome under load.
#[derive(Debug, Clone)]
pub struct Rec {
    /// Milliseconds since the load started, when the request was sent.
    pub at_ms: u64,
    pub post: bool,
    /// The status, or `None` when no HTTP answer came.
    pub status: Option<u16>,
    pub json_error: bool,
    pub member: Option<String>,
    pub error: Option<String>,
}

impl Rec {
    pub fn failed(&self) -> bool {
        self.status.is_none_or(|s| s >= 500)
    }
}

/// A steady closed-loop load: `gets` workers sending `GET /api/users?limit=5` and `posts`
/// workers sending `POST /api/users`, over the sessions in turn, each on its own keep-alive
/// connection, for `seconds`.
pub struct Load {
    pub started: Instant,
    task: tokio::task::JoinHandle<Vec<Rec>>,
    pub resent: Arc<AtomicU64>,
    pub sent: Arc<AtomicU64>,
}

/// What a load's records add up to.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub sent: usize,
    pub ok: usize,
    pub failed_get: usize,
    pub failed_post: usize,
    /// Failed POSTs answered with a JSON error body (a clear 502/503/504).
    pub failed_post_json: usize,
    /// 4xx answers (not failures of the system, but not expected either).
    pub client_errors: usize,
    pub first_failure: Option<String>,
}

impl Tally {
    pub fn of<'a>(recs: impl IntoIterator<Item = &'a Rec>) -> Tally {
        let mut t = Tally::default();
        for r in recs {
            t.sent += 1;
            match r.status {
                Some(s) if s < 400 => t.ok += 1,
                Some(s) if s < 500 => {
                    t.client_errors += 1;
                    t.first_failure.get_or_insert_with(|| {
                        format!("{} {s}", if r.post { "POST" } else { "GET" })
                    });
                }
                _ => {
                    if r.post {
                        t.failed_post += 1;
                        if r.json_error {
                            t.failed_post_json += 1;
                        }
                    } else {
                        t.failed_get += 1;
                    }
                    t.first_failure.get_or_insert_with(|| {
                        format!(
                            "{} at {} ms: {}",
                            if r.post { "POST" } else { "GET" },
                            r.at_ms,
                            r.status
                                .map(|s| s.to_string())
                                .or_else(|| r.error.clone())
                                .unwrap_or_default()
                        )
                    });
                }
            }
        }
        t
    }

    pub fn failed(&self) -> usize {
        self.failed_get + self.failed_post
    }
}

impl Load {
    pub fn start(edge: &Edge, codes: &[String], gets: usize, posts: usize, seconds: f64) -> Load {
        let started = Instant::now();
        let end = started + Duration::from_secs_f64(seconds);
        let resent = Arc::new(AtomicU64::new(0));
        let sent = Arc::new(AtomicU64::new(0));
        let mut set = tokio::task::JoinSet::new();
        for w in 0..gets + posts {
            let (edge, codes) = (edge.clone(), codes.to_vec());
            let (resent, sent) = (Arc::clone(&resent), Arc::clone(&sent));
            let post = w >= gets;
            set.spawn(
                async move { worker(edge, codes, w, post, started, end, resent, sent).await },
            );
        }
        let task = tokio::spawn(async move {
            let mut all = Vec::new();
            while let Some(r) = set.join_next().await {
                all.extend(r.unwrap_or_default());
            }
            all.sort_by_key(|r| r.at_ms);
            all
        });
        Load {
            started,
            task,
            resent,
            sent,
        }
    }

    /// Milliseconds since the load started.
    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Sleeps until `frac` of `seconds` has passed.
    pub async fn until(&self, seconds: f64, frac: f64) {
        tokio::time::sleep_until(self.started + Duration::from_secs_f64(seconds * frac)).await;
    }

    pub async fn finish(self) -> Vec<Rec> {
        self.task.await.unwrap_or_default()
    }
}

#[allow(clippy::too_many_arguments)]
async fn worker(
    edge: Edge,
    codes: Vec<String>,
    w: usize,
    post: bool,
    started: Instant,
    end: Instant,
    resent: Arc<AtomicU64>,
    sent: Arc<AtomicU64>,
) -> Vec<Rec> {
    let mut recs = Vec::new();
    let mut conn: Option<Send1> = None;
    let mut k = 0usize;
    while Instant::now() < end {
        let code = &codes[(w + k) % codes.len()];
        k += 1;
        let at_ms = started.elapsed().as_millis() as u64;
        let body = post.then(|| {
            json!({"username": format!("w{w}n{k}"), "email": format!("w{w}n{k}@example.com"), "password": "drill password"})
                .to_string()
        });
        let (method, path) = if post {
            ("POST", "/api/users")
        } else {
            ("GET", "/api/users?limit=5")
        };
        sent.fetch_add(1, Relaxed);
        let result = tokio::time::timeout(
            REQUEST_TIMEOUT,
            send(&edge, &mut conn, method, path, code, body, &resent),
        )
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("timed out")));
        let rec = match result {
            Ok(r) => Rec {
                at_ms,
                post,
                status: Some(r.status),
                json_error: r.is_json_error(),
                member: r
                    .headers
                    .get("x-stacklab-member")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
                error: None,
            },
            Err(e) => {
                conn = None;
                Rec {
                    at_ms,
                    post,
                    status: None,
                    json_error: false,
                    member: None,
                    error: Some(format!("{e:#}")),
                }
            }
        };
        recs.push(rec);
    }
    recs
}

/// Sends on the worker's connection, reconnecting when the server closed it, and resending
/// once a request hyper never wrote (what any HTTP client does).
async fn send(
    edge: &Edge,
    conn: &mut Option<Send1>,
    method: &str,
    path: &str,
    code: &str,
    body: Option<String>,
    resent: &AtomicU64,
) -> anyhow::Result<Resp> {
    let mut req = request(edge.addr, method, path, Some(code), body)?;
    for attempt in 0..2 {
        let mut s = match conn.take() {
            Some(mut s) => match s.ready().await {
                Ok(()) => s,
                Err(_) => edge.connect().await?,
            },
            None => edge.connect().await?,
        };
        match s.try_send_request(req).await {
            Ok(res) => {
                let r = read(res).await?;
                let close = r
                    .headers
                    .get("connection")
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
                if !close {
                    *conn = Some(s);
                }
                return Ok(r);
            }
            Err(mut e) => match e.take_message() {
                Some(back) if attempt == 0 => {
                    resent.fetch_add(1, Relaxed);
                    req = back;
                }
                _ => return Err(e.into_error().into()),
            },
        }
    }
    bail!("the request could not be sent twice")
}

// ---------------------------------------------------------------------------------------
// The drills

fn pass_fail(ok: bool, why: &str, fails: &mut Vec<String>) {
    if !ok {
        fails.push(why.to_owned());
    }
}

fn figures(t: &Tally, resent: u64) -> String {
    format!(
        "sent={} ok={} failed_idempotent={} failed_post={} ({} with a JSON error) other_4xx={} client_resent={}",
        t.sent, t.ok, t.failed_get, t.failed_post, t.failed_post_json, t.client_errors, resent
    )
}

fn finish(name: &str, mut figures: String, fails: Vec<String>, t: Option<&Tally>) -> Outcome {
    if let Some(f) = t.and_then(|t| t.first_failure.clone()) {
        if !fails.is_empty() {
            figures.push_str(&format!(" first_failure=\"{f}\""));
        }
    }
    if !fails.is_empty() {
        figures.push_str(&format!(" not_held=\"{}\"", fails.join("; ")));
    }
    Outcome {
        name: name.to_owned(),
        figures,
        pass: fails.is_empty(),
    }
}

/// Load workers: GETs and POSTs.
const GETS: usize = 8;
const POSTS: usize = 2;
/// Cheap choices, so the load measures the system and not password hashing.
fn cheap() -> Value {
    json!({"password_storage": "sha256", "cache": "memory"})
}

/// A backend instance (a child process of control) killed with SIGKILL under load: no
/// idempotent request fails (the proxy retries them on another member), a POST in flight to
/// it fails with a clear JSON 502, and control replaces the instance.
async fn instance_kill(o: &Options) -> anyhow::Result<Outcome> {
    instance_kill_of(o, "instance-kill", None).await
}

/// The same with every backend instance in a Docker container (`[docker.backend]`: this
/// build's binary over the local Debian base image), the victim's container killed from
/// outside (its init process SIGKILLed); control replaces it with another container.
async fn instance_kill_container(o: &Options) -> anyhow::Result<Outcome> {
    let Some(docker) = docker_section(o)? else {
        return Ok(skipped("instance-kill-container"));
    };
    instance_kill_of(o, "instance-kill-container", Some(docker)).await
}

/// The `[docker]` section of `config/images/docker-local.toml` for a drill (instance
/// `drill`, so a next run removes what an interrupted one left), with backend containers
/// running `o.stacklab` over the local Debian image; `None` (a skip) when the engine or the
/// local images are missing outside CI; an error under `STACKLAB_REQUIRE_SERVICES=1`.
fn docker_section(o: &Options) -> anyhow::Result<Option<String>> {
    let check = std::process::Command::new("sh")
        .arg("-c")
        .arg("docker image inspect stacklab/debian:local stacklab/postgres:local stacklab/redis:local >/dev/null 2>&1")
        .status();
    if !check.is_ok_and(|s| s.success()) {
        if std::env::var("STACKLAB_REQUIRE_SERVICES").as_deref() == Ok("1") {
            bail!("no Docker engine with the local images (config/images/build.sh), and STACKLAB_REQUIRE_SERVICES=1");
        }
        return Ok(None);
    }
    let local = include_str!("../../config/images/docker-local.toml");
    let from = local
        .find("\n[docker]\n")
        .context("docker-local.toml has no [docker] section")?;
    let to = local[from..]
        .find("\n[backend]")
        .map_or(local.len(), |i| from + i);
    let bin = std::path::absolute(&o.stacklab)?;
    let mut section = local[from..to].to_owned();
    for (from, to) in [
        ("instance = \"stacklab\"", "instance = \"drill\"".to_owned()),
        (
            "image = \"stacklab/backend:local\"",
            "image = \"stacklab/debian:local\"".to_owned(),
        ),
        ("binary = \"\"", format!("binary = \"{}\"", bin.display())),
    ] {
        if !section.contains(from) {
            bail!("docker-local.toml's [docker] has no line `{from}`");
        }
        section = section.replacen(from, &to, 1);
    }
    Ok(Some(section))
}

fn skipped(name: &str) -> Outcome {
    Outcome {
        name: name.to_owned(),
        figures: "skipped: no Docker engine with the local images (config/images/build.sh)"
            .to_owned(),
        pass: true,
    }
}

async fn instance_kill_of(
    o: &Options,
    name: &str,
    docker: Option<String>,
) -> anyhow::Result<Outcome> {
    let containers = docker.is_some();
    let mut st = if let Some(section) = &docker {
        Stack::new(
            o,
            name,
            &[("backend_containers = 0", "backend_containers = 3")],
            section,
        )?
    } else {
        Stack::new(o, name, &[], "")?
    };
    let result = async {
        let (_, edge_addr, admin_addr) = st.up(3).await?;
        let edge = st.edge(edge_addr)?;
        let codes = sessions(&edge, 4, cheap()).await?;
        // The victim: the instance the first session is pinned to.
        let r = edge
            .call("GET", "/api/users", Some(&codes[0]), None)
            .await?;
        let member = r
            .headers
            .get("x-stacklab-member")
            .and_then(|v| v.to_str().ok())
            .context("no x-stacklab-member")?
            .to_owned();
        let instances = admin(admin_addr, "GET", "/admin/instances", None)
            .await?
            .json();
        let victim = instances["instances"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|i| i["id"] == member.as_str())
            .with_context(|| format!("no instance {member} in {instances}"))?;
        let pid = victim["pid"].as_u64().context("no pid")? as u32;
        let kind = victim["kind"].as_str().unwrap_or_default().to_owned();
        if containers != (kind == "container") {
            bail!("the victim {member} is a {kind}, not what this drill kills");
        }

        let load = Load::start(&edge, &codes, GETS, POSTS, o.seconds);
        load.until(o.seconds, 0.35).await;
        signal(pid, "KILL")?;
        let killed = Instant::now();
        let (mut eject_ms, mut recover_ms) = (None, None);
        while recover_ms.is_none() && killed.elapsed() < Duration::from_secs(o.seconds as u64 + 20)
        {
            if let Ok(r) = admin(admin_addr, "GET", "/admin/pools", None).await {
                let v = r.json();
                let members: Vec<Value> = v["pools"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["name"] == "rust")
                    .flat_map(|p| p["members"].as_array().cloned().unwrap_or_default())
                    .collect();
                let victim_up = members
                    .iter()
                    .any(|m| m["id"] == member.as_str() && m["state"] == "healthy");
                if !victim_up && eject_ms.is_none() {
                    eject_ms = Some(killed.elapsed().as_millis());
                }
                let healthy = members.iter().filter(|m| m["state"] == "healthy").count();
                if eject_ms.is_some()
                    && healthy >= 3
                    && !members.iter().any(|m| m["id"] == member.as_str())
                {
                    recover_ms = Some(killed.elapsed().as_millis());
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let resent = load.resent.load(Relaxed);
        let recs = load.finish().await;
        let t = Tally::of(&recs);
        let mut fails = Vec::new();
        pass_fail(
            t.failed_get == 0,
            "an idempotent request failed",
            &mut fails,
        );
        pass_fail(
            t.failed_post <= POSTS,
            "more POSTs failed than were in flight",
            &mut fails,
        );
        pass_fail(
            t.failed_post == t.failed_post_json,
            "a POST failed without a JSON error",
            &mut fails,
        );
        pass_fail(
            eject_ms.is_some(),
            "the member was never ejected",
            &mut fails,
        );
        pass_fail(
            recover_ms.is_some(),
            "no replacement took the traffic back",
            &mut fails,
        );
        let ms = |x: Option<u128>| x.map_or("never".to_owned(), |v| v.to_string());
        let figures = format!(
            "{} victim={kind} eject_ms={} recover_ms={}",
            figures(&t, resent),
            ms(eject_ms),
            ms(recover_ms)
        );
        Ok(finish(name, figures, fails, Some(&t)))
    }
    .await;
    st.stop().await;
    result
}

/// Control (alone, with two backend processes of its own and a proxy of its own) killed with
/// SIGKILL under load and started again: the proxy serves live sessions from its last table
/// all along, and no session is lost.
async fn control_restart(o: &Options) -> anyhow::Result<Outcome> {
    let name = "control-restart";
    let port = free_port()?;
    let control_admin = SocketAddr::from(([127, 0, 0, 1], port));
    let feed = format!(
        "\n[feed]\nurl = \"http://{control_admin}/admin/routes/feed\"\ntoken = \"{TOKEN}\"\n"
    );
    let mut st = Stack::new(o, name, &[], "")?;
    let proxy_config = st.dir.join("proxy.toml");
    std::fs::write(
        &proxy_config,
        format!("{}{feed}", std::fs::read_to_string(&st.config)?),
    )?;
    let result = async {
        let config = st.config.display().to_string();
        let control_env = [
            ("STACKLAB_ADMIN_ADDR", control_admin.to_string()),
            ("STACKLAB_BACKEND_INSTANCES", "0".to_owned()),
        ];
        let c = st.spawn("control", &["control", "--config", &config], &control_env)?;
        st.proc(c).wait_line("stacklab control:").await?;
        for b in 0..2 {
            let i = st.spawn(
                &format!("backend{b}"),
                &["backend", "--config", &config, "--addr", "127.0.0.1:0", "--control-url", &format!("http://{control_admin}")],
                &[],
            )?;
            let l = st.proc(i).wait_line("stacklab backend on http://").await?;
            let addr = l.trim_start_matches("stacklab backend on http://").to_owned();
            let r = admin(control_admin, "PUT", &format!("/admin/pools/rust/members/b{b}"), Some(json!({"addr": addr}))).await?;
            if r.status != 200 {
                bail!("registering backend {b}: {} {}", r.status, String::from_utf8_lossy(&r.body));
            }
        }
        let pc = proxy_config.display().to_string();
        let p = st.spawn("proxy", &["proxy", "--config", &pc], &[])?;
        let l = st.proc(p).wait_line("stacklab proxy: https://").await?;
        let edge_addr: SocketAddr = l.trim_start_matches("stacklab proxy: https://").parse()?;
        let edge = st.edge(edge_addr)?;
        eventually("the proxy routes to control", Duration::from_secs(10), || {
            let edge = edge.clone();
            async move { edge.call("GET", "/api/options", None, None).await.is_ok_and(|r| r.status == 200) }
        })
        .await?;
        let codes = sessions(&edge, 4, json!({"password_storage": "sha256", "cache": "none"})).await?;

        let load = Load::start(&edge, &codes, GETS, POSTS, o.seconds);
        load.until(o.seconds, 0.25).await;
        st.proc(c).signal("KILL")?;
        let down_at = load.now_ms();
        st.proc(c).wait_exit(Duration::from_secs(5)).await;
        load.until(o.seconds, 0.6).await;
        let c2 = st.spawn("control2", &["control", "--config", &config], &control_env)?;
        st.proc(c2).wait_line("stacklab control:").await?;
        let up_at = load.now_ms();
        let resent = load.resent.load(Relaxed);
        let recs = load.finish().await;
        let t = Tally::of(&recs);
        let while_down = Tally::of(recs.iter().filter(|r| r.at_ms >= down_at && r.at_ms < up_at));
        // No session lost: each still answers, through the restarted control too.
        let mut kept = 0;
        for code in &codes {
            let s = edge.call("GET", "/api/session", Some(code), None).await?;
            let u = edge.call("GET", "/api/users?q=seed", Some(code), None).await?;
            if s.status == 200 && u.status == 200 && u.body.windows(4).any(|w| w == b"seed") {
                kept += 1;
            }
        }
        // And the feed from the new control works: a new session is served.
        let fresh = sessions(&edge, 1, json!({"password_storage": "sha256", "cache": "none"}))
            .await
            .is_ok();
        let served = if while_down.sent == 0 { 0.0 } else { 100.0 * while_down.ok as f64 / while_down.sent as f64 };
        let mut fails = Vec::new();
        pass_fail(t.failed() == 0, "a request for a live session failed", &mut fails);
        pass_fail(while_down.sent > 0 && while_down.ok == while_down.sent, "not every request was served while control was down", &mut fails);
        pass_fail(kept == codes.len(), "a session was lost", &mut fails);
        pass_fail(fresh, "no new session after the restart", &mut fails);
        let figures = format!(
            "{} control_down_ms={} served_while_down={}/{} ({served:.1}%) sessions_kept={kept}/{} new_session_after_restart={}",
            figures(&t, resent),
            up_at - down_at,
            while_down.ok,
            while_down.sent,
            codes.len(),
            if fresh { "ok" } else { "failed" }
        );
        Ok(finish(name, figures, fails, Some(&t)))
    }
    .await;
    st.stop().await;
    result
}

/// `stacklab up` reloaded under load, once by SIGHUP and once by `POST /admin/reload`: no
/// request fails and the admin API still takes its token afterwards.
async fn proxy_reload(o: &Options) -> anyhow::Result<Outcome> {
    let name = "proxy-reload";
    let mut st = Stack::new(o, name, &[], "")?;
    let result = async {
        // The token generated into <data_dir>/admin.token, as on a real install.
        let config = st.config.display().to_string();
        let i = st.spawn(
            "up",
            &["up", "--config", &config],
            &[
                ("STACKLAB_BACKEND_INSTANCES", "2".to_owned()),
                ("STACKLAB_ADMIN_TOKEN", String::new()),
            ],
        )?;
        let l = st
            .proc(i)
            .wait_line("stacklab is up: https://localhost:")
            .await?;
        let port: u16 = l
            .trim_start_matches("stacklab is up: https://localhost:")
            .trim_end_matches('/')
            .parse()?;
        let admin_addr = st.proc(i).admin_addr().await?;
        let token = std::fs::read_to_string(st.dir.join("data/admin.token"))?
            .trim()
            .to_owned();
        let edge = st.edge(SocketAddr::from(([127, 0, 0, 1], port)))?;
        let codes = sessions(&edge, 4, cheap()).await?;
        let admin_with = |method: &'static str, path: &'static str| {
            let token = token.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(admin_addr).await?;
                let (mut send, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
                tokio::spawn(conn);
                let req = Request::builder()
                    .method(method)
                    .uri(path)
                    .header("host", admin_addr.to_string())
                    .header("authorization", format!("Bearer {token}"))
                    .body(Full::new(Bytes::new()))?;
                read(send.send_request(req).await?).await
            }
        };

        let load = Load::start(&edge, &codes, GETS, POSTS, o.seconds);
        load.until(o.seconds, 0.3).await;
        st.proc(i).signal("HUP")?;
        load.until(o.seconds, 0.6).await;
        let reload = admin_with("POST", "/admin/reload").await?;
        let resent = load.resent.load(Relaxed);
        let recs = load.finish().await;
        let t = Tally::of(&recs);
        let pools = admin_with("GET", "/admin/pools").await?;
        let mut fails = Vec::new();
        pass_fail(
            t.failed() == 0,
            "a request failed across a reload",
            &mut fails,
        );
        pass_fail(
            reload.status == 200,
            "POST /admin/reload was refused (after the SIGHUP reload)",
            &mut fails,
        );
        pass_fail(
            pools.status == 200,
            "the admin token is refused after the reloads",
            &mut fails,
        );
        let figures = format!(
            "{} reloads=2 (SIGHUP, then POST /admin/reload: {}) admin_after={}",
            figures(&t, resent),
            reload.status,
            pools.status
        );
        Ok(finish(name, figures, fails, Some(&t)))
    }
    .await;
    st.stop().await;
    result
}

/// A standalone proxy (following control's feed) replaced by a new process under load with
/// `stacklab proxy --upgrade`: no request fails, and the old process drains and exits.
async fn proxy_upgrade(o: &Options) -> anyhow::Result<Outcome> {
    let name = "proxy-upgrade";
    let port = free_port()?;
    let control_admin = SocketAddr::from(([127, 0, 0, 1], port));
    let mut st = Stack::new(o, name, &[], "")?;
    let proxy_config = st.dir.join("proxy.toml");
    std::fs::write(
        &proxy_config,
        format!(
            "{}\n[feed]\nurl = \"http://{control_admin}/admin/routes/feed\"\ntoken = \"{TOKEN}\"\n",
            std::fs::read_to_string(&st.config)?
        ),
    )?;
    let result = async {
        let config = st.config.display().to_string();
        let c = st.spawn(
            "control",
            &["control", "--config", &config],
            &[
                ("STACKLAB_ADMIN_ADDR", control_admin.to_string()),
                ("STACKLAB_BACKEND_INSTANCES", "2".to_owned()),
            ],
        )?;
        st.proc(c).wait_line("stacklab control:").await?;
        let pc = proxy_config.display().to_string();
        let old = st.spawn("proxy", &["proxy", "--config", &pc], &[])?;
        let l = st.proc(old).wait_line("stacklab proxy: https://").await?;
        let edge_addr: SocketAddr = l.trim_start_matches("stacklab proxy: https://").parse()?;
        let old_pid = st.proc(old).pid().context("the proxy's pid")?;
        let edge = st.edge(edge_addr)?;
        eventually(
            "the proxy routes to control",
            Duration::from_secs(10),
            || {
                let edge = edge.clone();
                async move {
                    edge.call("GET", "/api/options", None, None)
                        .await
                        .is_ok_and(|r| r.status == 200)
                }
            },
        )
        .await?;
        let codes = sessions(
            &edge,
            4,
            json!({"password_storage": "sha256", "cache": "none"}),
        )
        .await?;

        let load = Load::start(&edge, &codes, GETS, POSTS, o.seconds);
        load.until(o.seconds, 0.3).await;
        let t0 = Instant::now();
        let new = st.spawn("proxy-new", &["proxy", "--config", &pc, "--upgrade"], &[])?;
        st.proc(new).wait_line("stacklab proxy: https://").await?;
        let took_ms = t0.elapsed().as_millis();
        let exit = st.proc(old).wait_exit(Duration::from_secs(15)).await;
        let old_exit_ms = t0.elapsed().as_millis();
        let resent = load.resent.load(Relaxed);
        let recs = load.finish().await;
        let t = Tally::of(&recs);
        let new_pid = st.proc(new).pid();
        // After: the edge answers from the new process (old is gone), HTTP/1.1 over the same port.
        let after = edge
            .call("GET", "/api/users?limit=1", Some(&codes[0]), None)
            .await?;
        let mut fails = Vec::new();
        pass_fail(
            t.failed() == 0,
            "a request failed across the upgrade",
            &mut fails,
        );
        pass_fail(
            exit.is_some_and(|s| s.success()),
            "the old process did not exit cleanly",
            &mut fails,
        );
        pass_fail(
            after.status == 200,
            "the new process does not serve",
            &mut fails,
        );
        pass_fail(new_pid.is_some(), "the new process is gone", &mut fails);
        let figures = format!(
            "{} old_pid={old_pid} new_pid={} handover_ms={took_ms} old_exit_ms={old_exit_ms} ({})",
            figures(&t, resent),
            new_pid.map_or("-".into(), |p| p.to_string()),
            exit.map_or("still running".into(), |s| s.to_string())
        );
        Ok(finish(name, figures, fails, Some(&t)))
    }
    .await;
    st.stop().await;
    result
}

/// Hostile clients at the edge — slowloris (stalled TLS handshakes and trickled request
/// heads), oversized headers and bodies, 10k connections opened and dropped — while a normal
/// client (another loopback address) keeps its load going: it is served throughout, and each
/// abuse gets the limit's answer.
async fn edge_abuse(o: &Options) -> anyhow::Result<Outcome> {
    let name = "edge-abuse";
    let mut st = Stack::new(
        o,
        name,
        &[
            (
                "header_read_timeout_ms = 10000",
                "header_read_timeout_ms = 2000",
            ),
            (
                "tls_handshake_timeout_ms = 10000",
                "tls_handshake_timeout_ms = 2000",
            ),
        ],
        "",
    )?;
    let result = async {
        let (_, edge_addr, _) = st.up(2).await?;
        let edge = st.edge(edge_addr)?;
        let codes = sessions(&edge, 2, cheap()).await?;
        let normal = edge.from(IpAddr::from([127, 0, 0, 2]));
        let load = Load::start(&normal, &codes, GETS / 2, 1, o.seconds);

        // 10k connections opened and dropped at once (RST), 256 at a time.
        let churn = {
            let edge = edge.clone();
            tokio::spawn(async move {
                let sem = Arc::new(tokio::sync::Semaphore::new(256));
                let mut set = tokio::task::JoinSet::new();
                for i in 0..10_000u32 {
                    let permit = Arc::clone(&sem).acquire_owned().await;
                    let e = edge.from(IpAddr::from([127, 0, 1, (i % 200) as u8 + 1]));
                    set.spawn(async move {
                        let _p = permit;
                        e.tcp().await.is_ok()
                    });
                }
                let mut opened = 0;
                while let Some(r) = set.join_next().await {
                    opened += usize::from(r.unwrap_or(false));
                }
                opened
            })
        };
        // Slowloris: 200 connections that never finish the TLS handshake, 200 that trickle a
        // request head a byte every 300 ms; the server must close them all.
        let slow = {
            let edge = edge.from(IpAddr::from([127, 0, 0, 5]));
            tokio::spawn(async move {
                let mut set = tokio::task::JoinSet::new();
                for i in 0..400 {
                    let edge = edge.clone();
                    set.spawn(async move {
                        let started = Instant::now();
                        let limit = Duration::from_secs(8);
                        if i % 2 == 0 {
                            let Ok(mut tcp) = edge.tcp().await else { return (false, false) };
                            let mut b = [0u8; 64];
                            let closed = matches!(tokio::time::timeout(limit, tokio::io::AsyncReadExt::read(&mut tcp, &mut b)).await, Ok(Ok(0) | Err(_)));
                            (closed, false)
                        } else {
                            let Ok(tcp) = edge.tcp().await else { return (false, false) };
                            let Ok(mut tls) = tokio_rustls::TlsConnector::from(Arc::clone(&edge.tls))
                                .connect(rustls_pki_types::ServerName::try_from("localhost").expect("a name"), tcp)
                                .await
                            else {
                                return (false, false);
                            };
                            let head = b"GET /api/options HTTP/1.1\r\nhost: localhost\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
                            for byte in head.iter() {
                                if started.elapsed() > limit || tls.write_all(&[*byte]).await.is_err() || tls.flush().await.is_err() {
                                    break;
                                }
                                tokio::time::sleep(Duration::from_millis(300)).await;
                            }
                            let mut rest = Vec::new();
                            let read = tokio::time::timeout(Duration::from_secs(1), tokio::io::AsyncReadExt::read_to_end(&mut tls, &mut rest)).await;
                            let got_408 = rest.starts_with(b"HTTP/1.1 408");
                            (started.elapsed() < limit + Duration::from_secs(1) && read.is_ok(), got_408)
                        }
                    });
                }
                let (mut closed, mut got_408) = (0, 0);
                while let Some(r) = set.join_next().await {
                    let (c, t) = r.unwrap_or((false, false));
                    closed += usize::from(c);
                    got_408 += usize::from(t);
                }
                (closed, got_408)
            })
        };
        // Oversized headers (64 KiB) and bodies (declared 16 MiB; streamed 9 MiB).
        let big = edge.from(IpAddr::from([127, 0, 0, 4]));
        let (mut h431, mut b413) = (0, 0);
        let huge = "a".repeat(64 * 1024);
        for _ in 0..20 {
            let mut send = big.connect().await?;
            let req = Request::get("/api/options")
                .header("host", "localhost")
                .header("x-big", huge.as_str())
                .body(Full::new(Bytes::new()))?;
            if let Ok(Ok(res)) = tokio::time::timeout(REQUEST_TIMEOUT, send.send_request(req)).await {
                h431 += usize::from(res.status() == 431);
            }
        }
        let mut b413_streamed = 0;
        for i in 0..20 {
            // Half declare 16 MiB, half stream 9 MiB chunked: both past limits.max_body_bytes.
            let status = oversized_body(&big, &codes[0], i % 2 == 1).await;
            if status == "413" {
                b413 += 1;
                b413_streamed += i % 2;
            } else if o.keep {
                eprintln!("oversized body {i} (chunked: {}): {status}", i % 2 == 1);
            }
        }
        let opened = churn.await.unwrap_or(0);
        let (slow_closed, slow_408) = slow.await.unwrap_or((0, 0));
        let resent = load.resent.load(Relaxed);
        let recs = load.finish().await;
        let t = Tally::of(&recs);
        let mut fails = Vec::new();
        pass_fail(t.failed() == 0 && t.client_errors == 0, "the normal client was not served throughout", &mut fails);
        pass_fail(h431 == 20, "an oversized header did not get 431", &mut fails);
        // Declared oversized bodies get the proxy's 413; streamed ones the backend's (it reads
        // past its limit before answering, so the proxy is never reset mid-write) or the
        // proxy's, whichever limit is met first.
        pass_fail(
            b413 - b413_streamed == 10,
            "a declared oversized body did not get 413",
            &mut fails,
        );
        pass_fail(
            b413_streamed == 10,
            "a streamed oversized body did not get 413",
            &mut fails,
        );
        pass_fail(slow_closed == 400, "a slow connection was not closed in time", &mut fails);
        let figures = format!(
            "normal_client: {} | churn_opened_and_dropped={opened}/10000 slowloris_closed_in_time={slow_closed}/400 (408 sent to {slow_408}/200 trickled heads) headers_431={h431}/20 bodies_413_declared={}/10 bodies_413_streamed={b413_streamed}/10",
            figures(&t, resent),
            b413 - b413_streamed
        );
        Ok(finish(name, figures, fails, Some(&t)))
    }
    .await;
    st.stop().await;
    result
}

/// Sends an oversized body as a client that reads while it writes (as curl does), and says
/// the answer's status (or what happened instead).
async fn oversized_body(edge: &Edge, code: &str, chunked: bool) -> String {
    let Ok(tcp) = edge.tcp().await else {
        return "no connection".into();
    };
    let Ok(tls) = tokio_rustls::TlsConnector::from(Arc::clone(&edge.tls))
        .connect(
            rustls_pki_types::ServerName::try_from("localhost").expect("a name"),
            tcp,
        )
        .await
    else {
        return "no TLS".into();
    };
    let (mut rd, mut wr) = tokio::io::split(tls);
    let framing = if chunked {
        "transfer-encoding: chunked".to_owned()
    } else {
        format!("content-length: {}", 16 << 20)
    };
    let head = format!(
        "POST /api/users HTTP/1.1\r\nhost: localhost\r\ncookie: stacklab_session={code}\r\ncontent-type: application/json\r\n{framing}\r\n\r\n"
    );
    let writer = tokio::spawn(async move {
        if wr.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let chunk = vec![b' '; 64 * 1024];
        let total = if chunked { 9 << 20 } else { 16 << 20 };
        let mut sent = 0;
        while sent < total {
            let ok = if chunked {
                let mut c = format!("{:x}\r\n", chunk.len()).into_bytes();
                c.extend_from_slice(&chunk);
                c.extend_from_slice(b"\r\n");
                wr.write_all(&c).await.is_ok()
            } else {
                wr.write_all(&chunk).await.is_ok()
            };
            if !ok {
                return;
            }
            sent += chunk.len();
        }
        let _ = wr.write_all(if chunked { b"0\r\n\r\n" } else { b"" }).await;
        let _ = wr.flush().await;
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let mut end = String::new();
    while got.len() < 12 && Instant::now() < deadline {
        match tokio::time::timeout_at(deadline, tokio::io::AsyncReadExt::read(&mut rd, &mut buf))
            .await
        {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            Ok(Ok(_)) => end = "closed".into(),
            Ok(Err(e)) => end = e.to_string(),
            Err(_) => end = "timeout".into(),
        }
        if !end.is_empty() {
            break;
        }
    }
    writer.abort();
    match std::str::from_utf8(&got)
        .ok()
        .and_then(|t| t.strip_prefix("HTTP/1.1 "))
    {
        Some(rest) => rest.chars().take(3).collect(),
        None => format!("no answer ({end})"),
    }
}

/// A docker session's database container killed from outside (`docker kill`) under load on
/// it and on two other sessions (another docker one and an embedded one): the victim's
/// requests get a clear JSON error (never a hang past the request timeout), control marks it
/// `broken` with what happened, `POST /api/session/reprovision` gives it a fresh stack that
/// serves again, and the other sessions see no failed request at all.
async fn db_container_kill(o: &Options) -> anyhow::Result<Outcome> {
    let name = "db-container-kill";
    let Some(docker) = docker_section(o)? else {
        return Ok(skipped(name));
    };
    let mut st = Stack::new(o, name, &[], &docker)?;
    let result = async {
        let (_, edge_addr, _) = st.up(2).await?;
        let edge = st.edge(edge_addr)?;
        let pg = json!({"provisioner": "docker", "database": "postgres", "cache": "redis", "password_storage": "sha256"});
        let mut dockered = sessions(&edge, 2, pg).await?;
        let embedded = sessions(&edge, 1, cheap()).await?;
        let victim = dockered.remove(0);
        let others: Vec<String> = dockered.into_iter().chain(embedded).collect();
        let v = edge.call("GET", "/api/session", Some(&victim), None).await?.json();
        let container = v["resources"]["database"]["container"]
            .as_str()
            .with_context(|| format!("no database container in {v}"))?
            .to_owned();

        // The victim's load outlasts the others' by enough for a request stuck on the dead
        // database (the backend's 5 s connection wait) and the re-provision, so requests after
        // it are seen.
        let victim_seconds = o.seconds + 10.0;
        let load_victim = Load::start(&edge, std::slice::from_ref(&victim), 2, 0, victim_seconds);
        let load_others = Load::start(&edge, &others, GETS - 2, POSTS, o.seconds);
        load_others.until(o.seconds, 0.25).await;
        // Taken before the command: the container dies while `docker kill` runs.
        let killed_at_ms = load_victim.now_ms();
        let kill = std::process::Command::new("docker")
            .args(["kill", &container])
            .output()
            .context("cannot run docker kill")?;
        if !kill.status.success() {
            bail!("docker kill {container}: {}", String::from_utf8_lossy(&kill.stderr));
        }
        let killed = Instant::now();
        let mut detect_ms = None;
        while killed.elapsed() < Duration::from_secs(20) {
            if matches!(
                edge.call("GET", "/api/session", Some(&victim), None).await,
                Ok(r) if r.json()["state"] == "broken"
            ) {
                detect_ms = Some(killed.elapsed().as_millis());
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let asked = Instant::now();
        let r = edge
            .call("POST", "/api/session/reprovision", Some(&victim), Some(json!({})))
            .await?;
        let reprovision_ms = asked.elapsed().as_millis();
        let reprovisioned = r.status == 200 && r.json()["state"] == "ready";
        let back_at_ms = load_victim.now_ms();
        let others_resent = load_others.resent.load(Relaxed);
        let victim_recs = load_victim.finish().await;
        let other_recs = load_others.finish().await;
        let others_t = Tally::of(&other_recs);
        // Requests sent just before the kill may be in flight when it lands: they count with
        // the broken ones (a victim request otherwise takes milliseconds).
        let in_flight_ms = 200;
        let before = Tally::of(
            victim_recs
                .iter()
                .filter(|r| r.at_ms + in_flight_ms < killed_at_ms),
        );
        let broken: Vec<&Rec> = victim_recs
            .iter()
            .filter(|r| r.at_ms + in_flight_ms >= killed_at_ms && r.at_ms < back_at_ms)
            .collect();
        let broken_failed = broken.iter().filter(|r| r.failed()).count();
        let broken_unclear = broken
            .iter()
            .filter(|r| r.failed() && !r.json_error)
            .count();
        let after = Tally::of(victim_recs.iter().filter(|r| r.at_ms >= back_at_ms));
        let victim_failure = before
            .first_failure
            .clone()
            .or_else(|| after.first_failure.clone());
        // The victim serves again once re-made: a user can be created and read.
        let fresh = edge
            .call(
                "POST",
                "/api/users",
                Some(&victim),
                Some(json!({"username": "again", "email": "again@example.com", "password": "drill password"})),
            )
            .await?;
        for code in std::iter::once(&victim).chain(&others) {
            let _ = edge.call("DELETE", "/api/session", Some(code), None).await;
        }
        let mut fails = Vec::new();
        pass_fail(others_t.failed() == 0, "another session saw a failed request", &mut fails);
        pass_fail(before.failed() == 0, "the victim failed before the kill", &mut fails);
        pass_fail(broken_unclear == 0, "a request of the broken session failed without a JSON error", &mut fails);
        pass_fail(detect_ms.is_some(), "the session was never marked broken", &mut fails);
        pass_fail(reprovisioned, "POST /api/session/reprovision did not make it ready", &mut fails);
        pass_fail(fresh.status == 201, "the re-made session did not take a new user", &mut fails);
        pass_fail(after.failed() == 0, "the victim failed after it was re-made", &mut fails);
        pass_fail(after.ok > 0, "the victim served nothing after it was re-made", &mut fails);
        let figures = format!(
            "others: {} | victim: before_ok={}/{} while_broken={} (failed={} clear_json={}) after_ok={}/{} detect_ms={} reprovision_ms={} reprovision_status={} new_user={}",
            figures(&others_t, others_resent),
            before.ok,
            before.sent,
            broken.len(),
            broken_failed,
            broken_failed - broken_unclear,
            after.ok,
            after.sent,
            detect_ms.map_or("never".to_owned(), |v| v.to_string()),
            reprovision_ms,
            r.status,
            fresh.status,
        );
        let mut figures = figures;
        if let (false, Some(f)) = (fails.is_empty(), victim_failure) {
            figures.push_str(&format!(" victim_failure=\"{f}\""));
        }
        Ok(finish(name, figures, fails, Some(&others_t)))
    }
    .await;
    st.stop().await;
    result
}
