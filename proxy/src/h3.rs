//! HTTP/3: QUIC connections from quinn, HTTP/3 framing from h3, and the same request handler
//! as HTTP/1.1 and HTTP/2.
//!
//! Each request's body is read from its QUIC stream by a small task into a bounded channel
//! (back-pressure holds), and the response body is written frame by frame as it comes, so
//! streaming answers (SSE) pass through unbuffered. Connections count against the same limits
//! as TCP ones; over the limit, a new QUIC connection is refused at once.
//!
//! **Forged sources.** A QUIC Initial is one UDP datagram, and UDP source addresses can be
//! forged: counting a connection against its address's `limits.max_connections_per_client`
//! before its handshake let anyone lock a victim's address out of the TCP listener too, with
//! handshakes that never finish. So a connection counts against its address only once the
//! address is proven: by a QUIC Retry token (the Initial came back from the address we sent
//! the Retry to) or by a finished handshake. Unproven handshakes share a small budget of their
//! own (`limits.quic_unvalidated_handshakes`, gauge `stacklab_proxy_quic_unvalidated_handshakes`);
//! while it is spent, new ones are answered with a Retry (`stacklab_proxy_quic_retries_total`),
//! which costs a real client one round trip and a forged one everything.

use crate::body::{BoxError, ChannelBody, ClientBodyError};
use crate::edge::{self, ConnInfo};
use crate::server::{ConnLimiter, ConnSlot};
use crate::Proxy;
use bytes::{Buf, Bytes};
use http_body_util::BodyExt;
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;

/// H3_EXCESSIVE_LOAD (RFC 9114 §8.1): the code a connection over the per-client cap is closed
/// with once its handshake has proven its address.
const H3_EXCESSIVE_LOAD: u32 = 0x0107;

pub async fn serve(
    proxy: Arc<Proxy>,
    endpoint: quinn::Endpoint,
    limiter: Arc<ConnLimiter>,
    tracker: TaskTracker,
) {
    let open = proxy.metrics.open_connections.with_label_values(&["h3"]);
    let budget = Arc::new(Semaphore::new(
        proxy.config.load().limits.quic_unvalidated_handshakes,
    ));
    loop {
        let incoming = tokio::select! {
            i = endpoint.accept() => match i { Some(i) => i, None => return },
            () = proxy.shutdown.cancelled() => return,
        };
        let peer = incoming.remote_address();
        let admission = if incoming.remote_address_validated() {
            match limiter.admit(peer.ip()) {
                Ok(slot) => Admission::Counted(slot),
                Err(limit) => {
                    reject(&proxy, limit);
                    incoming.refuse();
                    continue;
                }
            }
        } else {
            match Arc::clone(&budget).try_acquire_owned() {
                Ok(permit) => Admission::Unproven(Unproven::new(&proxy, permit)),
                Err(_) => {
                    proxy.metrics.quic_retries.inc();
                    // Unvalidated means a Retry is allowed; should it not be, refuse.
                    if let Err(e) = incoming.retry() {
                        e.into_incoming().refuse();
                    }
                    continue;
                }
            }
        };
        let (proxy, open, limiter) = (Arc::clone(&proxy), open.clone(), Arc::clone(&limiter));
        tracker.spawn(async move {
            open.inc();
            if let Err(e) = connection(Arc::clone(&proxy), incoming, peer, admission, &limiter).await
            {
                tracing::debug!(client = %peer, error = %e, "HTTP/3 connection ended with an error");
            }
            open.dec();
        });
    }
}

/// Where a new QUIC connection stands against the connection limits.
enum Admission {
    /// Its address is proven and counted.
    Counted(ConnSlot),
    /// Not proven yet: it holds a place in the budget of unproven handshakes.
    Unproven(Unproven),
}

/// A place in the unproven-handshake budget, shown in its gauge while held.
struct Unproven {
    _permit: OwnedSemaphorePermit,
    gauge: prometheus::IntGauge,
}

impl Unproven {
    fn new(proxy: &Proxy, permit: OwnedSemaphorePermit) -> Self {
        let gauge = proxy.metrics.quic_unvalidated.clone();
        gauge.inc();
        Self {
            _permit: permit,
            gauge,
        }
    }
}

impl Drop for Unproven {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

fn reject(proxy: &Proxy, limit: &str) {
    proxy
        .metrics
        .connections_rejected
        .with_label_values(&[limit])
        .inc();
}

async fn connection(
    proxy: Arc<Proxy>,
    incoming: quinn::Incoming,
    peer: std::net::SocketAddr,
    admission: Admission,
    limiter: &Arc<ConnLimiter>,
) -> Result<(), BoxError> {
    let handshake = proxy.config.load().limits.tls_handshake_timeout;
    let conn = tokio::time::timeout(handshake, incoming)
        .await
        .map_err(|_| "QUIC handshake timed out")??;
    // A finished handshake proves the address (the client read what we sent it): only now
    // does an unproven connection count against it.
    let _slot = match admission {
        Admission::Counted(slot) => slot,
        Admission::Unproven(place) => {
            drop(place);
            match limiter.admit(peer.ip()) {
                Ok(slot) => slot,
                Err(limit) => {
                    reject(&proxy, limit);
                    conn.close(
                        quinn::VarInt::from_u32(H3_EXCESSIVE_LOAD),
                        b"too many connections from this address",
                    );
                    return Ok(());
                }
            }
        }
    };
    // Above our own limit, so that `edge` answers an oversized head with the JSON 431 (h3's
    // own answer is a 431 with no body).
    let max_field = proxy.config.load().limits.protocol_header_bytes() as u64;
    let mut h3 = h3::server::builder()
        .max_field_section_size(max_field)
        .build(h3_quinn::Connection::new(conn))
        .await?;
    let info = ConnInfo::new(peer, true, true);
    let requests = TaskTracker::new();
    loop {
        tokio::select! {
            accepted = h3.accept() => match accepted {
                Ok(Some(resolver)) => {
                    let (proxy, info) = (Arc::clone(&proxy), info.clone());
                    requests.spawn(async move {
                        if let Err(e) = request(proxy, resolver, info).await {
                            tracing::debug!(error = %e, "HTTP/3 request failed");
                        }
                    });
                }
                Ok(None) => break,
                Err(e) => {
                    if !e.is_h3_no_error() {
                        tracing::debug!(error = %e, "HTTP/3 connection error");
                    }
                    break;
                }
            },
            () = proxy.shutdown.cancelled() => {
                // GOAWAY: no new requests, the ones in flight finish.
                let _ = h3.shutdown(0).await;
                requests.close();
                requests.wait().await;
                return Ok(());
            }
        }
    }
    requests.close();
    requests.wait().await;
    Ok(())
}

async fn request<C>(
    proxy: Arc<Proxy>,
    resolver: h3::server::RequestResolver<C, Bytes>,
    info: ConnInfo,
) -> Result<(), BoxError>
where
    C: h3::quic::Connection<Bytes>,
    C::BidiStream: h3::quic::BidiStream<Bytes> + Send + 'static,
    <C::BidiStream as h3::quic::BidiStream<Bytes>>::SendStream: Send + 'static,
    <C::BidiStream as h3::quic::BidiStream<Bytes>>::RecvStream: Send + 'static,
{
    let (req, stream) = resolver.resolve_request().await?;
    let (mut send, mut recv) = stream.split();
    let size = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, BoxError>>(8);
    tokio::spawn(async move {
        // RFC 9114 §4.1.2: a request whose DATA frames do not add up to its content-length is
        // malformed. hyper checks this for HTTP/1.1 and HTTP/2; h3 does not, so it is done
        // here, before anything reaches a member (else the member is sent a cut body, or
        // waits for bytes that never come).
        let mut received = 0u64;
        let mismatch = |received| -> BoxError {
            Box::new(ClientBodyError::Length {
                declared: size.unwrap_or_default(),
                received,
            })
        };
        loop {
            let next = tokio::select! {
                next = recv.recv_data() => next,
                () = tx.closed() => {
                    // The request was answered before its body was all read (a 4xx, a
                    // member that did not need the rest): the client may stop sending
                    // (RFC 9114 §4.1.2), and this task need not wait on it.
                    recv.stop_sending(h3::error::Code::H3_NO_ERROR);
                    break;
                }
            };
            match next {
                Ok(Some(mut chunk)) => {
                    let bytes = chunk.copy_to_bytes(chunk.remaining());
                    received += bytes.len() as u64;
                    if size.is_some_and(|declared| received > declared) {
                        let _ = tx.send(Err(mismatch(received))).await;
                        break;
                    }
                    if tx.send(Ok(bytes)).await.is_err() {
                        break;
                    }
                }
                Ok(None) => {
                    if size.is_some_and(|declared| received != declared) {
                        let _ = tx.send(Err(mismatch(received))).await;
                    }
                    break;
                }
                Err(e) => {
                    let _ = tx.send(Err(Box::new(e))).await;
                    break;
                }
            }
        }
    });
    let req = req.map(|()| ChannelBody::new(rx, size).boxed_unsync());
    let response = edge::handle(proxy, info, req).await;
    let (parts, mut body) = response.into_parts();
    send.send_response(http::Response::from_parts(parts, ()))
        .await?;
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        match frame.into_data() {
            Ok(data) => send.send_data(data).await?,
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    send.send_trailers(trailers).await?;
                }
            }
        }
    }
    send.finish().await?;
    Ok(())
}
