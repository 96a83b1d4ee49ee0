//! What a backend instance may see of this machine: a config without secrets, and (for
//! process instances) a bubblewrap sandbox that hides the data folder.
//!
//! An instance needs three things from control: the runtime credential (on stdin), the
//! `[backend]` section of the config, and the embedded sessions' SQLite files
//! (`<data_dir>/sessions/`). It must not reach the rest of the data folder — `admin.token`,
//! `runtime.token`, `control.key`, `registry.db` — nor the rest of the config file, which may
//! hold the admin token, the registry's URL and the shared engines' admin passwords.
//!
//! - [`backend_config`] writes `<data_dir>/backend.toml`: the config file's `[log]` and
//!   `[backend]` tables and nothing else. Instances (processes and containers) are given that
//!   file, never the operator's.
//! - [`Sandbox`] runs a process instance under [bubblewrap](https://github.com/containers/bubblewrap)
//!   (Debian's `bubblewrap`), the sandbox Flatpak uses: a mount namespace whose root is the
//!   host's, read-only; the data folder replaced by an empty tmpfs with `sessions/` bound back
//!   read-write; the backend config bound read-only and the operator's config file reading
//!   empty; `/tmp` writable as before; a `/dev` of its own
//!   (no disks), a PID namespace with its own `/proc` (control and other processes cannot be
//!   seen, traced or read through `/proc/PID/root`), no capabilities (so nothing can be
//!   unmounted), a new session (no terminal injection), and death with control.
//!
//! The process keeps control's user: separate users would need the sessions' files shared
//! with a group and the runtimes' toolchains readable by that user, which this machine's
//! layout does not allow (they live under `/root`, mode 0700). Without capabilities and with
//! a read-only root it still cannot write anything but `/tmp` and `sessions/`, but it can read
//! what control's user can read outside the data folder. Containers (`backends.containers`)
//! remain the stronger choice on a public install.
//!
//! Bubblewrap needs namespaces (root, or unprivileged user namespaces). `control.backend_sandbox`
//! is `auto` (the sandbox when a trial run works, else unsandboxed with a warning),
//! `bubblewrap` (refuse to start without it) or `off`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// `control.backend_sandbox`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SandboxMode {
    /// Bubblewrap when a trial run works; otherwise instances run unsandboxed (a warning).
    #[default]
    Auto,
    /// Bubblewrap or control does not start.
    Bubblewrap,
    /// Instances run as plain child processes.
    Off,
}

impl SandboxMode {
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim() {
            "auto" => Some(Self::Auto),
            "bubblewrap" => Some(Self::Bubblewrap),
            "off" => Some(Self::Off),
            _ => None,
        }
    }
}

/// The file instances are given instead of the operator's config.
pub const BACKEND_CONFIG: &str = "backend.toml";

/// An empty file in the data folder, bound over files an instance must not read.
const EMPTY: &str = "empty";

/// The tables of the config file an instance reads: its own section and how to log.
const BACKEND_TABLES: [&str; 2] = ["log", "backend"];

/// Writes `<data_dir>/backend.toml` from `source`'s `[log]` and `[backend]` tables (mode 0644:
/// it holds no secret, and a container's user must read it) and returns its path.
pub fn backend_config(data_dir: &Path, source: &Path) -> Result<PathBuf, String> {
    let text = std::fs::read_to_string(source)
        .map_err(|e| format!("cannot read {}: {e}", source.display()))?;
    let full: toml::Table = text
        .parse()
        .map_err(|e| format!("{} is not TOML: {e}", source.display()))?;
    let kept: toml::Table = full
        .into_iter()
        .filter(|(k, _)| BACKEND_TABLES.contains(&k.as_str()))
        .collect();
    let out = format!(
        "# Written by control from {} at start: the tables backend instances read ({}), nothing\n# else. Edit that file, not this one.\n{}",
        source.display(),
        BACKEND_TABLES.join(", "),
        toml::to_string(&kept).map_err(|e| e.to_string())?
    );
    let path = data_dir.join(BACKEND_CONFIG);
    let tmp = data_dir.join(format!("{BACKEND_CONFIG}.tmp"));
    std::fs::write(&tmp, out)
        .and_then(|()| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))
        })
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    Ok(path)
}

/// How process instances are started.
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// `bwrap` when instances run in the sandbox.
    bwrap: Option<PathBuf>,
    data_dir: PathBuf,
    /// Files bound read-only into the sandbox (the backend config) when they lie in a hidden
    /// folder.
    visible: Vec<PathBuf>,
    /// Files that read empty inside (the operator's config, wherever it is).
    hidden: Vec<PathBuf>,
}

/// How long the trial run may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

impl Sandbox {
    /// Decides per `mode`, with a trial run of the sandbox (`bwrap … -- true`) when it may be
    /// used. `Err` only for `bubblewrap` when the trial fails.
    pub async fn prepare(
        mode: SandboxMode,
        data_dir: &Path,
        visible: Vec<PathBuf>,
        hidden: Vec<PathBuf>,
    ) -> Result<Self, String> {
        let absolute = |p: &Path| {
            std::path::absolute(p).map_err(|e| format!("cannot resolve {}: {e}", p.display()))
        };
        let mut sandbox = Self {
            bwrap: None,
            data_dir: absolute(data_dir)?,
            visible: visible
                .iter()
                .map(|p| absolute(p))
                .collect::<Result<_, _>>()?,
            hidden: hidden
                .iter()
                .map(|p| absolute(p))
                .collect::<Result<_, _>>()?,
        };
        if mode == SandboxMode::Off {
            return Ok(sandbox);
        }
        // What hidden files show (a device node such as /dev/null would not open on the
        // sandbox's `nodev` binds).
        std::fs::write(sandbox.data_dir.join(EMPTY), "")
            .map_err(|e| format!("cannot write {EMPTY} in the data dir: {e}"))?;
        let bwrap = PathBuf::from("bwrap");
        let trial = {
            let mut cmd = sandbox.wrap(&bwrap, Path::new("true"));
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .kill_on_drop(true);
            match tokio::time::timeout(PROBE_TIMEOUT, cmd.output()).await {
                Err(_) => Err(format!("a trial run took over {PROBE_TIMEOUT:?}")),
                Ok(Err(e)) => Err(format!(
                    "cannot run bwrap ({e}): install Debian's `bubblewrap`"
                )),
                Ok(Ok(out)) if out.status.success() => Ok(()),
                Ok(Ok(out)) => Err(format!(
                    "a trial run failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                )),
            }
        };
        match (trial, mode) {
            (Ok(()), _) => {
                tracing::info!("process instances run in a bubblewrap sandbox (the data folder hidden but for sessions/)");
                sandbox.bwrap = Some(bwrap);
                Ok(sandbox)
            }
            (Err(why), SandboxMode::Bubblewrap) => {
                Err(format!("control.backend_sandbox is `bubblewrap` but {why}"))
            }
            (Err(why), _) => {
                tracing::warn!(%why, "process instances run unsandboxed: they could read the data folder (control.backend_sandbox = \"auto\")");
                Ok(sandbox)
            }
        }
    }

    /// Whether process instances run in the sandbox.
    pub fn active(&self) -> bool {
        self.bwrap.is_some()
    }

    /// A command that runs `program` in the sandbox (or as it is, when the sandbox is off);
    /// the caller adds `program`'s arguments.
    pub fn command(&self, program: &Path) -> tokio::process::Command {
        match &self.bwrap {
            Some(bwrap) => self.wrap(bwrap, program),
            None => tokio::process::Command::new(program),
        }
    }

    fn wrap(&self, bwrap: &Path, program: &Path) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(bwrap);
        let sessions = self.data_dir.join("sessions");
        cmd.args(["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"])
            // /tmp stays the host's and writable (runtimes write there, and a checkout or
            // target folder may live there); the data folder, wherever it is, is mounted over.
            .args(["--bind", "/tmp", "/tmp"])
            .arg("--tmpfs")
            .arg(&self.data_dir)
            .arg("--bind")
            .args([&sessions, &sessions]);
        for file in &self.visible {
            cmd.arg("--ro-bind").args([file, file]);
        }
        let empty = self.data_dir.join(EMPTY);
        for file in &self.hidden {
            cmd.arg("--ro-bind").arg(&empty).arg(file);
        }
        cmd.args([
            "--unshare-pid",
            "--unshare-ipc",
            "--die-with-parent",
            "--new-session",
            "--cap-drop",
            "ALL",
            "--",
        ])
        .arg(program);
        cmd
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backend_config_keeps_log_and_backend_only() {
        let dir = std::env::temp_dir().join(format!("stacklab-sandbox-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let source = dir.join("stacklab.toml");
        std::fs::write(
            &source,
            "data_dir = \"x\"\n[admin]\ntoken = \"admin-secret\"\n[control]\nregistry_url = \"postgres://u:pw@h/db\"\n[log]\njson = true\n[backend]\nmax_sessions = 7\n",
        )
        .unwrap();
        let out = backend_config(&dir, &source).unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        assert!(
            !text.contains("admin-secret") && !text.contains("pw@"),
            "{text}"
        );
        let t: toml::Table = text.parse().unwrap();
        assert_eq!(t["backend"]["max_sessions"].as_integer(), Some(7));
        assert_eq!(t["log"]["json"].as_bool(), Some(true));
        assert_eq!(t.len(), 2, "{text}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn modes_parse() {
        assert_eq!(SandboxMode::parse("auto"), Some(SandboxMode::Auto));
        assert_eq!(
            SandboxMode::parse("bubblewrap"),
            Some(SandboxMode::Bubblewrap)
        );
        assert_eq!(SandboxMode::parse("off"), Some(SandboxMode::Off));
        assert_eq!(SandboxMode::parse("firejail"), None);
    }
}
