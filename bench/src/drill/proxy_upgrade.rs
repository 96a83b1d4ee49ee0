//! proxy-upgrade: a standalone proxy replaced by a new process under load.

use super::*;

/// A standalone proxy (following control's feed) replaced by a new process under load with
/// `stacklab proxy --upgrade`: no request fails, and the old process drains and exits.
pub(super) async fn proxy_upgrade(o: &Options) -> anyhow::Result<Outcome> {
    let name = "proxy-upgrade";
    let port = free_port()?;
    let control_admin = SocketAddr::from(([127, 0, 0, 1], port));
    let mut st = Stack::new(o, name, &[], "")?;
    let proxy_config = st.dir.join("proxy.toml");
    std::fs::write(
        &proxy_config,
        format!(
            "{}\n[feed]\nurl = \"http://{control_admin}/admin/routes/feed\"\ntoken = \"{TOKEN}\"\n",
            std::fs::read_to_string(&st.config)?
        ),
    )?;
    let result = async {
        let config = st.config.display().to_string();
        let c = st.spawn(
            "control",
            &["control", "--config", &config],
            &[
                ("STACKLAB_ADMIN_ADDR", control_admin.to_string()),
                ("STACKLAB_BACKEND_INSTANCES", "2".to_owned()),
            ],
        )?;
        st.proc(c).wait_line("stacklab control:").await?;
        let pc = proxy_config.display().to_string();
        let old = st.spawn("proxy", &["proxy", "--config", &pc], &[])?;
        let l = st.proc(old).wait_line("stacklab proxy: https://").await?;
        let edge_addr: SocketAddr = l.trim_start_matches("stacklab proxy: https://").parse()?;
        let old_pid = st.proc(old).pid().context("the proxy's pid")?;
        let edge = st.edge(edge_addr)?;
        eventually(
            "the proxy routes to control",
            Duration::from_secs(10),
            || {
                let edge = edge.clone();
                async move {
                    edge.call("GET", "/api/options", None, None)
                        .await
                        .is_ok_and(|r| r.status == 200)
                }
            },
        )
        .await?;
        let codes = sessions(
            &edge,
            4,
            json!({"password_storage": "sha256", "cache": "none"}),
        )
        .await?;

        let load = Load::start(&edge, &codes, GETS, POSTS, o.seconds);
        load.until(o.seconds, 0.3).await;
        let t0 = Instant::now();
        let new = st.spawn("proxy-new", &["proxy", "--config", &pc, "--upgrade"], &[])?;
        st.proc(new).wait_line("stacklab proxy: https://").await?;
        let took_ms = t0.elapsed().as_millis();
        let exit = st.proc(old).wait_exit(Duration::from_secs(15)).await;
        let old_exit_ms = t0.elapsed().as_millis();
        let resent = load.resent.load(Relaxed);
        let recs = load.finish().await;
        let t = Tally::of(&recs);
        let new_pid = st.proc(new).pid();
        // After: the edge answers from the new process (old is gone), HTTP/1.1 over the same port.
        let after = edge
            .call("GET", "/api/users?limit=1", Some(&codes[0]), None)
            .await?;
        let mut fails = Vec::new();
        pass_fail(
            t.failed() == 0,
            "a request failed across the upgrade",
            &mut fails,
        );
        pass_fail(
            exit.is_some_and(|s| s.success()),
            "the old process did not exit cleanly",
            &mut fails,
        );
        pass_fail(
            after.status == 200,
            "the new process does not serve",
            &mut fails,
        );
        pass_fail(new_pid.is_some(), "the new process is gone", &mut fails);
        let figures = format!(
            "{} old_pid={old_pid} new_pid={} handover_ms={took_ms} old_exit_ms={old_exit_ms} ({})",
            figures(&t, resent),
            new_pid.map_or("-".into(), |p| p.to_string()),
            exit.map_or("still running".into(), |s| s.to_string())
        );
        Ok(finish(name, figures, fails, Some(&t)))
    }
    .await;
    st.stop().await;
    result
}
