//! The route table: routes from config, pools (from config, the admin API and the route feed)
//! and session routes — swapped whole on every change.
//!
//! Readers (`Routing::load`) take an `arc-swap` guard: no lock, no reference-count traffic on
//! the hot path. Writers (the admin API, the feed follower, a reload) serialize on one mutex,
//! build the next table from the current one and store it. Sessions sit in an `imbl` hash map,
//! so adding one to a table of 100k copies a few tree nodes, not the table.

use crate::config::{check_member, check_pool, RouteConfig, RouteTarget};
use crate::metrics::{Metrics, RouteMetrics};
use crate::pool::Pool;
use arc_swap::{ArcSwap, Guard};
use stacklab_types::routes::{PoolSpec, RouteUpdate, SessionRoute};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// A compiled route.
#[derive(Debug)]
pub struct Route {
    pub cfg: RouteConfig,
    /// `host path` as shown in metrics and logs.
    pub label: String,
    /// The pool for `RouteTarget::Pool`, resolved when the table was built.
    pub pool: Option<Arc<Pool>>,
    pub metrics: Arc<RouteMetrics>,
}

/// A session's route and when it was last used (clock millis), updated lock-free per request.
#[derive(Debug)]
pub struct SessionEntry {
    pub route: SessionRoute,
    pub last_used_ms: AtomicU64,
}

#[derive(Debug, Default)]
pub struct Table {
    pub version: u64,
    pub routes: Vec<Route>,
    pub pools: HashMap<String, Arc<Pool>>,
    /// Session routes by session id (never by code: see [`stacklab_types::session`]).
    pub sessions: imbl::HashMap<String, Arc<SessionEntry>>,
    /// Pools as the config file defines them.
    config_pools: BTreeMap<String, PoolSpec>,
    /// Pools set through the admin API or the feed; they win over config pools of the same name.
    dynamic_pools: BTreeMap<String, PoolSpec>,
    route_configs: Vec<RouteConfig>,
}

impl Table {
    /// Finds the route for a request: host first (exact, then `*.suffix`, then any), then the
    /// longest matching path prefix, then the method.
    pub fn route(&self, host: &str, path: &str, method: &http::Method) -> Option<&Route> {
        let mut best: Option<(&Route, (u8, usize))> = None;
        for r in &self.routes {
            let host_rank = match &r.cfg.host {
                None => 0,
                Some(h) if h == host => 2,
                Some(h) if h.starts_with("*.") && host.ends_with(&h[1..]) => 1,
                Some(_) => continue,
            };
            if !path_matches(&r.cfg.path, path)
                || !(r.cfg.methods.is_empty() || r.cfg.methods.contains(method))
            {
                continue;
            }
            let rank = (host_rank, r.cfg.path.len());
            if best.is_none_or(|(_, b)| rank > b) {
                best = Some((r, rank));
            }
        }
        best.map(|(r, _)| r)
    }

    pub fn pool_specs(&self) -> Vec<PoolSpec> {
        let mut all = self.config_pools.clone();
        all.extend(
            self.dynamic_pools
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        all.into_values().collect()
    }

    pub fn session_routes(&self) -> Vec<SessionRoute> {
        self.sessions.values().map(|s| s.route.clone()).collect()
    }
}

/// Path prefixes match on segment boundaries: `/api` matches `/api`, `/api/` and `/api/x`,
/// but not `/apix`; a prefix ending in `/` matches everything under it.
pub fn path_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        None => false,
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
    }
}

/// Why an update was refused.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    #[error("no pool named `{0}`")]
    NoPool(String),
    #[error("pool `{pool}` has no member `{id}`")]
    NoMember { pool: String, id: String },
    /// The code is kept for callers, never printed: it is the session's cookie.
    #[error("no such session")]
    NoSession(String),
}

/// Owns the current table and applies changes to it.
#[derive(Debug)]
pub struct Routing {
    current: ArcSwap<Table>,
    write: Mutex<()>,
    metrics: Metrics,
    changed: watch::Sender<u64>,
}

impl Routing {
    pub fn new(metrics: Metrics) -> Self {
        Self {
            current: ArcSwap::from_pointee(Table::default()),
            write: Mutex::new(()),
            metrics,
            changed: watch::channel(0).0,
        }
    }

    #[inline]
    pub fn load(&self) -> Guard<Arc<Table>> {
        self.current.load()
    }

    pub fn load_full(&self) -> Arc<Table> {
        self.current.load_full()
    }

    /// Notified with the version after every change (health checkers follow it).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Installs the routes and pools of a (re)loaded config; dynamic pools and sessions stay.
    pub fn set_config(&self, routes: &[RouteConfig], pools: &[PoolSpec]) {
        self.modify(|next| {
            next.route_configs = routes.to_vec();
            next.config_pools = pools.iter().map(|p| (p.name.clone(), p.clone())).collect();
            Ok(())
        })
        .expect("config was validated");
    }

    /// Applies one change (admin API or feed). Invalid changes leave the table as it was.
    pub fn apply(&self, update: RouteUpdate) -> Result<u64, UpdateError> {
        self.modify(|next| apply_update(next, update))
    }

    /// Applies a change and sets the table version to the feed's version.
    pub fn apply_versioned(&self, update: RouteUpdate, version: u64) -> Result<u64, UpdateError> {
        self.modify(|next| {
            apply_update(next, update)?;
            next.version = version.saturating_sub(1);
            Ok(())
        })
    }

    fn modify(
        &self,
        change: impl FnOnce(&mut Draft) -> Result<(), UpdateError>,
    ) -> Result<u64, UpdateError> {
        let _writer = self.write.lock().unwrap_or_else(|e| e.into_inner());
        let cur = self.current.load_full();
        let mut draft = Draft {
            version: cur.version,
            route_configs: cur.route_configs.clone(),
            config_pools: cur.config_pools.clone(),
            dynamic_pools: cur.dynamic_pools.clone(),
            sessions: cur.sessions.clone(),
        };
        change(&mut draft)?;
        // Saturating: the feed sets the version, and a feed at u64::MAX must not wrap the
        // table back to 0 (or panic) on the next admin change.
        let version = draft.version.saturating_add(1);
        let next = self.build(&cur, draft, version);
        self.current.store(Arc::new(next));
        self.changed.send_replace(version);
        Ok(version)
    }

    fn build(&self, cur: &Table, draft: Draft, version: u64) -> Table {
        let mut specs = draft.config_pools.clone();
        specs.extend(
            draft
                .dynamic_pools
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        let pools: HashMap<String, Arc<Pool>> = specs
            .into_iter()
            .map(|(name, spec)| {
                let prev = cur.pools.get(&name);
                let pool = match prev {
                    Some(p) if p.spec == spec => Arc::clone(p),
                    _ => Arc::new(Pool::build(spec, prev.map(|p| &**p), &self.metrics)),
                };
                (name, pool)
            })
            .collect();
        let routes = draft
            .route_configs
            .iter()
            .map(|cfg| {
                let label = format!("{}{}", cfg.host.as_deref().unwrap_or(""), cfg.path);
                let pool = match &cfg.target {
                    RouteTarget::Pool(name) => pools.get(name).cloned(),
                    _ => None,
                };
                Route {
                    metrics: self.metrics.route(&label),
                    cfg: cfg.clone(),
                    label,
                    pool,
                }
            })
            .collect();
        Table {
            version,
            routes,
            pools,
            sessions: draft.sessions,
            config_pools: draft.config_pools,
            dynamic_pools: draft.dynamic_pools,
            route_configs: draft.route_configs,
        }
    }
}

/// The parts of a table a change edits; the rest is derived in `build`.
struct Draft {
    version: u64,
    route_configs: Vec<RouteConfig>,
    config_pools: BTreeMap<String, PoolSpec>,
    dynamic_pools: BTreeMap<String, PoolSpec>,
    sessions: imbl::HashMap<String, Arc<SessionEntry>>,
}

impl Draft {
    fn pool_mut(&mut self, name: &str) -> Result<&mut PoolSpec, UpdateError> {
        if !self.dynamic_pools.contains_key(name) {
            let spec = self
                .config_pools
                .get(name)
                .cloned()
                .ok_or_else(|| UpdateError::NoPool(name.to_owned()))?;
            self.dynamic_pools.insert(name.to_owned(), spec);
        }
        Ok(self.dynamic_pools.get_mut(name).expect("inserted above"))
    }

    fn has_pool(&self, name: &str) -> bool {
        self.dynamic_pools.contains_key(name) || self.config_pools.contains_key(name)
    }
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> UpdateError {
    UpdateError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

fn check_session(s: &SessionRoute, draft: &Draft) -> Result<(), UpdateError> {
    if !stacklab_types::session::is_id(&s.id) {
        return Err(invalid(
            "id",
            "a session id is 26 lowercase hex digits (stacklab_types::session::id of the code)",
        ));
    }
    if !draft.has_pool(&s.pool) {
        return Err(UpdateError::NoPool(s.pool.clone()));
    }
    Ok(())
}

fn apply_update(next: &mut Draft, update: RouteUpdate) -> Result<(), UpdateError> {
    match update {
        RouteUpdate::Snapshot { pools, sessions } => {
            let mut dynamic = BTreeMap::new();
            for pool in pools {
                if let Some(e) = check_pool(&pool).into_iter().next() {
                    return Err(invalid(
                        format!("pools.{}.{}", pool.name, e.path),
                        e.message,
                    ));
                }
                dynamic.insert(pool.name.clone(), pool);
            }
            next.dynamic_pools = dynamic;
            let old = std::mem::take(&mut next.sessions);
            for s in sessions {
                check_session(&s, next)?;
                let last = old.get(&s.id).map_or(0, |e| e.last_used_ms.load(Relaxed));
                next.sessions.insert(
                    s.id.clone(),
                    Arc::new(SessionEntry {
                        route: s,
                        last_used_ms: AtomicU64::new(last),
                    }),
                );
            }
        }
        RouteUpdate::PutPool { pool } => {
            if let Some(e) = check_pool(&pool).into_iter().next() {
                return Err(invalid(e.path, e.message));
            }
            next.dynamic_pools.insert(pool.name.clone(), pool);
        }
        RouteUpdate::RemovePool { name } => {
            if next.dynamic_pools.remove(&name).is_none() {
                return Err(UpdateError::NoPool(name));
            }
        }
        RouteUpdate::PutMember { pool, member } => {
            check_member(&member.id, &member.addr, member.weight)
                .map_err(|e| invalid(format!("member.{}", e.path), e.message))?;
            let spec = next.pool_mut(&pool)?;
            match spec.members.iter_mut().find(|m| m.id == member.id) {
                Some(m) => *m = member,
                None => spec.members.push(member),
            }
        }
        RouteUpdate::RemoveMember { pool, id } => {
            let spec = next.pool_mut(&pool)?;
            let before = spec.members.len();
            spec.members.retain(|m| m.id != id);
            if spec.members.len() == before {
                return Err(UpdateError::NoMember { pool, id });
            }
        }
        RouteUpdate::PutSession { session } => {
            check_session(&session, next)?;
            let last = next
                .sessions
                .get(&session.id)
                .map_or(0, |e| e.last_used_ms.load(Relaxed));
            next.sessions.insert(
                session.id.clone(),
                Arc::new(SessionEntry {
                    route: session,
                    last_used_ms: AtomicU64::new(last),
                }),
            );
        }
        RouteUpdate::RemoveSession { id } => {
            if next.sessions.remove(&id).is_none() {
                return Err(UpdateError::NoSession(id));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use stacklab_types::routes::MemberSpec;

    fn route(host: Option<&str>, path: &str, methods: &[http::Method], pool: &str) -> RouteConfig {
        RouteConfig {
            host: host.map(str::to_owned),
            path: path.into(),
            methods: methods.to_vec(),
            target: RouteTarget::Pool(pool.into()),
            require_session: false,
            touches_session: false,
            captures: false,
        }
    }

    fn pool(name: &str) -> PoolSpec {
        PoolSpec {
            name: name.into(),
            algorithm: Default::default(),
            protocol: Default::default(),
            members: vec![MemberSpec {
                id: "a".into(),
                addr: "127.0.0.1:1".into(),
                weight: 1,
                draining: false,
            }],
            health: None,
        }
    }

    #[test]
    fn prefixes_match_on_segments() {
        assert!(path_matches("/api", "/api"));
        assert!(path_matches("/api", "/api/users"));
        assert!(!path_matches("/api", "/apix"));
        assert!(path_matches("/api/", "/api/x"));
        assert!(!path_matches("/api/session", "/api/sessions"));
        assert!(path_matches("/", "/anything"));
    }

    #[test]
    fn longest_prefix_then_host_then_method_wins() {
        let routing = Routing::new(Metrics::new());
        let pools: Vec<_> = ["a", "b", "c", "d"].into_iter().map(pool).collect();
        routing.set_config(
            &[
                route(None, "/", &[], "a"),
                route(None, "/api/", &[], "b"),
                route(None, "/api/sessions", &[http::Method::POST], "c"),
                route(Some("*.example.com"), "/", &[], "d"),
            ],
            &pools,
        );
        let t = routing.load();
        let name = |host, path, m: http::Method| {
            t.route(host, path, &m)
                .unwrap()
                .pool
                .as_ref()
                .unwrap()
                .name()
                .to_owned()
        };
        assert_eq!(name("localhost", "/x", http::Method::GET), "a");
        assert_eq!(name("localhost", "/api/users", http::Method::GET), "b");
        assert_eq!(name("localhost", "/api/sessions", http::Method::POST), "c");
        assert_eq!(name("localhost", "/api/sessions", http::Method::GET), "b");
        assert_eq!(
            name("www.example.com", "/api/users", http::Method::GET),
            "d"
        );
    }

    #[test]
    fn invalid_updates_change_nothing() {
        let routing = Routing::new(Metrics::new());
        routing
            .apply(RouteUpdate::PutPool { pool: pool("p") })
            .unwrap();
        let v = routing.load().version;
        let bad = RouteUpdate::PutMember {
            pool: "p".into(),
            member: MemberSpec {
                id: "b".into(),
                addr: "not an address".into(),
                weight: 1,
                draining: false,
            },
        };
        assert!(matches!(
            routing.apply(bad),
            Err(UpdateError::Invalid { .. })
        ));
        let session = SessionRoute {
            id: stacklab_types::session::id("ABCDEFGHJKMNPQRSTVWXYZ0123"),
            pool: "nope".into(),
            member: None,
            transport: None,
        };
        assert!(matches!(
            routing.apply(RouteUpdate::PutSession { session }),
            Err(UpdateError::NoPool(_))
        ));
        assert_eq!(routing.load().version, v);
        assert_eq!(routing.load().pools["p"].members.len(), 1);
    }

    /// Found by `fuzz/` (feed_structured): a feed line at version u64::MAX, then a change
    /// through the admin API, overflowed the version (a panic in debug builds, back to 0 in
    /// release ones).
    #[test]
    fn the_version_does_not_wrap_after_the_feed_sets_the_highest() {
        let routing = Routing::new(Metrics::new());
        routing
            .apply_versioned(RouteUpdate::PutPool { pool: pool("p") }, u64::MAX)
            .unwrap();
        assert_eq!(routing.load().version, u64::MAX);
        let v = routing
            .apply(RouteUpdate::PutPool { pool: pool("q") })
            .unwrap();
        assert_eq!(v, u64::MAX);
        assert_eq!(routing.load().version, u64::MAX);
        assert!(routing.load().pools.contains_key("q"));
    }

    #[test]
    fn snapshot_replaces_dynamic_state_and_keeps_config_pools() {
        let routing = Routing::new(Metrics::new());
        routing.set_config(&[], &[pool("config")]);
        routing
            .apply(RouteUpdate::PutPool { pool: pool("old") })
            .unwrap();
        routing
            .apply(RouteUpdate::Snapshot {
                pools: vec![pool("new")],
                sessions: vec![SessionRoute {
                    id: stacklab_types::session::id("ABCDEFGHJKMNPQRSTVWXYZ0123"),
                    pool: "new".into(),
                    member: None,
                    transport: None,
                }],
            })
            .unwrap();
        let t = routing.load();
        let mut names: Vec<_> = t.pools.keys().cloned().collect();
        names.sort();
        assert_eq!(names, ["config", "new"]);
        assert_eq!(t.sessions.len(), 1);
    }
}
