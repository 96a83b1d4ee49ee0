//! Talking to upstream members: keep-alive connection pools, retries and failover.
//!
//! HTTP/1.1 members are spoken to on connections of our own, kept per member ([`conn`]);
//! h2c members through `hyper-util`'s client. A request goes to the member the pool picks;
//! when that fails it may go to another, under three rules:
//!
//! - a connection that could not be made (nothing was sent) is retried for any method, without
//!   drawing on the retry budget, and ejects the member at once (its port is closed);
//! - a connection that broke before the response began is retried only for idempotent methods
//!   (GET, HEAD, OPTIONS, PUT, DELETE) — POST and PATCH may have been applied;
//! - only bodies the proxy still holds (up to `limits.retry_buffer_bytes`) can be sent again,
//!   and a [`RetryBudget`] keeps retries to a share of traffic so a sick pool is not hammered;
//! - an answer that breaks after its head counts as a broken connection when nothing of it has
//!   gone to the client yet: small answers of declared length are held whole first
//!   ([`hold_small_answer`]), larger ones stream and a break reaches the client as a reset.
//!
//! A member that does not start its answer within `limits.upstream_response_timeout_ms` gives
//! `504` and is not retried: the request may still be running there. That time counts from
//! the end of the client's body (or the member's last read of it), never while the proxy is
//! still waiting for a slow client.
//!
//! Failures of the client's body — too large, a malformed chunk, a content-length it does not
//! keep, a client that resets or closes mid-upload, or one that pauses past
//! `limits.body_read_timeout_ms` — surface here as an upstream error whose cause is a
//! [`ClientBodyError`]. They are answered 4xx and never count against the member.

pub mod conn;

use crate::body::{BodyProgress, BoxError, ClientBodyError, Guarded, ReqBody, RespBody};
use crate::config::{Limits, RetryConfig};
use crate::error::ProxyError;
use crate::health;
use crate::pool::{Member, Pool};
use crate::Proxy;
use bytes::Bytes;
use http::{Method, Request, Response, Uri, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use stacklab_types::routes::UpstreamProtocol;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The shared client for h2c members (HTTP/1.1 members have [`conn`]).
#[derive(Debug, Clone)]
pub struct Upstream {
    h2c: Client<HttpConnector, ReqBody>,
}

impl Upstream {
    pub fn new(limits: &Limits) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(limits.upstream_connect_timeout));
        connector.set_nodelay(true);
        connector.enforce_http(true);
        let mut b = Client::builder(TokioExecutor::new());
        b.pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(limits.upstream_idle_per_member)
            .retry_canceled_requests(true)
            .set_host(false)
            .http2_only(true)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .http2_keep_alive_while_idle(true);
        Self {
            h2c: b.build(connector),
        }
    }

    pub fn h2c(&self) -> &Client<HttpConnector, ReqBody> {
        &self.h2c
    }
}

/// Retries allowed as a share of requests (Finagle's retry budget): each request deposits
/// `ratio` of a token, each retry spends one; `min_per_second` retries are always allowed.
#[derive(Debug)]
pub struct RetryBudget {
    /// Thousandths of a token.
    tokens: AtomicI64,
    deposit: i64,
    cap: i64,
    min_per_second: u64,
    /// (second, retries spent from the free allowance in that second), packed.
    window: AtomicU64,
}

impl RetryBudget {
    pub fn new(cfg: &RetryConfig) -> Self {
        Self {
            tokens: AtomicI64::new(0),
            deposit: (cfg.budget_ratio * 1000.0) as i64,
            // Do not bank more than ~10 s worth of a busy pool's allowance.
            cap: 1000 * 1000,
            min_per_second: u64::from(cfg.min_per_second),
            window: AtomicU64::new(0),
        }
    }

    #[inline]
    pub fn deposit(&self) {
        if self.deposit > 0 && self.tokens.load(Relaxed) < self.cap {
            self.tokens.fetch_add(self.deposit, Relaxed);
        }
    }

    pub fn withdraw(&self, now_ms: u64) -> bool {
        let second = now_ms / 1000;
        let w = self.window.load(Relaxed);
        let (ws, used) = (w >> 20, w & 0xF_FFFF);
        let used = if ws == second { used } else { 0 };
        if used < self.min_per_second
            && self
                .window
                .compare_exchange(w, (second << 20) | (used + 1), Relaxed, Relaxed)
                .is_ok()
        {
            return true;
        }
        if self.tokens.fetch_sub(1000, Relaxed) >= 1000 {
            return true;
        }
        self.tokens.fetch_add(1000, Relaxed);
        false
    }
}

/// A request body as the forwarder holds it.
pub enum OutBody {
    /// Held in full: can be sent again.
    Held(Bytes),
    /// Streamed through: can be sent once. The progress says whether the member's answer is
    /// late or the client's body is.
    Stream(ReqBody, Arc<BodyProgress>),
}

/// The parts of a request the forwarder needs to (re)build it for a member.
pub struct Outgoing {
    pub method: Method,
    pub path_and_query: String,
    pub headers: http::HeaderMap,
    pub body: OutBody,
}

/// What came back, and from whom.
pub struct Forwarded {
    pub response: Response<RespBody>,
    pub member: Arc<Member>,
    /// Time from sending to the response head, on the attempt that answered.
    pub upstream: Duration,
}

/// Keeps a member's in-flight count up while a request (and its response body) is going.
pub struct InFlight(Arc<Member>);

impl InFlight {
    pub fn new(member: &Arc<Member>) -> Self {
        member.in_flight.fetch_add(1, Relaxed);
        Self(Arc::clone(member))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// Sends `out` to a member of `pool` (the pinned one when it can take it), retrying per the
/// rules in the module doc.
pub async fn forward(
    proxy: &Proxy,
    pool: &Arc<Pool>,
    pinned: Option<&str>,
    hash_key: &[u8],
    mut out: Outgoing,
) -> Result<Forwarded, ProxyError> {
    let cfg = proxy.config.load();
    let limits = &cfg.limits;
    // HTTP/1.1 members are spoken to on our own connections ([`conn`]), h2c ones by hyper.
    let upstream = proxy.upstream.load();
    let client = match pool.protocol() {
        UpstreamProtocol::Http1 => None,
        UpstreamProtocol::H2c => Some(upstream.h2c()),
    };
    let pool_name = pool.name();
    proxy.retry_budget.deposit();
    let mut tried = 0u64;
    let mut attempts = 0u32;
    let mut last_err: Option<ProxyError> = None;
    loop {
        attempts += 1;
        let now = proxy.clock.now_ms();
        let pinned_member = pinned.and_then(|id| {
            pool.members
                .iter()
                .enumerate()
                .find(|(i, m)| m.id == id && (*i >= 64 || tried & (1 << i) == 0) && m.eligible(now))
        });
        let Some((idx, member)) =
            pinned_member.or_else(|| pool.pick(hash_key, tried, &proxy.clock))
        else {
            return Err(last_err.unwrap_or_else(|| ProxyError::NoMember {
                pool: pool_name.to_owned(),
            }));
        };
        if idx < 64 {
            tried |= 1 << idx;
        }
        let member = Arc::clone(member);
        // The body for this attempt: a held one is shared (it may be sent again), a
        // streamed one moves (once).
        let (body, progress) = match &mut out.body {
            OutBody::Held(bytes) => (conn::Outgoing::Held(bytes.clone()), None),
            OutBody::Stream(b, progress) => (
                conn::Outgoing::Stream(std::mem::replace(b, crate::body::empty())),
                Some(Arc::clone(progress)),
            ),
        };
        let replayable = progress.is_none();

        let in_flight = InFlight::new(&member);
        member.requests.fetch_add(1, Relaxed);
        let started = Instant::now();
        let attempt = async {
            match client {
                // Ours: the request's task writes and reads the member's connection.
                None => {
                    let home = conn::Home {
                        member: Arc::clone(&member),
                        max_idle: limits.upstream_idle_per_member,
                    };
                    conn::send(
                        &home,
                        &out.method,
                        &out.path_and_query,
                        &out.headers,
                        body,
                        idempotent(&out.method),
                        limits.upstream_connect_timeout,
                    )
                    .await
                    .map(|r| r.map(|b| b.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync()))
                    .map_err(|e| AttemptError::Request {
                        connect: e.is_connect(),
                        error: Box::new(e),
                    })
                }
                // h2c: hyper's client.
                Some(client) => {
                    let uri: Uri = format!("{}{}", member.base_uri, out.path_and_query)
                        .parse()
                        .map_err(|_| AttemptError::BadUri)?;
                    let body = match body {
                        conn::Outgoing::Held(b) => {
                            Full::new(b).map_err(|never| match never {}).boxed_unsync()
                        }
                        conn::Outgoing::Stream(s) => s,
                    };
                    let mut req = Request::new(body);
                    *req.method_mut() = out.method.clone();
                    *req.uri_mut() = uri;
                    *req.version_mut() = Version::HTTP_2;
                    *req.headers_mut() = out.headers.clone();
                    client
                        .request(req)
                        .await
                        .map(|r| {
                            r.map(|b| b.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync())
                        })
                        .map_err(|e| AttemptError::Request {
                            connect: e.is_connect(),
                            error: Box::new(e),
                        })
                }
            }
        };
        let result = answer_in_time(
            proxy,
            attempt,
            limits.upstream_response_timeout,
            progress.as_deref(),
        )
        .await;
        let elapsed = started.elapsed();
        let result = match result {
            Ok(Ok(response)) => {
                match hold_small_answer(response, &out.method, replayable, limits) {
                    Ok(small) => hold(small, limits.upstream_response_timeout).await,
                    Err(streamed) => Ok(Ok(
                        streamed.map(|b| Guarded::new(b, in_flight).boxed_unsync())
                    )),
                }
            }
            Ok(Err(AttemptError::BadUri)) => {
                return Err(ProxyError::BadRequest(
                    "the request path is not a valid URI".into(),
                ))
            }
            Ok(Err(e)) => Ok(Err(e)),
            Err(()) => Err(()),
        };
        match result {
            Ok(Ok(response)) => {
                member.observe_latency(elapsed, proxy.clock.now_ns());
                // An answer, whatever its status: see `health` for why 5xx is no failure.
                health::passive_result(proxy, pool, &member, true);
                let failed = response.status().is_server_error();
                pool.metrics
                    .upstream_duration
                    .observe(elapsed.as_secs_f64());
                if failed {
                    &pool.metrics.server_error
                } else {
                    &pool.metrics.ok
                }
                .inc();
                return Ok(Forwarded {
                    response,
                    member,
                    upstream: elapsed,
                });
            }
            Ok(Err(e)) => {
                if let Some(client_side) = e.client_body() {
                    // The client's body failed (too large, malformed, cut, stalled): the
                    // member did nothing wrong, so its health record does not move.
                    proxy
                        .metrics
                        .upstream_requests
                        .with_label_values(&[pool_name, "client_error"])
                        .inc();
                    return Err(ProxyError::from_client_body(client_side));
                }
                member.failures.fetch_add(1, Relaxed);
                let connect = e.is_connect();
                let cut = matches!(e, AttemptError::Cut(_));
                if connect {
                    health::passive_unreachable(proxy, pool, &member);
                } else {
                    health::passive_result(proxy, pool, &member, false);
                }
                proxy
                    .metrics
                    .upstream_requests
                    .with_label_values(&[
                        pool_name,
                        if connect { "connect_error" } else { "error" },
                    ])
                    .inc();
                let err = if connect {
                    ProxyError::Connect {
                        pool: pool_name.to_owned(),
                        member: member.id.clone(),
                    }
                } else {
                    ProxyError::Upstream {
                        pool: pool_name.to_owned(),
                        member: member.id.clone(),
                        reason: e.to_string(),
                    }
                };
                tracing::debug!(pool = pool_name, member = %member.id, error = %e, "upstream attempt failed");
                let may_retry = replayable
                    && (connect || idempotent(&out.method))
                    && attempts < cfg.retry.max_attempts;
                if !may_retry {
                    return Err(err);
                }
                // A connect failure sent nothing anywhere: retrying it adds no load to any
                // member, so it does not draw on the budget (which guards against retry storms).
                if !connect && !proxy.retry_budget.withdraw(proxy.clock.now_ms()) {
                    proxy
                        .metrics
                        .retries_denied
                        .with_label_values(&[pool_name])
                        .inc();
                    return Err(err);
                }
                proxy
                    .metrics
                    .retries
                    .with_label_values(&[
                        pool_name,
                        match (connect, cut) {
                            (true, _) => "connect",
                            (false, true) => "cut",
                            (false, false) => "reset",
                        },
                    ])
                    .inc();
                last_err = Some(err);
            }
            Err(()) => {
                member.failures.fetch_add(1, Relaxed);
                health::passive_result(proxy, pool, &member, false);
                proxy
                    .metrics
                    .upstream_requests
                    .with_label_values(&[pool_name, "timeout"])
                    .inc();
                return Err(ProxyError::Timeout {
                    pool: pool_name.to_owned(),
                    member: member.id.clone(),
                    ms: limits.upstream_response_timeout.as_millis(),
                });
            }
        }
    }
}

/// Why an attempt got no usable answer.
enum AttemptError {
    /// The request could not be sent or its head did not come back.
    Request { connect: bool, error: BoxError },
    /// The head came, then the connection broke before the (held) body was in.
    Cut(BoxError),
    /// The path and query do not make a URI (only hyper's client needs one).
    BadUri,
}

impl AttemptError {
    fn is_connect(&self) -> bool {
        matches!(self, Self::Request { connect: true, .. })
    }

    fn client_body(&self) -> Option<&ClientBodyError> {
        match self {
            Self::Request { error, .. } => ClientBodyError::find(error.as_ref()),
            Self::Cut(_) | Self::BadUri => None,
        }
    }
}

impl std::fmt::Display for AttemptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Request { error, .. } => f.write_str(&error_chain(error.as_ref())),
            Self::Cut(e) => write!(f, "the answer was cut: {}", error_chain(e.as_ref())),
            Self::BadUri => f.write_str("the request path is not a valid URI"),
        }
    }
}

/// An answer that could still be retried elsewhere if it broke: one to a request the proxy
/// could send again, whose body has a declared length of at most `limits.retry_buffer_bytes`.
/// Such an answer is read whole before its head goes on, so a member that dies mid-answer is
/// retried like one that died before answering (nginx's `proxy_next_upstream` can only do that
/// while nothing has gone to the client). Streams, chunked answers and large bodies go on as
/// they come: holding them would delay them or cost memory without bound.
fn hold_small_answer(
    response: Response<RespBody>,
    method: &Method,
    replayable: bool,
    limits: &Limits,
) -> Result<Response<RespBody>, Response<RespBody>> {
    use hyper::body::Body;
    let small = response
        .body()
        .size_hint()
        .exact()
        .is_some_and(|n| n > 0 && n <= limits.retry_buffer_bytes as u64);
    if small && replayable && idempotent(method) {
        Ok(response)
    } else {
        Err(response)
    }
}

/// Reads a small answer's body whole (`timeout` at most, as for its head).
async fn hold(
    response: Response<RespBody>,
    timeout: Duration,
) -> Result<Result<Response<RespBody>, AttemptError>, ()> {
    let (parts, body) = response.into_parts();
    match tokio::time::timeout(timeout, body.collect()).await {
        Ok(Ok(whole)) => Ok(Ok(Response::from_parts(
            parts,
            crate::body::full(whole.to_bytes()),
        ))),
        Ok(Err(e)) => Ok(Err(AttemptError::Cut(e))),
        Err(_) => Err(()),
    }
}

/// Waits for the member's response head, `timeout` at most once the client's body is in:
/// while a streamed body is still coming (or the proxy is waiting for the client to send more)
/// the clock is the client's, and [`crate::body::ClientBody`]'s own read timeout ends a client
/// that stalls. A member that stops reading the body stalls its progress and so times out.
/// `Err(())` is the member's timeout.
async fn answer_in_time<F: std::future::Future>(
    proxy: &Proxy,
    response: F,
    timeout: Duration,
    progress: Option<&BodyProgress>,
) -> Result<F::Output, ()> {
    tokio::pin!(response);
    let mut deadline = tokio::time::Instant::now() + timeout;
    loop {
        tokio::select! {
            r = &mut response => return Ok(r),
            () = tokio::time::sleep_until(deadline) => {
                let Some(p) = progress else { return Err(()) };
                let now = proxy.clock.now_ms();
                let until = if p.waiting_on_client() {
                    now + timeout.as_millis() as u64
                } else {
                    p.last_ms() + timeout.as_millis() as u64
                };
                if until <= now {
                    return Err(());
                }
                deadline = tokio::time::Instant::now() + Duration::from_millis(until - now);
            }
        }
    }
}

/// An error and its causes on one line.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(err) = cur {
        s.push_str(": ");
        s.push_str(&err.to_string());
        cur = err.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_allows_the_floor_then_a_share() {
        let b = RetryBudget::new(&RetryConfig {
            budget_ratio: 0.1,
            min_per_second: 2,
            max_attempts: 3,
        });
        assert!(b.withdraw(0));
        assert!(b.withdraw(10));
        assert!(!b.withdraw(20), "floor spent, no deposits yet");
        for _ in 0..20 {
            b.deposit();
        }
        assert!(b.withdraw(30));
        assert!(b.withdraw(40));
        assert!(!b.withdraw(50), "20 requests at 10% buy two retries");
        assert!(b.withdraw(1000), "a new second renews the floor");
    }
}
