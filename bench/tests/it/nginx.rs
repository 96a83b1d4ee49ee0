use crate::{assert_clean, dialer, short, temp_dir, upstream};
use stacklab_bench::load::{self, Protocol};
use stacklab_bench::peers::{self, PeerKind, Setup, StacklabExtra};
use stacklab_bench::{procstat, tls};

/// nginx as `compare` runs it. Without nginx this test fails in CI
/// (`STACKLAB_REQUIRE_SERVICES=1`) and skips, saying so, elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_as_compare_runs_it() {
    let dir = temp_dir("nginx");
    let setup = Setup {
        dir: dir.clone(),
        certs: tls::generate(&dir).unwrap(),
        upstream: upstream().await,
        workers: 2,
        stacklab_bin: dir.join("unused"),
        nofile: 20_000,
        single_process: false,
    };
    if let Err(e) = peers::find(PeerKind::Nginx, &setup) {
        stacklab_testkit::missing(e);
        return;
    }
    let setup2 = setup.clone();
    let running = tokio::task::spawn_blocking(move || {
        peers::start(PeerKind::Nginx, &setup2, &StacklabExtra::default())
    })
    .await
    .unwrap()
    .unwrap();
    assert_clean(
        &load::run(&short(dialer(running.plain, Protocol::H1, None, "/"), 4, 1))
            .await
            .unwrap(),
    );
    let h2 = tls::client_config(&setup.certs.cert, &[b"h2"]).unwrap();
    assert_clean(
        &load::run(&short(
            dialer(running.tls, Protocol::H2, Some(h2), "/"),
            2,
            4,
        ))
        .await
        .unwrap(),
    );
    let s = procstat::sample(running.pid);
    assert_eq!(s.processes, 3, "master and two workers");
    assert!(s.cpu_seconds > 0.0 && s.hwm_bytes > 0);
    tokio::task::spawn_blocking(move || running.stop())
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
