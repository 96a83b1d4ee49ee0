//! The `docker` provisioner against the machine's Docker engine, called directly, with the
//! local images of `config/images` (built by `config/images/build.sh`, which `scripts/test`
//! runs when they are missing) and the `[docker]` section of
//! `config/images/docker-local.toml`. Each test has an instance label of its own, so tests
//! running side by side never see (or reap) each other's containers.
//!
//! What is checked through the Docker API (by label and by name): every container has its
//! labels, limits, no capability, `no-new-privileges`, a read-only root, no published port
//! (an internal network of the session's own); a session's
//! own credentials work (the backend's own store and cache adapters use them) and another
//! session's do not; the cache policy switch reaches the session's own Redis; teardown leaves
//! no container, network or volume and may run twice; leftovers finds what a crash left and a
//! new start removes a crashed run's pooled containers; the warm pool serves a launch, refills,
//! and replaces a pooled container killed from outside; a container that never gets ready is
//! removed and its log tail (without its password) is in the error.
//!
//! A missing Docker engine or missing local images fail these tests under
//! `STACKLAB_REQUIRE_SERVICES=1` (CI) and skip them, saying so, elsewhere. The measurements
//! (launch p50/p95 with and without the pool, memory per idle stack) are an ignored test:
//! `cargo test -p stacklab --test it docker::measure -- --ignored --nocapture`.

use crate::helpers::{all_done, choices, files_dir, user};
use bollard::query_parameters::{
    InspectContainerOptions, KillContainerOptions, ListContainersOptions, ListNetworksOptions,
    ListVolumesOptions, StatsOptions,
};
use bytes::Bytes;
use futures_util::StreamExt;
use sqlx::{Connection, Executor};
use stacklab_control::choices::Choices;
use stacklab_control::provision::docker::{
    backend, container_name, network_name, Docker, DockerConfig, Engine, Role, LABEL_ENGINE,
    LABEL_INSTANCE, LABEL_ROLE, LABEL_SESSION, WARM,
};
use stacklab_control::provision::{
    ProvisionError, ProvisionRequest, Provisioned, Provisioner, Steps,
};
use stacklab_control::seal::session_code;
use stacklab_types::stack::{CacheEngine, DatabaseEngine};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const LOCAL_IMAGES: &[&str] = &[
    "stacklab/postgres:local",
    "stacklab/mariadb:local",
    "stacklab/redis:local",
    "stacklab/memcached:local",
];

fn skip(why: &str) -> Option<bollard::Docker> {
    stacklab_testkit::missing(format!(
        "{why} (scripts/test builds the images with config/images/build.sh when Docker is reachable)"
    ));
    None
}

/// The Docker engine, when it answers and has the local images; `None`: skip.
async fn engine() -> Option<bollard::Docker> {
    let api = match bollard::Docker::connect_with_defaults() {
        Ok(api) => api,
        Err(e) => return skip(&format!("no Docker engine address: {e}")),
    };
    match tokio::time::timeout(Duration::from_secs(3), api.ping()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return skip(&format!("the Docker engine does not answer: {e}")),
        Err(_) => return skip("the Docker engine does not answer within 3 s"),
    }
    let api = match api.negotiate_version().await {
        Ok(api) => api,
        Err(e) => {
            return skip(&format!(
                "cannot agree on an API version with the Docker engine: {e}"
            ))
        }
    };
    for image in LOCAL_IMAGES {
        if api.inspect_image(image).await.is_err() {
            return skip(&format!("the local image {image} is missing"));
        }
    }
    Some(api)
}

/// `config/images/docker-local.toml`'s `[docker]` section for a test: its own instance, and
/// `warm` pooled containers of every engine.
fn config(tag: &str, warm: usize) -> DockerConfig {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/images/docker-local.toml"),
    )
    .unwrap();
    let file: toml::Value = toml::from_str(&text).unwrap();
    let mut cfg = DockerConfig::from_section(file.get("docker"))
        .unwrap()
        .expect("docker-local.toml has a [docker] section");
    cfg.instance = format!("t-{tag}-{:08x}", rand::random::<u32>());
    for spec in cfg.engines.values_mut() {
        spec.warm = warm;
    }
    cfg
}

async fn provision(
    docker: &Docker,
    id: &str,
    choices: &Choices,
    steps: &Steps,
) -> Result<Provisioned, ProvisionError> {
    docker
        .provision(
            &ProvisionRequest {
                id,
                choices,
                files_dir: PathBuf::from("/nonexistent"),
                cache_max_bytes: 8 << 20,
                cache_ttl_ms: 60_000,
            },
            steps,
        )
        .await
}

fn new_id() -> String {
    stacklab_types::session::id(&session_code())
}

/// `url` with its password replaced by `other`'s.
fn with_password_of(url: &str, other: &str) -> String {
    let pw = |u: &str| {
        let rest = u.split_once("://").unwrap().1;
        let creds = rest.rsplit_once('@').unwrap().0;
        creds.split_once(':').unwrap().1.to_owned()
    };
    url.replacen(&pw(url), &pw(other), 1)
}

/// Containers of `instance` carrying `label=value`.
async fn containers(
    api: &bollard::Docker,
    instance: &str,
    label: Option<(&str, &str)>,
) -> Vec<bollard::models::ContainerSummary> {
    let mut wanted = vec![format!("{LABEL_INSTANCE}={instance}")];
    if let Some((k, v)) = label {
        wanted.push(format!("{k}={v}"));
    }
    api.list_containers(Some(ListContainersOptions {
        all: true,
        filters: Some(HashMap::from([("label".to_owned(), wanted)])),
        ..Default::default()
    }))
    .await
    .unwrap()
}

fn name_of(c: &bollard::models::ContainerSummary) -> String {
    c.names.as_ref().unwrap()[0]
        .trim_start_matches('/')
        .to_owned()
}

async fn networks(api: &bollard::Docker, instance: &str) -> Vec<String> {
    api.list_networks(Some(ListNetworksOptions {
        filters: Some(HashMap::from([(
            "label".to_owned(),
            vec![format!("{LABEL_INSTANCE}={instance}")],
        )])),
    }))
    .await
    .unwrap()
    .into_iter()
    .filter_map(|n| n.name)
    .collect()
}

/// Checks one session container as the Docker API shows it; returns its volume names.
async fn check_container(
    api: &bollard::Docker,
    cfg: &DockerConfig,
    id: &str,
    role: Role,
    engine: Engine,
    session_label: &str,
) -> Vec<String> {
    let name = container_name(id, role);
    let info = api
        .inspect_container(&name, None::<InspectContainerOptions>)
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(info.name.as_deref(), Some(format!("/{name}").as_str()));
    let labels = info.config.as_ref().unwrap().labels.clone().unwrap();
    assert_eq!(labels[LABEL_INSTANCE], cfg.instance);
    assert_eq!(labels[LABEL_SESSION], session_label, "{name}");
    assert_eq!(labels[LABEL_ROLE], role.as_str());
    assert_eq!(labels[LABEL_ENGINE], engine.key());
    let spec = &cfg.engines[&engine];
    let host = info.host_config.as_ref().unwrap();
    assert_eq!(host.memory, Some(spec.memory_bytes), "{name}: memory");
    assert_eq!(host.memory_swap, Some(spec.memory_bytes), "{name}: no swap");
    assert_eq!(host.nano_cpus, Some(spec.nano_cpus), "{name}: CPU");
    assert_eq!(host.pids_limit, Some(spec.pids), "{name}: processes");
    assert_eq!(host.privileged, Some(false));
    assert_eq!(host.cap_drop.as_deref(), Some(&["ALL".to_owned()][..]));
    assert!(host.cap_add.clone().unwrap_or_default().is_empty());
    assert!(host
        .security_opt
        .as_ref()
        .unwrap()
        .iter()
        .any(|o| o.starts_with("no-new-privileges")));
    // Nothing published: the container is reached at its address on an internal network.
    let published: usize = info
        .network_settings
        .as_ref()
        .unwrap()
        .ports
        .clone()
        .unwrap_or_default()
        .into_values()
        .map(|b| b.unwrap_or_default().len())
        .sum();
    assert_eq!(published, 0, "{name}: no published port");
    assert!(
        host.port_bindings.clone().unwrap_or_default().is_empty(),
        "{name}: no port binding"
    );
    assert_eq!(host.readonly_rootfs, Some(true), "{name}: read-only root");
    let nets = info.network_settings.unwrap().networks.unwrap();
    assert!(
        nets.contains_key(&network_name(id)),
        "{name} is on the session's network: {:?}",
        nets.keys()
    );
    // The session's network is a small subnet of docker.session_network_range, not one of
    // Docker's /16 pools (which run out after a few dozen sessions).
    let net = api
        .inspect_network(
            &network_name(id),
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
        .unwrap();
    let subnets: Vec<String> = net
        .ipam
        .and_then(|i| i.config)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|c| c.subnet)
        .collect();
    assert!(
        subnets.len() == 1 && subnets[0].starts_with("10.213.") && subnets[0].ends_with("/28"),
        "{name}'s network: {subnets:?}"
    );
    assert_eq!(
        net.internal,
        Some(true),
        "{name}'s network reaches nothing outside"
    );
    assert!(!nets.contains_key("bridge") && !nets.contains_key("host"));
    assert_eq!(
        nets.len(),
        1,
        "{name} is on its session's network only (a claimed warm container left the pool's): {:?}",
        nets.keys()
    );
    assert_eq!(
        info.state.unwrap().status.map(|s| s.to_string()).as_deref(),
        Some("running")
    );
    info.mounts
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.name)
        .collect()
}

/// Nothing of session `id` is left on the engine: no container (by name or label), no
/// network, none of `volumes`.
async fn nothing_left(api: &bollard::Docker, cfg: &DockerConfig, id: &str, volumes: &[String]) {
    assert!(
        containers(api, &cfg.instance, Some((LABEL_SESSION, id)))
            .await
            .is_empty(),
        "containers labelled with {id} are left"
    );
    for role in [Role::Database, Role::Cache] {
        let name = container_name(id, role);
        assert!(
            api.inspect_container(&name, None::<InspectContainerOptions>)
                .await
                .is_err(),
            "{name} is left"
        );
    }
    assert!(
        !networks(api, &cfg.instance)
            .await
            .contains(&network_name(id)),
        "network {} is left",
        network_name(id)
    );
    let left: Vec<String> = api
        .list_volumes(None::<ListVolumesOptions>)
        .await
        .unwrap()
        .volumes
        .unwrap_or_default()
        .into_iter()
        .map(|v| v.name)
        .filter(|v| volumes.contains(v))
        .collect();
    assert!(left.is_empty(), "volumes left: {left:?}");
}

#[tokio::test]
async fn postgres_and_redis_sessions_get_containers_of_their_own() {
    let Some(api) = engine().await else { return };
    let cfg = config("pg", 0);
    let docker = Docker::start(Some(cfg.clone()), files_dir("docker", "pg")).await;
    docker.available().unwrap();
    let (a, b) = (new_id(), new_id());
    let ch = choices("docker", "postgres", "redis");
    let steps = Steps::silent();
    let started = Instant::now();
    let pa = provision(&docker, &a, &ch, &steps).await.unwrap();
    let launch_ms = started.elapsed().as_secs_f64() * 1000.0;
    all_done(&steps);
    let names: Vec<String> = steps.list().iter().map(|s| s.name.clone()).collect();
    for want in [
        "network",
        "database: PostgreSQL container",
        "database: PostgreSQL ready",
        "cache: Redis container",
        "cache: Redis ready",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
    }
    let pb = provision(&docker, &b, &ch, &Steps::silent()).await.unwrap();

    // The containers, as the Docker API shows them.
    let mut volumes = check_container(&api, &cfg, &a, Role::Database, Engine::Postgres, &a).await;
    volumes.extend(check_container(&api, &cfg, &a, Role::Cache, Engine::Redis, &a).await);
    let labelled = containers(&api, &cfg.instance, Some((LABEL_SESSION, &a))).await;
    let mut found: Vec<String> = labelled.iter().map(name_of).collect();
    found.sort();
    assert_eq!(
        found,
        [
            container_name(&a, Role::Cache),
            container_name(&a, Role::Database)
        ]
    );
    assert!(networks(&api, &cfg.instance)
        .await
        .contains(&network_name(&a)));
    let resources = pa.resources.to_string();
    let url_a = pa.database.url.expose();
    assert!(
        resources.contains(&container_name(&a, Role::Database)),
        "{resources}"
    );
    assert!(
        !resources.contains(url_a.rsplit_once('@').unwrap().0),
        "no password in {resources}"
    );
    assert!(
        url_a.starts_with("postgres://stacklab:") && url_a.contains("@10.213."),
        "the session's database is reached at its address on the session's network"
    );
    assert!(!pa.cache.shared, "the Redis is the session's own");

    // The backend's own store works with the session's credentials...
    let store = stacklab_backend::storage::connect(&pa.database, 2)
        .await
        .unwrap();
    let uid = store.insert(&user("alice")).await.unwrap();
    assert_eq!(store.get(uid).await.unwrap().unwrap().username, "alice");
    store.close().await;
    // ... as a plain role owning its database: no superuser, no CREATEDB, no CREATEROLE, and
    // the superuser the container was made with has no password left to log in with.
    let mut conn = sqlx::PgConnection::connect(url_a).await.unwrap();
    let (superuser, createdb, createrole): (bool, bool, bool) = sqlx::query_as(
        "SELECT rolsuper, rolcreatedb, rolcreaterole FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!((superuser, createdb, createrole), (false, false, false));
    let owner: String = sqlx::query_scalar(
        "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(owner, "stacklab");
    for sql in [
        "CREATE ROLE intruder",
        "CREATE DATABASE other",
        "ALTER ROLE postgres PASSWORD 'x'",
    ] {
        let e = conn.execute(sql).await.unwrap_err().to_string();
        assert!(
            e.contains("permission denied") || e.contains("must be"),
            "{sql}: {e}"
        );
    }
    let _ = conn.close().await;
    let as_superuser = url_a.replacen("postgres://stacklab:", "postgres://postgres:", 1);
    let e = sqlx::PgConnection::connect(&as_superuser)
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("password authentication failed"),
        "{e}"
    );
    // ... and another session's password does not open it.
    let err = sqlx::PgConnection::connect(&with_password_of(url_a, pb.database.url.expose()))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("password authentication failed"),
        "{err}"
    );

    // The session's Redis: the backend's cache adapter, the policy button, CONFIG GET.
    let cache = stacklab_backend::cache::connect(&pa.cache).await.unwrap();
    cache
        .set("k", Bytes::from_static(b"v"), Some(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(cache.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
    assert!(cache.policy().await.unwrap().changeable);
    cache.set_policy("allkeys-lfu").await.unwrap();
    let mut own = redis::Client::open(pa.cache.url.expose())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let policy: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query_async(&mut own)
        .await
        .unwrap();
    assert_eq!(policy, ["maxmemory-policy", "allkeys-lfu"]);
    let maxmemory: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory")
        .query_async(&mut own)
        .await
        .unwrap();
    assert_eq!(
        maxmemory[1],
        (8u64 << 20).to_string(),
        "maxmemory from the spec"
    );
    // B's Redis did not change, and A's password does not open it.
    let wrong = with_password_of(pb.cache.url.expose(), pa.cache.url.expose());
    let refused = async {
        let mut c = redis::Client::open(wrong)?
            .get_multiplexed_async_connection()
            .await?;
        redis::cmd("GET")
            .arg("k")
            .query_async::<Option<String>>(&mut c)
            .await
    }
    .await;
    assert!(refused.is_err(), "A's password opened B's Redis");

    let left = docker.leftovers().await.unwrap();
    assert!(left.contains(&a) && left.contains(&b), "{left:?}");

    // Teardown with the backend's connection still open; twice is no error.
    let started = Instant::now();
    docker.teardown(&a, &Steps::silent()).await.unwrap();
    let teardown_ms = started.elapsed().as_secs_f64() * 1000.0;
    docker.teardown(&a, &Steps::silent()).await.unwrap();
    docker.teardown(&b, &Steps::silent()).await.unwrap();
    nothing_left(&api, &cfg, &a, &volumes).await;
    nothing_left(&api, &cfg, &b, &[]).await;
    assert!(docker.leftovers().await.unwrap().is_empty());
    eprintln!(
        "docker postgres+redis: launch {launch_ms:.0} ms (no pool), teardown {teardown_ms:.0} ms"
    );
    docker.shutdown().await;
}

#[tokio::test]
async fn mariadb_and_memcached_sessions_get_containers_of_their_own() {
    let Some(api) = engine().await else { return };
    let cfg = config("my", 0);
    let docker = Docker::start(Some(cfg.clone()), files_dir("docker", "my")).await;
    let (a, b) = (new_id(), new_id());
    let ch = choices("docker", "mysql", "memcached");
    let steps = Steps::silent();
    let pa = provision(&docker, &a, &ch, &steps).await.unwrap();
    all_done(&steps);
    let pb = provision(&docker, &b, &ch, &Steps::silent()).await.unwrap();
    let mut volumes = check_container(&api, &cfg, &a, Role::Database, Engine::Mysql, &a).await;
    volumes.extend(check_container(&api, &cfg, &a, Role::Cache, Engine::Memcached, &a).await);
    assert_eq!(pa.database.engine, DatabaseEngine::Mysql);
    assert_eq!(pa.cache.engine, CacheEngine::Memcached);
    assert!(pa
        .notes
        .iter()
        .any(|n| n.contains("Memcached has no accounts")));

    let store = stacklab_backend::storage::connect(&pa.database, 2)
        .await
        .unwrap();
    let uid = store.insert(&user("bob")).await.unwrap();
    assert_eq!(store.get(uid).await.unwrap().unwrap().username, "bob");
    assert_eq!(store.stats().await.unwrap().rows, 1);
    store.close().await;
    let url_a = pa.database.url.expose();
    let err = sqlx::MySqlConnection::connect(&with_password_of(url_a, pb.database.url.expose()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("Access denied"), "{err}");

    let cache = stacklab_backend::cache::connect(&pa.cache).await.unwrap();
    cache
        .set("k", Bytes::from_static(b"v"), Some(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(cache.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
    // Memcached has no accounts: B's container is simply another server, without A's keys.
    let other = stacklab_backend::cache::connect(&pb.cache).await.unwrap();
    assert_eq!(other.get("k").await.unwrap(), None);

    for id in [&a, &b] {
        docker.teardown(id, &Steps::silent()).await.unwrap();
    }
    nothing_left(&api, &cfg, &a, &volumes).await;
    nothing_left(&api, &cfg, &b, &[]).await;
    docker.shutdown().await;
}

#[tokio::test]
async fn sqlite_and_in_process_cache_need_no_container() {
    let Some(api) = engine().await else { return };
    let cfg = config("lite", 0);
    let dir = files_dir("docker", "lite");
    let docker = Docker::start(Some(cfg.clone()), dir.clone()).await;
    let id = new_id();
    let p = provision(
        &docker,
        &id,
        &choices("docker", "sqlite", "memory"),
        &Steps::silent(),
    )
    .await
    .unwrap();
    assert_eq!(p.database.engine, DatabaseEngine::Sqlite);
    assert!(containers(&api, &cfg.instance, None).await.is_empty());
    assert!(networks(&api, &cfg.instance).await.is_empty());
    assert_eq!(docker.leftovers().await.unwrap(), std::slice::from_ref(&id));
    docker.teardown(&id, &Steps::silent()).await.unwrap();
    assert!(docker.leftovers().await.unwrap().is_empty());
    docker.shutdown().await;
}

#[tokio::test]
async fn leftovers_of_a_crashed_run_are_found_and_reaped() {
    let Some(api) = engine().await else { return };
    let mut cfg = config("crash", 0);
    cfg.engines.get_mut(&Engine::Redis).unwrap().warm = 1;
    let orphan = new_id();
    {
        // A run that "crashes": dropped with a session and a pooled container still there.
        let first = Docker::start(Some(cfg.clone()), files_dir("docker", "crash")).await;
        provision(
            &first,
            &orphan,
            &choices("docker", "postgres", "memcached"),
            &Steps::silent(),
        )
        .await
        .unwrap();
        stacklab_testkit::eventually("a pooled Redis", Duration::from_secs(60), || async {
            first.warm_count(Engine::Redis) == 1
        })
        .await;
    }
    assert_eq!(
        containers(&api, &cfg.instance, Some((LABEL_SESSION, WARM)))
            .await
            .len(),
        1
    );
    // The next start of the same instance removes the pool nobody holds...
    let mut quiet = cfg.clone();
    quiet.engines.get_mut(&Engine::Redis).unwrap().warm = 0;
    let second = Docker::start(Some(quiet), files_dir("docker", "crash")).await;
    assert!(containers(&api, &cfg.instance, Some((LABEL_SESSION, WARM)))
        .await
        .is_empty());
    // ... and finds the session no registry knows, which control then tears down.
    assert_eq!(
        second.leftovers().await.unwrap(),
        std::slice::from_ref(&orphan)
    );
    second.teardown(&orphan, &Steps::silent()).await.unwrap();
    nothing_left(&api, &cfg, &orphan, &[]).await;
    second.shutdown().await;
    assert!(containers(&api, &cfg.instance, None).await.is_empty());
    assert!(
        networks(&api, &cfg.instance).await.is_empty(),
        "shutdown removes the pool's network"
    );
}

#[tokio::test]
async fn the_warm_pool_serves_a_launch_and_refills() {
    let Some(api) = engine().await else { return };
    let mut cfg = config("warm", 0);
    cfg.engines.get_mut(&Engine::Postgres).unwrap().warm = 1;
    cfg.engines.get_mut(&Engine::Redis).unwrap().warm = 1;
    let docker = Docker::start(Some(cfg.clone()), files_dir("docker", "warm")).await;
    let ready =
        |d: &Docker| d.warm_count(Engine::Postgres) == 1 && d.warm_count(Engine::Redis) == 1;
    stacklab_testkit::eventually("the pool to fill", Duration::from_secs(90), || async {
        ready(&docker)
    })
    .await;
    let pooled: Vec<String> = containers(&api, &cfg.instance, Some((LABEL_SESSION, WARM)))
        .await
        .iter()
        .map(name_of)
        .collect();
    assert_eq!(pooled.len(), 2, "{pooled:?}");

    let id = new_id();
    let steps = Steps::silent();
    let started = Instant::now();
    let p = provision(
        &docker,
        &id,
        &choices("docker", "postgres", "redis"),
        &steps,
    )
    .await
    .unwrap();
    let launch_ms = started.elapsed().as_secs_f64() * 1000.0;
    all_done(&steps);
    let mut from_pool: Vec<String> = steps
        .list()
        .iter()
        .filter(|s| s.detail.contains("from the warm pool"))
        .map(|s| s.name.clone())
        .collect();
    from_pool.sort();
    assert_eq!(
        from_pool,
        ["cache: Redis container", "database: PostgreSQL container"].map(String::from),
        "{:?}",
        steps.list()
    );
    // Renamed for the session (the label stays `warm`: Docker cannot change it), on the
    // session's network, limits as any other.
    check_container(&api, &cfg, &id, Role::Database, Engine::Postgres, WARM).await;
    check_container(&api, &cfg, &id, Role::Cache, Engine::Redis, WARM).await;
    let store = stacklab_backend::storage::connect(&p.database, 1)
        .await
        .unwrap();
    store.insert(&user("carol")).await.unwrap();
    store.close().await;
    assert_eq!(docker.leftovers().await.unwrap(), std::slice::from_ref(&id));

    // The pool refills with new containers.
    stacklab_testkit::eventually("the pool to refill", Duration::from_secs(90), || async {
        ready(&docker)
    })
    .await;
    let refilled: Vec<String> = containers(&api, &cfg.instance, Some((LABEL_SESSION, WARM)))
        .await
        .iter()
        .map(name_of)
        .filter(|n| n.starts_with("stacklab-warm-"))
        .collect();
    assert_eq!(refilled.len(), 2, "{refilled:?}");
    assert!(refilled.iter().all(|n| !pooled.contains(n)));

    // A pooled container killed from outside is replaced.
    let victim = refilled
        .iter()
        .find(|n| n.contains("-postgres-"))
        .unwrap()
        .clone();
    api.kill_container(&victim, None::<KillContainerOptions>)
        .await
        .unwrap();
    docker.refill();
    stacklab_testkit::eventually(
        "the killed container to be replaced",
        Duration::from_secs(90),
        || async {
            let now: Vec<String> = containers(&api, &cfg.instance, Some((LABEL_SESSION, WARM)))
                .await
                .iter()
                .map(name_of)
                .filter(|n| n.starts_with("stacklab-warm-") && n.contains("-postgres-"))
                .collect();
            docker.warm_count(Engine::Postgres) == 1 && now.len() == 1 && now[0] != victim
        },
    )
    .await;

    docker.teardown(&id, &Steps::silent()).await.unwrap();
    nothing_left(&api, &cfg, &id, &[]).await;
    docker.shutdown().await;
    assert!(containers(&api, &cfg.instance, None).await.is_empty());
    assert!(networks(&api, &cfg.instance).await.is_empty());
    eprintln!("docker postgres+redis: launch {launch_ms:.0} ms from the warm pool");
}

#[tokio::test]
async fn a_container_that_never_gets_ready_is_removed_and_its_log_shown() {
    let Some(api) = engine().await else { return };
    let mut cfg = config("broken", 0);
    cfg.ready_timeout = Duration::from_secs(20);
    let spec = cfg.engines.get_mut(&Engine::Postgres).unwrap();
    spec.command = vec!["-c".into(), "no_such_setting=1".into()];
    let docker = Docker::start(Some(cfg.clone()), files_dir("docker", "broken")).await;
    let id = new_id();
    let steps = Steps::silent();
    let err = provision(&docker, &id, &choices("docker", "postgres", "none"), &steps)
        .await
        .unwrap_err();
    assert_eq!(err.field, Some("database"));
    assert!(err.message.contains("is not ready"), "{}", err.message);
    assert!(
        err.message.contains("no_such_setting"),
        "the log tail names the cause: {}",
        err.message
    );
    let failed = steps
        .list()
        .into_iter()
        .find(|s| s.status == "failed")
        .unwrap();
    assert_eq!(failed.name, "database: PostgreSQL ready");
    // Nothing is left: the container, the network, the id.
    nothing_left(&api, &cfg, &id, &[]).await;
    assert!(docker.leftovers().await.unwrap().is_empty());
    docker.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_engine_is_reported_and_nothing_else_breaks() {
    let mut cfg = config("gone", 0);
    cfg.host = Some("unix:///nonexistent/docker.sock".into());
    let docker = Docker::start(Some(cfg), files_dir("docker", "gone")).await;
    let why = docker.available().unwrap_err();
    assert!(why.contains("/nonexistent/docker.sock"), "{why}");
    assert!(docker.database(DatabaseEngine::Postgres).is_err());
    let err = provision(
        &docker,
        &new_id(),
        &choices("docker", "postgres", "redis"),
        &Steps::silent(),
    )
    .await
    .unwrap_err();
    assert_eq!(err.field, Some("provisioner"));

    let off = Docker::start(None, files_dir("docker", "off")).await;
    assert!(off.available().unwrap_err().contains("[docker]"));
    assert!(off.leftovers().await.unwrap().is_empty());
    off.teardown(&new_id(), &Steps::silent()).await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Measurements (ignored: run by hand, see the module doc)
// ---------------------------------------------------------------------------------------------

/// The conformance suite's users contract (`stacklab_conformance::suite::users`, the same
/// check every runtime passes on the engines `scripts/test` starts) on the containers of docker
/// sessions: PostgreSQL × Redis with write-through and MariaDB × Memcached with cache-aside,
/// each against a second docker session for isolation. The Rust runtime runs as its own
/// process, from its manifest, against the kit's descriptor server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_conformance_suite_passes_on_docker_sessions() {
    use stacklab_conformance::engines::{new_key, Db, Kv, Stack};
    use stacklab_conformance::{runtime, suite};
    use stacklab_types::stack::{Encryption, PasswordStorage, StackDescriptor, WritePolicy};
    use stacklab_types::Secret;
    let Some(api) = engine().await else { return };
    let Some(rust) = runtime::runtime("rust") else {
        return;
    };
    let lab = suite::Lab::start(&rust).await;
    let cfg = config("conf", 0);
    let docker = Docker::start(Some(cfg.clone()), files_dir("docker", "conf")).await;
    let pairs = [
        (
            "postgres",
            "redis",
            Db::Postgres,
            Kv::Redis,
            WritePolicy::WriteThrough,
        ),
        (
            "mysql",
            "memcached",
            Db::Mysql,
            Kv::Memcached,
            WritePolicy::CacheAside,
        ),
    ];
    for (database, cache, db, kv, policy) in pairs {
        let ch = choices("docker", database, cache);
        let ids = [new_id(), new_id()];
        let (s1, s2) = (Steps::silent(), Steps::silent());
        let (one, two) = tokio::join!(
            provision(&docker, &ids[0], &ch, &s1),
            provision(&docker, &ids[1], &ch, &s2)
        );
        let stacks: Vec<Stack> = [one.unwrap(), two.unwrap()]
            .into_iter()
            .enumerate()
            .map(|(n, p)| Stack {
                db,
                kv,
                descriptor: StackDescriptor {
                    session: format!("DOCKER{n}{}", &ids[n][..16]).to_uppercase(),
                    runtime: "rust".into(),
                    protocol: stacklab_types::stack::ApiProtocol::Rest,
                    database: p.database,
                    cache: p.cache,
                    write_policy: policy,
                    password_storage: PasswordStorage::Bcrypt,
                    encryption: Encryption::None,
                    encryption_key: new_key(),
                    pepper: Secret::new("a-pepper-from-control"),
                },
            })
            .collect();
        let combo = format!("docker {database} x {cache} ({policy:?})");
        suite::users(&lab, &stacks[0], Some(&stacks[1]), &combo).await;
        for id in &ids {
            docker.teardown(id, &Steps::silent()).await.unwrap();
            nothing_left(&api, &cfg, id, &[]).await;
        }
    }
    docker.shutdown().await;
}

/// A control restart with docker sessions: a live session's containers survive it (its
/// cookie and data still work afterwards), while containers made for an id the registry does
/// not know (what a crash between making and recording leaves) are removed at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_restart_keeps_live_sessions_and_reaps_orphan_containers() {
    use crate::helpers::{start_up, temp_dir, Browser};
    use serde_json::json;
    let Some(api) = engine().await else { return };
    let cfg = config("restart", 0);
    let dir = temp_dir("docker-restart");
    let with = |cfg: &DockerConfig| {
        let docker = Some(cfg.clone());
        move |_: &mut stacklab_proxy::config::Config,
              c: &mut stacklab_control::config::ControlConfig| c.docker = docker
    };
    let up = start_up(&dir, 1, with(&cfg)).await;
    let mut b = Browser::new(&dir.join("data"), up.addrs.edge.port());
    let r = b
        .post(
            "/api/sessions",
            json!({"provisioner": "docker", "database": "mysql", "cache": "none"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let live = stacklab_types::session::id(r.json()["code"].as_str().unwrap());
    let ann = json!({"username": "ann", "email": "ann@example.com", "password": "longenough"});
    assert_eq!(b.post("/api/users", ann).await.status, 201);
    up.shutdown().await.unwrap();

    // A crash's leftovers: containers of this instance for an id no session has.
    let orphan = new_id();
    let docker = Docker::start(Some(cfg.clone()), dir.join("data/sessions")).await;
    provision(
        &docker,
        &orphan,
        &choices("docker", "mysql", "none"),
        &Steps::silent(),
    )
    .await
    .unwrap();
    docker.shutdown().await;
    assert!(
        !containers(&api, &cfg.instance, Some((LABEL_SESSION, &orphan)))
            .await
            .is_empty()
    );

    let up = start_up(&dir, 1, with(&cfg)).await;
    nothing_left(&api, &cfg, &orphan, &[]).await;
    let mut b = b.on_port(up.addrs.edge.port());
    let r = b.get("/api/users?q=ann").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["total"],
        1,
        "the live session's data survived: {}",
        r.text()
    );
    assert_eq!(b.send_raw("DELETE", "/api/session", None).await.status, 200);
    nothing_left(&api, &cfg, &live, &[]).await;
    up.shutdown().await.unwrap();
}

/// Through the whole stack (`start_up` with the docker provisioner): a session's database
/// container killed from outside is reported on the session's event stream and in
/// `GET /api/session`, its data requests get a clear 503 saying what to do, another session
/// is untouched, and `POST /api/session/reprovision` gives it a fresh stack under the same
/// cookie.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_killed_from_outside_is_reported_and_the_session_made_again() {
    use crate::helpers::{read_until, start_up, temp_dir, Browser};
    use serde_json::json;
    let Some(api) = engine().await else { return };
    let cfg = config("lost", 0);
    let dir = temp_dir("docker-lost");
    let docker = Some(cfg.clone());
    let up = start_up(&dir, 1, move |_, c| c.docker = docker).await;
    let data = dir.join("data");
    let port = up.addrs.edge.port();
    let (mut a, mut b) = (Browser::new(&data, port), Browser::new(&data, port));
    let r = a
        .post(
            "/api/sessions",
            json!({"provisioner": "docker", "database": "postgres", "cache": "redis"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let id = stacklab_types::session::id(r.json()["code"].as_str().unwrap());
    let r = b.post("/api/sessions", json!({})).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let ann = json!({"username": "ann", "email": "ann@example.com", "password": "longenough"});
    for who in [&mut a, &mut b] {
        let r = who.post("/api/users", ann.clone()).await;
        assert_eq!(r.status, 201, "{}", r.text());
    }

    let res = a.open_stream("/api/session/events").await;
    assert_eq!(res.status(), 200);
    let mut events = res.into_body();
    let mut seen = String::new();
    read_until(
        &mut events,
        &mut seen,
        "event: state\ndata: {\"state\":\"ready\"}",
    )
    .await;
    api.kill_container(
        &container_name(&id, Role::Database),
        None::<KillContainerOptions>,
    )
    .await
    .unwrap();
    read_until(
        &mut events,
        &mut seen,
        "event: state\ndata: {\"state\":\"broken\"}",
    )
    .await;
    read_until(&mut events, &mut seen, "event: lost\ndata: ").await;
    assert!(
        seen.contains("database container (postgres) was killed"),
        "{seen}"
    );
    let v = a.get("/api/session").await.json();
    assert_eq!(v["state"], "broken", "{v}");
    assert!(
        v["problem"]
            .as_str()
            .unwrap()
            .contains("/api/session/reprovision"),
        "{v}"
    );
    // A data request says what is wrong and what to do; the other session is untouched.
    let r = a.get("/api/users?q=ann").await;
    assert_eq!(
        (r.status, r.code()),
        (503, "unavailable".into()),
        "{}",
        r.text()
    );
    assert!(r.text().contains("PostgreSQL"), "{}", r.text());
    assert!(
        r.text().contains("/api/session/reprovision"),
        "{}",
        r.text()
    );
    let r = b.get("/api/users?q=ann").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["items"].as_array().unwrap().len(),
        1,
        "{}",
        r.text()
    );

    // Made again: the same cookie, a new database container, empty data.
    let r = a.post("/api/session/reprovision", json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["state"], "ready", "{v}");
    assert!(v["problem"].is_null(), "{v}");
    let names: Vec<&str> = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert!(
        names.iter().any(|n| n.starts_with("database: PostgreSQL")),
        "{names:?}"
    );
    let state = api
        .inspect_container(
            &container_name(&id, Role::Database),
            None::<InspectContainerOptions>,
        )
        .await
        .unwrap()
        .state
        .unwrap();
    assert_eq!(state.running, Some(true));
    read_until(
        &mut events,
        &mut seen,
        "event: state\ndata: {\"state\":\"provisioning\"}",
    )
    .await;
    let r = a.get("/api/users?q=ann").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["items"].as_array().unwrap().len(), 0, "fresh data");
    let r = a.post("/api/users", ann.clone()).await;
    assert_eq!(r.status, 201, "{}", r.text());
    // Re-made while being made is refused clearly (nothing to race here, so check the
    // contract on a session that is ready: it is accepted again).
    let r = a.post("/api/session/reprovision", json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text());

    let r = a.send_raw("DELETE", "/api/session", None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    nothing_left(&api, &cfg, &id, &[]).await;
    up.shutdown().await.unwrap();
}

/// `up` whose Rust pool is one process and one container (this build's `stacklab` mounted
/// over the local Debian base), under a docker config of its own instance.
async fn up_with_a_container(tag: &str, dir: &Path) -> (DockerConfig, stacklab_control::serve::Up) {
    let mut cfg = config(tag, 0);
    cfg.backend.image = "stacklab/debian:local".into();
    cfg.backend.binary = Some(PathBuf::from(env!("CARGO_BIN_EXE_stacklab")));
    let docker = Some(cfg.clone());
    let up = crate::helpers::start_up(dir, 2, move |_, c| {
        c.docker = docker;
        c.backends.containers = 1;
    })
    .await;
    (cfg, up)
}

/// Backend instances as containers: a pool of one process and one container (the container
/// runs this build's `stacklab` over the local Debian base), checked through the Docker API
/// (labels, its own network, limits, no capability, no token in its environment or command);
/// under steady load the drill kills the container, a container is added through the admin
/// API, one killed from outside is replaced by a container, the drill kills the process:
/// no idempotent request fails, and nothing is left once control stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_mixes_processes_and_containers_and_the_drill_kills_either() {
    use crate::helpers::{admin, eventually, temp_dir, Browser, Load, TOKEN};
    use serde_json::json;
    let Some(api) = engine().await else { return };
    let dir = temp_dir("docker-mixed");
    let (cfg, up) = up_with_a_container("be", &dir).await;
    let instance = cfg.instance.clone();
    let list = up.control.instances.list();
    let mut kinds: Vec<&str> = list.iter().map(|i| i.kind).collect();
    kinds.sort();
    assert_eq!(kinds, ["container", "process"], "{list:?}");
    let boxed = list.iter().find(|i| i.kind == "container").unwrap().clone();
    let process = list.iter().find(|i| i.kind == "process").unwrap().clone();

    // The container, as the Docker API shows it.
    let found = containers(&api, &instance, Some((LABEL_ROLE, "backend"))).await;
    assert_eq!(found.len(), 1, "one backend container");
    let info = api
        .inspect_container(&name_of(&found[0]), None::<InspectContainerOptions>)
        .await
        .unwrap();
    let host = info.host_config.unwrap();
    assert_eq!(
        host.network_mode.as_deref(),
        Some(backend::network_name(&instance).as_str())
    );
    assert_eq!(host.cap_drop, Some(vec!["ALL".to_owned()]));
    assert_eq!(host.memory, Some(cfg.backend.memory_bytes));
    assert_eq!(host.pids_limit, Some(cfg.backend.pids));
    assert_eq!(host.privileged, Some(false));
    assert!(host
        .security_opt
        .unwrap_or_default()
        .iter()
        .any(|o| o.starts_with("no-new-privileges")));
    let c = info.config.unwrap();
    assert_eq!(
        c.labels
            .unwrap_or_default()
            .get("stacklab.pool")
            .map(String::as_str),
        Some("rust")
    );
    let shown = format!("{:?} {:?} {:?}", c.env, c.cmd, c.entrypoint);
    assert!(
        !shown.contains(TOKEN),
        "the token is handed over stdin only: {shown}"
    );
    assert_eq!(info.state.unwrap().pid.unwrap_or(0) as u32, boxed.pid);

    let mut b = Browser::new(&dir.join("data"), up.addrs.edge.port());
    let r = b.post("/api/sessions", json!({"cache": "none"})).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = b
        .post(
            "/api/users",
            json!({"username": "cyd", "email": "cyd@example.com", "password": "longenough"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());

    let load = Load::start(&b, "/api/users?limit=5", 4);
    load.advance(50).await;
    let drill = |id: String| {
        let addr = up.addrs.admin;
        async move {
            let r = admin(
                addr,
                "DELETE",
                &format!("/admin/pools/rust/instances/{id}"),
                Some(TOKEN),
                None,
            )
            .await;
            assert_eq!(r.status, 200, "{}", r.text());
        }
    };
    // The drill kills the container; it is not replaced, and Docker forgets it.
    drill(boxed.id.clone()).await;
    assert_eq!(up.control.instances.list().len(), 1);
    assert!(containers(&api, &instance, Some((LABEL_ROLE, "backend")))
        .await
        .is_empty());
    load.advance(50).await;
    // Added through the admin API as a container.
    let r = admin(
        up.addrs.admin,
        "POST",
        "/admin/pools/rust/instances?kind=container",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["kind"], "container", "{}", r.text());
    let added = r.json()["id"].as_str().unwrap().to_owned();
    let r = admin(
        up.addrs.admin,
        "POST",
        "/admin/pools/rust/instances?kind=vm",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(
        (r.status, r.field()),
        (400, "kind".to_owned()),
        "{}",
        r.text()
    );
    load.advance(50).await;
    // Killed from outside: replaced by another container.
    let name = name_of(&containers(&api, &instance, Some((LABEL_ROLE, "backend"))).await[0]);
    api.kill_container(&name, None::<KillContainerOptions>)
        .await
        .unwrap();
    eventually(
        "a container replacing the one killed from outside",
        || async {
            let now = up.control.instances.list();
            now.len() == 2 && now.iter().any(|i| i.kind == "container" && i.id != added)
        },
    )
    .await;
    load.advance(50).await;
    // The drill kills the process.
    drill(process.id.clone()).await;
    load.advance(50).await;
    let (ok, failed) = load.stop().await;
    assert!(
        failed.is_empty(),
        "{} of {} idempotent requests failed: {:?}",
        failed.len(),
        ok + failed.len() as u64,
        &failed[..failed.len().min(5)]
    );
    assert_eq!(
        up.control
            .instances
            .list()
            .iter()
            .map(|i| i.kind)
            .collect::<Vec<_>>(),
        ["container"]
    );
    up.shutdown().await.unwrap();
    assert!(
        containers(&api, &instance, None).await.is_empty(),
        "nothing of this instance is left after control stops"
    );
}

/// Runs `script` with bash in container `name`; what it printed.
async fn exec_bash(api: &bollard::Docker, name: &str, script: &str) -> String {
    let exec = api
        .create_exec(
            name,
            bollard::models::ExecConfig {
                cmd: Some(vec!["bash".into(), "-c".into(), script.into()]),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let started = api.start_exec(&exec.id, None).await.unwrap();
    let bollard::exec::StartExecResults::Attached { mut output, .. } = started else {
        panic!("the exec was not attached")
    };
    let mut out = String::new();
    let read = async {
        while let Some(Ok(chunk)) = output.next().await {
            out.push_str(&chunk.to_string());
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("the exec ends within 20 s");
    out
}

/// A backend container on a network of its own (`docker.backend.network = "own"`, the
/// default): it serves a docker session (its PostgreSQL and Redis on the session's network,
/// which the container joins while the session lives), reaches control only at the runtime
/// listener on the host's address of its network (which answers the runtime credential's
/// paths only, and nothing to a session's engine container), cannot reach the host's loopback
/// (control's admin address is there), and its network is removed with control.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_container_is_on_a_network_of_its_own() {
    use crate::helpers::{admin, temp_dir, Browser, TOKEN};
    use serde_json::json;
    let Some(api) = engine().await else { return };
    let dir = temp_dir("docker-own-net");
    let (cfg, up) = up_with_a_container("own", &dir).await;
    let instance = cfg.instance.clone();
    // Only the container serves from here on.
    let list = up.control.instances.list();
    let process = list.iter().find(|i| i.kind == "process").unwrap().clone();
    let r = admin(
        up.addrs.admin,
        "DELETE",
        &format!("/admin/pools/rust/instances/{}", process.id),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let boxed = name_of(&containers(&api, &instance, Some((LABEL_ROLE, "backend"))).await[0]);
    let backends = backend::network_name(&instance);

    let mut b = Browser::new(&dir.join("data"), up.addrs.edge.port());
    let r = b
        .post(
            "/api/sessions",
            json!({"provisioner": "docker", "database": "postgres", "cache": "redis"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let id = stacklab_types::session::id(r.json()["code"].as_str().unwrap());
    let una = json!({"username": "una", "email": "una@example.com", "password": "longenough"});
    let r = b.post("/api/users", una).await;
    assert_eq!(r.status, 201, "{}", r.text());
    let r = b.get("/api/users?limit=5").await;
    assert_eq!(r.status, 200, "{}", r.text());

    let info = api
        .inspect_container(&boxed, None::<InspectContainerOptions>)
        .await
        .unwrap();
    let on: Vec<String> = info
        .network_settings
        .and_then(|n| n.networks)
        .unwrap_or_default()
        .into_keys()
        .collect();
    assert!(
        on.contains(&backends) && on.contains(&network_name(&id)),
        "on its own network and the session's: {on:?}"
    );
    let net = api
        .inspect_network(
            &backends,
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
        .unwrap();
    assert_eq!(net.internal, Some(true));
    let subnet = net.ipam.unwrap().config.unwrap()[0].subnet.clone().unwrap();
    let subnet = stacklab_control::provision::docker::Subnet::parse(&subnet).unwrap();
    let url = up
        .control
        .backend_control_url
        .get()
        .expect("the runtime listener")
        .clone();
    let listener = url.trim_start_matches("http://").to_owned();
    let (gw, port) = listener.rsplit_once(':').unwrap();
    assert_eq!(gw, subnet.gateway().to_string());

    // From inside: the host's loopback (control's admin address) is out of reach; the runtime
    // listener answers.
    let admin_port = up.addrs.admin.port();
    let tried = exec_bash(
        &api,
        &boxed,
        &format!(
            "timeout 3 bash -c 'exec 3<>/dev/tcp/127.0.0.1/{admin_port}' 2>/dev/null && echo loopback-open || echo loopback-closed; \
             exec 3<>/dev/tcp/{gw}/{port} && printf 'GET /admin/routes HTTP/1.0\\r\\n\\r\\n' >&3 && timeout 3 cat <&3"
        ),
    )
    .await;
    assert!(tried.contains("loopback-closed"), "{tried}");
    assert!(
        tried.contains("404") && tried.contains("serves backend instances only"),
        "the runtime listener answers its network with the runtime's paths only: {tried}"
    );
    // From the host (its address on the network is in the subnet): the admin token is no
    // credential there.
    let r = admin(
        listener.parse().unwrap(),
        "GET",
        &format!("/admin/stacks/{id}"),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.text());
    // From the session's PostgreSQL container (the host's addresses are reachable from any
    // container): closed unanswered (SIGPIPE ignored: the write may meet the close).
    let from_engine = exec_bash(
        &api,
        &container_name(&id, Role::Database),
        &format!(
            "trap '' PIPE; exec 3<>/dev/tcp/{gw}/{port} && printf 'GET /admin/routes HTTP/1.0\\r\\n\\r\\n' >&3; timeout 3 cat <&3; echo end"
        ),
    )
    .await;
    assert!(
        from_engine.contains("end") && !from_engine.contains("HTTP/1"),
        "a session's engine gets no answer from the runtime listener: {from_engine}"
    );
    assert!(
        up.control.metrics.runtime_peers_refused.get() >= 1,
        "the refusal is counted"
    );

    // The session ends: its network goes (the container left it), the container stays.
    let r = b.send_raw("DELETE", "/api/session", None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!networks(&api, &instance).await.contains(&network_name(&id)));
    let info = api
        .inspect_container(&boxed, None::<InspectContainerOptions>)
        .await
        .unwrap();
    assert_eq!(info.state.unwrap().running, Some(true));
    up.shutdown().await.unwrap();
    assert!(containers(&api, &instance, None).await.is_empty());
    assert!(
        networks(&api, &instance).await.is_empty(),
        "the backends' network goes with control: {:?}",
        networks(&api, &instance).await
    );
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summary(mut ms: Vec<f64>) -> String {
    ms.sort_by(f64::total_cmp);
    format!(
        "n={} p50={:.0} ms p95={:.0} ms min={:.0} ms max={:.0} ms",
        ms.len(),
        percentile(&ms, 50.0),
        percentile(&ms, 95.0),
        ms[0],
        ms[ms.len() - 1]
    )
}

/// Memory the engine reports for a container (usage less the page cache it may drop).
async fn memory_of(api: &bollard::Docker, name: &str) -> (u64, u64) {
    let stats = api
        .stats(
            name,
            Some(StatsOptions {
                stream: false,
                one_shot: false,
            }),
        )
        .next()
        .await
        .unwrap()
        .unwrap();
    let mem = stats.memory_stats.unwrap();
    let usage = mem.usage.unwrap_or_default();
    let cache = mem
        .stats
        .as_ref()
        .and_then(|s| s.get("inactive_file").or_else(|| s.get("cache")).copied())
        .unwrap_or_default();
    (usage, usage.saturating_sub(cache))
}

#[tokio::test]
#[ignore = "a measurement: minutes long; run by hand with --ignored --nocapture"]
async fn measure() {
    let Some(api) = engine().await else { return };
    const LAUNCHES: usize = 20;
    for (db, cache) in [("postgres", "redis"), ("mysql", "memcached")] {
        let ch = choices("docker", db, cache);
        let (db_engine, cache_engine) = (
            Engine::of_database(ch.database).unwrap(),
            Engine::of_cache(ch.cache).unwrap(),
        );
        // Without the pool: every launch makes both containers.
        let cold = Docker::start(Some(config("cold", 0)), files_dir("docker", "cold")).await;
        let mut times = Vec::new();
        let mut memory = Vec::new();
        for i in 0..LAUNCHES {
            let id = new_id();
            let started = Instant::now();
            provision(&cold, &id, &ch, &Steps::silent()).await.unwrap();
            times.push(started.elapsed().as_secs_f64() * 1000.0);
            if i < 3 {
                tokio::time::sleep(Duration::from_secs(3)).await;
                let (d, c) = (
                    memory_of(&api, &container_name(&id, Role::Database)).await,
                    memory_of(&api, &container_name(&id, Role::Cache)).await,
                );
                memory.push((d, c));
            }
            cold.teardown(&id, &Steps::silent()).await.unwrap();
        }
        cold.shutdown().await;
        println!("{db}+{cache} launch without the pool: {}", summary(times));
        for ((du, dw), (cu, cw)) in &memory {
            println!(
                "{db}+{cache} idle stack memory: {:.1} MiB ({db} {:.1} MiB, {cache} {:.1} MiB; \
                 without page cache {:.1} MiB)",
                (du + cu) as f64 / 1048576.0,
                *du as f64 / 1048576.0,
                *cu as f64 / 1048576.0,
                (dw + cw) as f64 / 1048576.0
            );
        }

        // With the pool: a launch finds a ready container of each engine (the pool refills
        // between launches, as it does when launches come slower than a refill).
        let mut cfg = config("hot", 0);
        cfg.engines.get_mut(&db_engine).unwrap().warm = 1;
        cfg.engines.get_mut(&cache_engine).unwrap().warm = 1;
        let hot = Docker::start(Some(cfg), files_dir("docker", "hot")).await;
        let mut times = Vec::new();
        let mut refill = Vec::new();
        for _ in 0..LAUNCHES {
            let waited = Instant::now();
            stacklab_testkit::eventually("the pool", Duration::from_secs(120), || async {
                hot.warm_count(db_engine) == 1 && hot.warm_count(cache_engine) == 1
            })
            .await;
            refill.push(waited.elapsed().as_secs_f64() * 1000.0);
            let id = new_id();
            let steps = Steps::silent();
            let started = Instant::now();
            provision(&hot, &id, &ch, &steps).await.unwrap();
            times.push(started.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(
                steps
                    .list()
                    .iter()
                    .filter(|s| s.detail.contains("from the warm pool"))
                    .count(),
                2
            );
            hot.teardown(&id, &Steps::silent()).await.unwrap();
        }
        hot.shutdown().await;
        println!("{db}+{cache} launch from the pool: {}", summary(times));
        println!(
            "{db}+{cache} wait for the pool to refill after a launch: {}",
            summary(refill[1..].to_vec())
        );
    }
}

/// The Python runtime's pool with an instance in its own image (`config/images/build.sh
/// python`) beside a process: started for the first Python session, serving it, and a drill
/// that kills the container under load fails no idempotent request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_pool_runs_an_instance_in_its_own_image() {
    a_runtime_pool_runs_an_instance_in_its_own_image("python", "py").await;
}

/// The same for the Node runtime (`config/images/build.sh node`, `stacklab/node:local`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_pool_runs_an_instance_in_its_own_image() {
    a_runtime_pool_runs_an_instance_in_its_own_image("node", "nd").await;
}

/// The same for the Ruby runtime (`config/images/build.sh ruby`, `stacklab/ruby:local`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ruby_pool_runs_an_instance_in_its_own_image() {
    a_runtime_pool_runs_an_instance_in_its_own_image("ruby", "rb").await;
}

/// The same for the Java runtime (`config/images/build.sh java`, `stacklab/java:local`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_java_pool_runs_an_instance_in_its_own_image() {
    a_runtime_pool_runs_an_instance_in_its_own_image("java", "jv").await;
}

async fn a_runtime_pool_runs_an_instance_in_its_own_image(runtime: &str, tag: &str) {
    use crate::helpers::{admin, start_up, temp_dir, Browser, Load, TOKEN};
    use serde_json::json;
    let Some(api) = engine().await else { return };
    let cfg = config(tag, 0);
    let instance = cfg.instance.clone();
    let dir = temp_dir(&format!("docker-{runtime}"));
    let docker = Some(cfg.clone());
    let backends = Path::new(env!("CARGO_MANIFEST_DIR")).join("../backends");
    let up = start_up(&dir, 2, move |_, c| {
        c.docker = docker;
        c.backends.containers = 1;
        c.backends.runtimes_dir = backends;
        // Only this runtime's pool is under test: no Rust containers.
        c.backends.warm_runtimes = vec![];
    })
    .await;
    assert!(up.control.instances.list().is_empty(), "nothing is warm");

    let mut b = Browser::new(&dir.join("data"), up.addrs.edge.port());
    let r = b
        .post(
            "/api/sessions",
            json!({"runtime": runtime, "cache": "none"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let list = up.control.instances.list();
    let mut kinds: Vec<&str> = list.iter().map(|i| i.kind).collect();
    kinds.sort();
    assert_eq!(kinds, ["container", "process"], "{list:?}");
    assert!(list.iter().all(|i| i.pool == runtime), "{list:?}");
    let boxed = list.iter().find(|i| i.kind == "container").unwrap().clone();

    let found = containers(&api, &instance, Some((LABEL_ROLE, "backend"))).await;
    assert_eq!(found.len(), 1, "one backend container");
    let info = api
        .inspect_container(&name_of(&found[0]), None::<InspectContainerOptions>)
        .await
        .unwrap();
    let c = info.config.unwrap();
    assert_eq!(
        c.image.as_deref(),
        Some(format!("stacklab/{runtime}:local").as_str())
    );
    assert_eq!(
        c.labels
            .unwrap_or_default()
            .get("stacklab.pool")
            .map(String::as_str),
        Some(runtime)
    );
    let runtime_token = std::fs::read_to_string(dir.join("data/runtime.token")).unwrap();
    let shown = format!("{:?} {:?} {:?}", c.env, c.cmd, c.entrypoint);
    assert!(
        !shown.contains(TOKEN) && !shown.contains(&runtime_token),
        "credentials go over stdin only: {shown}"
    );
    let host = info.host_config.unwrap();
    assert_eq!(host.cap_drop, Some(vec!["ALL".to_owned()]));

    let r = b
        .post(
            "/api/users",
            json!({"username": "pia", "email": "pia@example.com", "password": "longenough"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(
        r.headers["x-stacklab-member"]
            .to_str()
            .unwrap()
            .starts_with(&format!("{runtime}-")),
        "{:?}",
        r.headers
    );

    let load = Load::start(&b, "/api/users?limit=5", 4);
    load.advance(50).await;
    let r = admin(
        up.addrs.admin,
        "DELETE",
        &format!("/admin/pools/{runtime}/instances/{}", boxed.id),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    load.advance(50).await;
    let (ok, failed) = load.stop().await;
    assert!(
        failed.is_empty(),
        "{} of {} idempotent requests failed: {:?}",
        failed.len(),
        ok + failed.len() as u64,
        &failed[..failed.len().min(5)]
    );
    up.shutdown().await.unwrap();
    assert!(
        containers(&api, &instance, None).await.is_empty(),
        "nothing of this instance is left after control stops"
    );
}
