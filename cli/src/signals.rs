//! Signals: SIGHUP reloads the proxy's config; SIGINT and SIGTERM stop gracefully.

use std::sync::Arc;
use tokio::signal::unix::{signal, SignalKind};

/// Returns on SIGTERM or SIGINT.
pub async fn wait_for_stop() {
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! { _ = term.recv() => {}, _ = tokio::signal::ctrl_c() => {} }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Reloads `proxy` on every SIGHUP; shuts it down on SIGTERM or SIGINT.
pub async fn reload_or_stop(proxy: Arc<stacklab_proxy::Proxy>) {
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; reload with the admin API");
        wait_for_stop().await;
        proxy.shutdown.cancel();
        return;
    };
    let stop = wait_for_stop();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = hup.recv() => {
                if let Err(report) = proxy.reload(&stacklab_proxy::config::ProcessEnv) {
                    tracing::error!("reload refused, still on the old config: {report}");
                }
            }
            () = &mut stop => break,
        }
    }
    proxy.shutdown.cancel();
}
