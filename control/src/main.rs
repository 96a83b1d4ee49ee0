//! The `stacklab` binary: load the config, install the TLS provider, bind, run.
//!
//! Subcommands: `up` (everything on one machine, on the embedded defaults), `proxy` (the edge
//! alone) and `check-config` (validate a file and name every key at fault).

use anyhow::Context;
use clap::{Parser, Subcommand};
use stacklab_proxy::config::{self, Config, ConfigError, ProcessEnv};
use stacklab_proxy::Server;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

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
    /// Validate a config file; lists every problem with its key.
    CheckConfig { file: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => check_config(&file),
        Command::Up { config } => run_server(config.as_deref(), true),
        Command::Proxy { config } => run_server(Some(&config), false),
    }
}

fn check_config(file: &Path) -> ExitCode {
    match Config::load(Some(file), &ProcessEnv) {
        Ok((_, warnings)) => {
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
