//! Backend instances as Docker containers, next to the child-process ones: the same
//! `stacklab backend --addr 127.0.0.1:0 --control-url … --token-stdin`, run from
//! `[docker.backend]`'s image (built by `config/images/build.sh backend` from the project's own
//! binary over the same Debian base as the engines), so a pool can mix processes and
//! containers and the failover drill kills either.
//!
//! The container shares the host's network namespace (`network_mode = host`): it listens on
//! loopback like a process instance, reaches control's admin address (with the runtime
//! credential, which reads descriptors and nothing else) and the sessions' engines (each at its
//! address on its session's internal network) the same way, and the proxy reaches it at the
//! address it prints. An instance serves every session of its pool, so a network of its own
//! would have to join every session's network and would join them to each other; the host's
//! gives it no more than a process instance has. It has memory, CPU and process limits, no
//! capability, `no-new-privileges`, a read-only root filesystem with a tmpfs `/tmp`, runs as
//! the owner of the data directory, and sees of that directory only `sessions/` (embedded
//! sessions' SQLite files, at the same path) — never `admin.token`, `runtime.token`,
//! `control.key` or `registry.db`. It is labelled `stacklab.instance`, `stacklab.role=backend`,
//! `stacklab.pool`.
//!
//! As with a process, the runtime credential (never the admin token) goes through stdin (an
//! attached stream, never the container's environment or command), and the instance exits
//! when stdin closes: Docker
//! closes it when control's attach connection goes (`stdin_once`), so containers die with
//! control however it dies. Those a crash left are removed at the next start
//! ([`remove_stale`]).

use super::{api_text, force_remove, BackendSpec, LABEL_INSTANCE, LABEL_ROLE};
use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, ContainerStateStatusEnum, HostConfig};
use bollard::query_parameters::{
    AttachContainerOptions, CreateContainerOptions, InspectContainerOptions, KillContainerOptions,
    ListContainersOptions, StartContainerOptions, WaitContainerOptions,
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

/// A started backend container.
#[derive(Debug)]
pub struct Started {
    /// The container's name (`stacklab-be-<instance>-<random>`).
    pub name: String,
    /// Where it listens (`127.0.0.1:PORT`).
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
    let name = format!("stacklab-be-{}-{:08x}", l.instance, rand::random::<u32>());
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
    cmd.extend([
        "--addr".into(),
        "127.0.0.1:0".into(),
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
            network_mode: Some("host".into()),
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
    match attach_and_start(api, &name, l).await {
        Ok(started) => Ok(started),
        Err(e) => {
            remove(api, &name).await;
            Err(e)
        }
    }
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
    let addr = first
        .strip_prefix("stacklab backend on http://")
        .map(str::to_owned)
        .ok_or_else(|| format!("the backend container said `{first}` instead of its address"))?;
    let pid = api
        .inspect_container(name, None::<InspectContainerOptions>)
        .await
        .ok()
        .and_then(|i| i.state?.pid)
        .unwrap_or(0) as u32;

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
    let filters = HashMap::from([(
        "label".to_owned(),
        vec![
            format!("{LABEL_INSTANCE}={instance}"),
            format!("{LABEL_ROLE}={ROLE_BACKEND}"),
        ],
    )]);
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
    n
}
