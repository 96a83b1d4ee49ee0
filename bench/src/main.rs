//! The `stacklab-bench` binary: `load`, `compare`, `instructions`, `launch`, `drill` and `upstream` over the
//! library.

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use stacklab_bench::compare::{self, report, Scenario};
use stacklab_bench::load::{self, Protocol};
use stacklab_bench::peers::PeerKind;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "stacklab-bench",
    version,
    about = "Load generator and the proxy comparison."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Drive one URL and print a JSON report.
    Load(LoadArgs),
    /// Run stacklab, nginx and HAProxy side by side and write bench/results/.
    Compare {
        /// Short runs, one round: under two minutes.
        #[arg(long)]
        quick: bool,
        #[arg(long)]
        rounds: Option<usize>,
        /// Measured seconds per run.
        #[arg(long)]
        duration: Option<f64>,
        /// The `stacklab` binary (default: beside this one).
        #[arg(long)]
        stacklab: Option<PathBuf>,
        /// Where the JSON and Markdown go (default: bench/results/ of the workspace the
        /// current folder is in).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Only these peers (stacklab, nginx, haproxy), comma-separated.
        #[arg(long, value_delimiter = ',')]
        peers: Vec<String>,
        /// Only these scenarios (h1-keep-alive, h1-fixed-rate, h2-tls, h3, new-tls, large, idle,
        /// sessions), comma-separated.
        #[arg(long, value_delimiter = ',')]
        scenarios: Vec<String>,
        /// Skip the wrk and h2load cross-checks.
        #[arg(long)]
        no_cross_check: bool,
        /// Sessions in the route table for the routing scenario.
        #[arg(long)]
        sessions: Option<usize>,
        /// Idle connections for the memory scenario.
        #[arg(long)]
        idle: Option<usize>,
    },
    /// Session launch times through a running stacklab (`POST /api/sessions`, then end it).
    Launch {
        /// The edge's port on localhost.
        #[arg(long, default_value_t = 8443)]
        port: u16,
        /// PEM certificate to trust (stacklab's `<data_dir>/tls/self-signed.crt`).
        #[arg(long, default_value = "data/tls/self-signed.crt")]
        ca: PathBuf,
        /// Launches, one after another.
        #[arg(long, short = 'n', default_value_t = 20)]
        count: usize,
        /// The choices, as the JSON body of POST /api/sessions.
        #[arg(long, default_value = "{}")]
        choices: String,
        /// On 429 (the per-client cap), wait a minute and go on instead of failing.
        #[arg(long)]
        wait_on_429: bool,
    },
    /// Fault drills against real `stacklab` processes on loopback: one line of figures each,
    /// exit status 1 when a goal was not held (see docs/reliability.md).
    Drill {
        /// A drill's name, or `all`.
        #[arg(required = true)]
        names: Vec<String>,
        /// Seconds of load in each drill.
        #[arg(long, default_value_t = 6.0)]
        seconds: f64,
        /// The `stacklab` binary (default: beside this one).
        #[arg(long)]
        stacklab: Option<PathBuf>,
        /// Keep each drill's folder (process logs, data) under the temporary folder.
        #[arg(long)]
        keep: bool,
    },
    /// Instructions per proxied request under callgrind, one worker each; with `--check`,
    /// fails when stacklab's rose past the committed baseline.
    Instructions {
        /// Only these peers (stacklab, nginx, haproxy), comma-separated.
        #[arg(long, value_delimiter = ',')]
        peers: Vec<String>,
        /// Requests in the shorter of the two runs (the longer has three times as many).
        #[arg(long, default_value_t = stacklab_bench::instructions::DEFAULT_REQUESTS)]
        requests: usize,
        #[arg(long, default_value_t = stacklab_bench::instructions::DEFAULT_CONNECTIONS)]
        connections: usize,
        /// The `stacklab` binary (default: beside this one).
        #[arg(long)]
        stacklab: Option<PathBuf>,
        /// Compare stacklab's figure with this baseline and fail past its tolerance.
        #[arg(long)]
        check: Option<PathBuf>,
        /// Write stacklab's figure as the new baseline to this file.
        #[arg(long)]
        write_baseline: Option<PathBuf>,
        /// Write instructions.{md,json} here (default: bench/results/ of the workspace the
        /// current folder is in; not with --check).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// The upstream the comparison uses (prints `listening on ADDR`).
    Upstream {
        #[arg(long, default_value = "127.0.0.1:0")]
        addr: std::net::SocketAddr,
    },
}

// The flags of `load`; the subcommand's help is the doc comment on `Command::Load`.
#[derive(clap::Args)]
struct LoadArgs {
    /// http://host:port/path or https://host:port/path
    url: String,
    #[arg(long, short, value_enum, default_value = "h1")]
    protocol: Protocol,
    /// Connections.
    #[arg(long, short, default_value_t = 64)]
    connections: usize,
    /// Concurrent requests per connection (HTTP/2, HTTP/3).
    #[arg(long, short = 'm', default_value_t = 1)]
    streams: usize,
    /// Measured seconds.
    #[arg(long, short, default_value_t = 10.0)]
    duration: f64,
    /// Warm-up seconds, not measured.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Fixed rate in requests per second (open loop); without it, closed loop.
    #[arg(long)]
    rate: Option<f64>,
    /// A new connection for every request.
    #[arg(long)]
    new_connection: bool,
    /// PEM certificate to trust (https and HTTP/3).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Extra header, `name: value`; repeatable.
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
}

/// This binary, and the `stacklab` binary to drive: `--stacklab`, else the one beside this.
fn binaries(stacklab: Option<PathBuf>) -> anyhow::Result<(PathBuf, PathBuf)> {
    let self_bin = std::env::current_exe().context("cannot find this binary")?;
    let stacklab = stacklab.unwrap_or_else(|| self_bin.with_file_name("stacklab"));
    Ok((self_bin, stacklab))
}

/// `--out`, else `bench/results/` of the workspace the current folder is in.
fn out_dir(out: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match out {
        Some(dir) => Ok(dir),
        None => {
            let here = std::env::current_dir().context("cannot read the current folder")?;
            Ok(report::default_out_dir(&here)?)
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Launch {
                port,
                ca,
                count,
                choices,
                wait_on_429,
            } => {
                let choices: serde_json::Value =
                    serde_json::from_str(&choices).context("--choices is not JSON")?;
                let report =
                    stacklab_bench::launch::run(port, &ca, count, choices, wait_on_429).await?;
                println!("{}", serde_json::to_string_pretty(&report)?);
                Ok(())
            }
            Command::Drill {
                names,
                seconds,
                stacklab,
                keep,
            } => {
                let (_, stacklab) = binaries(stacklab)?;
                if !stacklab.exists() {
                    bail!(
                        "no stacklab binary at {} (build it: cargo build -p stacklab, or pass --stacklab)",
                        stacklab.display()
                    );
                }
                let o = stacklab_bench::drill::Options {
                    stacklab,
                    seconds: seconds.max(1.0),
                    keep,
                };
                let outcomes = stacklab_bench::drill::run(&o, &names).await?;
                let failed = outcomes.iter().filter(|x| !x.pass).count();
                if failed > 0 {
                    eprintln!("{failed} of {} drill(s) did not hold their goals", outcomes.len());
                    std::process::exit(1);
                }
                Ok(())
            }
            Command::Instructions {
                peers,
                requests,
                connections,
                stacklab,
                check,
                write_baseline,
                out,
            } => {
                use stacklab_bench::instructions;
                let (self_bin, stacklab) = binaries(stacklab)?;
                let peers = if peers.is_empty() {
                    if check.is_some() {
                        vec![PeerKind::Stacklab]
                    } else {
                        PeerKind::ALL.to_vec()
                    }
                } else {
                    parse_peers(&peers)?
                };
                // Settled before the runs, so a missing workspace fails at once.
                let out = if check.is_none() {
                    Some(out_dir(out)?)
                } else {
                    None
                };
                let o = instructions::Options {
                    peers,
                    requests: requests.max(connections),
                    connections: connections.max(1),
                    stacklab_bin: stacklab,
                    self_bin,
                };
                let counts = instructions::run(&o).await?;
                let heading = format!(
                    "Instructions per proxied request (callgrind, one worker each, {} keep-alive connections, {} and {} requests)",
                    o.connections,
                    o.requests,
                    3 * o.requests
                );
                let md = instructions::markdown(&counts, &heading);
                println!("{md}");
                let ours = counts
                    .iter()
                    .find(|c| c.peer == PeerKind::Stacklab)
                    .map(|c| c.instructions_per_request);
                if let (Some(path), Some(ours)) = (&write_baseline, ours) {
                    let b = instructions::Baseline {
                        instructions_per_request: ours.round(),
                        tolerance_percent: 3.0,
                        requests: o.requests,
                        connections: o.connections,
                        note: "scripts/perf-check --write-baseline (profile perf-check: release without LTO)".into(),
                    };
                    std::fs::write(path, serde_json::to_string_pretty(&b)? + "\n")?;
                    println!("baseline written to {}", path.display());
                }
                if let Some(path) = check {
                    let ours = ours.context("--check needs stacklab among the peers")?;
                    let baseline = instructions::read_baseline(&path)?;
                    match instructions::check(ours, &baseline) {
                        Ok(line) => println!("{line}"),
                        Err(line) => {
                            eprintln!("{line}");
                            std::process::exit(1);
                        }
                    }
                } else if let Some(out) = out {
                    std::fs::create_dir_all(&out)?;
                    std::fs::write(out.join("instructions.md"), &md)?;
                    std::fs::write(
                        out.join("instructions.json"),
                        serde_json::to_string_pretty(&counts)?,
                    )?;
                    println!("written to {}", out.display());
                }
                Ok(())
            }
            Command::Upstream { addr } => {
                let listener = tokio::net::TcpListener::bind(addr).await?;
                println!("listening on {}", listener.local_addr()?);
                stacklab_bench::upstream::serve(listener).await;
                Ok(())
            }
            Command::Load(args) => load_cmd(args).await,
            Command::Compare {
                quick,
                rounds,
                duration,
                stacklab,
                out,
                peers,
                scenarios,
                no_cross_check,
                sessions,
                idle,
            } => {
                let (self_bin, stacklab) = binaries(stacklab)?;
                let out = out_dir(out)?;
                let mut o = compare::Options::new(quick, out, stacklab, self_bin);
                if let Some(r) = rounds {
                    o.rounds = r.max(1);
                }
                if let Some(d) = duration {
                    o.duration = Duration::from_secs_f64(d);
                }
                if let Some(s) = sessions {
                    o.sessions = s;
                }
                if let Some(i) = idle {
                    o.idle_connections = i;
                }
                o.cross_check = !no_cross_check;
                if !peers.is_empty() {
                    o.peers = parse_peers(&peers)?;
                }
                if !scenarios.is_empty() {
                    o.scenarios = scenarios
                        .iter()
                        .map(|s| {
                            Scenario::ALL
                                .into_iter()
                                .find(|x| {
                                    serde_json::to_value(x)
                                        .ok()
                                        .and_then(|v| v.as_str().map(|v| v.replace('_', "-")))
                                        == Some(s.clone())
                                })
                                .with_context(|| format!("unknown scenario {s}"))
                        })
                        .collect::<anyhow::Result<_>>()?;
                }
                let results = compare::run(o).await?;
                println!("{}", report::markdown(&results));
                println!("written to {}", results.options.out_dir.display());
                Ok(())
            }
        }
    })
}

fn parse_peers(names: &[String]) -> anyhow::Result<Vec<PeerKind>> {
    names
        .iter()
        .map(|p| match p.as_str() {
            "stacklab" => Ok(PeerKind::Stacklab),
            "nginx" => Ok(PeerKind::Nginx),
            "haproxy" => Ok(PeerKind::Haproxy),
            other => bail!("unknown peer {other}: stacklab, nginx or haproxy"),
        })
        .collect()
}

async fn load_cmd(args: LoadArgs) -> anyhow::Result<()> {
    let LoadArgs {
        url,
        protocol,
        connections,
        streams,
        duration,
        warmup,
        rate,
        new_connection,
        ca,
        headers,
    } = args;
    stacklab_bench::procstat::raise_nofile();
    let uri: http::Uri = url.parse().context("not a URL")?;
    let https = uri.scheme_str() == Some("https") || protocol == Protocol::H3;
    let host = uri.host().context("the URL has no host")?.to_owned();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let addr = tokio::net::lookup_host((host.as_str(), port))
        .await?
        .next()
        .with_context(|| format!("{host} does not resolve"))?;
    let tls = if https {
        let ca = ca.context("https and HTTP/3 need --ca FILE (the certificate to trust)")?;
        let alpn: &[&[u8]] = match protocol {
            Protocol::H1 => &[b"http/1.1"],
            Protocol::H2 => &[b"h2"],
            Protocol::H3 => &[b"h3"],
        };
        Some(stacklab_bench::tls::client_config(&ca, alpn)?)
    } else {
        None
    };
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|h| {
            h.split_once(':')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .with_context(|| format!("a header is `name: value`, not {h:?}"))
        })
        .collect::<anyhow::Result<_>>()?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let sni = if host.parse::<std::net::IpAddr>().is_ok() {
        "localhost"
    } else {
        host.as_str()
    };
    let dialer = load::dialer(addr, protocol, tls, sni, path, &headers)?;
    let spec = load::LoadSpec {
        dialer,
        connections,
        streams,
        duration: Duration::from_secs_f64(duration),
        warmup: Duration::from_secs_f64(warmup),
        rate,
        new_connection_per_request: new_connection,
        sampler: None,
    };
    let report = load::run(&spec).await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
