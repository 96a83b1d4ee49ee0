//! Storage adapters behind one trait, each with its own schema set-up.
//!
//! The service layer hands adapters values already in their stored form (hashed passwords,
//! sealed personal fields, lower-cased or blind-indexed keys), so an adapter only stores and
//! finds rows: parameterized queries only, uniqueness enforced by the database's own unique
//! indexes (a violation comes back as [`StoreError::Conflict`] naming the field).
//!
//! # Layout
//! - [`sql`]: SQLite, PostgreSQL and MySQL/MariaDB through sqlx's `Any` driver, with the few
//!   dialect differences (placeholders, DDL, catalog size queries) in one place.
//! - [`mongo`]: MongoDB through the `mongodb` crate (tested against the wire-compatible stand-in
//!   scripts/test starts, or a real server given in `STACKLAB_TEST_MONGO_URL`).

pub mod mongo;
pub mod sql;

use async_trait::async_trait;
use serde::Serialize;
use stacklab_types::stack::{DatabaseEngine, DatabaseSpec};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{field} is already taken")]
    Conflict { field: &'static str },
    #[error("{0}")]
    Unavailable(String),
}

/// A row as the database holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredUser {
    pub id: i64,
    pub username: String,
    /// Plain, or `v1:…` ciphertext under encryption at rest.
    pub email: String,
    pub full_name: String,
    /// Exactly what the password column holds.
    pub password: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A row to insert, every value in its stored form.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub username: String,
    /// Lower-cased username: the unique, searchable key.
    pub username_key: String,
    pub email: String,
    /// Lower-cased email, or its blind index under encryption at rest.
    pub email_key: String,
    pub full_name: String,
    pub password: String,
    pub now: i64,
}

/// Columns to change; `None` leaves a column as it is.
#[derive(Debug, Clone, Default)]
pub struct Changes {
    pub username: Option<(String, String)>,
    pub email: Option<(String, String)>,
    pub full_name: Option<String>,
    pub password: Option<String>,
    pub now: i64,
}

/// What a search matches.
#[derive(Debug, Clone)]
pub enum Search {
    All,
    /// Case-insensitive substring of the username, and of the email where it is stored
    /// plain; an exact blind-index match of the email where it is encrypted.
    Text {
        lower: String,
        email_index: Option<String>,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct DbStats {
    pub engine: DatabaseEngine,
    /// From the engine's own catalog.
    pub size_bytes: i64,
    pub rows: i64,
}

#[async_trait]
pub trait UserStore: Send + Sync + std::fmt::Debug {
    fn engine(&self) -> DatabaseEngine;
    async fn insert(&self, user: &NewUser) -> Result<i64, StoreError>;
    async fn get(&self, id: i64) -> Result<Option<StoredUser>, StoreError>;
    /// One page and the number of all matches.
    async fn search(
        &self,
        search: &Search,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<StoredUser>, i64), StoreError>;
    async fn update(&self, id: i64, changes: &Changes) -> Result<Option<StoredUser>, StoreError>;
    async fn delete(&self, id: i64) -> Result<bool, StoreError>;
    async fn stats(&self) -> Result<DbStats, StoreError>;
    async fn close(&self);
}

/// Opens the store a descriptor names and makes sure its schema exists.
pub async fn connect(
    spec: &DatabaseSpec,
    max_connections: u32,
) -> Result<Arc<dyn UserStore>, StoreError> {
    match spec.engine {
        DatabaseEngine::Sqlite | DatabaseEngine::Postgres | DatabaseEngine::Mysql => Ok(Arc::new(
            sql::SqlStore::connect(spec, max_connections).await?,
        )),
        DatabaseEngine::Mongodb => Ok(Arc::new(
            mongo::MongoStore::connect(spec, max_connections).await?,
        )),
    }
}
