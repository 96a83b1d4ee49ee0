//! `shared`: a database and a keyspace of the session's own on servers named in `[shared]`.
//!
//! Every name made here is `s<instance>_<id>` (`Shared::engine_name`; `s_<id>` with no
//! `shared.instance`), so teardown and the search for leftovers work from the session id
//! alone, and only this instance's names are ever taken for leftovers. An id is checked before
//! it goes anywhere near DDL ([`is_id`]: 26 lower-case hex digits, so `s_<id>` is a plain
//! identifier that needs no quoting on any engine); anything else is refused.
//!
//! # What a session gets
//! | engine | made for the session | what keeps other sessions out |
//! |---|---|---|
//! | PostgreSQL | role `s_<id>` (LOGIN, its own password) owning database `s_<id>` | `REVOKE ALL ON DATABASE … FROM PUBLIC`: no other role may connect to it |
//! | MySQL / MariaDB | database `s_<id>`, user `'s_<id>'@'%'` and `@'localhost'` | `GRANT ALL ON \`s\_<id>\`.*` only (the `_` escaped, as it is a wildcard in grants) |
//! | MongoDB | user `s_<id>` in database `s_<id>`, role `readWrite` on it alone | MongoDB's own authorization; the URL has `authSource=s_<id>` |
//! | Redis | ACL user `s_<id>`, keys `s_<id>:*` only, and only the commands in [`REDIS_COMMANDS`] | key patterns: another prefix answers `NOPERM` |
//! | Memcached | key prefix `s_<id>:` | nothing: Memcached has no accounts, the session is told so |
//! | SQLite, in-process cache | as `embedded` does it (a file under the data dir) | the file is the session's |
//!
//! Readiness is a real query with the session's own credentials (`SELECT 1`, a `ping` and a
//! write and read, `SET`/`GET` of a key under the prefix), never an open port.
//!
//! # Failure and teardown
//! A step that fails undoes what this call made before the error is returned (control also
//! calls [`Provisioner::teardown`], which is idempotent). Teardown does not know which engines
//! a session used, so it removes `s_<id>` from every configured server, concurrently, with
//! `IF EXISTS` everywhere. Memcached keys are removed best-effort: they can only be found
//! through `lru_crawler metadump`, and keys it cannot list expire by their TTL.
//!
//! # Secrets
//! The admin URLs stay [`Secret`]s and are opened only where a connection is built. Driver
//! errors are reduced to the server's own message, then scrubbed ([`crate::redact_url`] and
//! every known password removed) before they become an error, a step detail or a log line.
//! Statements that carry a new account's password are not logged by sqlx, and on PostgreSQL
//! and MariaDB/MySQL the admin session asks the server not to log them either (only a
//! superuser may; others keep the server's settings).
//!
//! # Layout
//! - This file: [`Shared`] and its [`Provisioner`] impl (what is offered, provision, teardown,
//!   leftovers), and what every engine uses: its configured URL ([`Server`]) and that URL's
//!   parts without credentials, scrubbing, steps with a timeout, administrator connections
//!   (one way to open them for PostgreSQL and MySQL/MariaDB).
//! - One file per engine, each with its `make_*` (with its readiness check), `remove_*` and
//!   `names_*`: `postgres.rs`, `mysql.rs`, `mongo.rs`, `redis.rs`, and `memcached.rs` (with the
//!   Memcached text protocol for teardown).

mod memcached;
mod mongo;
mod mysql;
mod postgres;
mod redis;

use super::embedded::{make_sqlite, remove_sqlite, sqlite_ids};
use super::{cache_spec, ProvisionError, ProvisionRequest, Provisioned, Provisioner, Steps};
use crate::config::SharedConfig;
use async_trait::async_trait;
use sqlx::{Connection, Executor};
use stacklab_types::stack::{CacheEngine, CacheSpec, DatabaseEngine, DatabaseSpec};
use stacklab_types::Secret;
use std::collections::BTreeSet;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::{OnceCell, Semaphore, SemaphorePermit};

/// How long one step (connecting included) may take before it counts as failed.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(20);
/// Administrator connections open at once per SQL server (provisioning, teardown and the
/// search for leftovers together); more wait their turn.
pub const ADMIN_CONNECTIONS: usize = 4;
/// The commands a session's Redis ACL user may run: exactly what the backend's Redis cache
/// sends with `shared = true` (`GET`, `SET … PX`, `DEL`, `SCAN MATCH`, `UNLINK`, and for the
/// cache view `OBJECT IDLETIME`, `PTTL`, `MEMORY USAGE`, `STRLEN`, `GETRANGE`, `INFO`), plus
/// `PING`. Everything else is refused with `NOPERM`: no `KEYS`, `FLUSHALL`, `CONFIG` (whose
/// `GET requirepass` would show the server's password), `SELECT`, scripting or pub/sub. The
/// backend reads a refused `CONFIG GET` as "may not run CONFIG" and carries on. `SCAN` is not a
/// key command, so Redis returns every key's *name* to it (the backend filters by prefix);
/// values of other prefixes stay out of reach.
pub const REDIS_COMMANDS: &[&str] = &[
    "get",
    "set",
    "del",
    "unlink",
    "scan",
    "pttl",
    "strlen",
    "getrange",
    "object|idletime",
    "memory|usage",
    "info",
    "ping",
];
/// Hosts each MySQL/MariaDB session user is created for: `%` for every TCP client, and
/// `localhost`, because on a server that still has anonymous accounts (`''@'localhost'`) a
/// loopback login would match the anonymous account before `'s_…'@'%'` and be refused.
const MYSQL_HOSTS: &[&str] = &["%", "localhost"];
/// Lines of `lru_crawler metadump` teardown reads at most (items of the whole server).
pub const MEMCACHED_DUMP_BUDGET: usize = 1_000_000;
/// Longest Memcached protocol line read (keys are URL-encoded in a metadump).
const MEMCACHED_MAX_LINE: u64 = 4096;
/// Only one crawl runs at a time on a Memcached server; another waits this long, this often.
const MEMCACHED_BUSY_WAIT: Duration = Duration::from_millis(100);
const MEMCACHED_BUSY_RETRIES: usize = 50;
/// Deletes sent per round trip when Memcached keys are removed.
const MEMCACHED_DELETE_BATCH: usize = 100;
/// Keys removed per `UNLINK` when a Redis prefix is emptied, and the `SCAN` count hint.
const REDIS_BATCH: usize = 500;

const NOTE_MEMCACHED: &str = "Memcached has no per-session isolation: it has no accounts, so \
    only the key prefix s_<id>: keeps this session's keys apart from other sessions' on the \
    same server, and their items compete for the same memory.";

/// The `shared` provisioner.
pub struct Shared {
    cfg: SharedConfig,
    files: PathBuf,
    /// Every password found in the configured URLs, removed from any text we pass on.
    secrets: Vec<String>,
    pg_slots: Semaphore,
    mysql_slots: Semaphore,
    /// MongoDB's client is a pool of its own, made on first use.
    mongo: OnceCell<mongodb::Client>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = |u: &Option<Secret>| u.as_ref().map(|u| Parts::of(u.expose()).endpoint());
        f.debug_struct("Shared")
            .field("postgres", &at(&self.cfg.postgres_url))
            .field("mysql", &at(&self.cfg.mysql_url))
            .field("mongodb", &at(&self.cfg.mongodb_url))
            .field("redis", &at(&self.cfg.redis_url))
            .field("memcached", &self.cfg.memcached_addr)
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub fn new(cfg: SharedConfig, files: PathBuf) -> Self {
        let secrets = [
            &cfg.postgres_url,
            &cfg.mysql_url,
            &cfg.mongodb_url,
            &cfg.redis_url,
        ]
        .into_iter()
        .flatten()
        .flat_map(|u| url_passwords(u.expose()))
        .collect();
        Self {
            cfg,
            files,
            secrets,
            pg_slots: Semaphore::new(ADMIN_CONNECTIONS),
            mysql_slots: Semaphore::new(ADMIN_CONNECTIONS),
            mongo: OnceCell::new(),
        }
    }

    /// Database, role, user and key-prefix name of a session: `s<instance>_<id>`.
    fn engine_name(&self, id: &str) -> String {
        format!("s{}_{id}", self.cfg.instance)
    }

    /// `text` with credentials in URLs and every known password replaced.
    fn scrub(&self, text: &str, extra: &str) -> String {
        let mut out = crate::redact_url(text);
        for s in self.secrets.iter().map(String::as_str).chain([extra]) {
            if !s.is_empty() {
                out = out.replace(s, "[redacted]");
            }
        }
        out
    }

    /// Runs one step with [`STEP_TIMEOUT`], turning its error text into a scrubbed
    /// [`ProvisionError`] on `field`. `secret` is a password the step handles.
    async fn step<T>(
        &self,
        steps: &Steps,
        field: Option<&'static str>,
        name: &str,
        detail: &str,
        secret: &str,
        work: impl Future<Output = Result<T, String>>,
    ) -> Result<T, ProvisionError> {
        steps
            .run(name, detail, async {
                match tokio::time::timeout(STEP_TIMEOUT, work).await {
                    Ok(Ok(v)) => Ok(v),
                    Ok(Err(msg)) => Err(ProvisionError::new(field, self.scrub(&msg, secret))),
                    Err(_) => Err(ProvisionError::new(
                        field,
                        format!(
                            "{name}: no answer within {} s; is the server up and reachable?",
                            STEP_TIMEOUT.as_secs()
                        ),
                    )),
                }
            })
            .await
    }
}

/// The outcome of undoing part of a failed provisioning: already in the steps; a failure is
/// also logged, and control's teardown tries again.
fn undone(result: Result<(), ProvisionError>) {
    if let Err(e) = result {
        tracing::warn!(error = %e.message, "undoing a failed provisioning left something behind; teardown retries");
    }
}

// ---------------------------------------------------------------------------------------------
// Codes, URLs, error texts
// ---------------------------------------------------------------------------------------------

pub use stacklab_types::session::is_id;

/// The id in an engine name `s<instance>_<id>`, if it is one of `instance`'s.
fn id_of(instance: &str, name: &str) -> Option<String> {
    name.strip_prefix('s')?
        .strip_prefix(instance)?
        .strip_prefix('_')
        .filter(|c| is_id(c))
        .map(str::to_owned)
}

fn bad_id() -> ProvisionError {
    ProvisionError::new(
        None,
        "not a session id (26 lower-case hex digits): nothing was made or removed",
    )
}

/// A connection URL without its credentials: `scheme://[user:pw@]hosts[/path][?query]`.
#[derive(Debug, Clone, Default)]
struct Parts {
    scheme: String,
    /// `host:port`, or several for MongoDB.
    hosts: String,
    /// With its leading `/`, or empty.
    path: String,
    /// `key=value` pairs as written, credentials (`user`, `password`, `authSource`, …) left out.
    query: Vec<String>,
}

/// Query keys that name or carry credentials: never copied into a session's URL.
const CREDENTIAL_KEYS: &[&str] = &[
    "user",
    "username",
    "password",
    "pass",
    "dbname",
    "authsource",
    "authmechanism",
    "authmechanismproperties",
];

impl Parts {
    fn of(url: &str) -> Self {
        let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
        let rest = rest.split('#').next().unwrap_or_default();
        // The credentials end at the last `@` before the query (a password may hold a `/`).
        let q = rest.find('?').unwrap_or(rest.len());
        let rest = rest[..q].rfind('@').map_or(rest, |at| &rest[at + 1..]);
        let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (hosts, path) = match before_query.find('/') {
            Some(i) => (&before_query[..i], &before_query[i..]),
            None => (before_query, ""),
        };
        Self {
            scheme: scheme.to_owned(),
            hosts: hosts.to_owned(),
            path: path.to_owned(),
            query: query
                .split('&')
                .filter(|kv| !kv.is_empty())
                .filter(|kv| {
                    let key = kv
                        .split('=')
                        .next()
                        .unwrap_or_default()
                        .to_ascii_lowercase();
                    !CREDENTIAL_KEYS.contains(&key.as_str())
                })
                .map(str::to_owned)
                .collect(),
        }
    }

    /// Where the server is, for messages and `resources`.
    fn endpoint(&self) -> String {
        if self.hosts.is_empty() {
            "the local socket".to_owned()
        } else {
            self.hosts.clone()
        }
    }

    /// The same server reached as `user` with `password`, at `path`, plus `extra` options.
    fn with_login(
        &self,
        scheme: &str,
        user: &str,
        password: &str,
        path: &str,
        extra: &[String],
    ) -> String {
        let query: Vec<&str> = self.query.iter().chain(extra).map(String::as_str).collect();
        let mut url = format!("{scheme}://{user}:{password}@{}{path}", self.hosts);
        if !query.is_empty() {
            url.push('?');
            url.push_str(&query.join("&"));
        }
        url
    }
}

/// A server named by a URL in `[shared]` (Memcached has an address instead: `memcached.rs`).
#[derive(Debug, Clone, Copy)]
enum Server {
    Postgres,
    Mysql,
    Mongodb,
    Redis,
}

impl Server {
    /// Its name in messages and logs.
    fn what(self) -> &'static str {
        match self {
            Self::Postgres => "PostgreSQL",
            Self::Mysql => "MySQL/MariaDB",
            Self::Mongodb => "MongoDB",
            Self::Redis => "Redis",
        }
    }

    /// Its key in `[shared]`.
    fn key(self) -> &'static str {
        match self {
            Self::Postgres => "postgres_url",
            Self::Mysql => "mysql_url",
            Self::Mongodb => "mongodb_url",
            Self::Redis => "redis_url",
        }
    }

    fn url(self, cfg: &SharedConfig) -> Option<&Secret> {
        match self {
            Self::Postgres => cfg.postgres_url.as_ref(),
            Self::Mysql => cfg.mysql_url.as_ref(),
            Self::Mongodb => cfg.mongodb_url.as_ref(),
            Self::Redis => cfg.redis_url.as_ref(),
        }
    }
}

impl Shared {
    /// The administrator's URL of `server`, or why there is none.
    fn url(&self, server: Server) -> Result<&Secret, String> {
        server.url(&self.cfg).ok_or_else(|| {
            format!(
                "no shared {} server is configured: set shared.{}",
                server.what(),
                server.key()
            )
        })
    }

    /// `server`'s URL in parts, and where it is for messages (`PostgreSQL at host:5432`).
    fn parts(&self, server: Server) -> Result<(Parts, String), String> {
        let parts = Parts::of(self.url(server)?.expose());
        let at = format!("{} at {}", server.what(), parts.endpoint());
        Ok((parts, at))
    }
}

/// The passwords a URL holds (as written and percent-decoded), to scrub them from messages.
fn url_passwords(url: &str) -> Vec<String> {
    let mut found = Vec::new();
    if let Some((_, rest)) = url.split_once("://") {
        let q = rest.find('?').unwrap_or(rest.len());
        if let Some(at) = rest[..q].rfind('@') {
            if let Some((_, pw)) = rest[..at].split_once(':') {
                found.push(pw.to_owned());
            }
        }
        for kv in rest[q..].trim_start_matches('?').split('&') {
            if let Some((k, v)) = kv.split_once('=') {
                if ["password", "pass"].contains(&k.to_ascii_lowercase().as_str()) {
                    found.push(v.to_owned());
                }
            }
        }
    }
    let decoded: Vec<String> = found.iter().map(|p| percent_decode(p)).collect();
    found.extend(decoded);
    found.retain(|p| !p.is_empty());
    found.sort();
    found.dedup();
    found
}

fn percent_decode(s: &str) -> String {
    let hex = |b: u8| char::from(b).to_digit(16);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A sqlx error as a person should read it: the server's own message, never the statement
/// (which may hold a password) nor the URL.
fn sql_text(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Configuration(_) => "the connection URL is not valid".into(),
        sqlx::Error::Database(d) => d.message().to_owned(),
        sqlx::Error::PoolTimedOut => {
            "no connection could be made in time (is the server up, and the URL right?)".into()
        }
        other => other.to_string(),
    }
}

fn json_engine<T: serde::Serialize>(engine: T) -> serde_json::Value {
    serde_json::to_value(engine).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// The provisioner
// ---------------------------------------------------------------------------------------------

const DATABASE: Option<&str> = Some("database");
const CACHE: Option<&str> = Some("cache");

#[async_trait]
impl Provisioner for Shared {
    fn name(&self) -> &'static str {
        "shared"
    }

    fn available(&self) -> Result<(), String> {
        let c = &self.cfg;
        if c.postgres_url.is_some()
            || c.mysql_url.is_some()
            || c.mongodb_url.is_some()
            || c.redis_url.is_some()
            || c.memcached_addr.is_some()
        {
            Ok(())
        } else {
            Err(
                "no shared server is configured: set at least one of shared.postgres_url, \
                 shared.mysql_url, shared.mongodb_url, shared.redis_url, shared.memcached_addr"
                    .into(),
            )
        }
    }

    fn database(&self, engine: DatabaseEngine) -> Result<(), String> {
        let server = match engine {
            DatabaseEngine::Sqlite => return Ok(()),
            DatabaseEngine::Postgres => Server::Postgres,
            DatabaseEngine::Mysql => Server::Mysql,
            DatabaseEngine::Mongodb => Server::Mongodb,
        };
        self.url(server).map(drop)
    }

    fn cache(&self, engine: CacheEngine) -> Result<(), String> {
        match engine {
            CacheEngine::Memory | CacheEngine::None => Ok(()),
            CacheEngine::Redis => self.url(Server::Redis).map(drop),
            CacheEngine::Memcached => self.memcached_addr().map(drop),
        }
    }

    async fn provision(
        &self,
        req: &ProvisionRequest<'_>,
        steps: &Steps,
    ) -> Result<Provisioned, ProvisionError> {
        if !is_id(req.id) {
            return Err(bad_id());
        }
        let (db_engine, cache_engine) = (req.choices.database, req.choices.cache);
        self.database(db_engine)
            .map_err(|m| ProvisionError::new(DATABASE, m))?;
        self.cache(cache_engine)
            .map_err(|m| ProvisionError::new(CACHE, m))?;
        // Database and cache are independent: made side by side, so a launch waits for the
        // slower of the two, not for both.
        let (database, cache) = tokio::join!(
            self.make_database(db_engine, req.id, steps),
            self.make_cache(req, steps)
        );
        match (database, cache) {
            (Ok((database, db_where)), Ok((cache, cache_where, notes))) => Ok(Provisioned {
                database,
                cache,
                resources: serde_json::json!({
                    "database": {"engine": json_engine(db_engine), "where": db_where},
                    "cache": {"engine": json_engine(cache_engine), "where": cache_where},
                }),
                notes,
            }),
            (Err(e), cache) => {
                if cache.is_ok() {
                    undone(self.remove_cache(cache_engine, req.id, steps).await);
                }
                Err(e)
            }
            (Ok(_), Err(e)) => {
                undone(self.remove_database(db_engine, req.id, steps).await);
                Err(e)
            }
        }
    }

    async fn teardown(&self, id: &str, steps: &Steps) -> Result<(), ProvisionError> {
        if !is_id(id) {
            // Nothing of ours can carry a name that is not a session id.
            return Ok(());
        }
        let results = tokio::join!(
            self.remove_database(DatabaseEngine::Sqlite, id, steps),
            self.remove_database(DatabaseEngine::Postgres, id, steps),
            self.remove_database(DatabaseEngine::Mysql, id, steps),
            self.remove_database(DatabaseEngine::Mongodb, id, steps),
            self.remove_cache(CacheEngine::Redis, id, steps),
            self.remove_cache(CacheEngine::Memcached, id, steps),
        );
        let failed: Vec<String> = [
            results.0, results.1, results.2, results.3, results.4, results.5,
        ]
        .into_iter()
        .filter_map(Result::err)
        .map(|e| e.message)
        .collect();
        if failed.is_empty() {
            Ok(())
        } else {
            Err(ProvisionError::new(None, failed.join("; ")))
        }
    }

    /// Codes with a SQLite file, a database, role, user or ACL user on a configured server.
    /// A server that cannot be asked is logged and skipped, so one that is down does not hide
    /// the others' leftovers.
    async fn leftovers(&self) -> Result<Vec<String>, ProvisionError> {
        let mut ids: BTreeSet<String> = sqlite_ids(&self.files)
            .into_iter()
            .filter(|c| is_id(c))
            .collect();
        let found = tokio::join!(
            self.names_on(Server::Postgres, self.names_postgres()),
            self.names_on(Server::Mysql, self.names_mysql()),
            self.names_on(Server::Mongodb, self.names_mongodb()),
            self.names_on(Server::Redis, self.names_redis()),
        );
        for (server, names) in [
            (Server::Postgres, found.0),
            (Server::Mysql, found.1),
            (Server::Mongodb, found.2),
            (Server::Redis, found.3),
        ] {
            match names {
                Ok(names) => ids.extend(names.iter().filter_map(|n| id_of(&self.cfg.instance, n))),
                Err(e) => tracing::warn!(
                    engine = server.what(),
                    error = %self.scrub(&e, ""),
                    "cannot list the shared server's session resources; skipped"
                ),
            }
        }
        Ok(ids.into_iter().collect())
    }
}

impl Shared {
    /// The names `names` lists on `server`, within [`STEP_TIMEOUT`]; none where `server` is not
    /// configured (`names` is then never run).
    async fn names_on(
        &self,
        server: Server,
        names: impl Future<Output = Result<Vec<String>, String>>,
    ) -> Result<Vec<String>, String> {
        if server.url(&self.cfg).is_none() {
            return Ok(vec![]);
        }
        tokio::time::timeout(STEP_TIMEOUT, names)
            .await
            .unwrap_or_else(|_| Err("no answer in time".to_owned()))
    }

    /// Makes the session's database; returns its spec and where it is (no secrets).
    async fn make_database(
        &self,
        engine: DatabaseEngine,
        id: &str,
        steps: &Steps,
    ) -> Result<(DatabaseSpec, String), ProvisionError> {
        match engine {
            DatabaseEngine::Sqlite => {
                let spec = steps
                    .run(
                        "database: SQLite file",
                        "created and answered SELECT 1",
                        make_sqlite(&self.files, id),
                    )
                    .await?;
                Ok((spec, format!("{id}.db (a file on the control machine)")))
            }
            DatabaseEngine::Postgres => self.make_postgres(id, steps).await,
            DatabaseEngine::Mysql => self.make_mysql(id, steps).await,
            DatabaseEngine::Mongodb => self.make_mongodb(id, steps).await,
        }
    }

    /// Makes the session's keyspace; returns its spec, where it is, and notes.
    async fn make_cache(
        &self,
        req: &ProvisionRequest<'_>,
        steps: &Steps,
    ) -> Result<(CacheSpec, String, Vec<String>), ProvisionError> {
        let mut spec = cache_spec(req);
        match req.choices.cache {
            CacheEngine::None => {
                steps.skip("cache", "no cache chosen");
                Ok((spec, "none".into(), vec![]))
            }
            CacheEngine::Memory => {
                steps.skip(
                    "cache: in-process",
                    "lives in the backend instance's memory; made on the first request",
                );
                Ok((spec, "in-process".into(), vec![]))
            }
            CacheEngine::Redis => {
                let (url, at) = self.make_redis(req.id, steps).await?;
                spec.url = url;
                spec.key_prefix = format!("{}:", self.engine_name(req.id));
                spec.shared = true;
                let name = self.engine_name(req.id);
                Ok((
                    spec,
                    format!("ACL user {name}, keys {name}:* on {at}"),
                    vec![],
                ))
            }
            CacheEngine::Memcached => {
                let at = self.make_memcached(req.id, steps).await?;
                spec.url = Secret::new(at.clone());
                spec.key_prefix = format!("{}:", self.engine_name(req.id));
                spec.shared = true;
                Ok((
                    spec,
                    format!(
                        "keys {}:* on {at} (a key prefix only: no isolation)",
                        self.engine_name(req.id)
                    ),
                    vec![NOTE_MEMCACHED.replace("<id>", req.id)],
                ))
            }
        }
    }

    /// Removes the session's database on `engine`, if that server is configured.
    async fn remove_database(
        &self,
        engine: DatabaseEngine,
        id: &str,
        steps: &Steps,
    ) -> Result<(), ProvisionError> {
        let name = self.engine_name(id);
        match engine {
            DatabaseEngine::Sqlite => {
                steps
                    .run("remove: SQLite file", "removed (if there was one)", async {
                        remove_sqlite(&self.files, id)
                    })
                    .await
            }
            DatabaseEngine::Postgres if self.cfg.postgres_url.is_some() => {
                self.step(
                    steps,
                    None,
                    "remove: PostgreSQL database and role",
                    &format!("dropped database and role {name} (if there were any)"),
                    "",
                    self.remove_postgres(&name),
                )
                .await
            }
            DatabaseEngine::Mysql if self.cfg.mysql_url.is_some() => {
                self.step(
                    steps,
                    None,
                    "remove: MySQL/MariaDB database and user",
                    &format!("dropped user and database {name} (if there were any)"),
                    "",
                    self.remove_mysql(&name),
                )
                .await
            }
            DatabaseEngine::Mongodb if self.cfg.mongodb_url.is_some() => {
                self.step(
                    steps,
                    None,
                    "remove: MongoDB user and database",
                    &format!("dropped user and database {name} (if there were any)"),
                    "",
                    self.remove_mongodb(&name),
                )
                .await
            }
            _ => Ok(()),
        }
    }

    /// Removes the session's keyspace on `engine`, if that server is configured.
    async fn remove_cache(
        &self,
        engine: CacheEngine,
        id: &str,
        steps: &Steps,
    ) -> Result<(), ProvisionError> {
        let name = self.engine_name(id);
        match engine {
            CacheEngine::Redis if self.cfg.redis_url.is_some() => {
                self.step(
                    steps,
                    None,
                    "remove: Redis ACL user and keys",
                    &format!("deleted ACL user {name} and the keys {name}:* (if there were any)"),
                    "",
                    self.remove_redis(&name),
                )
                .await
            }
            CacheEngine::Memcached if self.cfg.memcached_addr.is_some() => {
                // Best effort: keys the crawler cannot list expire by their TTL, and Memcached
                // keys are no boundary between sessions anyway. A failure shows in the step
                // and the log, and does not hold the teardown back.
                let result = self
                    .step(
                        steps,
                        None,
                        "remove: Memcached keys",
                        &format!("deleted the keys {name}:* that the LRU crawler listed"),
                        "",
                        self.remove_memcached(&name),
                    )
                    .await;
                if let Err(e) = result {
                    tracing::warn!(error = %e.message, "Memcached keys left to expire by their TTL");
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Administrator connections (PostgreSQL, MySQL/MariaDB)
// ---------------------------------------------------------------------------------------------

/// An administrator's connection, holding one of the engine's [`ADMIN_CONNECTIONS`] slots.
struct Admin<'a, C> {
    conn: C,
    _slot: SemaphorePermit<'a>,
}

// `Database = C::Database` is needed: without it the provisioner's futures are not `Send`.
impl<C> Admin<'_, C>
where
    C: Connection,
    for<'c> &'c mut C: Executor<'c, Database = C::Database>,
{
    /// Runs `sql` (simple/text protocol, nothing prepared or logged); the error is the server's
    /// message.
    async fn exec(&mut self, sql: &str) -> Result<(), String> {
        (&mut self.conn)
            .execute(sql)
            .await
            .map(drop)
            .map_err(|e| sql_text(&e))
    }

    async fn close(self) {
        let _ = self.conn.close().await;
    }
}

impl Shared {
    /// A fresh administrator's connection to `server`, in one of its `slots`: one that cannot
    /// be made fails at once (a pool would retry until its timeout), and a session is made
    /// rarely enough that a connection per provisioning costs little. `quiet` is run first to
    /// ask the server not to log the statements that follow (they may hold a password); a
    /// refusal is no error.
    async fn sql_admin<'a, C>(
        &'a self,
        server: Server,
        slots: &'a Semaphore,
        options: fn(&str) -> Result<C::Options, String>,
        quiet: &str,
    ) -> Result<Admin<'a, C>, String>
    where
        C: Connection,
        for<'c> &'c mut C: Executor<'c, Database = C::Database>,
    {
        let (_, at) = self.parts(server)?;
        let url = self.url(server)?.expose();
        let slot = slot(slots, &at).await?;
        let conn = C::connect_with(&options(url)?).await.map_err(|e| {
            format!(
                "{at}: cannot connect as the administrator: {}",
                sql_text(&e)
            )
        })?;
        let mut admin = Admin { conn, _slot: slot };
        let _ = admin.exec(quiet).await;
        Ok(admin)
    }
}

async fn slot<'a>(slots: &'a Semaphore, at: &str) -> Result<SemaphorePermit<'a>, String> {
    slots
        .acquire()
        .await
        .map_err(|_| format!("{at}: shutting down"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_session_ids_make_names() {
        let id = stacklab_types::session::id(&crate::seal::session_code());
        assert!(is_id(&id));
        assert_eq!(id_of("", &format!("s_{id}")), Some(id.clone()));
        assert_eq!(id_of("t1", &format!("st1_{id}")), Some(id.clone()));
        assert_eq!(id_of("", &format!("st1_{id}")), None, "another instance's");
        assert_eq!(id_of("t1", &format!("s_{id}")), None, "another instance's");
        for bad in [
            "",
            "s_x",
            "abc'; DROP DATABASE x; --",
            "0123456789ABCDEF0123456789",
            "0123456789abcdefghjkmnpqrs",
            "0123456789abcdef0123456789a",
        ] {
            assert!(!is_id(bad), "{bad}");
        }
        assert_eq!(id_of("", "s_postgres"), None);
        assert_eq!(id_of("", "postgres"), None);
    }

    #[test]
    fn urls_lose_their_credentials_and_keep_their_options() {
        let p = Parts::of(
            "postgres://admin:p%40ss/w@db.example:5433/postgres?sslmode=require&password=x&user=y",
        );
        assert_eq!(p.hosts, "db.example:5433");
        assert_eq!(p.path, "/postgres");
        assert_eq!(p.query, ["sslmode=require"]);
        assert_eq!(
            p.with_login("postgres", "s_a", "pw", "/s_a", &[]),
            "postgres://s_a:pw@db.example:5433/s_a?sslmode=require"
        );
        let m = Parts::of("mongodb://root:pw@h1:27017,h2:27017/?authSource=admin&replicaSet=rs0");
        assert_eq!(m.endpoint(), "h1:27017,h2:27017");
        assert_eq!(
            m.with_login("mongodb", "s_a", "q", "/s_a", &["authSource=s_a".into()]),
            "mongodb://s_a:q@h1:27017,h2:27017/s_a?replicaSet=rs0&authSource=s_a"
        );
        let r = Parts::of("redis://:secret@127.0.0.1:6379/2");
        assert_eq!(
            (r.hosts.as_str(), r.path.as_str()),
            ("127.0.0.1:6379", "/2")
        );
        let mut pw = url_passwords("postgres://admin:p%40ss@h/db?password=other");
        pw.sort();
        assert_eq!(pw, ["other", "p%40ss", "p@ss"]);
    }

    #[tokio::test]
    async fn a_server_not_configured_says_which_key_to_set_and_lists_nothing() {
        let shared = Shared::new(SharedConfig::default(), PathBuf::from("/nonexistent"));
        for (engine, key, what) in [
            (DatabaseEngine::Postgres, "postgres_url", "PostgreSQL"),
            (DatabaseEngine::Mysql, "mysql_url", "MySQL/MariaDB"),
            (DatabaseEngine::Mongodb, "mongodb_url", "MongoDB"),
        ] {
            assert_eq!(
                shared.database(engine).unwrap_err(),
                format!("no shared {what} server is configured: set shared.{key}")
            );
        }
        assert_eq!(
            shared.cache(CacheEngine::Redis).unwrap_err(),
            "no shared Redis server is configured: set shared.redis_url"
        );
        assert_eq!(
            shared.cache(CacheEngine::Memcached).unwrap_err(),
            "no shared Memcached server is configured: set shared.memcached_addr"
        );
        assert!(shared.database(DatabaseEngine::Sqlite).is_ok());
        assert_eq!(shared.leftovers().await.unwrap(), Vec::<String>::new());
    }

    #[test]
    fn scrubbing_removes_every_known_password() {
        let shared = Shared::new(
            SharedConfig {
                postgres_url: Some(Secret::new(
                    "postgres://admin:Hunter2Secret@h:5432/postgres",
                )),
                ..Default::default()
            },
            PathBuf::from("/nonexistent"),
        );
        let text = shared.scrub(
            "password for Hunter2Secret was wrong at postgres://admin:Hunter2Secret@h:5432/x, new one sess-pw",
            "sess-pw",
        );
        assert!(
            !text.contains("Hunter2Secret") && !text.contains("sess-pw"),
            "{text}"
        );
        let debug = format!("{shared:?}");
        assert!(
            debug.contains("h:5432") && !debug.contains("Hunter2Secret"),
            "{debug}"
        );
    }
}
