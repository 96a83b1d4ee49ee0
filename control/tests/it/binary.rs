//! The `stacklab` binary as a newcomer runs it: real process, real sockets.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_stacklab"))
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("stacklab-bin-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn check_config_names_every_bad_key() {
    let dir = temp_dir("check");
    let file = dir.join("bad.toml");
    std::fs::write(&file, "[edge]\naddr = \"nowhere\"\n[limits]\nmax_body_bytes = 0\n[[routes]]\npath = \"/\"\npool = \"ghost\"\n").unwrap();
    let out = bin().arg("check-config").arg(&file).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for key in ["edge.addr", "limits.max_body_bytes", "routes[0].pool"] {
        assert!(err.contains(key), "{key} missing from:\n{err}");
    }
    let reference = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/stacklab.toml");
    let out = bin().arg("check-config").arg(reference).output().unwrap();
    assert!(
        out.status.success(),
        "the reference config is valid: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn up_serves_the_web_ui_over_https_with_http3_advertised() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = temp_dir("up");
    let mut child = bin()
        .arg("up")
        .current_dir(&dir)
        .env("STACKLAB_EDGE_ADDR", "127.0.0.1:0")
        .env("STACKLAB_HTTP_ADDR", "127.0.0.1:0")
        .env("STACKLAB_ADMIN_ADDR", "127.0.0.1:0")
        .env("STACKLAB_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let port: u16 = first
        .strip_prefix("stacklab is up: https://localhost:")
        .and_then(|rest| rest.trim_end_matches('/').parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line: {first}"));

    // The self-signed certificate was made in the data dir and verifies for localhost.
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(dir.join("data/tls/self-signed.crt")).unwrap())
        .unwrap();
    let mut cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let res = send
        .send_request(
            http::Request::get(format!("https://localhost:{port}/"))
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.headers()["alt-svc"],
        format!("h3=\":{port}\"; ma=86400").as_str()
    );
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("<title>stacklab"));

    let token = std::fs::read_to_string(dir.join("data/admin.token")).unwrap();
    assert!(token.len() >= 16, "an admin token was generated");

    // SIGTERM: a graceful stop.
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    // Wait off the runtime, so the client side of the HTTP/2 connection can answer GOAWAY.
    let started = std::time::Instant::now();
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "an idle edge stops at once: {:?}",
        started.elapsed()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
