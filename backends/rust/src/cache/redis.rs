//! The Redis cache: the `redis` crate over one auto-reconnecting multiplexed connection
//! ([`ConnectionManager`]) per session.
//!
//! Keys are `{key_prefix}{key}`, so sessions that share a server stay apart; every listing and
//! flush is a `SCAN MATCH {prefix}*`, never `KEYS` and never `FLUSHDB`, because the keyspace may
//! hold other sessions' keys. Policies are the server's own `maxmemory-policy`: a session with
//! a server of its own may change it (and gets `maxmemory` set to its `max_bytes`, so eviction
//! policies have something to do); a session on a shared server may not, because the change
//! would apply to every session on it.
//!
//! # What the numbers mean
//! Hits and misses are this adapter's own reads. Evictions (`evicted_keys`), bytes
//! (`used_memory`) and the bound (`maxmemory`, 0 = unlimited) are the server's, so on a shared
//! server they cover everyone. Where the Redis user may not run `CONFIG` (an ACL, or a managed
//! service), the bound reads as 0 and the policy view says why it cannot be read or changed.
//!
//! # Listing
//! `items` scans at most [`ITEMS_SCAN_BUDGET`] keys, then orders the session's keys by
//! `OBJECT IDLETIME` (seconds since last read or write) and, among equals, by the TTL left
//! (written later = more left). Under an LFU policy Redis keeps no idle time, so the order is
//! by TTL left alone. `OBJECT`, `PTTL` and `MEMORY USAGE` do not count as an access; the
//! preview (`GETRANGE`) does, before Redis 7.2 offers `CLIENT NO-TOUCH`.

use super::{
    preview, Cache, CacheError, CacheItem, CacheStats, PolicyInfo, MAX_LISTED_ITEMS, PREVIEW_BYTES,
};
use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Value};
use stacklab_types::stack::{CacheEngine, CacheSpec};
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The eight classic `maxmemory-policy` values.
pub const POLICIES: [&str; 8] = [
    "noeviction",
    "allkeys-lru",
    "allkeys-lfu",
    "allkeys-random",
    "volatile-lru",
    "volatile-lfu",
    "volatile-random",
    "volatile-ttl",
];

/// Keys examined by one `items` call at most, so a listing on a large shared server stays cheap.
pub const ITEMS_SCAN_BUDGET: usize = 5_000;
/// `COUNT` hint of each `SCAN` round trip.
const SCAN_COUNT: usize = 500;
/// Keys removed per `UNLINK` during a flush.
const UNLINK_BATCH: usize = 500;
/// How long connecting, and each command, may take before the cache counts as unavailable.
pub const TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait before the one retry of a failed (re)connection, milliseconds.
const RETRY_MAX_DELAY_MS: u64 = 500;

const SHARED_REFUSAL: &str = "this Redis server is shared by other sessions: its \
    maxmemory-policy applies to every key on it, so changing it would change eviction for \
    everyone. Start a session with its own Redis to try the policies";
const CONFIG_DENIED: &str = "the Redis user may not run CONFIG (an ACL or a managed \
    service), so the maxmemory-policy in force cannot be read or changed from here";

/// The Redis cache of one session.
pub struct RedisCache {
    conn: ConnectionManager,
    /// `host:port`, for messages: never the URL, which may hold a password.
    endpoint: String,
    prefix: String,
    /// `SCAN MATCH` pattern: the prefix with glob characters escaped, then `*`.
    pattern: String,
    shared: bool,
    /// The descriptor's policy: reported when the server may not be asked.
    wanted_policy: String,
    default_ttl: Option<Duration>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisCache")
            .field("endpoint", &self.endpoint)
            .field("prefix", &self.prefix)
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

impl RedisCache {
    /// Connects to `spec.url` (`redis://[user:password@]host:port[/db]`). When the server is
    /// the session's own (`shared = false`), sets `maxmemory` to `max_bytes` (if non-zero) and
    /// `maxmemory-policy` to `policy` (if given); a user without `CONFIG` rights gets a warning
    /// in the log, not an error, as the cache itself still works.
    pub async fn connect(spec: &CacheSpec) -> Result<Self, CacheError> {
        let wanted_policy = super::canonical_policy(&spec.policy);
        if !wanted_policy.is_empty() {
            parse_policy(&wanted_policy)?;
        }
        // The crate's parse errors may quote the URL, so they are not passed on.
        let client = redis::Client::open(spec.url.expose()).map_err(|_| {
            CacheError::Unavailable(
                "the Redis URL is not valid; expected redis://[user:password@]host:port[/db]"
                    .into(),
            )
        })?;
        let endpoint = client.get_connection_info().addr.to_string();
        // The crate's default back-off (factor 100 over a 1 s minimum, six times) would keep a
        // request waiting for minutes on a dead server; one quick retry is enough here, as the
        // next request tries again anyway.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(TIMEOUT)
            .set_response_timeout(TIMEOUT)
            .set_factor(2)
            .set_max_delay(RETRY_MAX_DELAY_MS)
            .set_number_of_retries(1);
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| unavailable(&endpoint, "connect", &e))?;
        let cache = Self {
            conn,
            pattern: format!("{}*", escape_glob(&spec.key_prefix)),
            prefix: spec.key_prefix.clone(),
            shared: spec.shared,
            wanted_policy,
            default_ttl: (spec.ttl_ms > 0).then(|| Duration::from_millis(spec.ttl_ms)),
            endpoint,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        };
        if !cache.shared {
            if spec.max_bytes > 0 {
                cache
                    .configure("maxmemory", &spec.max_bytes.to_string())
                    .await?;
            }
            if !cache.wanted_policy.is_empty() {
                cache
                    .configure("maxmemory-policy", &cache.wanted_policy)
                    .await?;
            }
        }
        Ok(cache)
    }

    /// `CONFIG SET` at connect time; a refusal by the server is logged, not fatal.
    async fn configure(&self, name: &str, value: &str) -> Result<(), CacheError> {
        match self.config_set(name, value).await {
            Ok(()) => Ok(()),
            Err(e) if is_denied(&e) => {
                tracing::warn!(endpoint = %self.endpoint, %name, "cannot set Redis {name}: {e}");
                Ok(())
            }
            Err(e) => Err(self.unavailable("CONFIG SET", &e)),
        }
    }

    async fn config_set(&self, name: &str, value: &str) -> Result<(), RedisError> {
        redis::cmd("CONFIG")
            .arg("SET")
            .arg(name)
            .arg(value)
            .query_async::<()>(&mut self.conn.clone())
            .await
    }

    async fn config_get(&self, name: &str) -> Result<Option<String>, RedisError> {
        let pairs: HashMap<String, String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg(name)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(pairs.get(name).cloned())
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn unavailable(&self, what: &str, e: &RedisError) -> CacheError {
        unavailable(&self.endpoint, what, e)
    }

    /// One `SCAN` round trip over the session's keys.
    async fn scan_page(&self, cursor: u64) -> Result<(u64, Vec<Vec<u8>>), CacheError> {
        redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&self.pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| self.unavailable("SCAN", &e))
    }

    /// Sends a pipeline and returns each reply as it came, errors included, so one refused
    /// command (say `MEMORY USAGE` under an ACL) does not hide the others' answers.
    async fn replies(
        &self,
        pipe: &redis::Pipeline,
        count: usize,
    ) -> Result<Vec<Value>, CacheError> {
        if count == 0 {
            return Ok(Vec::new());
        }
        self.conn
            .clone()
            .send_packed_commands(pipe, 0, count)
            .await
            .map_err(|e| self.unavailable("pipeline", &e))
    }
}

#[async_trait]
impl Cache for RedisCache {
    fn engine(&self) -> CacheEngine {
        CacheEngine::Redis
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, CacheError> {
        let value: Option<Vec<u8>> = redis::cmd("GET")
            .arg(self.key(key))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| self.unavailable("GET", &e))?;
        let counter = if value.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(value.map(Bytes::from))
    }

    /// `ttl: None` (or zero) means the session's `ttl_ms`, or no expiry when that is 0.
    async fn set(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<(), CacheError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(key)).arg(value.as_ref());
        if let Some(ttl) = ttl.filter(|t| !t.is_zero()).or(self.default_ttl) {
            cmd.arg("PX")
                .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1));
        }
        cmd.query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(|e| self.unavailable("SET", &e))
    }

    async fn delete(&self, key: &str) -> Result<(), CacheError> {
        redis::cmd("DEL")
            .arg(self.key(key))
            .query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(|e| self.unavailable("DEL", &e))
    }

    async fn items(&self, limit: usize) -> Result<Vec<CacheItem>, CacheError> {
        let limit = limit.min(MAX_LISTED_ITEMS);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut keys = Vec::new();
        let (mut cursor, mut examined) = (0u64, 0usize);
        loop {
            let (next, page) = self.scan_page(cursor).await?;
            keys.extend(page);
            examined += SCAN_COUNT;
            cursor = next;
            if cursor == 0 || examined >= ITEMS_SCAN_BUDGET {
                break;
            }
        }
        // SCAN may return a key twice.
        keys.sort_unstable();
        keys.dedup();

        let mut pipe = redis::pipe();
        for key in &keys {
            pipe.cmd("OBJECT")
                .arg("IDLETIME")
                .arg(key)
                .cmd("PTTL")
                .arg(key);
        }
        let replies = self.replies(&pipe, keys.len() * 2).await?;
        // (idle seconds, or MAX when Redis keeps none; TTL left in ms, -1 = none; key)
        let mut ranked: Vec<(i64, i64, Vec<u8>)> = keys
            .into_iter()
            .zip(replies.chunks(2))
            .filter_map(|(key, r)| {
                let pttl = int(&r[1])?;
                // -2: the key expired or was deleted since the scan.
                (pttl != -2).then(|| (int(&r[0]).unwrap_or(i64::MAX), pttl, key))
            })
            .collect();
        let left = |pttl: i64| if pttl < 0 { i64::MAX } else { pttl };
        ranked.sort_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| left(b.1).cmp(&left(a.1)))
                .then_with(|| a.2.cmp(&b.2))
        });
        ranked.truncate(limit);

        let mut pipe = redis::pipe();
        let last = i64::try_from(PREVIEW_BYTES).unwrap_or(i64::MAX) - 1;
        for (_, _, key) in &ranked {
            pipe.cmd("MEMORY")
                .arg("USAGE")
                .arg(key)
                .cmd("STRLEN")
                .arg(key)
                .cmd("GETRANGE")
                .arg(key)
                .arg(0)
                .arg(last);
        }
        let replies = self.replies(&pipe, ranked.len() * 3).await?;
        Ok(ranked
            .into_iter()
            .zip(replies.chunks(3))
            .map(|((_, pttl, key), r)| {
                let bytes = int(&r[0]).or_else(|| int(&r[1])).unwrap_or(0);
                let value = match &r[2] {
                    Value::BulkString(b) => preview(b),
                    _ => String::new(),
                };
                let logical = key.get(self.prefix.len()..).unwrap_or(&key[..]);
                CacheItem {
                    key: String::from_utf8_lossy(logical).into_owned(),
                    ttl_ms: (pttl >= 0).then_some(pttl),
                    bytes: u64::try_from(bytes).unwrap_or(0),
                    value_preview: value,
                }
            })
            .collect())
    }

    async fn stats(&self) -> Result<CacheStats, CacheError> {
        let (info_stats, info_memory): (String, String) = redis::pipe()
            .cmd("INFO")
            .arg("stats")
            .cmd("INFO")
            .arg("memory")
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| self.unavailable("INFO", &e))?;
        let max_bytes = match self.config_get("maxmemory").await {
            Ok(v) => v.and_then(|v| v.parse().ok()).unwrap_or(0),
            Err(e) if is_denied(&e) => 0,
            Err(e) => return Err(self.unavailable("CONFIG GET", &e)),
        };
        Ok(CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: info_field(&info_stats, "evicted_keys").unwrap_or(0),
            bytes: info_field(&info_memory, "used_memory").unwrap_or(0),
            max_bytes,
        })
    }

    async fn policy(&self) -> Result<PolicyInfo, CacheError> {
        let policies = POLICIES.iter().map(|p| (*p).to_owned()).collect();
        match self.config_get("maxmemory-policy").await {
            Ok(policy) => {
                let policy = policy.unwrap_or_default();
                let note = if self.shared {
                    SHARED_REFUSAL.to_owned()
                } else {
                    meaning(&policy).to_owned()
                };
                Ok(PolicyInfo {
                    policy,
                    policies,
                    changeable: !self.shared,
                    note: Some(note),
                })
            }
            Err(e) if is_denied(&e) => Ok(PolicyInfo {
                policy: if self.wanted_policy.is_empty() {
                    "unknown".into()
                } else {
                    self.wanted_policy.clone()
                },
                policies,
                changeable: false,
                // On a shared server the reason that matters is the sharing, not the ACL.
                note: Some(
                    if self.shared {
                        SHARED_REFUSAL
                    } else {
                        CONFIG_DENIED
                    }
                    .into(),
                ),
            }),
            Err(e) => Err(self.unavailable("CONFIG GET", &e)),
        }
    }

    async fn set_policy(&self, policy: &str) -> Result<(), CacheError> {
        let policy = parse_policy(policy)?;
        if self.shared {
            return Err(CacheError::Refused(SHARED_REFUSAL.into()));
        }
        match self.config_set("maxmemory-policy", policy).await {
            Ok(()) => Ok(()),
            Err(e) if is_denied(&e) => Err(CacheError::Refused(CONFIG_DENIED.into())),
            Err(e) => Err(self.unavailable("CONFIG SET", &e)),
        }
    }

    /// Scans to the end (no budget: every key of the session must go), unlinking page by page.
    async fn flush(&self) -> Result<(), CacheError> {
        if self.prefix.is_empty() && self.shared {
            return Err(CacheError::Refused(
                "this session has no key prefix on a shared Redis: a flush would delete other \
                 sessions' keys"
                    .into(),
            ));
        }
        let mut cursor = 0u64;
        loop {
            let (next, keys) = self.scan_page(cursor).await?;
            for batch in keys.chunks(UNLINK_BATCH) {
                redis::cmd("UNLINK")
                    .arg(batch)
                    .query_async::<()>(&mut self.conn.clone())
                    .await
                    .map_err(|e| self.unavailable("UNLINK", &e))?;
            }
            cursor = next;
            if cursor == 0 {
                return Ok(());
            }
        }
    }
}

fn parse_policy(name: &str) -> Result<&'static str, CacheError> {
    let wanted = super::canonical_policy(name);
    POLICIES
        .iter()
        .copied()
        .find(|p| *p == wanted)
        .ok_or_else(|| CacheError::UnknownPolicy {
            engine: "Redis",
            policy: name.to_owned(),
            choices: POLICIES.join(", "),
        })
}

/// What a `maxmemory-policy` does, for a person reading the cache view.
fn meaning(policy: &str) -> &'static str {
    match policy {
        "noeviction" => "noeviction: when full, writes fail and nothing is evicted",
        "allkeys-lru" => {
            "allkeys-lru: when full, evicts the (approximately) least recently used key"
        }
        "allkeys-lfu" => {
            "allkeys-lfu: when full, evicts the (approximately) least frequently used key"
        }
        "allkeys-random" => "allkeys-random: when full, evicts a random key",
        "volatile-lru" => {
            "volatile-lru: when full, evicts the least recently used key among those with a TTL"
        }
        "volatile-lfu" => {
            "volatile-lfu: when full, evicts the least frequently used key among those with a TTL"
        }
        "volatile-random" => {
            "volatile-random: when full, evicts a random key among those with a TTL"
        }
        "volatile-ttl" => "volatile-ttl: when full, evicts the key with a TTL closest to expiry",
        _ => "a policy this adapter does not know",
    }
}

/// The Redis user may not run the command: an ACL (`NOPERM`) or a renamed-away command.
fn is_denied(e: &RedisError) -> bool {
    e.code() == Some("NOPERM")
        || e.detail()
            .is_some_and(|d| d.contains("unknown command") || d.contains("NOPERM"))
}

fn unavailable(endpoint: &str, what: &str, e: &RedisError) -> CacheError {
    CacheError::Unavailable(format!("Redis at {endpoint}: {what} failed: {e}"))
}

/// Escapes `*`, `?`, `[`, `]` and `\` so a prefix matches only itself in `SCAN MATCH`.
fn escape_glob(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len());
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        _ => None,
    }
}

/// A numeric `name:value` line of an `INFO` section.
fn info_field(info: &str, name: &str) -> Option<u64> {
    info.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k == name).then(|| v.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use stacklab_types::Secret;

    /// The test server's URL, or `None` (skip) when it is not set and services are optional.
    fn server_url() -> Option<String> {
        stacklab_testkit::engine_var("STACKLAB_TEST_REDIS_URL")
    }

    fn spec(url: &str, prefix: &str, shared: bool) -> CacheSpec {
        CacheSpec {
            engine: CacheEngine::Redis,
            url: Secret::new(url),
            key_prefix: prefix.into(),
            policy: String::new(),
            max_bytes: 0,
            ttl_ms: 0,
            shared,
        }
    }

    fn unique_prefix() -> String {
        format!("test:{:016x}:", rand::random::<u64>())
    }

    /// A connection of the test's own, to see what Redis itself says.
    async fn admin(url: &str) -> redis::aio::MultiplexedConnection {
        redis::Client::open(url)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    async fn config_get(conn: &mut redis::aio::MultiplexedConnection, name: &str) -> String {
        let pairs: HashMap<String, String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg(name)
            .query_async(conn)
            .await
            .unwrap();
        pairs[name].clone()
    }

    #[test]
    fn prefixes_are_escaped_for_scan_match() {
        assert_eq!(escape_glob("s:1:"), "s:1:");
        assert_eq!(escape_glob(r"a*b?[c]\"), r"a\*b\?\[c\]\\");
        assert!(matches!(
            parse_policy("bogus"),
            Err(CacheError::UnknownPolicy { .. })
        ));
        assert_eq!(parse_policy(" Allkeys-LFU ").unwrap(), "allkeys-lfu");
        assert_eq!(
            info_field("# Stats\r\nevicted_keys:7\r\n", "evicted_keys"),
            Some(7)
        );
    }

    #[tokio::test]
    async fn connect_errors_name_host_and_port_but_never_the_password() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("redis://:hunter2secret@127.0.0.1:{port}/");
        let err = RedisCache::connect(&spec(&url, "p:", false))
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
        assert!(!msg.contains("hunter2secret"), "{msg}");
        let err = RedisCache::connect(&spec("redis://:hunter2secret@[bad", "p:", false))
            .await
            .unwrap_err();
        assert!(!err.to_string().contains("hunter2secret"), "{err}");
    }

    #[tokio::test]
    async fn set_get_delete_and_flush_stay_within_the_prefix() {
        let Some(url) = server_url() else { return };
        let (pa, pb) = (unique_prefix(), unique_prefix());
        let a = RedisCache::connect(&spec(&url, &pa, true)).await.unwrap();
        let b = RedisCache::connect(&spec(&url, &pb, true)).await.unwrap();

        a.set("user:1", Bytes::from_static(b"alice"), None)
            .await
            .unwrap();
        b.set("user:2", Bytes::from_static(b"bob"), None)
            .await
            .unwrap();
        assert_eq!(
            a.get("user:1").await.unwrap(),
            Some(Bytes::from_static(b"alice"))
        );
        assert_eq!(a.get("user:2").await.unwrap(), None);
        assert_eq!(b.get("user:1").await.unwrap(), None);

        // The key Redis holds is the prefixed one.
        let mut conn = admin(&url).await;
        let raw: Option<String> = redis::cmd("GET")
            .arg(format!("{pa}user:1"))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(raw.as_deref(), Some("alice"));

        let listed = crate::cache::listed_keys(&a).await;
        assert_eq!(listed, ["user:1"]);

        a.delete("user:1").await.unwrap();
        assert_eq!(a.get("user:1").await.unwrap(), None);
        let stats = a.stats().await.unwrap();
        assert_eq!((stats.hits, stats.misses), (1, 2));
        assert!(stats.bytes > 0);

        for i in 0..5 {
            a.set(&format!("k{i}"), Bytes::from_static(b"v"), None)
                .await
                .unwrap();
        }
        a.flush().await.unwrap();
        assert!(a.items(20).await.unwrap().is_empty());
        assert_eq!(
            b.get("user:2").await.unwrap(),
            Some(Bytes::from_static(b"bob"))
        );
        b.flush().await.unwrap();
        assert_eq!(b.get("user:2").await.unwrap(), None);
    }

    #[tokio::test]
    async fn items_show_ttl_size_and_preview_most_recent_first() {
        let Some(url) = server_url() else { return };
        let prefix = unique_prefix();
        let mut s = spec(&url, &prefix, true);
        s.ttl_ms = 60_000;
        let cache = RedisCache::connect(&s).await.unwrap();
        cache
            .set("first", Bytes::from_static(b"x"), Some(Duration::ZERO))
            .await
            .unwrap();
        cache
            .set(
                "second",
                Bytes::from(vec![b'y'; 300]),
                Some(Duration::from_secs(70)),
            )
            .await
            .unwrap();
        cache
            .set(
                "third",
                Bytes::from_static(b"third"),
                Some(Duration::from_secs(100)),
            )
            .await
            .unwrap();

        let items = cache.items(20).await.unwrap();
        let keys: Vec<_> = items.iter().map(|i| i.key.as_str()).collect();
        // Idle times have a resolution of a second; within one, the TTL left breaks the tie.
        assert_eq!(keys, ["third", "second", "first"]);
        let third = &items[0];
        assert!(
            third.ttl_ms.is_some_and(|t| t > 90_000 && t <= 100_000),
            "{third:?}"
        );
        assert_eq!(third.value_preview, "third");
        assert!(third.bytes > 0);
        let second = &items[1];
        assert_eq!(second.value_preview.len(), PREVIEW_BYTES);
        assert!(second.bytes >= 300, "{second:?}");
        // A zero TTL means the session's default (60 s).
        let first = &items[2];
        assert!(
            first.ttl_ms.is_some_and(|t| t > 50_000 && t <= 60_000),
            "{first:?}"
        );
        assert_eq!(cache.items(1).await.unwrap().len(), 1);

        let mut conn = admin(&url).await;
        let pttl: i64 = redis::cmd("PTTL")
            .arg(format!("{prefix}third"))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(pttl > 90_000);
        cache.flush().await.unwrap();
    }

    #[tokio::test]
    async fn items_list_at_most_twenty() {
        let Some(url) = server_url() else { return };
        let cache = RedisCache::connect(&spec(&url, &unique_prefix(), true))
            .await
            .unwrap();
        for i in 0..25 {
            cache
                .set(&format!("k{i}"), Bytes::from_static(b"v"), None)
                .await
                .unwrap();
        }
        assert_eq!(cache.items(100).await.unwrap().len(), MAX_LISTED_ITEMS);
        cache.flush().await.unwrap();
    }

    #[tokio::test]
    async fn policy_switch_is_visible_in_redis_config_and_maxmemory_is_set() {
        let Some(url) = server_url() else { return };
        let mut conn = admin(&url).await;
        let (old_policy, old_max) = (
            config_get(&mut conn, "maxmemory-policy").await,
            config_get(&mut conn, "maxmemory").await,
        );

        let mut s = spec(&url, &unique_prefix(), false);
        s.max_bytes = 512 * 1024 * 1024;
        s.policy = "allkeys-lru".into();
        let cache = RedisCache::connect(&s).await.unwrap();
        assert_eq!(
            config_get(&mut conn, "maxmemory").await,
            (512 * 1024 * 1024).to_string()
        );
        assert_eq!(
            config_get(&mut conn, "maxmemory-policy").await,
            "allkeys-lru"
        );
        assert_eq!(cache.stats().await.unwrap().max_bytes, 512 * 1024 * 1024);

        cache.set_policy("volatile-ttl").await.unwrap();
        assert_eq!(
            config_get(&mut conn, "maxmemory-policy").await,
            "volatile-ttl"
        );
        let info = cache.policy().await.unwrap();
        assert_eq!(info.policy, "volatile-ttl");
        assert!(info.changeable);
        assert_eq!(info.policies.len(), 8);

        let err = cache.set_policy("lru").await.unwrap_err();
        assert!(matches!(err, CacheError::UnknownPolicy { .. }), "{err}");
        assert_eq!(
            config_get(&mut conn, "maxmemory-policy").await,
            "volatile-ttl"
        );

        // Under LFU Redis keeps no idle time: listing still works, ordered by TTL left.
        cache.set_policy("allkeys-lfu").await.unwrap();
        assert_eq!(
            config_get(&mut conn, "maxmemory-policy").await,
            "allkeys-lfu"
        );
        cache
            .set("a", Bytes::from_static(b"1"), Some(Duration::from_secs(10)))
            .await
            .unwrap();
        cache
            .set("b", Bytes::from_static(b"2"), Some(Duration::from_secs(20)))
            .await
            .unwrap();
        let keys = crate::cache::listed_keys(&cache).await;
        assert_eq!(keys, ["b", "a"]);
        cache.flush().await.unwrap();

        redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory-policy")
            .arg(&old_policy)
            .exec_async(&mut conn)
            .await
            .unwrap();
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory")
            .arg(&old_max)
            .exec_async(&mut conn)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_shared_server_refuses_a_policy_change() {
        let Some(url) = server_url() else { return };
        let mut conn = admin(&url).await;
        let before = config_get(&mut conn, "maxmemory-policy").await;
        let cache = RedisCache::connect(&spec(&url, &unique_prefix(), true))
            .await
            .unwrap();
        let err = cache.set_policy("allkeys-random").await.unwrap_err();
        assert!(matches!(err, CacheError::Refused(_)), "{err}");
        assert!(
            err.to_string().contains("shared by other sessions"),
            "{err}"
        );
        let info = cache.policy().await.unwrap();
        assert!(!info.changeable);
        assert!(info.note.unwrap().contains("everyone"));
        // Nothing changed on the server.
        assert_eq!(config_get(&mut conn, "maxmemory-policy").await, before);
    }

    #[tokio::test]
    async fn a_user_without_config_rights_still_caches_and_says_why() {
        let Some(url) = server_url() else { return };
        let mut conn = admin(&url).await;
        let user = format!("nocfg{:016x}", rand::random::<u64>());
        let prefix = unique_prefix();
        redis::cmd("ACL")
            .arg("SETUSER")
            .arg(&user)
            .arg("on")
            .arg(">pw-of-user")
            .arg(format!("~{prefix}*"))
            .arg("+@all")
            .arg("-config")
            .exec_async(&mut conn)
            .await
            .unwrap();
        let addr = redis::Client::open(url.as_str())
            .unwrap()
            .get_connection_info()
            .addr
            .to_string();
        let mut s = spec(
            &format!("redis://{user}:pw-of-user@{addr}/"),
            &prefix,
            false,
        );
        s.max_bytes = 1024 * 1024;
        s.policy = "allkeys-lfu".into();
        let cache = RedisCache::connect(&s).await.unwrap();
        cache
            .set("k", Bytes::from_static(b"v"), None)
            .await
            .unwrap();
        assert_eq!(
            cache.get("k").await.unwrap(),
            Some(Bytes::from_static(b"v"))
        );
        assert_eq!(cache.stats().await.unwrap().max_bytes, 0);
        let info = cache.policy().await.unwrap();
        assert!(!info.changeable);
        assert_eq!(info.policy, "allkeys-lfu");
        assert!(info.note.unwrap().contains("may not run CONFIG"));
        let err = cache.set_policy("allkeys-lru").await.unwrap_err();
        assert!(matches!(err, CacheError::Refused(_)), "{err}");
        cache.flush().await.unwrap();
        redis::cmd("ACL")
            .arg("DELUSER")
            .arg(&user)
            .exec_async(&mut conn)
            .await
            .unwrap();
    }
}
