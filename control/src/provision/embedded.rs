//! `embedded`: a SQLite file of the session's own under `<data_dir>/sessions/`, and an
//! in-process cache (which lives in the backend instance that serves the session).

use super::{cache_spec, ProvisionError, ProvisionRequest, Provisioned, Provisioner, Steps};
use async_trait::async_trait;
use sqlx::Connection;
use stacklab_types::stack::{CacheEngine, DatabaseEngine, DatabaseSpec};
use stacklab_types::Secret;
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct Embedded {
    dir: PathBuf,
}

impl Embedded {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }
}

fn file_for(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.db"))
}

/// Makes the session's SQLite file and proves it answers a query; returns its spec.
pub async fn make_sqlite(dir: &Path, id: &str) -> Result<DatabaseSpec, ProvisionError> {
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        ProvisionError::new(
            Some("database"),
            format!("cannot {what} the SQLite file: {e}"),
        )
    };
    stacklab_proxy::config::create_private_dir(dir).map_err(|e| fail("make the folder for", &e))?;
    let path = file_for(dir, id);
    stacklab_proxy::config::create_private_file(&path).map_err(|e| fail("create", &e))?;
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let mut conn = sqlx::SqliteConnection::connect(&url)
        .await
        .map_err(|e| fail("create", &e))?;
    sqlx::query("PRAGMA journal_mode = WAL")
        .execute(&mut conn)
        .await
        .map_err(|e| fail("set up", &e))?;
    sqlx::query("SELECT 1")
        .execute(&mut conn)
        .await
        .map_err(|e| fail("query", &e))?;
    let _ = conn.close().await;
    Ok(DatabaseSpec {
        engine: DatabaseEngine::Sqlite,
        url: Secret::new(format!("sqlite://{}", path.display())),
        database: None,
    })
}

/// Removes a session's SQLite file and its WAL and shared-memory files.
pub fn remove_sqlite(dir: &Path, id: &str) -> Result<(), ProvisionError> {
    let base = file_for(dir, id);
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let p = PathBuf::from(format!("{}{suffix}", base.display()));
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(ProvisionError::new(
                    None,
                    format!("cannot remove {}: {e}", p.display()),
                ))
            }
        }
    }
    Ok(())
}

/// Session ids that have a SQLite file in `dir`.
pub fn sqlite_ids(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".db"))
                .map(str::to_owned)
        })
        .collect()
}

#[async_trait]
impl Provisioner for Embedded {
    fn name(&self) -> &'static str {
        "embedded"
    }

    fn available(&self) -> Result<(), String> {
        Ok(())
    }

    fn database(&self, engine: DatabaseEngine) -> Result<(), String> {
        match engine {
            DatabaseEngine::Sqlite => Ok(()),
            _ => Err("embedded gives SQLite only; choose the shared or docker provisioner".into()),
        }
    }

    fn cache(&self, engine: CacheEngine) -> Result<(), String> {
        match engine {
            CacheEngine::Memory | CacheEngine::None => Ok(()),
            _ => Err(
                "embedded gives the in-process cache only; choose the shared or docker provisioner"
                    .into(),
            ),
        }
    }

    async fn provision(
        &self,
        req: &ProvisionRequest<'_>,
        steps: &Steps,
    ) -> Result<Provisioned, ProvisionError> {
        let database = steps
            .run(
                "database: SQLite file",
                "created and answered SELECT 1",
                make_sqlite(&self.dir, req.id),
            )
            .await?;
        let cache = cache_spec(req);
        match req.choices.cache {
            CacheEngine::None => steps.skip("cache", "no cache chosen"),
            _ => steps.skip(
                "cache: in-process",
                "lives in the backend instance's memory; made on the first request",
            ),
        }
        Ok(Provisioned {
            database,
            cache,
            resources: serde_json::json!({"database": {"engine": "sqlite", "where": format!("{}.db (embedded file)", req.id)}, "cache": {"engine": format!("{:?}", req.choices.cache).to_lowercase(), "where": "in-process"}}),
            notes: vec![],
        })
    }

    async fn teardown(&self, id: &str, steps: &Steps) -> Result<(), ProvisionError> {
        steps
            .run("remove SQLite file", "removed", async {
                remove_sqlite(&self.dir, id)
            })
            .await
    }

    async fn leftovers(&self) -> Result<Vec<String>, ProvisionError> {
        Ok(sqlite_ids(&self.dir))
    }
}
