//! Cache adapters behind one trait: in-process, Redis, Memcached, or none.
//!
//! The service layer speaks in logical keys (`user:42`); each adapter puts the session's
//! `key_prefix` in front, so sessions sharing a server never see each other's keys. Hits and
//! misses are counted by the adapter for this session; evictions and memory come from the
//! engine where it knows them.
//!
//! # Layout
//! - [`memory`]: in-process, bounded in bytes, LRU / LFU / FIFO / TTL-only, switchable live.
//! - [`redis`]: the `redis` crate; policies are the eight classic `maxmemory-policy` values.
//! - [`memcached`]: the `memcache` crate; items listed with `lru_crawler metadump`.
//! - [`connect`] picks one from a [`CacheSpec`].

pub mod memcached;
pub mod memory;
pub mod redis;

use async_trait::async_trait;
use bytes::Bytes;
use serde::Serialize;
use stacklab_types::stack::{CacheEngine, CacheSpec};
use std::sync::Arc;
use std::time::Duration;

/// A policy name as every engine, the cache view and control know it: trimmed and lowercased,
/// so ` ALLKEYS-LFU ` means `allkeys-lfu`. The one normalization; whether the result is a
/// policy of the engine is the engine's to say ([`CacheError::UnknownPolicy`]).
pub fn canonical_policy(name: &str) -> String {
    name.trim().to_ascii_lowercase()
}

/// Items listed by [`Cache::items`] at most.
pub const MAX_LISTED_ITEMS: usize = 20;
/// Bytes of a value shown in a listing.
pub const PREVIEW_BYTES: usize = 120;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The engine could not be reached or failed; the message says which and why.
    #[error("cache unavailable: {0}")]
    Unavailable(String),
    /// A policy this engine does not have.
    #[error("`{policy}` is not a policy of {engine}; choose one of: {choices}")]
    UnknownPolicy {
        engine: &'static str,
        policy: String,
        choices: String,
    },
    /// The change is refused on purpose (shared server, or an engine with one policy).
    #[error("{0}")]
    Refused(String),
}

/// One cached entry as the cache view shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CacheItem {
    /// The logical key, without the session prefix.
    pub key: String,
    /// Time left to live; `None` when the entry does not expire.
    pub ttl_ms: Option<i64>,
    pub bytes: u64,
    /// The start of the value, as text (lossy UTF-8), at most [`PREVIEW_BYTES`].
    pub value_preview: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub bytes: u64,
    pub max_bytes: u64,
}

/// The policy in force, the ones that exist, and whether this session may change it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyInfo {
    pub policy: String,
    pub policies: Vec<String>,
    pub changeable: bool,
    /// Why the policy cannot be changed, or what it means, for a person.
    pub note: Option<String>,
}

#[async_trait]
pub trait Cache: Send + Sync + std::fmt::Debug {
    fn engine(&self) -> CacheEngine;
    async fn get(&self, key: &str) -> Result<Option<Bytes>, CacheError>;
    async fn set(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<(), CacheError>;
    async fn delete(&self, key: &str) -> Result<(), CacheError>;
    /// The session's most recent entries first, at most `limit` (capped at [`MAX_LISTED_ITEMS`]).
    async fn items(&self, limit: usize) -> Result<Vec<CacheItem>, CacheError>;
    async fn stats(&self) -> Result<CacheStats, CacheError>;
    async fn policy(&self) -> Result<PolicyInfo, CacheError>;
    /// Changes the eviction policy; [`CacheError::Refused`] where that would touch others.
    async fn set_policy(&self, policy: &str) -> Result<(), CacheError>;
    /// Removes the session's entries (only those).
    async fn flush(&self) -> Result<(), CacheError>;
}

/// `cache = "none"`: every read misses, nothing is kept.
#[derive(Debug, Default)]
pub struct NoCache;

#[async_trait]
impl Cache for NoCache {
    fn engine(&self) -> CacheEngine {
        CacheEngine::None
    }
    async fn get(&self, _: &str) -> Result<Option<Bytes>, CacheError> {
        Ok(None)
    }
    async fn set(&self, _: &str, _: Bytes, _: Option<Duration>) -> Result<(), CacheError> {
        Ok(())
    }
    async fn delete(&self, _: &str) -> Result<(), CacheError> {
        Ok(())
    }
    async fn items(&self, _: usize) -> Result<Vec<CacheItem>, CacheError> {
        Ok(Vec::new())
    }
    async fn stats(&self) -> Result<CacheStats, CacheError> {
        Ok(CacheStats::default())
    }
    async fn policy(&self) -> Result<PolicyInfo, CacheError> {
        Ok(PolicyInfo {
            policy: "none".into(),
            policies: vec![],
            changeable: false,
            note: Some("no cache: every read goes to the database".into()),
        })
    }
    async fn set_policy(&self, _: &str) -> Result<(), CacheError> {
        Err(CacheError::Refused(
            "this session has no cache, so there is no policy to change".into(),
        ))
    }
    async fn flush(&self) -> Result<(), CacheError> {
        Ok(())
    }
}

/// Opens the cache a session's descriptor names.
pub async fn connect(spec: &CacheSpec) -> Result<Arc<dyn Cache>, CacheError> {
    Ok(match spec.engine {
        CacheEngine::None => Arc::new(NoCache),
        CacheEngine::Memory => Arc::new(memory::MemoryCache::new(spec)?),
        CacheEngine::Redis => Arc::new(redis::RedisCache::connect(spec).await?),
        CacheEngine::Memcached => Arc::new(memcached::MemcachedCache::connect(spec).await?),
    })
}

/// The first bytes of a value as text, for listings.
pub fn preview(value: &[u8]) -> String {
    let cut = &value[..value.len().min(PREVIEW_BYTES)];
    String::from_utf8_lossy(cut).into_owned()
}

/// The keys `cache` lists (at most 20), most recent first: what tests compare.
#[cfg(test)]
pub(crate) async fn listed_keys(cache: &dyn Cache) -> Vec<String> {
    let items = cache.items(20).await.expect("the cache lists its items");
    items.into_iter().map(|i| i.key).collect()
}
