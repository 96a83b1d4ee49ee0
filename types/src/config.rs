//! Reading the config file, the same way in every part that owns a section of it.
//!
//! One policy: every problem is an **error** naming its key, and a part refuses to start on
//! any — a value that does not fit (`control.max_drill_pools: invalid type: string "x",
//! expected usize`) and a key nobody reads (`control.max_drill_pols: unknown key …`), since a
//! misspelt limit silently left at its default is worse than a refusal. `stacklab
//! check-config` lists them all; the runtimes' `[backend]` readers do the same
//! (backends/CONTRACT.md §2).

use serde::de::{Deserialize, Deserializer};

/// What a key nobody reads is told.
pub const UNKNOWN_KEY: &str =
    "unknown key: check its spelling against config/stacklab.toml, which lists every key, or remove it";

/// A problem with one key: its dotted path from the top of the file, and what is wrong.
pub type KeyProblem = (String, String);

/// Reads `de` as `T`, which sits at `prefix` in the file (`""` for the whole file, `"control"`
/// for a section). Adds to `errors` every key no field took and the first value that does not
/// fit, each with its path (`prefix` itself when the problem is the section as a whole); the
/// value is `None` only when it did not fit.
pub fn read<'de, D, T>(prefix: &str, de: D, errors: &mut Vec<KeyProblem>) -> Option<T>
where
    D: Deserializer<'de>,
    D::Error: std::fmt::Display,
    T: Deserialize<'de>,
{
    let mut unknown = Vec::new();
    let mut note = |path: serde_ignored::Path<'_>| unknown.push(join(prefix, &key_path(&path)));
    let ignored = serde_ignored::Deserializer::new(de, &mut note);
    let result = serde_path_to_error::deserialize(ignored);
    errors.extend(unknown.into_iter().map(|key| (key, UNKNOWN_KEY.to_owned())));
    match result {
        Ok(value) => Some(value),
        Err(e) => {
            let path = e.path().to_string();
            // `.` is the library's name for the top.
            let path = if path == "." { String::new() } else { path };
            let message = message_only(&e.into_inner().to_string());
            errors.push((join(prefix, &path), without_key(message)));
            None
        }
    }
}

/// Reads the section `name` of the file (absent, or not fitting: `T::default()`), adding what
/// is wrong with it to `errors`.
pub fn section<T>(name: &str, value: Option<&toml::Value>, errors: &mut Vec<KeyProblem>) -> T
where
    T: Default + for<'de> Deserialize<'de>,
{
    match value {
        None => T::default(),
        Some(value) => read(name, value.clone(), errors).unwrap_or_default(),
    }
}

/// An environment variable that stands for a key of the file (`STACKLAB_BACKEND_INSTANCES` for
/// `control.backend_instances`). Every part applies its variables the same way: into the
/// file's table before the table is read ([`apply_env`]), so a variable's value is checked as
/// the key's would be, and a problem with it names the variable ([`blame_env`]). An empty
/// variable is unset.
#[derive(Debug, Clone, Copy)]
pub struct EnvKey {
    pub var: &'static str,
    /// The key's dotted path from the top of the file.
    pub key: &'static str,
    /// The key takes an integer: a value that reads as one is put in as one (anything else
    /// stays text, and the key's type check names it).
    pub integer: bool,
}

impl EnvKey {
    pub const fn text(var: &'static str, key: &'static str) -> Self {
        Self {
            var,
            key,
            integer: false,
        }
    }

    pub const fn integer(var: &'static str, key: &'static str) -> Self {
        Self {
            var,
            key,
            integer: true,
        }
    }
}

/// Puts the set variables of `keys` into `file` at their keys (making the tables on the way)
/// and returns the ones that were set. A key whose table is not a table is left to the
/// reader, which names it.
pub fn apply_env(
    file: &mut toml::Table,
    keys: &[EnvKey],
    env: &dyn Fn(&str) -> Option<String>,
) -> Vec<EnvKey> {
    let mut applied = Vec::new();
    for k in keys {
        let Some(text) = env(k.var).filter(|v| !v.is_empty()) else {
            continue;
        };
        let value = match text.trim().parse::<i64>() {
            Ok(n) if k.integer => toml::Value::Integer(n),
            _ => toml::Value::String(text),
        };
        let parts: Vec<&str> = k.key.split('.').collect();
        if insert_at(file, &parts, value) {
            applied.push(*k);
        }
    }
    applied
}

/// Puts `value` at the dotted `key`, making the tables on the way; `false` when a table on the
/// way is something else.
fn insert_at(table: &mut toml::Table, key: &[&str], value: toml::Value) -> bool {
    match key {
        [] => false,
        [last] => {
            table.insert((*last).to_owned(), value);
            true
        }
        [first, rest @ ..] => match table
            .entry(*first)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        {
            toml::Value::Table(t) => insert_at(t, rest, value),
            _ => false,
        },
    }
}

/// Names the variable in a problem with a key it set: `STACKLAB_BACKEND_INSTANCES
/// (control.backend_instances)`.
pub fn blame_env(problems: &mut [KeyProblem], applied: &[EnvKey]) {
    for (path, _) in problems.iter_mut() {
        *path = blamed(path, applied);
    }
}

/// `path`, or the variable that set it with `path` in brackets.
pub fn blamed(path: &str, applied: &[EnvKey]) -> String {
    match applied.iter().find(|k| k.key == path) {
        Some(k) => format!("{} ({})", k.var, k.key),
        None => path.to_owned(),
    }
}

/// toml's messages for a value inside a table end in `` in `key` ``: the path names it already.
fn without_key(message: String) -> String {
    match message.rfind(" in `") {
        Some(i) if message.ends_with('`') => message[..i].to_owned(),
        _ => message,
    }
}

/// A path as the file's reader writes it, and as `serde_path_to_error` does: `routes[0].pool`
/// (serde_ignored's own `Display` writes `routes.0.pool`, and `?` for an `Option`).
fn key_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", key_path(parent)),
        Path::Map { parent, key } => join(&key_path(parent), key),
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => key_path(parent),
    }
}

fn join(prefix: &str, path: &str) -> String {
    match (prefix.is_empty(), path.is_empty()) {
        (true, _) => path.to_owned(),
        (false, true) => prefix.to_owned(),
        (false, false) if path.starts_with('[') => format!("{prefix}{path}"),
        (false, false) => format!("{prefix}.{path}"),
    }
}

/// The message alone, on one line. toml's errors for a whole file read "TOML parse error at
/// line L, column C", a snippet of the file with a `^` under the value, then the message: keep
/// what follows the snippet (the key is named by its path already).
fn message_only(message: &str) -> String {
    let lines: Vec<&str> = message.lines().collect();
    let after_snippet = lines
        .iter()
        .rposition(|l| l.trim_start().starts_with('|') && l.contains('^'))
        .map_or(0, |i| i + 1);
    let rest: Vec<&str> = lines[after_snippet.min(lines.len())..]
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
        .collect();
    match rest.first() {
        Some(_) => rest.join(" "),
        None => lines.first().copied().unwrap_or_default().trim().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, serde::Deserialize)]
    struct Section {
        size: Option<u64>,
        inner: Option<Inner>,
    }

    #[derive(Debug, Default, serde::Deserialize)]
    struct Inner {
        name: Option<String>,
    }

    fn value(text: &str) -> toml::Value {
        text.parse::<toml::Table>().unwrap().into()
    }

    #[test]
    fn an_unread_key_is_an_error_with_its_whole_path() {
        let v = value("size = 3\nnope = 1\n[inner]\nname = \"a\"\nalso = true\n");
        let mut errors = vec![];
        let s: Section = section("part", Some(&v), &mut errors);
        assert_eq!(s.size, Some(3));
        assert_eq!(s.inner.unwrap().name.as_deref(), Some("a"));
        let keys: Vec<&str> = errors.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["part.inner.also", "part.nope"]);
        assert!(errors.iter().all(|(_, m)| m == UNKNOWN_KEY));
    }

    #[test]
    fn a_value_that_does_not_fit_is_an_error_naming_its_key() {
        let v = value("[inner]\nname = 7\n");
        let mut errors = vec![];
        let _: Section = section("part", Some(&v), &mut errors);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].0, "part.inner.name");
        assert_eq!(
            errors[0].1, "invalid type: integer `7`, expected a string",
            "{errors:?}"
        );

        let mut errors = vec![];
        let whole: Option<Section> = read(
            "",
            toml::Deserializer::parse("size = \"big\"\n").unwrap(),
            &mut errors,
        );
        assert!(whole.is_none());
        let (key, message) = &errors[0];
        assert_eq!(key, "size");
        assert!(!message.contains('\n'), "{message}");
        assert!(message.starts_with("invalid type"), "{message}");
    }

    #[test]
    fn a_variable_is_read_as_its_key_and_named_when_it_does_not_fit() {
        const KEYS: [EnvKey; 3] = [
            EnvKey::integer("SIZE", "part.size"),
            EnvKey::text("NAME", "part.inner.name"),
            EnvKey::text("UNSET", "part.other"),
        ];
        let vars = |v: &str| match v {
            "SIZE" => Some("12".to_owned()),
            "NAME" => Some("from-env".to_owned()),
            "UNSET" => Some(String::new()),
            _ => None,
        };
        let mut file: toml::Table = "[part]\nsize = 3\n".parse().unwrap();
        let applied = apply_env(&mut file, &KEYS, &vars);
        assert_eq!(applied.len(), 2, "an empty variable is unset");
        let mut errors = vec![];
        let s: Section = section("part", file.get("part"), &mut errors);
        assert_eq!(s.size, Some(12));
        assert_eq!(s.inner.unwrap().name.as_deref(), Some("from-env"));
        assert!(errors.is_empty(), "{errors:?}");

        let mut file = toml::Table::new();
        let applied = apply_env(&mut file, &KEYS[..1], &|_| Some("lots".to_owned()));
        let _: Section = section("part", file.get("part"), &mut errors);
        blame_env(&mut errors, &applied);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].0, "SIZE (part.size)");
        assert!(errors[0].1.contains("\"lots\""), "{errors:?}");
    }

    #[test]
    fn an_absent_section_is_the_default() {
        let mut errors = vec![];
        let s: Section = section("part", None, &mut errors);
        assert!(s.size.is_none() && errors.is_empty());
    }
}
