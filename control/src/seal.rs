//! Secrets at rest in the registry: session keys, peppers and engine credentials are sealed
//! with AES-256-GCM under a master key kept in `<data_dir>/control.key` (mode 0600), so a copy
//! of the registry alone reveals none of them. Several control nodes sharing a PostgreSQL
//! registry need the same key file.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rand::RngCore;
use std::path::Path;

pub struct Sealer {
    cipher: Aes256Gcm,
    /// Keys [`Sealer::tag`]: derived from the master key, never the key itself.
    tag_key: [u8; 32],
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer([redacted])")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("cannot read or write the master key {path}: {source}")]
    KeyFile {
        path: String,
        source: std::io::Error,
    },
    #[error("the master key {0} is not 32 bytes of base64; restore it or remove the registry too")]
    BadKey(String),
    #[error("a sealed value does not open with this master key (was control.key replaced?)")]
    Open,
}

impl Sealer {
    /// Loads `<dir>/control.key`, making it the first time.
    pub fn load_or_create(dir: &Path) -> Result<Self, SealError> {
        let path = dir.join("control.key");
        let io = |source| SealError::KeyFile {
            path: path.display().to_string(),
            source,
        };
        let key = match std::fs::read_to_string(&path) {
            Ok(text) => B64
                .decode(text.trim())
                .ok()
                .filter(|k| k.len() == 32)
                .ok_or_else(|| SealError::BadKey(path.display().to_string()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir).map_err(io)?;
                let mut key = vec![0u8; 32];
                rand::rng().fill_bytes(&mut key);
                write_private(&path, B64.encode(&key).as_bytes()).map_err(io)?;
                key
            }
            Err(e) => return Err(io(e)),
        };
        Ok(Self::from_key(&key))
    }

    pub fn from_key(key: &[u8]) -> Self {
        use sha2::{Digest, Sha256};
        let mut derive = Sha256::new();
        derive.update(b"stacklab client tag\0");
        derive.update(key);
        Self {
            cipher: Aes256Gcm::new_from_slice(key).expect("32-byte key"),
            tag_key: derive.finalize().into(),
        }
    }

    /// A keyed one-way tag of `text` (HMAC-SHA-256, 128 bits in hex): what is kept of a client
    /// address, so equal clients are still counted together (the per-client caps) while the
    /// registry and control's memory hold no address in the clear.
    pub fn tag(&self, text: &str) -> String {
        use hmac::{Hmac, Mac};
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.tag_key)
            .expect("HMAC takes a key of any length");
        mac.update(text.as_bytes());
        mac.finalize().into_bytes()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// `base64(nonce || ciphertext)`.
    pub fn seal(&self, plain: &[u8]) -> String {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let ct = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), plain)
            .expect("AES-GCM encryption does not fail for in-memory data");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        B64.encode(out)
    }

    pub fn open(&self, sealed: &str) -> Result<Vec<u8>, SealError> {
        let raw = B64.decode(sealed).map_err(|_| SealError::Open)?;
        if raw.len() < 12 {
            return Err(SealError::Open);
        }
        let (nonce, ct) = raw.split_at(12);
        self.cipher
            .decrypt(Nonce::from_slice(nonce), ct)
            .map_err(|_| SealError::Open)
    }
}

/// Writes a file only its owner can read.
pub fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)
}

/// `n` random bytes as base64 (keys, peppers).
pub fn random_b64(n: usize) -> String {
    let mut b = vec![0u8; n];
    rand::rng().fill_bytes(&mut b);
    B64.encode(b)
}

/// A password for an engine account: 24 characters from an alphabet that needs no quoting in
/// a URL or SQL literal.
pub fn random_password() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut b = [0u8; 24];
    rand::rng().fill_bytes(&mut b);
    b.iter()
        .map(|x| ALPHABET[*x as usize % ALPHABET.len()] as char)
        .collect()
}

/// A session code: 128 random bits in Crockford base32, lower case (26 characters, no `i`,
/// `l`, `o`, `u`, so it reads back without ambiguity).
pub fn session_code() -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghjkmnpqrstvwxyz";
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    let n = u128::from_be_bytes(bytes);
    (0..26)
        .rev()
        .map(|i| ALPHABET[((n >> (i * 5)) & 31) as usize] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key() {
        let a = Sealer::from_key(&[1u8; 32]);
        let b = Sealer::from_key(&[2u8; 32]);
        let s = a.seal(b"pepper");
        assert_ne!(s, a.seal(b"pepper"), "a fresh nonce per seal");
        assert_eq!(a.open(&s).unwrap(), b"pepper");
        assert!(b.open(&s).is_err());
        assert!(a.open("not base64!").is_err());
    }

    #[test]
    fn codes_are_26_unambiguous_characters() {
        let c = session_code();
        assert_eq!(c.len(), 26);
        assert!(c
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase()));
        assert!(!c.contains(['i', 'l', 'o', 'u']));
        assert_ne!(c, session_code());
        assert!(stacklab_proxy::session::is_code(&c));
    }
}
