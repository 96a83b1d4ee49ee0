//! The upstream every proxy forwards to: as fast and as small as hyper allows.
//!
//! `GET /1mib` answers 1 MiB, sent as sixteen 64 KiB frames of one shared buffer (so the
//! proxy has to stream it, and the upstream does no copying); any other path answers a fixed
//! 13-byte body. HTTP/1.1 with keep-alive, since that is what all three proxies speak to
//! upstreams. The bench runs it as a child process (`stacklab-bench upstream`) so that its
//! CPU time is not mixed with the generator's.

use bytes::Bytes;
use futures_util::stream;
use http::{header, Request, Response};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::OnceLock;
use tokio::net::TcpListener;

/// The small answer.
pub const SMALL_BODY: &[u8] = b"hello, bench\n";
/// Size of the large answer.
pub const LARGE_BYTES: usize = 1 << 20;
/// Frame size of the large answer.
const LARGE_CHUNK: usize = 64 << 10;

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

fn chunk() -> Bytes {
    static CHUNK: OnceLock<Bytes> = OnceLock::new();
    CHUNK
        .get_or_init(|| Bytes::from(vec![b'x'; LARGE_CHUNK]))
        .clone()
}

async fn handle(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let res = if req.uri().path() == "/1mib" {
        let frames =
            (0..LARGE_BYTES / LARGE_CHUNK).map(|_| Ok::<_, Infallible>(Frame::data(chunk())));
        Response::builder()
            .header(header::CONTENT_LENGTH, LARGE_BYTES)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .body(StreamBody::new(stream::iter(frames)).boxed())
    } else {
        Response::builder()
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Full::new(Bytes::from_static(SMALL_BODY)).boxed())
    };
    Ok(res.unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed())))
}

/// Serves until the task is dropped.
pub async fn serve(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), hyper::service::service_fn(handle))
                .await;
        });
    }
}
