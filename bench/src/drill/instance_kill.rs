//! instance-kill and instance-kill-container: a backend instance killed under load.

use super::*;

/// A backend instance (a child process of control) killed with SIGKILL under load: no
/// idempotent request fails (the proxy retries them on another member), a POST in flight to
/// it fails with a clear JSON 502, and control replaces the instance.
pub(super) async fn instance_kill(o: &Options) -> anyhow::Result<Outcome> {
    instance_kill_of(o, "instance-kill", None).await
}

/// The same with every backend instance in a Docker container (`[docker.backend]`: this
/// build's binary over the local Debian base image), the victim's container killed from
/// outside (its init process SIGKILLed); control replaces it with another container.
pub(super) async fn instance_kill_container(o: &Options) -> anyhow::Result<Outcome> {
    let Some(docker) = docker_section(o)? else {
        return Ok(skipped("instance-kill-container"));
    };
    instance_kill_of(o, "instance-kill-container", Some(docker)).await
}

/// The `[docker]` section of `config/images/docker-local.toml` for a drill (instance
/// `drill`, so a next run removes what an interrupted one left), with backend containers
/// running `o.stacklab` over the local Debian image; `None` (a skip) when the engine or the
/// local images are missing outside CI; an error under `STACKLAB_REQUIRE_SERVICES=1`.
pub(super) fn docker_section(o: &Options) -> anyhow::Result<Option<String>> {
    let check = std::process::Command::new("sh")
        .arg("-c")
        .arg("docker image inspect stacklab/debian:local stacklab/postgres:local stacklab/redis:local >/dev/null 2>&1")
        .status();
    if !check.is_ok_and(|s| s.success()) {
        if std::env::var("STACKLAB_REQUIRE_SERVICES").as_deref() == Ok("1") {
            bail!("no Docker engine with the local images (config/images/build.sh), and STACKLAB_REQUIRE_SERVICES=1");
        }
        return Ok(None);
    }
    let local = include_str!("../../../config/images/docker-local.toml");
    let from = local
        .find("\n[docker]\n")
        .context("docker-local.toml has no [docker] section")?;
    let to = local[from..]
        .find("\n[backend]")
        .map_or(local.len(), |i| from + i);
    let bin = std::path::absolute(&o.stacklab)?;
    let mut section = local[from..to].to_owned();
    for (from, to) in [
        ("instance = \"stacklab\"", "instance = \"drill\"".to_owned()),
        (
            "image = \"stacklab/backend:local\"",
            "image = \"stacklab/debian:local\"".to_owned(),
        ),
        ("binary = \"\"", format!("binary = \"{}\"", bin.display())),
    ] {
        if !section.contains(from) {
            bail!("docker-local.toml's [docker] has no line `{from}`");
        }
        section = section.replacen(from, &to, 1);
    }
    Ok(Some(section))
}

pub(super) fn skipped(name: &str) -> Outcome {
    Outcome {
        name: name.to_owned(),
        figures: "skipped: no Docker engine with the local images (config/images/build.sh)"
            .to_owned(),
        pass: true,
    }
}

pub(super) async fn instance_kill_of(
    o: &Options,
    name: &str,
    docker: Option<String>,
) -> anyhow::Result<Outcome> {
    let containers = docker.is_some();
    let mut st = if let Some(section) = &docker {
        Stack::new(
            o,
            name,
            &[("backend_containers = 0", "backend_containers = 3")],
            section,
        )?
    } else {
        Stack::new(o, name, &[], "")?
    };
    let result = async {
        let (_, edge_addr, admin_addr) = st.up(3).await?;
        let edge = st.edge(edge_addr)?;
        let codes = sessions(&edge, 4, cheap()).await?;
        // The victim: the instance the first session is pinned to.
        let r = edge
            .call("GET", "/api/users", Some(&codes[0]), None)
            .await?;
        let member = r
            .headers
            .get("x-stacklab-member")
            .and_then(|v| v.to_str().ok())
            .context("no x-stacklab-member")?
            .to_owned();
        let instances = admin(admin_addr, "GET", "/admin/instances", None)
            .await?
            .json();
        let victim = instances["instances"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|i| i["id"] == member.as_str())
            .with_context(|| format!("no instance {member} in {instances}"))?;
        let pid = victim["pid"].as_u64().context("no pid")? as u32;
        let kind = victim["kind"].as_str().unwrap_or_default().to_owned();
        if containers != (kind == "container") {
            bail!("the victim {member} is a {kind}, not what this drill kills");
        }

        let load = Load::start(&edge, &codes, GETS, POSTS, o.seconds);
        load.until(o.seconds, 0.35).await;
        signal(pid, "KILL")?;
        let killed = Instant::now();
        let (mut eject_ms, mut recover_ms) = (None, None);
        while recover_ms.is_none() && killed.elapsed() < Duration::from_secs(o.seconds as u64 + 20)
        {
            if let Ok(r) = admin(admin_addr, "GET", "/admin/pools", None).await {
                let v = r.json();
                let members: Vec<Value> = v["pools"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["name"] == "rust")
                    .flat_map(|p| p["members"].as_array().cloned().unwrap_or_default())
                    .collect();
                let victim_up = members
                    .iter()
                    .any(|m| m["id"] == member.as_str() && m["state"] == "healthy");
                if !victim_up && eject_ms.is_none() {
                    eject_ms = Some(killed.elapsed().as_millis());
                }
                let healthy = members.iter().filter(|m| m["state"] == "healthy").count();
                if eject_ms.is_some()
                    && healthy >= 3
                    && !members.iter().any(|m| m["id"] == member.as_str())
                {
                    recover_ms = Some(killed.elapsed().as_millis());
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let resent = load.resent.load(Relaxed);
        let recs = load.finish().await;
        let t = Tally::of(&recs);
        let mut fails = Vec::new();
        pass_fail(
            t.failed_get == 0,
            "an idempotent request failed",
            &mut fails,
        );
        pass_fail(
            t.failed_post <= POSTS,
            "more POSTs failed than were in flight",
            &mut fails,
        );
        pass_fail(
            t.failed_post == t.failed_post_json,
            "a POST failed without a JSON error",
            &mut fails,
        );
        pass_fail(
            eject_ms.is_some(),
            "the member was never ejected",
            &mut fails,
        );
        pass_fail(
            recover_ms.is_some(),
            "no replacement took the traffic back",
            &mut fails,
        );
        let ms = |x: Option<u128>| x.map_or("never".to_owned(), |v| v.to_string());
        let figures = format!(
            "{} victim={kind} eject_ms={} recover_ms={}",
            figures(&t, resent),
            ms(eject_ms),
            ms(recover_ms)
        );
        Ok(finish(name, figures, fails, Some(&t)))
    }
    .await;
    st.stop().await;
    result
}
