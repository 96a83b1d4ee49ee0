//! `stacklab-bench drill`: faults injected into real `stacklab` processes under steady load,
//! each drill printing one line of figures and whether its goals held.
//!
//! Every drill starts its own processes (`stacklab up`, or `control`, `backend` and `proxy`
//! apart) on loopback ports picked by the kernel, with a data folder of its own under the
//! temporary folder; creates real sessions through the edge (`POST /api/sessions`, then a
//! user in each through `/api/users`); drives a steady closed-loop load of idempotent GETs and
//! non-idempotent POSTs over HTTPS keep-alive connections; injects its fault part-way; and
//! stops everything it started. Traffic goes to loopback only, and each drill is bounded by
//! `--seconds` of load plus a few seconds of setup and checks.
//!
//! The client behaves as HTTP clients do: it reconnects when the server closed a keep-alive
//! connection (`Connection: close`, idle timeout), and resends a request that hyper reports
//! as never written to the connection (counted as `client_resent`). Any request that got no
//! HTTP answer, or a 5xx, counts as failed.
//!
//! # Adding a drill
//!
//! Write `async fn my_drill(o: &Options) -> anyhow::Result<Outcome>` with the helpers below
//! ([`Stack`], [`Edge`], [`Load`]) and add one line to [`DRILLS`].

use anyhow::{bail, Context};
use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::time::Instant;

/// The admin token every drill's processes share.
const TOKEN: &str = "drill-admin-token-0123456789abcdef";
/// Longest a drill request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How the drills run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `stacklab` binary.
    pub stacklab: PathBuf,
    /// Seconds of load in each drill.
    pub seconds: f64,
    /// Keep each drill's folder (logs, data) instead of removing it.
    pub keep: bool,
}

/// What a drill measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub name: String,
    pub figures: String,
    pub pass: bool,
}

impl Outcome {
    /// The one line a drill prints.
    pub fn line(&self) -> String {
        format!(
            "drill {}: {} {}",
            self.name,
            self.figures,
            if self.pass { "PASS" } else { "FAIL" }
        )
    }
}

type DrillFuture<'a> = Pin<Box<dyn Future<Output = anyhow::Result<Outcome>> + Send + 'a>>;
type DrillFn = for<'a> fn(&'a Options) -> DrillFuture<'a>;

/// Every drill, in the order `all` runs them.
pub const DRILLS: &[(&str, DrillFn)] = &[
    ("instance-kill", |o| Box::pin(instance_kill(o))),
    ("instance-kill-container", |o| {
        Box::pin(instance_kill_container(o))
    }),
    ("db-container-kill", |o| Box::pin(db_container_kill(o))),
    ("control-restart", |o| Box::pin(control_restart(o))),
    ("proxy-reload", |o| Box::pin(proxy_reload(o))),
    ("proxy-upgrade", |o| Box::pin(proxy_upgrade(o))),
    ("edge-abuse", |o| Box::pin(edge_abuse(o))),
];

/// Runs the named drills (`all`: every one), printing each line as it is known.
pub async fn run(o: &Options, names: &[String]) -> anyhow::Result<Vec<Outcome>> {
    crate::procstat::raise_nofile();
    let chosen: Vec<&(&str, DrillFn)> = if names.iter().any(|n| n == "all") {
        DRILLS.iter().collect()
    } else {
        names
            .iter()
            .map(|n| {
                DRILLS.iter().find(|(d, _)| d == n).with_context(|| {
                    let known: Vec<_> = DRILLS.iter().map(|(d, _)| *d).collect();
                    format!("no drill named {n}; known: {}, all", known.join(", "))
                })
            })
            .collect::<anyhow::Result<_>>()?
    };
    let mut out = Vec::new();
    for (name, f) in chosen {
        let outcome = match f(o).await {
            Ok(x) => x,
            Err(e) => Outcome {
                name: (*name).to_owned(),
                figures: format!("error: {e:#}"),
                pass: false,
            },
        };
        println!("{}", outcome.line());
        out.push(outcome);
    }
    Ok(out)
}

mod client;
mod control_restart;
mod db_container_kill;
mod edge_abuse;
mod instance_kill;
mod load;
mod proxy_reload;
mod proxy_upgrade;
mod stack;

use client::*;
use control_restart::*;
use db_container_kill::*;
use edge_abuse::*;
use instance_kill::*;
use load::*;
use proxy_reload::*;
use proxy_upgrade::*;
use stack::*;

// ---------------------------------------------------------------------------------------
// What every drill reports

fn pass_fail(ok: bool, why: &str, fails: &mut Vec<String>) {
    if !ok {
        fails.push(why.to_owned());
    }
}

fn figures(t: &Tally, resent: u64) -> String {
    format!(
        "sent={} ok={} failed_idempotent={} failed_post={} ({} with a JSON error) other_4xx={} client_resent={}",
        t.sent, t.ok, t.failed_get, t.failed_post, t.failed_post_json, t.client_errors, resent
    )
}

fn finish(name: &str, mut figures: String, fails: Vec<String>, t: Option<&Tally>) -> Outcome {
    if let Some(f) = t.and_then(|t| t.first_failure.clone()) {
        if !fails.is_empty() {
            figures.push_str(&format!(" first_failure=\"{f}\""));
        }
    }
    if !fails.is_empty() {
        figures.push_str(&format!(" not_held=\"{}\"", fails.join("; ")));
    }
    Outcome {
        name: name.to_owned(),
        figures,
        pass: fails.is_empty(),
    }
}
