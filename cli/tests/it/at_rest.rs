//! What a session leaves on disk is readable by stacklab's user only.

use crate::helpers::*;
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_folder_its_registry_and_sessions_databases_are_private() {
    let dir = temp_dir("at-rest");
    let up = start_up(&dir, 1, |_, _| {}).await;
    let data = dir.join("data");
    let mut b = Browser::new(&data, up.addrs.edge.port());
    let r = b.post("/api/sessions", json!({"database": "sqlite"})).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let code = r.json()["code"].as_str().unwrap().to_owned();
    add_ann(&mut b).await;

    assert_eq!(mode(&data), 0o700, "the data folder");
    assert_eq!(mode(&data.join("sessions")), 0o700, "the sessions folder");
    // (The admin token is given to this test, so no admin.token is written.)
    for file in [
        "registry.db",
        "runtime.token",
        "control.key",
        "tls/self-signed.key",
    ] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
    let id = stacklab_types::session::id(&code);
    let db = data.join("sessions").join(format!("{id}.db"));
    assert_eq!(mode(&db), 0o600, "the session's SQLite file");
    // SQLite's journal files take the database file's mode.
    for entry in std::fs::read_dir(data.join("sessions")).unwrap().flatten() {
        assert_eq!(mode(&entry.path()), 0o600, "{}", entry.path().display());
    }
    for entry in std::fs::read_dir(&data).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("registry.db") {
            assert_eq!(mode(&entry.path()), 0o600, "{name}");
        }
    }
    // The registry keeps a keyed tag of the client, not its address, and the session's id,
    // not its code: no file control wrote holds the code (the cookie is its only copy).
    up.shutdown().await.unwrap();
    let mut files = vec![];
    let mut dirs = vec![data.clone()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            if entry.file_type().unwrap().is_dir() {
                dirs.push(entry.path());
            } else {
                files.push(entry.path());
            }
        }
    }
    assert!(
        files.iter().any(|f| f.ends_with("registry.db")),
        "{files:?}"
    );
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        assert!(
            !bytes.windows(code.len()).any(|w| w == code.as_bytes()),
            "{} holds the session code",
            f.display()
        );
    }
    let mut reg = <sqlx::SqliteConnection as sqlx::Connection>::connect(&format!(
        "sqlite://{}?mode=ro",
        data.join("registry.db").display()
    ))
    .await
    .unwrap();
    let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM sessions")
        .fetch_all(&mut reg)
        .await
        .unwrap();
    assert_eq!(ids, std::slice::from_ref(&id));
    let clients: Vec<String> = sqlx::query_scalar("SELECT client FROM sessions")
        .fetch_all(&mut reg)
        .await
        .unwrap();
    assert_eq!(clients.len(), 1);
    assert!(
        clients[0].len() == 32
            && clients[0].bytes().all(|b| b.is_ascii_hexdigit())
            && clients[0].parse::<std::net::IpAddr>().is_err(),
        "the registry holds {:?}",
        clients[0]
    );
}
