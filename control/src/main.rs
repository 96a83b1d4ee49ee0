//! The `stacklab` binary: load the config, install the TLS provider, bind, run.
//!
//! Subcommands: `up` (everything on one machine, on the embedded defaults), `proxy` (the edge
//! alone), `control` (control alone), `backend` (one backend instance) and `check-config`
//! (validate a file and name every key at fault).

use anyhow::Context;
use clap::{Parser, Subcommand};
use stacklab_backend::config::ServeConfig;
use stacklab_control::config::ControlConfig;
use stacklab_control::provision::docker::DockerConfig;
use stacklab_proxy::config::{self, Config, ConfigError, ProcessEnv};
use stacklab_proxy::Server;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// mimalloc: the proxy allocates a few small buffers per request and per connection; glibc's
/// malloc was 17% of the proxy's instructions in the bench profile (bench/README.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "stacklab",
    version,
    about = "Pick a backend stack, get a live copy of it behind stacklab's edge proxy."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run everything on this machine, on the embedded defaults unless --config is given.
    Up {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Run the edge proxy alone.
    Proxy {
        #[arg(long, short)]
        config: PathBuf,
        /// Take over the listening sockets of the proxy running with this config (through
        /// `edge.upgrade_socket`) with no downtime; it drains and exits.
        #[arg(long)]
        upgrade: bool,
    },
    /// Run control alone (sessions, provisioners, registry, route feed, backend pool).
    Control {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Run one backend instance (the Rust runtime); stack descriptors come from control.
    Backend {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Listen here instead of `backend.addr`.
        #[arg(long)]
        addr: Option<std::net::SocketAddr>,
        /// Control's admin URL instead of `backend.control_url`.
        #[arg(long)]
        control_url: Option<String>,
        /// Read the runtime credential from the first line of stdin, and exit when stdin
        /// closes (how control runs its instances: they die with it). Without it: the
        /// credential is `STACKLAB_RUNTIME_TOKEN`, else `control.runtime_token`, else
        /// `<data_dir>/runtime.token` (control writes it there).
        #[arg(long)]
        token_stdin: bool,
    },
    /// Validate a config file; lists every problem with its key.
    CheckConfig { file: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => check_config(&file),
        Command::Up { config } => run_server(config.as_deref(), Part::Up),
        Command::Proxy { config, upgrade } => run_server(
            Some(&config),
            if upgrade {
                Part::ProxyUpgrade
            } else {
                Part::Proxy
            },
        ),
        Command::Control { config } => run_server(config.as_deref(), Part::Control),
        Command::Backend {
            config,
            addr,
            control_url,
            token_stdin,
        } => run_backend(config.as_deref(), addr, control_url, token_stdin),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Up,
    Proxy,
    /// `proxy --upgrade`: take the running proxy's listeners.
    ProxyUpgrade,
    Control,
}

fn control_config(cfg: &Config) -> Result<ControlConfig, Vec<(String, String)>> {
    let control =
        ControlConfig::from_sections(cfg.other.get("control"), cfg.other.get("shared"), &|k| {
            std::env::var(k).ok()
        });
    let docker = DockerConfig::from_section(cfg.other.get("docker"));
    match (control, docker) {
        (Ok(mut control), Ok(docker)) => {
            control.docker = docker;
            Ok(control)
        }
        (control, docker) => Err(control
            .err()
            .unwrap_or_default()
            .into_iter()
            .chain(docker.err().unwrap_or_default())
            .collect()),
    }
}

fn check_config(file: &Path) -> ExitCode {
    match Config::load(Some(file), &ProcessEnv) {
        Ok((cfg, warnings)) => {
            let mut problems = ServeConfig::from_section(cfg.other.get("backend"))
                .err()
                .unwrap_or_default();
            problems.extend(control_config(&cfg).err().unwrap_or_default());
            if !problems.is_empty() {
                let errors = problems;
                eprintln!(
                    "{}: the configuration has {} error(s):",
                    file.display(),
                    errors.len()
                );
                for (key, message) in errors {
                    eprintln!("  - {key}: {message}");
                }
                return ExitCode::FAILURE;
            }
            print_warnings(&warnings);
            println!("{}: valid", file.display());
            ExitCode::SUCCESS
        }
        Err(report) => {
            eprint!("{}: {report}", file.display());
            ExitCode::FAILURE
        }
    }
}

fn print_warnings(warnings: &[ConfigError]) {
    for w in warnings {
        eprintln!("warning: {w}");
    }
}

fn run_server(file: Option<&Path>, part: Part) -> ExitCode {
    let (mut cfg, warnings) = match Config::load(file, &ProcessEnv) {
        Ok(c) => c,
        Err(report) => {
            eprint!(
                "{}: {report}",
                file.map_or_else(
                    || "the embedded config".to_owned(),
                    |f| f.display().to_string()
                )
            );
            return ExitCode::FAILURE;
        }
    };
    init_tracing(&cfg);
    for w in &warnings {
        tracing::warn!(key = %w.path, "{}", w.message);
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = cfg.edge.workers {
        builder.worker_threads(n);
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let control = if matches!(part, Part::Proxy | Part::ProxyUpgrade) {
        None
    } else {
        match control_config(&cfg) {
            Ok(c) => Some(c),
            Err(errors) => {
                for (key, message) in errors {
                    eprintln!("{key}: {message}");
                }
                return ExitCode::FAILURE;
            }
        }
    };
    let result = match (part, control) {
        (Part::Proxy | Part::ProxyUpgrade, _) | (_, None) => {
            runtime.block_on(serve(&mut cfg, part == Part::ProxyUpgrade))
        }
        (Part::Up, Some(c)) => runtime.block_on(serve_up(cfg, c)),
        (Part::Control, Some(c)) => runtime.block_on(serve_control(cfg, c)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stacklab: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `stacklab proxy`: the edge alone, which a successor can take over (`--upgrade`).
async fn serve(cfg: &mut Config, upgrade: bool) -> anyhow::Result<()> {
    // One crypto provider for every TLS config, installed before any is built.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let token_file = config::ensure_admin_token(cfg).context("cannot prepare the admin token")?;
    let mut server = if upgrade {
        let path = &cfg.edge.upgrade_socket;
        let (listeners, taking) = stacklab_proxy::upgrade::take_over(path)
            .await
            .context("cannot take over the running proxy")?;
        tracing::info!(old = taking.old_pid, "received the listening sockets");
        let proxy = stacklab_proxy::Proxy::new(cfg.clone()).context("cannot start the edge")?;
        Server::inherit(proxy, listeners, taking).context("cannot start the edge")?
    } else {
        Server::bind(cfg.clone())
            .await
            .context("cannot start the edge")?
    };
    server
        .listen_for_upgrades()
        .context("cannot listen for upgrades (edge.upgrade_socket)")?;
    let addrs = server.addrs();
    let proxy = std::sync::Arc::clone(&server.proxy);
    println!("stacklab proxy: https://{}", addrs.edge);
    print_addrs(&addrs, &token_file);
    let signals = tokio::spawn(handle_signals(std::sync::Arc::clone(&proxy)));
    server.run().await?;
    signals.abort();
    Ok(())
}

fn print_addrs(addrs: &stacklab_proxy::server::Addrs, token_file: &Path) {
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

/// `stacklab up`: the proxy and control in this process, backend instances as children.
async fn serve_up(mut cfg: Config, control: ControlConfig) -> anyhow::Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let token_file =
        config::ensure_admin_token(&mut cfg).context("cannot prepare the admin token")?;
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
    let signals = tokio::spawn(handle_signals(std::sync::Arc::clone(&up.proxy)));
    let result = up.wait().await;
    signals.abort();
    result
}

/// `stacklab control`: control alone.
async fn serve_control(mut cfg: Config, control: ControlConfig) -> anyhow::Result<()> {
    let token_file =
        config::ensure_admin_token(&mut cfg).context("cannot prepare the admin token")?;
    let c = stacklab_control::serve::control_only(cfg, control).await?;
    println!(
        "stacklab control: API on http://{}, admin on http://{} (token in {})",
        c.control_addr,
        c.admin_addr,
        token_file.display()
    );
    wait_for_stop().await;
    c.shutdown().await;
    Ok(())
}

async fn wait_for_stop() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! { _ = term.recv() => {}, _ = tokio::signal::ctrl_c() => {} }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// SIGHUP reloads the config; SIGINT and SIGTERM shut down gracefully.
async fn handle_signals(proxy: std::sync::Arc<stacklab_proxy::Proxy>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut hup), Ok(mut term)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::warn!("cannot listen for signals; stop with the admin API or kill");
        return;
    };
    loop {
        tokio::select! {
            _ = hup.recv() => {
                if let Err(report) = proxy.reload(&ProcessEnv) {
                    tracing::error!("reload refused, still on the old config: {report}");
                }
            }
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    proxy.shutdown.cancel();
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

fn run_backend(
    file: Option<&Path>,
    addr: Option<std::net::SocketAddr>,
    control_url: Option<String>,
    token_stdin: bool,
) -> ExitCode {
    let (cfg, _) = match Config::load(file, &ProcessEnv) {
        Ok(c) => c,
        Err(report) => {
            eprint!("{report}");
            return ExitCode::FAILURE;
        }
    };
    init_tracing(&cfg);
    let mut serve = match ServeConfig::from_section(cfg.other.get("backend")) {
        Ok(s) => s,
        Err(errors) => {
            for (key, message) in errors {
                eprintln!("{key}: {message}");
            }
            return ExitCode::FAILURE;
        }
    };
    if let Some(a) = addr {
        serve.addr = a;
    }
    if let Some(u) = control_url {
        serve.control_url = u;
    }
    // The token: from stdin (control's children), else the environment, else the config.
    let mut stdin_lines = None;
    let token = if token_stdin {
        use std::io::BufRead;
        let stdin = std::io::stdin();
        let mut line = String::new();
        if stdin.lock().read_line(&mut line).is_err() || line.trim().is_empty() {
            eprintln!("--token-stdin: no token on the first line of stdin");
            return ExitCode::FAILURE;
        }
        stdin_lines = Some(stdin);
        stacklab_types::Secret::new(line.trim().to_owned())
    } else {
        let from_config = ControlConfig::from_sections(cfg.other.get("control"), None, &|k| {
            std::env::var(k).ok()
        })
        .ok()
        .and_then(|c| c.runtime_token);
        let file = cfg.data_dir.join("runtime.token");
        match from_config.or_else(|| {
            std::fs::read_to_string(&file)
                .ok()
                .map(|t| stacklab_types::Secret::new(t.trim().to_owned()))
        }) {
            Some(t) if !t.is_empty() => t,
            _ => {
                eprintln!("stacklab backend: no runtime credential: use --token-stdin, STACKLAB_RUNTIME_TOKEN, control.runtime_token, or start control first (it writes {})", file.display());
                return ExitCode::FAILURE;
            }
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result: anyhow::Result<()> = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(serve.addr)
            .await
            .context("cannot bind the backend")?;
        println!("stacklab backend on http://{}", listener.local_addr()?);
        use std::io::Write;
        let _ = std::io::stdout().flush();
        let source = std::sync::Arc::new(stacklab_backend::sessions::ControlStacks::new(
            serve.control_url.clone(),
            token.clone(),
        ));
        let app = stacklab_backend::App::new(serve.backend, source, token);
        let shutdown = tokio_util::sync::CancellationToken::new();
        if let Some(stdin) = stdin_lines {
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
            wait_for_stop().await;
            stop.cancel();
        });
        stacklab_backend::run(listener, app, shutdown).await;
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stacklab backend: {e:#}");
            ExitCode::FAILURE
        }
    }
}
