//! stacklab's Rust backend runtime: the users API over REST and GraphQL, on each session's own
//! database and cache, with the password storage and encryption at rest the session chose.
//!
//! Many sessions share one instance: the proxy names the session in `x-stacklab-session`, the
//! instance resolves its stack descriptor and keeps its connections open while it is used.
//!
//! # Layout
//! - [`http`]: routes, JSON in and out, `Server-Timing` and `x-stacklab-cache`.
//! - [`graphql`]: the GraphQL schema over the same service.
//! - [`service`]: the users service (cache first, then database; write policies).
//! - [`sessions`]: which sessions are open here, and where descriptors come from.
//! - [`storage`]: database adapters; [`cache`]: cache adapters.
//! - [`password`]: the five password storage modes; [`crypto`]: AES-256-GCM and blind indexes.
//! - [`analysis`]: size, rows and the on-demand benchmark.
//! - [`guard`]: the bounds on hashing and benchmarks (CPU and memory amplifiers).
//! - [`config`], [`error`]: limits and the API error type.

pub mod analysis;
pub mod cache;
pub mod config;
pub mod crypto;
pub mod error;
pub mod graphql;
pub mod guard;
pub mod http;
pub mod password;
pub mod service;
pub mod sessions;
pub mod storage;

use hyper::body::Incoming;
use stacklab_types::Secret;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What every request of this instance shares.
pub struct App {
    pub config: Arc<config::BackendConfig>,
    pub sessions: sessions::Sessions,
    pub schema: graphql::UsersSchema,
    /// The runtime credential control started this instance with (the first line of its
    /// stdin): it authenticates this instance to control, and control to the internal endpoints.
    pub credential: Secret,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("sessions", &self.sessions)
            .finish_non_exhaustive()
    }
}

impl App {
    pub fn new(
        config: config::BackendConfig,
        source: Arc<dyn sessions::StackSource>,
        credential: Secret,
    ) -> Arc<Self> {
        let config = Arc::new(config);
        let sessions = sessions::Sessions::new(source, Arc::clone(&config));
        let schema = graphql::schema(&config.limits, Arc::clone(&sessions.guards));
        Arc::new(Self {
            sessions,
            config,
            schema,
            credential,
        })
    }
}

/// Serves HTTP/1.1 and h2c on `listener` until `shutdown`, then lets requests in flight finish.
pub async fn run(listener: TcpListener, app: Arc<App>, shutdown: CancellationToken) {
    let tracker = tokio_util::task::TaskTracker::new();
    let sweeper = {
        let app = Arc::clone(&app);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(30));
            loop {
                tokio::select! {
                    _ = tick.tick() => app.sessions.sweep().await,
                    () = shutdown.cancelled() => return,
                }
            }
        })
    };
    stacklab_serve::serve_http(
        listener,
        shutdown,
        &tracker,
        std::time::Duration::from_secs(10),
        move |req: ::http::Request<Incoming>| http::handle(Arc::clone(&app), req),
    )
    .await;
    sweeper.abort();
    tracker.close();
    tracker.wait().await;
}
