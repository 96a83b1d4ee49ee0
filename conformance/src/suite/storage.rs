//! What a runtime leaves in the database: every password mode and encryption at rest, read
//! back raw and checked against the contract's formats; and the benchmark, which leaves nothing.

use super::Lab;
use crate::engines::{stack, Db, Kv, PASSWORD_MODES};
use crate::raw::{blind_index, open_sealed, password_matches, raw_column, raw_count};
use crate::Runtime;
use serde_json::json;
use stacklab_types::stack::{Encryption, PasswordStorage, WritePolicy};

/// Every password mode on every database, read back raw with the engine's own client: the
/// row holds what `stored_password` shows, in the contract's form, and verifies as the
/// contract says (and the API agrees). Without encryption the email and the lookup keys are
/// stored as given and lowercased.
pub async fn password_modes(runtime: &Runtime) {
    let lab = Lab::start(runtime).await;
    let rt = runtime.name();
    for db in Db::ALL.into_iter().filter(|db| runtime.offers(*db)) {
        for mode in PASSWORD_MODES {
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
            let what = format!("{rt}: {db:?} {mode:?}");
            lab.serve(&stack);
            let api = lab.api(&stack);
            let r = api.call("POST", "/api/users", Some(json!({"username": "Pat", "email": "Pat@Example.com", "password": "hunter2hunter2"}))).await;
            assert_eq!(r.status, 201, "{what}: {:?}", r.body);
            let id = r.body["id"].as_i64().unwrap();
            let raw = raw_column(&stack, id, "password").await;
            assert_eq!(raw, r.body["stored_password"].as_str().unwrap(), "{what}");
            let pepper = &stack.descriptor.pepper;
            assert!(
                password_matches(mode, &raw, "hunter2hunter2", pepper),
                "{what}: the row does not hold the password in this mode's form: {raw}"
            );
            assert!(
                !password_matches(mode, &raw, "hunter3hunter3", pepper),
                "{what}: {raw}"
            );
            match mode {
                PasswordStorage::Plaintext => assert_eq!(raw, "hunter2hunter2", "{what}"),
                PasswordStorage::Sha256 => {
                    assert_eq!(raw.len(), 64, "{what}: unsalted SHA-256, hex")
                }
                PasswordStorage::Bcrypt | PasswordStorage::BcryptPepper => {
                    assert!(
                        raw.starts_with("$2b$04$"),
                        "{what}: bcrypt $2b$ at the configured cost 4: {raw}"
                    )
                }
                PasswordStorage::Argon2id => {
                    assert!(raw.starts_with("$argon2id$"), "{what}: {raw}")
                }
            }
            if mode == PasswordStorage::BcryptPepper {
                assert!(
                    !bcrypt::verify("hunter2hunter2", &raw).unwrap_or(false),
                    "{what}: the row alone does not verify without the pepper"
                );
            }
            for (column, want) in [
                ("username", "Pat"),
                ("username_key", "pat"),
                ("email", "Pat@Example.com"),
                ("email_key", "pat@example.com"),
            ] {
                assert_eq!(
                    raw_column(&stack, id, column).await,
                    want,
                    "{what}: column {column}"
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
                assert_eq!(r.body["ok"], ok, "{what}: {:?}", r.body);
            }
        }
    }
}

/// Encryption at rest: ciphertext in the row (which opens with the session's key as the
/// contract says), plaintext through the API, exact email search by the blind index.
pub async fn encryption(runtime: &Runtime) {
    let lab = Lab::start(runtime).await;
    let rt = runtime.name();
    for db in Db::ALL.into_iter().filter(|db| runtime.offers(*db)) {
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
        let what = format!("{rt}: {db:?}");
        lab.serve(&stack);
        let api = lab.api(&stack);
        let r = api.call("POST", "/api/users", Some(json!({"username": "eve", "email": "Eve@Secret.example", "password": "password123", "full_name": "Eve Adams"}))).await;
        assert_eq!(r.status, 201, "{what}: {:?}", r.body);
        let id = r.body["id"].as_i64().unwrap();
        assert_eq!(r.body["email"], "Eve@Secret.example", "{what}");
        let key = &stack.descriptor.encryption_key;
        let raw_email = raw_column(&stack, id, "email").await;
        assert!(
            // (`@` is never in base64: the address is not there in clear.)
            raw_email.starts_with("v1:") && !raw_email.contains('@'),
            "{what}: {raw_email}"
        );
        assert_eq!(
            open_sealed(key, &raw_email).as_deref(),
            Some("Eve@Secret.example"),
            "{what}: the row's email opens with the session key"
        );
        assert_eq!(r.body["stored_email"], raw_email, "{what}");
        let raw_name = raw_column(&stack, id, "full_name").await;
        assert!(
            raw_name.starts_with("v1:") && !raw_name.contains(' '),
            "{what}: {raw_name}"
        );
        assert_eq!(
            open_sealed(key, &raw_name).as_deref(),
            Some("Eve Adams"),
            "{what}"
        );
        let index = raw_column(&stack, id, "email_key").await;
        assert_eq!(
            index,
            blind_index(key, "eve@secret.example"),
            "{what}: the blind index is HMAC-SHA-256 of the lowercased email"
        );
        let second = api.call("POST", "/api/users", Some(json!({"username": "eve3", "email": "Eve@Secret.example2", "password": "password123"}))).await;
        assert_eq!(second.status, 201, "{what}: {:?}", second.body);

        // Exact email (any case) finds it through the blind index; the username still by substring.
        let r = api
            .call("GET", "/api/users?q=eve%40secret.example", None)
            .await;
        assert_eq!(r.body["total"], 1, "{what}: {:?}", r.body);
        assert_eq!(r.body["items"][0]["email"], "Eve@Secret.example", "{what}");
        let r = api.call("GET", "/api/users?q=EV", None).await;
        assert_eq!(r.body["total"], 2, "{what}: {:?}", r.body);
        // Uniqueness holds on ciphertext too.
        let r = api.call("POST", "/api/users", Some(json!({"username": "eve2", "email": "eve@secret.example", "password": "password123"}))).await;
        assert_eq!(
            (r.status, r.field()),
            (409, "email"),
            "{what}: {:?}",
            r.body
        );
    }
}

/// The on-demand benchmark runs bounded, leaves the data as it was, and reports figures.
/// (The figures are printed for the record; speed is not asserted here.)
pub async fn benchmark(runtime: &Runtime) {
    let lab = Lab::start(runtime).await;
    let rt = runtime.name();
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
        lab.serve(&stack);
        let api = lab.api(&stack);
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
        assert_eq!(r.status, 200, "{rt}: {db:?} x {kv:?}: {:?}", r.body);
        let b = &r.body;
        for part in ["writes", "db_reads", "cached_reads"] {
            assert_eq!(b[part]["ops"], 200, "{rt} {part}");
            assert!(b[part]["p50_ms"].as_f64().unwrap() > 0.0);
            assert!(b[part]["p99_ms"].as_f64().unwrap() >= b[part]["p50_ms"].as_f64().unwrap());
        }
        assert_eq!(b["password_hashing"].as_array().unwrap().len(), 5);
        println!(
            "benchmark {rt} {db:?} x {kv:?}: db read p50 {:.3} ms p99 {:.3} ms; cache-hit read p50 {:.3} ms p99 {:.3} ms; write p50 {:.3} ms; hashing {}",
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
            "{rt} {db:?}: the benchmark's rows are gone"
        );
        let r = api
            .call(
                "POST",
                "/api/analysis/benchmark",
                Some(json!({"reads": 100000, "writes": 1})),
            )
            .await;
        assert_eq!((r.status, r.field()), (400, "reads"), "{rt}: bounded");
    }
}
