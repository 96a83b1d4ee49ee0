//! Which sessions this instance serves, and their open connections.
//!
//! Many sessions share one backend instance. Each request names its session
//! (`x-stacklab-session`, set by the proxy); the instance resolves the session's stack
//! descriptor from a [`StackSource`] (control, or a fixed map in tests), opens the session's
//! store and cache once, and keeps them while the session is used. The set is bounded
//! (`max_sessions`, least recently used closed first), idle sessions are closed by a sweep,
//! and a descriptor is re-fetched after `descriptor_ttl` so a session control has ended stops
//! being served even if nobody told this instance.

use crate::config::BackendConfig;
use crate::error::ApiError;
use crate::service::Session;
use async_trait::async_trait;
use stacklab_types::stack::StackDescriptor;
use stacklab_types::Secret;
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, RwLock};
use tokio::time::Instant;

/// Where stack descriptors come from.
#[async_trait]
pub trait StackSource: Send + Sync + std::fmt::Debug {
    /// The session's descriptor, or `None` when the session does not exist (any more).
    async fn fetch(&self, session: &str) -> Result<Option<StackDescriptor>, ApiError>;

    /// The session's cache policy was changed (`PUT /api/cache/policy`): the source records
    /// it, so the session keeps it on another instance and after a restart. Best effort.
    async fn cache_policy_changed(&self, _session: &str, _policy: &str) {}
}

/// Descriptors held in memory: tests, and a backend run without control.
#[derive(Debug, Default)]
pub struct StaticStacks {
    map: RwLock<HashMap<String, StackDescriptor>>,
}

impl StaticStacks {
    pub fn insert(&self, d: StackDescriptor) {
        self.map
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(d.session.clone(), d);
    }
    pub fn remove(&self, session: &str) {
        self.map
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(session);
    }
}

#[async_trait]
impl StackSource for StaticStacks {
    async fn fetch(&self, session: &str) -> Result<Option<StackDescriptor>, ApiError> {
        Ok(self
            .map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(session)
            .cloned())
    }
}

/// Descriptors from control: `GET {base}/admin/stacks/{session}` with the admin token.
#[derive(Debug)]
pub struct ControlStacks {
    base: String,
    token: Secret,
    client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Empty<bytes::Bytes>,
    >,
}

impl ControlStacks {
    pub fn new(base: impl Into<String>, token: Secret) -> Self {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(hyper_util::client::legacy::connect::HttpConnector::new());
        Self {
            base: base.into().trim_end_matches('/').to_owned(),
            token,
            client,
        }
    }
}

#[async_trait]
impl StackSource for ControlStacks {
    async fn fetch(&self, session: &str) -> Result<Option<StackDescriptor>, ApiError> {
        use http_body_util::BodyExt;
        let unavailable = |reason: String| ApiError::Unavailable {
            engine: "control".into(),
            reason,
        };
        let req = http::Request::get(format!("{}/admin/stacks/{session}", self.base))
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", self.token.expose()),
            )
            .body(http_body_util::Empty::new())
            .map_err(|e| unavailable(e.to_string()))?;
        let res = self
            .client
            .request(req)
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        match res.status() {
            http::StatusCode::NOT_FOUND | http::StatusCode::GONE => Ok(None),
            s if s.is_success() => {
                let body = res
                    .into_body()
                    .collect()
                    .await
                    .map_err(|e| unavailable(e.to_string()))?
                    .to_bytes();
                serde_json::from_slice(&body)
                    .map(Some)
                    .map_err(|e| unavailable(format!("bad stack descriptor: {e}")))
            }
            s => Err(unavailable(format!("control answered {s}"))),
        }
    }

    async fn cache_policy_changed(&self, session: &str, policy: &str) {
        match self.put_policy(session, policy).await {
            Ok(s) if s.is_success() => {}
            Ok(s) => tracing::warn!(status = %s, "control did not record the cache policy change"),
            Err(e) => {
                tracing::warn!(error = %e, "cannot tell control about the cache policy change")
            }
        }
    }
}

impl ControlStacks {
    async fn put_policy(&self, session: &str, policy: &str) -> Result<http::StatusCode, String> {
        let body = serde_json::json!({ "policy": policy }).to_string();
        let req = http::Request::put(format!("{}/admin/stacks/{session}/cache-policy", self.base))
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", self.token.expose()),
            )
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(hyper_util::client::legacy::connect::HttpConnector::new());
        let res = client.request(req).await.map_err(|e| e.to_string())?;
        Ok(res.status())
    }
}

struct Open {
    session: Arc<Session>,
    fetched: Instant,
}

/// The open sessions of this instance.
pub struct Sessions {
    source: Arc<dyn StackSource>,
    config: Arc<BackendConfig>,
    /// The instance's bounds on hashing and benchmarks, shared by every session.
    pub guards: Arc<crate::guard::Guards>,
    open: Mutex<HashMap<String, Open>>,
    /// Opening is rare and slow (connects, schema): one at a time, so a burst of first
    /// requests for one session opens it once.
    opening: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("open", &self.len())
            .finish()
    }
}

impl Sessions {
    pub fn new(source: Arc<dyn StackSource>, config: Arc<BackendConfig>) -> Self {
        Self {
            source,
            guards: crate::guard::Guards::new(&config.limits),
            config,
            open: Mutex::new(HashMap::new()),
            opening: tokio::sync::Mutex::new(()),
        }
    }

    /// Tells the descriptor source a session's cache policy changed.
    pub async fn cache_policy_changed(&self, session: &str, policy: &str) {
        self.source.cache_policy_changed(session, policy).await;
    }

    pub fn len(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn fresh(&self, code: &str) -> Option<Arc<Session>> {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(code)
            .filter(|o| o.fetched.elapsed() < self.config.descriptor_ttl)
            .map(|o| Arc::clone(&o.session))
    }

    /// The session's open stack, opening it if needed.
    pub async fn get(&self, code: &str) -> Result<Arc<Session>, ApiError> {
        if let Some(s) = self.fresh(code) {
            s.touch();
            return Ok(s);
        }
        let _one_at_a_time = self.opening.lock().await;
        if let Some(s) = self.fresh(code) {
            s.touch();
            return Ok(s);
        }
        let Some(descriptor) = self.source.fetch(code).await? else {
            self.close(code).await;
            return Err(ApiError::SessionExpired);
        };
        let existing = self
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(code)
            .map(|o| Arc::clone(&o.session));
        if let Some(s) = existing.filter(|s| same_stack(&s.descriptor, &descriptor)) {
            self.open.lock().unwrap_or_else(|e| e.into_inner()).insert(
                code.to_owned(),
                Open {
                    session: Arc::clone(&s),
                    fetched: Instant::now(),
                },
            );
            s.touch();
            return Ok(s);
        }
        self.close(code).await;
        let session = Arc::new(self.connect(descriptor).await?);
        let evicted = {
            let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            let evicted = if open.len() >= self.config.max_sessions {
                open.iter()
                    .min_by_key(|(_, o)| o.session.last_used.load(Relaxed))
                    .map(|(k, _)| k.clone())
                    .and_then(|k| open.remove(&k))
            } else {
                None
            };
            open.insert(
                code.to_owned(),
                Open {
                    session: Arc::clone(&session),
                    fetched: Instant::now(),
                },
            );
            evicted
        };
        if let Some(o) = evicted {
            o.session.store.close().await;
        }
        Ok(session)
    }

    async fn connect(&self, descriptor: StackDescriptor) -> Result<Session, ApiError> {
        let store =
            crate::storage::connect(&descriptor.database, self.config.db_connections_per_session)
                .await
                .map_err(|e| ApiError::Unavailable {
                    engine: format!("{:?}", descriptor.database.engine).to_lowercase(),
                    reason: e.to_string(),
                })?;
        let cache = crate::cache::connect(&descriptor.cache).await?;
        Session::new(
            Arc::new(descriptor),
            store,
            cache,
            Arc::new(self.config.limits.clone()),
            Arc::clone(&self.guards),
        )
    }

    /// Closes a session's connections (it ended, or its stack changed).
    pub async fn close(&self, code: &str) {
        let removed = self
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(code);
        if let Some(o) = removed {
            o.session.store.close().await;
        }
    }

    /// Closes sessions idle longer than `session_idle`.
    pub async fn sweep(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let idle_ms = self.config.session_idle.as_millis() as u64;
        let stale: Vec<String> = {
            let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            open.iter()
                .filter(|(_, o)| now.saturating_sub(o.session.last_used.load(Relaxed)) > idle_ms)
                .map(|(k, _)| k.clone())
                .collect()
        };
        for code in stale {
            self.close(&code).await;
        }
    }
}

/// The same stack, but for a cache policy changed through this API (the open cache already
/// runs the new one): the session's connections and cache contents are kept.
fn same_stack(open: &StackDescriptor, fetched: &StackDescriptor) -> bool {
    let mut fetched = fetched.clone();
    fetched.cache.policy.clone_from(&open.cache.policy);
    *open == fetched
}

/// How a session is named in logs: a short one-way hash of its code, never the code itself
/// (the code is the cookie, a credential).
pub fn log_id(code: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(code.as_bytes());
    digest[..4].iter().map(|b| format!("{b:02x}")).collect()
}
