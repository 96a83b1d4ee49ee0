//! `docker`: a session's database and cache in containers of its own, made through the
//! Docker API ([bollard]).
//!
//! # What a session gets
//! | what | name | labels |
//! |---|---|---|
//! | a network | `stacklab-<id>` | `stacklab.instance`, `stacklab.session=<id>` |
//! | the database container | `stacklab-<id>-db` | `stacklab.instance`, `stacklab.session`, `stacklab.role=database`, `stacklab.engine` |
//! | the cache container | `stacklab-<id>-cache` | the same, `stacklab.role=cache` |
//!
//! `<id>` is the session's resource id ([`stacklab_types::session::id`]), never its code. SQLite and the
//! in-process cache need no container and are made as `embedded` makes them.
//!
//! Each container runs the image its engine's spec names (`[docker.engines.*]`, see
//! [`DockerConfig`]) with its server port published on 127.0.0.1 only, at a port Docker picks:
//! the backends are processes on this machine. It has a memory limit (and no swap), a CPU and a
//! process limit, every capability dropped (the servers run as their own users and need none;
//! a spec may add some back), `no-new-privileges`, and is never privileged. Its server's
//! account has a password from [`random_password`] made for that container alone: a container
//! serves one session, so its account is the session's, and another session's password opens
//! nothing in it.
//!
//! # The warm pool
//! Creating a container and initialising a database takes seconds, which a launch should not.
//! For every engine whose spec has `warm = N`, a task owned by [`Docker`] keeps N containers
//! started and ready (they answered their readiness query). A launch takes one when there is
//! one: the container is renamed to the session's name, joined to the session's network (its
//! published port may move to that network's endpoint, at a new host port, so the port is
//! read again) and asked its readiness query again, and the step says "from the warm pool".
//! Docker cannot
//! change a container's labels once it is made, so a pooled container keeps
//! `stacklab.session=warm`: its *name* says whose it is. Teardown and the search for
//! leftovers therefore go by names (`stacklab-<id>-db`, `stacklab-<id>-cache`,
//! `stacklab-<id>`), and also by label for what was made for the session directly. Pooled
//! containers wait on `stacklab-<instance>-pool`, a network with traffic between containers
//! turned off; [`Docker::shutdown`] removes them, and those a crash left behind are removed
//! when the next [`Docker`] of the same instance starts.
//!
//! # Availability
//! Without a `[docker]` section the provisioner is off and touches nothing. With one, the
//! engine is pinged (and each engine's image looked for) at start and every
//! [`RECHECK_INTERVAL`]; `available()` is synchronous, so it answers with the last result. A
//! missing image is pulled in the background when `pull_missing` is on (a machine with no
//! registry builds them with `config/images/build.sh` instead).
//!
//! # Failure
//! Readiness is a real query with the container's own credentials (`SELECT 1`, `PING` after
//! `AUTH`, `version`, MongoDB's `ping`), tried until `ready_timeout_ms`. A container that
//! does not answer in time, or stops, is removed, and the error carries the last lines of its
//! log with its password removed. A launch that fails part-way removes everything it made.
//!
//! # Limits
//! At most `max_containers` containers (sessions' and pooled together) exist at once, counting
//! those this provisioner made since it started; past it a launch is refused and the pool is
//! not refilled.
//!
//! # Layout
//! - `mod.rs`: names and labels, [`Engine`], [`Docker`] and its [`Provisioner`] impl, `Inner`
//!   (what the provisioner shares with its task), and a session's database and cache.
//! - `config.rs`: [`DockerConfig`], [`EngineSpec`], [`BackendSpec`]: the `[docker]` section,
//!   validated.
//! - `containers.rs`: the engine and its images, networks, containers (create, readiness,
//!   log tails, removal).
//! - `pool.rs`: the warm pool and the task that fills it, and the engine's event stream.
//! - `probes.rs`: readiness probes per engine.
//! - `backend.rs`: backend instances as containers (used by [`crate::instances`]).

use super::embedded::{make_sqlite, remove_sqlite, sqlite_ids};
use super::{cache_spec, Lost, ProvisionError, ProvisionRequest, Provisioned, Provisioner, Steps};
use crate::seal::random_password;
use async_trait::async_trait;
use bollard::query_parameters::{
    ListContainersOptions, ListNetworksOptions, RemoveContainerOptions,
};
use stacklab_types::session::is_id;
use stacklab_types::stack::{CacheEngine, CacheSpec, DatabaseEngine, DatabaseSpec};
use stacklab_types::Secret;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, Notify};
use tokio_util::sync::CancellationToken;

pub mod backend;
mod config;
mod containers;
mod pool;
mod probes;

pub use config::{BackendNetwork, BackendSpec, DockerConfig, EngineSpec, Subnet, SubnetRange};

// ---------------------------------------------------------------------------------------------
// Names, labels, limits
// ---------------------------------------------------------------------------------------------

/// The label naming the provisioner instance that made a container or network: leftovers and
/// the pool's clean-up look only at their own instance's.
pub const LABEL_INSTANCE: &str = "stacklab.instance";
/// The session's resource id, or [`WARM`] for a container made for the pool.
pub const LABEL_SESSION: &str = "stacklab.session";
/// `database` or `cache`.
pub const LABEL_ROLE: &str = "stacklab.role";
/// `postgres`, `mysql`, `mongodb`, `redis` or `memcached`.
pub const LABEL_ENGINE: &str = "stacklab.engine";
/// [`LABEL_SESSION`] of a container made for the warm pool (labels cannot change later).
pub const WARM: &str = "warm";

/// `docker.instance` when not set.
pub const DEFAULT_INSTANCE: &str = "stacklab";
/// `docker.ready_timeout_ms` when not set: how long a new container has to answer its
/// readiness query (a first start of MySQL can take this long on a slow disk).
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Sessions' networks take /28s from here (4096 of them) unless `docker.session_network_range`
/// says otherwise; an empty value leaves it to Docker's default pools.
const DEFAULT_SESSION_NETWORK_RANGE: &str = "10.213.0.0/16";
/// `docker.max_containers` when not set: sessions' and pooled containers together.
pub const DEFAULT_MAX_CONTAINERS: usize = 100;
/// The largest `warm` an engine may ask for.
pub const MAX_WARM: usize = 16;
/// How often the engine is pinged, images looked for and pooled containers checked.
pub const RECHECK_INTERVAL: Duration = Duration::from_secs(30);
/// A ping that takes longer than this counts as no answer.
const PING_TIMEOUT: Duration = Duration::from_secs(3);
/// Timeout of one Docker API request, in seconds (bollard's unit).
const API_TIMEOUT_SECS: u64 = 60;
/// One readiness attempt (connect and query).
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// Pause between readiness attempts.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Attempts between two looks at whether the container still runs.
const STATE_CHECK_EVERY: u32 = 10;
/// How long a container taken from the pool has to answer again.
const CLAIM_READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Log lines (and bytes) an error quotes.
const LOG_TAIL_LINES: usize = 20;
const LOG_TAIL_BYTES: usize = 4096;

const NOT_CONFIGURED: &str =
    "there is no [docker] section in the config (config/docker.toml has one)";

/// The name of a session's container in `role`.
pub fn container_name(id: &str, role: Role) -> String {
    format!("stacklab-{id}-{}", role.suffix())
}

/// The name of a session's network.
pub fn network_name(id: &str) -> String {
    format!("stacklab-{id}")
}

/// The network pooled containers wait on.
pub fn pool_network(instance: &str) -> String {
    format!("stacklab-{instance}-pool")
}

fn warm_prefix(instance: &str) -> String {
    format!("stacklab-warm-{instance}-")
}

/// The session id in a container or network name made here (Docker lists container names
/// with a leading `/`).
pub fn id_in(name: &str) -> Option<String> {
    let rest = name.trim_start_matches('/').strip_prefix("stacklab-")?;
    let id = rest
        .strip_suffix("-db")
        .or_else(|| rest.strip_suffix("-cache"))
        .unwrap_or(rest);
    is_id(id).then(|| id.to_owned())
}

/// What a container is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Database,
    Cache,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Database => "database",
            Role::Cache => "cache",
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            Role::Database => "db",
            Role::Cache => "cache",
        }
    }

    fn field(self) -> Option<&'static str> {
        Some(self.as_str())
    }
}

/// An engine this provisioner runs in a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Engine {
    Postgres,
    Mysql,
    Mongodb,
    Redis,
    Memcached,
}

impl Engine {
    pub const ALL: [Engine; 5] = [
        Engine::Postgres,
        Engine::Mysql,
        Engine::Mongodb,
        Engine::Redis,
        Engine::Memcached,
    ];

    /// Its key under `[docker.engines]` and its `stacklab.engine` label.
    pub fn key(self) -> &'static str {
        match self {
            Engine::Postgres => "postgres",
            Engine::Mysql => "mysql",
            Engine::Mongodb => "mongodb",
            Engine::Redis => "redis",
            Engine::Memcached => "memcached",
        }
    }

    fn from_key(key: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.key() == key)
    }

    /// For people.
    pub fn label(self) -> &'static str {
        match self {
            Engine::Postgres => "PostgreSQL",
            Engine::Mysql => "MySQL/MariaDB",
            Engine::Mongodb => "MongoDB",
            Engine::Redis => "Redis",
            Engine::Memcached => "Memcached",
        }
    }

    pub fn role(self) -> Role {
        match self {
            Engine::Postgres | Engine::Mysql | Engine::Mongodb => Role::Database,
            Engine::Redis | Engine::Memcached => Role::Cache,
        }
    }

    /// The container engine for a database choice (`None`: SQLite, a file).
    pub fn of_database(engine: DatabaseEngine) -> Option<Self> {
        match engine {
            DatabaseEngine::Sqlite => None,
            DatabaseEngine::Postgres => Some(Engine::Postgres),
            DatabaseEngine::Mysql => Some(Engine::Mysql),
            DatabaseEngine::Mongodb => Some(Engine::Mongodb),
        }
    }

    /// The container engine for a cache choice (`None`: in-process or none).
    pub fn of_cache(engine: CacheEngine) -> Option<Self> {
        match engine {
            CacheEngine::Memory | CacheEngine::None => None,
            CacheEngine::Redis => Some(Engine::Redis),
            CacheEngine::Memcached => Some(Engine::Memcached),
        }
    }

    /// Whether its server takes a password (Memcached has no accounts).
    fn has_password(self) -> bool {
        self != Engine::Memcached
    }
}

// ---------------------------------------------------------------------------------------------
// The provisioner
// ---------------------------------------------------------------------------------------------

/// The `docker` provisioner. Owns the task that checks the engine and fills the warm pool;
/// dropping it stops the task (pooled containers stay until [`Docker::shutdown`] or the next
/// start of the same instance).
pub struct Docker {
    inner: Arc<Inner>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

struct Inner {
    cfg: Option<DockerConfig>,
    files: PathBuf,
    api: Option<bollard::Docker>,
    /// The last answer to "can the engine be used?".
    status: RwLock<Result<(), String>>,
    /// Per engine: is its image there?
    images: RwLock<HashMap<Engine, Result<(), String>>>,
    /// Images a pull was started for (once per run).
    pulls: Mutex<HashSet<String>>,
    pool: Mutex<HashMap<Engine, VecDeque<Warm>>>,
    /// Names of the containers this provisioner made and has not removed: the cap.
    live: Mutex<HashSet<String>>,
    refill: Notify,
    /// Held while a network is looked for and made.
    networks: tokio::sync::Mutex<()>,
    /// Whether pooled containers of an earlier run were looked for (once the engine answers).
    swept: std::sync::atomic::AtomicBool,
    /// Sessions' containers that stopped on their own (see [`Inner::watch`]).
    lost: broadcast::Sender<Lost>,
    shutdown: CancellationToken,
}

/// A pooled container, started and ready.
struct Warm {
    id: String,
    name: String,
    password: Secret,
    login: String,
    ready_at: Instant,
}

/// A container of a session (or made for the pool), started.
#[derive(Debug)]
struct Running {
    id: String,
    name: String,
    engine: Engine,
    /// Its address on the network it is on now, at the server's port.
    addr: SocketAddr,
    /// Who the readiness query logs in as: the superuser until the session's account is made
    /// ([`EngineSpec::superuser`]), else the account.
    login: String,
    password: Secret,
}

impl fmt::Debug for Docker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Docker");
        match &self.inner.cfg {
            None => d.field("configured", &false),
            Some(c) => d
                .field("host", &c.host)
                .field("instance", &c.instance)
                .field(
                    "images",
                    &c.engines
                        .iter()
                        .map(|(e, s)| (e.key(), s.image.as_str()))
                        .collect::<BTreeMap<_, _>>(),
                ),
        };
        d.finish_non_exhaustive()
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        self.inner.shutdown.cancel();
        if let Some(task) = self.task.lock().unwrap_or_else(|e| e.into_inner()).take() {
            task.abort();
        }
    }
}

fn connect(cfg: &DockerConfig) -> Result<bollard::Docker, String> {
    let version = bollard::API_DEFAULT_VERSION;
    let made = match cfg.host.as_deref() {
        None => bollard::Docker::connect_with_defaults()
            .map(|d| d.with_timeout(Duration::from_secs(API_TIMEOUT_SECS))),
        Some(h) if h.starts_with("unix://") => {
            bollard::Docker::connect_with_unix(h, API_TIMEOUT_SECS, version)
        }
        Some(h) => bollard::Docker::connect_with_http(h, API_TIMEOUT_SECS, version),
    };
    made.map_err(|e| format!("cannot use the Docker engine's address: {e}"))
}

impl Docker {
    /// Makes the provisioner. With a config, checks the engine once (a few seconds at most
    /// when it does not answer), removes pooled containers a previous run of this instance
    /// left, and starts the task that fills the pool and re-checks the engine.
    pub async fn start(cfg: Option<DockerConfig>, files: PathBuf) -> Self {
        let (api, status) = match &cfg {
            None => (None, Err(NOT_CONFIGURED.to_owned())),
            Some(c) => match connect(c) {
                Ok(api) => (Some(api), Err("not checked yet".to_owned())),
                Err(e) => (None, Err(e)),
            },
        };
        let inner = Arc::new(Inner {
            cfg,
            files,
            api,
            status: RwLock::new(status),
            images: RwLock::default(),
            pulls: Mutex::default(),
            pool: Mutex::default(),
            live: Mutex::default(),
            refill: Notify::new(),
            networks: tokio::sync::Mutex::new(()),
            swept: std::sync::atomic::AtomicBool::new(false),
            lost: broadcast::channel(64).0,
            shutdown: CancellationToken::new(),
        });
        let task = if inner.api.is_some() {
            inner.check().await;
            inner.sweep_once().await;
            let watcher = tokio::spawn(inner.clone().watch());
            let pool = tokio::spawn(inner.clone().run());
            Some(tokio::spawn(async move {
                // Aborting this task drops both handles, which does not stop them: they end
                // on `shutdown`, which `shutdown()` and `drop` cancel first.
                let _ = tokio::join!(watcher, pool);
            }))
        } else {
            None
        };
        Docker {
            inner,
            task: Mutex::new(task),
        }
    }

    /// The engine's API client, when the engine answered its last check (backend instances
    /// in containers use it); else why not.
    pub fn api(&self) -> Result<&bollard::Docker, String> {
        self.inner.usable()?;
        self.inner
            .api
            .as_ref()
            .ok_or_else(|| NOT_CONFIGURED.to_owned())
    }

    /// The validated config, when there is one.
    pub fn config(&self) -> Option<&DockerConfig> {
        self.inner.cfg.as_ref()
    }

    /// Containers ready in the pool for `engine` now.
    pub fn warm_count(&self, engine: Engine) -> usize {
        self.inner
            .pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&engine)
            .map_or(0, VecDeque::len)
    }

    /// Asks the pool task to top the pool up now (it also does every [`RECHECK_INTERVAL`]
    /// and after every launch).
    pub fn refill(&self) {
        self.inner.refill.notify_one();
    }

    /// Stops the pool task and removes the pooled containers and their network (sessions'
    /// containers stay: their sessions outlive a restart).
    pub async fn shutdown(&self) {
        self.inner.shutdown.cancel();
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
        self.inner
            .pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        if let (Some(cfg), Some(_)) = (&self.inner.cfg, &self.inner.api) {
            let removed = match self.inner.remove_stale_pool().await {
                Ok(()) => {
                    self.inner
                        .remove_networks(&pool_network(&cfg.instance))
                        .await
                }
                Err(e) => Err(e),
            };
            if let Err(e) = removed {
                tracing::warn!(error = %e, "cannot remove the pooled containers or their network");
            }
            // Control stops its backend containers first; their network goes with them.
            backend::remove_network(self.inner.api(), &cfg.instance).await;
        }
    }
}

#[async_trait]
impl Provisioner for Docker {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn available(&self) -> Result<(), String> {
        self.inner.usable()
    }

    fn database(&self, engine: DatabaseEngine) -> Result<(), String> {
        match Engine::of_database(engine) {
            None => Ok(()),
            Some(e) => self.inner.offers(e),
        }
    }

    fn cache(&self, engine: CacheEngine) -> Result<(), String> {
        match Engine::of_cache(engine) {
            None => Ok(()),
            Some(e) => self.inner.offers(e),
        }
    }

    async fn provision(
        &self,
        req: &ProvisionRequest<'_>,
        steps: &Steps,
    ) -> Result<Provisioned, ProvisionError> {
        let inner = &self.inner;
        inner
            .usable()
            .map_err(|m| ProvisionError::new(Some("provisioner"), m))?;
        if !is_id(req.id) {
            return Err(ProvisionError::new(
                None,
                "not a session id (26 lower-case characters): nothing was made",
            ));
        }
        let (db_engine, cache_engine) = (req.choices.database, req.choices.cache);
        self.database(db_engine)
            .map_err(|m| ProvisionError::new(Some("database"), m))?;
        self.cache(cache_engine)
            .map_err(|m| ProvisionError::new(Some("cache"), m))?;
        let id = req.id;
        let containers =
            Engine::of_database(db_engine).is_some() || Engine::of_cache(cache_engine).is_some();
        if containers {
            let net = network_name(id);
            steps
                .run(
                    "network",
                    &format!("{net}: the session's own, labelled with its id"),
                    async {
                        let made = async {
                            inner.ensure_network(&net, Some(id)).await?;
                            inner.join_backends(&net).await
                        };
                        made.await.map_err(|m| ProvisionError::new(None, m))
                    },
                )
                .await?;
        }
        // Database and cache side by side: a launch waits for the slower, not for both.
        let (database, cache) = tokio::join!(
            inner.make_database(req, steps),
            inner.make_cache(req, steps)
        );
        inner.refill.notify_one();
        match (database, cache) {
            (Ok((database, db_where)), Ok((cache, cache_where, notes))) => {
                let mut resources = serde_json::json!({
                    "database": db_where,
                    "cache": cache_where,
                });
                if containers {
                    resources["network"] = network_name(id).into();
                }
                Ok(Provisioned {
                    database,
                    cache,
                    resources,
                    notes,
                })
            }
            (Err(e), _) | (_, Err(e)) => {
                if let Err(left) = self.teardown(id, steps).await {
                    tracing::warn!(error = %left.message, "undoing a failed launch left something behind; teardown retries");
                }
                Err(e)
            }
        }
    }

    async fn teardown(&self, id: &str, steps: &Steps) -> Result<(), ProvisionError> {
        let inner = &self.inner;
        if inner.cfg.is_none() || !is_id(id) {
            // Nothing of ours carries a name that is not a session id.
            return Ok(());
        }
        let files = steps
            .run("remove: SQLite file", "removed (if there was one)", async {
                remove_sqlite(&inner.files, id)
            })
            .await;
        let containers = steps
            .run(
                "remove: containers",
                &format!(
                    "{} and {} (if there were any), with their volumes",
                    container_name(id, Role::Database),
                    container_name(id, Role::Cache)
                ),
                async {
                    inner
                        .remove_session_containers(id)
                        .await
                        .map_err(|m| ProvisionError::new(None, m))
                },
            )
            .await;
        let network = steps
            .run(
                "remove: network",
                &format!("{} (if there was one)", network_name(id)),
                async {
                    inner
                        .remove_networks(&network_name(id))
                        .await
                        .map_err(|m| ProvisionError::new(None, m))
                },
            )
            .await;
        let failed: Vec<String> = [files, containers, network]
            .into_iter()
            .filter_map(Result::err)
            .map(|e| e.message)
            .collect();
        if failed.is_empty() {
            Ok(())
        } else {
            Err(ProvisionError::new(None, failed.join("; ")))
        }
    }

    /// Ids with a SQLite file, or a container or network of this instance named for them.
    async fn leftovers(&self) -> Result<Vec<String>, ProvisionError> {
        let inner = &self.inner;
        let (Some(cfg), Some(api)) = (&inner.cfg, &inner.api) else {
            return Ok(vec![]);
        };
        let mut ids: BTreeSet<String> = sqlite_ids(&inner.files)
            .into_iter()
            .filter(|c| is_id(c))
            .collect();
        let filters = label_filter(&[(LABEL_INSTANCE, &cfg.instance)]);
        let fail = |e: bollard::errors::Error| {
            ProvisionError::new(
                None,
                format!(
                    "cannot list the Docker engine's containers and networks: {}",
                    api_text(&e)
                ),
            )
        };
        let containers = api
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters.clone()),
                ..Default::default()
            }))
            .await
            .map_err(fail)?;
        for c in containers {
            ids.extend(c.names.unwrap_or_default().iter().filter_map(|n| id_in(n)));
        }
        let networks = api
            .list_networks(Some(ListNetworksOptions {
                filters: Some(filters),
            }))
            .await
            .map_err(fail)?;
        ids.extend(networks.iter().filter_map(|n| id_in(n.name.as_deref()?)));
        Ok(ids.into_iter().collect())
    }

    fn lost(&self) -> Option<broadcast::Receiver<Lost>> {
        self.inner.api.as_ref()?;
        Some(self.inner.lost.subscribe())
    }
}

/// Removes a container, running or not, with its anonymous volumes.
pub(super) async fn force_remove(
    api: &bollard::Docker,
    name: &str,
) -> Result<(), bollard::errors::Error> {
    api.remove_container(
        name,
        Some(RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        }),
    )
    .await
}

fn label_filter(pairs: &[(&str, &str)]) -> HashMap<String, Vec<String>> {
    HashMap::from([(
        "label".to_owned(),
        pairs.iter().map(|(k, v)| format!("{k}={v}")).collect(),
    )])
}

fn status_code(e: &bollard::errors::Error) -> Option<u16> {
    match e {
        bollard::errors::Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// A Docker API error as a person reads it: the engine's own message when there is one.
pub(super) fn api_text(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// `text` without URL credentials and without `secret`.
fn scrub(text: &str, secret: &str) -> String {
    let out = crate::redact_url(text);
    if secret.is_empty() {
        out
    } else {
        out.replace(secret, "[redacted]")
    }
}

impl Inner {
    fn cfg(&self) -> &DockerConfig {
        self.cfg.as_ref().expect("only called once configured")
    }

    fn api(&self) -> &bollard::Docker {
        self.api
            .as_ref()
            .expect("only called with an engine address")
    }

    fn usable(&self) -> Result<(), String> {
        self.status
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn offers(&self, engine: Engine) -> Result<(), String> {
        self.usable()?;
        if !self.cfg().engines.contains_key(&engine) {
            return Err(format!(
                "{} is not offered here: docker.engines.{} is not configured",
                engine.label(),
                engine.key()
            ));
        }
        match self
            .images
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&engine)
        {
            Some(Err(why)) => Err(why.clone()),
            _ => Ok(()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A session's database and cache
// ---------------------------------------------------------------------------------------------

const NOTE_MEMCACHED: &str = "Memcached has no accounts: this session's Memcached container is \
    its own (no other session's keys are in it), but any program on this machine that finds \
    its port on 127.0.0.1 can read it.";

impl Inner {
    /// A container of `engine` for session `id`, ready: from the pool when it has one, else
    /// made now. Two steps either way: the container, and its readiness.
    async fn container(
        &self,
        engine: Engine,
        id: &str,
        steps: &Steps,
    ) -> Result<Running, ProvisionError> {
        let cfg = self.cfg();
        let spec = &cfg.engines[&engine];
        let role = engine.role();
        let field = role.field();
        let name = container_name(id, role);
        let (made, ready) = (
            format!("{}: {} container", role.as_str(), engine.label()),
            format!("{}: {} ready", role.as_str(), engine.label()),
        );
        let ready_detail = if spec.superuser.is_empty() {
            format!(
                "answered `{}` with the session's own credentials",
                spec.ready_query
            )
        } else {
            format!(
                "answered `{}`; the session's account {} is a plain role owning database {} (no \
                 superuser, CREATEDB or CREATEROLE), and the superuser has no password",
                spec.ready_query, spec.account, spec.database
            )
        };
        if let Some(w) = self.take_warm(engine) {
            let detail = format!(
                "from the warm pool (ready for {:.0} s): renamed {name}, joined {}",
                w.ready_at.elapsed().as_secs_f64(),
                network_name(id)
            );
            let claimed = steps
                .run(&made, &detail, async {
                    self.claim(w, engine, id)
                        .await
                        .map_err(|m| ProvisionError::new(field, m))
                })
                .await;
            if let Ok(c) = claimed {
                let checked = steps
                    .run(&ready, &ready_detail, async {
                        self.wait_ready(&c, CLAIM_READY_TIMEOUT)
                            .await
                            .map_err(|m| ProvisionError::new(field, m))
                    })
                    .await;
                if checked.is_ok() {
                    return Ok(c);
                }
                self.remove_container(&c.name).await.ok();
            }
            tracing::warn!(
                engine = engine.key(),
                "a pooled container could not be used; making a fresh one"
            );
        }
        let c = steps
            .run(
                &made,
                &format!(
                    "{name} from {}, on the session's internal network only (no published \
                     port){}; {} MiB, {} CPU, {} processes, no capabilities{}",
                    spec.image,
                    if spec.read_only {
                        ", read-only root filesystem"
                    } else {
                        ""
                    },
                    spec.memory_bytes / (1024 * 1024),
                    spec.nano_cpus as f64 / 1e9,
                    spec.pids,
                    if spec.cap_add.is_empty() {
                        String::new()
                    } else {
                        format!(" but {}", spec.cap_add.join(", "))
                    }
                ),
                async {
                    self.create(engine, &name, id, &network_name(id))
                        .await
                        .map_err(|m| ProvisionError::new(field, m))
                },
            )
            .await?;
        steps
            .run(&ready, &ready_detail, async {
                self.ready(c, cfg.ready_timeout)
                    .await
                    .map_err(|m| ProvisionError::new(field, m))
            })
            .await
    }

    /// Waits until a new container answers, then (PostgreSQL) makes the session's account a
    /// plain role in place of the superuser the container was made with. On failure the
    /// container is removed.
    async fn ready(&self, c: Running, timeout: Duration) -> Result<Running, String> {
        let done = async {
            self.wait_ready(&c, timeout).await?;
            let spec = &self.cfg().engines[&c.engine];
            if c.login == spec.account {
                return Ok(None);
            }
            let password = random_password();
            self.make_account(&c, &password)
                .await
                .map_err(|e| {
                    scrub(
                        &format!(
                            "the {} container {} answered, but its account could not be made: {e}",
                            c.engine.label(),
                            c.name
                        ),
                        &password,
                    )
                })
                .map(|()| Some(password))
        }
        .await;
        match done {
            Ok(None) => Ok(c),
            Ok(Some(password)) => Ok(Running {
                login: self.cfg().engines[&c.engine].account.clone(),
                password: Secret::new(password),
                ..c
            }),
            Err(e) => {
                self.remove_container(&c.name).await.ok();
                Err(e)
            }
        }
    }

    /// What `resources` says about a container (no secrets).
    fn placed(&self, c: &Running) -> serde_json::Value {
        let spec = &self.cfg().engines[&c.engine];
        serde_json::json!({
            "engine": c.engine.key(),
            "where": format!("container {} ({}) at {}", c.name, spec.image, c.addr),
            "container": c.name,
        })
    }

    async fn make_database(
        &self,
        req: &ProvisionRequest<'_>,
        steps: &Steps,
    ) -> Result<(DatabaseSpec, serde_json::Value), ProvisionError> {
        let Some(engine) = Engine::of_database(req.choices.database) else {
            let spec = steps
                .run(
                    "database: SQLite file",
                    "created and answered SELECT 1",
                    make_sqlite(&self.files, req.id),
                )
                .await?;
            let at = format!("{}.db (a file on the control machine)", req.id);
            return Ok((spec, serde_json::json!({"engine": "sqlite", "where": at})));
        };
        let c = self.container(engine, req.id, steps).await?;
        let spec = &self.cfg().engines[&engine];
        let at = c.addr;
        let (account, db, pw) = (&spec.account, &spec.database, c.password.expose());
        let (url, database) = match engine {
            Engine::Postgres => (format!("postgres://{account}:{pw}@{at}/{db}"), None),
            Engine::Mysql => (format!("mysql://{account}:{pw}@{at}/{db}"), None),
            _ => (
                format!("mongodb://{account}:{pw}@{at}/{db}?authSource=admin"),
                Some(db.clone()),
            ),
        };
        Ok((
            DatabaseSpec {
                engine: req.choices.database,
                url: Secret::new(url),
                database,
            },
            self.placed(&c),
        ))
    }

    async fn make_cache(
        &self,
        req: &ProvisionRequest<'_>,
        steps: &Steps,
    ) -> Result<(CacheSpec, serde_json::Value, Vec<String>), ProvisionError> {
        let mut spec = cache_spec(req);
        let Some(engine) = Engine::of_cache(req.choices.cache) else {
            let at = if req.choices.cache == CacheEngine::None {
                steps.skip("cache", "no cache chosen");
                "none"
            } else {
                steps.skip(
                    "cache: in-process",
                    "lives in the backend instance's memory; made on the first request",
                );
                "in-process"
            };
            let engine = serde_json::to_value(req.choices.cache).unwrap_or_default();
            return Ok((
                spec,
                serde_json::json!({"engine": engine, "where": at}),
                vec![],
            ));
        };
        let c = self.container(engine, req.id, steps).await?;
        let at = c.addr;
        // The server is the session's own: the backend may set its maxmemory and policy.
        spec.shared = false;
        spec.key_prefix = String::new();
        let notes = match engine {
            Engine::Redis => {
                spec.url = Secret::new(format!("redis://:{}@{at}/", c.password.expose()));
                vec![]
            }
            _ => {
                spec.url = Secret::new(at.to_string());
                vec![NOTE_MEMCACHED.to_owned()]
            }
        };
        Ok((spec, self.placed(&c), notes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn names_carry_the_session_id_and_nothing_else_parses_as_one() {
        let id = stacklab_types::session::id("a-session-code");
        assert_eq!(
            id_in(&format!("/{}", container_name(&id, Role::Database))),
            Some(id.clone())
        );
        assert_eq!(id_in(&container_name(&id, Role::Cache)), Some(id.clone()));
        assert_eq!(id_in(&network_name(&id)), Some(id.clone()));
        for other in [
            pool_network("stacklab"),
            format!("{}postgres-0badcafe", warm_prefix("stacklab")),
            "stacklab-".into(),
            "postgres".into(),
            format!("stacklab-{id}-other"),
        ] {
            assert_eq!(id_in(&other), None, "{other}");
        }
    }

    #[test]
    fn scrubbing_removes_the_password_and_url_credentials() {
        let text = scrub(
            "FATAL: password authentication failed, tried redis://:Sekrit123@127.0.0.1:1/ with Sekrit123",
            "Sekrit123",
        );
        assert!(!text.contains("Sekrit123"), "{text}");
        let spec = EngineSpec::official(Engine::Postgres);
        assert_eq!(
            spec.substitute("{account}/{database}/{password}", "pw"),
            "stacklab/stacklab/pw"
        );
    }

    #[tokio::test]
    async fn without_a_section_nothing_is_touched() {
        let d = Docker::start(None, PathBuf::from("/nonexistent")).await;
        assert!(d.available().unwrap_err().contains("[docker]"));
        assert!(d.database(DatabaseEngine::Postgres).is_err());
        assert!(d.leftovers().await.unwrap().is_empty());
        d.teardown("0123456789abcdef0123456789", &Steps::silent())
            .await
            .unwrap();
        assert!(format!("{d:?}").contains("configured"));
    }
}
