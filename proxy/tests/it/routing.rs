use crate::helpers::*;
use hyper_util::client::legacy::{connect::HttpConnector, Client};

fn session_config(a: &Backend, b1: &Backend, b2: &Backend) -> String {
    let mut t = String::new();
    t += &pool_toml("static-pool", "round_robin", &[a]);
    t += &pool_toml("rust", "round_robin", &[b1, b2]);
    t += &route_toml("/", "pool = \"static-pool\"");
    t += &route_toml("/api/", "session_pool = true\ncaptures = true");
    t += &route_toml("/graphql", "session_pool = true");
    t += "[[routes]]\npath = \"/api/sessions\"\nmethods = [\"POST\"]\npool = \"static-pool\"\n";
    t
}

/// Three backends, `a` for the static pool and `b1`, `b2` for the session pool `rust`, behind
/// a proxy named `name` on [`session_config`] (the proxy last, so that it is dropped first).
async fn session_proxy(name: &str) -> (Backend, Backend, Backend, TestProxy) {
    let (a, b1, b2) = (
        Backend::start("a").await,
        Backend::start("b1").await,
        Backend::start("b2").await,
    );
    let p = TestProxy::start(name, &session_config(&a, &b1, &b2)).await;
    (a, b1, b2, p)
}

/// Puts the session `code` in the table, on the pool `rust`.
async fn open_session(p: &TestProxy, code: &str) -> Answer {
    admin(
        p,
        "PUT",
        &format!("/admin/sessions/{}", id(code)),
        serde_json::json!({"pool": "rust"}),
    )
    .await
}

/// `method path` on the admin API, without a body, answered 200.
async fn admin_ok(p: &TestProxy, method: &str, path: &str) {
    let r = admin(p, method, path, serde_json::Value::Null).await;
    assert_eq!(r.status, 200, "{method} {path}");
}

/// `GET path` on the proxy's plain port with the session cookie of `code`.
async fn as_session(
    c: &Client<HttpConnector, Body>,
    p: &TestProxy,
    path: &str,
    code: &str,
) -> Answer {
    get(c, &p.plain_url(path), &[("cookie", &cookie(code))]).await
}

#[tokio::test]
async fn session_paths_answer_401_and_410_themselves() {
    let (_a, b1, b2, p) = session_proxy("s401").await;
    let c = client();

    let r = get(&c, &p.plain_url("/api/users"), &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], "session_missing");
    let r = get(&c, &p.plain_url("/graphql"), &[]).await;
    assert_eq!(r.status, 401);

    let r = as_session(&c, &p, "/api/users", SESSION_A).await;
    assert_eq!(r.status, 410);
    assert_eq!(r.json()["error"]["code"], "session_expired");
    let r = get(
        &c,
        &p.plain_url("/api/users"),
        &[("cookie", "stacklab_session=../../etc/passwd")],
    )
    .await;
    assert_eq!(r.status, 410, "a malformed code is no live session");

    // Creating a session needs no cookie.
    let r = send(&c, "POST", &p.plain_url("/api/sessions"), &[], "{}")
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["id"], "a");
    assert_eq!(
        b1.hits.load(std::sync::atomic::Ordering::Relaxed)
            + b2.hits.load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}

#[tokio::test]
async fn the_cookie_selects_the_pool_and_the_pinned_member() {
    let (_a, _b1, b2, p) = session_proxy("cookie").await;
    let c = client();
    let r = admin(
        &p,
        "PUT",
        &format!("/admin/sessions/{}", id(SESSION_A)),
        serde_json::json!({"pool": "rust", "member": "b2"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = open_session(&p, SESSION_B).await;
    assert_eq!(r.status, 200);

    for _ in 0..10 {
        let r = as_session(&c, &p, "/api/users?q=x", SESSION_A).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.member(), "b2", "pinned");
        let seen = r.json();
        assert_eq!(seen["headers"]["x-stacklab-session"], id(SESSION_A));
        assert_eq!(seen["query"], "q=x");
    }
    let mut members = std::collections::BTreeSet::new();
    for _ in 0..10 {
        let r = get(
            &c,
            &p.plain_url("/api/users"),
            &[("cookie", &format!("theme=dark; {}", cookie(SESSION_B)))],
        )
        .await;
        assert_eq!(r.json()["headers"]["x-stacklab-session"], id(SESSION_B));
        members.insert(r.member());
    }
    assert_eq!(
        members.len(),
        2,
        "an unpinned session is balanced over the pool"
    );

    // The pinned member gone: the session fails over to the rest of its pool.
    b2.kill();
    for _ in 0..5 {
        let r = as_session(&c, &p, "/api/users", SESSION_A).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.member(), "b1");
    }

    // A session removed from the table is expired for the proxy.
    admin_ok(&p, "DELETE", &format!("/admin/sessions/{}", id(SESSION_A))).await;
    let r = as_session(&c, &p, "/api/users", SESSION_A).await;
    assert_eq!(r.status, 410);
}

#[tokio::test]
async fn forged_stacklab_headers_are_stripped_and_forwarding_headers_added() {
    let (_a, _b1, _b2, p) = session_proxy("forged").await;
    open_session(&p, SESSION_A).await;
    let c = client();
    let r = get(
        &c,
        &p.plain_url("/api/users"),
        &[
            ("cookie", &cookie(SESSION_A)),
            ("x-stacklab-session", SESSION_B),
            ("x-stacklab-admin", "yes"),
            ("x-request-id", "client-id-1"),
            ("x-forwarded-for", "203.0.113.9"),
        ],
    )
    .await;
    let seen = r.json();
    let h = &seen["headers"];
    assert_eq!(
        h["x-stacklab-session"],
        id(SESSION_A),
        "the forged session header was replaced"
    );
    assert!(h.get("x-stacklab-admin").is_none());
    assert_eq!(h["x-request-id"], "client-id-1");
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(r.headers["x-request-id"], "client-id-1");
    let timing: Vec<_> = r
        .headers
        .get_all("server-timing")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert!(
        timing.iter().any(|t| t.starts_with("backend;dur=")),
        "{timing:?}"
    );
    assert!(
        timing.iter().any(|t| t.starts_with("proxy;dur=")),
        "{timing:?}"
    );
}

#[tokio::test]
async fn requests_are_captured_per_session_with_secrets_masked() {
    let (_a, _b1, _b2, p) = session_proxy("capture").await;
    open_session(&p, SESSION_A).await;
    open_session(&p, SESSION_B).await;
    let c = client();
    let body = r#"{"username":"ann","password":"hunter2"}"#;
    let r = send(
        &c,
        "POST",
        &p.plain_url("/api/users?x=1"),
        &[
            ("cookie", &cookie(SESSION_A)),
            ("authorization", "Bearer abc"),
        ],
        body,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    as_session(&c, &p, "/api/other", SESSION_B).await;

    let list = captured(&p, SESSION_A).await;
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1, "only this session's requests: {list:?}");
    let cap = &list[0];
    assert_eq!(cap["method"], "POST");
    assert_eq!(cap["path"], "/api/users");
    assert_eq!(cap["query"], "x=1");
    assert_eq!(cap["protocol"], "h1");
    assert_eq!(cap["status"], 200);
    assert_eq!(cap["cache"], "miss");
    assert!(cap["member"].as_str().unwrap().starts_with('b'));
    let text = cap.to_string();
    assert!(!text.contains("hunter2"), "password masked: {text}");
    assert!(!text.contains("Bearer abc"), "authorization redacted");
    assert!(
        !text.contains(&format!("stacklab_session={}", id(SESSION_A))),
        "cookie redacted"
    );
    assert!(cap["body"]
        .as_str()
        .unwrap()
        .contains("\"username\":\"ann\""));
}

#[tokio::test]
async fn static_files_are_served_and_traversal_refused() {
    let p = TestProxy::start("static", &route_toml("/", "static_files = true")).await;
    let c = client();
    let r = get(&c, &p.plain_url("/"), &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let etag = r.headers["etag"].to_str().unwrap().to_owned();
    let r = get(&c, &p.plain_url("/"), &[("if-none-match", &etag)]).await;
    assert_eq!(r.status, 304);
    for bad in ["/../Cargo.toml", "/%2e%2e/Cargo.toml", "/..%2fCargo.toml"] {
        let r = get(&c, &p.plain_url(bad), &[]).await;
        assert!(r.status == 400 || r.status == 404, "{bad}: {}", r.status);
        assert!(r.json()["error"]["code"].is_string());
    }
    let r = get(&c, &p.plain_url("/nope.js"), &[]).await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn pools_and_members_change_at_run_time_under_load() {
    let (b1, b2) = (Backend::start("b1").await, Backend::start("b2").await);
    let p = TestProxy::start(
        "dynamic",
        &format!(
            "{}{}",
            pool_toml("web", "round_robin", &[&b1]),
            route_toml("/", "pool = \"web\"")
        ),
    )
    .await;
    let load = Load::start(p.plain_url("/x"), "GET", vec![], 8);
    load.wait_for(100).await;

    let r = admin(
        &p,
        "PUT",
        "/admin/pools/web/members/b2",
        serde_json::json!({"addr": b2.addr.to_string()}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let before = b2.hits.load(std::sync::atomic::Ordering::Relaxed);
    load.wait_for(200).await;
    assert!(
        b2.hits.load(std::sync::atomic::Ordering::Relaxed) > before + 50,
        "the new member takes traffic"
    );

    admin_ok(&p, "POST", "/admin/pools/web/members/b1/drain").await;
    load.wait_for(50).await;
    let b1_hits = b1.hits.load(std::sync::atomic::Ordering::Relaxed);
    load.wait_for(200).await;
    assert_eq!(
        b1.hits.load(std::sync::atomic::Ordering::Relaxed),
        b1_hits,
        "a draining member takes nothing new"
    );

    admin_ok(&p, "DELETE", "/admin/pools/web/members/b1").await;
    load.wait_for(100).await;
    let (ok, failed, failures) = load.stop().await;
    assert_eq!(failed, 0, "{failures:?}");
    assert!(ok > 500);

    // A pool made through the API, as the README shows it (the path names it).
    let r = admin(&p, "PUT", "/admin/pools/extra", serde_json::json!({"algorithm": "round_robin", "members": [{"id": "x1", "addr": b2.addr.to_string()}]})).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let r = admin(
        &p,
        "PUT",
        "/admin/pools/extra",
        serde_json::json!({"name": "other"}),
    )
    .await;
    assert_eq!(r.status, 400);

    // Bad input is refused, names the field, and changes nothing.
    let before = admin(&p, "GET", "/admin/routes", serde_json::Value::Null)
        .await
        .json();
    let r = admin(
        &p,
        "PUT",
        "/admin/pools/web/members/bad",
        serde_json::json!({"addr": "not-an-address"}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["field"], "member.addr");
    let r = admin(
        &p,
        "PUT",
        "/admin/pools/web/members/x",
        serde_json::json!({"addr": "127.0.0.1:1", "extra": true}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        admin(&p, "GET", "/admin/routes", serde_json::Value::Null)
            .await
            .json(),
        before
    );
}

/// Issue 22, item 10: a `Connection` header that names `Host` dropped the Host, and the member
/// was asked for a resource on no host.
#[tokio::test]
async fn a_connection_header_naming_host_still_forwards_the_host() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let b = Backend::start("m0").await;
    let toml = format!(
        "{}{}",
        pool_toml("p", "round_robin", &[&b]),
        route_toml("/", "pool = \"p\"")
    );
    let p = TestProxy::start("conn-host", &toml).await;
    let mut s = tokio::net::TcpStream::connect(p.addrs.plain.unwrap())
        .await
        .unwrap();
    s.write_all(
        b"GET /x HTTP/1.1\r\nHost: app.example:8443\r\nConnection: Host, x-hop, close\r\nx-hop: 1\r\n\r\n",
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("answered and closed")
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let (_, body) = text.split_once("\r\n\r\n").unwrap();
    let seen: serde_json::Value = serde_json::from_str(body).unwrap();
    let h = &seen["headers"];
    assert_eq!(h["host"], "app.example:8443", "{h}");
    assert_eq!(h["x-forwarded-host"], "app.example:8443", "{h}");
    assert!(
        h.get("x-hop").is_none(),
        "other names in Connection still go: {h}"
    );
    assert!(h.get("connection").is_none(), "{h}");
}
