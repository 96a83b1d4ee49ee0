//! The API's errors: one type that renders the JSON error body, with the status it maps to.
//!
//! Every variant says what a person should do next. Engine failures name the engine, never a
//! connection string (those are `Secret`s and are not formatted anywhere).

use bytes::Bytes;
use http::StatusCode;
use stacklab_types::ErrorBody;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    Invalid { field: String, message: String },
    #[error("{message}")]
    BadRequest { message: String },
    #[error("send the body as JSON with `content-type: application/json`")]
    UnsupportedMediaType,
    #[error("no {what} with id {id}")]
    NotFound { what: &'static str, id: String },
    #[error("nothing at {0}")]
    NoRoute(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{field} `{value}` is already taken; choose another")]
    Conflict { field: &'static str, value: String },
    #[error("{0}")]
    Refused(String),
    #[error("this request needs the x-stacklab-session header the proxy adds")]
    SessionMissing,
    #[error("the session is unknown or has expired")]
    SessionExpired,
    /// An internal endpoint was called without a credential.
    #[error("send the runtime credential this instance was started with as `Authorization: Bearer <credential>`")]
    Unauthorized,
    /// An internal endpoint was called with a credential that is not this instance's.
    #[error("the runtime credential is wrong; send the one this instance was started with")]
    Forbidden,
    #[error("the body is larger than {0} bytes")]
    TooLarge(usize),
    /// A bounded resource (hashing, benchmarks) is taken: `503 busy` with `Retry-After`.
    #[error("{0}")]
    Busy(String),
    /// The session runs a benchmark already.
    #[error("this session is running a benchmark already; wait for its result")]
    BenchmarkRunning,
    #[error("{engine} is unavailable: {reason}")]
    Unavailable { engine: String, reason: String },
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Invalid { .. } | ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::NotFound { .. } | ApiError::NoRoute(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict { .. } | ApiError::Refused(_) => StatusCode::CONFLICT,
            ApiError::SessionMissing | ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::SessionExpired => StatusCode::GONE,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable { .. } | ApiError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BenchmarkRunning => StatusCode::CONFLICT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Invalid { .. } => "invalid",
            ApiError::BadRequest { .. } => "bad_request",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::NotFound { .. } | ApiError::NoRoute(_) => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Conflict { .. } => "conflict",
            ApiError::Refused(_) => "refused",
            ApiError::SessionMissing => "session_missing",
            ApiError::SessionExpired => "session_expired",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden => "forbidden",
            ApiError::TooLarge(_) => "body_too_large",
            ApiError::Unavailable { .. } => "unavailable",
            ApiError::Busy(_) => "busy",
            ApiError::BenchmarkRunning => "benchmark_running",
            ApiError::Internal(_) => "internal",
        }
    }

    pub fn body(&self) -> ErrorBody {
        let message = match self {
            ApiError::SessionExpired => {
                "your session has expired; start a new one with POST /api/sessions".to_owned()
            }
            ApiError::Internal(_) => {
                "the backend failed; retry, and report a bug if it persists".to_owned()
            }
            ApiError::NotFound { .. } => format!("{self}; check the id"),
            ApiError::Unavailable { .. } => format!(
                "{self}; retry shortly, and if it stays down re-provision the session \
                 (POST /api/session/reprovision) or start a new one"
            ),
            other => other.to_string(),
        };
        let body = ErrorBody::new(self.code(), message);
        match self {
            ApiError::Invalid { field, .. } => body.with_field(field.clone()),
            ApiError::Conflict { field, .. } => body.with_field(*field),
            _ => body,
        }
    }

    pub fn json(&self) -> Bytes {
        Bytes::from(self.body().to_json())
    }
}

impl From<crate::cache::CacheError> for ApiError {
    fn from(e: crate::cache::CacheError) -> Self {
        use crate::cache::CacheError;
        match e {
            CacheError::Unavailable(reason) => ApiError::Unavailable {
                engine: "the cache".into(),
                reason,
            },
            CacheError::UnknownPolicy { .. } => ApiError::invalid("policy", e.to_string()),
            CacheError::Refused(why) => ApiError::Refused(why),
        }
    }
}
