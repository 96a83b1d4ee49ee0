//! What can go wrong with a request, who is at fault, and the answer a client gets.
//!
//! Every error names its source (pingora's `ErrorSource`): the client (4xx), an upstream (502,
//! 503, 504) or the proxy itself (500). The answer is always the JSON body from
//! [`stacklab_types::ErrorBody`], with a message that says what to do next.

use bytes::Bytes;
use http::{header, Response, StatusCode};
use stacklab_types::ErrorBody;

use crate::body::{full, ClientBodyError, RespBody};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Client,
    Upstream,
    Proxy,
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no route matches {path}")]
    NoRoute { path: String },
    #[error("the request needs a session cookie")]
    SessionMissing,
    #[error("the session is unknown or has expired")]
    SessionExpired,
    #[error("request headers are {size} bytes, over the {limit}-byte limit")]
    HeadersTooLarge { size: usize, limit: usize },
    #[error("request has {count} header fields, over the limit of {limit}")]
    TooManyHeaders { count: usize, limit: usize },
    #[error("request body is over the {limit}-byte limit")]
    BodyTooLarge { limit: u64 },
    #[error("the request body could not be read: {0}")]
    BadBody(String),
    #[error("the client paused its request body for more than {ms} ms")]
    BodyTimeout { ms: u128 },
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("pool {pool} has no member that can take the request")]
    NoMember { pool: String },
    #[error("the route feed has delivered no table yet")]
    NotReady { ms: u128 },
    #[error("pool {pool} is not configured")]
    NoPool { pool: String },
    #[error("could not connect to {member} in pool {pool}")]
    Connect { pool: String, member: String },
    #[error("{member} in pool {pool} failed: {reason}")]
    Upstream {
        pool: String,
        member: String,
        reason: String,
    },
    #[error("{member} in pool {pool} did not answer within {ms} ms")]
    Timeout {
        pool: String,
        member: String,
        ms: u128,
    },
    #[error("not found: {0}")]
    NotFound(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ProxyError {
    pub fn source(&self) -> Source {
        use ProxyError::*;
        match self {
            NoRoute { .. }
            | SessionMissing
            | SessionExpired
            | HeadersTooLarge { .. }
            | TooManyHeaders { .. }
            | BodyTooLarge { .. }
            | BadBody(_)
            | BodyTimeout { .. }
            | BadRequest(_)
            | NotFound(_) => Source::Client,
            NoMember { .. } | NoPool { .. } | Connect { .. } | Upstream { .. } | Timeout { .. } => {
                Source::Upstream
            }
            NotReady { .. } | Internal(_) => Source::Proxy,
        }
    }

    pub fn status(&self) -> StatusCode {
        use ProxyError::*;
        match self {
            NoRoute { .. } | NotFound(_) => StatusCode::NOT_FOUND,
            SessionMissing => StatusCode::UNAUTHORIZED,
            SessionExpired => StatusCode::GONE,
            HeadersTooLarge { .. } | TooManyHeaders { .. } => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BadBody(_) | BadRequest(_) => StatusCode::BAD_REQUEST,
            BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            NoMember { .. } | NoPool { .. } | NotReady { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Connect { .. } | Upstream { .. } => StatusCode::BAD_GATEWAY,
            Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn body(&self) -> ErrorBody {
        use ProxyError::*;
        match self {
            NoRoute { path } => ErrorBody::new("not_found", format!("nothing is served at {path}; check the URL")),
            NotFound(what) => ErrorBody::new("not_found", format!("{what} does not exist; check the URL")),
            SessionMissing => ErrorBody::new(
                "session_missing",
                "this needs a session: create one with POST /api/sessions, then send its stacklab_session cookie",
            ),
            SessionExpired => ErrorBody::new(
                "session_expired",
                "your session has expired or does not exist; start a new one with POST /api/sessions",
            ),
            HeadersTooLarge { size, limit } => ErrorBody::new(
                "headers_too_large",
                format!("the request headers are {size} bytes; send at most {limit} bytes of headers (limits.max_header_bytes)"),
            ),
            TooManyHeaders { count, limit } => ErrorBody::new(
                "headers_too_large",
                format!("the request has {count} header fields; send at most {limit} (all Cookie fields count as one)"),
            ),
            BodyTooLarge { limit } => ErrorBody::new(
                "body_too_large",
                format!("the request body is larger than {limit} bytes (limits.max_body_bytes); send a smaller body"),
            ),
            BadBody(e) => ErrorBody::new("bad_body", format!("the request body could not be read ({e}); send it again, whole and as its headers describe it")),
            BodyTimeout { ms } => ErrorBody::new(
                "request_timeout",
                format!("the request body stopped coming for more than {ms} ms (limits.body_read_timeout_ms); send it again without pausing"),
            ),
            BadRequest(e) => ErrorBody::new("bad_request", e.clone()),
            NoMember { pool } => ErrorBody::new(
                "no_healthy_member",
                format!("no member of pool `{pool}` can take requests right now; retry shortly or add a member"),
            )
            .with_field(pool.clone()),
            NotReady { ms } => ErrorBody::new(
                "not_ready",
                format!("this proxy has had no route table from control within {ms} ms (limits.start_hold_ms), so it cannot tell whether your session is live; retry shortly"),
            ),
            NoPool { pool } => ErrorBody::new(
                "no_pool",
                format!("pool `{pool}` is not configured on this proxy; register it through the admin API or the route feed"),
            )
            .with_field(pool.clone()),
            Connect { pool, member } => ErrorBody::new(
                "upstream_unreachable",
                format!("could not reach member `{member}` of pool `{pool}`; retry"),
            ),
            Upstream { pool, member, .. } => ErrorBody::new(
                "upstream_failed",
                format!("member `{member}` of pool `{pool}` failed while answering; the request may or may not have been applied"),
            ),
            Timeout { pool, member, ms } => ErrorBody::new(
                "upstream_timeout",
                format!("member `{member}` of pool `{pool}` did not answer within {ms} ms (limits.upstream_response_timeout_ms)"),
            ),
            Internal(_) => ErrorBody::new("internal", "the proxy failed; retry, and report a bug if it persists"),
        }
    }

    /// A short label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        use ProxyError::*;
        match self {
            NoRoute { .. } => "no_route",
            NotFound(_) => "not_found",
            SessionMissing => "session_missing",
            SessionExpired => "session_expired",
            HeadersTooLarge { .. } | TooManyHeaders { .. } => "headers_too_large",
            BodyTooLarge { .. } => "body_too_large",
            BadBody(_) => "bad_body",
            BodyTimeout { .. } => "body_timeout",
            BadRequest(_) => "bad_request",
            NoMember { .. } => "no_member",
            NoPool { .. } => "no_pool",
            NotReady { .. } => "not_ready",
            Connect { .. } => "connect",
            Upstream { .. } => "upstream",
            Timeout { .. } => "timeout",
            Internal(_) => "internal",
        }
    }

    /// The answer to a request whose body failed on the client's side.
    pub fn from_client_body(e: &ClientBodyError) -> Self {
        match e {
            ClientBodyError::TooLarge(limit) => ProxyError::BodyTooLarge { limit: *limit },
            ClientBodyError::Timeout(d) => ProxyError::BodyTimeout { ms: d.as_millis() },
            ClientBodyError::Length { .. } | ClientBodyError::Read(_) => {
                ProxyError::BadBody(e.to_string())
            }
        }
    }

    pub fn into_response(self) -> Response<RespBody> {
        json_error(self.status(), &self.body())
    }
}

/// A JSON error response.
pub fn json_error(status: StatusCode, body: &ErrorBody) -> Response<RespBody> {
    json_response(status, Bytes::from(body.to_json()))
}

pub fn json_response(status: StatusCode, body: Bytes) -> Response<RespBody> {
    let mut res = Response::new(full(body));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    res
}
