//! The `[control]` and `[shared]` sections: what control runs on.
//!
//! Session lifetimes and caps live in `[sessions]`, which the proxy reads too (it refreshes the
//! cookie and reports use); see `stacklab_proxy::config::SessionsConfig`.

use serde::Deserialize;
use stacklab_types::config::{self, EnvKey};
use stacklab_types::Secret;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Where runtimes' manifests are looked for, relative to the working directory.
pub const DEFAULT_RUNTIMES_DIR: &str = "backends";
/// A runtime pool started on demand stops 10 minutes after its last session ended.
pub const DEFAULT_RUNTIME_IDLE_STOP_MS: u64 = 600_000;

/// A config problem: the key at fault and what to do (one definition for every section).
pub type KeyError = stacklab_types::config::KeyProblem;

#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// Control's public API (`/api/sessions`, `/api/session*`, …), reached through the edge,
    /// which finds it as a member of pool `control`. Port 0 picks a free one.
    pub addr: SocketAddr,
    /// `sqlite://…` or `postgres://…`; empty: `<data_dir>/registry.db`.
    pub registry_url: Option<Secret>,
    /// How often expired sessions are looked for.
    pub reaper_interval: Duration,
    /// Backend instances `up` and `control` start as child processes, per runtime.
    pub backends: BackendPoolConfig,
    /// The credential runtime instances get (on stdin): it reads stack descriptors and
    /// records cache-policy changes, nothing else. `None`: `<data_dir>/runtime.token`,
    /// generated at first start (`STACKLAB_RUNTIME_TOKEN` overrides both).
    pub runtime_token: Option<Secret>,
    /// Sessions may run failover drills from the UI: on a drill pool of their own
    /// ([`crate::drills`]), never on the shared pools (those change only with the admin token).
    pub drills_from_ui: bool,
    /// How big drill pools may get.
    pub drills: DrillConfig,
    /// Most live sessions one client (an IPv4 address, an IPv6 /64) may hold at once
    /// (`control.max_live_per_client`).
    pub max_live_per_client: usize,
    /// Most re-provisions of one session (`control.max_reprovisions_per_session`): each makes
    /// new databases or containers.
    pub max_reprovisions: u32,
    /// Most event streams (`GET /api/session/events`) one session may have open at once
    /// (`control.max_event_streams_per_session`).
    pub max_event_streams: usize,
    /// Defaults for every session's cache.
    pub cache_max_bytes: u64,
    pub cache_ttl_ms: u64,
    /// Largest bug report description.
    pub max_bug_bytes: usize,
    /// Bug reports: most one session may file, most kept in all, and how long each is kept.
    pub bugs: BugLimits,
    /// Proxies' admin addresses, where control reads captured requests (`up`: its own).
    pub proxies: Vec<String>,
    /// Origins (`https://host[:port]`, lowercase, no path) besides the edge's own (the Host a
    /// request came to) whose pages may change state through the public API: a request
    /// carrying another `Origin` is refused (`api::same_origin`).
    pub allowed_origins: Vec<String>,
    pub shared: SharedConfig,
    /// The `[docker]` section (validated by `provision::docker::DockerConfig::from_section`);
    /// `None`: docker is off. `from_sections` leaves it `None`; the binary sets it.
    pub docker: Option<crate::provision::docker::DockerConfig>,
}

#[derive(Debug, Clone)]
pub struct BackendPoolConfig {
    /// Where runtimes are found: each folder with a `runtime.toml` ([`crate::runtimes`]).
    /// The Rust runtime (this binary) is there even when the folder is not.
    pub runtimes_dir: PathBuf,
    /// Runtimes whose pools start with control and are kept (the rest start on demand).
    pub warm_runtimes: Vec<String>,
    /// A pool started on demand stops this long after its last session has ended.
    pub idle_stop: Duration,
    /// Instances a runtime's pool starts with (`STACKLAB_BACKEND_INSTANCES`).
    pub instances: usize,
    /// How many of those run as Docker containers (`[docker.backend]`) instead of child
    /// processes (`STACKLAB_BACKEND_CONTAINERS`).
    pub containers: usize,
    /// Most instances one pool may grow to through the admin API.
    pub max_instances: usize,
    /// The program run as `PROGRAM backend …`; empty: this binary.
    pub command: Option<PathBuf>,
    /// How long a new instance has to answer `/healthz`.
    pub ready_timeout: Duration,
    /// `control.backend_sandbox` (`STACKLAB_BACKEND_SANDBOX`): process instances under
    /// bubblewrap ([`crate::sandbox`]).
    pub sandbox: crate::sandbox::SandboxMode,
}

/// How many bug reports are taken and how long they are kept.
#[derive(Debug, Clone)]
pub struct BugLimits {
    /// `control.max_bugs_per_session` (5): past it, `429 bug_limit`.
    pub per_session: u64,
    /// `control.max_bugs` (10000) kept at once: past it, `503 out_of_capacity`.
    pub total: u64,
    /// `control.bug_retention_ms` (30 days): older reports are removed by the reaper.
    pub retention: Duration,
}

/// A session's drill pool: instances of its runtime started for it alone, which it may kill
/// and add to, reaped with it.
#[derive(Debug, Clone)]
pub struct DrillConfig {
    /// Instances a drill pool starts with (`control.drill_instances`).
    pub instances: usize,
    /// Most instances one drill pool may grow to (`control.max_drill_instances`).
    pub max_instances: usize,
    /// Most drill pools live at once, over all sessions (`control.max_drill_pools`).
    pub max_pools: usize,
}

/// Servers the `shared` provisioner makes per-session databases and keyspaces on. Each URL
/// carries an administrator's credentials; an absent one makes that engine unavailable.
#[derive(Debug, Clone, Default)]
pub struct SharedConfig {
    /// `postgres://admin:pw@host:port/postgres`: may create roles and databases.
    pub postgres_url: Option<Secret>,
    /// `mysql://root:pw@host:port/`: may create users and databases and grant.
    pub mysql_url: Option<Secret>,
    /// `mongodb://admin:pw@host:port/?authSource=admin`: may create users.
    pub mongodb_url: Option<Secret>,
    /// `redis://default:pw@host:port/`: may run `ACL SETUSER`.
    pub redis_url: Option<Secret>,
    /// `host:port` of Memcached (no credentials: it has none).
    pub memcached_addr: Option<String>,
    /// Up to 4 characters of a-z and 0-9 in every name made on the servers (`s<instance>_…`),
    /// so control nodes sharing servers never take each other's sessions for leftovers.
    /// Empty: names are `s_<id>`, and every such name on the servers is this control's.
    pub instance: String,
}

#[derive(Debug, Default, Deserialize)]
struct RawControl {
    addr: Option<String>,
    registry_url: Option<Secret>,
    reaper_interval_ms: Option<u64>,
    runtimes_dir: Option<PathBuf>,
    warm_runtimes: Option<Vec<String>>,
    runtime_idle_stop_ms: Option<u64>,
    runtime_token: Option<Secret>,
    backend_instances: Option<usize>,
    backend_containers: Option<usize>,
    max_backend_instances: Option<usize>,
    backend_command: Option<PathBuf>,
    backend_ready_timeout_ms: Option<u64>,
    backend_sandbox: Option<String>,
    drills_from_ui: Option<bool>,
    drill_instances: Option<usize>,
    max_live_per_client: Option<usize>,
    max_reprovisions_per_session: Option<u32>,
    max_event_streams_per_session: Option<usize>,
    max_drill_instances: Option<usize>,
    max_drill_pools: Option<usize>,
    cache_max_bytes: Option<u64>,
    cache_ttl_ms: Option<u64>,
    max_bug_bytes: Option<usize>,
    max_bugs_per_session: Option<u64>,
    max_bugs: Option<u64>,
    bug_retention_ms: Option<u64>,
    #[serde(default)]
    proxies: Vec<String>,
    #[serde(default)]
    allowed_origins: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawShared {
    postgres_url: Option<Secret>,
    mysql_url: Option<Secret>,
    mongodb_url: Option<Secret>,
    redis_url: Option<Secret>,
    memcached_addr: Option<String>,
    instance: Option<String>,
}

/// Variables that stand for keys of `[control]` (read as those keys: `stacklab_types::config`).
const ENV_KEYS: [EnvKey; 4] = [
    EnvKey::integer("STACKLAB_BACKEND_INSTANCES", "control.backend_instances"),
    EnvKey::integer("STACKLAB_BACKEND_CONTAINERS", "control.backend_containers"),
    EnvKey::text("STACKLAB_BACKEND_SANDBOX", "control.backend_sandbox"),
    EnvKey::text("STACKLAB_RUNTIME_TOKEN", "control.runtime_token"),
];

fn non_empty(s: Option<Secret>) -> Option<Secret> {
    s.filter(|s| !s.is_empty())
}

impl ControlConfig {
    /// Control's part of a loaded config: `[control]`, `[shared]` and `[docker]`, every problem
    /// reported at once; `env` gives the `STACKLAB_*` overrides.
    pub fn from_config(
        cfg: &stacklab_proxy::config::Config,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, Vec<KeyError>> {
        let control = Self::from_sections(cfg.other.get("control"), cfg.other.get("shared"), env);
        let docker = crate::provision::docker::DockerConfig::from_section(cfg.other.get("docker"));
        match (control, docker) {
            (Ok(mut control), Ok(docker)) => {
                control.docker = docker;
                Ok(control)
            }
            (control, docker) => Err(control
                .err()
                .unwrap_or_default()
                .into_iter()
                .chain(docker.err().unwrap_or_default())
                .collect()),
        }
    }

    /// Validates `[control]` and `[shared]`; `env` gives `STACKLAB_BACKEND_INSTANCES`.
    pub fn from_sections(
        control: Option<&toml::Value>,
        shared: Option<&toml::Value>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, Vec<KeyError>> {
        let mut file = toml::Table::new();
        if let Some(c) = control {
            file.insert("control".into(), c.clone());
        }
        let applied = config::apply_env(&mut file, &ENV_KEYS, env);
        let mut errors = Vec::new();
        let raw: RawControl = config::section("control", file.get("control"), &mut errors);
        let shared: RawShared = config::section("shared", shared, &mut errors);
        let addr_text = raw.addr.unwrap_or_else(|| "127.0.0.1:0".to_owned());
        let addr = addr_text.parse().unwrap_or_else(|_| {
            errors.push((
                "control.addr".into(),
                format!("`{addr_text}` is not `host:port`"),
            ));
            SocketAddr::from(([127, 0, 0, 1], 0))
        });
        let registry_url = non_empty(raw.registry_url);
        if let Some(url) = &registry_url {
            let u = url.expose();
            if !(u.starts_with("sqlite:")
                || u.starts_with("postgres://")
                || u.starts_with("postgresql://"))
            {
                errors.push((
                    "control.registry_url".into(),
                    "must be a `sqlite:` or `postgres://` URL (or empty for <data_dir>/registry.db)".into(),
                ));
            }
        }
        let instances = raw.backend_instances.unwrap_or(3);
        let containers = raw.backend_containers.unwrap_or(0);
        if containers > instances {
            errors.push((
                "control.backend_containers".into(),
                format!("{containers} is more than control.backend_instances ({instances}): it says how many of those run as containers"),
            ));
        }
        let mut sandbox = crate::sandbox::SandboxMode::default();
        if let Some(v) = &raw.backend_sandbox {
            match crate::sandbox::SandboxMode::parse(v) {
                Some(m) => sandbox = m,
                None => errors.push((
                    "control.backend_sandbox".into(),
                    format!("`{v}` is not a sandbox: use \"auto\", \"bubblewrap\" or \"off\""),
                )),
            }
        }
        let max_instances = raw.max_backend_instances.unwrap_or(16);
        if instances > max_instances {
            errors.push((
                "control.backend_instances".into(),
                format!("{instances} is more than control.max_backend_instances ({max_instances})"),
            ));
        }
        let warm_runtimes = raw.warm_runtimes.unwrap_or_else(|| vec!["rust".to_owned()]);
        for (i, w) in warm_runtimes.iter().enumerate() {
            if w.is_empty()
                || !w
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            {
                errors.push((
                    format!("control.warm_runtimes[{i}]"),
                    format!("`{w}` is not a runtime name (lowercase letters and digits)"),
                ));
            }
        }
        let runtime_token = non_empty(raw.runtime_token);
        if runtime_token
            .as_ref()
            .is_some_and(|t| t.expose().len() < 16)
        {
            errors.push((
                "control.runtime_token".into(),
                "at least 16 characters (or empty, to generate <data_dir>/runtime.token)".into(),
            ));
        }
        for (i, p) in raw.proxies.iter().enumerate() {
            if !p.starts_with("http://") {
                errors.push((
                    format!("control.proxies[{i}]"),
                    "must be the http:// URL of a proxy's admin address".into(),
                ));
            }
        }
        let mut allowed_origins = Vec::new();
        for (i, o) in raw.allowed_origins.iter().enumerate() {
            let lower = o.trim().trim_end_matches('/').to_ascii_lowercase();
            let host = lower
                .strip_prefix("https://")
                .or_else(|| lower.strip_prefix("http://"));
            match host {
                Some(h) if !h.is_empty() && !h.contains(['/', '?', '#', '@', ' ']) => {
                    allowed_origins.push(crate::api::normal_origin(&lower));
                }
                _ => errors.push((
                    format!("control.allowed_origins[{i}]"),
                    format!("`{o}` is not an origin: give `https://host[:port]`, without a path"),
                )),
            }
        }
        if let Some(a) = shared.memcached_addr.as_ref().filter(|a| !a.is_empty()) {
            if a.parse::<SocketAddr>().is_err() && !a.contains(':') {
                errors.push((
                    "shared.memcached_addr".into(),
                    format!("`{a}` is not `host:port`"),
                ));
            }
        }
        for (key, url, schemes) in [
            (
                "shared.postgres_url",
                &shared.postgres_url,
                &["postgres://", "postgresql://"][..],
            ),
            (
                "shared.mysql_url",
                &shared.mysql_url,
                &["mysql://", "mariadb://"][..],
            ),
            (
                "shared.mongodb_url",
                &shared.mongodb_url,
                &["mongodb://", "mongodb+srv://"][..],
            ),
            (
                "shared.redis_url",
                &shared.redis_url,
                &["redis://", "rediss://"][..],
            ),
        ] {
            if let Some(u) = url.as_ref().filter(|u| !u.is_empty()) {
                if !schemes.iter().any(|s| u.expose().starts_with(s)) {
                    errors.push((
                        key.into(),
                        format!("must start with {}", schemes.join(" or ")),
                    ));
                }
            }
        }
        let drills = DrillConfig {
            instances: raw.drill_instances.unwrap_or(2),
            max_instances: raw.max_drill_instances.unwrap_or(4),
            max_pools: raw.max_drill_pools.unwrap_or(4),
        };
        if drills.instances == 0 || drills.instances > drills.max_instances {
            errors.push((
                "control.drill_instances".into(),
                format!(
                    "must be at least 1 and at most control.max_drill_instances ({}): a drill pool needs an instance to fail over from",
                    drills.max_instances
                ),
            ));
        }
        let instance = shared.instance.clone().unwrap_or_default();
        if instance.len() > 4
            || !instance
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            errors.push((
                "shared.instance".into(),
                "at most 4 characters of a-z and 0-9 (names on the servers stay within MySQL's 32)"
                    .into(),
            ));
        }
        if !errors.is_empty() {
            config::blame_env(&mut errors, &applied);
            return Err(errors);
        }
        let config = ControlConfig {
            addr,
            registry_url,
            reaper_interval: Duration::from_millis(
                raw.reaper_interval_ms.unwrap_or(10_000).max(10),
            ),
            runtime_token,
            backends: BackendPoolConfig {
                runtimes_dir: raw
                    .runtimes_dir
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_RUNTIMES_DIR)),
                warm_runtimes,
                idle_stop: Duration::from_millis(
                    raw.runtime_idle_stop_ms
                        .unwrap_or(DEFAULT_RUNTIME_IDLE_STOP_MS),
                ),
                instances,
                containers,
                max_instances,
                command: raw.backend_command.filter(|p| !p.as_os_str().is_empty()),
                ready_timeout: Duration::from_millis(
                    raw.backend_ready_timeout_ms.unwrap_or(10_000),
                ),
                sandbox,
            },
            drills_from_ui: raw.drills_from_ui.unwrap_or(true),
            drills,
            max_live_per_client: raw.max_live_per_client.unwrap_or(100).max(1),
            max_reprovisions: raw.max_reprovisions_per_session.unwrap_or(20),
            max_event_streams: raw.max_event_streams_per_session.unwrap_or(4).max(1),
            cache_max_bytes: raw.cache_max_bytes.unwrap_or(8 * 1024 * 1024),
            cache_ttl_ms: raw.cache_ttl_ms.unwrap_or(300_000),
            max_bug_bytes: raw.max_bug_bytes.unwrap_or(16 * 1024),
            bugs: BugLimits {
                per_session: raw.max_bugs_per_session.unwrap_or(5),
                total: raw.max_bugs.unwrap_or(10_000),
                retention: Duration::from_millis(
                    raw.bug_retention_ms.unwrap_or(30 * 24 * 3600 * 1000),
                ),
            },
            proxies: raw.proxies,
            allowed_origins,
            docker: None,
            shared: SharedConfig {
                postgres_url: non_empty(shared.postgres_url),
                mysql_url: non_empty(shared.mysql_url),
                mongodb_url: non_empty(shared.mongodb_url),
                redis_url: non_empty(shared.redis_url),
                memcached_addr: shared.memcached_addr.filter(|a| !a.is_empty()),
                instance,
            },
        };
        Ok(config)
    }
}
