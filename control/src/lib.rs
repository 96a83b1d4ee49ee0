//! stacklab's control service: sessions, provisioners, the registry, the route feed and the
//! backend pools.
//!
//! Control is the source of truth for sessions, pools and routes. Proxies follow its route
//! feed and report session use in batches; backends fetch each session's stack descriptor
//! from it. In `stacklab up` it shares the process and the admin address with the proxy.
//!
//! # Layout
//! - [`config`]: the `[control]` and `[shared]` sections.
//! - [`sessions`]: create, touch, end, reap, restore after a restart.
//! - [`choices`]: what a session may choose and `GET /api/options`.
//! - [`provision`]: the provisioners (`embedded`, `shared`, `docker`) behind one trait.
//! - [`registry`]: sessions, instances and bug reports in SQLite or PostgreSQL.
//! - [`routes`]: control's route table and the feed proxies follow.
//! - [`runtimes`]: the runtimes sessions may choose, their availability and pools.
//! - [`instances`]: backend instances as child processes, watched and replaced;
//!   [`sandbox`]: what they may see (a config without secrets, bubblewrap).
//! - [`drills`]: failover drills on instances started for one session alone.
//! - [`api`]: the public API (through the edge); [`admin`]: the admin API.
//! - [`events`]: a session's SSE stream; [`seal`]: secrets at rest, codes, passwords;
//!   [`clock`]: a wall clock tests can move; [`metrics`]; [`serve`]: wiring for the binary.

pub mod admin;
pub mod api;
pub mod choices;
pub mod clock;
pub mod config;
pub mod drills;
pub mod events;
pub mod instances;
pub mod metrics;
pub mod provision;
pub mod registry;
pub mod routes;
pub mod runtimes;
pub mod sandbox;
pub mod seal;
pub mod serve;
pub mod sessions;

use config::ControlConfig;
use provision::Provisioner;
use stacklab_proxy::config::SessionsConfig;
use stacklab_types::routes::PoolSpec;
use stacklab_types::Secret;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use tokio_util::sync::CancellationToken;

/// Everything control's handlers and tasks share.
#[derive(Debug)]
pub struct Control {
    pub cfg: ControlConfig,
    pub sessions_cfg: SessionsConfig,
    pub data_dir: PathBuf,
    pub admin_token: Secret,
    /// What runtime instances are given instead of the admin token ([`Caller::Runtime`]).
    pub runtime_token: Secret,
    pub runtimes: runtimes::Runtimes,
    pub clock: clock::Clock,
    pub registry: registry::Registry,
    pub sealer: seal::Sealer,
    pub routes: routes::RouteState,
    pub provisioners: BTreeMap<&'static str, Arc<dyn Provisioner>>,
    /// The docker provisioner, for its warm pool's removal at shutdown.
    pub docker: Arc<provision::docker::Docker>,
    pub sessions: sessions::Live,
    pub instances: instances::Instances,
    pub drills: drills::Drills,
    /// Held while a bug report is counted and stored, so the caps hold under concurrency.
    pub bugs_lock: tokio::sync::Mutex<()>,
    pub metrics: metrics::ControlMetrics,
    pub http: HttpClient,
    /// Control's admin URL (`http://addr`), set once its admin address is bound: backends
    /// fetch descriptors there.
    pub admin_url: OnceLock<String>,
    /// Where backend containers on their own network reach control, once the first one
    /// started ([`serve::runtime_listener`]).
    pub backend_control_url: tokio::sync::OnceCell<String>,
    /// Proxies' admin URLs, where captured requests are read.
    pub proxies: OnceLock<Vec<String>>,
    /// The edge's address as users reach it (`up`), for the topology.
    pub edge: OnceLock<String>,
    /// The config file instances get: `<data_dir>/backend.toml`, the operator's file's
    /// `[log]` and `[backend]` tables only ([`sandbox::backend_config`]).
    pub config_file: Option<PathBuf>,
    /// How process instances are started.
    pub sandbox: sandbox::Sandbox,
    pub shutdown: CancellationToken,
}

pub type HttpClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<bytes::Bytes>,
>;

/// What control is started with.
#[derive(Debug)]
pub struct Options {
    pub cfg: ControlConfig,
    pub sessions: SessionsConfig,
    pub data_dir: PathBuf,
    pub admin_token: Secret,
    /// The pools of the proxy config; control owns their members from now on.
    pub pools: Vec<PoolSpec>,
    pub config_file: Option<PathBuf>,
}

impl Control {
    /// Opens the registry and the master key and makes the provisioners. Starts no task;
    /// [`Control::restore`] and [`serve`] do.
    pub async fn open(opts: Options) -> anyhow::Result<Arc<Self>> {
        use anyhow::Context;
        use stacklab_proxy::config::{create_private_dir, create_private_file};
        let files = opts.data_dir.join("sessions");
        create_private_dir(&files)
            .and_then(|()| create_private_dir(&opts.data_dir))
            .with_context(|| format!("cannot make the data dir {}", opts.data_dir.display()))?;
        let registry_url = match &opts.cfg.registry_url {
            Some(u) => u.expose().to_owned(),
            None => {
                let file = opts.data_dir.join("registry.db");
                create_private_file(&file)
                    .with_context(|| format!("cannot make {}", file.display()))?;
                format!("sqlite://{}?mode=rwc", file.display())
            }
        };
        let registry = registry::Registry::connect(&registry_url)
            .await
            .map_err(|e| {
                anyhow::anyhow!("cannot open the registry: {}", redact_url(&e.to_string()))
            })?;
        let sealer = seal::Sealer::load_or_create(&opts.data_dir)?;
        // Pools changed through the admin API win over the config's.
        let mut pools = opts.pools;
        for (name, spec) in registry.pools().await.unwrap_or_default() {
            match serde_json::from_str::<PoolSpec>(&spec) {
                Ok(p) => {
                    pools.retain(|c| c.name != name);
                    pools.push(p);
                }
                Err(e) => {
                    tracing::warn!(pool = %name, error = %e, "a stored pool does not parse; using the config's")
                }
            }
        }
        let mut provisioners: BTreeMap<&'static str, Arc<dyn Provisioner>> = BTreeMap::new();
        let embedded = Arc::new(provision::embedded::Embedded::new(files.clone()));
        provisioners.insert(embedded.name(), embedded);
        let shared = Arc::new(provision::shared::Shared::new(
            opts.cfg.shared.clone(),
            files.clone(),
        ));
        provisioners.insert(shared.name(), shared);
        let docker =
            Arc::new(provision::docker::Docker::start(opts.cfg.docker.clone(), files).await);
        provisioners.insert(docker.name(), Arc::clone(&docker) as Arc<dyn Provisioner>);
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_idle_timeout(std::time::Duration::from_secs(30))
                .build(hyper_util::client::legacy::connect::HttpConnector::new());
        let metrics = metrics::ControlMetrics::new();
        let runtime_token = match &opts.cfg.runtime_token {
            Some(t) => t.clone(),
            None => {
                stacklab_proxy::config::load_or_create_token(&opts.data_dir.join("runtime.token"))
                    .context("cannot prepare <data_dir>/runtime.token")?
            }
        };
        let stacklab = match &opts.cfg.backends.command {
            Some(p) => p.clone(),
            None => std::env::current_exe().context("cannot find this program")?,
        };
        let runtimes = runtimes::Runtimes::load(
            &opts.cfg.backends.runtimes_dir,
            &opts.cfg.backends.warm_runtimes,
            stacklab,
        )
        .map_err(|e| anyhow::anyhow!(e))?;
        let config_file = opts
            .config_file
            .as_deref()
            .map(|f| sandbox::backend_config(&opts.data_dir, f))
            .transpose()
            .map_err(|e| anyhow::anyhow!(e))?;
        let sandbox = sandbox::Sandbox::prepare(
            opts.cfg.backends.sandbox,
            &opts.data_dir,
            config_file.iter().cloned().collect(),
            opts.config_file.iter().cloned().collect(),
        )
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
        if runtime_token.expose() == opts.admin_token.expose() {
            anyhow::bail!("control.runtime_token is the admin token: give runtimes a credential of their own (or leave it empty)");
        }
        Ok(Arc::new(Control {
            routes: routes::RouteState::new(pools),
            instances: instances::Instances::new(),
            drills: drills::Drills::default(),
            bugs_lock: tokio::sync::Mutex::new(()),
            sessions: sessions::Live::default(),
            cfg: opts.cfg,
            sessions_cfg: opts.sessions,
            data_dir: opts.data_dir,
            admin_token: opts.admin_token,
            runtime_token,
            runtimes,
            clock: clock::Clock::default(),
            registry,
            sealer,
            provisioners,
            docker,
            metrics,
            http: client,
            admin_url: OnceLock::new(),
            backend_control_url: tokio::sync::OnceCell::new(),
            proxies: OnceLock::new(),
            edge: OnceLock::new(),
            config_file,
            sandbox,
            shutdown: CancellationToken::new(),
        }))
    }

    /// Records a pool changed through the admin API (members that are control's own
    /// instances left out: they are started afresh by each run), so a restart keeps it.
    pub async fn persist_pool(&self, name: &str) {
        let spec = self.routes.pool(name).map(|mut p| {
            let own: Vec<String> = self.instances.list().into_iter().map(|i| i.id).collect();
            let ours = |id: &str| name == serve::CONTROL_POOL && id.starts_with("control-");
            p.members.retain(|m| !own.contains(&m.id) && !ours(&m.id));
            serde_json::to_string(&p).unwrap_or_default()
        });
        if let Err(e) = self.registry.put_pool(name, spec.as_deref()).await {
            tracing::warn!(pool = %name, error = %redact_url(&e.to_string()), "cannot record a pool change; it lasts until restart");
        }
    }

    /// Who sent an admin request, by its `Authorization: Bearer <token>` (compared in
    /// constant time).
    pub fn caller(&self, headers: &http::HeaderMap) -> Caller {
        let given = stacklab_types::secret::bearer(headers);
        if self.admin_token.admits(given) {
            Caller::Admin
        } else if self.runtime_token.admits(given) {
            Caller::Runtime
        } else {
            Caller::Nobody
        }
    }

    /// Whether the request carries the admin token.
    pub fn authorized(&self, headers: &http::HeaderMap) -> bool {
        self.caller(headers) == Caller::Admin
    }
}

/// Who is calling the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// The admin token: everything.
    Admin,
    /// A runtime instance's credential: stack descriptors and cache-policy reports only.
    Runtime,
    /// No token, or a wrong one.
    Nobody,
}

/// Removes `user:password@` from URLs in an error text, so a connection error never shows
/// credentials.
pub fn redact_url(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        out.push_str(&rest[..i + 3]);
        rest = &rest[i + 3..];
        let end = rest
            .find(|c: char| c.is_whitespace() || c == '/' || c == '"' || c == '\'')
            .unwrap_or(rest.len());
        if let Some(at) = rest[..end].rfind('@') {
            out.push_str("[redacted]@");
            rest = &rest[at + 1..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn urls_lose_their_credentials() {
        assert_eq!(
            super::redact_url("cannot reach postgres://admin:hunter2@db:5432/x (refused)"),
            "cannot reach postgres://[redacted]@db:5432/x (refused)"
        );
        assert_eq!(super::redact_url("redis://h:1/"), "redis://h:1/");
    }
}
