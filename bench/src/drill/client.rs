//! The drill's client: the edge as a browser reaches it (`Edge`), admin calls, sessions.

use super::*;

/// The edge, as a browser reaches it: HTTPS, HTTP/1.1 keep-alive.
#[derive(Clone)]
pub struct Edge {
    pub addr: SocketAddr,
    pub(super) tls: Arc<rustls::ClientConfig>,
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
    pub(super) fn is_json_error(&self) -> bool {
        self.json()["error"]["code"].is_string()
    }
}

pub(super) type Send1 = SendRequest<Full<Bytes>>;

impl Edge {
    pub fn from(&self, src: IpAddr) -> Edge {
        Edge {
            src: Some(src),
            ..self.clone()
        }
    }

    pub(super) async fn tcp(&self) -> std::io::Result<tokio::net::TcpStream> {
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

    pub(super) async fn connect(&self) -> anyhow::Result<Send1> {
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

pub(super) fn request(
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

pub(super) async fn read(res: http::Response<hyper::body::Incoming>) -> anyhow::Result<Resp> {
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
pub(super) async fn eventually<F, Fut>(what: &str, limit: Duration, mut f: F) -> anyhow::Result<()>
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
pub(super) async fn admin(
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
