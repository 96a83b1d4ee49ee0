//! control-restart: control killed under load and started again.

use super::*;

/// Control (alone, with two backend processes of its own and a proxy of its own) killed with
/// SIGKILL under load and started again: the proxy serves live sessions from its last table
/// all along, and no session is lost.
pub(super) async fn control_restart(o: &Options) -> anyhow::Result<Outcome> {
    let name = "control-restart";
    let port = free_port()?;
    let control_admin = SocketAddr::from(([127, 0, 0, 1], port));
    let feed = format!(
        "\n[feed]\nurl = \"http://{control_admin}/admin/routes/feed\"\ntoken = \"{TOKEN}\"\n"
    );
    let mut st = Stack::new(o, name, &[], "")?;
    let proxy_config = st.dir.join("proxy.toml");
    std::fs::write(
        &proxy_config,
        format!("{}{feed}", std::fs::read_to_string(&st.config)?),
    )?;
    let result = async {
        let config = st.config.display().to_string();
        let control_env = [
            ("STACKLAB_ADMIN_ADDR", control_admin.to_string()),
            ("STACKLAB_BACKEND_INSTANCES", "0".to_owned()),
        ];
        let c = st.spawn("control", &["control", "--config", &config], &control_env)?;
        st.proc(c).wait_line("stacklab control:").await?;
        for b in 0..2 {
            let i = st.spawn(
                &format!("backend{b}"),
                &["backend", "--config", &config, "--addr", "127.0.0.1:0", "--control-url", &format!("http://{control_admin}")],
                &[],
            )?;
            let l = st.proc(i).wait_line("stacklab backend on http://").await?;
            let addr = l.trim_start_matches("stacklab backend on http://").to_owned();
            let r = admin(control_admin, "PUT", &format!("/admin/pools/rust/members/b{b}"), Some(json!({"addr": addr}))).await?;
            if r.status != 200 {
                bail!("registering backend {b}: {} {}", r.status, String::from_utf8_lossy(&r.body));
            }
        }
        let pc = proxy_config.display().to_string();
        let p = st.spawn("proxy", &["proxy", "--config", &pc], &[])?;
        let l = st.proc(p).wait_line("stacklab proxy: https://").await?;
        let edge_addr: SocketAddr = l.trim_start_matches("stacklab proxy: https://").parse()?;
        let edge = st.edge(edge_addr)?;
        eventually("the proxy routes to control", Duration::from_secs(10), || {
            let edge = edge.clone();
            async move { edge.call("GET", "/api/options", None, None).await.is_ok_and(|r| r.status == 200) }
        })
        .await?;
        let codes = sessions(&edge, 4, json!({"password_storage": "sha256", "cache": "none"})).await?;

        let load = Load::start(&edge, &codes, GETS, POSTS, o.seconds);
        load.until(o.seconds, 0.25).await;
        st.proc(c).signal("KILL")?;
        let down_at = load.now_ms();
        st.proc(c).wait_exit(Duration::from_secs(5)).await;
        load.until(o.seconds, 0.6).await;
        let c2 = st.spawn("control2", &["control", "--config", &config], &control_env)?;
        st.proc(c2).wait_line("stacklab control:").await?;
        let up_at = load.now_ms();
        let resent = load.resent.load(Relaxed);
        let recs = load.finish().await;
        let t = Tally::of(&recs);
        let while_down = Tally::of(recs.iter().filter(|r| r.at_ms >= down_at && r.at_ms < up_at));
        // No session lost: each still answers, through the restarted control too.
        let mut kept = 0;
        for code in &codes {
            let s = edge.call("GET", "/api/session", Some(code), None).await?;
            let u = edge.call("GET", "/api/users?q=seed", Some(code), None).await?;
            if s.status == 200 && u.status == 200 && u.body.windows(4).any(|w| w == b"seed") {
                kept += 1;
            }
        }
        // And the feed from the new control works: a new session is served.
        let fresh = sessions(&edge, 1, json!({"password_storage": "sha256", "cache": "none"}))
            .await
            .is_ok();
        let served = if while_down.sent == 0 { 0.0 } else { 100.0 * while_down.ok as f64 / while_down.sent as f64 };
        let mut fails = Vec::new();
        pass_fail(t.failed() == 0, "a request for a live session failed", &mut fails);
        pass_fail(while_down.sent > 0 && while_down.ok == while_down.sent, "not every request was served while control was down", &mut fails);
        pass_fail(kept == codes.len(), "a session was lost", &mut fails);
        pass_fail(fresh, "no new session after the restart", &mut fails);
        let figures = format!(
            "{} control_down_ms={} served_while_down={}/{} ({served:.1}%) sessions_kept={kept}/{} new_session_after_restart={}",
            figures(&t, resent),
            up_at - down_at,
            while_down.ok,
            while_down.sent,
            codes.len(),
            if fresh { "ok" } else { "failed" }
        );
        Ok(finish(name, figures, fails, Some(&t)))
    }
    .await;
    st.stop().await;
    result
}
