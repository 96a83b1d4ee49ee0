//! Isolation across sessions, through the real edge, on every provisioner this machine can
//! run (`embedded`; `shared` on PostgreSQL + Redis and MariaDB + Memcached; Docker is covered in
//! `docker.rs`): session A's ids, usernames, cache keys, requests and events never reach
//! session B through B's API (REST, GraphQL, cache view, inspector, event stream), and on the
//! shared servers B's own credentials cannot open A's database or read A's keys.

use crate::helpers::*;
use serde_json::{json, Value};
use sqlx::Connection;

async fn session(b: &mut Browser, choices: &Value) -> String {
    let r = b.post("/api/sessions", choices.clone()).await;
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["code"].as_str().unwrap().to_owned()
}

async fn user(b: &mut Browser, name: &str) -> i64 {
    let r = b
        .post(
            "/api/users",
            json!({"username": name, "email": format!("{name}@example.com"), "password": "longenough"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["id"].as_i64().unwrap()
}

async fn graphql(b: &mut Browser, query: &str) -> Value {
    let r = b.post("/graphql", json!({"query": query})).await;
    r.json()
}

/// Reads an event stream until `want` appears; returns all it read.
async fn read_until(body: &mut hyper::body::Incoming, want: &str) -> String {
    use http_body_util::BodyExt;
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while !seen.contains(want) {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(f))) => {
                if let Ok(d) = f.into_data() {
                    seen.push_str(&String::from_utf8_lossy(&d));
                }
            }
            other => panic!("no `{want}` in the stream ({other:?}): {seen}"),
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_never_see_each_other_on_any_provisioner() {
    let dir = temp_dir("isolation");
    let engines = Engines::from_env();
    let data = dir.join("data");
    let up = start_up_on(&dir, 2, &engines).await;
    let port = up.addrs.edge.port();
    let mut targets = vec![("embedded", json!({}))];
    if engines.postgres.is_some() && engines.redis.is_some() {
        targets.push((
            "shared PostgreSQL + Redis",
            json!({"provisioner": "shared", "database": "postgres", "cache": "redis", "write_policy": "write-through"}),
        ));
    }
    if engines.mysql.is_some() && engines.memcached.is_some() {
        targets.push((
            "shared MariaDB + Memcached",
            json!({"provisioner": "shared", "database": "mysql", "cache": "memcached", "write_policy": "write-through"}),
        ));
    }
    for (label, choices) in targets {
        let mut a = Browser::new(&data, port);
        let mut b = Browser::new(&data, port);
        let code_a = session(&mut a, &choices).await;
        let code_b = session(&mut b, &choices).await;
        for n in ["annx", "amyx", "alix"] {
            user(&mut a, n).await;
        }
        let bob = user(&mut b, "bobx").await;
        // Fill both caches (write-through did; reads make sure for the in-process cache).
        for id in 1..=3 {
            assert_eq!(a.get(&format!("/api/users/{id}")).await.status, 200);
        }
        assert_eq!(b.get(&format!("/api/users/{bob}")).await.status, 200);

        // B asks for A's ids, names and data every way the API offers.
        for id in 2..=3 {
            let r = b.get(&format!("/api/users/{id}")).await;
            assert_eq!(
                (r.status, r.code()),
                (404, "not_found".into()),
                "{label}: B reads A's id {id}: {}",
                r.text()
            );
        }
        let r = b.get("/api/users/1").await;
        assert_eq!(
            r.json()["username"],
            "bobx",
            "{label}: id 1 in B is B's own"
        );
        let r = b.get("/api/users?limit=100").await;
        assert_eq!(r.json()["total"], 1, "{label}: {}", r.text());
        for q in ["annx", "a", "example.com", "%"] {
            let r = b.get(&format!("/api/users?q={q}")).await;
            assert!(
                !r.text().contains("annx") && !r.text().contains("amyx"),
                "{label}: search {q}: {}",
                r.text()
            );
        }
        let v = graphql(&mut b, "{ users(limit: 100) { total items { username } } }").await;
        assert_eq!(v["data"]["users"]["total"], 1, "{label}: {v}");
        let v = graphql(&mut b, "{ user(id: 2) { username } }").await;
        assert_eq!(
            v["errors"][0]["extensions"]["code"], "not_found",
            "{label}: {v}"
        );
        let v = graphql(&mut b, "mutation { deleteUser(id: 3) }").await;
        assert_eq!(
            v["errors"][0]["extensions"]["code"], "not_found",
            "{label}: B deletes A's id: {v}"
        );
        let r = b.get("/api/cache").await;
        assert_eq!(r.status, 200, "{}", r.text());
        for name in ["annx", "amyx", "alix"] {
            assert!(
                !r.text().contains(name),
                "{label}: A's user in B's cache view: {}",
                r.text()
            );
        }
        assert!(
            !r.text().contains(&code_a),
            "{label}: A's code in B's cache view"
        );
        let r = a.get("/api/cache").await;
        assert!(
            r.text().contains("annx"),
            "{label}: A's cache holds A: {}",
            r.text()
        );
        assert!(
            !r.text().contains("bobx"),
            "{label}: B's user in A's cache view: {}",
            r.text()
        );
        // B's flush empties B's cache only.
        assert_eq!(b.send("DELETE", "/api/cache", None).await.status, 200);
        let r = a.get("/api/users/1").await;
        assert_eq!(
            (r.status, r.headers["x-stacklab-cache"].to_str().unwrap()),
            (200, "hit"),
            "{label}: A's cache survived B's flush"
        );

        // Inspector and event stream: A's show none of B's requests.
        let stream = a.open_stream("/api/session/events").await;
        assert_eq!(stream.status(), 200);
        let mut events = stream.into_body();
        assert_eq!(b.get("/api/users?q=bmarker").await.status, 200);
        assert_eq!(a.get("/api/users?q=amarker").await.status, 200);
        let seen = read_until(&mut events, "amarker").await;
        assert!(
            !seen.contains("bmarker"),
            "{label}: B's request in A's events: {seen}"
        );
        let r = a.get("/api/requests?limit=500").await;
        assert!(
            r.text().contains("amarker") && !r.text().contains("bmarker"),
            "{label}: A's inspector: {}",
            r.text()
        );
        let r = b.get("/api/requests?limit=500").await;
        assert!(
            r.text().contains("bmarker") && !r.text().contains("amarker"),
            "{label}: B's inspector"
        );
        assert!(
            !r.text().contains(&code_a),
            "{label}: A's code in B's inspector"
        );

        // On the engines: B's own credentials do not open A's database or reach A's keys, and
        // nothing of A is named in B's descriptor.
        let stack = |code: &str| {
            let code = code.to_owned();
            async move {
                let r = stack_of(up.addrs.admin, &code).await;
                assert_eq!(r.status, 200, "{}", r.text());
                r.json()
            }
        };
        let (sa, sb) = (stack(&code_a).await, stack(&code_b).await);
        let id_a = stacklab_types::session::id(&code_a);
        assert!(
            !sb.to_string().contains(&code_a) && !sb.to_string().contains(&id_a),
            "{label}: B's descriptor names A"
        );
        let db_b = sb["database"]["url"].as_str().unwrap().to_owned();
        let db_a = sa["database"]["url"].as_str().unwrap().to_owned();
        assert_ne!(db_a, db_b, "{label}: one database each");
        if db_b.starts_with("postgres") {
            let err =
                sqlx::PgConnection::connect(&with_database(&db_b, &shared_name(&data, &id_a)))
                    .await
                    .err();
            assert!(err.is_some(), "{label}: B's role opens A's database");
        } else if db_b.starts_with("mysql") {
            match sqlx::MySqlConnection::connect(&with_database(&db_b, &shared_name(&data, &id_a)))
                .await
            {
                Err(_) => {}
                Ok(_) => panic!("{label}: B's user opens A's database"),
            }
            let mut conn = sqlx::MySqlConnection::connect(&db_b).await.unwrap();
            let r = sqlx::query(&format!("SELECT COUNT(*) FROM s_{id_a}.users"))
                .fetch_one(&mut conn)
                .await;
            assert!(
                r.is_err(),
                "{label}: B's user reads A's table across databases"
            );
        }
        let cache_b = sb["cache"]["url"].as_str().unwrap_or_default().to_owned();
        if cache_b.starts_with("redis") {
            let prefix_a = sa["cache"]["key_prefix"].as_str().unwrap().to_owned();
            let client = redis::Client::open(cache_b.as_str()).unwrap();
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            let got: redis::RedisResult<Option<Vec<u8>>> = redis::cmd("GET")
                .arg(format!("{prefix_a}user:1"))
                .query_async(&mut conn)
                .await;
            assert!(
                got.is_err(),
                "{label}: B's Redis user reads A's key: {got:?}"
            );
            let keys: redis::RedisResult<Vec<String>> =
                redis::cmd("KEYS").arg("*").query_async(&mut conn).await;
            if let Ok(keys) = keys {
                assert!(
                    keys.iter().all(|k| !k.starts_with(&prefix_a)),
                    "{label}: {keys:?}"
                );
            }
        }
        // Ending B leaves A whole.
        assert_eq!(b.send("DELETE", "/api/session", None).await.status, 200);
        let r = a.get("/api/users?limit=100").await;
        assert_eq!(r.json()["total"], 3, "{label}: {}", r.text());
        assert_eq!(a.send("DELETE", "/api/session", None).await.status, 200);
    }
    up.shutdown().await.unwrap();
}
