//! A descriptor server standing in for control's admin API, on `127.0.0.1:0`.
//!
//! It answers the two admin paths a runtime may use, with the runtime credential it hands
//! out, as control does:
//!
//! | request | answer |
//! |---|---|
//! | `GET /admin/stacks/{code}` | `200` the descriptor's wire JSON; `404 session_expired` |
//! | `PUT /admin/stacks/{code}/cache-policy {"policy"}` | `200 {"policy"}`, recorded |
//! | no `Authorization: Bearer` | `401 unauthorized` with `WWW-Authenticate: Bearer` |
//! | a wrong credential, or any other path | `403 forbidden` |
//!
//! Tests insert and remove descriptors, mark one as still provisioning (`503 provisioning`),
//! and read back what the runtime did: how often it fetched a descriptor, and every policy
//! change it recorded. A runtime that would rely on more of control than this fails here.

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use stacklab_types::stack::StackDescriptor;
use stacklab_types::Secret;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct State {
    stacks: HashMap<String, StackDescriptor>,
    provisioning: HashSet<String>,
    fetches: HashMap<String, usize>,
    policies: Vec<(String, String)>,
    refused: usize,
    held: HashMap<String, tokio::sync::watch::Receiver<bool>>,
}

/// A session's descriptor fetches wait while this lives (see [`DescriptorServer::hold`]).
#[derive(Debug)]
pub struct Hold(tokio::sync::watch::Sender<bool>);

impl Drop for Hold {
    fn drop(&mut self) {
        let _ = self.0.send(true);
    }
}

/// The stand-in for control's admin API.
pub struct DescriptorServer {
    pub addr: SocketAddr,
    credential: Secret,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for DescriptorServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DescriptorServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl DescriptorServer {
    /// Listens on `127.0.0.1:0` with a fresh random runtime credential.
    pub async fn start() -> DescriptorServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let addr = listener.local_addr().expect("its address");
        let credential = Secret::new(crate::unique("runtime-credential-"));
        let state = Arc::new(Mutex::new(State::default()));
        let (cred, st) = (credential.clone(), Arc::clone(&state));
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (cred, st) = (cred.clone(), Arc::clone(&st));
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let (cred, st) = (cred.clone(), Arc::clone(&st));
                        async move { Ok::<_, std::convert::Infallible>(answer(&cred, &st, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        DescriptorServer {
            addr,
            credential,
            state,
            task,
        }
    }

    /// `http://127.0.0.1:PORT`, the `--control-url` of an instance.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The runtime credential instances get on their stdin.
    pub fn credential(&self) -> &Secret {
        &self.credential
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Serves `d` from now on (replacing a descriptor of the same session).
    pub fn insert(&self, d: &StackDescriptor) {
        let mut s = self.state();
        s.provisioning.remove(&d.session);
        s.stacks.insert(d.session.clone(), d.clone());
    }

    /// The session ends: its descriptor is `404 session_expired` from now on.
    pub fn remove(&self, session: &str) {
        let mut s = self.state();
        s.stacks.remove(session);
        s.provisioning.remove(session);
    }

    /// The session's stack is still being made: `503 provisioning` until it is inserted.
    pub fn provisioning(&self, session: &str) {
        self.state().provisioning.insert(session.to_owned());
    }

    /// Fetches of the session's descriptor wait (counted, unanswered) until the [`Hold`] is
    /// dropped: a test's way to know a request is in flight inside the instance.
    pub fn hold(&self, session: &str) -> Hold {
        let (tx, rx) = tokio::sync::watch::channel(false);
        self.state().held.insert(session.to_owned(), rx);
        Hold(tx)
    }

    /// Waits until the session's descriptor was fetched `n` times; panics after `deadline`.
    pub async fn fetched(&self, session: &str, n: usize, deadline: std::time::Duration) {
        let start = tokio::time::Instant::now();
        while self.fetches(session) < n {
            assert!(
                start.elapsed() < deadline,
                "the session's descriptor was fetched {} times in {deadline:?}, not {n}",
                self.fetches(session)
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// How many times the session's descriptor was fetched with the right credential.
    pub fn fetches(&self, session: &str) -> usize {
        self.state().fetches.get(session).copied().unwrap_or(0)
    }

    /// Every cache-policy change recorded, `(session, policy)`, in order.
    pub fn policy_changes(&self) -> Vec<(String, String)> {
        self.state().policies.clone()
    }

    /// Requests refused (401/403): a runtime calling with no or a wrong credential, or
    /// calling a path its credential does not open.
    pub fn refused(&self) -> usize {
        self.state().refused
    }
}

impl Drop for DescriptorServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    json(
        status,
        serde_json::json!({"error": {"code": code, "message": message}}),
    )
}

fn json(status: StatusCode, v: serde_json::Value) -> Response<Full<Bytes>> {
    let mut res = Response::new(Full::new(Bytes::from(v.to_string())));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    res
}

async fn answer(
    credential: &Secret,
    state: &Mutex<State>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let refuse = |status, code, message| {
        state.lock().unwrap_or_else(|e| e.into_inner()).refused += 1;
        let mut res = error(status, code, message);
        if status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        res
    };
    let offered = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "));
    match offered {
        None => {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "send the runtime credential as `Authorization: Bearer <credential>`",
            )
        }
        Some(t) if !credential.matches(t) => {
            return refuse(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this is not the runtime credential",
            )
        }
        Some(_) => {}
    }
    let path = req.uri().path().to_owned();
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (req.method().clone(), segs.as_slice()) {
        (Method::GET, ["admin", "stacks", code]) => {
            let held = {
                let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
                *s.fetches.entry((*code).to_owned()).or_default() += 1;
                s.held.get(*code).cloned()
            };
            if let Some(mut released) = held {
                let _ = released.wait_for(|r| *r).await;
            }
            let s = state.lock().unwrap_or_else(|e| e.into_inner());
            if s.provisioning.contains(*code) {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "provisioning",
                    "the session's stack is still being made; try again in a moment",
                );
            }
            match s.stacks.get(*code) {
                Some(d) => json(StatusCode::OK, d.to_wire_json()),
                None => error(
                    StatusCode::NOT_FOUND,
                    "session_expired",
                    "no live session has this code",
                ),
            }
        }
        (Method::PUT, ["admin", "stacks", code, "cache-policy"]) => {
            let code = (*code).to_owned();
            let body = req.into_body().collect().await.map(|b| b.to_bytes());
            let policy = body
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .and_then(|v| v["policy"].as_str().map(str::to_owned));
            let Some(policy) = policy else {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid",
                    "send {\"policy\": \"...\"} as JSON",
                );
            };
            let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
            // As control does, the descriptor carries the new policy from now on.
            let Some(d) = s.stacks.get_mut(&code) else {
                return error(
                    StatusCode::NOT_FOUND,
                    "session_expired",
                    "no live session has this code",
                );
            };
            d.cache.policy.clone_from(&policy);
            s.policies.push((code, policy.clone()));
            json(StatusCode::OK, serde_json::json!({ "policy": policy }))
        }
        _ => refuse(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the runtime credential opens only GET /admin/stacks/{code} and PUT /admin/stacks/{code}/cache-policy",
        ),
    }
}
