//! The `stacklab` binary: load the config, install the TLS provider, bind, run.
//!
//! Subcommands: `up` (everything on one machine, on the embedded defaults), `proxy` (the edge
//! alone) and `check-config` (validate a file and name every key at fault).

use anyhow::Context;
use clap::{Parser, Subcommand};
use stacklab_backend::config::ServeConfig;
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
    },
    /// Run one backend instance (the Rust runtime); stack descriptors come from control.
    Backend {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate a config file; lists every problem with its key.
    CheckConfig { file: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => check_config(&file),
        Command::Up { config } => run_server(config.as_deref(), true),
        Command::Proxy { config } => run_server(Some(&config), false),
        Command::Backend { config } => run_backend(config.as_deref()),
    }
}

fn check_config(file: &Path) -> ExitCode {
    match Config::load(Some(file), &ProcessEnv) {
        Ok((cfg, warnings)) => {
            if let Err(errors) = ServeConfig::from_section(cfg.other.get("backend")) {
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

fn run_server(file: Option<&Path>, up: bool) -> ExitCode {
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
    match runtime.block_on(serve(&mut cfg, up)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stacklab: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(cfg: &mut Config, up: bool) -> anyhow::Result<()> {
    // One crypto provider for every TLS config, installed before any is built.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let token_file = config::ensure_admin_token(cfg).context("cannot prepare the admin token")?;
    let server = Server::bind(cfg.clone())
        .await
        .context("cannot start the edge")?;
    let addrs = server.addrs();
    let proxy = std::sync::Arc::clone(&server.proxy);
    let port = addrs.edge.port();
    if up {
        println!("stacklab is up: https://localhost:{port}/");
    } else {
        println!("stacklab proxy: https://{}", addrs.edge);
    }
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

    let signals = tokio::spawn(handle_signals(std::sync::Arc::clone(&proxy)));
    server.run().await?;
    signals.abort();
    Ok(())
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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true);
    if cfg.log.json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn run_backend(file: Option<&Path>) -> ExitCode {
    let (cfg, _) = match Config::load(file, &ProcessEnv) {
        Ok(c) => c,
        Err(report) => {
            eprint!("{report}");
            return ExitCode::FAILURE;
        }
    };
    init_tracing(&cfg);
    let serve = match ServeConfig::from_section(cfg.other.get("backend")) {
        Ok(s) => s,
        Err(errors) => {
            for (key, message) in errors {
                eprintln!("{key}: {message}");
            }
            return ExitCode::FAILURE;
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
    let token = std::env::var("STACKLAB_ADMIN_TOKEN")
        .ok()
        .map(stacklab_types::Secret::new)
        .unwrap_or_else(|| cfg.admin.token.clone());
    let result: anyhow::Result<()> = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(serve.addr)
            .await
            .context("cannot bind the backend")?;
        println!("stacklab backend on http://{}", listener.local_addr()?);
        let source = std::sync::Arc::new(stacklab_backend::sessions::ControlStacks::new(
            serve.control_url.clone(),
            token.clone(),
        ));
        let app = stacklab_backend::App::new(serve.backend, source, token);
        let shutdown = tokio_util::sync::CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            if let Ok(mut term) = signal(SignalKind::terminate()) {
                tokio::select! { _ = term.recv() => {}, _ = tokio::signal::ctrl_c() => {} }
            } else {
                let _ = tokio::signal::ctrl_c().await;
            }
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
