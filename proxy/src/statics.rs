//! The web UI's static files: embedded in the binary, or read from a folder while developing
//! (`edge.static_dir`).
//!
//! Paths are checked before anything is looked up: no `..`, no backslashes, no NUL, no
//! percent-encoded tricks (the path is decoded once and checked again). Embedded files carry an
//! `ETag` computed at start, so a browser revalidates cheaply.

use crate::body::{empty, full, RespBody};
use crate::error::ProxyError;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, StatusCode};
use include_dir::{include_dir, Dir};
use std::collections::HashMap;
use std::path::PathBuf;

static WEB: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/../web");

#[derive(Debug)]
struct File {
    bytes: Bytes,
    mime: HeaderValue,
    etag: HeaderValue,
}

#[derive(Debug)]
pub struct Statics {
    embedded: HashMap<String, File>,
    dir: Option<PathBuf>,
}

impl Statics {
    pub fn new(dir: Option<PathBuf>) -> Self {
        let mut embedded = HashMap::new();
        collect(&WEB, &mut embedded);
        Self { embedded, dir }
    }

    pub async fn serve(
        &self,
        method: &Method,
        path: &str,
        if_none_match: Option<&HeaderValue>,
    ) -> Result<Response<RespBody>, ProxyError> {
        if method != Method::GET && method != Method::HEAD {
            let mut res = crate::error::json_error(
                StatusCode::METHOD_NOT_ALLOWED,
                &stacklab_types::ErrorBody::new(
                    "method_not_allowed",
                    "static files answer GET and HEAD only",
                ),
            );
            res.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return Ok(res);
        }
        let rel = clean_path(path).ok_or_else(|| {
            ProxyError::BadRequest(
                "the path is not allowed; use a plain path such as /index.html".into(),
            )
        })?;
        let rel = if rel.is_empty() || rel.ends_with('/') {
            format!("{rel}index.html")
        } else {
            rel
        };
        let head = method == Method::HEAD;
        if !is_served(&rel) {
            return Err(ProxyError::NotFound(format!("/{rel}")));
        }
        if let Some(dir) = &self.dir {
            let path = dir.join(&rel);
            let bytes = tokio::fs::read(&path)
                .await
                .map_err(|_| ProxyError::NotFound(format!("/{rel}")))?;
            let mime = mime_for(&rel);
            return Ok(respond(Bytes::from(bytes), mime, None, head));
        }
        let file = self
            .embedded
            .get(&rel)
            .ok_or_else(|| ProxyError::NotFound(format!("/{rel}")))?;
        if if_none_match == Some(&file.etag) {
            let mut res = Response::new(empty());
            *res.status_mut() = StatusCode::NOT_MODIFIED;
            res.headers_mut().insert(header::ETAG, file.etag.clone());
            return Ok(res);
        }
        Ok(respond(
            file.bytes.clone(),
            file.mime.clone(),
            Some(file.etag.clone()),
            head,
        ))
    }
}

fn respond(
    bytes: Bytes,
    mime: HeaderValue,
    etag: Option<HeaderValue>,
    head: bool,
) -> Response<RespBody> {
    let len = bytes.len();
    let mut res = Response::new(if head { empty() } else { full(bytes) });
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, mime);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Some(etag) = etag {
        h.insert(header::ETAG, etag);
    }
    res
}

/// What of `web/` is the UI: not its tests (`tests/`, `e2e/`), not hidden files or caches.
pub fn is_served(rel: &str) -> bool {
    let mut segments = rel.split('/');
    let first = segments.next().unwrap_or_default();
    first != "tests"
        && first != "e2e"
        && !rel
            .split('/')
            .any(|s| s.starts_with('.') || s == "__pycache__" || s == "node_modules")
}

fn collect(dir: &'static Dir<'static>, out: &mut HashMap<String, File>) {
    for f in dir.files() {
        let rel = f.path().to_string_lossy().replace('\\', "/");
        if !is_served(&rel) {
            continue;
        }
        let etag = format!("\"{:016x}\"", crate::pool::hash64(f.contents()));
        out.insert(
            rel.clone(),
            File {
                bytes: Bytes::from_static(f.contents()),
                mime: mime_for(&rel),
                etag: HeaderValue::from_str(&etag).expect("hex is a valid header"),
            },
        );
    }
    for d in dir.dirs() {
        collect(d, out);
    }
}

fn mime_for(path: &str) -> HeaderValue {
    let mime = mime_guess::from_path(path).first_or_octet_stream();
    let text = mime.type_() == "text" || mime.subtype() == "javascript" || mime.subtype() == "json";
    let value = if text {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_string()
    };
    HeaderValue::from_str(&value)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"))
}

/// The path relative to the web root, or `None` when it tries to leave it.
fn clean_path(path: &str) -> Option<String> {
    let decoded = percent_decode(path)?;
    if decoded.contains('\\') || decoded.contains('\0') {
        return None;
    }
    let rel = decoded.trim_start_matches('/');
    if rel
        .split('/')
        .any(|seg| seg == ".." || seg == "." || seg.starts_with('.') && !seg.is_empty())
    {
        return None;
    }
    Some(rel.to_owned())
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Entry point for the fuzz targets in `fuzz/` (cargo-fuzz). Not an API.
#[doc(hidden)]
pub mod fuzzing {
    pub fn clean_path(path: &str) -> Option<String> {
        super::clean_path(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ui_is_served_and_its_tests_are_not() {
        for ok in ["index.html", "js/app.js", "js/lib/sse.js", "style.css"] {
            assert!(is_served(ok), "{ok}");
        }
        for no in [
            "tests/sse.test.js",
            "e2e/test_journey.py",
            "e2e/__pycache__/x.pyc",
            ".git/config",
            "js/.hidden",
        ] {
            assert!(!is_served(no), "{no}");
        }
    }

    #[test]
    fn traversal_is_refused() {
        assert_eq!(clean_path("/").as_deref(), Some(""));
        assert_eq!(clean_path("/app.js").as_deref(), Some("app.js"));
        assert_eq!(clean_path("/css/site.css").as_deref(), Some("css/site.css"));
        for bad in [
            "/../etc/passwd",
            "/%2e%2e/etc/passwd",
            "/a/..%2f..%2fetc",
            "/..\\x",
            "/.git/config",
            "/%00",
            "/%zz",
        ] {
            assert_eq!(clean_path(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_index_is_embedded() {
        let s = Statics::new(None);
        assert!(s.embedded.contains_key("index.html"));
    }
}
