//! The request head as the proxy reads it by hand: the `stacklab_session` cookie, Host and the
//! URI's authority, `x-request-id`, `Connection`/`Upgrade`, the headers it strips and the ones
//! it adds (`x-forwarded-*`, `x-stacklab-session`), the static file path, and what the
//! inspector keeps of a request (redacted headers, masked and cut body).
//!
//! Nothing may panic, and the rules the edge promises hold for any input: a forged
//! `x-stacklab-*` header never reaches a member, a session code is always a valid one, a kept
//! request id is a sane token, a static path never leaves the web root.
#![no_main]

use arbitrary::Arbitrary;
use http::{header, HeaderMap, HeaderName, HeaderValue, Request};
use libfuzzer_sys::fuzz_target;
use stacklab_proxy::capture;
use stacklab_proxy::edge::{fuzzing as edge, ConnInfo};
use stacklab_proxy::session::{self, CookieSession};
use stacklab_proxy::statics::fuzzing as statics;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

#[derive(Debug, Arbitrary)]
struct Head<'a> {
    headers: Vec<(Name<'a>, Value<'a>)>,
    uri: &'a str,
    peer_v6: bool,
    peer: [u8; 16],
    port: u16,
    secure: bool,
    quic: bool,
    /// The session the route resolved, if any.
    session: Option<&'a str>,
    /// Whether the handler decided this is an upgrade (it also needs HTTP/1.1).
    upgrade: bool,
    body: &'a [u8],
    max_body: u16,
    micros: u64,
}

/// Header names: the ones the proxy treats specially, or any bytes.
#[derive(Debug, Arbitrary)]
enum Name<'a> {
    Cookie,
    Host,
    XForwardedFor,
    XForwardedHost,
    Connection,
    Upgrade,
    XRequestId,
    TransferEncoding,
    Authorization,
    /// `x-stacklab-` followed by these bytes.
    XStacklab(&'a [u8]),
    Any(&'a [u8]),
}

/// Header values: shaped like a cookie or a token list, or any bytes.
#[derive(Debug, Arbitrary)]
enum Value<'a> {
    /// `<before>; stacklab_session=<code><after>`
    SessionCookie {
        before: &'a str,
        code: &'a str,
        after: &'a str,
    },
    /// Comma-separated tokens, as in `Connection`.
    Tokens(Vec<&'a str>),
    Any(&'a [u8]),
}

impl Name<'_> {
    fn to_header(&self) -> Option<HeaderName> {
        Some(match self {
            Name::Cookie => header::COOKIE,
            Name::Host => header::HOST,
            Name::XForwardedFor => HeaderName::from_static("x-forwarded-for"),
            Name::XForwardedHost => HeaderName::from_static("x-forwarded-host"),
            Name::Connection => header::CONNECTION,
            Name::Upgrade => header::UPGRADE,
            Name::XRequestId => HeaderName::from_static("x-request-id"),
            Name::TransferEncoding => header::TRANSFER_ENCODING,
            Name::Authorization => header::AUTHORIZATION,
            Name::XStacklab(rest) => {
                HeaderName::from_bytes(&[b"x-stacklab-".as_slice(), rest].concat()).ok()?
            }
            Name::Any(b) => HeaderName::from_bytes(b).ok()?,
        })
    }
}

impl Value<'_> {
    fn to_header(&self) -> Option<HeaderValue> {
        match self {
            Value::SessionCookie {
                before,
                code,
                after,
            } => HeaderValue::from_str(&format!("{before}; stacklab_session={code}{after}")).ok(),
            Value::Tokens(t) => HeaderValue::from_str(&t.join(",")).ok(),
            Value::Any(b) => HeaderValue::from_bytes(b).ok(),
        }
    }
}

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
];

fn sane_request_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_')
}

fuzz_target!(|head: Head| {
    let mut headers = HeaderMap::new();
    for (name, value) in &head.headers {
        if let (Some(n), Some(v)) = (name.to_header(), value.to_header()) {
            headers.append(n, v);
        }
    }

    // The session cookie.
    match session::from_headers(&headers) {
        CookieSession::Code(code) => {
            assert!(session::is_code(code), "{code:?}");
            // The code is what follows `stacklab_session=` (quotes around it are tolerated).
            let named = headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|pair| pair.trim_start().strip_prefix("stacklab_session="))
                .any(|v| v.trim_start_matches('"').starts_with(code));
            assert!(named, "{code:?} is not in the cookies");
        }
        CookieSession::Malformed => assert!(headers.contains_key(header::COOKIE)),
        CookieSession::Missing => {}
    }

    // The request as the handler sees it.
    let uri: http::Uri = head
        .uri
        .parse()
        .unwrap_or_else(|_| http::Uri::from_static("/"));
    let mut req = Request::builder().uri(uri.clone()).body(()).unwrap();
    *req.headers_mut() = headers.clone();
    if let Some(host) = edge::request_host(&req) {
        assert_eq!(host, host.to_ascii_lowercase());
        let raw = uri
            .host()
            .map(str::to_owned)
            .or_else(|| headers.get(header::HOST)?.to_str().ok().map(str::to_owned))
            .expect("a host came from somewhere");
        assert!(host.len() <= raw.len(), "{host:?} from {raw:?}");
        assert!(
            raw.to_ascii_lowercase().contains(&host),
            "{host:?} from {raw:?}"
        );
    }
    let size = edge::header_size(&req);
    assert!(
        size >= headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len())
            .sum::<usize>()
    );

    let request_id = edge::request_id(&headers);
    assert!(sane_request_id(&request_id), "{request_id:?}");
    if let Some(given) = headers.get("x-request-id").filter(|v| sane_request_id(v)) {
        assert_eq!(&request_id, given);
    }

    if edge::is_upgrade(&headers) {
        assert!(headers.contains_key(header::UPGRADE));
    }

    // What the member sees.
    let ip = if head.peer_v6 {
        IpAddr::V6(Ipv6Addr::from(head.peer))
    } else {
        IpAddr::V4(Ipv4Addr::new(
            head.peer[0],
            head.peer[1],
            head.peer[2],
            head.peer[3],
        ))
    };
    let conn = ConnInfo::new(SocketAddr::new(ip, head.port), head.secure, head.quic);
    let session = head.session.filter(|s| session::is_code(s));
    let mut out = headers.clone();
    edge::rewrite_request_headers(
        &mut out,
        &uri,
        &conn,
        session.map(str::to_owned),
        request_id.clone(),
        head.upgrade,
    );
    for name in out.keys() {
        let n = name.as_str();
        assert!(
            !n.starts_with("x-stacklab-") || n == "x-stacklab-session",
            "{n} was forwarded"
        );
        assert!(
            !HOP_BY_HOP.contains(&n) || (head.upgrade && name == header::CONNECTION),
            "{n} was forwarded"
        );
        if name == header::UPGRADE {
            assert!(head.upgrade, "upgrade was forwarded");
        }
    }
    match session {
        Some(code) => {
            let sent: Vec<_> = out.get_all("x-stacklab-session").iter().collect();
            assert_eq!(sent, [code.as_bytes()]);
        }
        None => assert!(!out.contains_key("x-stacklab-session")),
    }
    if head.upgrade {
        assert_eq!(out[header::CONNECTION], "upgrade");
    }
    assert_eq!(out.get_all("x-request-id").iter().count(), 1);
    assert_eq!(out["x-request-id"], request_id);
    let xff = out["x-forwarded-for"]
        .to_str()
        .expect("x-forwarded-for is text");
    assert!(
        xff.ends_with(conn.peer_ip.to_str().unwrap()),
        "x-forwarded-for {xff:?} does not end with the peer"
    );
    assert_eq!(
        out["x-forwarded-proto"],
        if head.secure { "https" } else { "http" }
    );
    // x-forwarded-host is the host the proxy routed on, never one the client made up.
    match out.get(header::HOST) {
        Some(host) => assert_eq!(
            out.get_all("x-forwarded-host").iter().collect::<Vec<_>>(),
            [host]
        ),
        None => {
            assert!(uri.authority().is_none());
            assert!(
                !out.contains_key("x-forwarded-host"),
                "the client's x-forwarded-host was forwarded"
            );
        }
    }

    let mut response_headers = headers.clone();
    edge::strip_hop_by_hop(&mut response_headers);
    assert!(response_headers
        .keys()
        .all(|n| !HOP_BY_HOP.contains(&n.as_str()) && n != header::UPGRADE));

    let timing = edge::timing_value("proxy", Duration::from_micros(head.micros));
    assert!(timing.to_str().unwrap().starts_with("proxy;dur="));

    // Static files.
    for path in [uri.path(), head.uri] {
        if let Some(rel) = statics::clean_path(path) {
            assert!(!rel.starts_with('/'), "{rel:?}");
            assert!(!rel.contains('\\') && !rel.contains('\0'), "{rel:?}");
            assert!(
                rel.split('/').all(|s| s != ".." && !s.starts_with('.')),
                "{path:?} left the web root as {rel:?}"
            );
        }
    }

    // What the inspector keeps.
    for (name, value) in capture::redact_headers(&headers) {
        if matches!(
            name.as_str(),
            "cookie" | "authorization" | "proxy-authorization" | "x-stacklab-session"
        ) {
            assert_eq!(value, "[redacted]");
        }
    }
    let max = usize::from(head.max_body);
    let (text, cut) = capture::mask_and_cut(head.body, max);
    assert!(text.len() <= max);
    if !cut {
        assert_eq!(
            text,
            capture::mask_passwords(&String::from_utf8_lossy(head.body))
        );
    }
});
