//! A session's id: the name everything but the browser's cookie uses for a session.
//!
//! A session code (128 random bits, 26 characters, made by control) lives only in the
//! `stacklab_session` cookie and in the answer that set it. Everything else — the registry,
//! the route table, the proxy's captures, the backends' `x-stacklab-session`, the names of the
//! databases, files and containers made for it — uses its id: the first 104 bits of
//! SHA-256 over a domain prefix and the code, in lowercase hex. The hash is one-way, so an id
//! seen in a container name, a log line or a stolen registry never opens the session: the
//! proxy hashes the cookie it is given, and an id sent as a cookie hashes to something else.

use sha2::{Digest, Sha256};

/// The longest cookie value read as a session code; longer ones are ignored unread.
pub const MAX_CODE_LEN: usize = 64;

/// Whether a cookie value can be a session code: 16-64 ASCII letters and digits (control makes
/// 26 lowercase Crockford base32 characters; the rule is looser so the proxy, a backend or a
/// test never has to know more). The one rule, used by the proxy and the runtimes' tests.
pub fn is_code(s: &str) -> bool {
    (16..=MAX_CODE_LEN).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Characters in an id: 26 lowercase hex digits (104 bits).
pub const ID_LEN: usize = 26;

/// The id of the session whose cookie carries `code`.
pub fn id(code: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"stacklab-resource:");
    h.update(code.as_bytes());
    let digest = h.finalize();
    let mut out = String::with_capacity(ID_LEN);
    for b in &digest[..ID_LEN / 2] {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 15)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Whether `s` has the shape of an id (not whether a session has it).
pub fn is_id(s: &str) -> bool {
    s.len() == ID_LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_the_prefixed_sha256_of_the_code_cut_to_104_bits() {
        // sha256("stacklab-resource:abc") computed independently (Python's hashlib).
        assert_eq!(id("abc"), "44e06ed496f1a3c84783e57333");
        let code = "7k3qz9m2xw4r8t6v1n5p0h2j3d";
        assert!(is_id(&id(code)));
        assert_ne!(
            id(code),
            id(&id(code)),
            "an id used as a code names nothing"
        );
        assert!(!is_id(code));
        assert!(
            is_code(code) && is_code(&id(code)),
            "an id has a code's shape"
        );
        assert!(!is_code("short") && !is_code("../../etc/passwd0") && !is_code(&"a".repeat(65)));
    }
}
