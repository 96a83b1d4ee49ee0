use crate::helpers::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn proxy_with_limits(name: &str, limits: &str) -> (TestProxy, Backend) {
    let b = Backend::start("m0").await;
    let toml = format!(
        "{}{}[limits]\n{limits}\n",
        pool_toml("p", "round_robin", &[&b]),
        route_toml("/", "pool = \"p\"")
    );
    (TestProxy::start(name, &toml).await, b)
}

#[tokio::test]
async fn oversized_headers_get_431() {
    let (p, b) = proxy_with_limits("431", "max_header_bytes = 2048").await;
    let c = client();
    let big = "x".repeat(4096);
    let r = get(&c, &p.plain_url("/x"), &[("x-big", &big)]).await;
    assert_eq!(r.status, 431);
    assert_eq!(r.json()["error"]["code"], "headers_too_large");
    assert_eq!(
        b.hits.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "nothing reached the member"
    );
    assert_eq!(get(&c, &p.plain_url("/x"), &[]).await.status, 200);
}

#[tokio::test]
async fn oversized_bodies_get_413_declared_or_streamed() {
    let (p, b) = proxy_with_limits("413", "max_body_bytes = 1024\nretry_buffer_bytes = 256").await;
    let c = client();
    // Declared too large: refused before reading.
    let r = send(&c, "POST", &p.plain_url("/x"), &[], vec![b'a'; 2000])
        .await
        .unwrap();
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"]["code"], "body_too_large");
    // Chunked, with no length: cut off when it passes the limit.
    let mut s = tokio::net::TcpStream::connect(p.addrs.plain.unwrap())
        .await
        .unwrap();
    let chunk = "a".repeat(600);
    let req = format!(
        "POST /x HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len(),
        chunk.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    let _ = b;
}

#[tokio::test]
async fn a_slow_request_head_gets_408_and_the_connection_closes() {
    let (p, _b) =
        proxy_with_limits("408", "header_read_timeout_ms = 150\nidle_timeout_ms = 200").await;
    let mut s = tokio::net::TcpStream::connect(p.addrs.plain.unwrap())
        .await
        .unwrap();
    s.write_all(b"GET /x HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap(); // ... and never the end
    let mut out = Vec::new();
    let read =
        tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the proxy closed the connection");
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("request_timeout"));

    // An idle keep-alive connection is closed quietly after idle_timeout_ms.
    let mut s = tokio::net::TcpStream::connect(p.addrs.plain.unwrap())
        .await
        .unwrap();
    s.write_all(b"GET /x HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let read =
        tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "idle connection closed");
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        !text.contains("408"),
        "an idle connection is not a slow request: {text}"
    );
}

#[tokio::test]
async fn an_upstream_that_does_not_answer_gives_504() {
    let (p, _b) = proxy_with_limits("504", "upstream_response_timeout_ms = 200").await;
    let c = client();
    let r = get(&c, &p.plain_url("/hang"), &[]).await;
    assert_eq!(r.status, 504);
    let e = r.json();
    assert_eq!(e["error"]["code"], "upstream_timeout");
    assert!(e["error"]["message"].as_str().unwrap().contains("200 ms"));
}

#[tokio::test]
async fn connections_past_the_per_client_cap_are_refused_and_counted() {
    let (p, _b) = proxy_with_limits(
        "conncap",
        "max_connections = 100\nmax_connections_per_client = 2",
    )
    .await;
    let addr = p.addrs.plain.unwrap();
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /x HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"HTTP/1.1 200");
        held.push(s);
    }
    let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = third.write_all(b"GET /x HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        third.read_to_end(&mut out),
    )
    .await;
    assert!(out.is_empty(), "the third connection is closed unanswered");
    let metrics = String::from_utf8(
        get(&client(), &p.admin_url("/metrics"), &[])
            .await
            .body
            .to_vec(),
    )
    .unwrap();
    assert!(
        metrics.contains(
            "stacklab_proxy_connections_rejected_total{reason=\"max_connections_per_client\"} 1"
        ),
        "{metrics}"
    );
    drop(held);
}
