//! Zero-downtime upgrade: a new proxy process takes over the running one's listening sockets.
//!
//! Done the way Envoy's hot restart and Pingora's graceful upgrade do it, so that no
//! connection is refused and no request fails while the binary or its config is replaced:
//!
//! 1. The running proxy listens on a Unix socket (`edge.upgrade_socket`, default
//!    `<data_dir>/upgrade.sock`).
//! 2. The new process (`stacklab proxy --config F --upgrade`) connects to it and receives the
//!    listening sockets themselves — edge TCP, edge UDP (HTTP/3), plain HTTP, admin — as file
//!    descriptors (`SCM_RIGHTS`), with a small JSON manifest naming each.
//! 3. The new process gets its route table (it follows control's feed and waits for the
//!    first snapshot), starts accepting on the same sockets, and says `ready`.
//! 4. The old process stops accepting, closes its HTTP/3 endpoint, answers `released`, and
//!    drains: each HTTP/1.1 connection gets `Connection: close` on its next response (so the
//!    client reconnects, to the new process, without a race on an idle connection), HTTP/2
//!    gets GOAWAY; it exits when the last one is done (or `limits.shutdown_grace_ms`).
//! 5. The new process starts HTTP/3 on the UDP socket and listens for its own successor.
//!
//! The TCP listening sockets are never closed: both processes hold them from step 2 until the
//! old one stops accepting in step 4, so connections waiting in the accept queue are accepted
//! by one process or the other and none is refused. HTTP/3 is the exception: a QUIC
//! connection's state lives in the process that made it, so the old process closes its QUIC
//! connections at the handover and clients reconnect (browsers retry over a new connection, or
//! fall back to HTTP/2 for a moment).
//!
//! If the new process fails before `ready` (a bad config, control unreachable), it simply goes
//! away and the old one keeps serving as if nothing happened.

use serde::{Deserialize, Serialize};
use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Interest};
use tokio::net::{UnixListener, UnixStream};

/// Errors of a handover, on either side.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("no running proxy answers on {path} (is `stacklab proxy` running with this config's edge.upgrade_socket?): {source}")]
    Connect { path: PathBuf, source: io::Error },
    #[error("cannot listen for upgrades on {path}: {source}")]
    Listen { path: PathBuf, source: io::Error },
    #[error("the handover failed: {0}")]
    Io(#[from] io::Error),
    #[error("the handover failed: {0}")]
    Protocol(String),
}

/// Descriptors at most in one handover: edge TCP, edge UDP, plain HTTP, admin.
const MAX_FDS: usize = 4;
/// Longest manifest line accepted.
const MAX_MANIFEST: usize = 4096;

/// What the descriptors of a handover are, by their index in the `SCM_RIGHTS` message.
#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    pid: u32,
    edge: usize,
    quic: Option<usize>,
    plain: Option<usize>,
    admin: usize,
}

/// The listening sockets as a new process receives them.
#[derive(Debug)]
pub struct Listeners {
    pub edge: std::net::TcpListener,
    pub quic: Option<std::net::UdpSocket>,
    pub plain: Option<std::net::TcpListener>,
    pub admin: std::net::TcpListener,
}

/// Duplicates of the running server's listening sockets, kept to hand over.
#[derive(Debug)]
pub struct Shareable {
    pub edge: OwnedFd,
    pub quic: Option<OwnedFd>,
    pub plain: Option<OwnedFd>,
    pub admin: OwnedFd,
}

impl Shareable {
    fn manifest_and_fds(&self) -> (Manifest, Vec<BorrowedFd<'_>>) {
        let mut fds = vec![self.edge.as_fd()];
        let quic = self.quic.as_ref().map(|fd| {
            fds.push(fd.as_fd());
            fds.len() - 1
        });
        let plain = self.plain.as_ref().map(|fd| {
            fds.push(fd.as_fd());
            fds.len() - 1
        });
        fds.push(self.admin.as_fd());
        let admin = fds.len() - 1;
        (
            Manifest {
                pid: std::process::id(),
                edge: 0,
                quic,
                plain,
                admin,
            },
            fds,
        )
    }
}

/// The new process's side, between receiving the sockets and the old process letting go.
#[derive(Debug)]
pub struct Taking {
    stream: BufReader<UnixStream>,
    /// The old process, for logs.
    pub old_pid: u32,
}

impl Taking {
    /// Tells the old process we are accepting, and waits until it has stopped accepting and
    /// closed its HTTP/3 endpoint (then the UDP socket is ours alone).
    pub async fn ready(mut self) -> Result<(), UpgradeError> {
        self.stream.get_mut().write_all(b"ready\n").await?;
        let mut line = String::new();
        self.stream.read_line(&mut line).await?;
        if line.trim_end() == "released" {
            Ok(())
        } else {
            Err(UpgradeError::Protocol(format!(
                "the old process answered {:?} instead of `released`",
                line.trim_end()
            )))
        }
    }
}

/// The old process's side once its successor said `ready`.
#[derive(Debug)]
pub struct Handing {
    stream: UnixStream,
    pub new_pid: Option<u32>,
}

impl Handing {
    /// Tells the successor we no longer accept and the UDP socket is free.
    pub async fn released(mut self) {
        if let Err(e) = self.stream.write_all(b"released\n").await {
            tracing::warn!(error = %e, "the successor went away before it heard we let go");
        }
    }
}

/// Connects to the running proxy at `path` and takes its listening sockets.
pub async fn take_over(path: &Path) -> Result<(Listeners, Taking), UpgradeError> {
    let stream = UnixStream::connect(path)
        .await
        .map_err(|source| UpgradeError::Connect {
            path: path.to_owned(),
            source,
        })?;
    let mut data = Vec::new();
    let mut fds: Vec<OwnedFd> = Vec::new();
    // The descriptors ride on the first bytes; the manifest line may take more reads.
    while !data.contains(&b'\n') {
        let mut buf = [0u8; 1024];
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let n = stream
            .async_io(Interest::READABLE, || {
                let mut control = rustix::net::RecvAncillaryBuffer::new(&mut space);
                let msg = rustix::net::recvmsg(
                    &stream,
                    &mut [IoSliceMut::new(&mut buf)],
                    &mut control,
                    rustix::net::RecvFlags::CMSG_CLOEXEC,
                )
                .map_err(io::Error::from)?;
                for m in control.drain() {
                    if let rustix::net::RecvAncillaryMessage::ScmRights(got) = m {
                        fds.extend(got);
                    }
                }
                Ok(msg.bytes)
            })
            .await?;
        if n == 0 {
            return Err(UpgradeError::Protocol(
                "the running proxy closed the connection before handing over".into(),
            ));
        }
        data.extend_from_slice(&buf[..n]);
        if data.len() > MAX_MANIFEST {
            return Err(UpgradeError::Protocol("the manifest is too long".into()));
        }
    }
    let end = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let manifest: Manifest = serde_json::from_slice(&data[..end])
        .map_err(|e| UpgradeError::Protocol(format!("a bad manifest: {e}")))?;
    let mut slots: Vec<Option<OwnedFd>> = fds.into_iter().map(Some).collect();
    let mut take = |i: usize| -> Result<OwnedFd, UpgradeError> {
        slots.get_mut(i).and_then(Option::take).ok_or_else(|| {
            UpgradeError::Protocol(format!("the manifest names descriptor {i}, not received"))
        })
    };
    let tcp = |fd: OwnedFd| -> io::Result<std::net::TcpListener> {
        let l = std::net::TcpListener::from(fd);
        l.set_nonblocking(true)?;
        Ok(l)
    };
    let listeners = Listeners {
        edge: tcp(take(manifest.edge)?)?,
        quic: match manifest.quic {
            Some(i) => {
                let s = std::net::UdpSocket::from(take(i)?);
                s.set_nonblocking(true)?;
                Some(s)
            }
            None => None,
        },
        plain: match manifest.plain {
            Some(i) => Some(tcp(take(i)?)?),
            None => None,
        },
        admin: tcp(take(manifest.admin)?)?,
    };
    // Anything after the manifest line belongs to the conversation that follows.
    let rest = data.split_off(end + 1);
    if !rest.is_empty() {
        return Err(UpgradeError::Protocol(
            "unexpected bytes after the manifest".into(),
        ));
    }
    Ok((
        listeners,
        Taking {
            stream: BufReader::new(stream),
            old_pid: manifest.pid,
        },
    ))
}

/// Binds the upgrade socket at `path`, replacing a stale one (a file left by a process that
/// is gone, or by the process that just handed over to us).
pub fn listen(path: &Path) -> Result<UnixListener, UpgradeError> {
    let err = |source| UpgradeError::Listen {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    // Only the same user may take the sockets over.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    }
    Ok(listener)
}

/// Waits for a successor: hands it the sockets and returns once it says `ready`. A successor
/// that goes away before that is forgotten, and the next one is waited for.
pub async fn wait_for_successor(listener: &UnixListener, sockets: &Shareable) -> Handing {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "upgrade socket: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let new_pid = stream
            .peer_cred()
            .ok()
            .and_then(|c| c.pid())
            .and_then(|p| u32::try_from(p).ok());
        match hand(stream, sockets).await {
            Ok(stream) => {
                tracing::info!(
                    successor = ?new_pid,
                    "the new process accepts on our sockets; we stop accepting and drain"
                );
                return Handing { stream, new_pid };
            }
            Err(e) => {
                tracing::warn!(successor = ?new_pid, error = %e, "an upgrade was abandoned; still serving");
            }
        }
    }
}

async fn hand(stream: UnixStream, sockets: &Shareable) -> Result<UnixStream, UpgradeError> {
    let (manifest, fds) = sockets.manifest_and_fds();
    let mut line = serde_json::to_vec(&manifest)
        .map_err(|e| UpgradeError::Protocol(format!("cannot write the manifest: {e}")))?;
    line.push(b'\n');
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let sent = stream
        .async_io(Interest::WRITABLE, || {
            let mut control = rustix::net::SendAncillaryBuffer::new(&mut space);
            if !control.push(rustix::net::SendAncillaryMessage::ScmRights(&fds)) {
                return Err(io::Error::other("no room for the descriptors"));
            }
            rustix::net::sendmsg(
                &stream,
                &[IoSlice::new(&line)],
                &mut control,
                rustix::net::SendFlags::empty(),
            )
            .map_err(io::Error::from)
        })
        .await?;
    let mut stream = BufReader::new(stream);
    if sent < line.len() {
        stream.get_mut().write_all(&line[sent..]).await?;
    }
    drop(fds);
    let mut answer = String::new();
    stream.read_line(&mut answer).await?;
    match answer.trim_end() {
        "ready" => Ok(stream.into_inner()),
        "" => Err(UpgradeError::Protocol(
            "the new process went away before it was ready".into(),
        )),
        other => Err(UpgradeError::Protocol(format!(
            "the new process said {other:?}"
        ))),
    }
}
