//! Runtimes as a choice: each with a pool of its own, started on demand and stopped when
//! idle, offered with the reason when it cannot run; and the credential instances get.

use crate::helpers::*;
use serde_json::json;
use std::path::{Path, PathBuf};

/// A runtimes folder: `rust`, `twin` (the Rust binary again under another name, so a second
/// runtime's pool can be tested without another toolchain) and `broken` (its check fails).
fn runtimes_dir(dir: &Path) -> PathBuf {
    let root = dir.join("backends");
    for (name, text) in [
        ("rust", "name = \"rust\"\nlabel = \"Rust (hyper)\"\ndescription = \"The Rust one.\"\nstart = [\"{stacklab}\", \"backend\"]\n"),
        ("twin", "name = \"twin\"\nlabel = \"Twin\"\ndescription = \"The Rust one under another name.\"\ncheck = [\"true\"]\nstart = [\"{stacklab}\", \"backend\"]\n[unsupported]\n\"password_storage.bcrypt-pepper\" = \"the twin keeps no pepper\"\n"),
        ("broken", "name = \"broken\"\nlabel = \"Broken\"\ndescription = \"Cannot run.\"\ncheck = [\"sh\", \"-c\", \"echo 'the broken toolchain is missing: run setup.sh' >&2; exit 1\"]\nstart = [\"./nothing\"]\n"),
    ] {
        std::fs::create_dir_all(root.join(name)).unwrap();
        std::fs::write(root.join(name).join("runtime.toml"), text).unwrap();
    }
    root
}

/// Asks for a session with `body` and checks it is refused with `status`, naming `field`, in
/// an answer that says `says`.
async fn refused(
    b: &mut Browser,
    body: serde_json::Value,
    (status, field): (u16, &str),
    says: &str,
) {
    let r = b.post("/api/sessions", body).await;
    assert_eq!(
        (r.status, r.field()),
        (status, field.to_string()),
        "{}",
        r.text()
    );
    assert!(r.text().contains(says), "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_pool_starts_on_demand_serves_its_sessions_and_stops_when_idle() {
    let dir = temp_dir("runtimes");
    let root = runtimes_dir(&dir);
    let up = start_up(&dir, 1, move |_, c| {
        c.backends.runtimes_dir = root;
        c.backends.idle_stop = std::time::Duration::from_secs(600);
    })
    .await;
    let data = dir.join("data");
    let mut b = Browser::new(&data, up.addrs.edge.port());

    // Offered with the reason when it cannot run.
    let r = b.get("/api/options").await;
    let options = r.json();
    let runtime = choice(&options, "runtime");
    assert_eq!(runtime["default"], "rust");
    let names: Vec<&str> = runtime["options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["value"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["rust", "broken", "twin"]);
    let broken = &runtime["options"][1];
    assert_eq!(broken["available"], false);
    assert_eq!(
        broken["reason"],
        "the broken toolchain is missing: run setup.sh"
    );
    assert_eq!(runtime["options"][2]["label"], "Twin");
    assert_eq!(runtime["options"][2]["available"], true);

    // Refused by field, nothing made.
    for (body, refusal, says) in [
        (
            json!({"runtime": "broken"}),
            (503, "runtime"),
            "run setup.sh",
        ),
        (
            json!({"runtime": "cobol"}),
            (400, "runtime"),
            "rust, broken, twin",
        ),
    ] {
        refused(&mut b, body, refusal, says).await;
    }
    // A choice the runtime's manifest says it cannot serve: shown on the runtime, refused
    // naming the field.
    assert_eq!(
        runtime["options"][2]["unsupported"],
        json!([{"field": "password_storage", "value": "bcrypt-pepper", "reason": "the twin keeps no pepper"}])
    );
    assert_eq!(runtime["options"][0]["unsupported"], json!([]));
    refused(
        &mut b,
        json!({"runtime": "twin", "password_storage": "bcrypt-pepper"}),
        (400, "password_storage"),
        "Twin does not offer password_storage `bcrypt-pepper`: the twin keeps no pepper",
    )
    .await;
    assert_eq!(up.control.sessions.len(), 0);
    assert_eq!(pool_instances(&up, "rust").len(), 1, "the warm pool");
    assert!(
        pool_instances(&up, "twin").is_empty(),
        "not started for nobody"
    );

    // The first session of a runtime starts its pool, as a step it sees.
    let r = b.post("/api/sessions", json!({"runtime": "twin"})).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    let step = entry(&v["steps"], "name", "runtime");
    assert_eq!(step["status"], "done", "{step}");
    assert!(
        step["detail"].as_str().unwrap().contains("Twin pool"),
        "{step}"
    );
    let twins = pool_instances(&up, "twin");
    assert_eq!(twins.len(), 1);
    assert!(twins[0].starts_with("twin-"), "{twins:?}");
    let r = add_ann(&mut b).await;
    let member = r.headers["x-stacklab-member"].to_str().unwrap().to_owned();
    assert_eq!(member, twins[0], "served by its runtime's pool");
    let topo = b.get("/api/topology").await.json();
    assert!(
        topo["pools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "twin" && p["members"][0]["id"] == twins[0].as_str()),
        "{topo}"
    );
    assert_eq!(topo["session"]["pool"], "twin");

    // A second session finds it running.
    let mut b2 = Browser::new(&data, up.addrs.edge.port());
    let r = b2.post("/api/sessions", json!({"runtime": "twin"})).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let step = entry(&r.json()["steps"], "name", "runtime");
    assert_eq!(step["status"], "skipped", "{step}");
    assert_eq!(pool_instances(&up, "twin"), twins);

    // Idle: kept while a session uses it, stopped the idle time after the last one ended.
    let token = Some(TOKEN);
    let admin = up.addrs.admin;
    assert_eq!(b.send("DELETE", "/api/session", None).await.status, 200);
    // Longer than the idle stop, shorter than a session's idle expiry.
    up.control.clock.advance(700_000);
    let r = stacklab_control_reap(admin, token).await;
    assert_eq!(r["pools_stopped"], json!([]), "b2's session still uses it");
    assert_eq!(b2.send("DELETE", "/api/session", None).await.status, 200);
    let r = stacklab_control_reap(admin, token).await;
    assert_eq!(r["pools_stopped"], json!([]), "idle only from now");
    up.control.clock.advance(599_000);
    let r = stacklab_control_reap(admin, token).await;
    assert_eq!(r["pools_stopped"], json!([]), "not idle long enough");
    up.control.clock.advance(2_000);
    let r = stacklab_control_reap(admin, token).await;
    assert_eq!(r["pools_stopped"], json!(["twin"]));
    assert!(pool_instances(&up, "twin").is_empty());
    assert_eq!(
        pool_instances(&up, "rust").len(),
        1,
        "a warm pool is never stopped"
    );
    assert_eq!(up.control.metrics.pools_stopped.get(), 1);

    // And it starts again for the next one.
    let mut b3 = Browser::new(&data, up.addrs.edge.port());
    let r = b3.post("/api/sessions", json!({"runtime": "twin"})).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(pool_instances(&up, "twin").len(), 1);
    add_user(&mut b3, "bob").await;
    up.shutdown().await.unwrap();
}

async fn stacklab_control_reap(
    admin: std::net::SocketAddr,
    token: Option<&str>,
) -> serde_json::Value {
    let r = crate::helpers::admin(admin, "POST", "/admin/control/reap", token, None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_get_a_credential_that_reads_descriptors_and_nothing_else() {
    let dir = temp_dir("runtime-token");
    // As an operator might run it: the admin token in control's environment (each test is a
    // process of its own under nextest). Its children must not inherit it.
    std::env::set_var("STACKLAB_ADMIN_TOKEN", TOKEN);
    let up = start_up(&dir, 1, |_, _| {}).await;
    let data = dir.join("data");
    let admin = up.addrs.admin;
    let file = data.join("runtime.token");
    let runtime = std::fs::read_to_string(&file).unwrap();
    assert!(runtime.len() >= 16);
    assert_ne!(runtime, TOKEN);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let mut b = Browser::new(&data, up.addrs.edge.port());
    let r = b.post("/api/sessions", json!({})).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let code = r.json()["code"].as_str().unwrap().to_owned();

    // What it is for.
    let r = admin_call(
        admin,
        "GET",
        &format!("/admin/stacks/{}", crate::helpers::id(&code)),
        &runtime,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["database"]["engine"], "sqlite");
    let r = crate::helpers::admin(
        admin,
        "PUT",
        &format!("/admin/stacks/{}/cache-policy", crate::helpers::id(&code)),
        Some(&runtime),
        Some(json!({"policy": "lfu"})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());

    // Nothing else: control's paths and the proxy's alike answer 403 with the JSON error.
    for (method, path) in [
        ("GET", "/admin/routes"),
        ("GET", "/admin/control/sessions"),
        ("GET", "/admin/topology"),
        ("POST", "/admin/pools/rust/instances"),
        ("DELETE", "/admin/pools/rust"),
        ("GET", "/admin/bugs"),
        ("GET", "/admin/pools"),
        ("GET", "/admin/sessions"),
        ("POST", "/admin/reload"),
        (
            "GET",
            &format!("/admin/sessions/{}/requests", crate::helpers::id(&code)),
        ),
        (
            "DELETE",
            &format!("/admin/sessions/{}", crate::helpers::id(&code)),
        ),
    ] {
        let r = admin_call(admin, method, path, &runtime).await;
        assert_eq!(
            (r.status, r.code()),
            (403, "forbidden".into()),
            "{method} {path}: {}",
            r.text()
        );
        assert!(!r.text().contains(&runtime), "never echoed");
    }
    assert_eq!(up.control.sessions.len(), 1, "nothing changed");
    assert_eq!(pool_instances(&up, "rust").len(), 1);
    // The admin token still does everything; no token is still 401.
    assert_eq!(
        admin_call(admin, "GET", "/admin/routes", TOKEN)
            .await
            .status,
        200
    );
    let r = crate::helpers::admin(
        admin,
        "GET",
        &format!("/admin/stacks/{}", crate::helpers::id(&code)),
        None,
        None,
    )
    .await;
    assert_eq!(r.status, 401);

    // The instance holds the runtime credential only: not in its arguments or environment,
    // and the admin token nowhere.
    let pid = up.control.instances.list()[0].pid;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    for (what, bytes) in [("arguments", &cmdline), ("environment", &environ)] {
        let text = String::from_utf8_lossy(bytes);
        assert!(!text.contains(&runtime), "the credential is in its {what}");
        assert!(!text.contains(TOKEN), "the admin token is in its {what}");
    }
    up.shutdown().await.unwrap();
}

async fn admin_call(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: &str,
) -> crate::helpers::Answer {
    crate::helpers::admin(addr, method, path, Some(token), None).await
}

/// Issue 19: a restart must not leave a live session of a runtime started on demand without
/// its route or its pool. The edge accepts as soon as `up` binds it, before the route feed has
/// given it a table and while the session's pool has no instance yet: a request sent then is
/// held until both are there (`limits.start_hold_ms`) and served — not `410`, not `503`. And
/// `up` reports ready once every pool a restored session needs has its instances.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_session_of_an_on_demand_runtime_is_served_at_once_after_a_restart() {
    let dir = temp_dir("runtimes-restart");
    let root = runtimes_dir(&dir);
    let config = |root: PathBuf| {
        move |_: &mut stacklab_proxy::config::Config,
              c: &mut stacklab_control::config::ControlConfig| {
            c.backends.runtimes_dir = root;
            c.backends.idle_stop = std::time::Duration::from_secs(600);
        }
    };
    let up = start_up(&dir, 1, config(root.clone())).await;
    let data = dir.join("data");
    let mut b = Browser::new(&data, up.addrs.edge.port());
    new_session(&mut b, json!({"runtime": "twin"})).await;
    add_user(&mut b, "tia").await;
    up.shutdown().await.unwrap();

    // The restart, on a port known beforehand so the request can go while `up` starts.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let starting = tokio::spawn({
        let (dir, tweak) = (dir.clone(), config(root));
        async move {
            start_up(&dir, 1, move |cfg, c| {
                cfg.edge.addr = ([127, 0, 0, 1], port).into();
                tweak(cfg, c)
            })
            .await
        }
    });
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the edge never listened"
        );
        assert!(!starting.is_finished(), "up ended before its edge listened");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let mut b = b.on_port(port);
    let r = b.get("/api/users/1").await;
    assert_eq!(
        r.status,
        200,
        "the first request, sent while stacklab was starting: {}",
        r.text()
    );
    assert_eq!(r.json()["username"], "tia");
    let up = starting.await.unwrap();
    assert_eq!(
        pool_instances(&up, "twin").len(),
        1,
        "the twin pool was started for its restored session"
    );
    up.shutdown().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The processes under `pid` (itself first), from `/proc/PID/task/PID/children`.
fn process_tree(pid: u32) -> Vec<u32> {
    let mut all = vec![pid];
    let mut i = 0;
    while i < all.len() {
        let p = all[i];
        if let Ok(text) = std::fs::read_to_string(format!("/proc/{p}/task/{p}/children")) {
            all.extend(
                text.split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
        i += 1;
    }
    all
}

/// Issue 22 item 3: a process instance runs in a bubblewrap sandbox where the data folder holds
/// only `sessions/` (no admin token, runtime token, master key or registry), the rest of the
/// machine is read-only, control's processes are out of sight, and its config is the
/// `[log]`/`[backend]` copy, never the operator's file with its secrets. Seen from outside,
/// through `/proc/PID/root` of the instance's own process (its mount namespace).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_instance_sees_of_the_data_folder_only_sessions() {
    let dir = temp_dir("sandbox");
    std::fs::create_dir_all(&dir).unwrap();
    let source = dir.join("stacklab.toml");
    std::fs::write(
        &source,
        format!("[admin]\ntoken = \"{TOKEN}\"\n[backend]\nmax_sessions = 9\n"),
    )
    .unwrap();
    let up = start_up(&dir, 1, |c, _| c.source = Some(source.clone())).await;
    if !up.control.sandbox.active() {
        stacklab_testkit::missing(
            "bubblewrap cannot run here (apt install bubblewrap; it needs namespaces)",
        );
        return;
    }
    let data = std::path::absolute(dir.join("data")).unwrap();
    let mut b = Browser::new(&data, up.addrs.edge.port());
    let r = b.post("/api/sessions", json!({})).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = b
        .post(
            "/api/users",
            json!({"username": "sandy", "email": "sandy@example.com", "password": "longenough"}),
        )
        .await;
    assert_eq!(r.status, 201, "the sandboxed instance serves: {}", r.text());

    let pid = up.control.instances.list()[0].pid;
    let tree = process_tree(pid);
    let ours = std::fs::read_link("/proc/self/ns/mnt").unwrap();
    let inside: Vec<u32> = tree
        .iter()
        .copied()
        .filter(|p| {
            std::fs::read_link(format!("/proc/{p}/ns/mnt"))
                .ok()
                .as_ref()
                != Some(&ours)
        })
        .collect();
    assert!(
        !inside.is_empty(),
        "no process of {tree:?} is in a mount namespace of its own"
    );
    let instance = *inside.last().unwrap();
    let seen = |p: &Path| PathBuf::from(format!("/proc/{instance}/root{}", p.display()));
    // (The admin token came from the environment here, so there is no admin.token file; it
    // would lie beside these.)
    for hidden in ["runtime.token", "control.key", "registry.db"] {
        assert!(data.join(hidden).exists(), "{hidden} is there outside");
        assert!(
            !seen(&data.join(hidden)).exists(),
            "the instance sees {hidden}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(seen(&source)).unwrap(),
        "",
        "the operator's config file reads empty inside"
    );
    let files: Vec<_> = std::fs::read_dir(seen(&data.join("sessions")))
        .unwrap()
        .filter_map(|e| e.ok())
        .collect();
    assert!(
        !files.is_empty(),
        "the session's SQLite file is visible to it"
    );
    let config = std::fs::read_to_string(seen(&data.join("backend.toml"))).unwrap();
    assert!(config.contains("max_sessions = 9"), "{config}");
    assert!(
        !config.contains(TOKEN),
        "the operator's secrets stay out: {config}"
    );
    let cmdline = String::from_utf8(std::fs::read(format!("/proc/{instance}/cmdline")).unwrap())
        .unwrap()
        .replace('\0', " ");
    assert!(
        cmdline.contains(&format!("--config {}", data.join("backend.toml").display())),
        "{cmdline}"
    );
    let err = std::fs::write(seen(Path::new("/etc/stacklab-sandbox-probe")), "x").unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ReadOnlyFilesystem, "{err}");
    assert!(
        !seen(Path::new(&format!("/proc/{}", std::process::id()))).exists(),
        "control's process is visible in the instance's /proc"
    );
    let status = std::fs::read_to_string(format!("/proc/{instance}/status")).unwrap();
    let caps = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .unwrap()
        .trim();
    assert_eq!(
        u64::from_str_radix(caps, 16).unwrap(),
        0,
        "no capability: {status}"
    );
    up.shutdown().await.unwrap();
}
