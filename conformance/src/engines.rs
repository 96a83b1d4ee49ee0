//! The databases and caches under test, and the stacks built on them.
//!
//! Every stack gets a database of its own (a new SQLite file, a new PostgreSQL or MariaDB
//! database, a new MongoDB database name) and a key prefix of its own on the shared Redis and
//! Memcached, so tests running at once never see each other's rows or keys.

use base64::Engine;
use stacklab_types::stack::*;
use stacklab_types::Secret;

/// A database engine under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
    Mysql,
    Mongo,
}

impl Db {
    pub const ALL: [Db; 4] = [Db::Sqlite, Db::Postgres, Db::Mysql, Db::Mongo];

    /// The `database` value of `POST /api/sessions` (and of a manifest's `[unsupported]` keys).
    pub fn value(self) -> &'static str {
        match self {
            Db::Sqlite => "sqlite",
            Db::Postgres => "postgres",
            Db::Mysql => "mysql",
            Db::Mongo => "mongodb",
        }
    }
}

/// A cache engine under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kv {
    Memory,
    Redis,
    Memcached,
    None,
}

/// Every password storage mode.
pub const PASSWORD_MODES: [PasswordStorage; 5] = [
    PasswordStorage::Plaintext,
    PasswordStorage::Sha256,
    PasswordStorage::Bcrypt,
    PasswordStorage::BcryptPepper,
    PasswordStorage::Argon2id,
];

/// An engine's URL from the environment (`scripts/test` sets them). Missing: a failure under
/// CI (`STACKLAB_REQUIRE_SERVICES=1`); elsewhere `None`, said aloud.
pub use stacklab_testkit::engine_var as engine_url;

/// `prefix` and 12 random hex digits.
pub fn unique(prefix: &str) -> String {
    let n: u64 = rand::random();
    format!("{prefix}{:012x}", n & 0xffff_ffff_ffff)
}

use stacklab_testkit::temp_dir;

/// A new random encryption key: 32 bytes, base64 (what control makes per session).
pub fn new_key() -> Secret {
    let key: [u8; 32] = rand::random();
    Secret::new(base64::engine::general_purpose::STANDARD.encode(key))
}

/// Makes a database of its own for one stack; returns its URL and, for MongoDB, its name.
pub async fn fresh_database(db: Db) -> Option<(String, Option<String>)> {
    match db {
        Db::Mongo => {
            let url = engine_url("STACKLAB_TEST_MONGO_URL")?;
            Some((url, Some(unique("t_"))))
        }
        Db::Sqlite => Some((
            format!(
                "sqlite://{}/session.db?mode=rwc",
                temp_dir("sqlite").display()
            ),
            None,
        )),
        Db::Postgres => {
            let admin = engine_url("STACKLAB_TEST_POSTGRES_URL")?;
            Some((
                new_database::<sqlx::Postgres>(&admin, "PostgreSQL").await,
                None,
            ))
        }
        Db::Mysql => {
            let admin = engine_url("STACKLAB_TEST_MYSQL_URL")?;
            Some((new_database::<sqlx::MySql>(&admin, "MariaDB").await, None))
        }
    }
}

/// A new database, named uniquely, on the server `admin` points at (`what` names the
/// server if it cannot be reached); the URL of the new database.
async fn new_database<DB: sqlx::Database>(admin: &str, what: &str) -> String
where
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
{
    use sqlx::Executor;
    let name = unique("t_");
    let pool = sqlx::Pool::<DB>::connect(admin).await.expect(what);
    pool.execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .expect("CREATE DATABASE");
    pool.close().await;
    replace_db(admin, &name)
}

fn replace_db(url: &str, db: &str) -> String {
    let (base, _) = url.rsplit_once('/').expect("a URL with a database");
    format!("{base}/{db}")
}

/// A cache of `kv` with a key prefix of its own; `None` when the engine is absent (outside CI).
///
/// The test Redis is one server for every test running at once, so its descriptors say
/// `shared` (a runtime then refuses policy changes); only the policy test clears it.
pub fn cache_spec(kv: Kv) -> Option<CacheSpec> {
    let (engine, url) = match kv {
        Kv::Memory => (CacheEngine::Memory, String::new()),
        Kv::None => (CacheEngine::None, String::new()),
        Kv::Redis => (CacheEngine::Redis, engine_url("STACKLAB_TEST_REDIS_URL")?),
        Kv::Memcached => (
            CacheEngine::Memcached,
            engine_url("STACKLAB_TEST_MEMCACHED_ADDR")?,
        ),
    };
    Some(CacheSpec {
        engine,
        url: Secret::new(url),
        key_prefix: unique("s:") + ":",
        policy: String::new(),
        max_bytes: if kv == Kv::Memory { 1024 * 1024 } else { 0 },
        ttl_ms: 60_000,
        shared: kv == Kv::Redis,
    })
}

/// One session's stack: its descriptor and the engines it names.
#[derive(Debug, Clone)]
pub struct Stack {
    pub db: Db,
    pub kv: Kv,
    pub descriptor: StackDescriptor,
}

impl Stack {
    pub fn session(&self) -> &str {
        &self.descriptor.session
    }
}

/// A new session's stack on `db` × `kv`, or `None` when an engine is absent (outside CI).
pub async fn stack(
    db: Db,
    kv: Kv,
    write_policy: WritePolicy,
    password: PasswordStorage,
    encryption: Encryption,
) -> Option<Stack> {
    let (url, database) = fresh_database(db).await?;
    let cache = cache_spec(kv)?;
    let engine = match db {
        Db::Sqlite => DatabaseEngine::Sqlite,
        Db::Postgres => DatabaseEngine::Postgres,
        Db::Mysql => DatabaseEngine::Mysql,
        Db::Mongo => DatabaseEngine::Mongodb,
    };
    Some(Stack {
        db,
        kv,
        descriptor: StackDescriptor {
            session: unique("SESSION").to_uppercase(),
            runtime: String::new(),
            protocol: ApiProtocol::Rest,
            database: DatabaseSpec {
                engine,
                url: Secret::new(url),
                database,
            },
            cache,
            write_policy,
            password_storage: password,
            encryption,
            encryption_key: new_key(),
            pepper: Secret::new(unique("pepper-")),
        },
    })
}
