//! Pools, members, session routes and the route feed.
//!
//! Control owns these; proxies hold a copy. The feed (`GET /admin/routes/feed?since=N`) is
//! newline-delimited JSON: one [`FeedMessage`] per line. It starts with a `snapshot` (the whole
//! table) unless the proxy asked to resume from a version the server still remembers, in which
//! case it replays the changes after that version. Every message carries the table version it
//! produces, so a proxy that reconnects asks for exactly what it missed.

use serde::{Deserialize, Serialize};

/// How a pool picks a member for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    RoundRobin,
    WeightedRoundRobin,
    LeastInFlight,
    /// Power of two random choices, compared on peak-EWMA latency times load (the default).
    #[default]
    P2cEwma,
    /// Consistent hashing on the session id, so a session keeps its member (stickiness).
    ConsistentHash,
}

impl Algorithm {
    pub const ALL: [Algorithm; 5] = [
        Algorithm::RoundRobin,
        Algorithm::WeightedRoundRobin,
        Algorithm::LeastInFlight,
        Algorithm::P2cEwma,
        Algorithm::ConsistentHash,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::RoundRobin => "round_robin",
            Algorithm::WeightedRoundRobin => "weighted_round_robin",
            Algorithm::LeastInFlight => "least_in_flight",
            Algorithm::P2cEwma => "p2c_ewma",
            Algorithm::ConsistentHash => "consistent_hash",
        }
    }
}

/// The protocol the proxy speaks to a pool's members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 with keep-alive.
    #[default]
    Http1,
    /// HTTP/2 over cleartext, prior knowledge.
    H2c,
}

/// One upstream server of a pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberSpec {
    /// Unique within the pool; stable across restarts of the member when it can be.
    pub id: String,
    /// `host:port` of the member.
    pub addr: String,
    /// Relative share for weighted round robin (1 when omitted).
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// A draining member takes no new requests; the ones in flight finish.
    #[serde(default)]
    pub draining: bool,
}

fn default_weight() -> u32 {
    1
}

/// Active health checking of a pool's members.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSpec {
    /// Path probed with `GET`; a 2xx or 3xx answer is healthy.
    #[serde(default = "default_health_path")]
    pub path: String,
    #[serde(default = "default_health_interval_ms")]
    pub interval_ms: u64,
    #[serde(default = "default_health_timeout_ms")]
    pub timeout_ms: u64,
    /// Consecutive successes that bring a member back.
    #[serde(default = "default_rise")]
    pub rise: u32,
    /// Consecutive failures that take a member out.
    #[serde(default = "default_fall")]
    pub fall: u32,
}

fn default_health_path() -> String {
    "/healthz".to_owned()
}
fn default_health_interval_ms() -> u64 {
    2_000
}
fn default_health_timeout_ms() -> u64 {
    1_000
}
fn default_rise() -> u32 {
    2
}
fn default_fall() -> u32 {
    3
}

impl Default for HealthSpec {
    fn default() -> Self {
        Self {
            path: default_health_path(),
            interval_ms: default_health_interval_ms(),
            timeout_ms: default_health_timeout_ms(),
            rise: default_rise(),
            fall: default_fall(),
        }
    }
}

/// A pool of members that serve the same thing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSpec {
    pub name: String,
    #[serde(default)]
    pub algorithm: Algorithm,
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    #[serde(default)]
    pub members: Vec<MemberSpec>,
    /// Active checks; `None` leaves only passive ejection.
    #[serde(default)]
    pub health: Option<HealthSpec>,
}

/// Where a session's requests go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionRoute {
    /// The session's id ([`crate::session::id`] of the code its cookie carries): a proxy
    /// finds the route by hashing the cookie, so neither control nor the proxy holds codes.
    pub id: String,
    /// The pool that serves the session's API.
    pub pool: String,
    /// A member the session is pinned to while it is healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    /// The transport the session chose, which decides the edge's `Alt-Svc` on its responses.
    /// `None` (a feed from before it was carried) keeps the edge's own advertisement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<Transport>,
}

/// How a session asked to reach the edge. The browser makes the final pick: the edge can only
/// advertise HTTP/3 (`Alt-Svc: h3=…`) or withdraw it (`Alt-Svc: clear`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// TLS over TCP, HTTP/1.1 or HTTP/2: HTTP/3 is not advertised.
    Https,
    /// HTTP/3 over QUIC, advertised with `Alt-Svc`.
    H3,
}

impl Transport {
    /// The session choice's value (`"https"`, `"h3"`) as a transport.
    pub fn from_choice(value: &str) -> Option<Transport> {
        match value {
            "https" => Some(Transport::Https),
            "h3" => Some(Transport::H3),
            _ => None,
        }
    }
}

/// One change to the route table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum RouteUpdate {
    /// The whole table: everything not named here is gone.
    Snapshot {
        pools: Vec<PoolSpec>,
        sessions: Vec<SessionRoute>,
    },
    /// A pool created or replaced (members not named are removed).
    PutPool {
        pool: PoolSpec,
    },
    RemovePool {
        name: String,
    },
    /// A member added to a pool, or changed (address, weight, draining).
    PutMember {
        pool: String,
        member: MemberSpec,
    },
    RemoveMember {
        pool: String,
        id: String,
    },
    PutSession {
        session: SessionRoute,
    },
    RemoveSession {
        id: String,
    },
}

/// A line of the route feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedMessage {
    /// The table version after this update is applied.
    pub version: u64,
    #[serde(flatten)]
    pub update: RouteUpdate,
}

/// Sessions a proxy saw used since its last report (`POST /admin/sessions/touches`).
///
/// Use is reported as time since last use, so the proxy's and control's clocks need not agree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TouchReport {
    pub touches: Vec<SessionTouch>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionTouch {
    /// The session's id.
    pub id: String,
    /// Milliseconds since the proxy last saw a data request for the session.
    pub idle_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feed_lines_round_trip() {
        let msg = FeedMessage {
            version: 7,
            update: RouteUpdate::PutMember {
                pool: "rust".into(),
                member: MemberSpec {
                    id: "b1".into(),
                    addr: "127.0.0.1:4000".into(),
                    weight: 1,
                    draining: false,
                },
            },
        };
        let line = serde_json::to_string(&msg).unwrap();
        assert!(line.contains(r#""op":"put_member""#), "{line}");
        assert_eq!(serde_json::from_str::<FeedMessage>(&line).unwrap(), msg);
    }

    /// Issue 19: the session's transport rides on its route; a feed from before it parses.
    #[test]
    fn session_routes_carry_the_transport_and_old_lines_still_parse() {
        let old: SessionRoute = serde_json::from_str(r#"{"id":"c","pool":"rust"}"#).unwrap();
        assert_eq!(old.transport, None);
        let route = SessionRoute {
            id: "c".into(),
            pool: "rust".into(),
            member: None,
            transport: Some(Transport::Https),
        };
        let line = serde_json::to_string(&route).unwrap();
        assert_eq!(line, r#"{"id":"c","pool":"rust","transport":"https"}"#);
        assert_eq!(serde_json::from_str::<SessionRoute>(&line).unwrap(), route);
        assert_eq!(Transport::from_choice("h3"), Some(Transport::H3));
        assert_eq!(Transport::from_choice("quic"), None);
    }

    #[test]
    fn pool_defaults_to_p2c_ewma_over_http1() {
        let pool: PoolSpec = serde_json::from_str(r#"{"name":"p"}"#).unwrap();
        assert_eq!(pool.algorithm, Algorithm::P2cEwma);
        assert_eq!(pool.protocol, UpstreamProtocol::Http1);
        assert!(serde_json::from_str::<PoolSpec>(r#"{"name":"p","bogus":1}"#).is_err());
    }
}
