//! The `stacklab_session` cookie.
//!
//! A session code is 128 random bits in Crockford base32 (26 characters, no `I`, `L`, `O`,
//! `U`), made by control. The proxy only reads it, and looks its route up by the code's id
//! ([`stacklab_types::session::id`]): routes are kept by id, never by code, so an id seen
//! anywhere (a container name, a log) opens nothing when sent as a cookie.

use http::HeaderMap;

pub const COOKIE_NAME: &str = "stacklab_session";
pub use stacklab_types::session::{is_code, MAX_CODE_LEN};

/// What the request's cookies say about its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieSession<'a> {
    /// No `stacklab_session` cookie.
    Missing,
    /// A cookie that cannot be a session code (too long, bad characters).
    Malformed,
    Code(&'a str),
}

/// The `Set-Cookie` value for a session: exactly the attributes the public API promises.
pub fn set_cookie(code: &str, max_age_secs: u64) -> String {
    format!("{COOKIE_NAME}={code}; Path=/; Max-Age={max_age_secs}; HttpOnly; Secure; SameSite=Lax")
}

/// Finds the session cookie among all `Cookie` headers (HTTP/2 and HTTP/3 may split them).
pub fn from_headers(headers: &HeaderMap) -> CookieSession<'_> {
    for value in headers.get_all(http::header::COOKIE) {
        let Ok(value) = value.to_str() else { continue };
        for pair in value.split(';') {
            let pair = pair.trim_start();
            if let Some(v) = pair
                .strip_prefix(COOKIE_NAME)
                .and_then(|rest| rest.strip_prefix('='))
            {
                let v = v.trim_end().trim_matches('"');
                return if is_code(v) {
                    CookieSession::Code(v)
                } else {
                    CookieSession::Malformed
                };
            }
        }
    }
    CookieSession::Missing
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(cookies: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for c in cookies {
            h.append(http::header::COOKIE, c.parse().unwrap());
        }
        h
    }

    #[test]
    fn finds_the_cookie_anywhere() {
        let code = "7K3QZ9M2XW4R8T6V1N5P0H2J3D";
        assert_eq!(from_headers(&headers(&[])), CookieSession::Missing);
        assert_eq!(
            from_headers(&headers(&["a=b; other_session=x"])),
            CookieSession::Missing
        );
        assert_eq!(
            from_headers(&headers(&[&format!("a=b; stacklab_session={code}")])),
            CookieSession::Code(code)
        );
        assert_eq!(
            from_headers(&headers(&["a=b", &format!("stacklab_session={code}")])),
            CookieSession::Code(code)
        );
        assert_eq!(
            from_headers(&headers(&["stacklab_session=../../etc"])),
            CookieSession::Malformed
        );
        assert_eq!(
            from_headers(&headers(&[&format!("stacklab_session={}", "A".repeat(65))])),
            CookieSession::Malformed
        );
    }
}
