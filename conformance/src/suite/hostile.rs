//! Hostile input: injection (SQL and MongoDB operators), bad JSON and UTF-8, wrong content
//! types, oversized bodies and GraphQL bombs. Every one is answered with the contract's JSON
//! error naming what is wrong, and none changes anything.

use super::Lab;
use crate::engines::{stack, Db, Kv, Stack};
use crate::raw::raw_count;
use crate::{Api, Runtime, Settings};
use serde_json::json;
use stacklab_types::stack::{Encryption, PasswordStorage, WritePolicy};
use std::time::Duration;

async fn plain_stack(db: Db) -> Option<Stack> {
    stack(
        db,
        Kv::Memory,
        WritePolicy::CacheAside,
        PasswordStorage::Plaintext,
        Encryption::None,
    )
    .await
}

/// Creates the one user the hostile requests must leave alone; returns its answer body.
async fn seed(api: &Api, what: &str) -> serde_json::Value {
    let ok = api
        .call(
            "POST",
            "/api/users",
            Some(json!({"username": "ann", "email": "ann@example.com", "password": "password123"})),
        )
        .await;
    assert_eq!(ok.status, 201, "{what}: {:?}", ok.body);
    ok.body
}

/// Nothing changed: one row, and it reads as it was created.
async fn unchanged(api: &Api, stack: &Stack, ann: &serde_json::Value, what: &str) {
    assert_eq!(raw_count(stack).await, 1, "{what}: bad input wrote nothing");
    let r = api.call("GET", "/api/users", None).await;
    assert_eq!(r.body["total"], 1, "{what}: {:?}", r.body);
    assert_eq!(&r.body["items"][0], ann, "{what}: the user is as it was");
}

/// Bad bodies, parameters and ids on every database: each a `4xx` with the JSON error (and
/// the field at fault, where there is one); injection in search matches nothing.
pub async fn bad_input(runtime: &Runtime) {
    let lab = Lab::start(runtime).await;
    for db in Db::ALL.into_iter().filter(|db| runtime.offers(*db)) {
        let Some(stack) = plain_stack(db).await else {
            continue;
        };
        let what = format!("{}: {db:?}", runtime.name());
        lab.serve(&stack);
        let api = lab.api(&stack);
        let ann = seed(&api, &what).await;
        let id = ann["id"].as_i64().unwrap();
        /// What the case is, content type, body, expected status, expected field.
        type Case<'a> = (&'a str, Option<&'a str>, Vec<u8>, u16, &'a str);
        let cases: Vec<Case> = vec![
            (
                "unknown field",
                Some("application/json"),
                br#"{"username":"bo","email":"b@x.io","password":"password123","admin":true}"#.to_vec(),
                400,
                "admin",
            ),
            (
                "wrong type",
                Some("application/json"),
                br#"{"username":5,"email":"b@x.io","password":"password123"}"#.to_vec(),
                400,
                "",
            ),
            (
                "missing field",
                Some("application/json"),
                br#"{"username":"bob"}"#.to_vec(),
                400,
                "email",
            ),
            (
                "too long",
                Some("application/json"),
                format!(
                    r#"{{"username":"{}","email":"b@x.io","password":"password123"}}"#,
                    "b".repeat(40)
                )
                .into_bytes(),
                400,
                "username",
            ),
            (
                "invalid email",
                Some("application/json"),
                br#"{"username":"bob","email":"not-an-email","password":"password123"}"#.to_vec(),
                400,
                "email",
            ),
            (
                "mongo operator as email",
                Some("application/json"),
                br#"{"username":"bob","email":{"$gt":""},"password":"password123"}"#.to_vec(),
                400,
                "",
            ),
            (
                "short password",
                Some("application/json"),
                br#"{"username":"bob","email":"b@x.io","password":"pw"}"#.to_vec(),
                400,
                "password",
            ),
            (
                "invalid UTF-8",
                Some("application/json"),
                b"{\"username\":\"b\xff\xfe\",\"email\":\"b@x.io\",\"password\":\"password123\"}"
                    .to_vec(),
                400,
                "",
            ),
            (
                "not JSON",
                Some("application/json"),
                b"username=bob".to_vec(),
                400,
                "",
            ),
            (
                "wrong content type",
                Some("text/plain"),
                br#"{"username":"bob","email":"b@x.io","password":"password123"}"#.to_vec(),
                415,
                "",
            ),
        (
            "SQL in the username",
            Some("application/json"),
            br#"{"username":"x'; DROP TABLE users; --","email":"b@x.io","password":"password123"}"#.to_vec(),
            400,
            "username",
        ),
        (
            "mongo operator as username",
            Some("application/json"),
            br#"{"username":{"$ne":null},"email":"b@x.io","password":"password123"}"#.to_vec(),
            400,
            "",
        ),
        (
            "truncated JSON",
            Some("application/json"),
            br#"{"username":"bob","email":"#.to_vec(),
            400,
            "",
        ),
        (
            "empty body",
            Some("application/json"),
            Vec::new(),
            400,
            "",
        ),
        (
            "no content type",
            None,
            br#"{"username":"bob","email":"b@x.io","password":"password123"}"#.to_vec(),
            415,
            "",
        ),
        (
            "form encoded",
            Some("application/x-www-form-urlencoded"),
            b"username=bob&email=b%40x.io&password=password123".to_vec(),
            415,
            "",
        ),
    ];
        for (case, ct, body, status, field) in cases {
            let r = api.raw("POST", "/api/users", ct, body).await;
            assert_eq!(r.status, status, "{what}: {case}: {:?}", r.body);
            assert!(r.is_error_body(), "{what}: {case}: {:?}", r.body);
            if !field.is_empty() {
                assert_eq!(r.field(), field, "{what}: {case}: {:?}", r.body);
            }
        }
        let patch = format!("/api/users/{id}");
        for (case, body, field) in [
            ("unknown field", json!({"admin": true}), "admin"),
            (
                "mongo operator as email",
                json!({"email": {"$set": "x@y.io"}}),
                "",
            ),
            ("invalid email", json!({"email": "nope"}), "email"),
            (
                "SQL in the username",
                json!({"username": "a' OR '1'='1"}),
                "username",
            ),
        ] {
            let r = api.call("PATCH", &patch, Some(body)).await;
            assert_eq!(r.status, 400, "{what}: PATCH {case}: {:?}", r.body);
            assert!(r.is_error_body(), "{what}: PATCH {case}: {:?}", r.body);
            if !field.is_empty() {
                assert_eq!(r.field(), field, "{what}: PATCH {case}: {:?}", r.body);
            }
        }
        let verify = format!("/api/users/{id}/verify-password");
        for body in [
            json!({"password": {"$ne": ""}}),
            json!({"password": {"$gt": null}}),
            json!({}),
        ] {
            let r = api.call("POST", &verify, Some(body.clone())).await;
            assert_eq!(
                r.status, 400,
                "{what}: verify-password {body}: {:?}",
                r.body
            );
            assert!(r.is_error_body(), "{what}: {:?}", r.body);
        }
        for (path, field) in [
            ("/api/users?limit=1000", "limit"),
            ("/api/users?limit=abc", "limit"),
            ("/api/users?offset=-1", "offset"),
            ("/api/users/abc", "id"),
            ("/api/users/0", "id"),
            ("/api/users/-1", "id"),
            ("/api/users/99999999999999999999", "id"),
            ("/api/users/1%20OR%201=1", "id"),
        ] {
            let r = api.call("GET", path, None).await;
            assert_eq!(
                (r.status, r.field()),
                (400, field),
                "{what}: GET {path}: {:?}",
                r.body
            );
            assert!(r.is_error_body(), "{what}: GET {path}: {:?}", r.body);
        }
        // Search terms are text on every engine: SQL, LIKE wildcards, MongoDB operators and
        // regular expressions match nothing.
        for q in [
            "%27%20OR%20%271%27%3D%271",
            "%25",
            "%7B%22%24ne%22%3Anull%7D",
            "%24where",
            ".*",
            "%5E",
            "a%7C%7Cb",
            "%5C",
        ] {
            let r = api.call("GET", &format!("/api/users?q={q}"), None).await;
            assert_eq!(r.status, 200, "{what}: q={q}: {:?}", r.body);
            assert_eq!(
                r.body["total"], 0,
                "{what}: q={q} matched something: {:?}",
                r.body
            );
        }
        let r = api.call("PUT", "/api/users", None).await;
        assert_eq!(r.status, 405, "{what}: {:?}", r.body);
        assert!(r.is_error_body(), "{what}: {:?}", r.body);
        // GraphQL is POST only: no GraphiQL page (it loaded React from a public CDN; the
        // console runs queries). /graphql is a data path for every method: the session first.
        for method in ["GET", "PUT"] {
            let r = api.call(method, "/graphql", None).await;
            assert_eq!(r.status, 405, "{what}: {method} /graphql: {:?}", r.body);
            assert_eq!(r.code(), "method_not_allowed", "{what}: {method} /graphql");
            let r = api.anonymous().call(method, "/graphql", None).await;
            assert_eq!(
                r.status, 401,
                "{what}: {method} /graphql, no session: {:?}",
                r.body
            );
            assert_eq!(r.code(), "session_missing", "{what}: {method} /graphql");
        }
        let r = api.call("GET", "/api/nothing-here", None).await;
        assert_eq!(r.status, 404, "{what}: {:?}", r.body);
        assert!(r.is_error_body(), "{what}: {:?}", r.body);
        unchanged(&api, &stack, &ann, &what).await;
    }
}

/// Bodies over `max_body_bytes` are refused with `413 body_too_large`, REST and GraphQL alike.
pub async fn oversized_bodies(runtime: &Runtime) {
    let lab = Lab::with(runtime, Settings::default().set("max_body_bytes", 4096)).await;
    let Some(stack) = plain_stack(Db::Sqlite).await else {
        return;
    };
    let what = runtime.name();
    lab.serve(&stack);
    let api = lab.api(&stack);
    let ann = seed(&api, what).await;
    let id = ann["id"].as_i64().unwrap();
    let name = |n: usize| {
        json!({"username": "big", "email": "big@example.com", "password": "password123", "full_name": "x".repeat(n)}).to_string()
    };
    for (path, body) in [
        ("/api/users".to_owned(), name(5000)),
        ("/api/users".to_owned(), name(2 << 20)),
        (
            format!("/api/users/{id}/verify-password"),
            json!({"password": "p".repeat(8000)}).to_string(),
        ),
        (
            "/graphql".to_owned(),
            json!({"query": format!("{{ users {{ total }} }} #{}", "x".repeat(8000))}).to_string(),
        ),
    ] {
        let r = api
            .raw("POST", &path, Some("application/json"), body.clone())
            .await;
        assert_eq!(
            (r.status, r.code()),
            (413, "body_too_large"),
            "{what}: {} bytes to {path}: {:?}",
            body.len(),
            r.body
        );
        assert!(r.is_error_body(), "{what}: {:?}", r.body);
    }
    let r = api
        .raw("POST", "/api/users", Some("application/json"), name(3000))
        .await;
    assert_eq!(
        (r.status, r.field()),
        (400, "full_name"),
        "{what}: under the body limit, the field's own limit: {:?}",
        r.body
    );
    unchanged(&api, &stack, &ann, what).await;
}

/// A GraphQL bomb is refused within this (Rust takes milliseconds): a document that costs
/// seconds to refuse is a denial of service still.
const REFUSE_DEADLINE: Duration = Duration::from_secs(5);

/// GraphQL documents built to cost more than they look: too deep, too many aliases, too many
/// fields, fragments that spread exponentially or in a cycle. Each is refused before it runs
/// (`400`, the JSON error on field `query`, no `data`), quickly, and the instance goes on.
pub async fn graphql_bombs(runtime: &Runtime) {
    let lab = Lab::start(runtime).await;
    let Some(stack) = plain_stack(Db::Sqlite).await else {
        return;
    };
    let rt = runtime.name();
    lab.serve(&stack);
    let api = lab.api(&stack);
    let ann = seed(&api, rt).await;

    let aliases: String = (0..150)
        .map(|i| format!("a{i}: users {{ total }} "))
        .collect();
    let typenames: String = (0..600).map(|i| format!("t{i}: __typename ")).collect();
    let deep =
        "{ __schema { types { fields { type { ofType { ofType { ofType { name } } } } } } } }"
            .to_owned();
    // 2^24 spreads from 48 fragments: A_i and B_i each spread both A_{i+1} and B_{i+1}.
    let mut fragments = String::from("{ ...A0 }\n");
    for i in 0..24 {
        fragments += &format!("fragment A{i} on Query {{ ...A{n} ...B{n} }}\nfragment B{i} on Query {{ ...A{n} ...B{n} }}\n", n = i + 1);
    }
    fragments += "fragment A24 on Query { users { total } }\nfragment B24 on Query { users { items { id } } }\n";
    let cycle =
        "{ ...A } fragment A on Query { users { total } ...B } fragment B on Query { ...A }"
            .to_owned();
    for (case, query) in [
        ("150 aliases", format!("{{ {aliases} }}")),
        ("600 fields", format!("{{ {typenames} }}")),
        ("depth 8", deep),
        ("exponential fragments", fragments),
        ("a fragment cycle", cycle),
        ("not GraphQL", "{ users { total ".to_owned()),
    ] {
        let r = tokio::time::timeout(REFUSE_DEADLINE, api.graphql(&query, json!({})))
            .await
            .unwrap_or_else(|_| panic!("{rt}: {case}: not refused within {REFUSE_DEADLINE:?}"));
        assert_eq!(
            r.status, 400,
            "{rt}: {case}: refused before it ran: {:?}",
            r.body
        );
        assert_eq!(r.field(), "query", "{rt}: {case}: {:?}", r.body);
        assert!(r.is_error_body(), "{rt}: {case}: {:?}", r.body);
        assert!(r.body["data"].is_null(), "{rt}: {case}: {:?}", r.body);
    }
    let r = api
        .raw("POST", "/graphql", Some("application/json"), "{\"query\": ")
        .await;
    assert_eq!(r.status, 400, "{rt}: bad JSON to /graphql: {:?}", r.body);
    assert!(r.is_error_body(), "{rt}: {:?}", r.body);
    // Errors of fields that ran keep GraphQL's 200; nothing changed.
    let r = api.graphql("{ user(id: 999) { id } }", json!({})).await;
    assert_eq!(r.status, 200, "{rt}: {:?}", r.body);
    assert_eq!(
        r.body["errors"][0]["extensions"]["code"], "not_found",
        "{rt}: {:?}",
        r.body
    );
    unchanged(&api, &stack, &ann, rt).await;
}
