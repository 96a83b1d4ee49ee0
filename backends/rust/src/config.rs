//! The backend's settings and the input rules they set.
//!
//! Every length limit is here, named, so the API's answer to a too-long value can say which
//! limit it hit.

use crate::error::ApiError;
use stacklab_types::config::{self, KeyProblem};
use std::time::Duration;

/// The limits an input is checked against, and the costs the backend pays.
#[derive(Debug, Clone)]
pub struct Limits {
    pub min_username: usize,
    pub max_username: usize,
    pub max_email: usize,
    pub min_password: usize,
    /// bcrypt reads 72 bytes at most; longer passwords are refused rather than cut silently.
    pub max_password: usize,
    pub max_full_name: usize,
    /// Largest page of a search.
    pub max_page: i64,
    /// Request bodies.
    pub max_body_bytes: usize,
    pub bcrypt_cost: u32,
    /// Operations one `POST /api/analysis/benchmark` may run, reads and writes each.
    pub max_benchmark_ops: u32,
    /// GraphQL: nesting depth, complexity (fields, lists weighted) and field selections
    /// written out (aliases and `__typename` included) a query may have.
    pub graphql_max_depth: usize,
    pub graphql_max_complexity: usize,
    pub graphql_max_fields: usize,
    /// Hashing fields (`verifyPassword`, `createUser`, an `updateUser` setting a password) one
    /// GraphQL document may hold ([`crate::guard`]).
    pub graphql_max_hashes: usize,
    /// Password hashes running at once in this instance, and how long a hash waits for a
    /// turn before the request is answered `503 busy` ([`crate::guard`]).
    pub max_concurrent_hashes: usize,
    pub hash_wait: Duration,
    /// Benchmarks running at once in this instance (one per session in any case).
    pub max_concurrent_benchmarks: usize,
}

/// Hashes at once when the config says nothing: two per core (a hash is CPU-bound, so more
/// only adds memory and latency).
pub fn default_max_concurrent_hashes() -> usize {
    2 * std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// How long a hash waits for a turn when the config says nothing.
pub const DEFAULT_HASH_WAIT: Duration = Duration::from_millis(1000);
/// Hashing fields per GraphQL document when the config says nothing.
pub const DEFAULT_GRAPHQL_MAX_HASHES: usize = 10;
/// Benchmarks at once per instance when the config says nothing.
pub const DEFAULT_MAX_CONCURRENT_BENCHMARKS: usize = 2;

impl Default for Limits {
    fn default() -> Self {
        Self {
            min_username: 3,
            max_username: 32,
            max_email: 254,
            min_password: 8,
            max_password: 72,
            max_full_name: 100,
            max_page: 100,
            max_body_bytes: 64 * 1024,
            bcrypt_cost: crate::password::DEFAULT_BCRYPT_COST,
            max_benchmark_ops: 2000,
            graphql_max_depth: 6,
            graphql_max_complexity: 200,
            graphql_max_fields: 500,
            graphql_max_hashes: DEFAULT_GRAPHQL_MAX_HASHES,
            max_concurrent_hashes: default_max_concurrent_hashes(),
            hash_wait: DEFAULT_HASH_WAIT,
            max_concurrent_benchmarks: DEFAULT_MAX_CONCURRENT_BENCHMARKS,
        }
    }
}

/// How the backend runs.
#[derive(Debug, Clone)]
pub struct BackendConfig {
    pub limits: Limits,
    /// Sessions whose connections are kept open at once; the least recently used is closed past it.
    pub max_sessions: usize,
    /// A session idle this long has its connections closed (they reopen on its next request).
    pub session_idle: Duration,
    /// Database connections per session.
    pub db_connections_per_session: u32,
    /// How long a fetched stack descriptor is trusted before it is fetched again.
    pub descriptor_ttl: Duration,
}

impl Default for BackendConfig {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            max_sessions: 256,
            session_idle: Duration::from_secs(300),
            db_connections_per_session: 4,
            descriptor_ttl: Duration::from_secs(30),
        }
    }
}

impl Limits {
    pub fn username(&self, v: &str) -> Result<String, ApiError> {
        let v = v.trim();
        let n = v.chars().count();
        if n < self.min_username || n > self.max_username {
            return Err(ApiError::invalid(
                "username",
                format!(
                    "a username is {} to {} characters",
                    self.min_username, self.max_username
                ),
            ));
        }
        if !v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        {
            return Err(ApiError::invalid(
                "username",
                "use letters, digits, `_`, `.` or `-` in a username",
            ));
        }
        Ok(v.to_owned())
    }

    pub fn email(&self, v: &str) -> Result<String, ApiError> {
        let v = v.trim();
        let bad = || ApiError::invalid("email", "give an email address like name@example.com");
        if v.is_empty() || v.chars().count() > self.max_email {
            return Err(ApiError::invalid(
                "email",
                format!("an email address is 3 to {} characters", self.max_email),
            ));
        }
        let (local, domain) = v.rsplit_once('@').ok_or_else(bad)?;
        let domain_ok = domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && domain
                .chars()
                .all(|c| c.is_alphanumeric() || c == '.' || c == '-');
        if local.is_empty()
            || local.contains('@')
            || !domain_ok
            || v.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(bad());
        }
        Ok(v.to_owned())
    }

    pub fn password(&self, v: &str) -> Result<(), ApiError> {
        let n = v.chars().count();
        if n < self.min_password || v.len() > self.max_password {
            return Err(ApiError::invalid(
                "password",
                format!(
                    "a password is {} characters to {} bytes",
                    self.min_password, self.max_password
                ),
            ));
        }
        // PostgreSQL text cannot hold NUL, and bcrypt stops reading at one: refused everywhere
        // alike rather than stored on one engine and a 503 on another.
        if v.contains('\0') {
            return Err(ApiError::invalid(
                "password",
                "a password cannot contain the NUL character",
            ));
        }
        Ok(())
    }

    pub fn full_name(&self, v: &str) -> Result<String, ApiError> {
        let v = v.trim();
        if v.chars().count() > self.max_full_name || v.chars().any(char::is_control) {
            return Err(ApiError::invalid(
                "full_name",
                format!(
                    "a full name is at most {} characters, without control characters",
                    self.max_full_name
                ),
            ));
        }
        Ok(v.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_are_checked_and_named() {
        let l = Limits::default();
        assert_eq!(l.username(" Ann_1 ").unwrap(), "Ann_1");
        assert!(
            matches!(l.username("a"), Err(ApiError::Invalid { ref field, .. }) if field == "username")
        );
        assert!(l.username("ann'; DROP TABLE users; --").is_err());
        assert!(l.email("ann@example.com").is_ok());
        for bad in [
            "ann",
            "ann@",
            "@x.io",
            "a b@x.io",
            "ann@x",
            "ann@@x.io",
            "ann@x..",
            "{\"$gt\":\"\"}",
        ] {
            assert!(l.email(bad).is_err(), "{bad}");
        }
        assert!(l.password("short").is_err());
        assert!(l.password(&"x".repeat(73)).is_err());
        assert!(l.password("long enough\0but NUL").is_err());
        assert!(l.password("long enough").is_ok());
    }
}

/// The `[backend]` section of the config file, for `stacklab backend`.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Where the instance listens; port 0 picks a free one (it is registered with control).
    pub addr: std::net::SocketAddr,
    /// Control's admin address, where stack descriptors come from.
    pub control_url: String,
    pub backend: BackendConfig,
}

#[derive(Debug, Default, serde::Deserialize)]
struct RawSection {
    addr: Option<String>,
    control_url: Option<String>,
    max_sessions: Option<usize>,
    session_idle_ms: Option<u64>,
    db_connections_per_session: Option<u32>,
    descriptor_ttl_ms: Option<u64>,
    bcrypt_cost: Option<u32>,
    max_body_bytes: Option<usize>,
    graphql_max_depth: Option<usize>,
    graphql_max_complexity: Option<usize>,
    graphql_max_fields: Option<usize>,
    graphql_max_hashes: Option<usize>,
    max_concurrent_hashes: Option<usize>,
    hash_wait_ms: Option<u64>,
    max_concurrent_benchmarks: Option<usize>,
}

impl ServeConfig {
    /// Validates the `[backend]` section; every problem is returned with its key, unknown keys
    /// too (`stacklab_types::config`, the same for every section; CONTRACT.md §2).
    pub fn from_section(section: Option<&toml::Value>) -> Result<Self, Vec<KeyProblem>> {
        let mut errors = Vec::new();
        let raw: RawSection = config::section("backend", section, &mut errors);
        let addr_text = raw.addr.unwrap_or_else(|| "127.0.0.1:0".to_owned());
        let addr = addr_text.parse().unwrap_or_else(|_| {
            errors.push((
                "backend.addr".to_owned(),
                format!("`{addr_text}` is not `host:port`"),
            ));
            std::net::SocketAddr::from(([127, 0, 0, 1], 0))
        });
        let control_url = raw
            .control_url
            .unwrap_or_else(|| "http://127.0.0.1:9000".to_owned());
        if !control_url.starts_with("http://") {
            errors.push((
                "backend.control_url".to_owned(),
                "must be an http:// URL of control's admin address".to_owned(),
            ));
        }
        let defaults = BackendConfig::default();
        let bcrypt_cost = raw.bcrypt_cost.unwrap_or(defaults.limits.bcrypt_cost);
        if !(4..=16).contains(&bcrypt_cost) {
            errors.push((
                "backend.bcrypt_cost".to_owned(),
                "must be between 4 and 16".to_owned(),
            ));
        }
        let mut positive = |key: &str, v: Option<usize>, d: usize| match v {
            Some(0) => {
                errors.push((format!("backend.{key}"), "must be at least 1".to_owned()));
                d
            }
            other => other.unwrap_or(d),
        };
        let graphql_max_depth = positive(
            "graphql_max_depth",
            raw.graphql_max_depth,
            defaults.limits.graphql_max_depth,
        );
        let graphql_max_complexity = positive(
            "graphql_max_complexity",
            raw.graphql_max_complexity,
            defaults.limits.graphql_max_complexity,
        );
        let graphql_max_fields = positive(
            "graphql_max_fields",
            raw.graphql_max_fields,
            defaults.limits.graphql_max_fields,
        );
        let graphql_max_hashes = positive(
            "graphql_max_hashes",
            raw.graphql_max_hashes,
            defaults.limits.graphql_max_hashes,
        );
        let max_concurrent_hashes = positive(
            "max_concurrent_hashes",
            raw.max_concurrent_hashes,
            defaults.limits.max_concurrent_hashes,
        );
        let max_concurrent_benchmarks = positive(
            "max_concurrent_benchmarks",
            raw.max_concurrent_benchmarks,
            defaults.limits.max_concurrent_benchmarks,
        );
        if !errors.is_empty() {
            return Err(errors);
        }
        let serve = ServeConfig {
            addr,
            control_url,
            backend: BackendConfig {
                limits: Limits {
                    bcrypt_cost,
                    max_body_bytes: raw.max_body_bytes.unwrap_or(defaults.limits.max_body_bytes),
                    graphql_max_depth,
                    graphql_max_complexity,
                    graphql_max_fields,
                    graphql_max_hashes,
                    max_concurrent_hashes,
                    hash_wait: raw
                        .hash_wait_ms
                        .map_or(defaults.limits.hash_wait, Duration::from_millis),
                    max_concurrent_benchmarks,
                    ..defaults.limits
                },
                max_sessions: raw.max_sessions.unwrap_or(defaults.max_sessions).max(1),
                session_idle: raw
                    .session_idle_ms
                    .map_or(defaults.session_idle, Duration::from_millis),
                db_connections_per_session: raw
                    .db_connections_per_session
                    .unwrap_or(defaults.db_connections_per_session),
                descriptor_ttl: raw
                    .descriptor_ttl_ms
                    .map_or(defaults.descriptor_ttl, Duration::from_millis),
            },
        };
        Ok(serve)
    }
}
