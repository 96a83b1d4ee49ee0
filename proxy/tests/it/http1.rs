//! Our HTTP/1.1 server (`proxy/src/h1.rs`) over real sockets: pipelining, bodies in both
//! framings, HTTP/1.0, HEAD, `Expect: 100-continue`, h2c on the plain listener, and the
//! request-smuggling set — each refused head answered `400` with the JSON error, the
//! connection closed, and nothing of it or of what was hidden behind it reaching the member.

use crate::helpers::*;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn one_member(name: &str) -> (TestProxy, Backend) {
    let b = Backend::start("only").await;
    let toml = format!(
        "{}{}",
        pool_toml("p", "round_robin", &[&b]),
        route_toml("/", "pool = \"p\"")
    );
    (TestProxy::start(name, &toml).await, b)
}

/// One response as it came off the wire.
#[derive(Debug)]
struct Raw {
    status: u16,
    version: u8,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// Reads what `s` has into `buf` (0 at the end of the stream), by `deadline`.
async fn fill(buf: &mut Vec<u8>, s: &mut TcpStream, deadline: tokio::time::Instant) -> usize {
    let mut chunk = [0u8; 8192];
    let n = tokio::time::timeout_at(deadline, s.read(&mut chunk))
        .await
        .expect("an answer in time")
        .unwrap_or(0);
    buf.extend_from_slice(&chunk[..n]);
    n
}

/// Reads from `s` until what came holds `needle` (the stream must not end first).
async fn read_until(s: &mut TcpStream, buf: &mut Vec<u8>, needle: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !String::from_utf8_lossy(buf).contains(needle) {
        assert!(
            fill(buf, s, deadline).await > 0,
            "the stream ended before {needle:?}"
        );
    }
}

/// Reads one response from `s`, its body framed as its head says (`head_only` for HEAD).
async fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>, head_only: bool) -> Option<Raw> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let (status, version, headers, head_len) = loop {
        let mut fields = [httparse::EMPTY_HEADER; 64];
        let mut res = httparse::Response::new(&mut fields);
        if let httparse::Status::Complete(n) = res.parse(buf).expect("a well-formed head") {
            let headers: Vec<(String, String)> = res
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            break (res.code.unwrap(), res.version.unwrap(), headers, n);
        }
        if fill(buf, s, deadline).await == 0 {
            return None;
        }
    };
    buf.drain(..head_len);
    let mut raw = Raw {
        status,
        version,
        headers,
        body: Vec::new(),
    };
    if head_only || status == 204 || status == 304 || (100..200).contains(&status) {
        return Some(raw);
    }
    if raw.header("transfer-encoding") == Some("chunked") {
        loop {
            let line_end = loop {
                if let Some(i) = buf.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                assert!(
                    fill(buf, s, deadline).await > 0,
                    "the chunked body ended early"
                );
            };
            let size =
                usize::from_str_radix(std::str::from_utf8(&buf[..line_end]).unwrap(), 16).unwrap();
            while buf.len() < line_end + 2 + size + 2 {
                assert!(
                    fill(buf, s, deadline).await > 0,
                    "the chunked body ended early"
                );
            }
            raw.body
                .extend_from_slice(&buf[line_end + 2..line_end + 2 + size]);
            buf.drain(..line_end + 2 + size + 2);
            if size == 0 {
                return Some(raw);
            }
        }
    }
    match raw.header("content-length") {
        Some(n) => {
            let n: usize = n.parse().unwrap();
            while buf.len() < n {
                assert!(fill(buf, s, deadline).await > 0, "the body ended early");
            }
            raw.body = buf.drain(..n).collect();
        }
        None => {
            // Close-delimited.
            while fill(buf, s, deadline).await > 0 {}
            raw.body = std::mem::take(buf);
        }
    }
    Some(raw)
}

/// Whether the proxy closed the connection (EOF), within the wait.
async fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 64];
    matches!(
        tokio::time::timeout(WAIT, s.read(&mut b)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

async fn connect(p: &TestProxy) -> TcpStream {
    TcpStream::connect(p.addrs.plain.unwrap()).await.unwrap()
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let (p, _b) = one_member("h1-pipeline").await;
    let mut s = connect(&p).await;
    s.write_all(
        b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n\
          POST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
          POST /three HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
          GET /four HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    for (path, body) in [
        ("/one", ""),
        ("/two", "hello"),
        ("/three", "abc"),
        ("/four", ""),
    ] {
        let r = read_response(&mut s, &mut buf, false).await.unwrap();
        assert_eq!(r.status, 200, "{path}");
        let echo = r.json();
        assert_eq!(echo["path"], path);
        assert_eq!(echo["body"], body);
        assert!(r.header("date").is_some(), "every answer has a Date");
        assert!(r.header("x-request-id").is_some());
    }
    // Still open: one more on the same connection.
    s.write_all(b"GET /five HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let r = read_response(&mut s, &mut buf, false).await.unwrap();
    assert_eq!(r.json()["path"], "/five");
}

#[tokio::test]
async fn a_chunked_upload_in_pieces_reaches_the_member_whole() {
    let (p, _b) = one_member("h1-chunked").await;
    let mut s = connect(&p).await;
    s.write_all(b"PUT /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .unwrap();
    // Sizes split across writes, an extension, a trailer: all within the rules.
    for piece in [
        &b"1"[..],
        b"0\r\n0123456789abcdef\r\n",
        b"4;note=x\r\nwxyz",
        b"\r\n0\r\nX-Trailer: t\r\n",
        b"\r\n",
    ] {
        s.write_all(piece).await.unwrap();
        s.flush().await.unwrap();
    }
    let mut buf = Vec::new();
    let r = read_response(&mut s, &mut buf, false).await.unwrap();
    assert_eq!(r.status, 200);
    let echo = r.json();
    assert_eq!(echo["body"], "0123456789abcdefwxyz");
    assert!(
        echo["headers"].get("transfer-encoding").is_none()
            || echo["headers"]["transfer-encoding"] == "chunked",
        "the member gets its own framing: {echo}"
    );
}

#[tokio::test]
async fn a_streamed_answer_is_chunked_and_arrives_as_it_comes() {
    let (p, b) = one_member("h1-stream").await;
    let mut s = connect(&p).await;
    s.write_all(b"GET /sse HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    // The head and the first event come before the member sends its second.
    read_until(&mut s, &mut buf, "data: one").await;
    let text = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    assert!(text.contains("transfer-encoding: chunked"), "{text}");
    b.sse_next.notify_one();
    read_until(&mut s, &mut buf, "data: two").await;
}

#[tokio::test]
async fn http_1_0_closes_unless_kept_alive() {
    let (p, _b) = one_member("h1-ten").await;
    let mut s = connect(&p).await;
    s.write_all(b"GET /old HTTP/1.0\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let r = read_response(&mut s, &mut buf, false).await.unwrap();
    assert_eq!((r.status, r.version), (200, 0), "answered in HTTP/1.0");
    assert_eq!(r.json()["path"], "/old");
    assert!(
        closed(&mut s).await,
        "an HTTP/1.0 connection closes after its answer"
    );

    let mut s = connect(&p).await;
    s.write_all(b"GET /kept HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let r = read_response(&mut s, &mut buf, false).await.unwrap();
    assert_eq!(r.header("connection"), Some("keep-alive"));
    s.write_all(b"GET /again HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .await
        .unwrap();
    let r = read_response(&mut s, &mut buf, false).await.unwrap();
    assert_eq!(r.json()["path"], "/again");

    // `Connection: close` in HTTP/1.1 is kept to.
    let mut s = connect(&p).await;
    s.write_all(b"GET /bye HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let r = read_response(&mut s, &mut buf, false).await.unwrap();
    assert_eq!(r.header("connection"), Some("close"));
    assert!(closed(&mut s).await);
}

#[tokio::test]
async fn head_answers_carry_no_body_and_the_connection_goes_on() {
    let (p, _b) = one_member("h1-head").await;
    let mut s = connect(&p).await;
    s.write_all(b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\nGET /g HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let head = read_response(&mut s, &mut buf, true).await.unwrap();
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    let get = read_response(&mut s, &mut buf, false).await.unwrap();
    assert_eq!(
        get.json()["path"],
        "/g",
        "the HEAD's answer had no body to misread"
    );
}

#[tokio::test]
async fn expect_100_continue_gets_the_go_ahead_before_the_body() {
    let (p, _b) = one_member("h1-continue").await;
    let mut s = connect(&p).await;
    s.write_all(
        b"POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    let go = read_response(&mut s, &mut buf, false).await.unwrap();
    assert_eq!(go.status, 100);
    s.write_all(b"ping").await.unwrap();
    let r = read_response(&mut s, &mut buf, false).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body"], "ping");
}

#[tokio::test]
async fn an_h2c_client_on_the_plain_listener_gets_http2() {
    let (p, _b) = one_member("h1-h2c").await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let res = tokio::time::timeout(
        WAIT,
        client.request(
            http::Request::get(p.plain_url("/over-h2c"))
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap(),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(res.version(), http::Version::HTTP_2);
    assert_eq!(res.status(), 200);
}

/// The smuggling set: each head is refused with the JSON 400 and the connection closes, so
/// the request hidden behind it (`GET /smuggled`) is never read, let alone forwarded.
#[tokio::test]
async fn heads_that_could_smuggle_a_request_are_refused_and_the_connection_closed() {
    let (p, b) = one_member("h1-smuggle").await;
    let cases: &[&[u8]] = &[
        b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nabcd",
        b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: +4\r\n\r\nabcd",
        b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 4 4\r\n\r\nabcd",
        b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \x0bchunked\r\n\r\n0\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        b"POST /x HTTP/1.1\r\nHost: x\r\nX: y\r\n Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET /x HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
        b"GET /x HTTP/1.1\r\nX: y\r\n\r\n",
    ];
    for raw in cases {
        let hits = b.hits.load(Relaxed);
        let mut s = connect(&p).await;
        let mut bytes = raw.to_vec();
        bytes.extend_from_slice(b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n");
        s.write_all(&bytes).await.unwrap();
        let mut buf = Vec::new();
        let r = read_response(&mut s, &mut buf, false)
            .await
            .unwrap_or_else(|| panic!("an answer to {:?}", String::from_utf8_lossy(raw)));
        assert_eq!(r.status, 400, "{:?}", String::from_utf8_lossy(raw));
        let e = r.json();
        assert_eq!(e["error"]["code"], "bad_request", "{e}");
        assert!(
            e["error"]["message"].as_str().unwrap().len() > 20,
            "says what is wrong: {e}"
        );
        assert_eq!(r.header("connection"), Some("close"));
        assert!(closed(&mut s).await, "{:?}", String::from_utf8_lossy(raw));
        assert_eq!(
            b.hits.load(Relaxed),
            hits,
            "nothing reached the member for {:?}",
            String::from_utf8_lossy(raw)
        );
    }
    // Bodies that lie about their chunks: the member may have the head already (the body
    // streams), but the request fails as the client's fault and the connection closes.
    for body in [
        &b"5\nhello\r\n0\r\n\r\n"[..],
        b"5\r\nhelloXX\r\n0\r\n\r\n",
        b"zz\r\nhello\r\n0\r\n\r\n",
        b"fffffffffffffffff\r\n",
    ] {
        let mut s = connect(&p).await;
        let mut bytes =
            b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        bytes.extend_from_slice(body);
        bytes.extend_from_slice(b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n");
        s.write_all(&bytes).await.unwrap();
        let mut buf = Vec::new();
        let r = read_response(&mut s, &mut buf, false).await.unwrap();
        assert_eq!(r.status, 400, "{:?}", String::from_utf8_lossy(body));
        assert!(closed(&mut s).await);
    }
    // The member never saw the hidden request, and is healthy.
    let r = get(&client(), &p.plain_url("/after"), &[]).await;
    assert_eq!(r.status, 200);
    assert_members_unharmed(&p).await;
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let b = Backend::start("only").await;
    let toml = format!(
        "{}{}[limits]\nidle_timeout_ms = 300\n",
        pool_toml("p", "round_robin", &[&b]),
        route_toml("/", "pool = \"p\"")
    );
    let p = TestProxy::start("h1-idle", &toml).await;
    let mut s = connect(&p).await;
    s.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    assert_eq!(
        read_response(&mut s, &mut buf, false).await.unwrap().status,
        200
    );
    let started = tokio::time::Instant::now();
    assert!(closed(&mut s).await, "closed quietly once idle");
    assert!(started.elapsed() < Duration::from_secs(10));
}
