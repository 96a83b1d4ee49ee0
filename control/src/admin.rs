//! Control's admin API (bearer token), on the admin address it shares with the proxy in
//! `stacklab up`:
//!
//! | method and path | what it does |
//! |---|---|
//! | `GET /admin/routes` | control's route table: version, pools, session routes |
//! | `GET /admin/routes/feed?since=N` | the route feed: a snapshot (or the changes after N), then changes |
//! | `PUT /admin/pools/{pool}` / `DELETE …` | create or replace / remove a pool |
//! | `PUT /admin/pools/{pool}/members/{id}` / `DELETE …` / `POST …/drain` | change a member |
//! | `POST /admin/pools/{pool}/instances[?kind=container]` | start one more backend instance (a child process, or a Docker container) |
//! | `DELETE /admin/pools/{pool}/instances/{id}` | kill one (the failover drill) |
//! | `GET /admin/instances` | backend instances control runs |
//! | `GET /admin/topology` | proxies, pools, instances and their live state |
//! | `GET /admin/stacks/{id}` | a session's stack descriptor, with secrets (for backends) |
//! | `PUT /admin/stacks/{id}/cache-policy` | a backend records a cache policy a session changed |
//! | `POST /admin/sessions/touches` | a proxy's report of session use |
//! | `GET /admin/control/sessions` | live sessions with their expiry |
//! | `DELETE /admin/sessions/{id}` | end a session now |
//! | `POST /admin/control/reap` | run the reaper now |
//! | `GET /admin/bugs?limit=` | bug reports, newest first |
//!
//! Other admin paths (`GET /admin/pools`, `/admin/events`, captured requests, …) are the
//! proxy's. Without the token: `401`; the token is compared in constant time, never logged.

use crate::api::{error, json_body, ok_json};
use crate::sessions::EndReason;
use crate::Caller;
use crate::Control;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::{json, Value};
use stacklab_proxy::admin::{AdminExtension, AdminFuture};
use stacklab_proxy::body::RespBody;
use stacklab_types::routes::{MemberSpec, PoolSpec, RouteUpdate, TouchReport};
use std::sync::Arc;

/// Admin bodies (pool specs, touch reports of many sessions).
const MAX_ADMIN_BODY: usize = 4 * 1024 * 1024;

/// Whether control answers this admin request (the rest is the proxy's).
pub fn owns(method: &Method, path: &str) -> bool {
    let segs: Vec<&str> = path.trim_start_matches("/admin/").split('/').collect();
    if !path.starts_with("/admin/") {
        return false;
    }
    matches!(
        (method, segs.as_slice()),
        (&Method::GET, ["routes"])
            | (&Method::GET, ["routes", "feed"])
            | (&Method::PUT | &Method::DELETE, ["pools", _])
            | (&Method::PUT | &Method::DELETE, ["pools", _, "members", _])
            | (&Method::POST, ["pools", _, "members", _, "drain"])
            | (&Method::POST, ["pools", _, "instances"])
            | (&Method::DELETE, ["pools", _, "instances", _])
            | (&Method::GET, ["instances"])
            | (&Method::GET, ["topology"])
            | (&Method::GET, ["stacks", _])
            | (&Method::PUT, ["stacks", _, "cache-policy"])
            | (&Method::POST, ["sessions", "touches"])
            | (&Method::DELETE, ["sessions", _])
            | (_, ["control", ..])
            | (&Method::GET, ["bugs"])
    )
}

/// What a runtime instance's credential may do: fetch a session's stack descriptor and
/// record a cache policy the session changed.
fn runtime_may(method: &Method, path: &str) -> bool {
    let segs: Vec<&str> = path.trim_start_matches("/admin/").split('/').collect();
    path.starts_with("/admin/")
        && matches!(
            (method, segs.as_slice()),
            (&Method::GET, ["stacks", _]) | (&Method::PUT, ["stacks", _, "cache-policy"])
        )
}

/// Answers a request on the address backend containers on their own network reach
/// ([`crate::serve::runtime_listener`]): the runtime credential's two paths, nothing else, and
/// no other credential (the admin token has no business there).
pub async fn handle_runtime(control: &Arc<Control>, req: Request<Incoming>) -> Response<RespBody> {
    if !runtime_may(req.method(), req.uri().path()) {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            "this address serves backend instances only: GET /admin/stacks/{id} and PUT /admin/stacks/{id}/cache-policy",
        );
    }
    if control.caller(req.headers()) != Caller::Runtime {
        let mut res = error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send the runtime credential as `Authorization: Bearer <token>` (control hands it to each instance on stdin)",
        );
        res.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return res;
    }
    handle(control, req).await
}

/// Answers an admin request control owns (see [`owns`]), and every `/admin/` request that
/// carries a runtime's credential (the proxy's own paths included: 403).
pub async fn handle(control: &Arc<Control>, req: Request<Incoming>) -> Response<RespBody> {
    match control.caller(req.headers()) {
        Caller::Admin => {}
        Caller::Runtime if runtime_may(req.method(), req.uri().path()) => {}
        Caller::Runtime => {
            return error(
                StatusCode::FORBIDDEN,
                "forbidden",
                "the runtime credential reads stack descriptors and records cache policies only; this call needs the admin token",
            )
        }
        Caller::Nobody => {
            let mut res = error(StatusCode::UNAUTHORIZED, "unauthorized", "send the admin token as `Authorization: Bearer <token>` (admin.token, STACKLAB_ADMIN_TOKEN, or <data_dir>/admin.token)");
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return res;
        }
    }
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let method = req.method().clone();
    let segs: Vec<String> = path
        .trim_start_matches("/admin/")
        .split('/')
        .map(str::to_owned)
        .collect();
    let seg: Vec<&str> = segs.iter().map(String::as_str).collect();
    let param = |k: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
            .map(str::to_owned)
    };
    match (&method, seg.as_slice()) {
        (&Method::GET, ["routes"]) => {
            let snap = control.routes.snapshot();
            ok_json(
                StatusCode::OK,
                &serde_json::to_value(snap).unwrap_or_default(),
            )
        }
        (&Method::GET, ["routes", "feed"]) => {
            let since = match param("since").map(|v| v.parse::<u64>()) {
                None => None,
                Some(Ok(v)) => Some(v),
                Some(Err(_)) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "invalid",
                        "`since` is a table version (a number)",
                    )
                }
            };
            let followers = control.metrics.feed_followers.clone();
            let mut res = Response::new(control.routes.feed_body(
                since,
                control.shutdown.clone(),
                followers,
            ));
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-ndjson"),
            );
            res.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            res
        }
        (&Method::PUT, ["pools", name]) => {
            let name = (*name).to_owned();
            let mut v = match json_body(req, MAX_ADMIN_BODY).await {
                Ok(v) => v,
                Err(res) => return res,
            };
            if let Some(o) = v.as_object_mut() {
                o.entry("name")
                    .or_insert_with(|| Value::String(name.clone()));
            }
            let pool: PoolSpec = match serde_json::from_value(v) {
                Ok(p) => p,
                Err(e) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "invalid_json",
                        format!("the body is not a pool: {e}"),
                    )
                }
            };
            if pool.name != name {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid",
                    "the pool's `name` must match the path",
                );
            }
            if let Some(e) = stacklab_proxy::config::check_pool(&pool).into_iter().next() {
                return crate::api::field_error(
                    StatusCode::BAD_REQUEST,
                    "invalid",
                    &e.path,
                    e.message,
                );
            }
            let name = pool.name.clone();
            publish_and_keep(control, &name, RouteUpdate::PutPool { pool }).await
        }
        (&Method::DELETE, ["pools", name]) => {
            if control.runtimes.is_runtime_pool(name) || *name == "control" {
                return error(
                    StatusCode::CONFLICT,
                    "in_use",
                    format!("pool `{name}` is control's own; it cannot be removed"),
                );
            }
            publish_and_keep(
                control,
                name,
                RouteUpdate::RemovePool {
                    name: (*name).to_owned(),
                },
            )
            .await
        }
        (&Method::PUT, ["pools", pool, "members", id]) => {
            let v = match json_body(req, MAX_ADMIN_BODY).await {
                Ok(v) => v,
                Err(res) => return res,
            };
            let addr = v["addr"].as_str().unwrap_or_default().to_owned();
            let weight = match v
                .get("weight")
                .map(|w| w.as_u64().and_then(|w| u32::try_from(w).ok()))
            {
                None => 1,
                Some(Some(w)) => w,
                Some(None) => {
                    return crate::api::field_error(
                        StatusCode::BAD_REQUEST,
                        "invalid",
                        "weight",
                        "`weight` is a whole number from 1 to 4294967295",
                    )
                }
            };
            if let Err(e) = stacklab_proxy::config::check_member(id, &addr, weight) {
                return crate::api::field_error(
                    StatusCode::BAD_REQUEST,
                    "invalid",
                    &e.path,
                    e.message,
                );
            }
            let member = MemberSpec {
                id: (*id).to_owned(),
                addr,
                weight,
                draining: v["draining"].as_bool().unwrap_or(false),
            };
            publish_and_keep(
                control,
                pool,
                RouteUpdate::PutMember {
                    pool: (*pool).to_owned(),
                    member,
                },
            )
            .await
        }
        (&Method::POST, ["pools", pool, "members", id, "drain"]) => {
            let Some(m) = control
                .routes
                .pool(pool)
                .and_then(|p| p.members.into_iter().find(|m| m.id == *id))
            else {
                return error(
                    StatusCode::NOT_FOUND,
                    "no_member",
                    format!("no member `{id}` in pool `{pool}`"),
                );
            };
            publish_and_keep(
                control,
                pool,
                RouteUpdate::PutMember {
                    pool: (*pool).to_owned(),
                    member: MemberSpec {
                        draining: true,
                        ..m
                    },
                },
            )
            .await
        }
        (&Method::DELETE, ["pools", pool, "members", id]) => {
            publish_and_keep(
                control,
                pool,
                RouteUpdate::RemoveMember {
                    pool: (*pool).to_owned(),
                    id: (*id).to_owned(),
                },
            )
            .await
        }
        (&Method::POST, ["pools", pool, "instances"]) => {
            crate::api::start_instance(control, pool, &req).await
        }
        (&Method::DELETE, ["pools", pool, "instances", id]) => {
            crate::api::kill_instance(control, pool, id).await
        }
        (&Method::GET, ["instances"]) => ok_json(
            StatusCode::OK,
            &json!({"instances": control.instances.list()}),
        ),
        (&Method::GET, ["topology"]) => ok_json(StatusCode::OK, &control.topology(None).await),
        (&Method::GET, ["stacks", id]) => match control.stack_for_backend(id) {
            Ok(v) => ok_json(StatusCode::OK, &v),
            Err("provisioning") => error(
                StatusCode::SERVICE_UNAVAILABLE,
                "provisioning",
                "the session's stack is still being made; try again in a moment",
            ),
            Err(_) => error(
                StatusCode::NOT_FOUND,
                "session_expired",
                "no live session has this id",
            ),
        },
        (&Method::PUT, ["stacks", id, "cache-policy"]) => {
            let id = (*id).to_owned();
            let v = match json_body(req, MAX_ADMIN_BODY).await {
                Ok(v) => v,
                Err(res) => return res,
            };
            let Some(policy) = v["policy"].as_str() else {
                return crate::api::field_error(
                    StatusCode::BAD_REQUEST,
                    "invalid",
                    "policy",
                    "give `policy` as text",
                );
            };
            match control.set_cache_policy(&id, policy).await {
                Ok(()) => ok_json(StatusCode::OK, &json!({"policy": policy})),
                Err(e) => crate::api::field_error(StatusCode::BAD_REQUEST, "invalid", "policy", e),
            }
        }
        (&Method::POST, ["sessions", "touches"]) => {
            let v = match json_body(req, MAX_ADMIN_BODY).await {
                Ok(v) => v,
                Err(res) => return res,
            };
            match serde_json::from_value::<TouchReport>(v) {
                Ok(r) => {
                    control.touch(r).await;
                    ok_json(StatusCode::OK, &json!({"ok": true}))
                }
                Err(e) => error(
                    StatusCode::BAD_REQUEST,
                    "invalid_json",
                    format!("the body is not a touch report: {e}"),
                ),
            }
        }
        (&Method::DELETE, ["sessions", id]) => {
            let ended = control.end_session(id, EndReason::Deleted).await;
            if ended {
                ok_json(StatusCode::OK, &json!({"ended": id}))
            } else {
                error(
                    StatusCode::NOT_FOUND,
                    "no_session",
                    format!("no live session `{id}`"),
                )
            }
        }
        (&Method::GET, ["control", "sessions"]) => {
            let idle = control.sessions_cfg.idle_timeout.as_millis() as u64;
            let list: Vec<Value> = control
                .sessions
                .all()
                .iter()
                .map(|s| s.view(None, idle))
                .collect();
            ok_json(
                StatusCode::OK,
                &json!({"live": list.len(), "max_live": control.sessions_cfg.max_live, "sessions": list}),
            )
        }
        (&Method::POST, ["control", "reap"]) => {
            let ended = control.reap_once().await;
            let leftovers = control.reap_leftovers().await;
            let pools = control.stop_idle_pools().await;
            ok_json(
                StatusCode::OK,
                &json!({"ended": ended, "leftovers_removed": leftovers, "pools_stopped": pools}),
            )
        }
        (&Method::GET, ["bugs"]) => {
            let limit = param("limit")
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(100)
                .clamp(1, 1000);
            match control.registry.bugs(limit).await {
                Ok(rows) => {
                    let bugs: Vec<Value> = rows
                        .into_iter()
                        .map(|b| json!({
                            "id": b.id, "session": b.session, "created_at": b.created_ms, "title": b.title,
                            "description": b.description,
                            "stack": serde_json::from_str::<Value>(&b.stack).unwrap_or_default(),
                            "requests": serde_json::from_str::<Value>(&b.requests).unwrap_or_default(),
                        }))
                        .collect();
                    ok_json(StatusCode::OK, &json!({"bugs": bugs}))
                }
                Err(e) => error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "registry",
                    crate::redact_url(&e.to_string()),
                ),
            }
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("nothing at {method} {path}"),
        ),
    }
}

/// Applies an admin change to a pool and records the pool in the registry.
async fn publish_and_keep(
    control: &Control,
    pool: &str,
    update: RouteUpdate,
) -> Response<RespBody> {
    match control.routes.publish(update) {
        Ok(version) => {
            control.persist_pool(pool).await;
            ok_json(StatusCode::OK, &json!({"version": version}))
        }
        Err(e) => error(StatusCode::NOT_FOUND, "not_found", e),
    }
}

/// Control as the proxy's admin extension (`stacklab up`).
#[derive(Debug)]
pub struct Extension(pub Arc<Control>);

impl AdminExtension for Extension {
    fn handle(&self, req: Request<Incoming>) -> AdminFuture {
        let control = Arc::clone(&self.0);
        Box::pin(async move {
            let runtime = req.uri().path().starts_with("/admin/")
                && control.caller(req.headers()) == Caller::Runtime;
            if runtime || owns(req.method(), req.uri().path()) {
                Ok(handle(&control, req).await)
            } else {
                Err(req)
            }
        })
    }

    fn metrics(&self) -> String {
        self.0.metrics.encode()
    }
}
