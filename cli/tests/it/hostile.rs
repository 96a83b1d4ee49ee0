//! Hostile input against the public API and the admin API, through the real edge over real
//! sockets: forged `x-stacklab-*` and `x-forwarded-for` headers, malformed, oversized and
//! guessed session cookies, a code replayed after its session ended, path traversal in static
//! files, GraphQL depth, alias, fragment and parser bombs, SQL and MongoDB operator injection in
//! every string field (REST and GraphQL, on every database the install offers), invalid JSON
//! and UTF-8, wrong content types, oversized bodies, admin calls without or with a wrong token.
//!
//! Each case asserts a 4xx whose JSON body names what is wrong, that the stack still serves a
//! normal request afterwards, and that nothing changed: the session's rows and tables (read
//! as an administrator: the SQLite file read-only, the shared server through its admin URL),
//! the registry's sessions, the route table, and the backend instances (none died).

use crate::helpers::*;
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const MINUTE: u64 = 60_000;

async fn new_user(b: &mut Browser, name: &str) -> Value {
    let r = b
        .post(
            "/api/users",
            json!({"username": name, "email": format!("{name}@example.com"), "password": format!("pw-{name}-long")}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()
}

/// A refusal as the project promises it: the status, and a JSON error body with a code and a
/// message that says what to do.
#[track_caller]
fn refused(r: &Answer, status: u16, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", r.text());
    let v: Value = serde_json::from_slice(&r.body)
        .unwrap_or_else(|e| panic!("{what}: the error is not JSON ({e}): {}", r.text()));
    let code = v["error"]["code"].as_str().unwrap_or_default();
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        !code.is_empty() && !message.is_empty(),
        "{what}: no error code and message: {v}"
    );
}

/// [`refused`], collecting what is wrong instead of stopping at the first case.
fn check(r: &Answer, status: u16, what: &str, failures: &mut Vec<String>) {
    if let Err(e) = std::panic::catch_unwind(|| refused(r, status, what)) {
        let msg = e
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_else(|| format!("{what}: failed"));
        failures.push(msg.chars().take(400).collect());
    }
}

/// The usernames a session's search lists.
async fn usernames(b: &Browser) -> Vec<String> {
    usernames_with(b, &[]).await
}

async fn usernames_with(b: &Browser, headers: &[(&str, &str)]) -> Vec<String> {
    let r = b
        .request("GET", "/api/users?limit=100", headers, None)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap().to_owned())
        .collect()
}

/// Process ids of the backend instances: a hostile request must not kill one.
fn instance_pids(up: &stacklab_control::serve::Up) -> Vec<u32> {
    let mut pids: Vec<u32> = up.control.instances.list().iter().map(|i| i.pid).collect();
    pids.sort_unstable();
    pids
}

/// One HTTP/1.1 request over TLS, written byte for byte (so that paths `http::Uri` would
/// refuse reach the proxy as sent); the answer's status, head and body.
async fn raw_h1(data_dir: &Path, port: u16, request: &[u8]) -> (u16, String, String) {
    use rustls_pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(
            rustls_pki_types::CertificateDer::from_pem_file(data_dir.join("tls/self-signed.crt"))
                .unwrap(),
        )
        .unwrap();
    let mut tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut s = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(
            rustls_pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    s.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in: {text:?}"));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 || tail.len() < n {
                break;
            }
            out.push_str(&tail[..n]);
            rest = tail[n..].trim_start_matches("\r\n");
        }
        out
    } else {
        body.to_owned()
    };
    (status, head.to_owned(), body)
}

/// An admin request exactly as given: any headers, any body bytes.
async fn admin_raw(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, Vec<u8>)>,
) -> Answer {
    use http_body_util::Full;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = match body {
        Some((ct, b)) => req
            .header("content-type", ct)
            .body(Full::new(bytes::Bytes::from(b))),
        None => req.body(Full::new(bytes::Bytes::new())),
    }
    .unwrap();
    let res = client.request(req).await.unwrap();
    Answer::read(res).await.unwrap()
}

/// A random code that looks like a real one (26 Crockford base32 characters, lower case).
fn guessed_code() -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghjkmnpqrstvwxyz";
    (0..26)
        .map(|_| ALPHABET[(rand::random::<u32>() % 32) as usize] as char)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_headers_and_hostile_cookies_are_not_trusted() {
    let dir = temp_dir("hostile-cookies");
    let data = dir.join("data");
    let up = start_up(&dir, 1, |_, _| {}).await;
    let port = up.addrs.edge.port();
    let mut a = Browser::new(&data, port);
    let code_a = new_session(&mut a, json!({})).await;
    new_user(&mut a, "ann").await;
    let mut b = Browser::new(&data, port);
    let code_b = new_session(&mut b, json!({})).await;
    new_user(&mut b, "bob").await;
    new_user(&mut b, "bea").await;
    let db_a = session_db_url(&data, &code_a, None);
    let db_b = session_db_url(&data, &code_b, None);
    let (before_a, before_b) = (db_snapshot(&db_a).await, db_snapshot(&db_b).await);
    let pids = instance_pids(&up);
    let anon = Browser::new(&data, port);

    // Forged x-stacklab-* headers: the proxy's value wins, whatever the client sends.
    for name in [
        "x-stacklab-session",
        "X-Stacklab-Session",
        "x-stacklab-member",
        "x-stacklab-cache",
        "x-stacklab-instance",
        "x-stacklab-pool",
    ] {
        let forged = [(name, code_b.as_str())];
        assert_eq!(
            usernames_with(&a, &forged).await,
            ["ann"],
            "{name}: A's cookie, B's code in a header: the backend serves A"
        );
        let r = a
            .request("GET", "/api/users/2", &forged, None)
            .await
            .unwrap();
        refused(&r, 404, &format!("{name}: B's user 2 through A"));
        let r = a
            .request("GET", "/api/session", &forged, None)
            .await
            .unwrap();
        assert_eq!(r.json()["code"], code_a.as_str(), "{name}: control sees A");
        let r = a
            .request("GET", "/api/requests?limit=50", &forged, None)
            .await
            .unwrap();
        // (Not a bare "bea": request ids and timings are random hex and digits.)
        assert!(
            !r.text().contains("bea@example.com"),
            "{name}: B's requests through A"
        );
        // Without a cookie the header does not stand in for one.
        for (method, path) in [
            ("GET", "/api/users"),
            ("GET", "/api/session"),
            ("GET", "/api/requests"),
            ("GET", "/api/cache"),
            ("POST", "/graphql"),
            ("DELETE", "/api/session"),
        ] {
            let r = anon.request(method, path, &forged, None).await.unwrap();
            refused(
                &r,
                401,
                &format!("{name}: {method} {path} without a cookie"),
            );
            assert_eq!(r.code(), "session_missing");
        }
        let r = anon
            .request(
                "POST",
                "/api/users",
                &forged,
                Some((
                    "application/json",
                    br#"{"username":"mal","email":"mal@example.com","password":"longenough"}"#
                        .to_vec(),
                )),
            )
            .await
            .unwrap();
        refused(&r, 401, &format!("{name}: a write without a cookie"));
    }
    // A response header a client forged on its request is not echoed as the backend's.
    let r = a
        .request(
            "GET",
            "/api/users/1",
            &[("x-stacklab-cache", "forged")],
            None,
        )
        .await
        .unwrap();
    assert_ne!(r.headers["x-stacklab-cache"], "forged");

    // Cookies that are not session codes, codes nobody was given, and a code replayed.
    let guessed = guessed_code();
    let mut cookies: Vec<(String, &str)> = vec![
        ("stacklab_session=".into(), "empty"),
        ("stacklab_session=../../etc/passwd".into(), "a path"),
        (
            format!("stacklab_session={code_a}'; DROP TABLE users; --"),
            "SQL after a code",
        ),
        (
            format!("stacklab_session={}", code_a.to_uppercase()),
            "a code in upper case",
        ),
        (format!("stacklab_session={}", "A".repeat(65)), "65 letters"),
        (
            format!("stacklab_session={code_a}{code_b}"),
            "two codes run together",
        ),
        (format!("stacklab_session={code_a}%00"), "a code and %00"),
        (
            format!("stacklab_session={code_a}é"),
            "a code and non-ASCII",
        ),
        (format!("stacklab_session={guessed}"), "a guessed code"),
        (
            format!("stacklab_session={}", &code_a[..25]),
            "a code cut short",
        ),
        (
            "stacklab_session={\"$ne\":null}".to_owned(),
            "a MongoDB operator",
        ),
    ];
    cookies.push((
        format!("stacklab_session=bad; stacklab_session={code_a}"),
        "a bad code before a good one",
    ));
    for (cookie, what) in &cookies {
        for (method, path) in [
            ("GET", "/api/users"),
            ("GET", "/api/session"),
            ("GET", "/api/cache"),
            ("GET", "/api/requests"),
        ] {
            let r = anon
                .request(method, path, &[("cookie", cookie)], None)
                .await
                .unwrap();
            // A header that is not text cannot be read at all: no cookie, then.
            let (status, code) = if cookie.is_ascii() {
                (410, "session_expired")
            } else {
                (401, "session_missing")
            };
            refused(&r, status, &format!("{what}: {method} {path}"));
            assert_eq!(r.code(), code, "{what}");
            for name in ["ann", "bob", "bea"] {
                assert!(!r.text().contains(name), "{what}: {}", r.text());
            }
        }
    }
    // Many cookies around the real one: still A, and only A.
    let many: String = (0..300).map(|i| format!("c{i}=v{i}; ")).collect();
    let r = anon
        .request(
            "GET",
            "/api/users",
            &[("cookie", &format!("{many}stacklab_session={code_a}"))],
            None,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["total"], 1);
    // Cookie headers split as HTTP/2 allows, the session's among 100 others.
    let mut split: Vec<(&str, String)> =
        (0..100).map(|i| ("cookie", format!("x{i}=y{i}"))).collect();
    split.push(("cookie", format!("stacklab_session={code_b}")));
    let split: Vec<(&str, &str)> = split.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = anon
        .request("GET", "/api/users", &split, None)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "split cookies: {r:?}");
    assert_eq!(r.json()["total"], 2, "{}", r.text());
    // More header fields than a member takes: 431 in JSON from the proxy, not an empty one
    // from the member.
    let fields: Vec<(String, String)> = (0..120)
        .map(|i| (format!("x-pad-{i}"), i.to_string()))
        .collect();
    let fields: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let r = a.request("GET", "/api/users", &fields, None).await.unwrap();
    refused(&r, 431, "120 header fields");
    assert_eq!(r.code(), "headers_too_large");
    // A cookie past the header limit: 431 naming the limit.
    let big = format!("pad={}; stacklab_session={code_a}", "x".repeat(20_000));
    let r = anon
        .request("GET", "/api/users", &[("cookie", &big)], None)
        .await
        .unwrap();
    refused(&r, 431, "a 20 KB cookie");
    assert_eq!(r.code(), "headers_too_large");
    // One past what HTTP/2 itself takes: the connection may be refused, the server lives on.
    let huge = format!("pad={}; stacklab_session={code_a}", "x".repeat(100_000));
    if let Ok(r) = anon
        .request("GET", "/api/users", &[("cookie", &huge)], None)
        .await
    {
        assert!((400..500).contains(&r.status), "{}: {}", r.status, r.text());
    }
    assert_eq!(
        usernames(&a).await,
        ["ann"],
        "A is served after the huge cookie"
    );

    // A code replayed after its session was deleted: 410 everywhere, nothing of it left.
    let mut c = Browser::new(&data, port);
    let code_c = new_session(&mut c, json!({})).await;
    new_user(&mut c, "cyd").await;
    let r = c.send("DELETE", "/api/session", None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let replay = format!("stacklab_session={code_c}");
    eventually("the proxy forgets the deleted session", || async {
        anon.request("GET", "/api/users", &[("cookie", &replay)], None)
            .await
            .is_ok_and(|r| r.status == 410)
    })
    .await;
    for (method, path) in [
        ("GET", "/api/users"),
        ("GET", "/api/users/1"),
        ("GET", "/api/session"),
        ("DELETE", "/api/session"),
        ("GET", "/api/cache"),
        ("GET", "/api/requests"),
        ("GET", "/api/session/events"),
        ("POST", "/graphql"),
    ] {
        let r = anon
            .request(method, path, &[("cookie", &replay)], None)
            .await
            .unwrap();
        refused(&r, 410, &format!("replayed code: {method} {path}"));
        assert!(!r.text().contains("cyd"));
    }
    // And the guessed code still reaches nobody, after all this.
    let r = anon
        .request(
            "GET",
            "/api/users",
            &[("cookie", &format!("stacklab_session={guessed}"))],
            None,
        )
        .await
        .unwrap();
    refused(&r, 410, "guessed code");

    assert_eq!(usernames(&a).await, ["ann"]);
    assert_eq!(usernames(&b).await, ["bob", "bea"]);
    assert_eq!(db_snapshot(&db_a).await, before_a, "A's rows unchanged");
    assert_eq!(db_snapshot(&db_b).await, before_b, "B's rows unchanged");
    let mut live: Vec<String> = up
        .control
        .registry
        .sessions()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    live.sort();
    let mut want = vec![crate::helpers::id(&code_a), crate::helpers::id(&code_b)];
    want.sort();
    assert_eq!(live, want, "the registry holds A and B only");
    assert_eq!(instance_pids(&up), pids, "no backend instance died");
    up.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_traversal_forged_addresses_and_the_admin_api_are_refused() {
    let dir = temp_dir("hostile-admin");
    let data = dir.join("data");
    let up = start_up(&dir, 0, |cfg, _| {
        cfg.sessions.max_new_per_client_per_minute = 3;
    })
    .await;
    let port = up.addrs.edge.port();
    let anon = Browser::new(&data, port);

    // Static files: nothing outside the web root, nothing hidden, no trick of encoding.
    let served = anon.request("GET", "/", &[], None).await.unwrap();
    assert_eq!(served.status, 200);
    for path in [
        "/../etc/passwd",
        "/../../../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/%2E%2E/Cargo.toml",
        "/..%2f..%2fCargo.toml",
        "/js/..%2f..%2f..%2fCargo.toml",
        "/%2e%2e%5c%2e%2e%5cCargo.toml",
        "/..%5c..%5cCargo.toml",
        "/index.html%00.js",
        "/%00",
        "/.git/config",
        "/.env",
        "/js/./app.js",
        "/%c0%ae%c0%ae/%c0%ae%c0%ae/etc/passwd",
        "/%zz",
        "/tests/errors.test.js",
        "/e2e/harness.py",
        "/%252e%252e/etc/passwd",
        "//etc/passwd",
    ] {
        let r = anon.request("GET", path, &[], None).await.unwrap();
        refused(&r, if r.status == 404 { 404 } else { 400 }, path);
        assert!(!r.text().contains("root:"), "{path}");
        let head = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        let (status, _, body) = raw_h1(&data, port, head.as_bytes()).await;
        assert!(
            status == 400 || status == 404,
            "{path} over HTTP/1.1: {status} {body}"
        );
        assert!(!body.contains("root:") && !body.contains("[workspace]"));
    }
    // What `http::Uri` would not even send: raw backslashes, a raw NUL, spaces.
    for target in [
        &b"/..\\..\\Cargo.toml"[..],
        b"/\\..\\..\\etc\\passwd",
        b"/index.html\0.js",
    ] {
        let mut req = b"GET ".to_vec();
        req.extend_from_slice(target);
        req.extend_from_slice(b" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        let (status, _, body) = raw_h1(&data, port, &req).await;
        assert!(
            (400..500).contains(&status),
            "{}: {status} {body}",
            String::from_utf8_lossy(target)
        );
        assert!(!body.contains("root:") && !body.contains("[workspace]"));
    }
    let r = anon
        .request(
            "POST",
            "/index.html",
            &[],
            Some(("text/plain", b"x".to_vec())),
        )
        .await
        .unwrap();
    refused(&r, 405, "POST to a static file");
    assert_eq!(
        anon.request("GET", "/", &[], None).await.unwrap().status,
        200
    );

    // A forged x-forwarded-for (or any other address header) does not escape the per-client
    // limit on new sessions: control counts the address the proxy saw.
    let now = up.control.clock.now_ms();
    up.control.clock.advance(MINUTE - now % MINUTE);
    for i in 0..4 {
        let ip = format!("10.0.0.{i}");
        let forged = [
            ("x-forwarded-for", ip.as_str()),
            ("x-real-ip", ip.as_str()),
            ("forwarded", "for=10.9.9.9"),
            ("client-ip", ip.as_str()),
        ];
        let r = anon
            .request(
                "POST",
                "/api/sessions",
                &forged,
                Some(("application/json", b"{}".to_vec())),
            )
            .await
            .unwrap();
        if i < 3 {
            assert_eq!(r.status, 201, "{}", r.text());
        } else {
            refused(
                &r,
                429,
                "a 4th session from one address, however it is disguised",
            );
            assert_eq!(r.code(), "rate_limited");
        }
    }
    let live = up.control.registry.sessions().await.unwrap().len();
    assert_eq!(live, 3);

    // The admin API: no token, a wrong one, the right one anywhere but the header.
    let admin = up.addrs.admin;
    let routes_before = admin_raw(
        admin,
        "GET",
        "/admin/routes",
        &[("authorization", &format!("Bearer {TOKEN}"))],
        None,
    )
    .await;
    assert_eq!(routes_before.status, 200);
    let id = up.control.registry.sessions().await.unwrap()[0].id.clone();
    let basic = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("admin:{TOKEN}")
        )
    );
    let wrong_bearer = format!("Bearer {TOKEN}x");
    let short_bearer = format!("Bearer {}", &TOKEN[..TOKEN.len() - 1]);
    let lower_bearer = format!("bearer{TOKEN}");
    let cookie_token = format!("token={TOKEN}");
    /// What is tried, the headers that carry it, the query that carries it.
    type Credential<'a> = (&'a str, Vec<(&'a str, &'a str)>, String);
    let credentials: Vec<Credential> = vec![
        ("no token", vec![], String::new()),
        (
            "a wrong token",
            vec![("authorization", "Bearer wrong-token-wrong-token")],
            String::new(),
        ),
        (
            "an empty token",
            vec![("authorization", "Bearer ")],
            String::new(),
        ),
        (
            "the token with a letter more",
            vec![("authorization", wrong_bearer.as_str())],
            String::new(),
        ),
        (
            "the token less a letter",
            vec![("authorization", short_bearer.as_str())],
            String::new(),
        ),
        (
            "the token without the scheme's space",
            vec![("authorization", lower_bearer.as_str())],
            String::new(),
        ),
        (
            "the token as Basic",
            vec![("authorization", basic.as_str())],
            String::new(),
        ),
        (
            "the token in a cookie",
            vec![("cookie", cookie_token.as_str())],
            String::new(),
        ),
        ("the token in the query", vec![], format!("?token={TOKEN}")),
        (
            "the token as access_token",
            vec![],
            format!("?access_token={TOKEN}"),
        ),
    ];
    let endpoints: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", "/admin/routes".into(), None),
        ("GET", "/admin/routes/feed".into(), None),
        ("GET", "/admin/pools".into(), None),
        ("GET", "/admin/sessions".into(), None),
        ("GET", "/admin/topology".into(), None),
        ("GET", "/admin/instances".into(), None),
        ("GET", "/admin/bugs".into(), None),
        ("GET", "/admin/control/sessions".into(), None),
        ("GET", format!("/admin/stacks/{}", id), None),
        ("GET", format!("/admin/sessions/{}/requests", id), None),
        ("DELETE", format!("/admin/sessions/{}", id), None),
        ("POST", "/admin/control/reap".into(), None),
        ("POST", "/admin/reload".into(), None),
        (
            "PUT",
            "/admin/pools/evil".into(),
            Some(json!({"members": [{"id": "m", "addr": "127.0.0.1:1"}]})),
        ),
        (
            "PUT",
            "/admin/pools/rust/members/evil".into(),
            Some(json!({"addr": "127.0.0.1:1"})),
        ),
        (
            "PUT",
            format!("/admin/sessions/{}", id),
            Some(json!({"pool": "evil"})),
        ),
        (
            "PUT",
            format!("/admin/stacks/{}/cache-policy", id),
            Some(json!({"policy": "lfu"})),
        ),
        (
            "POST",
            "/admin/sessions/touches".into(),
            Some(json!({"touches": []})),
        ),
        ("POST", "/admin/pools/rust/instances".into(), None),
    ];
    for (what, headers, query) in &credentials {
        for (method, path, body) in &endpoints {
            let r = admin_raw(
                admin,
                method,
                &format!("{path}{query}"),
                headers,
                body.as_ref()
                    .map(|b| ("application/json", b.to_string().into_bytes())),
            )
            .await;
            refused(&r, 401, &format!("{what}: {method} {path}"));
            assert_eq!(r.code(), "unauthorized", "{what}: {method} {path}");
            assert!(!r.text().contains(TOKEN), "the token is never echoed");
        }
    }
    // With the token, bad bodies to the admin PUTs and POSTs: 400 (or 415) naming the fault.
    let auth = format!("Bearer {TOKEN}");
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let bad_bodies: Vec<(&str, String, &str, Vec<u8>, u16)> = vec![
        (
            "PUT",
            "/admin/pools/evil".into(),
            "application/json",
            b"{nope".to_vec(),
            400,
        ),
        (
            "PUT",
            "/admin/pools/evil".into(),
            "application/json",
            b"\xff\xfe{}".to_vec(),
            400,
        ),
        (
            "PUT",
            "/admin/pools/evil".into(),
            "application/json",
            deep.clone().into_bytes(),
            400,
        ),
        (
            "PUT",
            "/admin/pools/evil".into(),
            "application/json",
            br#"{"name":"other","members":[]}"#.to_vec(),
            400,
        ),
        (
            "PUT",
            "/admin/pools/evil".into(),
            "application/json",
            br#"{"members":"all"}"#.to_vec(),
            400,
        ),
        (
            "PUT",
            "/admin/pools/evil".into(),
            "text/plain",
            br#"{"members":[]}"#.to_vec(),
            415,
        ),
        (
            "PUT",
            "/admin/pools/rust/members/evil".into(),
            "application/json",
            br#"{"addr":5}"#.to_vec(),
            400,
        ),
        (
            "PUT",
            "/admin/pools/rust/members/evil".into(),
            "application/json",
            br#"{"addr":"127.0.0.1:1","weight":-1}"#.to_vec(),
            400,
        ),
        (
            "PUT",
            "/admin/pools/rust/members/evil".into(),
            "application/json",
            br#"{"addr":"127.0.0.1:1","weight":99999999999}"#.to_vec(),
            400,
        ),
        (
            "PUT",
            "/admin/pools/rust/members/evil".into(),
            "application/json",
            br#"{"addr":"'; DROP TABLE pools; --"}"#.to_vec(),
            400,
        ),
        (
            "PUT",
            "/admin/pools/rust/members/evil".into(),
            "application/json",
            b"{nope".to_vec(),
            400,
        ),
        (
            "PUT",
            format!("/admin/sessions/{}", id),
            "application/json",
            br#"{"pool":1}"#.to_vec(),
            400,
        ),
        (
            "PUT",
            format!("/admin/sessions/{}", id),
            "application/json",
            b"{nope".to_vec(),
            400,
        ),
        (
            "PUT",
            format!("/admin/stacks/{}/cache-policy", id),
            "application/json",
            br#"{"policy":5}"#.to_vec(),
            400,
        ),
        (
            "PUT",
            format!("/admin/stacks/{}/cache-policy", id),
            "application/json",
            br#"{"policy":"'; FLUSHALL"}"#.to_vec(),
            400,
        ),
        (
            "PUT",
            format!("/admin/stacks/{}/cache-policy", id),
            "application/json",
            deep.clone().into_bytes(),
            400,
        ),
        (
            "POST",
            "/admin/sessions/touches".into(),
            "application/json",
            br#"{"touches":"all"}"#.to_vec(),
            400,
        ),
        (
            "POST",
            "/admin/sessions/touches".into(),
            "application/json",
            b"\xff".to_vec(),
            400,
        ),
        (
            "GET",
            "/admin/routes/feed?since=abc".into(),
            "application/json",
            Vec::new(),
            400,
        ),
    ];
    for (method, path, ct, body, status) in bad_bodies {
        let r = admin_raw(
            admin,
            method,
            &path,
            &[("authorization", &auth)],
            Some((ct, body)),
        )
        .await;
        refused(&r, status, &format!("{method} {path} ({ct})"));
    }
    let r = admin_raw(
        admin,
        "GET",
        "/admin/nothing",
        &[("authorization", &auth)],
        None,
    )
    .await;
    refused(&r, 404, "an unknown admin path");
    let r = admin_raw(admin, "GET", "/nothing", &[], None).await;
    refused(&r, 404, "outside /admin/");
    let routes_after = admin_raw(
        admin,
        "GET",
        "/admin/routes",
        &[("authorization", &auth)],
        None,
    )
    .await;
    assert_eq!(
        routes_after.json(),
        routes_before.json(),
        "refused admin calls changed no route, pool or session"
    );
    assert_eq!(up.control.registry.sessions().await.unwrap().len(), 3);
    assert_eq!(up.control.sessions.len(), 3);
    assert!(up.control.instances.list().is_empty());
    up.shutdown().await.unwrap();
}

/// A GraphQL request body.
fn gql(query: &str, variables: Value) -> Vec<u8> {
    json!({"query": query, "variables": variables})
        .to_string()
        .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_and_graphql_bombs_are_refused_and_change_nothing() {
    let dir = temp_dir("hostile-bodies");
    let data = dir.join("data");
    let up = start_up(&dir, 1, |cfg, _| {
        cfg.limits.max_body_bytes = 256 * 1024;
    })
    .await;
    let port = up.addrs.edge.port();
    let mut a = Browser::new(&data, port);
    let code = new_session(&mut a, json!({"password_storage": "plaintext"})).await;
    new_user(&mut a, "ann").await;
    new_user(&mut a, "abe").await;
    let db = session_db_url(&data, &code, None);
    let before = db_snapshot(&db).await;
    let pids = instance_pids(&up);
    let sessions_before = up.control.registry.sessions().await.unwrap().len();

    let user = br#"{"username":"mal","email":"mal@example.com","password":"longenough"}"#;
    let nested = format!("{}{}", "[".repeat(20_000), "]".repeat(20_000));
    let deep_object = format!(
        r#"{{"username":"mal","email":"mal@example.com","password":"longenough","full_name":{}1{}}}"#,
        "{\"a\":".repeat(5_000),
        "}".repeat(5_000)
    );
    let over_backend = format!(
        r#"{{"username":"mal","email":"mal@example.com","password":"longenough","full_name":"{}"}}"#,
        "x".repeat(100 * 1024)
    );
    let over_proxy = format!(
        r#"{{"username":"mal","email":"mal@example.com","password":"longenough","full_name":"{}"}}"#,
        "x".repeat(300 * 1024)
    );
    /// What the case is, method, path, content type ("" for none), body, status.
    type Case<'a> = (&'a str, &'a str, &'a str, &'a str, Vec<u8>, u16);
    let mut cases: Vec<Case> = Vec::new();
    for (method, path) in [
        ("POST", "/api/users"),
        ("PATCH", "/api/users/1"),
        ("POST", "/api/users/1/verify-password"),
        ("PUT", "/api/cache/policy"),
        ("POST", "/api/analysis/benchmark"),
        ("POST", "/graphql"),
        ("POST", "/api/sessions"),
        ("POST", "/api/bugs"),
    ] {
        cases.extend([
            (
                "invalid UTF-8",
                method,
                path,
                "application/json",
                b"{\"username\":\"b\xff\xfe\"}".to_vec(),
                400,
            ),
            (
                "a lone surrogate",
                method,
                path,
                "application/json",
                br#"{"username":"\udc00"}"#.to_vec(),
                400,
            ),
            (
                "not JSON",
                method,
                path,
                "application/json",
                b"username=mal".to_vec(),
                400,
            ),
            (
                "cut-off JSON",
                method,
                path,
                "application/json",
                br#"{"username":"#.to_vec(),
                400,
            ),
            (
                "JSON that is not an object",
                method,
                path,
                "application/json",
                b"[1,2,3]".to_vec(),
                400,
            ),
            (
                "a JSON string",
                method,
                path,
                "application/json",
                br#""{}""#.to_vec(),
                400,
            ),
            (
                "nesting past any parser",
                method,
                path,
                "application/json",
                nested.clone().into_bytes(),
                400,
            ),
            ("text/plain", method, path, "text/plain", user.to_vec(), 415),
            ("no content type", method, path, "", user.to_vec(), 415),
            (
                "a form",
                method,
                path,
                "application/x-www-form-urlencoded",
                b"username=mal&password=longenough".to_vec(),
                415,
            ),
            (
                "multipart",
                method,
                path,
                "multipart/form-data; boundary=x",
                b"--x\r\n\r\nmal\r\n--x--".to_vec(),
                415,
            ),
            (
                "XML",
                method,
                path,
                "application/xml",
                b"<user><username>mal</username></user>".to_vec(),
                415,
            ),
            (
                "past the proxy's body limit",
                method,
                path,
                "application/json",
                over_proxy.clone().into_bytes(),
                413,
            ),
        ]);
    }
    for (method, path) in [
        ("POST", "/api/users"),
        ("PATCH", "/api/users/1"),
        ("POST", "/api/users/1/verify-password"),
        ("PUT", "/api/cache/policy"),
        ("POST", "/api/analysis/benchmark"),
        ("POST", "/graphql"),
    ] {
        cases.extend([
            (
                "past the backend's body limit",
                method,
                path,
                "application/json",
                over_backend.clone().into_bytes(),
                413,
            ),
            (
                "a deep object",
                method,
                path,
                "application/json",
                deep_object.clone().into_bytes(),
                400,
            ),
        ]);
    }
    cases.extend([
        ("a duplicated key", "POST", "/api/users", "application/json", br#"{"username":"mal","username":"ann","email":"mal@example.com","password":"longenough"}"#.to_vec(), 400),
        ("a huge number", "POST", "/api/users", "application/json", br#"{"username":"mal","email":"mal@example.com","password":"longenough","full_name":1e999999}"#.to_vec(), 400),
        ("an unknown field", "PATCH", "/api/users/1", "application/json", br#"{"is_admin":true}"#.to_vec(), 400),
        ("a NUL in a username", "POST", "/api/users", "application/json", br#"{"username":"ma\u0000l","email":"mal@example.com","password":"longenough"}"#.to_vec(), 400),
        ("a NUL in a full name", "PATCH", "/api/users/1", "application/json", br#"{"full_name":"a\u0000b"}"#.to_vec(), 400),
        ("a benchmark past its bound", "POST", "/api/analysis/benchmark", "application/json", br#"{"reads":100000000,"writes":100000000}"#.to_vec(), 400),
        ("a negative benchmark", "POST", "/api/analysis/benchmark", "application/json", br#"{"reads":-1,"writes":1}"#.to_vec(), 400),
        ("a GraphQL batch", "POST", "/graphql", "application/json", br#"[{"query":"{ users { total } }"}]"#.to_vec(), 400),
        ("a query that is not text", "POST", "/graphql", "application/json", br#"{"query":5}"#.to_vec(), 400),
        ("no query", "POST", "/graphql", "application/json", br#"{"variables":{}}"#.to_vec(), 400),
        ("variables that are not an object", "POST", "/graphql", "application/json", br#"{"query":"{ users { total } }","variables":"x"}"#.to_vec(), 400),
        ("a bug report too long", "POST", "/api/bugs", "application/json", format!(r#"{{"title":"t","description":"{}"}}"#, "d".repeat(60_000)).into_bytes(), 400),
    ]);
    let mut failures = Vec::new();
    for (what, method, path, ct, body, status) in cases {
        let r = a
            .request(method, path, &[], Some((ct, body)))
            .await
            .unwrap_or_else(|e| panic!("{what}: {method} {path}: {e}"));
        check(
            &r,
            status,
            &format!("{what}: {method} {path}"),
            &mut failures,
        );
    }

    // GraphQL bombs: refused by the limits before anything runs, in JSON, as a 400.
    let aliases: String = (0..300)
        .map(|i| format!("a{i}: users {{ total }} "))
        .collect();
    let cheap_aliases: String = (0..2500).map(|i| format!("t{i}: __typename ")).collect();
    let deep_introspection = "{ __schema { types { fields { type { ofType { ofType { ofType { ofType { name } } } } } } } } }";
    let mut fragments = String::from("query { ...F0 }\n");
    for i in 0..40 {
        fragments.push_str(&format!(
            "fragment F{i} on Query {{ users {{ total }} ...F{n} ...F{n} }}\n",
            n = i + 1
        ));
    }
    fragments.push_str("fragment F40 on Query { users { total } }\n");
    let cycle = "query { ...A } fragment A on Query { ...B } fragment B on Query { ...A }";
    let braces = format!(
        "{{{}{}",
        "users { items { ".repeat(1_500),
        "}".repeat(3_001)
    );
    let directives: String = (0..2000).map(|_| "@include(if: true) ").collect();
    let directive_bomb = format!("{{ users {directives} {{ total }} }}");
    let bombs: Vec<(&str, String)> = vec![
        ("an alias bomb", format!("{{ {aliases} }}")),
        (
            "an alias bomb of cheap fields",
            format!("{{ {cheap_aliases} }}"),
        ),
        ("deep introspection", deep_introspection.to_owned()),
        ("a fragment bomb", fragments),
        ("a fragment cycle", cycle.to_owned()),
        ("nesting past the parser", braces),
        ("a directive bomb", directive_bomb),
        ("not GraphQL", "SELECT * FROM users".to_owned()),
        ("an unknown field", "{ users { password } }".to_owned()),
        (
            "a mutation hidden in a query",
            "{ deleteUser(id: 1) }".to_owned(),
        ),
        (
            "a subscription",
            "subscription { users { total } }".to_owned(),
        ),
    ];
    for (what, query) in bombs {
        let r = a
            .request(
                "POST",
                "/graphql",
                &[],
                Some(("application/json", gql(&query, json!({})))),
            )
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        check(&r, 400, what, &mut failures);
        let v: Value = serde_json::from_slice(&r.body).unwrap_or_default();
        if !(v["errors"][0]["message"].is_string() && v["data"].is_null()) {
            let v: String = v.to_string().chars().take(300).collect();
            failures.push(format!("{what}: GraphQL's own errors are not kept: {v}"));
        }
    }
    // A variable of the wrong type is refused before the mutation runs.
    let r = a
        .request(
            "POST",
            "/graphql",
            &[],
            Some((
                "application/json",
                gql(
                    "mutation($id: Int!) { deleteUser(id: $id) }",
                    json!({"id": {"$gt": 0}}),
                ),
            )),
        )
        .await
        .unwrap();
    check(&r, 400, "an operator as an Int variable", &mut failures);
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // Still serving, nothing changed, no instance died, no session made or lost.
    assert_eq!(usernames(&a).await, ["ann", "abe"]);
    let r = a
        .request(
            "POST",
            "/graphql",
            &[],
            Some(("application/json", gql("{ users { total } }", json!({})))),
        )
        .await
        .unwrap();
    assert_eq!(
        (r.status, &r.json()["data"]["users"]["total"]),
        (200, &json!(2))
    );
    assert_eq!(db_snapshot(&db).await, before, "the rows are as they were");
    assert_eq!(instance_pids(&up), pids, "no backend instance died");
    assert_eq!(
        up.control.registry.sessions().await.unwrap().len(),
        sessions_before
    );
    up.shutdown().await.unwrap();
}

/// SQL that would do harm if it were ever spliced into a statement, and MongoDB operators
/// written as text: each must be stored and shown exactly as sent, or refused by its field.
const INJECTIONS: &[&str] = &[
    "' OR 1=1 --",
    "' OR '1'='1",
    "\"; DROP TABLE users; --",
    "'; DELETE FROM users; --",
    "Robert'); DROP TABLE users;--",
    "1; UPDATE users SET password='x' --",
    "' UNION SELECT username, password FROM users --",
    "admin'--",
    "x' AND SLEEP(5) AND 'a'='a",
    "'; SELECT pg_sleep(5); --",
    "\\'; DROP TABLE users; --",
    "%' OR '%'='",
    "%_%",
    "!%!_!",
    "`users`",
    "{\"$gt\": \"\"}",
    "{\"$ne\": null}",
    "{\"$where\": \"sleep(5000) || true\"}",
    "$where",
    "'; return true; var x='",
    "{\"$regex\": \".*\"}",
    "ünïcödé ✓ 𝄞",
    "nul\u{0}byte",
];

/// What a session's test stack is called, its choices, and the administrator's URL of its
/// database server (`None`: an embedded SQLite file).
type Target = (&'static str, Value, Option<String>);

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injection_is_stored_as_text_or_refused_on_every_database() {
    let engines = Engines::from_env();
    let dir = temp_dir("hostile-inject");
    let data = dir.join("data");
    let up = start_up_on(&dir, 1, &engines).await;
    let port = up.addrs.edge.port();
    let mut targets: Vec<Target> = vec![(
        "embedded SQLite",
        json!({"password_storage": "plaintext"}),
        None,
    )];
    if let (Some(pg), Some(_)) = (&engines.postgres, &engines.redis) {
        targets.push((
            "shared PostgreSQL + Redis",
            json!({"provisioner": "shared", "database": "postgres", "cache": "redis", "password_storage": "plaintext", "write_policy": "write-through"}),
            Some(pg.clone()),
        ));
    }
    if let (Some(my), Some(_)) = (&engines.mysql, &engines.memcached) {
        targets.push((
            "shared MariaDB + Memcached",
            json!({"provisioner": "shared", "database": "mysql", "cache": "memcached", "password_storage": "plaintext"}),
            Some(my.clone()),
        ));
    }
    let pids = instance_pids(&up);
    let mut failures: Vec<String> = Vec::new();
    for (label, choices, admin_url) in targets {
        let mut b = Browser::new(&data, port);
        let code = new_session(&mut b, choices).await;
        let base1 = new_user(&mut b, "base1").await;
        new_user(&mut b, "base2").await;
        let db = session_db_url(&data, &code, admin_url.as_deref());
        let before = db_snapshot(&db).await;
        let post = |path: &str, body: Value| {
            let b = b.clone();
            let path = path.to_owned();
            async move {
                b.request(
                    "POST",
                    &path,
                    &[],
                    Some(("application/json", body.to_string().into_bytes())),
                )
                .await
                .unwrap()
            }
        };
        let gql_call = |query: &'static str, variables: Value| {
            let b = b.clone();
            async move {
                b.request(
                    "POST",
                    "/graphql",
                    &[],
                    Some(("application/json", gql(query, variables))),
                )
                .await
                .unwrap()
            }
        };
        let mut stored_names: Vec<String> = vec![String::new()];
        for (i, p) in INJECTIONS.iter().enumerate() {
            let what = |field: &str| format!("{label}: {field} = {p:?}");
            let password = format!("pw {p} pw");
            // As a full name and a password: text, kept verbatim (or refused by its field).
            let r = post(
                "/api/users",
                json!({"username": format!("inj{i}"), "email": format!("inj{i}@example.com"),
                       "password": password, "full_name": p}),
            )
            .await;
            if r.status == 201 {
                let u = r.json();
                if u["full_name"] != *p || u["stored_password"] != password.as_str() {
                    failures.push(format!("{}: not stored verbatim: {u}", what("full_name")));
                }
                stored_names.push((*p).to_owned());
                let id = u["id"].as_i64().unwrap();
                let got = b
                    .request("GET", &format!("/api/users/{id}"), &[], None)
                    .await
                    .unwrap();
                if got.status != 200 || got.json()["full_name"] != *p {
                    failures.push(format!(
                        "{}: read back as {}",
                        what("full_name"),
                        got.text()
                    ));
                }
                let ok = post(
                    &format!("/api/users/{id}/verify-password"),
                    json!({"password": password}),
                )
                .await;
                let bad = post(
                    &format!("/api/users/{id}/verify-password"),
                    json!({"password": p}),
                )
                .await;
                if ok.status != 200 || ok.json()["ok"] != true || bad.json()["ok"] != false {
                    failures.push(format!(
                        "{}: verify-password {} / {}",
                        what("password"),
                        ok.text(),
                        bad.text()
                    ));
                }
            } else {
                check(&r, 400, &what("full_name and password"), &mut failures);
            }
            // As a username and in an email address: refused by the field's rules, or kept.
            for (field, body) in [
                (
                    "username",
                    json!({"username": p, "email": format!("u{i}@example.com"), "password": "longenough"}),
                ),
                (
                    "email",
                    json!({"username": format!("em{i}"), "email": format!("{p}@example.com"), "password": "longenough"}),
                ),
            ] {
                let r = post("/api/users", body.clone()).await;
                match r.status {
                    201 => {
                        if r.json()[field] != body[field] {
                            failures.push(format!("{}: stored as {}", what(field), r.text()));
                        }
                    }
                    _ => {
                        check(&r, 400, &what(field), &mut failures);
                        if r.status == 400 && r.field() != field {
                            failures.push(format!("{}: refusal names {}", what(field), r.text()));
                        }
                    }
                }
            }
            // As a search: only rows that hold the text.
            let r = b
                .request(
                    "GET",
                    &format!("/api/users?limit=100&q={}", urlencode(p)),
                    &[],
                    None,
                )
                .await
                .unwrap();
            if r.status == 200 {
                let needle = p.trim().to_lowercase();
                for u in r.json()["items"].as_array().unwrap() {
                    let hay = format!("{} {}", u["username"], u["email"]).to_lowercase();
                    if !hay.contains(&needle) {
                        failures.push(format!("{}: search found {u}", what("q")));
                    }
                }
            } else {
                check(&r, 400, &what("q"), &mut failures);
            }
            // As a change of a full name.
            let r = b
                .request(
                    "PATCH",
                    &format!("/api/users/{}", base1["id"]),
                    &[],
                    Some((
                        "application/json",
                        json!({"full_name": p}).to_string().into_bytes(),
                    )),
                )
                .await
                .unwrap();
            if r.status == 200 {
                if r.json()["full_name"] != *p {
                    failures.push(format!(
                        "{}: patched as {}",
                        what("PATCH full_name"),
                        r.text()
                    ));
                }
            } else {
                check(&r, 400, &what("PATCH full_name"), &mut failures);
            }
            // Through GraphQL, as variables.
            let r = gql_call(
                "mutation($u: String!, $e: String!, $p: String!, $f: String) { createUser(input: {username: $u, email: $e, password: $p, fullName: $f}) { id fullName storedPassword } }",
                json!({"u": format!("gq{i}"), "e": format!("gq{i}@example.com"), "p": password, "f": p}),
            )
            .await;
            let v: Value = serde_json::from_slice(&r.body).unwrap_or_default();
            if r.status != 200
                || (v["data"]["createUser"]["fullName"] != *p
                    && v["errors"][0]["extensions"]["code"] != "invalid")
            {
                failures.push(format!(
                    "{}: GraphQL createUser: {} {}",
                    what("fullName"),
                    r.status,
                    r.text()
                ));
            }
            let r = gql_call(
                "query($q: String) { users(q: $q, limit: 100) { items { username email } } }",
                json!({"q": p}),
            )
            .await;
            let v: Value = serde_json::from_slice(&r.body).unwrap_or_default();
            let needle = p.trim().to_lowercase();
            match v["data"]["users"]["items"].as_array() {
                Some(items) => {
                    for u in items {
                        let hay = format!("{} {}", u["username"], u["email"]).to_lowercase();
                        if !hay.contains(&needle) {
                            failures.push(format!("{}: GraphQL search found {u}", what("q")));
                        }
                    }
                }
                None if v["errors"][0]["extensions"]["code"] == "invalid" => {}
                None => failures.push(format!("{}: GraphQL search: {}", what("q"), r.text())),
            }
        }
        // MongoDB operators as JSON values, where text is expected: refused, never a match.
        for field in ["username", "email", "password", "full_name"] {
            let mut body =
                json!({"username": "opx", "email": "opx@example.com", "password": "longenough"});
            body[field] = json!({"$gt": ""});
            check(
                &post("/api/users", body).await,
                400,
                &format!("{label}: {field} as an operator"),
                &mut failures,
            );
            let r = b
                .request(
                    "PATCH",
                    &format!("/api/users/{}", base1["id"]),
                    &[],
                    Some((
                        "application/json",
                        json!({field: {"$ne": null}}).to_string().into_bytes(),
                    )),
                )
                .await
                .unwrap();
            check(
                &r,
                400,
                &format!("{label}: PATCH {field} as an operator"),
                &mut failures,
            );
        }
        let r = post(
            &format!("/api/users/{}/verify-password", base1["id"]),
            json!({"password": {"$ne": null}}),
        )
        .await;
        check(
            &r,
            400,
            &format!("{label}: verify-password with an operator"),
            &mut failures,
        );
        let r = gql_call(
            "mutation($f: String) { updateUser(id: 1, input: {fullName: $f}) { id } }",
            json!({"f": {"$gt": ""}}),
        )
        .await;
        check(
            &r,
            400,
            &format!("{label}: GraphQL operator variable"),
            &mut failures,
        );
        for path in [
            "/api/users/1%20OR%201=1",
            "/api/users/1;DROP%20TABLE%20users",
            "/api/users?limit=1;DROP%20TABLE%20users",
            "/api/users?offset=-1",
            "/api/users?limit=1e9",
        ] {
            let r = b.request("GET", path, &[], None).await.unwrap();
            check(&r, 400, &format!("{label}: GET {path}"), &mut failures);
        }

        // The rows: the first two as they were (base1's full name aside), every other row new,
        // every full name one of the texts sent, the same tables.
        let after = db_snapshot(&db).await;
        let tables = |s: &[String]| {
            s.iter()
                .filter(|l| l.starts_with("table "))
                .cloned()
                .collect::<Vec<_>>()
        };
        if tables(&after) != tables(&before) {
            failures.push(format!(
                "{label}: tables changed: {:?} → {:?}",
                tables(&before),
                tables(&after)
            ));
        }
        let rows_before: Vec<&String> =
            before.iter().filter(|l| !l.starts_with("table ")).collect();
        let rows_after: Vec<&String> = after.iter().filter(|l| !l.starts_with("table ")).collect();
        if rows_after.len() < rows_before.len() || rows_after[1] != rows_before[1] {
            failures.push(format!("{label}: base2 changed or rows went missing"));
        }
        let cols = |l: &str| l.split('\u{1f}').map(str::to_owned).collect::<Vec<_>>();
        let (b1, a1) = (cols(rows_before[0]), cols(rows_after[0]));
        if b1[..5] != a1[..5] || b1[6] != a1[6] {
            failures.push(format!(
                "{label}: base1 changed beyond its full name: {a1:?}"
            ));
        }
        for row in &rows_after[2..] {
            let c = cols(row);
            if !stored_names.iter().any(|n| n == &c[5]) && !INJECTIONS.contains(&c[5].as_str()) {
                failures.push(format!("{label}: a row not made by this test: {row}"));
            }
        }
        assert_eq!(usernames(&b).await[..2], ["base1", "base2"]);
        let r = b.send("DELETE", "/api/session", None).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(instance_pids(&up), pids, "no backend instance died");
    up.shutdown().await.unwrap();
}

/// A session's stack as control describes it, with the Redis made the session's own (as the
/// docker provisioner's is: the whole server, CONFIG allowed; the shared one refuses policy
/// changes), everything else — the descriptor fetch and the policy report — going to the real
/// control.
#[derive(Debug)]
struct OwnRedis(
    stacklab_backend::sessions::ControlStacks,
    stacklab_types::Secret,
);

#[async_trait::async_trait]
impl stacklab_backend::sessions::StackSource for OwnRedis {
    async fn fetch(
        &self,
        session: &str,
    ) -> Result<Option<stacklab_types::stack::StackDescriptor>, stacklab_backend::error::ApiError>
    {
        let mut d = self.0.fetch(session).await?;
        if let Some(d) = &mut d {
            d.cache.shared = false;
            d.cache.url = self.1.clone();
        }
        Ok(d)
    }
    async fn cache_policy_changed(&self, session: &str, policy: &str) {
        self.0.cache_policy_changed(session, policy).await;
    }
}

/// Issue 22 §16: a policy name in another case or with spaces is applied to Redis, shown and
/// recorded by control under its one canonical name, so the registry and Redis agree; control
/// itself takes canonical names only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_name_is_canonical_in_redis_the_view_and_controls_record() {
    let (Some(pg), Some(redis_url)) = (
        engine("STACKLAB_TEST_POSTGRES_URL"),
        engine("STACKLAB_TEST_REDIS_URL"),
    ) else {
        return;
    };
    let dir = temp_dir("policy-canonical");
    let (pg2, redis2) = (pg.clone(), redis_url.clone());
    let up = start_up(&dir, 1, move |_, c| {
        c.shared.postgres_url = Some(stacklab_types::Secret::new(pg2));
        c.shared.redis_url = Some(stacklab_types::Secret::new(redis2));
    })
    .await;
    let data = dir.join("data");
    let mut b = Browser::new(&data, up.addrs.edge.port());
    let code = new_session(
        &mut b,
        json!({"provisioner": "shared", "database": "postgres", "cache": "redis"}),
    )
    .await;
    let credential = std::fs::read_to_string(data.join("runtime.token")).unwrap();
    let source = OwnRedis(
        stacklab_backend::sessions::ControlStacks::new(
            format!("http://{}", up.addrs.admin),
            stacklab_types::Secret::new(credential.trim()),
        ),
        stacklab_types::Secret::new(redis_url.clone()),
    );
    let app = stacklab_backend::App::new(
        stacklab_backend::config::BackendConfig::default(),
        Arc::new(source),
        stacklab_types::Secret::new("unused-internal-token"),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(stacklab_backend::run(listener, app, stop.clone()));

    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let put = http::Request::put(format!("http://{backend}/api/cache/policy"))
        .header("x-stacklab-session", crate::helpers::id(&code))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            json!({"policy": " ALLKEYS-LFU "}).to_string(),
        )))
        .unwrap();
    let res = client.request(put).await.unwrap();
    let status = res.status();
    let view: Value = serde_json::from_slice(
        &http_body_util::BodyExt::collect(res.into_body())
            .await
            .unwrap()
            .to_bytes(),
    )
    .unwrap();
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["policy"], "allkeys-lfu", "the cache view: {view}");

    let redis = redis::Client::open(redis_url.as_str()).unwrap();
    let mut rc = redis.get_multiplexed_async_connection().await.unwrap();
    let got: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query_async(&mut rc)
        .await
        .unwrap();
    let recorded = stack_of(up.addrs.admin, &code).await;
    let session = b.get("/api/session").await;
    // Control takes canonical names only, from a runtime as from anyone.
    let loose = admin(
        up.addrs.admin,
        "PUT",
        &format!("/admin/stacks/{}/cache-policy", crate::helpers::id(&code)),
        Some(TOKEN),
        Some(json!({"policy": "ALLKEYS-LRU"})),
    )
    .await;
    let after = stack_of(up.addrs.admin, &code).await;
    let _ = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("noeviction")
        .query_async::<()>(&mut rc)
        .await;
    stop.cancel();
    assert_eq!(got[1], "allkeys-lfu", "Redis's own CONFIG GET");
    assert_eq!(
        recorded.json()["cache"]["policy"],
        "allkeys-lfu",
        "control's record"
    );
    assert_eq!(session.json()["stack"]["cache_policy"], "allkeys-lfu");
    assert_eq!((loose.status, loose.field()), (400, "policy".into()));
    assert_eq!(after.json()["cache"]["policy"], "allkeys-lfu", "unchanged");
    let _ = b.send("DELETE", "/api/session", None).await;
    up.shutdown().await.unwrap();
}

/// Issue 22 §6: what a page on another site can make a browser send — a form or `text/plain`
/// body (empty or not), or any body with a foreign `Origin` — never creates, re-provisions or
/// ends a session or files a report; the edge's own origin and `control.allowed_origins` pass,
/// and clients that are not browsers (no `Origin`) pass with JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_requests_are_refused_and_change_nothing() {
    let dir = temp_dir("cross-site");
    let up = start_up(&dir, 1, |_, c| {
        c.allowed_origins = vec!["https://ui.example".into()];
    })
    .await;
    let data = dir.join("data");
    let port = up.addrs.edge.port();
    let own = format!("https://localhost:{port}");
    let live = |up: &stacklab_control::serve::Up| up.control.sessions.len();
    let anon = Browser::new(&data, port);
    let json_ct = "application/json";
    // Creation: forms, text/plain, no content type, a foreign or opaque Origin.
    for (what, headers, ct, body, status) in [
        ("an empty text/plain body", vec![], "text/plain", "", 415),
        ("a text/plain body", vec![], "text/plain", "{}", 415),
        (
            "a form body",
            vec![],
            "application/x-www-form-urlencoded",
            "a=b",
            415,
        ),
        (
            "an empty multipart body",
            vec![],
            "multipart/form-data; boundary=x",
            "",
            415,
        ),
        ("no body and no content type", vec![], "", "", 415),
        (
            "a foreign Origin",
            vec![("origin", "https://evil.example")],
            json_ct,
            "{}",
            403,
        ),
        (
            "an opaque Origin",
            vec![("origin", "null")],
            json_ct,
            "{}",
            403,
        ),
        (
            "a sibling port",
            vec![("origin", "https://localhost:1")],
            json_ct,
            "{}",
            403,
        ),
        (
            "a foreign Origin and a form",
            vec![("origin", "https://evil.example")],
            "text/plain",
            "",
            403,
        ),
    ] {
        let r = anon
            .request(
                "POST",
                "/api/sessions",
                &headers,
                Some((ct, body.as_bytes().to_vec())),
            )
            .await
            .unwrap();
        refused(&r, status, what);
        assert!(r.headers.get("set-cookie").is_none(), "{what}: no cookie");
        assert_eq!(live(&up), 0, "{what}: no session was created");
        if status == 403 {
            assert_eq!(
                (r.code(), r.field()),
                ("cross_origin".into(), "origin".into())
            );
        }
    }
    // The edge's own origin (default port or not), and a configured one, may create.
    let mut b = Browser::new(&data, port);
    let r = b
        .request(
            "POST",
            "/api/sessions",
            &[("origin", own.as_str())],
            Some((json_ct, b"{}".to_vec())),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    let code = r.json()["code"].as_str().unwrap().to_owned();
    b.cookie = Some(code.clone());
    new_user(&mut b, "keepme").await;
    let r = anon
        .request(
            "POST",
            "/api/sessions",
            &[("origin", "https://UI.example:443")],
            Some((json_ct, b"{}".to_vec())),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 201, "a configured origin: {}", r.text());
    assert_eq!(live(&up), 2);
    // With the session's cookie: re-provision, end, report, drill.
    for (what, method, path, headers, ct, body, status) in [
        (
            "re-provision, empty text/plain",
            "POST",
            "/api/session/reprovision",
            vec![],
            "text/plain",
            "",
            415,
        ),
        (
            "re-provision, a form",
            "POST",
            "/api/session/reprovision",
            vec![],
            "application/x-www-form-urlencoded",
            "x=1",
            415,
        ),
        (
            "re-provision, foreign Origin",
            "POST",
            "/api/session/reprovision",
            vec![("origin", "https://evil.example")],
            json_ct,
            "{}",
            403,
        ),
        (
            "end, foreign Origin",
            "DELETE",
            "/api/session",
            vec![("origin", "https://evil.example")],
            "",
            "",
            403,
        ),
        (
            "a bug, text/plain",
            "POST",
            "/api/bugs",
            vec![],
            "text/plain",
            r#"{"title":"t","description":"d"}"#,
            415,
        ),
        (
            "a bug, foreign Origin",
            "POST",
            "/api/bugs",
            vec![("origin", "https://evil.example")],
            json_ct,
            r#"{"title":"t","description":"d"}"#,
            403,
        ),
        (
            "a drill, foreign Origin",
            "DELETE",
            "/api/topology/pools/rust/instances/x",
            vec![("origin", "https://evil.example")],
            "",
            "",
            403,
        ),
        (
            "a new instance, no body",
            "POST",
            "/api/topology/pools/rust/instances",
            vec![],
            "",
            "",
            415,
        ),
    ] {
        let r = b
            .request(method, path, &headers, Some((ct, body.as_bytes().to_vec())))
            .await
            .unwrap();
        refused(&r, status, what);
        let s = b.get("/api/session").await;
        assert_eq!(s.status, 200, "{what}: the session lives on");
        assert_eq!(s.json()["state"], "ready", "{what}: not re-provisioned");
        assert_eq!(
            usernames(&b).await,
            ["keepme"],
            "{what}: the data is as it was"
        );
    }
    let r = admin(up.addrs.admin, "GET", "/admin/bugs", Some(TOKEN), None).await;
    assert_eq!(
        r.json()["bugs"].as_array().unwrap().len(),
        0,
        "no report filed"
    );
    assert_eq!(live(&up), 2);
    let m = up.control.metrics.encode();
    assert!(
        m.contains("stacklab_control_cross_site_refused_total{reason=\"origin\"} 8"),
        "{m}"
    );
    assert!(
        m.contains("stacklab_control_cross_site_refused_total{reason=\"content_type\"} 9"),
        "{m}"
    );
    // The edge's own origin may end the session; a client without Origin may with JSON.
    let r = b
        .request("DELETE", "/api/session", &[("origin", own.as_str())], None)
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(live(&up), 1);
    up.shutdown().await.unwrap();
}

/// One request to a backend instance as the proxy sends it (the session's id in
/// `x-stacklab-session`): status, headers, JSON body.
async fn backend_call(
    addr: std::net::SocketAddr,
    code: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, http::HeaderMap, Value) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("x-stacklab-session", crate::helpers::id(code));
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        )))
        .unwrap();
    let res = tokio::time::timeout(Duration::from_secs(60), client.request(req))
        .await
        .expect("the backend answers within a minute")
        .unwrap();
    let (status, headers) = (res.status().as_u16(), res.headers().clone());
    let bytes = http_body_util::BodyExt::collect(res.into_body())
        .await
        .unwrap()
        .to_bytes();
    let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, headers, v)
}

/// Issue 22 §4: hashing is bounded per instance (a hash that cannot start within
/// `hash_wait_ms` is `503 busy` with `Retry-After`, and the user is not created), a GraphQL
/// request may ask for `graphql_max_hashes` hashes at most (aliases, fragments and password
/// changes through variables counted; refused before anything runs), and benchmarks run one
/// per session (`409 benchmark_running`) and `max_concurrent_benchmarks` per instance
/// (`503 busy`); `GET /healthz` counts each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashing_and_benchmarks_are_bounded_per_instance_and_request() {
    let dir = temp_dir("amplifiers");
    let up = start_up(&dir, 1, |_, _| {}).await;
    let data = dir.join("data");
    let port = up.addrs.edge.port();
    let (mut a, mut b) = (Browser::new(&data, port), Browser::new(&data, port));
    let one = new_session(&mut a, json!({"password_storage": "bcrypt"})).await;
    let two = new_session(&mut b, json!({"password_storage": "argon2id"})).await;
    let credential = std::fs::read_to_string(data.join("runtime.token")).unwrap();
    let source = stacklab_backend::sessions::ControlStacks::new(
        format!("http://{}", up.addrs.admin),
        stacklab_types::Secret::new(credential.trim()),
    );
    let defaults = stacklab_backend::config::BackendConfig::default();
    let config = stacklab_backend::config::BackendConfig {
        limits: stacklab_backend::config::Limits {
            // ~250 ms of CPU per hash: far longer than the wait.
            bcrypt_cost: 12,
            max_concurrent_hashes: 1,
            hash_wait: Duration::from_millis(20),
            graphql_max_hashes: 3,
            max_concurrent_benchmarks: 1,
            ..defaults.limits
        },
        ..defaults
    };
    let app = stacklab_backend::App::new(
        config,
        Arc::new(source),
        stacklab_types::Secret::new("unused-internal-token"),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(stacklab_backend::run(listener, app, stop.clone()));
    let health = || async move {
        let (s, _, v) = backend_call(backend, "", "GET", "/healthz", None).await;
        assert_eq!(s, 200);
        v["limits"].clone()
    };

    let (s, _, v) = backend_call(
        backend,
        &one,
        "POST",
        "/api/users",
        Some(json!({"username": "ann", "email": "ann@example.com", "password": "pw-ann-long"})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_i64().unwrap();
    let graphql = |query: String, variables: Value| {
        let one = one.clone();
        async move {
            backend_call(
                backend,
                &one,
                "POST",
                "/graphql",
                Some(json!({"query": query, "variables": variables})),
            )
            .await
        }
    };

    // Per request: aliases, a fragment and password changes through variables all count.
    let verify = |prefix: &str, n: usize| -> String {
        (0..n)
            .map(|i| format!("{prefix}{i}: verifyPassword(id: {id}, password: \"pw-ann-long\") "))
            .collect()
    };
    let hashed_before = health().await["hashing"]["started"].as_u64().unwrap();
    for (what, query, variables) in [
        ("four aliases", format!("mutation {{ {} }}", verify("v", 4)), json!({})),
        (
            "a fragment",
            format!(
                "mutation {{ {} ...F }} fragment F on Mutation {{ {} }}",
                verify("v", 2),
                verify("w", 2)
            ),
            json!({}),
        ),
        (
            "password changes in variables",
            format!(
                "mutation($i: UpdateUserInput!) {{ {} a: updateUser(id: {id}, input: $i) {{ id }} b: updateUser(id: {id}, input: $i) {{ id }} }}",
                verify("v", 2)
            ),
            json!({"i": {"password": "another-long-one"}}),
        ),
        (
            "an inline password and a sign-up",
            format!(
                "mutation {{ {} u: updateUser(id: {id}, input: {{password: \"another-long-one\"}}) {{ id }} c: createUser(input: {{username: \"bob\", email: \"bob@example.com\", password: \"pw-bob-long\"}}) {{ id }} }}",
                verify("v", 2)
            ),
            json!({}),
        ),
    ] {
        let (s, _, v) = graphql(query, variables).await;
        assert_eq!(s, 400, "{what}: {v}");
        assert_eq!(v["error"]["field"], "query", "{what}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("password hashes"),
            "{what}: {v}"
        );
    }
    let h = health().await;
    assert_eq!(h["hashing"]["started"], hashed_before, "nothing ran: {h}");
    assert_eq!(h["graphql_hashes_refused"], 4, "{h}");
    // At the limit, and updates without a password, run.
    let (s, _, v) = graphql(format!("mutation {{ {} }}", verify("v", 3)), json!({})).await;
    assert_eq!((s, &v["data"]["v2"]), (200, &json!(true)), "{v}");
    let names: String = (0..5)
        .map(|i| format!("n{i}: updateUser(id: {id}, input: {{fullName: \"N {i}\"}}) {{ id }} "))
        .collect();
    let (s, _, v) = graphql(format!("mutation {{ {names} }}"), json!({})).await;
    assert_eq!(s, 200, "{v}");
    assert!(v["errors"].is_null(), "{v}");

    // Per instance: one hash at a time, a 20 ms wait; six sign-ups at once.
    let signups: Vec<_> = (0..6)
        .map(|i| {
            let one = one.clone();
            tokio::spawn(async move {
                backend_call(
                    backend,
                    &one,
                    "POST",
                    "/api/users",
                    Some(json!({"username": format!("burst{i}"), "email": format!("burst{i}@example.com"), "password": "pw-burst-long"})),
                )
                .await
            })
        })
        .collect();
    let (mut created, mut busy) = (0u64, 0u64);
    for t in signups {
        let (s, headers, v) = t.await.unwrap();
        match s {
            201 => created += 1,
            503 => {
                busy += 1;
                assert_eq!(v["error"]["code"], "busy", "{v}");
                assert_eq!(headers["retry-after"], "1");
            }
            _ => panic!("a sign-up answered {s}: {v}"),
        }
    }
    assert!(busy >= 1 && created >= 1, "created {created}, busy {busy}");
    let (_, _, v) = backend_call(backend, &one, "GET", "/api/users?q=burst", None).await;
    assert_eq!(v["total"], created, "a refused sign-up made no row: {v}");
    assert!(health().await["hashing"]["refused"].as_u64().unwrap() >= busy);

    // Benchmarks: one per session, one per instance here.
    let long = {
        let one = one.clone();
        tokio::spawn(async move {
            backend_call(
                backend,
                &one,
                "POST",
                "/api/analysis/benchmark",
                Some(json!({"reads": 2000, "writes": 2000})),
            )
            .await
        })
    };
    eventually("the benchmark runs", || async {
        health().await["benchmarks"]["running"] == 1
    })
    .await;
    let body = Some(json!({"reads": 1, "writes": 1}));
    let (s, _, v) = backend_call(
        backend,
        &one,
        "POST",
        "/api/analysis/benchmark",
        body.clone(),
    )
    .await;
    assert_eq!(
        (s, &v["error"]["code"]),
        (409, &json!("benchmark_running")),
        "{v}"
    );
    let (s, headers, v) = backend_call(
        backend,
        &two,
        "POST",
        "/api/analysis/benchmark",
        body.clone(),
    )
    .await;
    assert_eq!((s, &v["error"]["code"]), (503, &json!("busy")), "{v}");
    assert_eq!(headers["retry-after"], "1");
    let (s, _, v) = long.await.unwrap();
    assert_eq!(s, 200, "{v}");
    let (s, _, v) = backend_call(backend, &two, "POST", "/api/analysis/benchmark", body).await;
    assert_eq!(s, 200, "free again: {v}");
    let h = health().await;
    assert_eq!(
        (
            &h["benchmarks"]["refused_session"],
            &h["benchmarks"]["refused_busy"]
        ),
        (&json!(1), &json!(1)),
        "{h}"
    );
    stop.cancel();
    up.shutdown().await.unwrap();
}

/// Issue 22 §9: a password in GraphQL `variables` — under any variable name, in an input
/// object, in a batch — or inline with an escaped quote or as a block string is masked in the
/// captured requests and in a bug report, as REST's are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graphql_passwords_are_masked_in_captures_and_bug_reports() {
    let dir = temp_dir("gql-mask");
    let up = start_up(&dir, 1, |_, _| {}).await;
    let mut b = Browser::new(&dir.join("data"), up.addrs.edge.port());
    let code = new_session(&mut b, json!({"protocol": "graphql"})).await;
    let user = new_user(&mut b, "ann").await;
    let id = user["id"].as_i64().unwrap();
    let bodies = [
        json!({"query": format!("mutation($p: String!) {{ verifyPassword(id: {id}, password: $p) }}"), "variables": {"p": "secret-one-long"}}),
        json!({"query": format!("mutation($i: UpdateUserInput!) {{ updateUser(id: {id}, input: $i) {{ id }} }}"), "variables": {"i": {"password": "secret-two-long"}}}),
        json!({"query": format!("mutation {{ verifyPassword(id: {id}, password: \"a\\\"secret-three\") }}")}),
        json!({"query": format!("mutation {{ verifyPassword(id: {id}, password: \"\"\"secret-four\"x\"\"\") }}")}),
    ];
    for body in &bodies {
        let r = b.post("/graphql", body.clone()).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let r = b.get("/api/requests?limit=20").await;
    let captured = r.text();
    assert!(captured.contains("/graphql"), "{captured}");
    let r = b
        .post(
            "/api/bugs",
            json!({"title": "login", "description": "verifyPassword says false"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let bugs = admin(up.addrs.admin, "GET", "/admin/bugs", Some(TOKEN), None).await;
    assert_eq!(
        bugs.json()["bugs"][0]["session"],
        crate::helpers::id(&code).as_str()
    );
    for (what, text) in [
        ("captured requests", &captured),
        ("the bug report", &bugs.text()),
    ] {
        assert!(text.contains("********"), "{what}: {text}");
        for secret in ["secret-one", "secret-two", "secret-three", "secret-four"] {
            assert!(!text.contains(secret), "{what} show {secret}: {text}");
        }
    }
    up.shutdown().await.unwrap();
}

/// Issue 22 §5 (part): new sessions per client are a token bucket on control's clock, not a
/// counter per calendar minute — a burst at the end of one minute and another at the start of
/// the next are not twice the limit — and an IPv6 /64 counts as one client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_creation_rate_is_a_bucket_not_a_calendar_minute() {
    let dir = temp_dir("bucket");
    let up = start_up(&dir, 1, |cfg, _| {
        cfg.sessions.max_new_per_client_per_minute = 3;
    })
    .await;
    let anon = Browser::new(&dir.join("data"), up.addrs.edge.port());
    let create = || async {
        anon.request(
            "POST",
            "/api/sessions",
            &[],
            Some(("application/json", b"{}".to_vec())),
        )
        .await
        .unwrap()
    };
    // 1 s before a calendar minute ends: three, then refused.
    let now = up.control.clock.now_ms();
    up.control.clock.advance(MINUTE - now % MINUTE - 1000);
    for _ in 0..3 {
        assert_eq!(create().await.status, 201);
    }
    let r = create().await;
    refused(&r, 429, "a 4th within the minute");
    assert_eq!(r.headers["retry-after"], "20", "one token per 20 s");
    // The calendar minute turns: still refused (a counter per minute would allow three more).
    up.control.clock.advance(2000);
    refused(&create().await, 429, "right after the minute turned");
    // A token comes back every 20 s, one at a time.
    up.control.clock.advance(18_000);
    assert_eq!(create().await.status, 201, "20 s after the burst");
    refused(&create().await, 429, "the one token was used");
    let m = up.control.metrics.encode();
    assert!(
        m.contains("stacklab_control_sessions_rejected_total{reason=\"rate\"} 3"),
        "{m}"
    );
    // Addresses of one IPv6 /64 share a bucket; another /64 and IPv4 have their own.
    use stacklab_control::sessions::client_key;
    assert_eq!(
        client_key("2001:db8:1:2::1"),
        client_key("2001:db8:1:2:ffff:ffff:ffff:ffff")
    );
    assert_ne!(client_key("2001:db8:1:2::1"), client_key("2001:db8:1:3::1"));
    assert_eq!(client_key("::ffff:10.0.0.1"), "10.0.0.1");
    assert_eq!(client_key("10.0.0.1"), "10.0.0.1");
    up.shutdown().await.unwrap();
}

/// Bug reports are bounded: per session, in all, and in time (the reaper removes old ones).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bug_reports_are_capped_per_session_and_in_all_and_expire() {
    let dir = temp_dir("bug-limits");
    let up = start_up(&dir, 1, |_, c| {
        c.bugs.per_session = 2;
        c.bugs.total = 3;
        c.bugs.retention = Duration::from_secs(3600);
    })
    .await;
    let data = dir.join("data");
    let port = up.addrs.edge.port();
    let report = json!({"title": "it broke", "description": "steps to see it"});
    let kept = || async {
        admin(up.addrs.admin, "GET", "/admin/bugs", Some(TOKEN), None)
            .await
            .json()["bugs"]
            .as_array()
            .unwrap()
            .len()
    };
    let mut a = Browser::new(&data, port);
    assert_eq!(a.post("/api/sessions", json!({})).await.status, 201);
    for _ in 0..2 {
        let r = a.post("/api/bugs", report.clone()).await;
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let r = a.post("/api/bugs", report.clone()).await;
    assert_eq!(
        (r.status, r.code()),
        (429, "bug_limit".into()),
        "{}",
        r.text()
    );
    assert!(
        r.text().contains("control.max_bugs_per_session"),
        "{}",
        r.text()
    );
    assert_eq!(kept().await, 2, "nothing stored");

    let mut b = Browser::new(&data, port);
    assert_eq!(b.post("/api/sessions", json!({})).await.status, 201);
    assert_eq!(b.post("/api/bugs", report.clone()).await.status, 201);
    let r = b.post("/api/bugs", report.clone()).await;
    assert_eq!(
        (r.status, r.code()),
        (503, "out_of_capacity".into()),
        "{}",
        r.text()
    );
    assert!(r.text().contains("control.max_bugs"), "{}", r.text());
    assert_eq!(kept().await, 3);

    // Past the retention, the reaper removes them, and reports are taken again.
    up.control.clock.advance(3600 * 1000 + 1);
    up.control.reap_once().await;
    assert_eq!(kept().await, 0);
    let m = up.control.metrics.encode();
    assert!(
        m.contains("stacklab_control_bug_reports_expired_total 3"),
        "{m}"
    );
    assert!(
        m.contains("stacklab_control_bug_reports_refused_total{reason=\"session\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("stacklab_control_bug_reports_refused_total{reason=\"total\"} 1"),
        "{m}"
    );
    let mut c = Browser::new(&data, port);
    assert_eq!(c.post("/api/sessions", json!({})).await.status, 201);
    assert_eq!(c.post("/api/bugs", report).await.status, 201);
    up.shutdown().await.unwrap();
}

/// One address cannot hold more than `control.max_live_per_client` live sessions, and one
/// session cannot be made again more than `control.max_reprovisions_per_session` times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_sessions_per_client_and_reprovisions_are_capped() {
    let dir = temp_dir("client-caps");
    let up = start_up(&dir, 1, |_, c| {
        c.max_live_per_client = 2;
        c.max_reprovisions = 1;
    })
    .await;
    let data = dir.join("data");
    let port = up.addrs.edge.port();
    let mut a = Browser::new(&data, port);
    let mut b = Browser::new(&data, port);
    assert_eq!(a.post("/api/sessions", json!({})).await.status, 201);
    assert_eq!(b.post("/api/sessions", json!({})).await.status, 201);
    let mut c = Browser::new(&data, port);
    let r = c.post("/api/sessions", json!({})).await;
    assert_eq!(
        (r.status, r.code()),
        (429, "too_many_sessions".into()),
        "{}",
        r.text()
    );
    assert!(
        r.text().contains("control.max_live_per_client"),
        "{}",
        r.text()
    );
    assert_eq!(up.control.sessions.len(), 2, "nothing made");
    // Ending one frees a place.
    assert_eq!(b.send_raw("DELETE", "/api/session", None).await.status, 200);
    assert_eq!(c.post("/api/sessions", json!({})).await.status, 201);

    // Re-provisions: one allowed, the next refused, the session untouched.
    let r = a.post("/api/session/reprovision", json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = a.post("/api/session/reprovision", json!({})).await;
    assert_eq!(
        (r.status, r.code()),
        (429, "reprovision_limit".into()),
        "{}",
        r.text()
    );
    assert_eq!(a.get("/api/session").await.json()["state"], "ready");
    let m = up.control.metrics.encode();
    assert!(
        m.contains("stacklab_control_sessions_rejected_total{reason=\"client\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("stacklab_control_sessions_rejected_total{reason=\"reprovisions\"} 1"),
        "{m}"
    );
    up.shutdown().await.unwrap();
}

/// A session holds at most `control.max_event_streams_per_session` event streams; a closed
/// one gives its place back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_per_session_are_capped() {
    let dir = temp_dir("stream-caps");
    let up = start_up(&dir, 1, |_, c| c.max_event_streams = 2).await;
    let mut a = Browser::new(&dir.join("data"), up.addrs.edge.port());
    assert_eq!(a.post("/api/sessions", json!({})).await.status, 201);
    let first = a.open_stream("/api/session/events").await;
    let second = a.open_stream("/api/session/events").await;
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let r = a.get("/api/session/events").await;
    assert_eq!(
        (r.status, r.code()),
        (429, "too_many_streams".into()),
        "{}",
        r.text()
    );
    assert!(
        r.text().contains("control.max_event_streams_per_session"),
        "{}",
        r.text()
    );
    let m = up.control.metrics.encode();
    assert!(m.contains("stacklab_control_event_streams 2"), "{m}");
    assert!(
        m.contains("stacklab_control_event_streams_refused_total 1"),
        "{m}"
    );
    // Both streams are fed by one poller of the session's requests and cache view.
    assert!(m.contains("stacklab_control_event_stream_pollers 1"), "{m}");
    assert_eq!(a.get("/api/users?q=watchmarker").await.status, 200);
    let (mut first, mut second) = (first.into_body(), second.into_body());
    for (name, stream) in [("first", &mut first), ("second", &mut second)] {
        let mut seen = String::new();
        read_until(stream, &mut seen, "watchmarker").await;
        read_until(stream, &mut seen, "event: cache").await;
        assert_eq!(
            seen.matches("watchmarker").count(),
            1,
            "the {name} stream got the request once: {seen}"
        );
    }
    // Another session is not affected, and has a poller of its own.
    let mut b = Browser::new(&dir.join("data"), up.addrs.edge.port());
    assert_eq!(b.post("/api/sessions", json!({})).await.status, 201);
    let other = b.open_stream("/api/session/events").await;
    assert_eq!(other.status().as_u16(), 200);
    assert!(up
        .control
        .metrics
        .encode()
        .contains("stacklab_control_event_stream_pollers 2"));
    // Closing one frees its place (noticed at the stream's next keep-alive line).
    drop(first);
    eventually("a closed stream to give its place back", || async {
        up.control
            .metrics
            .encode()
            .contains("stacklab_control_event_streams 2")
    })
    .await;
    assert_eq!(
        a.open_stream("/api/session/events").await.status().as_u16(),
        200
    );
    drop((second, other));
    // Nobody watches: nothing is polled.
    eventually("the pollers to stop with their last stream", || async {
        up.control
            .metrics
            .encode()
            .contains("stacklab_control_event_stream_pollers 0")
    })
    .await;
    up.shutdown().await.unwrap();
}
