//! What the databases hold, read with each engine's own client (sqlx's PostgreSQL, MySQL and
//! SQLite drivers, the MongoDB driver), and the storage formats checked from first principles.
//!
//! The format checks are written here from the contract (`backends/CONTRACT.md`), with the
//! standard libraries of each algorithm, not with any runtime's code: they are the oracle a
//! runtime's rows are held to, so a row one runtime writes is known to be what every other
//! one reads.

use crate::engines::{Db, Stack};
use aes_gcm::aead::{Aead, KeyInit};
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use sqlx::Row;
use stacklab_types::stack::PasswordStorage;
use stacklab_types::Secret;

const B64: base64::engine::general_purpose::GeneralPurpose =
    base64::engine::general_purpose::STANDARD;

/// One value of one row, read on a pool opened and closed for the call.
macro_rules! sql_one {
    ($pool:ty, $url:expr, $sql:expr, $t:ty) => {{
        let pool = <$pool>::connect($url).await.expect("the stack's database");
        let v: $t = sqlx::query($sql)
            .fetch_one(&pool)
            .await
            .unwrap_or_else(|e| panic!("`{}`: {e}", $sql))
            .get(0);
        pool.close().await;
        v
    }};
}

/// A text column of a user's row, read with the engine's own driver.
pub async fn raw_column(stack: &Stack, id: i64, column: &str) -> String {
    let url = stack.descriptor.database.url.expose();
    let sql = format!("SELECT {column} FROM users WHERE id = {id}");
    match stack.db {
        Db::Mongo => {
            let doc = mongo_users(stack)
                .await
                .find_one(mongodb::bson::doc! {"_id": id})
                .await
                .expect("MongoDB")
                .unwrap_or_else(|| panic!("no user {id} in MongoDB"));
            doc.get_str(column)
                .unwrap_or_else(|e| panic!("user {id}'s `{column}` in MongoDB: {e}"))
                .to_owned()
        }
        Db::Sqlite => sql_one!(sqlx::SqlitePool, url, &sql, String),
        Db::Postgres => sql_one!(sqlx::PgPool, url, &sql, String),
        Db::Mysql => sql_one!(sqlx::MySqlPool, url, &sql, String),
    }
}

/// Rows in the stack's users table (documents in its collection).
pub async fn raw_count(stack: &Stack) -> i64 {
    let url = stack.descriptor.database.url.expose();
    let sql = "SELECT COUNT(*) FROM users";
    match stack.db {
        Db::Mongo => mongo_users(stack)
            .await
            .count_documents(mongodb::bson::doc! {})
            .await
            .expect("MongoDB") as i64,
        Db::Sqlite => sql_one!(sqlx::SqlitePool, url, sql, i64),
        Db::Postgres => sql_one!(sqlx::PgPool, url, sql, i64),
        Db::Mysql => sql_one!(sqlx::MySqlPool, url, sql, i64),
    }
}

async fn mongo_users(stack: &Stack) -> mongodb::Collection<mongodb::bson::Document> {
    let client = mongodb::Client::with_uri_str(stack.descriptor.database.url.expose())
        .await
        .expect("MongoDB");
    client
        .database(
            stack
                .descriptor
                .database
                .database
                .as_deref()
                .expect("a MongoDB stack names its database"),
        )
        .collection("users")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `stored` (a password column) holds `password` in `mode`, checked as the contract
/// defines each form: plaintext as typed; unsalted SHA-256 as lowercase hex; bcrypt `$2b$`;
/// bcrypt of the lowercase hex HMAC-SHA-256 of the password keyed with the pepper; argon2id
/// in its PHC string.
pub fn password_matches(
    mode: PasswordStorage,
    stored: &str,
    password: &str,
    pepper: &Secret,
) -> bool {
    match mode {
        PasswordStorage::Plaintext => stored == password,
        PasswordStorage::Sha256 => stored == hex(&Sha256::digest(password.as_bytes())),
        PasswordStorage::Bcrypt => bcrypt::verify(password, stored).unwrap_or(false),
        PasswordStorage::BcryptPepper => {
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(pepper.expose().as_bytes())
                .expect("HMAC takes any key");
            mac.update(password.as_bytes());
            bcrypt::verify(hex(&mac.finalize().into_bytes()), stored).unwrap_or(false)
        }
        PasswordStorage::Argon2id => {
            use argon2::password_hash::{PasswordHash, PasswordVerifier};
            PasswordHash::new(stored).is_ok_and(|h| {
                h.algorithm.as_str() == "argon2id"
                    && argon2::Argon2::default()
                        .verify_password(password.as_bytes(), &h)
                        .is_ok()
            })
        }
    }
}

/// Opens an encrypted column: `v1:` + base64(12-byte nonce ‖ AES-256-GCM ciphertext ‖ tag)
/// under the session's key (32 bytes, base64). `None` when it is not that.
pub fn open_sealed(key: &Secret, stored: &str) -> Option<String> {
    let key = B64.decode(key.expose()).ok()?;
    let cipher = aes_gcm::Aes256Gcm::new_from_slice(&key).ok()?;
    let raw = B64.decode(stored.strip_prefix("v1:")?).ok()?;
    if raw.len() <= 12 {
        return None;
    }
    let plain = cipher
        .decrypt(aes_gcm::Nonce::from_slice(&raw[..12]), &raw[12..])
        .ok()?;
    String::from_utf8(plain).ok()
}

/// The blind index of a normalized (lowercased) value: lowercase hex HMAC-SHA-256 under the
/// index key, itself HMAC-SHA-256(session key, "stacklab blind index v1").
pub fn blind_index(key: &Secret, normalized: &str) -> String {
    let key = B64.decode(key.expose()).expect("a base64 key");
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).expect("HMAC takes any key");
    mac.update(b"stacklab blind index v1");
    let index_key = mac.finalize().into_bytes();
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&index_key).expect("HMAC takes any key");
    mac.update(normalized.as_bytes());
    hex(&mac.finalize().into_bytes())
}
