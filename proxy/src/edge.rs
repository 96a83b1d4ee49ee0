//! The request path: one handler for HTTP/1.1, HTTP/2 and HTTP/3.
//!
//! ```text
//! request ─▶ header size ─▶ route (host, path, method) ─▶ session check ─▶ static files
//!                                                          (401 / 410)   └▶ pool: rewrite headers,
//!                                                                            hold or stream body,
//!                                                                            forward with retries
//! response ◀─ Server-Timing, x-request-id, Alt-Svc ◀─ metrics, access log, capture ◀─┘
//! ```
//!
//! Everything the handler needs was prepared when the table was built: it loads the table
//! once, without a lock, and reads from it.

use crate::body::{ClientBody, ClientBodyError, ReqBody, RespBody};
use crate::capture::{self, Captured};
use crate::config::{Config, RouteTarget, SecurityHeaders};
use crate::error::ProxyError;
use crate::session::{self, CookieSession};
use crate::table::{Route, SessionEntry};
use crate::upstream::{self, OutBody, Outgoing};
use crate::Proxy;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use stacklab_types::routes::Transport;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The protocol a request came over, as an index into [`crate::metrics::PROTOCOLS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    H1 = 0,
    H2 = 1,
    H3 = 2,
}

impl ConnInfo {
    pub fn new(peer: SocketAddr, secure: bool, quic: bool) -> Self {
        let peer_ip = header_value(&peer.ip().to_canonical().to_string());
        Self {
            peer,
            peer_ip,
            secure,
            quic,
        }
    }
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        crate::metrics::PROTOCOLS[self as usize]
    }
}

/// What the handler knows about the connection a request came on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The client's address as a header value, rendered once per connection.
    pub peer_ip: HeaderValue,
    /// TLS (or QUIC) terminated here.
    pub secure: bool,
    /// HTTP/3 (QUIC); otherwise the HTTP version tells h1 from h2.
    pub quic: bool,
}

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static X_STACKLAB_SESSION: HeaderName = HeaderName::from_static("x-stacklab-session");
pub static X_STACKLAB_MEMBER: HeaderName = HeaderName::from_static("x-stacklab-member");
pub static X_STACKLAB_CACHE: HeaderName = HeaderName::from_static("x-stacklab-cache");
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub static SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");

/// Headers that describe one hop, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
];

/// Serves one request. Never fails: every error becomes a JSON answer.
pub async fn handle(
    proxy: Arc<Proxy>,
    conn: ConnInfo,
    req: Request<ReqBody>,
) -> Response<RespBody> {
    let started = Instant::now();
    let protocol = if conn.quic {
        Protocol::H3
    } else if req.version() == Version::HTTP_2 {
        Protocol::H2
    } else {
        Protocol::H1
    };
    let cfg = proxy.config.load_full();
    let mut table = proxy.routing.load();
    if proxy.feed_pending(&cfg) && names_unknown_session(&table, req.headers()) {
        // Before the feed's first table no session is known: wait for it rather than tell a
        // live session it has expired (see `hold`).
        if crate::hold::for_table(&proxy, &cfg).await {
            table = proxy.routing.load();
        }
    }
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let host = request_host(&req).unwrap_or_default();

    let route = table.route(&host, &path, &method);
    let mut ctx = Ctx {
        protocol,
        request_id: request_id(req.headers()),
        member: None,
        upstream: None,
        session: None,
        refresh_code: None,
        transport: None,
    };
    let result = match route {
        None => Err(ProxyError::NoRoute { path: path.clone() }),
        Some(route) => serve(&proxy, &cfg, &table, route, &conn, req, &mut ctx).await,
    };
    let mut response = match result {
        Ok(r) => r,
        Err(e) => {
            if let ProxyError::HeadersTooLarge { .. }
            | ProxyError::TooManyHeaders { .. }
            | ProxyError::BodyTooLarge { .. }
            | ProxyError::BodyTimeout { .. } = e
            {
                proxy
                    .metrics
                    .limit_hits
                    .with_label_values(&[e.kind()])
                    .inc();
            }
            if e.source() != crate::error::Source::Client {
                tracing::warn!(target: "proxy", request_id = ?ctx.request_id, error = %e, "request failed");
            }
            e.into_response()
        }
    };

    let elapsed = started.elapsed();
    finish_headers(&proxy, &cfg, &conn, &mut response, &ctx, elapsed);
    let status = response.status().as_u16();
    if let Some(route) = route {
        route
            .metrics
            .record(protocol as usize, status, elapsed.as_secs_f64());
    }
    if cfg.log.access_log {
        tracing::info!(
            target: "access",
            client = %conn.peer.ip(),
            protocol = protocol.as_str(),
            %method,
            path = %path,
            status,
            ms = elapsed.as_secs_f64() * 1000.0,
            member = ctx.member.as_deref().unwrap_or("-"),
            request_id = ?ctx.request_id,
        );
    }
    response
}

/// The request's cookie names a session the table does not have.
fn names_unknown_session(table: &crate::table::Table, headers: &http::HeaderMap) -> bool {
    match session::from_headers(headers) {
        CookieSession::Code(code) => !table
            .sessions
            .contains_key(&stacklab_types::session::id(code)),
        _ => false,
    }
}

/// Per-request facts gathered on the way, for headers, logs and capture.
struct Ctx {
    protocol: Protocol,
    request_id: HeaderValue,
    member: Option<String>,
    upstream: Option<Duration>,
    /// The session's id (what members, captures and control know it by).
    session: Option<String>,
    /// The cookie's code, kept only on a data request, whose answer refreshes the cookie.
    refresh_code: Option<String>,
    /// The session's transport choice, for `Alt-Svc`.
    transport: Option<Transport>,
}

async fn serve(
    proxy: &Arc<Proxy>,
    cfg: &Config,
    table: &crate::table::Table,
    route: &Route,
    conn: &ConnInfo,
    req: Request<ReqBody>,
    ctx: &mut Ctx,
) -> Result<Response<RespBody>, ProxyError> {
    let header_bytes = header_size(&req);
    if header_bytes > cfg.limits.max_header_bytes {
        return Err(ProxyError::HeadersTooLarge {
            size: header_bytes,
            limit: cfg.limits.max_header_bytes,
        });
    }
    let cookies = req.headers().get_all(header::COOKIE).iter().count();
    let fields = req.headers().len() - cookies.saturating_sub(1);
    // All `Cookie` fields count as one: they are joined before forwarding.
    if fields > cfg.limits.max_header_fields {
        return Err(ProxyError::TooManyHeaders {
            count: fields,
            limit: cfg.limits.max_header_fields,
        });
    }

    let session: Option<Arc<SessionEntry>> = match session::from_headers(req.headers()) {
        CookieSession::Code(code) => match table.sessions.get(&stacklab_types::session::id(code)) {
            Some(entry) => {
                if route.cfg.touches_session {
                    ctx.refresh_code = Some(code.to_owned());
                }
                Some(Arc::clone(entry))
            }
            None if route.cfg.require_session && proxy.feed_pending(cfg) => {
                return Err(ProxyError::NotReady {
                    ms: cfg.limits.start_hold.as_millis(),
                })
            }
            None if route.cfg.require_session => return Err(ProxyError::SessionExpired),
            None => None,
        },
        CookieSession::Malformed if route.cfg.require_session => {
            return Err(ProxyError::SessionExpired)
        }
        CookieSession::Missing if route.cfg.require_session => {
            return Err(ProxyError::SessionMissing)
        }
        _ => None,
    };
    if let Some(entry) = &session {
        if route.cfg.touches_session {
            entry.last_used_ms.store(proxy.clock.now_ms(), Relaxed);
        }
        ctx.session = Some(entry.route.id.clone());
        ctx.transport = entry.route.transport;
    }

    let (pool, pinned) =
        match &route.cfg.target {
            RouteTarget::Static => {
                let inm = req.headers().get(header::IF_NONE_MATCH).cloned();
                let mut res = proxy
                    .statics
                    .serve(req.method(), req.uri().path(), inm.as_ref())
                    .await?;
                // The UI's own policy: its scripts and styles only, never framed.
                if let Some(csp) = &cfg.edge.headers.content_security_policy {
                    res.headers_mut()
                        .insert(header::CONTENT_SECURITY_POLICY, csp.clone());
                }
                return Ok(res);
            }
            RouteTarget::Pool(name) => (
                route
                    .pool
                    .clone()
                    .ok_or_else(|| ProxyError::NoPool { pool: name.clone() })?,
                None,
            ),
            RouteTarget::SessionPool => {
                let entry = session.as_ref().ok_or(ProxyError::SessionMissing)?;
                let pool = table.pools.get(&entry.route.pool).cloned().ok_or_else(|| {
                    ProxyError::NoPool {
                        pool: entry.route.pool.clone(),
                    }
                })?;
                (pool, entry.route.member.as_deref())
            }
        };
    // A pool with no member yet is starting: its first member is moments away (see `hold`).
    let pool = if pool.members.is_empty() {
        crate::hold::for_member(proxy, cfg, pool).await
    } else {
        pool
    };

    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let upgrade = is_upgrade(&parts.headers) && ctx.protocol == Protocol::H1;
    let mut headers = parts.headers;
    rewrite_request_headers(&mut headers, &parts.uri, conn, ctx, upgrade);

    // Hold small bodies (so the request can be retried), stream the rest, enforce the limit.
    let limit = cfg.limits.max_body_bytes;
    let declared = body.size_hint().exact();
    if declared.is_some_and(|n| n > limit) {
        return Err(ProxyError::BodyTooLarge { limit });
    }
    let out_body = if body.is_end_stream() {
        // No body (most GETs): nothing to read, time or count.
        OutBody::Held(Bytes::new())
    } else if declared.is_some_and(|n| n <= cfg.limits.retry_buffer_bytes as u64) {
        let body = ClientBody::new(body, limit, cfg.limits.body_read_timeout, proxy.clock);
        match body.collect().await {
            Ok(c) => OutBody::Held(c.to_bytes()),
            Err(e) => {
                return Err(match ClientBodyError::find(e.as_ref()) {
                    Some(known) => ProxyError::from_client_body(known),
                    None => ProxyError::BadBody(e.to_string()),
                })
            }
        }
    } else {
        let body = ClientBody::new(body, limit, cfg.limits.body_read_timeout, proxy.clock);
        let progress = body.progress();
        OutBody::Stream(body.boxed_unsync(), progress)
    };
    let capture = route.cfg.captures && ctx.session.is_some();
    let captured_body = match (&out_body, capture) {
        (OutBody::Held(b), true) => Some(b.clone()),
        _ => None,
    };

    let mut extensions = parts.extensions;
    let mut on_upgrade = if upgrade {
        ClientUpgrade::take(&mut extensions)
    } else {
        None
    };

    // Consistent hashing keys on the session, else on the client address.
    let hash_key: &[u8] = match &ctx.session {
        Some(code) => code.as_bytes(),
        None => conn.peer_ip.as_bytes(),
    };
    // The inspector keeps the headers as the member saw them, redacted; only then do the
    // headers move into the request.
    let captured_headers = capture.then(|| capture::redact_headers(&headers));
    let out = Outgoing {
        method: parts.method.clone(),
        path_and_query: parts
            .uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_owned(),
        headers,
        body: out_body,
    };
    let result = upstream::forward(proxy, &pool, pinned, hash_key, out).await;
    let proxy_before = started.elapsed();
    let mut forwarded = match result {
        Ok(f) => f,
        Err(e) => {
            if capture {
                record_capture(
                    proxy,
                    cfg,
                    ctx,
                    &parts.method,
                    &parts.uri,
                    captured_headers.unwrap_or_default(),
                    captured_body,
                    Answer {
                        status: e.status(),
                        cache: None,
                        server_timing: None,
                    },
                    proxy_before,
                );
            }
            return Err(e);
        }
    };
    ctx.member = Some(forwarded.member.id.clone());
    ctx.upstream = Some(forwarded.upstream);

    if forwarded.response.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_side) = on_upgrade.take() {
            // The member's side: our connection (HTTP/1.1 members), else hyper's.
            let own = forwarded
                .response
                .extensions_mut()
                .remove::<crate::upstream::conn::Upgrade>()
                .and_then(|u| u.take());
            let hyper_side = own
                .is_none()
                .then(|| hyper::upgrade::on(&mut forwarded.response));
            tokio::spawn(async move {
                let upstream: Option<Box<dyn crate::h1::Io>> = match (own, hyper_side) {
                    (Some(io), _) => Some(Box::new(io)),
                    (None, Some(on)) => on.await.ok().map(|u| {
                        Box::new(hyper_util::rt::TokioIo::new(u)) as Box<dyn crate::h1::Io>
                    }),
                    (None, None) => None,
                };
                match (client_side.get().await, upstream) {
                    (Some(mut client), Some(mut upstream)) => {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    }
                    (c, u) => tracing::debug!(
                        client_ok = c.is_some(),
                        upstream_ok = u.is_some(),
                        "upgrade failed"
                    ),
                }
            });
        }
    } else {
        strip_hop_by_hop(forwarded.response.headers_mut());
    }
    forwarded
        .response
        .headers_mut()
        .insert(&X_STACKLAB_MEMBER, header_value(&forwarded.member.id));
    // A data request moved the session's expiry: the browser's cookie moves with it.
    if let Some(code) = &ctx.refresh_code {
        if forwarded.response.status().is_success()
            && !forwarded
                .response
                .headers()
                .contains_key(header::SET_COOKIE)
        {
            let cookie = session::set_cookie(code, cfg.sessions.idle_timeout.as_secs());
            forwarded
                .response
                .headers_mut()
                .insert(header::SET_COOKIE, header_value(&cookie));
        }
    }
    if capture {
        let status = forwarded.response.status();
        let text = |name: &str| {
            forwarded
                .response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let answer = Answer {
            status,
            cache: text(X_STACKLAB_CACHE.as_str()),
            server_timing: text("server-timing"),
        };
        record_capture(
            proxy,
            cfg,
            ctx,
            &parts.method,
            &parts.uri,
            captured_headers.unwrap_or_default(),
            captured_body,
            answer,
            proxy_before,
        );
    }
    Ok(forwarded.response)
}

/// The client's side of an upgrade: from our HTTP/1.1 server or from hyper's.
enum ClientUpgrade {
    Own(crate::h1::OnUpgrade),
    Hyper(hyper::upgrade::OnUpgrade),
}

impl ClientUpgrade {
    fn take(extensions: &mut http::Extensions) -> Option<Self> {
        extensions
            .remove::<crate::h1::OnUpgrade>()
            .map(Self::Own)
            .or_else(|| {
                extensions
                    .remove::<hyper::upgrade::OnUpgrade>()
                    .map(Self::Hyper)
            })
    }

    /// The client's connection once the `101` has gone out.
    async fn get(self) -> Option<Box<dyn crate::h1::Io>> {
        match self {
            Self::Own(on) => on
                .get()
                .await
                .map(|u| Box::new(u) as Box<dyn crate::h1::Io>),
            Self::Hyper(on) => on
                .await
                .ok()
                .map(|u| Box::new(hyper_util::rt::TokioIo::new(u)) as Box<dyn crate::h1::Io>),
        }
    }
}

/// What the inspector keeps of the answer.
struct Answer {
    status: StatusCode,
    /// The backend's `x-stacklab-cache`.
    cache: Option<String>,
    /// The backend's `Server-Timing` (backend, cache, db), for the inspector's timing bar.
    server_timing: Option<String>,
}

#[allow(clippy::too_many_arguments)]
fn record_capture(
    proxy: &Proxy,
    cfg: &Config,
    ctx: &Ctx,
    method: &Method,
    uri: &http::Uri,
    headers: Vec<(String, String)>,
    body: Option<Bytes>,
    answer: Answer,
    total: Duration,
) {
    let Some(session) = ctx.session.clone() else {
        return;
    };
    let upstream_ms = ctx.upstream.map(|d| d.as_secs_f64() * 1000.0);
    let total_ms = total.as_secs_f64() * 1000.0;
    let (body, body_truncated) = match body {
        Some(b) => {
            let (text, cut) = capture::mask_and_cut(&b, cfg.limits.capture_body_bytes);
            (Some(text), cut)
        }
        None => (None, false),
    };
    proxy.capture.push(Captured {
        request_id: ctx.request_id.to_str().unwrap_or_default().to_owned(),
        at_unix_ms: capture::unix_ms(),
        session,
        method: method.to_string(),
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or_default().to_owned(),
        protocol: ctx.protocol.as_str(),
        headers,
        body,
        body_truncated,
        status: answer.status.as_u16(),
        cache: answer.cache,
        server_timing: answer.server_timing,
        member: ctx.member.clone(),
        total_ms,
        upstream_ms,
        proxy_ms: upstream_ms.map_or(total_ms, |u| (total_ms - u).max(0.0)),
    });
}

fn finish_headers(
    proxy: &Proxy,
    cfg: &Config,
    conn: &ConnInfo,
    res: &mut Response<RespBody>,
    ctx: &Ctx,
    elapsed: Duration,
) {
    let h = res.headers_mut();
    h.append(
        &SERVER_TIMING,
        timing_value(
            "proxy",
            elapsed.saturating_sub(ctx.upstream.unwrap_or_default()),
        ),
    );
    h.insert(&X_REQUEST_ID, ctx.request_id.clone());
    security_headers(&cfg.edge.headers, conn.secure, h);
    alt_svc(proxy, cfg, conn, ctx.transport, h);
}

/// `Alt-Svc: clear` withdraws any HTTP/3 advertisement for the origin (RFC 7838 §3).
const ALT_SVC_CLEAR: HeaderValue = HeaderValue::from_static("clear");

/// What the edge tells the browser about HTTP/3. The browser makes the final pick; the edge
/// only offers or withdraws it. A session that chose HTTPS gets `Alt-Svc: clear` on every
/// response, over HTTP/3 too (a browser that learnt `h3` from the UI's pages before the session
/// existed forgets it). A session that chose HTTP/3, and a request with no session (the UI's
/// pages), get the `h3` advertisement over TCP; over HTTP/3 itself none is needed.
fn alt_svc(
    proxy: &Proxy,
    cfg: &Config,
    conn: &ConnInfo,
    transport: Option<Transport>,
    h: &mut HeaderMap,
) {
    if !conn.secure {
        return;
    }
    if transport == Some(Transport::Https) {
        h.insert(header::ALT_SVC, ALT_SVC_CLEAR);
    } else if !conn.quic && cfg.edge.http3 {
        if let Some(alt) = proxy.alt_svc.load().as_ref() {
            h.insert(header::ALT_SVC, alt.clone());
        }
    }
}

/// The headers every response of the edge carries — its own answers, the UI's files and
/// members' responses alike: `X-Content-Type-Options: nosniff`, `Referrer-Policy` (a member's
/// own is kept), and over HTTPS and HTTP/3 `Strict-Transport-Security`. The values were made
/// when the config was read.
pub fn security_headers(sec: &SecurityHeaders, secure: bool, h: &mut HeaderMap) {
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        SecurityHeaders::X_CONTENT_TYPE_OPTIONS,
    );
    if let Some(v) = &sec.referrer_policy {
        h.entry(header::REFERRER_POLICY)
            .or_insert_with(|| v.clone());
    }
    if secure {
        if let Some(v) = &sec.strict_transport_security {
            h.insert(header::STRICT_TRANSPORT_SECURITY, v.clone());
        }
    }
}

/// `name;dur=M.mmm` (milliseconds) without going through `core::fmt`: this runs per response.
fn timing_value(name: &str, d: Duration) -> HeaderValue {
    let micros = d.as_micros().min(u128::from(u64::MAX)) as u64;
    let mut buf = [0u8; 48];
    let mut len = 0;
    for &b in name.as_bytes().iter().chain(b";dur=") {
        buf[len] = b;
        len += 1;
    }
    let mut digits = [0u8; 20];
    let mut n = micros / 1000;
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &b in &digits[i..] {
        buf[len] = b;
        len += 1;
    }
    let frac = micros % 1000;
    for b in [
        b'.',
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ] {
        buf[len] = b;
        len += 1;
    }
    HeaderValue::from_bytes(&buf[..len]).unwrap_or_else(|_| HeaderValue::from_static("proxy"))
}

/// True for the headers a proxy never forwards: hop-by-hop ones and client-sent `x-stacklab-*`.
#[inline]
fn not_forwarded(name: &HeaderName) -> bool {
    let n = name.as_str();
    HOP_BY_HOP.contains(&n) || n.starts_with("x-stacklab-")
}

/// Strips what the client may not set, and adds what the member needs to know.
fn rewrite_request_headers(
    h: &mut HeaderMap,
    uri: &http::Uri,
    conn: &ConnInfo,
    ctx: &Ctx,
    upgrade: bool,
) {
    // One pass over the names finds everything to drop; the common request has nothing to
    // drop and costs no hashing and no allocation here.
    let mut drop: Vec<HeaderName> = Vec::new();
    for name in h.keys() {
        if not_forwarded(name) || (!upgrade && name == header::UPGRADE) {
            drop.push(name.clone());
        }
    }
    // Headers named in `Connection` are hop-by-hop too, except those that are the message's
    // own and never a hop's: `Host` names the resource (RFC 9110 §7.2; a request without it
    // is not HTTP/1.1) and `Content-Length` frames the body. A client that names them there
    // gets them forwarded, not a member asked for a resource on no host.
    if let Some(conn_header) = h.get(header::CONNECTION) {
        if let Ok(v) = conn_header.to_str() {
            for n in v
                .split(',')
                .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            {
                if !(upgrade && n == header::UPGRADE)
                    && n != header::HOST
                    && n != header::CONTENT_LENGTH
                {
                    drop.push(n);
                }
            }
        }
    }
    for n in drop {
        h.remove(n);
    }
    // HTTP/2 and HTTP/3 may split cookies into many fields; toward the member they are one
    // again, joined by "; " (RFC 9113 §8.2.3), so that its header-count limit is not spent on
    // cookie crumbs.
    if h.get_all(header::COOKIE).iter().nth(1).is_some() {
        let mut joined: Vec<u8> = Vec::new();
        for v in h.get_all(header::COOKIE) {
            if !joined.is_empty() {
                joined.extend_from_slice(b"; ");
            }
            joined.extend_from_slice(v.as_bytes());
        }
        if let Ok(v) = HeaderValue::from_bytes(&joined) {
            h.insert(header::COOKIE, v);
        }
    }
    if upgrade {
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    if let Some(code) = &ctx.session {
        h.insert(&X_STACKLAB_SESSION, header_value(code));
    }
    h.insert(&X_REQUEST_ID, ctx.request_id.clone());
    let xff = match h.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) => header_value(&format!(
            "{prev}, {}",
            conn.peer_ip.to_str().unwrap_or_default()
        )),
        None => conn.peer_ip.clone(),
    };
    h.insert(&X_FORWARDED_FOR, xff);
    h.insert(
        &X_FORWARDED_PROTO,
        HeaderValue::from_static(if conn.secure { "https" } else { "http" }),
    );
    if !h.contains_key(header::HOST) {
        if let Some(authority) = uri.authority() {
            h.insert(header::HOST, header_value(authority.as_str()));
        }
    }
    // The host the request came for, never one the client made up: without a Host (an
    // HTTP/1.0 request may omit it) the client's own goes too.
    match h.get(header::HOST).cloned() {
        Some(host) => {
            h.insert(&X_FORWARDED_HOST, host);
        }
        None => {
            h.remove(&X_FORWARDED_HOST);
        }
    }
}

fn strip_hop_by_hop(h: &mut HeaderMap) {
    let drop: Vec<HeaderName> = h
        .keys()
        .filter(|n| HOP_BY_HOP.contains(&n.as_str()) || *n == header::UPGRADE)
        .cloned()
        .collect();
    for n in drop {
        h.remove(n);
    }
}

fn is_upgrade(h: &HeaderMap) -> bool {
    h.contains_key(header::UPGRADE)
        && h.get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// The host a request is for, lower-case and without port.
fn request_host<B>(req: &Request<B>) -> Option<String> {
    let raw = req.uri().host().or_else(|| {
        req.headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
    })?;
    let host = if raw.starts_with('[') {
        raw.split(']').next().map(|h| &h[1..]).unwrap_or(raw)
    } else {
        raw.rsplit_once(':').map_or(raw, |(h, _)| h)
    };
    Some(host.to_ascii_lowercase())
}

/// Size of the request head as it came: request line plus `name: value\r\n` per header.
fn header_size<B>(req: &Request<B>) -> usize {
    let line = req.method().as_str().len()
        + req.uri().path_and_query().map_or(1, |p| p.as_str().len())
        + 12;
    req.headers()
        .iter()
        .fold(line, |n, (k, v)| n + k.as_str().len() + v.len() + 4)
}

/// The client's request id when it is a sane token, else a new one (32 hex digits).
fn request_id(h: &HeaderMap) -> HeaderValue {
    if let Some(v) = h.get(&X_REQUEST_ID) {
        let b = v.as_bytes();
        if !b.is_empty()
            && b.len() <= 64
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_')
        {
            return v.clone();
        }
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let id: u128 = rand::random();
    let mut buf = [0u8; 32];
    for (i, b) in buf.iter_mut().enumerate() {
        *b = HEX[((id >> (124 - 4 * i)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&buf).expect("hex digits are a valid header value")
}

/// Entry points for the fuzz targets in `fuzz/` (cargo-fuzz) into this module's private header
/// handling. Not an API: nothing in stacklab calls these.
#[doc(hidden)]
pub mod fuzzing {
    use super::*;

    pub fn request_host<B>(req: &Request<B>) -> Option<String> {
        super::request_host(req)
    }

    pub fn request_id(h: &HeaderMap) -> HeaderValue {
        super::request_id(h)
    }

    pub fn header_size<B>(req: &Request<B>) -> usize {
        super::header_size(req)
    }

    pub fn is_upgrade(h: &HeaderMap) -> bool {
        super::is_upgrade(h)
    }

    pub fn strip_hop_by_hop(h: &mut HeaderMap) {
        super::strip_hop_by_hop(h)
    }

    pub fn timing_value(name: &str, d: Duration) -> HeaderValue {
        super::timing_value(name, d)
    }

    /// What the member would see: `h` rewritten for a request on `conn` with this session and
    /// request id.
    pub fn rewrite_request_headers(
        h: &mut HeaderMap,
        uri: &http::Uri,
        conn: &ConnInfo,
        session: Option<String>,
        request_id: HeaderValue,
        upgrade: bool,
    ) {
        let ctx = Ctx {
            protocol: Protocol::H1,
            request_id,
            member: None,
            upstream: None,
            session,
            refresh_code: None,
            transport: None,
        };
        super::rewrite_request_headers(h, uri, conn, &ctx, upgrade)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_without_port() {
        let req = Request::get("/x")
            .header("host", "Example.COM:8443")
            .body(())
            .unwrap();
        assert_eq!(request_host(&req).as_deref(), Some("example.com"));
        let req = Request::get("/x")
            .header("host", "[::1]:8443")
            .body(())
            .unwrap();
        assert_eq!(request_host(&req).as_deref(), Some("::1"));
        let req = Request::get("https://localhost/x").body(()).unwrap();
        assert_eq!(request_host(&req).as_deref(), Some("localhost"));
    }

    #[test]
    fn forged_stacklab_headers_and_hop_by_hop_are_stripped() {
        let mut h = HeaderMap::new();
        h.insert("x-stacklab-session", "victim".parse().unwrap());
        h.insert("x-stacklab-anything", "x".parse().unwrap());
        h.insert("connection", "keep-alive, x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("x-forwarded-for", "10.0.0.1".parse().unwrap());
        h.append("cookie", "a=1".parse().unwrap());
        h.append("cookie", "stacklab_session=CODE".parse().unwrap());
        let conn = ConnInfo::new("192.0.2.7:5000".parse().unwrap(), true, false);
        let ctx = Ctx {
            protocol: Protocol::H1,
            request_id: "rid".parse().unwrap(),
            member: None,
            upstream: None,
            session: Some("CODE".into()),
            refresh_code: None,
            transport: None,
        };
        rewrite_request_headers(&mut h, &"/".parse().unwrap(), &conn, &ctx, false);
        assert_eq!(h["x-stacklab-session"], "CODE");
        assert!(!h.contains_key("x-stacklab-anything"));
        assert!(!h.contains_key("x-secret"));
        assert!(!h.contains_key("connection"));
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 192.0.2.7");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-request-id"], "rid");
        assert_eq!(
            h.get_all("cookie").iter().collect::<Vec<_>>(),
            ["a=1; stacklab_session=CODE"],
            "split cookies are one field toward the member"
        );
    }

    /// Found by `fuzz/` (cookie_header): with no Host, the client's x-forwarded-host went
    /// through to the member as if the proxy had set it.
    #[test]
    fn a_forged_forwarded_host_never_reaches_the_member() {
        let conn = ConnInfo::new("192.0.2.7:5000".parse().unwrap(), true, false);
        let ctx = Ctx {
            protocol: Protocol::H1,
            request_id: "rid".parse().unwrap(),
            member: None,
            upstream: None,
            session: None,
            refresh_code: None,
            transport: None,
        };
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-host", "evil.example".parse().unwrap());
        rewrite_request_headers(&mut h, &"/".parse().unwrap(), &conn, &ctx, false);
        assert!(!h.contains_key("x-forwarded-host"), "{h:?}");
        for connection in [None, Some("host"), Some("keep-alive, Host")] {
            let mut h = HeaderMap::new();
            h.insert("x-forwarded-host", "evil.example".parse().unwrap());
            h.insert("host", "localhost:8443".parse().unwrap());
            if let Some(c) = connection {
                h.insert("connection", c.parse().unwrap());
            }
            rewrite_request_headers(&mut h, &"/".parse().unwrap(), &conn, &ctx, false);
            assert_eq!(h["host"], "localhost:8443", "{connection:?}");
            assert_eq!(h["x-forwarded-host"], "localhost:8443", "{connection:?}");
        }
    }

    #[test]
    fn request_ids_are_kept_only_when_sane() {
        let mut h = HeaderMap::new();
        h.insert("x-request-id", "abc-123".parse().unwrap());
        assert_eq!(request_id(&h), "abc-123");
        h.insert("x-request-id", "a b<script>".parse().unwrap());
        assert_eq!(request_id(&h).len(), 32);
    }
}
