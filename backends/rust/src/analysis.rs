//! Analysis: how big the session's data is, how its cache is doing, and how fast its stack
//! reads, writes and hashes, measured on demand.
//!
//! The benchmark is bounded (`limits.max_benchmark_ops` reads and writes each), writes rows of
//! its own (usernames `bench-…`) and removes them after, so a session's data is left as it was.
//! Writes go straight to the store with a precomputed password so the figure is the
//! database's, not the hash function's; hashing is measured per mode on its own (through the
//! instance's hashing gate, like any hash). One benchmark per session at a time, and at most
//! `max_concurrent_benchmarks` per instance ([`crate::guard`]).

use crate::config::Limits;
use crate::error::ApiError;
use crate::http::Body;
use crate::password::Hasher;
use crate::service::{Session, Trace};
use crate::storage::NewUser;
use http::{Response, StatusCode};
use serde::{Deserialize, Serialize};
use stacklab_types::stack::PasswordStorage;
use std::time::{Duration, Instant};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BenchmarkInput {
    #[serde(default = "default_ops")]
    pub reads: u32,
    #[serde(default = "default_ops")]
    pub writes: u32,
}

fn default_ops() -> u32 {
    200
}

#[derive(Debug, Serialize)]
pub struct Figures {
    pub ops: usize,
    pub ops_per_sec: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    /// Latencies in milliseconds, for the UI's distribution chart (at most 500, evenly picked).
    pub samples_ms: Vec<f64>,
}

fn figures(mut d: Vec<Duration>, wall: Duration) -> Figures {
    d.sort_unstable();
    let ms = |x: &Duration| x.as_secs_f64() * 1000.0;
    let pct = |p: f64| {
        d.get(((d.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .map_or(0.0, ms)
    };
    let step = (d.len() / 500).max(1);
    Figures {
        ops: d.len(),
        ops_per_sec: if wall.is_zero() {
            0.0
        } else {
            d.len() as f64 / wall.as_secs_f64()
        },
        p50_ms: pct(0.50),
        p95_ms: pct(0.95),
        p99_ms: pct(0.99),
        samples_ms: d.iter().step_by(step).map(ms).collect(),
    }
}

pub async fn overview(session: &Session) -> Result<Response<Body>, ApiError> {
    let db = session
        .store
        .stats()
        .await
        .map_err(|e| ApiError::Unavailable {
            engine: "the database".into(),
            reason: e.to_string(),
        })?;
    let cache = session.cache.stats().await?;
    let lookups = cache.hits + cache.misses;
    let body = serde_json::json!({
        "database": db,
        "cache": {
            "engine": session.cache.engine(),
            "stats": cache,
            "hit_ratio": if lookups == 0 { None } else { Some(cache.hits as f64 / lookups as f64) },
        },
    });
    json(&body)
}

fn json<T: Serialize>(v: &T) -> Result<Response<Body>, ApiError> {
    let bytes = serde_json::to_vec(v).map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut res = Response::new(Body::new(bytes.into()));
    *res.status_mut() = StatusCode::OK;
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Ok(res)
}

pub async fn benchmark(
    session: &Session,
    limits: &Limits,
    input: BenchmarkInput,
) -> Result<Response<Body>, ApiError> {
    let max = limits.max_benchmark_ops;
    if input.reads == 0 || input.reads > max {
        return Err(ApiError::invalid(
            "reads",
            format!("reads is between 1 and {max}"),
        ));
    }
    if input.writes == 0 || input.writes > max {
        return Err(ApiError::invalid(
            "writes",
            format!("writes is between 1 and {max}"),
        ));
    }
    let tag: u32 = rand::random();
    let password = session.hasher.hash("benchmark-password").await?;
    let store_err = |e: crate::storage::StoreError| ApiError::Unavailable {
        engine: "the database".into(),
        reason: e.to_string(),
    };

    // Writes.
    let mut ids = Vec::with_capacity(input.writes as usize);
    let mut lat = Vec::with_capacity(input.writes as usize);
    let wall = Instant::now();
    for i in 0..input.writes {
        let name = format!("bench-{tag:08x}-{i}");
        let user = NewUser {
            username_key: name.clone(),
            email_key: format!("{name}@bench.invalid"),
            email: format!("{name}@bench.invalid"),
            full_name: String::new(),
            password: password.clone(),
            username: name,
            now: 0,
        };
        let t = Instant::now();
        let id = session.store.insert(&user).await.map_err(store_err);
        lat.push(t.elapsed());
        match id {
            Ok(id) => ids.push(id),
            Err(e) => {
                cleanup(session, &ids).await;
                return Err(e);
            }
        }
    }
    let writes = figures(lat, wall.elapsed());

    // Database reads, then reads through the cache (the first read of each fills it).
    let trace = Trace::default();
    let mut db_lat = Vec::with_capacity(input.reads as usize);
    let wall = Instant::now();
    for i in 0..input.reads as usize {
        let id = ids[i % ids.len()];
        let t = Instant::now();
        session.store.get(id).await.map_err(store_err)?;
        db_lat.push(t.elapsed());
    }
    let db_reads = figures(db_lat, wall.elapsed());
    for id in ids.iter().take(input.reads as usize) {
        let _ = session.get(*id, &trace).await;
    }
    let mut cache_lat = Vec::with_capacity(input.reads as usize);
    let wall = Instant::now();
    for i in 0..input.reads as usize {
        let id = ids[i % ids.len().min(input.reads as usize)];
        let t = Instant::now();
        let _ = session.get(id, &trace).await;
        cache_lat.push(t.elapsed());
    }
    let cached_reads = figures(cache_lat, wall.elapsed());
    cleanup(session, &ids).await;

    // Hashing, each mode, a few times.
    let mut hashing = Vec::new();
    for mode in [
        PasswordStorage::Plaintext,
        PasswordStorage::Sha256,
        PasswordStorage::Bcrypt,
        PasswordStorage::BcryptPepper,
        PasswordStorage::Argon2id,
    ] {
        let h = Hasher {
            mode,
            bcrypt_cost: limits.bcrypt_cost,
            pepper: stacklab_types::Secret::new("benchmark-pepper"),
            gate: std::sync::Arc::clone(&session.hasher.gate),
        };
        let mut lat = Vec::new();
        for _ in 0..3 {
            let t = Instant::now();
            h.hash("correct horse battery").await?;
            lat.push(t.elapsed());
        }
        let f = figures(lat, Duration::ZERO);
        hashing.push(serde_json::json!({"mode": mode, "ms": f.p50_ms}));
    }
    json(&serde_json::json!({
        "writes": writes,
        "db_reads": db_reads,
        "cached_reads": cached_reads,
        "cache_engine": session.cache.engine(),
        "password_hashing": hashing,
    }))
}

async fn cleanup(session: &Session, ids: &[i64]) {
    let trace = Trace::default();
    for id in ids {
        let _ = session.delete(*id, &trace).await;
    }
}
