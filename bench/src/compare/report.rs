//! Turning runs into rows, ratios to nginx, the targets, and the files under
//! `bench/results/`.
//!
//! Over rounds, a row takes the median of requests per second and of each latency
//! percentile, CPU seconds per 100k requests from the summed CPU time over the summed
//! requests, and the largest peak RSS.

use super::{Options, Results, RunRecord, Scenario};
use crate::peers::PeerKind;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The machine the numbers come from.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
    pub os: String,
    pub nginx: String,
    pub haproxy: String,
    pub stacklab_commit: String,
    pub date_utc: String,
}

fn command_text(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .map(|o| {
            let mut t = String::from_utf8_lossy(&o.stdout).into_owned();
            t.push_str(&String::from_utf8_lossy(&o.stderr));
            t.lines().next().unwrap_or_default().trim().to_owned()
        })
        .unwrap_or_default()
}

impl Machine {
    pub fn describe(options: &Options) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")?
                    .split_once(':')
                    .map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_gib = crate::procstat::parse_status_kb(&meminfo, "MemTotal").unwrap_or(0) as f64
            / (1u64 << 30) as f64;
        let os = std::fs::read_to_string("/etc/os-release")
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                l.strip_prefix("PRETTY_NAME=")
                    .map(|v| v.trim_matches('"').to_owned())
            })
            .unwrap_or_default();
        Machine {
            cpu,
            cores: options.workers,
            memory_gib: (memory_gib * 10.0).round() / 10.0,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            os,
            nginx: command_text("nginx", &["-v"]),
            haproxy: command_text("haproxy", &["-v"]),
            // The checkout the bench runs in (the current folder), like the results folder;
            // not the one it was compiled in.
            stacklab_commit: command_text("git", &["rev-parse", "--short", "HEAD"]),
            date_utc: command_text("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        }
    }
}

/// One line of the table: a scenario on one peer, over all rounds.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub scenario: Scenario,
    pub variant: String,
    pub peer: PeerKind,
    pub rounds: usize,
    pub rps: f64,
    pub mib_per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub cpu_s_per_100k: Option<f64>,
    /// Median share of the machine's cores busy during the measured window.
    pub machine_busy: f64,
    pub peak_rss_bytes: u64,
    /// Idle scenario: RSS with the connections open, and bytes per connection.
    pub idle_rss_bytes: Option<u64>,
    pub idle_bytes_per_connection: Option<f64>,
    pub errors: u64,
    pub rps_vs_nginx: Option<f64>,
    pub p99_vs_nginx: Option<f64>,
    pub cpu_vs_nginx: Option<f64>,
    pub rss_vs_nginx: Option<f64>,
    pub failures: Vec<String>,
}

/// Our generator against an independent one, on the same peer process.
#[derive(Debug, Clone, Serialize)]
pub struct CrossCheck {
    pub scenario: Scenario,
    pub peer: PeerKind,
    pub tool: String,
    pub ours_rps: f64,
    pub theirs_rps: f64,
    /// ours / theirs.
    pub ratio: f64,
}

/// One of the targets.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub what: String,
    pub goal: String,
    pub measured: String,
    pub met: Option<bool>,
}

/// The median (0 for none).
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// A line for the progress output.
pub fn one_line(r: &RunRecord) -> String {
    let head = format!(
        "{:?} {}{} round {} [{}]",
        r.scenario,
        r.peer.name(),
        if r.variant.is_empty() {
            String::new()
        } else {
            format!(" ({})", r.variant)
        },
        r.round + 1,
        r.tool
    );
    if let Some(e) = &r.error {
        return format!("{head}: FAILED: {e}");
    }
    if let Some(l) = &r.load {
        return format!(
            "{head}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, errors {}, proxy CPU {:.2} s{}",
            l.rps,
            l.latency_us.p50 as f64 / 1000.0,
            l.latency_us.p99 as f64 / 1000.0,
            l.errors + l.bad_status,
            r.proxy_cpu_seconds,
            l.first_error
                .as_ref()
                .map(|e| format!(" (first error: {e})"))
                .unwrap_or_default()
        );
    }
    if let Some(x) = &r.external {
        return format!("{head}: {:.0} req/s, errors {}", x.rps, x.errors);
    }
    if let Some(i) = &r.idle {
        return format!(
            "{head}: {} connections open ({} failed) in {:.1} s, RSS {:.1} MiB, peak {:.1} MiB",
            i.connections,
            i.failed,
            i.seconds_to_open,
            mib(i.rss_idle_bytes),
            mib(r.peak_rss_bytes)
        );
    }
    head
}

fn mib(b: u64) -> f64 {
    b as f64 / (1u64 << 20) as f64
}

/// Rows for every (scenario, variant, peer), in run order.
pub fn rows(runs: &[RunRecord]) -> Vec<Row> {
    let mut keys: Vec<(Scenario, String, PeerKind)> = Vec::new();
    for r in runs.iter().filter(|r| r.tool == "stacklab-bench") {
        let k = (r.scenario, r.variant.clone(), r.peer);
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    let mut rows: Vec<Row> = keys
        .into_iter()
        .map(|(scenario, variant, peer)| {
            let rs: Vec<&RunRecord> = runs
                .iter()
                .filter(|r| {
                    r.tool == "stacklab-bench"
                        && r.scenario == scenario
                        && r.variant == variant
                        && r.peer == peer
                })
                .collect();
            let loads: Vec<_> = rs.iter().filter_map(|r| r.load.as_ref()).collect();
            let requests: u64 = loads.iter().map(|l| l.ok + l.bad_status).sum();
            let cpu: f64 = rs
                .iter()
                .filter(|r| r.load.is_some())
                .map(|r| r.proxy_cpu_seconds)
                .sum();
            let idles: Vec<_> = rs.iter().filter_map(|r| r.idle.as_ref()).collect();
            Row {
                scenario,
                variant,
                peer,
                rounds: rs.len(),
                rps: median(loads.iter().map(|l| l.rps).collect()),
                mib_per_s: median(loads.iter().map(|l| l.mib_per_s).collect()),
                p50_us: median(loads.iter().map(|l| l.latency_us.p50 as f64).collect()),
                p99_us: median(loads.iter().map(|l| l.latency_us.p99 as f64).collect()),
                p999_us: median(loads.iter().map(|l| l.latency_us.p999 as f64).collect()),
                cpu_s_per_100k: (requests > 0).then(|| cpu / requests as f64 * 100_000.0),
                machine_busy: median(
                    rs.iter()
                        .filter(|r| r.load.is_some())
                        .map(|r| r.machine_busy)
                        .collect(),
                ),
                peak_rss_bytes: rs.iter().map(|r| r.peak_rss_bytes).max().unwrap_or(0),
                idle_rss_bytes: idles.iter().map(|i| i.rss_idle_bytes).max(),
                idle_bytes_per_connection: (!idles.is_empty())
                    .then(|| median(idles.iter().map(|i| i.bytes_per_connection).collect())),
                errors: loads.iter().map(|l| l.errors + l.bad_status).sum::<u64>()
                    + idles.iter().map(|i| i.failed as u64).sum::<u64>(),
                rps_vs_nginx: None,
                p99_vs_nginx: None,
                cpu_vs_nginx: None,
                rss_vs_nginx: None,
                failures: rs.iter().filter_map(|r| r.error.clone()).collect(),
            }
        })
        .collect();
    let snapshot = rows.clone();
    for row in &mut rows {
        let Some(n) = snapshot.iter().find(|n| {
            n.peer == PeerKind::Nginx && n.scenario == row.scenario && n.variant == row.variant
        }) else {
            continue;
        };
        let ratio = |a: f64, b: f64| (b > 0.0 && a > 0.0).then_some(a / b);
        row.rps_vs_nginx = ratio(row.rps, n.rps);
        row.p99_vs_nginx = ratio(row.p99_us, n.p99_us);
        row.cpu_vs_nginx = match (row.cpu_s_per_100k, n.cpu_s_per_100k) {
            (Some(a), Some(b)) => ratio(a, b),
            _ => None,
        };
        row.rss_vs_nginx = ratio(row.peak_rss_bytes as f64, n.peak_rss_bytes as f64);
    }
    rows
}

/// Our generator's throughput next to wrk's and h2load's, per peer.
pub fn cross_checks(runs: &[RunRecord]) -> Vec<CrossCheck> {
    let mut out = Vec::new();
    for tool in ["wrk", "h2load"] {
        for peer in PeerKind::ALL {
            let theirs: Vec<&RunRecord> = runs
                .iter()
                .filter(|r| r.tool == tool && r.peer == peer)
                .collect();
            let Some(scenario) = theirs.first().map(|r| r.scenario) else {
                continue;
            };
            let theirs_rps = median(
                theirs
                    .iter()
                    .filter_map(|r| r.external.as_ref().map(|x| x.rps))
                    .collect(),
            );
            let ours_rps = median(
                runs.iter()
                    .filter(|r| {
                        r.tool == "stacklab-bench" && r.peer == peer && r.scenario == scenario
                    })
                    .filter_map(|r| r.load.as_ref().map(|l| l.rps))
                    .collect(),
            );
            out.push(CrossCheck {
                scenario,
                peer,
                tool: tool.to_owned(),
                ours_rps,
                theirs_rps,
                ratio: if theirs_rps > 0.0 {
                    ours_rps / theirs_rps
                } else {
                    0.0
                },
            });
        }
    }
    out
}

fn find<'a>(rows: &'a [Row], s: Scenario, peer: PeerKind, variant: &str) -> Option<&'a Row> {
    rows.iter()
        .find(|r| r.scenario == s && r.peer == peer && (variant.is_empty() || r.variant == variant))
}

/// The targets, with what was measured.
pub fn targets(rows: &[Row]) -> Vec<Target> {
    let mut t = Vec::new();
    let us = |s| find(rows, s, PeerKind::Stacklab, "");
    let ng = |s| find(rows, s, PeerKind::Nginx, "");
    let ha = |s| find(rows, s, PeerKind::Haproxy, "");
    {
        let (a, n, h) = (
            us(Scenario::H1KeepAlive),
            ng(Scenario::H1KeepAlive),
            ha(Scenario::H1KeepAlive),
        );
        let met = match (a, n) {
            (Some(a), Some(n)) if n.rps > 0.0 => {
                Some(a.rps >= 1.3 * n.rps && h.is_none_or(|h| a.rps > h.rps))
            }
            _ => None,
        };
        t.push(Target {
            what: "HTTP/1.1 keep-alive throughput".into(),
            goal: ">= 1.3x nginx and above HAProxy".into(),
            measured: format!(
                "{:.0} req/s = {}x nginx ({:.0}); HAProxy {:.0}",
                a.map_or(0.0, |r| r.rps),
                fmt_ratio(a.and_then(|r| r.rps_vs_nginx)),
                n.map_or(0.0, |r| r.rps),
                h.map_or(0.0, |r| r.rps)
            ),
            met,
        });
    }
    {
        let (a, n) = (us(Scenario::H1FixedRate), ng(Scenario::H1FixedRate));
        t.push(Target {
            what: "p99 at half nginx's max rate".into(),
            goal: "<= 0.8x nginx's p99".into(),
            measured: format!(
                "{:.2} ms vs nginx {:.2} ms = {}x",
                a.map_or(0.0, |r| r.p99_us / 1000.0),
                n.map_or(0.0, |r| r.p99_us / 1000.0),
                fmt_ratio(a.and_then(|r| r.p99_vs_nginx))
            ),
            met: a.and_then(|r| r.p99_vs_nginx).map(|x| x <= 0.8),
        });
    }
    {
        let a = us(Scenario::H2Tls);
        t.push(Target {
            what: "HTTPS HTTP/2 throughput".into(),
            goal: ">= nginx".into(),
            measured: format!(
                "{:.0} req/s = {}x nginx",
                a.map_or(0.0, |r| r.rps),
                fmt_ratio(a.and_then(|r| r.rps_vs_nginx))
            ),
            met: a.and_then(|r| r.rps_vs_nginx).map(|x| x >= 1.0),
        });
    }
    {
        let (h3, h2) = (us(Scenario::H3), us(Scenario::H2Tls));
        let ratio = match (h3, h2) {
            (Some(a), Some(b)) if b.rps > 0.0 => Some(a.rps / b.rps),
            _ => None,
        };
        t.push(Target {
            what: "HTTP/3 throughput".into(),
            goal: ">= 0.6x our HTTP/2".into(),
            measured: format!(
                "{:.0} req/s = {}x our HTTP/2",
                h3.map_or(0.0, |r| r.rps),
                fmt_ratio(ratio)
            ),
            met: ratio.map(|x| x >= 0.6),
        });
    }
    {
        let one = rows
            .iter()
            .find(|r| r.scenario == Scenario::Sessions && r.variant == "1 session");
        let many = rows
            .iter()
            .find(|r| r.scenario == Scenario::Sessions && r.variant != "1 session");
        let loss = match (one, many) {
            (Some(a), Some(b)) if a.rps > 0.0 => Some(1.0 - b.rps / a.rps),
            _ => None,
        };
        t.push(Target {
            what: "100k sessions in the route table".into(),
            goal: "< 3% throughput lost".into(),
            measured: format!(
                "{:.0} req/s with 1 session, {:.0} with {}: {} lost",
                one.map_or(0.0, |r| r.rps),
                many.map_or(0.0, |r| r.rps),
                many.map_or("-".into(), |r| r.variant.clone()),
                loss.map_or("-".into(), |l| format!("{:.1}%", l * 100.0))
            ),
            met: loss.map(|l| l < 0.03),
        });
    }
    {
        let (a, n) = (us(Scenario::Idle), ng(Scenario::Idle));
        t.push(Target {
            what: "peak RSS with 10k idle connections".into(),
            goal: "<= nginx (master + workers)".into(),
            measured: format!(
                "{:.1} MiB vs nginx {:.1} MiB = {}x",
                a.map_or(0.0, |r| mib(r.peak_rss_bytes)),
                n.map_or(0.0, |r| mib(r.peak_rss_bytes)),
                fmt_ratio(a.and_then(|r| r.rss_vs_nginx))
            ),
            met: a.and_then(|r| r.rss_vs_nginx).map(|x| x <= 1.0),
        });
    }
    t
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or("-".into(), |r| format!("{r:.2}"))
}

fn ms(us: f64) -> String {
    if us <= 0.0 {
        "-".into()
    } else {
        format!("{:.2}", us / 1000.0)
    }
}

/// The Markdown report.
pub fn markdown(r: &Results) -> String {
    let m = &r.machine;
    let o = &r.options;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Run `{}` on {} — {}, {} cores, {} GiB, {}, Linux {}; {}; {}; stacklab {}. {} round(s), {} s measured after {} s warm-up per run, peers interleaved; {} s in all.\n",
        if o.quick { "compare --quick" } else { "compare" },
        m.date_utc,
        m.cpu,
        m.cores,
        m.memory_gib,
        m.os,
        m.kernel,
        m.nginx,
        m.haproxy,
        m.stacklab_commit,
        o.rounds,
        o.duration.as_secs_f64(),
        o.warmup.as_secs_f64(),
        r.seconds.round()
    );
    let _ = writeln!(
        s,
        "| scenario | proxy | req/s | × nginx | p50 ms | p99 ms | p99.9 ms | CPU s / 100k req | × nginx | peak RSS MiB | × nginx | errors | machine busy |"
    );
    let _ = writeln!(
        s,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for row in &r.rows {
        let scenario = if row.variant.is_empty() {
            row.scenario.title().to_owned()
        } else {
            format!("{} — {}", row.scenario.title(), row.variant)
        };
        let rps = if row.scenario == Scenario::Idle {
            match (row.idle_rss_bytes, row.idle_bytes_per_connection) {
                (Some(rss), Some(per)) => {
                    format!("RSS {:.1} MiB open, {:.1} KiB/conn", mib(rss), per / 1024.0)
                }
                _ => "-".into(),
            }
        } else if row.scenario == Scenario::Large {
            format!("{:.0} ({:.0} MiB/s)", row.rps, row.mib_per_s)
        } else {
            format!("{:.0}", row.rps)
        };
        let failed = if row.failures.is_empty() {
            String::new()
        } else {
            format!(" (failed: {})", row.failures.join("; ").replace('|', "/"))
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {} | {}{} | {} |",
            scenario,
            row.peer.name(),
            rps,
            fmt_ratio(row.rps_vs_nginx),
            ms(row.p50_us),
            ms(row.p99_us),
            ms(row.p999_us),
            row.cpu_s_per_100k.map_or("-".into(), |c| format!("{c:.2}")),
            fmt_ratio(row.cpu_vs_nginx),
            mib(row.peak_rss_bytes),
            fmt_ratio(row.rss_vs_nginx),
            row.errors,
            failed,
            if row.machine_busy > 0.0 {
                format!("{:.0}%", row.machine_busy * 100.0)
            } else {
                "-".into()
            }
        );
    }
    if !r.cross_checks.is_empty() {
        let _ = writeln!(
            s,
            "\nCross-check of the generator, same proxy process, right after our run:\n"
        );
        let _ = writeln!(
            s,
            "| scenario | proxy | stacklab-bench req/s | tool | tool req/s | ours / tool |"
        );
        let _ = writeln!(s, "|---|---|---:|---|---:|---:|");
        for c in &r.cross_checks {
            let _ = writeln!(
                s,
                "| {} | {} | {:.0} | {} | {:.0} | {:.2} |",
                c.scenario.title(),
                c.peer.name(),
                c.ours_rps,
                c.tool,
                c.theirs_rps,
                c.ratio
            );
        }
    }
    let _ = writeln!(s, "\nTargets of issue 7:\n");
    let _ = writeln!(s, "| target | goal | measured | met |");
    let _ = writeln!(s, "|---|---|---|---|");
    for t in &r.targets {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} |",
            t.what,
            t.goal,
            t.measured,
            match t.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "not measured",
            }
        );
    }
    s
}

/// Writes `compare[-quick].json` and `.md` into the output folder.
pub fn write(r: &Results) -> Result<(), super::CompareError> {
    let dir = &r.options.out_dir;
    std::fs::create_dir_all(dir)?;
    let stem = if r.options.quick {
        "compare-quick"
    } else {
        "compare"
    };
    let put = |name: String, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|source| super::CompareError::Write { path, source })
    };
    put(
        format!("{stem}.json"),
        serde_json::to_string_pretty(r).unwrap_or_default(),
    )?;
    put(format!("{stem}.md"), markdown(r))?;
    Ok(())
}

/// No stacklab workspace at or above the folder the bench was run from.
#[derive(Debug, thiserror::Error)]
#[error(
    "{} is not inside a stacklab checkout (no Cargo.toml with [workspace] and a bench/ folder \
     beside it, here or above): run from the checkout or say where with --out DIR",
    from.display()
)]
pub struct NoWorkspace {
    pub from: PathBuf,
}

/// The stacklab workspace holding `from`: the first folder from `from` upward whose
/// `Cargo.toml` declares `[workspace]` and that has a `bench/` folder.
pub fn workspace_root(from: &Path) -> Option<PathBuf> {
    from.ancestors()
        .find(|dir| {
            dir.join("bench").is_dir()
                && std::fs::read_to_string(dir.join("Cargo.toml"))
                    .is_ok_and(|t| t.lines().any(|l| l.trim() == "[workspace]"))
        })
        .map(Path::to_path_buf)
}

/// Where the results go without `--out`: `bench/results/` of the workspace the bench runs in
/// (found from `from`, the current folder, upward). Not the folder it was compiled in: a
/// binary built in one checkout and run in another writes into the one it runs in.
pub fn default_out_dir(from: &Path) -> Result<PathBuf, NoWorkspace> {
    workspace_root(from)
        .map(|root| root.join("bench").join("results"))
        .ok_or_else(|| NoWorkspace {
            from: from.to_path_buf(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 19: the results went to `env!("CARGO_MANIFEST_DIR")/results`, the checkout the
    /// binary was compiled in, wherever it ran.
    #[test]
    fn results_go_to_the_workspace_the_bench_runs_in() {
        let base = std::env::temp_dir().join(format!("stacklab-bench-out-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let ws = base.join("checkout");
        std::fs::create_dir_all(ws.join("bench/src")).unwrap();
        std::fs::create_dir_all(ws.join("proxy/src")).unwrap();
        std::fs::write(
            ws.join("Cargo.toml"),
            "[workspace]\nmembers = [\"bench\"]\n",
        )
        .unwrap();
        // A member's own manifest is not the workspace's.
        std::fs::write(ws.join("bench/Cargo.toml"), "[package]\nname = \"b\"\n").unwrap();
        let want = ws.join("bench/results");
        for from in [
            ws.clone(),
            ws.join("proxy/src"),
            ws.join("bench"),
            ws.join("bench/src"),
        ] {
            assert_eq!(
                default_out_dir(&from).unwrap(),
                want,
                "from {}",
                from.display()
            );
        }
        assert_ne!(
            default_out_dir(&ws).unwrap(),
            Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/results")),
            "not where it was compiled"
        );
        // A workspace without bench/ is some other project: keep looking, then say so.
        let other = base.join("other");
        std::fs::create_dir_all(other.join("src")).unwrap();
        std::fs::write(other.join("Cargo.toml"), "[workspace]\n").unwrap();
        let e = default_out_dir(&other.join("src")).unwrap_err();
        assert_eq!(e.from, other.join("src"));
        assert!(e.to_string().contains("--out DIR"), "{e}");
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![]), 0.0);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
