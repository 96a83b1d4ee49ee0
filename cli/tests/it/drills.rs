//! Failover drills from the public API: a session breaks only what is its own. The shared
//! pools cannot be changed without the admin token; a drill pool serves its session alone, is
//! bounded per session and overall, and is reaped with the session.

use crate::helpers::*;
use serde_json::json;

async fn session_with_a_user(b: &mut Browser) {
    new_session(b, json!({})).await;
    add_ann(b).await;
}

fn member_of(r: &Answer) -> String {
    assert_eq!(r.status, 200, "{}", r.text());
    r.headers["x-stacklab-member"].to_str().unwrap().to_owned()
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_drills_on_instances_of_its_own_and_never_on_the_shared_pool() {
    let dir = temp_dir("drills");
    let up = start_up(&dir, 2, |_, c| {
        c.drills.instances = 2;
        c.drills.max_instances = 3;
        c.drills.max_pools = 1;
    })
    .await;
    let data = dir.join("data");
    let port = up.addrs.edge.port();
    let (mut a, mut b) = (Browser::new(&data, port), Browser::new(&data, port));
    session_with_a_user(&mut a).await;
    session_with_a_user(&mut b).await;
    let shared = pool_instances(&up, "rust");
    assert_eq!(shared.len(), 2);

    // The shared pool: neither killed nor grown from the public API, whatever the id.
    for (method, path) in [
        (
            "DELETE",
            format!("/api/topology/pools/rust/instances/{}", shared[0]),
        ),
        ("POST", "/api/topology/pools/rust/instances".to_owned()),
        ("POST", "/api/topology/pools/control/instances".to_owned()),
    ] {
        let body = (method == "POST").then(|| json!({}));
        let r = a.send(method, &path, body).await;
        assert_eq!(
            (r.status, r.code()),
            (403, "not_your_pool".into()),
            "{method} {path}: {}",
            r.text()
        );
        assert!(
            r.text().contains("POST /api/topology/drill"),
            "{}",
            r.text()
        );
    }
    assert_eq!(
        pool_instances(&up, "rust"),
        shared,
        "nothing killed or added"
    );

    // A drill pool: started for A alone, serving A from now on.
    let r = a.post("/api/topology/drill", json!({})).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    let pool = v["pool"].as_str().unwrap().to_owned();
    assert!(pool.starts_with("rust-drill-"), "{pool}");
    let code_a = a.cookie.clone().unwrap();
    assert!(
        !pool.contains(&code_a),
        "the pool's name never carries the session code"
    );
    // The answer comes once the proxy routes A there (it follows the route feed).
    let seen = admin(up.addrs.admin, "GET", "/admin/sessions", Some(TOKEN), None)
        .await
        .json();
    assert!(
        seen["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["id"] == crate::helpers::id(&code_a).as_str() && s["pool"] == pool.as_str()),
        "{seen}"
    );
    let drilled = pool_instances(&up, &pool);
    assert_eq!(drilled.len(), 2, "{v}");
    assert_eq!(v["instances"].as_array().unwrap().len(), 2);
    for _ in 0..10 {
        let m = member_of(&a.get("/api/users?limit=1").await);
        assert!(drilled.contains(&m), "A served by its drill pool, not {m}");
        let m = member_of(&b.get("/api/users?limit=1").await);
        assert!(
            shared.contains(&m),
            "B still served by the shared pool, not {m}"
        );
    }
    // A sees its drill pool; B does not see A's.
    let topo = a.get("/api/topology").await.json();
    assert_eq!(topo["session"]["pool"], pool.as_str(), "{topo}");
    assert_eq!(topo["session"]["runtime_pool"], "rust");
    assert_eq!(topo["session"]["drill_pool"], pool.as_str());
    assert!(topo["pools"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == pool.as_str() && p["drill"] == true));
    let topo_b = b.get("/api/topology").await.json();
    assert!(
        !topo_b.to_string().contains(&pool),
        "another session's drill pool is not shown: {topo_b}"
    );
    assert_eq!(topo_b["session"]["drill_pool"], serde_json::Value::Null);
    assert_eq!(topo_b["drill_limits"]["pools_running"], 1);

    // One drill per session; one drill pool at a time on this install (max_drill_pools = 1).
    let r = a.post("/api/topology/drill", json!({})).await;
    assert_eq!(
        (r.status, r.code()),
        (409, "drill_running".into()),
        "{}",
        r.text()
    );
    let r = b.post("/api/topology/drill", json!({})).await;
    assert_eq!(
        (r.status, r.code()),
        (503, "out_of_capacity".into()),
        "{}",
        r.text()
    );
    assert!(r.text().contains("control.max_drill_pools"), "{}", r.text());
    // B cannot touch A's drill pool.
    let r = b
        .send(
            "DELETE",
            &format!("/api/topology/pools/{pool}/instances/{}", drilled[0]),
            None,
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (403, "not_your_pool".into()),
        "{}",
        r.text()
    );
    assert_eq!(pool_instances(&up, &pool).len(), 2);

    // The drill itself: kill one of A's instances under A's traffic; A keeps being served
    // (idempotent requests fail over), B never notices.
    let load = Load::start(&a, "/api/users?limit=1", 2);
    load.advance(20).await;
    let r = a
        .send(
            "DELETE",
            &format!("/api/topology/pools/{pool}/instances/{}", drilled[0]),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    load.advance(50).await;
    let (ok, failed) = load.stop().await;
    assert!(
        failed.is_empty(),
        "{} of {ok} failed: {failed:?}",
        failed.len()
    );
    assert_eq!(
        pool_instances(&up, &pool),
        drilled[1..],
        "killed, and not replaced"
    );
    assert_eq!(
        pool_instances(&up, "rust"),
        shared,
        "the shared pool untouched"
    );
    member_of(&b.get("/api/users?limit=1").await);

    // A may grow its drill pool up to max_drill_instances (3), no further.
    for _ in 0..2 {
        let r = a
            .post(&format!("/api/topology/pools/{pool}/instances"), json!({}))
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let r = a
        .post(&format!("/api/topology/pools/{pool}/instances"), json!({}))
        .await;
    assert_eq!(
        (r.status, r.code()),
        (429, "drill_instance_limit".into()),
        "{}",
        r.text()
    );
    assert_eq!(pool_instances(&up, &pool).len(), 3);

    let m = up.control.metrics.encode();
    assert_eq!(metric(&m, "stacklab_control_drill_pools "), 1.0, "{m}");
    assert!(
        metric(
            &m,
            "stacklab_control_drill_refusals_total{reason=\"not_yours\"}"
        ) >= 4.0
    );
    assert_eq!(
        metric(
            &m,
            "stacklab_control_drill_refusals_total{reason=\"pools\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            "stacklab_control_drill_refusals_total{reason=\"instances\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(&m, "stacklab_control_instances{pool=\"rust-drill\"}"),
        3.0,
        "{m}"
    );

    // Ending the drill: A is served by the shared pool again and the drill instances go.
    let r = a.send("DELETE", "/api/topology/drill", None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["ended"], pool.as_str());
    assert!(pool_instances(&up, &pool).is_empty());
    assert!(
        up.control.routes.pool(&pool).is_none(),
        "the pool is out of the route table"
    );
    assert!(shared.contains(&member_of(&a.get("/api/users?limit=1").await)));
    let r = a.send("DELETE", "/api/topology/drill", None).await;
    assert_eq!(
        (r.status, r.code()),
        (404, "no_drill".into()),
        "{}",
        r.text()
    );

    // B's drill, reaped with B's session.
    let r = b.post("/api/topology/drill", json!({})).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let pool_b = r.json()["pool"].as_str().unwrap().to_owned();
    assert_eq!(pool_instances(&up, &pool_b).len(), 2);
    let r = b.send("DELETE", "/api/session", None).await;
    assert!(r.status == 200 || r.status == 204, "{}", r.text());
    assert!(
        pool_instances(&up, &pool_b).is_empty(),
        "reaped with its session"
    );
    assert!(up.control.routes.pool(&pool_b).is_none());
    assert_eq!(up.control.drills.len(), 0);
    assert_eq!(pool_instances(&up, "rust"), shared);
    up.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_install_without_ui_drills_refuses_them_all() {
    let dir = temp_dir("drills-off");
    let up = start_up(&dir, 1, |_, c| c.drills_from_ui = false).await;
    let mut a = Browser::new(&dir.join("data"), up.addrs.edge.port());
    session_with_a_user(&mut a).await;
    let id = pool_instances(&up, "rust")[0].clone();
    for (method, path) in [
        ("POST", "/api/topology/drill".to_owned()),
        ("DELETE", format!("/api/topology/pools/rust/instances/{id}")),
    ] {
        let body = (method == "POST").then(|| json!({}));
        let r = a.send(method, &path, body).await;
        assert_eq!(
            (r.status, r.code()),
            (403, "drills_disabled".into()),
            "{method} {path}: {}",
            r.text()
        );
    }
    assert_eq!(a.get("/api/topology").await.json()["drills"], false);
    assert_eq!(pool_instances(&up, "rust"), [id]);
    up.shutdown().await.unwrap();
}
