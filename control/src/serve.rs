//! Wiring: `stacklab up` (proxy and control in one process, backends as children) and
//! `stacklab control` (control alone, for several machines).

use crate::config::ControlConfig;
use crate::{Control, Options};
use anyhow::Context;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use stacklab_proxy::body::RespBody;
use stacklab_proxy::config::{Config, FeedConfig};
use stacklab_proxy::Server;
use stacklab_types::routes::{MemberSpec, PoolSpec, RouteUpdate};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The pool control's public API is a member of.
pub const CONTROL_POOL: &str = "control";

/// Serves HTTP/1.1 and HTTP/2 on `listener` with `handler` until `shutdown`.
pub fn serve_http<F, Fut>(
    listener: TcpListener,
    shutdown: CancellationToken,
    handler: F,
) -> JoinHandle<()>
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = Response<RespBody>> + Send + 'static,
{
    tokio::spawn(async move {
        // Connections are not waited for: control's shutdown gives each a second.
        let tracker = tokio_util::task::TaskTracker::new();
        stacklab_serve::serve_http(
            listener,
            shutdown,
            &tracker,
            std::time::Duration::from_secs(1),
            handler,
        )
        .await;
    })
}

/// A loopback URL for a bound address (`[::]:9000` → `http://127.0.0.1:9000`).
pub fn local_url(addr: SocketAddr) -> String {
    let ip = if addr.ip().is_unspecified() {
        std::net::IpAddr::from([127, 0, 0, 1])
    } else {
        addr.ip()
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

/// Where backend containers on a network of their own (`docker.backend.network = "own"`)
/// reach control: a listener on the host's address on that network, closing at once any
/// connection from outside the network's subnet (a session's engine container reaches the
/// host's addresses too), and serving the runtime credential's paths only
/// ([`crate::admin::handle_runtime`]). Returns its URL.
///
/// Not `async` (it binds at once): a container start calls it, and the handler it spawns can
/// start containers, so an `async fn` here would be a future containing itself.
pub fn runtime_listener(
    control: &Arc<Control>,
    network: crate::provision::docker::Subnet,
) -> anyhow::Result<String> {
    let ip = network.gateway();
    let listener = std::net::TcpListener::bind((ip, 0))
        .and_then(|l| {
            l.set_nonblocking(true)?;
            TcpListener::from_std(l)
        })
        .with_context(|| format!("cannot listen for backend containers on {ip}"))?;
    let addr = listener.local_addr()?;
    let c = Arc::clone(control);
    let shutdown = control.shutdown.clone();
    let refused = control.metrics.runtime_peers_refused.clone();
    tokio::spawn(async move {
        let tracker = tokio_util::task::TaskTracker::new();
        stacklab_serve::serve_http_to(
            listener,
            shutdown,
            &tracker,
            std::time::Duration::from_secs(1),
            move |peer| {
                let ok = network.holds(peer.ip());
                if !ok {
                    refused.inc();
                    tracing::warn!(%peer, "refused: not on the backends' network");
                }
                ok
            },
            move |req| {
                let c = Arc::clone(&c);
                async move { crate::admin::handle_runtime(&c, req).await }
            },
        )
        .await;
    });
    tracing::info!(%addr, "listening for backend containers");
    Ok(format!("http://{addr}"))
}

/// Control's public API listener, registered as a member of pool `control`.
async fn start_public(control: &Arc<Control>) -> anyhow::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(control.cfg.addr)
        .await
        .with_context(|| format!("cannot bind control's API on {}", control.cfg.addr))?;
    let addr = listener.local_addr()?;
    if control.routes.pool(CONTROL_POOL).is_none() {
        let _ = control.routes.publish(RouteUpdate::PutPool {
            pool: PoolSpec {
                name: CONTROL_POOL.into(),
                algorithm: Default::default(),
                protocol: Default::default(),
                members: vec![],
                health: None,
            },
        });
    }
    // One control node: it replaces whatever members an earlier run registered.
    for m in control
        .routes
        .pool(CONTROL_POOL)
        .map(|p| p.members)
        .unwrap_or_default()
    {
        let _ = control.routes.publish(RouteUpdate::RemoveMember {
            pool: CONTROL_POOL.into(),
            id: m.id,
        });
    }
    let _ = control.routes.publish(RouteUpdate::PutMember {
        pool: CONTROL_POOL.into(),
        member: MemberSpec {
            id: format!("control-{}", addr.port()),
            addr: addr.to_string(),
            weight: 1,
            draining: false,
        },
    });
    let c = Arc::clone(control);
    let task = serve_http(listener, control.shutdown.clone(), move |req| {
        let c = Arc::clone(&c);
        async move { crate::api::handle(&c, req).await }
    });
    Ok((addr, task))
}

/// Control over the proxy config's sessions, data folder, admin token and pools.
async fn open_control(cfg: &Config, ccfg: ControlConfig) -> anyhow::Result<Arc<Control>> {
    Control::open(Options {
        cfg: ccfg,
        sessions: cfg.sessions.clone(),
        data_dir: cfg.data_dir.clone(),
        admin_token: cfg.admin.token.clone(),
        pools: cfg.pools.clone(),
        config_file: cfg.source.clone(),
    })
    .await
}

/// Everything `stacklab up` runs, started.
#[derive(Debug)]
pub struct Up {
    pub control: Arc<Control>,
    pub proxy: Arc<stacklab_proxy::Proxy>,
    pub addrs: stacklab_proxy::server::Addrs,
    pub control_addr: SocketAddr,
    server: JoinHandle<anyhow::Result<()>>,
    tasks: Vec<JoinHandle<()>>,
}

/// Starts the proxy, control and the backend pool in this process.
pub async fn up(mut cfg: Config, ccfg: ControlConfig) -> anyhow::Result<Up> {
    stacklab_proxy::config::ensure_admin_token(&mut cfg)
        .context("cannot prepare the admin token")?;
    let server = Server::bind(cfg.clone())
        .await
        .context("cannot start the edge")?;
    let addrs = server.addrs();
    let proxy = Arc::clone(&server.proxy);
    let admin_url = local_url(addrs.admin);
    // The proxy follows control's feed over the shared admin address, as a proxy on another
    // machine would; one code path for both.
    let mut with_feed = (*proxy.config.load_full()).clone();
    with_feed.feed = Some(FeedConfig {
        url: format!("{admin_url}/admin/routes/feed")
            .parse()
            .context("feed URL")?,
        token: cfg.admin.token.clone(),
    });
    proxy.config.store(Arc::new(with_feed));

    let control = open_control(&cfg, ccfg).await?;
    let _ = control.admin_url.set(admin_url.clone());
    let _ = control.proxies.set(vec![admin_url]);
    let _ = control.edge.set(format!("localhost:{}", addrs.edge.port()));
    let _ = proxy
        .admin_ext
        .set(Arc::new(crate::admin::Extension(Arc::clone(&control))));
    let (control_addr, public) = start_public(&control).await?;
    let restored = control.restore().await?;
    if restored > 0 {
        tracing::info!(restored, "sessions restored from the registry");
    }
    let server = tokio::spawn(server.run());
    let reaper = control.spawn_reaper();
    control.spawn_lost_watchers();
    if let Err(e) = control.start_backend_pool().await {
        control.shutdown.cancel();
        control.stop_instances().await;
        proxy.shutdown.cancel();
        let _ = server.await;
        return Err(e);
    }
    // Ready when the proxy has the routes control has (the feed is over loopback: moments).
    let target = control.routes.version();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while proxy.routing.load().version < target && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    Ok(Up {
        control,
        proxy,
        addrs,
        control_addr,
        server,
        tasks: vec![public, reaper],
    })
}

impl Up {
    /// Stops everything: instances, control's tasks, then the proxy (draining).
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.control.shutdown.cancel();
        self.control.stop_instances().await;
        self.control.docker.shutdown().await;
        self.proxy.shutdown.cancel();
        let result = self
            .server
            .await
            .unwrap_or_else(|e| Err(anyhow::anyhow!("the server task failed: {e}")));
        for t in self.tasks {
            let _ = t.await;
        }
        self.control.registry.close().await;
        result
    }

    /// Waits until the proxy stops on its own (a signal handler cancelled it), then stops
    /// the rest.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.proxy.shutdown.cancelled().await;
        self.shutdown().await
    }
}

/// Control alone (`stacklab control`): its public API, its admin API, the backend pool.
#[derive(Debug)]
pub struct ControlOnly {
    pub control: Arc<Control>,
    pub admin_addr: SocketAddr,
    pub control_addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

pub async fn control_only(mut cfg: Config, ccfg: ControlConfig) -> anyhow::Result<ControlOnly> {
    stacklab_proxy::config::ensure_admin_token(&mut cfg)
        .context("cannot prepare the admin token")?;
    let listener = TcpListener::bind(cfg.admin.addr)
        .await
        .with_context(|| format!("cannot bind the admin API on {}", cfg.admin.addr))?;
    let admin_addr = listener.local_addr()?;
    let control = open_control(&cfg, ccfg).await?;
    let _ = control.admin_url.set(local_url(admin_addr));
    let _ = control.proxies.set(vec![]);
    // Restored before anything is served: a proxy reconnecting at once must get a
    // snapshot with the live sessions in it.
    control.restore().await?;
    let c = Arc::clone(&control);
    let admin = serve_http(listener, control.shutdown.clone(), move |req| {
        let c = Arc::clone(&c);
        async move {
            match (req.method().as_str(), req.uri().path()) {
                ("GET", "/healthz") => {
                    crate::api::ok_json(StatusCode::OK, &serde_json::json!({"status": "ok"}))
                }
                ("GET", "/metrics") => {
                    Response::new(stacklab_proxy::body::full(c.metrics.encode()))
                }
                (_, p) if crate::admin::owns(req.method(), p) => {
                    crate::admin::handle(&c, req).await
                }
                _ => crate::api::error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "nothing here: control's admin API is under /admin/",
                ),
            }
        }
    });
    let (control_addr, public) = start_public(&control).await?;
    let reaper = control.spawn_reaper();
    control.spawn_lost_watchers();
    control.start_backend_pool().await?;
    Ok(ControlOnly {
        control,
        admin_addr,
        control_addr,
        tasks: vec![admin, public, reaper],
    })
}

impl ControlOnly {
    pub async fn shutdown(self) {
        self.control.shutdown.cancel();
        self.control.stop_instances().await;
        self.control.docker.shutdown().await;
        for t in self.tasks {
            let _ = t.await;
        }
        self.control.registry.close().await;
    }
}
