//! Redis: an ACL user of the session's own, limited to its key prefix and [`REDIS_COMMANDS`].

use super::{undone, Server, Shared, CACHE, REDIS_BATCH, REDIS_COMMANDS, STEP_TIMEOUT};
use crate::provision::{ProvisionError, Steps};
use crate::seal::random_password;
use stacklab_types::stack::CacheEngine;
use stacklab_types::Secret;

async fn redis_connect(url: &str) -> Result<redis::aio::MultiplexedConnection, String> {
    // The crate's parse errors may quote the URL: not passed on.
    let client = redis::Client::open(url).map_err(|_| {
        "the Redis URL is not valid; expected redis://[user:password@]host:port[/db]".to_owned()
    })?;
    let cfg = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(STEP_TIMEOUT / 4)
        .set_response_timeout(STEP_TIMEOUT / 2);
    client
        .get_multiplexed_async_connection_with_config(&cfg)
        .await
        .map_err(|e| format!("cannot connect: {e}"))
}

impl Shared {
    async fn redis_admin(&self) -> Result<redis::aio::MultiplexedConnection, String> {
        let url = self.url(Server::Redis)?;
        let (_, at) = self.parts(Server::Redis)?;
        redis_connect(url.expose())
            .await
            .map_err(|e| format!("{at}: {e}"))
    }

    /// Returns the session's URL and the server's endpoint.
    pub(super) async fn make_redis(
        &self,
        id: &str,
        steps: &Steps,
    ) -> Result<(Secret, String), ProvisionError> {
        let name = self.engine_name(id);
        let (parts, at) = self
            .parts(Server::Redis)
            .map_err(|m| ProvisionError::new(CACHE, m))?;
        let password = random_password();
        // The database the admin URL names (`/2`): the session's connection must select it.
        let db: u32 = parts.path.trim_matches('/').parse().unwrap_or(0);

        let made = self
            .step(
                steps,
                CACHE,
                "cache: Redis ACL user",
                &format!("ACL user {name}: keys {name}:* only, the backend's commands only"),
                &password,
                async {
                    let mut conn = self.redis_admin().await?;
                    let mut cmd = redis::cmd("ACL");
                    cmd.arg("SETUSER")
                        .arg(&name)
                        .arg("reset")
                        .arg("on")
                        .arg(format!(">{password}"))
                        .arg(format!("~{name}:*"))
                        .arg("resetchannels")
                        .arg("-@all");
                    for c in REDIS_COMMANDS {
                        cmd.arg(format!("+{c}"));
                    }
                    if db != 0 {
                        cmd.arg(format!("+select|{db}"));
                    }
                    cmd.query_async::<()>(&mut conn).await.map_err(|e| {
                        format!(
                            "{at}: cannot create ACL user {name}: {e}; the account in \
                             shared.redis_url needs the ACL command (Redis 6 or later)"
                        )
                    })
                },
            )
            .await;
        let url = parts.with_login(&parts.scheme, &name, &password, &parts.path, &[]);
        let ready = match made {
            Ok(()) => {
                self.step(
                    steps,
                    CACHE,
                    "cache: Redis ready",
                    &format!(
                        "{name} wrote and read back a key under {name}: with its own credentials"
                    ),
                    &password,
                    async {
                        let mut conn = redis_connect(&url)
                            .await
                            .map_err(|e| format!("{at}: as the new user: {e}"))?;
                        let key = format!("{name}:~ready");
                        let fail = |e: redis::RedisError| format!("{at}: as the new user: {e}");
                        redis::cmd("SET")
                            .arg(&key)
                            .arg("1")
                            .arg("PX")
                            .arg(60_000)
                            .query_async::<()>(&mut conn)
                            .await
                            .map_err(fail)?;
                        let got: Option<String> = redis::cmd("GET")
                            .arg(&key)
                            .query_async(&mut conn)
                            .await
                            .map_err(fail)?;
                        redis::cmd("DEL")
                            .arg(&key)
                            .query_async::<()>(&mut conn)
                            .await
                            .map_err(fail)?;
                        match got.as_deref() {
                            Some("1") => Ok(()),
                            _ => Err(format!(
                                "{at}: a key written as the new user did not read back"
                            )),
                        }
                    },
                )
                .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = ready {
            undone(self.remove_cache(CacheEngine::Redis, id, steps).await);
            return Err(e);
        }
        Ok((Secret::new(url), parts.endpoint()))
    }

    pub(super) async fn remove_redis(&self, name: &str) -> Result<(), String> {
        let (_, at) = self.parts(Server::Redis)?;
        let mut conn = self.redis_admin().await?;
        let fail = |e: redis::RedisError| format!("{at}: {e}");
        // The user first: Redis closes its connections, so nothing writes during the scan.
        redis::cmd("ACL")
            .arg("DELUSER")
            .arg(name)
            .query_async::<()>(&mut conn)
            .await
            .map_err(fail)?;
        let pattern = format!("{name}:*");
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(REDIS_BATCH)
                .query_async(&mut conn)
                .await
                .map_err(fail)?;
            if !keys.is_empty() {
                redis::cmd("UNLINK")
                    .arg(&keys)
                    .query_async::<()>(&mut conn)
                    .await
                    .map_err(fail)?;
            }
            cursor = next;
            if cursor == 0 {
                return Ok(());
            }
        }
    }

    pub(super) async fn names_redis(&self) -> Result<Vec<String>, String> {
        let (_, at) = self.parts(Server::Redis)?;
        let mut conn = self.redis_admin().await?;
        redis::cmd("ACL")
            .arg("USERS")
            .query_async(&mut conn)
            .await
            .map_err(|e| format!("{at}: cannot list ACL users: {e}"))
    }
}
