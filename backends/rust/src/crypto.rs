//! Encryption at rest for personal fields, and the blind index that keeps them searchable.
//!
//! Each value is sealed with AES-256-GCM under the session's key (made and kept by control)
//! with a fresh random 96-bit nonce, stored as `v1:` + base64(nonce ‖ ciphertext ‖ tag), so the
//! raw row shows ciphertext and two equal emails do not look equal. Exact-match search and
//! uniqueness use a blind index: HMAC-SHA-256 of the normalized value under a key derived from
//! the session key (a separate key, so the index cannot be turned into the cipher key).

use crate::error::ApiError;
use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use stacklab_types::Secret;

const PREFIX: &str = "v1:";
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

#[derive(Clone)]
pub struct FieldCrypto {
    cipher: Aes256Gcm,
    index_key: [u8; 32],
}

impl std::fmt::Debug for FieldCrypto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FieldCrypto([redacted])")
    }
}

impl FieldCrypto {
    /// `key` is 32 bytes, base64.
    pub fn new(key: &Secret) -> Result<Self, ApiError> {
        let raw = B64
            .decode(key.expose())
            .map_err(|_| ApiError::Internal("the session's encryption key is not base64".into()))?;
        if raw.len() != 32 {
            return Err(ApiError::Internal(
                "the session's encryption key is not 32 bytes".into(),
            ));
        }
        let cipher =
            Aes256Gcm::new_from_slice(&raw).map_err(|e| ApiError::Internal(e.to_string()))?;
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&raw)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        mac.update(b"stacklab blind index v1");
        let index_key: [u8; 32] = mac.finalize().into_bytes().into();
        Ok(Self { cipher, index_key })
    }

    pub fn seal(&self, plain: &str) -> Result<String, ApiError> {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), plain.as_bytes())
            .map_err(|_| ApiError::Internal("encryption failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(format!("{PREFIX}{}", B64.encode(out)))
    }

    pub fn open(&self, stored: &str) -> Result<String, ApiError> {
        let raw = stored
            .strip_prefix(PREFIX)
            .and_then(|b| B64.decode(b).ok())
            .filter(|r| r.len() > 12)
            .ok_or_else(|| ApiError::Internal("a stored value is not ciphertext".into()))?;
        let plain = self
            .cipher
            .decrypt(Nonce::from_slice(&raw[..12]), &raw[12..])
            .map_err(|_| {
                ApiError::Internal(
                    "a stored value does not decrypt under this session's key".into(),
                )
            })?;
        String::from_utf8(plain)
            .map_err(|_| ApiError::Internal("decrypted value is not UTF-8".into()))
    }

    /// The blind index of a normalized value, hex.
    pub fn index(&self, normalized: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.index_key)
            .expect("HMAC takes any key length");
        mac.update(normalized.as_bytes());
        crate::password::hex(&mac.finalize().into_bytes())
    }
}

/// A new random key, base64 (control makes these; tests too).
pub fn new_key() -> Secret {
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    Secret::new(B64.encode(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_with_fresh_nonces_and_opens() {
        let c = FieldCrypto::new(&new_key()).unwrap();
        let a = c.seal("ann@example.com").unwrap();
        let b = c.seal("ann@example.com").unwrap();
        assert_ne!(a, b, "random nonce per value");
        assert!(a.starts_with("v1:") && !a.contains("ann"));
        assert_eq!(c.open(&a).unwrap(), "ann@example.com");
        let other = FieldCrypto::new(&new_key()).unwrap();
        assert!(
            other.open(&a).is_err(),
            "another session's key cannot read it"
        );
        assert_eq!(c.index("ann@example.com"), c.index("ann@example.com"));
        assert_ne!(c.index("ann@example.com"), other.index("ann@example.com"));
    }
}
