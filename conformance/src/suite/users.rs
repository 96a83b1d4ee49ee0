//! The users contract on one stack: create, conflicts, reads through the cache per write
//! policy, update, search (wildcards and quotes are text), passwords, delete, the cache view,
//! analysis and GraphQL; then a second session on the same engines, which sees none of it.

use super::Lab;
use crate::engines::{stack, Db, Kv, Stack};
use crate::raw::raw_column;
use crate::Runtime;
use serde_json::json;
use stacklab_types::stack::{Encryption, PasswordStorage, WritePolicy};

/// The users contract for one database × cache pair and write policy on `runtime`, with a
/// second session on the same engines for isolation.
pub async fn combo(runtime: &Runtime, db: Db, kv: Kv, policy: WritePolicy) {
    let Some(one) = stack(db, kv, policy, PasswordStorage::Bcrypt, Encryption::None).await else {
        return;
    };
    let Some(other) = stack(db, kv, policy, PasswordStorage::Plaintext, Encryption::None).await
    else {
        return;
    };
    let lab = Lab::start(runtime).await;
    let combo = format!("{}: {db:?} x {kv:?} ({policy:?})", runtime.name());
    users(&lab, &one, Some(&other), &combo).await;
}

/// The whole users contract on `stack` served by `lab` (its cache engine and write policy are
/// the descriptor's), then, with `other`, that a second session sees none of it. `combo`
/// names the run in failures.
pub async fn users(lab: &Lab, stack: &Stack, other: Option<&Stack>, combo: &str) {
    let (kv, policy) = (stack.kv, stack.descriptor.write_policy);
    lab.serve(stack);
    let api = lab.api(stack);

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
        raw_column(stack, id, "password").await,
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
    let Some(other) = other else { return };
    lab.serve(other);
    let api2 = lab.api(other);
    let r = api2.call("GET", "/api/users", None).await;
    assert_eq!(r.body["total"], 0, "{combo}: sessions are isolated");
    let r = api2.call("GET", "/api/users/2", None).await;
    assert_eq!(
        r.status, 404,
        "{combo}: another session's id is not found here"
    );
}
