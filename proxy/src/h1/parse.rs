//! The part of our HTTP/1.1 server that touches no socket: a request head from bytes
//! (`httparse`), its body's framing by RFC 9112 §6, and a decoder for chunked bodies. Being
//! plain functions over bytes, the fuzzers (`fuzz/fuzz_targets/h1_request.rs`) and the
//! smuggling tests drive them directly.
//!
//! Where the RFC lets a server choose, this one refuses (400, then the connection closes):
//! `Transfer-Encoding` together with `Content-Length`, a transfer coding other than a single
//! final `chunked`, `Transfer-Encoding` in an HTTP/1.0 request, `Content-Length` values that
//! differ or are not plain digits, more than one `Host`, none in HTTP/1.1, obsolete line
//! folding, a bare CR in a head, and a bare CR or LF where a chunked body needs CRLF. Each of
//! these is a way to make two parsers disagree about where a request ends. A bare LF ending a
//! head's line is read as a line end (RFC 9112 §2.2 allows it, nginx and httparse do it): the
//! member never sees it, since heads are written anew with CRLF.

use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version};
use std::mem::MaybeUninit;

/// Header fields parsed on the stack before the parser asks for room on the heap.
const INLINE_FIELDS: usize = 64;
/// Chunk extensions and trailers kept in check: bytes allowed per request in all.
pub const MAX_CHUNK_META: usize = 16 * 1024;

/// How a request's body ends (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A parsed request head.
#[derive(Debug)]
pub struct Head {
    pub parts: http::request::Parts,
    pub framing: Framing,
    /// The client lets the connection stay open after this exchange.
    pub keep_alive: bool,
    /// `Expect: 100-continue`: the client waits for a go-ahead before sending its body.
    pub expect_continue: bool,
    /// `Connection: upgrade` with an `Upgrade` header (a WebSocket, say).
    pub upgrade: bool,
}

/// Why a head was refused. Every one of them is the client's fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// `size`: what had come when the limit was passed (the head may be longer still).
    #[error("the request head is over {limit} bytes ({size} so far)")]
    TooLarge { size: usize, limit: usize },
    #[error("the request has more than {limit} header fields")]
    TooManyFields { limit: usize },
    #[error("{0}")]
    Malformed(String),
}

fn malformed(what: impl Into<String>) -> HeadError {
    HeadError::Malformed(what.into())
}

/// Parses the head at the start of `buf`. `Ok(None)`: not all of it is here yet (and what is
/// here is within `max_bytes`). On success the head's bytes are taken off `buf`; header values
/// and the target share them instead of being copied.
pub fn parse_head(
    buf: &mut BytesMut,
    max_bytes: usize,
    max_fields: usize,
) -> Result<Option<Head>, HeadError> {
    let Some(layout) = layout(buf, max_bytes, max_fields)? else {
        return Ok(None);
    };
    let head = buf.split_to(layout.len).freeze();
    finish(layout, &head).map(Some)
}

/// Where the parts of a head are, as offsets into its bytes: what httparse found, checked,
/// with nothing borrowed from the buffer.
struct Layout {
    len: usize,
    method: Method,
    version: Version,
    target: (usize, usize),
    fields: Vec<(HeaderName, usize, usize)>,
}

fn layout(buf: &[u8], max_bytes: usize, max_fields: usize) -> Result<Option<Layout>, HeadError> {
    let mut inline = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; INLINE_FIELDS];
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(buf, &mut inline) {
        Ok(status) => locate(buf, &req, status, max_bytes, max_fields),
        Err(httparse::Error::TooManyHeaders) => {
            // Rare: again with as many fields as the limit allows, plus one to tell.
            let mut many = vec![httparse::EMPTY_HEADER; max_fields + 1];
            let mut req = httparse::Request::new(&mut many);
            match req.parse(buf) {
                Ok(status) => locate(buf, &req, status, max_bytes, max_fields),
                Err(httparse::Error::TooManyHeaders) if buf.len() > max_bytes => {
                    Err(HeadError::TooLarge {
                        size: buf.len(),
                        limit: max_bytes,
                    })
                }
                Err(httparse::Error::TooManyHeaders) => {
                    Err(HeadError::TooManyFields { limit: max_fields })
                }
                Err(e) => Err(malformed(parse_error(e))),
            }
        }
        Err(e) => Err(malformed(parse_error(e))),
    }
}

fn locate(
    buf: &[u8],
    req: &httparse::Request<'_, '_>,
    status: httparse::Status<usize>,
    max_bytes: usize,
    max_fields: usize,
) -> Result<Option<Layout>, HeadError> {
    let len = match status {
        httparse::Status::Complete(n) if n <= max_bytes => n,
        httparse::Status::Partial if buf.len() <= max_bytes => return Ok(None),
        httparse::Status::Complete(n) => {
            return Err(HeadError::TooLarge {
                size: n,
                limit: max_bytes,
            })
        }
        httparse::Status::Partial => {
            return Err(HeadError::TooLarge {
                size: buf.len(),
                limit: max_bytes,
            })
        }
    };
    if req.headers.len() > max_fields.max(INLINE_FIELDS) {
        return Err(HeadError::TooManyFields { limit: max_fields });
    }
    let method = Method::from_bytes(req.method.unwrap_or_default().as_bytes())
        .map_err(|_| malformed("the method is not a token"))?;
    let version = match req.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let base = buf.as_ptr() as usize;
    let at = |s: &[u8]| (s.as_ptr() as usize - base, s.len());
    let target = at(req.path.unwrap_or_default().as_bytes());
    let mut fields = Vec::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| malformed("a header name is not a token"))?;
        let (start, n) = at(h.value);
        fields.push((name, start, n));
    }
    Ok(Some(Layout {
        len,
        method,
        version,
        target,
        fields,
    }))
}

fn parse_error(e: httparse::Error) -> String {
    let what = match e {
        httparse::Error::HeaderName => "a header name has a character names may not have",
        httparse::Error::HeaderValue => "a header value has a control character",
        httparse::Error::NewLine => "a line ends without CRLF (bare CR or LF)",
        httparse::Error::Status => "the status is malformed",
        httparse::Error::Token => "the method is not a token",
        httparse::Error::TooManyHeaders => "too many header fields",
        httparse::Error::Version => "the HTTP version is not HTTP/1.0 or HTTP/1.1",
    };
    format!("the request head is malformed: {what}")
}

/// The head as `http` types, sharing `head`'s bytes, with its framing and connection facts.
fn finish(l: Layout, head: &Bytes) -> Result<Head, HeadError> {
    let (t, tn) = l.target;
    let uri = Uri::from_maybe_shared(head.slice(t..t + tn))
        .map_err(|_| malformed("the request target is not a valid URI"))?;
    let version = l.version;
    // Room for what the edge adds (x-forwarded-*, x-request-id, the session) without growing.
    let mut headers = HeaderMap::with_capacity(l.fields.len() + 8);
    for (name, at, n) in l.fields {
        let value = HeaderValue::from_maybe_shared(head.slice(at..at + n))
            .map_err(|_| malformed("a header value has a control character"))?;
        headers.append(name, value);
    }
    let framing = framing(&headers, version)?;
    let hosts = headers.get_all(header::HOST).iter().count();
    if hosts > 1 {
        return Err(malformed(
            "the request has more than one Host header; send one",
        ));
    }
    if hosts == 0 && version == Version::HTTP_11 && uri.authority().is_none() {
        return Err(malformed(
            "an HTTP/1.1 request needs a Host header (RFC 9112 §3.2)",
        ));
    }
    let mut close = false;
    let mut keep = false;
    let mut upgrade_token = false;
    for v in headers.get_all(header::CONNECTION) {
        for token in tokens(v.as_bytes()) {
            if token.eq_ignore_ascii_case(b"close") {
                close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                keep = true;
            } else if token.eq_ignore_ascii_case(b"upgrade") {
                upgrade_token = true;
            }
        }
    }
    let keep_alive = !close && (version == Version::HTTP_11 || keep);
    let expect_continue = version == Version::HTTP_11
        && headers
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let upgrade = upgrade_token && headers.contains_key(header::UPGRADE);
    let mut request = Request::new(());
    *request.method_mut() = l.method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    let (parts, ()) = request.into_parts();
    Ok(Head {
        parts,
        framing,
        keep_alive,
        expect_continue,
        upgrade,
    })
}

/// The comma-separated tokens of a list header, trimmed, empty ones skipped.
fn tokens(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',')
        .map(|t| t.trim_ascii())
        .filter(|t| !t.is_empty())
}

/// RFC 9112 §6.3, refusing whatever two parsers could read differently.
fn framing(headers: &HeaderMap, version: Version) -> Result<Framing, HeadError> {
    let mut te = headers.get_all(header::TRANSFER_ENCODING).iter().peekable();
    let has_te = te.peek().is_some();
    let mut length: Option<u64> = None;
    for v in headers.get_all(header::CONTENT_LENGTH) {
        for token in v.as_bytes().split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            let n = digits(token).ok_or_else(|| {
                malformed("Content-Length is not a number of bytes (digits only)")
            })?;
            if length.is_some_and(|l| l != n) {
                return Err(malformed(
                    "the request has Content-Length values that differ",
                ));
            }
            length = Some(n);
        }
    }
    if has_te {
        if version == Version::HTTP_10 {
            return Err(malformed(
                "Transfer-Encoding is not allowed in an HTTP/1.0 request",
            ));
        }
        if length.is_some() {
            return Err(malformed(
                "the request has both Transfer-Encoding and Content-Length; send one",
            ));
        }
        let codings: Vec<&[u8]> = te.flat_map(|v| tokens(v.as_bytes())).collect();
        return match codings.as_slice() {
            [only] if only.eq_ignore_ascii_case(b"chunked") => Ok(Framing::Chunked),
            _ => Err(malformed(
                "only `Transfer-Encoding: chunked` is accepted (one coding, once)",
            )),
        };
    }
    Ok(match length {
        None | Some(0) => Framing::Empty,
        Some(n) => Framing::Length(n),
    })
}

/// A decimal number of at most 19 digits (below `u64::MAX`), nothing else.
fn digits(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')))
}

/// What the chunk decoder found.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Body bytes.
    Data(Bytes),
    /// The body has ended (last chunk and trailers read; trailers are dropped).
    End,
    /// `buf` holds nothing more to decode: read more.
    NeedMore,
}

/// A `Transfer-Encoding: chunked` decoder (RFC 9112 §7.1), strict about line ends.
#[derive(Debug, Default)]
pub struct Chunked {
    state: ChunkState,
    /// Bytes left in the current chunk; during `Size`, the size read so far.
    size: u64,
    digits: u8,
    /// Chunk-extension and trailer bytes seen, against [`MAX_CHUNK_META`].
    meta: usize,
    /// Bytes in the current trailer line (0: the empty line that ends the body).
    line: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    /// Whitespace after the size, before `;` or CR.
    SizeSpace,
    Ext,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    Trailer,
    TrailerLf,
    Done,
}

impl Chunked {
    /// Decodes from the front of `buf`, taking what it used.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, &'static str> {
        use ChunkState::*;
        let mut i = 0;
        while i < buf.len() {
            let b = buf[i];
            match self.state {
                Size => match hex(b) {
                    Some(d) => {
                        if self.digits == 16 {
                            return Err("a chunk size is too large");
                        }
                        self.size = self.size << 4 | u64::from(d);
                        self.digits += 1;
                    }
                    None if self.digits == 0 => return Err("a chunk size is not hexadecimal"),
                    None => self.state = after_size(b)?,
                },
                SizeSpace => self.state = after_size(b)?,
                Ext => {
                    self.meta += 1;
                    if self.meta > MAX_CHUNK_META {
                        return Err("chunk extensions are too long");
                    }
                    match b {
                        b'\r' => self.state = SizeLf,
                        b'\n' => return Err("a chunk line ends in a bare LF"),
                        _ => {}
                    }
                }
                SizeLf => {
                    if b != b'\n' {
                        return Err("a chunk line ends in a bare CR");
                    }
                    self.digits = 0;
                    if self.size == 0 {
                        self.state = Trailer;
                        self.line = 0;
                    } else {
                        self.state = Data;
                    }
                }
                Data => {
                    let _ = buf.split_to(i);
                    let n = (self.size.min(buf.len() as u64)) as usize;
                    self.size -= n as u64;
                    if self.size == 0 {
                        self.state = DataCr;
                    }
                    return Ok(Decoded::Data(buf.split_to(n).freeze()));
                }
                DataCr => {
                    if b != b'\r' {
                        return Err("a chunk is longer than its size says");
                    }
                    self.state = DataLf;
                }
                DataLf => {
                    if b != b'\n' {
                        return Err("a chunk ends in a bare CR");
                    }
                    self.state = Size;
                    self.size = 0;
                }
                Trailer => match b {
                    b'\r' => self.state = TrailerLf,
                    b'\n' => return Err("a trailer line ends in a bare LF"),
                    _ => {
                        self.meta += 1;
                        self.line += 1;
                        if self.meta > MAX_CHUNK_META {
                            return Err("the trailers are too long");
                        }
                    }
                },
                TrailerLf => {
                    if b != b'\n' {
                        return Err("a trailer line ends in a bare CR");
                    }
                    if self.line == 0 {
                        self.state = Done;
                        let _ = buf.split_to(i + 1);
                        return Ok(Decoded::End);
                    }
                    self.line = 0;
                    self.state = Trailer;
                }
                Done => break,
            }
            i += 1;
        }
        let _ = buf.split_to(i);
        if self.state == Done {
            return Ok(Decoded::End);
        }
        Ok(Decoded::NeedMore)
    }

    pub fn done(&self) -> bool {
        self.state == ChunkState::Done
    }
}

/// What may follow a chunk size: whitespace, an extension, or the line's end.
fn after_size(b: u8) -> Result<ChunkState, &'static str> {
    match b {
        b' ' | b'\t' => Ok(ChunkState::SizeSpace),
        b';' => Ok(ChunkState::Ext),
        b'\r' => Ok(ChunkState::SizeLf),
        _ => Err("a chunk size is followed by something else"),
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> Result<Option<Head>, HeadError> {
        parse_head(&mut BytesMut::from(raw.as_bytes()), 8192, 100)
    }

    fn refused(raw: &str, why: &str) {
        match head(raw) {
            Err(HeadError::Malformed(m)) => assert!(m.contains(why), "{raw:?}: {m}"),
            other => panic!("{raw:?} should be refused ({why}), got {other:?}"),
        }
    }

    #[test]
    fn a_plain_get_is_parsed_and_shares_the_heads_bytes() {
        let mut buf = BytesMut::from(
            &b"GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nX-Thing: one\r\nX-Thing: two\r\n\r\nNEXT"[..],
        );
        let h = parse_head(&mut buf, 8192, 100).unwrap().unwrap();
        assert_eq!(&buf[..], b"NEXT", "the next request stays in the buffer");
        assert_eq!(h.parts.method, Method::GET);
        assert_eq!(h.parts.uri.path(), "/a");
        assert_eq!(h.parts.uri.query(), Some("b=1"));
        assert_eq!(h.parts.version, Version::HTTP_11);
        assert_eq!(h.parts.headers.get_all("x-thing").iter().count(), 2);
        assert_eq!(h.framing, Framing::Empty);
        assert!(h.keep_alive && !h.upgrade && !h.expect_continue);
    }

    #[test]
    fn a_partial_head_waits_and_an_oversized_one_is_refused() {
        assert!(head("GET / HTTP/1.1\r\nHost: a\r\n").unwrap().is_none());
        let big = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n", "y".repeat(9000));
        assert_eq!(
            head(&big).unwrap_err(),
            HeadError::TooLarge {
                size: big.len(),
                limit: 8192
            }
        );
        let whole = format!("{big}\r\n");
        assert_eq!(
            head(&whole).unwrap_err(),
            HeadError::TooLarge {
                size: whole.len(),
                limit: 8192
            }
        );
    }

    #[test]
    fn many_fields_go_to_the_heap_up_to_the_limit() {
        let mut raw = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
        for i in 0..90 {
            raw.push_str(&format!("X-{i}: v\r\n"));
        }
        raw.push_str("\r\n");
        let h = head(&raw).unwrap().unwrap();
        assert_eq!(h.parts.headers.len(), 91);
        let mut buf = BytesMut::from(raw.as_bytes());
        assert_eq!(
            parse_head(&mut buf, 8192, 80).unwrap_err(),
            HeadError::TooManyFields { limit: 80 }
        );
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection() {
        let h = head("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!h.keep_alive, "HTTP/1.0 closes unless asked");
        let h = head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(h.keep_alive);
        let h = head("GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive);
        let h =
            head("GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
                .unwrap()
                .unwrap();
        assert!(h.upgrade);
        let h =
            head("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
                .unwrap()
                .unwrap();
        assert!(h.expect_continue);
        assert_eq!(h.framing, Framing::Length(3));
    }

    /// The request-smuggling set: every head two parsers could read differently is refused.
    #[test]
    fn heads_that_parsers_could_disagree_on_are_refused() {
        let cases = [
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                "differ",
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n",
                "differ",
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
                "digits only",
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\n",
                "digits only",
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n",
                "digits only",
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                "both",
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                "only",
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                "only",
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
                "only",
            ),
            (
                "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n",
                "only",
            ),
            (
                "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
                "HTTP/1.0",
            ),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "more than one Host"),
            ("GET / HTTP/1.1\r\nX: y\r\n\r\n", "needs a Host"),
            // Obsolete line folding (RFC 9112 §5.2: a server may refuse it).
            ("GET / HTTP/1.1\r\nHost: a\r\nX: one\r\n two\r\n\r\n", "malformed"),
            // Bare LF and bare CR as line ends.
            ("GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n", "malformed"),
            ("GET / HTTP/1.1\r\nHost: a\r\nX: y\r\r\n\r\n", "malformed"),
            // A space before the colon (RFC 9112 §5.1: must be refused).
            ("GET / HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\n", "malformed"),
            ("GET / HTTP/2.0\r\nHost: a\r\n\r\n", "version"),
            ("G@T / HTTP/1.1\r\nHost: a\r\n\r\n", "malformed"),
        ];
        for (raw, why) in cases {
            refused(raw, why);
        }
    }

    #[test]
    fn a_te_with_spaces_and_case_is_still_chunked() {
        let h = head("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:  Chunked \r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::Chunked);
        let h = head("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 7, 7\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            h.framing,
            Framing::Length(7),
            "repeated equal values are one"
        );
    }

    fn decode_all(input: &[u8]) -> Result<(Vec<u8>, bool, Vec<u8>), &'static str> {
        let mut d = Chunked::default();
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        loop {
            match d.decode(&mut buf)? {
                Decoded::Data(b) => out.extend_from_slice(&b),
                Decoded::End => return Ok((out, true, buf.to_vec())),
                Decoded::NeedMore => return Ok((out, false, buf.to_vec())),
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_with_extensions_and_trailers() {
        let (body, done, rest) =
            decode_all(b"5\r\nhello\r\n6;name=v\r\n world\r\n0\r\nX-T: 1\r\n\r\nGET").unwrap();
        assert_eq!(body, b"hello world");
        assert!(done);
        assert_eq!(rest, b"GET", "what follows is the next request");
        // Byte by byte, the same.
        let input = b"A \r\n0123456789\r\n0\r\n\r\n";
        let mut d = Chunked::default();
        let mut out = Vec::new();
        let mut buf = BytesMut::new();
        for &b in input.iter() {
            buf.extend_from_slice(&[b]);
            while let Decoded::Data(x) = d.decode(&mut buf).unwrap() {
                out.extend_from_slice(&x);
            }
        }
        assert!(d.done());
        assert_eq!(out, b"0123456789");
    }

    #[test]
    fn chunked_bodies_that_could_smuggle_are_refused() {
        for bad in [
            &b"5\nhello\r\n0\r\n\r\n"[..], // bare LF after the size
            b"5\r\nhello\n0\r\n\r\n",      // bare LF after the data
            b"5\r\nhelloX\r\n0\r\n\r\n",   // longer than its size
            b"5\rhello\r\n0\r\n\r\n",      // bare CR
            b"-5\r\nhello\r\n0\r\n\r\n",   // not hexadecimal
            b"0x5\r\nhello\r\n0\r\n\r\n",  // a prefix
            b"10000000000000000\r\n",      // 17 hex digits: over u64
            b"5;ext\nhello\r\n0\r\n\r\n",  // bare LF in an extension
            b"0\r\nX: y\n\r\n",            // bare LF in a trailer
        ] {
            assert!(
                decode_all(bad).is_err(),
                "{:?} should be refused",
                String::from_utf8_lossy(bad)
            );
        }
        let long_ext = format!("1;{}\r\nx\r\n0\r\n\r\n", "e".repeat(MAX_CHUNK_META + 1));
        assert_eq!(
            decode_all(long_ext.as_bytes()).unwrap_err(),
            "chunk extensions are too long"
        );
        // 16 hex digits is the most a size may have, and fits.
        assert_eq!(
            decode_all(b"FFFFFFFFFFFFFFFF\r\nab").unwrap(),
            (b"ab".to_vec(), false, Vec::new())
        );
    }
}
