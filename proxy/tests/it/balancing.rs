use crate::helpers::*;
use std::collections::BTreeMap;

async fn distribution(
    p: &TestProxy,
    n: usize,
    headers: &[(&str, &str)],
) -> BTreeMap<String, usize> {
    let c = client();
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let r = get(&c, &p.plain_url("/x"), headers).await;
        assert_eq!(r.status, 200);
        *counts.entry(r.member()).or_insert(0) += 1;
    }
    counts
}

async fn three(name: &str, algorithm: &str, weights: [u32; 3]) -> (TestProxy, Vec<Backend>) {
    let backends = vec![
        Backend::start("m0").await,
        Backend::start("m1").await,
        Backend::start("m2").await,
    ];
    let members: Vec<String> = backends
        .iter()
        .zip(weights)
        .map(|(b, w)| {
            format!(
                "{{ id = \"{}\", addr = \"{}\", weight = {w} }}",
                b.id, b.addr
            )
        })
        .collect();
    let toml = format!(
        "[[pools]]\nname = \"p\"\nalgorithm = \"{algorithm}\"\nmembers = [{}]\n{}",
        members.join(", "),
        route_toml("/", "pool = \"p\"")
    );
    (TestProxy::start(name, &toml).await, backends)
}

#[tokio::test]
async fn round_robin_spreads_evenly() {
    let (p, _b) = three("rr", "round_robin", [1, 1, 1]).await;
    let d = distribution(&p, 300, &[]).await;
    assert_eq!(
        d.values().copied().collect::<Vec<_>>(),
        [100, 100, 100],
        "{d:?}"
    );
}

#[tokio::test]
async fn weighted_round_robin_follows_weights() {
    let (p, _b) = three("wrr", "weighted_round_robin", [3, 2, 1]).await;
    let d = distribution(&p, 600, &[]).await;
    assert_eq!(
        d.values().copied().collect::<Vec<_>>(),
        [300, 200, 100],
        "{d:?}"
    );
}

#[tokio::test]
async fn least_in_flight_avoids_a_member_that_is_busy() {
    let (p, b) = three("lif", "least_in_flight", [1, 1, 1]).await;
    let c = client();
    // Park two requests on whichever members take them; the third member stays free.
    let parked: Vec<_> = (0..2)
        .map(|_| {
            let (c, url) = (c.clone(), p.plain_url("/gate"));
            tokio::spawn(async move { get(&c, &url, &[]).await.member() })
        })
        .collect();
    eventually("two parked requests", || {
        b.iter()
            .map(|x| x.hits.load(std::sync::atomic::Ordering::Relaxed))
            .sum::<u64>()
            == 2
    })
    .await;
    let busy: Vec<usize> = b
        .iter()
        .enumerate()
        .filter(|(_, x)| x.hits.load(std::sync::atomic::Ordering::Relaxed) == 1)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        busy.len(),
        2,
        "least in flight spread the two parked requests"
    );
    let d = distribution(&p, 30, &[]).await;
    let free = (0..3).find(|i| !busy.contains(i)).unwrap();
    assert_eq!(d.get(&format!("m{free}")), Some(&30), "{d:?}");
    for x in &b {
        x.gate.add_permits(10);
    }
    for t in parked {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn p2c_ewma_shifts_load_away_from_a_slow_member() {
    let (p, b) = three("p2c", "p2c_ewma", [1, 1, 1]).await;
    b[0].delay_ms
        .store(40, std::sync::atomic::Ordering::Relaxed);
    let d = distribution(&p, 300, &[]).await;
    let slow = d.get("m0").copied().unwrap_or(0);
    assert!(
        slow <= 15,
        "the slow member's peak EWMA keeps it out of most picks: {d:?}"
    );
    // Each fast member wins every draw it shares with the slow one (about a third of draws);
    // draws between the two fast ones go to whichever is faster at that moment.
    assert!(
        d.get("m1").copied().unwrap_or(0) > 50 && d.get("m2").copied().unwrap_or(0) > 50,
        "{d:?}"
    );
}

#[tokio::test]
async fn consistent_hash_keeps_a_session_on_one_member() {
    let (p, _b) = three("chash", "consistent_hash", [1, 1, 1]).await;
    let mut per_session = BTreeMap::new();
    for k in 0..30 {
        let code = format!("SESSION{k:019}");
        let r = admin(
            &p,
            "PUT",
            &format!("/admin/sessions/{}", id(&code)),
            serde_json::json!({"pool": "p"}),
        )
        .await;
        assert_eq!(r.status, 200);
        let d = distribution(&p, 5, &[("cookie", &cookie(&code))]).await;
        assert_eq!(d.len(), 1, "session {code} moved: {d:?}");
        *per_session
            .entry(d.into_keys().next().unwrap())
            .or_insert(0) += 1;
    }
    assert_eq!(
        per_session.len(),
        3,
        "sessions spread over the members: {per_session:?}"
    );
}
