//! The `stacklab` binary as a newcomer runs it: real process, real sockets.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use stacklab_testkit::temp_dir;
use std::process::{Command, Stdio};
use std::sync::Arc;
use tokio::io::AsyncBufReadExt;

/// How long a `stacklab` process may take to print its address.
const STARTS_WITHIN: std::time::Duration = std::time::Duration::from_secs(60);

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_stacklab"))
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

/// Issue 19: one policy for every section. Before, an unknown key of the proxy's sections was
/// a warning while `[control]`, `[shared]`, `[docker]` and `[backend]` refused one naming only
/// the section; a variable with a bad value was named one way in control and another in the
/// proxy. Now each is an error naming its whole key, or the variable and the key it sets.
#[test]
fn every_section_names_the_key_or_variable_at_fault_unknown_keys_included() {
    let dir = temp_dir("policy");
    let file = dir.join("typo.toml");
    std::fs::write(
        &file,
        "[edge]\nnope = 1\n[control]\nmax_drill_pols = 2\nmax_drill_pools = \"x\"\n\
         [shared]\ninstanse = \"x\"\n[backend]\nmax_sesions = 3\nsession_idle_ms = true\n\
         [docker.engines.redis]\nwarm = 1\nmemroy_mb = 64\n",
    )
    .unwrap();
    // The proxy's sections first: a part whose own sections fail is not read further.
    let out = bin().arg("check-config").arg(&file).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("edge.nope: unknown key"), "{stderr}");

    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, text.replace("nope = 1\n", "")).unwrap();
    // Every section's problems at once (a section's reading stops at its first value that
    // does not fit: the keys after it in the file's order are not looked at).
    let out = bin().arg("check-config").arg(&file).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for key in [
        "control.max_drill_pols: unknown key",
        "control.max_drill_pools: invalid type: string \"x\", expected usize\n",
        "shared.instanse: unknown key",
        "backend.max_sesions: unknown key",
        "backend.session_idle_ms: invalid type",
        "docker.engines.redis.memroy_mb: unknown key",
    ] {
        assert!(stderr.contains(key), "{key} missing from:\n{stderr}");
    }

    let out = bin()
        .arg("check-config")
        .arg(&file)
        .env("STACKLAB_BACKEND_INSTANCES", "many")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let named =
        "STACKLAB_BACKEND_INSTANCES (control.backend_instances): invalid type: string \"many\"";
    assert!(stderr.contains(named), "{stderr}");

    let out = bin()
        .arg("check-config")
        .arg(&file)
        .env("STACKLAB_ADMIN_ADDR", "nowhere")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("STACKLAB_ADMIN_ADDR (admin.addr)"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn up_serves_the_web_ui_over_https_with_http3_advertised() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = temp_dir("up");
    // Killed if the test fails, and every wait on it bounded, so a stuck `up` fails the test.
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_stacklab"))
        .arg("up")
        .current_dir(&dir)
        .env("STACKLAB_EDGE_ADDR", "127.0.0.1:0")
        .env("STACKLAB_HTTP_ADDR", "127.0.0.1:0")
        .env("STACKLAB_ADMIN_ADDR", "127.0.0.1:0")
        .env("STACKLAB_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(STARTS_WITHIN, lines.next_line())
        .await
        .unwrap_or_else(|_| panic!("`up` printed nothing within {STARTS_WITHIN:?}"))
        .unwrap()
        .expect("`up` printed its URL before exiting");
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
        .arg(child.id().expect("still running").to_string())
        .status();
    // An async wait, so the client side of the HTTP/2 connection can answer GOAWAY meanwhile.
    let started = std::time::Instant::now();
    let status = tokio::time::timeout(std::time::Duration::from_secs(20), child.wait())
        .await
        .expect("`up` stopped within 20 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "an idle edge stops at once: {:?}",
        started.elapsed()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `stacklab proxy --upgrade` under load: the new process takes the listening sockets, the old
/// one drains and exits, and no request fails (plain HTTP here; the TLS edge is the same code
/// and `stacklab-bench drill proxy-upgrade` drives it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_replaced_by_a_new_process_under_load_fails_no_request() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
    let dir = temp_dir("upgrade");
    // The upstream: answers 200 to anything.
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up_addr = upstream.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = upstream.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Full::new(Bytes::from_static(b"ok")),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    let config = dir.join("proxy.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n[edge]\naddr = \"127.0.0.1:0\"\nhttp_addr = \"127.0.0.1:0\"\nplain_http = \"serve\"\n[admin]\naddr = \"127.0.0.1:0\"\ntoken = \"upgrade-test-token-0123456789\"\n[[pools]]\nname = \"app\"\nmembers = [{{ id = \"a\", addr = \"{up_addr}\" }}]\n[[routes]]\npath = \"/\"\npool = \"app\"\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    let spawn = |upgrade: bool| {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_stacklab"));
        c.arg("proxy").arg("--config").arg(&config);
        if upgrade {
            c.arg("--upgrade");
        }
        c.env("STACKLAB_LOG", "warn")
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    async fn plain_addr(child: &mut tokio::process::Child) -> std::net::SocketAddr {
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = tokio::time::timeout(STARTS_WITHIN, async {
            while let Some(l) = lines.next_line().await.unwrap() {
                if let Some(a) = l.trim().strip_prefix("plain HTTP on ") {
                    return a.parse().unwrap();
                }
            }
            panic!("the proxy printed no plain HTTP address");
        })
        .await
        .unwrap_or_else(|_| panic!("the proxy printed no address within {STARTS_WITHIN:?}"));
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        addr
    }
    let mut old = spawn(false);
    let addr = plain_addr(&mut old).await;

    // Load: 8 keep-alive connections, GETs and POSTs, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut workers = Vec::new();
    for w in 0..8 {
        let (stop, ok, failed) = (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failed));
        workers.push(tokio::spawn(async move {
            let mut conn: Option<hyper::client::conn::http1::SendRequest<Empty<Bytes>>> = None;
            while !stop.load(Relaxed) {
                let ready = match conn.take() {
                    Some(mut s) => s.ready().await.is_ok().then_some(s),
                    None => None,
                };
                let mut send = match ready {
                    Some(s) => s,
                    None => {
                        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
                        let (s, c) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                            .await
                            .unwrap();
                        tokio::spawn(c);
                        s
                    }
                };
                let req = hyper::Request::builder()
                    .method(if w % 4 == 0 { "POST" } else { "GET" })
                    .uri("/x")
                    .header("host", "localhost")
                    .body(Empty::new())
                    .unwrap();
                match send.send_request(req).await {
                    Ok(res) if res.status() == 200 => {
                        let close = res
                            .headers()
                            .get("connection")
                            .is_some_and(|v| v == "close");
                        let _ = res.into_body().collect().await;
                        ok.fetch_add(1, Relaxed);
                        if !close {
                            conn = Some(send);
                        }
                    }
                    other => {
                        failed.fetch_add(1, Relaxed);
                        eprintln!("failed: {other:?}");
                    }
                }
            }
        }));
    }
    // Bounded: a proxy that stops serving fails the test instead of hanging it.
    let wait_for = |n: u64| {
        let ok = Arc::clone(&ok);
        async move {
            let what = format!("{n} requests answered");
            crate::helpers::eventually(&what, || {
                let ok = Arc::clone(&ok);
                async move { ok.load(Relaxed) >= n }
            })
            .await;
        }
    };
    wait_for(200).await;
    let mut new = spawn(true);
    let new_addr = plain_addr(&mut new).await;
    assert_eq!(new_addr, addr, "the same socket, handed over");
    let status = tokio::time::timeout(std::time::Duration::from_secs(20), old.wait())
        .await
        .expect("the old process exits once drained")
        .unwrap();
    assert!(status.success(), "{status}");
    let after = ok.load(Relaxed);
    wait_for(after + 200).await; // served by the new process alone
    stop.store(true, Relaxed);
    for w in workers {
        tokio::time::timeout(std::time::Duration::from_secs(20), w)
            .await
            .expect("every load worker ends within 20 s of being told to stop")
            .unwrap();
    }
    assert_eq!(
        failed.load(Relaxed),
        0,
        "no request failed across the upgrade"
    );
    assert!(
        new.try_wait().unwrap().is_none(),
        "the new process serves on"
    );
    let _ = new.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
}
