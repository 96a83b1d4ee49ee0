//! The body types the proxy moves around.
//!
//! Requests from h1/h2 (hyper's `Incoming`) and h3 (a channel fed from the QUIC stream) are
//! boxed into one [`ReqBody`] so one handler serves all three; responses are a [`RespBody`].

use crate::clock::Clock;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Sleep;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ReqBody = UnsyncBoxBody<Bytes, BoxError>;
pub type RespBody = UnsyncBoxBody<Bytes, BoxError>;

pub fn full(bytes: impl Into<Bytes>) -> RespBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn empty() -> RespBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// A body fed through a channel, for HTTP/3 request bodies read by another task.
#[derive(Debug)]
pub struct ChannelBody {
    rx: mpsc::Receiver<Result<Bytes, BoxError>>,
    size_hint: Option<u64>,
    done: bool,
}

impl ChannelBody {
    pub fn new(rx: mpsc::Receiver<Result<Bytes, BoxError>>, size_hint: Option<u64>) -> Self {
        Self {
            rx,
            size_hint,
            done: false,
        }
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(Ok(b))) => Poll::Ready(Some(Ok(Frame::data(b)))),
            Poll::Ready(Some(Err(e))) => {
                self.done = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.size_hint == Some(0)
    }

    fn size_hint(&self) -> SizeHint {
        match self.size_hint {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

pin_project_lite::pin_project! {
    /// Holds `guard` until the body is finished or dropped: in-flight counts and timings of a
    /// proxied response end when its last byte has gone, not when its head arrived.
    pub struct Guarded<B, G> {
        #[pin]
        inner: B,
        guard: Option<G>,
    }
}

impl<B, G> Guarded<B, G> {
    pub fn new(inner: B, guard: G) -> Self {
        Self {
            inner,
            guard: Some(guard),
        }
    }
}

impl<B: Body, G> Body for Guarded<B, G> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let res = this.inner.poll_frame(cx);
        if let Poll::Ready(None) | Poll::Ready(Some(Err(_))) = res {
            this.guard.take();
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Why a client's request body could not be read. Every variant is the client's side of the
/// exchange: the forwarder finds this type in an upstream error's chain and answers 4xx without
/// charging the member (see [`crate::health`]).
#[derive(Debug, thiserror::Error)]
pub enum ClientBodyError {
    /// More than `limits.max_body_bytes` came.
    #[error("the body is larger than {0} bytes")]
    TooLarge(u64),
    /// The client paused longer than `limits.body_read_timeout_ms` while we waited for it.
    #[error("the client sent nothing of its body for {} ms", .0.as_millis())]
    Timeout(Duration),
    /// The body disagrees with its `content-length` (HTTP/3 checks this here; hyper does it
    /// for HTTP/1.1 and HTTP/2).
    #[error("the body has {received} bytes or more but content-length says {declared}")]
    Length { declared: u64, received: u64 },
    /// The client's stream broke: a malformed chunk, a reset, a connection closed mid-body.
    #[error("{0}")]
    Read(BoxError),
}

impl ClientBodyError {
    /// The client-body error somewhere in `e`'s chain of causes, if there is one.
    pub fn find<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a ClientBodyError> {
        let mut cur: Option<&'a (dyn std::error::Error + 'static)> = Some(e);
        while let Some(err) = cur {
            if let Some(found) = err.downcast_ref::<ClientBodyError>() {
                return Some(found);
            }
            cur = err.source();
        }
        None
    }
}

/// How far a client's body has come, shared between the body (which the upstream client
/// polls) and the forwarder (which times the member's answer from the body's end, not from
/// the first byte sent: a slow client is not a slow member).
#[derive(Debug, Default)]
pub struct BodyProgress {
    /// The body has ended (or failed).
    done: AtomicBool,
    /// The body was polled and is waiting for the client right now.
    waiting: AtomicBool,
    /// [`Clock`] millis of the last piece that came from the client (or of its end).
    last_ms: AtomicU64,
}

impl BodyProgress {
    pub fn done(&self) -> bool {
        self.done.load(Relaxed)
    }

    /// Waiting on the client: its body is not done, and the upstream side wants more of it.
    pub fn waiting_on_client(&self) -> bool {
        !self.done() && self.waiting.load(Relaxed)
    }

    pub fn last_ms(&self) -> u64 {
        self.last_ms.load(Relaxed)
    }

    fn fail<T>(&self, e: ClientBodyError) -> Poll<Option<Result<T, BoxError>>> {
        self.done.store(true, Relaxed);
        self.waiting.store(false, Relaxed);
        Poll::Ready(Some(Err(Box::new(e))))
    }
}

pin_project_lite::pin_project! {
    /// A client's request body as the proxy reads it: ends with a [`ClientBodyError`] once more
    /// than `limit` bytes have come, when the client pauses longer than `timeout` while the
    /// proxy waits for it, or when the client's stream fails. The pause timer runs only while
    /// the body is being waited on (a member that reads slowly is not the client's fault).
    ///
    /// (http-body-util's `Limited` does the size part, but its generic `Into<BoxError>` bound
    /// trips rustc's higher-ranked `Send` check inside our async handler.)
    pub struct ClientBody {
        #[pin]
        inner: ReqBody,
        seen: u64,
        limit: u64,
        timeout: Duration,
        timer: Option<Pin<Box<Sleep>>>,
        clock: Clock,
        progress: Arc<BodyProgress>,
    }
}

impl ClientBody {
    pub fn new(inner: ReqBody, limit: u64, timeout: Duration, clock: Clock) -> Self {
        let progress = Arc::new(BodyProgress::default());
        progress.last_ms.store(clock.now_ms(), Relaxed);
        Self {
            inner,
            seen: 0,
            limit,
            timeout,
            timer: None,
            clock,
            progress,
        }
    }

    pub fn progress(&self) -> Arc<BodyProgress> {
        Arc::clone(&self.progress)
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        if this.progress.done() {
            return Poll::Ready(None);
        }
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                *this.timer = None;
                this.progress.waiting.store(false, Relaxed);
                this.progress.last_ms.store(this.clock.now_ms(), Relaxed);
                if let Some(data) = frame.data_ref() {
                    *this.seen += data.len() as u64;
                    if *this.seen > *this.limit {
                        return this.progress.fail(ClientBodyError::TooLarge(*this.limit));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                // The h3 reader already says what kind of client error it was.
                let e = match e.downcast::<ClientBodyError>() {
                    Ok(known) => *known,
                    Err(other) => ClientBodyError::Read(other),
                };
                this.progress.fail(e)
            }
            Poll::Ready(None) => {
                this.progress.last_ms.store(this.clock.now_ms(), Relaxed);
                this.progress.done.store(true, Relaxed);
                this.progress.waiting.store(false, Relaxed);
                Poll::Ready(None)
            }
            Poll::Pending => {
                this.progress.waiting.store(true, Relaxed);
                let timeout = *this.timeout;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if timer.as_mut().poll(cx).is_ready() {
                    return this.progress.fail(ClientBodyError::Timeout(timeout));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.progress.done() || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
