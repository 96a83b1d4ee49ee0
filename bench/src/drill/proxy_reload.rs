//! proxy-reload: `stacklab up` reloaded under load (SIGHUP and the admin API).

use super::*;

/// `stacklab up` reloaded under load, once by SIGHUP and once by `POST /admin/reload`: no
/// request fails and the admin API still takes its token afterwards.
pub(super) async fn proxy_reload(o: &Options) -> anyhow::Result<Outcome> {
    let name = "proxy-reload";
    let mut st = Stack::new(o, name, &[], "")?;
    let result = async {
        // The token generated into <data_dir>/admin.token, as on a real install.
        let config = st.config.display().to_string();
        let i = st.spawn(
            "up",
            &["up", "--config", &config],
            &[
                ("STACKLAB_BACKEND_INSTANCES", "2".to_owned()),
                ("STACKLAB_ADMIN_TOKEN", String::new()),
            ],
        )?;
        let l = st
            .proc(i)
            .wait_line("stacklab is up: https://localhost:")
            .await?;
        let port: u16 = l
            .trim_start_matches("stacklab is up: https://localhost:")
            .trim_end_matches('/')
            .parse()?;
        let admin_addr = st.proc(i).admin_addr().await?;
        let token = std::fs::read_to_string(st.dir.join("data/admin.token"))?
            .trim()
            .to_owned();
        let edge = st.edge(SocketAddr::from(([127, 0, 0, 1], port)))?;
        let codes = sessions(&edge, 4, cheap()).await?;
        let admin_with = |method: &'static str, path: &'static str| {
            let token = token.clone();
            async move {
                let tcp = tokio::net::TcpStream::connect(admin_addr).await?;
                let (mut send, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
                tokio::spawn(conn);
                let req = Request::builder()
                    .method(method)
                    .uri(path)
                    .header("host", admin_addr.to_string())
                    .header("authorization", format!("Bearer {token}"))
                    .body(Full::new(Bytes::new()))?;
                read(send.send_request(req).await?).await
            }
        };

        let load = Load::start(&edge, &codes, GETS, POSTS, o.seconds);
        load.until(o.seconds, 0.3).await;
        st.proc(i).signal("HUP")?;
        load.until(o.seconds, 0.6).await;
        let reload = admin_with("POST", "/admin/reload").await?;
        let resent = load.resent.load(Relaxed);
        let recs = load.finish().await;
        let t = Tally::of(&recs);
        let pools = admin_with("GET", "/admin/pools").await?;
        let mut fails = Vec::new();
        pass_fail(
            t.failed() == 0,
            "a request failed across a reload",
            &mut fails,
        );
        pass_fail(
            reload.status == 200,
            "POST /admin/reload was refused (after the SIGHUP reload)",
            &mut fails,
        );
        pass_fail(
            pools.status == 200,
            "the admin token is refused after the reloads",
            &mut fails,
        );
        let figures = format!(
            "{} reloads=2 (SIGHUP, then POST /admin/reload: {}) admin_after={}",
            figures(&t, resent),
            reload.status,
            pools.status
        );
        Ok(finish(name, figures, fails, Some(&t)))
    }
    .await;
    st.stop().await;
    result
}
