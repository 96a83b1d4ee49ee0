//! The `shared` provisioner against the real engines `scripts/test` starts (PostgreSQL,
//! MariaDB, Redis, Memcached), called directly: one session's credentials must fail to reach
//! another's data, teardown must leave nothing on the engine (checked with the administrator's
//! own connection) and be idempotent, and no error may show a password.
//!
//! A test whose engine is absent fails under `STACKLAB_REQUIRE_SERVICES=1` (CI) and skips,
//! saying so, elsewhere. MongoDB cannot be installed on this project's machine: scripts/test
//! starts a wire-compatible stand-in with authentication on (SecantusDB, config/mongo/serve.py),
//! unless `STACKLAB_TEST_MONGO_URL` already names a server whose user may create users and drop
//! databases.

use crate::helpers::{all_done, choices, engine, files_dir, user};
use bytes::Bytes;
use sqlx::{Connection, Row};
use stacklab_control::choices::Choices;
use stacklab_control::config::SharedConfig;
use stacklab_control::provision::shared::Shared;
use stacklab_control::provision::{
    ProvisionError, ProvisionRequest, Provisioned, Provisioner, Steps,
};
use stacklab_control::seal::session_code;

/// A fresh session's id: what provisioners are given (never the code).
fn session_id() -> String {
    stacklab_types::session::id(&session_code())
}
use stacklab_types::stack::{CacheEngine, DatabaseEngine};
use stacklab_types::Secret;
use std::path::Path;
use std::time::Instant;

async fn provision(
    shared: &Shared,
    code: &str,
    choices: &Choices,
    dir: &Path,
    steps: &Steps,
) -> Result<Provisioned, ProvisionError> {
    shared
        .provision(
            &ProvisionRequest {
                id: code,
                choices,
                files_dir: dir.to_owned(),
                cache_max_bytes: 1 << 20,
                cache_ttl_ms: 60_000,
            },
            steps,
        )
        .await
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

/// `url` with its path (the database) replaced.
fn with_database(url: &str, database: &str) -> String {
    let slash = url.rfind('/').unwrap();
    format!("{}/{database}", &url[..slash])
}

#[tokio::test]
async fn postgres_sessions_cannot_reach_each_other_and_teardown_leaves_nothing() {
    let Some(admin) = engine("STACKLAB_TEST_POSTGRES_URL") else {
        return;
    };
    let dir = files_dir("shared", "pg");
    let shared = Shared::new(
        SharedConfig {
            postgres_url: Some(Secret::new(&admin)),
            ..Default::default()
        },
        dir.clone(),
    );
    let (a, b) = (session_id(), session_id());
    let ch = choices("shared", "postgres", "none");
    let steps = Steps::silent();
    let started = Instant::now();
    let pa = provision(&shared, &a, &ch, &dir, &steps).await.unwrap();
    let provision_ms = ms(started);
    all_done(&steps);
    assert!(steps
        .list()
        .iter()
        .any(|s| s.name == "database: PostgreSQL ready"));
    let pb = provision(&shared, &b, &ch, &dir, &Steps::silent())
        .await
        .unwrap();

    assert_eq!(pa.database.engine, DatabaseEngine::Postgres);
    let url_a = pa.database.url.expose();
    assert!(
        url_a.starts_with(&format!("postgres://s_{a}:")),
        "a role of its own"
    );
    assert!(url_a.ends_with(&format!("/s_{a}")));
    assert!(!url_a.contains("stacklab:"), "never the administrator");
    let resources = pa.resources.to_string();
    assert!(
        resources.contains(&format!("database s_{a} on 127.0.0.1:")),
        "{resources}"
    );
    assert!(
        !resources.contains(url_a.split(['@']).next().unwrap()),
        "no password in {resources}"
    );

    // With its own credentials, the backend's store makes its table and keeps rows.
    let store_a = stacklab_backend::storage::connect(&pa.database, 2)
        .await
        .unwrap();
    let id = store_a.insert(&user("alice")).await.unwrap();
    assert_eq!(store_a.get(id).await.unwrap().unwrap().username, "alice");
    assert_eq!(store_a.stats().await.unwrap().rows, 1);
    let store_b = stacklab_backend::storage::connect(&pb.database, 2)
        .await
        .unwrap();
    store_b.insert(&user("bob")).await.unwrap();

    // A's role may not even connect to B's database, nor B's to A's.
    for (url, other) in [(url_a, &b), (pb.database.url.expose(), &a)] {
        let err = sqlx::PgConnection::connect(&with_database(url, &format!("s_{other}")))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("permission denied"), "{err}");
    }

    let left = shared.leftovers().await.unwrap();
    assert!(left.contains(&a) && left.contains(&b), "{left:?}");

    // Teardown with the backend's connections still open (FORCE ends them).
    let started = Instant::now();
    shared.teardown(&a, &Steps::silent()).await.unwrap();
    let teardown_ms = ms(started);
    shared.teardown(&b, &Steps::silent()).await.unwrap();
    eprintln!("postgres: provision {provision_ms:.0} ms, teardown {teardown_ms:.0} ms");

    let mut check = sqlx::PgConnection::connect(&admin).await.unwrap();
    let names = [format!("s_{a}"), format!("s_{b}")];
    let row = sqlx::query(
        "SELECT (SELECT count(*) FROM pg_database WHERE datname = ANY($1)),
                (SELECT count(*) FROM pg_roles WHERE rolname = ANY($1))",
    )
    .bind(&names[..])
    .fetch_one(&mut check)
    .await
    .unwrap();
    assert_eq!(
        (row.get::<i64, _>(0), row.get::<i64, _>(1)),
        (0, 0),
        "databases and roles dropped"
    );
    let left = shared.leftovers().await.unwrap();
    assert!(!left.contains(&a) && !left.contains(&b), "{left:?}");

    // Again: nothing to remove is not an error.
    shared.teardown(&a, &Steps::silent()).await.unwrap();
    store_a.close().await;
    store_b.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn mariadb_sessions_cannot_reach_each_other_and_teardown_leaves_nothing() {
    let Some(admin) = engine("STACKLAB_TEST_MYSQL_URL") else {
        return;
    };
    let dir = files_dir("shared", "my");
    let shared = Shared::new(
        SharedConfig {
            mysql_url: Some(Secret::new(&admin)),
            ..Default::default()
        },
        dir.clone(),
    );
    let (a, b) = (session_id(), session_id());
    let ch = choices("shared", "mysql", "none");
    let steps = Steps::silent();
    let started = Instant::now();
    let pa = provision(&shared, &a, &ch, &dir, &steps).await.unwrap();
    let provision_ms = ms(started);
    all_done(&steps);
    let pb = provision(&shared, &b, &ch, &dir, &Steps::silent())
        .await
        .unwrap();

    assert_eq!(pa.database.engine, DatabaseEngine::Mysql);
    let url_a = pa.database.url.expose();
    assert!(url_a.starts_with(&format!("mysql://s_{a}:")) && url_a.ends_with(&format!("/s_{a}")));

    let store_a = stacklab_backend::storage::connect(&pa.database, 2)
        .await
        .unwrap();
    let id = store_a.insert(&user("alice")).await.unwrap();
    assert_eq!(store_a.get(id).await.unwrap().unwrap().username, "alice");
    assert_eq!(store_a.stats().await.unwrap().rows, 1);
    let store_b = stacklab_backend::storage::connect(&pb.database, 2)
        .await
        .unwrap();
    store_b.insert(&user("bob")).await.unwrap();

    // A, logged in to its own database, may not read B's.
    let mut as_a = sqlx::MySqlConnection::connect(url_a).await.unwrap();
    let own: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
        .fetch_one(&mut as_a)
        .await
        .unwrap();
    assert_eq!(own, 1);
    let err = sqlx::query(&format!("SELECT COUNT(*) FROM s_{b}.users"))
        .fetch_one(&mut as_a)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("denied"), "{err}");
    let err = sqlx::MySqlConnection::connect(&with_database(url_a, &format!("s_{b}")))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("denied"), "{err}");

    // The grant's `_` is escaped: a database the unescaped pattern `s_<a>` would match is
    // out of A's reach too.
    let mut check = sqlx::MySqlConnection::connect(&admin).await.unwrap();
    let lookalike = format!("sx{a}");
    sqlx::raw_sql(&format!(
        "CREATE DATABASE {lookalike}; CREATE TABLE {lookalike}.t (x INT)"
    ))
    .execute(&mut check)
    .await
    .unwrap();
    let err = sqlx::query(&format!("SELECT * FROM {lookalike}.t"))
        .fetch_all(&mut as_a)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("denied"), "{err}");
    sqlx::raw_sql(&format!("DROP DATABASE {lookalike}"))
        .execute(&mut check)
        .await
        .unwrap();

    let left = shared.leftovers().await.unwrap();
    assert!(left.contains(&a) && left.contains(&b), "{left:?}");

    let started = Instant::now();
    shared.teardown(&a, &Steps::silent()).await.unwrap();
    let teardown_ms = ms(started);
    shared.teardown(&b, &Steps::silent()).await.unwrap();
    eprintln!("mariadb: provision {provision_ms:.0} ms, teardown {teardown_ms:.0} ms");
    // A's open connection was ended.
    assert!(sqlx::query("SELECT 1").fetch_one(&mut as_a).await.is_err());

    let (na, nb) = (format!("s_{a}"), format!("s_{b}"));
    let schemas: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME IN (?, ?)",
    )
    .bind(&na)
    .bind(&nb)
    .fetch_one(&mut check)
    .await
    .unwrap();
    let users: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM mysql.user WHERE User IN (?, ?)")
        .bind(&na)
        .bind(&nb)
        .fetch_one(&mut check)
        .await
        .unwrap();
    assert_eq!((schemas, users), (0, 0), "databases and users dropped");
    let left = shared.leftovers().await.unwrap();
    assert!(!left.contains(&a) && !left.contains(&b), "{left:?}");

    shared.teardown(&a, &Steps::silent()).await.unwrap();
    store_a.close().await;
    store_b.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn redis_users_reach_their_own_prefix_only_and_teardown_leaves_nothing() {
    let Some(admin) = engine("STACKLAB_TEST_REDIS_URL") else {
        return;
    };
    let dir = files_dir("shared", "redis");
    let shared = Shared::new(
        SharedConfig {
            redis_url: Some(Secret::new(&admin)),
            ..Default::default()
        },
        dir.clone(),
    );
    let (a, b) = (session_id(), session_id());
    let ch = choices("shared", "sqlite", "redis");
    let steps = Steps::silent();
    let started = Instant::now();
    let pa = provision(&shared, &a, &ch, &dir, &steps).await.unwrap();
    let provision_ms = ms(started);
    all_done(&steps);
    let pb = provision(&shared, &b, &ch, &dir, &Steps::silent())
        .await
        .unwrap();

    let spec = &pa.cache;
    assert_eq!(spec.engine, CacheEngine::Redis);
    assert!(spec.shared, "other sessions share the server");
    assert_eq!(spec.key_prefix, format!("s_{a}:"));
    assert!(spec.url.expose().starts_with(&format!("redis://s_{a}:")));
    assert_eq!(pa.database.engine, DatabaseEngine::Sqlite);
    assert!(dir.join(format!("{a}.db")).exists());
    let resources = pa.resources.to_string();
    assert!(
        resources.contains(&format!("ACL user s_{a}, keys s_{a}:*")),
        "{resources}"
    );

    // Everything the backend's Redis cache does works under the session's ACL user.
    let cache_a = stacklab_backend::cache::connect(spec).await.unwrap();
    let cache_b = stacklab_backend::cache::connect(&pb.cache).await.unwrap();
    cache_a
        .set("user:1", Bytes::from_static(b"alice"), None)
        .await
        .unwrap();
    cache_b
        .set("user:2", Bytes::from_static(b"bob"), None)
        .await
        .unwrap();
    assert_eq!(
        cache_a.get("user:1").await.unwrap(),
        Some(Bytes::from_static(b"alice"))
    );
    let items = cache_a.items(20).await.unwrap();
    assert_eq!(items.len(), 1, "{items:?}");
    assert_eq!(items[0].key, "user:1");
    assert!(items[0].bytes > 0 && items[0].ttl_ms.is_some());
    cache_a.stats().await.unwrap();
    let policy = cache_a.policy().await.unwrap();
    assert!(!policy.changeable);
    assert!(cache_a.set_policy("allkeys-lfu").await.is_err());
    cache_a
        .set("gone", Bytes::from_static(b"x"), None)
        .await
        .unwrap();
    cache_a.delete("gone").await.unwrap();
    assert_eq!(cache_a.get("gone").await.unwrap(), None);

    // A's user cannot read or write B's keys, nor run what would reach past its prefix.
    let mut as_a = redis::Client::open(spec.url.expose())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let b_key = format!("s_{b}:user:2");
    for cmd in [
        redis::cmd("GET").arg(&b_key).clone(),
        redis::cmd("SET").arg(&b_key).arg("stolen").clone(),
        redis::cmd("DEL").arg(&b_key).clone(),
        redis::cmd("KEYS").arg("*").clone(),
        redis::cmd("FLUSHALL").clone(),
        redis::cmd("CONFIG").arg("GET").arg("requirepass").clone(),
        redis::cmd("SELECT").arg(1).clone(),
        redis::cmd("EVAL").arg("return 1").arg(0).clone(),
    ] {
        let err = cmd
            .query_async::<redis::Value>(&mut as_a)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some("NOPERM"), "{err}");
    }
    let mut check = redis::Client::open(admin.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let still: String = redis::cmd("GET")
        .arg(&b_key)
        .query_async(&mut check)
        .await
        .unwrap();
    assert_eq!(still, "bob");

    let left = shared.leftovers().await.unwrap();
    assert!(left.contains(&a) && left.contains(&b), "{left:?}");

    let started = Instant::now();
    shared.teardown(&a, &Steps::silent()).await.unwrap();
    let teardown_ms = ms(started);
    eprintln!("redis (+ sqlite): provision {provision_ms:.0} ms, teardown {teardown_ms:.0} ms");
    let users: Vec<String> = redis::cmd("ACL")
        .arg("USERS")
        .query_async(&mut check)
        .await
        .unwrap();
    assert!(!users.contains(&format!("s_{a}")), "{users:?}");
    let a_keys: i64 = redis::cmd("EXISTS")
        .arg(format!("s_{a}:user:1"))
        .query_async(&mut check)
        .await
        .unwrap();
    assert_eq!(a_keys, 0, "A's keys removed");
    let b_keys: i64 = redis::cmd("EXISTS")
        .arg(&b_key)
        .query_async(&mut check)
        .await
        .unwrap();
    assert_eq!(b_keys, 1, "B's keys untouched by A's teardown");
    assert!(!dir.join(format!("{a}.db")).exists(), "SQLite file removed");
    // A's connection was closed with its user.
    assert!(redis::cmd("PING")
        .query_async::<String>(&mut as_a)
        .await
        .is_err());

    shared.teardown(&b, &Steps::silent()).await.unwrap();
    let users: Vec<String> = redis::cmd("ACL")
        .arg("USERS")
        .query_async(&mut check)
        .await
        .unwrap();
    assert!(!users.contains(&format!("s_{b}")), "{users:?}");
    let b_keys: i64 = redis::cmd("EXISTS")
        .arg(&b_key)
        .query_async(&mut check)
        .await
        .unwrap();
    assert_eq!(b_keys, 0);
    let left = shared.leftovers().await.unwrap();
    assert!(!left.contains(&a) && !left.contains(&b), "{left:?}");

    shared.teardown(&a, &Steps::silent()).await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn memcached_sessions_get_a_prefix_and_are_told_it_is_no_isolation() {
    let Some(addr) = engine("STACKLAB_TEST_MEMCACHED_ADDR") else {
        return;
    };
    let dir = files_dir("shared", "mc");
    let shared = Shared::new(
        SharedConfig {
            memcached_addr: Some(addr.clone()),
            ..Default::default()
        },
        dir.clone(),
    );
    let (a, b) = (session_id(), session_id());
    let ch = choices("shared", "sqlite", "memcached");
    let steps = Steps::silent();
    let started = Instant::now();
    let pa = provision(&shared, &a, &ch, &dir, &steps).await.unwrap();
    let provision_ms = ms(started);
    all_done(&steps);
    let pb = provision(&shared, &b, &ch, &dir, &Steps::silent())
        .await
        .unwrap();

    assert_eq!(pa.cache.engine, CacheEngine::Memcached);
    assert_eq!(pa.cache.url.expose(), addr);
    assert_eq!(pa.cache.key_prefix, format!("s_{a}:"));
    assert!(pa.cache.shared);
    assert!(
        pa.notes
            .iter()
            .any(|n| n.contains("no per-session isolation")),
        "{:?}",
        pa.notes
    );

    let cache_a = stacklab_backend::cache::connect(&pa.cache).await.unwrap();
    let cache_b = stacklab_backend::cache::connect(&pb.cache).await.unwrap();
    cache_a
        .set("k", Bytes::from_static(b"from a"), None)
        .await
        .unwrap();
    cache_b
        .set("k", Bytes::from_static(b"from b"), None)
        .await
        .unwrap();
    assert_eq!(
        cache_a.get("k").await.unwrap(),
        Some(Bytes::from_static(b"from a"))
    );
    assert_eq!(
        cache_b.get("k").await.unwrap(),
        Some(Bytes::from_static(b"from b"))
    );

    let raw = |key: String| {
        let addr = addr.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                memcache::Client::connect(format!("memcache://{addr}?protocol=ascii"))
                    .unwrap()
                    .get::<String>(&key)
                    .unwrap()
            })
            .await
            .unwrap()
        }
    };
    assert_eq!(raw(format!("s_{a}:k")).await.as_deref(), Some("from a"));

    let started = Instant::now();
    shared.teardown(&a, &Steps::silent()).await.unwrap();
    let teardown_ms = ms(started);
    eprintln!("memcached (+ sqlite): provision {provision_ms:.0} ms, teardown {teardown_ms:.0} ms");
    assert_eq!(raw(format!("s_{a}:k")).await, None, "A's keys deleted");
    assert_eq!(
        raw(format!("s_{b}:k")).await.as_deref(),
        Some("from b"),
        "B's kept"
    );
    shared.teardown(&b, &Steps::silent()).await.unwrap();
    assert_eq!(raw(format!("s_{b}:k")).await, None);
    shared.teardown(&a, &Steps::silent()).await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn mongodb_users_reach_their_own_database_only() {
    let Some(admin) = engine("STACKLAB_TEST_MONGO_URL") else {
        return;
    };
    use mongodb::bson::{doc, Document};
    let dir = files_dir("shared", "mongo");
    let shared = Shared::new(
        SharedConfig {
            mongodb_url: Some(Secret::new(&admin)),
            ..Default::default()
        },
        dir.clone(),
    );
    let (a, b) = (session_id(), session_id());
    let ch = choices("shared", "mongodb", "none");
    let steps = Steps::silent();
    let started = Instant::now();
    let pa = provision(&shared, &a, &ch, &dir, &steps).await.unwrap();
    let provision_ms = ms(started);
    all_done(&steps);
    let pb = provision(&shared, &b, &ch, &dir, &Steps::silent())
        .await
        .unwrap();
    assert_eq!(
        pa.database.database.as_deref(),
        Some(format!("s_{a}").as_str())
    );

    let as_a = mongodb::Client::with_uri_str(pa.database.url.expose())
        .await
        .unwrap();
    let own = as_a
        .database(&format!("s_{a}"))
        .collection::<Document>("users");
    own.insert_one(doc! {"_id": 1, "username": "alice"})
        .await
        .unwrap();
    assert!(own.find_one(doc! {"_id": 1}).await.unwrap().is_some());
    let as_b = mongodb::Client::with_uri_str(pb.database.url.expose())
        .await
        .unwrap();
    as_b.database(&format!("s_{b}"))
        .collection::<Document>("users")
        .insert_one(doc! {"_id": 1, "username": "bob"})
        .await
        .unwrap();
    let err = as_a
        .database(&format!("s_{b}"))
        .collection::<Document>("users")
        .find_one(doc! {})
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("not authorized") || err.to_string().contains("Unauthorized"),
        "{err}"
    );
    let left = shared.leftovers().await.unwrap();
    assert!(left.contains(&a) && left.contains(&b), "{left:?}");

    let started = Instant::now();
    shared.teardown(&a, &Steps::silent()).await.unwrap();
    let teardown_ms = ms(started);
    shared.teardown(&b, &Steps::silent()).await.unwrap();
    eprintln!("mongodb: provision {provision_ms:.0} ms, teardown {teardown_ms:.0} ms");
    let check = mongodb::Client::with_uri_str(&admin).await.unwrap();
    let names = check.list_database_names().await.unwrap();
    assert!(!names.contains(&format!("s_{a}")) && !names.contains(&format!("s_{b}")));
    let users = check
        .database(&format!("s_{a}"))
        .run_command(doc! {"usersInfo": 1})
        .await
        .unwrap();
    assert!(users.get_array("users").unwrap().is_empty());
    shared.teardown(&a, &Steps::silent()).await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn sqlite_and_the_in_process_cache_need_no_server() {
    let dir = files_dir("shared", "sqlite");
    let shared = Shared::new(SharedConfig::default(), dir.clone());
    let code = session_id();
    let steps = Steps::silent();
    let p = provision(
        &shared,
        &code,
        &choices("shared", "sqlite", "memory"),
        &dir,
        &steps,
    )
    .await
    .unwrap();
    all_done(&steps);
    assert_eq!(p.database.engine, DatabaseEngine::Sqlite);
    assert_eq!(p.cache.engine, CacheEngine::Memory);
    assert!(dir.join(format!("{code}.db")).exists());
    assert!(shared.leftovers().await.unwrap().contains(&code));
    shared.teardown(&code, &Steps::silent()).await.unwrap();
    assert!(!dir.join(format!("{code}.db")).exists());
    assert!(!shared.leftovers().await.unwrap().contains(&code));
    shared.teardown(&code, &Steps::silent()).await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn what_is_not_configured_is_refused_by_its_key() {
    let dir = files_dir("shared", "none");
    let shared = Shared::new(SharedConfig::default(), dir.clone());
    let why = shared.available().unwrap_err();
    for key in [
        "shared.postgres_url",
        "shared.mysql_url",
        "shared.redis_url",
        "shared.memcached_addr",
    ] {
        assert!(why.contains(key), "{why}");
    }
    let why = shared.database(DatabaseEngine::Postgres).unwrap_err();
    assert!(
        why.contains("PostgreSQL") && why.contains("shared.postgres_url"),
        "{why}"
    );
    assert!(shared
        .database(DatabaseEngine::Mysql)
        .unwrap_err()
        .contains("shared.mysql_url"));
    assert!(shared
        .database(DatabaseEngine::Mongodb)
        .unwrap_err()
        .contains("shared.mongodb_url"));
    assert!(shared
        .cache(CacheEngine::Redis)
        .unwrap_err()
        .contains("shared.redis_url"));
    assert!(shared
        .cache(CacheEngine::Memcached)
        .unwrap_err()
        .contains("shared.memcached_addr"));
    assert!(shared.database(DatabaseEngine::Sqlite).is_ok());
    assert!(shared.cache(CacheEngine::Memory).is_ok() && shared.cache(CacheEngine::None).is_ok());
    let err = provision(
        &shared,
        &session_id(),
        &choices("shared", "postgres", "none"),
        &dir,
        &Steps::silent(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.field, Some("database"));
    assert!(
        err.message.contains("shared.postgres_url"),
        "{}",
        err.message
    );
    let err = provision(
        &shared,
        &session_id(),
        &choices("shared", "sqlite", "redis"),
        &dir,
        &Steps::silent(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.field, Some("cache"));

    // One server is enough to be available; the others are still refused.
    let one = Shared::new(
        SharedConfig {
            memcached_addr: Some("127.0.0.1:11211".into()),
            ..Default::default()
        },
        dir.clone(),
    );
    assert!(one.available().is_ok());
    assert!(one.cache(CacheEngine::Memcached).is_ok());
    assert!(one.database(DatabaseEngine::Postgres).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_id_that_is_not_a_session_id_touches_nothing() {
    let dir = files_dir("shared", "code");
    let shared = Shared::new(
        SharedConfig {
            // Never reached: the id is refused first.
            postgres_url: Some(Secret::new("postgres://admin:pw@127.0.0.1:1/postgres")),
            ..Default::default()
        },
        dir.clone(),
    );
    let steps = Steps::silent();
    let code = session_code();
    for id in [
        "x; DROP DATABASE postgres; --",
        "../../etc/passwd",
        "",
        "S0MEUPPERCASECODE000000000",
        // A session code is not an id (provisioners are given ids only).
        code.as_str(),
    ] {
        let err = provision(
            &shared,
            id,
            &choices("shared", "postgres", "none"),
            &dir,
            &steps,
        )
        .await
        .unwrap_err();
        assert!(err.message.contains("not a session id"), "{}", err.message);
        shared.teardown(id, &steps).await.unwrap();
    }
    assert!(steps.list().is_empty(), "no step ran: {:?}", steps.list());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Neither the password nor `user:password` appears in the error, its steps, or Debug.
fn assert_no_secret(
    shared: &Shared,
    err: &ProvisionError,
    steps: &Steps,
    secret: &str,
    pair: &str,
) {
    let texts = [
        err.message.clone(),
        format!("{err:?}"),
        format!("{:?}", steps.list()),
        format!("{shared:?}"),
    ];
    for text in texts {
        assert!(
            !text.contains(secret) && !text.contains(pair),
            "a secret leaked: {text}"
        );
    }
}

#[tokio::test]
async fn errors_never_show_an_administrators_password() {
    const SECRET: &str = "Hunter2SecretPw";
    let dir = files_dir("shared", "secret");
    // Unreachable servers: no engine needed.
    let port = closed_port();
    let cases = [
        (
            SharedConfig {
                postgres_url: Some(Secret::new(format!(
                    "postgres://admin:{SECRET}@127.0.0.1:{port}/postgres"
                ))),
                ..Default::default()
            },
            choices("shared", "postgres", "none"),
            "database",
        ),
        (
            SharedConfig {
                mysql_url: Some(Secret::new(format!(
                    "mysql://root:{SECRET}@127.0.0.1:{port}/"
                ))),
                ..Default::default()
            },
            choices("shared", "mysql", "none"),
            "database",
        ),
        (
            SharedConfig {
                redis_url: Some(Secret::new(format!(
                    "redis://default:{SECRET}@127.0.0.1:{port}/"
                ))),
                ..Default::default()
            },
            choices("shared", "sqlite", "redis"),
            "cache",
        ),
    ];
    for (cfg, ch, field) in cases {
        let shared = Shared::new(cfg, dir.clone());
        let steps = Steps::silent();
        let err = provision(&shared, &session_id(), &ch, &dir, &steps)
            .await
            .unwrap_err();
        assert_eq!(err.field, Some(field), "{}", err.message);
        assert!(
            err.message.contains(&format!("127.0.0.1:{port}")),
            "says where: {}",
            err.message
        );
        assert_no_secret(&shared, &err, &steps, SECRET, &format!(":{SECRET}"));
        let err = shared.teardown(&session_id(), &steps).await.unwrap_err();
        assert_no_secret(&shared, &err, &steps, SECRET, &format!(":{SECRET}"));
    }

    // A real server refusing a wrong password.
    let Some(admin) = engine("STACKLAB_TEST_POSTGRES_URL") else {
        return;
    };
    let (user, host) = admin
        .strip_prefix("postgres://")
        .and_then(|r| r.split_once('@'))
        .map(|(creds, host)| (creds.split(':').next().unwrap().to_owned(), host.to_owned()))
        .unwrap();
    let wrong = format!("postgres://{user}:{SECRET}@{host}");
    let shared = Shared::new(
        SharedConfig {
            postgres_url: Some(Secret::new(&wrong)),
            ..Default::default()
        },
        dir.clone(),
    );
    let steps = Steps::silent();
    let err = provision(
        &shared,
        &session_id(),
        &choices("shared", "postgres", "none"),
        &dir,
        &steps,
    )
    .await
    .unwrap_err();
    assert_eq!(err.field, Some("database"));
    assert!(
        err.message.contains("password authentication failed"),
        "{}",
        err.message
    );
    assert_no_secret(&shared, &err, &steps, SECRET, &format!("{user}:{SECRET}"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_failed_cache_undoes_the_database_made_before_it() {
    let Some(admin) = engine("STACKLAB_TEST_POSTGRES_URL") else {
        return;
    };
    let dir = files_dir("shared", "undo");
    let shared = Shared::new(
        SharedConfig {
            postgres_url: Some(Secret::new(&admin)),
            redis_url: Some(Secret::new(format!("redis://127.0.0.1:{}/", closed_port()))),
            ..Default::default()
        },
        dir.clone(),
    );
    let code = session_id();
    let steps = Steps::silent();
    let err = provision(
        &shared,
        &code,
        &choices("shared", "postgres", "redis"),
        &dir,
        &steps,
    )
    .await
    .unwrap_err();
    assert_eq!(err.field, Some("cache"), "{}", err.message);
    let list = steps.list();
    assert!(
        list.iter()
            .any(|s| s.name == "database: PostgreSQL ready" && s.status == "done"),
        "{list:?}"
    );
    assert!(
        list.iter()
            .any(|s| s.name == "remove: PostgreSQL database and role" && s.status == "done"),
        "{list:?}"
    );
    let mut check = sqlx::PgConnection::connect(&admin).await.unwrap();
    let name = format!("s_{code}");
    let left: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM pg_database WHERE datname = $1)
              + (SELECT count(*) FROM pg_roles WHERE rolname = $1)",
    )
    .bind(&name)
    .fetch_one(&mut check)
    .await
    .unwrap();
    assert_eq!(left, 0, "the database and role were removed");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn postgres_needs_createrole_and_createdb_not_a_superuser() {
    let Some(admin) = engine("STACKLAB_TEST_POSTGRES_URL") else {
        return;
    };
    // The account config/shared.toml asks for, made with the test's superuser.
    let account = format!("admin_{:08x}", rand::random::<u32>());
    let mut su = sqlx::PgConnection::connect(&admin).await.unwrap();
    sqlx::raw_sql(&format!(
        "CREATE ROLE {account} LOGIN CREATEROLE CREATEDB PASSWORD 'admin-pw-{account}'"
    ))
    .execute(&mut su)
    .await
    .unwrap();
    let host = admin.split_once('@').unwrap().1;
    let url = format!("postgres://{account}:admin-pw-{account}@{host}");
    let dir = files_dir("shared", "pg-nosuper");
    let shared = Shared::new(
        SharedConfig {
            postgres_url: Some(Secret::new(&url)),
            ..Default::default()
        },
        dir.clone(),
    );
    let code = session_id();
    let p = provision(
        &shared,
        &code,
        &choices("shared", "postgres", "none"),
        &dir,
        &Steps::silent(),
    )
    .await
    .unwrap();
    let store = stacklab_backend::storage::connect(&p.database, 1)
        .await
        .unwrap();
    store.insert(&user("carol")).await.unwrap();
    assert!(shared.leftovers().await.unwrap().contains(&code));
    shared.teardown(&code, &Steps::silent()).await.unwrap();
    store.close().await;
    let left: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM pg_database WHERE datname = $1)
              + (SELECT count(*) FROM pg_roles WHERE rolname = $1)",
    )
    .bind(format!("s_{code}"))
    .fetch_one(&mut su)
    .await
    .unwrap();
    assert_eq!(left, 0);
    sqlx::raw_sql(&format!("DROP ROLE {account}"))
        .execute(&mut su)
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_shared_config_is_valid_and_names_every_server() {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../config/shared.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stacklab"))
        .arg("check-config")
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "config/shared.toml is valid: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text: toml::Table = std::fs::read_to_string(file).unwrap().parse().unwrap();
    let shared = text["shared"].as_table().unwrap();
    for key in [
        "postgres_url",
        "mysql_url",
        "mongodb_url",
        "redis_url",
        "memcached_addr",
    ] {
        assert!(
            shared[key].as_str().is_some_and(|v| !v.is_empty()),
            "shared.{key} is set"
        );
    }
}
