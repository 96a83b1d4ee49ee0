//! SQLite, PostgreSQL and MySQL/MariaDB through sqlx's `Any` driver.
//!
//! One adapter, three dialects: the differences are placeholders (`$1` against `?`), the DDL
//! (id column, text types), how an insert returns its id, and where the catalog keeps a table's
//! size. Everything else — every query, every bind — is shared, so the engines cannot drift.
//! LIKE patterns escape `%`, `_` and the escape character itself with `!`, which means the same
//! in all three (a backslash does not).

use super::{Changes, DbStats, NewUser, Search, StoreError, StoredUser, UserStore};
use async_trait::async_trait;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use stacklab_types::stack::{DatabaseEngine, DatabaseSpec};
use std::time::Duration;

#[derive(Debug)]
pub struct SqlStore {
    pool: AnyPool,
    engine: DatabaseEngine,
}

const COLUMNS: &str = "id, username, email, full_name, password, created_at, updated_at";

impl SqlStore {
    pub async fn connect(spec: &DatabaseSpec, max_connections: u32) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let engine = spec.engine;
        let mut opts = AnyPoolOptions::new()
            .max_connections(max_connections.max(1))
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(5))
            .idle_timeout(Some(Duration::from_secs(60)));
        if engine == DatabaseEngine::Sqlite {
            opts = opts.after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::query("PRAGMA journal_mode = WAL")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("PRAGMA busy_timeout = 5000")
                        .execute(&mut *conn)
                        .await?;
                    Ok(())
                })
            });
        }
        let pool = opts.connect(spec.url.expose()).await.map_err(|e| {
            StoreError::Unavailable(format!(
                "cannot connect to {}: {}",
                engine_name(engine),
                redact(&e)
            ))
        })?;
        let store = SqlStore { pool, engine };
        store.init().await?;
        Ok(store)
    }

    async fn init(&self) -> Result<(), StoreError> {
        let ddl: &[&str] = match self.engine {
            DatabaseEngine::Sqlite => &["CREATE TABLE IF NOT EXISTS users (
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    username TEXT NOT NULL, username_key TEXT NOT NULL,
                    email TEXT NOT NULL, email_key TEXT NOT NULL,
                    full_name TEXT NOT NULL DEFAULT '', password TEXT NOT NULL,
                    created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL,
                    CONSTRAINT users_username_key UNIQUE (username_key),
                    CONSTRAINT users_email_key UNIQUE (email_key))"],
            DatabaseEngine::Postgres => &["CREATE TABLE IF NOT EXISTS users (
                    id BIGSERIAL PRIMARY KEY,
                    username TEXT NOT NULL, username_key TEXT NOT NULL,
                    email TEXT NOT NULL, email_key TEXT NOT NULL,
                    full_name TEXT NOT NULL DEFAULT '', password TEXT NOT NULL,
                    created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL,
                    CONSTRAINT users_username_key UNIQUE (username_key),
                    CONSTRAINT users_email_key UNIQUE (email_key))"],
            _ => &["CREATE TABLE IF NOT EXISTS users (
                    id BIGINT AUTO_INCREMENT PRIMARY KEY,
                    username VARCHAR(64) NOT NULL, username_key VARCHAR(64) NOT NULL,
                    email VARCHAR(1024) NOT NULL, email_key VARCHAR(255) NOT NULL,
                    full_name VARCHAR(1024) NOT NULL DEFAULT '', password VARCHAR(1024) NOT NULL,
                    created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL,
                    CONSTRAINT users_username_key UNIQUE (username_key),
                    CONSTRAINT users_email_key UNIQUE (email_key))
                 CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"],
        };
        for stmt in ddl {
            // Two instances opening a new session's database at once both run this, and
            // PostgreSQL's `CREATE TABLE IF NOT EXISTS` is not safe against a concurrent one
            // (a unique violation in its catalog): tried again, the table then exists.
            let mut attempt = 0;
            loop {
                match sqlx::query(stmt).execute(&self.pool).await {
                    Ok(_) => break,
                    Err(_) if attempt < 3 => {
                        attempt += 1;
                        tokio::time::sleep(std::time::Duration::from_millis(20 * attempt)).await;
                    }
                    Err(e) => return Err(self.fail("set up the schema", &e)),
                }
            }
        }
        Ok(())
    }

    /// Placeholder number `n` (1-based) in this dialect.
    fn p(&self, n: usize) -> String {
        if self.engine == DatabaseEngine::Postgres {
            format!("${n}")
        } else {
            "?".to_owned()
        }
    }

    fn fail(&self, what: &str, e: &sqlx::Error) -> StoreError {
        if let sqlx::Error::Database(db) = e {
            if db.is_unique_violation() {
                let text = format!("{} {}", db.constraint().unwrap_or_default(), db.message());
                let field = if text.contains("email") {
                    "email"
                } else {
                    "username"
                };
                return StoreError::Conflict { field };
            }
        }
        StoreError::Unavailable(format!(
            "{} could not {what}: {}",
            engine_name(self.engine),
            redact(e)
        ))
    }
}

fn engine_name(e: DatabaseEngine) -> &'static str {
    match e {
        DatabaseEngine::Sqlite => "SQLite",
        DatabaseEngine::Postgres => "PostgreSQL",
        DatabaseEngine::Mysql => "MySQL",
        DatabaseEngine::Mongodb => "MongoDB",
    }
}

/// sqlx errors can carry the connection URL (with its password) in configuration errors.
fn redact(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Configuration(_) => "the connection string is not valid".into(),
        other => other.to_string(),
    }
}

fn row_to_user(r: &AnyRow) -> Result<StoredUser, sqlx::Error> {
    Ok(StoredUser {
        id: r.try_get("id")?,
        username: r.try_get("username")?,
        email: r.try_get("email")?,
        full_name: r.try_get("full_name")?,
        password: r.try_get("password")?,
        created_at: r.try_get("created_at")?,
        updated_at: r.try_get("updated_at")?,
    })
}

/// Escapes LIKE's wildcards with `!` and wraps the text in `%…%`.
pub fn like_pattern(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '!') {
            out.push('!');
        }
        out.push(c);
    }
    out.push('%');
    out
}

#[async_trait]
impl UserStore for SqlStore {
    fn engine(&self) -> DatabaseEngine {
        self.engine
    }

    async fn insert(&self, u: &NewUser) -> Result<i64, StoreError> {
        let values: Vec<String> = (1..=8).map(|n| self.p(n)).collect();
        let mut sql = format!(
            "INSERT INTO users (username, username_key, email, email_key, full_name, password, created_at, updated_at) VALUES ({})",
            values.join(", ")
        );
        let returning = self.engine != DatabaseEngine::Mysql;
        if returning {
            sql.push_str(" RETURNING id");
        }
        let q = sqlx::query(&sql)
            .bind(&u.username)
            .bind(&u.username_key)
            .bind(&u.email)
            .bind(&u.email_key)
            .bind(&u.full_name)
            .bind(&u.password)
            .bind(u.now)
            .bind(u.now);
        if returning {
            let row = q
                .fetch_one(&self.pool)
                .await
                .map_err(|e| self.fail("insert", &e))?;
            row.try_get::<i64, _>(0)
                .map_err(|e| self.fail("read the new id", &e))
        } else {
            let done = q
                .execute(&self.pool)
                .await
                .map_err(|e| self.fail("insert", &e))?;
            done.last_insert_id().ok_or_else(|| {
                StoreError::Unavailable("MySQL returned no id for the insert".into())
            })
        }
    }

    async fn get(&self, id: i64) -> Result<Option<StoredUser>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM users WHERE id = {}", self.p(1));
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| self.fail("read", &e))?;
        row.map(|r| row_to_user(&r))
            .transpose()
            .map_err(|e| self.fail("read", &e))
    }

    async fn search(
        &self,
        search: &Search,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<StoredUser>, i64), StoreError> {
        let (filter, binds): (String, Vec<String>) = match search {
            Search::All => (String::new(), vec![]),
            Search::Text {
                lower,
                email_index: None,
            } => {
                let pattern = like_pattern(lower);
                (
                    format!(
                        " WHERE username_key LIKE {} ESCAPE '!' OR email_key LIKE {} ESCAPE '!'",
                        self.p(1),
                        self.p(2)
                    ),
                    vec![pattern.clone(), pattern],
                )
            }
            Search::Text {
                lower,
                email_index: Some(index),
            } => (
                format!(
                    " WHERE username_key LIKE {} ESCAPE '!' OR email_key = {}",
                    self.p(1),
                    self.p(2)
                ),
                vec![like_pattern(lower), index.clone()],
            ),
        };
        let n = binds.len();
        let page_sql = format!(
            "SELECT {COLUMNS} FROM users{filter} ORDER BY id LIMIT {} OFFSET {}",
            self.p(n + 1),
            self.p(n + 2)
        );
        let mut q = sqlx::query(&page_sql);
        for b in &binds {
            q = q.bind(b);
        }
        let rows = q
            .bind(limit)
            .bind(offset)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| self.fail("search", &e))?;
        let users = rows
            .iter()
            .map(row_to_user)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.fail("search", &e))?;
        let count_sql = format!("SELECT COUNT(*) FROM users{filter}");
        let mut q = sqlx::query(&count_sql);
        for b in &binds {
            q = q.bind(b);
        }
        let total: i64 = q
            .fetch_one(&self.pool)
            .await
            .and_then(|r| r.try_get(0))
            .map_err(|e| self.fail("count", &e))?;
        Ok((users, total))
    }

    async fn update(&self, id: i64, c: &Changes) -> Result<Option<StoredUser>, StoreError> {
        let mut sets = Vec::new();
        let mut binds: Vec<String> = Vec::new();
        let mut push = |col: &str, v: &str, sets: &mut Vec<String>| {
            binds.push(v.to_owned());
            sets.push(format!("{col} = {}", self.p(binds.len())));
        };
        if let Some((v, k)) = &c.username {
            push("username", v, &mut sets);
            push("username_key", k, &mut sets);
        }
        if let Some((v, k)) = &c.email {
            push("email", v, &mut sets);
            push("email_key", k, &mut sets);
        }
        if let Some(v) = &c.full_name {
            push("full_name", v, &mut sets);
        }
        if let Some(v) = &c.password {
            push("password", v, &mut sets);
        }
        let n = binds.len();
        let sql = format!(
            "UPDATE users SET {}updated_at = {} WHERE id = {}",
            sets.iter().map(|s| format!("{s}, ")).collect::<String>(),
            self.p(n + 1),
            self.p(n + 2)
        );
        let mut q = sqlx::query(&sql);
        for b in &binds {
            q = q.bind(b);
        }
        let done = q
            .bind(c.now)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(|e| self.fail("update", &e))?;
        if done.rows_affected() == 0 {
            // MySQL counts only changed rows; tell "missing" from "unchanged" by reading.
            if self.engine != DatabaseEngine::Mysql {
                return Ok(None);
            }
        }
        self.get(id).await
    }

    async fn delete(&self, id: i64) -> Result<bool, StoreError> {
        let sql = format!("DELETE FROM users WHERE id = {}", self.p(1));
        let done = sqlx::query(&sql)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(|e| self.fail("delete", &e))?;
        Ok(done.rows_affected() > 0)
    }

    async fn stats(&self) -> Result<DbStats, StoreError> {
        let size_sql = match self.engine {
            DatabaseEngine::Sqlite => "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
            DatabaseEngine::Postgres => "SELECT pg_total_relation_size('users')",
            _ => {
                "SELECT CAST(COALESCE(SUM(data_length + index_length), 0) AS SIGNED) FROM information_schema.tables \
                 WHERE table_schema = DATABASE() AND table_name = 'users'"
            }
        };
        let size_bytes: i64 = sqlx::query(size_sql)
            .fetch_one(&self.pool)
            .await
            .and_then(|r| r.try_get(0))
            .map_err(|e| self.fail("read its size", &e))?;
        let rows: i64 = sqlx::query("SELECT COUNT(*) FROM users")
            .fetch_one(&self.pool)
            .await
            .and_then(|r| r.try_get(0))
            .map_err(|e| self.fail("count rows", &e))?;
        Ok(DbStats {
            engine: self.engine,
            size_bytes,
            rows,
        })
    }

    async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::like_pattern;

    #[test]
    fn like_wildcards_are_text() {
        assert_eq!(like_pattern("a%b_c!d"), "%a!%b!_c!!d%");
        assert_eq!(like_pattern("' OR 1=1 --"), "%' OR 1=1 --%");
    }
}
