//! Readiness probes: one attempt each, with the container's own credentials.

use super::{Engine, Inner, Running, PROBE_TIMEOUT};

use sqlx::{ConnectOptions, Connection, Executor};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// A sqlx error as a person should read it: the server's message, never a URL.
fn sql_text(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(d) => d.message().to_owned(),
        sqlx::Error::Io(io) => io.to_string(),
        other => crate::redact_url(&other.to_string()),
    }
}

/// One connection with `opts`, the engine's ready query on it once, then closed.
///
/// Boxed so that the callers' futures stay `Send`: the compiler cannot prove that of an
/// `async fn` generic over a connection used through `for<'c> &'c mut C: Executor<'c>`.
fn ready_query<'a, C: Connection>(
    opts: &'a C::Options,
    query: &'a str,
) -> futures_util::future::BoxFuture<'a, Result<(), String>>
where
    for<'c> &'c mut C: Executor<'c>,
{
    Box::pin(async move {
        let mut conn = C::connect_with(opts).await.map_err(|e| sql_text(&e))?;
        let done = conn
            .execute(query)
            .await
            .map(drop)
            .map_err(|e| sql_text(&e));
        let _ = conn.close().await;
        done
    })
}

impl Inner {
    /// PostgreSQL: the session's account as a plain role owning its database, in place of the
    /// superuser the container was made with, whose password is then taken away (the server
    /// asks every client for one, so nobody can log in as the superuser again).
    pub(super) async fn make_account(&self, c: &Running, password: &str) -> Result<(), String> {
        let spec = &self.cfg().engines[&c.engine];
        if c.engine != Engine::Postgres {
            return Err(format!("{} has no superuser set-up", c.engine.label()));
        }
        let opts = sqlx::postgres::PgConnectOptions::new()
            .host(&c.addr.ip().to_string())
            .port(c.addr.port())
            .username(&c.login)
            .password(c.password.expose())
            .database("postgres")
            .disable_statement_logging();
        let mut conn = sqlx::PgConnection::connect_with(&opts)
            .await
            .map_err(|e| sql_text(&e))?;
        let ident = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
        let (account, database) = (ident(&spec.account), ident(&spec.database));
        let done = async {
            for sql in [
                format!(
                    "CREATE ROLE {account} LOGIN PASSWORD '{}' NOSUPERUSER NOCREATEDB \
                     NOCREATEROLE NOREPLICATION NOBYPASSRLS",
                    password.replace('\'', "''")
                ),
                format!("CREATE DATABASE {database} OWNER {account}"),
                // The other databases are not the session's.
                "REVOKE CONNECT ON DATABASE postgres FROM PUBLIC".to_owned(),
                "REVOKE CONNECT ON DATABASE template1 FROM PUBLIC".to_owned(),
                format!("ALTER ROLE {} PASSWORD NULL", ident(&c.login)),
            ] {
                conn.execute(sql.as_str()).await.map_err(|e| sql_text(&e))?;
            }
            Ok::<(), String>(())
        }
        .await;
        let _ = conn.close().await;
        done
    }

    pub(super) async fn probe(&self, c: &Running) -> Result<(), String> {
        let spec = &self.cfg().engines[&c.engine];
        let host = c.addr.ip().to_string();
        let password = c.password.expose();
        // Before its account is made, the superuser's own database.
        let database = if c.login == spec.account {
            spec.database.as_str()
        } else {
            "postgres"
        };
        match c.engine {
            Engine::Postgres => {
                let opts = sqlx::postgres::PgConnectOptions::new()
                    .host(&host)
                    .port(c.addr.port())
                    .username(&c.login)
                    .password(password)
                    .database(database)
                    .disable_statement_logging();
                ready_query::<sqlx::PgConnection>(&opts, &spec.ready_query).await
            }
            Engine::Mysql => {
                let opts = sqlx::mysql::MySqlConnectOptions::new()
                    .host(&host)
                    .port(c.addr.port())
                    .username(&spec.account)
                    .password(password)
                    .database(&spec.database)
                    .disable_statement_logging();
                ready_query::<sqlx::MySqlConnection>(&opts, &spec.ready_query).await
            }
            Engine::Mongodb => {
                let opts = mongodb::options::ClientOptions::builder()
                    .hosts(vec![mongodb::options::ServerAddress::Tcp {
                        host: host.clone(),
                        port: Some(c.addr.port()),
                    }])
                    .credential(
                        mongodb::options::Credential::builder()
                            .username(spec.account.clone())
                            .password(password.to_owned())
                            .source("admin".to_owned())
                            .build(),
                    )
                    .server_selection_timeout(PROBE_TIMEOUT)
                    .connect_timeout(PROBE_TIMEOUT)
                    .build();
                let client = mongodb::Client::with_options(opts).map_err(|e| e.kind.to_string())?;
                let done = client
                    .database(&spec.database)
                    .run_command(mongodb::bson::doc! { spec.ready_query.as_str(): 1 })
                    .await
                    .map(drop)
                    .map_err(|e| e.kind.to_string());
                client.shutdown().await;
                done
            }
            Engine::Redis => {
                let url = format!("redis://:{password}@{}/", c.addr);
                let client = redis::Client::open(url)
                    .map_err(|_| "the Redis address is not valid".to_owned())?;
                let mut conn = client
                    .get_multiplexed_async_connection()
                    .await
                    .map_err(|e| e.to_string())?;
                let mut words = spec.ready_query.split_whitespace();
                let mut cmd = redis::cmd(words.next().unwrap_or("PING"));
                for w in words {
                    cmd.arg(w);
                }
                cmd.query_async::<redis::Value>(&mut conn)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
            Engine::Memcached => {
                let stream = tokio::net::TcpStream::connect(c.addr)
                    .await
                    .map_err(|e| e.to_string())?;
                let mut conn = BufReader::new(stream);
                conn.get_mut()
                    .write_all(format!("{}\r\n", spec.ready_query).as_bytes())
                    .await
                    .map_err(|e| e.to_string())?;
                let mut line = String::new();
                conn.read_line(&mut line).await.map_err(|e| e.to_string())?;
                let line = line.trim_end();
                if line.is_empty() {
                    Err("the connection closed without an answer".to_owned())
                } else if line.starts_with("ERROR")
                    || line.starts_with("CLIENT_ERROR")
                    || line.starts_with("SERVER_ERROR")
                {
                    Err(format!("answered {line}"))
                } else {
                    Ok(())
                }
            }
        }
    }
}
