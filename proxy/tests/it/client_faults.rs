//! Mistakes on the client's side of an exchange — a malformed body, an upload cut short, a
//! body that stalls — are answered 4xx and never count against the member that was being
//! sent the request (issue 22, item 2): five of them in a row leave the only member healthy,
//! charged nothing, and the next good request is served.

use crate::helpers::*;
use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Bad requests of each kind sent in a row (the default `passive_health.consecutive_failures`).
const IN_A_ROW: u64 = 5;

/// One member; bodies of more than 16 bytes stream through to it (so the member is really
/// being sent the request when the client's side fails), a client pause of 300 ms ends the
/// request, and the member has 2 s to answer.
async fn one_member(name: &str) -> (TestProxy, Backend) {
    let b = Backend::start("only").await;
    let toml = format!(
        "{}{}[limits]\nbody_read_timeout_ms = 300\nupstream_response_timeout_ms = 2000\nretry_buffer_bytes = 16\n",
        pool_toml("p", "round_robin", &[&b]),
        route_toml("/", "pool = \"p\"")
    );
    (TestProxy::start(name, &toml).await, b)
}

/// Sends raw bytes on a new HTTP/1.1 connection; `then_close` half-closes it (the upload ends
/// early), else it stays open and silent. Returns what came back before the proxy closed.
async fn raw_h1(p: &TestProxy, bytes: &[u8], then_close: bool) -> String {
    let mut s = tokio::net::TcpStream::connect(p.addrs.plain.unwrap())
        .await
        .unwrap();
    s.write_all(bytes).await.unwrap();
    if then_close {
        s.shutdown().await.unwrap();
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

async fn the_member_is_unharmed_and_serves(p: &TestProxy) {
    assert_members_unharmed(p).await;
    let r = get(&client(), &p.plain_url("/after"), &[]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.member(), "only");
}

#[tokio::test]
async fn a_malformed_chunked_body_is_a_400_and_not_the_members_fault() {
    let (p, b) = one_member("chunk-bad").await;
    for _ in 0..IN_A_ROW {
        let text = raw_h1(
            &p,
            b"POST /upload HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
            false,
        )
        .await;
        assert!(text.starts_with("HTTP/1.1 400"), "{text}");
        assert!(text.contains("bad_body"), "{text}");
    }
    wait_answered(&p, IN_A_ROW).await;
    the_member_is_unharmed_and_serves(&p).await;
    let _ = b;
}

#[tokio::test]
async fn an_upload_cut_short_is_not_the_members_fault() {
    let (p, _b) = one_member("cut").await;
    for _ in 0..IN_A_ROW {
        // A chunk of a chunked body, then the client stops sending (and never ends the body).
        raw_h1(
            &p,
            b"POST /upload HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n20\r\n0123456789abcdef0123456789abcdef\r\n",
            true,
        )
        .await;
    }
    wait_answered(&p, IN_A_ROW).await;
    let text = metrics(&p).await;
    assert!(
        text.contains("stacklab_proxy_requests_total{class=\"4xx\",protocol=\"h1\",route=\"/\"} 5"),
        "each cut upload is answered as the client's error: {text}"
    );
    the_member_is_unharmed_and_serves(&p).await;
}

#[tokio::test]
async fn a_stalled_body_gets_408_and_is_not_the_members_fault() {
    let (p, _b) = one_member("stall").await;
    for _ in 0..IN_A_ROW {
        // Half of the declared body, then nothing: the connection stays open.
        let text = raw_h1(
            &p,
            b"POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: 64\r\n\r\n0123456789abcdef0123456789abcdef",
            false,
        )
        .await;
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        assert!(text.contains("request_timeout"), "{text}");
        assert!(text.contains("body_read_timeout_ms"), "{text}");
    }
    let text = metrics(&p).await;
    assert!(
        text.contains("stacklab_proxy_limit_hits_total{limit=\"body_timeout\"} 5"),
        "{text}"
    );
    the_member_is_unharmed_and_serves(&p).await;
}

type Chunks = tokio::sync::mpsc::Sender<Result<Frame<Bytes>, std::io::Error>>;

/// An HTTP/2 POST whose body is fed by hand through the returned sender.
async fn h2_upload(
    p: &TestProxy,
) -> (
    Chunks,
    tokio::task::JoinHandle<Result<http::Response<hyper::body::Incoming>, hyper::Error>>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let body = StreamBody::new(Box::pin(futures_util::stream::unfold(
        rx,
        |mut rx| async move { rx.recv().await.map(|f| (f, rx)) },
    )));
    let req = http::Request::post(format!("https://localhost:{}/upload", p.addrs.edge.port()))
        .body(body)
        .unwrap();
    let tls = tls_connect(p, &[b"h2"]).await;
    (tx, tokio::spawn(request_on(tls, req)))
}

#[tokio::test]
async fn http2_uploads_that_stall_or_are_reset_are_not_the_members_fault() {
    let (p, b) = one_member("h2-faults").await;
    for _ in 0..IN_A_ROW {
        let (tx, res) = h2_upload(&p).await;
        tx.send(Ok(Frame::data(Bytes::from_static(&[b'a'; 32]))))
            .await
            .unwrap();
        let res = tokio::time::timeout(Duration::from_secs(10), res)
            .await
            .expect("an answer in time")
            .unwrap()
            .unwrap();
        assert_eq!(res.status(), 408);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert!(String::from_utf8_lossy(&body).contains("request_timeout"));
        drop(tx);
    }
    for i in 1..=IN_A_ROW {
        // The client resets its stream mid-body, once the member is being sent the request.
        let seen = b.hits.load(Relaxed);
        let (tx, res) = h2_upload(&p).await;
        tx.send(Ok(Frame::data(Bytes::from_static(&[b'a'; 32]))))
            .await
            .unwrap();
        eventually("the member is sent the request", || {
            b.hits.load(Relaxed) > seen
        })
        .await;
        tx.send(Err(std::io::Error::other("the user cancelled")))
            .await
            .unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(10), res).await;
        assert_eq!(b.hits.load(Relaxed), IN_A_ROW + i);
    }
    wait_nothing_in_flight(&p).await;
    the_member_is_unharmed_and_serves(&p).await;
}

/// The member's answer is timed from the end of the client's body: a client that uploads
/// slowly but steadily for longer than `upstream_response_timeout_ms` is served, not given a
/// 504 that its member is charged for.
#[tokio::test]
async fn a_slow_but_steady_upload_is_not_a_slow_member() {
    let b = Backend::start("only").await;
    let toml = format!(
        "{}{}[limits]\nbody_read_timeout_ms = 2000\nupstream_response_timeout_ms = 300\nretry_buffer_bytes = 16\n",
        pool_toml("p", "round_robin", &[&b]),
        route_toml("/", "pool = \"p\"")
    );
    let p = TestProxy::start("steady", &toml).await;
    let mut s = tokio::net::TcpStream::connect(p.addrs.plain.unwrap())
        .await
        .unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    // Ten pieces 100 ms apart: a second of upload, over three times the member's timeout.
    for _ in 0..10 {
        s.write_all(b"4\r\npart\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.write_all(b"0\r\n\r\n").await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("answered")
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.contains(&"part".repeat(10)),
        "the whole body reached the member: {text}"
    );
    assert_members_unharmed(&p).await;
}
