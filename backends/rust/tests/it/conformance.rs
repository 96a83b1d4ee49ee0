use crate::helpers::*;
use serde_json::json;
use stacklab_types::stack::{Encryption, PasswordStorage, WritePolicy};

/// The whole users contract (`suite::run`), for one database × cache pair and one write
/// policy, with a second session on the same engines for isolation.
async fn suite(db: Db, kv: Kv, policy: WritePolicy) {
    let Some(stack) = stack(db, kv, policy, PasswordStorage::Bcrypt, Encryption::None).await else {
        return;
    };
    let other = stack_or_none(db, kv, policy).await;
    let combo = format!("{db:?} x {kv:?} ({policy:?})");
    crate::suite::run(&stack, other.as_ref(), kv, policy, &combo).await;
}

async fn stack_or_none(db: Db, kv: Kv, policy: WritePolicy) -> Option<Stack> {
    stack(db, kv, policy, PasswordStorage::Plaintext, Encryption::None).await
}

macro_rules! combos {
    ($($name:ident: $db:ident, $kv:ident, $policy:ident;)*) => {
        $(
            #[tokio::test]
            async fn $name() {
                suite(Db::$db, Kv::$kv, WritePolicy::$policy).await;
            }
        )*
    };
}

combos! {
    sqlite_memory_aside: Sqlite, Memory, CacheAside;
    sqlite_memory_through: Sqlite, Memory, WriteThrough;
    sqlite_redis_aside: Sqlite, Redis, CacheAside;
    sqlite_memcached_aside: Sqlite, Memcached, CacheAside;
    sqlite_none: Sqlite, None, CacheAside;
    postgres_memory_aside: Postgres, Memory, CacheAside;
    postgres_redis_aside: Postgres, Redis, CacheAside;
    postgres_redis_through: Postgres, Redis, WriteThrough;
    postgres_memcached_through: Postgres, Memcached, WriteThrough;
    mysql_memory_aside: Mysql, Memory, CacheAside;
    mysql_redis_aside: Mysql, Redis, CacheAside;
    mysql_memcached_aside: Mysql, Memcached, CacheAside;
    mysql_memcached_through: Mysql, Memcached, WriteThrough;
    mongo_memory_aside: Mongo, Memory, CacheAside;
    mongo_redis_through: Mongo, Redis, WriteThrough;
}

/// Every password mode, read back raw from each database with its own driver.
#[tokio::test]
async fn every_password_mode_is_stored_as_it_says() {
    let backend = Backend::start().await;
    for db in [Db::Sqlite, Db::Postgres, Db::Mysql, Db::Mongo] {
        for mode in [
            PasswordStorage::Plaintext,
            PasswordStorage::Sha256,
            PasswordStorage::Bcrypt,
            PasswordStorage::BcryptPepper,
            PasswordStorage::Argon2id,
        ] {
            let Some(stack) = stack(
                db,
                Kv::Memory,
                WritePolicy::CacheAside,
                mode,
                Encryption::None,
            )
            .await
            else {
                continue;
            };
            backend.stacks.insert(stack.descriptor.clone());
            let api = Api::new(&backend, &stack.descriptor.session);
            let r = api.call("POST", "/api/users", Some(json!({"username": "pat", "email": "pat@example.com", "password": "hunter2hunter2"}))).await;
            assert_eq!(r.status, 201, "{db:?} {mode:?}: {:?}", r.body);
            let id = r.body["id"].as_i64().unwrap();
            let raw = raw_column(&stack, id, "password").await;
            assert_eq!(raw, r.body["stored_password"].as_str().unwrap());
            match mode {
                PasswordStorage::Plaintext => assert_eq!(raw, "hunter2hunter2"),
                PasswordStorage::Sha256 => {
                    use sha2::Digest;
                    let want: String = sha2::Sha256::digest(b"hunter2hunter2")
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect();
                    assert_eq!(raw, want, "unsalted SHA-256, hex");
                }
                PasswordStorage::Bcrypt | PasswordStorage::BcryptPepper => {
                    assert!(raw.starts_with("$2b$04$"), "{raw}")
                }
                PasswordStorage::Argon2id => assert!(raw.starts_with("$argon2id$"), "{raw}"),
            }
            if mode == PasswordStorage::BcryptPepper {
                assert!(
                    !bcrypt::verify("hunter2hunter2", &raw).unwrap(),
                    "the row alone does not verify without the pepper"
                );
            }
            for (password, ok) in [("hunter2hunter2", true), ("hunter3hunter3", false)] {
                let r = api
                    .call(
                        "POST",
                        &format!("/api/users/{id}/verify-password"),
                        Some(json!({"password": password})),
                    )
                    .await;
                assert_eq!(r.body["ok"], ok, "{db:?} {mode:?}");
            }
        }
    }
}

/// Encryption at rest: ciphertext in the row, plaintext through the API, search by blind index.
#[tokio::test]
async fn encrypted_fields_are_ciphertext_in_the_row_and_still_searchable() {
    let backend = Backend::start().await;
    for db in [Db::Sqlite, Db::Postgres, Db::Mysql, Db::Mongo] {
        let Some(stack) = stack(
            db,
            Kv::Memory,
            WritePolicy::CacheAside,
            PasswordStorage::Argon2id,
            Encryption::Aes256Gcm,
        )
        .await
        else {
            continue;
        };
        backend.stacks.insert(stack.descriptor.clone());
        let api = Api::new(&backend, &stack.descriptor.session);
        let r = api.call("POST", "/api/users", Some(json!({"username": "eve", "email": "Eve@Secret.example", "password": "password123", "full_name": "Eve Adams"}))).await;
        assert_eq!(r.status, 201, "{db:?}: {:?}", r.body);
        let id = r.body["id"].as_i64().unwrap();
        assert_eq!(r.body["email"], "Eve@Secret.example");
        let raw_email = raw_column(&stack, id, "email").await;
        assert!(
            // base64 has no '@' (a check for "eve" would fail on a ciphertext that has it by chance)
            raw_email.starts_with("v1:") && !raw_email.contains('@'),
            "{db:?}: {raw_email}"
        );
        assert_eq!(r.body["stored_email"], raw_email);
        let raw_name = raw_column(&stack, id, "full_name").await;
        assert!(raw_name.starts_with("v1:") && !raw_name.contains("Adams"));
        let key = raw_column(&stack, id, "email_key").await;
        assert!(
            !key.contains("eve") && key.len() == 64,
            "the blind index is an HMAC"
        );

        // Exact email (any case) finds it through the blind index; the username still by substring.
        let r = api
            .call("GET", "/api/users?q=eve%40secret.example", None)
            .await;
        assert_eq!(r.body["total"], 1, "{db:?}: {:?}", r.body);
        assert_eq!(r.body["items"][0]["email"], "Eve@Secret.example");
        let r = api.call("GET", "/api/users?q=EV", None).await;
        assert_eq!(r.body["total"], 1);
        // Uniqueness holds on ciphertext too.
        let r = api.call("POST", "/api/users", Some(json!({"username": "eve2", "email": "eve@secret.example", "password": "password123"}))).await;
        assert_eq!((r.status, r.field()), (409, "email"), "{db:?}");
    }
}

/// The on-demand benchmark runs bounded, leaves the data as it was, and reports figures.
/// (The figures are printed for the record; speed is not asserted here.)
#[tokio::test]
async fn the_benchmark_measures_and_leaves_no_trace() {
    let backend = Backend::start().await;
    for (db, kv) in [
        (Db::Sqlite, Kv::Memory),
        (Db::Postgres, Kv::Redis),
        (Db::Mysql, Kv::Memcached),
        (Db::Postgres, Kv::Memory),
    ] {
        let Some(stack) = stack(
            db,
            kv,
            WritePolicy::CacheAside,
            PasswordStorage::Argon2id,
            Encryption::None,
        )
        .await
        else {
            continue;
        };
        backend.stacks.insert(stack.descriptor.clone());
        let api = Api::new(&backend, &stack.descriptor.session);
        api.call(
            "POST",
            "/api/users",
            Some(
                json!({"username": "keep", "email": "keep@example.com", "password": "password123"}),
            ),
        )
        .await;
        let r = api
            .call(
                "POST",
                "/api/analysis/benchmark",
                Some(json!({"reads": 200, "writes": 200})),
            )
            .await;
        assert_eq!(r.status, 200, "{db:?} x {kv:?}: {:?}", r.body);
        let b = &r.body;
        for part in ["writes", "db_reads", "cached_reads"] {
            assert_eq!(b[part]["ops"], 200, "{part}");
            assert!(b[part]["p50_ms"].as_f64().unwrap() > 0.0);
            assert!(b[part]["p99_ms"].as_f64().unwrap() >= b[part]["p50_ms"].as_f64().unwrap());
        }
        assert_eq!(b["password_hashing"].as_array().unwrap().len(), 5);
        println!(
            "benchmark {db:?} x {kv:?}: db read p50 {:.3} ms p99 {:.3} ms; cache-hit read p50 {:.3} ms p99 {:.3} ms; write p50 {:.3} ms; hashing {}",
            b["db_reads"]["p50_ms"].as_f64().unwrap(),
            b["db_reads"]["p99_ms"].as_f64().unwrap(),
            b["cached_reads"]["p50_ms"].as_f64().unwrap(),
            b["cached_reads"]["p99_ms"].as_f64().unwrap(),
            b["writes"]["p50_ms"].as_f64().unwrap(),
            b["password_hashing"].as_array().unwrap().iter().map(|h| format!("{}={:.2}ms", h["mode"].as_str().unwrap(), h["ms"].as_f64().unwrap())).collect::<Vec<_>>().join(" "),
        );
        assert_eq!(
            raw_count(&stack).await,
            1,
            "{db:?}: the benchmark's rows are gone"
        );
        let r = api
            .call(
                "POST",
                "/api/analysis/benchmark",
                Some(json!({"reads": 100000, "writes": 1})),
            )
            .await;
        assert_eq!((r.status, r.field()), (400, "reads"), "bounded");
    }
}
