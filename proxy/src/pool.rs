//! Pools, their members, and how a member is picked for a request.
//!
//! A [`Pool`] is rebuilt whenever its spec changes, and everything a pick needs is computed
//! then: the eligible order for weighted round robin (nginx's smooth weighted sequence), the
//! hash ring for consistent hashing, the metric handles. A member's live state — in flight,
//! latency, health, ejection — sits in atomics on an `Arc<Member>` that survives rebuilds as
//! long as its id and address stay. Its weight is not part of it: a weight belongs to the
//! pool's spec and shapes only the tables built from it, so a weight change does not forget a
//! member's latency.
//!
//! Picking takes no lock and allocates nothing: it reads atomics and the prebuilt tables.

use crate::clock::Clock;
use stacklab_types::routes::{Algorithm, HealthSpec, MemberSpec, PoolSpec, UpstreamProtocol};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// Peak-EWMA decay: how quickly an old latency is forgotten.
pub const EWMA_DECAY: Duration = Duration::from_secs(10);
/// Latency assumed for a member nothing has been measured on yet.
pub const EWMA_DEFAULT_RTT: Duration = Duration::from_millis(1);
/// Virtual nodes per unit of weight on the consistent-hash ring.
pub const RING_POINTS_PER_WEIGHT: usize = 64;

/// A member's state as people see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberState {
    Healthy,
    /// Failed active health checks (`fall` in a row); back after `rise` successes.
    Unhealthy,
    /// Taken out by passive checks for a while, then tried again.
    Ejected,
    /// Takes no new requests.
    Draining,
}

/// One upstream server and its live state.
#[derive(Debug)]
pub struct Member {
    pub id: String,
    pub addr: String,
    /// Scheme and authority as a prefix for upstream URIs: `http://addr`.
    pub base_uri: String,
    pub draining: AtomicBool,
    pub in_flight: AtomicU32,
    /// Active checks say it is up (true until a check says otherwise).
    pub active_up: AtomicBool,
    pub active_streak: AtomicU32,
    /// Consecutive passive failures (connect errors, resets, timeouts; see [`crate::health`]).
    pub passive_failures: AtomicU32,
    /// Clock millis until which the member is ejected; 0 when not.
    pub ejected_until_ms: AtomicU64,
    pub ejections_in_row: AtomicU32,
    /// Peak-EWMA latency in nanoseconds (f64 bits) and when it was last updated (clock nanos).
    ewma_ns: AtomicU64,
    ewma_stamp_ns: AtomicU64,
    pub requests: AtomicU64,
    pub failures: AtomicU64,
    /// Idle HTTP/1.1 connections to it (see [`crate::upstream::conn`]).
    pub idle: crate::upstream::conn::Idle,
}

impl Member {
    pub fn new(spec: &MemberSpec) -> Self {
        Self {
            id: spec.id.clone(),
            addr: spec.addr.clone(),
            base_uri: format!("http://{}", spec.addr),
            draining: AtomicBool::new(spec.draining),
            in_flight: AtomicU32::new(0),
            active_up: AtomicBool::new(true),
            active_streak: AtomicU32::new(0),
            passive_failures: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            ejections_in_row: AtomicU32::new(0),
            ewma_ns: AtomicU64::new((EWMA_DEFAULT_RTT.as_nanos() as f64).to_bits()),
            ewma_stamp_ns: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            idle: Default::default(),
        }
    }

    /// Can take a new request now.
    #[inline]
    pub fn eligible(&self, now_ms: u64) -> bool {
        !self.draining.load(Relaxed)
            && self.active_up.load(Relaxed)
            && self.ejected_until_ms.load(Relaxed) <= now_ms
    }

    pub fn state(&self, now_ms: u64) -> MemberState {
        if self.draining.load(Relaxed) {
            MemberState::Draining
        } else if !self.active_up.load(Relaxed) {
            MemberState::Unhealthy
        } else if self.ejected_until_ms.load(Relaxed) > now_ms {
            MemberState::Ejected
        } else {
            MemberState::Healthy
        }
    }

    /// Peak EWMA (Finagle, linkerd): a slower answer than the average takes over at once; a
    /// faster one is blended in with a weight that decays with the time since the last one.
    pub fn observe_latency(&self, rtt: Duration, now_ns: u64) {
        let rtt = rtt.as_nanos() as f64;
        let prev = f64::from_bits(self.ewma_ns.load(Relaxed));
        let last = self.ewma_stamp_ns.swap(now_ns, Relaxed);
        let next = if rtt > prev {
            rtt
        } else {
            let elapsed = now_ns.saturating_sub(last) as f64;
            let w = (-elapsed / EWMA_DECAY.as_nanos() as f64).exp();
            prev * w + rtt * (1.0 - w)
        };
        self.ewma_ns.store(next.to_bits(), Relaxed);
    }

    pub fn ewma(&self) -> Duration {
        Duration::from_nanos(f64::from_bits(self.ewma_ns.load(Relaxed)) as u64)
    }

    /// What p2c compares: latency scaled by the load the member already has.
    #[inline]
    fn cost(&self) -> f64 {
        f64::from_bits(self.ewma_ns.load(Relaxed)) * f64::from(self.in_flight.load(Relaxed) + 1)
    }
}

/// A pool as the request path sees it, rebuilt on every change to its spec.
#[derive(Debug)]
pub struct Pool {
    pub spec: PoolSpec,
    pub members: Vec<Arc<Member>>,
    /// Member indices in smooth weighted round-robin order.
    wrr_order: Vec<u32>,
    /// (hash, member index), sorted by hash.
    ring: Vec<(u64, u32)>,
    cursor: AtomicUsize,
    /// Metric handles for the request path, resolved once per build.
    pub metrics: crate::metrics::PoolMetrics,
}

impl Pool {
    /// Builds a pool, keeping the live state of members that are still there unchanged.
    pub fn build(
        spec: PoolSpec,
        previous: Option<&Pool>,
        metrics: &crate::metrics::Metrics,
    ) -> Pool {
        let old: HashMap<&str, &Arc<Member>> = previous
            .map(|p| p.members.iter().map(|m| (m.id.as_str(), m)).collect())
            .unwrap_or_default();
        let members: Vec<Arc<Member>> = spec
            .members
            .iter()
            .map(|m| match old.get(m.id.as_str()) {
                Some(prev) if prev.addr == m.addr => {
                    prev.draining.store(m.draining, Relaxed);
                    Arc::clone(prev)
                }
                _ => Arc::new(Member::new(m)),
            })
            .collect();
        let weights: Vec<u32> = spec.members.iter().map(|m| m.weight.max(1)).collect();
        let wrr_order = smooth_weighted_order(&weights);
        let ring = hash_ring(&members, &weights);
        let metrics = metrics.pool(&spec.name);
        Pool {
            spec,
            members,
            wrr_order,
            ring,
            cursor: AtomicUsize::new(0),
            metrics,
        }
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    pub fn protocol(&self) -> UpstreamProtocol {
        self.spec.protocol
    }

    pub fn health(&self) -> Option<&HealthSpec> {
        self.spec.health.as_ref()
    }

    pub fn member(&self, id: &str) -> Option<&Arc<Member>> {
        self.members.iter().find(|m| m.id == id)
    }

    /// Picks a member for a request. `key` is what consistent hashing hashes (the session
    /// code, else the client address); `tried` is a bit set of member indices already tried
    /// for this request (members past index 63 are never excluded).
    pub fn pick(&self, key: &[u8], tried: u64, clock: &Clock) -> Option<(usize, &Arc<Member>)> {
        let n = self.members.len();
        if n == 0 {
            return None;
        }
        let now = clock.now_ms();
        let ok = |i: usize| (i >= 64 || tried & (1 << i) == 0) && self.members[i].eligible(now);
        let pick = match self.spec.algorithm {
            Algorithm::RoundRobin => {
                let start = self.cursor.fetch_add(1, Relaxed);
                (0..n).map(|k| (start + k) % n).find(|&i| ok(i))
            }
            Algorithm::WeightedRoundRobin => {
                let len = self.wrr_order.len();
                let start = self.cursor.fetch_add(1, Relaxed);
                (0..len)
                    .map(|k| self.wrr_order[(start + k) % len] as usize)
                    .find(|&i| ok(i))
            }
            Algorithm::LeastInFlight => {
                // Start the scan at a moving offset so ties spread instead of piling on member 0.
                let start = self.cursor.fetch_add(1, Relaxed);
                (0..n)
                    .map(|k| (start + k) % n)
                    .filter(|&i| ok(i))
                    .min_by_key(|&i| self.members[i].in_flight.load(Relaxed))
            }
            Algorithm::P2cEwma => {
                let a = next_ok(rand::random_range(0..n), n, &ok);
                let b = next_ok(rand::random_range(0..n), n, &ok);
                match (a, b) {
                    (Some(a), Some(b)) if a == b => {
                        let b2 = next_ok((a + 1) % n, n, &ok).unwrap_or(a);
                        Some(self.cheaper(a, b2))
                    }
                    (Some(a), Some(b)) => Some(self.cheaper(a, b)),
                    _ => None,
                }
            }
            Algorithm::ConsistentHash => {
                if self.ring.is_empty() {
                    None
                } else {
                    let h = hash64(key);
                    let at = self.ring.partition_point(|&(p, _)| p < h);
                    let len = self.ring.len();
                    (0..len)
                        .map(|k| self.ring[(at + k) % len].1 as usize)
                        .find(|&i| ok(i))
                }
            }
        };
        pick.map(|i| (i, &self.members[i]))
    }

    fn cheaper(&self, a: usize, b: usize) -> usize {
        if self.members[b].cost() < self.members[a].cost() {
            b
        } else {
            a
        }
    }
}

fn next_ok(from: usize, n: usize, ok: &impl Fn(usize) -> bool) -> Option<usize> {
    (0..n).map(|k| (from + k) % n).find(|&i| ok(i))
}

/// nginx's smooth weighted round robin, unrolled once per change: weights 5,1,1 give
/// `a a b a c a a`, not `a a a a a b c`.
fn smooth_weighted_order(weights: &[u32]) -> Vec<u32> {
    let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
    let mut current = vec![0i64; weights.len()];
    let mut order = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, &w) in weights.iter().enumerate() {
            current[i] += i64::from(w);
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        order.push(best as u32);
    }
    order
}

fn hash_ring(members: &[Arc<Member>], weights: &[u32]) -> Vec<(u64, u32)> {
    let mut ring = Vec::new();
    for (i, (m, &w)) in members.iter().zip(weights).enumerate() {
        for v in 0..(w as usize * RING_POINTS_PER_WEIGHT) {
            ring.push((hash64(format!("{}#{v}", m.id).as_bytes()), i as u32));
        }
    }
    ring.sort_unstable();
    ring
}

/// FNV-1a with a final avalanche (splitmix64): fast, stable across runs and builds, and
/// spread well enough for a ring.
pub fn hash64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(algorithm: Algorithm, weights: &[u32]) -> Pool {
        let members = weights
            .iter()
            .enumerate()
            .map(|(i, &w)| MemberSpec {
                id: format!("m{i}"),
                addr: format!("127.0.0.1:{}", 1000 + i),
                weight: w,
                draining: false,
            })
            .collect();
        Pool::build(
            PoolSpec {
                name: "p".into(),
                algorithm,
                protocol: UpstreamProtocol::Http1,
                members,
                health: None,
            },
            None,
            &crate::metrics::Metrics::new(),
        )
    }

    fn counts(p: &Pool, picks: usize, key: impl Fn(usize) -> String) -> Vec<usize> {
        let clock = Clock::new();
        let mut c = vec![0; p.members.len()];
        for k in 0..picks {
            c[p.pick(key(k).as_bytes(), 0, &clock).unwrap().0] += 1;
        }
        c
    }

    #[test]
    fn round_robin_is_even() {
        assert_eq!(
            counts(&pool(Algorithm::RoundRobin, &[1, 1, 1]), 300, |_| {
                String::new()
            }),
            [100, 100, 100]
        );
    }

    #[test]
    fn weighted_round_robin_follows_weights_smoothly() {
        let p = pool(Algorithm::WeightedRoundRobin, &[5, 1, 1]);
        assert_eq!(p.wrr_order, [0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(counts(&p, 700, |_| String::new()), [500, 100, 100]);
    }

    #[test]
    fn least_in_flight_avoids_the_busy_member() {
        let p = pool(Algorithm::LeastInFlight, &[1, 1, 1]);
        p.members[0].in_flight.store(5, Relaxed);
        p.members[2].in_flight.store(1, Relaxed);
        assert_eq!(counts(&p, 50, |_| String::new()), [0, 50, 0]);
    }

    #[test]
    fn p2c_prefers_the_faster_member() {
        let p = pool(Algorithm::P2cEwma, &[1, 1]);
        p.members[0].observe_latency(Duration::from_millis(50), 1);
        p.members[1].observe_latency(Duration::from_millis(1), 1);
        let c = counts(&p, 1000, |_| String::new());
        // Both random draws land on the slow member a quarter of the time at most; with the
        // fallback to the next member it is never chosen while the fast one is eligible.
        assert!(c[1] >= 990, "{c:?}");
    }

    #[test]
    fn peak_ewma_takes_peaks_at_once_and_decays_slowly() {
        let m = Member::new(&MemberSpec {
            id: "a".into(),
            addr: "127.0.0.1:1".into(),
            weight: 1,
            draining: false,
        });
        m.observe_latency(Duration::from_millis(100), 0);
        assert_eq!(m.ewma(), Duration::from_millis(100));
        m.observe_latency(Duration::from_millis(1), EWMA_DECAY.as_nanos() as u64);
        let e = m.ewma().as_millis();
        assert!(
            (30..=45).contains(&e),
            "after one decay period the peak is about 1/e: {e}"
        );
    }

    #[test]
    fn consistent_hash_is_sticky_and_spreads() {
        let p = pool(Algorithm::ConsistentHash, &[1, 1, 1]);
        let clock = Clock::new();
        let first = p.pick(b"session-a", 0, &clock).unwrap().0;
        for _ in 0..10 {
            assert_eq!(p.pick(b"session-a", 0, &clock).unwrap().0, first);
        }
        let c = counts(&p, 3000, |k| format!("session-{k}"));
        assert!(c.iter().all(|&n| n > 700), "{c:?}");
        // Removing a member only moves the sessions that were on it.
        let two = pool(Algorithm::ConsistentHash, &[1, 1]);
        let moved = (0..1000)
            .filter(|k| {
                let key = format!("session-{k}");
                let before = p.pick(key.as_bytes(), 0, &clock).unwrap().0;
                before != 2 && two.pick(key.as_bytes(), 0, &clock).unwrap().0 != before
            })
            .count();
        assert_eq!(moved, 0);
    }

    #[test]
    fn ineligible_members_are_skipped_and_tried_ones_excluded() {
        let p = pool(Algorithm::RoundRobin, &[1, 1, 1]);
        p.members[1].draining.store(true, Relaxed);
        p.members[2].active_up.store(false, Relaxed);
        let clock = Clock::new();
        for _ in 0..5 {
            assert_eq!(p.pick(b"", 0, &clock).unwrap().0, 0);
        }
        assert!(p.pick(b"", 1, &clock).is_none());
    }

    #[test]
    fn rebuild_keeps_live_state() {
        let p = pool(Algorithm::P2cEwma, &[1, 1]);
        p.members[0].in_flight.store(3, Relaxed);
        let mut spec = p.spec.clone();
        spec.members.push(MemberSpec {
            id: "m9".into(),
            addr: "127.0.0.1:9".into(),
            weight: 1,
            draining: false,
        });
        let q = Pool::build(spec, Some(&p), &crate::metrics::Metrics::new());
        assert!(Arc::ptr_eq(&p.members[0], &q.members[0]));
        assert_eq!(q.members[0].in_flight.load(Relaxed), 3);
        assert_eq!(q.members.len(), 3);
    }

    /// Issue 19: the module doc said a weight change keeps a member's latency while the
    /// rebuild made a new member for it; now the weight lives in the spec alone.
    #[test]
    fn a_weight_change_keeps_the_members_latency_and_reorders() {
        let p = pool(Algorithm::WeightedRoundRobin, &[1, 1]);
        p.members[0].observe_latency(Duration::from_millis(40), 1);
        p.members[0].in_flight.store(2, Relaxed);
        let mut spec = p.spec.clone();
        spec.members[0].weight = 3;
        let q = Pool::build(spec, Some(&p), &crate::metrics::Metrics::new());
        assert!(Arc::ptr_eq(&p.members[0], &q.members[0]), "the same member");
        assert_eq!(q.members[0].ewma(), Duration::from_millis(40));
        assert_eq!(q.members[0].in_flight.load(Relaxed), 2);
        assert_eq!(q.wrr_order, [0, 0, 1, 0], "the new weight shapes the order");
        // A new address is a new server: nothing of the old one's record carries over.
        let mut spec = q.spec.clone();
        spec.members[0].addr = "127.0.0.1:2000".into();
        let r = Pool::build(spec, Some(&q), &crate::metrics::Metrics::new());
        assert!(!Arc::ptr_eq(&q.members[0], &r.members[0]));
        assert_eq!(r.members[0].ewma(), EWMA_DEFAULT_RTT);
    }
}
