//! Bad input gets a clear JSON error naming what is wrong, and changes nothing.

use crate::helpers::*;
use serde_json::json;
use stacklab_types::stack::{Encryption, PasswordStorage, WritePolicy};

#[tokio::test]
async fn bad_input_is_refused_clearly_and_changes_nothing() {
    let stack = stack(
        Db::Sqlite,
        Kv::Memory,
        WritePolicy::CacheAside,
        PasswordStorage::Plaintext,
        Encryption::None,
    )
    .await
    .unwrap();
    let backend = Backend::start().await;
    backend.stacks.insert(stack.descriptor.clone());
    let api = Api::new(&backend, &stack.descriptor.session);
    let ok = api
        .call(
            "POST",
            "/api/users",
            Some(json!({"username": "ann", "email": "ann@example.com", "password": "password123"})),
        )
        .await;
    assert_eq!(ok.status, 201);

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
    ];
    for (what, ct, body, status, field) in cases {
        let r = api.raw("POST", "/api/users", ct, body).await;
        assert_eq!(r.status, status, "{what}: {:?}", r.body);
        assert!(
            r.body["error"]["code"].is_string() && r.body["error"]["message"].is_string(),
            "{what}: {:?}",
            r.body
        );
        if !field.is_empty() {
            assert_eq!(r.field(), field, "{what}: {:?}", r.body);
        }
    }
    let r = api.call("GET", "/api/users?limit=1000", None).await;
    assert_eq!((r.status, r.field()), (400, "limit"));
    let r = api.call("GET", "/api/users/abc", None).await;
    assert_eq!((r.status, r.field()), (400, "id"));
    let r = api.call("GET", "/api/users/1%20OR%201=1", None).await;
    assert_eq!(r.status, 400);
    assert_eq!(
        raw_count(&stack).await,
        1,
        "nothing was written by bad input"
    );
}

#[tokio::test]
async fn sessions_are_required_and_unknown_ones_are_gone() {
    let backend = Backend::start().await;
    let api = Api::new(&backend, "NOSUCHSESSION0000000000000");
    let r = api.call("GET", "/api/users", None).await;
    assert_eq!((r.status, r.code()), (410, "session_expired"));
    let r = Api::new(&backend, "bad code!")
        .call("GET", "/api/users", None)
        .await;
    assert_eq!(r.status, 410);
    let r = api.call("GET", "/healthz", None).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn graphql_depth_and_alias_bombs_are_refused() {
    let stack = stack(
        Db::Sqlite,
        Kv::Memory,
        WritePolicy::CacheAside,
        PasswordStorage::Plaintext,
        Encryption::None,
    )
    .await
    .unwrap();
    let backend = Backend::start().await;
    backend.stacks.insert(stack.descriptor.clone());
    let api = Api::new(&backend, &stack.descriptor.session);
    let aliases: String = (0..150)
        .map(|i| format!("a{i}: users {{ total }} "))
        .collect();
    let r = api.graphql(&format!("{{ {aliases} }}"), json!({})).await;
    assert_eq!(r.status, 400, "refused before it ran: {:?}", r.body);
    assert_eq!(r.field(), "query");
    assert!(
        r.body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("complex"),
        "{:?}",
        r.body
    );
    assert!(r.body["data"].is_null());
    // Fields complexity does not count are limited by number.
    let typenames: String = (0..600).map(|i| format!("t{i}: __typename ")).collect();
    let r = api.graphql(&format!("{{ {typenames} }}"), json!({})).await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("600 fields"),
        "{:?}",
        r.body
    );
    // Errors of fields that ran keep GraphQL's 200.
    let r = api.graphql("{ user(id: 999) { id } }", json!({})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["errors"][0]["extensions"]["code"], "not_found");
    let r = api.call("GET", "/graphql", None).await;
    assert_eq!(r.status, 200, "GraphiQL is served");
}

#[tokio::test]
async fn redis_policy_changes_show_in_redis_and_shared_servers_refuse() {
    let Some(url) = engine_url("STACKLAB_TEST_REDIS_URL") else {
        return;
    };
    let backend = Backend::start().await;
    let mut own = stack(
        Db::Sqlite,
        Kv::Redis,
        WritePolicy::CacheAside,
        PasswordStorage::Plaintext,
        Encryption::None,
    )
    .await
    .unwrap();
    own.descriptor.cache.shared = false;
    backend.stacks.insert(own.descriptor.clone());
    let api = Api::new(&backend, &own.descriptor.session);
    let r = api
        .call(
            "PUT",
            "/api/cache/policy",
            Some(json!({"policy": "allkeys-lfu"})),
        )
        .await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body["policy"], "allkeys-lfu");
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let got: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        got[1], "allkeys-lfu",
        "Redis's own CONFIG GET shows the change"
    );
    let r = api
        .call(
            "PUT",
            "/api/cache/policy",
            Some(json!({"policy": "sometimes"})),
        )
        .await;
    assert_eq!((r.status, r.field()), (400, "policy"));

    let mut shared = stack(
        Db::Sqlite,
        Kv::Redis,
        WritePolicy::CacheAside,
        PasswordStorage::Plaintext,
        Encryption::None,
    )
    .await
    .unwrap();
    shared.descriptor.cache.shared = true;
    backend.stacks.insert(shared.descriptor.clone());
    let r = Api::new(&backend, &shared.descriptor.session)
        .call(
            "PUT",
            "/api/cache/policy",
            Some(json!({"policy": "allkeys-lru"})),
        )
        .await;
    assert_eq!((r.status, r.code()), (409, "refused"), "{:?}", r.body);
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("shared"));
    let got: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(got[1], "allkeys-lfu", "the refused change changed nothing");
    let _ = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("noeviction")
        .query_async::<()>(&mut conn)
        .await;
}
