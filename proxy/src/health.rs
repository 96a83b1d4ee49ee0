//! Member health: active checks, passive ejection, and the events they raise.
//!
//! - **Active**: a pool with a `health` spec has one task that probes every member with
//!   `GET <path>` each `interval_ms`; `fall` failures in a row take a member out, `rise`
//!   successes bring it back. The task reads the live table each round, so members added or
//!   removed are picked up without restarting it, and it ends when its pool is gone.
//! - **Passive**: every proxied attempt reports its outcome. `consecutive_failures` failures in
//!   a row eject the member for `base_ejection_ms`, doubled for each ejection in a row up to
//!   `max_ejection_ms`. When the time is up the member takes requests again; one more failure
//!   ejects it again at once, one success clears its record.
//!
//! **What counts as a failure.** Only a member that did not answer: the connection could not
//! be made, it broke (reset, protocol error) before the response head came, or the head did
//! not come within `limits.upstream_response_timeout_ms`. A response the member sent — any
//! status, 5xx included — is an answer, not a failure: a `503 provisioning_failed` or a
//! `500` with a JSON body is the member saying what it chose to say, and ejecting it for that
//! turns one refused request into every request refused (`503 no_healthy_member`). This is
//! nginx's default (`max_fails` counts `error` and `timeout`, never a status). A member that
//! is really sick shows it to the active checks (`health` on the pool), which do look at the
//! status. And nothing on the client's side — a body that is malformed, cut short or stalled —
//! ever counts (see [`crate::upstream`]).
//!
//! **The last member stays.** Passive health never ejects a pool's last member that can take
//! requests: with it out every request would get `503 no_healthy_member`, which helps no one
//! when trying it might work (Envoy's `max_ejection_percent` to the same end). Such a spared
//! ejection is counted in `stacklab_proxy_ejections_spared_total{pool}`. Active checks and
//! draining still take a last member out: they are deliberate.
//!
//! Each change of state is a [`MemberEvent`]: logged, counted, and broadcast (the admin API
//! streams them at `/admin/events`).

use crate::pool::{Member, MemberState, Pool};
use crate::Proxy;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::task::JoinHandle;

/// A member changed state.
#[derive(Debug, Clone, Serialize)]
pub struct MemberEvent {
    pub pool: String,
    pub member: String,
    pub state: MemberState,
    pub reason: String,
    /// Proxy clock, milliseconds since start.
    pub at_ms: u64,
}

pub fn emit(proxy: &Proxy, pool: &str, member: &Member, state: MemberState, reason: String) {
    proxy
        .metrics
        .health_events
        .with_label_values(&[pool, state_label(state)])
        .inc();
    tracing::warn!(target: "health", pool, member = %member.id, addr = %member.addr, state = state_label(state), %reason, "member state changed");
    let _ = proxy.events.send(MemberEvent {
        pool: pool.to_owned(),
        member: member.id.clone(),
        state,
        reason,
        at_ms: proxy.clock.now_ms(),
    });
}

pub fn state_label(state: MemberState) -> &'static str {
    match state {
        MemberState::Healthy => "healthy",
        MemberState::Unhealthy => "unhealthy",
        MemberState::Ejected => "ejected",
        MemberState::Draining => "draining",
    }
}

/// Records one proxied attempt's outcome for passive health.
/// A member that could not be connected to: with its port closed (the process is gone), every
/// request sent its way until `consecutive_failures` is reached would fail too, so it is
/// ejected by this one failure.
pub fn passive_unreachable(proxy: &Proxy, pool: &Pool, member: &Member) {
    let threshold = proxy.config.load().passive_health.consecutive_failures;
    member
        .passive_failures
        .fetch_max(threshold.saturating_sub(1), Relaxed);
    passive_result(proxy, pool, member, false);
}

/// Whether some member of `pool` other than `member` can take requests now.
fn others_eligible(pool: &Pool, member: &Member, now: u64) -> bool {
    pool.members
        .iter()
        .any(|m| !std::ptr::eq(&**m, member) && m.eligible(now))
}

/// `ok`: the member answered (any status); else it failed as the module doc describes.
pub fn passive_result(proxy: &Proxy, pool: &Pool, member: &Member, ok: bool) {
    let pool_name = pool.name();
    if ok {
        if member.passive_failures.load(Relaxed) != 0 {
            member.passive_failures.store(0, Relaxed);
        }
        if member.ejections_in_row.load(Relaxed) != 0
            && member.ejections_in_row.swap(0, Relaxed) != 0
        {
            emit(
                proxy,
                pool_name,
                member,
                MemberState::Healthy,
                "answered after its ejection ended".into(),
            );
        }
        return;
    }
    let cfg = proxy.config.load();
    let ph = &cfg.passive_health;
    let now = proxy.clock.now_ms();
    if member.ejected_until_ms.load(Relaxed) > now {
        return; // already out; failures of requests sent before the ejection do not count twice
    }
    let recovering = member.ejections_in_row.load(Relaxed) > 0;
    let failures = member.passive_failures.fetch_add(1, Relaxed) + 1;
    if failures < ph.consecutive_failures && !recovering {
        return;
    }
    member.passive_failures.store(0, Relaxed);
    if !others_eligible(pool, member, now) {
        spare(proxy, pool_name, member, failures);
        return;
    }
    let n = member.ejections_in_row.load(Relaxed).min(16);
    let length = ph.base_ejection.saturating_mul(1 << n).min(ph.max_ejection);
    member
        .ejected_until_ms
        .store(now + length.as_millis() as u64, Relaxed);
    // Two last members failing at once could each see the other still in: whoever finds the
    // pool empty after its own ejection takes it back.
    if !others_eligible(pool, member, now) {
        member.ejected_until_ms.store(0, Relaxed);
        spare(proxy, pool_name, member, failures);
        return;
    }
    member.ejections_in_row.fetch_add(1, Relaxed);
    proxy
        .metrics
        .ejections
        .with_label_values(&[pool_name])
        .inc();
    emit(
        proxy,
        pool_name,
        member,
        MemberState::Ejected,
        format!(
            "{failures} failed attempt(s) in a row; out for {} ms",
            length.as_millis()
        ),
    );
}

/// The ejection a pool's last eligible member would have had, not made.
fn spare(proxy: &Proxy, pool: &str, member: &Member, failures: u32) {
    proxy
        .metrics
        .ejections_spared
        .with_label_values(&[pool])
        .inc();
    tracing::debug!(target: "health", pool, member = %member.id, failures, "not ejected: it is the last member of its pool that can take requests");
}

/// Keeps one active checker running per pool that has a health spec.
pub fn spawn_supervisor(proxy: &Arc<Proxy>) -> JoinHandle<()> {
    let weak = Arc::downgrade(proxy);
    let mut changes = proxy.routing.subscribe();
    let shutdown = proxy.shutdown.clone();
    tokio::spawn(async move {
        let mut running: HashMap<String, JoinHandle<()>> = HashMap::new();
        loop {
            {
                let Some(proxy) = weak.upgrade() else { return };
                running.retain(|_, h| !h.is_finished());
                let table = proxy.routing.load_full();
                for (name, pool) in &table.pools {
                    if pool.health().is_some() && !running.contains_key(name) {
                        running.insert(
                            name.clone(),
                            tokio::spawn(check_pool(Arc::downgrade(&proxy), name.clone())),
                        );
                    }
                }
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { break },
                () = shutdown.cancelled() => break,
            }
        }
        for (_, h) in running {
            h.abort();
        }
    })
}

/// A pool's active checks over HTTP: `GET <path>` on each member, healthy on a 2xx or 3xx.
async fn check_pool(proxy: Weak<Proxy>, name: String) {
    let client: Client<_, Empty<bytes::Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1)
        .build(hyper_util::client::legacy::connect::HttpConnector::new());
    run_checks(proxy, name, move |member: Arc<Member>, path: String| {
        let client = client.clone();
        async move {
            let req = http::Request::get(format!("{}{path}", member.base_uri))
                .header(http::header::USER_AGENT, "stacklab-health")
                .body(Empty::new())
                .map_err(|_| "bad health path".to_owned())?;
            match client.request(req).await {
                Ok(res) => {
                    let status = res.status();
                    let _ = res.into_body().collect().await;
                    if status.is_success() || status.is_redirection() {
                        Ok(())
                    } else {
                        Err(format!("health check answered {status}"))
                    }
                }
                Err(e) => Err(format!(
                    "health check failed: {}",
                    crate::upstream::error_chain(&e)
                )),
            }
        }
    })
    .await
}

/// The rounds of a pool's active checks: every `interval_ms`, each member probed at once
/// (bounded by `timeout_ms`), then `rise`/`fall` applied. The probe is a parameter so that the
/// rounds can be tested on a paused clock without sockets (see the tests below); everything
/// here waits on `tokio::time`.
async fn run_checks<P, F>(proxy: Weak<Proxy>, name: String, probe: P)
where
    P: Fn(Arc<Member>, String) -> F,
    F: std::future::Future<Output = Result<(), String>>,
{
    loop {
        let (members, spec) = {
            let Some(proxy) = proxy.upgrade() else { return };
            let table = proxy.routing.load_full();
            let Some(pool) = table.pools.get(&name) else {
                return;
            };
            let Some(spec) = pool.health().cloned() else {
                return;
            };
            (pool.members.clone(), spec)
        };
        let timeout = Duration::from_millis(spec.timeout_ms);
        let probes = members.iter().map(|m| {
            let probe = probe(Arc::clone(m), spec.path.clone());
            async move {
                tokio::time::timeout(timeout, probe)
                    .await
                    .unwrap_or_else(|_| {
                        Err(format!(
                            "health check timed out after {} ms",
                            timeout.as_millis()
                        ))
                    })
            }
        });
        let results = futures_util::future::join_all(probes).await;
        {
            let Some(proxy) = proxy.upgrade() else { return };
            for (m, result) in members.iter().zip(results) {
                record_active(&proxy, &name, m, result, spec.rise, spec.fall);
            }
        }
        tokio::time::sleep(Duration::from_millis(spec.interval_ms)).await;
    }
}

fn record_active(
    proxy: &Proxy,
    pool: &str,
    m: &Member,
    result: Result<(), String>,
    rise: u32,
    fall: u32,
) {
    let up = m.active_up.load(Relaxed);
    match (up, result) {
        (true, Ok(())) | (false, Err(_)) => m.active_streak.store(0, Relaxed),
        (true, Err(reason)) => {
            if m.active_streak.fetch_add(1, Relaxed) + 1 >= fall {
                m.active_streak.store(0, Relaxed);
                m.active_up.store(false, Relaxed);
                emit(
                    proxy,
                    pool,
                    m,
                    MemberState::Unhealthy,
                    format!("{fall} failed check(s) in a row: {reason}"),
                );
            }
        }
        (false, Ok(())) => {
            if m.active_streak.fetch_add(1, Relaxed) + 1 >= rise {
                m.active_streak.store(0, Relaxed);
                m.active_up.store(true, Relaxed);
                emit(
                    proxy,
                    pool,
                    m,
                    MemberState::Healthy,
                    format!("{rise} passed check(s) in a row"),
                );
            }
        }
    }
}

/// The rounds of active checks on a paused clock: a fake probe instead of sockets, so tokio
/// moves time from one round to the next and the tests take no real time (issue 19: they ran
/// on real 20 ms intervals). `tests/it/health.rs` checks the real HTTP probe over sockets.
#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use tokio::sync::broadcast;

    const INTERVAL_MS: u64 = 2_000;
    const TIMEOUT_MS: u64 = 1_000;

    /// A proxy (nothing bound) with pool `p` of members `m0` and `m1`, checked every 2 s.
    fn proxy(name: &str, rise: u32, fall: u32) -> (Arc<Proxy>, std::path::PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("stacklab-health-{name}-{}", std::process::id()));
        let text = format!(
            "data_dir = \"{}\"\n[admin]\ntoken = \"health-unit-test-token-0123\"\n[[pools]]\nname = \"p\"\nalgorithm = \"round_robin\"\nmembers = [{{ id = \"m0\", addr = \"127.0.0.1:1\" }}, {{ id = \"m1\", addr = \"127.0.0.1:2\" }}]\nhealth = {{ path = \"/healthz\", interval_ms = {INTERVAL_MS}, timeout_ms = {TIMEOUT_MS}, rise = {rise}, fall = {fall} }}\n[[routes]]\npath = \"/\"\npool = \"p\"\n",
            dir.display()
        );
        let env = std::collections::BTreeMap::<String, String>::new();
        let cfg = crate::config::Config::from_toml(&text, &env).unwrap_or_else(|r| panic!("{r}"));
        (Proxy::new(cfg).unwrap(), dir)
    }

    /// The next member event; the deadline is on the paused clock, so a missing event fails
    /// the test at once instead of hanging it.
    async fn next_event(events: &mut broadcast::Receiver<MemberEvent>) -> MemberEvent {
        tokio::time::timeout(Duration::from_secs(600), events.recv())
            .await
            .expect("a member event within 10 minutes of the proxy's clock")
            .expect("the event channel is open")
    }

    #[tokio::test(start_paused = true)]
    async fn fall_failed_rounds_take_a_member_out_and_rise_passed_ones_bring_it_back() {
        let (proxy, dir) = proxy("rounds", 2, 3);
        let mut events = proxy.events.subscribe();
        let m1_fails = Arc::new(AtomicBool::new(false));
        let fails = Arc::clone(&m1_fails);
        let checks = tokio::spawn(run_checks(
            Arc::downgrade(&proxy),
            "p".into(),
            move |m: Arc<Member>, path: String| {
                assert_eq!(path, "/healthz");
                let fail = m.id == "m1" && fails.load(Relaxed);
                async move {
                    if fail {
                        Err("health check answered 503 Service Unavailable".to_owned())
                    } else {
                        Ok(())
                    }
                }
            },
        ));
        // Rounds run at 0, 2 s, 4 s, … on the proxy's clock; m1 starts failing at 1 s.
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        m1_fails.store(true, Relaxed);
        let ev = next_event(&mut events).await;
        assert_eq!(
            (ev.member.as_str(), ev.state),
            ("m1", MemberState::Unhealthy)
        );
        assert_eq!(
            ev.at_ms,
            3 * INTERVAL_MS,
            "out on the third failed round (fall = 3)"
        );
        assert!(
            ev.reason
                .contains("3 failed check(s) in a row: health check answered 503"),
            "{}",
            ev.reason
        );
        let table = proxy.routing.load_full();
        let pool = &table.pools["p"];
        assert_eq!(
            pool.member("m1").unwrap().state(proxy.clock.now_ms()),
            MemberState::Unhealthy
        );
        assert_eq!(
            pool.member("m0").unwrap().state(proxy.clock.now_ms()),
            MemberState::Healthy
        );

        m1_fails.store(false, Relaxed);
        let ev = next_event(&mut events).await;
        assert_eq!((ev.member.as_str(), ev.state), ("m1", MemberState::Healthy));
        assert_eq!(
            ev.at_ms,
            5 * INTERVAL_MS,
            "back on the second passed round (rise = 2)"
        );
        assert_eq!(
            pool.member("m1").unwrap().state(proxy.clock.now_ms()),
            MemberState::Healthy
        );
        checks.abort();
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_that_never_answers_fails_at_the_timeout() {
        let (proxy, dir) = proxy("timeout", 2, 2);
        let mut events = proxy.events.subscribe();
        let checks = tokio::spawn(run_checks(
            Arc::downgrade(&proxy),
            "p".into(),
            |m: Arc<Member>, _path: String| async move {
                if m.id == "m1" {
                    std::future::pending::<()>().await;
                }
                Ok(())
            },
        ));
        let ev = next_event(&mut events).await;
        assert_eq!(
            (ev.member.as_str(), ev.state),
            ("m1", MemberState::Unhealthy)
        );
        // Round one times out at 1 s, round two starts 2 s later and times out at 4 s.
        assert_eq!(ev.at_ms, TIMEOUT_MS + INTERVAL_MS + TIMEOUT_MS);
        assert!(
            ev.reason.contains("timed out after 1000 ms"),
            "{}",
            ev.reason
        );
        checks.abort();
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test(start_paused = true)]
    async fn the_checks_end_when_the_proxy_is_gone() {
        let (proxy, dir) = proxy("gone", 2, 2);
        let checks = tokio::spawn(run_checks(
            Arc::downgrade(&proxy),
            "p".into(),
            |_: Arc<Member>, _: String| async { Ok(()) },
        ));
        tokio::time::sleep(Duration::from_millis(INTERVAL_MS / 2)).await;
        drop(proxy);
        tokio::time::timeout(Duration::from_millis(2 * INTERVAL_MS), checks)
            .await
            .expect("the checks stop within a round once the proxy is gone")
            .unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }
}
