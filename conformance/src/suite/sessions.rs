//! Sessions and the instance's own life: the session header, descriptors that are missing or
//! not ready, the internal endpoint and its credential, Redis policy changes, and exiting when
//! stdin closes or on SIGTERM.

use super::Lab;
use crate::api::{Answer, Api};
use crate::engines::{engine_url, stack, unique, Db, Kv, Stack};
use crate::raw::raw_count;
use crate::Runtime;
use serde_json::json;
use stacklab_types::stack::{Encryption, PasswordStorage, WritePolicy};
use std::time::Duration;

/// How long an instance may take to exit once told to.
pub const EXIT_DEADLINE: Duration = Duration::from_secs(15);

async fn sqlite_stack() -> Stack {
    stack(
        Db::Sqlite,
        Kv::Memory,
        WritePolicy::CacheAside,
        PasswordStorage::Plaintext,
        Encryption::None,
    )
    .await
    .expect("SQLite needs no server")
}

/// A SQLite stack whose cache is the test Redis.
async fn redis_stack() -> Stack {
    stack(
        Db::Sqlite,
        Kv::Redis,
        WritePolicy::CacheAside,
        PasswordStorage::Plaintext,
        Encryption::None,
    )
    .await
    .expect("Redis")
}

/// `PUT /api/cache/policy` asking for `policy`.
async fn put_policy(api: &Api, policy: &str) -> Answer {
    api.call("PUT", "/api/cache/policy", Some(json!({"policy": policy})))
        .await
}

/// No session header: `401 session_missing`; a code control does not know, or one that is not
/// a code: `410 session_expired`; a stack still provisioning: `503` (and served once ready);
/// `/healthz` needs no session. The instance asks control with its credential only.
pub async fn sessions_required(runtime: &Runtime) {
    let lab = Lab::start(runtime).await;
    let rt = runtime.name();
    let r = lab.api_for(None).call("GET", "/api/users", None).await;
    assert_eq!(
        (r.status, r.code()),
        (401, "session_missing"),
        "{rt}: {:?}",
        r.body
    );
    assert!(r.is_error_body(), "{rt}: {:?}", r.body);
    let r = lab
        .api_for(None)
        .call(
            "POST",
            "/graphql",
            Some(json!({"query": "{ users { total } }"})),
        )
        .await;
    assert_eq!(
        (r.status, r.code()),
        (401, "session_missing"),
        "{rt}: GraphQL: {:?}",
        r.body
    );
    for code in ["NOSUCHSESSION0000000000000", "bad code!", "short"] {
        let r = lab
            .api_for(Some(code))
            .call("GET", "/api/users", None)
            .await;
        assert_eq!(
            (r.status, r.code()),
            (410, "session_expired"),
            "{rt}: `{code}`: {:?}",
            r.body
        );
        assert!(r.is_error_body(), "{rt}: {:?}", r.body);
    }
    let r = lab.api_for(None).call("GET", "/healthz", None).await;
    assert_eq!(r.status, 200, "{rt}: {:?}", r.body);
    assert!(
        r.body.is_object(),
        "{rt}: /healthz answers JSON: {:?}",
        r.body
    );

    let stack = sqlite_stack().await;
    lab.control.provisioning(stack.session());
    let r = lab.api(&stack).call("GET", "/api/users", None).await;
    assert_eq!(
        r.status, 503,
        "{rt}: a stack still provisioning: {:?}",
        r.body
    );
    assert!(r.is_error_body(), "{rt}: {:?}", r.body);
    lab.serve(&stack);
    let r = lab.api(&stack).call("GET", "/api/users", None).await;
    assert_eq!(r.status, 200, "{rt}: served once it is ready: {:?}", r.body);
    assert_eq!(
        lab.control.refused(),
        0,
        "{rt}: the instance called control without its credential or beyond it"
    );
}

/// `DELETE /internal/sessions/{code}`: without a credential `401` (with `WWW-Authenticate:
/// Bearer`), with a wrong one `403`, both the JSON error and forgetting nothing; with the
/// runtime credential the instance forgets the session's descriptor (the next request fetches
/// it again). Between, the descriptor is cached: control is not asked on every request.
pub async fn internal_endpoint(runtime: &Runtime) {
    let lab = Lab::start(runtime).await;
    let rt = runtime.name();
    let stack = sqlite_stack().await;
    let code = stack.session();
    lab.serve(&stack);
    let api = lab.api(&stack);
    let r = api
        .call(
            "POST",
            "/api/users",
            Some(json!({"username": "ann", "email": "ann@example.com", "password": "password123"})),
        )
        .await;
    assert_eq!(r.status, 201, "{rt}: {:?}", r.body);
    let r = api.call("GET", "/api/users", None).await;
    assert_eq!(r.body["total"], 1, "{rt}: {:?}", r.body);
    assert_eq!(
        lab.control.fetches(code),
        1,
        "{rt}: the descriptor is fetched once and cached"
    );

    let internal = lab.api_for(None);
    let path = format!("/internal/sessions/{code}");
    let r = internal.request("DELETE", &path, &[], "").await;
    assert_eq!(
        (r.status, r.header("www-authenticate")),
        (401, "Bearer"),
        "{rt}: no credential: {:?}",
        r.body
    );
    assert!(r.is_error_body(), "{rt}: {:?}", r.body);
    for wrong in [
        "Bearer not-the-credential",
        "Bearer ",
        "Basic cnVudGltZTpjcmVkZW50aWFs",
    ] {
        let r = internal
            .request("DELETE", &path, &[("authorization", wrong)], "")
            .await;
        assert!(
            matches!(r.status, 401 | 403),
            "{rt}: `{wrong}`: {:?}",
            r.body
        );
        assert!(r.is_error_body(), "{rt}: `{wrong}`: {:?}", r.body);
    }
    let wrong = format!("Bearer {}x", lab.control.credential().expose());
    let r = internal
        .request("DELETE", &path, &[("authorization", &wrong)], "")
        .await;
    assert_eq!(r.status, 403, "{rt}: a wrong credential: {:?}", r.body);
    assert!(r.is_error_body(), "{rt}: {:?}", r.body);
    let admin_path = "/internal/sessions/".to_owned();
    let r = internal.request("DELETE", &admin_path, &[], "").await;
    assert!(
        r.status >= 400 && r.is_error_body(),
        "{rt}: no code: {:?}",
        r.body
    );

    // Refused calls forgot nothing: still served from the cached descriptor even once
    // control no longer has it.
    lab.control.remove(code);
    let r = api.call("GET", "/api/users", None).await;
    assert_eq!(
        (r.status, &r.body["total"]),
        (200, &json!(1)),
        "{rt}: {:?}",
        r.body
    );
    assert_eq!(lab.control.fetches(code), 1, "{rt}");

    let right = format!("Bearer {}", lab.control.credential().expose());
    let r = internal
        .request("DELETE", &path, &[("authorization", &right)], "")
        .await;
    assert_eq!(r.status, 200, "{rt}: the runtime credential: {:?}", r.body);
    assert!(r.body.is_object(), "{rt}: JSON: {:?}", r.body);
    let r = api.call("GET", "/api/users", None).await;
    assert_eq!(
        (r.status, r.code()),
        (410, "session_expired"),
        "{rt}: forgotten, fetched again, gone: {:?}",
        r.body
    );
    assert_eq!(lab.control.fetches(code), 2, "{rt}");
    let r = internal
        .request(
            "DELETE",
            &format!("/internal/sessions/{}", unique("NEVERSEEN")),
            &[("authorization", &right)],
            "",
        )
        .await;
    assert_eq!(
        r.status, 200,
        "{rt}: forgetting a session it never had is fine: {:?}",
        r.body
    );
    assert_eq!(lab.control.refused(), 0, "{rt}");
}

/// A lock on the test Redis itself, held while a test changes the server's eviction policy:
/// tests in other processes (other runtimes' policy tests) wait for it.
struct RedisLock {
    conn: redis::aio::MultiplexedConnection,
    token: String,
}

const LOCK_KEY: &str = "stacklab-conformance:policy-lock";

impl RedisLock {
    async fn take(mut conn: redis::aio::MultiplexedConnection) -> RedisLock {
        let token = unique("holder-");
        let start = tokio::time::Instant::now();
        loop {
            let got: Option<String> = redis::cmd("SET")
                .arg(LOCK_KEY)
                .arg(&token)
                .arg("NX")
                .arg("PX")
                .arg(60_000)
                .query_async(&mut conn)
                .await
                .expect("Redis SET NX");
            if got.is_some() {
                return RedisLock { conn, token };
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "the Redis policy lock was held for 2 minutes"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn release(mut self) {
        let _: Result<i64, _> = redis::Script::new(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end",
        )
        .key(LOCK_KEY)
        .arg(&self.token)
        .invoke_async(&mut self.conn)
        .await;
    }
}

async fn maxmemory_policy(conn: &mut redis::aio::MultiplexedConnection) -> String {
    let got: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query_async(conn)
        .await
        .expect("CONFIG GET");
    got[1].clone()
}

/// A session with a Redis of its own changes its eviction policy: Redis's own `CONFIG GET`
/// shows it and control is told (`PUT /admin/stacks/{code}/cache-policy`); an unknown policy is
/// `400` on `policy`; a session on a shared Redis is refused `409` and changes nothing.
pub async fn redis_policy(runtime: &Runtime) {
    let Some(url) = engine_url("STACKLAB_TEST_REDIS_URL") else {
        return;
    };
    let rt = runtime.name();
    let lab = Lab::start(runtime).await;
    let client = redis::Client::open(url.as_str()).expect("a Redis URL");
    let connect = || async {
        client
            .get_multiplexed_async_connection()
            .await
            .expect("Redis")
    };
    let lock = RedisLock::take(connect().await).await;
    let mut conn = connect().await;
    let before = maxmemory_policy(&mut conn).await;
    let want = if before == "allkeys-lfu" {
        "volatile-lru"
    } else {
        "allkeys-lfu"
    };

    let mut own = redis_stack().await;
    own.descriptor.cache.shared = false;
    lab.serve(&own);
    let api = lab.api(&own);
    let r = put_policy(&api, want).await;
    assert_eq!(r.status, 200, "{rt}: {:?}", r.body);
    assert_eq!(r.body["policy"], want, "{rt}: {:?}", r.body);
    assert_eq!(
        maxmemory_policy(&mut conn).await,
        want,
        "{rt}: Redis's own CONFIG GET shows the change"
    );
    assert_eq!(
        lab.control.policy_changes(),
        [(own.session().to_owned(), want.to_owned())],
        "{rt}: control was told"
    );
    let r = api.call("GET", "/api/cache", None).await;
    assert_eq!(r.body["policy"], want, "{rt}: {:?}", r.body);
    let r = put_policy(&api, "sometimes").await;
    assert_eq!((r.status, r.field()), (400, "policy"), "{rt}: {:?}", r.body);
    assert!(r.is_error_body(), "{rt}: {:?}", r.body);

    let shared = redis_stack().await;
    assert!(shared.descriptor.cache.shared);
    lab.serve(&shared);
    let r = put_policy(&lab.api(&shared), "allkeys-lru").await;
    assert_eq!((r.status, r.code()), (409, "refused"), "{rt}: {:?}", r.body);
    assert!(r.is_error_body(), "{rt}: {:?}", r.body);
    assert_eq!(
        maxmemory_policy(&mut conn).await,
        want,
        "{rt}: the refused change changed nothing"
    );
    assert_eq!(
        lab.control.policy_changes().len(),
        1,
        "{rt}: nothing recorded for refused changes"
    );

    let _: Result<(), _> = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg(&before)
        .query_async(&mut conn)
        .await;
    lock.release().await;
}

/// When its stdin closes the instance finishes the request in flight and exits 0; SIGTERM
/// does the same. The request is known to be in flight because it waits, inside the
/// instance, for the session's descriptor, which the test holds back until stdin is closed.
pub async fn graceful_exit(runtime: &Runtime) {
    let rt = runtime.name();
    for how in ["stdin EOF", "SIGTERM"] {
        let mut lab = Lab::start(runtime).await;
        let stack = sqlite_stack().await;
        lab.serve(&stack);
        let hold = lab.control.hold(stack.session());
        let api = lab.api(&stack);
        let in_flight = tokio::spawn(async move {
            api.call("POST", "/api/users", Some(json!({"username": "last", "email": "last@example.com", "password": "password123"}))).await
        });
        lab.control
            .fetched(stack.session(), 1, Duration::from_secs(10))
            .await;
        match how {
            "stdin EOF" => lab.instance.close_stdin(),
            _ => lab.instance.terminate(),
        }
        // Give the instance a moment to notice before the request can finish; a correct
        // instance passes however long this is.
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(hold);
        let r = in_flight.await.expect("the request task");
        assert_eq!(
            r.status, 201,
            "{rt}: {how}: the request in flight finished: {:?}",
            r.body
        );
        let status = lab.instance.exit_within(EXIT_DEADLINE).await;
        assert!(
            status.success(),
            "{rt}: {how}: exited with {status}; it said:\n{}",
            lab.instance.output()
        );
        assert_eq!(
            raw_count(&stack).await,
            1,
            "{rt}: {how}: its write is in the database"
        );
    }
}
