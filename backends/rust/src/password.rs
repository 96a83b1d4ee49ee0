//! Password storage, five ways, from "never do this" to "do this".
//!
//! `stored_password` in the API shows exactly what the database holds, so the difference is
//! visible: plaintext as typed; `sha256` unsalted hex (two users with one password share a
//! hash, and a lookup table reverses common ones — the point of showing it); bcrypt with its
//! cost in the string; `bcrypt-pepper`, where an HMAC-SHA-256 with a server secret (the
//! pepper, kept by control, not in the database) is bcrypted, so a stolen table alone cannot
//! be cracked; argon2id with its parameters in the PHC string.
//!
//! Hashing is deliberately slow and runs on the blocking pool, not on the async workers, and
//! only as many at once as the instance's hashing gate lets ([`crate::guard`]).

use crate::error::ApiError;
use crate::guard::Guards;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use stacklab_types::secret::constant_time_eq;
use stacklab_types::stack::PasswordStorage;
use stacklab_types::Secret;
use std::sync::Arc;

/// bcrypt's cost when the config says nothing (2^10 rounds: ~50-100 ms on this class of machine).
pub const DEFAULT_BCRYPT_COST: u32 = 10;

#[derive(Debug, Clone)]
pub struct Hasher {
    pub mode: PasswordStorage,
    pub bcrypt_cost: u32,
    pub pepper: Secret,
    /// The instance's hashing gate.
    pub gate: Arc<Guards>,
}

impl Hasher {
    /// Hashes once the gate lets it (`503 busy` when it does not in time).
    pub async fn hash(&self, password: &str) -> Result<String, ApiError> {
        let this = self.clone();
        let password = password.to_owned();
        self.gate.hash(move || this.hash_blocking(&password)).await
    }

    /// Verifies once the gate lets it (`503 busy` when it does not in time).
    pub async fn verify(&self, password: &str, stored: &str) -> Result<bool, ApiError> {
        let this = self.clone();
        let (password, stored) = (password.to_owned(), stored.to_owned());
        self.gate
            .hash(move || this.verify_blocking(&password, &stored))
            .await
    }

    pub fn hash_blocking(&self, password: &str) -> Result<String, ApiError> {
        Ok(match self.mode {
            PasswordStorage::Plaintext => password.to_owned(),
            PasswordStorage::Sha256 => hex(&Sha256::digest(password.as_bytes())),
            PasswordStorage::Bcrypt => bcrypt::hash(password, self.bcrypt_cost)
                .map_err(|e| ApiError::Internal(e.to_string()))?,
            PasswordStorage::BcryptPepper => {
                bcrypt::hash(self.peppered(password)?, self.bcrypt_cost)
                    .map_err(|e| ApiError::Internal(e.to_string()))?
            }
            PasswordStorage::Argon2id => {
                let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
                argon2::Argon2::default()
                    .hash_password(password.as_bytes(), &salt)
                    .map_err(|e| ApiError::Internal(e.to_string()))?
                    .to_string()
            }
        })
    }

    pub fn verify_blocking(&self, password: &str, stored: &str) -> Result<bool, ApiError> {
        Ok(match self.mode {
            PasswordStorage::Plaintext => constant_time_eq(password.as_bytes(), stored.as_bytes()),
            PasswordStorage::Sha256 => constant_time_eq(
                hex(&Sha256::digest(password.as_bytes())).as_bytes(),
                stored.as_bytes(),
            ),
            PasswordStorage::Bcrypt => bcrypt::verify(password, stored).unwrap_or(false),
            PasswordStorage::BcryptPepper => {
                bcrypt::verify(self.peppered(password)?, stored).unwrap_or(false)
            }
            PasswordStorage::Argon2id => match PasswordHash::new(stored) {
                Ok(parsed) => argon2::Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok(),
                Err(_) => false,
            },
        })
    }

    /// HMAC-SHA-256(pepper, password) as hex: 64 characters, under bcrypt's 72-byte limit.
    fn peppered(&self, password: &str) -> Result<String, ApiError> {
        if self.pepper.is_empty() {
            return Err(ApiError::Internal(
                "bcrypt-pepper needs a pepper from control".into(),
            ));
        }
        let mut mac = Hmac::<Sha256>::new_from_slice(self.pepper.expose().as_bytes())
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        mac.update(password.as_bytes());
        Ok(hex(&mac.finalize().into_bytes()))
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hasher(mode: PasswordStorage) -> Hasher {
        Hasher {
            mode,
            bcrypt_cost: 4,
            pepper: Secret::new("pepper-pepper-pepper"),
            gate: Guards::new(&crate::config::Limits::default()),
        }
    }

    #[test]
    fn every_mode_verifies_its_own_hash_and_rejects_others() {
        for mode in [
            PasswordStorage::Plaintext,
            PasswordStorage::Sha256,
            PasswordStorage::Bcrypt,
            PasswordStorage::BcryptPepper,
            PasswordStorage::Argon2id,
        ] {
            let h = hasher(mode);
            let stored = h.hash_blocking("correct horse").unwrap();
            assert!(
                h.verify_blocking("correct horse", &stored).unwrap(),
                "{mode:?}"
            );
            assert!(
                !h.verify_blocking("wrong horse", &stored).unwrap(),
                "{mode:?}"
            );
        }
    }

    #[test]
    fn stored_forms_show_what_each_mode_means() {
        assert_eq!(
            hasher(PasswordStorage::Plaintext)
                .hash_blocking("pw123456")
                .unwrap(),
            "pw123456"
        );
        let sha = hasher(PasswordStorage::Sha256)
            .hash_blocking("pw123456")
            .unwrap();
        assert_eq!(
            sha,
            hasher(PasswordStorage::Sha256)
                .hash_blocking("pw123456")
                .unwrap(),
            "unsalted: same input, same hash"
        );
        assert_eq!(sha.len(), 64);
        assert!(hasher(PasswordStorage::Bcrypt)
            .hash_blocking("pw123456")
            .unwrap()
            .starts_with("$2b$04$"));
        assert!(hasher(PasswordStorage::Argon2id)
            .hash_blocking("pw123456")
            .unwrap()
            .starts_with("$argon2id$"));
        // The pepper matters: the same bcrypt-pepper hash does not verify under another pepper.
        let stored = hasher(PasswordStorage::BcryptPepper)
            .hash_blocking("pw123456")
            .unwrap();
        let other = Hasher {
            pepper: Secret::new("another-pepper-value"),
            ..hasher(PasswordStorage::BcryptPepper)
        };
        assert!(!other.verify_blocking("pw123456", &stored).unwrap());
        assert!(
            !bcrypt::verify("pw123456", &stored).unwrap(),
            "without the pepper the table alone is not enough"
        );
    }
}
