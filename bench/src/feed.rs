//! A route feed that hands the proxy a table of many sessions in one snapshot.
//!
//! The routing scenario needs 100k live sessions in stacklab's route table. Rather than add
//! anything to the proxy, or send 100k `PUT /admin/sessions/{id}` calls, the bench serves
//! the same route feed control serves (newline-delimited JSON, a snapshot first) and points
//! the proxy's `[feed] url` at it. The proxy applies the snapshot atomically; the connection
//! then stays open with nothing more to say.

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Request, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use stacklab_types::routes::{
    Algorithm, FeedMessage, MemberSpec, PoolSpec, RouteUpdate, SessionRoute, UpstreamProtocol,
};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The session code of session `i`: 26 characters, like control's codes.
pub fn code(i: usize) -> String {
    format!("BENCH{i:021}")
}

/// The feed's snapshot: pool `up` with one member, and `sessions` sessions routed to it.
pub fn snapshot(upstream: SocketAddr, sessions: usize) -> Bytes {
    let msg = FeedMessage {
        version: 1,
        update: RouteUpdate::Snapshot {
            pools: vec![PoolSpec {
                name: "up".into(),
                algorithm: Algorithm::RoundRobin,
                protocol: UpstreamProtocol::default(),
                members: vec![MemberSpec {
                    id: "u1".into(),
                    addr: upstream.to_string(),
                    weight: 1,
                    draining: false,
                }],
                health: None,
            }],
            sessions: (0..sessions)
                .map(|i| SessionRoute {
                    id: stacklab_types::session::id(&code(i)),
                    pool: "up".into(),
                    member: None,
                    transport: None,
                })
                .collect(),
        },
    };
    let mut line = serde_json::to_vec(&msg).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

/// Serves `snapshot` to every feed request on a loopback port; returns the feed's URL.
pub async fn serve(snapshot: Bytes) -> std::io::Result<(String, JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/admin/routes/feed", listener.local_addr()?);
    let snapshot = Arc::new(snapshot);
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let snapshot = Arc::clone(&snapshot);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req: Request<Incoming>| {
                    let first = futures_util::stream::once(std::future::ready(
                        Ok::<_, Infallible>(Frame::data((*snapshot).clone())),
                    ));
                    let body = BodyExt::boxed(StreamBody::new(
                        first.chain(futures_util::stream::pending()),
                    ));
                    async move {
                        Ok::<_, Infallible>(
                            Response::builder()
                                .header("content-type", "application/x-ndjson")
                                .body(body)
                                .unwrap_or_else(|_| {
                                    Response::new(BodyExt::boxed(StreamBody::new(
                                        futures_util::stream::pending(),
                                    )))
                                }),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok((url, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_look_like_session_codes() {
        let c = code(99_999);
        assert_eq!(c.len(), 26);
        assert!(c.bytes().all(|b| b.is_ascii_alphanumeric()));
    }

    #[test]
    fn snapshot_is_one_feed_line() {
        let s = snapshot("127.0.0.1:1".parse().unwrap(), 3);
        assert_eq!(s.iter().filter(|&&b| b == b'\n').count(), 1);
        let msg: FeedMessage = serde_json::from_slice(&s[..s.len() - 1]).unwrap();
        match msg.update {
            RouteUpdate::Snapshot { pools, sessions } => {
                assert_eq!(pools.len(), 1);
                assert_eq!(sessions.len(), 3);
            }
            other => panic!("not a snapshot: {other:?}"),
        }
    }
}
