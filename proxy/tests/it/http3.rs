//! HTTP/3's own faults on the client's side (issue 22, item 14): a body that disagrees with
//! its `content-length` is malformed (RFC 9114 §4.1.2) and gets 400, a stalled body 408, a
//! reset upload nothing the member is charged for, and an oversized header section the JSON
//! 431 — with the only member left healthy and serving.

use crate::helpers::*;
use bytes::Bytes;

const IN_A_ROW: usize = 5;

async fn h3_proxy(name: &str, limits: &str) -> (TestProxy, Backend) {
    let b = Backend::start("only").await;
    let toml = format!(
        "{}{}[limits]\nbody_read_timeout_ms = 300\nupstream_response_timeout_ms = 2000\nretry_buffer_bytes = 16\n{limits}\n",
        pool_toml("p", "round_robin", &[&b]),
        route_toml("/", "pool = \"p\"")
    );
    (TestProxy::start(name, &toml).await, b)
}

fn post(p: &TestProxy, content_length: Option<usize>) -> http::Request<()> {
    let mut req = http::Request::post(format!("https://localhost:{}/upload", p.addrs.edge.port()));
    if let Some(n) = content_length {
        req = req.header("content-length", n);
    }
    req.body(()).unwrap()
}

async fn still_serves(p: &TestProxy) {
    assert_members_unharmed(p).await;
    let (mut send, drive) = h3_connect(p).await;
    let a = h3_get(&mut send, p, "/x").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.member(), "only");
    drive.abort();
}

#[tokio::test]
async fn http3_bodies_that_disagree_with_content_length_get_400() {
    let (p, b) = h3_proxy("h3-length", "").await;
    let (mut send, drive) = h3_connect(&p).await;
    // (declared, sent): short and streamed, short and held, long and held, long and streamed.
    for (declared, sent) in [(100, 32), (16, 8), (5, 32), (20, 64)] {
        for _ in 0..IN_A_ROW {
            let mut stream = send.send_request(post(&p, Some(declared))).await.unwrap();
            stream
                .send_data(Bytes::from(vec![b'a'; sent]))
                .await
                .unwrap();
            stream.finish().await.unwrap();
            let a = h3_answer(&mut stream).await;
            assert_eq!(a.status, 400, "{declared} declared, {sent} sent");
            let e = a.json();
            assert_eq!(e["error"]["code"], "bad_body");
            assert!(
                e["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("content-length"),
                "{e}"
            );
        }
    }
    drive.abort();
    still_serves(&p).await;
    let _ = b;
}

#[tokio::test]
async fn a_stalled_http3_body_gets_408_and_is_not_the_members_fault() {
    let (p, _b) = h3_proxy("h3-stall", "").await;
    let (mut send, drive) = h3_connect(&p).await;
    let mut held = Vec::new();
    for _ in 0..IN_A_ROW {
        let mut stream = send.send_request(post(&p, Some(64))).await.unwrap();
        stream
            .send_data(Bytes::from_static(&[b'a'; 32]))
            .await
            .unwrap();
        // ... and the rest never comes; the stream stays open.
        let a = h3_answer(&mut stream).await;
        assert_eq!(a.status, 408);
        assert_eq!(a.json()["error"]["code"], "request_timeout");
        held.push(stream);
    }
    drop(held);
    drive.abort();
    still_serves(&p).await;
}

#[tokio::test]
async fn an_http3_upload_the_client_resets_is_not_the_members_fault() {
    use std::sync::atomic::Ordering::Relaxed;
    let (p, b) = h3_proxy("h3-reset", "").await;
    let (mut send, drive) = h3_connect(&p).await;
    let mut streams = Vec::new();
    for i in 1..=IN_A_ROW as u64 {
        let mut stream = send.send_request(post(&p, None)).await.unwrap();
        stream
            .send_data(Bytes::from_static(&[b'a'; 32]))
            .await
            .unwrap();
        // Once the member is being sent the request, the client resets its upload.
        eventually("the member is sent the request", || {
            b.hits.load(Relaxed) >= i
        })
        .await;
        stream.stop_stream(h3::error::Code::H3_REQUEST_CANCELLED);
        streams.push(stream);
    }
    wait_answered(&p, IN_A_ROW as u64).await;
    for mut stream in streams {
        let a = h3_answer(&mut stream).await;
        assert_eq!(a.status, 400, "the reset upload is the client's error");
        assert_eq!(a.json()["error"]["code"], "bad_body");
    }
    drive.abort();
    still_serves(&p).await;
}

#[tokio::test]
async fn an_oversized_http3_header_section_gets_the_json_431() {
    let (p, b) = h3_proxy("h3-431", "max_header_bytes = 8192").await;
    let (mut send, drive) = h3_connect(&p).await;
    // Past our limit and past what h3 was told before (4 × the limit): 40 KiB.
    for size in [10 * 1024, 40 * 1024] {
        let req = http::Request::get(format!("https://localhost:{}/x", p.addrs.edge.port()))
            .header("x-big", "b".repeat(size))
            .body(())
            .unwrap();
        let mut stream = send.send_request(req).await.unwrap();
        stream.finish().await.unwrap();
        let a = h3_answer(&mut stream).await;
        assert_eq!(a.status, 431, "{size}");
        assert_eq!(a.json()["error"]["code"], "headers_too_large", "{size}");
    }
    assert_eq!(b.hits.load(std::sync::atomic::Ordering::Relaxed), 0);
    drive.abort();
    still_serves(&p).await;
}

/// Issue 19's 70 KB header, over HTTP/3 on the default limits (16 KiB ours, h3 told 128 KiB):
/// the JSON 431 too, as over HTTP/1.1 and HTTP/2 (`limits.rs`).
#[tokio::test]
async fn a_70_kb_header_over_http3_gets_the_json_431_on_the_defaults() {
    let (p, b) = h3_proxy("h3-431-70k", "").await;
    let (mut send, drive) = h3_connect(&p).await;
    let req = http::Request::get(format!("https://localhost:{}/x", p.addrs.edge.port()))
        .header("x-big", "b".repeat(70 * 1024))
        .body(())
        .unwrap();
    let mut stream = send.send_request(req).await.unwrap();
    stream.finish().await.unwrap();
    let a = h3_answer(&mut stream).await;
    assert_eq!(a.status, 431);
    assert_eq!(a.json()["error"]["code"], "headers_too_large");
    assert_eq!(b.hits.load(std::sync::atomic::Ordering::Relaxed), 0);
    drive.abort();
    still_serves(&p).await;
}
