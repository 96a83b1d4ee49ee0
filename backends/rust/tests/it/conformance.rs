use crate::helpers::*;
use serde_json::json;
use stacklab_types::stack::{Encryption, PasswordStorage, WritePolicy};

/// The whole users contract, for one database × cache pair and one write policy.
async fn suite(db: Db, kv: Kv, policy: WritePolicy) {
    let Some(stack) = stack(db, kv, policy, PasswordStorage::Bcrypt, Encryption::None).await else {
        return;
    };
    let backend = Backend::start().await;
    backend.stacks.insert(stack.descriptor.clone());
    let api = Api::new(&backend, &stack.descriptor.session);
    let combo = format!("{db:?} x {kv:?} ({policy:?})");

    // Create.
    let ann = api.call("POST", "/api/users", Some(json!({"username": "Ann", "email": "ann@example.com", "password": "correct horse", "full_name": "Ann Lee"}))).await;
    assert_eq!(ann.status, 201, "{combo}: {:?}", ann.body);
    let id = ann.body["id"].as_i64().unwrap();
    assert_eq!(ann.body["username"], "Ann");
    assert_eq!(ann.body["email"], "ann@example.com");
    assert!(
        ann.body["stored_password"]
            .as_str()
            .unwrap()
            .starts_with("$2b$04$"),
        "{combo}"
    );
    assert_eq!(
        raw_column(&stack, id, "password").await,
        ann.body["stored_password"].as_str().unwrap(),
        "{combo}: stored_password is what the row holds"
    );
    let timing = ann.headers["server-timing"].to_str().unwrap();
    assert!(
        timing.contains("backend;dur=")
            && timing.contains("cache;dur=")
            && timing.contains("db;dur="),
        "{timing}"
    );
    for (i, name) in ["bob", "bobby", "carol", "dave_bob"].iter().enumerate() {
        let r = api.call("POST", "/api/users", Some(json!({"username": name, "email": format!("{name}{i}@example.org"), "password": "password123"}))).await;
        assert_eq!(r.status, 201, "{combo}: {:?}", r.body);
    }

    // Conflicts come from the database's unique indexes, named by field, whatever the case.
    let r = api
        .call(
            "POST",
            "/api/users",
            Some(
                json!({"username": "ANN", "email": "other@example.com", "password": "password123"}),
            ),
        )
        .await;
    assert_eq!(
        (r.status, r.code(), r.field()),
        (409, "conflict", "username"),
        "{combo}: {:?}",
        r.body
    );
    let r = api
        .call(
            "POST",
            "/api/users",
            Some(
                json!({"username": "ann2", "email": "ANN@example.com", "password": "password123"}),
            ),
        )
        .await;
    assert_eq!(
        (r.status, r.field()),
        (409, "email"),
        "{combo}: {:?}",
        r.body
    );

    // Reads: cache, then database, per the write policy.
    let first = api.call("GET", &format!("/api/users/{id}"), None).await;
    assert_eq!(first.status, 200);
    let second = api.call("GET", &format!("/api/users/{id}"), None).await;
    match (kv, policy) {
        (Kv::None, _) => assert_eq!(
            (first.cache(), second.cache()),
            ("bypass", "bypass"),
            "{combo}"
        ),
        (_, WritePolicy::CacheAside) => {
            assert_eq!((first.cache(), second.cache()), ("miss", "hit"), "{combo}")
        }
        (_, WritePolicy::WriteThrough) => assert_eq!(
            (first.cache(), second.cache()),
            ("hit", "hit"),
            "{combo}: creation filled the cache"
        ),
    }
    assert_eq!(second.body, first.body);

    // An update: cache-aside drops the entry (next read misses), write-through replaces it.
    let r = api
        .call(
            "PATCH",
            &format!("/api/users/{id}"),
            Some(json!({"email": "ann.lee@example.com"})),
        )
        .await;
    assert_eq!(r.status, 200, "{combo}: {:?}", r.body);
    let after = api.call("GET", &format!("/api/users/{id}"), None).await;
    assert_eq!(
        after.body["email"], "ann.lee@example.com",
        "{combo}: never a stale read"
    );
    match (kv, policy) {
        (Kv::None, _) => assert_eq!(after.cache(), "bypass"),
        (_, WritePolicy::CacheAside) => assert_eq!(after.cache(), "miss", "{combo}"),
        (_, WritePolicy::WriteThrough) => assert_eq!(after.cache(), "hit", "{combo}"),
    }

    // Search: case-insensitive, paged, with a total; wildcards and quotes are text.
    let r = api
        .call("GET", "/api/users?q=BOB&limit=2&offset=0", None)
        .await;
    assert_eq!(r.body["total"], 3, "{combo}: {:?}", r.body);
    assert_eq!(r.body["items"].as_array().unwrap().len(), 2);
    let r2 = api
        .call("GET", "/api/users?q=bob&limit=2&offset=2", None)
        .await;
    assert_eq!(r2.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(r.cache(), "bypass");
    let r = api.call("GET", "/api/users?q=example.org", None).await;
    assert_eq!(r.body["total"], 4, "{combo}: email search");
    for injection in [
        "%27%20OR%201%3D1%20--",
        "%25",
        "%22%3B%20DROP%20TABLE%20users%3B",
    ] {
        let r = api
            .call("GET", &format!("/api/users?q={injection}"), None)
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.body["total"], 0,
            "{combo}: `{injection}` matched something: {:?}",
            r.body
        );
    }
    let r = api.call("GET", "/api/users?q=_", None).await;
    assert_eq!(
        r.body["total"], 1,
        "{combo}: `_` is a literal underscore (dave_bob), not a wildcard"
    );
    let all = api.call("GET", "/api/users", None).await;
    assert_eq!(
        all.body["total"], 5,
        "{combo}: injection attempts changed nothing"
    );

    // Passwords.
    let r = api
        .call(
            "POST",
            &format!("/api/users/{id}/verify-password"),
            Some(json!({"password": "correct horse"})),
        )
        .await;
    assert_eq!(r.body["ok"], true, "{combo}");
    let r = api
        .call(
            "POST",
            &format!("/api/users/{id}/verify-password"),
            Some(json!({"password": "wrong horse"})),
        )
        .await;
    assert_eq!(r.body["ok"], false);

    // Delete.
    let r = api.call("DELETE", &format!("/api/users/{id}"), None).await;
    assert_eq!(r.status, 200);
    let r = api.call("GET", &format!("/api/users/{id}"), None).await;
    assert_eq!(
        (r.status, r.code()),
        (404, "not_found"),
        "{combo}: deleted users are gone from the cache too"
    );

    // The cache view and analysis answer for every engine.
    let cache = api.call("GET", "/api/cache", None).await;
    assert_eq!(cache.status, 200, "{combo}: {:?}", cache.body);
    assert!(cache.body["items"].as_array().unwrap().len() <= 20);
    let analysis = api.call("GET", "/api/analysis", None).await;
    assert_eq!(analysis.status, 200, "{combo}: {:?}", analysis.body);
    assert_eq!(analysis.body["database"]["rows"], 4);
    assert!(
        analysis.body["database"]["size_bytes"].as_i64().unwrap() > 0,
        "{combo}: size from the catalog"
    );

    // GraphQL runs on the same service.
    let r = api.graphql("query($q: String) { users(q: $q, limit: 10) { total items { username storedPassword } } }", json!({"q": "bob"})).await;
    assert_eq!(r.body["data"]["users"]["total"], 3, "{combo}: {:?}", r.body);
    let r = api
        .graphql("mutation { createUser(input: {username: \"gql\", email: \"gql@example.com\", password: \"password123\"}) { id email } }", json!({}))
        .await;
    assert_eq!(
        r.body["data"]["createUser"]["email"], "gql@example.com",
        "{combo}: {:?}",
        r.body
    );
    let r = api
        .graphql("mutation { createUser(input: {username: \"gql\", email: \"x@example.com\", password: \"password123\"}) { id } }", json!({}))
        .await;
    assert_eq!(
        r.body["errors"][0]["extensions"]["code"], "conflict",
        "{combo}: {:?}",
        r.body
    );
    assert_eq!(r.body["errors"][0]["extensions"]["field"], "username");

    // A second session on the same engine never sees the first one's rows.
    let Some(other) =
        crate::helpers::stack(db, kv, policy, PasswordStorage::Plaintext, Encryption::None).await
    else {
        return;
    };
    backend.stacks.insert(other.descriptor.clone());
    let api2 = Api::new(&backend, &other.descriptor.session);
    let r = api2.call("GET", "/api/users", None).await;
    assert_eq!(r.body["total"], 0, "{combo}: sessions are isolated");
    let r = api2.call("GET", "/api/users/2", None).await;
    assert_eq!(
        r.status, 404,
        "{combo}: another session's id is not found here"
    );
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
            raw_email.starts_with("v1:") && !raw_email.to_lowercase().contains("eve"),
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
