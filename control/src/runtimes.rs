//! The runtimes a session may choose (`backends/<name>/runtime.toml`), whether this install
//! can run each, and their pools: one pool per runtime, named after it.
//!
//! A runtime in `control.warm_runtimes` has its pool started with control and kept. Any other
//! runtime's pool starts on the first session that asks for it (a timed provisioning step the
//! person sees) and stops `control.runtime_idle_stop_ms` after the last session using it has
//! ended, so an install that offers five runtimes does not keep five pools of processes alive
//! for nobody.
//!
//! Whether a runtime can run is its manifest's `check` command (the Rust runtime is this
//! binary and needs none). A failed check is asked again at most every [`RECHECK`], so
//! installing a runtime's dependencies while control runs makes it available without a
//! restart.

use stacklab_types::runtime::Manifest;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A failed check is run again after this.
pub const RECHECK: Duration = Duration::from_secs(10);
/// A check command that takes longer than this has failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(20);
/// The Rust runtime's manifest, built in so the binary alone serves sessions anywhere.
const RUST_MANIFEST: &str = include_str!("../../backends/rust/runtime.toml");

/// Environment variables a child of control never inherits (they may hold secrets).
pub const SECRET_ENV: &[&str] = &[
    "STACKLAB_ADMIN_TOKEN",
    "STACKLAB_RUNTIME_TOKEN",
    "STACKLAB_TEST_POSTGRES_URL",
    "STACKLAB_TEST_MYSQL_URL",
    "STACKLAB_TEST_REDIS_URL",
    "STACKLAB_TEST_MONGO_URL",
];

#[derive(Debug)]
pub struct Runtimes {
    list: Vec<Runtime>,
    /// What `{stacklab}` in a manifest stands for.
    stacklab: PathBuf,
}

#[derive(Debug)]
pub struct Runtime {
    pub manifest: Manifest,
    /// Started with control and never stopped for being idle.
    pub warm: bool,
    checked: Mutex<Option<(Instant, Result<(), String>)>>,
    /// Serializes starting and stopping this runtime's pool.
    pub lifecycle: tokio::sync::Mutex<()>,
    /// When a live session last used this runtime (control's clock, ms): the idle stop
    /// counts from here.
    pub last_used_ms: AtomicU64,
}

impl Runtimes {
    /// The runtimes under `dir` (plus the built-in Rust one when `dir` has none); `warm` must
    /// name runtimes found.
    pub fn load(dir: &Path, warm: &[String], stacklab: PathBuf) -> Result<Self, String> {
        let mut manifests = if dir.is_dir() {
            Manifest::discover(dir).map_err(|e| e.to_string())?
        } else {
            Vec::new()
        };
        if !manifests.iter().any(|m| m.name == "rust") {
            let rust = Manifest::parse(RUST_MANIFEST, &dir.join("rust"))
                .map_err(|e| format!("the built-in Rust manifest: {e}"))?;
            manifests.insert(0, rust);
        }
        for w in warm {
            if !manifests.iter().any(|m| &m.name == w) {
                return Err(format!(
                    "control.warm_runtimes names `{w}`, but {} has no {w}/runtime.toml (runtimes here: {})",
                    dir.display(),
                    manifests.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", ")
                ));
            }
        }
        for m in &manifests {
            for key in m.unsupported.keys() {
                crate::choices::check_unsupported_key(key).map_err(|e| {
                    format!(
                        "{}/{}: {e}",
                        m.dir.display(),
                        stacklab_types::runtime::MANIFEST_FILE
                    )
                })?;
            }
        }
        // Rust first (the default), then by name.
        manifests.sort_by_key(|m| (m.name != "rust", m.name.clone()));
        Ok(Runtimes {
            list: manifests
                .into_iter()
                .map(|manifest| Runtime {
                    warm: warm.contains(&manifest.name),
                    manifest,
                    checked: Mutex::new(None),
                    lifecycle: tokio::sync::Mutex::new(()),
                    last_used_ms: AtomicU64::new(0),
                })
                .collect(),
            stacklab,
        })
    }

    pub fn all(&self) -> &[Runtime] {
        &self.list
    }

    pub fn get(&self, name: &str) -> Option<&Runtime> {
        self.list.iter().find(|r| r.manifest.name == name)
    }

    pub fn is_runtime_pool(&self, pool: &str) -> bool {
        self.get(pool).is_some()
    }

    pub fn names(&self) -> Vec<&str> {
        self.list.iter().map(|r| r.manifest.name.as_str()).collect()
    }

    /// The command that starts one instance of `runtime`, before the contract's arguments.
    pub fn start_argv(&self, runtime: &Runtime) -> Vec<String> {
        runtime.manifest.start_argv(&self.stacklab)
    }

    /// Whether `runtime` can run here; the reason (what to install) when not.
    pub async fn available(&self, runtime: &Runtime) -> Result<(), String> {
        if let Some((at, result)) = runtime
            .checked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            if result.is_ok() || at.elapsed() < RECHECK {
                return result.clone();
            }
        }
        let result = match runtime.manifest.check_argv(&self.stacklab) {
            None => Ok(()),
            Some(argv) => run_check(&argv).await,
        };
        if let Err(why) = &result {
            tracing::warn!(runtime = %runtime.manifest.name, %why, "runtime not available");
        }
        *runtime.checked.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now(), result.clone()));
        result
    }

    /// Each runtime with whether it is available (for `GET /api/options`).
    pub async fn offers(&self) -> Vec<(&Manifest, Result<(), String>)> {
        let mut out = Vec::new();
        for r in &self.list {
            out.push((&r.manifest, self.available(r).await));
        }
        out
    }
}

/// Removes the variables of [`SECRET_ENV`] from a child's environment.
pub fn scrub_env(cmd: &mut tokio::process::Command) {
    for v in SECRET_ENV {
        cmd.env_remove(v);
    }
}

/// Runs a manifest's check: exit 0 is available; otherwise its last line (stderr, else
/// stdout) is the reason.
async fn run_check(argv: &[String]) -> Result<(), String> {
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    scrub_env(&mut cmd);
    let out = match tokio::time::timeout(CHECK_TIMEOUT, cmd.output()).await {
        Err(_) => {
            return Err(format!(
                "`{}` did not finish within {CHECK_TIMEOUT:?}",
                argv[0]
            ))
        }
        Ok(Err(e)) => return Err(format!("cannot run `{}`: {e}", argv[0])),
        Ok(Ok(out)) => out,
    };
    Manifest::check_outcome(argv, &out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(manifests: &[(&str, &str)]) -> PathBuf {
        let n: u64 = rand::random();
        let root = std::env::temp_dir().join(format!("stacklab-runtimes-{n:x}"));
        for (name, text) in manifests {
            std::fs::create_dir_all(root.join(name)).unwrap();
            std::fs::write(root.join(name).join("runtime.toml"), text).unwrap();
        }
        root
    }

    #[tokio::test]
    async fn rust_is_built_in_and_checks_say_why_a_runtime_cannot_run() {
        let root = dir_with(&[
            ("py", "name = \"py\"\nlabel = \"Py\"\ndescription = \"d\"\ncheck = [\"sh\", \"-c\", \"echo noise; echo 'run setup.sh first' >&2; exit 3\"]\nstart = [\"./bin/x\"]\n"),
            ("ok", "name = \"ok\"\nlabel = \"Ok\"\ndescription = \"d\"\ncheck = [\"true\"]\nstart = [\"./bin/x\"]\n"),
        ]);
        let rts = Runtimes::load(&root, &["rust".into()], PathBuf::from("/bin/stacklab")).unwrap();
        assert_eq!(rts.names(), ["rust", "ok", "py"]);
        assert!(rts.get("rust").unwrap().warm);
        assert_eq!(
            rts.start_argv(rts.get("rust").unwrap()),
            ["/bin/stacklab", "backend"]
        );
        assert_eq!(rts.available(rts.get("rust").unwrap()).await, Ok(()));
        assert_eq!(rts.available(rts.get("ok").unwrap()).await, Ok(()));
        assert_eq!(
            rts.available(rts.get("py").unwrap()).await,
            Err("run setup.sh first".into())
        );
        let e = Runtimes::load(&root, &["java".into()], PathBuf::new()).unwrap_err();
        assert!(e.contains("java") && e.contains("rust, ok, py"), "{e}");
        let _ = std::fs::remove_dir_all(root);
    }
}
