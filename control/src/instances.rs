//! Backend instances as child processes: started, health-checked, registered in the route
//! table, watched, and replaced when they die on their own.
//!
//! Each instance is `<program> backend --addr 127.0.0.1:0 --control-url <admin> --token-stdin`.
//! The admin token goes through the child's stdin (never its arguments or environment), and
//! the child exits when its stdin closes — so when control dies, however it dies, its
//! instances follow it instead of living on as orphans. An instance killed through the admin
//! API (the failover drill) is not replaced; one that dies on its own is, with a back-off that
//! grows while instances keep dying young.

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

#[derive(Debug)]
pub struct Instances {
    running: Mutex<HashMap<String, Running>>,
    /// Instances that died young in a row (resets when one lives past [`YOUNG`]).
    young_deaths: AtomicU32,
    /// Serializes starts, so `max_instances` holds under concurrent requests.
    starting: tokio::sync::Mutex<()>,
    /// Replacements to start: (pool, after this delay), taken by the replacer task.
    replace: Mutex<Option<mpsc::UnboundedSender<(String, Duration)>>>,
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
            starting: tokio::sync::Mutex::new(()),
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

    fn count(&self, pool: &str) -> usize {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|r| r.info.pool == pool)
            .count()
    }
}

impl Control {
    /// Starts `control.backend_instances` instances (in parallel) and clears instances a
    /// previous run left in the registry.
    pub async fn start_backend_pool(self: &Arc<Self>) -> anyhow::Result<()> {
        if let Ok(stale) = self.registry.instances().await {
            for row in stale {
                let _ = self.registry.remove_instance(&row.pool, &row.id).await;
            }
        }
        let (tx, mut rx) = mpsc::unbounded_channel::<(String, Duration)>();
        *self
            .instances
            .replace
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(tx);
        let control = Arc::clone(self);
        tokio::spawn(async move {
            while let Some((pool, delay)) = rx.recv().await {
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = control.shutdown.cancelled() => return,
                }
                if let Err(e) = control.start_instance(&pool).await {
                    tracing::error!(error = %e, "cannot replace a backend instance");
                }
            }
        });
        let pool = self.cfg.backends.pool.clone();
        let starts = (0..self.cfg.backends.instances).map(|_| self.start_instance(&pool));
        for r in futures_util::future::join_all(starts).await {
            r.map_err(|e| anyhow::anyhow!("cannot start a backend instance: {e}"))?;
        }
        Ok(())
    }

    /// Starts one instance and waits until it answers `/healthz`, then routes to it.
    pub async fn start_instance(self: &Arc<Self>, pool: &str) -> Result<InstanceInfo, String> {
        if pool != self.cfg.backends.pool {
            return Err(format!(
                "control runs instances for pool `{}` only",
                self.cfg.backends.pool
            ));
        }
        let _one_at_a_time = self.instances.starting.lock().await;
        let max = self.cfg.backends.max_instances;
        if self.instances.count(pool) >= max {
            return Err(format!(
                "pool `{pool}` already has control.max_backend_instances ({max}) instances"
            ));
        }
        let admin = self
            .admin_url
            .get()
            .cloned()
            .ok_or("control's admin address is not bound yet")?;
        let program = match &self.cfg.backends.command {
            Some(p) => p.clone(),
            None => {
                std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?
            }
        };
        let mut cmd = tokio::process::Command::new(&program);
        cmd.arg("backend").args([
            "--addr",
            "127.0.0.1:0",
            "--control-url",
            &admin,
            "--token-stdin",
        ]);
        if let Some(file) = &self.config_file {
            cmd.arg("--config").arg(file);
        }
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
        let token_line = format!("{}\n", self.admin_token.expose());
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
        self.wait_healthy(&addr, timeout).await?;

        let id = format!("{pool}-{pid}");
        let info = InstanceInfo {
            id: id.clone(),
            pool: pool.to_owned(),
            addr: addr.clone(),
            pid,
            kind: "process",
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
        self.metrics
            .instances
            .with_label_values(&[pool])
            .set(self.instances.count(pool) as i64);
        tracing::info!(%id, pid, "backend instance started");
        self.repin();

        let control = Arc::clone(self);
        let started = Instant::now();
        tokio::spawn(async move {
            let killed = tokio::select! {
                _ = child.wait() => false,
                _ = kill_rx => true,
                () = control.shutdown.cancelled() => true,
            };
            if killed {
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
            drop(stdin);
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
        self.metrics
            .instances
            .with_label_values(&[&info.pool])
            .set(self.instances.count(&info.pool) as i64);
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
            let _ = tx.send((info.pool.clone(), delay));
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
