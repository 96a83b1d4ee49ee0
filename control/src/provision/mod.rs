//! Provisioners: what makes (and removes) a session's database and cache.
//!
//! Each one reports its steps, with timings, to the session's event stream through
//! [`Steps`]; readiness means a real query succeeded with the session's own credentials, not
//! that a port opened. Teardown is idempotent and works from the session's resource id alone
//! (every name a provisioner makes is derived from it), so control can remove what a crash
//! left behind: [`Provisioner::leftovers`] lists the ids it still finds resources for.
//!
//! Provisioners never see the session code (the cookie, a credential): they get
//! [`stacklab_types::session::id`], a one-way hash of it, so listing databases, roles or key names on a shared
//! server reveals no session's cookie.

pub mod docker;
pub mod embedded;
pub mod shared;

use crate::choices::Choices;
use crate::events::{Event, Step};
use async_trait::async_trait;
use stacklab_types::stack::{CacheEngine, CacheSpec, DatabaseEngine, DatabaseSpec};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::broadcast;

/// A provisioner could not do what was asked.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ProvisionError {
    /// The choice at fault (`database`, `cache`), when there is one.
    pub field: Option<&'static str>,
    pub message: String,
}

impl ProvisionError {
    pub fn new(field: Option<&'static str>, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// What a session asks a provisioner for.
#[derive(Debug)]
pub struct ProvisionRequest<'a> {
    /// The session's id ([`stacklab_types::session::id`]), never its code: what names its
    /// resources.
    pub id: &'a str,
    pub choices: &'a Choices,
    /// `<data_dir>/sessions`: where embedded files go.
    pub files_dir: PathBuf,
    pub cache_max_bytes: u64,
    pub cache_ttl_ms: u64,
}

/// What a provisioner made.
#[derive(Debug, Clone)]
pub struct Provisioned {
    pub database: DatabaseSpec,
    pub cache: CacheSpec,
    /// Names of what was made (no secrets), shown in the topology and kept for teardown.
    pub resources: serde_json::Value,
    /// What a person should know (e.g. Memcached has no per-session isolation).
    pub notes: Vec<String>,
}

#[async_trait]
pub trait Provisioner: Send + Sync + std::fmt::Debug {
    fn name(&self) -> &'static str;
    /// Whether this provisioner can be used at all here; the reason when not.
    fn available(&self) -> Result<(), String>;
    fn database(&self, engine: DatabaseEngine) -> Result<(), String>;
    fn cache(&self, engine: CacheEngine) -> Result<(), String>;
    async fn provision(
        &self,
        req: &ProvisionRequest<'_>,
        steps: &Steps,
    ) -> Result<Provisioned, ProvisionError>;
    /// Removes everything made for the session `id`; removing what is already gone is not an
    /// error.
    async fn teardown(&self, id: &str, steps: &Steps) -> Result<(), ProvisionError>;
    /// Codes this provisioner still holds resources for.
    async fn leftovers(&self) -> Result<Vec<String>, ProvisionError>;
    /// Resources of sessions that stopped without being asked to (a container killed from
    /// outside), as they are noticed; `None` when this provisioner has nothing that can stop
    /// on its own (files, or servers it does not run).
    fn lost(&self) -> Option<broadcast::Receiver<Lost>> {
        None
    }
}

/// A session's resource that stopped on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lost {
    /// The session's resource id ([`stacklab_types::session::id`]).
    pub id: String,
    /// `database` or `cache`.
    pub role: String,
    /// What happened, for a person (no secret).
    pub message: String,
}

/// A session's provisioning (or teardown) steps, timed and streamed as they happen.
#[derive(Debug, Clone)]
pub struct Steps {
    done: Arc<Mutex<Vec<Step>>>,
    events: Option<broadcast::Sender<Event>>,
}

impl Steps {
    pub fn new(events: Option<broadcast::Sender<Event>>) -> Self {
        Self {
            done: Arc::default(),
            events,
        }
    }

    /// Steps for work nobody watches (reaping leftovers).
    pub fn silent() -> Self {
        Self::new(None)
    }

    fn record(&self, step: Step) {
        if let Some(tx) = &self.events {
            let _ = tx.send(Event::Step(step.clone()));
        }
        self.done
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(step);
    }

    /// Runs one step and records its outcome and time.
    pub async fn run<T, F>(&self, name: &str, detail: &str, work: F) -> Result<T, ProvisionError>
    where
        F: Future<Output = Result<T, ProvisionError>>,
    {
        let started = Instant::now();
        let result = work.await;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        self.record(Step {
            name: name.to_owned(),
            status: if result.is_ok() { "done" } else { "failed" }.to_owned(),
            ms,
            detail: match &result {
                Ok(_) => detail.to_owned(),
                Err(e) => e.message.clone(),
            },
        });
        result
    }

    /// A step that took no work (what was chosen needs nothing here).
    pub fn skip(&self, name: &str, detail: &str) {
        self.record(Step {
            name: name.to_owned(),
            status: "skipped".to_owned(),
            ms: 0.0,
            detail: detail.to_owned(),
        });
    }

    pub fn list(&self) -> Vec<Step> {
        self.done.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The cache spec every provisioner starts from.
pub fn cache_spec(req: &ProvisionRequest<'_>) -> CacheSpec {
    CacheSpec {
        engine: req.choices.cache,
        url: Default::default(),
        key_prefix: String::new(),
        policy: req.choices.cache_policy.clone(),
        max_bytes: req.cache_max_bytes,
        ttl_ms: req.cache_ttl_ms,
        shared: false,
    }
}
