//! HTTP/1.1 to members on connections of our own, kept per member.
//!
//! hyper-util's legacy client was the largest cost left on the request path (issue 21): one
//! pool for every member behind a mutex, keyed by scheme and authority and hashed with SipHash
//! twice per request, and a task per connection that the request's task hands each request to
//! and gets each answer back from (two wake-ups, channels, boxed futures). Here the request's
//! own task writes the request and reads the answer's head on a connection taken from the
//! member that balancing picked; the answer's body reads the rest and gives the connection
//! back when it ends. Pingora's upstream connections work the same way.
//!
//! - **Pool**: each [`Member`] holds a stack of idle connections (newest on top, so the ones
//!   that go unused age out), behind a mutex held for one `pop` or `push`.
//! - **Stale connections**: a member may close an idle connection. One whose close (or any
//!   byte) has arrived is dropped at checkout; one that breaks before any byte of the answer
//!   came back is tried once more on a new connection when the request may be sent again
//!   (the request was never taken: the member had closed it) — otherwise the error goes to the
//!   forwarder's retry rules ([`super`]).
//! - **Framing**: the request's is ours (Content-Length for a held body, or the client's
//!   declared length, chunked otherwise); the answer's follows RFC 9112 §6.3 (no body for HEAD,
//!   1xx, 204, 304; chunked; Content-Length; else to the close, and the connection is not kept).
//! - **Upgrades**: a `101` hands the connection to the tunnel ([`Upgrade`]).
//!
//! h2c members stay on hyper's client (one multiplexed connection needs its own task anyway).

use crate::body::{BoxError, ClientBodyError, ReqBody};
use crate::h1::parse::{Chunked, Decoded};
use crate::h1::Rewind;
use crate::pool::Member;
use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// A member's idle connection older than this is not used again.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest answer head read.
const MAX_HEAD: usize = 64 * 1024;
/// Header fields of an answer parsed on the stack.
const FIELDS: usize = 64;
const READ: usize = 8 * 1024;

/// A member's idle connections.
#[derive(Debug, Default)]
pub struct Idle(Mutex<Vec<Pooled>>);

#[derive(Debug)]
struct Pooled {
    io: TcpStream,
    since: Instant,
}

impl Idle {
    /// The newest idle connection that is still open, if any.
    fn checkout(&self) -> Option<TcpStream> {
        loop {
            let p = self.0.lock().unwrap_or_else(|e| e.into_inner()).pop()?;
            if p.since.elapsed() > IDLE_TIMEOUT {
                continue;
            }
            // Nothing may be waiting on an idle connection: a close, or bytes nobody asked
            // for, and it is no use.
            let mut probe = [0u8; 1];
            match p.io.try_read(&mut probe) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Some(p.io),
                _ => continue,
            }
        }
    }

    fn put(&self, io: TcpStream, max: usize) {
        let mut idle = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < max {
            idle.push(Pooled {
                io,
                since: Instant::now(),
            });
        }
    }
}

/// Why an attempt got no answer head.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: io::Error },
    #[error("connecting to {addr} took over {} ms", .timeout.as_millis())]
    ConnectTimeout { addr: String, timeout: Duration },
    #[error("the member closed the connection before answering")]
    Closed,
    #[error("the connection to the member failed: {0}")]
    Io(#[source] io::Error),
    #[error("the member's answer is malformed: {0}")]
    Malformed(&'static str),
    /// The client's body failed while it was being sent (its cause is a [`ClientBodyError`]).
    #[error("{0}")]
    ClientBody(#[source] BoxError),
}

impl SendError {
    pub fn is_connect(&self) -> bool {
        matches!(self, Self::Connect { .. } | Self::ConnectTimeout { .. })
    }
}

/// What a request sends: its body held whole (it can be sent again) or streamed once.
pub enum Outgoing {
    Held(Bytes),
    Stream(ReqBody),
}

/// Where a connection goes when its answer has been read.
#[derive(Clone)]
pub struct Home {
    pub member: Arc<Member>,
    pub max_idle: usize,
}

/// Sends one request to `home.member` and reads its answer's head; the body follows.
pub async fn send(
    home: &Home,
    method: &Method,
    path_and_query: &str,
    headers: &HeaderMap,
    body: Outgoing,
    idempotent: bool,
    connect_timeout: Duration,
) -> Result<Response<UpstreamBody>, SendError> {
    let mut head = Vec::with_capacity(256 + headers.len() * 40);
    let (declared, chunked) = match &body {
        Outgoing::Held(b) => (Some(b.len() as u64), false),
        Outgoing::Stream(s) => (s.size_hint().exact(), s.size_hint().exact().is_none()),
    };
    encode_request(
        method,
        path_and_query,
        headers,
        &home.member.addr,
        declared,
        &mut head,
    );
    let stream = match body {
        Outgoing::Held(b) => {
            head.extend_from_slice(&b);
            None
        }
        Outgoing::Stream(s) => Some(s),
    };
    let head_only = *method == Method::HEAD;
    // A reused connection that turns out closed before any of the answer came is tried once
    // more on a new one, when the request can be sent again: its body is held and either the
    // write failed (nothing was taken) or the method is idempotent.
    if stream.is_none() {
        if let Some(io) = home.member.idle.checkout() {
            match exchange(io, &head, None, false, head_only, (true, idempotent), home).await {
                Err(Stale) => {}
                Ok(result) => return result,
            }
        }
    }
    let io = connect(&home.member.addr, connect_timeout).await?;
    match exchange(io, &head, stream, chunked, head_only, (false, false), home).await {
        Ok(result) => result,
        Err(Stale) => Err(SendError::Closed),
    }
}

/// A reused connection was found closed before any of the answer came.
struct Stale;

async fn connect(addr: &str, timeout: Duration) -> Result<TcpStream, SendError> {
    let io = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(io)) => io,
        Ok(Err(source)) => {
            return Err(SendError::Connect {
                addr: addr.to_owned(),
                source,
            })
        }
        Err(_) => {
            return Err(SendError::ConnectTimeout {
                addr: addr.to_owned(),
                timeout,
            })
        }
    };
    let _ = io.set_nodelay(true);
    Ok(io)
}

/// Writes the head (and a held body), streams a body, reads the answer's head.
/// `Err(Stale)`, only for a `reused` connection: the write failed (nothing was taken), or the
/// connection closed before any of the answer came and the method is `idempotent`.
async fn exchange(
    mut io: TcpStream,
    head: &[u8],
    stream: Option<ReqBody>,
    chunked: bool,
    head_only: bool,
    (reused, idempotent): (bool, bool),
    home: &Home,
) -> Result<Result<Response<UpstreamBody>, SendError>, Stale> {
    let mut buf = BytesMut::new();
    if let Err(e) = io.write_all(head).await {
        return match reused {
            true => Err(Stale),
            false => Ok(Err(SendError::Io(e))),
        };
    }
    let answer = match stream {
        None => read_head(&mut io, &mut buf).await,
        Some(body) => {
            let (mut rd, mut wr) = io.split();
            // The member may answer before it has read the whole body (a refusal, say).
            let mut sending = std::pin::pin!(send_body(&mut wr, body, chunked));
            let mut reading = std::pin::pin!(read_head(&mut rd, &mut buf));
            let mut sent = false;
            let answer = loop {
                tokio::select! {
                    r = &mut sending, if !sent => match r {
                        Ok(()) => sent = true,
                        Err(e) => return Ok(Err(e)),
                    },
                    h = &mut reading => break h,
                }
            };
            // A body not sent whole leaves the connection mid-request.
            answer.map(|mut h| {
                h.keep &= sent;
                h
            })
        }
    };
    let answer = match answer {
        Ok(a) => a,
        Err(SendError::Closed | SendError::Io(_)) if reused && idempotent && buf.is_empty() => {
            return Err(Stale)
        }
        Err(e) => return Ok(Err(e)),
    };
    Ok(Ok(answer.into_response(io, buf, head_only, home)))
}

/// The request line and header fields; the framing is ours.
fn encode_request(
    method: &Method,
    path_and_query: &str,
    headers: &HeaderMap,
    addr: &str,
    length: Option<u64>,
    out: &mut Vec<u8>,
) {
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path_and_query.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !headers.contains_key(header::HOST) {
        out.extend_from_slice(b"host: ");
        out.extend_from_slice(addr.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match length {
        // A GET or HEAD without a body says nothing of one.
        Some(0) if matches!(*method, Method::GET | Method::HEAD) => {}
        Some(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(n.to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        None => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// Streams the client's body to the member, chunked or as it is.
async fn send_body<W: tokio::io::AsyncWrite + Unpin>(
    wr: &mut W,
    mut body: ReqBody,
    chunked: bool,
) -> Result<(), SendError> {
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| match ClientBodyError::find(e.as_ref()) {
            Some(_) => SendError::ClientBody(e),
            None => SendError::ClientBody(Box::new(ClientBodyError::Read(e))),
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        if chunked {
            let mut size = crate::h1::Hex::new(data.len()).as_slice().to_vec();
            size.extend_from_slice(b"\r\n");
            wr.write_all(&size).await.map_err(SendError::Io)?;
            wr.write_all(&data).await.map_err(SendError::Io)?;
            wr.write_all(b"\r\n").await.map_err(SendError::Io)?;
        } else {
            wr.write_all(&data).await.map_err(SendError::Io)?;
        }
    }
    if chunked {
        wr.write_all(b"0\r\n\r\n").await.map_err(SendError::Io)?;
    }
    wr.flush().await.map_err(SendError::Io)
}

/// An answer's head, parsed.
struct AnswerHead {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    /// The connection may carry another request after this answer.
    keep: bool,
}

/// Reads until an answer's head other than `100 Continue` is whole.
async fn read_head<R: tokio::io::AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
) -> Result<AnswerHead, SendError> {
    loop {
        if !buf.is_empty() {
            match parse_answer(buf)? {
                Some(h) if h.status == StatusCode::CONTINUE => continue,
                Some(h) => return Ok(h),
                None => {}
            }
        }
        if buf.capacity() - buf.len() < READ / 4 {
            buf.reserve(READ);
        }
        let n = poll_fn(|cx| tokio_util::io::poll_read_buf(Pin::new(&mut *rd), cx, buf))
            .await
            .map_err(SendError::Io)?;
        if n == 0 {
            return Err(SendError::Closed);
        }
    }
}

fn parse_answer(buf: &mut BytesMut) -> Result<Option<AnswerHead>, SendError> {
    let mut fields = [httparse::EMPTY_HEADER; FIELDS];
    let mut res = httparse::Response::new(&mut fields);
    let len = match res.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Err(SendError::Malformed("the head is too large"))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(SendError::Malformed("the head has too many header fields"))
        }
        Err(_) => return Err(SendError::Malformed("the head does not parse")),
    };
    let status = StatusCode::from_u16(res.code.unwrap_or(0))
        .map_err(|_| SendError::Malformed("the status is not a status"))?;
    let version = if res.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let base = buf.as_ptr() as usize;
    let mut spans = Vec::with_capacity(res.headers.len());
    for h in res.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| SendError::Malformed("a header name is not a token"))?;
        spans.push((name, h.value.as_ptr() as usize - base, h.value.len()));
    }
    let head = buf.split_to(len).freeze();
    let mut headers = HeaderMap::with_capacity(spans.len() + 6);
    for (name, at, n) in spans {
        let value = HeaderValue::from_maybe_shared(head.slice(at..at + n))
            .map_err(|_| SendError::Malformed("a header value has a control character"))?;
        headers.append(name, value);
    }
    let mut close = version == Version::HTTP_10;
    for v in headers.get_all(header::CONNECTION) {
        for t in v.as_bytes().split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            if t.eq_ignore_ascii_case(b"close") {
                close = true;
            } else if t.eq_ignore_ascii_case(b"keep-alive") {
                close = false;
            }
        }
    }
    Ok(Some(AnswerHead {
        status,
        version,
        headers,
        keep: !close,
    }))
}

impl AnswerHead {
    fn into_response(
        self,
        io: TcpStream,
        buf: BytesMut,
        head_only: bool,
        home: &Home,
    ) -> Response<UpstreamBody> {
        let AnswerHead {
            status,
            version,
            headers,
            keep,
        } = self;
        let framing = if head_only
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            Framing::Length(0)
        } else if let Some(te) = headers.get(header::TRANSFER_ENCODING) {
            let last_chunked = te
                .as_bytes()
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            if last_chunked {
                Framing::Chunked(Chunked::default())
            } else {
                Framing::Close
            }
        } else if let Some(n) = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            Framing::Length(n)
        } else {
            Framing::Close
        };
        let mut response = Response::new(UpstreamBody::empty());
        *response.status_mut() = status;
        *response.version_mut() = version;
        *response.headers_mut() = headers;
        if status == StatusCode::SWITCHING_PROTOCOLS {
            let upgraded = Rewind::new(buf.freeze(), io);
            response
                .extensions_mut()
                .insert(Upgrade(Arc::new(Mutex::new(Some(upgraded)))));
            return response;
        }
        let keep = keep && !matches!(framing, Framing::Close);
        let mut body = UpstreamBody {
            conn: Some(Live { io, buf }),
            framing,
            keep,
            home: Some(home.clone()),
        };
        body.finish_if_done();
        *response.body_mut() = body;
        response
    }
}

/// A member's side of a `101`: its connection, with what it sent after its head.
#[derive(Clone)]
pub struct Upgrade(Arc<Mutex<Option<Rewind<TcpStream>>>>);

impl Upgrade {
    pub fn take(&self) -> Option<Rewind<TcpStream>> {
        self.0.lock().ok()?.take()
    }
}

#[derive(Debug)]
enum Framing {
    Length(u64),
    Chunked(Chunked),
    Close,
}

struct Live {
    io: TcpStream,
    buf: BytesMut,
}

/// An answer's body, read from the member's connection as the client takes it; the
/// connection goes back to the member's pool when the body has ended.
pub struct UpstreamBody {
    conn: Option<Live>,
    framing: Framing,
    keep: bool,
    home: Option<Home>,
}

impl UpstreamBody {
    fn empty() -> Self {
        Self {
            conn: None,
            framing: Framing::Length(0),
            keep: false,
            home: None,
        }
    }

    /// At the body's end: the connection goes home or is closed.
    fn finish_if_done(&mut self) {
        let done = match &self.framing {
            Framing::Length(0) => true,
            Framing::Chunked(c) => c.done(),
            _ => false,
        };
        if done {
            if let (Some(live), Some(home)) = (self.conn.take(), self.home.take()) {
                if self.keep && live.buf.is_empty() {
                    home.member.idle.put(live.io, home.max_idle);
                }
            }
        }
    }
}

/// Why an answer's body broke.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the member closed the connection before its answer ended")]
    Cut,
    #[error("the member's answer is malformed: {0}")]
    Malformed(&'static str),
    #[error("reading the member's answer failed: {0}")]
    Io(#[from] io::Error),
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        loop {
            let Some(live) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            // What is in the buffer first.
            let piece = match &mut this.framing {
                Framing::Length(0) => None,
                Framing::Length(left) if !live.buf.is_empty() => {
                    let n = (*left).min(live.buf.len() as u64) as usize;
                    *left -= n as u64;
                    Some(live.buf.split_to(n).freeze())
                }
                Framing::Length(_) => None,
                Framing::Chunked(c) => match c.decode(&mut live.buf) {
                    Ok(Decoded::Data(b)) => Some(b),
                    Ok(Decoded::End) | Ok(Decoded::NeedMore) => None,
                    Err(why) => {
                        this.conn = None;
                        return Poll::Ready(Some(Err(BodyError::Malformed(why))));
                    }
                },
                Framing::Close if !live.buf.is_empty() => Some(live.buf.split().freeze()),
                Framing::Close => None,
            };
            if let Some(piece) = piece {
                this.finish_if_done();
                return Poll::Ready(Some(Ok(Frame::data(piece))));
            }
            this.finish_if_done();
            let Some(live) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            if live.buf.capacity() - live.buf.len() < READ / 4 {
                live.buf.reserve(READ);
            }
            let n = ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut live.io),
                cx,
                &mut live.buf
            ))?;
            if n == 0 {
                this.conn = None;
                return match this.framing {
                    Framing::Close => Poll::Ready(None),
                    _ => Poll::Ready(Some(Err(BodyError::Cut))),
                };
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.conn.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.framing, &self.conn) {
            (_, None) => SizeHint::with_exact(0),
            (Framing::Length(n), Some(_)) => SizeHint::with_exact(*n),
            _ => SizeHint::default(),
        }
    }
}
