//! The stack descriptor: what a session chose and where its engines are.
//!
//! Control makes it when a session is created and backends fetch it (cached) to serve the
//! session's requests. Connection strings and keys are [`Secret`]s: a descriptor can be logged
//! with `{:?}` without leaking them.

use crate::Secret;
use serde::{Deserialize, Serialize};

/// API protocol the session's UI speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ApiProtocol {
    #[default]
    Rest,
    Graphql,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DatabaseEngine {
    #[default]
    Sqlite,
    Postgres,
    Mysql,
    Mongodb,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CacheEngine {
    #[default]
    Memory,
    Redis,
    Memcached,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum WritePolicy {
    /// Reads fill the cache; writes invalidate it.
    #[default]
    CacheAside,
    /// Writes update the cache as well as the database.
    WriteThrough,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum PasswordStorage {
    Plaintext,
    Sha256,
    Bcrypt,
    BcryptPepper,
    #[default]
    Argon2id,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Encryption {
    #[default]
    None,
    #[serde(rename = "aes-256-gcm")]
    Aes256Gcm,
}

/// Where the session's database is and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseSpec {
    pub engine: DatabaseEngine,
    /// `sqlite:///path/file.db`, `postgres://...`, `mysql://...`, `mongodb://...`.
    pub url: Secret,
    /// MongoDB database name (SQL engines take it from the URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
}

/// Where the session's cache is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheSpec {
    pub engine: CacheEngine,
    /// `redis://user:pass@host:port/`, or `host:port` for Memcached; empty for memory/none.
    #[serde(default)]
    pub url: Secret,
    /// Prefix of every key the session writes (its keyspace on a shared server).
    #[serde(default)]
    pub key_prefix: String,
    /// Eviction policy: `lru`, `lfu`, `fifo`, `ttl` for memory; a `maxmemory-policy` for Redis.
    #[serde(default)]
    pub policy: String,
    /// Bytes the cache may hold (memory: enforced by us; Redis: `maxmemory` when not shared).
    #[serde(default)]
    pub max_bytes: u64,
    /// Time to live of cached entries, milliseconds.
    #[serde(default)]
    pub ttl_ms: u64,
    /// The server is shared with other sessions: changing its policy would touch them.
    #[serde(default)]
    pub shared: bool,
}

/// Everything a backend needs to serve one session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackDescriptor {
    pub session: String,
    #[serde(default)]
    pub runtime: String,
    #[serde(default)]
    pub protocol: ApiProtocol,
    pub database: DatabaseSpec,
    pub cache: CacheSpec,
    #[serde(default)]
    pub write_policy: WritePolicy,
    #[serde(default)]
    pub password_storage: PasswordStorage,
    #[serde(default)]
    pub encryption: Encryption,
    /// 32 bytes, base64: the key for encryption at rest (and, derived from it, the blind index).
    #[serde(default)]
    pub encryption_key: Secret,
    /// The server secret mixed in before bcrypt for `bcrypt-pepper`.
    #[serde(default)]
    pub pepper: Secret,
}

impl StackDescriptor {
    /// The descriptor as JSON *with* its secrets: only for control's answer to a backend
    /// (`GET /admin/stacks/{code}`, behind the admin token) and for sealing in the registry.
    /// Everywhere else a descriptor serializes with `[redacted]` in their place.
    pub fn to_wire_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("a descriptor serializes");
        v["database"]["url"] = self.database.url.expose().into();
        v["cache"]["url"] = self.cache.url.expose().into();
        v["encryption_key"] = self.encryption_key.expose().into();
        v["pepper"] = self.pepper.expose().into();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_wire_form_carries_secrets() {
        let d = StackDescriptor {
            session: "s".into(),
            runtime: "rust".into(),
            protocol: ApiProtocol::Rest,
            database: DatabaseSpec {
                engine: DatabaseEngine::Postgres,
                url: Secret::new("postgres://u:pw@h/db"),
                database: None,
            },
            cache: CacheSpec {
                engine: CacheEngine::Redis,
                url: Secret::new("redis://u:pw2@h/"),
                key_prefix: "p:".into(),
                policy: "allkeys-lru".into(),
                max_bytes: 1,
                ttl_ms: 1,
                shared: true,
            },
            write_policy: WritePolicy::CacheAside,
            password_storage: PasswordStorage::BcryptPepper,
            encryption: Encryption::Aes256Gcm,
            encryption_key: Secret::new("key"),
            pepper: Secret::new("pepper"),
        };
        let plain = serde_json::to_string(&d).unwrap();
        assert!(
            !plain.contains("pw")
                && !plain.contains(r#""pepper":"pepper""#)
                && plain.contains("[redacted]")
        );
        let wire = d.to_wire_json();
        let back: StackDescriptor = serde_json::from_value(wire).unwrap();
        assert_eq!(back, d);
    }
}
