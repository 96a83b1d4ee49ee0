//! Test servers and clients, all on real sockets on port 0.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::pem::PemObject;
use stacklab_proxy::config::Config;
use stacklab_proxy::server::Addrs;
use stacklab_proxy::{Proxy, Server};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};

pub const TOKEN: &str = "test-admin-token-0123456789";
pub const SESSION_A: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAA";
pub const SESSION_B: &str = "BBBBBBBBBBBBBBBBBBBBBBBBBB";

/// The id a session is routed, captured and forwarded by (the cookie carries its code).
pub fn id(code: &str) -> String {
    stacklab_types::session::id(code)
}

pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed_unsync()
}

/// A real HTTP/1.1 and h2c upstream on 127.0.0.1:0 that answers with what it saw.
pub struct Backend {
    pub id: String,
    pub addr: SocketAddr,
    pub health: Arc<AtomicU16>,
    pub hits: Arc<AtomicU64>,
    /// Requests to `/gate` wait for a permit (`gate.add_permits(n)` lets n through).
    pub gate: Arc<tokio::sync::Semaphore>,
    /// `/sse` sends its second event when this is notified.
    pub sse_next: Arc<Notify>,
    /// Added to every answer, to play a slow member.
    pub delay_ms: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Backend {
    pub async fn start(id: &str) -> Backend {
        Self::start_on(id, "127.0.0.1:0".parse().unwrap()).await
    }

    pub async fn start_on(id: &str, addr: SocketAddr) -> Backend {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let health = Arc::new(AtomicU16::new(200));
        let hits = Arc::new(AtomicU64::new(0));
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let sse_next = Arc::new(Notify::new());
        let delay_ms = Arc::new(AtomicU64::new(0));
        let (id2, h2, hits2, gate2, sse2, delay2) = (
            id.to_owned(),
            health.clone(),
            hits.clone(),
            gate.clone(),
            sse_next.clone(),
            delay_ms.clone(),
        );
        let task = tokio::spawn(async move {
            // Connection tasks live in this set: aborting the accept task drops them all, so
            // `kill` cuts open connections like a crashed process would.
            let mut conns = JoinSet::new();
            loop {
                let (stream, _) = match listener.accept().await {
                    Ok(s) => s,
                    Err(_) => continue,
                };
                let (id, health, hits, gate, sse, delay) = (
                    id2.clone(),
                    h2.clone(),
                    hits2.clone(),
                    gate2.clone(),
                    sse2.clone(),
                    delay2.clone(),
                );
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        handle(
                            id.clone(),
                            health.clone(),
                            hits.clone(),
                            gate.clone(),
                            sse.clone(),
                            delay.clone(),
                            req,
                        )
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                        .await;
                });
                while conns.try_join_next().is_some() {}
            }
        });
        Backend {
            id: id.to_owned(),
            addr,
            health,
            hits,
            gate,
            sse_next,
            delay_ms,
            task,
        }
    }

    /// Stops listening and drops every open connection at once.
    pub fn kill(&self) {
        self.task.abort();
    }

    pub fn set_health(&self, status: u16) {
        self.health.store(status, Relaxed);
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    id: String,
    health: Arc<AtomicU16>,
    hits: Arc<AtomicU64>,
    gate: Arc<tokio::sync::Semaphore>,
    sse_next: Arc<Notify>,
    delay_ms: Arc<AtomicU64>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    if path == "/healthz" {
        let status = StatusCode::from_u16(health.load(Relaxed)).unwrap();
        return Ok(Response::builder()
            .status(status)
            .body(full("health"))
            .unwrap());
    }
    hits.fetch_add(1, Relaxed);
    let delay = delay_ms.load(Relaxed);
    if delay > 0 {
        // The member is slow on purpose (this is the upstream, not the test, waiting).
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if path == "/hang" {
        std::future::pending::<()>().await;
    }
    if path.ends_with("/gate") {
        gate.acquire().await.unwrap().forget();
    }
    if let Some(code) = path.strip_prefix("/refuse/") {
        // A deliberate refusal with the JSON error body, as control sends
        // `503 provisioning_failed`.
        let status = StatusCode::from_u16(code.parse().unwrap()).unwrap();
        return Ok(Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .header("x-backend", &id)
            .body(full(
                r#"{"error":{"code":"provisioning_failed","message":"the stack could not be made; re-provision it"}}"#,
            ))
            .unwrap());
    }
    if let Some(code) = path.strip_prefix("/status/") {
        let status = StatusCode::from_u16(code.parse().unwrap()).unwrap();
        return Ok(Response::builder()
            .status(status)
            .header("x-backend", &id)
            .body(full(format!("{code} from {id}")))
            .unwrap());
    }
    if path.ends_with("/sse") {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
        tokio::spawn(async move {
            let _ = tx
                .send(Ok(Frame::data(Bytes::from_static(b"data: one\n\n"))))
                .await;
            sse_next.notified().await;
            let _ = tx
                .send(Ok(Frame::data(Bytes::from_static(b"data: two\n\n"))))
                .await;
        });
        let stream =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|f| (f, rx)) },
            );
        return Ok(Response::builder()
            .header("content-type", "text/event-stream")
            .body(StreamBody::new(stream).boxed_unsync())
            .unwrap());
    }
    let method = req.method().to_string();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let version = format!("{:?}", req.version());
    let mut headers = BTreeMap::new();
    for (k, v) in req.headers() {
        headers.insert(
            k.as_str().to_owned(),
            String::from_utf8_lossy(v.as_bytes()).into_owned(),
        );
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let answer = serde_json::json!({
        "id": id, "method": method, "path": path, "query": query, "version": version,
        "headers": headers, "body": String::from_utf8_lossy(&body),
    });
    Ok(Response::builder()
        .header("content-type", "application/json")
        .header("server-timing", "backend;dur=0.5")
        .header("x-stacklab-cache", "miss")
        .body(full(answer.to_string()))
        .unwrap())
}

/// A proxy on port 0 with a config made of `extra` TOML on top of test defaults.
pub struct TestProxy {
    pub proxy: Arc<Proxy>,
    pub addrs: Addrs,
    pub data_dir: PathBuf,
    pub config_path: PathBuf,
    pub task: JoinHandle<anyhow::Result<()>>,
}

pub use stacklab_testkit::temp_dir;

/// How long a test waits for what the proxy reaches on its own.
pub const WAIT: Duration = Duration::from_secs(20);

/// The TOML the tests start from: everything on 127.0.0.1:0, plain HTTP served (not
/// redirected) so load can go through a pooled client, logs quiet.
pub fn base_toml(data_dir: &std::path::Path) -> String {
    format!(
        r#"
data_dir = "{}"
[log]
access_log = false
[edge]
addr = "127.0.0.1:0"
http_addr = "127.0.0.1:0"
plain_http = "serve"
[admin]
addr = "127.0.0.1:0"
token = "{TOKEN}"
"#,
        data_dir.display()
    )
}

impl TestProxy {
    /// `extra` is appended to [`base_toml`]: pools, routes, limits.
    pub async fn start(name: &str, extra: &str) -> TestProxy {
        let data_dir = temp_dir(name);
        let text = format!("{}\n{extra}", base_toml(&data_dir));
        Self::start_with_text(data_dir, &text).await
    }

    pub async fn start_with_text(data_dir: PathBuf, text: &str) -> TestProxy {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config_path = data_dir.join("stacklab.toml");
        std::fs::write(&config_path, text).unwrap();
        let env: BTreeMap<String, String> = BTreeMap::new();
        let cfg = Config::load(Some(&config_path), &env).unwrap_or_else(|r| panic!("{r}"));
        let server = Server::bind(cfg).await.unwrap();
        let addrs = server.addrs();
        let proxy = Arc::clone(&server.proxy);
        let task = tokio::spawn(server.run());
        TestProxy {
            proxy,
            addrs,
            data_dir,
            config_path,
            task,
        }
    }

    pub fn plain_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addrs.plain.unwrap())
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addrs.admin)
    }

    pub fn cert_path(&self) -> PathBuf {
        self.data_dir.join("tls/self-signed.crt")
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.proxy.shutdown.cancel();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// A pooled plain-HTTP client, as a browser behind a TLS terminator would be.
pub fn client() -> Client<HttpConnector, Body> {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(64)
        .build(HttpConnector::new())
}

#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn member(&self) -> String {
        self.headers
            .get("x-stacklab-member")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    }
}

pub async fn send(
    client: &Client<HttpConnector, Body>,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Result<Answer, String> {
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(full(body)).unwrap();
    let res = client.request(req).await.map_err(|e| format!("{e:?}"))?;
    let status = res.status();
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

pub async fn get(
    client: &Client<HttpConnector, Body>,
    url: &str,
    headers: &[(&str, &str)],
) -> Answer {
    send(client, "GET", url, headers, Bytes::new())
        .await
        .unwrap()
}

/// Calls the admin API with the token.
pub async fn admin(p: &TestProxy, method: &str, path: &str, body: serde_json::Value) -> Answer {
    let c = client();
    let auth = format!("Bearer {TOKEN}");
    let body = if body.is_null() {
        Bytes::new()
    } else {
        Bytes::from(body.to_string())
    };
    send(
        &c,
        method,
        &p.admin_url(path),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        body,
    )
    .await
    .unwrap()
}

/// The requests the proxy captured for the session `code`, from its admin API.
pub async fn captured(p: &TestProxy, code: &str) -> serde_json::Value {
    admin(
        p,
        "GET",
        &format!("/admin/sessions/{}/requests", id(code)),
        serde_json::Value::Null,
    )
    .await
    .json()
}

pub fn cookie(code: &str) -> String {
    format!("stacklab_session={code}")
}

/// Steady load: `workers` tasks sending `method path` until stopped, counting outcomes.
pub struct Load {
    pub ok: Arc<AtomicU64>,
    pub failed: Arc<AtomicU64>,
    pub failures: Arc<std::sync::Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Load {
    pub fn start(
        url: String,
        method: &'static str,
        headers: Vec<(String, String)>,
        workers: usize,
    ) -> Load {
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let c = client();
        let tasks = (0..workers)
            .map(|_| {
                let (url, headers, c, ok, failed, failures, stop) = (
                    url.clone(),
                    headers.clone(),
                    c.clone(),
                    ok.clone(),
                    failed.clone(),
                    failures.clone(),
                    stop.clone(),
                );
                tokio::spawn(async move {
                    while !stop.load(Relaxed) {
                        let h: Vec<(&str, &str)> = headers
                            .iter()
                            .map(|(k, v)| (k.as_str(), v.as_str()))
                            .collect();
                        let body = if method == "POST" {
                            Bytes::from_static(b"{\"x\":1}")
                        } else {
                            Bytes::new()
                        };
                        match send(&c, method, &url, &h, body).await {
                            Ok(a) if a.status.is_success() => {
                                ok.fetch_add(1, Relaxed);
                            }
                            Ok(a) => {
                                failed.fetch_add(1, Relaxed);
                                failures.lock().unwrap().push(format!(
                                    "{} {}",
                                    a.status,
                                    String::from_utf8_lossy(&a.body)
                                ));
                            }
                            Err(e) => {
                                failed.fetch_add(1, Relaxed);
                                failures.lock().unwrap().push(e);
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            ok,
            failed,
            failures,
            stop,
            tasks,
        }
    }

    /// Waits (yielding, not sleeping a fixed time) until `n` more requests have succeeded.
    pub async fn wait_for(&self, n: u64) {
        let target = self.ok.load(Relaxed) + n;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while self.ok.load(Relaxed) < target {
            assert!(
                tokio::time::Instant::now() < deadline,
                "load stalled: {} ok, {} failed: {:?}",
                self.ok.load(Relaxed),
                self.failed.load(Relaxed),
                self.failures.lock().unwrap().first()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub async fn stop(self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Relaxed);
        for t in self.tasks {
            let _ = t.await;
        }
        let failures = self.failures.lock().unwrap().clone();
        (self.ok.load(Relaxed), self.failed.load(Relaxed), failures)
    }
}

/// Waits (at most [`WAIT`]) for a condition the proxy reaches on its own (health rounds, feed
/// updates).
#[track_caller]
pub fn eventually<'a>(
    what: &'a str,
    mut cond: impl FnMut() -> bool + 'a,
) -> impl std::future::Future<Output = ()> + 'a {
    stacklab_testkit::eventually(what, WAIT, move || std::future::ready(cond()))
}

pub fn pool_toml(name: &str, algorithm: &str, members: &[&Backend]) -> String {
    let members: Vec<String> = members
        .iter()
        .map(|b| format!("{{ id = \"{}\", addr = \"{}\" }}", b.id, b.addr))
        .collect();
    format!(
        "[[pools]]\nname = \"{name}\"\nalgorithm = \"{algorithm}\"\nmembers = [{}]\n",
        members.join(", ")
    )
}

pub fn route_toml(path: &str, target: &str) -> String {
    format!("[[routes]]\npath = \"{path}\"\n{target}\n")
}

// TLS and QUIC clients that verify the proxy's self-signed certificate for real (SAN
// localhost), as a browser told to trust it would.

pub fn tls_client_config(p: &TestProxy, alpn: &[&[u8]]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from_pem_file(p.cert_path()).unwrap())
        .unwrap();
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    cfg
}

pub async fn tls_connect(
    p: &TestProxy,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls_client_config(p, alpn)));
    let tcp = tokio::net::TcpStream::connect(p.addrs.edge).await.unwrap();
    // The self-signed certificate is verified for real: SAN localhost.
    connector
        .connect(
            rustls_pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap()
}

/// Sends one request on a new TLS connection to the edge, in HTTP/2 when `alpn` is `h2`, else
/// HTTP/1.1; resolves with the response head (its body streams on).
pub async fn tls_request<B>(
    p: &TestProxy,
    alpn: &[u8],
    req: http::Request<B>,
) -> Result<http::Response<Incoming>, hyper::Error>
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    request_on(tls_connect(p, &[alpn]).await, req).await
}

/// Sends one request on a TLS connection, in the protocol its ALPN chose.
pub async fn request_on<B>(
    tls: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    req: http::Request<B>,
) -> Result<http::Response<Incoming>, hyper::Error>
where
    B: hyper::body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let tls = TokioIo::new(tls);
    if h2 {
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), tls)
            .await
            .unwrap();
        tokio::spawn(conn);
        send.send_request(req).await
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(tls).await.unwrap();
        tokio::spawn(conn);
        send.send_request(req).await
    }
}

/// An HTTP/3 connection to the proxy's edge: the request sender and the task driving it.
pub async fn h3_connect(
    p: &TestProxy,
) -> (
    h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    JoinHandle<()>,
) {
    let cfg = tls_client_config(p, &[b"h3"]);
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(cfg).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    let conn = tokio::time::timeout(
        Duration::from_secs(10),
        endpoint.connect(p.addrs.edge, "localhost").unwrap(),
    )
    .await
    .expect("the QUIC handshake finished in time")
    .unwrap();
    let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(conn))
        .await
        .unwrap();
    let drive = tokio::spawn(async move {
        let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
        drop(endpoint);
    });
    (send, drive)
}

/// `GET path` over an HTTP/3 connection, answered in full.
pub async fn h3_get(
    send: &mut h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    p: &TestProxy,
    path: &str,
) -> Answer {
    let req = http::Request::get(format!("https://localhost:{}{path}", p.addrs.edge.port()))
        .body(())
        .unwrap();
    let mut stream = send.send_request(req).await.unwrap();
    stream.finish().await.unwrap();
    h3_answer(&mut stream).await
}

/// Reads an HTTP/3 response in full.
pub async fn h3_answer<S: h3::quic::RecvStream>(
    stream: &mut h3::client::RequestStream<S, Bytes>,
) -> Answer {
    use bytes::Buf;
    let res = tokio::time::timeout(Duration::from_secs(10), stream.recv_response())
        .await
        .expect("an answer in time")
        .unwrap();
    let mut body = Vec::new();
    while let Some(mut chunk) = stream.recv_data().await.unwrap() {
        body.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
    }
    Answer {
        status: res.status(),
        headers: res.headers().clone(),
        body: Bytes::from(body),
    }
}

/// The proxy's metrics as text.
pub async fn metrics(p: &TestProxy) -> String {
    String::from_utf8(
        get(&client(), &p.admin_url("/metrics"), &[])
            .await
            .body
            .to_vec(),
    )
    .unwrap()
}

/// Requests the proxy has answered, over every route, protocol and status class.
pub async fn answered(p: &TestProxy) -> u64 {
    metrics(p)
        .await
        .lines()
        .filter(|l| l.starts_with("stacklab_proxy_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Waits until the proxy has answered `n` requests in all (a client that went away gets an
/// answer it never reads, but the proxy counts it).
pub async fn wait_answered(p: &TestProxy, n: u64) {
    stacklab_testkit::eventually_ok(WAIT, || async {
        let got = answered(p).await;
        (got >= n)
            .then_some(())
            .ok_or_else(|| format!("the proxy answered {got} of {n} requests"))
    })
    .await;
}

/// Waits until no request is in flight to any member (the proxy is done with every request
/// it forwarded, answered or given up when its client went away).
pub async fn wait_nothing_in_flight(p: &TestProxy) {
    stacklab_testkit::eventually_ok(WAIT, || async {
        let pools = admin(p, "GET", "/admin/pools", serde_json::Value::Null)
            .await
            .json();
        let busy: Vec<_> = pools["pools"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|p| p["members"].as_array().unwrap().iter())
            .filter(|m| m["in_flight"] != 0)
            .cloned()
            .collect();
        busy.is_empty()
            .then_some(())
            .ok_or_else(|| format!("still in flight: {busy:?}"))
    })
    .await;
}

/// Every member of every pool healthy and charged no failure.
pub async fn assert_members_unharmed(p: &TestProxy) {
    let pools = admin(p, "GET", "/admin/pools", serde_json::Value::Null)
        .await
        .json();
    for pool in pools["pools"].as_array().unwrap() {
        for m in pool["members"].as_array().unwrap() {
            assert_eq!(m["state"], "healthy", "{m}");
            assert_eq!(m["failures"], 0, "the member was charged: {m}");
        }
    }
    let text = metrics(p).await;
    assert!(
        !text.contains("stacklab_proxy_ejections_total{"),
        "a member was ejected: {text}"
    );
}
