//! MongoDB through the `mongodb` crate.
//!
//! Rows are documents with an integer `_id` from a counter document (so ids look the same on
//! every engine), unique indexes on `username_key` and `email_key` enforce uniqueness the way
//! SQL unique constraints do, and search text is matched with an escaped `$regex` — filters
//! are built from typed values here, never from the client's JSON, so an operator such as
//! `{"$gt": ""}` sent as a value is only ever a string.
//!
//! No MongoDB server can be installed on the machine this project is built on: scripts/test
//! runs this adapter's tests against SecantusDB, a MongoDB-wire-compatible stand-in, or
//! against the real server `STACKLAB_TEST_MONGO_URL` names (see the README).

use super::{Changes, DbStats, NewUser, Search, StoreError, StoredUser, UserStore};
use async_trait::async_trait;
use futures_util::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use mongodb::options::{ClientOptions, IndexOptions, ReturnDocument};
use mongodb::{Client, Collection, Database, IndexModel};
use stacklab_types::stack::{DatabaseEngine, DatabaseSpec};
use std::time::Duration;

#[derive(Debug)]
pub struct MongoStore {
    client: Client,
    db: Database,
    users: Collection<Document>,
    counters: Collection<Document>,
}

fn unavailable(what: &str, e: &mongodb::error::Error) -> StoreError {
    StoreError::Unavailable(format!("MongoDB could not {what}: {}", e.kind))
}

fn conflict(e: &mongodb::error::Error) -> Option<StoreError> {
    use mongodb::error::{ErrorKind, WriteFailure};
    let message = match &*e.kind {
        ErrorKind::Write(WriteFailure::WriteError(w)) if w.code == 11000 => w.message.clone(),
        ErrorKind::Command(c) if c.code == 11000 => c.message.clone(),
        _ => return None,
    };
    Some(StoreError::Conflict {
        field: if message.contains("email") {
            "email"
        } else {
            "username"
        },
    })
}

/// Escapes regular-expression syntax so search text matches literally.
pub fn regex_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\^$.|?*+()[]{}-/".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn num(d: &Document, key: &str) -> i64 {
    match d.get(key) {
        Some(Bson::Int32(v)) => i64::from(*v),
        Some(Bson::Int64(v)) => *v,
        Some(Bson::Double(v)) => *v as i64,
        _ => 0,
    }
}

fn to_user(d: &Document) -> StoredUser {
    let s = |k: &str| d.get_str(k).unwrap_or_default().to_owned();
    StoredUser {
        id: num(d, "_id"),
        username: s("username"),
        email: s("email"),
        full_name: s("full_name"),
        password: s("password"),
        created_at: num(d, "created_at"),
        updated_at: num(d, "updated_at"),
    }
}

impl MongoStore {
    /// The driver's own pool, bounded as the SQL stores' are: at most `max_connections`
    /// connections, idle ones closed after a minute, 5 s to find the server.
    pub async fn connect(spec: &DatabaseSpec, max_connections: u32) -> Result<Self, StoreError> {
        let mut opts = ClientOptions::parse(spec.url.expose()).await.map_err(|e| {
            StoreError::Unavailable(format!("the MongoDB URL is not valid: {}", e.kind))
        })?;
        opts.max_pool_size = Some(max_connections.max(1));
        opts.min_pool_size = Some(0);
        opts.max_idle_time = Some(Duration::from_secs(60));
        opts.server_selection_timeout = Some(Duration::from_secs(5));
        opts.connect_timeout = Some(Duration::from_secs(5));
        let client = Client::with_options(opts)
            .map_err(|e| StoreError::Unavailable(format!("cannot reach MongoDB: {}", e.kind)))?;
        let name = spec
            .database
            .clone()
            .or_else(|| client.default_database().map(|d| d.name().to_owned()))
            .unwrap_or_else(|| "stacklab".to_owned());
        let db = client.database(&name);
        db.run_command(doc! {"ping": 1})
            .await
            .map_err(|e| unavailable("answer a ping", &e))?;
        let users = db.collection::<Document>("users");
        for key in ["username_key", "email_key"] {
            let index = IndexModel::builder()
                .keys(doc! {key: 1})
                .options(
                    IndexOptions::builder()
                        .unique(true)
                        .name(format!("users_{key}"))
                        .build(),
                )
                .build();
            users
                .create_index(index)
                .await
                .map_err(|e| unavailable("create its indexes", &e))?;
        }
        let counters = db.collection::<Document>("counters");
        Ok(Self {
            client,
            db,
            users,
            counters,
        })
    }

    fn filter(search: &Search) -> Document {
        match search {
            Search::All => doc! {},
            Search::Text {
                lower,
                email_index: None,
            } => {
                let re = regex_literal(lower);
                doc! {"$or": [{"username_key": {"$regex": &re}}, {"email_key": {"$regex": &re}}]}
            }
            Search::Text {
                lower,
                email_index: Some(index),
            } => {
                doc! {"$or": [{"username_key": {"$regex": regex_literal(lower)}}, {"email_key": index}]}
            }
        }
    }
}

#[async_trait]
impl UserStore for MongoStore {
    fn engine(&self) -> DatabaseEngine {
        DatabaseEngine::Mongodb
    }

    async fn insert(&self, u: &NewUser) -> Result<i64, StoreError> {
        let counter = self
            .counters
            .find_one_and_update(doc! {"_id": "users"}, doc! {"$inc": {"seq": 1_i64}})
            .upsert(true)
            .return_document(ReturnDocument::After)
            .await
            .map_err(|e| unavailable("number the new user", &e))?
            .ok_or_else(|| StoreError::Unavailable("MongoDB returned no counter".into()))?;
        let id = num(&counter, "seq");
        let row = doc! {
            "_id": id,
            "username": &u.username, "username_key": &u.username_key,
            "email": &u.email, "email_key": &u.email_key,
            "full_name": &u.full_name, "password": &u.password,
            "created_at": u.now, "updated_at": u.now,
        };
        match self.users.insert_one(row).await {
            Ok(_) => Ok(id),
            Err(e) => Err(conflict(&e).unwrap_or_else(|| unavailable("insert", &e))),
        }
    }

    async fn get(&self, id: i64) -> Result<Option<StoredUser>, StoreError> {
        let found = self
            .users
            .find_one(doc! {"_id": id})
            .await
            .map_err(|e| unavailable("read", &e))?;
        Ok(found.as_ref().map(to_user))
    }

    async fn search(
        &self,
        search: &Search,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<StoredUser>, i64), StoreError> {
        let filter = Self::filter(search);
        let cursor = self
            .users
            .find(filter.clone())
            .sort(doc! {"_id": 1})
            .skip(offset.max(0) as u64)
            .limit(limit)
            .await
            .map_err(|e| unavailable("search", &e))?;
        let docs: Vec<Document> = cursor
            .try_collect()
            .await
            .map_err(|e| unavailable("search", &e))?;
        let total = self
            .users
            .count_documents(filter)
            .await
            .map_err(|e| unavailable("count", &e))?;
        Ok((docs.iter().map(to_user).collect(), total as i64))
    }

    async fn update(&self, id: i64, c: &Changes) -> Result<Option<StoredUser>, StoreError> {
        let mut set = doc! {"updated_at": c.now};
        if let Some((v, k)) = &c.username {
            set.insert("username", v);
            set.insert("username_key", k);
        }
        if let Some((v, k)) = &c.email {
            set.insert("email", v);
            set.insert("email_key", k);
        }
        if let Some(v) = &c.full_name {
            set.insert("full_name", v);
        }
        if let Some(v) = &c.password {
            set.insert("password", v);
        }
        match self
            .users
            .find_one_and_update(doc! {"_id": id}, doc! {"$set": set})
            .return_document(ReturnDocument::After)
            .await
        {
            Ok(found) => Ok(found.as_ref().map(to_user)),
            Err(e) => Err(conflict(&e).unwrap_or_else(|| unavailable("update", &e))),
        }
    }

    async fn delete(&self, id: i64) -> Result<bool, StoreError> {
        let done = self
            .users
            .delete_one(doc! {"_id": id})
            .await
            .map_err(|e| unavailable("delete", &e))?;
        Ok(done.deleted_count > 0)
    }

    async fn stats(&self) -> Result<DbStats, StoreError> {
        let rows = self
            .users
            .count_documents(doc! {})
            .await
            .map_err(|e| unavailable("count", &e))? as i64;
        let stats = self
            .db
            .run_command(doc! {"collStats": "users"})
            .await
            .map_err(|e| unavailable("read its size", &e))?;
        let size_bytes = num(&stats, "size") + num(&stats, "totalIndexSize");
        Ok(DbStats {
            engine: DatabaseEngine::Mongodb,
            size_bytes,
            rows,
        })
    }

    async fn close(&self) {
        self.client.clone().shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::regex_literal;

    #[test]
    fn regex_syntax_is_text() {
        assert_eq!(regex_literal("a.b*c"), "a\\.b\\*c");
        assert_eq!(regex_literal("^(x)$"), "\\^\\(x\\)\\$");
    }
}
