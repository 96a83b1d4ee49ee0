//! CPU time and memory of a process and its children, read from `/proc`.
//!
//! CPU is `utime + stime` from `/proc/<pid>/stat` (clock ticks, `getconf CLK_TCK`), summed
//! over the process and all its descendants (nginx's master and workers). Memory is `VmHWM`
//! (the peak resident set) and `VmRSS` from `/proc/<pid>/status`, summed the same way: a
//! multi-process server is charged for every process it runs, as the issue asks.

use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

/// File descriptors the bench wants for itself and its children (10k idle connections
/// on both sides, HAProxy's two per connection).
pub const NOFILE_WANTED: u64 = 65_536;

/// Raises `RLIMIT_NOFILE` for this process, and so for the children it starts: both limits
/// to [`NOFILE_WANTED`] where allowed (root), else the soft limit to the hard one. Returns the
/// soft limit in force.
pub fn raise_nofile() -> u64 {
    use rlimit::Resource;
    if Resource::NOFILE.set(NOFILE_WANTED, NOFILE_WANTED).is_err() {
        let _ = rlimit::increase_nofile_limit(NOFILE_WANTED);
    }
    Resource::NOFILE.get().map_or(0, |(soft, _)| soft)
}

/// A sample of a process tree.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Sample {
    /// User plus system CPU seconds.
    pub cpu_seconds: f64,
    /// Peak resident set, summed over the processes, in bytes.
    pub hwm_bytes: u64,
    /// Resident set now, summed, in bytes.
    pub rss_bytes: u64,
    pub processes: usize,
}

fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// `(ppid, utime + stime ticks)` from the text of `/proc/<pid>/stat`.
pub fn parse_stat(text: &str) -> Option<(u32, u64)> {
    // The command name is in parentheses and may hold spaces: split after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); ppid is field 4, utime 14, stime 15.
    let ppid = f.get(1)?.parse().ok()?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

/// A `kB` field (`VmHWM:   1234 kB`) of `/proc/<pid>/status`, in bytes.
pub fn parse_status_kb(text: &str, field: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

/// `pid` and every descendant of it.
pub fn tree(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some((ppid, _)) = std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .as_deref()
                .and_then(parse_stat)
            {
                parents.push((p, ppid));
            }
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        out.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    out
}

/// Samples `pid` and its descendants.
pub fn sample(pid: u32) -> Sample {
    sample_of(&tree(pid))
}

/// Samples `pid` alone (not its children: the bench's own children are the servers).
pub fn sample_self() -> Sample {
    sample_of(&[std::process::id()])
}

/// Busy CPU seconds of the whole machine so far (every state but idle and iowait), from the
/// first line of `/proc/stat`, as a `Sample`.
pub fn machine() -> Sample {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> = text
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let busy: u64 = ticks
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4 && *i < 8)
        .map(|(_, v)| v)
        .sum();
    Sample {
        cpu_seconds: busy as f64 / clock_ticks(),
        ..Sample::default()
    }
}

fn sample_of(pids: &[u32]) -> Sample {
    let mut s = Sample::default();
    for &p in pids {
        let Some((_, ticks)) = std::fs::read_to_string(format!("/proc/{p}/stat"))
            .ok()
            .as_deref()
            .and_then(parse_stat)
        else {
            continue;
        };
        s.cpu_seconds += ticks as f64 / clock_ticks();
        s.processes += 1;
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{p}/status")) {
            s.hwm_bytes += parse_status_kb(&status, "VmHWM").unwrap_or(0);
            s.rss_bytes += parse_status_kb(&status, "VmRSS").unwrap_or(0);
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_spaces_in_the_name() {
        let text = "1234 (nginx: worker process) S 1200 1200 1200 0 -1 4194560 100 0 0 0 37 12 0 0 20 0 1 0 100 1000 200";
        assert_eq!(parse_stat(text), Some((1200, 49)));
    }

    #[test]
    fn status_fields_in_bytes() {
        let text = "Name:\tnginx\nVmHWM:\t    2048 kB\nVmRSS:\t    1024 kB\n";
        assert_eq!(parse_status_kb(text, "VmHWM"), Some(2048 * 1024));
        assert_eq!(parse_status_kb(text, "VmRSS"), Some(1024 * 1024));
        assert_eq!(parse_status_kb(text, "VmSwap"), None);
    }

    #[test]
    fn samples_this_process() {
        let s = sample(std::process::id());
        assert!(s.processes >= 1);
        assert!(s.hwm_bytes > 0);
    }
}
