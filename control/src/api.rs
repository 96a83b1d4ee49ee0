//! The public API, reached through the edge (the proxy routes these paths to pool `control`):
//!
//! | method and path | what it does |
//! |---|---|
//! | `GET /api/options` | every choice, its default, what this install can offer |
//! | `POST /api/sessions` | create a session (201 and the cookie) |
//! | `GET /api/session` | the session, its stack, its provisioning steps |
//! | `DELETE /api/session` | end it now |
//! | `GET /api/session/events` | Server-Sent Events: steps, state, requests, cache changes |
//! | `GET /api/requests?limit=` | the session's captured requests, newest first |
//! | `POST /api/bugs` | file a report carrying the session's stack and last requests |
//! | `GET /api/topology` | proxy → pools → instances → this session's database and cache |
//! | `POST /api/topology/drill` | start the session's drill pool ([`crate::drills`]; if `control.drills_from_ui`) |
//! | `DELETE /api/topology/drill` | end it: back to the runtime's shared pool |
//! | `POST /api/topology/pools/{pool}/instances` | start an instance in the session's drill pool |
//! | `DELETE /api/topology/pools/{pool}/instances/{id}` | kill one of its drill pool (the failover drill) |
//!
//! The shared pools are never the public API's to change: only the admin API's.
//!
//! The session comes from `x-stacklab-session`, which only the proxy sets (it strips the
//! client's); bad input answers a JSON 4xx naming the field and changes nothing.
//!
//! Every state-changing request (any method but GET, HEAD and OPTIONS) passes
//! [`same_origin`] first: a page on another site can make a browser send a form or a
//! `text/plain` body with the user's cookie (no preflight needed), so such a request must
//! carry JSON (`POST`/`PUT`/`PATCH`: `content-type: application/json`, which a cross-site page
//! cannot send without a CORS preflight control never grants) and, when the browser names an
//! `Origin`, that origin must be the edge's own (the host the request came to) or one of
//! `control.allowed_origins`. Clients that are not browsers send no `Origin` and pass on the
//! content type alone.

use crate::sessions::{CreateError, EndReason, Session};
use crate::Control;
use bytes::Bytes;
use futures_util::stream;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{json, Value};
use stacklab_proxy::body::RespBody;
use stacklab_proxy::error::{json_error, json_response};
use stacklab_types::ErrorBody;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// Largest public request body (choices, bug reports).
pub const MAX_BODY: usize = 64 * 1024;

pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response<RespBody> {
    json_error(status, &ErrorBody::new(code, message))
}

pub fn field_error(
    status: StatusCode,
    code: &str,
    field: &str,
    message: impl Into<String>,
) -> Response<RespBody> {
    json_error(status, &ErrorBody::new(code, message).with_field(field))
}

pub fn ok_json(status: StatusCode, value: &Value) -> Response<RespBody> {
    json_response(status, Bytes::from(value.to_string()))
}

/// Reads a JSON body: `Value::Null` when empty; 415 unless it says JSON; 413 past the limit.
pub async fn json_body(req: Request<Incoming>, limit: usize) -> Result<Value, Response<RespBody>> {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("application/json")
        });
    let bytes = match Limited::new(req.into_body(), limit).collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the body is larger than {limit} bytes"),
            ))
        }
    };
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    if !is_json {
        return Err(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with `Content-Type: application/json`",
        ));
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the body is not valid JSON: {e}"),
        )
    })
}

/// An origin as compared: lowercase, no trailing `/`, no default port.
pub fn normal_origin(origin: &str) -> String {
    let o = origin.trim().trim_end_matches('/').to_ascii_lowercase();
    if let Some(h) = o.strip_prefix("https://") {
        return format!("https://{}", h.strip_suffix(":443").unwrap_or(h));
    }
    if let Some(h) = o.strip_prefix("http://") {
        return format!("http://{}", h.strip_suffix(":80").unwrap_or(h));
    }
    o
}

/// Refuses a state-changing request a page on another site could have made (see the module
/// doc): 403 `cross_origin` naming `origin`, or 415 `unsupported_media_type`. Runs before
/// anything is read or changed.
pub fn same_origin<B>(control: &Control, req: &Request<B>) -> Result<(), Response<RespBody>> {
    // A refusal is counted under the check that made it.
    let refuse = |check: &str, status: StatusCode, code: &str, field: &str, message: &str| {
        control
            .metrics
            .cross_site_refused
            .with_label_values(&[check])
            .inc();
        field_error(status, code, field, message)
    };
    let h = req.headers();
    if let Some(origin) = h.get(header::ORIGIN) {
        // The host the request came to: the proxy sets x-forwarded-host from the Host it got
        // (never the client's own header of that name); straight to control, the Host itself.
        let host = h
            .get("x-forwarded-host")
            .or_else(|| h.get(header::HOST))
            .and_then(|v| v.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()));
        let scheme = h
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("https");
        let origin = origin.to_str().map(normal_origin).unwrap_or_default();
        let own = host.map(|host| normal_origin(&format!("{scheme}://{host}")));
        let allowed = own.as_deref() == Some(origin.as_str())
            || control.cfg.allowed_origins.contains(&origin);
        if !allowed {
            return Err(refuse(
                "origin",
                StatusCode::FORBIDDEN,
                "cross_origin",
                "origin",
                "this request comes from a page on another origin, which may not change a \
                 session here; use the stacklab UI on this address (or add the page's origin to \
                 control.allowed_origins)",
            ));
        }
    }
    let needs_json = matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH);
    let is_json = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
    if needs_json && !is_json {
        return Err(refuse(
            "content_type",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "content-type",
            "send a JSON body (`{}` will do) with `content-type: application/json`",
        ));
    }
    Ok(())
}

/// The client address the proxy saw: the last `x-forwarded-for` entry (the proxy appends it).
fn client_addr<B>(req: &Request<B>) -> String {
    req.headers()
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "direct".to_owned())
}

/// The session the proxy named in `x-stacklab-session` (its id).
fn session_of<B>(control: &Control, req: &Request<B>) -> Result<Arc<Session>, Response<RespBody>> {
    let Some(id) = req
        .headers()
        .get("x-stacklab-session")
        .and_then(|v| v.to_str().ok())
    else {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "session_missing",
            "no session: create one with POST /api/sessions",
        ));
    };
    control.sessions.get(id).ok_or_else(|| {
        error(
            StatusCode::GONE,
            "session_expired",
            "this session has ended; start a new one with POST /api/sessions",
        )
    })
}

/// The code of the cookie that reached `s` (the proxy forwards the cookie it routed by):
/// control keeps no code, so a session's view shows the one its caller holds.
fn cookie_code<'r, B>(req: &'r Request<B>, s: &Session) -> Option<&'r str> {
    match stacklab_proxy::session::from_headers(req.headers()) {
        stacklab_proxy::session::CookieSession::Code(code)
            if stacklab_types::session::id(code) == s.id =>
        {
            Some(code)
        }
        _ => None,
    }
}

/// Answers one public request.
pub async fn handle(control: &Arc<Control>, req: Request<Incoming>) -> Response<RespBody> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS) {
        if let Err(res) = same_origin(control, &req) {
            return res;
        }
    }
    match (&method, segs.as_slice()) {
        (&Method::GET, ["api", "options"]) => {
            let runtimes: Vec<_> = control
                .runtimes
                .offers()
                .await
                .into_iter()
                .map(|(m, available)| crate::choices::RuntimeOffer {
                    name: m.name.clone(),
                    label: m.label.clone(),
                    description: m.description.clone(),
                    available,
                    unsupported: m.unsupported.clone(),
                })
                .collect();
            ok_json(
                StatusCode::OK,
                &crate::choices::options(control.as_ref(), &runtimes),
            )
        }
        (&Method::POST, ["api", "sessions"]) => create(control, req).await,
        (_, ["api", "sessions"]) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "create a session with POST /api/sessions",
        ),
        (&Method::GET, ["api", "session"]) => match session_of(control, &req) {
            Ok(s) => ok_json(
                StatusCode::OK,
                &s.view(
                    cookie_code(&req, &s),
                    control.sessions_cfg.idle_timeout.as_millis() as u64,
                ),
            ),
            Err(res) => res,
        },
        (&Method::DELETE, ["api", "session"]) => match session_of(control, &req) {
            Ok(s) => {
                control.end_session(&s.id, EndReason::Deleted).await;
                let mut res = ok_json(StatusCode::OK, &json!({"deleted": true}));
                res.headers_mut().insert(
                    header::SET_COOKIE,
                    HeaderValue::from_static(
                        "stacklab_session=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Lax",
                    ),
                );
                res
            }
            Err(res) => res,
        },
        (&Method::POST, ["api", "session", "reprovision"]) => match session_of(control, &req) {
            Ok(s) => match control.reprovision(&s).await {
                Ok(()) => ok_json(
                    StatusCode::OK,
                    &s.view(
                        cookie_code(&req, &s),
                        control.sessions_cfg.idle_timeout.as_millis() as u64,
                    ),
                ),
                Err(e) => create_error(e, "the session was ended; start a new one"),
            },
            Err(res) => res,
        },
        (&Method::GET, ["api", "session", "events"]) => match session_of(control, &req) {
            Ok(s) => events(control, s),
            Err(res) => res,
        },
        (&Method::GET, ["api", "requests"]) => match session_of(control, &req) {
            Ok(s) => {
                let limit = query_usize(&req, "limit").unwrap_or(50).clamp(1, 500);
                ok_json(
                    StatusCode::OK,
                    &json!({"requests": control.captured(&s.id, limit).await}),
                )
            }
            Err(res) => res,
        },
        (&Method::POST, ["api", "bugs"]) => match session_of(control, &req) {
            Ok(s) => file_bug(control, s, req).await,
            Err(res) => res,
        },
        (&Method::GET, ["api", "topology"]) => match session_of(control, &req) {
            Ok(s) => ok_json(StatusCode::OK, &control.topology(Some(&s)).await),
            Err(res) => res,
        },
        (&Method::POST, ["api", "topology", "drill"]) => match session_of(control, &req) {
            Ok(s) => match control.start_drill(&s).await {
                Ok(v) => ok_json(StatusCode::CREATED, &v),
                Err(e) => drill_error(&e),
            },
            Err(res) => res,
        },
        (&Method::DELETE, ["api", "topology", "drill"]) => match session_of(control, &req) {
            Ok(s) => match control.end_drill(&s).await {
                Ok(pool) => ok_json(StatusCode::OK, &json!({"ended": pool, "pool": s.pool})),
                Err(e) => drill_error(&e),
            },
            Err(res) => res,
        },
        (_, ["api", "topology", "drill"]) => error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "start a drill with POST /api/topology/drill, end it with DELETE",
        ),
        (&Method::POST, ["api", "topology", "pools", pool, "instances"]) => {
            match session_of(control, &req) {
                Ok(s) => match control.may_change_pool(&s, pool, true) {
                    Ok(()) => start_instance(control, pool, &req).await,
                    Err(e) => drill_error(&e),
                },
                Err(res) => res,
            }
        }
        (&Method::DELETE, ["api", "topology", "pools", pool, "instances", id]) => {
            match session_of(control, &req) {
                Ok(s) => match control.may_change_pool(&s, pool, false) {
                    Ok(()) => kill_instance(control, pool, id).await,
                    Err(e) => drill_error(&e),
                },
                Err(res) => res,
            }
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("nothing at {method} {path}"),
        ),
    }
}

fn drill_error(e: &crate::drills::DrillError) -> Response<RespBody> {
    use crate::drills::DrillError as E;
    match e {
        E::Disabled => error(StatusCode::FORBIDDEN, "drills_disabled", "this install does not run failover drills from the UI (control.drills_from_ui = false); an operator can use the admin API"),
        E::Running(pool) => error(StatusCode::CONFLICT, "drill_running", format!("this session's drill pool `{pool}` is running already; end it with DELETE /api/topology/drill first")),
        E::NoDrill => error(StatusCode::NOT_FOUND, "no_drill", "this session runs no drill; start one with POST /api/topology/drill"),
        E::Pools(max) => error(StatusCode::SERVICE_UNAVAILABLE, "out_of_capacity", format!("{max} drill pools are running (control.max_drill_pools); try again when one has ended")),
        E::NotYours(pool) => error(StatusCode::FORBIDDEN, "not_your_pool", format!("`{pool}` is not this session's drill pool: shared pools serve every session and change only with the admin token; start a drill pool of your own with POST /api/topology/drill and add or kill instances there")),
        E::Instances(max) => error(StatusCode::TOO_MANY_REQUESTS, "drill_instance_limit", format!("this drill pool has {max} instances (control.max_drill_instances); kill one before adding another")),
        E::Start(why) => error(StatusCode::SERVICE_UNAVAILABLE, "drill_failed", format!("the drill pool could not start: {why}")),
    }
}

/// `POST …/pools/{pool}/instances[?kind=process|container]`.
pub async fn start_instance<B>(
    control: &Arc<Control>,
    pool: &str,
    req: &Request<B>,
) -> Response<RespBody> {
    let kind = match query_str(req, "kind") {
        None => crate::instances::InstanceKind::Process,
        Some(k) => match crate::instances::InstanceKind::parse(&k) {
            Some(kind) => kind,
            None => {
                return field_error(
                    StatusCode::BAD_REQUEST,
                    "invalid",
                    "kind",
                    format!("`{k}` is not a kind of instance: use `process` or `container`"),
                )
            }
        },
    };
    match control.start_instance_of(pool, kind).await {
        Ok(info) => ok_json(
            StatusCode::CREATED,
            &serde_json::to_value(info).unwrap_or_default(),
        ),
        Err(e) => error(StatusCode::CONFLICT, "cannot_start_instance", e),
    }
}

pub async fn kill_instance(control: &Arc<Control>, pool: &str, id: &str) -> Response<RespBody> {
    match control.kill_instance(pool, id).await {
        Ok(info) => ok_json(StatusCode::OK, &json!({"killed": info})),
        Err(e) => error(StatusCode::NOT_FOUND, "no_instance", e),
    }
}

fn query_str<B>(req: &Request<B>, key: &str) -> Option<String> {
    req.uri()
        .query()?
        .split('&')
        .find_map(|kv| Some(kv.strip_prefix(key)?.strip_prefix('=')?.to_owned()))
}

fn query_usize<B>(req: &Request<B>, key: &str) -> Option<usize> {
    req.uri()
        .query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

async fn create(control: &Arc<Control>, req: Request<Incoming>) -> Response<RespBody> {
    let client = client_addr(&req);
    let body = match json_body(req, MAX_BODY).await {
        Ok(b) => b,
        Err(res) => return res,
    };
    match control.create_session(&body, &client).await {
        Ok((code, s)) => {
            let idle = control.sessions_cfg.idle_timeout;
            let mut res = ok_json(
                StatusCode::CREATED,
                &s.view(Some(&code), idle.as_millis() as u64),
            );
            let cookie = stacklab_proxy::session::set_cookie(&code, idle.as_secs());
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                res.headers_mut().insert(header::SET_COOKIE, v);
            }
            res
        }
        Err(e) => create_error(e, "the session was not created"),
    }
}

/// A refused creation or re-provision as its JSON answer; `outcome` says what became of
/// the session when provisioning failed.
fn create_error(e: CreateError, outcome: &str) -> Response<RespBody> {
    match e {
        CreateError::Busy { message } => error(StatusCode::CONFLICT, "session_busy", message),
        CreateError::Invalid { field, message } => {
            field_error(StatusCode::BAD_REQUEST, "invalid_choice", &field, message)
        }
        CreateError::Unavailable { field, message } => field_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            &field,
            message,
        ),
        CreateError::RateLimited {
            limit,
            retry_after_s,
        } => {
            let mut res = error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "at most {limit} new sessions per minute from one address (an IPv6 /64 \
                     counts as one); the next is possible in {retry_after_s} s"
                ),
            );
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s));
            res
        }
        CreateError::OutOfCapacity { limit } => {
            let mut res = error(
                StatusCode::SERVICE_UNAVAILABLE,
                "out_of_capacity",
                format!(
                    "this server already runs {limit} sessions; try again when some have ended"
                ),
            );
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
            res
        }
        CreateError::ClientCapacity { limit } => error(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_sessions",
            format!(
                "this address already has {limit} live sessions (control.max_live_per_client; an IPv6 /64 counts as one); end one (DELETE /api/session) or wait until one expires"
            ),
        ),
        CreateError::ReprovisionLimit { limit } => error(
            StatusCode::TOO_MANY_REQUESTS,
            "reprovision_limit",
            format!(
                "this session was made again {limit} times (control.max_reprovisions_per_session); start a new session instead"
            ),
        ),
        CreateError::Failed {
            field,
            message,
            steps,
        } => {
            let mut body = ErrorBody::new("provisioning_failed", format!("{message}; {outcome}"));
            if let Some(f) = field {
                body = body.with_field(f);
            }
            let mut v: Value = serde_json::from_slice(&body.to_json()).unwrap_or_default();
            v["steps"] = serde_json::to_value(steps).unwrap_or_default();
            ok_json(StatusCode::SERVICE_UNAVAILABLE, &v)
        }
        CreateError::Registry(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "registry",
            format!("the session could not be recorded: {e}"),
        ),
    }
}

async fn file_bug(
    control: &Arc<Control>,
    s: Arc<Session>,
    req: Request<Incoming>,
) -> Response<RespBody> {
    let body = match json_body(req, MAX_BODY.max(control.cfg.max_bug_bytes + 1024)).await {
        Ok(b) => b,
        Err(res) => return res,
    };
    let text = |field: &str, max: usize| -> Result<String, Response<RespBody>> {
        match body.get(field) {
            Some(Value::String(t)) if !t.trim().is_empty() && t.len() <= max => {
                Ok(t.trim().to_owned())
            }
            Some(Value::String(t)) if t.len() > max => Err(field_error(
                StatusCode::BAD_REQUEST,
                "invalid",
                field,
                format!("`{field}` is longer than {max} bytes"),
            )),
            _ => Err(field_error(
                StatusCode::BAD_REQUEST,
                "invalid",
                field,
                format!("give `{field}` as non-empty text"),
            )),
        }
    };
    if let Some(extra) = body
        .as_object()
        .and_then(|o| o.keys().find(|k| *k != "title" && *k != "description"))
    {
        return field_error(
            StatusCode::BAD_REQUEST,
            "invalid",
            extra,
            format!("`{extra}` is not part of a bug report; send title and description"),
        );
    }
    let title = match text("title", 200) {
        Ok(t) => t,
        Err(res) => return res,
    };
    let description = match text("description", control.cfg.max_bug_bytes) {
        Ok(t) => t,
        Err(res) => return res,
    };
    let _one = control.bugs_lock.lock().await;
    let limits = &control.cfg.bugs;
    let counts = tokio::try_join!(
        control.registry.count_bugs(Some(&s.id)),
        control.registry.count_bugs(None)
    );
    // A refusal is counted under the limit that caused it.
    let refuse = |limit: &str, status: StatusCode, code: &str, message: String| {
        control
            .metrics
            .bugs_refused
            .with_label_values(&[limit])
            .inc();
        error(status, code, message)
    };
    match counts {
        Ok((mine, _)) if mine as u64 >= limits.per_session => {
            return refuse(
                "session",
                StatusCode::TOO_MANY_REQUESTS,
                "bug_limit",
                format!(
                    "this session has filed {} reports (control.max_bugs_per_session); add to one of them in a new session if something else goes wrong",
                    limits.per_session
                ),
            );
        }
        Ok((_, all)) if all as u64 >= limits.total => {
            return refuse(
                "total",
                StatusCode::SERVICE_UNAVAILABLE,
                "out_of_capacity",
                format!(
                    "{} reports are waiting to be read (control.max_bugs); try again later",
                    limits.total
                ),
            );
        }
        Ok(_) => {}
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "registry",
                format!(
                    "the report could not be stored: {}",
                    crate::redact_url(&e.to_string())
                ),
            )
        }
    }
    let requests = control.captured(&s.id, 20).await;
    let row = crate::registry::BugRow {
        id: crate::seal::session_code()[..12].to_owned(),
        session: s.id.clone(),
        created_ms: control.clock.now_ms() as i64,
        title,
        description,
        stack: s.stack_json().to_string(),
        requests: Value::Array(requests).to_string(),
    };
    match control.registry.insert_bug(&row).await {
        Ok(()) => {
            control.metrics.bugs.inc();
            ok_json(StatusCode::CREATED, &json!({"id": row.id}))
        }
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "registry",
            format!(
                "the report could not be stored: {}",
                crate::redact_url(&e.to_string())
            ),
        ),
    }
}

impl Control {
    /// GET with the admin token, JSON answer; `None` on any failure (best effort).
    pub async fn admin_get(&self, url: &str) -> Option<Value> {
        let req = Request::get(url)
            .header(
                header::AUTHORIZATION,
                format!("Bearer {}", self.admin_token.expose()),
            )
            .body(http_body_util::Full::new(Bytes::new()))
            .ok()?;
        self.json_answer(req).await
    }

    /// Sends `req` with a two-second limit; the JSON body of a successful answer, `None` on
    /// any failure.
    async fn json_answer(&self, req: Request<http_body_util::Full<Bytes>>) -> Option<Value> {
        let res = tokio::time::timeout(Duration::from_secs(2), self.http.request(req))
            .await
            .ok()?
            .ok()?;
        if !res.status().is_success() {
            return None;
        }
        let body = res.into_body().collect().await.ok()?.to_bytes();
        serde_json::from_slice(&body).ok()
    }

    pub(crate) fn proxy_urls(&self) -> Vec<String> {
        let mut v = self.cfg.proxies.clone();
        if let Some(p) = self.proxies.get() {
            v.extend(p.iter().cloned());
        }
        v
    }

    /// The session's captured requests from every proxy, newest first.
    pub async fn captured(&self, id: &str, limit: usize) -> Vec<Value> {
        let mut all = Vec::new();
        for p in self.proxy_urls() {
            if let Some(Value::Array(items)) = self
                .admin_get(&format!("{p}/admin/sessions/{id}/requests?limit={limit}"))
                .await
            {
                all.extend(items);
            }
        }
        all.sort_by(|a, b| b["at_unix_ms"].as_u64().cmp(&a["at_unix_ms"].as_u64()));
        all.truncate(limit);
        all
    }

    /// The session's cache view, asked of a backend instance the way the proxy would.
    async fn cache_view(&self, s: &Session) -> Option<Value> {
        let pool = self.routes.pool(&s.pool)?;
        let pinned = s.member();
        let member = pool
            .members
            .iter()
            .find(|m| Some(&m.id) == pinned.as_ref())
            .or_else(|| pool.members.first())?;
        let req = Request::get(format!("http://{}/api/cache", member.addr))
            .header("x-stacklab-session", &s.id)
            .body(http_body_util::Full::new(Bytes::new()))
            .ok()?;
        self.json_answer(req).await
    }

    /// Proxies, pools with each member's live state (from the first proxy that answers),
    /// instances, and — for a session — where its database and cache are.
    pub async fn topology(&self, session: Option<&Session>) -> Value {
        let instances = self.instances.list();
        let mut live = None;
        for p in self.proxy_urls() {
            if let Some(v) = self.admin_get(&format!("{p}/admin/pools")).await {
                live = Some(v);
                break;
            }
        }
        let own_drill = session.and_then(|s| self.drills.of_session(&s.id));
        let pools: Vec<Value> = self
            .routes
            .pools()
            .into_iter()
            // A session sees the shared pools and its own drill pool, not others' drills.
            .filter(|p| {
                session.is_none()
                    || self.drills.runtime_of(&p.name).is_none()
                    || own_drill.as_deref() == Some(p.name.as_str())
            })
            .map(|p| {
                let live_pool = live.as_ref().and_then(|l| l["pools"].as_array()?.iter().find(|lp| lp["name"] == p.name.as_str()).cloned());
                let members: Vec<Value> = p
                    .members
                    .iter()
                    .map(|m| {
                        let lm = live_pool.as_ref().and_then(|lp| lp["members"].as_array()?.iter().find(|x| x["id"] == m.id.as_str()).cloned()).unwrap_or_default();
                        let inst = instances.iter().find(|i| i.id == m.id);
                        let state = lm["state"].as_str().unwrap_or(if m.draining { "draining" } else { "unknown" }).to_owned();
                        json!({
                            "id": m.id, "addr": m.addr,
                            "kind": inst.map_or("external", |i| i.kind),
                            "pid": inst.map(|i| i.pid),
                            "state": state,
                            "healthy": state == "healthy",
                            "in_flight": lm["in_flight"], "ewma_ms": lm["ewma_ms"], "requests": lm["requests"], "failures": lm["failures"],
                        })
                    })
                    .collect();
                let drill = self.drills.runtime_of(&p.name).is_some();
                json!({"name": p.name, "algorithm": p.algorithm.as_str(), "members": members, "drill": drill})
            })
            .collect();
        let mut v = json!({
            "drills": self.cfg.drills_from_ui,
            "drill_limits": {
                "instances": self.cfg.drills.instances,
                "max_instances": self.cfg.drills.max_instances,
                "max_pools": self.cfg.drills.max_pools,
                "pools_running": self.drills.len(),
            },
            "proxies": self.proxy_urls().len(),
            "proxy": {"addr": self.edge.get(), "protocols": ["h1", "h2", "h3"]},
            "pools": pools,
            "sessions": self.sessions.len(),
        });
        if let Some(s) = session {
            let inner = s.snapshot();
            v["session"] = json!({
                "id": s.id, "pool": s.serving_pool(), "runtime_pool": s.pool,
                "drill_pool": own_drill, "member": s.member(), "provisioner": s.choices.provisioner,
                "database": inner.resources.get("database").cloned().unwrap_or_else(|| json!({"engine": s.choices.database})),
                "cache": inner.resources.get("cache").cloned().unwrap_or_else(|| json!({"engine": s.choices.cache})),
            });
        }
        v
    }
}

/// `GET /api/session/events`: the session's events as SSE, plus captured requests and cache
/// changes polled while somebody watches (every second, by one poller per session however many
/// of its streams are open: [`watch`]; nothing is polled for nobody).
fn events(control: &Arc<Control>, s: Arc<Session>) -> Response<RespBody> {
    use std::sync::atomic::Ordering::SeqCst;
    // At most `control.max_event_streams_per_session` open at once.
    let max = control.cfg.max_event_streams;
    if s.streams.fetch_add(1, SeqCst) >= max {
        s.streams.fetch_sub(1, SeqCst);
        control.metrics.streams_refused.inc();
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_streams",
            format!(
                "this session has {max} event streams open (control.max_event_streams_per_session); close a tab that shows it, or wait a second for a closed one to be noticed"
            ),
        );
    }
    control.metrics.streams.inc();
    /// Gives the stream's place back however its task ends.
    struct Open(Arc<Session>, prometheus::IntGauge);
    impl Drop for Open {
        fn drop(&mut self) {
            self.0.streams.fetch_sub(1, SeqCst);
            self.1.dec();
        }
    }
    let open = Open(Arc::clone(&s), control.metrics.streams.clone());
    let (tx, rx) = tokio::sync::mpsc::channel::<String>(64);
    // Subscribed before the poller may start, so this stream misses none of its events.
    let mut sub = s.events.subscribe();
    watch(control, &s);
    let control = Arc::clone(control);
    tokio::spawn(async move {
        let _open = open;
        let mut first = format!(
            ": stacklab events for this session\nretry: 2000\n\n{}",
            crate::events::Event::State(s.snapshot().state).frame()
        );
        if let Some(view) = s.watch.last_cache() {
            first += &crate::events::Event::Cache(view).frame();
        }
        let _ = tx.send(first).await;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                ev = sub.recv() => match ev {
                    Ok(ev) => {
                        let end = matches!(ev, crate::events::Event::Expired);
                        if tx.send(ev.frame()).await.is_err() || end { return; }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return,
                },
                // A comment line: keeps the stream alive and notices a gone client.
                _ = tick.tick() => if tx.send(":\n\n".to_owned()).await.is_err() { return; },
                () = control.shutdown.cancelled() => return,
            }
        }
    });
    let body = stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|t| (Ok(Frame::data(Bytes::from(t))), rx))
    });
    let mut res = Response::new(StreamBody::new(body).boxed_unsync());
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// The session's one poller while any of its event streams is open: every second, the
/// requests captured since the last look and the cache view when it changed, published on the
/// session's event channel to all of its streams. Started by the first stream; it stops at the
/// first tick that finds none open.
fn watch(control: &Arc<Control>, s: &Arc<Session>) {
    use crate::events::Event;
    use std::sync::atomic::Ordering::SeqCst;
    if !s.watch.claim() {
        return;
    }
    control.metrics.stream_pollers.inc();
    let (control, s) = (Arc::clone(control), Arc::clone(s));
    tokio::spawn(async move {
        // Requests captured before anybody watched are the inspector's, not news.
        let mut seen: HashSet<String> = request_ids(&control.captured(&s.id, 100).await);
        let mut last_cache: Option<Value> = None;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = control.shutdown.cancelled() => break,
            }
            if s.streams.load(SeqCst) == 0 {
                // Nobody to tell: a stream that opens later gets a fresh view, not this one.
                last_cache = None;
                s.watch.forget_cache();
                s.watch.release();
                // A stream that opened between the look and the release found a poller
                // running and started none: carry on for it, unless it started one after all.
                if s.streams.load(SeqCst) == 0 || !s.watch.claim() {
                    control.metrics.stream_pollers.dec();
                    return;
                }
            }
            if control.sessions.get(&s.id).is_none() {
                let _ = s.events.send(Event::Expired);
                break;
            }
            let recent = control.captured(&s.id, 20).await;
            for r in recent.iter().rev() {
                if r["request_id"]
                    .as_str()
                    .is_some_and(|id| !seen.contains(id))
                {
                    let _ = s.events.send(Event::Request(r.clone()));
                }
            }
            // What the newest 20 hold is all that can come again: the set stays bounded.
            seen = request_ids(&recent);
            if s.snapshot().state == "ready" {
                if let Some(view) = control.cache_view(&s).await {
                    // Remaining TTLs tick every second; a change is anything else.
                    let mut key = view.clone();
                    if let Some(items) = key["items"].as_array_mut() {
                        for i in items {
                            i["ttl_ms"] = Value::Null;
                        }
                    }
                    if last_cache.as_ref() != Some(&key) {
                        last_cache = Some(key);
                        s.watch.set_last_cache(view.clone());
                        let _ = s.events.send(Event::Cache(view));
                    }
                }
            }
        }
        s.watch.forget_cache();
        s.watch.release();
        control.metrics.stream_pollers.dec();
    });
}

fn request_ids(captured: &[Value]) -> HashSet<String> {
    captured
        .iter()
        .filter_map(|r| r["request_id"].as_str().map(str::to_owned))
        .collect()
}

impl Control {
    /// The provisioner called `name`, or `unknown`.
    fn known_provisioner(&self, name: &str) -> Result<&dyn crate::provision::Provisioner, String> {
        self.provisioners
            .get(name)
            .map(|p| p.as_ref())
            .ok_or_else(|| "unknown".to_owned())
    }
}

impl crate::choices::Offer for Control {
    fn provisioner(&self, name: &str) -> Result<(), String> {
        self.known_provisioner(name)?.available()
    }
    fn database(
        &self,
        provisioner: &str,
        engine: stacklab_types::stack::DatabaseEngine,
    ) -> Result<(), String> {
        self.known_provisioner(provisioner)?.database(engine)
    }
    fn cache(
        &self,
        provisioner: &str,
        engine: stacklab_types::stack::CacheEngine,
    ) -> Result<(), String> {
        self.known_provisioner(provisioner)?.cache(engine)
    }
}
