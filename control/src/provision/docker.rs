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
//! - [`DockerConfig`], [`EngineSpec`], [`Engine`]: the `[docker]` section, validated.
//! - [`Docker`] and its [`Provisioner`] impl; `Inner`: what it shares with its task.
//! - Containers: create, claim from the pool, readiness, log tails, removal.
//! - The pool task: checks the engine, fills the pool, drops pooled containers that died.
//! - Readiness probes per engine.

use super::embedded::{make_sqlite, remove_sqlite, sqlite_ids};
use super::{cache_spec, Lost, ProvisionError, ProvisionRequest, Provisioned, Provisioner, Steps};
use crate::config::KeyError;
use crate::seal::random_password;
use async_trait::async_trait;
use bollard::models::{
    ContainerCreateBody, ContainerStateStatusEnum, HostConfig, Mount, MountTypeEnum,
    NetworkConnectRequest, NetworkCreateRequest, NetworkDisconnectRequest, RestartPolicy,
    RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, EventsOptions, InspectContainerOptions,
    ListContainersOptions, ListNetworksOptions, ListVolumesOptions, LogsOptions,
    RemoveContainerOptions, RemoveVolumeOptions, RenameContainerOptions, StartContainerOptions,
};
use futures_util::StreamExt;
use serde::Deserialize;
use sqlx::{ConnectOptions, Connection, Executor};
use stacklab_types::session::is_id;
use stacklab_types::stack::{CacheEngine, CacheSpec, DatabaseEngine, DatabaseSpec};
use stacklab_types::Secret;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{broadcast, Notify};
use tokio_util::sync::CancellationToken;

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
// Config
// ---------------------------------------------------------------------------------------------

/// How one engine's containers are made. In `image`'s `env` values and `command`,
/// `{password}`, `{account}`, `{database}` and `{superuser}` are replaced by the container's
/// password (made for it alone), [`EngineSpec::account`], [`EngineSpec::database`] and
/// [`EngineSpec::superuser`].
///
/// A container publishes no port: it sits on an `internal` network of its session's (or the
/// warm pool's), which reaches nothing outside itself, and control and the backends on this
/// machine reach it at its address on that network.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineSpec {
    /// The image, e.g. `postgres:16` or `stacklab/postgres:local`.
    pub image: String,
    /// The container's command (the image's own when empty).
    pub command: Vec<String>,
    /// Environment variables.
    pub env: BTreeMap<String, String>,
    /// The user the container runs as (the image's when `None`).
    pub user: Option<String>,
    /// The server's port inside the container (reached at the container's address).
    pub port: u16,
    /// The account the session's URL carries (unused by Memcached).
    pub account: String,
    /// The database the session's URL names (SQL engines and MongoDB).
    pub database: String,
    /// What readiness asks: SQL for PostgreSQL and MySQL, a command for Redis (`PING`), a
    /// text-protocol command for Memcached (`version`), a command name for MongoDB (`ping`).
    pub ready_query: String,
    /// Memory limit in bytes (swap is not allowed on top).
    pub memory_bytes: i64,
    /// CPU limit in billionths of a CPU (Docker's `NanoCpus`).
    pub nano_cpus: i64,
    /// Most processes (and threads) the container may run.
    pub pids: i64,
    /// Capabilities given back after all are dropped.
    pub cap_add: Vec<String>,
    /// tmpfs mounts: path -> options (`size=64m`).
    pub tmpfs: BTreeMap<String, String>,
    /// Paths given an anonymous volume of the container's own (removed with it): where the
    /// server keeps its data, since the root filesystem is read-only.
    pub volumes: Vec<String>,
    /// The container's root filesystem is read-only (only `tmpfs` and `volumes` are written).
    pub read_only: bool,
    /// PostgreSQL: the superuser the container is made with (`{superuser}`, with
    /// `{password}`). Once the server answers, control makes `account` a plain role (no
    /// superuser, no CREATEDB, no CREATEROLE) owning `database`, with a password of its own,
    /// and takes the superuser's password away: the session's URL never carries a superuser.
    /// Empty: `account` is made by the image itself.
    pub superuser: String,
    /// Containers kept started and ready for launches.
    pub warm: usize,
}

impl EngineSpec {
    /// The spec for `engine` with the official image from Docker Hub; the values
    /// `config/docker.toml` spells out.
    pub fn official(engine: Engine) -> Self {
        let env = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>()
        };
        let strings = |s: &[&str]| s.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        const MB: i64 = 1024 * 1024;
        let base = |image: &str, user: &str, port: u16, query: &str| EngineSpec {
            image: image.to_owned(),
            command: vec![],
            env: BTreeMap::new(),
            user: Some(user.to_owned()),
            port,
            account: "stacklab".to_owned(),
            database: "stacklab".to_owned(),
            ready_query: query.to_owned(),
            memory_bytes: 256 * MB,
            nano_cpus: 1_000_000_000,
            pids: 256,
            cap_add: vec![],
            tmpfs: BTreeMap::new(),
            volumes: vec![],
            read_only: true,
            superuser: String::new(),
            warm: 1,
        };
        let tmpfs = |pairs: &[(&str, &str)]| env(pairs);
        match engine {
            Engine::Postgres => EngineSpec {
                command: strings(&[
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "shared_buffers=16MB",
                    "-c",
                    "max_connections=50",
                ]),
                env: env(&[
                    ("POSTGRES_PASSWORD", "{password}"),
                    ("POSTGRES_USER", "{superuser}"),
                ]),
                superuser: "postgres".to_owned(),
                volumes: strings(&["/var/lib/postgresql/data"]),
                tmpfs: tmpfs(&[("/tmp", "size=16m,mode=1777"), ("/var/run/postgresql", "size=1m,mode=1777")]),
                ..base("postgres:16", "postgres", 5432, "SELECT 1")
            },
            Engine::Mysql => EngineSpec {
                command: strings(&[
                    "--innodb-buffer-pool-size=32M",
                    "--innodb-flush-log-at-trx-commit=0",
                    "--performance-schema=OFF",
                    "--skip-name-resolve",
                    "--max-connections=50",
                ]),
                env: env(&[
                    ("MYSQL_RANDOM_ROOT_PASSWORD", "yes"),
                    ("MYSQL_USER", "{account}"),
                    ("MYSQL_PASSWORD", "{password}"),
                    ("MYSQL_DATABASE", "{database}"),
                ]),
                memory_bytes: 384 * MB,
                volumes: strings(&["/var/lib/mysql"]),
                tmpfs: tmpfs(&[("/tmp", "size=64m,mode=1777"), ("/run/mysqld", "size=1m,mode=1777")]),
                ..base("mysql:8.4", "mysql", 3306, "SELECT 1")
            },
            Engine::Mongodb => EngineSpec {
                command: strings(&["--wiredTigerCacheSizeGB", "0.25"]),
                env: env(&[
                    ("MONGO_INITDB_ROOT_USERNAME", "{account}"),
                    ("MONGO_INITDB_ROOT_PASSWORD", "{password}"),
                    ("MONGO_INITDB_DATABASE", "{database}"),
                ]),
                memory_bytes: 512 * MB,
                warm: 0,
                volumes: strings(&["/data/db", "/data/configdb"]),
                tmpfs: tmpfs(&[("/tmp", "size=16m,mode=1777")]),
                ..base("mongo:7", "mongodb", 27017, "ping")
            },
            Engine::Redis => EngineSpec {
                command: strings(&[
                    "sh",
                    "-c",
                    "umask 077 && printf 'requirepass %s\\n' \"$REDIS_PASSWORD\" >/tmp/redis.conf \
                     && exec redis-server /tmp/redis.conf --save '' --appendonly no --protected-mode no",
                ]),
                env: env(&[("REDIS_PASSWORD", "{password}")]),
                account: "default".to_owned(),
                memory_bytes: 128 * MB,
                nano_cpus: 500_000_000,
                pids: 64,
                tmpfs: tmpfs(&[("/tmp", "size=1m,mode=1777")]),
                ..base("redis:7", "redis", 6379, "PING")
            },
            Engine::Memcached => EngineSpec {
                command: strings(&["-m", "64", "-c", "256"]),
                account: String::new(),
                database: String::new(),
                memory_bytes: 96 * MB,
                nano_cpus: 500_000_000,
                pids: 64,
                ..base("memcached:1.6", "memcache", 11211, "version")
            },
        }
    }

    fn substitute(&self, text: &str, password: &str) -> String {
        text.replace("{password}", password)
            .replace("{account}", &self.account)
            .replace("{database}", &self.database)
            .replace("{superuser}", &self.superuser)
    }
}

/// The `[docker]` section, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct DockerConfig {
    /// `unix:///path/docker.sock`, `tcp://host:port` or `http://host:port`; `None`: the
    /// `DOCKER_HOST` variable, else the local socket.
    pub host: Option<String>,
    /// Labels everything made here (`stacklab.instance`): leftovers and pool clean-up look at
    /// this instance's only. Control nodes sharing one Docker engine need different ones.
    pub instance: String,
    /// How long a new container has to answer its readiness query.
    pub ready_timeout: Duration,
    /// Most containers at once, sessions' and pooled.
    pub max_containers: usize,
    /// Pull an engine's image in the background when the engine lacks it.
    pub pull_missing: bool,
    /// The engines offered; one absent is not offered.
    pub engines: BTreeMap<Engine, EngineSpec>,
    /// Backend instances run as containers (`[docker.backend]`).
    pub backend: BackendSpec,
    /// Where sessions' networks take their small subnets from (`docker.session_network_range`
    /// and `docker.session_network_prefix`); `None`: from Docker's default pools, which give
    /// each network a /16 and run out after a few dozen.
    pub session_subnets: Option<SubnetRange>,
}

/// A range of IPv4 addresses cut into equal subnets, one per session network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubnetRange {
    base: u32,
    range_prefix: u8,
    prefix: u8,
}

impl SubnetRange {
    /// `10.213.0.0/16` cut into `/prefix` subnets.
    pub fn parse(range: &str, prefix: u8) -> Result<Self, String> {
        let (addr, bits) = range
            .split_once('/')
            .ok_or_else(|| format!("`{range}` is not ADDRESS/BITS, e.g. 10.213.0.0/16"))?;
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| format!("`{addr}` is not an IPv4 address"))?;
        let range_prefix: u8 = bits
            .parse()
            .ok()
            .filter(|b| (8..=29).contains(b))
            .ok_or_else(|| format!("`/{bits}`: the range's prefix must be 8 to 29 bits"))?;
        if !(range_prefix..=29).contains(&prefix) {
            return Err(format!(
                "session_network_prefix {prefix} must be between the range's /{range_prefix} and /29 (4 addresses: a network, a gateway, two containers, a broadcast)"
            ));
        }
        let base = u32::from(addr);
        let mask = u32::MAX << (32 - u32::from(range_prefix));
        if base & !mask != 0 {
            return Err(format!(
                "`{range}` has host bits set; the range starts at {}",
                Ipv4Addr::from(base & mask)
            ));
        }
        Ok(Self {
            base,
            range_prefix,
            prefix,
        })
    }

    /// How many subnets the range holds: the most session networks at once.
    pub fn len(&self) -> u32 {
        1 << (self.prefix - self.range_prefix)
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// The `n`th subnet, as `a.b.c.d/prefix`.
    pub fn nth(&self, n: u32) -> String {
        let size = 1u32 << (32 - u32::from(self.prefix));
        format!("{}/{}", Ipv4Addr::from(self.base + n * size), self.prefix)
    }
}

/// `[docker.backend]`: how a backend instance runs as a container (see
/// [`super::docker_backend`]).
#[derive(Debug, Clone, PartialEq)]
pub struct BackendSpec {
    /// An image with `/usr/local/bin/stacklab` (built by `config/images/build.sh backend`).
    pub image: String,
    /// A `stacklab` binary mounted read-only over the image's; `self`: control's own
    /// executable (then any image with a C library will do).
    pub binary: Option<PathBuf>,
    /// Images of the other runtimes, by runtime name: each image's own entrypoint is that
    /// runtime's start command (`config/images/build.sh python` makes `stacklab/python:local`).
    pub runtime_images: std::collections::BTreeMap<String, String>,
    pub memory_bytes: i64,
    pub nano_cpus: i64,
    pub pids: i64,
}

impl Default for BackendSpec {
    fn default() -> Self {
        Self {
            image: "stacklab/backend:local".into(),
            binary: None,
            runtime_images: [
                ("python".to_owned(), "stacklab/python:local".to_owned()),
                ("node".to_owned(), "stacklab/node:local".to_owned()),
                ("ruby".to_owned(), "stacklab/ruby:local".to_owned()),
                ("java".to_owned(), "stacklab/java:local".to_owned()),
            ]
            .into(),
            memory_bytes: 512 * 1024 * 1024,
            nano_cpus: 1_000_000_000,
            pids: 512,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct RawBackend {
    image: Option<String>,
    binary: Option<String>,
    runtime_images: Option<std::collections::BTreeMap<String, String>>,
    memory_mb: Option<u64>,
    cpus: Option<f64>,
    pids: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
struct RawDocker {
    host: Option<String>,
    instance: Option<String>,
    publish_addr: Option<String>,
    ready_timeout_ms: Option<u64>,
    max_containers: Option<usize>,
    pull_missing: Option<bool>,
    session_network_range: Option<String>,
    session_network_prefix: Option<u8>,
    #[serde(default)]
    engines: BTreeMap<String, toml::Value>,
    backend: Option<RawBackend>,
}

#[derive(Debug, Default, Deserialize)]
struct RawEngine {
    enabled: Option<bool>,
    image: Option<String>,
    command: Option<Vec<String>>,
    env: Option<BTreeMap<String, String>>,
    user: Option<String>,
    port: Option<u16>,
    account: Option<String>,
    database: Option<String>,
    ready_query: Option<String>,
    memory_mb: Option<u64>,
    cpus: Option<f64>,
    pids: Option<i64>,
    cap_add: Option<Vec<String>>,
    tmpfs: Option<BTreeMap<String, String>>,
    volumes: Option<Vec<String>>,
    read_only: Option<bool>,
    superuser: Option<String>,
    warm: Option<usize>,
}

fn plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl DockerConfig {
    /// Validates `[docker]`; `Ok(None)` when there is none (the provisioner is then off).
    /// Every problem is named by its key, unknown keys too (`stacklab_types::config`).
    /// Every engine starts from [`EngineSpec::official`]; a key given replaces that value.
    pub fn from_section(section: Option<&toml::Value>) -> Result<Option<Self>, Vec<KeyError>> {
        let Some(section) = section else {
            return Ok(None);
        };
        let mut errors: Vec<KeyError> = Vec::new();
        let Some(raw) =
            stacklab_types::config::read::<_, RawDocker>("docker", section.clone(), &mut errors)
        else {
            return Err(errors);
        };
        let mut err = |key: &str, msg: String| errors.push((key.to_owned(), msg));

        let host = raw.host.filter(|h| !h.is_empty());
        if let Some(h) = &host {
            if !["unix://", "tcp://", "http://"]
                .iter()
                .any(|s| h.starts_with(s))
            {
                err(
                    "docker.host",
                    format!("`{h}` is not unix://PATH, tcp://HOST:PORT or http://HOST:PORT"),
                );
            }
        }
        let instance = raw.instance.unwrap_or_else(|| DEFAULT_INSTANCE.to_owned());
        if instance.is_empty()
            || instance.len() > 32
            || !instance
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            err(
                "docker.instance",
                "1 to 32 characters of a-z, 0-9 and `-`".into(),
            );
        }
        if raw.publish_addr.is_some() {
            err(
                "docker.publish_addr",
                "containers publish no port any more: they sit on internal networks, reached \
                 at their own addresses from this machine; remove the key"
                    .into(),
            );
        }
        let ready_timeout = raw
            .ready_timeout_ms
            .map_or(DEFAULT_READY_TIMEOUT, Duration::from_millis);
        if ready_timeout < Duration::from_millis(100) {
            err("docker.ready_timeout_ms", "at least 100".into());
        }
        let max_containers = raw.max_containers.unwrap_or(DEFAULT_MAX_CONTAINERS);
        if max_containers == 0 {
            err("docker.max_containers", "at least 1".into());
        }

        let range = raw
            .session_network_range
            .unwrap_or_else(|| DEFAULT_SESSION_NETWORK_RANGE.to_owned());
        let session_subnets = if range.is_empty() {
            None
        } else {
            match SubnetRange::parse(&range, raw.session_network_prefix.unwrap_or(28)) {
                Ok(r) => Some(r),
                Err(e) => {
                    err("docker.session_network_range", e);
                    None
                }
            }
        };

        let mut engines = BTreeMap::new();
        for (key, value) in &raw.engines {
            let path = format!("docker.engines.{key}");
            let Some(engine) = Engine::from_key(key) else {
                err(
                    &path,
                    "not an engine: postgres, mysql, mongodb, redis or memcached".into(),
                );
                continue;
            };
            let mut problems = Vec::new();
            let r: Option<RawEngine> =
                stacklab_types::config::read(&path, value.clone(), &mut problems);
            for (key, message) in problems {
                err(&key, message);
            }
            let Some(r) = r else { continue };
            if r.enabled == Some(false) {
                continue;
            }
            let d = EngineSpec::official(engine);
            let spec = EngineSpec {
                image: r.image.unwrap_or(d.image),
                command: r.command.unwrap_or(d.command),
                env: r.env.unwrap_or(d.env),
                user: match r.user {
                    Some(u) if u.is_empty() => None,
                    Some(u) => Some(u),
                    None => d.user,
                },
                port: r.port.unwrap_or(d.port),
                account: r.account.unwrap_or(d.account),
                database: r.database.unwrap_or(d.database),
                ready_query: r.ready_query.unwrap_or(d.ready_query),
                memory_bytes: r
                    .memory_mb
                    .map_or(d.memory_bytes, |m| (m as i64).saturating_mul(1024 * 1024)),
                nano_cpus: r.cpus.map_or(d.nano_cpus, |c| (c * 1e9).round() as i64),
                pids: r.pids.unwrap_or(d.pids),
                cap_add: r.cap_add.unwrap_or(d.cap_add),
                tmpfs: r.tmpfs.unwrap_or(d.tmpfs),
                volumes: r.volumes.unwrap_or(d.volumes),
                read_only: r.read_only.unwrap_or(d.read_only),
                superuser: r.superuser.unwrap_or(d.superuser),
                warm: r.warm.unwrap_or(d.warm),
            };
            for (i, v) in spec.volumes.iter().enumerate() {
                if !v.starts_with('/') || v.contains(':') {
                    err(
                        &format!("{path}.volumes[{i}]"),
                        format!("`{v}` is not an absolute path in the container"),
                    );
                }
            }
            for p in spec.tmpfs.keys() {
                if !p.starts_with('/') {
                    err(
                        &format!("{path}.tmpfs"),
                        format!("`{p}` is not an absolute path in the container"),
                    );
                }
            }
            if !spec.superuser.is_empty() {
                if engine != Engine::Postgres {
                    err(
                        &format!("{path}.superuser"),
                        "only PostgreSQL containers are made with a superuser that control \
                         replaces by a plain role; leave it out"
                            .into(),
                    );
                } else if !plain_name(&spec.superuser) || spec.superuser == spec.account {
                    err(
                        &format!("{path}.superuser"),
                        "letters, digits, `_` and `-`, and not the account itself".into(),
                    );
                }
            }
            if spec.image.trim().is_empty() {
                err(&format!("{path}.image"), "must name an image".into());
            }
            if spec.port == 0 {
                err(
                    &format!("{path}.port"),
                    "the server's port, 1 to 65535".into(),
                );
            }
            if spec.memory_bytes < 16 * 1024 * 1024 {
                err(&format!("{path}.memory_mb"), "at least 16".into());
            }
            if !(0.01..=64.0).contains(&(spec.nano_cpus as f64 / 1e9)) {
                err(&format!("{path}.cpus"), "between 0.01 and 64".into());
            }
            if spec.pids < 8 {
                err(&format!("{path}.pids"), "at least 8".into());
            }
            if spec.warm > MAX_WARM {
                err(&format!("{path}.warm"), format!("at most {MAX_WARM}"));
            }
            if spec.ready_query.trim().is_empty() {
                err(&format!("{path}.ready_query"), "must not be empty".into());
            }
            if engine.has_password() {
                if engine != Engine::Redis && !plain_name(&spec.account) {
                    err(
                        &format!("{path}.account"),
                        "letters, digits, `_` and `-`".into(),
                    );
                }
                if engine.role() == Role::Database && !plain_name(&spec.database) {
                    err(
                        &format!("{path}.database"),
                        "letters, digits, `_` and `-`".into(),
                    );
                }
                let uses_password = spec.env.values().any(|v| v.contains("{password}"))
                    || spec.command.iter().any(|c| c.contains("{password}"));
                if !uses_password {
                    err(
                        &path,
                        "neither env nor command uses {password}: the server would not ask \
                         for the session's password"
                            .into(),
                    );
                }
            }
            for (i, cap) in spec.cap_add.iter().enumerate() {
                if cap.eq_ignore_ascii_case("ALL") || cap.eq_ignore_ascii_case("CAP_SYS_ADMIN") {
                    err(
                        &format!("{path}.cap_add[{i}]"),
                        format!("`{cap}` would undo the isolation; give back single capabilities"),
                    );
                }
            }
            engines.insert(engine, spec);
        }
        let rb = raw.backend.unwrap_or_default();
        let d = BackendSpec::default();
        let backend = BackendSpec {
            image: rb.image.unwrap_or(d.image),
            binary: rb.binary.filter(|b| !b.is_empty()).map(|b| {
                if b == "self" {
                    std::env::current_exe().unwrap_or_else(|_| PathBuf::from(b))
                } else {
                    PathBuf::from(b)
                }
            }),
            runtime_images: rb.runtime_images.unwrap_or(d.runtime_images),
            memory_bytes: rb
                .memory_mb
                .map_or(d.memory_bytes, |m| (m as i64).saturating_mul(1024 * 1024)),
            nano_cpus: rb.cpus.map_or(d.nano_cpus, |c| (c * 1e9).round() as i64),
            pids: rb.pids.unwrap_or(d.pids),
        };
        if backend.image.trim().is_empty() {
            err("docker.backend.image", "must name an image".into());
        }
        for (runtime, image) in &backend.runtime_images {
            if image.trim().is_empty() || runtime == "rust" {
                err(
                    &format!("docker.backend.runtime_images.{runtime}"),
                    "name an image (the Rust runtime's is docker.backend.image)".into(),
                );
            }
        }
        if let Some(b) = &backend.binary {
            if !b.is_absolute() {
                err(
                    "docker.backend.binary",
                    format!("`{}` is not an absolute path (or `self`)", b.display()),
                );
            }
        }
        if backend.memory_bytes < 32 * 1024 * 1024 {
            err("docker.backend.memory_mb", "at least 32".into());
        }
        if !(0.01..=64.0).contains(&(backend.nano_cpus as f64 / 1e9)) {
            err("docker.backend.cpus", "between 0.01 and 64".into());
        }
        if backend.pids < 16 {
            err("docker.backend.pids", "at least 16".into());
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let config = DockerConfig {
            backend,
            host,
            instance,
            ready_timeout,
            max_containers,
            pull_missing: raw.pull_missing.unwrap_or(true),
            engines,
            session_subnets,
        };
        Ok(Some(config))
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
                        inner
                            .ensure_network(&net, Some(id))
                            .await
                            .map_err(|m| ProvisionError::new(None, m))
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

    // ---- the engine and its images -----------------------------------------------------------

    /// Pings the engine (agreeing on the API version) and looks for every engine's image.
    async fn check(&self) {
        let cfg = self.cfg();
        let api = self.api();
        let at = cfg
            .host
            .as_deref()
            .unwrap_or("the local socket (or DOCKER_HOST)");
        let status = match tokio::time::timeout(PING_TIMEOUT, async {
            api.ping().await?;
            api.clone().negotiate_version().await.map(drop)
        })
        .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!(
                "the Docker engine at {at} cannot be used: {}",
                api_text(&e)
            )),
            Err(_) => Err(format!(
                "the Docker engine at {at} did not answer within {} s",
                PING_TIMEOUT.as_secs()
            )),
        };
        let up = status.is_ok();
        {
            let mut s = self.status.write().unwrap_or_else(|e| e.into_inner());
            if *s != status {
                match &status {
                    Ok(()) => tracing::info!(at, "the Docker engine answers"),
                    Err(why) => {
                        tracing::warn!(reason = %why, "the docker provisioner is unavailable")
                    }
                }
            }
            *s = status;
        }
        if !up {
            return;
        }
        for (engine, spec) in &cfg.engines {
            let found = match api.inspect_image(&spec.image).await {
                Ok(_) => Ok(()),
                Err(e) if status_code(&e) == Some(404) => {
                    self.pull(&spec.image);
                    Err(format!(
                        "the image {} is not on the Docker engine{}; or build the local images \
                         (config/images/build.sh) and use config/images/docker-local.toml",
                        spec.image,
                        if cfg.pull_missing {
                            " (a pull was started: try again once it is done)"
                        } else {
                            " (docker.pull_missing is off: pull it)"
                        }
                    ))
                }
                Err(e) => Err(format!(
                    "cannot look for the image {}: {}",
                    spec.image,
                    api_text(&e)
                )),
            };
            self.images
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(*engine, found);
        }
    }

    /// Starts pulling `image` in the background, once per run, when `pull_missing` is on.
    fn pull(&self, image: &str) {
        if !self.cfg().pull_missing
            || !self
                .pulls
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(image.to_owned())
        {
            return;
        }
        let api = self.api().clone();
        let image = image.to_owned();
        tokio::spawn(async move {
            tracing::info!(image, "pulling a missing engine image");
            let mut stream = api.create_image(
                Some(CreateImageOptions {
                    from_image: Some(image.clone()),
                    ..Default::default()
                }),
                None,
                None,
            );
            while let Some(item) = stream.next().await {
                if let Err(e) = item {
                    tracing::warn!(image, error = %api_text(&e), "cannot pull the image; build it offline (config/images/build.sh) or pull it by hand");
                    return;
                }
            }
            tracing::info!(image, "pulled");
        });
    }

    // ---- networks ----------------------------------------------------------------------------

    /// Makes network `name` unless it exists (the engine does not refuse a duplicate name on
    /// every API version, so this looks first). `session`: the id it is labelled with, or
    /// `None` for the pool's network (inter-container traffic off).
    async fn ensure_network(&self, name: &str, session: Option<&str>) -> Result<(), String> {
        let api = self.api();
        // One check-then-create at a time: two at once would make two networks of one name,
        // and a container could then name neither.
        let _one = self.networks.lock().await;
        let found = self.networks_named(name).await?;
        if let Some((_, extra)) = found.split_first() {
            for id in extra {
                // Left by a race in an earlier run: unusable by name, so removed.
                let _ = api.remove_network(id).await;
            }
            return Ok(());
        }
        let mut labels = HashMap::from([(LABEL_INSTANCE.to_owned(), self.cfg().instance.clone())]);
        let mut options = HashMap::new();
        match session {
            Some(id) => {
                labels.insert(LABEL_SESSION.to_owned(), id.to_owned());
            }
            None => {
                labels.insert(LABEL_SESSION.to_owned(), WARM.to_owned());
                options.insert(
                    "com.docker.network.bridge.enable_icc".to_owned(),
                    "false".to_owned(),
                );
            }
        }
        let request = |ipam: Option<bollard::models::Ipam>| NetworkCreateRequest {
            name: name.to_owned(),
            driver: Some("bridge".to_owned()),
            // Reaches nothing outside itself (no route out, no published port); this machine
            // reaches its containers at their addresses.
            internal: Some(true),
            labels: Some(labels.clone()),
            options: Some(options.clone()),
            ipam,
            ..Default::default()
        };
        let range = self.cfg().session_subnets.filter(|_| session.is_some());
        let Some(range) = range else {
            return api.create_network(request(None)).await.map(drop).or_else(
                |e| match status_code(&e) {
                    Some(409) => Ok(()),
                    _ => Err(format!("cannot create network {name}: {}", api_text(&e))),
                },
            );
        };
        // A session network: the first subnet of the range no network on the engine uses
        // (another program, or another control, may have taken one since: then the next).
        let used = self.subnets_in_use().await?;
        let mut last = String::new();
        let mut tries = 0;
        for n in 0..range.len() {
            let subnet = range.nth(n);
            if used.contains(&subnet) {
                continue;
            }
            let ipam = bollard::models::Ipam {
                driver: Some("default".to_owned()),
                config: Some(vec![bollard::models::IpamConfig {
                    subnet: Some(subnet.clone()),
                    ..Default::default()
                }]),
                options: None,
            };
            match api.create_network(request(Some(ipam))).await {
                Ok(_) => return Ok(()),
                Err(e) if status_code(&e) == Some(409) => return Ok(()),
                Err(e) => {
                    last = api_text(&e);
                    tries += 1;
                    if tries >= 8 {
                        break;
                    }
                }
            }
        }
        Err(format!(
            "cannot create network {name}: no free /{} subnet left in docker.session_network_range ({} networks at most{}); end sessions or widen the range",
            range.prefix,
            range.len(),
            if last.is_empty() { String::new() } else { format!("; the engine said: {last}") }
        ))
    }

    /// Subnets of every network on the engine (not only ours: Docker refuses overlaps).
    async fn subnets_in_use(&self) -> Result<HashSet<String>, String> {
        let found = self
            .api()
            .list_networks(None::<ListNetworksOptions>)
            .await
            .map_err(|e| format!("cannot list networks: {}", api_text(&e)))?;
        Ok(found
            .into_iter()
            .filter_map(|n| n.ipam?.config)
            .flatten()
            .filter_map(|c| c.subnet)
            .collect())
    }

    /// Ids of the networks called exactly `name` (the engine's filter matches parts of names).
    async fn networks_named(&self, name: &str) -> Result<Vec<String>, String> {
        let found = self
            .api()
            .list_networks(Some(ListNetworksOptions {
                filters: Some(HashMap::from([("name".to_owned(), vec![name.to_owned()])])),
            }))
            .await
            .map_err(|e| format!("cannot list networks: {}", api_text(&e)))?;
        Ok(found
            .into_iter()
            .filter(|n| n.name.as_deref() == Some(name))
            .filter_map(|n| n.id)
            .collect())
    }

    async fn remove_networks(&self, name: &str) -> Result<(), String> {
        for id in self.networks_named(name).await? {
            match self.api().remove_network(&id).await {
                Ok(()) => {}
                Err(e) if status_code(&e) == Some(404) => {}
                Err(e) => return Err(format!("cannot remove network {name}: {}", api_text(&e))),
            }
        }
        Ok(())
    }

    // ---- containers --------------------------------------------------------------------------

    /// Counts `name` against `max_containers`, or says the cap is reached.
    fn reserve(&self, name: &str) -> Result<(), String> {
        let max = self.cfg().max_containers;
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        if live.len() >= max {
            return Err(format!(
                "the docker provisioner runs its most containers ({max}, docker.max_containers) \
                 already; try again when a session has ended"
            ));
        }
        live.insert(name.to_owned());
        Ok(())
    }

    fn release(&self, name: &str) {
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
    }

    /// Creates and starts a container of `engine` called `name` on `network`.
    async fn create(
        &self,
        engine: Engine,
        name: &str,
        session: &str,
        network: &str,
    ) -> Result<Running, String> {
        let cfg = self.cfg();
        let spec = &cfg.engines[&engine];
        self.reserve(name)?;
        let made = self
            .create_reserved(engine, spec, name, session, network)
            .await;
        if made.is_err() {
            self.remove_container(name).await.ok();
        }
        made
    }

    async fn create_reserved(
        &self,
        engine: Engine,
        spec: &EngineSpec,
        name: &str,
        session: &str,
        network: &str,
    ) -> Result<Running, String> {
        let cfg = self.cfg();
        let api = self.api();
        let password = if engine.has_password() {
            random_password()
        } else {
            String::new()
        };
        let labels = HashMap::from([
            (LABEL_INSTANCE.to_owned(), cfg.instance.clone()),
            (LABEL_SESSION.to_owned(), session.to_owned()),
            (LABEL_ROLE.to_owned(), engine.role().as_str().to_owned()),
            (LABEL_ENGINE.to_owned(), engine.key().to_owned()),
        ]);
        let body = ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: (!spec.command.is_empty()).then(|| {
                spec.command
                    .iter()
                    .map(|c| spec.substitute(c, &password))
                    .collect()
            }),
            env: Some(
                spec.env
                    .iter()
                    .map(|(k, v)| format!("{k}={}", spec.substitute(v, &password)))
                    .collect(),
            ),
            user: spec.user.clone(),
            labels: Some(labels),
            host_config: Some(HostConfig {
                // No published port: the network is internal, the container is reached at
                // its address on it.
                network_mode: Some(network.to_owned()),
                readonly_rootfs: Some(spec.read_only),
                mounts: (!spec.volumes.is_empty()).then(|| {
                    spec.volumes
                        .iter()
                        .map(|target| Mount {
                            target: Some(target.clone()),
                            typ: Some(MountTypeEnum::VOLUME),
                            ..Default::default()
                        })
                        .collect()
                }),
                memory: Some(spec.memory_bytes),
                memory_swap: Some(spec.memory_bytes),
                nano_cpus: Some(spec.nano_cpus),
                pids_limit: Some(spec.pids),
                privileged: Some(false),
                cap_drop: Some(vec!["ALL".to_owned()]),
                cap_add: Some(spec.cap_add.clone()),
                security_opt: Some(vec!["no-new-privileges:true".to_owned()]),
                tmpfs: (!spec.tmpfs.is_empty()).then(|| spec.tmpfs.clone().into_iter().collect()),
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::NO),
                    maximum_retry_count: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let what = format!("{} container {name}", engine.label());
        let created = api
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.to_owned()),
                    ..Default::default()
                }),
                body,
            )
            .await
            .map_err(|e| match status_code(&e) {
                Some(404) => format!(
                    "cannot create the {what}: the image {} is not on the Docker engine; pull it, \
                     or build the local images (config/images/build.sh) and use \
                     config/images/docker-local.toml",
                    spec.image
                ),
                _ => scrub(
                    &format!("cannot create the {what}: {}", api_text(&e)),
                    &password,
                ),
            })?;
        api.start_container(&created.id, None::<StartContainerOptions>)
            .await
            .map_err(|e| {
                scrub(
                    &format!("cannot start the {what}: {}", api_text(&e)),
                    &password,
                )
            })?;
        let addr = self
            .address_on(&created.id, network, spec.port)
            .await
            .map_err(|e| format!("the {what}: {e}"))?;
        Ok(Running {
            id: created.id,
            name: name.to_owned(),
            engine,
            addr,
            login: if spec.superuser.is_empty() {
                spec.account.clone()
            } else {
                spec.superuser.clone()
            },
            password: Secret::new(password),
        })
    }

    /// Removes a container and its anonymous volumes; one already gone is no error.
    async fn remove_container(&self, name: &str) -> Result<(), String> {
        let gone = match force_remove(self.api(), name).await {
            Ok(()) => Ok(()),
            Err(e) if status_code(&e) == Some(404) => Ok(()),
            Err(e) => Err(format!("cannot remove container {name}: {}", api_text(&e))),
        };
        if gone.is_ok() {
            self.release(name);
        }
        gone
    }

    /// Removes the session's containers (by name, and any labelled with its id) and any
    /// volume labelled with it.
    async fn remove_session_containers(&self, id: &str) -> Result<(), String> {
        let cfg = self.cfg();
        let api = self.api();
        let mut names: BTreeSet<String> = [Role::Database, Role::Cache]
            .into_iter()
            .map(|r| container_name(id, r))
            .collect();
        let filters = label_filter(&[(LABEL_INSTANCE, &cfg.instance), (LABEL_SESSION, id)]);
        let labelled = api
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters.clone()),
                ..Default::default()
            }))
            .await
            .map_err(|e| format!("cannot list containers: {}", api_text(&e)))?;
        names.extend(labelled.into_iter().filter_map(|c| {
            c.names?
                .first()
                .map(|n| n.trim_start_matches('/').to_owned())
        }));
        let removed =
            futures_util::future::join_all(names.iter().map(|n| self.remove_container(n))).await;
        let mut failed: Vec<String> = removed.into_iter().filter_map(Result::err).collect();
        // Volumes are made by images that declare them (removed with their container); one
        // labelled with the session is removed too.
        match api
            .list_volumes(Some(ListVolumesOptions {
                filters: Some(filters),
            }))
            .await
        {
            Ok(list) => {
                for v in list.volumes.unwrap_or_default() {
                    match api
                        .remove_volume(&v.name, Some(RemoveVolumeOptions { force: true }))
                        .await
                    {
                        Ok(()) => {}
                        Err(e) if status_code(&e) == Some(404) => {}
                        Err(e) => failed.push(format!(
                            "cannot remove volume {}: {}",
                            v.name,
                            api_text(&e)
                        )),
                    }
                }
            }
            Err(e) => failed.push(format!("cannot list volumes: {}", api_text(&e))),
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(failed.join("; "))
        }
    }

    /// Removes this instance's pooled containers that no [`Warm`] of this run holds: those a
    /// previous run left (at start) or all of them (at shutdown, the pool emptied first).
    async fn remove_stale_pool(&self) -> Result<(), String> {
        let cfg = self.cfg();
        let prefix = warm_prefix(&cfg.instance);
        let kept: HashSet<String> = self
            .pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .flatten()
            .map(|w| w.name.clone())
            .collect();
        let list = self
            .api()
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(label_filter(&[
                    (LABEL_INSTANCE, &cfg.instance),
                    (LABEL_SESSION, WARM),
                ])),
                ..Default::default()
            }))
            .await
            .map_err(|e| format!("cannot list containers: {}", api_text(&e)))?;
        let stale: Vec<String> = list
            .into_iter()
            .filter_map(|c| {
                c.names?
                    .first()
                    .map(|n| n.trim_start_matches('/').to_owned())
            })
            .filter(|n| n.starts_with(&prefix) && !kept.contains(n))
            .collect();
        for name in &stale {
            self.remove_container(name).await?;
        }
        if !stale.is_empty() {
            tracing::info!(
                removed = stale.len(),
                "removed pooled containers nobody holds"
            );
        }
        Ok(())
    }

    /// Removes the pooled containers an earlier run left, the first time the engine answers.
    async fn sweep_once(&self) {
        use std::sync::atomic::Ordering;
        if self.usable().is_err() || self.swept.load(Ordering::Relaxed) {
            return;
        }
        match self.remove_stale_pool().await {
            Ok(()) => self.swept.store(true, Ordering::Relaxed),
            Err(e) => {
                tracing::warn!(error = %e, "cannot remove pooled containers of an earlier run")
            }
        }
    }

    /// The last lines of a container's log, scrubbed of `secret`.
    async fn log_tail(&self, name: &str, secret: &str) -> String {
        let mut stream = self.api().logs(
            name,
            Some(LogsOptions {
                stdout: true,
                stderr: true,
                tail: LOG_TAIL_LINES.to_string(),
                ..Default::default()
            }),
        );
        let mut text = String::new();
        while let Some(Ok(chunk)) = stream.next().await {
            text.push_str(&chunk.to_string());
            if text.len() > 4 * LOG_TAIL_BYTES {
                break;
            }
        }
        let text = scrub(text.trim(), secret);
        if text.len() > LOG_TAIL_BYTES {
            let mut cut = text.len() - LOG_TAIL_BYTES;
            while !text.is_char_boundary(cut) {
                cut += 1;
            }
            format!("…{}", &text[cut..])
        } else if text.is_empty() {
            "(empty)".to_owned()
        } else {
            text
        }
    }

    /// `None` while the container runs; else what state it is in.
    async fn stopped(&self, id: &str) -> Option<String> {
        match self
            .api()
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
        {
            Ok(info) => {
                let state = info.state?;
                match state.status {
                    Some(ContainerStateStatusEnum::RUNNING) => None,
                    other => Some(format!(
                        "{}{}{}",
                        other.map_or_else(|| "gone".to_owned(), |s| s.to_string()),
                        state
                            .exit_code
                            .map(|c| format!(", exit code {c}"))
                            .unwrap_or_default(),
                        if state.oom_killed == Some(true) {
                            ", killed for using more memory than its limit"
                        } else {
                            ""
                        }
                    )),
                }
            }
            Err(e) if status_code(&e) == Some(404) => Some("removed".to_owned()),
            Err(_) => None,
        }
    }

    /// Tries the readiness query until it succeeds, the container stops, or `timeout` passes.
    /// The error quotes the container's log tail.
    async fn wait_ready(&self, c: &Running, timeout: Duration) -> Result<(), String> {
        let spec = &self.cfg().engines[&c.engine];
        let started = Instant::now();
        let mut last;
        let mut tries = 0u32;
        let failure = loop {
            match tokio::time::timeout(PROBE_TIMEOUT, self.probe(c)).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => last = e,
                Err(_) => last = format!("no answer within {} s", PROBE_TIMEOUT.as_secs()),
            }
            tries += 1;
            if tries == STATE_CHECK_EVERY {
                tries = 0;
                if let Some(state) = self.stopped(&c.id).await {
                    break format!("it stopped ({state}) before it answered");
                }
            }
            if started.elapsed() >= timeout {
                break format!(
                    "it did not answer `{}` within {:.0} s (last: {})",
                    spec.ready_query,
                    timeout.as_secs_f64(),
                    scrub(&last, c.password.expose())
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        };
        let tail = self.log_tail(&c.id, c.password.expose()).await;
        Err(format!(
            "the {} container {} is not ready: {failure}. The end of its log:\n{tail}",
            c.engine.label(),
            c.name
        ))
    }

    // ---- the warm pool -----------------------------------------------------------------------

    fn take_warm(&self, engine: Engine) -> Option<Warm> {
        let taken = self
            .pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(&engine)
            .and_then(VecDeque::pop_front);
        self.refill.notify_one();
        taken
    }

    /// Makes a pooled container of `engine` and waits until it is ready.
    async fn make_warm(&self, engine: Engine) -> Result<Warm, String> {
        let cfg = self.cfg();
        let net = pool_network(&cfg.instance);
        self.ensure_network(&net, None).await?;
        let name = format!(
            "{}{}-{:08x}",
            warm_prefix(&cfg.instance),
            engine.key(),
            rand::random::<u32>()
        );
        let c = self.create(engine, &name, WARM, &net).await?;
        let c = self.ready(c, cfg.ready_timeout).await?;
        Ok(Warm {
            id: c.id,
            name: c.name,
            password: c.password,
            login: c.login,
            ready_at: Instant::now(),
        })
    }

    /// Makes a pooled container of `engine` the session's: its name, the session's network.
    /// On failure the container is removed.
    async fn claim(&self, w: Warm, engine: Engine, id: &str) -> Result<Running, String> {
        let name = container_name(id, engine.role());
        let net = network_name(id);
        let api = self.api();
        let done = async {
            api.rename_container(&w.id, RenameContainerOptions { name: name.clone() })
                .await
                .map_err(|e| format!("cannot rename {} to {name}: {}", w.name, api_text(&e)))?;
            {
                let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
                live.remove(&w.name);
                live.insert(name.clone());
            }
            api.connect_network(
                &net,
                NetworkConnectRequest {
                    container: Some(w.id.clone()),
                    endpoint_config: None,
                },
            )
            .await
            .map_err(|e| format!("cannot join {name} to network {net}: {}", api_text(&e)))?;
            // Off the pool's network: a claimed container reaches only its session's.
            let pool_net = pool_network(&self.cfg().instance);
            api.disconnect_network(
                &pool_net,
                NetworkDisconnectRequest {
                    container: Some(w.id.clone()),
                    force: Some(true),
                },
            )
            .await
            .map_err(|e| {
                format!(
                    "cannot take {name} off the pool network {pool_net}: {}",
                    api_text(&e)
                )
            })?;
            // From now on it is reached at its address on the session's network.
            self.address_on(&w.id, &net, self.cfg().engines[&engine].port)
                .await
                .map_err(|e| format!("{name}: {e}"))
        }
        .await;
        match done {
            Ok(addr) => Ok(Running {
                id: w.id,
                name,
                engine,
                addr,
                login: w.login,
                password: w.password,
            }),
            Err(e) => {
                self.remove_container(&w.id).await.ok();
                self.release(&w.name);
                self.release(&name);
                Err(e)
            }
        }
    }

    /// Where a container is reached: its address on `network`, at `port`.
    async fn address_on(&self, id: &str, network: &str, port: u16) -> Result<SocketAddr, String> {
        let info = self
            .api()
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
            .map_err(|e| format!("cannot inspect the container: {}", api_text(&e)))?;
        let ip = info
            .network_settings
            .and_then(|n| n.networks)
            .and_then(|mut n| n.remove(network))
            .and_then(|e| e.ip_address)
            .filter(|ip| !ip.is_empty())
            .ok_or_else(|| format!("it has no address on network {network}"))?;
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| format!("its address on network {network} (`{ip}`) is not an IP"))?;
        Ok(SocketAddr::new(ip, port))
    }

    /// Keeps every engine's pool at its size (one container at a time per engine; a failure
    /// waits for the next round).
    async fn fill(&self) {
        let cfg = self.cfg();
        let jobs = cfg
            .engines
            .iter()
            .filter(|(e, s)| s.warm > 0 && self.offers(**e).is_ok())
            .map(|(engine, spec)| async move {
                loop {
                    let have = self
                        .pool
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get(engine)
                        .map_or(0, VecDeque::len);
                    if have >= spec.warm || self.shutdown.is_cancelled() {
                        return;
                    }
                    match self.make_warm(*engine).await {
                        Ok(w) => self
                            .pool
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .entry(*engine)
                            .or_default()
                            .push_back(w),
                        Err(e) => {
                            tracing::warn!(engine = engine.key(), error = %e, "cannot fill the warm pool; trying again later");
                            return;
                        }
                    }
                }
            });
        futures_util::future::join_all(jobs).await;
    }

    /// Drops pooled containers that stopped (killed from outside, out of memory).
    async fn prune_pool(&self) {
        let all: Vec<(Engine, String, String)> = self
            .pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .flat_map(|(e, q)| q.iter().map(|w| (*e, w.id.clone(), w.name.clone())))
            .collect();
        for (engine, id, name) in all {
            if let Some(state) = self.stopped(&id).await {
                tracing::warn!(container = %name, state, "a pooled container stopped; replacing it");
                if let Some(q) = self
                    .pool
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_mut(&engine)
                {
                    q.retain(|w| w.id != id);
                }
                self.remove_container(&id).await.ok();
                self.release(&name);
            }
        }
    }

    /// The pool task: re-checks the engine every [`RECHECK_INTERVAL`]; then, and whenever a
    /// launch took from the pool (or [`Docker::refill`] asks), drops pooled containers that
    /// stopped and fills the pool.
    async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(RECHECK_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // the first tick is now: `start` has just checked.
        loop {
            if self.usable().is_ok() {
                tokio::select! {
                    _ = self.shutdown.cancelled() => return,
                    _ = async {
                        self.sweep_once().await;
                        self.prune_pool().await;
                        self.fill().await;
                    } => {}
                }
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = self.refill.notified() => {}
                _ = tick.tick() => self.check().await,
            }
        }
    }
}

impl Inner {
    /// Follows the engine's event stream for containers of this instance that die, and
    /// reports those of sessions on [`Inner::lost`]. Removals this provisioner asks for die
    /// too; control ignores reports for sessions that are not `ready` (being made, re-made or
    /// ended), so no bookkeeping of our own removals is needed here. When the stream breaks
    /// (the engine restarted, a timeout), it is opened again from the last event's time, so a
    /// death in between is still seen.
    async fn watch(self: Arc<Self>) {
        let Some(cfg) = self.cfg.as_ref() else { return };
        let mut since: Option<String> = None;
        loop {
            let mut filters = label_filter(&[(LABEL_INSTANCE, &cfg.instance)]);
            filters.insert("type".into(), vec!["container".into()]);
            filters.insert("event".into(), vec!["die".into(), "oom".into()]);
            let mut stream = self.api().events(Some(EventsOptions {
                since: since.clone(),
                until: None,
                filters: Some(filters),
            }));
            loop {
                let next = tokio::select! {
                    () = self.shutdown.cancelled() => return,
                    next = stream.next() => next,
                };
                let Some(Ok(event)) = next else { break };
                if let Some(t) = event.time {
                    since = Some(t.to_string());
                }
                if let Some(lost) = lost_of(&event) {
                    let _ = self.lost.send(lost);
                }
            }
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}

/// A session container's `die`/`oom` event as a report; `None` for pooled containers.
fn lost_of(event: &bollard::models::EventMessage) -> Option<Lost> {
    let attrs = event.actor.as_ref()?.attributes.as_ref()?;
    let name = attrs.get("name")?;
    let id = id_in(name)?;
    let role = attrs
        .get(LABEL_ROLE)
        .cloned()
        .unwrap_or_else(|| "database or cache".to_owned());
    let role = if name.ends_with("-cache") {
        "cache".to_owned()
    } else if name.ends_with("-db") {
        "database".to_owned()
    } else {
        role
    };
    let engine = attrs
        .get(LABEL_ENGINE)
        .map(|e| format!(" ({e})"))
        .unwrap_or_default();
    let how = match (
        event.action.as_deref(),
        attrs.get("exitCode").map(String::as_str),
    ) {
        (Some("oom"), _) => "was killed for using more memory than its limit".to_owned(),
        (_, Some("137")) => "was killed (SIGKILL, exit code 137)".to_owned(),
        (_, Some(code)) => format!("stopped (exit code {code})"),
        _ => "stopped".to_owned(),
    };
    Some(Lost {
        message: format!(
            "this session's {role} container{engine} {how}; its data is gone with it. \
             Re-provision the session (POST /api/session/reprovision) for a fresh one, or \
             start a new session"
        ),
        id,
        role,
    })
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

// ---------------------------------------------------------------------------------------------
// Readiness probes: one attempt each, with the container's own credentials
// ---------------------------------------------------------------------------------------------

/// A sqlx error as a person should read it: the server's message, never a URL.
fn sql_text(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(d) => d.message().to_owned(),
        sqlx::Error::Io(io) => io.to_string(),
        other => crate::redact_url(&other.to_string()),
    }
}

impl Inner {
    /// PostgreSQL: the session's account as a plain role owning its database, in place of the
    /// superuser the container was made with, whose password is then taken away (the server
    /// asks every client for one, so nobody can log in as the superuser again).
    async fn make_account(&self, c: &Running, password: &str) -> Result<(), String> {
        let spec = &self.cfg().engines[&c.engine];
        if c.engine != Engine::Postgres {
            return Err(format!("{} has no superuser set-up", c.engine.label()));
        }
        let opts = sqlx::postgres::PgConnectOptions::new()
            .host(&c.addr.ip().to_string())
            .port(c.addr.port())
            .username(&c.login)
            .password(c.password.expose())
            .database("postgres")
            .disable_statement_logging();
        let mut conn = sqlx::PgConnection::connect_with(&opts)
            .await
            .map_err(|e| sql_text(&e))?;
        let ident = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
        let (account, database) = (ident(&spec.account), ident(&spec.database));
        let done = async {
            for sql in [
                format!(
                    "CREATE ROLE {account} LOGIN PASSWORD '{}' NOSUPERUSER NOCREATEDB \
                     NOCREATEROLE NOREPLICATION NOBYPASSRLS",
                    password.replace('\'', "''")
                ),
                format!("CREATE DATABASE {database} OWNER {account}"),
                // The other databases are not the session's.
                "REVOKE CONNECT ON DATABASE postgres FROM PUBLIC".to_owned(),
                "REVOKE CONNECT ON DATABASE template1 FROM PUBLIC".to_owned(),
                format!("ALTER ROLE {} PASSWORD NULL", ident(&c.login)),
            ] {
                conn.execute(sql.as_str()).await.map_err(|e| sql_text(&e))?;
            }
            Ok::<(), String>(())
        }
        .await;
        let _ = conn.close().await;
        done
    }

    async fn probe(&self, c: &Running) -> Result<(), String> {
        let spec = &self.cfg().engines[&c.engine];
        let host = c.addr.ip().to_string();
        let password = c.password.expose();
        // Before its account is made, the superuser's own database.
        let database = if c.login == spec.account {
            spec.database.as_str()
        } else {
            "postgres"
        };
        match c.engine {
            Engine::Postgres => {
                let opts = sqlx::postgres::PgConnectOptions::new()
                    .host(&host)
                    .port(c.addr.port())
                    .username(&c.login)
                    .password(password)
                    .database(database)
                    .disable_statement_logging();
                let mut conn = sqlx::PgConnection::connect_with(&opts)
                    .await
                    .map_err(|e| sql_text(&e))?;
                let done = conn
                    .execute(spec.ready_query.as_str())
                    .await
                    .map(drop)
                    .map_err(|e| sql_text(&e));
                let _ = conn.close().await;
                done
            }
            Engine::Mysql => {
                let opts = sqlx::mysql::MySqlConnectOptions::new()
                    .host(&host)
                    .port(c.addr.port())
                    .username(&spec.account)
                    .password(password)
                    .database(&spec.database)
                    .disable_statement_logging();
                let mut conn = sqlx::MySqlConnection::connect_with(&opts)
                    .await
                    .map_err(|e| sql_text(&e))?;
                let done = conn
                    .execute(spec.ready_query.as_str())
                    .await
                    .map(drop)
                    .map_err(|e| sql_text(&e));
                let _ = conn.close().await;
                done
            }
            Engine::Mongodb => {
                let opts = mongodb::options::ClientOptions::builder()
                    .hosts(vec![mongodb::options::ServerAddress::Tcp {
                        host: host.clone(),
                        port: Some(c.addr.port()),
                    }])
                    .credential(
                        mongodb::options::Credential::builder()
                            .username(spec.account.clone())
                            .password(password.to_owned())
                            .source("admin".to_owned())
                            .build(),
                    )
                    .server_selection_timeout(PROBE_TIMEOUT)
                    .connect_timeout(PROBE_TIMEOUT)
                    .build();
                let client = mongodb::Client::with_options(opts).map_err(|e| e.kind.to_string())?;
                let done = client
                    .database(&spec.database)
                    .run_command(mongodb::bson::doc! { spec.ready_query.as_str(): 1 })
                    .await
                    .map(drop)
                    .map_err(|e| e.kind.to_string());
                client.shutdown().await;
                done
            }
            Engine::Redis => {
                let url = format!("redis://:{password}@{}/", c.addr);
                let client = redis::Client::open(url)
                    .map_err(|_| "the Redis address is not valid".to_owned())?;
                let mut conn = client
                    .get_multiplexed_async_connection()
                    .await
                    .map_err(|e| e.to_string())?;
                let mut words = spec.ready_query.split_whitespace();
                let mut cmd = redis::cmd(words.next().unwrap_or("PING"));
                for w in words {
                    cmd.arg(w);
                }
                cmd.query_async::<redis::Value>(&mut conn)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
            Engine::Memcached => {
                let stream = tokio::net::TcpStream::connect(c.addr)
                    .await
                    .map_err(|e| e.to_string())?;
                let mut conn = BufReader::new(stream);
                conn.get_mut()
                    .write_all(format!("{}\r\n", spec.ready_query).as_bytes())
                    .await
                    .map_err(|e| e.to_string())?;
                let mut line = String::new();
                conn.read_line(&mut line).await.map_err(|e| e.to_string())?;
                let line = line.trim_end();
                if line.is_empty() {
                    Err("the connection closed without an answer".to_owned())
                } else if line.starts_with("ERROR")
                    || line.starts_with("CLIENT_ERROR")
                    || line.starts_with("SERVER_ERROR")
                {
                    Err(format!("answered {line}"))
                } else {
                    Ok(())
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_subnets_cut_the_range_and_bad_ranges_say_why() {
        let r = SubnetRange::parse("10.213.0.0/16", 28).unwrap();
        assert_eq!(r.len(), 4096);
        assert_eq!(r.nth(0), "10.213.0.0/28");
        assert_eq!(r.nth(1), "10.213.0.16/28");
        assert_eq!(r.nth(4095), "10.213.255.240/28");
        assert!(SubnetRange::parse("10.213.0.1/16", 28)
            .unwrap_err()
            .contains("host bits"));
        assert!(SubnetRange::parse("10.213.0.0/16", 30)
            .unwrap_err()
            .contains("/29"));
        assert!(SubnetRange::parse("10.213.0.0", 28)
            .unwrap_err()
            .contains("ADDRESS/BITS"));
        assert!(SubnetRange::parse("fd00::/64", 28)
            .unwrap_err()
            .contains("IPv4"));
        let keys = keys("[docker]\nsession_network_range = \"10.0.0.0/33\"\n");
        assert_eq!(keys, ["docker.session_network_range"]);
        let off = parse("[docker]\nsession_network_range = \"\"\n")
            .unwrap()
            .unwrap();
        assert_eq!(off.session_subnets, None);
    }

    fn section(file: &str) -> toml::Value {
        let v: toml::Value = toml::from_str(file).unwrap();
        v.get("docker").cloned().unwrap()
    }

    fn parse(text: &str) -> Result<Option<DockerConfig>, Vec<KeyError>> {
        let v: toml::Value = toml::from_str(text).unwrap();
        DockerConfig::from_section(v.get("docker"))
    }

    /// A config file shipped with stacklab.
    fn shipped(text: &str) -> DockerConfig {
        DockerConfig::from_section(Some(&section(text)))
            .unwrap()
            .unwrap()
    }

    /// Issue 19: an unknown key was refused with the section's name only (`docker: unknown
    /// field …`); now every problem names its whole key, as in every other section.
    #[test]
    fn an_unknown_key_or_a_wrong_type_is_an_error_naming_its_key() {
        assert_eq!(
            keys("[docker]\nmax_contaners = 3\n[docker.engines.redis]\nwarm = 1\nmemroy_mb = 64\n"),
            ["docker.max_contaners", "docker.engines.redis.memroy_mb"]
        );
        assert_eq!(
            keys("[docker]\nmax_containers = \"lots\"\n"),
            ["docker.max_containers"]
        );
        assert_eq!(
            keys("[docker.engines.redis]\nwarm = \"1\"\n"),
            ["docker.engines.redis.warm"]
        );
    }

    fn keys(text: &str) -> Vec<String> {
        parse(text)
            .unwrap_err()
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    }

    #[test]
    fn the_shipped_config_spells_out_the_built_in_official_specs() {
        let cfg = shipped(include_str!("../../../config/docker.toml"));
        for engine in Engine::ALL {
            assert_eq!(
                cfg.engines[&engine],
                EngineSpec::official(engine),
                "{engine:?}"
            );
        }
        assert_eq!(cfg.instance, DEFAULT_INSTANCE);
        assert_eq!(cfg.ready_timeout, DEFAULT_READY_TIMEOUT);
        assert_eq!(cfg.max_containers, DEFAULT_MAX_CONTAINERS);
        assert!(cfg.pull_missing && cfg.host.is_none());
    }

    #[test]
    fn the_local_config_differs_from_the_shipped_one_only_in_images() {
        let official = shipped(include_str!("../../../config/docker.toml"));
        let local = shipped(include_str!("../../../config/images/docker-local.toml"));
        assert!(!local.pull_missing, "no registry: nothing to pull");
        assert!(
            !local.engines.contains_key(&Engine::Mongodb),
            "no local MongoDB image"
        );
        for (engine, spec) in &local.engines {
            assert!(spec.image.ends_with(":local"), "{}", spec.image);
            let same = EngineSpec {
                image: spec.image.clone(),
                ..official.engines[engine].clone()
            };
            assert_eq!(spec, &same, "{engine:?}");
        }
        // Outside [docker] the two files are the same.
        let strip = |text: &str| {
            let mut v: toml::Value = toml::from_str(text).unwrap();
            v.as_table_mut().unwrap().remove("docker");
            v
        };
        assert_eq!(
            strip(include_str!("../../../config/docker.toml")),
            strip(include_str!("../../../config/images/docker-local.toml"))
        );
    }

    #[test]
    fn no_section_means_off_and_defaults_fill_an_engine() {
        assert_eq!(parse("x = 1").unwrap(), None);
        let cfg = parse(
            "[docker]\n[docker.engines.redis]\nimage = \"stacklab/redis:local\"\nwarm = 3\nmemory_mb = 64\ncpus = 0.25\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(cfg.engines.len(), 1, "only the engines named are offered");
        let r = &cfg.engines[&Engine::Redis];
        assert_eq!(r.image, "stacklab/redis:local");
        assert_eq!(
            (r.warm, r.memory_bytes, r.nano_cpus),
            (3, 64 << 20, 250_000_000)
        );
        assert_eq!(r.env, EngineSpec::official(Engine::Redis).env);
        let off = parse("[docker.engines.postgres]\nenabled = false\n")
            .unwrap()
            .unwrap();
        assert!(off.engines.is_empty());
    }

    #[test]
    fn every_problem_is_named_by_its_key() {
        let found = keys(
            r#"
[docker]
host = "ftp://x"
instance = "Not Valid"
publish_addr = "0.0.0.0"
max_containers = 0
[docker.engines.oracle]
image = "x"
[docker.engines.postgres]
env = {}
warm = 99
cpus = 0
cap_add = ["ALL"]
[docker.engines.mysql]
colour = "blue"
[docker.engines.redis]
superuser = "root"
volumes = ["data"]
"#,
        );
        for key in [
            "docker.host",
            "docker.instance",
            "docker.publish_addr",
            "docker.max_containers",
            "docker.engines.oracle",
            "docker.engines.postgres",
            "docker.engines.postgres.warm",
            "docker.engines.postgres.cpus",
            "docker.engines.postgres.cap_add[0]",
            "docker.engines.mysql.colour",
            "docker.engines.redis.superuser",
            "docker.engines.redis.volumes[0]",
        ] {
            assert!(found.iter().any(|k| k == key), "{key} in {found:?}");
        }
        assert_eq!(keys("[docker]\nsurprise = 1\n"), ["docker.surprise"]);
    }

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
