//! Instructions per proxied request, counted by callgrind: the repeatable figure (issue 21).
//!
//! Wall-clock CPU on this shared two-core machine moves by tens of percent with whatever else
//! runs; an instruction count under `valgrind --tool=callgrind` does not. Each peer runs with
//! one worker (stacklab `edge.workers = 1`, nginx `worker_processes 1`, HAProxy `nbthread 1`)
//! under callgrind, in front of the same upstream, and gets the same closed-loop keep-alive
//! load: `connections` HTTP/1.1 connections over the plain listener, each sending the next
//! `GET /` when the answer has come, a fixed number of requests in all.
//!
//! Start-up, configuration, the readiness probe, the connections' set-up and shutdown cost
//! the same whatever the number of requests, so each peer runs twice, with `requests` and with
//! `3 × requests`, and the figure is the difference of the two totals divided by the
//! difference in requests. The same subtraction per function gives the profile: what each
//! function costs per request, its own instructions (self) and with what it calls
//! (inclusive), from `callgrind_annotate`.
//!
//! [`check`] compares stacklab's figure with the committed baseline
//! (`bench/baseline/instructions.json`); `scripts/perf-check` runs it from `scripts/test`.

use crate::load::h1::H1;
use crate::peers::{self, PeerKind, Setup, StacklabExtra};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Where the committed baseline lives, relative to the repository.
pub const BASELINE: &str = "bench/baseline/instructions.json";
/// Requests in the shorter run (the longer has three times as many).
pub const DEFAULT_REQUESTS: usize = 2000;
/// Keep-alive connections the load uses.
pub const DEFAULT_CONNECTIONS: usize = 16;
/// Functions listed per peer.
const TOP: usize = 25;

#[derive(Debug, thiserror::Error)]
pub enum InstructionsError {
    #[error("valgrind is not installed (apt-get install -y valgrind)")]
    NoValgrind,
    #[error(transparent)]
    Peer(#[from] peers::PeerError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("{peer}: {message}")]
    Run { peer: &'static str, message: String },
}

/// How the count runs.
#[derive(Debug, Clone, Serialize)]
pub struct Options {
    pub peers: Vec<PeerKind>,
    /// Requests in the shorter run.
    pub requests: usize,
    pub connections: usize,
    pub stacklab_bin: PathBuf,
    pub self_bin: PathBuf,
}

/// One function's cost per request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FnCost {
    pub function: String,
    pub per_request: f64,
}

/// One peer's figure.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerCount {
    pub peer: PeerKind,
    pub instructions_per_request: f64,
    /// Total instructions of the short and the long run.
    pub totals: [u64; 2],
    pub requests: [usize; 2],
    /// Own instructions per request, largest first.
    pub top_self: Vec<FnCost>,
    /// With callees, largest first.
    pub top_inclusive: Vec<FnCost>,
}

/// The committed figure `scripts/perf-check` holds stacklab to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Baseline {
    pub instructions_per_request: f64,
    /// Allowed rise, in percent.
    pub tolerance_percent: f64,
    pub requests: usize,
    pub connections: usize,
    pub note: String,
}

struct Upstream(std::process::Child, SocketAddr);

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_upstream(self_bin: &Path) -> Result<Upstream, InstructionsError> {
    use std::io::BufRead;
    let addr: SocketAddr = ([127, 0, 0, 1], peers::free_port()?).into();
    let mut child = Command::new(self_bin)
        .args(["upstream", "--addr", &addr.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        std::io::BufReader::new(out).read_line(&mut line)?;
    }
    let upstream = Upstream(child, addr);
    if !line.starts_with("listening") {
        return Err(InstructionsError::Run {
            peer: "upstream",
            message: format!("it said {line:?}"),
        });
    }
    Ok(upstream)
}

/// Counts every peer in `options.peers`.
pub async fn run(options: &Options) -> Result<Vec<PeerCount>, InstructionsError> {
    if Command::new("valgrind").arg("--version").output().is_err() {
        return Err(InstructionsError::NoValgrind);
    }
    let nofile = crate::procstat::raise_nofile();
    let dir = std::env::temp_dir().join(format!("stacklab-callgrind-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let certs = crate::tls::generate(&dir)?;
    let upstream = start_upstream(&options.self_bin)?;
    let mut counts = Vec::new();
    for &peer in &options.peers {
        let n = [options.requests, 3 * options.requests];
        let mut totals = [0u64; 2];
        let mut profiles: [(HashMap<String, u64>, HashMap<String, u64>); 2] = Default::default();
        for (i, &requests) in n.iter().enumerate() {
            let run_dir = dir.join(format!("{}-{requests}", peer.name()));
            let _ = std::fs::remove_dir_all(&run_dir);
            std::fs::create_dir_all(&run_dir)?;
            let setup = Setup {
                dir: run_dir.clone(),
                certs: certs.clone(),
                upstream: upstream.1,
                workers: 1,
                stacklab_bin: options.stacklab_bin.clone(),
                nofile,
                single_process: true,
            };
            let files = one_run(peer, &setup, requests, options.connections).await?;
            for f in &files {
                totals[i] += total_of(f)?;
                for (inclusive, into) in [(false, &mut profiles[i].0), (true, &mut profiles[i].1)] {
                    for (name, ir) in annotate(f, inclusive)? {
                        *into.entry(name).or_default() += ir;
                    }
                }
            }
        }
        let extra = (n[1] - n[0]) as f64;
        let per_request = totals[1].saturating_sub(totals[0]) as f64 / extra;
        let top = |long: &HashMap<String, u64>, short: &HashMap<String, u64>| {
            let mut v: Vec<FnCost> = long
                .iter()
                .filter(|(name, _)| !frame(name))
                .map(|(name, ir)| FnCost {
                    function: name.clone(),
                    per_request: (*ir as f64 - short.get(name).copied().unwrap_or(0) as f64)
                        / extra,
                })
                .filter(|c| c.per_request > 0.0)
                .collect();
            v.sort_by(|a, b| b.per_request.total_cmp(&a.per_request));
            v.truncate(TOP);
            v
        };
        counts.push(PeerCount {
            peer,
            instructions_per_request: per_request,
            totals,
            requests: n,
            top_self: top(&profiles[1].0, &profiles[0].0),
            top_inclusive: top(&profiles[1].1, &profiles[0].1),
        });
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(counts)
}

/// Starts `peer` under callgrind, sends `requests` (plus nothing else but the readiness
/// probe), stops it and returns its profile files.
async fn one_run(
    peer: PeerKind,
    setup: &Setup,
    requests: usize,
    connections: usize,
) -> Result<Vec<PathBuf>, InstructionsError> {
    let wrapper = vec![
        "valgrind".to_owned(),
        "--tool=callgrind".to_owned(),
        format!(
            "--callgrind-out-file={}",
            setup.dir.join("callgrind.%p").display()
        ),
    ];
    let running = peers::start_under(
        peer,
        setup,
        // One worker thread, as nginx and HAProxy get one (`setup.workers`).
        &StacklabExtra {
            workers: Some(1),
            ..StacklabExtra::default()
        },
        &wrapper,
        Duration::from_secs(120),
    )?;
    let result = drive(running.plain, requests, connections).await;
    let exited = tokio::task::block_in_place(|| running.stop_within(Duration::from_secs(120)));
    result.map_err(|message| InstructionsError::Run {
        peer: peer.name(),
        message,
    })?;
    if !exited {
        return Err(InstructionsError::Run {
            peer: peer.name(),
            message: "did not exit within 120 s of SIGTERM: no profile".into(),
        });
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&setup.dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("callgrind."))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(InstructionsError::Run {
            peer: peer.name(),
            message: "callgrind wrote no profile".into(),
        });
    }
    Ok(files)
}

/// `requests` keep-alive `GET /`s over `connections` connections, every answer a 200.
async fn drive(addr: SocketAddr, requests: usize, connections: usize) -> Result<(), String> {
    let request: &'static [u8] = b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n";
    let mut tasks = Vec::new();
    for c in 0..connections {
        let share = requests / connections + usize::from(c < requests % connections);
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| e.to_string())?;
            let _ = stream.set_nodelay(true);
            let mut conn = H1::new(Box::new(stream));
            for _ in 0..share {
                let answer = conn.request(request).await.map_err(|e| e.to_string())?;
                if answer.status != 200 {
                    return Err(format!("answered {}", answer.status));
                }
            }
            Ok::<_, String>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}

/// The total instructions in a callgrind profile.
fn total_of(file: &Path) -> Result<u64, InstructionsError> {
    let text = std::fs::read_to_string(file)?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix("totals:")
                .or_else(|| l.strip_prefix("summary:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .ok_or_else(|| InstructionsError::Run {
            peer: "callgrind",
            message: format!("no totals in {}", file.display()),
        })
}

/// Instructions per function (`callgrind_annotate`), self or inclusive.
fn annotate(file: &Path, inclusive: bool) -> Result<Vec<(String, u64)>, InstructionsError> {
    let out = Command::new("callgrind_annotate")
        .arg(format!(
            "--inclusive={}",
            if inclusive { "yes" } else { "no" }
        ))
        .arg("--threshold=99.9")
        // Per function only: the annotated source lines would read as functions.
        .arg("--auto=no")
        .arg(file)
        .output()?;
    Ok(parse_annotate(&String::from_utf8_lossy(&out.stdout)))
}

/// Lines like `1,234,567 (12.34%)  /path/file.rs:crate::function [/path/object]`.
fn parse_annotate(text: &str) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim_start();
        let Some((count, rest)) = line.split_once(' ') else {
            continue;
        };
        let Ok(ir) = count.replace(',', "").parse::<u64>() else {
            continue;
        };
        // Only `count (share%)  name` lines.
        let Some(rest) = rest
            .trim_start()
            .strip_prefix('(')
            .and_then(|r| r.split_once("%)"))
            .map(|(_, r)| r.trim())
        else {
            continue;
        };
        if rest.starts_with("PROGRAM TOTALS") || rest.is_empty() {
            continue;
        }
        let rest = rest.rsplit_once(" [").map_or(rest, |(f, _)| f).trim_end();
        // callgrind_annotate adds the call count, `name (1,234x)`: not part of the name.
        let rest = match rest.rsplit_once(" (") {
            Some((name, count)) if count.ends_with("x)") => name,
            _ => rest,
        };
        let function = rest.split_once(':').map_or(rest, |(_, f)| f);
        out.push((function.trim().to_owned(), ir));
    }
    out
}

/// Frames every request runs under (thread start, the runtime's loop, `main`): in the
/// inclusive list they say only "everything".
fn frame(name: &str) -> bool {
    const FRAMES: [&str; 12] = [
        "(below main)",
        "main",
        "__libc_start",
        "std::",
        "<std::",
        "core::ops::function",
        "tokio::runtime::",
        "<tokio::runtime::",
        "<tokio_util::task::task_tracker",
        "run_poll_loop",
        "ngx_worker_process_cycle",
        "ngx_single_process_cycle",
    ];
    FRAMES.iter().any(|f| name.starts_with(f)) || name.starts_with("0x")
}

/// Reads the committed baseline.
pub fn read_baseline(path: &Path) -> Result<Baseline, InstructionsError> {
    let text = std::fs::read_to_string(path)?;
    serde_json::from_str(&text).map_err(|e| InstructionsError::Run {
        peer: "baseline",
        message: format!("{}: {e}", path.display()),
    })
}

/// `Err` with the figures when stacklab's count rose past the baseline's tolerance.
pub fn check(measured: f64, baseline: &Baseline) -> Result<String, String> {
    let limit = baseline.instructions_per_request * (1.0 + baseline.tolerance_percent / 100.0);
    let change = (measured / baseline.instructions_per_request - 1.0) * 100.0;
    let line = format!(
        "stacklab: {measured:.0} instructions per request; baseline {:.0} ({change:+.1}%, at most +{}% allowed)",
        baseline.instructions_per_request, baseline.tolerance_percent
    );
    if measured > limit {
        Err(line)
    } else {
        Ok(line)
    }
}

/// The Markdown table and each peer's top functions.
pub fn markdown(counts: &[PeerCount], heading: &str) -> String {
    let nginx = counts
        .iter()
        .find(|c| c.peer == PeerKind::Nginx)
        .map(|c| c.instructions_per_request);
    let mut s = format!(
        "{heading}\n\n| proxy | instructions / request | × nginx | runs (requests: total instructions) |\n|---|---:|---:|---|\n"
    );
    for c in counts {
        let ratio = nginx.map_or("-".to_owned(), |n| {
            format!("{:.2}", c.instructions_per_request / n)
        });
        s.push_str(&format!(
            "| {} | {:.0} | {ratio} | {}: {}, {}: {} |\n",
            c.peer.name(),
            c.instructions_per_request,
            c.requests[0],
            c.totals[0],
            c.requests[1],
            c.totals[1]
        ));
    }
    for c in counts {
        s.push_str(&format!(
            "\n{}'s functions, instructions per request (self | inclusive):\n\n| self | function | | inclusive | function |\n|---:|---|---|---:|---|\n",
            c.peer.name()
        ));
        for i in 0..c.top_self.len().max(c.top_inclusive.len()) {
            let cell = |v: &[FnCost]| {
                v.get(i).map_or(("".to_owned(), "".to_owned()), |f| {
                    (
                        format!("{:.0}", f.per_request),
                        format!("`{}`", shorten(&f.function)),
                    )
                })
            };
            let (a, b) = cell(&c.top_self);
            let (x, y) = cell(&c.top_inclusive);
            s.push_str(&format!("| {a} | {b} | | {x} | {y} |\n"));
        }
    }
    s
}

/// Generic parameters and closures make Rust names long; the table keeps 90 characters.
fn shorten(name: &str) -> String {
    let name = name.replace('|', "\\|");
    if name.chars().count() > 90 {
        let cut: String = name.chars().take(87).collect();
        format!("{cut}...")
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotate_lines_are_parsed() {
        let text = "\
--------------------------------------------------------------------------------
Ir
--------------------------------------------------------------------------------
12,345,678 (100.0%)  PROGRAM TOTALS

--------------------------------------------------------------------------------
Ir                 file:function
--------------------------------------------------------------------------------
1,000,000 (8.10%)  ???:malloc [/usr/lib/x86_64-linux-gnu/libc.so.6]
  500 ( 0.00%)  /src/edge.rs:stacklab_proxy::edge::handle::{{closure}} (3,001x) [/bin/stacklab]
24,637 events annotated
";
        let v = parse_annotate(text);
        assert_eq!(
            v,
            [
                ("malloc".to_owned(), 1_000_000),
                ("stacklab_proxy::edge::handle::{{closure}}".to_owned(), 500)
            ]
        );
    }

    #[test]
    fn the_check_allows_the_tolerance_and_no_more() {
        let b = Baseline {
            instructions_per_request: 10_000.0,
            tolerance_percent: 3.0,
            requests: 1,
            connections: 1,
            note: String::new(),
        };
        assert!(check(10_250.0, &b).is_ok());
        assert!(check(9_000.0, &b).is_ok());
        assert!(check(10_400.0, &b).is_err());
    }
}
