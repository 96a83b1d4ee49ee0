//! A runtime's manifest: `backends/<name>/runtime.toml`, read by control (to offer the runtime,
//! start its instances) and by the conformance suite (to start an instance under test).
//!
//! One file per runtime says what the launcher shows and how to check and start an instance;
//! everything else an instance does is `backends/CONTRACT.md`. Paths in `check` and `start`
//! that begin with `./` are relative to the manifest's folder; `{stacklab}` stands for the
//! `stacklab` binary (the Rust runtime is `stacklab backend`).
//!
//! ```toml
//! name = "python"
//! label = "Python (Flask)"
//! description = "Flask 3 on the waitress WSGI server."
//! check = ["./bin/stacklab-python", "--check"]
//! start = ["./bin/stacklab-python"]
//!
//! # Only where this runtime truly cannot offer a choice: `<field>.<value>` of
//! # POST /api/sessions, and the reason a person reads.
//! [unsupported]
//! "database.mongodb" = "Debian's driver is too old for the MongoDB stand-in"
//! ```
//!
//! An instance is started as `start... --addr 127.0.0.1:0 --control-url URL --token-stdin
//! [--config FILE]`; see the contract for the rest.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The file name of a manifest inside a runtime's folder.
pub const MANIFEST_FILE: &str = "runtime.toml";

/// A manifest as written in `runtime.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The `runtime` value of a session and the name of the runtime's pool.
    pub name: String,
    /// What the launcher shows, e.g. "Python (Flask)".
    pub label: String,
    /// One sentence on what it is.
    pub description: String,
    /// A command that exits 0 when the toolchain and dependencies are there; otherwise what it
    /// printed (its last line on stderr, else stdout) is the reason shown in `/api/options`.
    #[serde(default)]
    pub check: Vec<String>,
    /// The command that starts one instance, before the contract's arguments.
    pub start: Vec<String>,
    /// Choices this runtime cannot serve: `"<field>.<value>"` (a field of `POST /api/sessions`
    /// and one of its values) → why, in words a person reads. `/api/options` shows them on the
    /// runtime and a session asking for one is refused naming the field.
    #[serde(default)]
    pub unsupported: BTreeMap<String, String>,
    /// The folder the manifest was read from (set by [`Manifest::load`]).
    #[serde(skip)]
    pub dir: PathBuf,
}

/// Why a manifest could not be read.
#[derive(Debug)]
pub struct ManifestError(pub String);

impl std::fmt::Display for ManifestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ManifestError {}

impl Manifest {
    /// Reads `dir/runtime.toml`.
    pub fn load(dir: &Path) -> Result<Manifest, ManifestError> {
        let file = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&file)
            .map_err(|e| ManifestError(format!("cannot read {}: {e}", file.display())))?;
        Self::parse(&text, dir).map_err(|e| ManifestError(format!("{}: {}", file.display(), e.0)))
    }

    /// Parses a manifest's text; `dir` is the folder its `./` paths are relative to.
    pub fn parse(text: &str, dir: &Path) -> Result<Manifest, ManifestError> {
        let mut m: Manifest = toml::from_str(text).map_err(|e| ManifestError(e.to_string()))?;
        if m.name.is_empty()
            || !m
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        {
            return Err(ManifestError(format!(
                "name `{}`: use lowercase letters and digits (it names a pool)",
                m.name
            )));
        }
        if m.start.is_empty() {
            return Err(ManifestError(
                "start: give the command that starts an instance".into(),
            ));
        }
        for (key, why) in &m.unsupported {
            let ok = key
                .split_once('.')
                .is_some_and(|(f, v)| !f.is_empty() && !v.is_empty() && !v.contains('.'));
            if !ok || why.trim().is_empty() {
                return Err(ManifestError(format!(
                    "unsupported: `{key}` must be `<field>.<value>` (e.g. \"database.mongodb\") \
                     with the reason a person reads"
                )));
            }
        }
        m.dir = dir.to_path_buf();
        Ok(m)
    }

    /// Every manifest in the folders directly under `root` (e.g. `backends/`), by name. A folder
    /// without a `runtime.toml` is not a runtime; one with a bad manifest is an error.
    pub fn discover(root: &Path) -> Result<Vec<Manifest>, ManifestError> {
        let entries = std::fs::read_dir(root)
            .map_err(|e| ManifestError(format!("cannot list {}: {e}", root.display())))?;
        let mut found = Vec::new();
        for entry in entries.flatten() {
            let dir = entry.path();
            if dir.join(MANIFEST_FILE).is_file() {
                found.push(Self::load(&dir)?);
            }
        }
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found)
    }

    /// Why this runtime cannot serve `value` of `field`, if it cannot.
    pub fn unsupported(&self, field: &str, value: &str) -> Option<&str> {
        self.unsupported
            .get(&format!("{field}.{value}"))
            .map(String::as_str)
    }

    /// `check` with its paths resolved, or `None` when the manifest has none.
    pub fn check_argv(&self, stacklab: &Path) -> Option<Vec<String>> {
        (!self.check.is_empty()).then(|| self.resolve(&self.check, stacklab))
    }

    /// `start` with its paths resolved (the contract's arguments are added by the caller).
    pub fn start_argv(&self, stacklab: &Path) -> Vec<String> {
        self.resolve(&self.start, stacklab)
    }

    /// What a finished `check` says: `Ok` when it exited 0, else the reason a person reads —
    /// its last non-empty line on stderr, else on stdout, else its exit status.
    pub fn check_outcome(argv: &[String], out: &std::process::Output) -> Result<(), String> {
        if out.status.success() {
            return Ok(());
        }
        let last = |b: &[u8]| {
            String::from_utf8_lossy(b)
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .map(|l| l.trim().to_owned())
        };
        Err(last(&out.stderr)
            .or_else(|| last(&out.stdout))
            .unwrap_or_else(|| format!("`{}` failed ({})", argv.join(" "), out.status)))
    }

    fn resolve(&self, argv: &[String], stacklab: &Path) -> Vec<String> {
        argv.iter()
            .map(|a| {
                if a == "{stacklab}" {
                    stacklab.display().to_string()
                } else if let Some(rel) = a.strip_prefix("./") {
                    self.dir.join(rel).display().to_string()
                } else {
                    a.clone()
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_against_the_manifest_folder_and_the_binary() {
        let m = Manifest::parse(
            "name = \"python\"\nlabel = \"Python (Flask)\"\ndescription = \"d\"\ncheck = [\"./bin/x\", \"--check\"]\nstart = [\"./bin/x\"]\n",
            Path::new("/repo/backends/python"),
        )
        .unwrap();
        assert_eq!(
            m.check_argv(Path::new("/t/stacklab")).unwrap(),
            ["/repo/backends/python/bin/x", "--check"]
        );
        let rust = Manifest::parse(
            "name = \"rust\"\nlabel = \"Rust\"\ndescription = \"d\"\nstart = [\"{stacklab}\", \"backend\"]\n",
            Path::new("/repo/backends/rust"),
        )
        .unwrap();
        assert_eq!(
            rust.start_argv(Path::new("/t/stacklab")),
            ["/t/stacklab", "backend"]
        );
        assert!(rust.check_argv(Path::new("/t/stacklab")).is_none());
    }

    #[test]
    fn bad_manifests_say_what_is_wrong() {
        let e = Manifest::parse(
            "name = \"Py thon\"\nlabel = \"l\"\ndescription = \"d\"\nstart = [\"x\"]\n",
            Path::new("."),
        )
        .unwrap_err();
        assert!(e.0.contains("lowercase"), "{e}");
        let e = Manifest::parse(
            "name = \"p\"\nlabel = \"l\"\ndescription = \"d\"\nstart = []\n",
            Path::new("."),
        )
        .unwrap_err();
        assert!(e.0.contains("start"), "{e}");
        let e = Manifest::parse(
            "name = \"p\"\nlabel = \"l\"\ndescription = \"d\"\nstart = [\"x\"]\nextra = 1\n",
            Path::new("."),
        )
        .unwrap_err();
        assert!(e.0.contains("extra"), "{e}");
        let e = Manifest::parse(
            "name = \"p\"\nlabel = \"l\"\ndescription = \"d\"\nstart = [\"x\"]\n[unsupported]\nmongodb = \"old\"\n",
            Path::new("."),
        )
        .unwrap_err();
        assert!(e.0.contains("<field>.<value>"), "{e}");
    }

    #[test]
    fn unsupported_choices_are_read_with_their_reason() {
        let m = Manifest::parse(
            "name = \"p\"\nlabel = \"l\"\ndescription = \"d\"\nstart = [\"x\"]\n[unsupported]\n\"database.mongodb\" = \"too old\"\n",
            Path::new("."),
        )
        .unwrap();
        assert_eq!(m.unsupported("database", "mongodb"), Some("too old"));
        assert_eq!(m.unsupported("database", "sqlite"), None);
    }
}
