//! Sessions: creation (with the caps), use reported by proxies, expiry, teardown, and the
//! restore after a restart.
//!
//! A session lives in memory ([`Live`]) and in the registry; every change is written to the
//! registry before control answers. Expiry is sliding: `last_used + sessions.idle_timeout`,
//! moved only by data requests (the proxy reports them in batches), and capped by
//! `created + sessions.hard_lifetime`. Ending a session is idempotent: the first caller takes
//! it out of [`Live`], removes its route, tells the backends to close its connections, and has
//! the provisioner remove what it made; a failed teardown is retried by the reaper.

use crate::choices::Choices;
use crate::events::{Event, Step};
use crate::provision::{ProvisionError, ProvisionRequest, Steps};
use crate::registry::SessionRow;
use crate::Control;
use serde_json::{json, Value};
use stacklab_types::routes::{RouteUpdate, SessionRoute, TouchReport, Transport};
use stacklab_types::stack::StackDescriptor;
use stacklab_types::Secret;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// A session control knows.
#[derive(Debug)]
pub struct Session {
    pub id: String,
    pub choices: Choices,
    /// Its runtime's pool: where its API requests go unless it runs a drill.
    pub pool: String,
    /// Its drill pool while it runs a failover drill ([`crate::drills`]): its requests go
    /// there instead. Not kept across a restart of control.
    pub drill: Mutex<Option<String>>,
    /// Re-provisions so far (`control.max_reprovisions_per_session`).
    pub reprovisions: std::sync::atomic::AtomicU32,
    /// Event streams open now (`control.max_event_streams_per_session`).
    pub streams: std::sync::atomic::AtomicUsize,
    /// The one poller those streams share.
    pub watch: crate::events::Watch,
    /// A keyed tag of the client ([`crate::seal::Sealer::tag`] of [`client_key`]), never its
    /// address.
    pub client: String,
    pub created_ms: u64,
    pub hard_expires_ms: u64,
    pub last_used_ms: AtomicU64,
    pub inner: Mutex<SessionInner>,
    pub events: broadcast::Sender<Event>,
    /// The instance the session is pinned to, when its cache lives in an instance's memory
    /// (every request must reach the same cache); re-pinned when that instance goes.
    pub member: Mutex<Option<String>>,
}

#[derive(Debug, Clone)]
pub struct SessionInner {
    /// `provisioning`, `ready`, `broken` (a resource stopped on its own; see `problem`),
    /// `failed` or `ending`.
    pub state: &'static str,
    /// Why the session is `broken`, for a person.
    pub problem: Option<String>,
    /// When its stack began to be made (at creation, or at a re-provision): the reaper ends
    /// a session stuck `provisioning` for too long.
    pub provisioning_since_ms: u64,
    /// The cache policy in force: chosen at creation, changed later through the cache view.
    pub cache_policy: String,
    pub steps: Vec<Step>,
    pub descriptor: Option<Arc<StackDescriptor>>,
    pub resources: Value,
    pub notes: Vec<String>,
}

impl Session {
    fn new(
        id: String,
        choices: Choices,
        pool: String,
        client: String,
        created_ms: u64,
        hard_expires_ms: u64,
        last_used_ms: u64,
    ) -> Self {
        let cache_policy = choices.cache_policy.clone();
        Self {
            id,
            choices,
            pool,
            client,
            created_ms,
            hard_expires_ms,
            last_used_ms: AtomicU64::new(last_used_ms),
            inner: Mutex::new(SessionInner {
                state: "provisioning",
                problem: None,
                provisioning_since_ms: created_ms,
                cache_policy,
                steps: vec![],
                descriptor: None,
                resources: json!({}),
                notes: vec![],
            }),
            events: broadcast::channel(256).0,
            member: Mutex::new(None),
            drill: Mutex::new(None),
            reprovisions: std::sync::atomic::AtomicU32::new(0),
            streams: std::sync::atomic::AtomicUsize::new(0),
            watch: crate::events::Watch::default(),
        }
    }

    /// The pool serving its API now: its drill pool while it has one, else its runtime's.
    pub fn serving_pool(&self) -> String {
        self.drill
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_else(|| self.pool.clone())
    }

    pub fn member(&self) -> Option<String> {
        self.member
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn route(&self) -> SessionRoute {
        SessionRoute {
            id: self.id.clone(),
            pool: self.serving_pool(),
            member: self.member(),
            transport: Transport::from_choice(&self.choices.transport),
        }
    }

    pub fn snapshot(&self) -> SessionInner {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn update(&self, f: impl FnOnce(&mut SessionInner)) {
        f(&mut self.inner.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// The choices as they stand now (the cache policy may have been changed since).
    pub fn stack_json(&self) -> Value {
        let mut v = self.choices.to_json();
        v["cache_policy"] = Value::String(self.snapshot().cache_policy);
        v
    }

    /// When it ends if nobody uses it: the earlier of idle expiry and the hard lifetime.
    pub fn expires_ms(&self, idle_ms: u64) -> u64 {
        (self.last_used_ms.load(Relaxed) + idle_ms).min(self.hard_expires_ms)
    }

    /// The public view (`POST /api/sessions`, `GET /api/session`). `code` is the one the
    /// request's cookie carries (control keeps none), `None` where there is no cookie.
    pub fn view(&self, code: Option<&str>, idle_ms: u64) -> Value {
        let inner = self.snapshot();
        json!({
            "code": code,
            "id": self.id,
            "state": inner.state,
            "created_at": self.created_ms,
            "last_used_at": self.last_used_ms.load(Relaxed),
            "expires_at": self.expires_ms(idle_ms),
            "hard_expires_at": self.hard_expires_ms,
            "provisioner": self.choices.provisioner,
            "stack": self.stack_json(),
            "steps": inner.steps,
            "resources": inner.resources,
            "notes": inner.notes,
            "problem": inner.problem,
        })
    }

    fn row(&self, sealed: String) -> SessionRow {
        let inner = self.snapshot();
        SessionRow {
            id: self.id.clone(),
            state: inner.state.to_owned(),
            provisioner: self.choices.provisioner.clone(),
            choices: self.stack_json().to_string(),
            steps: serde_json::to_string(&inner.steps).unwrap_or_else(|_| "[]".into()),
            resources: json!({"resources": inner.resources, "notes": inner.notes, "problem": inner.problem})
                .to_string(),
            sealed,
            pool: self.pool.clone(),
            client: self.client.clone(),
            created_ms: self.created_ms as i64,
            last_used_ms: self.last_used_ms.load(Relaxed) as i64,
            hard_expires_ms: self.hard_expires_ms as i64,
        }
    }
}

/// Live sessions and the per-client creation counts.
#[derive(Debug, Default)]
pub struct Live {
    map: Mutex<HashMap<String, Arc<Session>>>,
    /// Client (an IPv4 address, an IPv6 /64: [`client_key`]) → its creation bucket.
    created: Mutex<HashMap<String, Bucket>>,
    /// Ids of the sessions being ended right now.
    ending: Mutex<HashSet<String>>,
}

impl Live {
    pub fn get(&self, id: &str) -> Option<Arc<Session>> {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    pub fn all(&self) -> Vec<Arc<Session>> {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn insert(&self, s: Arc<Session>) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(s.id.clone(), s);
    }

    fn take(&self, id: &str) -> Option<Arc<Session>> {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)
    }
}

/// A client's token bucket for new sessions: `max_new_per_client_per_minute` tokens, refilled
/// at that many per minute (on control's clock), one taken per session. Unlike a counter per
/// calendar minute, it cannot be doubled by a burst at 11:59:59 and another at 12:00:00.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at_ms: u64,
}

impl Bucket {
    /// The tokens at `now`.
    fn level(&self, now: u64, limit: u32) -> f64 {
        let refill = now.saturating_sub(self.at_ms) as f64 * f64::from(limit) / 60_000.0;
        (self.tokens + refill).min(f64::from(limit))
    }
}

/// The key a client's limits are counted under: its IPv4 address, or the /64 of its IPv6
/// address (one host is given a whole /64, so per-address limits would not hold it).
pub fn client_key(client: &str) -> String {
    match client.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
        _ => client.to_owned(),
    }
}

/// Why a session could not be created.
#[derive(Debug)]
pub enum CreateError {
    /// 400: a choice is wrong.
    Invalid { field: String, message: String },
    /// 503: a choice this install cannot offer now.
    Unavailable { field: String, message: String },
    /// 429: too many sessions from this address in the last minute; a new one may be made in
    /// `retry_after_s` seconds.
    RateLimited { limit: u32, retry_after_s: u64 },
    /// 503: the server holds as many sessions as it may.
    OutOfCapacity { limit: usize },
    /// 429: this client holds `control.max_live_per_client` live sessions.
    ClientCapacity { limit: usize },
    /// 429: this session was re-provisioned `control.max_reprovisions_per_session` times.
    ReprovisionLimit { limit: u32 },
    /// 503: provisioning failed; the steps say where.
    Failed {
        field: Option<&'static str>,
        message: String,
        steps: Vec<Step>,
    },
    /// 409: the session is being made or ended.
    Busy { message: String },
    /// 500: the registry could not record it.
    Registry(String),
}

/// Why a session ended (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    Idle,
    Lifetime,
    Deleted,
    Failed,
    Leftover,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Idle => "idle",
            EndReason::Lifetime => "lifetime",
            EndReason::Deleted => "deleted",
            EndReason::Failed => "failed",
            EndReason::Leftover => "leftover",
        }
    }
}

/// A session stuck provisioning this long (a provisioner that hung) is ended.
const PROVISIONING_LIMIT_MS: u64 = 10 * 60 * 1000;

impl Control {
    fn idle_ms(&self) -> u64 {
        self.sessions_cfg.idle_timeout.as_millis() as u64
    }

    /// `POST /api/sessions`: checks the choices and the caps, then provisions. Returns the
    /// session's code (for its cookie: the only copy) with the session.
    pub async fn create_session(
        self: &Arc<Self>,
        body: &Value,
        client: &str,
    ) -> Result<(String, Arc<Session>), CreateError> {
        let choices = Choices::parse(body).map_err(|e| {
            self.metrics.rejected.with_label_values(&["invalid"]).inc();
            CreateError::Invalid {
                field: e.field,
                message: e.message,
            }
        })?;
        let Some(provisioner) = self.provisioners.get(choices.provisioner.as_str()).cloned() else {
            return Err(CreateError::Invalid {
                field: "provisioner".into(),
                message: "unknown provisioner".into(),
            });
        };
        if let Err(why) = provisioner.available() {
            self.metrics
                .rejected
                .with_label_values(&["unavailable"])
                .inc();
            return Err(CreateError::Unavailable {
                field: "provisioner".into(),
                message: format!("{} is not available here: {why}", choices.provisioner),
            });
        }
        // What embedded cannot give is a wrong combination (400); what shared or docker
        // cannot give now is a server this install lacks (503).
        let refuse = |field: &str, why: String| {
            self.metrics
                .rejected
                .with_label_values(&["unavailable"])
                .inc();
            if provisioner.name() == "embedded" {
                CreateError::Invalid {
                    field: field.into(),
                    message: why,
                }
            } else {
                CreateError::Unavailable {
                    field: field.into(),
                    message: why,
                }
            }
        };
        let Some(runtime) = self.runtimes.get(&choices.runtime) else {
            self.metrics.rejected.with_label_values(&["invalid"]).inc();
            return Err(CreateError::Invalid {
                field: "runtime".into(),
                message: format!(
                    "`{}` is not a runtime here; choose one of {}",
                    choices.runtime,
                    self.runtimes.names().join(", ")
                ),
            });
        };
        if let Err(why) = self.runtimes.available(runtime).await {
            self.metrics
                .rejected
                .with_label_values(&["unavailable"])
                .inc();
            return Err(CreateError::Unavailable {
                field: "runtime".into(),
                message: format!("{} cannot run here: {why}", runtime.manifest.label),
            });
        }
        let picked = choices.to_json();
        if let Some((field, value, why)) = picked
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(field, v)| Some((field, v.as_str()?)))
            .find_map(|(field, value)| {
                let why = runtime.manifest.unsupported(field, value)?;
                Some((field.clone(), value.to_owned(), why.to_owned()))
            })
        {
            self.metrics.rejected.with_label_values(&["invalid"]).inc();
            return Err(CreateError::Invalid {
                message: format!(
                    "{} does not offer {field} `{value}`: {why}; choose another {field} or another runtime",
                    runtime.manifest.label
                ),
                field,
            });
        }
        provisioner
            .database(choices.database)
            .map_err(|why| refuse("database", why))?;
        provisioner
            .cache(choices.cache)
            .map_err(|why| refuse("cache", why))?;

        let now = self.clock.now_ms();
        // The code goes to the person (the cookie) and nowhere else: everything here keeps
        // its one-way id.
        let code = crate::seal::session_code();
        let id = stacklab_types::session::id(&code);
        let hard = now + self.sessions_cfg.hard_lifetime.as_millis() as u64;
        // Only a keyed tag of the client (its IPv4 address or IPv6 /64) is kept, in memory and
        // in the registry: enough to count a client's sessions, no address in the clear.
        let client = self.sealer.tag(&client_key(client));
        let session = Arc::new(Session::new(
            id.clone(),
            choices.clone(),
            choices.runtime.clone(),
            client.clone(),
            now,
            hard,
            now,
        ));
        {
            let limit = self.sessions_cfg.max_new_per_client_per_minute;
            let mut created = self
                .sessions
                .created
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            // Full buckets say nothing a new one would not: dropped, so the map holds only
            // the clients of the last minute.
            created.retain(|_, b| b.level(now, limit) < f64::from(limit));
            let entry = created.entry(client.clone()).or_insert(Bucket {
                tokens: f64::from(limit),
                at_ms: now,
            });
            let tokens = entry.level(now, limit);
            if tokens < 1.0 {
                self.metrics.rejected.with_label_values(&["rate"]).inc();
                let wait_ms = (1.0 - tokens) * 60_000.0 / f64::from(limit);
                return Err(CreateError::RateLimited {
                    limit,
                    retry_after_s: (wait_ms / 1000.0).ceil().max(1.0) as u64,
                });
            }
            let per_client = self.cfg.max_live_per_client;
            if self
                .sessions
                .all()
                .iter()
                .filter(|s| s.client == client)
                .count()
                >= per_client
            {
                self.metrics.rejected.with_label_values(&["client"]).inc();
                return Err(CreateError::ClientCapacity { limit: per_client });
            }
            let max = self.sessions_cfg.max_live;
            if self.sessions.len() >= max {
                self.metrics.rejected.with_label_values(&["capacity"]).inc();
                return Err(CreateError::OutOfCapacity { limit: max });
            }
            entry.tokens = tokens - 1.0;
            entry.at_ms = now;
            // Inserted under the same lock as the capacity check, so concurrent creations
            // cannot pass `max_live` together.
            self.sessions.insert(Arc::clone(&session));
        }

        self.metrics.live.set(self.sessions.len() as i64);
        if let Err(e) = self
            .registry
            .insert_session(&session.row(String::new()))
            .await
        {
            self.sessions.take(&id);
            self.metrics.live.set(self.sessions.len() as i64);
            return Err(CreateError::Registry(crate::redact_url(&e.to_string())));
        }
        // The route exists while provisioning, so `GET /api/session` and the event stream
        // work from the first moment; backends answer 503 until the stack is ready. Its
        // runtime's pool exists from now on; its instances may still be starting.
        self.ensure_pool_spec(&session.pool);
        if choices.cache == stacklab_types::stack::CacheEngine::Memory {
            *session.member.lock().unwrap_or_else(|e| e.into_inner()) =
                self.least_pinned_member(&session.pool);
        }
        let _ = self.routes.publish(RouteUpdate::PutSession {
            session: session.route(),
        });

        let steps = Steps::new(Some(session.events.clone()));
        self.provision_into(&session, provisioner.as_ref(), &choices, steps)
            .await?;
        self.metrics
            .created
            .with_label_values(&[choices.provisioner.as_str()])
            .inc();
        tracing::info!(provisioner = %choices.provisioner, database = ?choices.database, cache = ?choices.cache, "session created");
        Ok((code, session))
    }

    /// Makes the stack of `session` (live and routed, state `provisioning`) with `choices`:
    /// the steps stream to its events as they happen; on success it is `ready` and recorded
    /// with its sealed descriptor. On failure it is ended, so nothing it made is left.
    async fn provision_into(
        self: &Arc<Self>,
        session: &Arc<Session>,
        provisioner: &dyn crate::provision::Provisioner,
        choices: &Choices,
        steps: Steps,
    ) -> Result<(), CreateError> {
        let id = session.id.clone();
        let started = std::time::Instant::now();
        let resource_id = id.clone();
        let req = ProvisionRequest {
            id: &resource_id,
            choices,
            files_dir: self.data_dir.join("sessions"),
            cache_max_bytes: self.cfg.cache_max_bytes,
            cache_ttl_ms: self.cfg.cache_ttl_ms,
        };
        // The runtime's pool starts (when it is not running) while the engines are made.
        let (result, pool) = tokio::join!(
            provisioner.provision(&req, &steps),
            self.ensure_runtime_pool(&choices.runtime, &steps)
        );
        // A pool that cannot start fails the session like its engines would (what was made
        // is removed with it).
        let result = pool.and(result);
        // Ended while it was being made (deleted, or the reaper's provisioning limit): what
        // was made is removed here, since the ending's teardown ran before it existed.
        if !self
            .sessions
            .get(&id)
            .is_some_and(|s| Arc::ptr_eq(&s, session))
        {
            if result.is_ok() {
                self.teardown(provisioner, &id).await;
            }
            return Err(CreateError::Failed {
                field: None,
                message: "the session was ended while it was being made".into(),
                steps: steps.list(),
            });
        }
        let provisioned = match result {
            Ok(p) => p,
            Err(ProvisionError { field, message }) => {
                session.update(|i| {
                    i.state = "failed";
                    i.steps = steps.list();
                });
                let _ = session.events.send(Event::State("failed"));
                self.end_session(&id, EndReason::Failed).await;
                return Err(CreateError::Failed {
                    field,
                    message,
                    steps: steps.list(),
                });
            }
        };
        let descriptor = StackDescriptor {
            session: id.clone(),
            runtime: choices.runtime.clone(),
            protocol: choices.protocol,
            database: provisioned.database,
            cache: provisioned.cache,
            write_policy: choices.write_policy,
            password_storage: choices.password_storage,
            encryption: choices.encryption,
            encryption_key: Secret::new(crate::seal::random_b64(32)),
            pepper: Secret::new(crate::seal::random_b64(32)),
        };
        let sealed = self
            .sealer
            .seal(descriptor.to_wire_json().to_string().as_bytes());
        session.update(|i| {
            i.state = "ready";
            i.steps = steps.list();
            i.descriptor = Some(Arc::new(descriptor));
            i.resources = provisioned.resources;
            i.notes = provisioned.notes;
        });
        if let Err(e) = self.registry.update_session(&session.row(sealed)).await {
            self.end_session(&id, EndReason::Failed).await;
            return Err(CreateError::Registry(crate::redact_url(&e.to_string())));
        }
        let _ = session.events.send(Event::State("ready"));
        self.metrics
            .provision_seconds
            .with_label_values(&[choices.provisioner.as_str()])
            .observe(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// `POST /api/session/reprovision`: removes what the session's stack is made of and makes
    /// it again with the same choices (and the cache policy in force), keeping the id, so
    /// the cookie and the route stay. Its data starts empty. For a session whose container was
    /// killed (`broken`), or one a person wants fresh.
    pub async fn reprovision(self: &Arc<Self>, session: &Arc<Session>) -> Result<(), CreateError> {
        let limit = self.cfg.max_reprovisions;
        if session.reprovisions.load(Relaxed) >= limit {
            self.metrics
                .rejected
                .with_label_values(&["reprovisions"])
                .inc();
            return Err(CreateError::ReprovisionLimit { limit });
        }
        let mut was = "";
        session.update(|i| {
            was = i.state;
            if matches!(i.state, "ready" | "broken") {
                i.state = "provisioning";
                i.problem = None;
                i.steps.clear();
                i.provisioning_since_ms = self.clock.now_ms();
            }
        });
        if !matches!(was, "ready" | "broken") {
            return Err(CreateError::Busy {
                message: format!(
                    "the session is {was}; wait until it is ready, or start a new session"
                ),
            });
        }
        let Some(provisioner) = self
            .provisioners
            .get(session.choices.provisioner.as_str())
            .cloned()
        else {
            return Err(CreateError::Invalid {
                field: "provisioner".into(),
                message: "unknown provisioner".into(),
            });
        };
        session.reprovisions.fetch_add(1, Relaxed);
        let _ = session.events.send(Event::State("provisioning"));
        // Recorded without its descriptor: a control that stops now tears it down at start.
        let _ = self
            .registry
            .update_session(&session.row(String::new()))
            .await;
        self.forget_on_backends(&session.id).await;
        let steps = Steps::new(Some(session.events.clone()));
        let id = session.id.clone();
        if let Err(e) = provisioner.teardown(&id, &steps).await {
            let problem = format!(
                "the old stack could not be removed ({}); try again",
                crate::redact_url(&e.message)
            );
            session.update(|i| {
                i.state = "broken";
                i.problem = Some(problem.clone());
                i.steps = steps.list();
            });
            let _ = session.events.send(Event::State("broken"));
            return Err(CreateError::Unavailable {
                field: e.field.unwrap_or("provisioner").to_owned(),
                message: problem,
            });
        }
        let mut choices = session.choices.clone();
        choices.cache_policy = session.snapshot().cache_policy;
        self.provision_into(session, provisioner.as_ref(), &choices, steps)
            .await?;
        // Once more now that it is ready: a backend that fetched the old descriptor just
        // before the first call (a request in flight then) would keep it, and its dead
        // engines, for `descriptor_ttl`.
        self.forget_on_backends(&session.id).await;
        self.metrics
            .reprovisioned
            .with_label_values(&[choices.provisioner.as_str()])
            .inc();
        tracing::info!(provisioner = %choices.provisioner, "session re-provisioned");
        Ok(())
    }

    /// Marks the session a lost resource belonged to as `broken` and tells its event stream.
    /// Reports for sessions that are not `ready` (being made, re-made or ended: their own
    /// removals) are ignored.
    pub async fn resource_lost(&self, lost: &crate::provision::Lost) -> bool {
        let Some(s) = self.sessions.all().into_iter().find(|s| s.id == lost.id) else {
            return false;
        };
        let mut marked = false;
        s.update(|i| {
            if i.state == "ready" {
                i.state = "broken";
                i.problem = Some(lost.message.clone());
                marked = true;
            }
        });
        if !marked {
            return false;
        }
        self.metrics
            .lost
            .with_label_values(&[s.choices.provisioner.as_str(), lost.role.as_str()])
            .inc();
        tracing::warn!(provisioner = %s.choices.provisioner, role = %lost.role, "a session's resource stopped on its own");
        let _ = s.events.send(Event::State("broken"));
        let _ = s.events.send(Event::Lost(lost.message.clone()));
        let sealed = s
            .snapshot()
            .descriptor
            .map(|d| self.sealer.seal(d.to_wire_json().to_string().as_bytes()))
            .unwrap_or_default();
        let _ = self.registry.update_session(&s.row(sealed)).await;
        true
    }

    /// Follows every provisioner's reports of lost resources until shutdown.
    pub fn spawn_lost_watchers(self: &Arc<Self>) {
        for p in self.provisioners.values() {
            let Some(mut rx) = p.lost() else { continue };
            let control = Arc::clone(self);
            tokio::spawn(async move {
                loop {
                    let lost = tokio::select! {
                        () = control.shutdown.cancelled() => return,
                        next = rx.recv() => next,
                    };
                    match lost {
                        Ok(lost) => {
                            control.resource_lost(&lost).await;
                        }
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            tracing::warn!(missed = n, "missed reports of lost resources");
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    }
                }
            });
        }
    }

    /// Ends a session now; `false` when it was not live (already ended: nothing to do).
    pub async fn end_session(&self, id: &str, reason: EndReason) -> bool {
        {
            let mut ending = self
                .sessions
                .ending
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if !ending.insert(id.to_owned()) {
                return false;
            }
        }
        let Some(session) = self.sessions.take(id) else {
            // Not live: nothing to end (an `ending` row is the reaper's to retry).
            self.sessions
                .ending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(id);
            return false;
        };
        let session = Some(session);
        self.metrics.live.set(self.sessions.len() as i64);
        let _ = self
            .routes
            .publish(RouteUpdate::RemoveSession { id: id.to_owned() });
        let provisioner = session.as_ref().map(|s| s.choices.provisioner.clone());
        if let Some(s) = &session {
            let _ = s.events.send(Event::Expired);
        }
        self.forget_on_backends(id).await;
        self.drop_drill_of(id).await;
        let ok = match provisioner
            .as_deref()
            .and_then(|p| self.provisioners.get(p))
        {
            Some(p) => self.teardown(p.as_ref(), id).await,
            None => true,
        };
        if ok {
            if let Err(e) = self.registry.delete_session(id).await {
                tracing::warn!(error = %crate::redact_url(&e.to_string()), "cannot remove an ended session from the registry; the reaper retries");
            }
        } else if let Some(s) = &session {
            // Kept as `ending`: the reaper retries the teardown after a restart too.
            s.update(|i| i.state = "ending");
            let mut row = s.row(String::new());
            row.state = "ending".into();
            let _ = self.registry.update_session(&row).await;
        }
        self.sessions
            .ending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        if session.is_some() {
            self.metrics
                .ended
                .with_label_values(&[reason.as_str()])
                .inc();
            tracing::info!(reason = reason.as_str(), teardown_ok = ok, "session ended");
        }
        session.is_some()
    }

    async fn teardown(&self, p: &dyn crate::provision::Provisioner, id: &str) -> bool {
        match p.teardown(id, &Steps::silent()).await {
            Ok(()) => true,
            Err(e) => {
                self.metrics.teardown_failures.inc();
                tracing::warn!(provisioner = p.name(), error = %crate::redact_url(&e.message), "teardown failed; the reaper retries");
                false
            }
        }
    }

    /// Tells every backend instance to close the session's connections (before its database
    /// is dropped), best effort: an instance that misses it re-fetches the descriptor within
    /// `descriptor_ttl` and finds the session gone.
    async fn forget_on_backends(&self, id: &str) {
        let members: Vec<_> = self
            .instance_pools()
            .into_iter()
            .filter_map(|name| self.routes.pool(&name))
            .flat_map(|p| p.members)
            .collect();
        let calls = members.iter().map(|m| {
            let req = http::Request::delete(format!("http://{}/internal/sessions/{id}", m.addr))
                .header(
                    http::header::AUTHORIZATION,
                    format!("Bearer {}", self.runtime_token.expose()),
                )
                .body(http_body_util::Full::new(bytes::Bytes::new()));
            let client = self.http.clone();
            async move {
                if let Ok(req) = req {
                    let _ = tokio::time::timeout(
                        std::time::Duration::from_secs(2),
                        client.request(req),
                    )
                    .await;
                }
            }
        });
        futures_util::future::join_all(calls).await;
    }

    /// Applies a proxy's report of session use.
    pub async fn touch(&self, report: TouchReport) {
        let now = self.clock.now_ms();
        let mut uses = Vec::new();
        for t in report.touches {
            if let Some(s) = self.sessions.get(&t.id) {
                let at = now.saturating_sub(t.idle_ms);
                let before = s.last_used_ms.fetch_max(at, Relaxed);
                if at > before {
                    uses.push((t.id, at as i64));
                }
            }
        }
        if let Err(e) = self.registry.touch(&uses).await {
            tracing::warn!(error = %crate::redact_url(&e.to_string()), "cannot record session use; kept in memory");
        }
    }

    /// One pass of the reaper: ends what expired, retries failed teardowns. Returns how many
    /// sessions it ended.
    pub async fn reap_once(&self) -> usize {
        let now = self.clock.now_ms();
        let idle = self.idle_ms();
        let mut ended = 0;
        for s in self.sessions.all() {
            let inner = s.snapshot();
            let state = inner.state;
            let reason = if now >= s.hard_expires_ms {
                Some(EndReason::Lifetime)
            } else if now >= s.last_used_ms.load(Relaxed) + idle {
                Some(EndReason::Idle)
            } else if state == "provisioning"
                && now >= inner.provisioning_since_ms + PROVISIONING_LIMIT_MS
            {
                Some(EndReason::Failed)
            } else {
                None
            };
            if let Some(r) = reason {
                if self.end_session(&s.id, r).await {
                    ended += 1;
                }
            }
        }
        // Bug reports past their retention.
        let keep = self.cfg.bugs.retention.as_millis() as u64;
        if let Ok(n) = self
            .registry
            .delete_bugs_before(now.saturating_sub(keep) as i64)
            .await
        {
            self.metrics.bugs_expired.inc_by(n);
        }
        // Teardowns that failed earlier (their rows say `ending`).
        if let Ok(rows) = self.registry.sessions().await {
            for row in rows
                .into_iter()
                .filter(|r| r.state == "ending" && self.sessions.get(&r.id).is_none())
            {
                if let Some(p) = self.provisioners.get(row.provisioner.as_str()) {
                    if self.teardown(p.as_ref(), &row.id).await {
                        let _ = self.registry.delete_session(&row.id).await;
                    }
                }
            }
        }
        ended
    }

    /// After a (re)start: brings back the live sessions from the registry, ends the ones that
    /// expired or were mid-provisioning when control stopped, and removes what provisioners
    /// hold for sessions the registry does not know (a crash between making and recording).
    pub async fn restore(&self) -> anyhow::Result<usize> {
        let rows = self.registry.sessions().await.map_err(|e| {
            anyhow::anyhow!(
                "cannot read the registry: {}",
                crate::redact_url(&e.to_string())
            )
        })?;
        let now = self.clock.now_ms();
        let idle = self.idle_ms();
        let mut restored = 0;
        for row in rows {
            let usable = matches!(row.state.as_str(), "ready" | "broken")
                && (row.last_used_ms as u64 + idle) > now
                && (row.hard_expires_ms as u64) > now;
            let session = if usable { self.revive(&row) } else { None };
            match session {
                Some(s) => {
                    // Instances are new after a restart: pinned sessions are pinned again
                    // once the pool is up (see `repin`). A runtime started on demand has no
                    // pool yet: made now (its instances start with control's backends, see
                    // `start_pools_of_live_sessions`), or the route would be refused.
                    self.ensure_pool_spec(&s.pool);
                    let _ = self
                        .routes
                        .publish(RouteUpdate::PutSession { session: s.route() });
                    self.sessions.insert(s);
                    restored += 1;
                }
                None => {
                    if let Some(p) = self.provisioners.get(row.provisioner.as_str()) {
                        if self.teardown(p.as_ref(), &row.id).await {
                            let _ = self.registry.delete_session(&row.id).await;
                        }
                    }
                }
            }
        }
        self.metrics.live.set(self.sessions.len() as i64);
        self.reap_leftovers().await;
        Ok(restored)
    }

    /// Removes what provisioners hold for resource ids of no known session.
    pub async fn reap_leftovers(&self) -> usize {
        // What provisioners hold is listed before the known ids are read: a session created in
        // between is then known, never taken for a leftover.
        let mut held = Vec::new();
        for p in self.provisioners.values() {
            if let Ok(ids) = p.leftovers().await {
                held.push((Arc::clone(p), ids));
            }
        }
        let mut known: HashSet<String> = match self.registry.sessions().await {
            Ok(rows) => rows.iter().map(|r| r.id.clone()).collect(),
            Err(_) => return 0,
        };
        known.extend(self.sessions.all().iter().map(|s| s.id.clone()));
        let mut removed = 0;
        for (p, ids) in held {
            for id in ids.into_iter().filter(|id| !known.contains(id)) {
                if self.teardown(p.as_ref(), &id).await {
                    removed += 1;
                    self.metrics
                        .ended
                        .with_label_values(&[EndReason::Leftover.as_str()])
                        .inc();
                }
            }
        }
        if removed > 0 {
            tracing::info!(
                removed,
                "removed resources of sessions that no longer exist"
            );
        }
        removed
    }

    fn revive(&self, row: &SessionRow) -> Option<Arc<Session>> {
        let choices = Choices::from_json(&row.choices).ok()?;
        let plain = self.sealer.open(&row.sealed).ok()?;
        let mut descriptor: StackDescriptor = serde_json::from_slice(&plain).ok()?;
        // Sealed before sessions had ids, it names the session by its code: by its id now
        // (backends name it back to control with it), and sealed so at the row's next write.
        descriptor.session.clone_from(&row.id);
        let extra: Value = serde_json::from_str(&row.resources).unwrap_or_default();
        let s = Session::new(
            row.id.clone(),
            choices,
            row.pool.clone(),
            // A row written before clients were tagged holds the address: tagged now (and in
            // the registry at the row's next write).
            if row.client.parse::<std::net::IpAddr>().is_ok() {
                self.sealer.tag(&client_key(&row.client))
            } else {
                row.client.clone()
            },
            row.created_ms as u64,
            row.hard_expires_ms as u64,
            row.last_used_ms as u64,
        );
        let problem = extra
            .get("problem")
            .and_then(Value::as_str)
            .map(str::to_owned);
        s.update(|i| {
            i.state = if problem.is_some() { "broken" } else { "ready" };
            i.problem = problem;
            i.steps = serde_json::from_str(&row.steps).unwrap_or_default();
            i.descriptor = Some(Arc::new(descriptor));
            i.resources = extra.get("resources").cloned().unwrap_or_default();
            i.notes = serde_json::from_value(extra.get("notes").cloned().unwrap_or_default())
                .unwrap_or_default();
        });
        Some(Arc::new(s))
    }

    /// The reaper: every `control.reaper_interval` until shutdown.
    pub fn spawn_reaper(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let control = Arc::clone(self);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(control.cfg.reaper_interval) => {}
                    () = control.shutdown.cancelled() => return,
                }
                control.reap_once().await;
                control.stop_idle_pools().await;
            }
        })
    }

    /// The member with the fewest pinned sessions (for a session whose cache is in-process).
    pub(crate) fn least_pinned_member(&self, pool: &str) -> Option<String> {
        let members = self.routes.pool(pool)?.members;
        let mut counts: HashMap<String, usize> = members
            .iter()
            .filter(|m| !m.draining)
            .map(|m| (m.id.clone(), 0))
            .collect();
        for s in self.sessions.all() {
            if let Some(c) = s.member().and_then(|m| counts.get_mut(&m)) {
                *c += 1;
            }
        }
        counts
            .into_iter()
            .min_by_key(|(id, n)| (*n, id.clone()))
            .map(|(id, _)| id)
    }

    /// Re-pins sessions whose instance is gone (or that need a pin and have none), spreading
    /// them over the members left. Their in-process cache starts empty on the new instance.
    pub fn repin(&self) {
        for name in self.instance_pools() {
            if let Some(pool) = self.routes.pool(&name) {
                self.repin_in(&pool);
            }
        }
    }

    fn repin_in(&self, pool: &stacklab_types::routes::PoolSpec) {
        let alive: HashSet<String> = pool
            .members
            .iter()
            .filter(|m| !m.draining)
            .map(|m| m.id.clone())
            .collect();
        for s in self.sessions.all() {
            if s.choices.cache != stacklab_types::stack::CacheEngine::Memory
                || s.serving_pool() != pool.name
            {
                continue;
            }
            if s.member().is_some_and(|m| alive.contains(&m)) {
                continue;
            }
            let next = self.least_pinned_member(&pool.name);
            *s.member.lock().unwrap_or_else(|e| e.into_inner()) = next;
            let _ = self
                .routes
                .publish(RouteUpdate::PutSession { session: s.route() });
        }
    }

    /// Records a cache policy changed through the session's cache view (reported by the
    /// backend that changed it), so another instance and a restarted control keep it.
    pub async fn set_cache_policy(&self, id: &str, policy: &str) -> Result<(), String> {
        let s = self.sessions.get(id).ok_or("no live session has this id")?;
        if !crate::choices::policies(s.choices.cache).contains(&policy) {
            return Err(format!(
                "`{policy}` is not a policy of this cache; choose one of {}",
                crate::choices::policies(s.choices.cache).join(", ")
            ));
        }
        let mut sealed = String::new();
        s.update(|i| {
            i.cache_policy = policy.to_owned();
            if let Some(d) = &i.descriptor {
                let mut d = (**d).clone();
                d.cache.policy = policy.to_owned();
                sealed = self.sealer.seal(d.to_wire_json().to_string().as_bytes());
                i.descriptor = Some(Arc::new(d));
            }
        });
        self.registry
            .update_session(&s.row(sealed))
            .await
            .map_err(|e| crate::redact_url(&e.to_string()))
    }

    /// What a backend gets for `GET /admin/stacks/{id}`.
    pub fn stack_for_backend(&self, id: &str) -> Result<Value, &'static str> {
        let s = self.sessions.get(id).ok_or("gone")?;
        let inner = s.snapshot();
        match (inner.state, inner.descriptor) {
            ("ready" | "broken", Some(d)) => Ok(d.to_wire_json()),
            _ => Err("provisioning"),
        }
    }
}
