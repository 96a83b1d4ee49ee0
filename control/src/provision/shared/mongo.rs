//! MongoDB: a user of the session's own with `readWrite` on its database alone.

use super::{undone, Server, Shared, DATABASE, STEP_TIMEOUT};
use crate::provision::{ProvisionError, Steps};
use crate::seal::random_password;
use mongodb::bson::{doc, Document};
use stacklab_types::stack::{DatabaseEngine, DatabaseSpec};
use stacklab_types::Secret;

async fn mongo_client(url: &str) -> Result<mongodb::Client, String> {
    let mut opts = mongodb::options::ClientOptions::parse(url)
        .await
        .map_err(|e| format!("the MongoDB URL is not valid: {}", e.kind))?;
    opts.server_selection_timeout = Some(STEP_TIMEOUT / 2);
    opts.connect_timeout = Some(STEP_TIMEOUT / 4);
    mongodb::Client::with_options(opts)
        .map_err(|e| format!("cannot use the MongoDB URL: {}", e.kind))
}

/// MongoDB's `UserNotFound`.
const MONGO_USER_NOT_FOUND: i32 = 11;

fn mongo_code(e: &mongodb::error::Error) -> Option<i32> {
    match &*e.kind {
        mongodb::error::ErrorKind::Command(c) => Some(c.code),
        _ => None,
    }
}

impl Shared {
    async fn mongo_admin(&self) -> Result<&mongodb::Client, String> {
        let url = self.url(Server::Mongodb)?;
        self.mongo
            .get_or_try_init(|| mongo_client(url.expose()))
            .await
    }

    pub(super) async fn make_mongodb(
        &self,
        id: &str,
        steps: &Steps,
    ) -> Result<(DatabaseSpec, String), ProvisionError> {
        let name = self.engine_name(id);
        let (parts, at) = self
            .parts(Server::Mongodb)
            .map_err(|m| ProvisionError::new(DATABASE, m))?;
        let password = random_password();

        self.step(
            steps,
            DATABASE,
            "database: MongoDB user",
            &format!("user {name}, readWrite on database {name} only"),
            &password,
            async {
                let admin = self.mongo_admin().await.map_err(|e| format!("{at}: {e}"))?;
                admin
                    .database(&name)
                    .run_command(doc! {
                        "createUser": &name,
                        "pwd": &password,
                        "roles": [{"role": "readWrite", "db": &name}],
                    })
                    .await
                    .map(drop)
                    .map_err(|e| {
                        format!(
                            "{at}: cannot create user {name}: {}; the account in \
                                 shared.mongodb_url needs userAdminAnyDatabase, \
                                 dbAdminAnyDatabase and readWriteAnyDatabase (or root)",
                            e.kind
                        )
                    })
            },
        )
        .await?;

        let url = parts.with_login(
            &parts.scheme,
            &name,
            &password,
            &format!("/{name}"),
            &[format!("authSource={name}")],
        );
        let ready = self
            .step(
                steps,
                DATABASE,
                "database: MongoDB ready",
                &format!("{name} answered a ping, a write and a read with its own credentials"),
                &password,
                async {
                    let client = mongo_client(&url).await?;
                    let db = client.database(&name);
                    db.run_command(doc! {"ping": 1})
                        .await
                        .map_err(|e| format!("{at}: the new user cannot ping: {}", e.kind))?;
                    let probe = db.collection::<Document>("stacklab_ready");
                    probe
                        .insert_one(doc! {"_id": 1, "ok": true})
                        .await
                        .map_err(|e| format!("{at}: the new user cannot write: {}", e.kind))?;
                    let read = probe
                        .find_one(doc! {"_id": 1})
                        .await
                        .map_err(|e| format!("{at}: the new user cannot read: {}", e.kind))?;
                    let _ = probe.drop().await;
                    client.shutdown().await;
                    match read {
                        Some(d) if matches!(d.get_bool("ok"), Ok(true)) => Ok(()),
                        _ => Err(format!(
                            "{at}: a document written as the new user did not read back"
                        )),
                    }
                },
            )
            .await;
        if let Err(e) = ready {
            undone(
                self.remove_database(DatabaseEngine::Mongodb, id, steps)
                    .await,
            );
            return Err(e);
        }
        Ok((
            DatabaseSpec {
                engine: DatabaseEngine::Mongodb,
                url: Secret::new(url),
                database: Some(name.clone()),
            },
            format!("database {name}, user {name} on {}", parts.endpoint()),
        ))
    }

    pub(super) async fn remove_mongodb(&self, name: &str) -> Result<(), String> {
        let (_, at) = self.parts(Server::Mongodb)?;
        let admin = self.mongo_admin().await?;
        let db = admin.database(name);
        match db.run_command(doc! {"dropUser": name}).await {
            Ok(_) => {}
            Err(e) if mongo_code(&e) == Some(MONGO_USER_NOT_FOUND) => {}
            Err(e) => return Err(format!("{at}: cannot drop user {name}: {}", e.kind)),
        }
        db.drop()
            .await
            .map_err(|e| format!("{at}: cannot drop database {name}: {}", e.kind))
    }

    pub(super) async fn names_mongodb(&self) -> Result<Vec<String>, String> {
        let (_, at) = self.parts(Server::Mongodb)?;
        let admin = self.mongo_admin().await?;
        let mut names = admin
            .list_database_names()
            .await
            .map_err(|e| format!("{at}: cannot list databases: {}", e.kind))?;
        // A user outlives an empty database (which MongoDB does not list).
        let users = admin
            .database("admin")
            .run_command(doc! {"usersInfo": {"forAllDBs": true}})
            .await
            .map_err(|e| format!("{at}: cannot list users: {}", e.kind))?;
        if let Ok(list) = users.get_array("users") {
            names.extend(
                list.iter()
                    .filter_map(|u| u.as_document())
                    .filter_map(|u| u.get_str("db").ok())
                    .map(str::to_owned),
            );
        }
        Ok(names)
    }
}
