//! Health over real sockets: the real HTTP probe and real upstream failures. The rounds'
//! timing (interval, rise, fall, probe timeout) is tested on a paused clock in
//! `src/health.rs`; these use short real intervals, and every wait has a deadline.

use crate::helpers::*;
use stacklab_proxy::health::MemberEvent;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::sync::broadcast;

/// The next member event, or a failed test after 20 s (never a hang).
async fn next_event(events: &mut broadcast::Receiver<MemberEvent>) -> MemberEvent {
    tokio::time::timeout(Duration::from_secs(20), events.recv())
        .await
        .expect("a member event within 20 s")
        .expect("the event channel is open")
}

#[tokio::test]
async fn active_checks_take_a_member_out_and_bring_it_back() {
    let (b0, b1) = (Backend::start("m0").await, Backend::start("m1").await);
    let toml = format!(
        "{}health = {{ path = \"/healthz\", interval_ms = 20, timeout_ms = 500, rise = 2, fall = 2 }}\n{}",
        pool_toml("p", "round_robin", &[&b0, &b1]),
        route_toml("/", "pool = \"p\"")
    );
    let p = TestProxy::start("active", &toml).await;
    let mut events = p.proxy.events.subscribe();
    b1.set_health(503);
    let ev = next_event(&mut events).await;
    assert_eq!(
        (ev.member.as_str(), ev.state),
        ("m1", stacklab_proxy::pool::MemberState::Unhealthy)
    );
    assert!(ev.reason.contains("503"), "{}", ev.reason);

    let c = client();
    let before = b1.hits.load(Relaxed);
    for _ in 0..20 {
        assert_eq!(get(&c, &p.plain_url("/x"), &[]).await.member(), "m0");
    }
    assert_eq!(b1.hits.load(Relaxed), before);

    b1.set_health(200);
    let ev = next_event(&mut events).await;
    assert_eq!(
        (ev.member.as_str(), ev.state),
        ("m1", stacklab_proxy::pool::MemberState::Healthy)
    );
    let d: std::collections::BTreeSet<_> = {
        let mut s = std::collections::BTreeSet::new();
        for _ in 0..4 {
            s.insert(get(&c, &p.plain_url("/x"), &[]).await.member());
        }
        s
    };
    assert_eq!(d.len(), 2);

    let pools = admin(&p, "GET", "/admin/pools", serde_json::Value::Null)
        .await
        .json();
    assert_eq!(pools["pools"][0]["members"][1]["state"], "healthy");
}

#[tokio::test]
async fn passive_checks_eject_a_member_that_does_not_answer_with_backoff_and_restore_it() {
    let (b0, b1) = (Backend::start("m0").await, Backend::start("m1").await);
    let toml = format!(
        "{}{}[passive_health]\nconsecutive_failures = 3\nbase_ejection_ms = 200\nmax_ejection_ms = 1000\n[limits]\nupstream_response_timeout_ms = 100\n",
        pool_toml("p", "round_robin", &[&b0, &b1]),
        route_toml("/", "pool = \"p\"")
    );
    let p = TestProxy::start("passive", &toml).await;
    let mut events = p.proxy.events.subscribe();
    let c = client();
    // m1 stops answering in time; m0 still does.
    b1.delay_ms.store(5_000, Relaxed);
    let mut m1_timeouts = 0;
    while m1_timeouts < 3 {
        let r = get(&c, &p.plain_url("/x"), &[]).await;
        if r.status == 504 {
            assert_eq!(r.json()["error"]["code"], "upstream_timeout");
            m1_timeouts += 1;
        } else {
            assert_eq!(r.member(), "m0");
        }
    }
    let ev = next_event(&mut events).await;
    assert_eq!(
        (ev.member.as_str(), ev.state),
        ("m1", stacklab_proxy::pool::MemberState::Ejected)
    );
    assert!(ev.reason.contains("out for 200 ms"), "{}", ev.reason);
    let metrics = metrics(&p).await;
    assert!(
        metrics.contains("stacklab_proxy_ejections_total{pool=\"p\"} 1"),
        "{metrics}"
    );

    // After the ejection an answer restores it.
    b1.delay_ms.store(0, Relaxed);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let ev = loop {
        let _ = get(&c, &p.plain_url("/ok"), &[]).await;
        match events.try_recv() {
            Ok(ev)
                if ev.member == "m1" && ev.state == stacklab_proxy::pool::MemberState::Healthy =>
            {
                break ev
            }
            _ => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "m1 was not restored within 20 s of answering again"
                );
                tokio::time::sleep(Duration::from_millis(20)).await
            }
        }
    };
    assert!(ev.reason.contains("after its ejection"));
}

/// Issue 22, item 12: control's `503 provisioning_failed` (a JSON refusal it chose to send)
/// ejected control's only member. A response is an answer, whatever its status.
#[tokio::test]
async fn a_members_own_json_refusals_never_eject_it() {
    let (b0, b1) = (Backend::start("m0").await, Backend::start("m1").await);
    let toml = format!(
        "{}{}",
        pool_toml("p", "round_robin", &[&b0, &b1]),
        route_toml("/", "pool = \"p\"")
    );
    let p = TestProxy::start("refusals", &toml).await;
    let c = client();
    for _ in 0..12 {
        let r = get(&c, &p.plain_url("/refuse/503"), &[]).await;
        assert_eq!(r.status, 503, "the member's answer is passed on");
        assert_eq!(r.json()["error"]["code"], "provisioning_failed");
    }
    for status in ["500", "502", "504"] {
        for _ in 0..6 {
            let r = get(&c, &p.plain_url(&format!("/status/{status}")), &[]).await;
            assert_eq!(r.status.as_str(), status);
        }
    }
    assert_members_unharmed(&p).await;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let r = get(&c, &p.plain_url("/x"), &[]).await;
        assert_eq!(r.status, 200);
        seen.insert(r.member());
    }
    assert_eq!(seen.len(), 2, "both members still take requests");
}

/// Issue 22, item 12: passive health alone never takes out a pool's last member; its
/// failures are answered as what they are (504, 502), never `503 no_healthy_member`.
#[tokio::test]
async fn the_last_member_of_a_pool_is_never_ejected_by_passive_health() {
    let b = Backend::start("only").await;
    let toml = format!(
        "{}{}[passive_health]\nconsecutive_failures = 2\n[limits]\nupstream_response_timeout_ms = 100\n",
        pool_toml("p", "round_robin", &[&b]),
        route_toml("/", "pool = \"p\"")
    );
    let p = TestProxy::start("last-member", &toml).await;
    let c = client();
    for _ in 0..6 {
        let r = get(&c, &p.plain_url("/hang"), &[]).await;
        assert_eq!(r.status, 504);
        assert_eq!(r.json()["error"]["code"], "upstream_timeout");
    }
    let r = get(&c, &p.plain_url("/x"), &[]).await;
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let text = metrics(&p).await;
    assert!(
        text.contains("stacklab_proxy_ejections_spared_total{pool=\"p\"} 3"),
        "every second failure would have ejected it: {text}"
    );
    assert!(!text.contains("stacklab_proxy_ejections_total{"), "{text}");
    let pools = admin(&p, "GET", "/admin/pools", serde_json::Value::Null)
        .await
        .json();
    assert_eq!(pools["pools"][0]["members"][0]["state"], "healthy");
}
