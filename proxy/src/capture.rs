//! Per-session request capture for the inspector.
//!
//! Requests on routes marked `captures = true` that carry a live session are recorded: what
//! was asked (with `cookie` and `authorization` redacted and `password` values masked), what
//! came back, which member served it, and where the time went. Each session keeps a bounded
//! ring (`limits.capture_per_session`), and at most `limits.capture_sessions` sessions are
//! kept (the least recently captured is dropped first), so capture cannot grow without end.
//!
//! The store takes a short lock per captured request; routes that do not capture never touch it.
//! New captures are also broadcast for live views (`/admin/sessions/{id}/requests/stream`).

use serde::Serialize;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::broadcast;

const REDACTED: &str = "[redacted]";
const MASK: &str = "********";

#[derive(Debug, Clone, Serialize)]
pub struct Captured {
    pub request_id: String,
    pub at_unix_ms: u64,
    pub session: String,
    pub method: String,
    pub path: String,
    pub query: String,
    /// `h1`, `h2` or `h3`: what the client actually negotiated.
    pub protocol: &'static str,
    pub headers: Vec<(String, String)>,
    /// The body as text (lossy UTF-8), passwords masked, cut at `limits.capture_body_bytes`;
    /// `None` when the body was streamed rather than held.
    pub body: Option<String>,
    pub body_truncated: bool,
    pub status: u16,
    /// The backend's `x-stacklab-cache`: `hit`, `miss` or `bypass`.
    pub cache: Option<String>,
    /// The backend's `Server-Timing` header (`backend;dur=…, cache;dur=…, db;dur=…`).
    pub server_timing: Option<String>,
    pub member: Option<String>,
    pub total_ms: f64,
    pub upstream_ms: Option<f64>,
    pub proxy_ms: f64,
}

#[derive(Debug)]
struct Ring {
    items: VecDeque<Arc<Captured>>,
    /// Monotonic stamp of the last push, for least-recently-captured eviction.
    stamp: u64,
}

#[derive(Debug)]
pub struct CaptureStore {
    inner: Mutex<Inner>,
    per_session: usize,
    max_sessions: usize,
    live: broadcast::Sender<Arc<Captured>>,
}

#[derive(Debug, Default)]
struct Inner {
    rings: HashMap<String, Ring>,
    stamp: u64,
}

impl CaptureStore {
    pub fn new(per_session: usize, max_sessions: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            per_session,
            max_sessions,
            live: broadcast::channel(1024).0,
        }
    }

    pub fn push(&self, c: Captured) {
        if self.per_session == 0 || self.max_sessions == 0 {
            return;
        }
        let c = Arc::new(c);
        {
            let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            inner.stamp += 1;
            let stamp = inner.stamp;
            if !inner.rings.contains_key(&c.session) && inner.rings.len() >= self.max_sessions {
                if let Some(oldest) = inner
                    .rings
                    .iter()
                    .min_by_key(|(_, r)| r.stamp)
                    .map(|(k, _)| k.clone())
                {
                    inner.rings.remove(&oldest);
                }
            }
            let ring = inner
                .rings
                .entry(c.session.clone())
                .or_insert_with(|| Ring {
                    items: VecDeque::with_capacity(self.per_session.min(16)),
                    stamp,
                });
            ring.stamp = stamp;
            if ring.items.len() == self.per_session {
                ring.items.pop_front();
            }
            ring.items.push_back(Arc::clone(&c));
        }
        let _ = self.live.send(c);
    }

    /// The session's most recent requests, newest first.
    pub fn recent(&self, session: &str, limit: usize) -> Vec<Arc<Captured>> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner
            .rings
            .get(session)
            .map(|r| r.items.iter().rev().take(limit).cloned().collect())
            .unwrap_or_default()
    }

    pub fn forget(&self, session: &str) {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .rings
            .remove(session);
    }

    pub fn sessions(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .rings
            .len()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Captured>> {
        self.live.subscribe()
    }
}

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Headers as text pairs, with credentials redacted.
pub fn redact_headers(h: &http::HeaderMap) -> Vec<(String, String)> {
    h.iter()
        .map(|(k, v)| {
            let value = match k.as_str() {
                "cookie" | "authorization" | "proxy-authorization" | "x-stacklab-session" => {
                    REDACTED.to_owned()
                }
                _ => String::from_utf8_lossy(v.as_bytes()).into_owned(),
            };
            (k.as_str().to_owned(), value)
        })
        .collect()
}

/// Masks password values, then cuts the text to `max` bytes (on a character boundary).
/// Returns the text and whether it was cut.
pub fn mask_and_cut(body: &[u8], max: usize) -> (String, bool) {
    let text = String::from_utf8_lossy(body);
    let masked = mask_passwords(&text);
    if masked.len() <= max {
        return (masked, false);
    }
    let mut end = max;
    while !masked.is_char_boundary(end) {
        end -= 1;
    }
    (masked[..end].to_owned(), true)
}

/// Replaces the value after any key containing `password` (any case) in JSON
/// (`"password": "x"`), GraphQL (`password: "x"`, `password: """x"""`, also inside an escaped
/// query string, whose escaped quotes cannot end the value early) and form encoding
/// (`password=x`); in a GraphQL request, also the variables a `password` argument takes
/// (`verifyPassword(id: 1, password: $p)` masks `"p"` in `variables`, whatever its name).
/// The text keeps its shape: only values are replaced.
pub fn mask_passwords(text: &str) -> String {
    let mut masked = mask_after(text, "password");
    for name in password_variables(text) {
        masked = mask_after(&masked, &format!("\"{}\"", name.to_ascii_lowercase()));
    }
    masked
}

/// The variables bound to an argument whose name contains `password`, in the `query` of a
/// GraphQL request sent as JSON (one operation or a batch); none for anything else.
fn password_variables(text: &str) -> Vec<String> {
    let start = text.trim_start();
    if !(start.starts_with('{') || start.starts_with('[')) || !text.contains('$') {
        return Vec::new();
    }
    let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else {
        return Vec::new();
    };
    let ops = match &v {
        serde_json::Value::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    let mut names = Vec::new();
    for query in ops.iter().filter_map(|op| op["query"].as_str()) {
        let lower = query.to_ascii_lowercase();
        let b = query.as_bytes();
        let mut search = 0;
        while let Some(found) = lower[search..].find("password") {
            let mut i = search + found + "password".len();
            search = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            if b.get(i) != Some(&b':') {
                continue;
            }
            i += 1;
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            if b.get(i) != Some(&b'$') {
                continue;
            }
            let name_start = i + 1;
            let mut e = name_start;
            while e < b.len() && (b[e].is_ascii_alphanumeric() || b[e] == b'_') {
                e += 1;
            }
            if e > name_start && !names.iter().any(|n| n == &query[name_start..e]) {
                names.push(query[name_start..e].to_owned());
            }
        }
    }
    names
}

/// Masks the value after every key that contains `needle` (matched lower-case).
fn mask_after(text: &str, needle: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut search = 0;
    while let Some(found) = lower[search..].find(needle) {
        let key_end = search + found + needle.len();
        search = key_end;
        // Skip the rest of the key name, closing quotes and escapes, spaces, then `:` or `=`.
        let mut i = key_end;
        while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
            i += 1;
        }
        while i < bytes.len() && matches!(bytes[i], b'"' | b'\\' | b' ' | b'\t') {
            i += 1;
        }
        if i >= bytes.len() || !matches!(bytes[i], b':' | b'=') {
            continue;
        }
        i += 1;
        while i < bytes.len() && matches!(bytes[i], b' ' | b'\t') {
            i += 1;
        }
        let rest = &text[i..];
        let (start, end) = if let Some(inner) = rest.strip_prefix(r#"\"\"\""#) {
            // A GraphQL block string inside a JSON string.
            let s = i + 6;
            (s, inner.find(r#"\"\"\""#).map_or(bytes.len(), |e| s + e))
        } else if rest.starts_with("\\\"") {
            (i + 2, escaped_string_end(bytes, i + 2))
        } else if let Some(inner) = rest.strip_prefix(r#"""""#) {
            let s = i + 3;
            (s, inner.find(r#"""""#).map_or(bytes.len(), |e| s + e))
        } else if bytes.get(i) == Some(&b'"') {
            let s = i + 1;
            let mut e = s;
            while e < bytes.len() && bytes[e] != b'"' {
                e += if bytes[e] == b'\\' { 2 } else { 1 };
            }
            (s, e.min(bytes.len()))
        } else {
            let e = text[i..]
                .find(['&', ',', '}', ')', ' ', '\n', '\r'])
                .map_or(bytes.len(), |e| i + e);
            (i, e)
        };
        if end > start && start >= copied {
            out.push_str(&text[copied..start]);
            out.push_str(MASK);
            copied = end;
            search = end;
        }
    }
    out.push_str(&text[copied..]);
    out
}

/// Where a GraphQL string written inside a JSON string ends (at its closing `\"`), reading
/// JSON's escapes and then GraphQL's: JSON `\\` is a GraphQL backslash, which escapes what
/// follows, so `\\\"` is a quote inside the value, not its end. A bare `"` ends the JSON
/// string, and the value with it.
fn escaped_string_end(b: &[u8], from: usize) -> usize {
    let mut e = from;
    let mut gql_escape = false;
    while e < b.len() {
        match (b[e], b.get(e + 1)) {
            (b'"', _) => return e,
            (b'\\', Some(b'\\')) => {
                gql_escape = !gql_escape;
                e += 2;
            }
            (b'\\', Some(b'"')) if !gql_escape => return e,
            (b'\\', _) => {
                gql_escape = false;
                e += 2;
            }
            _ => {
                gql_escape = false;
                e += 1;
            }
        }
    }
    b.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked_in_every_shape() {
        assert_eq!(
            mask_passwords(r#"{"username":"ann","password":"hunter2","email":"a@b.c"}"#),
            r#"{"username":"ann","password":"********","email":"a@b.c"}"#
        );
        assert_eq!(
            mask_passwords(r#"{"new_password" : "p\"w"}"#),
            r#"{"new_password" : "********"}"#
        );
        assert_eq!(
            mask_passwords("user=ann&password=hunter2&x=1"),
            "user=ann&password=********&x=1"
        );
        let gql = r#"{"query":"mutation { createUser(username: \"ann\", password: \"hunter2\") { id } }"}"#;
        let masked = mask_passwords(gql);
        assert!(!masked.contains("hunter2"), "{masked}");
        assert!(masked.contains(r#"password: \"********\""#), "{masked}");
        assert_eq!(mask_passwords("no secrets here"), "no secrets here");
        assert_eq!(mask_passwords("the password field"), "the password field");
    }

    #[test]
    fn graphql_variables_escapes_and_block_strings_are_masked() {
        // A variable bound to a password argument, whatever its name; others kept.
        let body = r#"{"query":"mutation($p: String!, $id: Int!) { verifyPassword(id: $id, password: $p) }","variables":{"id":7,"p":"hunter2-long"}}"#;
        let masked = mask_passwords(body);
        assert!(!masked.contains("hunter2"), "{masked}");
        assert!(masked.contains(r#""p":"********""#), "{masked}");
        assert!(masked.contains(r#""id":7"#), "{masked}");
        // A batch, an input object, a number.
        let body = r#"[{"query":"mutation($s: String) { a: verifyPassword(id: 1, password: $s) }","variables":{"s":"one-secret"}},{"query":"mutation($i: UpdateUserInput!) { updateUser(id: 1, input: $i) { id } }","variables":{"i":{"password":"two-secret"}}}]"#;
        let masked = mask_passwords(body);
        assert!(
            !masked.contains("one-secret") && !masked.contains("two-secret"),
            "{masked}"
        );
        // An escaped quote inside an inline value does not end it early.
        let body = r#"{"query":"mutation { verifyPassword(id: 1, password: \"a\\\"b-secret\") }"}"#;
        let masked = mask_passwords(body);
        assert!(!masked.contains("secret"), "{masked}");
        assert!(masked.ends_with(r#"\") }"}"#), "{masked}");
        // Block strings, escaped in JSON and raw.
        let body =
            r#"{"query":"mutation { verifyPassword(id: 1, password: \"\"\"a\"b-secret\"\"\") }"}"#;
        assert!(
            !mask_passwords(body).contains("secret"),
            "{}",
            mask_passwords(body)
        );
        let raw = r#"mutation { verifyPassword(id: 1, password: """a"b-secret""") }"#;
        assert!(
            !mask_passwords(raw).contains("secret"),
            "{}",
            mask_passwords(raw)
        );
    }

    #[test]
    fn bodies_are_cut_on_char_boundaries() {
        let (text, cut) = mask_and_cut("ééé".as_bytes(), 3);
        assert_eq!(text, "é");
        assert!(cut);
    }

    #[test]
    fn rings_are_bounded_per_session_and_in_sessions() {
        let store = CaptureStore::new(2, 2);
        let c = |s: &str, id: &str| Captured {
            request_id: id.into(),
            at_unix_ms: 0,
            session: s.into(),
            method: "GET".into(),
            path: "/".into(),
            query: String::new(),
            protocol: "h1",
            headers: vec![],
            body: None,
            body_truncated: false,
            status: 200,
            cache: None,
            server_timing: None,
            member: None,
            total_ms: 0.0,
            upstream_ms: None,
            proxy_ms: 0.0,
        };
        for id in ["1", "2", "3"] {
            store.push(c("a", id));
        }
        let ids: Vec<_> = store
            .recent("a", 10)
            .iter()
            .map(|c| c.request_id.clone())
            .collect();
        assert_eq!(ids, ["3", "2"]);
        store.push(c("b", "x"));
        store.push(c("c", "y"));
        assert_eq!(store.sessions(), 2);
        assert!(
            store.recent("a", 10).is_empty(),
            "least recently captured session dropped"
        );
    }

    #[test]
    fn credentials_are_redacted() {
        let mut h = http::HeaderMap::new();
        h.insert("cookie", "stacklab_session=SECRET".parse().unwrap());
        h.insert("authorization", "Bearer SECRET".parse().unwrap());
        h.insert("accept", "*/*".parse().unwrap());
        let pairs = redact_headers(&h);
        assert!(!format!("{pairs:?}").contains("SECRET"));
        assert!(pairs.contains(&("accept".into(), "*/*".into())));
    }
}
