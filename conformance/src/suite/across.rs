//! Across runtimes: one stack, two instances of different runtimes on the same descriptor
//! server. What the writer stores, the reader lists, searches, verifies and decrypts, and the
//! other way round; the cache entries one writes the other reads too (write-through on Redis
//! and Memcached, alternately), so the cache's value format is held to as well as the rows'.

use crate::engines::{stack, Db, Kv, Stack, PASSWORD_MODES};
use crate::raw::{password_matches, raw_column};
use crate::runtime::{pairs, Runtime};
use crate::{Api, DescriptorServer, Instance, Settings};
use serde_json::json;
use stacklab_types::stack::{Encryption, PasswordStorage, WritePolicy};

/// Every ordered pair of distinct runtimes on `db`, with each password mode, and with
/// encryption on: users written through the first are listed, searched, verified (right and
/// wrong password) and decrypted through the second; an update through the second reads
/// back through the first. One instance per runtime serves every stack of the test.
pub async fn across(db: Db) {
    // Pairs where a runtime does not offer the database are skipped, each said aloud.
    let pairs: Vec<_> = pairs()
        .into_iter()
        .filter(|(a, b)| a.offers(db) && b.offers(db))
        .collect();
    if pairs.is_empty() {
        return;
    }
    let control = DescriptorServer::start().await;
    let settings = Settings::default();
    let mut instances: Vec<(String, Instance)> = Vec::new();
    let mut runtimes: Vec<Runtime> = Vec::new();
    for (a, b) in &pairs {
        for rt in [a, b] {
            if !runtimes.iter().any(|r| r.name() == rt.name()) {
                runtimes.push(rt.clone());
            }
        }
    }
    for rt in &runtimes {
        let inst = Instance::start(rt, &control.url(), control.credential(), &settings).await;
        instances.push((rt.name().to_owned(), inst));
    }
    // Self-pairs (a check of this test itself) need a second instance of the one runtime.
    let self_paired = pairs.iter().any(|(a, b)| a.name() == b.name());
    let second = if self_paired {
        Some(Instance::start(&pairs[0].0, &control.url(), control.credential(), &settings).await)
    } else {
        None
    };
    let find = |name: &str| {
        &instances
            .iter()
            .find(|(n, _)| n == name)
            .expect("started")
            .1
    };
    let mut n = 0;
    for (a, b) in &pairs {
        let writer = find(a.name());
        let reader = match &second {
            Some(s) if a.name() == b.name() => s,
            _ => find(b.name()),
        };
        let modes = PASSWORD_MODES.iter().map(|m| (*m, Encryption::None));
        for (mode, encryption) in modes.chain([(PasswordStorage::Argon2id, Encryption::Aes256Gcm)])
        {
            let kv = if n % 2 == 0 { Kv::Redis } else { Kv::Memcached };
            n += 1;
            let Some(stack) = stack(db, kv, WritePolicy::WriteThrough, mode, encryption).await
            else {
                continue;
            };
            let what = format!(
                "{db:?} x {kv:?}, {mode:?}, {encryption:?}: written by {} ({}), read by {} ({})",
                a.name(),
                writer.addr,
                b.name(),
                reader.addr
            );
            let mut d = stack.descriptor.clone();
            d.runtime = a.name().to_owned();
            control.insert(&d);
            one_stack(&stack, writer, reader, &what).await;
        }
    }
}

async fn one_stack(stack: &Stack, writer: &Instance, reader: &Instance, what: &str) {
    let w = Api::new(&writer.url(), Some(stack.session()));
    let r = Api::new(&reader.url(), Some(stack.session()));
    let encrypted = stack.descriptor.encryption == Encryption::Aes256Gcm;
    let people = [
        ("Ann_Lee", "Ann.Lee@Example.com", "correct horse", "Ann Lee"),
        ("bob", "bob@example.org", "battery staple", "Bob Brown"),
        ("Zoë", "zoe@example.net", "paßwort-ünïcode", "Zoë Ägg"),
    ];
    let mut created = Vec::new();
    for (username, email, password, full_name) in people {
        // `Zoë` is not a valid username (ASCII only), which both runtimes must say alike.
        let username = if username == "Zoë" { "zoe" } else { username };
        let res = w.call("POST", "/api/users", Some(json!({"username": username, "email": email, "password": password, "full_name": full_name}))).await;
        assert_eq!(res.status, 201, "{what}: create {username}: {:?}", res.body);
        created.push((res.body, password));
    }
    let bad = w
        .call(
            "POST",
            "/api/users",
            Some(json!({"username": "Zoë", "email": "z@example.net", "password": "password123"})),
        )
        .await;
    let bad_r = r
        .call(
            "POST",
            "/api/users",
            Some(json!({"username": "Zoë", "email": "z@example.net", "password": "password123"})),
        )
        .await;
    assert_eq!(
        (bad.status, bad.code(), bad.field()),
        (bad_r.status, bad_r.code(), bad_r.field()),
        "{what}: the same error from both: {:?} / {:?}",
        bad.body,
        bad_r.body
    );

    // The reader lists what the writer stored, field for field.
    let list = r.call("GET", "/api/users?limit=10", None).await;
    assert_eq!(list.status, 200, "{what}: {:?}", list.body);
    assert_eq!(list.body["total"], 3, "{what}: {:?}", list.body);
    let items = list.body["items"].as_array().expect("items");
    for (user, _) in &created {
        let found = items
            .iter()
            .find(|i| i["id"] == user["id"])
            .unwrap_or_else(|| panic!("{what}: {} not listed: {items:?}", user["username"]));
        assert_eq!(found, user, "{what}: listed as written");
    }
    // Each by id: write-through put it in the shared cache, so this reads the writer's entry.
    for (user, password) in &created {
        let id = user["id"].as_i64().unwrap();
        let got = r.call("GET", &format!("/api/users/{id}"), None).await;
        assert_eq!(got.status, 200, "{what}: {:?}", got.body);
        assert_eq!(
            got.cache(),
            "hit",
            "{what}: the writer's cache entry was read"
        );
        assert_eq!(
            &got.body, user,
            "{what}: read from the writer's cache entry"
        );
        for (pw, ok) in [(*password, true), ("wrong password!", false)] {
            let v = r
                .call(
                    "POST",
                    &format!("/api/users/{id}/verify-password"),
                    Some(json!({"password": pw})),
                )
                .await;
            assert_eq!(
                (v.status, &v.body["ok"]),
                (200, &json!(ok)),
                "{what}: verify {pw:?} for {}: {:?}",
                user["username"],
                v.body
            );
        }
        let raw = raw_column(stack, id, "password").await;
        assert!(
            password_matches(
                stack.descriptor.password_storage,
                &raw,
                password,
                &stack.descriptor.pepper
            ),
            "{what}: the row's password form"
        );
    }
    // Search: substring on the username, exact email (the blind index when encrypted).
    let hits = |res: &crate::Answer| {
        res.body["items"]
            .as_array()
            .map(|i| {
                i.iter()
                    .map(|u| u["username"].as_str().unwrap_or("").to_owned())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    let s = r.call("GET", "/api/users?q=ann", None).await;
    assert_eq!(hits(&s), ["Ann_Lee"], "{what}: {:?}", s.body);
    let s = r
        .call("GET", "/api/users?q=ann.lee%40example.COM", None)
        .await;
    assert_eq!(
        hits(&s),
        ["Ann_Lee"],
        "{what}: exact email, any case: {:?}",
        s.body
    );
    if !encrypted {
        let s = r.call("GET", "/api/users?q=example.org", None).await;
        assert_eq!(hits(&s), ["bob"], "{what}: email substring: {:?}", s.body);
    }
    // Uniqueness across runtimes: the reader refuses what the writer holds.
    let dup = r.call("POST", "/api/users", Some(json!({"username": "ANN_LEE", "email": "new@example.com", "password": "password123"}))).await;
    assert_eq!(
        (dup.status, dup.field()),
        (409, "username"),
        "{what}: {:?}",
        dup.body
    );
    let dup = r
        .call(
            "POST",
            "/api/users",
            Some(json!({"username": "new", "email": "BOB@example.org", "password": "password123"})),
        )
        .await;
    assert_eq!(
        (dup.status, dup.field()),
        (409, "email"),
        "{what}: {:?}",
        dup.body
    );

    // The other way: the reader updates, the writer reads it back and verifies the new password.
    let id = created[1].0["id"].as_i64().unwrap();
    let up = r.call("PATCH", &format!("/api/users/{id}"), Some(json!({"full_name": "Robert Brown", "password": "a new password", "email": "Robert@Example.org"}))).await;
    assert_eq!(up.status, 200, "{what}: {:?}", up.body);
    let back = w.call("GET", &format!("/api/users/{id}"), None).await;
    assert_eq!(
        back.body, up.body,
        "{what}: the writer reads the reader's update"
    );
    for (pw, ok) in [("a new password", true), ("battery staple", false)] {
        let v = w
            .call(
                "POST",
                &format!("/api/users/{id}/verify-password"),
                Some(json!({"password": pw})),
            )
            .await;
        assert_eq!(
            v.body["ok"], ok,
            "{what}: the writer verifies the reader's new password {pw:?}: {:?}",
            v.body
        );
    }
    let s = w
        .call("GET", "/api/users?q=robert%40example.org", None)
        .await;
    assert_eq!(
        hits(&s),
        ["bob"],
        "{what}: the reader's new email is found by the writer: {:?}",
        s.body
    );
    if encrypted {
        let raw = raw_column(stack, id, "email").await;
        assert_eq!(
            crate::raw::open_sealed(&stack.descriptor.encryption_key, &raw).as_deref(),
            Some("Robert@Example.org"),
            "{what}"
        );
    }
    // Deleted through one, gone through the other (from the shared cache too).
    let del = w.call("DELETE", &format!("/api/users/{id}"), None).await;
    assert_eq!(del.status, 200, "{what}: {:?}", del.body);
    let gone = r.call("GET", &format!("/api/users/{id}"), None).await;
    assert_eq!(
        (gone.status, gone.code()),
        (404, "not_found"),
        "{what}: {:?}",
        gone.body
    );
}
