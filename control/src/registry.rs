//! The registry: sessions, pools, backend instances and bug reports, in SQLite (one machine,
//! the default: `<data_dir>/registry.db`) or PostgreSQL (several control nodes), through sqlx.
//!
//! Control keeps the live state in memory and writes every change here before it answers, so
//! a control restarted mid-life finds its sessions (and old cookies keep working). Secrets in a
//! session row are sealed (see [`crate::seal`]).

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Row};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Registry {
    pool: AnyPool,
    postgres: bool,
}

/// One session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    /// The session's id ([`stacklab_types::session::id`]): the registry never holds a code.
    pub id: String,
    /// `provisioning`, `ready`, `failed`, `ending`.
    pub state: String,
    pub provisioner: String,
    /// The choices, JSON.
    pub choices: String,
    /// Provisioning steps, JSON.
    pub steps: String,
    /// What the provisioner made, JSON (names only: what teardown must remove).
    pub resources: String,
    /// The stack descriptor with its secrets, sealed; empty until provisioned.
    pub sealed: String,
    pub pool: String,
    pub client: String,
    pub created_ms: i64,
    pub last_used_ms: i64,
    pub hard_expires_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BugRow {
    pub id: String,
    /// The id of the session that filed it.
    pub session: String,
    pub created_ms: i64,
    pub title: String,
    pub description: String,
    /// The session's stack, JSON.
    pub stack: String,
    /// The session's last captured requests, JSON.
    pub requests: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceRow {
    pub pool: String,
    pub id: String,
    pub addr: String,
    pub pid: i64,
    pub started_ms: i64,
}

type Result<T> = std::result::Result<T, sqlx::Error>;

const SESSION_COLUMNS: &str = "id, state, provisioner, choices, steps, resources, sealed, pool, client, created_ms, last_used_ms, hard_expires_ms";

impl Registry {
    pub async fn connect(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let postgres = url.starts_with("postgres");
        let mut opts = AnyPoolOptions::new()
            .max_connections(if postgres { 8 } else { 1 })
            .acquire_timeout(Duration::from_secs(10));
        if !postgres {
            opts = opts.after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::query("PRAGMA journal_mode = WAL")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("PRAGMA busy_timeout = 5000")
                        .execute(&mut *conn)
                        .await?;
                    // What a row held before it changed is overwritten, not left in a free
                    // page (the codes an old registry held, the sealed descriptors of ended
                    // sessions).
                    sqlx::query("PRAGMA secure_delete = ON")
                        .execute(&mut *conn)
                        .await?;
                    Ok(())
                })
            });
        }
        let pool = opts.connect(url).await?;
        let reg = Registry { pool, postgres };
        reg.migrate().await?;
        Ok(reg)
    }

    async fn migrate(&self) -> Result<()> {
        for ddl in [
            "CREATE TABLE IF NOT EXISTS sessions (
                id TEXT PRIMARY KEY, state TEXT NOT NULL, provisioner TEXT NOT NULL,
                choices TEXT NOT NULL, steps TEXT NOT NULL, resources TEXT NOT NULL,
                sealed TEXT NOT NULL, pool TEXT NOT NULL, client TEXT NOT NULL,
                created_ms BIGINT NOT NULL, last_used_ms BIGINT NOT NULL,
                hard_expires_ms BIGINT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS bugs (
                id TEXT PRIMARY KEY, session TEXT NOT NULL, created_ms BIGINT NOT NULL,
                title TEXT NOT NULL, description TEXT NOT NULL, stack TEXT NOT NULL,
                requests TEXT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS pools (name TEXT PRIMARY KEY, spec TEXT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS instances (
                pool TEXT NOT NULL, id TEXT NOT NULL, addr TEXT NOT NULL, pid BIGINT NOT NULL,
                started_ms BIGINT NOT NULL, PRIMARY KEY (pool, id))",
        ] {
            sqlx::query(ddl).execute(&self.pool).await?;
        }
        self.forget_codes().await
    }

    /// A registry written before sessions had ids keeps their codes (`sessions.code`,
    /// `bugs.code`): each becomes its id, in one transaction, and the columns are renamed, so
    /// no code is left once control has started. Old cookies keep working (their codes hash to
    /// these ids).
    async fn forget_codes(&self) -> Result<()> {
        if sqlx::query("SELECT code FROM sessions LIMIT 1")
            .fetch_optional(&self.pool)
            .await
            .is_err()
        {
            return Ok(()); // no `code` column: written with ids
        }
        let mut tx = self.pool.begin().await?;
        for (table, column) in [("sessions", "id"), ("bugs", "session")] {
            sqlx::query(&format!(
                "ALTER TABLE {table} RENAME COLUMN code TO {column}"
            ))
            .execute(&mut *tx)
            .await?;
            let codes: Vec<String> =
                sqlx::query_scalar(&format!("SELECT DISTINCT {column} FROM {table}"))
                    .fetch_all(&mut *tx)
                    .await?;
            let sql = self.q(&format!(
                "UPDATE {table} SET {column} = $1 WHERE {column} = $2"
            ));
            for code in codes {
                sqlx::query(&sql)
                    .bind(stacklab_types::session::id(&code))
                    .bind(&code)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        tracing::info!("registry: session codes replaced by their ids");
        Ok(())
    }

    /// `$1 … $n` for PostgreSQL, `?` for SQLite; every query is written once, with `$n` in order.
    fn q(&self, sql: &str) -> String {
        if self.postgres {
            return sql.to_owned();
        }
        let mut out = String::with_capacity(sql.len());
        let mut chars = sql.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
                while chars.peek().is_some_and(char::is_ascii_digit) {
                    chars.next();
                }
                out.push('?');
            } else {
                out.push(c);
            }
        }
        out
    }

    pub async fn insert_session(&self, s: &SessionRow) -> Result<()> {
        let sql = self.q(&format!(
            "INSERT INTO sessions ({SESSION_COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)"
        ));
        sqlx::query(&sql)
            .bind(&s.id)
            .bind(&s.state)
            .bind(&s.provisioner)
            .bind(&s.choices)
            .bind(&s.steps)
            .bind(&s.resources)
            .bind(&s.sealed)
            .bind(&s.pool)
            .bind(&s.client)
            .bind(s.created_ms)
            .bind(s.last_used_ms)
            .bind(s.hard_expires_ms)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Writes a session's state, steps, resources and sealed descriptor.
    /// Writes a session's row. A late writer never moves `last_used_ms` back, and never turns
    /// a row marked `ending` (a teardown to retry) into anything else.
    pub async fn update_session(&self, s: &SessionRow) -> Result<()> {
        let sql = self.q(
            "UPDATE sessions SET choices = $1, state = $2, steps = $3, resources = $4, sealed = $5, \
             last_used_ms = CASE WHEN last_used_ms > $6 THEN last_used_ms ELSE $7 END \
             WHERE id = $8 AND (state <> 'ending' OR $9 = 'ending')",
        );
        sqlx::query(&sql)
            .bind(&s.choices)
            .bind(&s.state)
            .bind(&s.steps)
            .bind(&s.resources)
            .bind(&s.sealed)
            .bind(s.last_used_ms)
            .bind(s.last_used_ms)
            .bind(&s.id)
            .bind(&s.state)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records use reported by proxies: one transaction for the batch.
    pub async fn touch(&self, uses: &[(String, i64)]) -> Result<()> {
        if uses.is_empty() {
            return Ok(());
        }
        let sql =
            self.q("UPDATE sessions SET last_used_ms = $1 WHERE id = $2 AND last_used_ms < $3");
        let mut tx = self.pool.begin().await?;
        for (id, at) in uses {
            sqlx::query(&sql)
                .bind(*at)
                .bind(id)
                .bind(*at)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    }

    pub async fn delete_session(&self, id: &str) -> Result<()> {
        sqlx::query(&self.q("DELETE FROM sessions WHERE id = $1"))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn sessions(&self) -> Result<Vec<SessionRow>> {
        let rows = sqlx::query(&format!("SELECT {SESSION_COLUMNS} FROM sessions"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(SessionRow {
                    id: r.try_get(0)?,
                    state: r.try_get(1)?,
                    provisioner: r.try_get(2)?,
                    choices: r.try_get(3)?,
                    steps: r.try_get(4)?,
                    resources: r.try_get(5)?,
                    sealed: r.try_get(6)?,
                    pool: r.try_get(7)?,
                    client: r.try_get(8)?,
                    created_ms: r.try_get(9)?,
                    last_used_ms: r.try_get(10)?,
                    hard_expires_ms: r.try_get(11)?,
                })
            })
            .collect()
    }

    pub async fn insert_bug(&self, b: &BugRow) -> Result<()> {
        let sql = self.q("INSERT INTO bugs (id, session, created_ms, title, description, stack, requests) VALUES ($1,$2,$3,$4,$5,$6,$7)");
        sqlx::query(&sql)
            .bind(&b.id)
            .bind(&b.session)
            .bind(b.created_ms)
            .bind(&b.title)
            .bind(&b.description)
            .bind(&b.stack)
            .bind(&b.requests)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Reports kept, in all (`session: None`) or filed by one session (its id).
    pub async fn count_bugs(&self, session: Option<&str>) -> Result<i64> {
        let n: i64 = match session {
            Some(c) => {
                let sql = self.q("SELECT COUNT(*) FROM bugs WHERE session = $1");
                sqlx::query_scalar(&sql)
                    .bind(c)
                    .fetch_one(&self.pool)
                    .await?
            }
            None => {
                sqlx::query_scalar("SELECT COUNT(*) FROM bugs")
                    .fetch_one(&self.pool)
                    .await?
            }
        };
        Ok(n)
    }

    /// Removes the reports filed before `created_ms`; returns how many.
    pub async fn delete_bugs_before(&self, created_ms: i64) -> Result<u64> {
        let sql = self.q("DELETE FROM bugs WHERE created_ms < $1");
        let done = sqlx::query(&sql)
            .bind(created_ms)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    pub async fn bugs(&self, limit: i64) -> Result<Vec<BugRow>> {
        let sql = self.q("SELECT id, session, created_ms, title, description, stack, requests FROM bugs ORDER BY created_ms DESC LIMIT $1");
        let rows = sqlx::query(&sql).bind(limit).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                Ok(BugRow {
                    id: r.try_get(0)?,
                    session: r.try_get(1)?,
                    created_ms: r.try_get(2)?,
                    title: r.try_get(3)?,
                    description: r.try_get(4)?,
                    stack: r.try_get(5)?,
                    requests: r.try_get(6)?,
                })
            })
            .collect()
    }

    /// A pool as changed through the admin API (its spec, JSON), or `None` to forget it.
    pub async fn put_pool(&self, name: &str, spec: Option<&str>) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(&self.q("DELETE FROM pools WHERE name = $1"))
            .bind(name)
            .execute(&mut *tx)
            .await?;
        if let Some(spec) = spec {
            sqlx::query(&self.q("INSERT INTO pools (name, spec) VALUES ($1, $2)"))
                .bind(name)
                .bind(spec)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    }

    /// Pools changed through the admin API: (name, spec JSON).
    pub async fn pools(&self) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT name, spec FROM pools")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    pub async fn put_instance(&self, i: &InstanceRow) -> Result<()> {
        self.remove_instance(&i.pool, &i.id).await?;
        let sql = self
            .q("INSERT INTO instances (pool, id, addr, pid, started_ms) VALUES ($1,$2,$3,$4,$5)");
        sqlx::query(&sql)
            .bind(&i.pool)
            .bind(&i.id)
            .bind(&i.addr)
            .bind(i.pid)
            .bind(i.started_ms)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn remove_instance(&self, pool: &str, id: &str) -> Result<()> {
        sqlx::query(&self.q("DELETE FROM instances WHERE pool = $1 AND id = $2"))
            .bind(pool)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn instances(&self) -> Result<Vec<InstanceRow>> {
        let rows = sqlx::query("SELECT pool, id, addr, pid, started_ms FROM instances")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(InstanceRow {
                    pool: r.try_get(0)?,
                    id: r.try_get(1)?,
                    addr: r.try_get(2)?,
                    pid: r.try_get(3)?,
                    started_ms: r.try_get(4)?,
                })
            })
            .collect()
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sessions_survive_a_reconnect() {
        let dir = std::env::temp_dir().join(format!("stacklab-reg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.join("r.db").display());
        let reg = Registry::connect(&url).await.unwrap();
        let row = SessionRow {
            id: "abc".into(),
            state: "ready".into(),
            provisioner: "embedded".into(),
            choices: "{}".into(),
            steps: "[]".into(),
            resources: "{}".into(),
            sealed: String::new(),
            pool: "rust".into(),
            client: "127.0.0.1".into(),
            created_ms: 1,
            last_used_ms: 2,
            hard_expires_ms: 3,
        };
        reg.insert_session(&row).await.unwrap();
        reg.touch(&[("abc".into(), 10), ("ghost".into(), 10)])
            .await
            .unwrap();
        reg.close().await;
        let reg = Registry::connect(&url).await.unwrap();
        let rows = reg.sessions().await.unwrap();
        assert_eq!(
            rows,
            vec![SessionRow {
                last_used_ms: 10,
                ..row
            }]
        );
        reg.delete_session("abc").await.unwrap();
        assert!(reg.sessions().await.unwrap().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A registry from before ids: its codes become ids and nothing else changes.
    #[tokio::test]
    async fn an_old_registry_keeps_no_code_once_opened() {
        let dir = std::env::temp_dir().join(format!("stacklab-reg-old-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.join("r.db").display());
        let code = "7k3qz9m2xw4r8t6v1n5p0h2j3d";
        {
            sqlx::any::install_default_drivers();
            let pool = sqlx::AnyPool::connect(&url).await.unwrap();
            for sql in [
                "CREATE TABLE sessions (code TEXT PRIMARY KEY, state TEXT NOT NULL, provisioner TEXT NOT NULL, choices TEXT NOT NULL, steps TEXT NOT NULL, resources TEXT NOT NULL, sealed TEXT NOT NULL, pool TEXT NOT NULL, client TEXT NOT NULL, created_ms BIGINT NOT NULL, last_used_ms BIGINT NOT NULL, hard_expires_ms BIGINT NOT NULL)",
                "CREATE TABLE bugs (id TEXT PRIMARY KEY, code TEXT NOT NULL, created_ms BIGINT NOT NULL, title TEXT NOT NULL, description TEXT NOT NULL, stack TEXT NOT NULL, requests TEXT NOT NULL)",
                "INSERT INTO sessions VALUES ('7k3qz9m2xw4r8t6v1n5p0h2j3d', 'ready', 'embedded', '{}', '[]', '{}', 'sealed', 'rust', 'tag', 1, 2, 3)",
                "INSERT INTO bugs VALUES ('b1', '7k3qz9m2xw4r8t6v1n5p0h2j3d', 5, 't', 'd', '{}', '[]')",
            ] {
                sqlx::query(sql).execute(&pool).await.unwrap();
            }
            pool.close().await;
        }
        let reg = Registry::connect(&url).await.unwrap();
        let rows = reg.sessions().await.unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].id, stacklab_types::session::id(code));
        assert_eq!(
            (rows[0].sealed.as_str(), rows[0].last_used_ms),
            ("sealed", 2)
        );
        let bugs = reg.bugs(10).await.unwrap();
        assert_eq!(bugs[0].session, stacklab_types::session::id(code));
        reg.close().await;
        // Opened again: already ids, nothing hashed twice.
        let reg = Registry::connect(&url).await.unwrap();
        assert_eq!(
            reg.sessions().await.unwrap()[0].id,
            stacklab_types::session::id(code)
        );
        reg.close().await;
        let bytes = std::fs::read(dir.join("r.db")).unwrap();
        assert!(
            !bytes.windows(code.len()).any(|w| w == code.as_bytes()),
            "the code is still in the file"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
