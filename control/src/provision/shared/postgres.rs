//! PostgreSQL: a role of the session's own owning a database of its own.

use super::{sql_text, undone, Admin, Server, Shared, DATABASE};
use crate::provision::{ProvisionError, Steps};
use crate::seal::random_password;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};
use stacklab_types::stack::{DatabaseEngine, DatabaseSpec};
use stacklab_types::Secret;
use std::str::FromStr;

fn pg_options(url: &str) -> Result<PgConnectOptions, String> {
    PgConnectOptions::from_str(url)
        .map(ConnectOptions::disable_statement_logging)
        .map_err(|_| "shared.postgres_url is not a valid postgres:// URL".to_owned())
}

impl Shared {
    /// A fresh administrator's connection (see [`Shared::sql_admin`]).
    async fn pg_admin(&self) -> Result<Admin<'_, PgConnection>, String> {
        // A failed statement is logged with its text by default, and `CREATE ROLE … PASSWORD`
        // holds one; only a superuser may ask the server not to.
        let quiet = "DO $$ BEGIN IF current_setting('is_superuser') = 'on' THEN
                SET log_statement = 'none';
                SET log_min_error_statement = 'panic';
                SET log_min_duration_statement = -1;
             END IF; END $$";
        self.sql_admin(Server::Postgres, &self.pg_slots, pg_options, quiet)
            .await
    }

    pub(super) async fn make_postgres(
        &self,
        id: &str,
        steps: &Steps,
    ) -> Result<(DatabaseSpec, String), ProvisionError> {
        let name = self.engine_name(id);
        let (parts, at) = self
            .parts(Server::Postgres)
            .map_err(|m| ProvisionError::new(DATABASE, m))?;
        let password = random_password();
        let rights =
            "the account in shared.postgres_url needs CREATEROLE and CREATEDB (or superuser)";

        let mut admin = self
            .step(
                steps,
                DATABASE,
                "database: PostgreSQL role",
                &format!("role {name}, with a password of its own"),
                &password,
                async {
                    let mut admin = self.pg_admin().await?;
                    admin
                        .exec(&format!("CREATE ROLE {name} LOGIN PASSWORD '{password}'"))
                        .await
                    .map_err(|e| format!("{at}: cannot create role {name}: {e}; {rights}"))?;
                    // Only a member of a role may make it a database's owner; a superuser
                    // needs no membership, an account with CREATEROLE does.
                    admin
                        .exec(&format!("GRANT {name} TO CURRENT_USER"))
                        .await
                        .map_err(|e| format!("{at}: cannot grant role {name} to the administrator: {e}; {rights}"))?;
                    Ok(admin)
                },
            )
            .await?;

        let made = self
            .step(
                steps,
                DATABASE,
                "database: PostgreSQL database",
                &format!("database {name}, owned by {name}; no other role may connect"),
                &password,
                async {
                    admin
                        .exec(&format!("CREATE DATABASE {name} OWNER {name}"))
                        .await
                        .map_err(|e| {
                            format!("{at}: cannot create database {name}: {e}; {rights}")
                        })?;
                    admin
                        .exec(&format!("REVOKE ALL ON DATABASE {name} FROM PUBLIC"))
                        .await
                        .map_err(|e| {
                            format!("{at}: cannot revoke PUBLIC's rights on database {name}: {e}")
                        })
                },
            )
            .await;
        admin.close().await;

        let url = parts.with_login("postgres", &name, &password, &format!("/{name}"), &[]);
        let ready = match made {
            Ok(()) => {
                self.step(
                    steps,
                    DATABASE,
                    "database: PostgreSQL ready",
                    &format!("{name} answered SELECT 1 with its own credentials"),
                    &password,
                    async {
                        let mut conn = PgConnection::connect_with(&pg_options(&url)?)
                            .await
                            .map_err(|e| {
                                format!("{at}: the new role cannot connect: {}", sql_text(&e))
                            })?;
                        let one: i32 = sqlx::query_scalar("SELECT 1")
                            .fetch_one(&mut conn)
                            .await
                            .map_err(|e| {
                                format!("{at}: SELECT 1 as the new role failed: {}", sql_text(&e))
                            })?;
                        let _ = conn.close().await;
                        if one == 1 {
                            Ok(())
                        } else {
                            Err(format!("{at}: SELECT 1 answered {one}"))
                        }
                    },
                )
                .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = ready {
            undone(
                self.remove_database(DatabaseEngine::Postgres, id, steps)
                    .await,
            );
            return Err(e);
        }
        Ok((
            DatabaseSpec {
                engine: DatabaseEngine::Postgres,
                url: Secret::new(url),
                database: None,
            },
            format!("database {name} on {}", parts.endpoint()),
        ))
    }

    pub(super) async fn remove_postgres(&self, name: &str) -> Result<(), String> {
        let (_, at) = self.parts(Server::Postgres)?;
        let mut admin = self.pg_admin().await?;
        // FORCE (PostgreSQL 13+) ends the backend's connections to it first.
        admin
            .exec(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await
            .map_err(|e| format!("{at}: cannot drop database {name}: {e}"))?;
        admin
            .exec(&format!("DROP ROLE IF EXISTS {name}"))
            .await
            .map_err(|e| {
                format!(
                    "{at}: cannot drop role {name}: {e} (if it owns objects in another database, \
                     run `DROP OWNED BY {name}` there)"
                )
            })?;
        admin.close().await;
        Ok(())
    }

    pub(super) async fn names_postgres(&self) -> Result<Vec<String>, String> {
        let (_, at) = self.parts(Server::Postgres)?;
        let mut admin = self.pg_admin().await?;
        let names = sqlx::query_scalar::<_, String>(
            r"SELECT datname::text FROM pg_database WHERE datname LIKE 's\_%'
              UNION SELECT rolname::text FROM pg_roles WHERE rolname LIKE 's\_%'",
        )
        .fetch_all(&mut admin.conn)
        .await
        .map_err(|e| format!("{at}: cannot list databases and roles: {}", sql_text(&e)))?;
        admin.close().await;
        Ok(names)
    }
}
