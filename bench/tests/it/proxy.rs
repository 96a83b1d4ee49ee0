use crate::{assert_clean, dialer, short, temp_dir, upstream};
use stacklab_bench::load::{self, Protocol};
use stacklab_bench::{feed, tls};
use stacklab_proxy::config::Config;
use stacklab_proxy::Server;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

struct Proxy {
    plain: SocketAddr,
    edge: SocketAddr,
    cert: std::path::PathBuf,
    proxy: std::sync::Arc<stacklab_proxy::Proxy>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.proxy.shutdown.cancel();
    }
}

async fn start(name: &str, up: SocketAddr, extra: &str) -> Proxy {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = temp_dir(name);
    let certs = tls::generate(&dir).unwrap();
    let text = format!(
        r#"
data_dir = "{dir}"
[log]
access_log = false
[edge]
addr = "127.0.0.1:0"
http_addr = "127.0.0.1:0"
plain_http = "serve"
http3 = true
[[edge.certificates]]
server_names = ["localhost"]
cert = "{cert}"
key = "{key}"
[admin]
addr = "127.0.0.1:0"
token = "0123456789abcdef0123"
[[pools]]
name = "up"
algorithm = "round_robin"
members = [{{ id = "u1", addr = "{up}" }}]
[[routes]]
path = "/"
pool = "up"
{extra}
"#,
        dir = dir.display(),
        cert = certs.cert.display(),
        key = certs.key.display(),
    );
    let path = dir.join("stacklab.toml");
    std::fs::write(&path, text).unwrap();
    let cfg = Config::load(Some(&path), &BTreeMap::new()).unwrap_or_else(|r| panic!("{r}"));
    let server = Server::bind(cfg).await.unwrap();
    let addrs = server.addrs();
    let proxy = std::sync::Arc::clone(&server.proxy);
    tokio::spawn(server.run());
    Proxy {
        plain: addrs.plain.unwrap(),
        edge: addrs.edge,
        cert: certs.cert,
        proxy,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_three_protocols_through_stacklab() {
    let up = upstream().await;
    let p = start("protocols", up, "").await;
    assert_clean(
        &load::run(&short(dialer(p.plain, Protocol::H1, None, "/"), 4, 1))
            .await
            .unwrap(),
    );

    let h2 = tls::client_config(&p.cert, &[b"h2"]).unwrap();
    let r = load::run(&short(dialer(p.edge, Protocol::H2, Some(h2), "/"), 2, 4))
        .await
        .unwrap();
    assert_clean(&r);
    assert_eq!(r.streams, 4);

    let h3 = tls::client_config(&p.cert, &[b"h3"]).unwrap();
    assert_clean(
        &load::run(&short(dialer(p.edge, Protocol::H3, Some(h3), "/"), 2, 4))
            .await
            .unwrap(),
    );

    let h1 = tls::client_config(&p.cert, &[b"http/1.1"]).unwrap();
    let mut spec = short(dialer(p.edge, Protocol::H1, Some(h1), "/"), 2, 1);
    spec.new_connection_per_request = true;
    assert_clean(&load::run(&spec).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_come_from_the_bench_feed() {
    let up = upstream().await;
    let (url, _task) = feed::serve(feed::snapshot(up, 1000)).await.unwrap();
    let extra = format!(
        "[[routes]]\npath = \"/api/\"\nsession_pool = true\n[feed]\nurl = \"{url}\"\ntoken = \"0123456789abcdef0123\"\n"
    );
    let p = start("sessions", up, &extra).await;
    let cookie = format!("cookie: stacklab_session={}\r\n", feed::code(999));
    let mut routed = false;
    for _ in 0..100 {
        let plain = p.plain;
        let c = cookie.clone();
        if tokio::task::spawn_blocking(move || stacklab_bench::peers::probe(plain, "/api/x", &c))
            .await
            .unwrap()
        {
            routed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(routed, "the feed's sessions never routed");
    let d = load::dialer(
        p.plain,
        Protocol::H1,
        None,
        "localhost",
        "/api/x",
        &[(
            "cookie".into(),
            format!("stacklab_session={}", feed::code(5)),
        )],
    )
    .unwrap();
    assert_clean(&load::run(&short(d, 2, 1)).await.unwrap());
}
