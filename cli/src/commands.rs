//! One function per subcommand, each a few lines over the libraries, and what they share:
//! the config loaded and checked whole (every problem as `key: message`, one style for every
//! section), logging, the async runtime.

use crate::signals::Signals;
use anyhow::Context;
use stacklab_backend::config::ServeConfig;
use stacklab_control::config::{ControlConfig, KeyError};
use stacklab_proxy::config::{self, Config, ConfigError, ConfigReport, Env, ProcessEnv};
use stacklab_proxy::server::Addrs;
use stacklab_proxy::Server;
use stacklab_types::Secret;
use std::path::Path;
use std::sync::Arc;

/// `stacklab check-config FILE`: every section checked, every problem named by its key (a key
/// nobody reads is one too), all at once.
pub fn check_config(file: &Path) -> anyhow::Result<()> {
    let cfg = load(Some(file))?;
    let mut problems = ServeConfig::from_section(cfg.other.get("backend"))
        .err()
        .unwrap_or_default();
    problems.extend(
        ControlConfig::from_config(&cfg, &env)
            .err()
            .unwrap_or_default(),
    );
    if !problems.is_empty() {
        return Err(invalid(Some(file), problems));
    }
    println!("{}: valid", file.display());
    Ok(())
}

/// `stacklab up`: the proxy and control in this process, backend instances as children.
pub fn up(file: Option<&Path>) -> anyhow::Result<()> {
    let mut cfg = start(file)?;
    let control = control_config(&cfg).map_err(|e| invalid(file, e))?;
    runtime(cfg.edge.workers)?.block_on(async move {
        let signals = Signals::listen();
        let token_file = admin_token(&mut cfg)?;
        let up = stacklab_control::serve::up(cfg, control).await?;
        println!(
            "stacklab is up: https://localhost:{}/",
            up.addrs.edge.port()
        );
        print_addrs(&up.addrs, &token_file);
        println!(
            "  control on http://{}, {} backend instance(s)",
            up.control_addr,
            up.control.instances.list().len()
        );
        let signals = tokio::spawn(signals.reload_or_stop(Arc::clone(&up.proxy)));
        let result = up.wait().await;
        signals.abort();
        result
    })
}

/// `stacklab proxy`: the edge alone, which a successor can take over (`--upgrade`).
pub fn proxy(file: &Path, upgrade: bool) -> anyhow::Result<()> {
    let mut cfg = start(Some(file))?;
    runtime(cfg.edge.workers)?.block_on(async move {
        let signals = Signals::listen();
        let token_file = admin_token(&mut cfg)?;
        let mut server = if upgrade {
            let (listeners, taking) = stacklab_proxy::upgrade::take_over(&cfg.edge.upgrade_socket)
                .await
                .context("cannot take over the running proxy")?;
            tracing::info!(old = taking.old_pid, "received the listening sockets");
            let proxy = stacklab_proxy::Proxy::new(cfg).context("cannot start the edge")?;
            Server::inherit(proxy, listeners, taking).context("cannot start the edge")?
        } else {
            Server::bind(cfg).await.context("cannot start the edge")?
        };
        server
            .listen_for_upgrades()
            .context("cannot listen for upgrades (edge.upgrade_socket)")?;
        let addrs = server.addrs();
        println!("stacklab proxy: https://{}", addrs.edge);
        print_addrs(&addrs, &token_file);
        let signals = tokio::spawn(signals.reload_or_stop(Arc::clone(&server.proxy)));
        let result = server.run().await;
        signals.abort();
        result
    })
}

/// `stacklab control`: control alone; proxies elsewhere follow its feed.
pub fn control(file: Option<&Path>) -> anyhow::Result<()> {
    let mut cfg = start(file)?;
    let control = control_config(&cfg).map_err(|e| invalid(file, e))?;
    runtime(cfg.edge.workers)?.block_on(async move {
        let mut signals = Signals::listen();
        let token_file = admin_token(&mut cfg)?;
        let c = stacklab_control::serve::control_only(cfg, control).await?;
        println!(
            "stacklab control: API on http://{}, admin on http://{} (token in {})",
            c.control_addr,
            c.admin_addr,
            token_file.display()
        );
        signals.stopped().await;
        c.shutdown().await;
        Ok(())
    })
}

/// `stacklab backend`'s options over its config.
pub struct BackendArgs {
    pub addr: Option<std::net::SocketAddr>,
    pub control_url: Option<String>,
    pub token_stdin: bool,
}

/// `stacklab backend`: one Rust runtime instance. Its first stdout line is its address (what
/// control waits for).
pub fn backend(file: Option<&Path>, args: BackendArgs) -> anyhow::Result<()> {
    let cfg = start(file)?;
    let mut serve =
        ServeConfig::from_section(cfg.other.get("backend")).map_err(|e| invalid(file, e))?;
    serve.addr = args.addr.unwrap_or(serve.addr);
    serve.control_url = args.control_url.unwrap_or(serve.control_url);
    let (token, stdin) = runtime_credential(&cfg, args.token_stdin)?;
    runtime(None)?.block_on(async move {
        let mut signals = Signals::listen();
        let listener = tokio::net::TcpListener::bind(serve.addr)
            .await
            .context("cannot bind the backend")?;
        println!("stacklab backend on http://{}", listener.local_addr()?);
        use std::io::Write;
        let _ = std::io::stdout().flush();
        let source = Arc::new(stacklab_backend::sessions::ControlStacks::new(
            serve.control_url.clone(),
            token.clone(),
        ));
        let app = stacklab_backend::App::new(serve.backend, source, token);
        let shutdown = tokio_util::sync::CancellationToken::new();
        if let Some(stdin) = stdin {
            // The parent holds our stdin open for as long as it lives.
            let stop = shutdown.clone();
            std::thread::spawn(move || {
                use std::io::Read;
                let mut sink = [0u8; 64];
                let mut stdin = stdin.lock();
                while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
                stop.cancel();
            });
        }
        let stop = shutdown.clone();
        tokio::spawn(async move {
            signals.stopped().await;
            stop.cancel();
        });
        stacklab_backend::run(listener, app, shutdown).await;
        Ok(())
    })
}

/// The runtime credential: the first line of stdin (control's children, which keep stdin to
/// know when control is gone), else `STACKLAB_RUNTIME_TOKEN` or `control.runtime_token`, else
/// `<data_dir>/runtime.token` (control writes it there).
fn runtime_credential(
    cfg: &Config,
    from_stdin: bool,
) -> anyhow::Result<(Secret, Option<std::io::Stdin>)> {
    if from_stdin {
        use std::io::BufRead;
        let stdin = std::io::stdin();
        let mut line = String::new();
        if stdin.lock().read_line(&mut line).is_err() || line.trim().is_empty() {
            anyhow::bail!("--token-stdin: no token on the first line of stdin");
        }
        return Ok((Secret::new(line.trim().to_owned()), Some(stdin)));
    }
    let configured = ControlConfig::from_sections(cfg.other.get("control"), None, &env)
        .ok()
        .and_then(|c| c.runtime_token);
    let file = cfg.data_dir.join("runtime.token");
    let token = configured.or_else(|| {
        std::fs::read_to_string(&file)
            .ok()
            .map(|t| Secret::new(t.trim().to_owned()))
    });
    match token {
        Some(t) if !t.is_empty() => Ok((t, None)),
        _ => anyhow::bail!(
            "no runtime credential: use --token-stdin, STACKLAB_RUNTIME_TOKEN, control.runtime_token, or start control first (it writes {})",
            file.display()
        ),
    }
}

/// The config of a command that runs: loaded and checked, logging set up from it.
fn start(file: Option<&Path>) -> anyhow::Result<Config> {
    let cfg = load(file)?;
    init_tracing(&cfg);
    Ok(cfg)
}

/// The config from `file`, or the embedded defaults, with the environment's overrides.
fn load(file: Option<&Path>) -> anyhow::Result<Config> {
    Config::load(file, &ProcessEnv).map_err(|report| report_error(file, &report))
}

fn control_config(cfg: &Config) -> Result<ControlConfig, Vec<KeyError>> {
    ControlConfig::from_config(cfg, &env)
}

/// The same environment overrides for every section (an empty value is no value).
fn env(key: &str) -> Option<String> {
    ProcessEnv.var(key)
}

/// Problems a section found, reported as the proxy's own: `key: message`, all at once.
fn invalid(file: Option<&Path>, problems: Vec<KeyError>) -> anyhow::Error {
    let report = ConfigReport {
        errors: problems
            .into_iter()
            .map(|(path, message)| ConfigError { path, message })
            .collect(),
    };
    report_error(file, &report)
}

fn report_error(file: Option<&Path>, report: &ConfigReport) -> anyhow::Error {
    let name = file.map_or_else(
        || "the embedded config".to_owned(),
        |f| f.display().to_string(),
    );
    anyhow::anyhow!("{name}: {}", report.to_string().trim_end())
}

/// The admin token (generated into `<data_dir>/admin.token` when the config has none) and
/// where a person finds it.
fn admin_token(cfg: &mut Config) -> anyhow::Result<std::path::PathBuf> {
    // One crypto provider for every TLS config, installed before any is built.
    let _ = rustls::crypto::ring::default_provider().install_default();
    config::ensure_admin_token(cfg).context("cannot prepare the admin token")
}

/// A multi-threaded runtime, with `workers` threads when the config says.
fn runtime(workers: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = workers {
        builder.worker_threads(n);
    }
    builder
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn init_tracing(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&cfg.log.filter).unwrap_or_else(|e| {
        eprintln!(
            "log.filter `{}` is not a valid filter ({e}); using `info`",
            cfg.log.filter
        );
        tracing_subscriber::EnvFilter::new("info")
    });
    // Logs go to stderr (stdout carries the addresses a parent process reads), coloured only
    // on a terminal.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(true);
    if cfg.log.json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn print_addrs(addrs: &Addrs, token_file: &Path) {
    if let Some(q) = addrs.quic {
        println!("  HTTP/3 on UDP {q}");
    }
    if let Some(p) = addrs.plain {
        println!("  plain HTTP on {p}");
    }
    println!(
        "  admin API on http://{} (token in {})",
        addrs.admin,
        token_file.display()
    );
}
