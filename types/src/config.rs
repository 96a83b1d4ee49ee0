//! Reading the config file, the same way in every part that owns a section of it.
//!
//! One policy: a key nobody reads is a **warning** (`control.nope: unknown key, ignored`), so a
//! file written for a newer stacklab still starts an older one; a value that does not fit is an
//! **error** naming its key (`control.max_drill_pools: invalid type: string "x", expected
//! usize`). `stacklab check-config` prints both and says so; the parts refuse to start on an
//! error and log the warnings.

use serde::de::{Deserialize, Deserializer};

/// What a key nobody reads is told.
pub const UNKNOWN_KEY: &str = "unknown key, ignored";

/// A problem with one key: its dotted path from the top of the file, and what is wrong.
pub type KeyProblem = (String, String);

/// Reads `de` as `T`, which sits at `prefix` in the file (`""` for the whole file, `"control"`
/// for a section). Returns the value and the keys no field took, each as a warning; or the
/// first value that does not fit, as an error with its path (`prefix` itself when the problem
/// is the section as a whole).
pub fn read<'de, D, T>(prefix: &str, de: D) -> Result<(T, Vec<KeyProblem>), KeyProblem>
where
    D: Deserializer<'de>,
    D::Error: std::fmt::Display,
    T: Deserialize<'de>,
{
    let mut unknown = Vec::new();
    let mut note = |path: serde_ignored::Path<'_>| {
        // `?` stands for an `Option`'s `Some`: not a key of the file.
        let path = path.to_string();
        let keys: Vec<&str> = path.split('.').filter(|k| *k != "?").collect();
        unknown.push(join(prefix, &keys.join(".")));
    };
    let ignored = serde_ignored::Deserializer::new(de, &mut note);
    let result = serde_path_to_error::deserialize(ignored);
    match result {
        Ok(value) => Ok((
            value,
            unknown
                .into_iter()
                .map(|key| (key, UNKNOWN_KEY.to_owned()))
                .collect(),
        )),
        Err(e) => {
            let path = e.path().to_string();
            // `.` is the library's name for the top.
            let path = if path == "." { String::new() } else { path };
            Err((join(prefix, &path), first_line(&e.into_inner().to_string())))
        }
    }
}

/// Reads the section `name` of the file (absent: `T::default()`), adding what is wrong with it
/// to `errors` and its unread keys to `warnings`.
pub fn section<T>(
    name: &str,
    value: Option<&toml::Value>,
    errors: &mut Vec<KeyProblem>,
    warnings: &mut Vec<KeyProblem>,
) -> T
where
    T: Default + for<'de> Deserialize<'de>,
{
    let Some(value) = value else {
        return T::default();
    };
    match read(name, value.clone()) {
        Ok((v, unread)) => {
            warnings.extend(unread);
            v
        }
        Err(problem) => {
            errors.push(problem);
            T::default()
        }
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
fn first_line(message: &str) -> String {
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
    fn an_unread_key_is_a_warning_with_its_whole_path() {
        let v = value("size = 3\nnope = 1\n[inner]\nname = \"a\"\nalso = true\n");
        let (mut errors, mut warnings) = (vec![], vec![]);
        let s: Section = section("part", Some(&v), &mut errors, &mut warnings);
        assert_eq!(s.size, Some(3));
        assert_eq!(s.inner.unwrap().name.as_deref(), Some("a"));
        assert!(errors.is_empty());
        let keys: Vec<&str> = warnings.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["part.inner.also", "part.nope"]);
        assert!(warnings.iter().all(|(_, m)| m == UNKNOWN_KEY));
    }

    #[test]
    fn a_value_that_does_not_fit_is_an_error_naming_its_key() {
        let v = value("[inner]\nname = 7\n");
        let (mut errors, mut warnings) = (vec![], vec![]);
        let _: Section = section("part", Some(&v), &mut errors, &mut warnings);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].0, "part.inner.name");
        assert!(errors[0].1.contains("invalid type"), "{errors:?}");

        let whole = read::<_, Section>("", toml::Deserializer::parse("size = \"big\"\n").unwrap());
        let (key, message) = whole.unwrap_err();
        assert_eq!(key, "size");
        assert!(!message.contains('\n'), "{message}");
        assert!(message.starts_with("invalid type"), "{message}");
    }

    #[test]
    fn an_absent_section_is_the_default() {
        let (mut errors, mut warnings) = (vec![], vec![]);
        let s: Section = section("part", None, &mut errors, &mut warnings);
        assert!(s.size.is_none() && errors.is_empty() && warnings.is_empty());
    }
}
