//! The `stacklab` binary: parses its arguments and runs one command (see [`commands`]).
//!
//! Subcommands: `up` (everything on one machine, on the embedded defaults), `proxy` (the edge
//! alone), `control` (control alone), `backend` (one Rust backend instance) and
//! `check-config` (validate a file and name every key at fault).

mod commands;
mod signals;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
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
    let (name, result) = match Cli::parse().command {
        Command::Up { config } => ("up", commands::up(config.as_deref())),
        Command::Proxy { config, upgrade } => ("proxy", commands::proxy(&config, upgrade)),
        Command::Control { config } => ("control", commands::control(config.as_deref())),
        Command::Backend {
            config,
            addr,
            control_url,
            token_stdin,
        } => (
            "backend",
            commands::backend(
                config.as_deref(),
                commands::BackendArgs {
                    addr,
                    control_url,
                    token_stdin,
                },
            ),
        ),
        Command::CheckConfig { file } => ("check-config", commands::check_config(&file)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stacklab {name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}
