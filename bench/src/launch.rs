//! `stacklab-bench launch`: session launch times through the edge, as a user gets them.
//!
//! Creates `count` sessions one after another (`POST /api/sessions` over HTTPS, a new TLS
//! connection each, as a first visit would be), ends each (`DELETE /api/session`), and
//! reports wall-time percentiles and each provisioning step's median. The server's per-client
//! creation cap (`sessions.max_new_per_client_per_minute`, 20 by default) must allow `count`
//! launches a minute, or the tool waits out the window when told so (`--wait-on-429`).

use anyhow::{bail, Context};
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn call(
    tls: &Arc<rustls::ClientConfig>,
    port: u16,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    body: Option<&Value>,
) -> anyhow::Result<(u16, Option<String>, Value)> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let stream = tokio_rustls::TlsConnector::from(Arc::clone(tls))
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", format!("localhost:{port}"));
    if let Some(c) = cookie {
        req = req.header("cookie", format!("stacklab_session={c}"));
    }
    let req = match body {
        Some(b) => req
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(b.to_string())))?,
        None => req.body(Full::new(Bytes::new()))?,
    };
    let res = send.send_request(req).await?;
    let status = res.status().as_u16();
    let cookie = res
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .and_then(|v| v.strip_prefix("stacklab_session="))
        .map(str::to_owned);
    let bytes = res.into_body().collect().await?.to_bytes();
    Ok((
        status,
        cookie,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    ))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Runs the launches and returns the JSON report.
pub async fn run(
    port: u16,
    ca: &Path,
    count: usize,
    choices: Value,
    wait_on_429: bool,
) -> anyhow::Result<Value> {
    let tls = crate::tls::client_config(ca, &[b"http/1.1"]).context("the certificate to trust")?;
    let mut walls = Vec::with_capacity(count);
    let mut steps: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut done = 0;
    while done < count {
        let started = Instant::now();
        let (status, cookie, body) =
            call(&tls, port, "POST", "/api/sessions", None, Some(&choices)).await?;
        let wall = started.elapsed().as_secs_f64() * 1000.0;
        if status == 429 && wait_on_429 {
            tokio::time::sleep(Duration::from_secs(61)).await;
            continue;
        }
        if status != 201 {
            bail!("launch {} answered {status}: {body}", done + 1);
        }
        walls.push(wall);
        for s in body["steps"].as_array().into_iter().flatten() {
            if let (Some(name), Some(ms)) = (s["name"].as_str(), s["ms"].as_f64()) {
                steps.entry(name.to_owned()).or_default().push(ms);
            }
        }
        let code = cookie.context("no session cookie in the answer")?;
        let (status, _, body) =
            call(&tls, port, "DELETE", "/api/session", Some(&code), None).await?;
        if status != 200 {
            bail!("ending launch {} answered {status}: {body}", done + 1);
        }
        done += 1;
    }
    walls.sort_by(f64::total_cmp);
    let step_medians: BTreeMap<String, f64> = steps
        .into_iter()
        .map(|(k, mut v)| {
            v.sort_by(f64::total_cmp);
            (k, percentile(&v, 50.0))
        })
        .collect();
    Ok(json!({
        "choices": choices,
        "launches": count,
        "wall_ms": {"p50": percentile(&walls, 50.0), "p95": percentile(&walls, 95.0), "max": walls.last()},
        "step_p50_ms": step_medians,
    }))
}
