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
    let (since, tx) = feed.conns.recv().await.unwrap();
    assert_eq!(since, None, "the first connection asks for a snapshot");
    let session = SessionRoute {
        code: SESSION_A.into(),
        pool: "rust".into(),
        member: None,
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
    let (since, tx) = feed.conns.recv().await.unwrap();
    assert_eq!(since.as_deref(), Some("11"));
    tx.send(line(
        12,
        RouteUpdate::RemoveSession {
            code: SESSION_A.into(),
        },
    ))
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
