use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use sqlx::Row;
use stacklab_backend::config::{BackendConfig, Limits};
use stacklab_backend::sessions::StaticStacks;
use stacklab_backend::App;
use stacklab_types::stack::*;
use stacklab_types::Secret;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub const ADMIN_TOKEN: &str = "backend-admin-token-0123";

/// A database engine under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
    Mysql,
    Mongo,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kv {
    Memory,
    Redis,
    Memcached,
    None,
}

/// Reads an engine's URL from the environment; fails under CI when it is missing.
pub fn engine_url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => Some(v),
        _ => {
            if std::env::var("STACKLAB_REQUIRE_SERVICES").as_deref() == Ok("1") {
                panic!("{var} is not set, and STACKLAB_REQUIRE_SERVICES=1: run the tests with scripts/test");
            }
            eprintln!(
                "{var} is not set: this engine is not tested in this run (scripts/test sets it)"
            );
            None
        }
    }
}

pub fn unique(prefix: &str) -> String {
    let n: u64 = rand::random();
    format!("{prefix}{:012x}", n & 0xffff_ffff_ffff)
}

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique(&format!("stacklab-backend-{name}-")));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The MongoDB server to test against: scripts/test starts a wire-compatible stand-in
/// (SecantusDB, config/mongo/serve.py) unless the caller names a real server; like every engine,
/// its absence fails under CI.
pub fn mongo_url() -> Option<String> {
    engine_url("STACKLAB_TEST_MONGO_URL")
}

/// Makes a fresh database of its own for one session and returns its URL.
pub async fn fresh_database(db: Db) -> Option<String> {
    match db {
        Db::Mongo => mongo_url(),
        Db::Sqlite => Some(format!(
            "sqlite://{}/session.db?mode=rwc",
            temp_dir("sqlite").display()
        )),
        Db::Postgres => {
            let admin = engine_url("STACKLAB_TEST_POSTGRES_URL")?;
            let name = unique("t_");
            let pool = sqlx::PgPool::connect(&admin).await.unwrap();
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
            Some(replace_db(&admin, &name))
        }
        Db::Mysql => {
            let admin = engine_url("STACKLAB_TEST_MYSQL_URL")?;
            let name = unique("t_");
            let pool = sqlx::MySqlPool::connect(&admin).await.unwrap();
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
            Some(replace_db(&admin, &name))
        }
    }
}

fn replace_db(url: &str, db: &str) -> String {
    let (base, _) = url.rsplit_once('/').unwrap();
    format!("{base}/{db}")
}

pub fn cache_spec(kv: Kv, shared: bool) -> Option<CacheSpec> {
    let prefix = unique("s:") + ":";
    let (engine, url) = match kv {
        Kv::Memory => (CacheEngine::Memory, String::new()),
        Kv::None => (CacheEngine::None, String::new()),
        Kv::Redis => (CacheEngine::Redis, engine_url("STACKLAB_TEST_REDIS_URL")?),
        Kv::Memcached => (
            CacheEngine::Memcached,
            engine_url("STACKLAB_TEST_MEMCACHED_ADDR")?,
        ),
    };
    // The test Redis is one server for every test running at once: only the policy test (which
    // asks for `shared = false` itself) may change its settings, and it never sets maxmemory.
    let shared = shared || kv == Kv::Redis;
    let max_bytes = if kv == Kv::Memory { 1024 * 1024 } else { 0 };
    Some(CacheSpec {
        engine,
        url: Secret::new(url),
        key_prefix: prefix,
        policy: String::new(),
        max_bytes,
        ttl_ms: 60_000,
        shared,
    })
}

pub struct Stack {
    pub db: Db,
    pub descriptor: StackDescriptor,
}

/// A descriptor for a new session on `db` × `kv`, or `None` when an engine is absent (outside CI).
pub async fn stack(
    db: Db,
    kv: Kv,
    write_policy: WritePolicy,
    password: PasswordStorage,
    encryption: Encryption,
) -> Option<Stack> {
    let url = fresh_database(db).await?;
    let cache = cache_spec(kv, false)?;
    let engine = match db {
        Db::Sqlite => DatabaseEngine::Sqlite,
        Db::Postgres => DatabaseEngine::Postgres,
        Db::Mysql => DatabaseEngine::Mysql,
        Db::Mongo => DatabaseEngine::Mongodb,
    };
    let database = (db == Db::Mongo).then(|| unique("t_"));
    let session = unique("SESSION").to_uppercase();
    Some(Stack {
        db,
        descriptor: StackDescriptor {
            session,
            runtime: "rust".into(),
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
            encryption_key: stacklab_backend::crypto::new_key(),
            pepper: Secret::new("a-pepper-from-control"),
        },
    })
}

pub struct Backend {
    pub addr: SocketAddr,
    pub stacks: Arc<StaticStacks>,
    shutdown: CancellationToken,
}

impl Backend {
    pub async fn start() -> Backend {
        let stacks = Arc::new(StaticStacks::default());
        let config = BackendConfig {
            limits: Limits {
                bcrypt_cost: 4,
                ..Limits::default()
            },
            ..BackendConfig::default()
        };
        let app = App::new(config, stacks.clone(), Secret::new(ADMIN_TOKEN));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        tokio::spawn(stacklab_backend::run(
            listener,
            Arc::clone(&app),
            shutdown.clone(),
        ));
        Backend {
            addr,
            stacks,
            shutdown,
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: serde_json::Value,
}

impl Answer {
    pub fn cache(&self) -> &str {
        self.headers
            .get("x-stacklab-cache")
            .map(|v| v.to_str().unwrap())
            .unwrap_or("")
    }
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
    pub fn field(&self) -> &str {
        self.body["error"]["field"].as_str().unwrap_or("")
    }
}

/// A client for one session.
#[derive(Clone)]
pub struct Api {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    session: String,
}

impl Api {
    pub fn new(backend: &Backend, session: &str) -> Api {
        Api {
            client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
            base: format!("http://{}", backend.addr),
            session: session.to_owned(),
        }
    }

    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<Bytes>,
    ) -> Answer {
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("x-stacklab-session", &self.session);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let res = self
            .client
            .request(req.body(Full::new(body.into())).unwrap())
            .await
            .unwrap();
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::String(
            String::from_utf8_lossy(&bytes).into_owned(),
        ));
        Answer {
            status,
            headers,
            body,
        }
    }

    pub async fn call(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> Answer {
        match body {
            Some(b) => {
                self.raw(method, path, Some("application/json"), b.to_string())
                    .await
            }
            None => self.raw(method, path, None, Bytes::new()).await,
        }
    }

    pub async fn graphql(&self, query: &str, variables: serde_json::Value) -> Answer {
        self.call(
            "POST",
            "/graphql",
            Some(serde_json::json!({"query": query, "variables": variables})),
        )
        .await
    }
}

/// One value of one row, read with the engine's own sqlx driver (not the `Any` driver the
/// backend uses), on a pool opened and closed for the call.
macro_rules! sql_one {
    ($pool:ty, $url:expr, $sql:expr, $t:ty) => {{
        let pool = <$pool>::connect($url).await.unwrap();
        let v: $t = sqlx::query($sql).fetch_one(&pool).await.unwrap().get(0);
        pool.close().await;
        v
    }};
}

/// Reads a column of a user's row with the engine's own driver, bypassing the backend.
pub async fn raw_column(stack: &Stack, id: i64, column: &str) -> String {
    let url = stack.descriptor.database.url.expose();
    let sql = format!("SELECT {column} FROM users WHERE id = {id}");
    match stack.db {
        Db::Mongo => {
            let doc = mongo_users(stack)
                .await
                .find_one(mongodb::bson::doc! {"_id": id})
                .await
                .unwrap()
                .unwrap();
            doc.get_str(column).unwrap().to_owned()
        }
        Db::Sqlite => sql_one!(sqlx::SqlitePool, url, &sql, String),
        Db::Postgres => sql_one!(sqlx::PgPool, url, &sql, String),
        Db::Mysql => sql_one!(sqlx::MySqlPool, url, &sql, String),
    }
}

/// Rows in the session's users table, read with the engine's own driver.
pub async fn raw_count(stack: &Stack) -> i64 {
    let url = stack.descriptor.database.url.expose();
    let sql = "SELECT COUNT(*) FROM users";
    match stack.db {
        Db::Mongo => mongo_users(stack)
            .await
            .count_documents(mongodb::bson::doc! {})
            .await
            .unwrap() as i64,
        Db::Sqlite => sql_one!(sqlx::SqlitePool, url, sql, i64),
        Db::Postgres => sql_one!(sqlx::PgPool, url, sql, i64),
        Db::Mysql => sql_one!(sqlx::MySqlPool, url, sql, i64),
    }
}

/// The session's users collection, read with MongoDB's own driver.
async fn mongo_users(stack: &Stack) -> mongodb::Collection<mongodb::bson::Document> {
    let client = mongodb::Client::with_uri_str(stack.descriptor.database.url.expose())
        .await
        .unwrap();
    client
        .database(stack.descriptor.database.database.as_deref().unwrap())
        .collection("users")
}
