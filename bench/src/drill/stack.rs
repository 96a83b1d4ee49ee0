//! The processes a drill starts: its folder, config and `stacklab` children (`Stack`, `Proc`).

use super::*;

/// A drill's folder, its config and the `stacklab` processes it started.
pub struct Stack {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub(super) bin: PathBuf,
    pub(super) keep: bool,
    pub(super) procs: Vec<Proc>,
}

/// One `stacklab` process: its stdout lines are kept, stderr goes to `<dir>/<name>.log`.
pub struct Proc {
    pub name: String,
    pub(super) child: tokio::process::Child,
    pub(super) lines: Arc<Mutex<Vec<String>>>,
    pub(super) got_line: Arc<tokio::sync::Notify>,
}

impl Stack {
    /// A fresh folder and a config from the reference one with `edits` applied
    /// (`("key = old", "key = new")` line replacements) and `extra` appended.
    pub fn new(
        o: &Options,
        name: &str,
        edits: &[(&str, &str)],
        extra: &str,
    ) -> anyhow::Result<Stack> {
        let dir = std::env::temp_dir().join(format!("sl-drill-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data"))?;
        let mut text = include_str!("../../../config/stacklab.toml").to_owned();
        let mut edits = edits.to_vec();
        // Every drill: a short report interval, no per-client cap on launches, no plain HTTP.
        edits.extend([
            ("report_interval_ms = 5000", "report_interval_ms = 200"),
            (
                "max_new_per_client_per_minute = 20",
                "max_new_per_client_per_minute = 100000",
            ),
            ("plain_http = \"redirect\"", "plain_http = \"off\""),
        ]);
        for (from, to) in edits {
            if !text.contains(from) {
                bail!("the reference config has no line `{from}`");
            }
            text = text.replacen(from, to, 1);
        }
        text.push_str(extra);
        let config = dir.join("drill.toml");
        std::fs::write(&config, text)?;
        Ok(Stack {
            dir,
            config,
            bin: o.stacklab.clone(),
            keep: o.keep,
            procs: Vec::new(),
        })
    }

    /// Starts `stacklab ARGS` with the drill's environment plus `env`; returns its index.
    pub fn spawn(
        &mut self,
        name: &str,
        args: &[&str],
        env: &[(&str, String)],
    ) -> anyhow::Result<usize> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{name}.log")))?;
        let mut cmd = tokio::process::Command::new(&self.bin);
        cmd.args(args)
            .env("STACKLAB_EDGE_ADDR", "127.0.0.1:0")
            .env("STACKLAB_HTTP_ADDR", "127.0.0.1:0")
            .env("STACKLAB_ADMIN_ADDR", "127.0.0.1:0")
            .env("STACKLAB_ADMIN_TOKEN", TOKEN)
            .env("STACKLAB_DATA_DIR", self.dir.join("data"))
            .env("STACKLAB_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", self.bin.display()))?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let got_line = Arc::new(tokio::sync::Notify::new());
        if let Some(stdout) = child.stdout.take() {
            let (lines, got_line) = (Arc::clone(&lines), Arc::clone(&got_line));
            tokio::spawn(async move {
                let mut r = BufReader::new(stdout).lines();
                while let Ok(Some(l)) = r.next_line().await {
                    lines.lock().unwrap_or_else(|e| e.into_inner()).push(l);
                    got_line.notify_waiters();
                }
            });
        }
        self.procs.push(Proc {
            name: name.to_owned(),
            child,
            lines,
            got_line,
        });
        Ok(self.procs.len() - 1)
    }

    pub fn proc(&mut self, i: usize) -> &mut Proc {
        &mut self.procs[i]
    }

    /// `stacklab up` with `instances` backend instances: (edge, admin).
    pub async fn up(
        &mut self,
        instances: usize,
    ) -> anyhow::Result<(usize, SocketAddr, SocketAddr)> {
        let config = self.config.display().to_string();
        let i = self.spawn(
            "up",
            &["up", "--config", &config],
            &[("STACKLAB_BACKEND_INSTANCES", instances.to_string())],
        )?;
        let edge = self.procs[i]
            .wait_line("stacklab is up: https://localhost:")
            .await?;
        let port: u16 = edge
            .trim_start_matches("stacklab is up: https://localhost:")
            .trim_end_matches('/')
            .parse()
            .context("the edge's port")?;
        let admin = self.procs[i].admin_addr().await?;
        Ok((i, SocketAddr::from(([127, 0, 0, 1], port)), admin))
    }

    /// The proxy's client TLS config (trusting the self-signed certificate it made).
    pub fn edge(&self, addr: SocketAddr) -> anyhow::Result<Edge> {
        let ca = self.dir.join("data/tls/self-signed.crt");
        Ok(Edge {
            addr,
            tls: crate::tls::client_config(&ca, &[b"http/1.1"])?,
            src: None,
        })
    }

    /// Stops every process still running (SIGTERM, then SIGKILL after 15 s).
    pub async fn stop(mut self) {
        for p in &mut self.procs {
            p.stop().await;
        }
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Proc {
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Sends a signal by name (`KILL`, `TERM`, `HUP`) with kill(1).
    pub fn signal(&self, sig: &str) -> anyhow::Result<()> {
        signal(self.pid().context("the process has exited")?, sig)
    }

    /// The first stdout line containing `pat` (waits up to 30 s).
    pub async fn wait_line(&mut self, pat: &str) -> anyhow::Result<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let notified = self.got_line.notified();
            if let Some(l) = self
                .lines
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .find(|l| l.contains(pat))
            {
                return Ok(l.clone());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!("{} exited ({status}) before printing `{pat}`", self.name);
            }
            if Instant::now() > deadline {
                bail!("{} did not print `{pat}` within 30 s", self.name);
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), notified).await;
        }
    }

    /// The admin address from the `admin API on http://ADDR` or `admin on http://ADDR` line.
    pub async fn admin_addr(&mut self) -> anyhow::Result<SocketAddr> {
        let l = self.wait_line("admin").await?;
        let at = l.find("admin").unwrap_or(0);
        let url = l[at..]
            .split_whitespace()
            .find_map(|w| w.strip_prefix("http://"))
            .context("no admin address in the output")?;
        url.trim_end_matches(|c: char| !c.is_ascii_digit())
            .parse()
            .context("the admin address")
    }

    /// Waits for the process to exit, up to `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(limit, self.child.wait())
            .await
            .ok()?
            .ok()
    }

    pub(super) async fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = self.signal("TERM");
        if self.wait_exit(Duration::from_secs(15)).await.is_none() {
            let _ = self.child.kill().await;
        }
    }
}

pub(super) fn signal(pid: u32, sig: &str) -> anyhow::Result<()> {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()?
        .success();
    if !ok {
        bail!("kill -{sig} {pid} failed");
    }
    Ok(())
}

/// A loopback port free at the moment (for a process that must come back on the same one).
pub(super) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
