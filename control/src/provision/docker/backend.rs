//! Backend instances as Docker containers, next to the child-process ones: the same
//! `stacklab backend --addr … --control-url … --token-stdin`, run from `[docker.backend]`'s
//! image (built by `config/images/build.sh backend` from the project's own binary over the same
//! Debian base as the engines), so a pool can mix processes and containers and the failover
//! drill kills either.
//!
//! # Network (`docker.backend.network`)
//! `own` (the default): the container is on `stacklab-<instance>-backends` ([`network_name`]),
//! an `internal` network (no route out) with traffic between its containers off, on the first
//! free subnet of `docker.backend.network_range` ([`ensure_network`]). It listens on
//! `0.0.0.0:8080` of its own namespace and the proxy reaches it at its address there. It
//! reaches:
//! - control, at the host's address on that network only, where control serves the runtime
//!   credential's two paths to that subnet alone ([`crate::serve::runtime_listener`]; a session's
//!   engine container, which reaches the host's addresses too, is closed on unanswered);
//! - each docker session's engines: it joins every session's network while that session
//!   lives ([`join_session_network`] when a session's network is made, every existing one when
//!   the container starts; [`leave_session_network`] before a network is removed). Joining two
//!   networks joins nothing to anything else: a container without capabilities forwards no
//!   packet between them.
//!
//! It does not reach the host's loopback (control's admin address, the proxy's, anything bound
//! to 127.0.0.1), so `[shared]` servers on loopback are out of its reach: they must listen on
//! an address the subnet reaches, or the operator chooses `host`. What it can still reach is
//! whatever the host serves on all its addresses (docs/security.md says how to close that).
//!
//! `host`: the host's network namespace, as a process instance has it: it listens on
//! loopback, reaches control's admin address and every engine the same way.
//!
//! # Confinement
//! Memory, CPU and process limits, no capability, `no-new-privileges`, a read-only root
//! filesystem with a tmpfs `/tmp`; it runs as the owner of the data directory and sees of that
//! directory only `sessions/` (embedded sessions' SQLite files, at the same path) — never
//! `admin.token`, `runtime.token`, `control.key` or `registry.db`. It is labelled
//! `stacklab.instance`, `stacklab.role=backend`, `stacklab.pool`.
//!
//! As with a process, the runtime credential (never the admin token) goes through stdin (an
//! attached stream, never the container's environment or command), and the instance exits
//! when stdin closes: Docker
//! closes it when control's attach connection goes (`stdin_once`), so containers die with
//! control however it dies. Those a crash left are removed at the next start
//! ([`remove_stale`]).

use super::config::{BackendNetwork, Subnet};
use super::{
    api_text, force_remove, label_filter, status_code, BackendSpec, LABEL_INSTANCE, LABEL_ROLE,
    LABEL_SESSION, WARM,
};
use bollard::container::LogOutput;
use bollard::models::{
    ContainerCreateBody, ContainerStateStatusEnum, HostConfig, Ipam, IpamConfig,
    NetworkConnectRequest, NetworkCreateRequest, NetworkDisconnectRequest,
};
use bollard::query_parameters::{
    AttachContainerOptions, CreateContainerOptions, InspectContainerOptions, InspectNetworkOptions,
    KillContainerOptions, ListContainersOptions, ListNetworksOptions, StartContainerOptions,
    WaitContainerOptions,
};
use futures_util::StreamExt;
use stacklab_types::Secret;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;

/// [`LABEL_ROLE`] of a backend instance's container.
pub const ROLE_BACKEND: &str = "backend";
/// The pool the instance serves.
pub const LABEL_POOL: &str = "stacklab.pool";
/// Where the binary is in the image (and where `binary` is mounted).
const BINARY_IN_IMAGE: &str = "/usr/local/bin/stacklab";
/// Where an instance listens inside a container of its own network namespace.
const PORT_IN_CONTAINER: u16 = 8080;
/// Prefix of every backend container's name (then `<instance>-<random>`).
const NAME_PREFIX: &str = "stacklab-be-";

/// The backends' network of `instance` (`docker.backend.network = "own"`).
pub fn network_name(instance: &str) -> String {
    format!("stacklab-{instance}-backends")
}

/// Makes the backends' network unless it is there: `internal` (no route out), traffic between
/// its containers off, on the first subnet of `docker.backend.network_range` no network on the
/// engine uses. Returns its subnet: control serves the runtime's paths at its first address
/// (the host's), to it alone.
pub async fn ensure_network(
    api: &bollard::Docker,
    instance: &str,
    network: &BackendNetwork,
) -> Result<Subnet, String> {
    let BackendNetwork::Own(range) = network else {
        return Err(
            "backend containers are on the host's network (docker.backend.network = \"host\")"
                .into(),
        );
    };
    let name = network_name(instance);
    let networks = api
        .list_networks(None::<ListNetworksOptions>)
        .await
        .map_err(|e| format!("cannot list networks: {}", api_text(&e)))?;
    let subnets_of = |n: &bollard::models::Network| -> Vec<String> {
        n.ipam
            .as_ref()
            .and_then(|i| i.config.as_ref())
            .map(|c| c.iter().filter_map(|c| c.subnet.clone()).collect())
            .unwrap_or_default()
    };
    if let Some(found) = networks
        .iter()
        .find(|n| n.name.as_deref() == Some(name.as_str()))
    {
        // Left by this instance's last run with containers still on it, or made meanwhile.
        return subnets_of(found)
            .iter()
            .find_map(|s| Subnet::parse(s))
            .filter(|_| found.internal == Some(true))
            .ok_or_else(|| {
                format!("network {name} exists but is not an internal IPv4 network: remove it (docker network rm {name})")
            });
    }
    // Docker refuses overlapping subnets, whoever made them.
    let used: std::collections::HashSet<String> = networks.iter().flat_map(subnets_of).collect();
    let mut last = String::new();
    for text in range.unused(&used) {
        let subnet = Subnet::parse(&text).expect("a range's subnet parses");
        let request = NetworkCreateRequest {
            name: name.clone(),
            driver: Some("bridge".to_owned()),
            internal: Some(true),
            labels: Some(HashMap::from([
                (LABEL_INSTANCE.to_owned(), instance.to_owned()),
                (LABEL_ROLE.to_owned(), ROLE_BACKEND.to_owned()),
            ])),
            options: Some(HashMap::from([(
                "com.docker.network.bridge.enable_icc".to_owned(),
                "false".to_owned(),
            )])),
            ipam: Some(Ipam {
                driver: Some("default".to_owned()),
                config: Some(vec![IpamConfig {
                    subnet: Some(text.clone()),
                    gateway: Some(subnet.gateway().to_string()),
                    ..Default::default()
                }]),
                options: None,
            }),
            ..Default::default()
        };
        match api.create_network(request).await {
            Ok(_) => return Ok(subnet),
            Err(e) if status_code(&e) == Some(409) => {
                // Made meanwhile by another caller of ours: use that one.
                return Box::pin(ensure_network(api, instance, network)).await;
            }
            // Taken meanwhile by someone else: the next.
            Err(e) => last = api_text(&e),
        }
    }
    Err(format!(
        "cannot create network {name}: no free /{} subnet left in docker.backend.network_range {}{}",
        range.prefix,
        range.range(),
        if last.is_empty() { String::new() } else { format!(" (the engine said: {last})") }
    ))
}

/// Backend containers of `instance` (created or running).
async fn backend_containers(api: &bollard::Docker, instance: &str) -> Result<Vec<String>, String> {
    let filters = label_filter(&[(LABEL_INSTANCE, instance), (LABEL_ROLE, ROLE_BACKEND)]);
    let list = api
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .map_err(|e| format!("cannot list backend containers: {}", api_text(&e)))?;
    Ok(list
        .into_iter()
        .filter(|c| {
            c.host_config
                .as_ref()
                .and_then(|h| h.network_mode.as_deref())
                .is_some_and(|m| m != "host")
        })
        .filter_map(|c| c.id)
        .collect())
}

/// Connects `container` to `network`. Already being on it is fine, and so is either being gone
/// meanwhile (a drill killed the container, the session ended).
async fn join(api: &bollard::Docker, network: &str, container: &str) -> Result<(), String> {
    let request = NetworkConnectRequest {
        container: Some(container.to_owned()),
        ..Default::default()
    };
    let Err(e) = api.connect_network(network, request).await else {
        return Ok(());
    };
    let there = api
        .inspect_container(container, None::<InspectContainerOptions>)
        .await
        .is_ok()
        && api
            .inspect_network(network, None::<InspectNetworkOptions>)
            .await
            .is_ok();
    if !there || api_text(&e).contains("already exists") {
        return Ok(());
    }
    Err(format!(
        "cannot join backend container {container} to {network}: {}",
        api_text(&e)
    ))
}

/// Joins every backend container of `instance` on its own network to a session's network
/// (just made or found), so its instances reach that session's engines. A container that
/// starts later joins it itself ([`start`] joins every session network there is): between the
/// two, none is missed.
pub async fn join_session_network(
    api: &bollard::Docker,
    instance: &str,
    network: &str,
) -> Result<(), String> {
    for c in backend_containers(api, instance).await? {
        join(api, network, &c).await?;
    }
    Ok(())
}

/// Takes every backend container off a session's network before it is removed (Docker
/// refuses to remove a network with endpoints on it).
pub async fn leave_session_network(api: &bollard::Docker, network: &str) {
    let Ok(found) = api
        .inspect_network(network, None::<InspectNetworkOptions>)
        .await
    else {
        return;
    };
    for (id, c) in found.containers.unwrap_or_default() {
        if c.name
            .as_deref()
            .is_some_and(|n| n.starts_with(NAME_PREFIX))
        {
            let _ = api
                .disconnect_network(
                    network,
                    NetworkDisconnectRequest {
                        container: Some(id),
                        force: Some(true),
                    },
                )
                .await;
        }
    }
}

/// Session networks of `instance` there are now (not the warm pool's).
async fn session_networks(api: &bollard::Docker, instance: &str) -> Result<Vec<String>, String> {
    let filters = HashMap::from([(
        "label".to_owned(),
        vec![
            format!("{LABEL_INSTANCE}={instance}"),
            LABEL_SESSION.to_owned(),
        ],
    )]);
    let list = api
        .list_networks(Some(ListNetworksOptions {
            filters: Some(filters),
        }))
        .await
        .map_err(|e| format!("cannot list networks: {}", api_text(&e)))?;
    Ok(list
        .into_iter()
        .filter(|n| {
            n.labels
                .as_ref()
                .and_then(|l| l.get(LABEL_SESSION))
                .is_some_and(|s| s != WARM)
        })
        .filter_map(|n| n.name)
        .collect())
}

/// What a backend container needs to know.
#[derive(Debug)]
pub struct Launch<'a> {
    pub spec: &'a BackendSpec,
    /// `docker.instance`: labels the container, so leftovers are this instance's only.
    pub instance: &'a str,
    pub pool: &'a str,
    /// The runtime it runs (the pool's name, or the runtime of a session's drill pool).
    pub runtime: &'a str,
    pub admin_url: &'a str,
    /// The runtime credential ([`crate::Caller::Runtime`]).
    pub token: &'a Secret,
    pub data_dir: &'a Path,
    pub config_file: Option<&'a Path>,
    pub ready_timeout: Duration,
}

impl Launch<'_> {
    fn own_network(&self) -> bool {
        self.spec.network != BackendNetwork::Host
    }
}

/// A started backend container.
#[derive(Debug)]
pub struct Started {
    /// The container's name (`stacklab-be-<instance>-<random>`).
    pub name: String,
    /// Where it listens: `127.0.0.1:PORT` on the host's network, else its address on its own.
    pub addr: String,
    /// Its main process, as the host sees it.
    pub pid: u32,
    /// Send to stop it (SIGKILL); dropping it does the same.
    pub stop: oneshot::Sender<()>,
    /// Fires once it has exited and been removed; carries how it ended.
    pub exited: oneshot::Receiver<String>,
}

/// The uid:gid owning `dir` (the container runs as them, so it can use the files).
fn owner_of(dir: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(dir).ok()?;
    Some(format!("{}:{}", m.uid(), m.gid()))
}

/// Creates, attaches to and starts a backend container, hands it the token, and waits for the
/// address it prints. Everything made is removed again when a step fails.
pub async fn start(api: &bollard::Docker, l: &Launch<'_>) -> Result<Started, String> {
    let name = format!("{NAME_PREFIX}{}-{:08x}", l.instance, rand::random::<u32>());
    let data_dir = std::path::absolute(l.data_dir)
        .map_err(|e| format!("cannot resolve the data directory: {e}"))?;
    let sessions = data_dir.join("sessions");
    std::fs::create_dir_all(&sessions)
        .map_err(|e| format!("cannot make {}: {e}", sessions.display()))?;
    // Only the sessions' SQLite files: the rest of the data directory holds control's secrets.
    let mut binds = vec![format!("{0}:{0}:rw", sessions.display())];
    // The Rust runtime is this binary's `backend` (the image's, or ours mounted over it);
    // another runtime's image starts it with its own entrypoint.
    let (image, entrypoint, mut cmd) = if l.runtime == "rust" {
        if let Some(binary) = &l.spec.binary {
            binds.push(format!("{}:{BINARY_IN_IMAGE}:ro", binary.display()));
        }
        (
            l.spec.image.clone(),
            Some(vec![BINARY_IN_IMAGE.to_owned()]),
            vec!["backend".to_owned()],
        )
    } else {
        let image = l.spec.runtime_images.get(l.runtime).ok_or_else(|| {
            format!(
                "no image for the {} runtime: name one in [docker.backend] runtime_images",
                l.runtime
            )
        })?;
        (image.clone(), None, Vec::new())
    };
    let listen = if l.own_network() {
        // Its own network namespace: any address of it, at a port of its own.
        format!("0.0.0.0:{PORT_IN_CONTAINER}")
    } else {
        "127.0.0.1:0".to_owned()
    };
    cmd.extend([
        "--addr".into(),
        listen,
        "--control-url".into(),
        l.admin_url.to_owned(),
        "--token-stdin".into(),
    ]);
    if let Some(file) = l.config_file {
        let file: PathBuf = std::path::absolute(file)
            .map_err(|e| format!("cannot resolve the config file: {e}"))?;
        binds.push(format!("{0}:{0}:ro", file.display()));
        cmd.push("--config".into());
        cmd.push(file.display().to_string());
    }
    let labels = HashMap::from([
        (LABEL_INSTANCE.to_owned(), l.instance.to_owned()),
        (LABEL_ROLE.to_owned(), ROLE_BACKEND.to_owned()),
        (LABEL_POOL.to_owned(), l.pool.to_owned()),
    ]);
    let body = ContainerCreateBody {
        image: Some(image.clone()),
        entrypoint,
        cmd: Some(cmd),
        user: owner_of(&sessions),
        labels: Some(labels),
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        open_stdin: Some(true),
        stdin_once: Some(true),
        tty: Some(false),
        env: Some(vec![format!(
            "STACKLAB_LOG={}",
            std::env::var("STACKLAB_LOG").unwrap_or_else(|_| "info".into())
        )]),
        host_config: Some(HostConfig {
            network_mode: Some(if l.own_network() {
                network_name(l.instance)
            } else {
                "host".into()
            }),
            binds: Some(binds),
            readonly_rootfs: Some(true),
            tmpfs: Some(HashMap::from([(
                "/tmp".to_owned(),
                "size=64m,mode=1777".to_owned(),
            )])),
            memory: Some(l.spec.memory_bytes),
            memory_swap: Some(l.spec.memory_bytes),
            nano_cpus: Some(l.spec.nano_cpus),
            pids_limit: Some(l.spec.pids),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges".into()]),
            privileged: Some(false),
            init: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    };
    api.create_container(
        Some(CreateContainerOptions {
            name: Some(name.clone()),
            ..Default::default()
        }),
        body,
    )
    .await
    .map_err(|e| {
        format!(
            "cannot create the backend container from {}: {}",
            image,
            api_text(&e)
        )
    })?;
    match join_and_start(api, &name, l).await {
        Ok(started) => Ok(started),
        Err(e) => {
            remove(api, &name).await;
            Err(e)
        }
    }
}

/// Joins the container to every session network there is (those made from now on join it
/// themselves: [`join_session_network`]), then starts it.
async fn join_and_start(
    api: &bollard::Docker,
    name: &str,
    l: &Launch<'_>,
) -> Result<Started, String> {
    if l.own_network() {
        for network in session_networks(api, l.instance).await? {
            join(api, &network, name).await?;
        }
    }
    attach_and_start(api, name, l).await
}

async fn attach_and_start(
    api: &bollard::Docker,
    name: &str,
    l: &Launch<'_>,
) -> Result<Started, String> {
    let attached = api
        .attach_container(
            name,
            Some(AttachContainerOptions {
                stdin: true,
                stdout: true,
                stderr: true,
                stream: true,
                ..Default::default()
            }),
        )
        .await
        .map_err(|e| format!("cannot attach to the backend container: {}", api_text(&e)))?;
    let mut output = attached.output;
    let mut input = attached.input;
    api.start_container(name, None::<StartContainerOptions>)
        .await
        .map_err(|e| format!("cannot start the backend container: {}", api_text(&e)))?;
    input
        .write_all(format!("{}\n", l.token.expose()).as_bytes())
        .await
        .map_err(|e| format!("cannot hand the token to the backend container: {e}"))?;
    input
        .flush()
        .await
        .map_err(|e| format!("cannot hand the token to the backend container: {e}"))?;

    // Its first stdout line is its address; stderr (its log) is passed on to ours.
    let mut line = String::new();
    let read_addr = async {
        while let Some(chunk) = output.next().await {
            match chunk {
                Ok(LogOutput::StdOut { message }) => {
                    line.push_str(&String::from_utf8_lossy(&message));
                    if line.contains('\n') {
                        return Ok(());
                    }
                }
                Ok(LogOutput::StdErr { message }) => {
                    eprint!("{}", String::from_utf8_lossy(&message));
                }
                Ok(_) => {}
                Err(e) => return Err(format!("the backend container's output broke: {e}")),
            }
        }
        Err("the backend container exited before it listened".to_owned())
    };
    match tokio::time::timeout(l.ready_timeout, read_addr).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            return Err(format!(
                "the backend container did not listen within {:?}",
                l.ready_timeout
            ))
        }
    }
    let first = line.lines().next().unwrap_or_default();
    let said = first
        .strip_prefix("stacklab backend on http://")
        .map(str::to_owned)
        .ok_or_else(|| format!("the backend container said `{first}` instead of its address"))?;
    let inspected = api
        .inspect_container(name, None::<InspectContainerOptions>)
        .await
        .map_err(|e| format!("cannot inspect the backend container: {}", api_text(&e)))?;
    let pid = inspected.state.as_ref().and_then(|s| s.pid).unwrap_or(0) as u32;
    let addr = if l.own_network() {
        // It said `0.0.0.0:PORT`: the host reaches it at its address on the backends' network.
        let port = said
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .ok_or_else(|| format!("the backend container said `{first}`: no port in it"))?;
        let net = network_name(l.instance);
        let ip = inspected
            .network_settings
            .and_then(|n| n.networks)
            .and_then(|mut n| n.remove(&net))
            .and_then(|e| e.ip_address)
            .filter(|ip| !ip.is_empty())
            .ok_or_else(|| format!("the backend container has no address on {net}"))?;
        format!("{ip}:{port}")
    } else {
        said
    };

    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (exited_tx, exited_rx) = oneshot::channel();
    let api = api.clone();
    let owned = name.to_owned();
    tokio::spawn(async move {
        // Keeps the attach (and so its stdin) open for the container's life, and passes its
        // log on.
        let drain = async {
            while let Some(chunk) = output.next().await {
                if let Ok(LogOutput::StdErr { message }) = chunk {
                    eprint!("{}", String::from_utf8_lossy(&message));
                }
            }
        };
        let how = tokio::select! {
            how = wait_exit(&api, &owned) => how,
            _ = stop_rx => {
                let _ = api
                    .kill_container(&owned, None::<KillContainerOptions>)
                    .await;
                "killed".to_owned()
            }
            () = drain => wait_exit(&api, &owned).await,
        };
        drop(input);
        remove(&api, &owned).await;
        let _ = exited_tx.send(how);
    });
    Ok(Started {
        name: name.to_owned(),
        addr,
        pid,
        stop: stop_tx,
        exited: exited_rx,
    })
}

/// Waits until the container is no longer running; says how it ended.
async fn wait_exit(api: &bollard::Docker, name: &str) -> String {
    loop {
        let mut wait = api.wait_container(name, None::<WaitContainerOptions>);
        match wait.next().await {
            Some(Ok(r)) => return format!("exit code {}", r.status_code),
            // Docker reports a non-zero exit as an error of the wait call.
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => {
                return format!("exit code {code}")
            }
            _ => {}
        }
        // The wait broke (a timeout, the engine restarting): look, and wait again.
        match api
            .inspect_container(name, None::<InspectContainerOptions>)
            .await
        {
            Ok(i) => {
                let state = i.state.unwrap_or_default();
                if state.status != Some(ContainerStateStatusEnum::RUNNING) {
                    return format!("exit code {}", state.exit_code.unwrap_or(-1));
                }
            }
            Err(_) => return "gone".to_owned(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn remove(api: &bollard::Docker, name: &str) {
    let _ = force_remove(api, name).await;
}

/// Removes backend containers of `instance` a previous run left (they stop by themselves
/// when their control goes, but stay listed until removed). Returns how many.
pub async fn remove_stale(api: &bollard::Docker, instance: &str) -> usize {
    let filters = label_filter(&[(LABEL_INSTANCE, instance), (LABEL_ROLE, ROLE_BACKEND)]);
    let Ok(list) = api
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
    else {
        return 0;
    };
    let mut n = 0;
    for c in list {
        if let Some(id) = c.id {
            remove(api, &id).await;
            n += 1;
        }
    }
    remove_network(api, instance).await;
    n
}

/// Removes the backends' network of `instance` (once no container is on it: Docker refuses
/// otherwise, and then it stays for the next start).
pub async fn remove_network(api: &bollard::Docker, instance: &str) {
    let _ = api.remove_network(&network_name(instance)).await;
}
