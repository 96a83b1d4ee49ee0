//! The HTTP face of the backend: REST routes, GraphQL, and the internal endpoints control uses.
//!
//! | route | what |
//! |---|---|
//! | `GET /healthz` | liveness, for the proxy's active checks; `limits`: the counters of [`crate::guard`] |
//! | `POST /api/users`, `GET /api/users?q=&limit=&offset=` | create; search and list |
//! | `GET`, `PATCH`, `DELETE /api/users/{id}` | one user |
//! | `POST /api/users/{id}/verify-password` | `{"password"}` → `{"ok": bool}` |
//! | `GET /api/cache`, `PUT /api/cache/policy`, `DELETE /api/cache` | the session's cache |
//! | `GET /api/analysis`, `POST /api/analysis/benchmark` | size, rows, speed |
//! | `POST /graphql` (another method: 405; no GraphiQL page, it loaded scripts from a CDN) | GraphQL |
//! | `DELETE /internal/sessions/{code}` | forget a session: its descriptor, its connections (runtime credential: `401` without it, `403` when wrong) |
//!
//! Data responses carry `x-stacklab-cache` and `Server-Timing` (`backend`, `cache`, `db`).
//! Bodies must be JSON (`415` otherwise), within `limits.max_body_bytes` (`413`); unknown
//! fields, wrong types and invalid UTF-8 get `400` naming what is wrong.

use crate::error::ApiError;
use crate::service::{CreateUser, Session, Trace, UpdateUser};
use crate::App;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde::Serialize;
use std::sync::Arc;
use std::time::Instant;

pub type Body = Full<Bytes>;

/// Answers one request.
pub async fn handle(app: Arc<App>, req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let trace = Arc::new(Trace::default());
    let result = route(&app, req, &trace).await;
    let mut res = match result {
        Ok(r) => r,
        Err(e) => {
            if e.status().is_server_error() {
                tracing::warn!(error = %e, "request failed");
            }
            let mut res = json(e.status(), e.json());
            if matches!(e, ApiError::Unauthorized) {
                res.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            if matches!(e, ApiError::Busy(_)) {
                res.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(crate::guard::RETRY_AFTER_SECS),
                );
            }
            res
        }
    };
    let t = trace.snapshot();
    let h = res.headers_mut();
    if let Some(outcome) = t.outcome {
        h.insert(
            "x-stacklab-cache",
            HeaderValue::from_static(outcome.as_str()),
        );
    }
    let timing = format!(
        "backend;dur={:.3}, cache;dur={:.3}, db;dur={:.3}",
        started.elapsed().as_secs_f64() * 1000.0,
        t.cache.as_secs_f64() * 1000.0,
        t.db.as_secs_f64() * 1000.0
    );
    if let Ok(v) = HeaderValue::from_str(&timing) {
        h.insert("server-timing", v);
    }
    res
}

fn json(status: StatusCode, body: Bytes) -> Response<Body> {
    let mut res = Response::new(Full::new(body));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

fn ok<T: Serialize>(status: StatusCode, value: &T) -> Result<Response<Body>, ApiError> {
    let body = serde_json::to_vec(value).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(json(status, Bytes::from(body)))
}

async fn read_json<T: serde::de::DeserializeOwned>(
    app: &App,
    req: Request<Incoming>,
) -> Result<T, ApiError> {
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        });
    if !is_json {
        return Err(ApiError::UnsupportedMediaType);
    }
    let limit = app.config.limits.max_body_bytes;
    let bytes = read_limited(req.into_body(), limit).await?;
    parse_json(&bytes)
}

/// Past the limit, a body is still read (and dropped) up to this much, for at most
/// [`DRAIN_TIME`], before the 413 goes out: a proxy streaming the body to us then finishes
/// writing and reads our answer, where closing early would reset the connection under it
/// (and the client would see a 502 instead of the 413).
const DRAIN_BYTES: usize = 16 << 20;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(10);

/// The body, or `TooLarge` when it has more than `limit` bytes.
pub(crate) async fn read_limited(mut body: Incoming, limit: usize) -> Result<Bytes, ApiError> {
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0usize;
    let read_err = |e: hyper::Error| ApiError::BadRequest {
        message: format!("the body could not be read ({e}); send it again"),
    };
    while let Some(frame) = body.frame().await {
        let data = match frame.map_err(read_err)?.into_data() {
            Ok(d) => d,
            Err(_) => continue, // trailers
        };
        seen += data.len();
        if seen > limit {
            let drain = async {
                while seen <= DRAIN_BYTES {
                    match body.frame().await {
                        Some(Ok(f)) => seen += f.into_data().map_or(0, |d| d.len()),
                        _ => break,
                    }
                }
            };
            let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
            return Err(ApiError::TooLarge(limit));
        }
        buf.extend_from_slice(&data);
    }
    Ok(buf.freeze())
}

/// Parses JSON and names the field at fault in the error.
pub fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if std::str::from_utf8(bytes).is_err() {
        return Err(ApiError::BadRequest {
            message: "the body is not valid UTF-8; send UTF-8 JSON".into(),
        });
    }
    serde_json::from_slice(bytes).map_err(|e| {
        let msg = e.to_string();
        // serde names unknown and missing fields in backticks: `field`.
        let field = msg
            .split('`')
            .nth(1)
            .filter(|_| msg.contains("field"))
            .map(str::to_owned);
        match field {
            Some(f) => ApiError::invalid(f, format!("{msg}; fix the body and send it again")),
            None => ApiError::BadRequest {
                message: format!("the body is not the JSON this takes: {msg}"),
            },
        }
    })
}

fn session_code(req: &Request<Incoming>) -> Result<String, ApiError> {
    let code = req
        .headers()
        .get("x-stacklab-session")
        .and_then(|v| v.to_str().ok())
        .ok_or(ApiError::SessionMissing)?;
    if !(16..=64).contains(&code.len()) || !code.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ApiError::SessionExpired);
    }
    Ok(code.to_owned())
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<std::borrow::Cow<'a, str>> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains(['%', '+']) {
        return std::borrow::Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'+', _) => out.push(b' '),
            (b'%', Some(v)) => {
                out.push(v);
                i += 2;
            }
            (c, _) => out.push(c),
        }
        i += 1;
    }
    std::borrow::Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

fn int_param(query: &str, name: &'static str) -> Result<Option<i64>, ApiError> {
    match query_param(query, name) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .map(Some)
            .map_err(|_| ApiError::invalid(name, format!("{name} must be a whole number"))),
    }
}

fn user_id(segment: &str) -> Result<i64, ApiError> {
    segment
        .parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::invalid("id", "a user id is a positive whole number"))
}

async fn route(
    app: &Arc<App>,
    req: Request<Incoming>,
    trace: &Arc<Trace>,
) -> Result<Response<Body>, ApiError> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let method = req.method().clone();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();

    match (&method, segments.as_slice()) {
        (&Method::GET, ["healthz"]) => {
            return ok(
                StatusCode::OK,
                &serde_json::json!({"status": "ok", "limits": app.sessions.guards.snapshot()}),
            )
        }
        (&Method::DELETE, ["internal", "sessions", code]) => {
            let offered = stacklab_types::secret::bearer(req.headers());
            if offered.is_none() {
                return Err(ApiError::Unauthorized);
            }
            if !app.credential.admits(offered) {
                return Err(ApiError::Forbidden);
            }
            app.sessions.close(code).await;
            return ok(StatusCode::OK, &serde_json::json!({"closed": code}));
        }
        _ => {}
    }
    if segments.first() != Some(&"api") && segments.first() != Some(&"graphql") {
        return Err(ApiError::NoRoute(path));
    }
    let code = session_code(&req)?;
    let session = app.sessions.get(&code).await?;

    match (&method, &segments[..]) {
        (&Method::POST, ["graphql"]) => graphql(app, req, session, trace).await,
        (&Method::POST, ["api", "users"]) => {
            let input: CreateUser = read_json(app, req).await?;
            ok(StatusCode::CREATED, &session.create(input, trace).await?)
        }
        (&Method::GET, ["api", "users"]) => {
            let q = query_param(&query, "q");
            let page = session
                .list(
                    q.as_deref(),
                    int_param(&query, "limit")?,
                    int_param(&query, "offset")?,
                    trace,
                )
                .await?;
            ok(StatusCode::OK, &page)
        }
        (&Method::GET, ["api", "users", id]) => {
            ok(StatusCode::OK, &session.get(user_id(id)?, trace).await?)
        }
        (&Method::PATCH, ["api", "users", id]) => {
            let id = user_id(id)?;
            let input: UpdateUser = read_json(app, req).await?;
            ok(StatusCode::OK, &session.update(id, input, trace).await?)
        }
        (&Method::DELETE, ["api", "users", id]) => {
            session.delete(user_id(id)?, trace).await?;
            ok(StatusCode::OK, &serde_json::json!({"deleted": true}))
        }
        (&Method::POST, ["api", "users", id, "verify-password"]) => {
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Body {
                password: String,
            }
            let id = user_id(id)?;
            let b: Body = read_json(app, req).await?;
            ok(
                StatusCode::OK,
                &serde_json::json!({"ok": session.verify_password(id, &b.password, trace).await?}),
            )
        }
        (&Method::GET, ["api", "cache"]) => cache_view(&session).await,
        (&Method::PUT, ["api", "cache", "policy"]) => {
            #[derive(serde::Deserialize)]
            #[serde(deny_unknown_fields)]
            struct Body {
                policy: String,
            }
            let b: Body = read_json(app, req).await?;
            // One canonical name everywhere (CONTRACT.md, "Cache policies"): the engine gets,
            // the view shows and control records `allkeys-lfu` for ` ALLKEYS-LFU `, so the
            // registry and the engine never disagree; anything else is refused by the engine.
            let policy = crate::cache::canonical_policy(&b.policy);
            session.cache.set_policy(&policy).await?;
            app.sessions
                .cache_policy_changed(&session.descriptor.session, &policy)
                .await;
            cache_view(&session).await
        }
        (&Method::DELETE, ["api", "cache"]) => {
            session.cache.flush().await?;
            cache_view(&session).await
        }
        (&Method::GET, ["api", "analysis"]) => crate::analysis::overview(&session).await,
        (&Method::POST, ["api", "analysis", "benchmark"]) => {
            let input: crate::analysis::BenchmarkInput = read_json(app, req).await?;
            let _slot = app.sessions.guards.benchmark(&code)?;
            crate::analysis::benchmark(&session, &app.config.limits, input).await
        }
        (_, ["api", "users"])
        | (_, ["api", "users", _])
        | (_, ["api", "cache"])
        | (_, ["graphql"]) => Err(ApiError::MethodNotAllowed),
        _ => Err(ApiError::NoRoute(path)),
    }
}

async fn cache_view(session: &Session) -> Result<Response<Body>, ApiError> {
    let items = session.cache.items(crate::cache::MAX_LISTED_ITEMS).await?;
    let stats = session.cache.stats().await?;
    let policy = session.cache.policy().await?;
    ok(
        StatusCode::OK,
        &serde_json::json!({
            "engine": session.cache.engine(),
            "policy": policy.policy,
            "policies": policy.policies,
            "changeable": policy.changeable,
            "note": policy.note,
            "items": items,
            "stats": stats,
        }),
    )
}

async fn graphql(
    app: &Arc<App>,
    req: Request<Incoming>,
    session: Arc<Session>,
    trace: &Arc<Trace>,
) -> Result<Response<Body>, ApiError> {
    let request: async_graphql::Request = read_json(app, req).await?;
    let response = app
        .schema
        .execute(request.data(session).data(Arc::clone(trace)))
        .await;
    // Refused before anything ran (a parse or validation error, a depth, complexity or field
    // limit): no error has a path, there is no data. The request itself is bad, so HTTP says
    // so (as GraphQL over HTTP has it), and the body carries GraphQL's `errors` beside the API's
    // usual `error`. Errors of fields that ran keep GraphQL's 200.
    if response.data == async_graphql::Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| e.path.is_empty())
    {
        let mut v =
            serde_json::to_value(&response).map_err(|e| ApiError::Internal(e.to_string()))?;
        let first = &response.errors[0].message;
        let more = match response.errors.len() {
            1 => String::new(),
            n => format!(" (and {} more)", n - 1),
        };
        let refused = ApiError::invalid(
            "query",
            format!("the GraphQL request was refused before it ran: {first}{more}; fix the query and send it again"),
        );
        v["error"] = serde_json::to_value(refused.body().error).unwrap_or_default();
        return ok(StatusCode::BAD_REQUEST, &v);
    }
    ok(StatusCode::OK, &response)
}
