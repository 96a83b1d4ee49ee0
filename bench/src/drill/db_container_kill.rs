//! db-container-kill: a session's database container killed under load.

use super::*;

/// A docker session's database container killed from outside (`docker kill`) under load on
/// it and on two other sessions (another docker one and an embedded one): the victim's
/// requests get a clear JSON error (never a hang past the request timeout), control marks it
/// `broken` with what happened, `POST /api/session/reprovision` gives it a fresh stack that
/// serves again, and the other sessions see no failed request at all.
pub(super) async fn db_container_kill(o: &Options) -> anyhow::Result<Outcome> {
    let name = "db-container-kill";
    let Some(docker) = docker_section(o)? else {
        return Ok(skipped(name));
    };
    let mut st = Stack::new(o, name, &[], &docker)?;
    let result = async {
        let (_, edge_addr, _) = st.up(2).await?;
        let edge = st.edge(edge_addr)?;
        let pg = json!({"provisioner": "docker", "database": "postgres", "cache": "redis", "password_storage": "sha256"});
        let mut dockered = sessions(&edge, 2, pg).await?;
        let embedded = sessions(&edge, 1, cheap()).await?;
        let victim = dockered.remove(0);
        let others: Vec<String> = dockered.into_iter().chain(embedded).collect();
        let v = edge.call("GET", "/api/session", Some(&victim), None).await?.json();
        let container = v["resources"]["database"]["container"]
            .as_str()
            .with_context(|| format!("no database container in {v}"))?
            .to_owned();

        // The victim's load outlasts the others' by enough for a request stuck on the dead
        // database (the backend's 5 s connection wait) and the re-provision, so requests after
        // it are seen.
        let victim_seconds = o.seconds + 10.0;
        let load_victim = Load::start(&edge, std::slice::from_ref(&victim), 2, 0, victim_seconds);
        let load_others = Load::start(&edge, &others, GETS - 2, POSTS, o.seconds);
        load_others.until(o.seconds, 0.25).await;
        // Taken before the command: the container dies while `docker kill` runs.
        let killed_at_ms = load_victim.now_ms();
        let kill = std::process::Command::new("docker")
            .args(["kill", &container])
            .output()
            .context("cannot run docker kill")?;
        if !kill.status.success() {
            bail!("docker kill {container}: {}", String::from_utf8_lossy(&kill.stderr));
        }
        let killed = Instant::now();
        let mut detect_ms = None;
        while killed.elapsed() < Duration::from_secs(20) {
            if matches!(
                edge.call("GET", "/api/session", Some(&victim), None).await,
                Ok(r) if r.json()["state"] == "broken"
            ) {
                detect_ms = Some(killed.elapsed().as_millis());
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let asked = Instant::now();
        let r = edge
            .call("POST", "/api/session/reprovision", Some(&victim), Some(json!({})))
            .await?;
        let reprovision_ms = asked.elapsed().as_millis();
        let reprovisioned = r.status == 200 && r.json()["state"] == "ready";
        let back_at_ms = load_victim.now_ms();
        let others_resent = load_others.resent.load(Relaxed);
        let victim_recs = load_victim.finish().await;
        let other_recs = load_others.finish().await;
        let others_t = Tally::of(&other_recs);
        // Requests sent just before the kill may be in flight when it lands: they count with
        // the broken ones (a victim request otherwise takes milliseconds).
        let in_flight_ms = 200;
        let before = Tally::of(
            victim_recs
                .iter()
                .filter(|r| r.at_ms + in_flight_ms < killed_at_ms),
        );
        let broken: Vec<&Rec> = victim_recs
            .iter()
            .filter(|r| r.at_ms + in_flight_ms >= killed_at_ms && r.at_ms < back_at_ms)
            .collect();
        let broken_failed = broken.iter().filter(|r| r.failed()).count();
        let broken_unclear = broken
            .iter()
            .filter(|r| r.failed() && !r.json_error)
            .count();
        let after = Tally::of(victim_recs.iter().filter(|r| r.at_ms >= back_at_ms));
        let victim_failure = before
            .first_failure
            .clone()
            .or_else(|| after.first_failure.clone());
        // The victim serves again once re-made: a user can be created and read.
        let fresh = edge
            .call(
                "POST",
                "/api/users",
                Some(&victim),
                Some(json!({"username": "again", "email": "again@example.com", "password": "drill password"})),
            )
            .await?;
        for code in std::iter::once(&victim).chain(&others) {
            let _ = edge.call("DELETE", "/api/session", Some(code), None).await;
        }
        let mut fails = Vec::new();
        pass_fail(others_t.failed() == 0, "another session saw a failed request", &mut fails);
        pass_fail(before.failed() == 0, "the victim failed before the kill", &mut fails);
        pass_fail(broken_unclear == 0, "a request of the broken session failed without a JSON error", &mut fails);
        pass_fail(detect_ms.is_some(), "the session was never marked broken", &mut fails);
        pass_fail(reprovisioned, "POST /api/session/reprovision did not make it ready", &mut fails);
        pass_fail(fresh.status == 201, "the re-made session did not take a new user", &mut fails);
        pass_fail(after.failed() == 0, "the victim failed after it was re-made", &mut fails);
        pass_fail(after.ok > 0, "the victim served nothing after it was re-made", &mut fails);
        let figures = format!(
            "others: {} | victim: before_ok={}/{} while_broken={} (failed={} clear_json={}) after_ok={}/{} detect_ms={} reprovision_ms={} reprovision_status={} new_user={}",
            figures(&others_t, others_resent),
            before.ok,
            before.sent,
            broken.len(),
            broken_failed,
            broken_failed - broken_unclear,
            after.ok,
            after.sent,
            detect_ms.map_or("never".to_owned(), |v| v.to_string()),
            reprovision_ms,
            r.status,
            fresh.status,
        );
        let mut figures = figures;
        if let (false, Some(f)) = (fails.is_empty(), victim_failure) {
            figures.push_str(&format!(" victim_failure=\"{f}\""));
        }
        Ok(finish(name, figures, fails, Some(&others_t)))
    }
    .await;
    st.stop().await;
    result
}
