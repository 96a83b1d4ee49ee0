use crate::helpers::*;

/// The failover drill: three members under steady load, one killed. No GET fails; a POST fails
/// only if it had already been sent to the member that died, and then with a clear 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_killed_under_load_fails_no_get_request() {
    let (b0, b1, b2) = (
        Backend::start("m0").await,
        Backend::start("m1").await,
        Backend::start("m2").await,
    );
    let toml = format!(
        "{}{}",
        pool_toml("p", "p2c_ewma", &[&b0, &b1, &b2]),
        route_toml("/", "pool = \"p\"")
    );
    let p = TestProxy::start("failover", &toml).await;

    let gets = Load::start(p.plain_url("/items"), "GET", vec![], 8);
    let posts = Load::start(p.plain_url("/items"), "POST", vec![], 2);
    gets.wait_for(300).await;
    posts.wait_for(50).await;

    b1.kill();
    gets.wait_for(1000).await;
    posts.wait_for(200).await;

    let (get_ok, get_failed, get_failures) = gets.stop().await;
    let (post_ok, post_failed, post_failures) = posts.stop().await;
    println!("failover drill: GET {get_ok} ok / {get_failed} failed; POST {post_ok} ok / {post_failed} failed");
    assert_eq!(get_failed, 0, "GETs failed: {get_failures:?}");
    // Each POST worker had at most one request in flight to the dead member, plus at most one
    // sent on a pooled connection the member had already dropped.
    assert!(post_failed <= 4, "{post_failures:?}");
    for f in &post_failures {
        assert!(
            f.starts_with("502") && f.contains("upstream_failed"),
            "a POST failed without a clear 502: {f}"
        );
    }
    let metrics = String::from_utf8(
        get(&client(), &p.admin_url("/metrics"), &[])
            .await
            .body
            .to_vec(),
    )
    .unwrap();
    assert!(
        metrics.contains("stacklab_proxy_retries_total{pool=\"p\""),
        "retries are counted"
    );
}

#[tokio::test]
async fn no_member_left_gives_503_naming_the_pool() {
    let b0 = Backend::start("m0").await;
    let toml = format!(
        "{}{}",
        pool_toml("lonely", "round_robin", &[&b0]),
        route_toml("/", "pool = \"lonely\"")
    );
    let p = TestProxy::start("nomember", &toml).await;
    let c = client();
    b0.kill();
    let r = get(&c, &p.plain_url("/x"), &[]).await;
    assert_eq!(
        r.status,
        502,
        "the one member refuses connections: {}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.json()["error"]["code"], "upstream_unreachable");
    admin(
        &p,
        "POST",
        "/admin/pools/lonely/members/m0/drain",
        serde_json::Value::Null,
    )
    .await;
    let r = get(&c, &p.plain_url("/x"), &[]).await;
    assert_eq!(r.status, 503);
    let e = r.json();
    assert_eq!(e["error"]["code"], "no_healthy_member");
    assert_eq!(e["error"]["field"], "lonely");
    assert!(e["error"]["message"].as_str().unwrap().contains("lonely"));
}

/// A member that dies mid-answer, on a real socket: it reads a request, sends a head that
/// declares `declared` bytes, ten of them, and closes. `/healthz` it answers whole.
async fn member_that_dies_mid_answer(
    declared: usize,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let answer = if head.starts_with(b"GET /healthz ") {
                    "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok".to_owned()
                } else {
                    format!("HTTP/1.1 200 OK\r\ncontent-length: {declared}\r\nx-backend: cut\r\n\r\n0123456789")
                };
                let _ = s.write_all(answer.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    (addr, task)
}

/// A small answer of declared length to a GET is read whole before its head goes on: a member
/// that dies mid-answer is retried like one that died before answering, and the client never
/// sees the cut (with no member left it gets a clear 502). A POST's answer, or one too large
/// to hold, streams as it comes, so its cut reaches the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_dies_mid_answer_is_retried_for_a_small_get() {
    let good = Backend::start("good").await;
    let (small, small_task) = member_that_dies_mid_answer(2_000).await;
    let (large, large_task) = member_that_dies_mid_answer(200_000).await;
    let pool = |name: &str, members: &[(&str, std::net::SocketAddr)]| {
        let members: Vec<String> = members
            .iter()
            .map(|(id, addr)| format!("{{ id = \"{id}\", addr = \"{addr}\" }}"))
            .collect();
        format!(
            "[[pools]]\nname = \"{name}\"\nalgorithm = \"round_robin\"\nmembers = [{}]\n",
            members.join(", ")
        )
    };
    let toml = [
        pool("p", &[("good", good.addr), ("cut", small)]),
        pool("solo", &[("cut", small)]),
        pool("big", &[("cut", large)]),
        route_toml("/solo", "pool = \"solo\""),
        route_toml("/big", "pool = \"big\""),
        route_toml("/", "pool = \"p\""),
    ]
    .concat();
    let p = TestProxy::start("cut-mid-answer", &toml).await;
    let c = client();

    // Round robin sends GETs to the member that cuts (until it is ejected): each is retried
    // on `good`.
    for i in 0..6 {
        let r = send(&c, "GET", &p.plain_url(&format!("/items/{i}")), &[], "")
            .await
            .unwrap_or_else(|e| panic!("GET {i} reached the client cut: {e}"));
        assert_eq!(r.status, 200);
        assert_eq!(
            r.json()["id"],
            "good",
            "answered whole by the member that lives"
        );
    }
    let m = metrics(&p).await;
    assert!(
        m.lines()
            .any(|l| l.starts_with("stacklab_proxy_retries_total{pool=\"p\",reason=\"cut\"}")),
        "cut answers are counted as retries: {m}"
    );

    // No member left to retry on: a clear 502 naming the cut, not a broken answer.
    let r = send(&c, "GET", &p.plain_url("/solo/1"), &[], "")
        .await
        .unwrap();
    assert_eq!(r.status, 502, "{:?}", r.body);
    assert_eq!(r.json()["error"]["code"], "upstream_failed");
    assert!(
        r.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cut"),
        "{}",
        r.json()
    );

    // A POST may have been applied: its answer is not held, and the cut reaches the client.
    let post = send(&c, "POST", &p.plain_url("/solo/1"), &[], "x").await;
    assert!(post.is_err(), "a POST's answer streams: {post:?}");
    // Too large to hold: it streams, so its cut cannot be undone either.
    let large = send(&c, "GET", &p.plain_url("/big/1"), &[], "").await;
    assert!(large.is_err(), "a large answer streams: {large:?}");
    small_task.abort();
    large_task.abort();
}
