//! One running instance of a runtime, started as control starts it (the launch contract):
//! `<start...> --addr 127.0.0.1:0 --control-url URL --token-stdin --config FILE`, the runtime
//! credential as the first line of stdin, the address read back from the first stdout line.
//!
//! The instance's stdin stays open for as long as the [`Instance`] lives; closing it is how
//! an instance is told to exit. Its stdout (after the first line) and stderr are captured,
//! and printed when a test fails with the instance alive, so a failure shows what the
//! runtime said. Dropping the value kills the process.

use crate::runtime::Runtime;
use stacklab_types::Secret;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};

/// How long an instance may take to print its address (a Python one takes about a second;
/// this allows for a loaded machine).
pub const START_DEADLINE: Duration = Duration::from_secs(30);

/// Output kept per instance, the most recent part.
const MAX_LOG: usize = 64 * 1024;

/// The instance's config file: its `[backend]` section. Tests run with bcrypt's lowest cost
/// (hashing is what a test would otherwise spend its time on).
#[derive(Debug, Clone)]
pub struct Settings {
    pub backend: toml::Table,
}

impl Default for Settings {
    fn default() -> Self {
        let mut backend = toml::Table::new();
        backend.insert("bcrypt_cost".into(), 4.into());
        Settings { backend }
    }
}

impl Settings {
    /// Sets one `[backend]` key.
    pub fn set(mut self, key: &str, value: impl Into<toml::Value>) -> Self {
        self.backend.insert(key.into(), value.into());
        self
    }
}

/// A runtime's instance, running.
pub struct Instance {
    pub runtime: String,
    pub addr: SocketAddr,
    child: Child,
    stdin: Option<ChildStdin>,
    log: Arc<Mutex<String>>,
    config_file: PathBuf,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("runtime", &self.runtime)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Variables a test run has that an instance must not: where the engines are (an instance
/// learns that from its descriptors only) and control's admin token.
fn withheld(var: &str) -> bool {
    var.starts_with("STACKLAB_TEST_") || var == "STACKLAB_ADMIN_TOKEN"
}

impl Instance {
    /// Starts an instance of `runtime` whose descriptors come from `control_url` with
    /// `credential`; panics (with what the instance said) when it does not come up.
    pub async fn start(
        runtime: &Runtime,
        control_url: &str,
        credential: &Secret,
        settings: &Settings,
    ) -> Instance {
        let config_file =
            std::env::temp_dir().join(format!("{}.toml", crate::unique("stacklab-conformance-")));
        let mut text = toml::Table::new();
        text.insert("backend".into(), settings.backend.clone().into());
        std::fs::write(&config_file, toml::to_string(&text).expect("a TOML table"))
            .expect("the instance's config file");
        let argv = runtime.start_argv();
        let mut cmd = tokio::process::Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .args(["--addr", "127.0.0.1:0", "--control-url", control_url])
            .arg("--token-stdin")
            .arg("--config")
            .arg(&config_file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (var, _) in std::env::vars_os() {
            if var.to_str().is_some_and(withheld) {
                cmd.env_remove(var);
            }
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{}`: {e}", argv.join(" ")));
        let mut stdin = child.stdin.take().expect("piped stdin");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr_done = capture(stderr, Arc::clone(&log), "");
        // A runtime that exits before reading its stdin makes this write fail; the first
        // line's absence then says more than the broken pipe would.
        let _ = stdin
            .write_all(format!("{}\n", credential.expose()).as_bytes())
            .await;
        let _ = stdin.flush().await;
        let mut lines = BufReader::new(stdout).lines();
        let first = match tokio::time::timeout(START_DEADLINE, lines.next_line()).await {
            Ok(Ok(Some(line))) => line
                .strip_prefix("stacklab backend on http://")
                .and_then(|a| a.parse::<SocketAddr>().ok())
                .ok_or(format!(
                    "its first line was `{line}`, not `stacklab backend on http://127.0.0.1:PORT`"
                )),
            Ok(_) => Err("it exited before it printed its address".to_owned()),
            Err(_) => Err(format!("it printed no address within {START_DEADLINE:?}")),
        };
        let addr = match first {
            Ok(addr) => addr,
            Err(why) => {
                let _ = child.start_kill();
                let _ = tokio::time::timeout(Duration::from_secs(5), stderr_done).await;
                panic!(
                    "runtime `{}` (`{}`): {why}; it said:\n{}",
                    runtime.name(),
                    argv.join(" "),
                    log.lock().unwrap_or_else(|e| e.into_inner())
                )
            }
        };
        assert!(
            addr.ip().is_loopback(),
            "runtime `{}` listens on {addr}, not on 127.0.0.1 as --addr asked",
            runtime.name()
        );
        capture(lines.into_inner(), Arc::clone(&log), "stdout: ");
        Instance {
            runtime: runtime.name().to_owned(),
            addr,
            child,
            stdin: Some(stdin),
            log,
            config_file,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What the instance has printed so far (stderr, and stdout after its first line).
    pub fn output(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Closes the instance's stdin: the contract's signal to finish in-flight requests and exit.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Sends SIGTERM, the other way an instance is told to exit.
    pub fn terminate(&self) {
        let pid = self.child.id().expect("the instance is running");
        let pid = rustix::process::Pid::from_raw(pid as i32).expect("a real pid");
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
    }

    /// Waits for the instance to exit; panics (with its output) if it has not by `deadline`.
    pub async fn exit_within(&mut self, deadline: Duration) -> ExitStatus {
        match tokio::time::timeout(deadline, self.child.wait()).await {
            Ok(status) => status.expect("the instance's exit status"),
            Err(_) => panic!(
                "runtime `{}` was still running {deadline:?} after it was told to exit; it said:\n{}",
                self.runtime,
                self.output()
            ),
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- runtime `{}` on {} said:\n{}--- end of its output",
                self.runtime,
                self.addr,
                self.output()
            );
        }
        let _ = self.child.start_kill();
        let _ = std::fs::remove_file(&self.config_file);
    }
}

/// Appends `from`'s lines to `log` (keeping the last [`MAX_LOG`] bytes) until it ends.
fn capture(
    from: impl AsyncRead + Unpin + Send + 'static,
    log: Arc<Mutex<String>>,
    tag: &'static str,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(from).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
            log.push_str(tag);
            log.push_str(&line);
            log.push('\n');
            if log.len() > MAX_LOG {
                let mut cut = log.len() - MAX_LOG;
                while !log.is_char_boundary(cut) {
                    cut += 1;
                }
                log.drain(..cut);
            }
        }
    })
}
