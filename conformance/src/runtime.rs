//! The runtimes under test: every manifest under `backends/`, narrowed by `STACKLAB_RUNTIMES`.
//!
//! A runtime is tested when its folder has a `runtime.toml` and its `check` command succeeds.
//! A failing check is a failure under CI and a loud skip elsewhere; `STACKLAB_RUNTIMES=rust,python`
//! narrows the list on purpose (what it leaves out is skipped, saying so, even under CI).
//!
//! `{stacklab}` in a manifest is the `stacklab` binary of this build (`target/debug/stacklab`
//! next to the test executable, as `assert_cmd`'s `cargo_bin` finds it). `cargo nextest run
//! --workspace` builds it; with `-p stacklab-conformance` alone, build it first.

use stacklab_types::runtime::Manifest;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Pairs a runtime with another instance of itself in the cross-runtime tests when fewer than
/// two runtimes are available: a check of those tests themselves, never a substitute for a
/// second runtime (set it by hand, not in CI).
pub const SELF_PAIRS_VAR: &str = "STACKLAB_CONFORMANCE_SELF_PAIRS";

/// Narrows the runtimes tested, e.g. `rust,python`.
pub const RUNTIMES_VAR: &str = "STACKLAB_RUNTIMES";

/// One runtime found in `backends/`.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub manifest: Manifest,
}

impl Runtime {
    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    /// The command that starts an instance (before the contract's arguments).
    pub fn start_argv(&self) -> Vec<String> {
        self.manifest
            .start_argv(&stacklab_for(&self.manifest.start))
    }

    /// Whether the runtime offers database `db`; when its manifest's `[unsupported]` table says
    /// it does not, that is said aloud (the pair is skipped visibly, even under CI: the runtime
    /// declares it, and `/api/options` tells people the same reason).
    pub fn offers(&self, db: crate::engines::Db) -> bool {
        match self.manifest.unsupported("database", db.value()) {
            None => true,
            Some(why) => {
                eprintln!(
                    "runtime `{}` NOT TESTED with database {}: its runtime.toml marks it unsupported: {why}",
                    self.name(),
                    db.value()
                );
                false
            }
        }
    }

    /// Runs the manifest's `check`; `Err` carries what it said.
    fn check(&self) -> Result<(), String> {
        let Some(argv) = self
            .manifest
            .check_argv(&stacklab_for(&self.manifest.check))
        else {
            return Ok(());
        };
        let out = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("cannot run `{}`: {e}", argv.join(" ")))?;
        Manifest::check_outcome(&argv, &out)
    }
}

/// The folder of runtimes: `backends/` of this workspace.
pub fn backends_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate sits in the workspace")
        .join("backends")
}

/// Every manifest under `backends/`, by name (whatever its check says).
pub fn manifests() -> &'static [Manifest] {
    static FOUND: OnceLock<Vec<Manifest>> = OnceLock::new();
    FOUND.get_or_init(|| {
        Manifest::discover(&backends_dir())
            .unwrap_or_else(|e| panic!("the runtimes' manifests cannot be read: {e}"))
    })
}

fn narrowed_out(name: &str) -> bool {
    match std::env::var(RUNTIMES_VAR) {
        Ok(list) if !list.trim().is_empty() => !list.split(',').any(|n| n.trim() == name),
        _ => false,
    }
}

/// The runtime `name`, ready to start; `None` (said aloud) when it is narrowed out by
/// `STACKLAB_RUNTIMES`, or its check fails outside CI. Panics under CI when its check fails,
/// and whenever `backends/<name>/runtime.toml` is missing (the test list names it).
pub fn runtime(name: &str) -> Option<Runtime> {
    if narrowed_out(name) {
        eprintln!("runtime `{name}` not tested: {RUNTIMES_VAR} leaves it out");
        return None;
    }
    let manifest = manifests()
        .iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| {
            panic!(
                "the suite lists runtime `{name}` but {} has no {name}/runtime.toml",
                backends_dir().display()
            )
        })
        .clone();
    let rt = Runtime { manifest };
    match rt.check() {
        Ok(()) => Some(rt),
        Err(why) if crate::required() => panic!(
            "runtime `{name}` is not available, and STACKLAB_REQUIRE_SERVICES=1: its check says: {why}"
        ),
        Err(why) => {
            eprintln!("runtime `{name}` NOT TESTED (outside CI): its check says: {why}");
            None
        }
    }
}

/// Every runtime available for testing (in `backends/`, not narrowed out, its check passing).
pub fn available() -> Vec<Runtime> {
    manifests()
        .iter()
        .filter_map(|m| runtime(&m.name))
        .collect()
}

/// The ordered pairs (writer, reader) of distinct available runtimes the cross-runtime tests
/// run. Fewer than two runtimes fail under CI and skip aloud elsewhere, unless
/// [`SELF_PAIRS_VAR`] is set, which pairs each runtime with a second instance of itself.
pub fn pairs() -> Vec<(Runtime, Runtime)> {
    let all = available();
    let mut pairs = Vec::new();
    for a in &all {
        for b in &all {
            if a.name() != b.name() {
                pairs.push((a.clone(), b.clone()));
            }
        }
    }
    if pairs.is_empty() && std::env::var(SELF_PAIRS_VAR).as_deref() == Ok("1") {
        eprintln!("{SELF_PAIRS_VAR}=1: each runtime is paired with a second instance of itself");
        return all.iter().map(|a| (a.clone(), a.clone())).collect();
    }
    if pairs.is_empty() {
        let names: Vec<&str> = all.iter().map(Runtime::name).collect();
        let msg = format!(
            "the cross-runtime tests need two runtimes; available: {names:?} \
             (see `{RUNTIMES_VAR}` and each runtime's check)"
        );
        if crate::required() {
            panic!("{msg}, and STACKLAB_REQUIRE_SERVICES=1");
        }
        eprintln!("NOT TESTED (outside CI): {msg}");
    }
    pairs
}

/// The `stacklab` binary, when `argv` names it.
fn stacklab_for(argv: &[String]) -> PathBuf {
    if argv.iter().any(|a| a == "{stacklab}") {
        stacklab_bin()
    } else {
        PathBuf::new()
    }
}

/// `target/<profile>/stacklab`, next to the test executable (`target/<profile>/deps/it-…`).
pub fn stacklab_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let mut dir = exe.parent().expect("a folder").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let bin = dir.join(format!("stacklab{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} is missing: the Rust runtime is the `stacklab` binary; build it with \
         `cargo build -p stacklab --bin stacklab` (`cargo nextest run --workspace` builds it)",
        bin.display()
    );
    bin
}
