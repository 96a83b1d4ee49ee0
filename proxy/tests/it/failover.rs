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
