//! The body types the proxy moves around.
//!
//! Requests from h1/h2 (hyper's `Incoming`) and h3 (a channel fed from the QUIC stream) are
//! boxed into one [`ReqBody`] so one handler serves all three; responses are a [`RespBody`].

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty, Full};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

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

/// The request body was larger than `limits.max_body_bytes`.
#[derive(Debug, thiserror::Error)]
#[error("the body is larger than {0} bytes")]
pub struct BodyLimitExceeded(pub u64);

pin_project_lite::pin_project! {
    /// Ends a body with [`BodyLimitExceeded`] once more than `limit` bytes have come.
    ///
    /// (http-body-util's `Limited` does the same, but its generic `Into<BoxError>` bound trips
    /// rustc's higher-ranked `Send` check inside our async handler.)
    pub struct Limit {
        #[pin]
        inner: ReqBody,
        seen: u64,
        limit: u64,
    }
}

impl Limit {
    pub fn new(inner: ReqBody, limit: u64) -> Self {
        Self {
            inner,
            seen: 0,
            limit,
        }
    }
}

impl Body for Limit {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    *this.seen += data.len() as u64;
                    if *this.seen > *this.limit {
                        return Poll::Ready(Some(Err(Box::new(BodyLimitExceeded(*this.limit)))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
