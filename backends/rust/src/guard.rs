//! Bounds on the work one request can make an instance do: password hashing and benchmarks.
//!
//! bcrypt and argon2id are slow on purpose (tens of milliseconds of CPU, argon2id 19 MiB each),
//! so unbounded they are an amplifier: concurrent sign-ups, or one GraphQL request with a
//! couple of hundred aliased `verifyPassword`, can take every core and gigabytes. Hence:
//!
//! - **Hashing gate** — at most `max_concurrent_hashes` hashes run at once per instance. A hash
//!   that cannot start waits at most `hash_wait` (a bounded queue: its length is bounded by the
//!   requests in flight, its wait by the deadline), then the request is refused with
//!   `503 busy` and `Retry-After`, rather than queueing without end behind an attacker.
//! - **Hashes per GraphQL request** — at most `graphql_max_hashes` hashing fields
//!   (`verifyPassword`, `createUser`, an `updateUser` that sets a password) per document,
//!   refused before anything runs (`400 invalid`, `query`; see [`crate::graphql`]).
//! - **Benchmarks** — one per session at a time (`409 benchmark_running`) and at most
//!   `max_concurrent_benchmarks` per instance (`503 busy`, `Retry-After`), refused at once.
//!
//! The backend has no Prometheus endpoint; the counters are in the answer of `GET /healthz`
//! ([`Guards::snapshot`]), which the proxy's health checks already read.

use crate::error::ApiError;
use serde::Serialize;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Seconds a refused client is told to wait (`Retry-After`).
pub const RETRY_AFTER_SECS: u64 = 1;

/// The shared bounds of one instance.
#[derive(Debug)]
pub struct Guards {
    hashes: Arc<Semaphore>,
    max_hashes: usize,
    hash_wait: Duration,
    benchmarks: Arc<Semaphore>,
    max_benchmarks: usize,
    /// Sessions with a benchmark running.
    benchmarking: Mutex<HashSet<String>>,
    counts: Counts,
}

#[derive(Debug, Default)]
struct Counts {
    hashes: AtomicU64,
    hashes_refused: AtomicU64,
    graphql_refused: AtomicU64,
    benchmarks: AtomicU64,
    benchmarks_refused_session: AtomicU64,
    benchmarks_refused_busy: AtomicU64,
}

/// What `GET /healthz` shows under `limits`.
#[derive(Debug, Serialize)]
pub struct Snapshot {
    pub hashing: HashingSnapshot,
    pub benchmarks: BenchmarkSnapshot,
    /// GraphQL requests refused for asking more than `graphql_max_hashes` hashes.
    pub graphql_hashes_refused: u64,
}

#[derive(Debug, Serialize)]
pub struct HashingSnapshot {
    pub max: usize,
    pub running: usize,
    pub started: u64,
    /// Hashes that could not start within `hash_wait_ms` (answered `503 busy`).
    pub refused: u64,
}

#[derive(Debug, Serialize)]
pub struct BenchmarkSnapshot {
    pub max: usize,
    pub running: usize,
    pub started: u64,
    /// Refused because the session already runs one (`409 benchmark_running`).
    pub refused_session: u64,
    /// Refused because the instance runs `max_concurrent_benchmarks` (`503 busy`).
    pub refused_busy: u64,
}

/// A running benchmark's slot: frees the session and the instance slot when dropped.
#[derive(Debug)]
pub struct BenchmarkSlot {
    guards: Arc<Guards>,
    session: String,
    _permit: OwnedSemaphorePermit,
}

impl Drop for BenchmarkSlot {
    fn drop(&mut self) {
        self.guards
            .benchmarking
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.session);
    }
}

impl Guards {
    pub fn new(limits: &crate::config::Limits) -> Arc<Self> {
        Arc::new(Self {
            hashes: Arc::new(Semaphore::new(limits.max_concurrent_hashes)),
            max_hashes: limits.max_concurrent_hashes,
            hash_wait: limits.hash_wait,
            benchmarks: Arc::new(Semaphore::new(limits.max_concurrent_benchmarks)),
            max_benchmarks: limits.max_concurrent_benchmarks,
            benchmarking: Mutex::default(),
            counts: Counts::default(),
        })
    }

    /// Runs `f` (a hash or a verification) on the blocking pool once a hashing permit is
    /// free, waiting at most `hash_wait` for it.
    pub async fn hash<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let permit = match tokio::time::timeout(
            self.hash_wait,
            Arc::clone(&self.hashes).acquire_owned(),
        )
        .await
        {
            Ok(Ok(p)) => p,
            _ => {
                self.counts.hashes_refused.fetch_add(1, Relaxed);
                return Err(ApiError::Busy(format!(
                    "this instance is hashing {} passwords already and none finished within {} ms; retry in a second",
                    self.max_hashes,
                    self.hash_wait.as_millis()
                )));
            }
        };
        self.counts.hashes.fetch_add(1, Relaxed);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            f()
        })
        .await
        .map_err(|e| ApiError::Internal(format!("hashing task: {e}")))?
    }

    /// A benchmark slot for `session`, or the refusal: the session runs one already, or the
    /// instance runs as many as it may.
    pub fn benchmark(self: &Arc<Self>, session: &str) -> Result<BenchmarkSlot, ApiError> {
        let mut running = self.benchmarking.lock().unwrap_or_else(|e| e.into_inner());
        if running.contains(session) {
            self.counts.benchmarks_refused_session.fetch_add(1, Relaxed);
            return Err(ApiError::BenchmarkRunning);
        }
        let Ok(permit) = Arc::clone(&self.benchmarks).try_acquire_owned() else {
            self.counts.benchmarks_refused_busy.fetch_add(1, Relaxed);
            return Err(ApiError::Busy(format!(
                "this instance runs {} benchmarks already; retry when one has finished",
                self.max_benchmarks
            )));
        };
        running.insert(session.to_owned());
        self.counts.benchmarks.fetch_add(1, Relaxed);
        Ok(BenchmarkSlot {
            guards: Arc::clone(self),
            session: session.to_owned(),
            _permit: permit,
        })
    }

    pub fn graphql_refused(&self) {
        self.counts.graphql_refused.fetch_add(1, Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        let c = &self.counts;
        Snapshot {
            hashing: HashingSnapshot {
                max: self.max_hashes,
                running: self.max_hashes - self.hashes.available_permits(),
                started: c.hashes.load(Relaxed),
                refused: c.hashes_refused.load(Relaxed),
            },
            benchmarks: BenchmarkSnapshot {
                max: self.max_benchmarks,
                running: self.max_benchmarks - self.benchmarks.available_permits(),
                started: c.benchmarks.load(Relaxed),
                refused_session: c.benchmarks_refused_session.load(Relaxed),
                refused_busy: c.benchmarks_refused_busy.load(Relaxed),
            },
            graphql_hashes_refused: c.graphql_refused.load(Relaxed),
        }
    }
}
