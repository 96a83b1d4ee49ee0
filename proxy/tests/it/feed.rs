//! The proxy following a route feed: snapshot, then changes; kept serving when the feed is
//! lost; resumed with `?since=` when it is back.

use crate::helpers::*;
use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use stacklab_types::routes::{FeedMessage, MemberSpec, PoolSpec, RouteUpdate, SessionRoute};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// A stand-in for control's feed endpoint: each connection gets the lines the test sends.
struct FeedServer {
    addr: std::net::SocketAddr,
    /// Each new connection's `since` query and the sender for its lines.
    conns: mpsc::UnboundedReceiver<(Option<String>, mpsc::Sender<String>)>,
    task: tokio::task::JoinHandle<()>,
}

impl FeedServer {
    async fn start_on(addr: std::net::SocketAddr) -> FeedServer {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, conns) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut set = tokio::task::JoinSet::new();
            loop {
                let (s, _) = listener.accept().await.unwrap();
                let tx = tx.clone();
                set.spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let tx = tx.clone();
                            async move {
                                assert_eq!(
                                    req.headers()["authorization"],
                                    format!("Bearer {TOKEN}")
                                );
                                let since = req
                                    .uri()
                                    .query()
                                    .and_then(|q| q.strip_prefix("since="))
                                    .map(str::to_owned);
                                let (ltx, lrx) = mpsc::channel::<String>(16);
                                let _ = tx.send((since, ltx));
                                let stream =
                                    futures_util::stream::unfold(lrx, |mut rx| async move {
                                        rx.recv().await.map(|l| {
                                            (
                                                Ok::<_, Infallible>(Frame::data(Bytes::from(
                                                    l + "\n",
                                                ))),
                                                rx,
                                            )
                                        })
                                    });
                                Ok::<_, Infallible>(http::Response::new(
                                    StreamBody::new(stream).boxed_unsync(),
                                ))
                            }
                        },
                    );
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        FeedServer { addr, conns, task }
    }
}

fn line(version: u64, update: RouteUpdate) -> String {
    serde_json::to_string(&FeedMessage { version, update }).unwrap()
}

fn pool(members: &[&Backend]) -> PoolSpec {
    PoolSpec {
        name: "rust".into(),
        algorithm: Default::default(),
        protocol: Default::default(),
        members: members
            .iter()
            .map(|b| MemberSpec {
                id: b.id.clone(),
                addr: b.addr.to_string(),
                weight: 1,
                draining: false,
            })
            .collect(),
        health: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_follows_the_feed_and_keeps_serving_without_it() {
    let (b0, b1) = (Backend::start("m0").await, Backend::start("m1").await);
    let mut feed = FeedServer::start_on("127.0.0.1:0".parse().unwrap()).await;
    let feed_addr = feed.addr;
    let toml = format!(
        "[feed]\nurl = \"http://{feed_addr}/admin/routes/feed\"\ntoken = \"{TOKEN}\"\n{}",
        route_toml("/api/", "session_pool = true")
    );
    let p = TestProxy::start("feed", &toml).await;
    let (since, tx) = tokio::time::timeout(Duration::from_secs(20), feed.conns.recv())
        .await
        .expect("the proxy connects to the feed within 20 s")
        .unwrap();
    assert_eq!(since, None, "the first connection asks for a snapshot");
    let session = SessionRoute {
        id: id(SESSION_A),
        pool: "rust".into(),
        member: None,
        transport: None,
    };
    tx.send(line(
        10,
        RouteUpdate::Snapshot {
            pools: vec![pool(&[&b0])],
            sessions: vec![session],
        },
    ))
    .await
    .unwrap();
    let c = client();
    let url = p.plain_url("/api/users");
    let ck = cookie(SESSION_A);
    eventually("the snapshot", || p.proxy.routing.load().version == 10).await;
    assert_eq!(get(&c, &url, &[("cookie", &ck)]).await.member(), "m0");

    // A change: a second member.
    let m1 = MemberSpec {
        id: "m1".into(),
        addr: b1.addr.to_string(),
        weight: 1,
        draining: false,
    };
    tx.send(line(
        11,
        RouteUpdate::PutMember {
            pool: "rust".into(),
            member: m1,
        },
    ))
    .await
    .unwrap();
    eventually("the new member", || {
        p.proxy
            .routing
            .load()
            .pools
            .get("rust")
            .is_some_and(|p| p.members.len() == 2)
    })
    .await;

    // Control goes away: the proxy keeps serving the session from its table.
    let load = Load::start(url.clone(), "GET", vec![("cookie".into(), ck.clone())], 4);
    load.wait_for(50).await;
    drop(tx);
    feed.task.abort();
    let _ = feed.task.await;
    eventually("the feed marked lost", || {
        p.proxy.metrics.feed_connected.get() == 0
    })
    .await;
    load.wait_for(200).await;

    // Control is back on the same address: the proxy resumes from the version it has.
    let mut feed = FeedServer::start_on(feed_addr).await;
    let (since, tx) = tokio::time::timeout(Duration::from_secs(20), feed.conns.recv())
        .await
        .expect("the proxy connects to the feed within 20 s")
        .unwrap();
    assert_eq!(since.as_deref(), Some("11"));
    tx.send(line(12, RouteUpdate::RemoveSession { id: id(SESSION_A) }))
        .await
        .unwrap();
    eventually("the session removed", || {
        p.proxy.routing.load().sessions.is_empty()
    })
    .await;
    let (ok, failed, failures) = load.stop().await;
    // Requests after the removal get 410; before it, none failed.
    let real_failures: Vec<_> = failures.iter().filter(|f| !f.starts_with("410")).collect();
    assert!(real_failures.is_empty(), "{real_failures:?}");
    assert!(ok >= 250 && failed == failures.len() as u64);
    assert_eq!(get(&c, &url, &[("cookie", &ck)]).await.status, 410);
    let _ = Arc::new(Mutex::new(()));
}

/// The proxy's route for `/api/` following `feed`, with `limits` on top.
async fn proxy_on_feed(name: &str, feed: &FeedServer, limits: &str) -> TestProxy {
    let toml = format!(
        "[feed]\nurl = \"http://{}/admin/routes/feed\"\ntoken = \"{TOKEN}\"\n{}\n[limits]\n{limits}\n",
        feed.addr,
        route_toml("/api/", "session_pool = true")
    );
    TestProxy::start(name, &toml).await
}

async fn first_feed_connection(feed: &mut FeedServer) -> mpsc::Sender<String> {
    tokio::time::timeout(Duration::from_secs(20), feed.conns.recv())
        .await
        .expect("the proxy connects to the feed within 20 s")
        .unwrap()
        .1
}

fn session_on(code: &str, pool: &str) -> SessionRoute {
    SessionRoute {
        id: id(code),
        pool: pool.into(),
        member: None,
        transport: None,
    }
}

/// Issue 19: right after a start (or a restart) a proxy following control's feed knows no
/// session until the feed's first table arrives. A live session's request then waits for it
/// (bounded) instead of getting `410 session_expired`, which would make the UI drop the
/// session; a session the table does not have is still told so at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_session_waits_for_the_first_table_instead_of_being_told_it_expired() {
    let b0 = Backend::start("m0").await;
    let mut feed = FeedServer::start_on("127.0.0.1:0".parse().unwrap()).await;
    let p = proxy_on_feed("hold-table", &feed, "").await;
    let tx = first_feed_connection(&mut feed).await;
    let url = p.plain_url("/api/users");
    let waiting = tokio::spawn({
        let url = url.clone();
        async move { get(&client(), &url, &[("cookie", &cookie(SESSION_A))]).await }
    });
    eventually("the request held", || {
        p.proxy.metrics.held_requests.get() == 1
    })
    .await;
    assert!(!waiting.is_finished(), "answered before the table came");
    tx.send(line(
        1,
        RouteUpdate::Snapshot {
            pools: vec![pool(&[&b0])],
            sessions: vec![session_on(SESSION_A, "rust")],
        },
    ))
    .await
    .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("answered once the table came")
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.member(), "m0");
    assert_eq!(p.proxy.metrics.held_requests.get(), 0);
    assert_eq!(
        p.proxy
            .metrics
            .holds
            .with_label_values(&["table", "served"])
            .get(),
        1
    );
    // With the table here, an unknown session is told at once.
    let r = get(&client(), &url, &[("cookie", &cookie(SESSION_B))]).await;
    assert_eq!(r.status, 410, "{}", r.text());
}

/// When the feed's first table does not come within `limits.start_hold_ms`, a session's
/// request gets `503 not_ready` (retry), never `410 session_expired`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_table_a_session_gets_not_ready_never_expired() {
    let mut feed = FeedServer::start_on("127.0.0.1:0".parse().unwrap()).await;
    let p = proxy_on_feed("hold-table-timeout", &feed, "start_hold_ms = 200").await;
    let _tx = first_feed_connection(&mut feed).await;
    let r = get(
        &client(),
        &p.plain_url("/api/users"),
        &[("cookie", &cookie(SESSION_A))],
    )
    .await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "not_ready", "{}", r.text());
    assert!(
        r.text().contains("limits.start_hold_ms"),
        "names the limit: {}",
        r.text()
    );
    assert_eq!(
        p.proxy
            .metrics
            .holds
            .with_label_values(&["table", "timed_out"])
            .get(),
        1
    );
}

/// Issue 19: while control starts a pool's first instances (after a restart, or a runtime
/// started on demand) the pool has no member. Its sessions' requests wait for the first one
/// (bounded by `limits.start_hold_ms`) instead of getting `503 no_healthy_member`; past
/// `limits.max_held_requests` waiting at once, a request is answered at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_waits_for_a_starting_pool_s_first_member() {
    let b0 = Backend::start("m0").await;
    let mut feed = FeedServer::start_on("127.0.0.1:0".parse().unwrap()).await;
    let p = proxy_on_feed("hold-member", &feed, "max_held_requests = 2").await;
    let tx = first_feed_connection(&mut feed).await;
    tx.send(line(
        1,
        RouteUpdate::Snapshot {
            pools: vec![pool(&[])],
            sessions: vec![session_on(SESSION_A, "rust")],
        },
    ))
    .await
    .unwrap();
    eventually("the snapshot", || p.proxy.routing.load().version == 1).await;
    let url = p.plain_url("/api/users");
    let ck = cookie(SESSION_A);
    let waiting: Vec<_> = (0..2)
        .map(|_| {
            let (url, ck) = (url.clone(), ck.clone());
            tokio::spawn(async move { get(&client(), &url, &[("cookie", &ck)]).await })
        })
        .collect();
    eventually("both requests held", || {
        p.proxy.metrics.held_requests.get() == 2
    })
    .await;
    // Every place taken: the third is answered at once, as it would be without holding.
    let r = get(&client(), &url, &[("cookie", &ck)]).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "no_healthy_member");
    assert_eq!(
        p.proxy
            .metrics
            .holds
            .with_label_values(&["member", "refused"])
            .get(),
        1
    );

    tx.send(line(
        2,
        RouteUpdate::PutMember {
            pool: "rust".into(),
            member: MemberSpec {
                id: "m0".into(),
                addr: b0.addr.to_string(),
                weight: 1,
                draining: false,
            },
        },
    ))
    .await
    .unwrap();
    for w in waiting {
        let r = tokio::time::timeout(Duration::from_secs(20), w)
            .await
            .expect("answered once the member came")
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.member(), "m0");
    }
    assert_eq!(p.proxy.metrics.held_requests.get(), 0);
}

/// A pool whose members are all down is not starting: its requests are answered at once
/// (failover shows, nothing waits); and holding ends at `limits.start_hold_ms`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_whose_members_are_down_answers_at_once_and_a_hold_ends_in_time() {
    let b0 = Backend::start("m0").await;
    let mut feed = FeedServer::start_on("127.0.0.1:0".parse().unwrap()).await;
    let p = proxy_on_feed("hold-down", &feed, "start_hold_ms = 200").await;
    let tx = first_feed_connection(&mut feed).await;
    let mut draining = pool(&[&b0]);
    draining.members[0].draining = true;
    draining.name = "down".into();
    tx.send(line(
        1,
        RouteUpdate::Snapshot {
            pools: vec![draining, pool(&[])],
            sessions: vec![session_on(SESSION_A, "down"), session_on(SESSION_B, "rust")],
        },
    ))
    .await
    .unwrap();
    eventually("the snapshot", || p.proxy.routing.load().version == 1).await;
    let url = p.plain_url("/api/users");
    let r = get(&client(), &url, &[("cookie", &cookie(SESSION_A))]).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "no_healthy_member");
    let holds = |outcome: &str| {
        p.proxy
            .metrics
            .holds
            .with_label_values(&["member", outcome])
            .get()
    };
    assert_eq!(
        holds("served") + holds("timed_out") + holds("refused"),
        0,
        "nothing waited"
    );
    // The empty pool never gets a member: the hold ends after start_hold_ms.
    let r = get(&client(), &url, &[("cookie", &cookie(SESSION_B))]).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "no_healthy_member");
    assert_eq!(holds("timed_out"), 1);
}
