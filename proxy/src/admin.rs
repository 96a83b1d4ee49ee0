//! The admin API (`/admin/*`, bearer token), `/metrics` and `/healthz`, on the admin address.
//!
//! | method and path | what it does |
//! |---|---|
//! | `GET /healthz` | `{"status":"ok"}` (no token) |
//! | `GET /metrics` | Prometheus text (no token; the address is loopback by default) |
//! | `GET /admin/routes` | the table: version, pools, session routes |
//! | `GET /admin/pools` | pools with each member's live state |
//! | `PUT /admin/pools/{pool}` | create or replace a pool (a `PoolSpec`) |
//! | `DELETE /admin/pools/{pool}` | remove a pool set through this API or the feed |
//! | `PUT /admin/pools/{pool}/members/{id}` | add or change a member: `{"addr","weight","draining"}` |
//! | `POST /admin/pools/{pool}/members/{id}/drain` | no new requests to it; in-flight ones finish |
//! | `DELETE /admin/pools/{pool}/members/{id}` | remove a member |
//! | `GET /admin/sessions` | session routes with when each was last used |
//! | `PUT /admin/sessions/{id}` | route a session: `{"pool","member"}` |
//! | `DELETE /admin/sessions/{id}` | forget a session (its requests then get `410`) |
//! | `GET /admin/sessions/{id}/requests?limit=` | the session's captured requests, newest first |
//!
//! Sessions are named by id ([`stacklab_types::session::id`] of the cookie's code), never by
//! code: the proxy hashes each request's cookie to find its route.
//! | `GET /admin/events` | member state changes, one JSON object per line, as they happen |
//! | `POST /admin/reload` | re-read the config file (as SIGHUP does) |
//!
//! Bad input answers 400 with the field at fault and changes nothing. The token is compared in
//! constant time and never logged.

use crate::body::{full, RespBody};
use crate::config::ProcessEnv;
use crate::error::{json_error, json_response};
use crate::table::UpdateError;
use crate::Proxy;
use bytes::Bytes;
use futures_util::StreamExt;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use serde::{Deserialize, Serialize};
use stacklab_types::routes::{MemberSpec, PoolSpec, RouteUpdate, SessionRoute, Transport};
use stacklab_types::ErrorBody;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

/// Admin request bodies are small specs.
pub const MAX_ADMIN_BODY: usize = 1024 * 1024;

pub async fn serve(proxy: Arc<Proxy>, listener: TcpListener, tracker: TaskTracker) {
    let shutdown = proxy.shutdown.clone();
    stacklab_serve::serve_http(
        listener,
        shutdown,
        &tracker,
        std::time::Duration::from_secs(1),
        move |req: Request<Incoming>| {
            let proxy = Arc::clone(&proxy);
            async move { handle(&proxy, req).await }
        },
    )
    .await;
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response<RespBody> {
    json_error(status, &ErrorBody::new(code, message))
}

fn ok_json<T: Serialize>(value: &T) -> Response<RespBody> {
    match serde_json::to_vec(value) {
        Ok(v) => json_response(StatusCode::OK, Bytes::from(v)),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("could not encode the answer: {e}"),
        ),
    }
}

/// Checks `Authorization: Bearer <token>`.
pub fn authorized<B>(proxy: &Proxy, req: &Request<B>) -> bool {
    let cfg = proxy.config.load();
    cfg.admin
        .token
        .admits(stacklab_types::secret::bearer(req.headers()))
}

/// The answer of an [`AdminExtension`]: its response, or the request handed back untouched.
pub type AdminFuture = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Response<RespBody>, Request<Incoming>>> + Send>,
>;

/// Another part sharing the admin address (control, in `stacklab up`): it sees each request
/// first, answers the ones it owns (checking the token itself) and hands back the rest.
pub trait AdminExtension: Send + Sync + std::fmt::Debug {
    fn handle(&self, req: Request<Incoming>) -> AdminFuture;
    /// Prometheus text appended to `/metrics`.
    fn metrics(&self) -> String;
}

/// Answers one admin request.
pub async fn handle(proxy: &Arc<Proxy>, req: Request<Incoming>) -> Response<RespBody> {
    let req = match proxy.admin_ext.get() {
        Some(ext) if req.uri().path() != "/metrics" => match ext.handle(req).await {
            Ok(res) => return res,
            Err(req) => req,
        },
        _ => req,
    };
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    match (&method, path.as_str()) {
        (&Method::GET, "/healthz") => return ok_json(&serde_json::json!({"status": "ok"})),
        (&Method::GET, "/metrics") => {
            refresh_gauges(proxy);
            let mut text = proxy.metrics.encode();
            if let Some(ext) = proxy.admin_ext.get() {
                text.extend_from_slice(ext.metrics().as_bytes());
            }
            let mut res = Response::new(full(text));
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            return res;
        }
        _ => {}
    }
    if !path.starts_with("/admin/") {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("nothing at {path}; the admin API is under /admin/"),
        );
    }
    if !authorized(proxy, &req) {
        let mut res = error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send the admin token as `Authorization: Bearer <token>` (admin.token, STACKLAB_ADMIN_TOKEN, or <data_dir>/admin.token)",
        );
        res.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        return res;
    }
    let query = req.uri().query().unwrap_or_default().to_owned();
    let segments: Vec<String> = path
        .trim_start_matches("/admin/")
        .split('/')
        .map(str::to_owned)
        .collect();
    let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
    let body = match read_body(req).await {
        Ok(b) => b,
        Err(res) => return res,
    };
    match (&method, seg.as_slice()) {
        (&Method::GET, ["routes"]) => {
            let t = proxy.routing.load();
            ok_json(&serde_json::json!({"version": t.version, "pools": t.pool_specs(), "sessions": t.session_routes()}))
        }
        (&Method::GET, ["pools"]) => ok_json(&pools_view(proxy)),
        (&Method::PUT, ["pools", name]) => {
            // The path names the pool; the body may leave `name` out.
            let mut value: serde_json::Value = match parse(&body) {
                Ok(v) => v,
                Err(res) => return res,
            };
            if let Some(obj) = value.as_object_mut() {
                obj.entry("name").or_insert_with(|| serde_json::Value::String((*name).to_owned()));
            }
            let pool: PoolSpec = match serde_json::from_value(value) {
                Ok(p) => p,
                Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_json", format!("the body is not a pool: {e}")),
            };
            if pool.name != *name {
                return error(StatusCode::BAD_REQUEST, "invalid", "the pool's `name` must match the path");
            }
            apply(proxy, RouteUpdate::PutPool { pool })
        }
        (&Method::DELETE, ["pools", name]) => apply(proxy, RouteUpdate::RemovePool { name: (*name).to_owned() }),
        (&Method::PUT, ["pools", pool, "members", id]) => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Body {
                addr: String,
                #[serde(default = "one")]
                weight: u32,
                #[serde(default)]
                draining: bool,
            }
            fn one() -> u32 {
                1
            }
            let b: Body = match parse(&body) {
                Ok(b) => b,
                Err(res) => return res,
            };
            let member = MemberSpec { id: (*id).to_owned(), addr: b.addr, weight: b.weight, draining: b.draining };
            apply(proxy, RouteUpdate::PutMember { pool: (*pool).to_owned(), member })
        }
        (&Method::POST, ["pools", pool, "members", id, "drain"]) => {
            let table = proxy.routing.load_full();
            let Some(spec) = table.pools.get(*pool).and_then(|p| p.spec.members.iter().find(|m| m.id == *id).cloned()) else {
                return update_error(UpdateError::NoMember { pool: (*pool).to_owned(), id: (*id).to_owned() });
            };
            apply(proxy, RouteUpdate::PutMember { pool: (*pool).to_owned(), member: MemberSpec { draining: true, ..spec } })
        }
        (&Method::DELETE, ["pools", pool, "members", id]) => {
            apply(proxy, RouteUpdate::RemoveMember { pool: (*pool).to_owned(), id: (*id).to_owned() })
        }
        (&Method::GET, ["sessions"]) => {
            let t = proxy.routing.load();
            let list: Vec<_> = t
                .sessions
                .values()
                .map(|s| serde_json::json!({"id": s.route.id, "pool": s.route.pool, "member": s.route.member, "transport": s.route.transport, "last_used_ms": s.last_used_ms.load(Relaxed)}))
                .collect();
            ok_json(&serde_json::json!({"now_ms": proxy.clock.now_ms(), "sessions": list}))
        }
        (&Method::PUT, ["sessions", id]) => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Body {
                pool: String,
                #[serde(default)]
                member: Option<String>,
                #[serde(default)]
                transport: Option<Transport>,
            }
            let b: Body = match parse(&body) {
                Ok(b) => b,
                Err(res) => return res,
            };
            apply(proxy, RouteUpdate::PutSession { session: SessionRoute { id: (*id).to_owned(), pool: b.pool, member: b.member, transport: b.transport } })
        }
        (&Method::DELETE, ["sessions", id]) => {
            let res = apply(proxy, RouteUpdate::RemoveSession { id: (*id).to_owned() });
            proxy.capture.forget(id);
            res
        }
        (&Method::GET, ["sessions", id, "requests"]) => {
            let limit = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("limit="))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(50)
                .min(1000);
            ok_json(&proxy.capture.recent(id, limit))
        }
        (&Method::GET, ["events"]) => events_stream(proxy),
        (&Method::POST, ["reload"]) => match proxy.reload(&ProcessEnv) {
            Ok(warnings) => ok_json(&serde_json::json!({
                "reloaded": true,
                "warnings": warnings.iter().map(|w| format!("{}: {}", w.path, w.message)).collect::<Vec<_>>(),
            })),
            Err(report) => json_response(
                StatusCode::BAD_REQUEST,
                Bytes::from(
                    serde_json::to_vec(&serde_json::json!({"error": {
                        "code": "invalid_config",
                        "message": "the config was not reloaded; fix these and try again",
                        "errors": report.errors.iter().map(|e| serde_json::json!({"field": e.path, "message": e.message})).collect::<Vec<_>>(),
                    }}))
                    .unwrap_or_default(),
                ),
            ),
        },
        _ => error(StatusCode::NOT_FOUND, "not_found", format!("no admin endpoint {method} {path}; see the admin API table in the README")),
    }
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, Response<RespBody>> {
    match Limited::new(req.into_body(), MAX_ADMIN_BODY)
        .collect()
        .await
    {
        Ok(c) => Ok(c.to_bytes()),
        Err(_) => Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("admin bodies are at most {MAX_ADMIN_BODY} bytes"),
        )),
    }
}

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, Response<RespBody>> {
    serde_json::from_slice(body).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the body is not what this endpoint takes: {e}"),
        )
    })
}

fn apply(proxy: &Proxy, update: RouteUpdate) -> Response<RespBody> {
    match proxy.routing.apply(update) {
        Ok(version) => ok_json(&serde_json::json!({"version": version})),
        Err(e) => update_error(e),
    }
}

fn update_error(e: UpdateError) -> Response<RespBody> {
    let (status, code, field) = match &e {
        UpdateError::Invalid { field, .. } => {
            (StatusCode::BAD_REQUEST, "invalid", Some(field.clone()))
        }
        UpdateError::NoPool(_) => (StatusCode::NOT_FOUND, "no_pool", Some("pool".to_owned())),
        UpdateError::NoMember { .. } => (StatusCode::NOT_FOUND, "no_member", Some("id".to_owned())),
        UpdateError::NoSession(_) => (StatusCode::NOT_FOUND, "no_session", Some("id".to_owned())),
    };
    let mut body = ErrorBody::new(code, format!("{e}; nothing was changed"));
    if let Some(f) = field {
        body = body.with_field(f);
    }
    json_error(status, &body)
}

fn pools_view(proxy: &Proxy) -> serde_json::Value {
    let t = proxy.routing.load();
    let now = proxy.clock.now_ms();
    let mut pools: Vec<_> = t
        .pools
        .values()
        .map(|p| {
            serde_json::json!({
                "name": p.name(),
                "algorithm": p.spec.algorithm.as_str(),
                "protocol": p.spec.protocol,
                "health": p.spec.health,
                "members": p.members.iter().zip(&p.spec.members).map(|(m, spec)| serde_json::json!({
                    "id": m.id,
                    "addr": m.addr,
                    "weight": spec.weight.max(1),
                    "state": m.state(now),
                    "in_flight": m.in_flight.load(Relaxed),
                    "ewma_ms": m.ewma().as_secs_f64() * 1000.0,
                    "requests": m.requests.load(Relaxed),
                    "failures": m.failures.load(Relaxed),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    pools.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    serde_json::json!({"version": t.version, "pools": pools})
}

fn events_stream(proxy: &Proxy) -> Response<RespBody> {
    let rx = proxy.events.subscribe();
    let stream = tokio_stream_from(rx).map(|ev| {
        let mut line = serde_json::to_vec(&ev).unwrap_or_default();
        line.push(b'\n');
        Ok::<_, crate::body::BoxError>(Frame::data(Bytes::from(line)))
    });
    let mut res = Response::new(StreamBody::new(stream).boxed_unsync());
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/x-ndjson"),
    );
    res
}

/// A broadcast receiver as a stream that skips what it lagged behind on.
fn tokio_stream_from<T: Clone + Send + 'static>(
    rx: tokio::sync::broadcast::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + Sync + 'static {
    futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(v) => return Some((v, rx)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

/// Sets the gauges that are read from the live table rather than counted per request.
fn refresh_gauges(proxy: &Proxy) {
    let m = &proxy.metrics;
    let t = proxy.routing.load();
    let now = proxy.clock.now_ms();
    m.member_healthy.reset();
    m.member_in_flight.reset();
    for pool in t.pools.values() {
        for member in &pool.members {
            let state = member.state(now);
            m.member_healthy
                .with_label_values(&[pool.name(), &member.id, crate::health::state_label(state)])
                .set(i64::from(member.eligible(now)));
            m.member_in_flight
                .with_label_values(&[pool.name(), &member.id])
                .set(i64::from(member.in_flight.load(Relaxed)));
        }
    }
    m.sessions.set(t.sessions.len() as i64);
    m.pools.set(t.pools.len() as i64);
    m.route_table_version.set(t.version as i64);
    m.captured_sessions.set(proxy.capture.sessions() as i64);
}
