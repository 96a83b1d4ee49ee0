//! The warm pool and the provisioner's task: fill, claim, prune, and the engine's events.

use super::{
    api_text, container_name, id_in, label_filter, network_name, pool_network, warm_prefix, Engine,
    Inner, Running, Warm, LABEL_ENGINE, LABEL_INSTANCE, LABEL_ROLE, RECHECK_INTERVAL, WARM,
};

use crate::provision::Lost;
use bollard::models::{NetworkConnectRequest, NetworkDisconnectRequest};
use bollard::query_parameters::{EventsOptions, InspectContainerOptions, RenameContainerOptions};
use futures_util::StreamExt;
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

impl Inner {
    // ---- the warm pool -----------------------------------------------------------------------

    pub(super) fn take_warm(&self, engine: Engine) -> Option<Warm> {
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
    pub(super) async fn make_warm(&self, engine: Engine) -> Result<Warm, String> {
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
    pub(super) async fn claim(&self, w: Warm, engine: Engine, id: &str) -> Result<Running, String> {
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
    pub(super) async fn address_on(
        &self,
        id: &str,
        network: &str,
        port: u16,
    ) -> Result<SocketAddr, String> {
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
    pub(super) async fn fill(&self) {
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
    pub(super) async fn prune_pool(&self) {
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
    pub(super) async fn run(self: Arc<Self>) {
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
    pub(super) async fn watch(self: Arc<Self>) {
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
