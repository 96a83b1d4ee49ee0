//! One accept loop for every listener of stacklab: the edge, the admin API, control's public
//! API and the Rust runtime.
//!
//! Each of them used to carry its own loop, and they had drifted: two spun at full speed on
//! accept errors (out of file descriptors: `accept` fails at once, again and again), drains
//! differed. Here it is written once, in the shape tokio's and hyper's examples give it.
//!
//! # Layout
//! - [`accept_loop`]: accepts until shutdown, backs off on accept errors (50 ms, doubling to
//!   1 s, reset by the next connection), lets the caller admit or refuse each connection
//!   (its limits and their metrics stay the caller's) and runs the admitted ones as tasks of
//!   the caller's [`TaskTracker`], which the caller waits on to drain.
//! - [`serve_http`]: HTTP/1.1 and HTTP/2 (prior knowledge) with one handler over it; at
//!   shutdown each connection gets hyper's graceful shutdown and `drain` to finish.

use hyper::body::{Body, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The first pause after a failed `accept`.
const BACKOFF_FIRST: Duration = Duration::from_millis(50);
/// The longest pause between failed `accept`s.
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Accepts connections on `listener` until `shutdown`. `admit` sees each one with its peer
/// and returns the task that serves it, or `None` to refuse it (the stream is then dropped:
/// counting the refusal is the caller's). Tasks run on `tracker`; this returns as soon as
/// `shutdown` fires, without waiting for them.
pub async fn accept_loop<A, Fut>(
    listener: &TcpListener,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
    mut admit: A,
) where
    A: FnMut(TcpStream, SocketAddr) -> Option<Fut>,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut backoff = BACKOFF_FIRST;
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, pause = ?backoff, "accept failed");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = shutdown.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            },
            () = shutdown.cancelled() => return,
        };
        backoff = BACKOFF_FIRST;
        if let Some(task) = admit(stream, peer) {
            tracker.spawn(task);
        }
    }
}

/// Serves HTTP/1.1 and h2c on `listener` with `handler` until `shutdown`; then each open
/// connection is shut down gracefully (requests in flight finish, `drain` at most). Returns
/// when the listener stops; wait on `tracker` for the connections.
pub async fn serve_http<H, Fut, B>(
    listener: TcpListener,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
    drain: Duration,
    handler: H,
) where
    H: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    serve_http_to(listener, shutdown, tracker, drain, |_| true, handler).await;
}

/// [`serve_http`] for the peers `allow` admits only; others are closed unanswered at once.
pub async fn serve_http_to<A, H, Fut, B>(
    listener: TcpListener,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
    drain: Duration,
    allow: A,
    handler: H,
) where
    A: Fn(SocketAddr) -> bool,
    H: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let builder = Arc::new(hyper_util::server::conn::auto::Builder::new(
        TokioExecutor::new(),
    ));
    let stop = shutdown.clone();
    accept_loop(&listener, &stop, tracker, move |stream, peer| {
        if !allow(peer) {
            return None;
        }
        let _ = stream.set_nodelay(true);
        let (builder, handler, shutdown) =
            (Arc::clone(&builder), handler.clone(), shutdown.clone());
        Some(async move {
            let service = hyper::service::service_fn(move |req| {
                let handler = handler.clone();
                async move { Ok::<_, std::convert::Infallible>(handler(req).await) }
            });
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                () = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(drain, conn.as_mut()).await;
                }
            }
        })
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::Full;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /x HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_until_shutdown_then_drains_a_request_in_flight() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let release = Arc::new(tokio::sync::Notify::new());
        let entered = Arc::new(tokio::sync::Notify::new());
        let (r, e) = (Arc::clone(&release), Arc::clone(&entered));
        let server = {
            let (shutdown, tracker) = (shutdown.clone(), tracker.clone());
            tokio::spawn(async move {
                serve_http(
                    listener,
                    shutdown,
                    &tracker,
                    Duration::from_secs(5),
                    move |req| {
                        let (r, e) = (Arc::clone(&r), Arc::clone(&e));
                        async move {
                            if req.uri().path() == "/x" {
                                e.notify_one();
                                r.notified().await;
                            }
                            Response::new(Full::new(Bytes::from_static(b"done")))
                        }
                    },
                )
                .await
            })
        };
        let client = tokio::spawn(get(addr));
        tokio::time::timeout(Duration::from_secs(5), entered.notified())
            .await
            .expect("the request reached the handler");
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("the listener stops at shutdown")
            .unwrap();
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "no new connection once stopped"
        );
        release.notify_one();
        let answer = tokio::time::timeout(Duration::from_secs(5), client)
            .await
            .unwrap()
            .unwrap();
        assert!(
            answer.ends_with("done"),
            "the request in flight finished: {answer}"
        );
        tracker.close();
        tokio::time::timeout(Duration::from_secs(5), tracker.wait())
            .await
            .expect("drained");
    }

    #[tokio::test]
    async fn only_the_peers_allowed_are_answered() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        // The test's own connections come from 127.0.0.1: allowed, then not.
        let allowed = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let a = Arc::clone(&allowed);
        let server = {
            let (shutdown, tracker) = (shutdown.clone(), tracker.clone());
            tokio::spawn(async move {
                serve_http_to(
                    listener,
                    shutdown,
                    &tracker,
                    Duration::from_secs(1),
                    move |peer| {
                        peer.ip().is_loopback() && a.load(std::sync::atomic::Ordering::SeqCst)
                    },
                    |_req| async { Response::new(Full::new(Bytes::from_static(b"done"))) },
                )
                .await
            })
        };
        let answer = tokio::time::timeout(Duration::from_secs(5), get(addr))
            .await
            .unwrap();
        assert!(answer.ends_with("done"), "{answer}");
        allowed.store(false, std::sync::atomic::Ordering::SeqCst);
        let refused = async {
            let mut s = TcpStream::connect(addr).await.unwrap();
            // The server may close before the request is written: a reset, never an answer.
            let _ = s.write_all(b"GET /x HTTP/1.1\r\nhost: t\r\n\r\n").await;
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out).await;
            out
        };
        let answer = tokio::time::timeout(Duration::from_secs(5), refused)
            .await
            .unwrap();
        assert!(answer.is_empty(), "refused: closed with nothing sent");
        shutdown.cancel();
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_refused_connection_is_dropped_and_the_loop_goes_on() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let looping = {
            let (shutdown, tracker) = (shutdown.clone(), tracker.clone());
            tokio::spawn(async move {
                let mut n = 0;
                accept_loop(&listener, &shutdown, &tracker, move |mut s, _| {
                    n += 1;
                    let tx = tx.clone();
                    (n % 2 == 0).then_some(async move {
                        let _ = s.write_all(b"hi").await;
                        let _ = tx.send(());
                    })
                })
                .await
            })
        };
        let mut first = TcpStream::connect(addr).await.unwrap();
        let mut buf = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(5), first.read_to_end(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0, "the first was refused: closed with nothing sent");
        let mut second = TcpStream::connect(addr).await.unwrap();
        let mut two = [0u8; 2];
        tokio::time::timeout(Duration::from_secs(5), second.read_exact(&mut two))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&two, b"hi");
        rx.recv().await.unwrap();
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), looping)
            .await
            .unwrap()
            .unwrap();
    }
}
