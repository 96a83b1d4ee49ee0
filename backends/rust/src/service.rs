//! The users service: the one place that decides what REST and GraphQL do, so the two
//! cannot drift.
//!
//! Reads go to the cache first, then to the database, and fill the cache; writes follow the
//! session's write policy — cache-aside invalidates the entry, write-through replaces it. The
//! cache holds a user in its stored form (hashes, ciphertext), like the database does, so
//! turning on encryption at rest also keeps plaintext out of the cache.
//!
//! Each call records into a [`Trace`]: time spent in the cache and in the database, and the
//! cache outcome, which the HTTP layer turns into `Server-Timing` and `x-stacklab-cache`.

use crate::cache::Cache;
use crate::config::Limits;
use crate::crypto::FieldCrypto;
use crate::error::ApiError;
use crate::password::Hasher;
use crate::storage::{Changes, NewUser, Search, StoreError, StoredUser, UserStore};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use stacklab_types::stack::{StackDescriptor, WritePolicy};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Cache entries live this long when the descriptor does not say.
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);

/// Where a read was answered from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheOutcome {
    Hit,
    Miss,
    Bypass,
}

impl CacheOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheOutcome::Hit => "hit",
            CacheOutcome::Miss => "miss",
            CacheOutcome::Bypass => "bypass",
        }
    }
}

/// Time spent per engine during one request, and the cache outcome.
#[derive(Debug, Default)]
pub struct Trace {
    inner: Mutex<TraceInner>,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct TraceInner {
    pub cache: Duration,
    pub db: Duration,
    pub outcome: Option<CacheOutcome>,
}

impl Trace {
    fn add_cache(&self, d: Duration) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).cache += d;
    }
    fn add_db(&self, d: Duration) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).db += d;
    }
    /// The first outcome of a request stands (a GraphQL query may read several users; a miss
    /// anywhere makes it a miss).
    pub fn outcome(&self, o: CacheOutcome) {
        let mut t = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        t.outcome = Some(match (t.outcome, o) {
            (Some(CacheOutcome::Miss), _) | (_, CacheOutcome::Miss) => CacheOutcome::Miss,
            (Some(CacheOutcome::Bypass), _) => CacheOutcome::Bypass,
            _ => o,
        });
    }
    pub fn snapshot(&self) -> TraceInner {
        *self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A user as the API returns it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub email: String,
    pub full_name: String,
    /// Exactly what the database holds in the password column.
    pub stored_password: String,
    /// Exactly what the database holds in the email column (ciphertext under encryption).
    pub stored_email: String,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub username: String,
    pub email: String,
    pub password: String,
    #[serde(default)]
    pub full_name: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub full_name: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Page {
    pub items: Vec<User>,
    pub total: i64,
    pub limit: i64,
    pub offset: i64,
}

/// The cache entry of a user: its stored form.
#[derive(Debug, Serialize, Deserialize)]
struct CachedUser {
    id: i64,
    username: String,
    email: String,
    full_name: String,
    password: String,
    created_at: i64,
    updated_at: i64,
}

impl From<&StoredUser> for CachedUser {
    fn from(u: &StoredUser) -> Self {
        CachedUser {
            id: u.id,
            username: u.username.clone(),
            email: u.email.clone(),
            full_name: u.full_name.clone(),
            password: u.password.clone(),
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}

impl From<CachedUser> for StoredUser {
    fn from(u: CachedUser) -> Self {
        StoredUser {
            id: u.id,
            username: u.username,
            email: u.email,
            full_name: u.full_name,
            password: u.password,
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}

/// One session's stack, open: its store, its cache, its secrets.
#[derive(Debug)]
pub struct Session {
    pub descriptor: Arc<StackDescriptor>,
    pub store: Arc<dyn UserStore>,
    pub cache: Arc<dyn Cache>,
    pub hasher: Hasher,
    crypto: Option<FieldCrypto>,
    limits: Arc<Limits>,
    /// Unix millis of the last request, for closing idle sessions.
    pub last_used: AtomicU64,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn store_err(e: StoreError, username: &str, email: &str) -> ApiError {
    match e {
        StoreError::Conflict { field } => ApiError::Conflict {
            field,
            value: if field == "email" {
                email.to_owned()
            } else {
                username.to_owned()
            },
        },
        StoreError::Unavailable(reason) => ApiError::Unavailable {
            engine: "the database".into(),
            reason,
        },
    }
}

impl Session {
    pub fn new(
        descriptor: Arc<StackDescriptor>,
        store: Arc<dyn UserStore>,
        cache: Arc<dyn Cache>,
        limits: Arc<Limits>,
        guards: Arc<crate::guard::Guards>,
    ) -> Result<Self, ApiError> {
        let crypto = match descriptor.encryption {
            stacklab_types::stack::Encryption::None => None,
            stacklab_types::stack::Encryption::Aes256Gcm => {
                Some(FieldCrypto::new(&descriptor.encryption_key)?)
            }
        };
        let hasher = Hasher {
            mode: descriptor.password_storage,
            bcrypt_cost: limits.bcrypt_cost,
            pepper: descriptor.pepper.clone(),
            gate: guards,
        };
        Ok(Self {
            descriptor,
            store,
            cache,
            hasher,
            crypto,
            limits,
            last_used: AtomicU64::new(now_ms() as u64),
        })
    }

    pub fn touch(&self) {
        self.last_used.store(now_ms() as u64, Relaxed);
    }

    fn ttl(&self) -> Duration {
        match self.descriptor.cache.ttl_ms {
            0 => DEFAULT_TTL,
            ms => Duration::from_millis(ms),
        }
    }

    fn seal(&self, v: &str) -> Result<String, ApiError> {
        match &self.crypto {
            Some(c) => c.seal(v),
            None => Ok(v.to_owned()),
        }
    }

    fn email_key(&self, lower: &str) -> String {
        match &self.crypto {
            Some(c) => c.index(lower),
            None => lower.to_owned(),
        }
    }

    fn to_user(&self, s: StoredUser) -> Result<User, ApiError> {
        let (email, full_name) = match &self.crypto {
            Some(c) => (
                c.open(&s.email)?,
                if s.full_name.is_empty() {
                    String::new()
                } else {
                    c.open(&s.full_name)?
                },
            ),
            None => (s.email.clone(), s.full_name.clone()),
        };
        Ok(User {
            id: s.id,
            username: s.username,
            email,
            full_name,
            stored_password: s.password,
            stored_email: s.email,
            created_at: s.created_at,
            updated_at: s.updated_at,
        })
    }

    async fn db<T>(&self, trace: &Trace, f: impl std::future::Future<Output = T>) -> T {
        let t = Instant::now();
        let out = f.await;
        trace.add_db(t.elapsed());
        out
    }

    fn key(id: i64) -> String {
        format!("user:{id}")
    }

    async fn cache_put(&self, u: &StoredUser, trace: &Trace) {
        let t = Instant::now();
        let value = serde_json::to_vec(&CachedUser::from(u)).unwrap_or_default();
        if let Err(e) = self
            .cache
            .set(&Self::key(u.id), Bytes::from(value), Some(self.ttl()))
            .await
        {
            // A cache that fails is a slower request, not a failed one.
            tracing::warn!(session = %crate::sessions::log_id(&self.descriptor.session), error = %e, "cache write failed");
        }
        trace.add_cache(t.elapsed());
    }

    async fn cache_drop(&self, id: i64, trace: &Trace) {
        let t = Instant::now();
        if let Err(e) = self.cache.delete(&Self::key(id)).await {
            tracing::warn!(session = %crate::sessions::log_id(&self.descriptor.session), error = %e, "cache delete failed");
        }
        trace.add_cache(t.elapsed());
    }

    /// After a write: write-through puts the new row in the cache, cache-aside drops it.
    async fn after_write(&self, u: &StoredUser, trace: &Trace) {
        match self.descriptor.write_policy {
            WritePolicy::WriteThrough => self.cache_put(u, trace).await,
            WritePolicy::CacheAside => self.cache_drop(u.id, trace).await,
        }
    }

    pub async fn create(&self, input: CreateUser, trace: &Trace) -> Result<User, ApiError> {
        let username = self.limits.username(&input.username)?;
        let email = self.limits.email(&input.email)?;
        self.limits.password(&input.password)?;
        let full_name = self
            .limits
            .full_name(input.full_name.as_deref().unwrap_or(""))?;
        let now = now_ms();
        let new = NewUser {
            username_key: username.to_lowercase(),
            email_key: self.email_key(&email.to_lowercase()),
            email: self.seal(&email)?,
            full_name: if full_name.is_empty() {
                String::new()
            } else {
                self.seal(&full_name)?
            },
            password: self.hasher.hash(&input.password).await?,
            username: username.clone(),
            now,
        };
        let id = self
            .db(trace, self.store.insert(&new))
            .await
            .map_err(|e| store_err(e, &username, &email))?;
        let stored = StoredUser {
            id,
            username: new.username,
            email: new.email,
            full_name: new.full_name,
            password: new.password,
            created_at: now,
            updated_at: now,
        };
        if self.descriptor.write_policy == WritePolicy::WriteThrough {
            self.cache_put(&stored, trace).await;
        }
        trace.outcome(CacheOutcome::Bypass);
        self.to_user(stored)
    }

    async fn load(&self, id: i64, trace: &Trace) -> Result<StoredUser, ApiError> {
        let t = Instant::now();
        let cached = self.cache.get(&Self::key(id)).await;
        trace.add_cache(t.elapsed());
        match cached {
            Ok(Some(bytes)) => {
                if let Ok(u) = serde_json::from_slice::<CachedUser>(&bytes) {
                    trace.outcome(CacheOutcome::Hit);
                    return Ok(u.into());
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(session = %crate::sessions::log_id(&self.descriptor.session), error = %e, "cache read failed")
            }
        }
        trace.outcome(
            if self.cache.engine() == stacklab_types::stack::CacheEngine::None {
                CacheOutcome::Bypass
            } else {
                CacheOutcome::Miss
            },
        );
        let stored = self
            .db(trace, self.store.get(id))
            .await
            .map_err(|e| store_err(e, "", ""))?
            .ok_or(ApiError::NotFound {
                what: "user",
                id: id.to_string(),
            })?;
        self.cache_put(&stored, trace).await;
        Ok(stored)
    }

    pub async fn get(&self, id: i64, trace: &Trace) -> Result<User, ApiError> {
        let stored = self.load(id, trace).await?;
        self.to_user(stored)
    }

    pub async fn list(
        &self,
        q: Option<&str>,
        limit: Option<i64>,
        offset: Option<i64>,
        trace: &Trace,
    ) -> Result<Page, ApiError> {
        let limit = limit.unwrap_or(20);
        let offset = offset.unwrap_or(0);
        if !(1..=self.limits.max_page).contains(&limit) {
            return Err(ApiError::invalid(
                "limit",
                format!("limit must be between 1 and {}", self.limits.max_page),
            ));
        }
        if offset < 0 {
            return Err(ApiError::invalid("offset", "offset cannot be negative"));
        }
        let search = match q.map(str::trim).filter(|q| !q.is_empty()) {
            None => Search::All,
            Some(q) => {
                if q.chars().count() > self.limits.max_email {
                    return Err(ApiError::invalid(
                        "q",
                        format!(
                            "search text is at most {} characters",
                            self.limits.max_email
                        ),
                    ));
                }
                if q.contains('\0') {
                    // No row can hold it (see `Limits::password`), and PostgreSQL refuses it.
                    return Err(ApiError::invalid(
                        "q",
                        "search text cannot contain the NUL character",
                    ));
                }
                let lower = q.to_lowercase();
                let email_index = self.crypto.as_ref().map(|c| c.index(&lower));
                Search::Text { lower, email_index }
            }
        };
        let (rows, total) = self
            .db(trace, self.store.search(&search, limit, offset))
            .await
            .map_err(|e| store_err(e, "", ""))?;
        trace.outcome(CacheOutcome::Bypass);
        let items = rows
            .into_iter()
            .map(|r| self.to_user(r))
            .collect::<Result<_, _>>()?;
        Ok(Page {
            items,
            total,
            limit,
            offset,
        })
    }

    pub async fn update(
        &self,
        id: i64,
        input: UpdateUser,
        trace: &Trace,
    ) -> Result<User, ApiError> {
        let mut changes = Changes {
            now: now_ms(),
            ..Default::default()
        };
        let mut username = String::new();
        let mut email = String::new();
        if let Some(u) = &input.username {
            username = self.limits.username(u)?;
            changes.username = Some((username.clone(), username.to_lowercase()));
        }
        if let Some(e) = &input.email {
            email = self.limits.email(e)?;
            changes.email = Some((self.seal(&email)?, self.email_key(&email.to_lowercase())));
        }
        if let Some(f) = &input.full_name {
            let f = self.limits.full_name(f)?;
            changes.full_name = Some(if f.is_empty() {
                String::new()
            } else {
                self.seal(&f)?
            });
        }
        if let Some(p) = &input.password {
            self.limits.password(p)?;
            changes.password = Some(self.hasher.hash(p).await?);
        }
        let stored = self
            .db(trace, self.store.update(id, &changes))
            .await
            .map_err(|e| store_err(e, &username, &email))?
            .ok_or(ApiError::NotFound {
                what: "user",
                id: id.to_string(),
            })?;
        self.after_write(&stored, trace).await;
        trace.outcome(CacheOutcome::Bypass);
        self.to_user(stored)
    }

    pub async fn delete(&self, id: i64, trace: &Trace) -> Result<(), ApiError> {
        let gone = self
            .db(trace, self.store.delete(id))
            .await
            .map_err(|e| store_err(e, "", ""))?;
        self.cache_drop(id, trace).await;
        trace.outcome(CacheOutcome::Bypass);
        if gone {
            Ok(())
        } else {
            Err(ApiError::NotFound {
                what: "user",
                id: id.to_string(),
            })
        }
    }

    pub async fn verify_password(
        &self,
        id: i64,
        password: &str,
        trace: &Trace,
    ) -> Result<bool, ApiError> {
        if password.len() > self.limits.max_password {
            return Ok(false);
        }
        let stored = self.load(id, trace).await?;
        self.hasher.verify(password, &stored.password).await
    }
}
