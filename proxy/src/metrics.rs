//! Prometheus metrics, served at `/metrics` on the admin address.
//!
//! Label lookups in the `prometheus` crate take a read lock, so the handles a request touches
//! (per route and protocol) are resolved once, when the route table is built, and kept on the
//! route. Member health and in-flight gauges are filled in at scrape time from the live table:
//! nothing per request.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::sync::Arc;

/// Protocols, in label order.
pub const PROTOCOLS: [&str; 3] = ["h1", "h2", "h3"];
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
const LATENCY_BUCKETS: &[f64] = &[
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0, 30.0,
];

#[derive(Debug, Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub upstream_duration: HistogramVec,
    pub upstream_requests: IntCounterVec,
    pub retries: IntCounterVec,
    pub retries_denied: IntCounterVec,
    pub ejections: IntCounterVec,
    pub ejections_spared: IntCounterVec,
    pub member_healthy: IntGaugeVec,
    pub member_in_flight: IntGaugeVec,
    pub open_connections: IntGaugeVec,
    pub connections_rejected: IntCounterVec,
    pub quic_unvalidated: IntGauge,
    pub quic_retries: IntCounter,
    pub limit_hits: IntCounterVec,
    pub sessions: IntGauge,
    pub pools: IntGauge,
    pub route_table_version: IntGauge,
    pub feed_connected: IntGauge,
    pub health_events: IntCounterVec,
    pub captured_sessions: IntGauge,
    pub held_requests: IntGauge,
    pub holds: IntCounterVec,
}

/// Handles for one route, by protocol and status class.
#[derive(Debug)]
pub struct RouteMetrics {
    requests: Vec<[IntCounter; 5]>,
    duration: Vec<prometheus::Histogram>,
}

impl RouteMetrics {
    #[inline]
    pub fn record(&self, protocol: usize, status: u16, seconds: f64) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.requests[protocol][class].inc();
        self.duration[protocol].observe(seconds);
    }
}

/// Handles for one pool, resolved when the pool is built.
#[derive(Debug)]
pub struct PoolMetrics {
    pub upstream_duration: prometheus::Histogram,
    pub ok: IntCounter,
    pub server_error: IntCounter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry =
            Registry::new_custom(Some("stacklab_proxy".into()), None).expect("valid prefix");
        macro_rules! reg {
            ($m:expr) => {{
                let m = $m.expect("valid metric");
                registry
                    .register(Box::new(m.clone()))
                    .expect("metric registered once");
                m
            }};
        }
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels)
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            IntGaugeVec::new(Opts::new(name, help), labels)
        };
        let histogram = |name: &str, help: &str, labels: &[&str]| {
            HistogramVec::new(
                HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
                labels,
            )
        };
        Self {
            requests: reg!(counter(
                "requests_total",
                "Requests answered, by route, protocol and status class.",
                &["route", "protocol", "class"]
            )),
            request_duration: reg!(histogram(
                "request_duration_seconds",
                "Time from request head to response head, by route and protocol.",
                &["route", "protocol"]
            )),
            upstream_duration: reg!(histogram(
                "upstream_duration_seconds",
                "Time an upstream member took to answer, by pool.",
                &["pool"]
            )),
            upstream_requests: reg!(counter(
                "upstream_requests_total",
                "Attempts sent to upstream members, by pool and outcome.",
                &["pool", "outcome"]
            )),
            retries: reg!(counter(
                "retries_total",
                "Requests retried on another member, by pool and reason.",
                &["pool", "reason"]
            )),
            retries_denied: reg!(counter(
                "retries_denied_total",
                "Retries not made because the retry budget was spent, by pool.",
                &["pool"]
            )),
            ejections: reg!(counter(
                "ejections_total",
                "Members ejected by passive health checks, by pool.",
                &["pool"]
            )),
            ejections_spared: reg!(counter(
                "ejections_spared_total",
                "Passive ejections not made because the member was the last of its pool that could take requests, by pool.",
                &["pool"]
            )),
            member_healthy: reg!(gauge(
                "member_healthy",
                "1 when a member can take requests, else 0.",
                &["pool", "member", "state"]
            )),
            member_in_flight: reg!(gauge(
                "member_in_flight",
                "Requests in flight to a member.",
                &["pool", "member"]
            )),
            open_connections: reg!(gauge(
                "open_connections",
                "Client connections open, by listener.",
                &["listener"]
            )),
            connections_rejected: reg!(counter(
                "connections_rejected_total",
                "Client connections refused, by reason.",
                &["reason"]
            )),
            quic_unvalidated: reg!(IntGauge::new(
                "quic_unvalidated_handshakes",
                "QUIC handshakes in progress whose client address is not proven yet (limits.quic_unvalidated_handshakes)."
            )),
            quic_retries: reg!(IntCounter::new(
                "quic_retries_total",
                "New QUIC connections answered with a Retry because the budget of unproven handshakes was spent."
            )),
            limit_hits: reg!(counter(
                "limit_hits_total",
                "Requests answered by a limit, by limit.",
                &["limit"]
            )),
            sessions: reg!(IntGauge::new("sessions", "Session routes in the table.")),
            pools: reg!(IntGauge::new("pools", "Pools in the table.")),
            route_table_version: reg!(IntGauge::new(
                "route_table_version",
                "Version of the route table."
            )),
            feed_connected: reg!(IntGauge::new(
                "route_feed_connected",
                "1 while the route feed is connected."
            )),
            health_events: reg!(counter(
                "member_state_changes_total",
                "Member state changes, by pool and new state.",
                &["pool", "state"]
            )),
            captured_sessions: reg!(IntGauge::new(
                "captured_sessions",
                "Sessions with captured requests held for the inspector."
            )),
            held_requests: reg!(IntGauge::new(
                "held_requests",
                "Requests waiting for the first route table or a pool's first member (limits.max_held_requests)."
            )),
            holds: reg!(counter(
                "holds_total",
                "Requests held while what they need was starting, by reason (table, member) and outcome (served, timed_out, refused).",
                &["reason", "outcome"]
            )),
            registry,
        }
    }

    pub fn route(&self, label: &str) -> Arc<RouteMetrics> {
        Arc::new(RouteMetrics {
            requests: PROTOCOLS
                .iter()
                .map(|p| CLASSES.map(|c| self.requests.with_label_values(&[label, p, c])))
                .collect(),
            duration: PROTOCOLS
                .iter()
                .map(|p| self.request_duration.with_label_values(&[label, p]))
                .collect(),
        })
    }

    pub fn pool(&self, name: &str) -> PoolMetrics {
        PoolMetrics {
            upstream_duration: self.upstream_duration.with_label_values(&[name]),
            ok: self.upstream_requests.with_label_values(&[name, "ok"]),
            server_error: self.upstream_requests.with_label_values(&[name, "5xx"]),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}
