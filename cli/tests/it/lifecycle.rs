//! Sessions through the real proxy over HTTPS: create, use, expire (control's clock moved),
//! `410` afterwards, teardown checked on disk and in the registry; restarts of control; the
//! route feed; instances dying and killed under load; the admin token; the caps.

use crate::helpers::*;
use serde_json::json;
use stacklab_control::serve;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

const MINUTE: u64 = 60_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_lives_slides_and_is_reaped_through_the_proxy() {
    let dir = temp_dir("life");
    let up = start_up(&dir, 1, |_, _| {}).await;
    let data = dir.join("data");
    let mut b = Browser::new(&data, up.addrs.edge.port());

    let r = b.get("/api/users").await;
    assert_eq!((r.status, r.code()), (401, "session_missing".into()));

    let r = b
        .post("/api/sessions", json!({"password_storage": "sha256"}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let cookie = r.headers["set-cookie"].to_str().unwrap().to_owned();
    let v = r.json();
    let code = v["code"].as_str().unwrap().to_owned();
    assert_eq!(
        cookie,
        format!("stacklab_session={code}; Path=/; Max-Age=3600; HttpOnly; Secure; SameSite=Lax")
    );
    assert_eq!(code.len(), 26);
    assert_eq!(v["state"], "ready");
    assert_eq!(v["stack"]["database"], "sqlite");
    assert!(v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["status"] == "done" && s["ms"].as_f64().is_some()));
    let id = stacklab_types::session::id(&code);
    assert!(
        !id.contains(&code[..8]),
        "resources are not named by the cookie"
    );
    let file = data.join("sessions").join(format!("{id}.db"));
    assert!(file.exists(), "the session's own SQLite file");

    let r = b.get("/api/session").await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (200, Some(code.as_str()))
    );

    let r = add_ann(&mut b).await;
    assert!(
        r.headers["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=3600"),
        "a data request refreshes the cookie"
    );
    assert_eq!(
        r.json()["stored_password"].as_str().unwrap().len(),
        64,
        "sha256 hex"
    );
    assert_eq!(b.get("/api/users/1").await.status, 200);

    let session = up.control.sessions.get(&crate::helpers::id(&code)).unwrap();
    // 40 minutes pass with nobody using it: still alive.
    up.control.clock.advance(40 * MINUTE);
    assert_eq!(up.control.reap_once().await, 0);
    // A data request now moves its expiry (reported by the proxy in a batch).
    let used_at = up.control.clock.now_ms();
    assert_eq!(b.get("/api/users/1").await.status, 200);
    eventually("the proxy reports the use", || async {
        session.last_used_ms.load(Relaxed) + 1000 >= used_at
    })
    .await;
    // Watching does not count as use.
    assert_eq!(b.get("/api/cache").await.status, 200);
    let r = b.get("/api/session").await;
    assert_eq!(
        r.json()["expires_at"].as_u64().unwrap() / 1000,
        (session.last_used_ms.load(Relaxed) + 60 * MINUTE) / 1000
    );
    up.control.clock.advance(40 * MINUTE);
    assert_eq!(
        up.control.reap_once().await,
        0,
        "80 minutes old, 40 since last use: alive"
    );
    tokio::time::sleep(Duration::from_millis(100)).await; // a report cycle: the cache view must not count
    up.control.clock.advance(21 * MINUTE);
    assert_eq!(
        up.control.reap_once().await,
        1,
        "61 minutes since last use: reaped"
    );
    assert_eq!(up.control.reap_once().await, 0, "reaping is idempotent");

    eventually("the proxy learns the session ended", || async {
        b.clone().get("/api/users/1").await.status == 410
    })
    .await;
    let r = b.get("/api/users").await;
    assert_eq!((r.status, r.code()), (410, "session_expired".into()));
    assert_eq!(b.get("/api/session").await.status, 410);
    assert!(!file.exists(), "the SQLite file is gone");
    let r = stack_of(up.addrs.admin, &code).await;
    assert_eq!(r.status, 404);
    assert!(
        up.control.registry.sessions().await.unwrap().is_empty(),
        "the registry forgot it"
    );
    up.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_restarted_mid_life_loses_no_session() {
    let dir = temp_dir("restart");
    let data = dir.join("data");
    let up = start_up(&dir, 1, |_, _| {}).await;
    let mut b = Browser::new(&data, up.addrs.edge.port());
    let code = new_session(
        &mut b,
        json!({"encryption": "aes-256-gcm", "password_storage": "bcrypt-pepper"}),
    )
    .await;
    let r = b
        .post(
            "/api/users",
            json!({"username": "bob", "email": "bob@example.com", "password": "hunter2 hunter2"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    up.shutdown().await.unwrap();

    // A left-over file of a session the registry never recorded (a crash in between).
    let orphan = data.join("sessions").join("0000000000000000000000000z.db");
    std::fs::write(&orphan, b"").unwrap();

    let up = start_up(&dir, 1, |_, _| {}).await;
    let mut b = b.on_port(up.addrs.edge.port());
    let r = b.get("/api/users/1").await;
    assert_eq!(r.status, 200, "the old cookie still works: {}", r.text());
    assert_eq!(r.json()["username"], "bob");
    let r = b
        .post(
            "/api/users/1/verify-password",
            json!({"password": "hunter2 hunter2"}),
        )
        .await;
    assert_eq!(
        r.json()["ok"],
        true,
        "the pepper survived the restart (sealed in the registry)"
    );
    assert_eq!(b.get("/api/session").await.json()["code"], code.as_str());
    assert!(
        !orphan.exists(),
        "leftovers of unknown sessions are removed at start"
    );
    // The registry holds no secret in the clear.
    let raw = std::fs::read(data.join("registry.db")).unwrap();
    assert!(
        !String::from_utf8_lossy(&raw).contains("sqlite://"),
        "descriptors are sealed"
    );
    up.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_dies_is_replaced_and_one_killed_by_a_drill_is_not() {
    let dir = temp_dir("instances");
    let up = start_up(&dir, 2, |_, _| {}).await;
    let mut b = Browser::new(&dir.join("data"), up.addrs.edge.port());
    new_session(&mut b, json!({"cache": "none"})).await;
    assert_eq!(
        b.post(
            "/api/users",
            json!({"username": "cyd", "email": "cyd@example.com", "password": "longenough"})
        )
        .await
        .status,
        201
    );
    let before = up.control.instances.list();
    assert_eq!(before.len(), 2);

    let load = Load::start(&b, "/api/users?limit=5", 4);
    load.advance(50).await;
    // Killed from outside: control notices and starts a replacement.
    let victim = before[0].clone();
    assert!(std::process::Command::new("kill")
        .args(["-9", &victim.pid.to_string()])
        .status()
        .unwrap()
        .success());
    eventually("a replacement instance", || async {
        let now = up.control.instances.list();
        now.len() == 2 && now.iter().all(|i| i.id != victim.id)
    })
    .await;
    load.advance(50).await;
    // The drill: killed through the admin API, not replaced.
    let drilled = up.control.instances.list()[0].id.clone();
    let r = admin(
        up.addrs.admin,
        "DELETE",
        &format!("/admin/pools/rust/instances/{drilled}"),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.control.instances.list().len(), 1);
    load.advance(50).await;
    let (ok, failed) = load.stop().await;
    if !failed.is_empty() {
        // What the proxy did about it, for whoever reads the failure.
        let m = admin(up.addrs.admin, "GET", "/metrics", None, None)
            .await
            .text();
        let retries: Vec<&str> = m
            .lines()
            .filter(|l| {
                !l.starts_with('#')
                    && (l.contains("retries")
                        || l.contains("ejections")
                        || l.contains("upstream_requests"))
            })
            .collect();
        panic!(
            "{} of {} idempotent requests failed: {:?}\n{}",
            failed.len(),
            ok + failed.len() as u64,
            &failed[..failed.len().min(5)],
            retries.join("\n")
        );
    }
    assert_eq!(
        up.control.instances.list().len(),
        1,
        "a drill kill is not replaced"
    );
    let m = up.control.metrics.encode();
    assert!(
        m.contains("stacklab_control_instance_exits_total{cause=\"died\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("stacklab_control_instance_exits_total{cause=\"killed\"} 1"),
        "{m}"
    );
    up.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_needs_the_token_and_never_shows_it() {
    let dir = temp_dir("token");
    let up = start_up(&dir, 0, |_, _| {}).await;
    for path in [
        "/admin/routes",
        "/admin/routes/feed",
        "/admin/stacks/x",
        "/admin/bugs",
        "/admin/topology",
        "/admin/pools",
        "/admin/control/sessions",
    ] {
        for token in [None, Some("wrong-token-wrong-token")] {
            let r = admin(up.addrs.admin, "GET", path, token, None).await;
            assert_eq!(r.status, 401, "{path} with {token:?}");
            assert_eq!(r.code(), "unauthorized");
            assert!(!r.text().contains(TOKEN));
        }
    }
    let r = admin(
        up.addrs.admin,
        "POST",
        "/admin/sessions/touches",
        None,
        Some(json!({"touches": []})),
    )
    .await;
    assert_eq!(r.status, 401);
    let r = admin(up.addrs.admin, "GET", "/admin/routes", Some(TOKEN), None).await;
    assert_eq!(r.status, 200);
    assert!(!r.text().contains(TOKEN));
    up.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caps_and_bad_choices_answer_clearly_and_change_nothing() {
    let dir = temp_dir("caps");
    let up = start_up(&dir, 0, |cfg, _| {
        cfg.sessions.max_live = 3;
        cfg.sessions.max_new_per_client_per_minute = 5;
    })
    .await;
    // The per-client window is the clock's minute: start at the beginning of one, so the
    // test cannot straddle two.
    let now = up.control.clock.now_ms();
    up.control.clock.advance(MINUTE - now % MINUTE);
    let mut b = Browser::new(&dir.join("data"), up.addrs.edge.port());
    for (body, status, field) in [
        (json!({"database": "oracle"}), 400, "database"),
        (json!({"database": "postgres"}), 400, "database"),
        (json!({"cache": "redis"}), 400, "cache"),
        (
            json!({"cache": "memory", "cache_policy": "allkeys-lru"}),
            400,
            "cache_policy",
        ),
        (json!({"colour": "red"}), 400, "colour"),
        (json!({"provisioner": "docker"}), 503, "provisioner"),
        (json!({"provisioner": "shared"}), 503, "provisioner"),
    ] {
        let r = b.post("/api/sessions", body.clone()).await;
        assert_eq!(
            (r.status, r.field()),
            (status, field.to_owned()),
            "{body}: {}",
            r.text()
        );
        assert!(!r.json()["error"]["message"].as_str().unwrap().is_empty());
    }
    let r = b
        .send_raw("POST", "/api/sessions", Some(("text/plain", "{}".into())))
        .await;
    assert_eq!(r.status, 415);
    let r = b
        .send_raw(
            "POST",
            "/api/sessions",
            Some(("application/json", "{nope".into())),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "invalid_json".into()));
    assert_eq!(up.control.sessions.len(), 0, "bad input made nothing");

    let mut browsers = Vec::new();
    for _ in 0..3 {
        let mut b = b.clone();
        new_session(&mut b, json!({})).await;
        browsers.push(b);
    }
    let r = b.post("/api/sessions", json!({})).await;
    assert_eq!((r.status, r.code()), (503, "out_of_capacity".into()));
    // Ending one frees a place.
    let mut last = browsers.pop().unwrap();
    assert_eq!(last.send("DELETE", "/api/session", None).await.status, 200);
    assert_eq!(last.cookie, None, "the cookie is cleared");
    for _ in 0..2 {
        let mut c = b.clone();
        new_session(&mut c, json!({})).await; // the 4th and 5th this minute
        assert_eq!(c.send("DELETE", "/api/session", None).await.status, 200);
    }
    let r = b.post("/api/sessions", json!({})).await;
    assert_eq!(
        (r.status, r.code()),
        (429, "rate_limited".into()),
        "{}",
        r.text()
    );
    // Five a minute: the next token is 12 s away (a bucket, not a calendar minute).
    assert_eq!(r.headers["retry-after"], "12");
    up.control.clock.advance(MINUTE);
    new_session(&mut b.clone(), json!({})).await;
    let m = up.control.metrics.encode();
    for reason in ["capacity", "rate"] {
        assert!(
            m.contains(&format!(
                "stacklab_control_sessions_rejected_total{{reason=\"{reason}\"}} 1"
            )),
            "{m}"
        );
    }
    up.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bug_reports_carry_the_stack_and_the_last_requests() {
    let dir = temp_dir("bugs");
    let up = start_up(&dir, 1, |_, _| {}).await;
    let mut b = Browser::new(&dir.join("data"), up.addrs.edge.port());
    let code = new_session(&mut b, json!({"protocol": "graphql"})).await;
    assert_eq!(b.get("/api/users").await.status, 200);
    // A policy changed in the cache view is recorded with the session.
    let r = b
        .send("PUT", "/api/cache/policy", Some(json!({"policy": "lfu"})))
        .await;
    assert_eq!(
        (r.status, r.json()["policy"].as_str()),
        (200, Some("lfu")),
        "{}",
        r.text()
    );
    eventually("control records the policy", || async {
        b.clone().get("/api/session").await.json()["stack"]["cache_policy"] == "lfu"
    })
    .await;
    let r = stack_of(up.addrs.admin, &code).await;
    assert_eq!(r.json()["cache"]["policy"], "lfu");
    let r = b.post("/api/bugs", json!({"title": "slow"})).await;
    assert_eq!((r.status, r.field()), (400, "description".into()));
    let r = b
        .post(
            "/api/bugs",
            json!({"title": "slow", "description": "the list took a while", "x": 1}),
        )
        .await;
    assert_eq!((r.status, r.field()), (400, "x".into()));
    let r = b
        .post(
            "/api/bugs",
            json!({"title": "slow", "description": "the list took a while"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = admin(up.addrs.admin, "GET", "/admin/bugs", Some(TOKEN), None).await;
    let bug = &r.json()["bugs"][0];
    assert_eq!(bug["session"], crate::helpers::id(&code).as_str());
    assert_eq!(bug["stack"]["protocol"], "graphql");
    assert_eq!(bug["stack"]["cache_policy"], "lfu");
    assert_eq!(bug["requests"][0]["path"], "/api/users");
    // The inspector's list comes from the proxy's capture, newest first.
    let r = b.get("/api/requests?limit=5").await;
    assert_eq!(r.json()["requests"][0]["path"], "/api/users");
    up.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_route_feed_resumes_after_control_restarts_while_the_proxy_serves() {
    let dir = temp_dir("feed");
    let data = dir.join("data");
    // Control alone, with no instances of its own: a backend runs in this test process.
    let (cfg, mut ccfg) = configs(&dir, 0);
    ccfg.backends.instances = 0;
    let control = serve::control_only(cfg.clone(), ccfg.clone())
        .await
        .unwrap();
    let admin_addr = control.admin_addr;
    let admin_url = format!("http://{admin_addr}");

    let backend_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_addr = backend_listener.local_addr().unwrap();
    let token = stacklab_types::Secret::new(TOKEN);
    let source = std::sync::Arc::new(stacklab_backend::sessions::ControlStacks::new(
        admin_url.clone(),
        token.clone(),
    ));
    let app = stacklab_backend::App::new(Default::default(), source, token);
    let backend_stop = tokio_util::sync::CancellationToken::new();
    let backend = tokio::spawn(stacklab_backend::run(
        backend_listener,
        app,
        backend_stop.clone(),
    ));
    let r = admin(
        admin_addr,
        "PUT",
        "/admin/pools/rust/members/b1",
        Some(TOKEN),
        Some(json!({"addr": backend_addr.to_string()})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());

    // A proxy of its own, following control's feed.
    let mut pcfg = cfg.clone();
    pcfg.admin.addr = "127.0.0.1:0".parse().unwrap();
    pcfg.feed = Some(stacklab_proxy::config::FeedConfig {
        url: format!("{admin_url}/admin/routes/feed").parse().unwrap(),
        token: stacklab_types::Secret::new(TOKEN),
    });
    let server = stacklab_proxy::Server::bind(pcfg).await.unwrap();
    let addrs = server.addrs();
    let proxy = std::sync::Arc::clone(&server.proxy);
    let proxy_task = tokio::spawn(server.run());

    let mut b = Browser::new(&data, addrs.edge.port());
    eventually("the proxy learns control's address", || async {
        b.clone()
            .try_send("GET", "/api/options", None)
            .await
            .is_ok_and(|a| a.status == 200)
    })
    .await;
    new_session(&mut b, json!({"cache": "none"})).await;
    eventually("the session's route reaches the proxy", || async {
        b.clone()
            .try_send("GET", "/api/users", None)
            .await
            .is_ok_and(|a| a.status == 200)
    })
    .await;

    let load = Load::start(&b, "/api/users?limit=1", 2);
    load.advance(30).await;
    control.shutdown().await;
    eventually("the proxy notices control is gone", || async {
        proxy.metrics.feed_connected.get() == 0
    })
    .await;
    load.advance(100).await; // served from the proxy's last table and the backend's cached stack

    let control = serve::control_only(
        {
            let mut c = cfg.clone();
            c.admin.addr = admin_addr;
            c
        },
        ccfg,
    )
    .await
    .unwrap();
    eventually("the proxy follows the new control", || async {
        proxy.metrics.feed_connected.get() == 1
    })
    .await;
    load.advance(30).await;
    // Changes made after the restart reach the proxy: a new session works end to end.
    let mut b2 = b.clone();
    b2.cookie = None;
    eventually("session creation through the restarted control", || async {
        b2.clone()
            .try_send("GET", "/api/options", None)
            .await
            .is_ok_and(|a| a.status == 200)
    })
    .await;
    new_session(&mut b2, json!({"cache": "none"})).await;
    eventually("the new session's route reaches the proxy", || async {
        b2.clone()
            .try_send("GET", "/api/users", None)
            .await
            .is_ok_and(|a| a.status == 200)
    })
    .await;
    let (ok, failed) = load.stop().await;
    assert!(
        failed.is_empty(),
        "{} of {} failed while control was away: {:?}",
        failed.len(),
        ok,
        &failed[..failed.len().min(5)]
    );

    proxy.shutdown.cancel();
    let _ = proxy_task.await;
    control.shutdown().await;
    backend_stop.cancel();
    let _ = backend.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_carries_state_requests_and_cache_changes() {
    let dir = temp_dir("events");
    let up = start_up(&dir, 1, |_, _| {}).await;
    let mut b = Browser::new(&dir.join("data"), up.addrs.edge.port());
    new_session(&mut b, json!({})).await;
    let res = b.open_stream("/api/session/events").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut body = res.into_body();
    let mut seen = String::new();
    read_until(
        &mut body,
        &mut seen,
        "event: state\ndata: {\"state\":\"ready\"}",
    )
    .await;
    assert_eq!(
        b.post(
            "/api/users",
            json!({"username": "eve", "email": "eve@example.com", "password": "longenough"})
        )
        .await
        .status,
        201
    );
    assert_eq!(b.get("/api/users/1").await.status, 200);
    read_until(&mut body, &mut seen, "event: request\ndata: ").await;
    read_until(&mut body, &mut seen, "\"path\":\"/api/users/1\"").await;
    read_until(&mut body, &mut seen, "event: cache\ndata: ").await;
    read_until(&mut body, &mut seen, "\"key\":\"user:1\"").await;
    // Ending the session ends the stream with `expired`.
    assert_eq!(b.send("DELETE", "/api/session", None).await.status, 200);
    read_until(&mut body, &mut seen, "event: expired").await;
    up.shutdown().await.unwrap();
}

/// Reads an event stream until `want` has appeared in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_session_is_made_used_and_removed_on_the_engines_themselves() {
    use sqlx::Connection;
    let (Some(pg), Some(redis_url)) = (
        engine("STACKLAB_TEST_POSTGRES_URL"),
        engine("STACKLAB_TEST_REDIS_URL"),
    ) else {
        return;
    };
    let dir = temp_dir("shared-life");
    let (pg2, redis2) = (pg.clone(), redis_url.clone());
    let up = start_up(&dir, 1, move |_, c| {
        c.shared.postgres_url = Some(stacklab_types::Secret::new(pg2));
        c.shared.redis_url = Some(stacklab_types::Secret::new(redis2));
    })
    .await;
    let mut b = Browser::new(&dir.join("data"), up.addrs.edge.port());
    let r = b.get("/api/options").await;
    let postgres = option(&choice(&r.json(), "database"), "postgres");
    assert_eq!(postgres["available"], true, "{postgres}");
    assert!(postgres["provisioners"]
        .as_array()
        .unwrap()
        .contains(&json!("shared")));

    let r = b.post("/api/sessions", json!({"provisioner": "shared", "database": "postgres", "cache": "redis", "write_policy": "write-through"})).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    let code = v["code"].as_str().unwrap().to_owned();
    assert!(
        !r.text().contains("PASSWORD") && !r.text().contains("redis://"),
        "no credentials in the answer: {}",
        r.text()
    );
    assert_eq!(
        b.post(
            "/api/users",
            json!({"username": "dee", "email": "dee@example.com", "password": "longenough"})
        )
        .await
        .status,
        201
    );
    let r = b.get("/api/users/1").await;
    assert_eq!(
        (r.status, r.headers["x-stacklab-cache"].to_str().unwrap()),
        (200, "hit"),
        "write-through fills the session's Redis"
    );

    let name = shared_name(&dir.join("data"), &stacklab_types::session::id(&code));
    let mut admin_pg = sqlx::PgConnection::connect(&pg).await.unwrap();
    let dbs: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_one(&mut admin_pg)
        .await
        .unwrap();
    assert_eq!(dbs, 1, "the session's own database");
    let redis = redis::Client::open(redis_url.as_str()).unwrap();
    let mut rc = redis.get_multiplexed_async_connection().await.unwrap();
    let users: Vec<String> = redis::cmd("ACL")
        .arg("USERS")
        .query_async(&mut rc)
        .await
        .unwrap();
    assert!(
        users.contains(&name),
        "the session's own Redis ACL user: {users:?}"
    );

    up.control.clock.advance(61 * MINUTE);
    assert_eq!(up.control.reap_once().await, 1);
    eventually("410 through the proxy", || async {
        b.clone().get("/api/users/1").await.status == 410
    })
    .await;
    let dbs: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_one(&mut admin_pg)
        .await
        .unwrap();
    let roles: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_roles WHERE rolname = $1")
        .bind(&name)
        .fetch_one(&mut admin_pg)
        .await
        .unwrap();
    assert_eq!((dbs, roles), (0, 0), "database and role dropped");
    let users: Vec<String> = redis::cmd("ACL")
        .arg("USERS")
        .query_async(&mut rc)
        .await
        .unwrap();
    assert!(!users.contains(&name), "Redis ACL user gone: {users:?}");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{name}:*"))
        .query_async(&mut rc)
        .await
        .unwrap();
    assert!(keys.is_empty(), "the session's keys are gone: {keys:?}");
    up.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_docker_engine_is_an_unavailable_choice_and_nothing_else_breaks() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../config/images/docker-local.toml"
    ))
    .unwrap();
    let file: toml::Value = toml::from_str(&text).unwrap();
    let mut section = file.get("docker").unwrap().clone();
    section.as_table_mut().unwrap().insert(
        "host".into(),
        toml::Value::String("tcp://127.0.0.1:1".into()),
    );
    let docker =
        stacklab_control::provision::docker::DockerConfig::from_section(Some(&section)).unwrap();
    assert!(docker.is_some());
    let dir = temp_dir("docker-off");
    let up = start_up(&dir, 1, move |_, c| c.docker = docker).await;
    let mut b = Browser::new(&dir.join("data"), up.addrs.edge.port());
    let r = b.get("/api/options").await;
    let d = option(&choice(&r.json(), "provisioner"), "docker");
    assert_eq!(d["available"], false, "{d}");
    assert!(!d["reason"].as_str().unwrap_or_default().is_empty(), "{d}");
    let r = b
        .post(
            "/api/sessions",
            json!({"provisioner": "docker", "database": "postgres", "cache": "redis"}),
        )
        .await;
    assert_eq!(
        (r.status, r.field()),
        (503, "provisioner".into()),
        "{}",
        r.text()
    );
    new_session(&mut b, json!({})).await;
    assert_eq!(
        b.get("/api/users").await.status,
        200,
        "embedded sessions are unaffected"
    );
    up.shutdown().await.unwrap();
}

/// A replacement that cannot start (here the program refuses to run while a marker file
/// exists) is tried again, with a growing back-off, until one starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replacement_that_fails_to_start_is_tried_again() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir("replace-retry");
    let marker = dir.join("refuse");
    let wrapper = dir.join("stacklab-wrapper");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n[ -e '{}' ] && exit 1\nexec '{}' \"$@\"\n",
            marker.display(),
            env!("CARGO_BIN_EXE_stacklab")
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let command = wrapper.clone();
    let up = start_up(&dir, 1, move |_, c| c.backends.command = Some(command)).await;
    let first = up.control.instances.list()[0].clone();
    std::fs::write(&marker, "").unwrap();
    assert!(std::process::Command::new("kill")
        .args(["-9", &first.pid.to_string()])
        .status()
        .unwrap()
        .success());
    eventually("a replacement failed to start", || async {
        up.control.metrics.replacement_failures.get() >= 1
    })
    .await;
    assert!(up.control.instances.list().is_empty());
    std::fs::remove_file(&marker).unwrap();
    eventually("a replacement started after the failures", || async {
        up.control.instances.list().len() == 1
    })
    .await;
    assert_ne!(up.control.instances.list()[0].id, first.id);
    up.shutdown().await.unwrap();
}

/// Issue 19: the Transport choice changed nothing (every response advertised HTTP/3). It now
/// rides on the session's route through the feed: a session that chose HTTPS gets
/// `Alt-Svc: clear` on every response of the edge — the UI's page, control's API, its data —
/// and never an `h3` advertisement; one that chose HTTP/3 gets `h3`; a browser with no session
/// keeps the advertisement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_transport_choice_decides_what_the_edge_advertises() {
    let dir = temp_dir("transport");
    let up = start_up(&dir, 1, |_, _| {}).await;
    let data = dir.join("data");
    let port = up.addrs.edge.port();
    let h3 = format!("h3=\":{port}\"; ma=86400");
    let alt_svc = |r: &Answer| {
        r.headers
            .get_all("alt-svc")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let mut anonymous = Browser::new(&data, port);
    assert_eq!(
        alt_svc(&anonymous.get("/").await),
        [h3.as_str()],
        "no session"
    );
    for (transport, want) in [("https", "clear"), ("h3", h3.as_str())] {
        let mut b = Browser::new(&data, port);
        let code = new_session(&mut b, json!({"transport": transport})).await;
        let routes = admin(up.addrs.admin, "GET", "/admin/sessions", Some(TOKEN), None)
            .await
            .json();
        let route = routes["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == crate::helpers::id(&code).as_str())
            .cloned()
            .unwrap_or_else(|| panic!("the proxy has no route for the session: {routes}"));
        assert_eq!(route["transport"], transport, "{route}");
        for path in ["/", "/api/session", "/api/users"] {
            let r = b.get(path).await;
            assert_eq!(r.status, 200, "{path}: {}", r.text());
            assert_eq!(alt_svc(&r), [want], "{transport}: {path}");
        }
    }
    up.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
