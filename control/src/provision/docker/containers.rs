//! The engine and its images, networks, and containers: create, readiness, log tails, removal.

use super::config::BackendNetwork;
use super::{
    api_text, container_name, force_remove, label_filter, scrub, status_code, warm_prefix, Engine,
    EngineSpec, Inner, Role, Running, LABEL_ENGINE, LABEL_INSTANCE, LABEL_ROLE, LABEL_SESSION,
    LOG_TAIL_BYTES, LOG_TAIL_LINES, PING_TIMEOUT, POLL_INTERVAL, PROBE_TIMEOUT, STATE_CHECK_EVERY,
    WARM,
};

use crate::seal::random_password;
use bollard::models::{
    ContainerCreateBody, ContainerStateStatusEnum, HostConfig, Mount, MountTypeEnum,
    NetworkCreateRequest, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, InspectContainerOptions, ListContainersOptions,
    ListNetworksOptions, ListVolumesOptions, LogsOptions, RemoveVolumeOptions,
    StartContainerOptions,
};
use futures_util::StreamExt;
use stacklab_types::Secret;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

impl Inner {
    // ---- the engine and its images -----------------------------------------------------------

    /// Pings the engine (agreeing on the API version) and looks for every engine's image.
    pub(super) async fn check(&self) {
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
    pub(super) fn pull(&self, image: &str) {
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
    pub(super) async fn ensure_network(
        &self,
        name: &str,
        session: Option<&str>,
    ) -> Result<(), String> {
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
        for subnet in range.unused(&used) {
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
    pub(super) async fn subnets_in_use(&self) -> Result<HashSet<String>, String> {
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
    pub(super) async fn networks_named(&self, name: &str) -> Result<Vec<String>, String> {
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

    /// Joins backend containers on a network of their own to a session's network, so its
    /// instances reach the session's engines ([`super::backend::join_session_network`]).
    pub(super) async fn join_backends(&self, network: &str) -> Result<(), String> {
        if self.cfg().backend.network == BackendNetwork::Host {
            return Ok(());
        }
        super::backend::join_session_network(self.api(), &self.cfg().instance, network).await
    }

    pub(super) async fn remove_networks(&self, name: &str) -> Result<(), String> {
        for id in self.networks_named(name).await? {
            super::backend::leave_session_network(self.api(), &id).await;
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
    pub(super) fn reserve(&self, name: &str) -> Result<(), String> {
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

    pub(super) fn release(&self, name: &str) {
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
    }

    /// Creates and starts a container of `engine` called `name` on `network`.
    pub(super) async fn create(
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

    pub(super) async fn create_reserved(
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
    pub(super) async fn remove_container(&self, name: &str) -> Result<(), String> {
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
    pub(super) async fn remove_session_containers(&self, id: &str) -> Result<(), String> {
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
    pub(super) async fn remove_stale_pool(&self) -> Result<(), String> {
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
    pub(super) async fn sweep_once(&self) {
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
    pub(super) async fn log_tail(&self, name: &str, secret: &str) -> String {
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
    pub(super) async fn stopped(&self, id: &str) -> Option<String> {
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
    pub(super) async fn wait_ready(&self, c: &Running, timeout: Duration) -> Result<(), String> {
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
}
