use crate::{assert_clean, dialer, short, upstream};
use stacklab_bench::load::{self, Protocol};
use stacklab_bench::upstream::{LARGE_BYTES, SMALL_BODY};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_counts_every_answer() {
    let up = upstream().await;
    let r = load::run(&short(dialer(up, Protocol::H1, None, "/"), 4, 1))
        .await
        .unwrap();
    assert_clean(&r);
    assert_eq!(r.body_bytes, r.ok * SMALL_BODY.len() as u64);
    let json = serde_json::to_value(&r).unwrap();
    assert!(json["latency_us"]["p99"].as_u64().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_keeps_to_the_rate() {
    let up = upstream().await;
    let mut spec = short(dialer(up, Protocol::H1, None, "/"), 4, 1);
    spec.rate = Some(1000.0);
    spec.duration = Duration::from_millis(500);
    let r = load::run(&spec).await.unwrap();
    assert_clean(&r);
    // 1000/s for 0.5 s: 500 due, all answered (a loose band: this is not a speed test).
    assert!((400..=520).contains(&r.ok), "{} answered", r.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_answers_are_read_whole_and_connections_can_be_new_each_time() {
    let up = upstream().await;
    let r = load::run(&short(dialer(up, Protocol::H1, None, "/1mib"), 2, 1))
        .await
        .unwrap();
    assert_clean(&r);
    assert_eq!(r.body_bytes, r.ok * LARGE_BYTES as u64);

    let mut spec = short(dialer(up, Protocol::H1, None, "/"), 2, 1);
    spec.new_connection_per_request = true;
    assert_clean(&load::run(&spec).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_stay_open() {
    let up = upstream().await;
    let set = load::open_idle(&dialer(up, Protocol::H1, None, "/"), 50, 16).await;
    assert_eq!(set.failed, 0, "{:?}", set.first_error);
    assert_eq!(set.conns.len(), 50);
    assert!(set.conns.iter().all(|c| !c.is_closed()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_listening_is_an_error() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let e = load::run(&short(dialer(addr, Protocol::H1, None, "/"), 2, 1))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no connection"), "{e}");
}
