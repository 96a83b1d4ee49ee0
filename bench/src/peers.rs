//! The three proxies under test: their configs, how they are started, and how they stop.
//!
//! Each is configured the same way: `workers` worker threads or processes (stacklab's tokio
//! runtime has one worker per core, so `workers` is the core count), a plain HTTP/1.1
//! listener and a TLS listener (HTTP/2 and HTTP/1.1 by ALPN) on loopback, the same
//! certificate, keep-alive to the one upstream, `X-Forwarded-For` added, logging off, and
//! limits high enough for 10k idle connections. A proxy is started fresh for every run so
//! that its peak RSS belongs to that run alone.

use crate::tls::CertFiles;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The admin token of the stacklab peer.
pub const ADMIN_TOKEN: &str = "stacklab-bench-admin-token";
/// Connections each peer accepts (10k idle ones plus the generator's).
pub const MAX_CONNECTIONS: usize = 16_000;
/// Upstream keep-alive connections each peer may keep idle.
pub const UPSTREAM_IDLE: usize = 256;

/// Errors starting a peer.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("{what} is not installed ({hint})")]
    Missing { what: &'static str, hint: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start {what}: {source}")]
    Spawn {
        what: &'static str,
        source: std::io::Error,
    },
    #[error("{what} did not become ready within {secs} s; its log {log} says: {tail}")]
    NotReady {
        what: &'static str,
        secs: u64,
        log: PathBuf,
        tail: String,
    },
    #[error("no free port: {0}")]
    Port(std::io::Error),
}

/// Which proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum PeerKind {
    Stacklab,
    Nginx,
    Haproxy,
}

impl PeerKind {
    pub const ALL: [PeerKind; 3] = [PeerKind::Stacklab, PeerKind::Nginx, PeerKind::Haproxy];

    pub fn name(self) -> &'static str {
        match self {
            PeerKind::Stacklab => "stacklab",
            PeerKind::Nginx => "nginx",
            PeerKind::Haproxy => "haproxy",
        }
    }

    /// Whether the peer can serve HTTP/3 on this machine (Debian's nginx 1.22 and HAProxy
    /// 2.6 are built without QUIC).
    pub fn has_http3(self) -> bool {
        self == PeerKind::Stacklab
    }
}

/// Where and how peers are set up.
#[derive(Debug, Clone)]
pub struct Setup {
    pub dir: PathBuf,
    pub certs: CertFiles,
    pub upstream: SocketAddr,
    pub workers: usize,
    pub stacklab_bin: PathBuf,
    /// The soft `RLIMIT_NOFILE` the peers inherit.
    pub nofile: u64,
    /// One process (nginx without its master), as profiling under callgrind wants.
    pub single_process: bool,
}

/// Extra stacklab settings for the routing scenario.
#[derive(Debug, Clone, Default)]
pub struct StacklabExtra {
    /// Follow a route feed at this URL (sessions come from it).
    pub feed_url: Option<String>,
    /// `[edge] workers` (default: one per core, as `Setup::workers` says).
    pub workers: Option<usize>,
}

/// A peer that is running.
pub struct Running {
    pub kind: PeerKind,
    pub plain: SocketAddr,
    pub tls: SocketAddr,
    pub admin: Option<SocketAddr>,
    pub pid: u32,
    child: Child,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (pid {})", self.kind.name(), self.pid)
    }
}

impl Running {
    /// Stops the peer: SIGTERM, then SIGKILL after two seconds.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    /// Stops the peer like [`Running::stop`], waiting up to `grace` after SIGTERM (a peer
    /// under valgrind writes its profile on the way out). True when it exited by itself.
    pub fn stop_within(mut self, grace: Duration) -> bool {
        self.terminate(grace)
    }

    fn stop_inner(&mut self) {
        self.terminate(Duration::from_secs(2));
    }

    fn terminate(&mut self, grace: Duration) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop_inner();
        }
    }
}

/// A loopback port free at the time of asking (TCP; for stacklab's TLS port UDP as well).
pub fn free_port() -> Result<u16, PeerError> {
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(PeerError::Port)?;
        let port = l.local_addr().map_err(PeerError::Port)?.port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
}

fn which(bin: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}

/// The path of `nginx` or `haproxy`, or how to install it.
pub fn find(kind: PeerKind, setup: &Setup) -> Result<PathBuf, PeerError> {
    let (bin, what, hint) = match kind {
        PeerKind::Stacklab => {
            return if setup.stacklab_bin.is_file() {
                Ok(setup.stacklab_bin.clone())
            } else {
                Err(PeerError::Missing {
                    what: "the stacklab binary",
                    hint: format!(
                        "build it with `cargo build --release -p stacklab`, or pass --stacklab; looked at {}",
                        setup.stacklab_bin.display()
                    ),
                })
            };
        }
        PeerKind::Nginx => (
            "nginx",
            "nginx",
            "apt-get install -y nginx-light (or nginx)",
        ),
        PeerKind::Haproxy => ("haproxy", "HAProxy", "apt-get install -y haproxy"),
    };
    which(bin).ok_or_else(|| PeerError::Missing {
        what,
        hint: hint.to_owned(),
    })
}

/// stacklab's HTTP/1.1 server for this run: `STACKLAB_BENCH_HTTP1=hyper` measures hyper's
/// against ours (`stacklab`, the default) with everything else the same.
pub fn http1_server() -> &'static str {
    match std::env::var("STACKLAB_BENCH_HTTP1").as_deref() {
        Ok("hyper") => "hyper",
        _ => "stacklab",
    }
}

/// stacklab's config.
pub fn stacklab_config(
    setup: &Setup,
    plain: u16,
    tls: u16,
    admin: u16,
    extra: &StacklabExtra,
) -> String {
    let mut s = format!(
        r#"# Written by stacklab-bench.
data_dir = "{data}"

[log]
filter = "error"
access_log = false

[edge]
addr = "127.0.0.1:{tls}"
http_addr = "127.0.0.1:{plain}"
plain_http = "serve"
http3 = true
workers = {workers}
http1 = "{http1}"

[[edge.certificates]]
server_names = ["localhost"]
cert = "{cert}"
key = "{key}"

[admin]
addr = "127.0.0.1:{admin}"
token = "{token}"

[limits]
max_connections = {maxc}
max_connections_per_client = {maxc}
upstream_idle_per_member = {idle}
max_header_bytes = 16384

[[pools]]
name = "up"
algorithm = "round_robin"
members = [{{ id = "u1", addr = "{up}" }}]

[[routes]]
path = "/"
pool = "up"
"#,
        data = setup.dir.join("stacklab-data").display(),
        cert = setup.certs.cert.display(),
        key = setup.certs.key.display(),
        token = ADMIN_TOKEN,
        maxc = MAX_CONNECTIONS,
        idle = UPSTREAM_IDLE,
        up = setup.upstream,
        workers = extra.workers.unwrap_or(setup.workers),
        http1 = http1_server(),
    );
    if let Some(url) = &extra.feed_url {
        s.push_str(&format!(
            r#"
[[routes]]
path = "/api/"
session_pool = true

[feed]
url = "{url}"
token = "{ADMIN_TOKEN}"
"#
        ));
    }
    s
}

/// nginx's config: the same settings in nginx's words.
pub fn nginx_config(setup: &Setup, plain: u16, tls: u16) -> String {
    let d = setup.dir.join("nginx");
    format!(
        r#"# Written by stacklab-bench.
daemon off;
master_process {master};
worker_processes {workers};
worker_rlimit_nofile {nofile};
pid {d}/nginx.pid;
error_log {d}/error.log error;

events {{
    worker_connections {maxc};
}}

http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_timeout 60s;
    keepalive_requests 1000000;
    http2_max_requests 1000000;

    upstream up {{
        server {up};
        keepalive {idle};
        keepalive_requests 1000000;
    }}

    server {{
        listen 127.0.0.1:{plain};
        listen 127.0.0.1:{tls} ssl http2;
        server_name localhost;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;

        location / {{
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_max_temp_file_size 0;
        }}
    }}
}}
"#,
        d = d.display(),
        master = if setup.single_process { "off" } else { "on" },
        workers = setup.workers,
        nofile = MAX_CONNECTIONS + 1000,
        maxc = MAX_CONNECTIONS,
        up = setup.upstream,
        idle = UPSTREAM_IDLE,
        cert = setup.certs.cert.display(),
        key = setup.certs.key.display(),
    )
}

/// HAProxy's config: the same settings in HAProxy's words. HAProxy reserves two descriptors
/// per connection and refuses to start past the limit, so its `maxconn` is what the limit
/// allows.
pub fn haproxy_config(setup: &Setup, plain: u16, tls: u16) -> String {
    let maxc = MAX_CONNECTIONS.min((setup.nofile.saturating_sub(40) / 2) as usize);
    format!(
        r#"# Written by stacklab-bench.
global
    nbthread {workers}
    maxconn {maxc}
    tune.ssl.default-dh-param 2048

defaults
    mode http
    option http-keep-alive
    option forwardfor
    http-reuse safe
    timeout connect 2s
    timeout client 60s
    timeout server 30s
    timeout http-keep-alive 60s
    timeout http-request 10s

frontend fe
    bind 127.0.0.1:{plain}
    bind 127.0.0.1:{tls} ssl crt {pem} alpn h2,http/1.1
    maxconn {maxc}
    default_backend be

backend be
    server u1 {up} pool-max-conn {idle}
"#,
        workers = setup.workers,
        pem = setup.certs.combined.display(),
        up = setup.upstream,
        idle = UPSTREAM_IDLE,
    )
}

fn write(path: &Path, text: &str) -> Result<(), PeerError> {
    if let Some(parent) = path.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    std::fs::write(path, text).map_err(|source| PeerError::Write {
        path: path.to_owned(),
        source,
    })
}

/// Starts a peer and waits until its plain listener answers through to the upstream.
pub fn start(kind: PeerKind, setup: &Setup, extra: &StacklabExtra) -> Result<Running, PeerError> {
    start_under(kind, setup, extra, &[], Duration::from_secs(10))
}

/// [`start`] with the peer's command run under `wrapper` (for example
/// `valgrind --tool=callgrind ...`), waiting up to `ready_within` for it to answer.
pub fn start_under(
    kind: PeerKind,
    setup: &Setup,
    extra: &StacklabExtra,
    wrapper: &[String],
    ready_within: Duration,
) -> Result<Running, PeerError> {
    let bin = find(kind, setup)?;
    let plain = free_port()?;
    let tls = free_port()?;
    let log = setup.dir.join(format!("{}.log", kind.name()));
    let (what, mut cmd, admin) = match kind {
        PeerKind::Stacklab => {
            let admin = free_port()?;
            let cfg = setup.dir.join("stacklab.toml");
            write(&cfg, &stacklab_config(setup, plain, tls, admin, extra))?;
            let mut c = Command::new(bin);
            c.arg("proxy").arg("--config").arg(&cfg);
            // The environment must not override the generated config.
            for var in [
                "STACKLAB_EDGE_ADDR",
                "STACKLAB_HTTP_ADDR",
                "STACKLAB_ADMIN_ADDR",
                "STACKLAB_ADMIN_TOKEN",
                "STACKLAB_DATA_DIR",
                "STACKLAB_LOG",
            ] {
                c.env_remove(var);
            }
            ("stacklab", c, Some(admin))
        }
        PeerKind::Nginx => {
            let d = setup.dir.join("nginx");
            let _ = std::fs::create_dir_all(&d);
            let cfg = d.join("nginx.conf");
            write(&cfg, &nginx_config(setup, plain, tls))?;
            let mut c = Command::new(bin);
            c.arg("-c")
                .arg(&cfg)
                .arg("-p")
                .arg(&d)
                .arg("-e")
                .arg(d.join("error.log"));
            ("nginx", c, None)
        }
        PeerKind::Haproxy => {
            let cfg = setup.dir.join("haproxy.cfg");
            write(&cfg, &haproxy_config(setup, plain, tls))?;
            let mut c = Command::new(bin);
            c.arg("-db").arg("-f").arg(&cfg);
            ("HAProxy", c, None)
        }
    };
    if let Some((first, rest)) = wrapper.split_first() {
        let mut wrapped = Command::new(first);
        wrapped
            .args(rest)
            .arg(cmd.get_program())
            .args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => wrapped.env(k, v),
                None => wrapped.env_remove(k),
            };
        }
        cmd = wrapped;
    }
    let log_file = std::fs::File::create(&log).map_err(|source| PeerError::Write {
        path: log.clone(),
        source,
    })?;
    let log_err = log_file.try_clone().map_err(|source| PeerError::Write {
        path: log.clone(),
        source,
    })?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(log_err)
        .spawn()
        .map_err(|source| PeerError::Spawn { what, source })?;
    let running = Running {
        kind,
        plain: ([127, 0, 0, 1], plain).into(),
        tls: ([127, 0, 0, 1], tls).into(),
        admin: admin.map(|p| ([127, 0, 0, 1], p).into()),
        pid: child.id(),
        child,
    };
    wait_ready(running, what, &log, ready_within)
}

/// A plain `GET /` answered 200 through the peer.
pub fn probe(addr: SocketAddr, path: &str, headers: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let req =
        format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n{headers}\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.1 200")
}

fn wait_ready(
    mut r: Running,
    what: &'static str,
    log: &Path,
    within: Duration,
) -> Result<Running, PeerError> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if probe(r.plain, "/", "") {
            return Ok(r);
        }
        if let Ok(Some(_)) = r.child.try_wait() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let tail: String = text
        .lines()
        .rev()
        .take(5)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join(" | ");
    r.stop_inner();
    Err(PeerError::NotReady {
        what,
        secs: within.as_secs(),
        log: log.to_owned(),
        tail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> Setup {
        Setup {
            dir: PathBuf::from("/tmp/x"),
            certs: CertFiles {
                cert: "/tmp/x/c.crt".into(),
                key: "/tmp/x/c.key".into(),
                combined: "/tmp/x/c.pem".into(),
            },
            upstream: "127.0.0.1:9999".parse().unwrap(),
            workers: 2,
            stacklab_bin: "/nonexistent".into(),
            nofile: 20_000,
            single_process: false,
        }
    }

    #[test]
    fn configs_name_the_same_settings() {
        let s = setup();
        let n = nginx_config(&s, 1, 2);
        assert!(n.contains("worker_processes 2;"));
        assert!(n.contains("access_log off;"));
        assert!(n.contains("keepalive 256;"));
        assert!(n.contains("/tmp/x/c.crt"));
        let h = haproxy_config(&s, 1, 2);
        assert!(h.contains("nbthread 2"));
        assert!(h.contains("maxconn 9980"), "{h}");
        assert!(h.contains("alpn h2,http/1.1"));
        assert!(h.contains("127.0.0.1:9999"));
        let st = stacklab_config(&s, 1, 2, 3, &StacklabExtra::default());
        assert!(st.contains("access_log = false"));
        assert!(st.contains(r#"addr = "127.0.0.1:9999""#));
        assert!(!st.contains("[feed]"));
        let st = stacklab_config(
            &s,
            1,
            2,
            3,
            &StacklabExtra {
                feed_url: Some("http://127.0.0.1:5/feed".into()),
                ..StacklabExtra::default()
            },
        );
        assert!(st.contains("[feed]") && st.contains("session_pool = true"));
    }

    #[test]
    fn a_missing_stacklab_binary_says_how_to_build_it() {
        let e = find(PeerKind::Stacklab, &setup()).unwrap_err().to_string();
        assert!(e.contains("cargo build --release -p stacklab"), "{e}");
    }
}
