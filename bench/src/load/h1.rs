//! A minimal HTTP/1.1 client: one pre-rendered request, responses parsed with `httparse`.
//!
//! hyper's client runs each connection as its own task and hands requests and responses
//! over channels; on a two-core machine shared with the proxy under test that overhead
//! showed up as a generator that fell well short of `wrk`. This client does what `wrk` does:
//! write the same bytes, parse the head in place, count the body (`Content-Length` or
//! chunked) without keeping it, all in the worker's own task.

use super::conn::Answer;
use super::LoadError;
use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A byte stream: plain TCP or TLS.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Stream for T {}

/// Most header lines a response may have.
const MAX_HEADERS: usize = 64;
/// Largest response head.
const MAX_HEAD: usize = 64 << 10;

/// One HTTP/1.1 connection.
pub struct H1 {
    stream: Box<dyn Stream>,
    buf: BytesMut,
    closed: bool,
}

fn err(message: impl Into<String>) -> LoadError {
    LoadError::Failed {
        what: "HTTP/1.1",
        message: message.into(),
    }
}

impl H1 {
    pub fn new(stream: Box<dyn Stream>) -> H1 {
        H1 {
            stream,
            buf: BytesMut::with_capacity(16 << 10),
            closed: false,
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    async fn fill(&mut self) -> Result<(), LoadError> {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(16 << 10);
        }
        match self.stream.read_buf(&mut self.buf).await {
            Ok(0) => {
                self.closed = true;
                Err(err("the server closed the connection"))
            }
            Ok(_) => Ok(()),
            Err(e) => {
                self.closed = true;
                Err(err(e.to_string()))
            }
        }
    }

    /// Sends `request` (a whole GET, head only) and reads the answer.
    pub async fn request(&mut self, request: &[u8]) -> Result<Answer, LoadError> {
        if let Err(e) = self.stream.write_all(request).await {
            self.closed = true;
            return Err(err(e.to_string()));
        }
        // The head.
        let (status, length, chunked) = loop {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut res = httparse::Response::new(&mut headers);
            match res.parse(&self.buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let status = res.code.unwrap_or(0);
                    let mut length = None;
                    let mut chunked = false;
                    for h in res.headers.iter() {
                        if h.name.eq_ignore_ascii_case("content-length") {
                            length = std::str::from_utf8(h.value)
                                .ok()
                                .and_then(|v| v.trim().parse::<u64>().ok());
                        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                            chunked = h.value.eq_ignore_ascii_case(b"chunked");
                        } else if h.name.eq_ignore_ascii_case("connection")
                            && h.value.eq_ignore_ascii_case(b"close")
                        {
                            self.closed = true;
                        }
                    }
                    self.buf.advance(n);
                    break (status, length, chunked);
                }
                Ok(httparse::Status::Partial) => {
                    if self.buf.len() > MAX_HEAD {
                        self.closed = true;
                        return Err(err("response head too large"));
                    }
                    self.fill().await?;
                }
                Err(e) => {
                    self.closed = true;
                    return Err(err(format!("bad response head: {e}")));
                }
            }
        };
        let bytes = if chunked {
            self.chunked_body().await?
        } else if let Some(len) = length {
            self.sized_body(len).await?
        } else if status == 204 || status == 304 || (100..200).contains(&status) {
            0
        } else {
            // Read to the end of the connection.
            let mut n = self.buf.len() as u64;
            self.buf.clear();
            while self.fill().await.is_ok() {
                n += self.buf.len() as u64;
                self.buf.clear();
            }
            n
        };
        Ok(Answer { status, bytes })
    }

    async fn sized_body(&mut self, len: u64) -> Result<u64, LoadError> {
        let mut left = len;
        loop {
            let take = (self.buf.len() as u64).min(left);
            self.buf.advance(take as usize);
            left -= take;
            if left == 0 {
                return Ok(len);
            }
            self.fill().await?;
        }
    }

    async fn line(&mut self) -> Result<BytesMut, LoadError> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.buf.split_to(i);
                self.buf.advance(2);
                return Ok(line);
            }
            if self.buf.len() > MAX_HEAD {
                self.closed = true;
                return Err(err("chunk size line too long"));
            }
            self.fill().await?;
        }
    }

    async fn chunked_body(&mut self) -> Result<u64, LoadError> {
        let mut total = 0;
        loop {
            let line = self.line().await?;
            let hex = line[..].split(|&b| b == b';').next().unwrap_or_default();
            let size = std::str::from_utf8(hex)
                .ok()
                .and_then(|s| u64::from_str_radix(s.trim(), 16).ok())
                .ok_or_else(|| {
                    self.closed = true;
                    err("bad chunk size")
                })?;
            if size == 0 {
                // Trailers, then the empty line.
                while !self.line().await?.is_empty() {}
                return Ok(total);
            }
            self.sized_body(size).await?;
            total += size;
            if self.line().await?.is_empty() {
                continue;
            }
            self.closed = true;
            return Err(err("chunk not followed by CRLF"));
        }
    }
}
