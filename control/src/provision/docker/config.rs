//! The `[docker]` section: engines' specs, the session subnets, the backend image; validated.

use super::{
    Engine, Role, DEFAULT_INSTANCE, DEFAULT_MAX_CONTAINERS, DEFAULT_READY_TIMEOUT,
    DEFAULT_SESSION_NETWORK_RANGE, MAX_WARM,
};

use crate::config::KeyError;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

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

    pub(super) fn substitute(&self, text: &str, password: &str) -> String {
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
    pub(super) prefix: u8,
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
                "the prefix /{prefix} must be between the range's /{range_prefix} and /29 (4 addresses: a network, a gateway, two containers, a broadcast)"
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

    /// The whole range, as `a.b.c.d/prefix`.
    pub fn range(&self) -> String {
        format!("{}/{}", Ipv4Addr::from(self.base), self.range_prefix)
    }

    /// Whether the two ranges share an address.
    pub fn overlaps(&self, other: &Self) -> bool {
        let shorter = self.range_prefix.min(other.range_prefix);
        let mask = u32::MAX << (32 - u32::from(shorter));
        self.base & mask == other.base & mask
    }

    /// The `n`th subnet, as `a.b.c.d/prefix`.
    pub fn nth(&self, n: u32) -> String {
        let size = 1u32 << (32 - u32::from(self.prefix));
        format!("{}/{}", Ipv4Addr::from(self.base + n * size), self.prefix)
    }

    /// The range's subnets that `used` does not name, first to last (`a.b.c.d/prefix`): where
    /// a new network goes, since Docker refuses overlapping subnets whoever made them.
    pub fn unused<'a>(
        &'a self,
        used: &'a std::collections::HashSet<String>,
    ) -> impl Iterator<Item = String> + 'a {
        (0..self.len())
            .map(|n| self.nth(n))
            .filter(|s| !used.contains(s))
    }
}

/// `[docker.backend]`: how a backend instance runs as a container (see
/// [`super::backend`]).
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
    /// The network backend containers are on (`docker.backend.network`).
    pub network: BackendNetwork,
}

/// Where backend containers are on the network (`docker.backend.network`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendNetwork {
    /// `"own"` (the default): an `internal` network of their own,
    /// `stacklab-<instance>-backends`, on the first free subnet of `docker.backend.network_range`
    /// cut into `/network_prefix` ones (several controls, and the tests, share one engine),
    /// joined to each docker session's network while that session lives; control serves the
    /// runtime's two admin paths on the host's address there, to that subnet only (see
    /// [`super::backend`]).
    Own(SubnetRange),
    /// `"host"`: the host's network, as a process instance has it (loopback included).
    Host,
}

impl BackendNetwork {
    pub const DEFAULT_RANGE: &'static str = "10.212.0.0/16";
    pub const DEFAULT_PREFIX: u8 = 24;

    /// Reads `network`, `network_range` and `network_prefix`; a problem names its key.
    fn parse(
        network: Option<&str>,
        range: Option<&str>,
        prefix: Option<u8>,
    ) -> Result<Self, (&'static str, String)> {
        match network.unwrap_or("own") {
            "host" if range.is_some() || prefix.is_some() => Err((
                if range.is_some() { "docker.backend.network_range" } else { "docker.backend.network_prefix" },
                "is for network = \"own\": remove it, or set network = \"own\"".into(),
            )),
            "host" => Ok(Self::Host),
            "own" => {
                let range = range.unwrap_or(Self::DEFAULT_RANGE);
                SubnetRange::parse(range, prefix.unwrap_or(Self::DEFAULT_PREFIX))
                    .map(Self::Own)
                    .map_err(|e| ("docker.backend.network_range", e))
            }
            other => Err((
                "docker.backend.network",
                format!("`{other}` is not a choice: `own` (a network of their own, the default) or `host`"),
            )),
        }
    }
}

/// One IPv4 subnet, `a.b.c.d/prefix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    pub base: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    /// Reads `a.b.c.d/p` (as the Docker API gives a network's subnet).
    pub fn parse(text: &str) -> Option<Self> {
        let (ip, bits) = text.split_once('/')?;
        let prefix: u8 = bits.parse().ok().filter(|p| (1..=32).contains(p))?;
        Some(Self {
            base: ip.parse().ok()?,
            prefix,
        })
    }

    /// The host's address on it: Docker gives the bridge the first one.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) + 1)
    }

    pub fn holds(&self, ip: std::net::IpAddr) -> bool {
        let mask = u32::MAX << (32 - u32::from(self.prefix));
        matches!(ip, std::net::IpAddr::V4(v4) if u32::from(v4) & mask == u32::from(self.base) & mask)
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
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
            network: BackendNetwork::Own(
                SubnetRange::parse(
                    BackendNetwork::DEFAULT_RANGE,
                    BackendNetwork::DEFAULT_PREFIX,
                )
                .expect("the default range is valid"),
            ),
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
    network: Option<String>,
    network_range: Option<String>,
    network_prefix: Option<u8>,
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
            network: BackendNetwork::parse(
                rb.network.as_deref(),
                rb.network_range.as_deref(),
                rb.network_prefix,
            )
            .unwrap_or_else(|(key, why)| {
                err(key, why);
                d.network
            }),
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
        if let (BackendNetwork::Own(own), Some(sessions)) = (backend.network, &session_subnets) {
            if own.overlaps(sessions) {
                err(
                    "docker.backend.network_range",
                    format!(
                        "`{}` overlaps docker.session_network_range `{}`: give the backends' networks a range apart",
                        own.range(),
                        sessions.range()
                    ),
                );
            }
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
        let used = std::collections::HashSet::from([
            "10.213.0.0/28".to_owned(),
            "10.213.0.32/28".to_owned(),
        ]);
        let free: Vec<String> = r.unused(&used).take(3).collect();
        assert_eq!(free, ["10.213.0.16/28", "10.213.0.48/28", "10.213.0.64/28"]);
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
        let cfg = shipped(include_str!("../../../../config/docker.toml"));
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
        let official = shipped(include_str!("../../../../config/docker.toml"));
        let local = shipped(include_str!("../../../../config/images/docker-local.toml"));
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
            strip(include_str!("../../../../config/docker.toml")),
            strip(include_str!("../../../../config/images/docker-local.toml"))
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
    fn the_backends_network_is_their_own_unless_host_is_asked_for() {
        let own = parse("[docker]\n").unwrap().unwrap().backend.network;
        let BackendNetwork::Own(range) = own else {
            panic!("own by default: {own:?}")
        };
        assert_eq!(range.nth(0), "10.212.0.0/24");
        assert_eq!(range.nth(1), "10.212.1.0/24");
        let host = parse("[docker.backend]\nnetwork = \"host\"\n")
            .unwrap()
            .unwrap();
        assert_eq!(host.backend.network, BackendNetwork::Host);
        let cases = [
            (
                "network = \"bridge\"",
                "docker.backend.network",
                "`bridge` is not a choice",
            ),
            (
                "network = \"host\"\nnetwork_prefix = 24",
                "docker.backend.network_prefix",
                "is for network = \"own\"",
            ),
            (
                "network_range = \"10.212.0.1/16\"",
                "docker.backend.network_range",
                "host bits set",
            ),
            (
                "network_range = \"10.212.0.0/16\"\nnetwork_prefix = 30",
                "docker.backend.network_range",
                "/30",
            ),
            (
                "network_range = \"10.0.0.0/8\"",
                "docker.backend.network_range",
                "overlaps docker.session_network_range `10.213.0.0/16`",
            ),
        ];
        for (lines, key, says) in cases {
            let problems = parse(&format!("[docker.backend]\n{lines}\n")).unwrap_err();
            assert!(
                problems.iter().any(|(k, m)| k == key && m.contains(says)),
                "{lines}: {problems:?}"
            );
        }
        let subnet = Subnet::parse("10.212.3.0/24").unwrap();
        assert_eq!(subnet.gateway().to_string(), "10.212.3.1");
        assert!(subnet.holds("10.212.3.77".parse().unwrap()));
        assert!(!subnet.holds("10.212.4.1".parse().unwrap()));
        assert!(!subnet.holds("::1".parse().unwrap()));
        assert_eq!(subnet.to_string(), "10.212.3.0/24");
    }
}
