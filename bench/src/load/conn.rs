//! One client connection of any protocol, and one request over it.
//!
//! HTTP/1.1 uses the small client in [`super::h1`]; HTTP/2 uses hyper's low-level client
//! connection directly (no pool, so the generator decides exactly how many connections
//! exist); HTTP/3 uses quinn and h3 with one
//! UDP socket per connection, so the generator's work spreads over its threads the way TCP
//! connections' does. Sockets close with `SO_LINGER 0` so runs that open many connections do
//! not leave the loopback port range full of `TIME_WAIT`.

use super::h1::H1;
use super::{LoadError, Protocol};
use bytes::{Buf, Bytes};
use http::{Request, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// Everything needed to open a connection to the target.
#[derive(Clone)]
pub struct Dialer {
    pub addr: SocketAddr,
    pub protocol: Protocol,
    /// TLS for HTTP/1.1 and HTTP/2 (none: plain TCP); always set for HTTP/3.
    pub tls: Option<Arc<ClientConfig>>,
    pub server_name: ServerName<'static>,
    /// The request's URI: origin-form for HTTP/1.1, absolute for HTTP/2 and HTTP/3.
    pub uri: Uri,
    pub headers: http::HeaderMap,
    /// The whole HTTP/1.1 request, rendered once.
    pub h1_request: Bytes,
}

/// An open connection, ready for requests. Dropping it closes the connection.
pub enum Conn {
    H1(H1),
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
    H3 {
        send: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
        _endpoint: quinn::Endpoint,
    },
}

/// The outcome of one request: its status and the body bytes read.
#[derive(Debug, Clone, Copy)]
pub struct Answer {
    pub status: u16,
    pub bytes: u64,
}

fn err(what: &'static str, e: impl std::fmt::Display) -> LoadError {
    LoadError::Failed {
        what,
        message: e.to_string(),
    }
}

async fn tcp(addr: SocketAddr) -> Result<TcpStream, LoadError> {
    let s = TcpStream::connect(addr)
        .await
        .map_err(|e| err("connect", e))?;
    let _ = s.set_nodelay(true);
    let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
    Ok(s)
}

impl Dialer {
    /// Opens one connection (TCP, TLS and HTTP handshakes included).
    pub async fn connect(&self) -> Result<Conn, LoadError> {
        match self.protocol {
            Protocol::H1 => {
                let s = tcp(self.addr).await?;
                match &self.tls {
                    None => Ok(Conn::H1(H1::new(Box::new(s)))),
                    Some(cfg) => Ok(Conn::H1(H1::new(Box::new(self.tls_stream(cfg, s).await?)))),
                }
            }
            Protocol::H2 => {
                let s = tcp(self.addr).await?;
                match &self.tls {
                    None => h2(s).await,
                    Some(cfg) => h2(self.tls_stream(cfg, s).await?).await,
                }
            }
            Protocol::H3 => self.h3().await,
        }
    }

    async fn tls_stream(
        &self,
        cfg: &Arc<ClientConfig>,
        s: TcpStream,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, LoadError> {
        tokio_rustls::TlsConnector::from(Arc::clone(cfg))
            .connect(self.server_name.clone(), s)
            .await
            .map_err(|e| err("TLS handshake", e))
    }

    async fn h3(&self) -> Result<Conn, LoadError> {
        let cfg = self
            .tls
            .clone()
            .ok_or_else(|| err("HTTP/3", "needs a TLS config"))?;
        let quic =
            quinn::crypto::rustls::QuicClientConfig::try_from(cfg).map_err(|e| err("QUIC", e))?;
        let local: SocketAddr = if self.addr.is_ipv4() {
            (std::net::Ipv4Addr::LOCALHOST, 0).into()
        } else {
            (std::net::Ipv6Addr::LOCALHOST, 0).into()
        };
        let mut endpoint = quinn::Endpoint::client(local).map_err(|e| err("QUIC socket", e))?;
        endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
        let name = match &self.server_name {
            ServerName::DnsName(d) => d.as_ref().to_owned(),
            other => format!("{other:?}"),
        };
        let conn = endpoint
            .connect(self.addr, &name)
            .map_err(|e| err("QUIC connect", e))?
            .await
            .map_err(|e| err("QUIC handshake", e))?;
        let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(conn))
            .await
            .map_err(|e| err("HTTP/3 setup", e))?;
        tokio::spawn(async move {
            let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
        });
        Ok(Conn::H3 {
            send,
            _endpoint: endpoint,
        })
    }

    fn request(&self) -> Result<Request<Empty<Bytes>>, LoadError> {
        let mut req = Request::get(self.uri.clone())
            .body(Empty::new())
            .map_err(|e| err("request", e))?;
        *req.headers_mut() = self.headers.clone();
        Ok(req)
    }
}

async fn h2<S>(s: S) -> Result<Conn, LoadError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(1 << 20)
        .initial_connection_window_size(4 << 20)
        .handshake(TokioIo::new(s))
        .await
        .map_err(|e| err("HTTP/2 handshake", e))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(Conn::H2(send))
}

async fn read_hyper_body(res: http::Response<hyper::body::Incoming>) -> Result<Answer, LoadError> {
    let status = res.status().as_u16();
    let mut body = res.into_body();
    let mut bytes = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| err("response body", e))?;
        if let Some(d) = frame.data_ref() {
            bytes += d.len() as u64;
        }
    }
    Ok(Answer { status, bytes })
}

impl Conn {
    /// Sends one GET and reads the whole answer.
    pub async fn request(&mut self, dialer: &Dialer) -> Result<Answer, LoadError> {
        match self {
            Conn::H1(h1) => h1.request(&dialer.h1_request).await,
            Conn::H2(send) => {
                let req = dialer.request()?;
                send.ready().await.map_err(|e| err("HTTP/2", e))?;
                let res = send.send_request(req).await.map_err(|e| err("HTTP/2", e))?;
                read_hyper_body(res).await
            }
            Conn::H3 { send, .. } => {
                let (parts, _) = dialer.request()?.into_parts();
                let req = Request::from_parts(parts, ());
                let mut stream = send.send_request(req).await.map_err(|e| err("HTTP/3", e))?;
                stream.finish().await.map_err(|e| err("HTTP/3", e))?;
                let res = stream.recv_response().await.map_err(|e| err("HTTP/3", e))?;
                let mut bytes = 0u64;
                while let Some(mut chunk) = stream
                    .recv_data()
                    .await
                    .map_err(|e| err("HTTP/3 body", e))?
                {
                    let n = chunk.remaining();
                    bytes += n as u64;
                    chunk.advance(n);
                }
                Ok(Answer {
                    status: res.status().as_u16(),
                    bytes,
                })
            }
        }
    }

    /// Another handle on the same connection (HTTP/2 and HTTP/3 multiplex; HTTP/1.1 cannot).
    pub fn share(&self) -> Option<Conn> {
        match self {
            Conn::H1(_) => None,
            Conn::H2(s) => Some(Conn::H2(s.clone())),
            Conn::H3 { send, _endpoint } => Some(Conn::H3 {
                send: send.clone(),
                _endpoint: _endpoint.clone(),
            }),
        }
    }

    /// Whether the connection can take no more requests.
    pub fn is_closed(&self) -> bool {
        match self {
            Conn::H1(h) => h.is_closed(),
            Conn::H2(s) => s.is_closed(),
            Conn::H3 { .. } => false,
        }
    }
}
