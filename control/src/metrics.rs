//! Control's Prometheus metrics (appended to the admin `/metrics`).

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

#[derive(Debug, Clone)]
pub struct ControlMetrics {
    registry: Registry,
    pub live: IntGauge,
    pub created: IntCounterVec,
    pub ended: IntCounterVec,
    /// Refused creations by reason: `invalid`, `unavailable`, `rate`, `capacity`, `client`
    /// (`control.max_live_per_client`); and refused re-provisions: `reprovisions`.
    pub rejected: IntCounterVec,
    pub provision_seconds: HistogramVec,
    pub teardown_failures: IntCounter,
    pub instances: IntGaugeVec,
    /// Instance exits by cause: `killed` (drill or stop) or `died` (on its own).
    pub instance_exits: IntCounterVec,
    pub feed_followers: IntGauge,
    pub bugs: IntCounter,
    /// Replacement instances that could not start (tried again with a back-off).
    pub replacement_failures: IntCounter,
    /// Runtime pools stopped for having no session ([`crate::Control::stop_idle_pools`]).
    pub pools_stopped: IntCounter,
    /// Sessions made again (`POST /api/session/reprovision`), by provisioner.
    pub reprovisioned: IntCounterVec,
    /// Sessions' resources that stopped on their own, by provisioner and role.
    pub lost: IntCounterVec,
    /// State-changing public requests refused as possibly cross-site, by reason (`origin`:
    /// an Origin not the edge's own nor allowed; `content_type`: not JSON).
    pub cross_site_refused: IntCounterVec,
    /// Sessions' drill pools live now ([`crate::drills`]).
    pub drill_pools: IntGauge,
    /// Drill requests refused, by reason (`disabled`, `not_yours`, `pools`: at
    /// `control.max_drill_pools`, `instances`: at `control.max_drill_instances`).
    pub drill_refused: IntCounterVec,
    /// Bug reports refused, by reason (`session`: at `control.max_bugs_per_session`,
    /// `total`: at `control.max_bugs`).
    pub bugs_refused: IntCounterVec,
    /// Bug reports removed after `control.bug_retention_ms`.
    pub bugs_expired: IntCounter,
    /// Event streams open now, over all sessions.
    pub streams: IntGauge,
    /// Event streams refused at `control.max_event_streams_per_session`.
    pub streams_refused: IntCounter,
    /// Sessions whose requests and cache view are being polled for their event streams: one
    /// poller per watched session, however many of its streams are open.
    pub stream_pollers: IntGauge,
    /// Connections to the backend containers' listener closed unanswered because they came
    /// from outside the backends' network (see `serve::runtime_listener`).
    pub runtime_peers_refused: IntCounter,
}

impl ControlMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let live =
            IntGauge::new("stacklab_control_sessions_live", "Live sessions.").expect("metric");
        let created = IntCounterVec::new(
            Opts::new(
                "stacklab_control_sessions_created_total",
                "Sessions created, by provisioner.",
            ),
            &["provisioner"],
        )
        .expect("metric");
        let ended = IntCounterVec::new(
            Opts::new(
                "stacklab_control_sessions_ended_total",
                "Sessions ended, by reason.",
            ),
            &["reason"],
        )
        .expect("metric");
        let rejected = IntCounterVec::new(
            Opts::new(
                "stacklab_control_sessions_rejected_total",
                "Session creations (and re-provisions) refused, by reason (invalid, unavailable, rate, capacity, client, reprovisions).",
            ),
            &["reason"],
        )
        .expect("metric");
        let provision_seconds = HistogramVec::new(
            HistogramOpts::new(
                "stacklab_control_provision_seconds",
                "Time to provision a session, by provisioner.",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["provisioner"],
        )
        .expect("metric");
        let teardown_failures = IntCounter::new(
            "stacklab_control_teardown_failures_total",
            "Teardowns that failed (retried by the reaper).",
        )
        .expect("metric");
        let instances = IntGaugeVec::new(
            Opts::new(
                "stacklab_control_instances",
                "Backend instances running, by pool.",
            ),
            &["pool"],
        )
        .expect("metric");
        let instance_exits = IntCounterVec::new(
            Opts::new(
                "stacklab_control_instance_exits_total",
                "Backend instance exits, by cause (killed, died).",
            ),
            &["cause"],
        )
        .expect("metric");
        let feed_followers = IntGauge::new(
            "stacklab_control_feed_followers",
            "Proxies following the route feed.",
        )
        .expect("metric");
        let bugs = IntCounter::new("stacklab_control_bug_reports_total", "Bug reports filed.")
            .expect("metric");
        let pools_stopped = IntCounter::new(
            "stacklab_control_runtime_pools_stopped_total",
            "Runtime pools started on demand and stopped after their last session.",
        )
        .expect("metric");
        let replacement_failures = IntCounter::new(
            "stacklab_control_instance_replacement_failures_total",
            "Replacement backend instances that could not start (each is tried again).",
        )
        .expect("metric");
        let reprovisioned = IntCounterVec::new(
            Opts::new(
                "stacklab_control_sessions_reprovisioned_total",
                "Sessions whose stack was made again, by provisioner.",
            ),
            &["provisioner"],
        )
        .expect("metric");
        let lost = IntCounterVec::new(
            Opts::new(
                "stacklab_control_resources_lost_total",
                "Sessions' resources (containers) that stopped on their own, by provisioner and role.",
            ),
            &["provisioner", "role"],
        )
        .expect("metric");
        let cross_site_refused = IntCounterVec::new(
            Opts::new(
                "stacklab_control_cross_site_refused_total",
                "State-changing public requests refused as possibly cross-site, by reason (origin, content_type).",
            ),
            &["reason"],
        )
        .expect("metric");
        let drill_pools = IntGauge::new(
            "stacklab_control_drill_pools",
            "Sessions' drill pools (instances started for one session's failover drill).",
        )
        .expect("metric");
        let drill_refused = IntCounterVec::new(
            Opts::new(
                "stacklab_control_drill_refusals_total",
                "Drill requests refused, by reason (disabled, not_yours, pools, instances).",
            ),
            &["reason"],
        )
        .expect("metric");
        let bugs_refused = IntCounterVec::new(
            Opts::new(
                "stacklab_control_bug_reports_refused_total",
                "Bug reports refused, by reason (session, total).",
            ),
            &["reason"],
        )
        .expect("metric");
        let bugs_expired = IntCounter::new(
            "stacklab_control_bug_reports_expired_total",
            "Bug reports removed after control.bug_retention_ms.",
        )
        .expect("metric");
        let streams = IntGauge::new(
            "stacklab_control_event_streams",
            "Sessions' event streams (GET /api/session/events) open now.",
        )
        .expect("metric");
        let stream_pollers = IntGauge::new(
            "stacklab_control_event_stream_pollers",
            "Sessions watched now: one poller of captured requests and the cache view per session with an open event stream.",
        )
        .expect("metric");
        let streams_refused = IntCounter::new(
            "stacklab_control_event_streams_refused_total",
            "Event streams refused at control.max_event_streams_per_session.",
        )
        .expect("metric");
        let runtime_peers_refused = IntCounter::new(
            "stacklab_control_runtime_listener_refused_total",
            "Connections to the backend containers' listener from outside the backends' network, closed unanswered.",
        )
        .expect("metric");
        for c in [
            Box::new(live.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(created.clone()),
            Box::new(ended.clone()),
            Box::new(rejected.clone()),
            Box::new(provision_seconds.clone()),
            Box::new(teardown_failures.clone()),
            Box::new(instances.clone()),
            Box::new(instance_exits.clone()),
            Box::new(feed_followers.clone()),
            Box::new(bugs.clone()),
            Box::new(reprovisioned.clone()),
            Box::new(replacement_failures.clone()),
            Box::new(pools_stopped.clone()),
            Box::new(lost.clone()),
            Box::new(cross_site_refused.clone()),
            Box::new(drill_pools.clone()),
            Box::new(drill_refused.clone()),
            Box::new(bugs_refused.clone()),
            Box::new(bugs_expired.clone()),
            Box::new(streams.clone()),
            Box::new(streams_refused.clone()),
            Box::new(stream_pollers.clone()),
            Box::new(runtime_peers_refused.clone()),
        ] {
            registry.register(c).expect("unique metric names");
        }
        Self {
            registry,
            live,
            created,
            ended,
            rejected,
            provision_seconds,
            teardown_failures,
            instances,
            instance_exits,
            feed_followers,
            bugs,
            replacement_failures,
            pools_stopped,
            reprovisioned,
            lost,
            cross_site_refused,
            drill_pools,
            drill_refused,
            bugs_refused,
            bugs_expired,
            streams,
            streams_refused,
            stream_pollers,
            runtime_peers_refused,
        }
    }

    pub fn encode(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for ControlMetrics {
    fn default() -> Self {
        Self::new()
    }
}
