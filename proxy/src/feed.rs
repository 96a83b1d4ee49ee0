//! Follows control's route feed: a snapshot, then changes, for as long as the connection lasts.
//!
//! The feed is newline-delimited JSON ([`stacklab_types::routes::FeedMessage`]). When the
//! connection drops, the proxy keeps serving from the table it has and reconnects with
//! `?since=<last version>`, with a back-off from 100 ms to 5 s; control answers with the
//! changes it missed, or a fresh snapshot when it no longer has them.

use crate::body::empty;
use crate::config::FeedConfig;
use crate::Proxy;
use bytes::BytesMut;
use http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use stacklab_types::routes::{FeedMessage, SessionTouch, TouchReport};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Longest line accepted from the feed (a snapshot of many sessions is one line).
pub const MAX_FEED_LINE: usize = 256 * 1024 * 1024;

/// Follows the feed until `stop` (the proxy's shutdown, or the end of its drain after a
/// handover: a draining process keeps its table current for the requests it still serves).
pub fn spawn(proxy: Arc<Proxy>, feed: FeedConfig, stop: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let client: Client<_, crate::body::ReqBody> = Client::builder(TokioExecutor::new())
            .build(hyper_util::client::legacy::connect::HttpConnector::new());
        let mut since: Option<u64> = None;
        let mut backoff = Duration::from_millis(100);
        // Warn once per outage, not once per reconnection attempt.
        let mut was_up = true;
        loop {
            let mut connected = false;
            let result = follow(&proxy, &client, &feed, &stop, &mut since, &mut connected).await;
            proxy.metrics.feed_connected.set(0);
            if connected {
                was_up = true;
                backoff = Duration::from_millis(100);
            }
            match result {
                Ok(()) => return, // shutting down
                Err(e) if was_up => {
                    tracing::warn!(error = %e, "route feed lost; serving from the last table and reconnecting");
                    was_up = false;
                }
                Err(e) => tracing::debug!(error = %e, "route feed still unreachable"),
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = stop.cancelled() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    })
}

async fn follow(
    proxy: &Proxy,
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, crate::body::ReqBody>,
    feed: &FeedConfig,
    stop: &CancellationToken,
    since: &mut Option<u64>,
    connected: &mut bool,
) -> Result<(), String> {
    let uri = match since {
        Some(v) => format!("{}?since={v}", feed.url),
        None => feed.url.to_string(),
    };
    let req = Request::get(uri)
        .header(
            header::AUTHORIZATION,
            format!("Bearer {}", feed.token.expose()),
        )
        .body(empty())
        .map_err(|e| e.to_string())?;
    let res = client
        .request(req)
        .await
        .map_err(|e| crate::upstream::error_chain(&e))?;
    if res.status() != StatusCode::OK {
        return Err(format!("the feed answered {}", res.status()));
    }
    proxy.metrics.feed_connected.set(1);
    *connected = true;
    tracing::info!(since = ?since, "following the route feed");
    let mut body = res.into_body();
    let mut buf = BytesMut::new();
    loop {
        let frame = tokio::select! {
            f = body.frame() => f,
            () = stop.cancelled() => return Ok(()),
        };
        let Some(frame) = frame else {
            return Err("the feed ended".into());
        };
        let frame = frame.map_err(|e| e.to_string())?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        let result = apply_lines(&proxy.routing, &mut buf, since);
        if since.is_some() {
            proxy.mark_feed_synced();
        }
        result?;
    }
}

/// Applies every whole line in `buf` to the table, leaving an unfinished last line in it;
/// `since` becomes the version of the last line applied. Blank lines are keep-alives. A line
/// that is not a [`FeedMessage`], or an unfinished one longer than [`MAX_FEED_LINE`], is an
/// error (the follower drops the connection and resumes from `since`); an update the table
/// refuses is skipped. Separate from the connection so the fuzz targets in `fuzz/` drive it.
pub fn apply_lines(
    routing: &crate::table::Routing,
    buf: &mut BytesMut,
    since: &mut Option<u64>,
) -> Result<(), String> {
    while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
        let line = buf.split_to(nl + 1);
        let line = &line[..nl];
        if line.iter().all(u8::is_ascii_whitespace) {
            continue; // keep-alive
        }
        let msg: FeedMessage = serde_json::from_slice(line)
            .map_err(|e| format!("a feed line is not a route update: {e}"))?;
        let version = msg.version;
        if let Err(e) = routing.apply_versioned(msg.update, version) {
            // A change the table refuses is skipped; the next snapshot repairs any drift.
            tracing::warn!(version, error = %e, "route feed update refused");
        }
        *since = Some(version);
    }
    if buf.len() > MAX_FEED_LINE {
        return Err("a feed line is too long".into());
    }
    Ok(())
}

/// The sessions used (by a request on a `touches_session` route) after `since_ms` on the
/// proxy's clock, with how long before `now`, and the latest use among them (`since_ms` when
/// none): the next report starts from there, so a use is never reported twice.
pub fn touched_since(proxy: &Proxy, since_ms: u64, now: u64) -> (Vec<SessionTouch>, u64) {
    let table = proxy.routing.load();
    let mut newest = since_ms;
    let touches = table
        .sessions
        .values()
        .filter_map(|e| {
            let last = e.last_used_ms.load(Relaxed);
            newest = newest.max(last);
            (last > since_ms).then(|| SessionTouch {
                id: e.route.id.clone(),
                idle_ms: now.saturating_sub(last),
            })
        })
        .collect();
    (touches, newest)
}

/// Reports session use to control in batches (`POST /admin/sessions/touches` next to the
/// feed), every `sessions.report_interval`, so the request path never calls control.
/// A failed report is retried with the next batch: nothing is lost while control is away.
pub fn spawn_reporter(
    proxy: Arc<Proxy>,
    feed: FeedConfig,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let client: Client<_, crate::body::ReqBody> = Client::builder(TokioExecutor::new())
            .build(hyper_util::client::legacy::connect::HttpConnector::new());
        let url = {
            let mut parts = feed.url.clone().into_parts();
            parts.path_and_query = Some(http::uri::PathAndQuery::from_static(
                "/admin/sessions/touches",
            ));
            match http::Uri::from_parts(parts) {
                Ok(u) => u,
                Err(e) => {
                    tracing::error!(error = %e, "cannot make the session report URL");
                    return;
                }
            }
        };
        // Everything before the proxy started was reported by nobody: start from 0.
        let mut since = 0u64;
        loop {
            let interval = proxy.config.load().sessions.report_interval;
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = stop.cancelled() => return,
            }
            let now = proxy.clock.now_ms();
            // A use stored after `now` was read is in this batch too: the next one starts
            // after it (from `now` alone it would be sent again, later, with a smaller idle
            // time, and move the session's last use forward on control's clock).
            let (touches, newest) = touched_since(&proxy, since, now);
            let next_since = now.max(newest);
            if touches.is_empty() {
                since = next_since;
                continue;
            }
            let body = match serde_json::to_vec(&TouchReport { touches }) {
                Ok(b) => b,
                Err(_) => continue,
            };
            let req = Request::post(url.clone())
                .header(
                    header::AUTHORIZATION,
                    format!("Bearer {}", feed.token.expose()),
                )
                .header(header::CONTENT_TYPE, "application/json")
                .body(crate::body::full(body));
            let Ok(req) = req else { continue };
            match tokio::time::timeout(Duration::from_secs(10), client.request(req)).await {
                Ok(Ok(res)) if res.status().is_success() => since = next_since,
                Ok(Ok(res)) => {
                    tracing::debug!(status = %res.status(), "session report refused; retrying with the next batch")
                }
                Ok(Err(e)) => {
                    tracing::debug!(error = %crate::upstream::error_chain(&e), "session report failed; retrying with the next batch")
                }
                Err(_) => tracing::debug!("session report timed out; retrying with the next batch"),
            }
        }
    })
}
