//! The Memcached cache: reads and writes through the `memcache` crate, the inspector's view
//! through memcached's own text protocol.
//!
//! # Two ways in
//! The `memcache` crate is blocking, so every call runs on tokio's blocking pool
//! (`spawn_blocking`) with a small r2d2 pool of [`POOL_SIZE`] connections behind it; it speaks
//! the ASCII protocol (the binary one is deprecated upstream). What the crate cannot do (listing
//! with `lru_crawler metadump`, reading an item without bumping it with `mg ... u`, `stats`,
//! whose ASCII parsing in the crate is broken) goes over a short-lived tokio TCP connection:
//! those are inspector calls, not the per-request path.
//!
//! # Keys
//! Keys are `{key_prefix}{key}`. Memcached keys are at most 250 bytes of printable ASCII
//! without spaces, so a logical key that is not (or starts with `~`) is stored as
//! `{prefix}~x{hex}`, and one too long even for that as `{prefix}~h{sha256 hex}`. Listings turn
//! `~x` back into the key; a `~h` name cannot be turned back and is shown as is.
//!
//! # What a listing is
//! `lru_crawler metadump all` walks every item of the server (so at most [`ITEMS_DUMP_BUDGET`]
//! lines are read), and only this session's prefix is kept. It is a best-effort snapshot: an
//! item that moves between LRU segments during the walk can be missed. Items are ordered by
//! last access (`la`, in seconds), then by CAS (the later write first); each preview and TTL
//! comes from `mg <key> s t v u`, which does not count as an access. Needs memcached 1.6.
//!
//! # Policy
//! Memcached has one eviction policy, LRU, so the policy view explains it and a change is
//! refused. The numbers other than hits and misses are the server's own (`stats`), so on a
//! shared server they cover everyone.

use super::{preview, Cache, CacheError, CacheItem, CacheStats, PolicyInfo, MAX_LISTED_ITEMS};
use async_trait::async_trait;
use bytes::Bytes;
use memcache::MemcacheError;
use sha2::{Digest, Sha256};
use stacklab_types::stack::{CacheEngine, CacheSpec};
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Longest key memcached accepts.
pub const MAX_KEY_BYTES: usize = 250;
/// Longest key prefix accepted, so that even a hashed key name (66 bytes) fits after it.
pub const MAX_PREFIX_BYTES: usize = 150;
/// Connections in the blocking client's pool.
pub const POOL_SIZE: u32 = 4;
/// Metadump lines (items of the whole server) one `items` call reads at most.
pub const ITEMS_DUMP_BUDGET: usize = 10_000;
/// Metadump lines one `flush` reads at most; a server with more items is flushed partly.
pub const FLUSH_DUMP_BUDGET: usize = 1_000_000;
/// How long connecting, and each exchange, may take before the cache counts as unavailable.
pub const TIMEOUT: Duration = Duration::from_secs(3);
/// Longest protocol line read (keys are URL-encoded in a metadump: up to 750 bytes).
const MAX_LINE: u64 = 4096;
/// Only one crawl runs at a time on a server; another waits this long, this many times.
const BUSY_WAIT: Duration = Duration::from_millis(100);
const BUSY_RETRIES: usize = 30;
/// Deletes sent per round trip in a flush.
const DELETE_BATCH: usize = 100;
/// Memcached reads an expiration above 30 days as a Unix timestamp.
const RELATIVE_EXPIRY_MAX: u64 = 30 * 24 * 3600;

const ONE_POLICY: &str = "Memcached has one eviction policy, LRU, and it cannot be switched: \
    items are grouped by size into slab classes, each class keeps its own segmented LRU \
    (hot, warm and cold), and when memory runs out the least recently used item of the class \
    being written to is evicted. A key prefix keeps this session's keys apart by name only: on \
    a shared server other sessions' items compete for the same memory and can push this \
    session's items out.";

/// The Memcached cache of one session.
pub struct MemcachedCache {
    client: Arc<memcache::Client>,
    /// `host:port`: where raw connections go, and what messages name.
    addr: String,
    prefix: String,
    shared: bool,
    default_ttl: Option<Duration>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl fmt::Debug for MemcachedCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemcachedCache")
            .field("addr", &self.addr)
            .field("prefix", &self.prefix)
            .field("shared", &self.shared)
            .finish_non_exhaustive()
    }
}

/// One line of `lru_crawler metadump`.
#[derive(Debug, Clone, PartialEq)]
struct Dumped {
    /// The key as stored (URL-decoded).
    key: String,
    /// Last access, Unix seconds.
    la: i64,
    cas: u64,
    /// Item size in the slab, header and key included.
    size: u64,
}

impl MemcachedCache {
    /// Connects to `spec.url`: `host:port` or `memcache://host:port` (TCP only).
    pub async fn connect(spec: &CacheSpec) -> Result<Self, CacheError> {
        let addr = parse_addr(spec.url.expose())?;
        let prefix = spec.key_prefix.clone();
        if prefix.len() > MAX_PREFIX_BYTES || !prefix.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(CacheError::Unavailable(format!(
                "a Memcached key prefix must be printable ASCII without spaces, at most \
                 {MAX_PREFIX_BYTES} bytes; this session's is not"
            )));
        }
        let url = format!("memcache://{addr}?protocol=ascii");
        let client = tokio::task::spawn_blocking(move || {
            memcache::Client::builder()
                .add_server(url)?
                .with_max_pool_size(POOL_SIZE)
                .with_connection_timeout(TIMEOUT)
                .with_read_timeout(TIMEOUT)
                .with_write_timeout(TIMEOUT)
                .build()
        })
        .await
        .map_err(|e| CacheError::Unavailable(format!("Memcached at {addr}: connect: {e}")))?
        .map_err(|e| unavailable(&addr, "connect", &e))?;
        Ok(Self {
            client: Arc::new(client),
            addr,
            prefix,
            shared: spec.shared,
            default_ttl: (spec.ttl_ms > 0).then(|| Duration::from_millis(spec.ttl_ms)),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        })
    }

    /// Runs a call of the blocking client on tokio's blocking pool.
    async fn blocking<T, F>(&self, what: &'static str, call: F) -> Result<T, CacheError>
    where
        T: Send + 'static,
        F: FnOnce(&memcache::Client) -> Result<T, MemcacheError> + Send + 'static,
    {
        let client = self.client.clone();
        tokio::task::spawn_blocking(move || call(&client))
            .await
            .map_err(|e| {
                CacheError::Unavailable(format!("Memcached at {}: {what}: {e}", self.addr))
            })?
            .map_err(|e| unavailable(&self.addr, what, &e))
    }

    fn wire_key(&self, key: &str) -> String {
        wire_key(&self.prefix, key)
    }

    async fn raw(&self) -> Result<Raw, CacheError> {
        Raw::connect(&self.addr)
            .await
            .map_err(|e| self.io_error("connect", &e))
    }

    fn io_error(&self, what: &str, e: &io::Error) -> CacheError {
        CacheError::Unavailable(format!("Memcached at {}: {what} failed: {e}", self.addr))
    }

    /// Walks the server's items and keeps this session's; `false` when the budget ran out
    /// first (the connection is then in the middle of the dump and must be dropped).
    async fn metadump(
        &self,
        raw: &mut Raw,
        budget: usize,
    ) -> Result<(Vec<Dumped>, bool), CacheError> {
        let err = |e: io::Error| self.io_error("lru_crawler metadump", &e);
        let mut busy = 0;
        'dump: loop {
            raw.send(b"lru_crawler metadump all\r\n")
                .await
                .map_err(err)?;
            let (mut found, mut lines) = (Vec::new(), 0usize);
            loop {
                let line = raw.line().await.map_err(err)?;
                if line == "END" {
                    return Ok((found, true));
                }
                if line.starts_with("BUSY") || line.contains("try again") {
                    busy += 1;
                    if busy > BUSY_RETRIES {
                        return Err(CacheError::Unavailable(format!(
                            "Memcached at {}: the LRU crawler stayed busy: {line}",
                            self.addr
                        )));
                    }
                    tokio::time::sleep(BUSY_WAIT).await;
                    continue 'dump;
                }
                if line.starts_with("ERROR") || line.contains("_ERROR") {
                    return Err(CacheError::Unavailable(format!(
                        "Memcached at {}: lru_crawler metadump refused: {line}",
                        self.addr
                    )));
                }
                if let Some(item) = parse_dump_line(&line) {
                    if item.key.starts_with(&self.prefix) {
                        found.push(item);
                    }
                }
                lines += 1;
                if lines >= budget {
                    return Ok((found, false));
                }
            }
        }
    }
}

#[async_trait]
impl Cache for MemcachedCache {
    fn engine(&self) -> CacheEngine {
        CacheEngine::Memcached
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, CacheError> {
        let key = self.wire_key(key);
        let value = self
            .blocking("get", move |c| c.get::<Vec<u8>>(&key))
            .await?;
        let counter = if value.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(value.map(Bytes::from))
    }

    /// `ttl: None` (or zero) means the session's `ttl_ms`, or no expiry when that is 0.
    /// Memcached counts in whole seconds, so a TTL is rounded up to the next second.
    async fn set(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<(), CacheError> {
        let key = self.wire_key(key);
        let exptime = ttl
            .filter(|t| !t.is_zero())
            .or(self.default_ttl)
            .map_or(0, exptime);
        self.blocking("set", move |c| c.set(&key, value.as_ref(), exptime))
            .await
    }

    async fn delete(&self, key: &str) -> Result<(), CacheError> {
        let key = self.wire_key(key);
        self.blocking("delete", move |c| c.delete(&key))
            .await
            .map(drop)
    }

    async fn items(&self, limit: usize) -> Result<Vec<CacheItem>, CacheError> {
        let limit = limit.min(MAX_LISTED_ITEMS);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let mut raw = self.raw().await?;
        let (mut found, complete) = self.metadump(&mut raw, ITEMS_DUMP_BUDGET).await?;
        found.sort_by(|a, b| b.la.cmp(&a.la).then(b.cas.cmp(&a.cas)));
        found.truncate(limit);
        if found.is_empty() {
            return Ok(Vec::new());
        }
        if !complete {
            raw = self.raw().await?;
        }
        // One round trip: `s` value size, `t` TTL left, `v` value, `u` do not bump in the LRU.
        let request: String = found
            .iter()
            .map(|d| format!("mg {} s t v u\r\n", d.key))
            .collect();
        let err = |e: io::Error| self.io_error("mg", &e);
        raw.send(request.as_bytes()).await.map_err(err)?;
        let mut items = Vec::with_capacity(found.len());
        for dumped in found {
            let header = raw.line().await.map_err(err)?;
            let mut words = header.split(' ');
            match words.next() {
                // Gone (expired or deleted) since the dump.
                Some("EN") => continue,
                Some("VA") => {}
                _ => {
                    return Err(CacheError::Unavailable(format!(
                        "Memcached at {}: unexpected reply to mg: {header}",
                        self.addr
                    )))
                }
            }
            let len: usize = words.next().and_then(|n| n.parse().ok()).ok_or_else(|| {
                CacheError::Unavailable(format!(
                    "Memcached at {}: bad mg reply: {header}",
                    self.addr
                ))
            })?;
            let ttl = words
                .find_map(|w| w.strip_prefix('t'))
                .and_then(|t| t.parse::<i64>().ok());
            let value = raw.exact(len + 2).await.map_err(err)?;
            items.push(CacheItem {
                key: logical_key(&self.prefix, &dumped.key),
                ttl_ms: ttl.filter(|t| *t >= 0).map(|t| t.saturating_mul(1000)),
                bytes: dumped.size,
                value_preview: preview(&value[..len]),
            });
        }
        Ok(items)
    }

    async fn stats(&self) -> Result<CacheStats, CacheError> {
        let mut raw = self.raw().await?;
        let err = |e: io::Error| self.io_error("stats", &e);
        raw.send(b"stats\r\n").await.map_err(err)?;
        let mut stats = CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            ..CacheStats::default()
        };
        loop {
            let line = raw.line().await.map_err(err)?;
            if line == "END" {
                return Ok(stats);
            }
            let mut words = line.split(' ');
            let (Some("STAT"), Some(name), Some(value)) =
                (words.next(), words.next(), words.next())
            else {
                return Err(CacheError::Unavailable(format!(
                    "Memcached at {}: unexpected reply to stats: {line}",
                    self.addr
                )));
            };
            let value = value.parse().unwrap_or(0);
            match name {
                "evictions" => stats.evictions = value,
                "bytes" => stats.bytes = value,
                "limit_maxbytes" => stats.max_bytes = value,
                _ => {}
            }
        }
    }

    async fn policy(&self) -> Result<PolicyInfo, CacheError> {
        Ok(PolicyInfo {
            policy: "lru".into(),
            policies: vec!["lru".into()],
            changeable: false,
            note: Some(ONE_POLICY.into()),
        })
    }

    async fn set_policy(&self, _policy: &str) -> Result<(), CacheError> {
        Err(CacheError::Refused(ONE_POLICY.into()))
    }

    /// Deletes the session's items a metadump finds; memcached's `flush_all` would empty the
    /// whole server.
    async fn flush(&self) -> Result<(), CacheError> {
        if self.prefix.is_empty() && self.shared {
            return Err(CacheError::Refused(
                "this session has no key prefix on a shared Memcached: a flush would delete other \
                 sessions' items"
                    .into(),
            ));
        }
        let mut raw = self.raw().await?;
        let (found, complete) = self.metadump(&mut raw, FLUSH_DUMP_BUDGET).await?;
        if !complete {
            tracing::warn!(addr = %self.addr, "memcached holds more than {FLUSH_DUMP_BUDGET} items: flushed only the session's items among the first ones");
            raw = self.raw().await?;
        }
        let err = |e: io::Error| self.io_error("delete", &e);
        for batch in found.chunks(DELETE_BATCH) {
            let request: String = batch
                .iter()
                .map(|d| format!("delete {}\r\n", d.key))
                .collect();
            raw.send(request.as_bytes()).await.map_err(err)?;
            for _ in batch {
                let line = raw.line().await.map_err(err)?;
                if line != "DELETED" && line != "NOT_FOUND" {
                    return Err(CacheError::Unavailable(format!(
                        "Memcached at {}: unexpected reply to delete: {line}",
                        self.addr
                    )));
                }
            }
        }
        Ok(())
    }
}

/// A text-protocol connection; every exchange has [`TIMEOUT`].
struct Raw {
    io: BufReader<TcpStream>,
}

impl Raw {
    async fn connect(addr: &str) -> io::Result<Self> {
        let stream = timed(TcpStream::connect(addr)).await?;
        Ok(Self {
            io: BufReader::new(stream),
        })
    }

    async fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        timed(self.io.get_mut().write_all(bytes)).await
    }

    /// One line without its `\r\n`.
    async fn line(&mut self) -> io::Result<String> {
        let mut line = String::new();
        let n = timed((&mut self.io).take(MAX_LINE).read_line(&mut line)).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        if !line.ends_with('\n') {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
        }
        line.truncate(line.trim_end_matches(['\r', '\n']).len());
        Ok(line)
    }

    async fn exact(&mut self, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0; len];
        timed(self.io.read_exact(&mut buf)).await?;
        Ok(buf)
    }
}

async fn timed<T>(fut: impl std::future::Future<Output = io::Result<T>>) -> io::Result<T> {
    tokio::time::timeout(TIMEOUT, fut).await.map_err(|_| {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no answer within {TIMEOUT:?}"),
        )
    })?
}

/// `host:port` out of `host:port`, `memcache://host:port` or `memcache://user:pass@host:port/`
/// (credentials are dropped: they are never used, and must not reach a message). The port
/// defaults to 11211.
fn parse_addr(url: &str) -> Result<String, CacheError> {
    let invalid = || {
        CacheError::Unavailable(
            "the Memcached address is not valid; expected host:port or memcache://host:port".into(),
        )
    };
    let url = url.trim();
    let rest = match url.split_once("://") {
        Some(("memcache" | "memcached" | "memcache+tcp", rest)) => rest,
        Some(_) => return Err(invalid()),
        None => url,
    };
    let rest = rest.split(['/', '?']).next().unwrap_or_default();
    let host_port = rest.rsplit_once('@').map_or(rest, |(_, hp)| hp);
    if host_port.is_empty() || host_port.contains(char::is_whitespace) {
        return Err(invalid());
    }
    let has_port = match host_port.rsplit_once(':') {
        Some((host, port)) => {
            !host.is_empty() && !host.ends_with(':') && port.parse::<u16>().is_ok()
        }
        None => false,
    };
    if has_port {
        Ok(host_port.to_owned())
    } else if host_port.contains(':') && !host_port.starts_with('[') {
        Err(invalid())
    } else {
        Ok(format!("{host_port}:11211"))
    }
}

/// The key as stored: prefixed, and encoded when memcached would not take it as it is.
fn wire_key(prefix: &str, key: &str) -> String {
    let room = MAX_KEY_BYTES - prefix.len();
    if !key.is_empty()
        && key.len() <= room
        && !key.starts_with('~')
        && key.bytes().all(|b| b.is_ascii_graphic())
    {
        format!("{prefix}{key}")
    } else if 2 + 2 * key.len() <= room {
        format!("{prefix}~x{}", hex(key.as_bytes()))
    } else {
        format!("{prefix}~h{}", hex(&Sha256::digest(key.as_bytes())))
    }
}

/// The logical key of a stored one (which starts with `prefix`).
fn logical_key(prefix: &str, wire: &str) -> String {
    let rest = wire.get(prefix.len()..).unwrap_or(wire);
    rest.strip_prefix("~x")
        .and_then(unhex)
        .and_then(|b| String::from_utf8(b).ok())
        .unwrap_or_else(|| rest.to_owned())
}

/// Memcached's `exptime` for a TTL: seconds (rounded up), or a Unix time beyond 30 days.
fn exptime(ttl: Duration) -> u32 {
    let secs = ttl.as_millis().div_ceil(1000).max(1);
    let secs = u64::try_from(secs).unwrap_or(u64::MAX);
    if secs <= RELATIVE_EXPIRY_MAX {
        return u32::try_from(secs).unwrap_or(u32::MAX);
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    u32::try_from(now.saturating_add(secs)).unwrap_or(u32::MAX)
}

/// `key=... exp=... la=... cas=... fetch=... cls=... size=...`; `None` for anything else.
fn parse_dump_line(line: &str) -> Option<Dumped> {
    let (mut key, mut la, mut cas, mut size) = (None, None, None, None);
    for field in line.split(' ') {
        match field.split_once('=') {
            Some(("key", v)) => key = Some(url_decode(v)),
            Some(("la", v)) => la = v.parse().ok(),
            Some(("cas", v)) => cas = v.parse().ok(),
            Some(("size", v)) => size = v.parse().ok(),
            _ => {}
        }
    }
    Some(Dumped {
        key: key?,
        la: la?,
        cas: cas.unwrap_or(0),
        size: size.unwrap_or(0),
    })
}

fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let byte = match (b[i], b.get(i + 1..i + 3)) {
            (b'%', Some(h)) => std::str::from_utf8(h)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok()),
            _ => None,
        };
        match byte {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn unavailable(addr: &str, what: &str, e: &MemcacheError) -> CacheError {
    CacheError::Unavailable(format!("Memcached at {addr}: {what} failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use stacklab_types::Secret;

    /// The test server's `host:port`, or `None` (skip) when it is not set and services are
    /// optional.
    fn server_addr() -> Option<String> {
        stacklab_testkit::engine_var("STACKLAB_TEST_MEMCACHED_ADDR")
    }

    fn spec(url: &str, prefix: &str) -> CacheSpec {
        CacheSpec {
            engine: CacheEngine::Memcached,
            url: Secret::new(url),
            key_prefix: prefix.into(),
            policy: String::new(),
            max_bytes: 0,
            ttl_ms: 0,
            shared: true,
        }
    }

    fn unique_prefix() -> String {
        format!("test:{:016x}:", rand::random::<u64>())
    }

    /// A metadump is a best-effort walk (an item moving between LRU segments can be missed),
    /// so a listing is retried a few times until it has the expected length.
    async fn items_eventually(cache: &MemcachedCache, expected: usize) -> Vec<CacheItem> {
        let mut items = Vec::new();
        for _ in 0..20 {
            items = cache.items(20).await.unwrap();
            if items.len() == expected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        items
    }

    #[test]
    fn addresses_keys_and_dump_lines_parse() {
        assert_eq!(parse_addr("127.0.0.1:11291").unwrap(), "127.0.0.1:11291");
        assert_eq!(
            parse_addr("memcache://u:pw@cache:1/?x=1").unwrap(),
            "cache:1"
        );
        assert_eq!(parse_addr("cache").unwrap(), "cache:11211");
        assert_eq!(parse_addr("[::1]:5").unwrap(), "[::1]:5");
        assert!(parse_addr("redis://cache:1").is_err());
        assert!(parse_addr("").is_err());

        let d =
            parse_dump_line("key=p%3Aa%2520b exp=-1 la=1700000000 cas=7 fetch=no cls=1 size=69")
                .unwrap();
        assert_eq!(
            d,
            Dumped {
                key: "p:a%20b".into(),
                la: 1_700_000_000,
                cas: 7,
                size: 69
            }
        );
        assert_eq!(parse_dump_line("END"), None);

        assert_eq!(wire_key("s:", "user:1"), "s:user:1");
        assert_eq!(wire_key("s:", "a b"), "s:~x612062");
        assert_eq!(wire_key("s:", "~x61"), "s:~x7e783631");
        let hashed = wire_key("s:", &"k ".repeat(100));
        assert!(
            hashed.starts_with("s:~h") && hashed.len() == 2 + 2 + 64,
            "{hashed}"
        );
        assert!(wire_key("s:", &"k".repeat(248)).len() == MAX_KEY_BYTES);
        for key in ["user:1", "a b", "~x61", "ключ"] {
            assert_eq!(logical_key("s:", &wire_key("s:", key)), key);
        }
        assert_eq!(exptime(Duration::from_millis(1)), 1);
        assert_eq!(exptime(Duration::from_millis(1500)), 2);
        assert!(exptime(Duration::from_secs(RELATIVE_EXPIRY_MAX + 1)) > 1_600_000_000);
        assert_eq!(unhex(&hex(b"a b")).unwrap(), b"a b");
    }

    #[tokio::test]
    async fn connect_errors_name_host_and_port_but_never_the_password() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("memcache://user:hunter2secret@127.0.0.1:{port}");
        let err = MemcachedCache::connect(&spec(&url, "p:"))
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
        assert!(!msg.contains("hunter2secret"), "{msg}");
        let err = MemcachedCache::connect(&spec("http://user:hunter2secret@h:1", "p:"))
            .await
            .unwrap_err();
        assert!(!err.to_string().contains("hunter2secret"), "{err}");
    }

    #[tokio::test]
    async fn set_get_delete_and_flush_stay_within_the_prefix() {
        let Some(addr) = server_addr() else { return };
        let (pa, pb) = (unique_prefix(), unique_prefix());
        let a = MemcachedCache::connect(&spec(&addr, &pa)).await.unwrap();
        let b = MemcachedCache::connect(&spec(&format!("memcache://{addr}"), &pb))
            .await
            .unwrap();

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

        // Keys memcached would not take as they are still work, and list as themselves.
        let odd = "user name with spaces ✓";
        let long = "k".repeat(400);
        a.set(odd, Bytes::from_static(b"odd"), None).await.unwrap();
        a.set(&long, Bytes::from_static(b"long"), None)
            .await
            .unwrap();
        assert_eq!(a.get(odd).await.unwrap(), Some(Bytes::from_static(b"odd")));
        assert_eq!(
            a.get(&long).await.unwrap(),
            Some(Bytes::from_static(b"long"))
        );
        let listed = items_eventually(&a, 3).await;
        let keys: Vec<_> = listed.iter().map(|i| i.key.as_str()).collect();
        assert!(keys.contains(&"user:1") && keys.contains(&odd), "{keys:?}");
        assert_eq!(keys.len(), 3, "{keys:?}");

        a.delete("user:1").await.unwrap();
        a.delete("never-set").await.unwrap();
        assert_eq!(a.get("user:1").await.unwrap(), None);
        let stats = a.stats().await.unwrap();
        assert_eq!((stats.hits, stats.misses), (3, 2));
        assert!(stats.max_bytes > 0);
        assert!(stats.bytes > 0);

        a.flush().await.unwrap();
        assert_eq!(a.get(odd).await.unwrap(), None);
        assert_eq!(a.get(&long).await.unwrap(), None);
        assert!(a.items(20).await.unwrap().is_empty());
        assert_eq!(
            b.get("user:2").await.unwrap(),
            Some(Bytes::from_static(b"bob"))
        );
        b.flush().await.unwrap();
        assert_eq!(b.get("user:2").await.unwrap(), None);
    }

    #[tokio::test]
    async fn metadump_lists_the_session_items_newest_first_with_ttl() {
        let Some(addr) = server_addr() else { return };
        let mut s = spec(&addr, &unique_prefix());
        s.ttl_ms = 60_000;
        let cache = MemcachedCache::connect(&s).await.unwrap();
        let other = MemcachedCache::connect(&spec(&addr, &unique_prefix()))
            .await
            .unwrap();
        other
            .set("theirs", Bytes::from_static(b"x"), None)
            .await
            .unwrap();

        cache
            .set(
                "first",
                Bytes::from_static(b"one"),
                Some(Duration::from_secs(100)),
            )
            .await
            .unwrap();
        cache
            .set("second", Bytes::from(vec![b'y'; 300]), None)
            .await
            .unwrap();
        cache
            .set("third", Bytes::from_static(b"three"), Some(Duration::ZERO))
            .await
            .unwrap();

        let items = items_eventually(&cache, 3).await;
        let keys: Vec<_> = items.iter().map(|i| i.key.as_str()).collect();
        // Written in the same second: the later CAS goes first.
        assert_eq!(keys, ["third", "second", "first"]);
        assert_eq!(items[0].value_preview, "three");
        assert!(
            items[0].ttl_ms.is_some_and(|t| t > 50_000 && t <= 60_000),
            "{:?}",
            items[0]
        );
        assert_eq!(items[1].value_preview.len(), crate::cache::PREVIEW_BYTES);
        assert!(items[1].bytes > 300, "{:?}", items[1]);
        assert!(
            items[2].ttl_ms.is_some_and(|t| t > 90_000 && t <= 100_000),
            "{:?}",
            items[2]
        );
        assert_eq!(cache.items(1).await.unwrap().len(), 1);

        // The listing did not bump the items: what we wrote last is still first.
        assert_eq!(items_eventually(&cache, 3).await[0].key, "third");
        cache.flush().await.unwrap();
        assert_eq!(
            other.get("theirs").await.unwrap(),
            Some(Bytes::from_static(b"x"))
        );
        other.flush().await.unwrap();
    }

    #[tokio::test]
    async fn the_one_policy_is_explained_and_a_change_refused() {
        let Some(addr) = server_addr() else { return };
        let cache = MemcachedCache::connect(&spec(&addr, &unique_prefix()))
            .await
            .unwrap();
        let info = cache.policy().await.unwrap();
        assert_eq!(info.policy, "lru");
        assert_eq!(info.policies, ["lru"]);
        assert!(!info.changeable);
        let note = info.note.unwrap();
        assert!(
            note.contains("one eviction policy, LRU") && note.contains("slab class"),
            "{note}"
        );
        assert!(note.contains("prefix"), "{note}");
        let err = cache.set_policy("lfu").await.unwrap_err();
        assert!(matches!(err, CacheError::Refused(_)), "{err}");
        assert!(err.to_string().contains("cannot be switched"), "{err}");
    }
}
