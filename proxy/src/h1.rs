//! HTTP/1.1 server connections of our own (`edge.http1 = "stacklab"`, the default).
//!
//! hyper's HTTP/1.1 server keeps an 8 KiB read buffer and an 8 KiB write buffer for a
//! connection's whole life, and a slot the size of the handler's future; an idle keep-alive
//! connection cost ~38 KiB here against nginx's ~1 KiB (issue 21). This one holds nothing
//! between requests but the socket, two timers and a few words: a plain TCP connection waits
//! for readability with no buffer at all, a buffer is taken when bytes come and given back when
//! the exchange is over, and the handler's future is boxed per request instead of living in
//! the connection. Pingora owns its HTTP/1 connections for the same reasons.
//!
//! One exchange: read a head ([`parse::parse_head`]; the header timer runs only when a head
//! does not come whole in one read), hand the request to [`crate::edge::handle`] while a pump
//! feeds its body from the connection (Content-Length or chunked, through a one-slot channel, so
//! a slow member slows the client), write the response's head and body in as few writes as
//! the body allows (Content-Length when known, chunked otherwise, close-delimited for HTTP/1.0),
//! then keep the connection or close it. Pipelined requests are served in order. A `101`
//! hands the socket, with whatever the client sent after its head, to the tunnel.
//!
//! What stays with hyper: HTTP/2 (TLS with ALPN `h2`, or the h2c preface on the plain
//! listener, detected here and handed over with the bytes read), the upstream side, and the
//! whole HTTP/1.1 server with `edge.http1 = "hyper"` (kept for the bench's before/after).
//!
//! # Layout
//! - [`parse`]: heads, framing and chunked bodies from bytes, with the smuggling set's tests.
//! - here: the connection loop, the body pump, the response writer, [`OnUpgrade`].

pub mod parse;

use crate::body::{BoxError, ChannelBody, RespBody};
use crate::edge::{self, ConnInfo};
use crate::error::ProxyError;
use crate::Proxy;
use bytes::{Bytes, BytesMut};
use http::{header, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use parse::{Chunked, Decoded, Framing, Head, HeadError};
use std::future::{poll_fn, Future};
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFutureOwned;

/// What a read for a head asks room for (most heads are a few hundred bytes).
const HEAD_READ: usize = 4096;
/// What a read for a body asks room for.
const BODY_READ: usize = 16 * 1024;
/// Body bytes copied behind the head into one write rather than written on their own.
const COALESCE: usize = 16 * 1024;
/// The start of the HTTP/2 connection preface: an h2c client on the plain listener.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

/// The IO an HTTP/1.1 connection runs over.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Ready once a read would find something, holding no buffer of ours meanwhile. The
    /// default (for TLS, whose library may hold decrypted bytes) is always ready.
    fn poll_read_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl Transport for TcpStream {
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_read_ready(self, cx)
    }
}

impl Transport for tokio_rustls::server::TlsStream<TcpStream> {}

/// Per-listener settings, made once per config.
#[derive(Debug, Clone)]
pub struct Settings {
    /// A head larger than this is answered `431` (hyper's limit was the same).
    pub max_head: usize,
    /// Header fields parsed at most; the edge's own `limits.max_header_fields` check follows.
    pub max_fields: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    /// The `408` for a head that did not come in time (made once per config).
    pub timeout_answer: Bytes,
    /// The plain listener in `edge.plain_http = "redirect"`: every request gets the redirect.
    pub redirect: bool,
    /// The plain listener: an h2c preface goes to hyper's HTTP/2.
    pub h2c: bool,
}

impl Settings {
    pub fn new(cfg: &crate::config::Config, secure: bool, redirect: bool) -> Self {
        let limits = &cfg.limits;
        Self {
            max_head: limits.protocol_header_bytes(),
            max_fields: limits.max_header_fields.saturating_mul(2).max(100),
            header_timeout: limits.header_read_timeout,
            idle_timeout: limits.idle_timeout,
            timeout_answer: cfg.edge.headers.head_timeout_answer(secure),
            redirect,
            h2c: !secure,
        }
    }
}

impl From<HeadError> for ProxyError {
    fn from(e: HeadError) -> Self {
        match e {
            HeadError::TooLarge { size, limit } => ProxyError::HeadersTooLarge { size, limit },
            HeadError::TooManyFields { limit } => ProxyError::TooManyHeaders {
                count: limit + 1,
                limit,
            },
            HeadError::Malformed(m) => ProxyError::BadRequest(format!(
                "{m}; send the request as RFC 9112 describes it, on a new connection"
            )),
        }
    }
}

/// How a connection ended, when it did not simply close.
pub enum Ended<T> {
    Closed,
    /// The client spoke HTTP/2 with prior knowledge: the IO and the bytes already read.
    H2c(T, Bytes),
}

/// The client's side of a `101`: the connection, with whatever came after the request's head.
/// (Clone, as request extensions must be; the first to take it gets the connection.)
#[derive(Clone)]
pub struct OnUpgrade(Arc<std::sync::Mutex<Option<oneshot::Receiver<Upgraded>>>>);

impl OnUpgrade {
    pub async fn get(self) -> Option<Upgraded> {
        let rx = self.0.lock().ok()?.take()?;
        rx.await.ok()
    }
}

/// A connection handed on: first the bytes already read from it, then the connection.
pub struct Rewind<T> {
    read_first: Bytes,
    io: T,
}

impl<T> Rewind<T> {
    pub fn new(read_first: Bytes, io: T) -> Self {
        Self { read_first, io }
    }
}

/// An upgraded client connection (see [`OnUpgrade`]).
pub type Upgraded = Rewind<Box<dyn Io>>;

/// Any connection, boxed.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.read_first.is_empty() {
            let n = self.read_first.len().min(buf.remaining());
            let first = self.read_first.split_to(n);
            buf.put_slice(&first);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Serves HTTP/1.1 on `io` until the client or the proxy ends it.
pub async fn serve<T: Transport>(
    proxy: Arc<Proxy>,
    io: T,
    conn: ConnInfo,
    settings: &Settings,
) -> Ended<T> {
    let mut c = Conn {
        timer: Timer::new(settings.header_timeout),
        shutdown: Box::pin(proxy.shutdown.clone().cancelled_owned()),
        io,
        buf: BytesMut::new(),
        draining: false,
        served: 0,
    };
    loop {
        let head = match c.next_head(&proxy, settings).await {
            Next::Head(h) => h,
            Next::Close => return Ended::Closed,
            Next::H2c => return Ended::H2c(c.io, c.buf.freeze()),
            Next::Refuse(e) => {
                let error = ProxyError::from(e);
                if !matches!(error, ProxyError::BadRequest(_)) {
                    proxy
                        .metrics
                        .limit_hits
                        .with_label_values(&[error.kind()])
                        .inc();
                }
                let mut res = error.into_response();
                edge::security_headers(
                    &proxy.config.load().edge.headers,
                    conn.secure,
                    res.headers_mut(),
                );
                let _ = Box::pin(c.write_response(res, Version::HTTP_11, false, true)).await;
                return Ended::Closed;
            }
        };
        // Boxed: the exchange's room (head, response, writer) is taken per request, not
        // carried by every idle connection's task.
        match Box::pin(c.exchange(&proxy, &conn, settings, head)).await {
            After::KeepGoing => {}
            After::Close => {
                let _ = c.io.shutdown().await;
                return Ended::Closed;
            }
            After::Upgrade(tx) => {
                let _ = tx.send(Rewind::new(c.buf.freeze(), Box::new(c.io) as Box<dyn Io>));
                return Ended::Closed;
            }
        }
    }
}

struct Conn<T> {
    io: T,
    /// Bytes read and not yet used. Empty, with no allocation, between exchanges.
    buf: BytesMut,
    timer: Timer,
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    /// The proxy is shutting down or handed over: answer with `Connection: close`.
    draining: bool,
    served: u64,
}

// A head goes by value once per request; boxing it would cost an allocation each time.
#[allow(clippy::large_enum_variant)]
enum Next {
    Head(Head),
    Close,
    H2c,
    Refuse(HeadError),
}

enum After {
    KeepGoing,
    Close,
    Upgrade(oneshot::Sender<Upgraded>),
}

/// What woke a wait for bytes.
enum Woke {
    Read(usize),
    Timer,
    Shutdown,
}

impl<T: Transport> Conn<T> {
    /// The next request head: waits (idle, then for the rest of the head) under the timers.
    async fn next_head(&mut self, proxy: &Proxy, s: &Settings) -> Next {
        // A head is under way when bytes of it are here, and on a new connection (whose timer
        // started with the header timeout).
        let mut in_head = !self.buf.is_empty() || self.served == 0;
        if self.served > 0 {
            self.timer.set(if in_head {
                s.header_timeout
            } else {
                s.idle_timeout
            });
        }
        loop {
            let h2c = s.h2c && self.served == 0;
            if h2c && self.buf.starts_with(H2_PREFACE) {
                return Next::H2c;
            }
            // Perhaps the start of the preface: wait for the rest before parsing.
            let preface_so_far = h2c && H2_PREFACE.starts_with(&self.buf);
            if !self.buf.is_empty() && !preface_so_far {
                match parse::parse_head(&mut self.buf, s.max_head, s.max_fields) {
                    Ok(Some(head)) => return Next::Head(head),
                    // Only a head that does not come whole in one read moves the timer.
                    Ok(None) if !in_head => {
                        in_head = true;
                        self.timer.set(s.header_timeout);
                    }
                    Ok(None) => {}
                    Err(e) => return Next::Refuse(e),
                }
            }
            match self.wait_read(HEAD_READ).await {
                Ok(Woke::Read(0)) | Err(_) => return Next::Close,
                Ok(Woke::Read(_)) => {}
                Ok(Woke::Timer) if in_head => {
                    let _ = self.io.write_all(&s.timeout_answer).await;
                    let _ = self.io.flush().await;
                    return Next::Close;
                }
                Ok(Woke::Timer) => return Next::Close,
                Ok(Woke::Shutdown) => {
                    self.draining = true;
                    if in_head {
                        continue;
                    }
                    if !proxy.handed_over.load(Relaxed) {
                        return Next::Close;
                    }
                    // Handed over: a request may be on its way; it is answered with
                    // `Connection: close` if it comes soon, else the connection closes.
                    self.timer.set(crate::server::UPGRADE_IDLE_DRAIN);
                }
            }
        }
    }

    /// Reads into the buffer (asking room for `want` bytes) unless the timer or a shutdown
    /// comes first. A plain socket is waited on before any room is taken.
    async fn wait_read(&mut self, want: usize) -> io::Result<Woke> {
        poll_fn(|cx| {
            let ready = self.io.poll_read_ready(cx)?;
            if ready.is_ready() {
                if self.buf.capacity() - self.buf.len() < want / 4 {
                    self.buf.reserve(want);
                }
                if let Poll::Ready(n) =
                    tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)?
                {
                    return Poll::Ready(Ok(Woke::Read(n)));
                }
            }
            if self.timer.poll_expired(cx).is_ready() {
                return Poll::Ready(Ok(Woke::Timer));
            }
            if !self.draining && self.shutdown.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ok(Woke::Shutdown));
            }
            Poll::Pending
        })
        .await
    }

    /// One request and its response.
    async fn exchange(
        &mut self,
        proxy: &Arc<Proxy>,
        conn: &ConnInfo,
        s: &Settings,
        head: Head,
    ) -> After {
        self.served += 1;
        let Head {
            parts,
            framing,
            keep_alive,
            expect_continue,
            upgrade,
        } = head;
        let version = parts.version;
        let is_head = parts.method == Method::HEAD;
        let (body, mut pump) = match framing {
            Framing::Empty => (crate::body::empty(), None),
            Framing::Length(n) => Pump::new(Some(n)),
            Framing::Chunked => Pump::new(None),
        };
        let mut req = Request::from_parts(parts, body);
        let upgrade_tx = upgrade.then(|| {
            let (tx, rx) = oneshot::channel();
            req.extensions_mut()
                .insert(OnUpgrade(Arc::new(std::sync::Mutex::new(Some(rx)))));
            tx
        });
        if expect_continue && pump.is_some() {
            // The go-ahead; the member's answer may still refuse the body (then we close).
            if self
                .io
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .is_err()
            {
                return After::Close;
            }
        }
        let response = if s.redirect {
            crate::server::redirect_to_https(proxy, &req)
        } else {
            let handler: Pin<Box<dyn Future<Output = Response<RespBody>> + Send>> =
                Box::pin(edge::handle(Arc::clone(proxy), conn.clone(), req));
            match pump.as_mut() {
                None => handler.await,
                Some(pump) => {
                    let mut handler = handler;
                    loop {
                        tokio::select! {
                            biased;
                            res = &mut handler => break res,
                            () = pump.run(&mut self.io, &mut self.buf), if !pump.finished => {}
                        }
                    }
                }
            }
        };
        // A body not read to its end leaves the connection mid-message: close after this.
        let body_done = pump.as_ref().is_none_or(|p| p.complete);
        if proxy.shutdown.is_cancelled() {
            self.draining = true;
        }
        let close = !keep_alive || !body_done || self.draining;
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(tx) = upgrade_tx {
                if self
                    .write_response(response, version, true, false)
                    .await
                    .is_ok()
                {
                    return After::Upgrade(tx);
                }
                return After::Close;
            }
        }
        match self.write_response(response, version, is_head, close).await {
            Ok(true) if !close => {
                if self.buf.is_empty() {
                    // Nothing pipelined: give the buffer back while the connection idles.
                    self.buf = BytesMut::new();
                }
                After::KeepGoing
            }
            _ => After::Close,
        }
    }

    /// Writes `res`; `Ok(true)` when the connection may carry another exchange.
    async fn write_response(
        &mut self,
        mut res: Response<RespBody>,
        version: Version,
        no_body: bool,
        close: bool,
    ) -> io::Result<bool> {
        let status = res.status();
        let bodiless = no_body
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        let mut close = close;
        let chunked = if bodiless {
            if status.is_informational() || status == StatusCode::NO_CONTENT {
                res.headers_mut().remove(header::CONTENT_LENGTH);
            }
            res.headers_mut().remove(header::TRANSFER_ENCODING);
            false
        } else if let Some(n) = res.body().size_hint().exact() {
            res.headers_mut().remove(header::TRANSFER_ENCODING);
            res.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(n));
            false
        } else {
            res.headers_mut().remove(header::CONTENT_LENGTH);
            if version == Version::HTTP_11 {
                res.headers_mut().insert(
                    header::TRANSFER_ENCODING,
                    HeaderValue::from_static("chunked"),
                );
                true
            } else {
                // HTTP/1.0 has no chunks: the body ends when the connection does.
                close = true;
                false
            }
        };
        let h = res.headers_mut();
        if close {
            h.insert(header::CONNECTION, HeaderValue::from_static("close"));
        } else if version == Version::HTTP_10 {
            h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        }
        if !h.contains_key(header::DATE) {
            h.insert(header::DATE, date::now());
        }
        let mut out = Vec::with_capacity(256 + res.headers().len() * 32);
        encode_head(&res, version, &mut out);
        if bodiless {
            self.io.write_all(&out).await?;
            self.io.flush().await?;
            return Ok(!close);
        }
        let mut body = res.into_body();
        loop {
            let frame = poll_fn(|cx| match Pin::new(&mut body).poll_frame(cx) {
                Poll::Ready(f) => Poll::Ready(Some(f)),
                Poll::Pending => Poll::Ready(None),
            })
            .await;
            let frame = match frame {
                Some(f) => f,
                None => {
                    // The body is not ready: what is written so far goes out meanwhile.
                    if !out.is_empty() {
                        self.io.write_all(&out).await?;
                        out.clear();
                    }
                    self.io.flush().await?;
                    body.frame().await
                }
            };
            match frame {
                None => break,
                Some(Err(e)) => {
                    // The answer broke mid-way: the client sees a cut, never a clean end.
                    let _ = self.io.write_all(&out).await;
                    return Err(io::Error::other(e));
                }
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else {
                        continue; // trailers: HTTP/1.1 clients rarely ask for them
                    };
                    if data.is_empty() {
                        continue;
                    }
                    if chunked {
                        out.extend_from_slice(Hex::new(data.len()).as_slice());
                        out.extend_from_slice(b"\r\n");
                    }
                    if data.len() <= COALESCE {
                        out.extend_from_slice(&data);
                    } else {
                        self.io.write_all(&out).await?;
                        out.clear();
                        self.io.write_all(&data).await?;
                    }
                    if chunked {
                        out.extend_from_slice(b"\r\n");
                    }
                }
            }
        }
        if chunked {
            out.extend_from_slice(b"0\r\n\r\n");
        }
        self.io.write_all(&out).await?;
        self.io.flush().await?;
        Ok(!close)
    }
}

/// Status line and header fields, as HTTP/1.1 writes them.
fn encode_head(res: &Response<RespBody>, version: Version, out: &mut Vec<u8>) {
    out.extend_from_slice(if version == Version::HTTP_10 {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    });
    out.extend_from_slice(res.status().as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(
        res.status()
            .canonical_reason()
            .unwrap_or("Unknown")
            .as_bytes(),
    );
    out.extend_from_slice(b"\r\n");
    for (name, value) in res.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// A chunk size in hexadecimal, on the stack, without `core::fmt` (both directions of our
/// HTTP/1.1 write chunk sizes with it).
pub(crate) struct Hex {
    digits: [u8; 16],
    start: usize,
}

impl Hex {
    pub(crate) fn new(mut n: usize) -> Self {
        let mut digits = [b'0'; 16];
        let mut start = 16;
        loop {
            start -= 1;
            digits[start] = b"0123456789abcdef"[n & 0xf];
            n >>= 4;
            if n == 0 {
                break;
            }
        }
        Self { digits, start }
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.digits[self.start..]
    }
}

/// Feeds a request body from the connection to the handler.
struct Pump {
    /// Dropped when the body has ended, which ends the handler's body.
    tx: Option<mpsc::Sender<Result<Bytes, BoxError>>>,
    /// Bytes left of a Content-Length body; `None` for chunked.
    left: Option<u64>,
    chunked: Chunked,
    /// No more to do (whole, failed, or the handler let go of the body).
    finished: bool,
    /// The body was read to its end: the next request may follow on the connection.
    complete: bool,
}

impl Pump {
    fn new(length: Option<u64>) -> (RespBody, Option<Pump>) {
        let (tx, rx) = mpsc::channel(1);
        let body = ChannelBody::new(rx, length).boxed_unsync();
        let pump = Pump {
            tx: Some(tx),
            left: length,
            chunked: Chunked::default(),
            finished: false,
            complete: false,
        };
        (body, Some(pump))
    }

    /// Moves body bytes from `buf` (reading more from `io`) to the handler until the body is
    /// whole or fails. Cancelled (between pieces) when the handler answers first.
    async fn run<T: Transport>(&mut self, io: &mut T, buf: &mut BytesMut) {
        loop {
            let piece = match self.next_piece(buf) {
                Ok(Some(piece)) => piece,
                Ok(None) if self.complete => {
                    self.finished = true;
                    self.tx = None;
                    return;
                }
                Ok(None) => {
                    if buf.capacity() - buf.len() < BODY_READ / 4 {
                        buf.reserve(BODY_READ);
                    }
                    match poll_fn(|cx| tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, buf))
                        .await
                    {
                        Ok(0) => {
                            self.fail("the client closed the connection before its body ended")
                                .await;
                            return;
                        }
                        Ok(_) => continue,
                        Err(e) => {
                            self.fail(&format!("the client's connection failed mid-body: {e}"))
                                .await;
                            return;
                        }
                    }
                }
                Err(why) => {
                    self.fail(why).await;
                    return;
                }
            };
            let Some(tx) = &self.tx else { return };
            if tx.send(Ok(piece)).await.is_err() {
                // The handler dropped the body (it answered without it).
                self.finished = true;
                return;
            }
        }
    }

    /// The next piece of body in `buf`: `Ok(None)` when more must be read or the body ended.
    fn next_piece(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, &'static str> {
        match &mut self.left {
            Some(0) => {
                self.complete = true;
                Ok(None)
            }
            Some(left) => {
                if buf.is_empty() {
                    return Ok(None);
                }
                let n = (*left).min(buf.len() as u64) as usize;
                *left -= n as u64;
                Ok(Some(buf.split_to(n).freeze()))
            }
            None => match self.chunked.decode(buf)? {
                Decoded::Data(b) => Ok(Some(b)),
                Decoded::End => {
                    self.complete = true;
                    Ok(None)
                }
                Decoded::NeedMore => Ok(None),
            },
        }
    }

    async fn fail(&mut self, why: &str) {
        self.finished = true;
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Err(why.to_owned().into())).await;
        }
    }
}

/// One timer per connection, moved lazily: setting a later deadline only notes it, and the
/// timer, when it fires early, moves itself there. A busy keep-alive connection so re-arms
/// at most once per timeout, not once per request.
struct Timer {
    sleep: Pin<Box<Sleep>>,
    deadline: Instant,
}

impl Timer {
    fn new(after: Duration) -> Self {
        let deadline = Instant::now() + after;
        Self {
            sleep: Box::pin(tokio::time::sleep_until(deadline)),
            deadline,
        }
    }

    fn set(&mut self, after: Duration) {
        self.deadline = Instant::now() + after;
        if self.deadline < self.sleep.deadline() {
            self.sleep.as_mut().reset(self.deadline);
        }
    }

    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            ready!(self.sleep.as_mut().poll(cx));
            if Instant::now() >= self.deadline {
                return Poll::Ready(());
            }
            self.sleep.as_mut().reset(self.deadline);
        }
    }
}

/// The `Date` header, made at most once a second per thread.
mod date {
    use http::HeaderValue;
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};

    thread_local! {
        static CACHED: RefCell<(u64, HeaderValue)> =
            const { RefCell::new((0, HeaderValue::from_static(""))) };
    }

    pub fn now() -> HeaderValue {
        let now = SystemTime::now();
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        CACHED.with(|c| {
            let mut c = c.borrow_mut();
            if c.0 != secs {
                let text = httpdate::fmt_http_date(now);
                c.1 = HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""));
                c.0 = secs;
            }
            c.1.clone()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes_are_lowercase_hex() {
        assert_eq!(Hex::new(0).as_slice(), b"0");
        assert_eq!(Hex::new(255).as_slice(), b"ff");
        assert_eq!(Hex::new(16384).as_slice(), b"4000");
        assert_eq!(Hex::new(usize::MAX).as_slice(), b"ffffffffffffffff");
    }

    #[test]
    fn the_date_is_an_http_date() {
        let d = date::now();
        let text = d.to_str().unwrap();
        assert!(httpdate::parse_http_date(text).is_ok(), "{text}");
    }
}
