//! Test stacks on real sockets: `stacklab up` in-process (proxy + control) with real backend
//! processes, an HTTPS client that keeps its cookie, and the admin API.

use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use stacklab_control::config::ControlConfig;
use stacklab_control::serve::Up;
use stacklab_proxy::config::Config;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub const TOKEN: &str = "control-test-admin-token-0123456789";

pub struct TestEnv(pub BTreeMap<&'static str, String>);

impl stacklab_proxy::config::Env for TestEnv {
    fn var(&self, key: &str) -> Option<String> {
        self.0.get(key).cloned()
    }
}

pub use stacklab_testkit::temp_dir;

/// The embedded default config on loopback port 0, with test timings: session use reported
/// every 20 ms, the reaper left to the test (`reap_once`), backends from this build.
pub fn configs(dir: &Path, instances: usize) -> (Config, ControlConfig) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let env = TestEnv(BTreeMap::from([
        ("STACKLAB_EDGE_ADDR", "127.0.0.1:0".to_owned()),
        ("STACKLAB_HTTP_ADDR", "127.0.0.1:0".to_owned()),
        ("STACKLAB_ADMIN_ADDR", "127.0.0.1:0".to_owned()),
        ("STACKLAB_ADMIN_TOKEN", TOKEN.to_owned()),
        ("STACKLAB_DATA_DIR", dir.join("data").display().to_string()),
    ]));
    let mut cfg = Config::from_toml(stacklab_proxy::DEFAULT_CONFIG, &env).unwrap();
    cfg.sessions.report_interval = Duration::from_millis(20);
    let mut ccfg =
        ControlConfig::from_sections(cfg.other.get("control"), cfg.other.get("shared"), &|_| None)
            .unwrap();
    ccfg.backends.instances = instances;
    ccfg.backends.command = Some(PathBuf::from(env!("CARGO_BIN_EXE_stacklab")));
    ccfg.shared.instance = shared_tag(&dir.join("data"));
    ccfg.reaper_interval = Duration::from_secs(3600);
    (cfg, ccfg)
}

pub async fn start_up(
    dir: &Path,
    instances: usize,
    tweak: impl FnOnce(&mut Config, &mut ControlConfig),
) -> Up {
    let (mut cfg, mut ccfg) = configs(dir, instances);
    tweak(&mut cfg, &mut ccfg);
    stacklab_control::serve::up(cfg, ccfg)
        .await
        .expect("stacklab up starts")
}

/// The shared engines `scripts/test` started, each `None` where it did not (see [`engine`]).
#[derive(Clone)]
pub struct Engines {
    pub postgres: Option<String>,
    pub redis: Option<String>,
    pub mysql: Option<String>,
    pub memcached: Option<String>,
}

impl Engines {
    pub fn from_env() -> Engines {
        Engines {
            postgres: engine("STACKLAB_TEST_POSTGRES_URL"),
            redis: engine("STACKLAB_TEST_REDIS_URL"),
            mysql: engine("STACKLAB_TEST_MYSQL_URL"),
            memcached: engine("STACKLAB_TEST_MEMCACHED_ADDR"),
        }
    }
}

/// [`start_up`] with the shared provisioner on `engines`.
pub async fn start_up_on(dir: &Path, instances: usize, engines: &Engines) -> Up {
    let e = engines.clone();
    start_up(dir, instances, move |_, c| {
        c.shared.postgres_url = e.postgres.map(stacklab_types::Secret::new);
        c.shared.redis_url = e.redis.map(stacklab_types::Secret::new);
        c.shared.mysql_url = e.mysql.map(stacklab_types::Secret::new);
        c.shared.memcached_addr = e.memcached;
    })
    .await
}

/// An answer, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// Reads a response whole.
    pub async fn read(res: hyper::Response<hyper::body::Incoming>) -> Result<Answer, String> {
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let body = res
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
    pub fn field(&self) -> String {
        self.json()["error"]["field"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A browser-like HTTPS client: HTTP/2 over TLS to the edge, trusting the self-signed
/// certificate of the data dir, keeping the session cookie it is given.
#[derive(Clone)]
pub struct Browser {
    pub port: u16,
    tls: Arc<rustls::ClientConfig>,
    send: Arc<tokio::sync::Mutex<Option<hyper::client::conn::http2::SendRequest<Full<Bytes>>>>>,
    pub cookie: Option<String>,
}

impl Browser {
    pub fn new(data_dir: &Path, port: u16) -> Self {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(data_dir.join("tls/self-signed.crt")).unwrap())
            .unwrap();
        let mut tls = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"h2".to_vec()];
        Self {
            port,
            tls: Arc::new(tls),
            send: Arc::default(),
            cookie: None,
        }
    }

    /// Same certificate trust, another port (the edge after a restart), same cookie.
    pub fn on_port(&self, port: u16) -> Self {
        Self {
            port,
            tls: Arc::clone(&self.tls),
            send: Arc::default(),
            cookie: self.cookie.clone(),
        }
    }

    async fn sender(&self) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
        let mut guard = self.send.lock().await;
        if let Some(s) = guard.as_ref().filter(|s| !s.is_closed()) {
            return s.clone();
        }
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::clone(&self.tls))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let (send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        *guard = Some(send.clone());
        send
    }

    pub async fn send(
        &mut self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Answer {
        let answer = self
            .send_raw(
                method,
                path,
                body.map(|b| ("application/json", b.to_string())),
            )
            .await;
        if let Some(sc) = answer
            .headers
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
        {
            let value = sc
                .split(';')
                .next()
                .unwrap_or_default()
                .trim_start_matches("stacklab_session=");
            self.cookie = (!value.is_empty()).then(|| value.to_owned());
        }
        answer
    }

    pub async fn send_raw(&self, method: &str, path: &str, body: Option<(&str, String)>) -> Answer {
        self.try_send(method, path, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    pub async fn try_send(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, String)>,
    ) -> Result<Answer, String> {
        let body = body.map(|(ct, text)| (ct, text.into_bytes()));
        self.request(method, path, &[], body).await
    }

    /// A request exactly as given: extra headers (sent after the cookie, if the browser holds
    /// one), any bytes as the body, the cookie left as it is.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Answer, String> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("https://localhost:{}{path}", self.port));
        if let Some(c) = &self.cookie {
            req = req.header("cookie", format!("stacklab_session={c}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some((ct, _)) = &body {
            if !ct.is_empty() {
                req = req.header("content-type", *ct);
            }
        }
        let req = req
            .body(Full::new(Bytes::from(
                body.map(|b| b.1).unwrap_or_default(),
            )))
            .map_err(|e| e.to_string())?;
        let mut send = self.sender().await;
        let res = tokio::time::timeout(Duration::from_secs(20), send.send_request(req))
            .await
            .map_err(|_| "timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        Answer::read(res).await
    }

    /// A GET whose body is left to the caller to read as it streams (SSE).
    pub async fn open_stream(&self, path: &str) -> http::Response<hyper::body::Incoming> {
        let mut req = Request::get(format!("https://localhost:{}{path}", self.port));
        if let Some(c) = &self.cookie {
            req = req.header("cookie", format!("stacklab_session={c}"));
        }
        let mut send = self.sender().await;
        send.send_request(req.body(Full::new(Bytes::new())).unwrap())
            .await
            .unwrap()
    }

    pub async fn get(&mut self, path: &str) -> Answer {
        self.send("GET", path, None).await
    }

    pub async fn post(&mut self, path: &str, body: serde_json::Value) -> Answer {
        self.send("POST", path, Some(body)).await
    }
}

/// The admin API (plain HTTP on the admin address), with or without the token.
/// The choice of `field` in an `/api/options` answer.
pub fn choice(options: &serde_json::Value, field: &str) -> serde_json::Value {
    entry(&options["choices"], "field", field)
}

/// The option `value` of a choice from [`choice`].
pub fn option(choice: &serde_json::Value, value: &str) -> serde_json::Value {
    entry(&choice["options"], "value", value)
}

/// The entry of the array `list` whose `key` is `want`.
pub fn entry(list: &serde_json::Value, key: &str, want: &str) -> serde_json::Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|e| e[key] == want)
        .unwrap_or_else(|| panic!("no {key} `{want}` in {list}"))
        .clone()
}

/// The admin API's descriptor of the stack of the session `code` (`GET /admin/stacks/{id}`).
pub async fn stack_of(addr: std::net::SocketAddr, code: &str) -> Answer {
    admin(
        addr,
        "GET",
        &format!("/admin/stacks/{}", id(code)),
        Some(TOKEN),
        None,
    )
    .await
}

pub async fn admin(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<serde_json::Value>,
) -> Answer {
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = match body {
        Some(b) => req
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(b.to_string()))),
        None => req.body(Full::new(Bytes::new())),
    }
    .unwrap();
    let res = client.request(req).await.unwrap();
    Answer::read(res).await.unwrap()
}

/// Waits (at most 30 s) until `cond` holds.
#[track_caller]
pub fn eventually<'a, F, Fut>(what: &'a str, cond: F) -> impl std::future::Future<Output = ()> + 'a
where
    F: FnMut() -> Fut + 'a,
    Fut: std::future::Future<Output = bool> + 'a,
{
    stacklab_testkit::eventually(what, Duration::from_secs(30), cond)
}

/// Steady traffic from `workers` tasks: `path` with the browser's cookie, counting answers.
pub struct Load {
    stop: Arc<std::sync::atomic::AtomicBool>,
    pub ok: Arc<std::sync::atomic::AtomicU64>,
    pub failed: Arc<std::sync::Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start(browser: &Browser, path: &'static str, workers: usize) -> Load {
        use std::sync::atomic::Ordering::Relaxed;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ok = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let failed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let tasks = (0..workers)
            .map(|_| {
                let (b, stop, ok, failed) = (
                    browser.clone(),
                    Arc::clone(&stop),
                    Arc::clone(&ok),
                    Arc::clone(&failed),
                );
                tokio::spawn(async move {
                    while !stop.load(Relaxed) {
                        match b.try_send("GET", path, None).await {
                            Ok(a) if a.status == 200 => {
                                ok.fetch_add(1, Relaxed);
                            }
                            Ok(a) => {
                                failed
                                    .lock()
                                    .unwrap()
                                    .push(format!("{} {}", a.status, a.text()))
                            }
                            Err(e) => failed.lock().unwrap().push(e),
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failed,
            tasks,
        }
    }

    pub fn ok(&self) -> u64 {
        self.ok.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until `n` more requests have succeeded.
    pub async fn advance(&self, n: u64) {
        let target = self.ok() + n;
        eventually(&format!("{n} more requests served"), || async {
            self.ok() >= target
        })
        .await;
    }

    pub async fn stop(self) -> (u64, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let ok = self.ok();
        for t in self.tasks {
            let _ = t.await;
        }
        let failed = self.failed.lock().unwrap().clone();
        (
            ok.max(self.ok.load(std::sync::atomic::Ordering::Relaxed)),
            failed,
        )
    }
}

/// An engine's address from `scripts/test`: the conformance kit's one definition (under CI a
/// missing engine fails the test; elsewhere the test skips, saying so).
pub use stacklab_conformance::engine_url as engine;

/// A fresh folder for a provisioner's files.
pub fn files_dir(kind: &str, tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "stacklab-{kind}-{tag}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Choices for a provisioner, database and cache (the rest default; the cache its default policy).
pub fn choices(
    provisioner: &str,
    database: &str,
    cache: &str,
) -> stacklab_control::choices::Choices {
    stacklab_control::choices::Choices::parse(&serde_json::json!({
        "provisioner": provisioner,
        "database": database,
        "cache": cache,
    }))
    .unwrap()
}

/// A user row as the backend's store takes it.
pub fn user(name: &str) -> stacklab_backend::storage::NewUser {
    stacklab_backend::storage::NewUser {
        username: name.into(),
        username_key: name.into(),
        email: format!("{name}@example.com"),
        email_key: format!("{name}@example.com"),
        full_name: name.into(),
        password: "stored-form".into(),
        now: 1,
    }
}

/// Every step of a provisioning succeeded (or had nothing to do).
pub fn all_done(steps: &stacklab_control::provision::Steps) {
    let list = steps.list();
    assert!(!list.is_empty());
    for s in &list {
        assert!(s.status == "done" || s.status == "skipped", "{s:?}");
    }
}

/// Reads an SSE (or any streamed) body into `seen` until it contains `want` (20 s at most).
pub async fn read_until(body: &mut hyper::body::Incoming, seen: &mut String, want: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !seen.contains(want) {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .unwrap_or_else(|_| panic!("no `{want}` in: {seen}"));
        match frame {
            Some(Ok(f)) => {
                if let Ok(d) = f.into_data() {
                    seen.push_str(&String::from_utf8_lossy(&d));
                }
            }
            other => panic!("the stream ended ({other:?}) before `{want}`: {seen}"),
        }
    }
}

/// `url` (an administrator's URL from `scripts/test`) with its database replaced.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let slash = base.rfind('/').expect("a URL with a path");
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    format!("{}/{database}{query}", &base[..slash])
}

/// The id control, proxies and backends know a session by (its cookie carries the code).
pub fn id(code: &str) -> String {
    stacklab_types::session::id(code)
}

/// Where an administrator reads a session's database: its SQLite file (read-only) for
/// `embedded`, the session's own database on the server through the administrator's URL for
/// `shared`.
pub fn session_db_url(data_dir: &Path, code: &str, admin_url: Option<&str>) -> String {
    let id = stacklab_types::session::id(code);
    match admin_url {
        None => format!(
            "sqlite://{}?mode=ro",
            data_dir.join("sessions").join(format!("{id}.db")).display()
        ),
        Some(admin) => with_database(admin, &shared_name(data_dir, &id)),
    }
}

/// Every row of a session's `users` table, every column, and the names of its tables: what
/// must not change when a request is refused.
pub async fn db_snapshot(url: &str) -> Vec<String> {
    use sqlx::{Connection, Row};
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("open the session's database: {e}"));
    let tables = if url.starts_with("sqlite:") {
        "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
    } else if url.starts_with("postgres") {
        "SELECT CAST(tablename AS TEXT) FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
    } else {
        "SELECT CAST(table_name AS CHAR) FROM information_schema.tables \
         WHERE table_schema = DATABASE() ORDER BY 1"
    };
    let mut out: Vec<String> = sqlx::query(tables)
        .fetch_all(&mut conn)
        .await
        .unwrap()
        .iter()
        .map(|r| format!("table {}", r.get::<String, _>(0)))
        .collect();
    let rows = sqlx::query(
        "SELECT id, username, username_key, email, email_key, full_name, password, \
         created_at, updated_at FROM users ORDER BY id",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    // Columns are joined by the ASCII unit separator, which no accepted input holds.
    for r in rows {
        let mut line = r.get::<i64, _>(0).to_string();
        for i in 1..7 {
            line.push('\u{1f}');
            line.push_str(&r.get::<String, _>(i));
        }
        for i in 7..9 {
            line.push('\u{1f}');
            line.push_str(&r.get::<i64, _>(i).to_string());
        }
        out.push(line);
    }
    let _ = conn.close().await;
    out
}

/// The `[shared] instance` tag `configs` gives a test's control, from its data folder: tests
/// running at once share the engines, and a control only takes names of its own instance for
/// leftovers (the same data folder, as in a restart test, keeps the same tag).
pub fn shared_tag(data_dir: &Path) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(data_dir.display().to_string().as_bytes());
    digest[..4]
        .iter()
        .map(|b| (b"abcdefghijklmnopqrstuvwxyz0123456789"[(*b as usize) % 36]) as char)
        .collect()
}

/// The name a `shared` session's database, role, user and key prefix have on the engines.
pub fn shared_name(data_dir: &Path, id: &str) -> String {
    format!("s{}_{id}", shared_tag(data_dir))
}

/// Creates a session with `choices` (201 asserted); returns its code.
/// The user most tests start from (ann, "correct horse"), created in the browser's session.
pub async fn add_ann(b: &mut Browser) -> Answer {
    add_user(b, "ann").await
}

/// Adds the user `name` (`name@example.com`, password `correct horse`), checking it is made.
pub async fn add_user(b: &mut Browser, name: &str) -> Answer {
    let r = b
        .post(
            "/api/users",
            serde_json::json!({"username": name, "email": format!("{name}@example.com"), "password": "correct horse"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    r
}

pub async fn new_session(b: &mut Browser, choices: serde_json::Value) -> String {
    let r = b.post("/api/sessions", choices).await;
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["code"].as_str().unwrap().to_owned()
}

/// Ids of the instances control runs in `pool`.
pub fn pool_instances(up: &Up, pool: &str) -> Vec<String> {
    up.control
        .instances
        .list()
        .into_iter()
        .filter(|i| i.pool == pool)
        .map(|i| i.id)
        .collect()
}
