use crate::helpers::*;
use std::sync::atomic::Ordering::Relaxed;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_fails_no_request_and_applies_the_new_routes() {
    let (b0, b1) = (Backend::start("m0").await, Backend::start("m1").await);
    let toml = format!(
        "{}{}",
        pool_toml("p", "round_robin", &[&b0]),
        route_toml("/", "pool = \"p\"")
    );
    let p = TestProxy::start("reload", &toml).await;
    let load = Load::start(p.plain_url("/x"), "GET", vec![], 8);
    load.wait_for(200).await;

    // The file now points the pool at m1 only.
    let text = std::fs::read_to_string(&p.config_path)
        .unwrap()
        .replace(&b0.addr.to_string(), &b1.addr.to_string())
        .replace("\"m0\"", "\"m1\"");
    std::fs::write(&p.config_path, text).unwrap();
    let r = admin(&p, "POST", "/admin/reload", serde_json::Value::Null).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let before = b1.hits.load(Relaxed);
    load.wait_for(300).await;
    assert!(
        b1.hits.load(Relaxed) > before + 100,
        "the reloaded pool serves"
    );

    // A broken file is refused, names the key, and the proxy keeps its config.
    let good = std::fs::read_to_string(&p.config_path).unwrap();
    std::fs::write(
        &p.config_path,
        format!("{good}\n[limits]\nmax_body_bytes = 0\n"),
    )
    .unwrap();
    let r = admin(&p, "POST", "/admin/reload", serde_json::Value::Null).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["error"]["errors"][0]["field"],
        "limits.max_body_bytes"
    );
    load.wait_for(100).await;

    let (ok, failed, failures) = load.stop().await;
    assert_eq!(failed, 0, "{failures:?}");
    assert!(ok >= 600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_requests_in_flight() {
    let b = Backend::start("m0").await;
    let toml = format!(
        "{}{}",
        pool_toml("p", "round_robin", &[&b]),
        route_toml("/", "pool = \"p\"")
    );
    let mut p = TestProxy::start("shutdown", &toml).await;
    let c = client();
    let in_flight: Vec<_> = (0..10)
        .map(|_| {
            let (c, url) = (c.clone(), p.plain_url("/gate"));
            tokio::spawn(async move { send(&c, "GET", &url, &[], bytes::Bytes::new()).await })
        })
        .collect();
    eventually("ten requests held by the upstream", || {
        b.hits.load(Relaxed) == 10
    })
    .await;

    p.proxy.shutdown.cancel();
    // New connections are refused once the listener is closed...
    let addr = p.addrs.plain.unwrap();
    eventually_async_refused(addr).await;
    // ...while the ten in flight finish.
    b.gate.add_permits(10);
    for t in in_flight {
        let r = t
            .await
            .unwrap()
            .expect("an in-flight request survived shutdown");
        assert_eq!(r.status, 200);
    }
    let task = std::mem::replace(&mut p.task, tokio::spawn(async { Ok(()) }));
    tokio::time::timeout(std::time::Duration::from_secs(10), task)
        .await
        .expect("run() returned after draining")
        .unwrap()
        .unwrap();
}

async fn eventually_async_refused(addr: std::net::SocketAddr) {
    for _ in 0..500 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the listener still accepts after shutdown");
}

#[tokio::test]
async fn metrics_are_exposed_after_traffic() {
    let b = Backend::start("m0").await;
    let toml = format!(
        "{}{}",
        pool_toml("p", "round_robin", &[&b]),
        route_toml("/", "pool = \"p\"")
    );
    let p = TestProxy::start("metrics", &toml).await;
    let c = client();
    for _ in 0..3 {
        get(&c, &p.plain_url("/x"), &[]).await;
    }
    get(&c, &p.plain_url("/status/503"), &[]).await;
    let text =
        String::from_utf8(get(&c, &p.admin_url("/metrics"), &[]).await.body.to_vec()).unwrap();
    for want in [
        "stacklab_proxy_requests_total{class=\"2xx\",protocol=\"h1\",route=\"/\"} 3",
        "stacklab_proxy_requests_total{class=\"5xx\",protocol=\"h1\",route=\"/\"} 1",
        "stacklab_proxy_request_duration_seconds_count{protocol=\"h1\",route=\"/\"} 4",
        "stacklab_proxy_upstream_duration_seconds_count{pool=\"p\"} 4",
        "stacklab_proxy_member_healthy{member=\"m0\",pool=\"p\",state=\"healthy\"} 1",
        "stacklab_proxy_open_connections{listener=\"http\"}",
        "stacklab_proxy_pools 1",
    ] {
        assert!(text.contains(want), "missing `{want}` in\n{text}");
    }
    // Health needs no token; the admin API does, and says how to send it.
    assert_eq!(get(&c, &p.admin_url("/healthz"), &[]).await.status, 200);
    let r = get(&c, &p.admin_url("/admin/pools"), &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], "unauthorized");
    let r = get(
        &c,
        &p.admin_url("/admin/pools"),
        &[("authorization", "Bearer wrong-token-wrong-token")],
    )
    .await;
    assert_eq!(r.status, 401);
    assert!(!String::from_utf8_lossy(&r.body).contains(TOKEN));
}
