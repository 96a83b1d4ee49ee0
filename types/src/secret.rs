//! A secret (token, password, key, pepper) that never shows itself.
//!
//! `Debug` and `Display` print `[redacted]`; the value is read only through [`Secret::expose`],
//! at the one place a connection or comparison needs it, so a `{:?}` in a log line or an error
//! cannot leak it.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; call only where it is used, never to log or format it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Compares in time independent of where the first difference is, for tokens.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        constant_time_eq(self.0.as_bytes(), candidate)
    }

    /// Whether a request's bearer token ([`bearer`]) is this one. An empty secret admits
    /// nobody: a token that was never set is no open door.
    pub fn admits(&self, given: Option<&[u8]>) -> bool {
        given.is_some_and(|g| !self.is_empty() && self.matches(g))
    }
}

/// The token of a request's `Authorization: Bearer <token>` (the scheme in any case, RFC 9110
/// §11.1), if it has one: the one reading of a bearer credential for every part.
pub fn bearer(headers: &http::HeaderMap) -> Option<&[u8]> {
    let value = headers.get(http::header::AUTHORIZATION)?.as_bytes();
    let (scheme, token) = value.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| token.trim_ascii())
        .filter(|t| !t.is_empty())
}

/// Equality whose time does not depend on where the first difference is (only on length).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// Serializes as `[redacted]`: a secret written back out (an admin dump of the config, say)
/// must not carry the value.
impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, auth.parse().unwrap());
        h
    }

    #[test]
    fn a_bearer_token_is_read_in_any_case_of_the_scheme_and_admitted_only_when_set() {
        assert_eq!(bearer(&headers("Bearer abc")), Some(&b"abc"[..]));
        assert_eq!(bearer(&headers("bearer abc")), Some(&b"abc"[..]));
        assert_eq!(bearer(&headers("BEARER  abc ")), Some(&b"abc"[..]));
        assert_eq!(bearer(&headers("Basic YWJj")), None);
        assert_eq!(bearer(&headers("Bearer ")), None);
        assert_eq!(bearer(&headers("Bear")), None);
        assert_eq!(bearer(&http::HeaderMap::new()), None);
        let token = Secret::new("abc");
        assert!(token.admits(bearer(&headers("Bearer abc"))));
        assert!(!token.admits(bearer(&headers("Bearer abd"))));
        assert!(!token.admits(None));
        assert!(
            !Secret::new("").admits(Some(b"")),
            "an unset token admits nobody"
        );
    }

    #[test]
    fn never_prints_itself() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "[redacted] [redacted]");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"[redacted]\"");
        assert!(s.matches(b"hunter2"));
        assert!(!s.matches(b"hunter3"));
        assert!(!s.matches(b"hunter"));
    }
}
