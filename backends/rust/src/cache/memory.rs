//! The in-process cache: a map bounded in bytes, with an eviction policy that can be switched
//! while it runs (LRU, LFU, FIFO, TTL-only).
//!
//! # Why a std `Mutex`
//! Every operation is a handful of hash-map and B-tree updates with no `.await` inside, so the
//! lock is held for microseconds and never across a suspension point. An async mutex would only
//! add a waker and a queue to that (the reasoning of mini-redis `db.rs`). The lock is per cache,
//! so per session: sessions never contend with each other. A poisoned lock is taken over rather
//! than propagated, because nothing inside the critical section can panic half-way through a
//! user's data (no user code runs there) and a cache that refused every read would be worse.
//!
//! # How the victim is found
//! Beside the map sit three ordered indices, so every operation is O(log n):
//! - `recency`: last touch (a logical clock) → key. It gives listings "newest first".
//! - `victims`: the entry's rank under the current policy → key. Its first entry is the next
//!   to evict. Only the policy in force is indexed; switching policy rebuilds it in
//!   O(n log n), which is fine for something a person does by hand.
//! - `expiry`: deadline → key. Expired entries are purged at the start of every operation, so
//!   they never count against the bound, never answer a read and never show in a listing.
//!
//! The logical clock ticks once per write or read, so ranks are unique and ties cannot occur.
//! Time comes from `tokio::time::Instant`, which tests can pause and move.
//!
//! # What is counted
//! The bound counts key bytes plus value bytes, which is what a user stored; the indices' own
//! overhead is not counted. An entry larger than the whole bound is not kept. Evictions count
//! entries removed to make room; expiry is not an eviction.

use super::{preview, Cache, CacheError, CacheItem, CacheStats, PolicyInfo, MAX_LISTED_ITEMS};
use async_trait::async_trait;
use bytes::Bytes;
use stacklab_types::stack::{CacheEngine, CacheSpec};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

/// Bytes the in-process cache holds when the descriptor's `max_bytes` is 0.
pub const DEFAULT_MAX_BYTES: u64 = 1024 * 1024;

/// The policies of the in-process cache, as the API names them.
pub const POLICIES: [&str; 4] = ["lru", "lfu", "fifo", "ttl"];

/// How the in-process cache chooses what to evict when a write would exceed the bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Least recently used (written or read) goes first.
    Lru,
    /// Least frequently used goes first; among equals, the least recently used.
    Lfu,
    /// First written goes first; reads do not matter.
    Fifo,
    /// The entry closest to expiry goes first; entries without a TTL go last, least recently
    /// used first.
    Ttl,
}

impl Policy {
    /// Parses a policy name (`lru`, `lfu`, `fifo`, `ttl`; case and surrounding spaces ignored).
    pub fn parse(name: &str) -> Result<Self, CacheError> {
        match super::canonical_policy(name).as_str() {
            "lru" => Ok(Self::Lru),
            "lfu" => Ok(Self::Lfu),
            "fifo" => Ok(Self::Fifo),
            "ttl" => Ok(Self::Ttl),
            _ => Err(CacheError::UnknownPolicy {
                engine: "the in-process cache",
                policy: name.to_owned(),
                choices: POLICIES.join(", "),
            }),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Lru => "lru",
            Self::Lfu => "lfu",
            Self::Fifo => "fifo",
            Self::Ttl => "ttl",
        }
    }

    /// What the policy does, for a person reading the cache view.
    pub fn meaning(self) -> &'static str {
        match self {
            Self::Lru => "LRU: when full, the entry read or written longest ago is evicted",
            Self::Lfu => {
                "LFU: when full, the entry read or written the fewest times is evicted \
                 (the least recently used among equals)"
            }
            Self::Fifo => "FIFO: when full, the entry written first is evicted; reads do not count",
            Self::Ttl => {
                "TTL: when full, the entry closest to expiry is evicted; entries without a TTL \
                 go last"
            }
        }
    }
}

/// An entry's place in the eviction order: smaller goes first. The derived order puts every
/// `Expires` before every `Order`, which is what TTL-only needs ("no TTL" goes last).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Rank {
    Expires(Instant, u64),
    Order(u64, u64),
}

#[derive(Debug)]
struct Entry {
    value: Bytes,
    expires_at: Option<Instant>,
    /// Clock value of the last write: FIFO order and expiry tie-break.
    written: u64,
    /// Clock value of the last write or read: LRU order and listings.
    touched: u64,
    /// Writes and reads since the key was first stored: LFU order.
    uses: u64,
    size: u64,
}

impl Entry {
    fn rank(&self, policy: Policy) -> Rank {
        match policy {
            Policy::Lru => Rank::Order(0, self.touched),
            Policy::Lfu => Rank::Order(self.uses, self.touched),
            Policy::Fifo => Rank::Order(0, self.written),
            Policy::Ttl => match self.expires_at {
                Some(at) => Rank::Expires(at, self.written),
                None => Rank::Order(0, self.touched),
            },
        }
    }
}

#[derive(Debug)]
struct Inner {
    policy: Policy,
    max_bytes: u64,
    bytes: u64,
    clock: u64,
    entries: HashMap<Arc<str>, Entry>,
    recency: BTreeMap<u64, Arc<str>>,
    victims: BTreeMap<Rank, Arc<str>>,
    expiry: BTreeMap<(Instant, u64), Arc<str>>,
    hits: u64,
    misses: u64,
    evictions: u64,
}

impl Inner {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Takes an entry out of the map and all indices.
    fn take(&mut self, key: &str) -> Option<(Arc<str>, Entry)> {
        let (key, entry) = self.entries.remove_entry(key)?;
        self.recency.remove(&entry.touched);
        self.victims.remove(&entry.rank(self.policy));
        if let Some(at) = entry.expires_at {
            self.expiry.remove(&(at, entry.written));
        }
        self.bytes -= entry.size;
        Some((key, entry))
    }

    /// Puts an entry into the map and all indices.
    fn put(&mut self, key: Arc<str>, entry: Entry) {
        self.recency.insert(entry.touched, key.clone());
        self.victims.insert(entry.rank(self.policy), key.clone());
        if let Some(at) = entry.expires_at {
            self.expiry.insert((at, entry.written), key.clone());
        }
        self.bytes += entry.size;
        self.entries.insert(key, entry);
    }

    /// Drops every entry whose deadline has come.
    fn purge_expired(&mut self, now: Instant) {
        while let Some((&(at, _), key)) = self.expiry.first_key_value() {
            if at > now {
                break;
            }
            let key = key.clone();
            self.take(&key);
        }
    }

    fn get(&mut self, key: &str, now: Instant) -> Option<Bytes> {
        self.purge_expired(now);
        let Some((key, mut entry)) = self.take(key) else {
            self.misses += 1;
            return None;
        };
        self.hits += 1;
        entry.touched = self.tick();
        entry.uses += 1;
        let value = entry.value.clone();
        self.put(key, entry);
        Some(value)
    }

    fn set(&mut self, key: &str, value: Bytes, expires_at: Option<Instant>, now: Instant) {
        self.purge_expired(now);
        let previous = self.take(key);
        let size = (key.len() + value.len()) as u64;
        if size > self.max_bytes {
            // Larger than the whole cache: keeping it would mean evicting everything and still
            // not fitting. The old value (already taken out) is stale, so it goes too.
            return;
        }
        while self.bytes + size > self.max_bytes {
            let Some(victim) = self.victims.first_key_value().map(|(_, k)| k.clone()) else {
                break;
            };
            self.take(&victim);
            self.evictions += 1;
        }
        let clock = self.tick();
        let (key, uses) = match previous {
            Some((key, old)) => (key, old.uses + 1),
            None => (Arc::from(key), 1),
        };
        let entry = Entry {
            value,
            expires_at,
            written: clock,
            touched: clock,
            uses,
            size,
        };
        self.put(key, entry);
    }

    fn set_policy(&mut self, policy: Policy) {
        if policy == self.policy {
            return;
        }
        self.policy = policy;
        self.victims = self
            .entries
            .iter()
            .map(|(key, entry)| (entry.rank(policy), key.clone()))
            .collect();
    }

    fn items(&mut self, limit: usize, now: Instant) -> Vec<CacheItem> {
        self.purge_expired(now);
        self.recency
            .values()
            .rev()
            .take(limit.min(MAX_LISTED_ITEMS))
            .filter_map(|key| {
                let entry = self.entries.get(key)?;
                Some(CacheItem {
                    key: key.to_string(),
                    ttl_ms: entry.expires_at.map(|at| {
                        i64::try_from(at.saturating_duration_since(now).as_millis())
                            .unwrap_or(i64::MAX)
                    }),
                    bytes: entry.size,
                    value_preview: preview(&entry.value),
                })
            })
            .collect()
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.recency.clear();
        self.victims.clear();
        self.expiry.clear();
        self.bytes = 0;
    }
}

/// The in-process cache of one session.
#[derive(Debug)]
pub struct MemoryCache {
    inner: Mutex<Inner>,
    /// Applied when a write names no TTL: the descriptor's `ttl_ms`, or none when that is 0.
    default_ttl: Option<Duration>,
}

impl MemoryCache {
    /// Builds the cache a descriptor asks for: `max_bytes` (0 means [`DEFAULT_MAX_BYTES`]),
    /// `policy` (empty means `lru`) and `ttl_ms` (0 means entries live until evicted).
    pub fn new(spec: &CacheSpec) -> Result<Self, CacheError> {
        let policy = if spec.policy.trim().is_empty() {
            Policy::Lru
        } else {
            Policy::parse(&spec.policy)?
        };
        let max_bytes = if spec.max_bytes == 0 {
            DEFAULT_MAX_BYTES
        } else {
            spec.max_bytes
        };
        Ok(Self {
            inner: Mutex::new(Inner {
                policy,
                max_bytes,
                bytes: 0,
                clock: 0,
                entries: HashMap::new(),
                recency: BTreeMap::new(),
                victims: BTreeMap::new(),
                expiry: BTreeMap::new(),
                hits: 0,
                misses: 0,
                evictions: 0,
            }),
            default_ttl: (spec.ttl_ms > 0).then(|| Duration::from_millis(spec.ttl_ms)),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl Cache for MemoryCache {
    fn engine(&self) -> CacheEngine {
        CacheEngine::Memory
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, CacheError> {
        let now = Instant::now();
        Ok(self.lock().get(key, now))
    }

    /// `ttl: None` (or zero) means the session's `ttl_ms`, or no expiry when that is 0.
    async fn set(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<(), CacheError> {
        let now = Instant::now();
        let ttl = ttl.filter(|t| !t.is_zero()).or(self.default_ttl);
        let expires_at = ttl.and_then(|t| now.checked_add(t));
        self.lock().set(key, value, expires_at, now);
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), CacheError> {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.purge_expired(now);
        inner.take(key);
        Ok(())
    }

    async fn items(&self, limit: usize) -> Result<Vec<CacheItem>, CacheError> {
        let now = Instant::now();
        Ok(self.lock().items(limit, now))
    }

    async fn stats(&self) -> Result<CacheStats, CacheError> {
        let now = Instant::now();
        let mut inner = self.lock();
        inner.purge_expired(now);
        Ok(CacheStats {
            hits: inner.hits,
            misses: inner.misses,
            evictions: inner.evictions,
            bytes: inner.bytes,
            max_bytes: inner.max_bytes,
        })
    }

    async fn policy(&self) -> Result<PolicyInfo, CacheError> {
        let policy = self.lock().policy;
        Ok(PolicyInfo {
            policy: policy.name().into(),
            policies: POLICIES.iter().map(|p| (*p).to_owned()).collect(),
            changeable: true,
            note: Some(policy.meaning().into()),
        })
    }

    async fn set_policy(&self, policy: &str) -> Result<(), CacheError> {
        let policy = Policy::parse(policy)?;
        self.lock().set_policy(policy);
        Ok(())
    }

    async fn flush(&self) -> Result<(), CacheError> {
        self.lock().clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(policy: &str, max_bytes: u64, ttl_ms: u64) -> CacheSpec {
        CacheSpec {
            engine: CacheEngine::Memory,
            url: Default::default(),
            key_prefix: String::new(),
            policy: policy.into(),
            max_bytes,
            ttl_ms,
            shared: false,
        }
    }

    /// Ten bytes per entry: a 2-byte key and an 8-byte value.
    fn val() -> Bytes {
        Bytes::from_static(b"12345678")
    }

    async fn keys(cache: &MemoryCache) -> Vec<String> {
        let mut keys = crate::cache::listed_keys(cache).await;
        keys.sort();
        keys
    }

    #[tokio::test]
    async fn defaults_are_lru_and_one_mebibyte() {
        let cache = MemoryCache::new(&spec("", 0, 0)).unwrap();
        let info = cache.policy().await.unwrap();
        assert_eq!(info.policy, "lru");
        assert_eq!(info.policies, ["lru", "lfu", "fifo", "ttl"]);
        assert!(info.changeable);
        assert_eq!(cache.stats().await.unwrap().max_bytes, DEFAULT_MAX_BYTES);
        assert!(matches!(
            MemoryCache::new(&spec("random", 0, 0)),
            Err(CacheError::UnknownPolicy { .. })
        ));
    }

    #[tokio::test]
    async fn lru_evicts_the_least_recently_used() {
        let cache = MemoryCache::new(&spec("lru", 30, 0)).unwrap();
        for k in ["k1", "k2", "k3"] {
            cache.set(k, val(), None).await.unwrap();
        }
        // k1 is read, so k2 is now the least recently used.
        assert!(cache.get("k1").await.unwrap().is_some());
        cache.set("k4", val(), None).await.unwrap();
        assert_eq!(keys(&cache).await, ["k1", "k3", "k4"]);
        assert_eq!(cache.stats().await.unwrap().evictions, 1);
    }

    #[tokio::test]
    async fn lfu_evicts_the_least_frequently_used() {
        let cache = MemoryCache::new(&spec("lfu", 30, 0)).unwrap();
        for k in ["k1", "k2", "k3"] {
            cache.set(k, val(), None).await.unwrap();
        }
        for _ in 0..3 {
            cache.get("k1").await.unwrap();
        }
        cache.get("k2").await.unwrap();
        // k3 is the most recently written but used once: LRU would keep it, LFU drops it.
        cache.set("k4", val(), None).await.unwrap();
        assert_eq!(keys(&cache).await, ["k1", "k2", "k4"]);
    }

    #[tokio::test]
    async fn fifo_evicts_the_first_written_whatever_was_read() {
        let cache = MemoryCache::new(&spec("fifo", 30, 0)).unwrap();
        for k in ["k1", "k2", "k3"] {
            cache.set(k, val(), None).await.unwrap();
        }
        cache.get("k1").await.unwrap();
        cache.set("k4", val(), None).await.unwrap();
        assert_eq!(keys(&cache).await, ["k2", "k3", "k4"]);
    }

    #[tokio::test]
    async fn ttl_evicts_the_closest_to_expiry_and_no_ttl_last() {
        tokio::time::pause();
        let cache = MemoryCache::new(&spec("ttl", 30, 0)).unwrap();
        cache.set("k1", val(), None).await.unwrap();
        cache
            .set("k2", val(), Some(Duration::from_secs(60)))
            .await
            .unwrap();
        cache
            .set("k3", val(), Some(Duration::from_secs(10)))
            .await
            .unwrap();
        cache
            .set("k4", val(), Some(Duration::from_secs(30)))
            .await
            .unwrap();
        assert_eq!(keys(&cache).await, ["k1", "k2", "k4"]);
        cache
            .set("k5", val(), Some(Duration::from_secs(90)))
            .await
            .unwrap();
        assert_eq!(keys(&cache).await, ["k1", "k2", "k5"]);
        cache
            .set("k6", val(), Some(Duration::from_secs(120)))
            .await
            .unwrap();
        cache
            .set("k7", val(), Some(Duration::from_secs(150)))
            .await
            .unwrap();
        // Only entries with a TTL have gone so far, however old k1 (no TTL) is.
        assert_eq!(keys(&cache).await, ["k1", "k6", "k7"]);
        cache.set("k8", val(), None).await.unwrap();
        assert_eq!(keys(&cache).await, ["k1", "k7", "k8"]);
        cache.set("k9", val(), None).await.unwrap();
        assert_eq!(keys(&cache).await, ["k1", "k8", "k9"]);
        // Nothing with a TTL is left: the least recently used of the rest goes.
        cache.get("k1").await.unwrap();
        cache.set("ka", val(), None).await.unwrap();
        assert_eq!(keys(&cache).await, ["k1", "k9", "ka"]);
        assert_eq!(cache.stats().await.unwrap().evictions, 7);
    }

    #[tokio::test]
    async fn policy_switch_at_run_time_changes_the_next_victim() {
        let cache = MemoryCache::new(&spec("lru", 30, 0)).unwrap();
        for k in ["k1", "k2", "k3"] {
            cache.set(k, val(), None).await.unwrap();
        }
        cache.get("k1").await.unwrap();
        // Under LRU the victim would be k2; under FIFO it is k1.
        cache.set_policy("fifo").await.unwrap();
        assert_eq!(cache.policy().await.unwrap().policy, "fifo");
        cache.set("k4", val(), None).await.unwrap();
        assert_eq!(keys(&cache).await, ["k2", "k3", "k4"]);
        // And back: k2 is now the least recently used.
        cache.set_policy("LRU").await.unwrap();
        cache.get("k3").await.unwrap();
        cache.set("k5", val(), None).await.unwrap();
        assert_eq!(keys(&cache).await, ["k3", "k4", "k5"]);
        let err = cache.set_policy("allkeys-lru").await.unwrap_err();
        assert!(matches!(err, CacheError::UnknownPolicy { .. }), "{err}");
        assert!(err.to_string().contains("lru, lfu, fifo, ttl"), "{err}");
        assert_eq!(cache.policy().await.unwrap().policy, "lru");
    }

    #[tokio::test]
    async fn entries_expire_at_their_ttl() {
        tokio::time::pause();
        let cache = MemoryCache::new(&spec("", 0, 5_000)).unwrap();
        cache.set("default", val(), None).await.unwrap();
        cache
            .set("short", val(), Some(Duration::from_secs(1)))
            .await
            .unwrap();
        cache
            .set("long", val(), Some(Duration::from_secs(60)))
            .await
            .unwrap();
        let ttls: Vec<_> = cache
            .items(20)
            .await
            .unwrap()
            .into_iter()
            .map(|i| (i.key, i.ttl_ms))
            .collect();
        assert_eq!(
            ttls,
            [
                ("long".into(), Some(60_000)),
                ("short".into(), Some(1_000)),
                ("default".into(), Some(5_000))
            ]
        );

        tokio::time::advance(Duration::from_millis(999)).await;
        assert!(cache.get("short").await.unwrap().is_some());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(cache.get("short").await.unwrap().is_none());
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(cache.get("default").await.unwrap().is_none());
        assert_eq!(keys(&cache).await, ["long"]);
        let item = &cache.items(20).await.unwrap()[0];
        assert_eq!(item.ttl_ms, Some(55_000));
        // Expired entries no longer count against the bound.
        assert_eq!(cache.stats().await.unwrap().bytes, 4 + 8);
        assert_eq!(cache.stats().await.unwrap().evictions, 0);
    }

    #[tokio::test]
    async fn without_any_ttl_entries_do_not_expire() {
        tokio::time::pause();
        let cache = MemoryCache::new(&spec("", 0, 0)).unwrap();
        cache.set("k", val(), None).await.unwrap();
        tokio::time::advance(Duration::from_secs(86_400 * 365)).await;
        assert_eq!(cache.get("k").await.unwrap(), Some(val()));
        assert_eq!(cache.items(1).await.unwrap()[0].ttl_ms, None);
    }

    #[tokio::test]
    async fn counts_hits_misses_bytes_and_evictions() {
        let cache = MemoryCache::new(&spec("lru", 25, 0)).unwrap();
        assert!(cache.get("k1").await.unwrap().is_none());
        cache.set("k1", val(), None).await.unwrap();
        assert_eq!(cache.get("k1").await.unwrap(), Some(val()));
        assert_eq!(cache.get("k1").await.unwrap(), Some(val()));
        cache.set("k2", val(), None).await.unwrap();
        cache.set("k3", val(), None).await.unwrap();
        // Overwriting replaces the old size rather than adding to it.
        cache
            .set("k3", Bytes::from_static(b"123"), None)
            .await
            .unwrap();
        assert_eq!(
            cache.stats().await.unwrap(),
            CacheStats {
                hits: 2,
                misses: 1,
                evictions: 1,
                bytes: 10 + 5,
                max_bytes: 25
            }
        );
        // Too big to ever fit: not kept, and nothing is evicted for it.
        cache
            .set("huge", Bytes::from(vec![0u8; 64]), None)
            .await
            .unwrap();
        assert!(cache.get("huge").await.unwrap().is_none());
        cache.delete("k2").await.unwrap();
        cache.delete("absent").await.unwrap();
        let stats = cache.stats().await.unwrap();
        assert_eq!(
            (stats.hits, stats.misses, stats.evictions, stats.bytes),
            (2, 2, 1, 5)
        );
        cache.flush().await.unwrap();
        assert!(cache.items(20).await.unwrap().is_empty());
        assert_eq!(cache.stats().await.unwrap().bytes, 0);
    }

    #[tokio::test]
    async fn items_are_newest_first_capped_with_previews() {
        let cache = MemoryCache::new(&spec("", 0, 0)).unwrap();
        for i in 0..30 {
            cache
                .set(
                    &format!("key{i:02}"),
                    Bytes::from(format!("value {i}")),
                    None,
                )
                .await
                .unwrap();
        }
        // A read makes an entry the most recent one.
        cache.get("key03").await.unwrap();
        let items = cache.items(100).await.unwrap();
        assert_eq!(items.len(), MAX_LISTED_ITEMS);
        let keys: Vec<_> = items.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(&keys[..4], ["key03", "key29", "key28", "key27"]);
        assert_eq!(items[0].value_preview, "value 3");
        assert_eq!(items[0].bytes, 5 + 7);
        assert_eq!(cache.items(2).await.unwrap().len(), 2);

        let long = Bytes::from(vec![b'x'; 500]);
        cache.set("long", long, None).await.unwrap();
        let first = &cache.items(1).await.unwrap()[0];
        assert_eq!(first.value_preview.len(), crate::cache::PREVIEW_BYTES);
        assert_eq!(first.bytes, 504);
    }
}
