//! Holding a request, for a bounded time, while what it needs is still starting.
//!
//! Two moments would otherwise give a live session a wrong answer:
//!
//! - **No table yet.** A proxy that follows control's route feed knows no session until the
//!   feed's first snapshot arrives (moments after a start or a restart). A session's cookie
//!   would get `410 session_expired`, and the UI would drop a session that is alive.
//! - **A pool with no member yet.** While control starts a pool's instances (after a restart,
//!   or a runtime started on demand) the pool exists with no member, and every request of its
//!   sessions would get `503 no_healthy_member`.
//!
//! In both cases the answer is moments away, so the request waits for the table to change, up
//! to `limits.start_hold_ms`, and is then served from the new table — or, when the time is up,
//! answered as before (`503 not_ready` for a table that never came). A pool whose members are
//! all down (present but ejected, unhealthy or draining) is not starting: it is answered at
//! once, because that is failover and waiting would only hide it. At most
//! `limits.max_held_requests` wait at once; past it a request is answered at once.
//!
//! Nothing here is on the path of a request that finds what it needs: callers check the cheap
//! condition first ([`Proxy::feed_pending`], an empty member list).
//!
//! Metrics: `stacklab_proxy_held_requests` (waiting now) and
//! `stacklab_proxy_holds_total{reason="table"|"member", outcome="served"|"timed_out"|"refused"}`.

use crate::config::Config;
use crate::pool::Pool;
use crate::Proxy;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

/// Requests waiting now, against `limits.max_held_requests`.
#[derive(Debug, Default)]
pub struct Holds {
    waiting: AtomicUsize,
}

/// One waiting request's place; given back when dropped.
struct Slot<'a> {
    proxy: &'a Proxy,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.proxy.holds.waiting.fetch_sub(1, Relaxed);
        self.proxy.metrics.held_requests.dec();
    }
}

#[derive(Debug, Clone, Copy)]
enum Reason {
    Table,
    Member,
}

impl Reason {
    fn label(self) -> &'static str {
        match self {
            Reason::Table => "table",
            Reason::Member => "member",
        }
    }
}

fn count(proxy: &Proxy, reason: Reason, outcome: &str) {
    proxy
        .metrics
        .holds
        .with_label_values(&[reason.label(), outcome])
        .inc();
}

/// A place to wait in, unless holding is off or every place is taken.
fn admit<'a>(proxy: &'a Proxy, cfg: &Config, reason: Reason) -> Option<Slot<'a>> {
    if cfg.limits.start_hold.is_zero() {
        return None;
    }
    let taken = proxy.holds.waiting.fetch_update(Relaxed, Relaxed, |n| {
        (n < cfg.limits.max_held_requests).then_some(n + 1)
    });
    if taken.is_err() {
        count(proxy, reason, "refused");
        return None;
    }
    proxy.metrics.held_requests.inc();
    Some(Slot { proxy })
}

/// Waits until the route feed has delivered its first table, or `limits.start_hold_ms`.
/// True when it has.
pub async fn for_table(proxy: &Proxy, cfg: &Config) -> bool {
    let Some(_slot) = admit(proxy, cfg, Reason::Table) else {
        return false;
    };
    let mut synced = proxy.feed_synced.subscribe();
    let arrived = tokio::time::timeout(cfg.limits.start_hold, synced.wait_for(|s| *s))
        .await
        .is_ok_and(|r| r.is_ok());
    count(
        proxy,
        Reason::Table,
        if arrived { "served" } else { "timed_out" },
    );
    arrived
}

/// Waits until the pool named like `pool` has a member, or `limits.start_hold_ms`; returns
/// the pool as the table has it then (the same one when the time ran out).
pub async fn for_member(proxy: &Proxy, cfg: &Config, pool: Arc<Pool>) -> Arc<Pool> {
    let Some(_slot) = admit(proxy, cfg, Reason::Member) else {
        return pool;
    };
    // Subscribed before the table is read, so a change in between is not missed.
    let mut changed = proxy.routing.subscribe();
    let deadline = tokio::time::Instant::now() + cfg.limits.start_hold;
    loop {
        if let Some(now) = proxy.routing.load().pools.get(pool.name()) {
            if !now.members.is_empty() {
                count(proxy, Reason::Member, "served");
                return Arc::clone(now);
            }
        }
        match tokio::time::timeout_at(deadline, changed.changed()).await {
            Ok(Ok(())) => {}
            // Out of time, or the table is gone (shutting down).
            _ => {
                count(proxy, Reason::Member, "timed_out");
                return pool;
            }
        }
    }
}
