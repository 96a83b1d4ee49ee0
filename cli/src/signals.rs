//! Signals: SIGHUP reloads the proxy's config; SIGINT and SIGTERM stop gracefully.
//!
//! A command listens ([`Signals::listen`]) *before* it prints the line that says it is ready:
//! a signal sent right after that line (a supervisor, a test) must find our handler, not the
//! default action that kills the process.

use std::sync::Arc;
use tokio::signal::unix::{signal, Signal, SignalKind};

/// The signals a running command answers, listened for from the moment this is made.
pub struct Signals {
    hup: Option<Signal>,
    term: Option<Signal>,
    int: Option<Signal>,
}

impl Signals {
    /// Starts listening (inside the async runtime).
    pub fn listen() -> Self {
        let listen = |kind: SignalKind, name: &str| {
            signal(kind)
                .map_err(|e| tracing::warn!("cannot listen for {name}: {e}"))
                .ok()
        };
        Self {
            hup: listen(SignalKind::hangup(), "SIGHUP (reload with the admin API)"),
            term: listen(SignalKind::terminate(), "SIGTERM"),
            int: listen(SignalKind::interrupt(), "SIGINT"),
        }
    }

    /// Returns on SIGTERM or SIGINT (never, when neither could be listened for).
    pub async fn stopped(&mut self) {
        stop(&mut self.term, &mut self.int).await;
    }

    /// Reloads `proxy` on every SIGHUP; shuts it down on SIGTERM or SIGINT.
    pub async fn reload_or_stop(self, proxy: Arc<stacklab_proxy::Proxy>) {
        let Signals {
            mut hup,
            mut term,
            mut int,
        } = self;
        loop {
            tokio::select! {
                _ = recv(&mut hup) => {
                    if let Err(report) = proxy.reload(&stacklab_proxy::config::ProcessEnv) {
                        tracing::error!("reload refused, still on the old config: {report}");
                    }
                }
                () = stop(&mut term, &mut int) => break,
            }
        }
        proxy.shutdown.cancel();
    }
}

/// The next SIGTERM or SIGINT.
async fn stop(term: &mut Option<Signal>, int: &mut Option<Signal>) {
    tokio::select! {
        _ = recv(term) => {}
        _ = recv(int) => {}
    }
}

/// The next delivery of `signal`; pending for ever when it is not listened for.
async fn recv(signal: &mut Option<Signal>) {
    match signal {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}
