//! The route feed as well-formed messages: sequences of [`FeedMessage`]s built from fuzzed
//! values (names drawn from a few so they collide), written as feed lines with serde_json and
//! applied by the proxy's feed follower (`feed::apply_lines`), some through the admin API's
//! path (`Routing::apply`) instead, on top of the embedded config's table.
//!
//! Every line must read back as the message written. Each change is accepted exactly when the
//! table's rules say so (valid pool, valid member, valid session code, an existing pool,
//! member or session to change); a refused change leaves the table as it was; an accepted one
//! shows in the table afterwards, and the table's version is the feed's.
#![no_main]

use arbitrary::Arbitrary;
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use stacklab_proxy::config::{check_member, check_pool, Config};
use stacklab_proxy::feed;
use stacklab_proxy::metrics::Metrics;
use stacklab_proxy::table::Routing;
use stacklab_types::routes::{
    Algorithm, FeedMessage, HealthSpec, MemberSpec, PoolSpec, RouteUpdate, SessionRoute,
    UpstreamProtocol,
};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};

#[derive(Debug, Arbitrary)]
struct Step<'a> {
    version: Version,
    /// Through the admin API (`Routing::apply`) instead of the feed.
    admin: bool,
    update: Update<'a>,
}

#[derive(Debug, Arbitrary)]
enum Version {
    Next,
    Same,
    Any(u64),
}

#[derive(Debug, Arbitrary)]
enum Update<'a> {
    Snapshot {
        pools: Vec<Pool<'a>>,
        sessions: Vec<Session<'a>>,
    },
    PutPool(Pool<'a>),
    RemovePool(Name<'a>),
    PutMember(Name<'a>, Member<'a>),
    RemoveMember(Name<'a>, Name<'a>),
    PutSession(Session<'a>),
    RemoveSession(Code<'a>),
}

#[derive(Debug, Arbitrary)]
enum Name<'a> {
    Known(u8),
    Any(&'a str),
}

#[derive(Debug, Arbitrary)]
enum Code<'a> {
    Known(u8),
    Any(&'a str),
}

#[derive(Debug, Arbitrary)]
enum Addr<'a> {
    Known(u8),
    Any(&'a str),
}

#[derive(Debug, Arbitrary)]
struct Pool<'a> {
    name: Name<'a>,
    algorithm: u8,
    h2c: bool,
    members: Vec<Member<'a>>,
    health: Option<(Option<&'a str>, u64, u64, u32, u32)>,
}

#[derive(Debug, Arbitrary)]
struct Member<'a> {
    id: Name<'a>,
    addr: Addr<'a>,
    weight: u32,
    draining: bool,
}

#[derive(Debug, Arbitrary)]
struct Session<'a> {
    code: Code<'a>,
    pool: Name<'a>,
    member: Option<Name<'a>>,
}

const NAMES: [&str; 5] = ["rust", "control", "p", "b1", "bad name"];
const CODES: [&str; 4] = [
    "7K3QZ9M2XW4R8T6V1N5P0H2J3D",
    "ABCDEFGHJKMNPQRSTVWXYZ0123",
    "0123456789ABCDEF",
    "short",
];
const ADDRS: [&str; 5] = [
    "127.0.0.1:4000",
    "[::1]:4001",
    "backend.internal:80",
    "127.0.0.1",
    "not an address",
];

impl Name<'_> {
    fn get(&self) -> String {
        match self {
            Name::Known(i) => NAMES[usize::from(*i) % NAMES.len()].to_owned(),
            Name::Any(s) => (*s).to_owned(),
        }
    }
}

impl Code<'_> {
    fn get(&self) -> String {
        match self {
            // Even: the id of a code (what the table takes); odd: a code or junk, never an id.
            Code::Known(i) if i % 2 == 0 => {
                stacklab_types::session::id(CODES[usize::from(*i / 2) % CODES.len()])
            }
            Code::Known(i) => CODES[usize::from(*i / 2) % CODES.len()].to_owned(),
            Code::Any(s) => (*s).to_owned(),
        }
    }
}

impl Member<'_> {
    fn get(&self) -> MemberSpec {
        MemberSpec {
            id: self.id.get(),
            addr: match &self.addr {
                Addr::Known(i) => ADDRS[usize::from(*i) % ADDRS.len()].to_owned(),
                Addr::Any(s) => (*s).to_owned(),
            },
            // Mostly sane weights, sometimes any.
            weight: if self.weight > 2000 {
                self.weight % 4
            } else {
                self.weight
            },
            draining: self.draining,
        }
    }
}

impl Pool<'_> {
    fn get(&self) -> PoolSpec {
        PoolSpec {
            name: self.name.get(),
            algorithm: Algorithm::ALL[usize::from(self.algorithm) % Algorithm::ALL.len()],
            protocol: if self.h2c {
                UpstreamProtocol::H2c
            } else {
                UpstreamProtocol::Http1
            },
            members: self.members.iter().take(8).map(Member::get).collect(),
            health: self
                .health
                .map(|(path, interval_ms, timeout_ms, rise, fall)| HealthSpec {
                    path: path.unwrap_or("/healthz").to_owned(),
                    interval_ms,
                    timeout_ms,
                    rise,
                    fall,
                }),
        }
    }
}

impl Session<'_> {
    fn get(&self) -> SessionRoute {
        SessionRoute {
            id: self.code.get(),
            pool: self.pool.get(),
            member: self.member.as_ref().map(Name::get),
            transport: None,
        }
    }
}

impl Update<'_> {
    fn get(&self) -> RouteUpdate {
        match self {
            Update::Snapshot { pools, sessions } => RouteUpdate::Snapshot {
                pools: pools.iter().take(4).map(Pool::get).collect(),
                sessions: sessions.iter().take(8).map(Session::get).collect(),
            },
            Update::PutPool(p) => RouteUpdate::PutPool { pool: p.get() },
            Update::RemovePool(n) => RouteUpdate::RemovePool { name: n.get() },
            Update::PutMember(p, m) => RouteUpdate::PutMember {
                pool: p.get(),
                member: m.get(),
            },
            Update::RemoveMember(p, id) => RouteUpdate::RemoveMember {
                pool: p.get(),
                id: id.get(),
            },
            Update::PutSession(s) => RouteUpdate::PutSession { session: s.get() },
            Update::RemoveSession(c) => RouteUpdate::RemoveSession { id: c.get() },
        }
    }
}

fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        Config::from_toml(stacklab_proxy::DEFAULT_CONFIG, &BTreeMap::new())
            .expect("the embedded config is valid")
    })
}

/// Whether the table must take `update`, judged from outside: `None` when it cannot be told
/// (removing a pool depends on whether it came from the feed or the config).
fn should_accept(update: &RouteUpdate, pools: &BTreeMap<String, PoolSpec>) -> Option<bool> {
    let session_ok = |s: &SessionRoute, pools: &BTreeSet<String>| {
        stacklab_types::session::is_id(&s.id) && pools.contains(&s.pool)
    };
    let names: BTreeSet<String> = pools.keys().cloned().collect();
    Some(match update {
        RouteUpdate::Snapshot {
            pools: new,
            sessions,
        } => {
            let mut after: BTreeSet<String> =
                config().pools.iter().map(|p| p.name.clone()).collect();
            after.extend(new.iter().map(|p| p.name.clone()));
            new.iter().all(|p| check_pool(p).is_empty())
                && sessions.iter().all(|s| session_ok(s, &after))
        }
        RouteUpdate::PutPool { pool } => check_pool(pool).is_empty(),
        RouteUpdate::RemovePool { .. } => return None,
        RouteUpdate::PutMember { pool, member } => {
            check_member(&member.id, &member.addr, member.weight).is_ok() && names.contains(pool)
        }
        RouteUpdate::RemoveMember { pool, id } => pools
            .get(pool)
            .is_some_and(|p| p.members.iter().any(|m| &m.id == id)),
        RouteUpdate::PutSession { session } => session_ok(session, &names),
        RouteUpdate::RemoveSession { .. } => return None,
    })
}

fuzz_target!(|steps: Vec<Step>| {
    let cfg = config();
    let routing = Routing::new(Metrics::new());
    routing.set_config(&cfg.routes, &cfg.pools);
    let mut since = None;
    let mut buf = BytesMut::new();

    for step in steps.iter().take(32) {
        let before = routing.load_full();
        let pools: BTreeMap<String, PoolSpec> = before
            .pool_specs()
            .into_iter()
            .map(|p| (p.name.clone(), p))
            .collect();
        let had_session = |id: &str| before.sessions.contains_key(id);
        let update = step.update.get();
        let expected = match &update {
            RouteUpdate::RemoveSession { id } => Some(had_session(id)),
            u => should_accept(u, &pools),
        };

        let version = match step.version {
            Version::Next => before.version.saturating_add(1),
            Version::Same => before.version,
            Version::Any(v) => v,
        };
        let accepted = if step.admin {
            routing.apply(update.clone()).is_ok()
        } else {
            let msg = FeedMessage {
                version,
                update: update.clone(),
            };
            let mut line = serde_json::to_vec(&msg).expect("feed messages serialize");
            assert_eq!(
                serde_json::from_slice::<FeedMessage>(&line).expect("a written line reads back"),
                msg
            );
            line.push(b'\n');
            buf.extend_from_slice(&line);
            feed::apply_lines(&routing, &mut buf, &mut since).expect("a well-formed line");
            assert_eq!(since, Some(version));
            assert!(buf.is_empty());
            !Arc::ptr_eq(&before, &routing.load_full())
        };
        if let Some(expected) = expected {
            assert_eq!(accepted, expected, "{update:?}");
        }

        let after = routing.load_full();
        if !accepted {
            assert!(
                Arc::ptr_eq(&before, &after),
                "a refused change changed the table"
            );
            continue;
        }
        if !step.admin {
            assert_eq!(
                after.version,
                version.max(1),
                "the table's version is not the feed's"
            );
        }
        let specs: BTreeMap<String, PoolSpec> = after
            .pool_specs()
            .into_iter()
            .map(|p| (p.name.clone(), p))
            .collect();
        assert_eq!(
            specs.keys().collect::<Vec<_>>(),
            after
                .pools
                .keys()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>()
        );
        match &update {
            RouteUpdate::Snapshot { pools, sessions } => {
                let mut want: BTreeMap<String, PoolSpec> = cfg
                    .pools
                    .iter()
                    .map(|p| (p.name.clone(), p.clone()))
                    .collect();
                want.extend(pools.iter().map(|p| (p.name.clone(), p.clone())));
                assert_eq!(specs, want);
                let mut want: BTreeMap<&str, &SessionRoute> = BTreeMap::new();
                for s in sessions {
                    want.insert(&s.id, s);
                }
                assert_eq!(after.sessions.len(), want.len());
                for (code, s) in want {
                    assert_eq!(&after.sessions[code].route, s);
                }
            }
            RouteUpdate::PutPool { pool } => assert_eq!(specs.get(&pool.name), Some(pool)),
            RouteUpdate::RemovePool { name } => {
                let from_config = cfg.pools.iter().find(|p| &p.name == name);
                assert_eq!(specs.get(name), from_config);
            }
            RouteUpdate::PutMember { pool, member } => {
                let found: Vec<_> = specs[pool]
                    .members
                    .iter()
                    .filter(|m| m.id == member.id)
                    .collect();
                assert_eq!(found, [member]);
                assert_eq!(after.pools[pool].members.len(), specs[pool].members.len());
            }
            RouteUpdate::RemoveMember { pool, id } => {
                assert!(specs[pool].members.iter().all(|m| &m.id != id));
            }
            RouteUpdate::PutSession { session } => {
                assert_eq!(&after.sessions[&session.id].route, session);
            }
            RouteUpdate::RemoveSession { id } => assert!(!after.sessions.contains_key(id)),
        }
    }
});
