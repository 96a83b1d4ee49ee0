//! Failover drills on a session's own instances.
//!
//! The topology view's drill ("kill an instance under traffic and watch the failover") must
//! never break what other sessions use. So a session drills on a *drill pool*:
//! `control.drill_instances` instances of its runtime started for it alone, in a pool of its
//! own named `<runtime>-drill-<6 hex>` (never the session code, which only its cookie holds).
//! While the drill pool lives, the session's requests go there; the session may kill its
//! instances and add more (up to `control.max_drill_instances`), and nothing else. The shared
//! runtime pools change only through the admin API. A drill pool ends with
//! `DELETE /api/topology/drill`, with its session, or with control: none outlives the process
//! that started it, and a restarted control routes the session back to its runtime's pool.
//! At most `control.max_drill_pools` live at once (`stacklab_control_drill_pools`).

use crate::instances::InstanceKind;
use crate::sessions::Session;
use crate::Control;
use serde_json::{json, Value};
use stacklab_types::routes::RouteUpdate;
use stacklab_types::stack::CacheEngine;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// How long a drill's start or end waits for the proxies to route the session anew.
const ROUTED_WITHIN: std::time::Duration = std::time::Duration::from_secs(3);

/// Live drill pools: pool name → whose and of which runtime (also while their instances are
/// still starting, so the cap holds for drills started at once).
#[derive(Debug, Default)]
pub struct Drills {
    pools: Mutex<BTreeMap<String, DrillPool>>,
}

#[derive(Debug, Clone)]
struct DrillPool {
    /// The id of the session it serves.
    session: String,
    runtime: String,
}

/// Why a drill request was refused; [`crate::api`] turns each into its JSON error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DrillError {
    /// `control.drills_from_ui = false`.
    Disabled,
    /// The session has a drill pool already (its name).
    Running(String),
    /// The session has no drill pool.
    NoDrill,
    /// `control.max_drill_pools` drill pools are live.
    Pools(usize),
    /// The pool is not the session's drill pool (the pool's name).
    NotYours(String),
    /// The session's drill pool has `control.max_drill_instances` instances.
    Instances(usize),
    /// Its instances could not start.
    Start(String),
}

impl DrillError {
    /// The `reason` label of `stacklab_control_drill_refusals_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            DrillError::Disabled => "disabled",
            DrillError::NotYours(_) => "not_yours",
            DrillError::Pools(_) => "pools",
            DrillError::Instances(_) => "instances",
            DrillError::Running(_) | DrillError::NoDrill | DrillError::Start(_) => "state",
        }
    }
}

impl Drills {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, DrillPool>> {
        self.pools.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The runtime whose instances drill pool `pool` runs, if it is one.
    pub fn runtime_of(&self, pool: &str) -> Option<String> {
        self.lock().get(pool).map(|d| d.runtime.clone())
    }

    /// The drill pool of the session `id`, if it has one.
    pub fn of_session(&self, id: &str) -> Option<String> {
        self.lock()
            .iter()
            .find(|(_, d)| d.session == id)
            .map(|(p, _)| p.clone())
    }

    /// Every live drill pool's name.
    pub fn names(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

impl Control {
    /// The runtime whose instances `pool` runs: a runtime's own pool, or a drill pool.
    pub fn pool_runtime(&self, pool: &str) -> Option<&crate::runtimes::Runtime> {
        self.runtimes.get(pool).or_else(|| {
            let runtime = self.drills.runtime_of(pool)?;
            self.runtimes.get(&runtime)
        })
    }

    /// Pools whose members are runtime instances: the runtimes' and the drill pools.
    pub fn instance_pools(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .runtimes
            .names()
            .into_iter()
            .map(str::to_owned)
            .collect();
        v.extend(self.drills.names());
        v
    }

    /// Most instances `pool` may have: a drill pool's cap, else a runtime pool's.
    pub fn pool_max_instances(&self, pool: &str) -> usize {
        if self.drills.runtime_of(pool).is_some() {
            self.cfg.drills.max_instances
        } else {
            self.cfg.backends.max_instances
        }
    }

    fn refuse(&self, e: DrillError) -> DrillError {
        self.metrics
            .drill_refused
            .with_label_values(&[e.reason()])
            .inc();
        e
    }

    /// `POST /api/topology/drill`: starts the session's drill pool and routes the session to
    /// it once its instances answer. Returns the pool and its instances.
    pub async fn start_drill(self: &Arc<Self>, s: &Arc<Session>) -> Result<Value, DrillError> {
        if !self.cfg.drills_from_ui {
            return Err(self.refuse(DrillError::Disabled));
        }
        let pool = format!(
            "{}-drill-{:06x}",
            s.choices.runtime,
            rand::random::<u32>() >> 8
        );
        {
            let mut pools = self.drills.lock();
            if let Some((p, _)) = pools.iter().find(|(_, d)| d.session == s.id) {
                return Err(self.refuse(DrillError::Running(p.clone())));
            }
            let max = self.cfg.drills.max_pools;
            if pools.len() >= max {
                drop(pools);
                return Err(self.refuse(DrillError::Pools(max)));
            }
            pools.insert(
                pool.clone(),
                DrillPool {
                    session: s.id.clone(),
                    runtime: s.choices.runtime.clone(),
                },
            );
        }
        self.metrics.drill_pools.set(self.drills.len() as i64);
        self.ensure_pool_spec(&pool);
        let starts = (0..self.cfg.drills.instances)
            .map(|_| self.start_instance_of(&pool, InstanceKind::Process));
        let results = futures_util::future::join_all(starts).await;
        let failed: Vec<String> = results
            .iter()
            .filter_map(|r| r.as_ref().err().cloned())
            .collect();
        let started = results.len() - failed.len();
        if started == 0 || self.sessions.get(&s.id).is_none() {
            self.stop_drill_pool(&pool).await;
            let why = if started == 0 {
                failed.join("; ")
            } else {
                "the session ended while its drill pool started".to_owned()
            };
            return Err(self.refuse(DrillError::Start(why)));
        }
        *s.drill.lock().unwrap_or_else(|e| e.into_inner()) = Some(pool.clone());
        self.reroute(s);
        // "It serves your session now" must be true when the answer arrives.
        self.wait_routed(&s.id, &pool).await;
        tracing::info!(%pool, instances = started, "drill pool started");
        Ok(json!({
            "pool": pool,
            "instances": self.instances.list().into_iter().filter(|i| i.pool == pool).map(|i| i.id).collect::<Vec<_>>(),
            "failed": failed,
            "max_instances": self.cfg.drills.max_instances,
        }))
    }

    /// `DELETE /api/topology/drill`: routes the session back to its runtime's pool, then
    /// stops its drill pool.
    pub async fn end_drill(&self, s: &Session) -> Result<String, DrillError> {
        let pool = self.drills.of_session(&s.id).ok_or(DrillError::NoDrill)?;
        s.drill.lock().unwrap_or_else(|e| e.into_inner()).take();
        self.reroute(s);
        // Its requests leave the drill pool before the drill instances are stopped.
        self.wait_routed(&s.id, &s.pool).await;
        self.stop_drill_pool(&pool).await;
        Ok(pool)
    }

    /// The session ended: its drill pool (if any) goes too. Its route is gone already.
    pub(crate) async fn drop_drill_of(&self, id: &str) {
        if let Some(pool) = self.drills.of_session(id) {
            self.stop_drill_pool(&pool).await;
        }
    }

    /// Publishes the session's route to the pool serving it now, re-pinning a session whose
    /// cache is in an instance's memory.
    fn reroute(&self, s: &Session) {
        if s.choices.cache == CacheEngine::Memory {
            let next = self.least_pinned_member(&s.serving_pool());
            *s.member.lock().unwrap_or_else(|e| e.into_inner()) = next;
        }
        if self.sessions.get(&s.id).is_some() {
            let _ = self
                .routes
                .publish(RouteUpdate::PutSession { session: s.route() });
        }
    }

    /// Waits (at most [`ROUTED_WITHIN`]) until every proxy routes session `id` to `pool`:
    /// proxies follow the route feed, so a change reaches them a moment after it is made.
    async fn wait_routed(&self, id: &str, pool: &str) {
        let deadline = tokio::time::Instant::now() + ROUTED_WITHIN;
        for p in self.proxy_urls() {
            loop {
                let routed = self
                    .admin_get(&format!("{p}/admin/sessions"))
                    .await
                    .and_then(|v| {
                        let list = v["sessions"].as_array()?.clone();
                        Some(list.iter().any(|s| s["id"] == id && s["pool"] == pool))
                    })
                    .unwrap_or(false);
                if routed {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    tracing::warn!(%pool, proxy = %p, "a proxy did not take a drill's route change in time");
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }

    /// Kills a drill pool's instances and removes the pool.
    async fn stop_drill_pool(&self, pool: &str) {
        let ids: Vec<String> = self
            .instances
            .list()
            .into_iter()
            .filter(|i| i.pool == pool)
            .map(|i| i.id)
            .collect();
        for id in ids {
            let _ = self.kill_instance(pool, &id).await;
        }
        self.drills.lock().remove(pool);
        let _ = self.routes.publish(RouteUpdate::RemovePool {
            name: pool.to_owned(),
        });
        self.metrics.drill_pools.set(self.drills.len() as i64);
        tracing::info!(%pool, "drill pool stopped");
    }

    /// Checks that a session may change `pool` through the public API: only its own drill
    /// pool, and an instance more only below `control.max_drill_instances`.
    pub fn may_change_pool(&self, s: &Session, pool: &str, adding: bool) -> Result<(), DrillError> {
        if !self.cfg.drills_from_ui {
            return Err(self.refuse(DrillError::Disabled));
        }
        if self.drills.of_session(&s.id).as_deref() != Some(pool) {
            return Err(self.refuse(DrillError::NotYours(pool.to_owned())));
        }
        let max = self.cfg.drills.max_instances;
        if adding && self.instances.count(pool) >= max {
            return Err(self.refuse(DrillError::Instances(max)));
        }
        Ok(())
    }
}
