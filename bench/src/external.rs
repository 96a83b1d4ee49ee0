//! Independent load generators run beside ours: `wrk` (HTTP/1.1) and `h2load` (HTTP/2).
//!
//! If our generator reports much less than these against the same proxy in the same run, the
//! generator is the bottleneck, not the proxy. Both are Debian packages (`wrk`,
//! `nghttp2-client`).

use serde::{Deserialize, Serialize};
use std::process::Command;
use std::time::Duration;

/// What an external tool measured.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ToolReport {
    pub tool: String,
    pub rps: f64,
    /// p99 latency in microseconds, when the tool reports it.
    pub p99_us: Option<f64>,
    pub errors: u64,
}

/// Errors running a tool.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("{tool} is not installed (apt-get install -y {package})")]
    Missing {
        tool: &'static str,
        package: &'static str,
    },
    #[error("{tool} failed: {message}")]
    Failed { tool: &'static str, message: String },
}

fn run(tool: &'static str, package: &'static str, args: &[String]) -> Result<String, ToolError> {
    let out = Command::new(tool).args(args).output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            ToolError::Missing { tool, package }
        } else {
            ToolError::Failed {
                tool,
                message: e.to_string(),
            }
        }
    })?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(ToolError::Failed {
            tool,
            message: format!("{}{}", text, String::from_utf8_lossy(&out.stderr)),
        });
    }
    Ok(text)
}

/// Parses wrk's durations: `812.00us`, `1.20ms`, `2.00s`, `1.5m`.
fn wrk_duration_us(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1e6)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60e6)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|v| v * mult)
}

/// Reads requests per second, p99 and errors from wrk's `--latency` output.
pub fn parse_wrk(text: &str) -> Option<ToolReport> {
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))?
        .trim()
        .parse()
        .ok()?;
    let p99_us = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .and_then(wrk_duration_us);
    let mut errors = 0;
    for l in text.lines() {
        let l = l.trim();
        if let Some(rest) = l.strip_prefix("Socket errors:") {
            errors += rest
                .split(',')
                .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
                .sum::<u64>();
        }
        if let Some(rest) = l.strip_prefix("Non-2xx or 3xx responses:") {
            errors += rest.trim().parse::<u64>().unwrap_or(0);
        }
    }
    Some(ToolReport {
        tool: "wrk".into(),
        rps,
        p99_us,
        errors,
    })
}

/// Reads requests per second and errors from h2load's summary.
pub fn parse_h2load(text: &str) -> Option<ToolReport> {
    // "finished in 2.00s, 41234.50 req/s, 1.23MB/s"
    let line = text.lines().find(|l| l.starts_with("finished in"))?;
    let rps = line
        .split(',')
        .find(|p| p.contains("req/s"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    // "requests: 100 total, 100 started, 100 done, 98 succeeded, 2 failed, 2 errored, 0 timeout"
    let errors = text
        .lines()
        .find(|l| l.starts_with("requests:"))
        .and_then(|l| {
            l.split(',')
                .find(|p| p.trim().ends_with("failed"))?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0);
    Some(ToolReport {
        tool: "h2load".into(),
        rps,
        p99_us: None,
        errors,
    })
}

/// `wrk -t threads -c connections -d duration --latency url`.
pub fn wrk(
    url: &str,
    threads: usize,
    connections: usize,
    duration: Duration,
) -> Result<ToolReport, ToolError> {
    let args = vec![
        format!("-t{threads}"),
        format!("-c{connections}"),
        format!("-d{}s", duration.as_secs().max(1)),
        "--latency".into(),
        url.to_owned(),
    ];
    let text = run("wrk", "wrk", &args)?;
    parse_wrk(&text).ok_or_else(|| ToolError::Failed {
        tool: "wrk",
        message: format!("unreadable output: {text}"),
    })
}

/// `h2load -t threads -c connections -m streams -D duration url` (HTTP/2 over TLS by ALPN).
pub fn h2load(
    url: &str,
    threads: usize,
    connections: usize,
    streams: usize,
    duration: Duration,
) -> Result<ToolReport, ToolError> {
    let args = vec![
        format!("-t{threads}"),
        format!("-c{connections}"),
        format!("-m{streams}"),
        format!("-D{}", duration.as_secs().max(1)),
        url.to_owned(),
    ];
    let text = run("h2load", "nghttp2-client", &args)?;
    parse_h2load(&text).ok_or_else(|| ToolError::Failed {
        tool: "h2load",
        message: format!("unreadable output: {text}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK: &str = "Running 2s test @ http://127.0.0.1:8080/
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.02ms  312.45us   9.80ms   80.12%
    Req/Sec    31.50k     2.10k   35.00k    70.00%
  Latency Distribution
     50%    0.98ms
     75%    1.10ms
     90%    1.30ms
     99%    2.50ms
  125000 requests in 2.00s, 20.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:  62500.12
Transfer/sec:     10.00MB
";

    const H2LOAD: &str = "starting benchmark...
finished in 2.00s, 41234.50 req/s, 1.23MB/s
requests: 82469 total, 82469 started, 82469 done, 82467 succeeded, 2 failed, 2 errored, 0 timeout
";

    #[test]
    fn reads_wrk() {
        let r = parse_wrk(WRK).unwrap();
        assert!((r.rps - 62500.12).abs() < 0.01);
        assert_eq!(r.p99_us, Some(2500.0));
        assert_eq!(r.errors, 7);
    }

    #[test]
    fn reads_h2load() {
        let r = parse_h2load(H2LOAD).unwrap();
        assert!((r.rps - 41234.5).abs() < 0.01);
        assert_eq!(r.errors, 2);
    }

    #[test]
    fn wrk_units() {
        assert_eq!(wrk_duration_us("812.00us"), Some(812.0));
        assert_eq!(wrk_duration_us("2.00s"), Some(2e6));
    }
}
