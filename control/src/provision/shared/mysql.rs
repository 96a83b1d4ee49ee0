//! MySQL / MariaDB: a database of the session's own and its user, granted that database only.

use super::{sql_text, undone, Admin, Server, Shared, DATABASE, MYSQL_HOSTS};
use crate::provision::{ProvisionError, Steps};
use crate::seal::random_password;
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection};
use sqlx::{ConnectOptions, Connection};
use stacklab_types::stack::{DatabaseEngine, DatabaseSpec};
use stacklab_types::Secret;
use std::str::FromStr;

fn mysql_options(url: &str) -> Result<MySqlConnectOptions, String> {
    // `mariadb://` is accepted in config; sqlx (and the backend) know it as `mysql://`.
    let url = match url.strip_prefix("mariadb://") {
        Some(rest) => format!("mysql://{rest}"),
        None => url.to_owned(),
    };
    MySqlConnectOptions::from_str(&url)
        .map(ConnectOptions::disable_statement_logging)
        .map_err(|_| "shared.mysql_url is not a valid mysql:// URL".to_owned())
}

/// `'s_<id>'@'%', 's_<id>'@'localhost'`: every account of one session.
fn mysql_accounts(name: &str) -> String {
    MYSQL_HOSTS
        .iter()
        .map(|h| format!("'{name}'@'{h}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Shared {
    /// A fresh administrator's connection (see [`Shared::sql_admin`]).
    async fn mysql_admin(&self) -> Result<Admin<'_, MySqlConnection>, String> {
        // Keeps `CREATE USER … IDENTIFIED BY` out of the general log; needs SUPER, so a
        // refusal is not an error.
        let quiet = "SET SESSION sql_log_off = 1";
        self.sql_admin(Server::Mysql, &self.mysql_slots, mysql_options, quiet)
            .await
    }

    pub(super) async fn make_mysql(
        &self,
        id: &str,
        steps: &Steps,
    ) -> Result<(DatabaseSpec, String), ProvisionError> {
        let name = self.engine_name(id);
        let (parts, at) = self
            .parts(Server::Mysql)
            .map_err(|m| ProvisionError::new(DATABASE, m))?;
        let password = random_password();
        let rights = "the account in shared.mysql_url needs CREATE, DROP, CREATE USER and \
                      GRANT OPTION (e.g. ALL PRIVILEGES ON *.* WITH GRANT OPTION)";

        let mut admin = self
            .step(
                steps,
                DATABASE,
                "database: MySQL/MariaDB database",
                &format!("database {name}, utf8mb4"),
                &password,
                async {
                    let mut admin = self.mysql_admin().await?;
                    admin
                        .exec(&format!(
                            "CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
                        ))
                        .await
                    .map_err(|e| format!("{at}: cannot create database {name}: {e}; {rights}"))?;
                    Ok(admin)
                },
            )
            .await?;

        let made = self
            .step(
                steps,
                DATABASE,
                "database: MySQL/MariaDB user",
                &format!("user {name} with a password of its own, granted {name}.* only"),
                &password,
                async {
                    let identified: Vec<String> = MYSQL_HOSTS
                        .iter()
                        .map(|h| format!("'{name}'@'{h}' IDENTIFIED BY '{password}'"))
                        .collect();
                    admin
                        .exec(&format!("CREATE USER {}", identified.join(", ")))
                        .await
                        .map_err(|e| format!("{at}: cannot create user {name}: {e}; {rights}"))?;
                    // `_` is a wildcard in a grant's database name: escaped, the grant is for
                    // this database alone.
                    let escaped = name.replace('_', r"\_");
                    let accounts = mysql_accounts(&name);
                    admin
                        .exec(&format!(
                            "GRANT ALL PRIVILEGES ON `{escaped}`.* TO {accounts}"
                        ))
                        .await
                        .map_err(|e| {
                            format!("{at}: cannot grant {name} its database: {e}; {rights}")
                        })
                },
            )
            .await;
        admin.close().await;

        let url = parts.with_login("mysql", &name, &password, &format!("/{name}"), &[]);
        let ready = match made {
            Ok(()) => {
                self.step(
                    steps,
                    DATABASE,
                    "database: MySQL/MariaDB ready",
                    &format!("{name} answered SELECT 1 with its own credentials"),
                    &password,
                    async {
                        let mut conn = MySqlConnection::connect_with(&mysql_options(&url)?)
                            .await
                            .map_err(|e| {
                            format!(
                                "{at}: the new user cannot log in: {} (an anonymous account \
                                     ''@'host' can shadow it: remove those)",
                                sql_text(&e)
                            )
                        })?;
                        let one: i64 = sqlx::query_scalar("SELECT CAST(1 AS SIGNED)")
                            .fetch_one(&mut conn)
                            .await
                            .map_err(|e| {
                                format!("{at}: SELECT 1 as the new user failed: {}", sql_text(&e))
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
            undone(self.remove_database(DatabaseEngine::Mysql, id, steps).await);
            return Err(e);
        }
        Ok((
            DatabaseSpec {
                engine: DatabaseEngine::Mysql,
                url: Secret::new(url),
                database: None,
            },
            format!("database {name}, user {name} on {}", parts.endpoint()),
        ))
    }

    pub(super) async fn remove_mysql(&self, name: &str) -> Result<(), String> {
        let (_, at) = self.parts(Server::Mysql)?;
        let mut admin = self.mysql_admin().await?;
        // The user first, so nothing logs in again; then its open connections, which MySQL
        // keeps after DROP USER; then the data.
        admin
            .exec(&format!("DROP USER IF EXISTS {}", mysql_accounts(name)))
            .await
            .map_err(|e| format!("{at}: cannot drop user {name}: {e}"))?;
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT CAST(ID AS SIGNED) FROM information_schema.PROCESSLIST WHERE USER = ?",
        )
        .bind(name)
        .fetch_all(&mut admin.conn)
        .await
        .map_err(|e| format!("{at}: cannot list {name}'s connections: {}", sql_text(&e)))?;
        for id in ids {
            // Gone in the meantime is fine.
            let _ = admin.exec(&format!("KILL CONNECTION {id}")).await;
        }
        admin
            .exec(&format!("DROP DATABASE IF EXISTS {name}"))
            .await
            .map_err(|e| format!("{at}: cannot drop database {name}: {e}"))?;
        admin.close().await;
        Ok(())
    }

    pub(super) async fn names_mysql(&self) -> Result<Vec<String>, String> {
        let (_, at) = self.parts(Server::Mysql)?;
        let mut admin = self.mysql_admin().await?;
        let fail =
            |e: sqlx::Error| format!("{at}: cannot list databases and users: {}", sql_text(&e));
        let mut names: Vec<String> = sqlx::query_scalar(
            r"SELECT CONVERT(SCHEMA_NAME USING utf8mb4) FROM information_schema.SCHEMATA
              WHERE SCHEMA_NAME LIKE 's\_%'",
        )
        .fetch_all(&mut admin.conn)
        .await
        .map_err(fail)?;
        let users: Vec<String> = sqlx::query_scalar(
            r"SELECT DISTINCT CONVERT(User USING utf8mb4) FROM mysql.user WHERE User LIKE 's\_%'",
        )
        .fetch_all(&mut admin.conn)
        .await
        .map_err(fail)?;
        admin.close().await;
        names.extend(users);
        Ok(names)
    }
}
