//! Backend instances as child processes or Docker containers
//! ([`crate::provision::docker::backend`]): started, health-checked, registered in the route
//! table, watched, and replaced (by one of the same kind) when they die on their own.
//!
//! Each instance is its runtime's start command ([`crate::runtimes`]; `stacklab backend` for
//! Rust) with `--addr 127.0.0.1:0 --control-url <admin> --token-stdin`, as
//! `backends/CONTRACT.md` says. The runtime credential — which reads stack descriptors and
//! nothing else, never the admin token — goes through the child's stdin (never its arguments
//! or environment, which is scrubbed of secrets), and the child exits when its stdin closes:
//! so when control dies, however it dies, its instances follow it instead of living on as
//! orphans. An instance killed through the admin
//! API (the failover drill) is not replaced; one that dies on its own is, with a back-off that
//! grows while instances keep dying young.

use crate::provision::docker::{backend, BackendNetwork};
use crate::registry::InstanceRow;
use crate::Control;
use serde::Serialize;
use stacklab_types::routes::{MemberSpec, RouteUpdate};
use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot, watch};

/// An instance dying this soon after its start counts as dying young.
const YOUNG: Duration = Duration::from_secs(10);
/// A replacement that could not start is tried again after this (doubling, at most the max).
const REPLACE_RETRY_MIN: Duration = Duration::from_secs(1);
const REPLACE_RETRY_MAX: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub struct Instances {
    running: Mutex<HashMap<String, Running>>,
    /// Instances that died young in a row (resets when one lives past [`YOUNG`]).
    young_deaths: AtomicU32,
    /// Starts under way, by pool: counted with the running ones against `max_instances`, so
    /// the cap holds while several start at once.
    pending: Mutex<HashMap<String, usize>>,
    /// Replacements to start: (pool, after this delay), taken by the replacer task.
    replace: Mutex<Option<mpsc::UnboundedSender<(String, InstanceKind, Duration)>>>,
}

#[derive(Debug)]
struct Running {
    info: InstanceInfo,
    kill: Option<oneshot::Sender<()>>,
    exited: watch::Receiver<bool>,
}

/// An instance as the admin API and the topology show it.
#[derive(Debug, Clone, Serialize)]
pub struct InstanceInfo {
    pub id: String,
    pub pool: String,
    pub addr: String,
    pub pid: u32,
    pub kind: &'static str,
    pub started_ms: u64,
}

/// How an instance runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceKind {
    /// A child process of control.
    Process,
    /// A Docker container (`[docker.backend]`).
    Container,
}

impl InstanceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceKind::Process => "process",
            InstanceKind::Container => "container",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "process" => Some(InstanceKind::Process),
            "container" => Some(InstanceKind::Container),
            _ => None,
        }
    }
}

/// An instance started, before it is routed to.
struct Launched {
    id: String,
    addr: String,
    pid: u32,
    /// Send (or drop) to kill it.
    stop: oneshot::Sender<()>,
    /// Fires once it has exited (and, for a container, been removed): how it ended.
    exited: oneshot::Receiver<String>,
}

impl Default for Instances {
    fn default() -> Self {
        Self::new()
    }
}

impl Instances {
    pub fn new() -> Self {
        Self {
            running: Mutex::default(),
            young_deaths: AtomicU32::new(0),
            pending: Mutex::default(),
            replace: Mutex::new(None),
        }
    }

    /// Running instances, by id.
    pub fn list(&self) -> Vec<InstanceInfo> {
        let mut v: Vec<_> = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|r| r.info.clone())
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// Takes a start slot in `pool` unless it already has `max` instances (running or
    /// starting); the slot is given back when the returned guard drops.
    fn reserve(&self, pool: &str, max: usize) -> Option<Reserved<'_>> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let n = pending.get(pool).copied().unwrap_or(0);
        if self.count(pool) + n >= max {
            return None;
        }
        pending.insert(pool.to_owned(), n + 1);
        Some(Reserved {
            instances: self,
            pool: pool.to_owned(),
        })
    }

    pub fn count(&self, pool: &str) -> usize {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|r| r.info.pool == pool)
            .count()
    }
}

/// A start slot of [`Instances::reserve`].
struct Reserved<'a> {
    instances: &'a Instances,
    pool: String,
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        let mut pending = self
            .instances
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = pending.get_mut(&self.pool) {
            *n = n.saturating_sub(1);
        }
    }
}

impl Control {
    /// Starts the warm runtimes' pools (`control.backend_instances` instances each, in
    /// parallel) and clears instances a previous run left in the registry.
    pub async fn start_backend_pool(self: &Arc<Self>) -> anyhow::Result<()> {
        if let Ok(stale) = self.registry.instances().await {
            for row in stale {
                let _ = self.registry.remove_instance(&row.pool, &row.id).await;
            }
        }
        let (tx, mut rx) = mpsc::unbounded_channel::<(String, InstanceKind, Duration)>();
        *self
            .instances
            .replace
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(tx);
        let control = Arc::clone(self);
        tokio::spawn(async move {
            while let Some((pool, kind, delay)) = rx.recv().await {
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = control.shutdown.cancelled() => return,
                }
                if control.pool_runtime(&pool).is_none() {
                    // A drill pool that ended meanwhile: nothing to replace.
                    continue;
                }
                if let Err(e) = control.start_instance_of(&pool, kind).await {
                    control.metrics.replacement_failures.inc();
                    // Tried again later (the back-off grows), unless the pool is full anyway.
                    let again = (delay * 2).clamp(REPLACE_RETRY_MIN, REPLACE_RETRY_MAX);
                    let full = control.instances.count(&pool) >= control.pool_max_instances(&pool);
                    tracing::error!(error = %e, retry_in = ?(!full).then_some(again), "cannot replace a backend instance");
                    if !full {
                        if let Some(tx) = control
                            .instances
                            .replace
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .as_ref()
                        {
                            let _ = tx.send((pool, kind, again));
                        }
                    }
                }
            }
        });
        let containers = self.cfg.backends.containers;
        if containers > 0 {
            if let (Ok(api), Some(cfg)) = (self.docker.api(), self.docker.config()) {
                let n = backend::remove_stale(api, &cfg.instance).await;
                if n > 0 {
                    tracing::info!(
                        removed = n,
                        "removed backend containers a previous run left"
                    );
                }
            }
        }
        let warm: Vec<String> = self
            .runtimes
            .all()
            .iter()
            .filter(|r| r.warm)
            .map(|r| r.manifest.name.clone())
            .collect();
        for name in warm {
            self.start_runtime_pool(&name, self.cfg.backends.instances, containers)
                .await
                .map_err(|e| anyhow::anyhow!("cannot start the {name} pool: {e}"))?;
        }
        self.start_pools_of_live_sessions().await;
        Ok(())
    }

    /// Starts the pools that sessions restored from the registry need (runtimes started on
    /// demand: nobody else would until the next new session of that runtime), so control is
    /// ready only once its live sessions can be served. A pool that cannot start is logged;
    /// its sessions answer `503 no_healthy_member` until it can, as a new session's would.
    async fn start_pools_of_live_sessions(self: &Arc<Self>) {
        let mut runtimes: Vec<String> =
            self.sessions.all().iter().map(|s| s.pool.clone()).collect();
        runtimes.sort();
        runtimes.dedup();
        for runtime in runtimes {
            let steps = crate::provision::Steps::silent();
            if let Err(e) = self.ensure_runtime_pool(&runtime, &steps).await {
                tracing::error!(runtime, error = %e.message, "cannot start the pool of restored sessions");
            }
        }
    }

    /// Starts `count` instances of `runtime` in parallel (the first `containers` of them as
    /// containers), making its pool if the route table has none.
    async fn start_runtime_pool(
        self: &Arc<Self>,
        runtime: &str,
        count: usize,
        containers: usize,
    ) -> Result<(), String> {
        self.ensure_pool_spec(runtime);
        let starts = (0..count).map(|n| {
            let kind = if n < containers {
                InstanceKind::Container
            } else {
                InstanceKind::Process
            };
            self.start_instance_of(runtime, kind)
        });
        for r in futures_util::future::join_all(starts).await {
            r.map_err(|e| format!("cannot start a {runtime} instance: {e}"))?;
        }
        if let Some(rt) = self.runtimes.get(runtime) {
            rt.last_used_ms.store(self.clock.now_ms(), Relaxed);
        }
        Ok(())
    }

    /// Adds `pool` to the route table, balanced and health-checked like the Rust pool of the
    /// config (or p2c-EWMA with `/healthz` checks), unless it is there.
    pub fn ensure_pool_spec(&self, pool: &str) {
        if self.routes.pool(pool).is_some() {
            return;
        }
        let like = self.routes.pool("rust");
        let spec = stacklab_types::routes::PoolSpec {
            name: pool.to_owned(),
            algorithm: like.as_ref().map(|p| p.algorithm).unwrap_or_default(),
            protocol: like.as_ref().map(|p| p.protocol).unwrap_or_default(),
            members: vec![],
            health: Some(
                like.and_then(|p| p.health)
                    .unwrap_or_else(|| serde_json::from_str("{}").expect("health defaults")),
            ),
        };
        let _ = self.routes.publish(RouteUpdate::PutPool { pool: spec });
    }

    /// Makes sure `runtime`'s pool has instances before a session of it is served: starts
    /// the pool (a step the session's person sees) when it has none.
    pub async fn ensure_runtime_pool(
        self: &Arc<Self>,
        runtime: &str,
        steps: &crate::provision::Steps,
    ) -> Result<(), crate::provision::ProvisionError> {
        let Some(rt) = self.runtimes.get(runtime) else {
            return Err(crate::provision::ProvisionError::new(
                Some("runtime"),
                format!("no runtime `{runtime}` here"),
            ));
        };
        rt.last_used_ms.store(self.clock.now_ms(), Relaxed);
        let _one = rt.lifecycle.lock().await;
        if rt.warm {
            // Started with control (its instances, or members added through the admin API).
            steps.skip("runtime", &format!("{} pool kept warm", rt.manifest.label));
            return Ok(());
        }
        let n = self.instances.count(runtime);
        if n > 0 {
            steps.skip(
                "runtime",
                &format!("{} pool already running ({n} instances)", rt.manifest.label),
            );
            return Ok(());
        }
        // A pool started for a session has at least one instance, whatever a warm pool has.
        let want = self.cfg.backends.instances.max(1);
        steps
            .run(
                "runtime",
                &format!("started the {} pool ({want} instances)", rt.manifest.label),
                async {
                    self.start_runtime_pool(runtime, want, self.cfg.backends.containers)
                        .await
                        .map_err(|e| crate::provision::ProvisionError::new(Some("runtime"), e))
                },
            )
            .await
    }

    /// Stops the pools of runtimes that are not warm and that no live session has used for
    /// `control.runtime_idle_stop_ms` (called by the reaper). Returns the pools stopped.
    pub async fn stop_idle_pools(&self) -> Vec<String> {
        let now = self.clock.now_ms();
        let mut stopped = Vec::new();
        for rt in self.runtimes.all().iter().filter(|r| !r.warm) {
            let name = rt.manifest.name.as_str();
            if self
                .sessions
                .all()
                .iter()
                .any(|s| s.choices.runtime == name)
            {
                rt.last_used_ms.store(now, Relaxed);
                continue;
            }
            let idle = self.cfg.backends.idle_stop.as_millis() as u64;
            if self.instances.count(name) == 0
                || now.saturating_sub(rt.last_used_ms.load(Relaxed)) < idle
            {
                continue;
            }
            let _one = rt.lifecycle.lock().await;
            // A session may have asked for it while we waited for the lock.
            if self
                .sessions
                .all()
                .iter()
                .any(|s| s.choices.runtime == name)
            {
                continue;
            }
            let ids: Vec<String> = self
                .instances
                .list()
                .into_iter()
                .filter(|i| i.pool == name)
                .map(|i| i.id)
                .collect();
            for id in ids {
                let _ = self.kill_instance(name, &id).await;
            }
            self.metrics.pools_stopped.inc();
            tracing::info!(runtime = name, "stopped an idle runtime pool");
            stopped.push(name.to_owned());
        }
        stopped
    }

    /// Sets `stacklab_control_instances{pool}`: drill pools are counted together per runtime
    /// (`<runtime>-drill`), so their random names do not each make a series.
    fn count_instances_metric(&self, pool: &str) {
        let label = |p: &str| match self.drills.runtime_of(p) {
            Some(rt) => format!("{rt}-drill"),
            None => p.to_owned(),
        };
        let mine = label(pool);
        let n = self
            .instances
            .list()
            .iter()
            .filter(|i| label(&i.pool) == mine)
            .count();
        self.metrics
            .instances
            .with_label_values(&[&mine])
            .set(n as i64);
    }

    /// Starts one child-process instance (see [`Control::start_instance_of`]).
    pub async fn start_instance(self: &Arc<Self>, pool: &str) -> Result<InstanceInfo, String> {
        self.start_instance_of(pool, InstanceKind::Process).await
    }

    /// Starts one instance of `kind` and waits until it answers `/healthz`, then routes to it.
    pub async fn start_instance_of(
        self: &Arc<Self>,
        pool: &str,
        kind: InstanceKind,
    ) -> Result<InstanceInfo, String> {
        let Some(runtime) = self.pool_runtime(pool) else {
            return Err(format!(
                "control runs instances for the runtimes' pools only ({}) and sessions' drill pools",
                self.runtimes.names().join(", ")
            ));
        };
        self.runtimes.available(runtime).await?;
        let max = self.pool_max_instances(pool);
        let Some(_slot) = self.instances.reserve(pool, max) else {
            let key = if self.drills.runtime_of(pool).is_some() {
                "control.max_drill_instances"
            } else {
                "control.max_backend_instances"
            };
            return Err(format!("pool `{pool}` already has {key} ({max}) instances"));
        };
        self.ensure_pool_spec(pool);
        let admin = self
            .admin_url
            .get()
            .cloned()
            .ok_or("control's admin address is not bound yet")?;
        let timeout = self.cfg.backends.ready_timeout;
        let launched = match kind {
            InstanceKind::Process => self.launch_process(pool, &admin).await?,
            InstanceKind::Container => self.launch_container(pool, &admin).await?,
        };
        // Dropping `launched` (its `stop`) kills what did not get healthy.
        self.wait_healthy(&launched.addr, timeout).await?;
        let Launched {
            id,
            addr,
            pid,
            stop,
            mut exited,
        } = launched;

        let info = InstanceInfo {
            id: id.clone(),
            pool: pool.to_owned(),
            addr: addr.clone(),
            pid,
            kind: kind.as_str(),
            started_ms: self.clock.now_ms(),
        };
        let (kill_tx, kill_rx) = oneshot::channel();
        let (exited_tx, exited_rx) = watch::channel(false);
        self.instances
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                id.clone(),
                Running {
                    info: info.clone(),
                    kill: Some(kill_tx),
                    exited: exited_rx,
                },
            );
        let _ = self
            .registry
            .put_instance(&InstanceRow {
                pool: pool.to_owned(),
                id: id.clone(),
                addr: addr.clone(),
                pid: i64::from(pid),
                started_ms: info.started_ms as i64,
            })
            .await;
        let _ = self.routes.publish(RouteUpdate::PutMember {
            pool: pool.to_owned(),
            member: MemberSpec {
                id: id.clone(),
                addr,
                weight: 1,
                draining: false,
            },
        });
        self.count_instances_metric(pool);
        tracing::info!(%id, pid, kind = kind.as_str(), "backend instance started");
        self.repin();

        let control = Arc::clone(self);
        let started = Instant::now();
        tokio::spawn(async move {
            let killed = tokio::select! {
                _ = &mut exited => false,
                _ = kill_rx => true,
                () = control.shutdown.cancelled() => true,
            };
            if killed {
                let _ = stop.send(());
                let _ = exited.await;
            }
            control
                .instance_gone(&info, killed, started.elapsed())
                .await;
            let _ = exited_tx.send(true);
        });
        Ok(self
            .instances
            .list()
            .into_iter()
            .find(|i| i.id == id)
            .expect("just inserted"))
    }

    /// The runtime's start command as a child process.
    async fn launch_process(&self, pool: &str, admin: &str) -> Result<Launched, String> {
        let runtime = self.pool_runtime(pool).ok_or("not a runtime's pool")?;
        let argv = self.runtimes.start_argv(runtime);
        let program = std::path::PathBuf::from(&argv[0]);
        let mut cmd = self.sandbox.command(&program);
        cmd.args(&argv[1..]).args([
            "--addr",
            "127.0.0.1:0",
            "--control-url",
            admin,
            "--token-stdin",
        ]);
        if let Some(file) = &self.config_file {
            cmd.arg("--config").arg(file);
        }
        crate::runtimes::scrub_env(&mut cmd);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
        let pid = child.id().unwrap_or(0);
        let mut stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let token_line = format!("{}\n", self.runtime_token.expose());
        stdin
            .write_all(token_line.as_bytes())
            .await
            .map_err(|e| format!("cannot hand the token to the instance: {e}"))?;
        let timeout = self.cfg.backends.ready_timeout;
        let mut lines = BufReader::new(stdout).lines();
        let addr = match tokio::time::timeout(timeout, lines.next_line()).await {
            Ok(Ok(Some(line))) => line
                .strip_prefix("stacklab backend on http://")
                .map(str::to_owned)
                .ok_or_else(|| format!("the instance said `{line}` instead of its address"))?,
            Ok(_) => return Err("the instance exited before it listened".into()),
            Err(_) => return Err(format!("the instance did not listen within {timeout:?}")),
        };
        // Keep draining its stdout so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let (stop, stop_rx) = oneshot::channel::<()>();
        let (exited_tx, exited) = oneshot::channel();
        tokio::spawn(async move {
            let how = tokio::select! {
                status = child.wait() => status.map_or_else(|e| e.to_string(), |s| s.to_string()),
                _ = stop_rx => {
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                    "killed".to_owned()
                }
            };
            drop(stdin);
            let _ = exited_tx.send(how);
        });
        Ok(Launched {
            id: format!("{pool}-{pid}"),
            addr,
            pid,
            stop,
            exited,
        })
    }

    /// `stacklab backend …` in a container of `[docker.backend]`'s image.
    async fn launch_container(
        self: &Arc<Self>,
        pool: &str,
        admin: &str,
    ) -> Result<Launched, String> {
        let api = self.docker.api().map_err(|why| {
            format!("a backend instance in a container needs the docker provisioner: {why}")
        })?;
        let cfg = self
            .docker
            .config()
            .ok_or("a backend instance in a container needs a [docker] section")?;
        let admin = match cfg.backend.network {
            BackendNetwork::Host => admin.to_owned(),
            _ if !shared_on_loopback(&self.cfg.shared).is_empty() => {
                return Err(format!(
                    "a backend container on its own network (docker.backend.network = \"own\") cannot reach the shared provisioner's servers on loopback ({}), and the sessions it serves would fail: give those servers an address the backends' network reaches, or set docker.backend.network = \"host\"",
                    shared_on_loopback(&self.cfg.shared).join(", ")
                ))
            }
            network => self
                .backend_control_url
                .get_or_try_init(|| async {
                    let subnet = backend::ensure_network(api, &cfg.instance, &network).await?;
                    crate::serve::runtime_listener(self, subnet).map_err(|e| format!("{e:#}"))
                })
                .await?
                .clone(),
        };
        let admin = admin.as_str();
        let started = backend::start(
            api,
            &backend::Launch {
                spec: &cfg.backend,
                instance: &cfg.instance,
                pool,
                runtime: &self
                    .pool_runtime(pool)
                    .ok_or("not a runtime's pool")?
                    .manifest
                    .name,
                admin_url: admin,
                token: &self.runtime_token,
                data_dir: &self.data_dir,
                config_file: self.config_file.as_deref(),
                ready_timeout: self.cfg.backends.ready_timeout,
            },
        )
        .await?;
        let suffix = started.name.rsplit('-').next().unwrap_or_default();
        Ok(Launched {
            id: format!("{pool}-c{suffix}"),
            addr: started.addr,
            pid: started.pid,
            stop: started.stop,
            exited: started.exited,
        })
    }

    async fn wait_healthy(&self, addr: &str, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let url = format!("http://{addr}/healthz");
        loop {
            let req = http::Request::get(&url)
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .map_err(|e| e.to_string())?;
            if let Ok(Ok(res)) =
                tokio::time::timeout(Duration::from_secs(1), self.http.request(req)).await
            {
                if res.status().is_success() {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the instance at {addr} did not answer /healthz within {timeout:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn instance_gone(self: &Arc<Self>, info: &InstanceInfo, killed: bool, lived: Duration) {
        self.instances
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&info.id);
        let _ = self.routes.publish(RouteUpdate::RemoveMember {
            pool: info.pool.clone(),
            id: info.id.clone(),
        });
        self.repin();
        let _ = self.registry.remove_instance(&info.pool, &info.id).await;
        self.count_instances_metric(&info.pool);
        self.metrics
            .instance_exits
            .with_label_values(&[if killed { "killed" } else { "died" }])
            .inc();
        if killed || self.shutdown.is_cancelled() {
            tracing::info!(id = %info.id, "backend instance stopped");
            return;
        }
        let young = if lived < YOUNG {
            self.instances.young_deaths.fetch_add(1, Relaxed) + 1
        } else {
            self.instances.young_deaths.store(0, Relaxed);
            0
        };
        let delay = Duration::from_millis(100 * 2u64.pow(young.min(7)));
        tracing::warn!(id = %info.id, pid = info.pid, ?delay, "backend instance died on its own; replacing it");
        if let Some(tx) = self
            .instances
            .replace
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            let kind = InstanceKind::parse(info.kind).unwrap_or(InstanceKind::Process);
            let _ = tx.send((info.pool.clone(), kind, delay));
        }
    }

    /// Kills an instance (SIGKILL: the failover drill) and waits until it is out of the
    /// route table. It is not replaced.
    pub async fn kill_instance(&self, pool: &str, id: &str) -> Result<InstanceInfo, String> {
        let (info, kill, mut exited) = {
            let mut running = self
                .instances
                .running
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let r = running
                .get_mut(id)
                .filter(|r| r.info.pool == pool)
                .ok_or_else(|| format!("no instance `{id}` in pool `{pool}`"))?;
            (r.info.clone(), r.kill.take(), r.exited.clone())
        };
        if let Some(k) = kill {
            let _ = k.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), exited.wait_for(|e| *e)).await;
        Ok(info)
    }

    /// Stops every instance (shutdown) and waits for them.
    pub async fn stop_instances(&self) {
        let waits: Vec<_> = {
            let mut running = self
                .instances
                .running
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            running
                .values_mut()
                .map(|r| {
                    if let Some(k) = r.kill.take() {
                        let _ = k.send(());
                    }
                    r.exited.clone()
                })
                .collect()
        };
        for mut w in waits {
            let _ = tokio::time::timeout(Duration::from_secs(5), w.wait_for(|e| *e)).await;
        }
    }
}

/// The `[shared]` servers that listen on loopback, as `engine at host` (their URLs'
/// credentials left out), which a backend container on a network of its own cannot reach.
fn shared_on_loopback(shared: &crate::config::SharedConfig) -> Vec<String> {
    let urls = [
        (
            "postgres",
            shared.postgres_url.as_ref().map(|u| u.expose().to_owned()),
        ),
        (
            "mysql",
            shared.mysql_url.as_ref().map(|u| u.expose().to_owned()),
        ),
        (
            "mongodb",
            shared.mongodb_url.as_ref().map(|u| u.expose().to_owned()),
        ),
        (
            "redis",
            shared.redis_url.as_ref().map(|u| u.expose().to_owned()),
        ),
        (
            "memcached",
            shared
                .memcached_addr
                .as_ref()
                .map(|a| format!("memcached://{a}")),
        ),
    ];
    urls.into_iter()
        .filter_map(|(engine, url)| {
            let host = host_of(&url?)?;
            let loopback = host == "localhost"
                || host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            loopback.then(|| format!("{engine} at {host}"))
        })
        .collect()
}

/// The host of `scheme://[user:password@]host[:port][/…]`.
fn host_of(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.strip_prefix('[') {
        Some(v6) => format!("[{}]", v6.split(']').next()?),
        None => host_port.split(':').next()?.to_owned(),
    };
    (!host.is_empty()).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use stacklab_types::Secret;

    #[test]
    fn shared_servers_on_loopback_are_named_without_their_credentials() {
        assert_eq!(
            host_of("postgres://a:p@w@db.example:5432/x").as_deref(),
            Some("db.example")
        );
        assert_eq!(host_of("redis://[::1]:6379/").as_deref(), Some("[::1]"));
        assert_eq!(
            host_of("memcached://127.0.0.1:11211").as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(host_of("not a url"), None);
        let shared = crate::config::SharedConfig {
            postgres_url: Some(Secret::new(
                "postgres://admin:hunter2@127.0.0.1:5432/postgres",
            )),
            mysql_url: Some(Secret::new("mysql://root:pw@10.0.0.5:3306/")),
            redis_url: Some(Secret::new("redis://default:pw@[::1]:6379/")),
            memcached_addr: Some("localhost:11211".into()),
            ..Default::default()
        };
        let found = shared_on_loopback(&shared);
        assert_eq!(
            found,
            [
                "postgres at 127.0.0.1",
                "redis at [::1]",
                "memcached at localhost"
            ]
        );
        assert!(!found.join(" ").contains("hunter2"));
        assert!(shared_on_loopback(&Default::default()).is_empty());
    }
}
