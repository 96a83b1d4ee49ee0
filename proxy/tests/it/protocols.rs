use crate::helpers::*;
use bytes::{Buf, Bytes};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use std::sync::Arc;

async fn session_proxy(name: &str) -> (TestProxy, Backend) {
    let b = Backend::start("m0").await;
    let toml = format!(
        "{}{}{}",
        pool_toml("rust", "round_robin", &[&b]),
        route_toml("/api/", "session_pool = true\ncaptures = true"),
        route_toml("/", "static_files = true")
    );
    let p = TestProxy::start(name, &toml).await;
    admin(
        &p,
        "PUT",
        &format!("/admin/sessions/{}", id(SESSION_A)),
        serde_json::json!({"pool": "rust"}),
    )
    .await;
    (p, b)
}

#[tokio::test]
async fn http1_and_http2_over_tls_are_chosen_by_alpn() {
    let (p, _b) = session_proxy("alpn").await;
    for (alpn, want) in [
        (&b"http/1.1"[..], http::Version::HTTP_11),
        (&b"h2"[..], http::Version::HTTP_2),
    ] {
        let tls = tls_connect(&p, &[alpn]).await;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn));
        drop(tls);
        let req = http::Request::get(format!(
            "https://localhost:{}/api/users",
            p.addrs.edge.port()
        ))
        .header("host", "localhost")
        .header("cookie", cookie(SESSION_A))
        .body(Empty::<Bytes>::new())
        .unwrap();
        let res = tls_request(&p, alpn, req).await.unwrap();
        assert_eq!(res.version(), want);
        assert_eq!(res.status(), 200);
        let alt = res.headers()["alt-svc"].to_str().unwrap().to_owned();
        assert_eq!(alt, format!("h3=\":{}\"; ma=86400", p.addrs.edge.port()));
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let seen: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(seen["headers"]["x-forwarded-proto"], "https");
        assert_eq!(seen["headers"]["host"], "localhost");
    }
    let caps = captured(&p, SESSION_A).await;
    let protocols: Vec<_> = caps
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["protocol"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(protocols, ["h2", "h1"], "newest first, as negotiated");
}

#[tokio::test]
async fn http3_is_served_on_the_same_port_over_udp() {
    let (p, _b) = session_proxy("h3").await;
    assert_eq!(p.addrs.quic.unwrap().port(), p.addrs.edge.port());
    let mut cfg = tls_client_config(&p, &[b"h3"]);
    cfg.enable_early_data = true;
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(cfg).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    let conn = endpoint
        .connect(p.addrs.edge, "localhost")
        .unwrap()
        .await
        .unwrap();
    let (mut driver, mut send) = h3::client::new(h3_quinn::Connection::new(conn))
        .await
        .unwrap();
    let drive = tokio::spawn(async move { std::future::poll_fn(|cx| driver.poll_close(cx)).await });

    let body = r#"{"username":"ann","password":"hunter2"}"#;
    let req = http::Request::post(format!(
        "https://localhost:{}/api/users",
        p.addrs.edge.port()
    ))
    .header("cookie", cookie(SESSION_A))
    .header("content-length", body.len())
    .body(())
    .unwrap();
    let mut stream = send.send_request(req).await.unwrap();
    stream.send_data(Bytes::from(body)).await.unwrap();
    stream.finish().await.unwrap();
    let res = stream.recv_response().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers().get("alt-svc").is_none(),
        "no Alt-Svc on HTTP/3 itself"
    );
    let mut out = Vec::new();
    while let Some(mut chunk) = stream.recv_data().await.unwrap() {
        out.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
    }
    let seen: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["body"], body, "the body crossed QUIC intact");
    assert_eq!(seen["headers"]["x-stacklab-session"], id(SESSION_A));

    let static_req = http::Request::get(format!("https://localhost:{}/", p.addrs.edge.port()))
        .body(())
        .unwrap();
    let mut stream = send.send_request(static_req).await.unwrap();
    stream.finish().await.unwrap();
    assert_eq!(stream.recv_response().await.unwrap().status(), 200);

    let caps = captured(&p, SESSION_A).await;
    assert_eq!(caps[0]["protocol"], "h3");
    drop(send);
    drive.abort();
}

#[tokio::test]
async fn plain_http_redirects_to_https_by_default() {
    let data_dir = temp_dir("redirect");
    let text = base_toml(&data_dir).replace("plain_http = \"serve\"", "plain_http = \"redirect\"");
    let p = TestProxy::start_with_text(data_dir, &text).await;
    let r = get(
        &client(),
        &p.plain_url("/lab?x=1"),
        &[("host", "localhost:8080")],
    )
    .await;
    assert_eq!(r.status, 308);
    assert_eq!(
        r.headers["location"],
        format!("https://localhost:{}/lab?x=1", p.addrs.edge.port())
    );
    assert_edge_headers(&r.headers, false, false, "the redirect");
}

#[tokio::test]
async fn sni_picks_the_certificate_for_the_name() {
    let data_dir = temp_dir("sni");
    let other = rcgen::generate_simple_self_signed(vec!["other.test".to_owned()]).unwrap();
    std::fs::write(data_dir.join("other.crt"), other.cert.pem()).unwrap();
    std::fs::write(
        data_dir.join("other.key"),
        other.signing_key.serialize_pem(),
    )
    .unwrap();
    let local = stacklab_proxy::tls::self_signed(&data_dir).unwrap();
    let text = format!(
        "{}\n[[edge.certificates]]\nserver_names = [\"localhost\"]\ncert = \"{}\"\nkey = \"{}\"\n[[edge.certificates]]\nserver_names = [\"other.test\"]\ncert = \"{}\"\nkey = \"{}\"\n",
        base_toml(&data_dir),
        local.cert.display(),
        local.key.display(),
        data_dir.join("other.crt").display(),
        data_dir.join("other.key").display(),
    );
    let p = TestProxy::start_with_text(data_dir.clone(), &text).await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(other.cert.der().clone()).unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(p.addrs.edge).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("other.test").unwrap(), tcp)
        .await;
    assert!(
        tls.is_ok(),
        "other.test got its own certificate: {:?}",
        tls.err()
    );
    // And localhost still gets the default one.
    let _ = tls_connect(&p, &[b"h2"]).await;
}

#[tokio::test]
async fn websocket_upgrades_pass_through() {
    use futures_util::{SinkExt, StreamExt};
    // A WebSocket echo upstream.
    let ws_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ws_addr = ws_listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = ws_listener.accept().await {
            tokio::spawn(async move {
                let mut ws = tokio_tungstenite::accept_async(s).await.unwrap();
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() || msg.is_binary() {
                        ws.send(msg).await.unwrap();
                    }
                }
            });
        }
    });
    let toml = format!(
        "[[pools]]\nname = \"ws\"\nmembers = [{{ id = \"w\", addr = \"{ws_addr}\" }}]\n{}",
        route_toml("/", "pool = \"ws\"")
    );
    let p = TestProxy::start("ws", &toml).await;
    let (mut ws, res) =
        tokio_tungstenite::connect_async(format!("ws://{}/echo", p.addrs.plain.unwrap()))
            .await
            .unwrap();
    assert_eq!(res.status(), 101);
    for text in ["hello", "through the proxy"] {
        ws.send(tokio_tungstenite::tungstenite::Message::text(text))
            .await
            .unwrap();
        let back = ws.next().await.unwrap().unwrap();
        assert_eq!(back.into_text().unwrap().as_str(), text);
    }
}

#[tokio::test]
async fn streamed_responses_pass_through_unbuffered() {
    let (p, b) = session_proxy("sse").await;
    let req = http::Request::get(p.plain_url("/api/events/sse"))
        .header("cookie", cookie(SESSION_A))
        .body(http_body_util::Full::new(Bytes::new()).boxed_unsync())
        .unwrap();
    let res = client().request(req).await.unwrap();
    let mut body = res.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(
        &first[..],
        b"data: one\n\n",
        "the first event arrived while the upstream still holds the second"
    );
    b.sse_next.notify_one();
    let second = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&second[..], b"data: two\n\n");
}

#[tokio::test]
async fn tls_1_2_clients_are_served_too() {
    let (p, _b) = session_proxy("tls12").await;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(p.cert_path()).unwrap())
        .unwrap();
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS12])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(p.addrs.edge).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let res = send
        .send_request(
            http::Request::get("/")
                .header("host", "localhost")
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn upstreams_can_be_spoken_to_in_h2c() {
    let b = Backend::start("m0").await;
    let toml = format!(
        "[[pools]]\nname = \"h2\"\nprotocol = \"h2c\"\nmembers = [{{ id = \"m0\", addr = \"{}\" }}]\n{}",
        b.addr,
        route_toml("/", "pool = \"h2\"")
    );
    let p = TestProxy::start("h2c", &toml).await;
    let c = client();
    for _ in 0..3 {
        let r = get(&c, &p.plain_url("/x"), &[]).await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.json()["version"],
            "HTTP/2.0",
            "the member was spoken to over HTTP/2"
        );
    }
}

fn assert_edge_headers(h: &http::HeaderMap, secure: bool, ui: bool, what: &str) {
    assert_eq!(h["x-content-type-options"], "nosniff", "{what}");
    assert_eq!(
        h["referrer-policy"], "strict-origin-when-cross-origin",
        "{what}"
    );
    match (secure, h.get("strict-transport-security")) {
        (true, Some(v)) => assert_eq!(v, "max-age=31536000", "{what}"),
        (false, None) => {}
        (_, got) => panic!("{what}: Strict-Transport-Security {got:?} over secure={secure}"),
    }
    match (ui, h.get("content-security-policy")) {
        (true, Some(v)) => {
            let v = v.to_str().unwrap();
            assert!(v.contains("frame-ancestors 'none'"), "{what}: {v}");
            assert!(v.contains("script-src 'self'"), "{what}: {v}");
            assert!(!v.contains("unsafe-inline"), "{what}: {v}");
        }
        (false, None) => {}
        (_, got) => panic!("{what}: Content-Security-Policy {got:?}"),
    }
}

/// Issue 22, item 7: every response of the edge carries the security headers, over every
/// protocol; the UI's files its Content-Security-Policy too.
#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let (p, _b) = session_proxy("sec-headers").await;
    let base = format!("https://localhost:{}", p.addrs.edge.port());
    // (path, cookie, is the UI, what it is)
    let cases = [
        ("/", true, true, "the UI's page"),
        ("/app.js", true, true, "the UI's script"),
        ("/api/users", true, false, "a member's response"),
        ("/api/users", false, false, "the edge's own 401"),
        ("/nope.html", false, false, "a 404 for a static path"),
    ];
    for alpn in [&b"http/1.1"[..], &b"h2"[..]] {
        for (path, with_cookie, ui, what) in cases {
            let mut req = http::Request::get(format!("{base}{path}")).header("host", "localhost");
            if with_cookie {
                req = req.header("cookie", cookie(SESSION_A));
            }
            let req = req.body(Empty::<Bytes>::new()).unwrap();
            let res = tls_request(&p, alpn, req).await.unwrap();
            let what = format!("{what} over {}", String::from_utf8_lossy(alpn));
            let ui = ui && res.status() == 200;
            assert_edge_headers(res.headers(), true, ui, &what);
        }
    }
    // HTTP/3.
    let (mut send, drive) = h3_connect(&p).await;
    for (path, with_cookie, ui, what) in cases {
        let mut req = http::Request::get(format!("{base}{path}"));
        if with_cookie {
            req = req.header("cookie", cookie(SESSION_A));
        }
        let mut stream = send.send_request(req.body(()).unwrap()).await.unwrap();
        stream.finish().await.unwrap();
        let a = h3_answer(&mut stream).await;
        let ui = ui && a.status == 200;
        assert_edge_headers(&a.headers, true, ui, &format!("{what} over h3"));
    }
    drive.abort();
    // Plain HTTP: no Strict-Transport-Security (RFC 6797 §7.2), the rest the same.
    let c = client();
    let a = get(&c, &p.plain_url("/"), &[]).await;
    assert_edge_headers(&a.headers, false, true, "the UI over plain HTTP");
    let a = get(
        &c,
        &p.plain_url("/api/users"),
        &[("cookie", &cookie(SESSION_A))],
    )
    .await;
    assert_edge_headers(
        &a.headers,
        false,
        false,
        "a member's response over plain HTTP",
    );
}

/// Issue 19: the Transport choice changed nothing — every response over TCP advertised
/// HTTP/3, so a session that chose HTTPS was served over h3 once the browser took the offer.
/// The choice rides on the session's route: HTTPS sessions get `Alt-Svc: clear` on every
/// response (over h3 too, so a browser that learnt h3 earlier forgets it), HTTP/3 sessions the
/// `h3` advertisement, and requests without a session (the UI's pages) keep it.
#[tokio::test]
async fn alt_svc_follows_the_sessions_transport_choice() {
    let b = Backend::start("m0").await;
    let toml = format!(
        "{}{}{}",
        pool_toml("rust", "round_robin", &[&b]),
        route_toml("/api/", "session_pool = true"),
        route_toml("/", "static_files = true")
    );
    let p = TestProxy::start("alt-svc", &toml).await;
    for (code, transport) in [(SESSION_A, "https"), (SESSION_B, "h3")] {
        let r = admin(
            &p,
            "PUT",
            &format!("/admin/sessions/{}", id(code)),
            serde_json::json!({"pool": "rust", "transport": transport}),
        )
        .await;
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    let port = p.addrs.edge.port();
    let h3 = format!("h3=\":{port}\"; ma=86400");
    let alt_svc = |h: &http::HeaderMap| {
        h.get_all("alt-svc")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let https_a = cookie(SESSION_A);
    let h3_b = cookie(SESSION_B);
    let cases: [(Option<&str>, &str, Vec<String>); 6] = [
        (Some(&https_a), "/api/users", vec!["clear".into()]),
        (Some(&https_a), "/", vec!["clear".into()]),
        (Some(&h3_b), "/api/users", vec![h3.clone()]),
        (Some(&h3_b), "/", vec![h3.clone()]),
        (None, "/", vec![h3.clone()]),
        (None, "/api/users", vec![h3.clone()]),
    ];
    for alpn in [&b"http/1.1"[..], &b"h2"[..]] {
        for (cookie, path, want) in &cases {
            let mut req = http::Request::get(format!("https://localhost:{port}{path}"))
                .header("host", "localhost");
            if let Some(c) = cookie {
                req = req.header("cookie", *c);
            }
            let req = req.body(Empty::<Bytes>::new()).unwrap();
            let res = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                tls_request(&p, alpn, req),
            )
            .await
            .expect("an answer in time")
            .unwrap();
            let proto = String::from_utf8_lossy(alpn);
            let expected_status = if cookie.is_none() && path.starts_with("/api") {
                401
            } else {
                200
            };
            assert_eq!(res.status(), expected_status, "{proto} {cookie:?} {path}");
            assert_eq!(&alt_svc(res.headers()), want, "{proto} {cookie:?} {path}");
        }
    }
    // Over HTTP/3: the HTTPS session is told to forget h3; the others need no advertisement.
    let (mut send, drive) = h3_connect(&p).await;
    for (cookie, want) in [
        (Some(&https_a), vec!["clear".to_owned()]),
        (Some(&h3_b), vec![]),
        (None, vec![]),
    ] {
        let mut req = http::Request::get(format!("https://localhost:{port}/"));
        if let Some(c) = cookie {
            req = req.header("cookie", c.as_str());
        }
        let mut stream = send.send_request(req.body(()).unwrap()).await.unwrap();
        stream.finish().await.unwrap();
        let a = h3_answer(&mut stream).await;
        assert_eq!(a.status, 200);
        assert_eq!(alt_svc(&a.headers), want, "h3 {cookie:?}");
    }
    drive.abort();
    let sessions = admin(&p, "GET", "/admin/sessions", serde_json::Value::Null)
        .await
        .json();
    let mut seen: Vec<_> = sessions["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["id"].clone(), s["transport"].clone()))
        .collect();
    seen.sort_by_key(|(c, _)| c.to_string());
    let mut want: Vec<(serde_json::Value, serde_json::Value)> = vec![
        (id(SESSION_A).into(), "https".into()),
        (id(SESSION_B).into(), "h3".into()),
    ];
    want.sort_by_key(|(c, _)| c.to_string());
    assert_eq!(seen, want);
}
