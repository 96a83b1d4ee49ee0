//! Route matching: a table built from fuzzed routes and sessions, asked about fuzzed requests
//! (URI, Host header, method, cookie) the way the edge asks it.
//!
//! Checked against a plain restatement of the rules: the route chosen matches the host (exact,
//! `*.suffix`, or any) and the path prefix on a segment boundary, allows the method, and no
//! matching route ranks higher (host first, then the longer prefix; the first wins a tie); no
//! route is chosen only when none matches. A session found by the cookie is the one named.
#![no_main]

use arbitrary::Arbitrary;
use http::{header, Method, Request};
use libfuzzer_sys::fuzz_target;
use stacklab_proxy::config::{RouteConfig, RouteTarget};
use stacklab_proxy::edge::fuzzing as edge;
use stacklab_proxy::metrics::Metrics;
use stacklab_proxy::session::{self, CookieSession};
use stacklab_proxy::table::Routing;
use stacklab_types::routes::{MemberSpec, PoolSpec, RouteUpdate, SessionRoute};

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    routes: Vec<Route<'a>>,
    sessions: Vec<Code<'a>>,
    requests: Vec<Req<'a>>,
}

#[derive(Debug, Arbitrary)]
struct Route<'a> {
    host: Option<Host<'a>>,
    path: Path<'a>,
    methods: Vec<Verb<'a>>,
    target: u8,
}

/// Hosts from a few labels, so that requests and routes meet often, or any text.
#[derive(Debug, Arbitrary)]
enum Host<'a> {
    Labels { wildcard: bool, labels: Vec<u8> },
    Any(&'a str),
}

/// Paths from a few segments (with or without a trailing `/`), or any text.
#[derive(Debug, Arbitrary)]
enum Path<'a> {
    Segments { segments: Vec<u8>, trailing: bool },
    Any(&'a str),
}

#[derive(Debug, Arbitrary)]
enum Verb<'a> {
    Get,
    Post,
    Delete,
    Any(&'a str),
}

#[derive(Debug, Arbitrary)]
enum Code<'a> {
    Known(u8),
    Any(&'a str),
}

#[derive(Debug, Arbitrary)]
struct Req<'a> {
    /// Origin form (`/path`) or absolute (`https://host/path`, as HTTP/2 and HTTP/3 give it).
    absolute: bool,
    uri_host: Option<Host<'a>>,
    port: Option<u16>,
    path: Path<'a>,
    host_header: Option<Host<'a>>,
    method: Verb<'a>,
    cookie: Option<Code<'a>>,
}

const LABELS: [&str; 6] = ["example", "com", "www", "api", "localhost", "EXAMPLE"];
const SEGMENTS: [&str; 7] = ["", "api", "apix", "users", "sessions", "x", "%2e%2e"];
const CODES: [&str; 3] = [
    "7K3QZ9M2XW4R8T6V1N5P0H2J3D",
    "ABCDEFGHJKMNPQRSTVWXYZ0123",
    "0123456789ABCDEF",
];

impl Host<'_> {
    fn text(&self) -> String {
        match self {
            Host::Labels { wildcard, labels } => {
                let mut parts: Vec<&str> = labels
                    .iter()
                    .take(4)
                    .map(|&l| LABELS[usize::from(l) % LABELS.len()])
                    .collect();
                if *wildcard {
                    parts.insert(0, "*");
                }
                parts.join(".")
            }
            Host::Any(s) => (*s).to_owned(),
        }
    }
}

impl Path<'_> {
    fn text(&self) -> String {
        match self {
            Path::Segments { segments, trailing } => {
                let mut p = String::new();
                for &s in segments.iter().take(5) {
                    p.push('/');
                    p.push_str(SEGMENTS[usize::from(s) % SEGMENTS.len()]);
                }
                if *trailing || p.is_empty() {
                    p.push('/');
                }
                p
            }
            Path::Any(s) => (*s).to_owned(),
        }
    }
}

impl Verb<'_> {
    fn method(&self) -> Option<Method> {
        match self {
            Verb::Get => Some(Method::GET),
            Verb::Post => Some(Method::POST),
            Verb::Delete => Some(Method::DELETE),
            Verb::Any(s) => Method::from_bytes(s.as_bytes()).ok(),
        }
    }
}

impl Code<'_> {
    fn text(&self) -> &str {
        match self {
            Code::Known(i) => CODES[usize::from(*i) % CODES.len()],
            Code::Any(s) => s,
        }
    }
}

fn pool(name: &str) -> PoolSpec {
    PoolSpec {
        name: name.into(),
        algorithm: Default::default(),
        protocol: Default::default(),
        members: vec![MemberSpec {
            id: "a".into(),
            addr: "127.0.0.1:1".into(),
            weight: 1,
            draining: false,
        }],
        health: None,
    }
}

/// The rules as the README states them, written out again.
fn host_rank(pattern: Option<&str>, host: &str) -> Option<u8> {
    match pattern {
        None => Some(0),
        Some(p) if p == host => Some(2),
        Some(p) => match p.strip_prefix('*') {
            Some(suffix) if suffix.starts_with('.') && host.ends_with(suffix) => Some(1),
            _ => None,
        },
    }
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    path == prefix
        || (path.starts_with(prefix)
            && (prefix.ends_with('/') || path.as_bytes().get(prefix.len()) == Some(&b'/')))
}

fn matches(r: &RouteConfig, host: &str, path: &str, method: &Method) -> Option<(u8, usize)> {
    let rank = host_rank(r.host.as_deref(), host)?;
    (prefix_matches(&r.path, path) && (r.methods.is_empty() || r.methods.contains(method)))
        .then_some((rank, r.path.len()))
}

fuzz_target!(|input: Input| {
    let routing = Routing::new(Metrics::new());
    let routes: Vec<RouteConfig> = input
        .routes
        .iter()
        .take(16)
        .map(|r| {
            let target = match r.target % 3 {
                0 => RouteTarget::Pool(["a", "b"][usize::from(r.target / 3 % 2)].into()),
                1 => RouteTarget::SessionPool,
                _ => RouteTarget::Static,
            };
            // As config validation makes them: a host of `*` is any host, hosts are lower case.
            RouteConfig {
                host: r
                    .host
                    .as_ref()
                    .map(Host::text)
                    .filter(|h| h != "*")
                    .map(|h| h.to_ascii_lowercase()),
                path: r.path.text(),
                methods: r.methods.iter().filter_map(Verb::method).collect(),
                require_session: target == RouteTarget::SessionPool,
                touches_session: target == RouteTarget::SessionPool,
                captures: false,
                target,
            }
        })
        .collect();
    routing.set_config(&routes, &[pool("a"), pool("b")]);
    for code in input.sessions.iter().take(8) {
        let code = code.text();
        // Routes are kept by id: a valid code's id, or the text as it is (rarely an id).
        let id = if session::is_code(code) {
            stacklab_types::session::id(code)
        } else {
            code.to_owned()
        };
        let accepted = routing
            .apply(RouteUpdate::PutSession {
                session: SessionRoute {
                    id: id.clone(),
                    pool: "a".into(),
                    member: None,
                    transport: None,
                },
            })
            .is_ok();
        assert_eq!(accepted, stacklab_types::session::is_id(&id), "{code:?}");
    }
    let table = routing.load();
    assert_eq!(table.routes.len(), routes.len());

    for r in input.requests.iter().take(16) {
        let path = r.path.text();
        let uri = if r.absolute {
            let host = r.uri_host.as_ref().map(Host::text).unwrap_or_default();
            match r.port {
                Some(p) => format!("https://{host}:{p}{path}"),
                None => format!("https://{host}{path}"),
            }
        } else {
            path
        };
        let Ok(uri) = uri.parse::<http::Uri>() else {
            continue;
        };
        let Some(method) = r.method.method() else {
            continue;
        };
        let mut req = Request::builder().method(method.clone()).uri(uri);
        if let Some(h) = &r.host_header {
            req = req.header(header::HOST, h.text());
        }
        if let Some(c) = &r.cookie {
            req = req.header(
                header::COOKIE,
                format!("a=b; stacklab_session={}", c.text()),
            );
        }
        let Ok(req) = req.body(()) else {
            continue;
        };

        // As `edge::handle` does it.
        let host = edge::request_host(&req).unwrap_or_default();
        let path = req.uri().path();
        let got = table.route(&host, path, &method);

        let expected = routes
            .iter()
            .enumerate()
            .filter_map(|(i, rc)| Some((i, matches(rc, &host, path, &method)?)))
            .fold(
                None,
                |best: Option<(usize, (u8, usize))>, (i, rank)| match best {
                    Some((_, b)) if rank <= b => best,
                    _ => Some((i, rank)),
                },
            );
        match (got, expected) {
            (None, None) => {}
            (Some(route), Some((i, _))) => {
                assert!(
                    std::ptr::eq(route, &table.routes[i]),
                    "{host:?} {path:?} {method}: chose {:?}, expected {:?}",
                    route.cfg,
                    routes[i]
                );
                assert!(prefix_matches(&route.cfg.path, path));
                if let RouteTarget::Pool(name) = &route.cfg.target {
                    assert_eq!(route.pool.as_ref().map(|p| p.name()), Some(name.as_str()));
                }
            }
            (got, expected) => panic!(
                "{host:?} {path:?} {method}: chose {:?}, expected {:?}",
                got.map(|r| &r.cfg),
                expected.map(|(i, _)| &routes[i])
            ),
        }

        if let CookieSession::Code(code) = session::from_headers(req.headers()) {
            let id = stacklab_types::session::id(code);
            if let Some(entry) = table.sessions.get(&id) {
                assert_eq!(entry.route.id, id);
            }
        }
    }
});
