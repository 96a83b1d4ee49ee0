//! Control's copy of the route table — pools, members, session routes — and the route feed
//! that proxies follow (`GET /admin/routes/feed?since=N`, newline-delimited JSON).
//!
//! Versions start at control's start time in microseconds and go up by one per change, so a
//! proxy that followed an earlier run of control asks for a version this run never had and
//! gets a snapshot, never a wrong replay. The last [`LOG_LEN`] changes are kept for resumption.

use bytes::Bytes;
use futures_util::stream;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use stacklab_proxy::body::RespBody;
use stacklab_types::routes::{FeedMessage, PoolSpec, RouteUpdate, SessionRoute};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::broadcast;

/// Changes kept for proxies that reconnect.
pub const LOG_LEN: usize = 8192;
/// An empty line this often keeps an idle feed connection alive through middleboxes.
pub const KEEPALIVE: Duration = Duration::from_secs(15);

#[derive(Debug)]
pub struct RouteState {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Arc<FeedMessage>>,
}

#[derive(Debug)]
struct Inner {
    version: u64,
    pools: BTreeMap<String, PoolSpec>,
    sessions: BTreeMap<String, SessionRoute>,
    log: VecDeque<Arc<FeedMessage>>,
}

/// Where a follower starts: what it missed, then the live changes.
pub struct Subscription {
    pub backlog: Vec<Arc<FeedMessage>>,
    pub live: broadcast::Receiver<Arc<FeedMessage>>,
}

impl RouteState {
    pub fn new(pools: Vec<PoolSpec>) -> Self {
        let version = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_micros() as u64);
        Self {
            inner: Mutex::new(Inner {
                version,
                pools: pools.into_iter().map(|p| (p.name.clone(), p)).collect(),
                sessions: BTreeMap::new(),
                log: VecDeque::new(),
            }),
            tx: broadcast::channel(LOG_LEN).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies a change and sends it to every follower; returns the new version. A change to
    /// a pool or member that does not exist is refused (`Err` with what is missing).
    pub fn publish(&self, update: RouteUpdate) -> Result<u64, String> {
        let mut inner = self.lock();
        match &update {
            RouteUpdate::Snapshot { .. } => return Err("control never publishes snapshots".into()),
            RouteUpdate::PutPool { pool } => {
                inner.pools.insert(pool.name.clone(), pool.clone());
            }
            RouteUpdate::RemovePool { name } => {
                inner
                    .pools
                    .remove(name)
                    .ok_or_else(|| format!("no pool `{name}`"))?;
            }
            RouteUpdate::PutMember { pool, member } => {
                let p = inner
                    .pools
                    .get_mut(pool)
                    .ok_or_else(|| format!("no pool `{pool}`"))?;
                match p.members.iter_mut().find(|m| m.id == member.id) {
                    Some(m) => *m = member.clone(),
                    None => p.members.push(member.clone()),
                }
            }
            RouteUpdate::RemoveMember { pool, id } => {
                let p = inner
                    .pools
                    .get_mut(pool)
                    .ok_or_else(|| format!("no pool `{pool}`"))?;
                let before = p.members.len();
                p.members.retain(|m| m.id != *id);
                if p.members.len() == before {
                    return Err(format!("no member `{id}` in pool `{pool}`"));
                }
            }
            RouteUpdate::PutSession { session } => {
                if !inner.pools.contains_key(&session.pool) {
                    return Err(format!("no pool `{}`", session.pool));
                }
                inner.sessions.insert(session.id.clone(), session.clone());
            }
            RouteUpdate::RemoveSession { id } => {
                inner.sessions.remove(id);
            }
        }
        inner.version += 1;
        let msg = Arc::new(FeedMessage {
            version: inner.version,
            update,
        });
        inner.log.push_back(Arc::clone(&msg));
        if inner.log.len() > LOG_LEN {
            inner.log.pop_front();
        }
        // Sent under the lock, so followers see changes in version order.
        let _ = self.tx.send(msg);
        Ok(inner.version)
    }

    pub fn version(&self) -> u64 {
        self.lock().version
    }

    pub fn snapshot(&self) -> FeedMessage {
        let inner = self.lock();
        snapshot_of(&inner)
    }

    pub fn pool(&self, name: &str) -> Option<PoolSpec> {
        self.lock().pools.get(name).cloned()
    }

    pub fn pools(&self) -> Vec<PoolSpec> {
        self.lock().pools.values().cloned().collect()
    }

    /// Starts following: the changes after `since` when they are all still kept, else a
    /// snapshot; then everything published after.
    pub fn subscribe(&self, since: Option<u64>) -> Subscription {
        let inner = self.lock();
        let live = self.tx.subscribe();
        let oldest_kept = inner.log.front().map_or(inner.version, |m| m.version - 1);
        let backlog = match since {
            Some(v) if v >= oldest_kept && v <= inner.version => inner
                .log
                .iter()
                .filter(|m| m.version > v)
                .cloned()
                .collect(),
            _ => vec![Arc::new(snapshot_of(&inner))],
        };
        Subscription { backlog, live }
    }

    /// The feed as an HTTP body: backlog, then changes as they come, with keep-alive lines.
    /// A follower too slow to keep up is disconnected; it resumes from where it was.
    /// `followers` counts open feeds (down again when one closes).
    pub fn feed_body(
        &self,
        since: Option<u64>,
        shutdown: tokio_util::sync::CancellationToken,
        followers: prometheus::IntGauge,
    ) -> RespBody {
        let Subscription { backlog, live } = self.subscribe(since);
        followers.inc();
        struct Follower(prometheus::IntGauge);
        impl Drop for Follower {
            fn drop(&mut self) {
                self.0.dec();
            }
        }
        let first: Vec<u8> = backlog.iter().flat_map(|m| line(m)).collect();
        struct St {
            _follower: Follower,
            first: Option<Vec<u8>>,
            live: broadcast::Receiver<Arc<FeedMessage>>,
            shutdown: tokio_util::sync::CancellationToken,
        }
        let st = St {
            _follower: Follower(followers),
            first: Some(first),
            live,
            shutdown,
        };
        let s = stream::unfold(st, |mut st| async move {
            if let Some(first) = st.first.take() {
                return Some((Ok(Frame::data(Bytes::from(first))), st));
            }
            tokio::select! {
                r = st.live.recv() => match r {
                    Ok(msg) => Some((Ok(Frame::data(Bytes::from(line(&msg)))), st)),
                    Err(_) => None,
                },
                () = tokio::time::sleep(KEEPALIVE) => Some((Ok(Frame::data(Bytes::from_static(b"\n"))), st)),
                () = st.shutdown.cancelled() => None,
            }
        });
        StreamBody::new(s).boxed_unsync()
    }
}

fn snapshot_of(inner: &Inner) -> FeedMessage {
    FeedMessage {
        version: inner.version,
        update: RouteUpdate::Snapshot {
            pools: inner.pools.values().cloned().collect(),
            sessions: inner.sessions.values().cloned().collect(),
        },
    }
}

fn line(msg: &FeedMessage) -> Vec<u8> {
    let mut v = serde_json::to_vec(msg).expect("feed messages serialize");
    v.push(b'\n');
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use stacklab_types::routes::MemberSpec;

    fn pool(name: &str) -> PoolSpec {
        PoolSpec {
            name: name.into(),
            algorithm: Default::default(),
            protocol: Default::default(),
            members: vec![],
            health: None,
        }
    }

    #[test]
    fn resumes_with_what_was_missed_else_a_snapshot() {
        let rs = RouteState::new(vec![pool("rust")]);
        let v0 = rs.version();
        let v1 = rs
            .publish(RouteUpdate::PutMember {
                pool: "rust".into(),
                member: MemberSpec {
                    id: "a".into(),
                    addr: "127.0.0.1:1".into(),
                    weight: 1,
                    draining: false,
                },
            })
            .unwrap();
        let v2 = rs
            .publish(RouteUpdate::PutSession {
                session: SessionRoute {
                    id: "c".repeat(26),
                    pool: "rust".into(),
                    member: None,
                    transport: None,
                },
            })
            .unwrap();
        assert_eq!((v1, v2), (v0 + 1, v0 + 2));
        let sub = rs.subscribe(Some(v1));
        assert_eq!(
            sub.backlog.iter().map(|m| m.version).collect::<Vec<_>>(),
            vec![v2]
        );
        assert!(rs.subscribe(Some(v2)).backlog.is_empty());
        for stale in [None, Some(1), Some(v2 + 10)] {
            let b = rs.subscribe(stale).backlog;
            assert!(matches!(b[0].update, RouteUpdate::Snapshot { .. }) && b[0].version == v2);
        }
        assert!(rs
            .publish(RouteUpdate::RemoveMember {
                pool: "rust".into(),
                id: "ghost".into()
            })
            .is_err());
        assert_eq!(
            rs.version(),
            v2,
            "a refused change does not move the version"
        );
    }
}
