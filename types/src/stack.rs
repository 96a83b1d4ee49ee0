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
