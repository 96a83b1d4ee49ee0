"""Password storage, five ways, from "never do this" to "do this" (CONTRACT.md §11).

``stored_password`` in the API shows exactly what the database holds: plaintext as typed;
``sha256`` unsalted hex (two users with one password share a hash — the point of showing it);
bcrypt with its cost in the string; ``bcrypt-pepper``, where HMAC-SHA-256 under a server secret
(the pepper, kept by control, not in the database) is bcrypted, so a stolen table alone cannot
be cracked; argon2id with its parameters in the PHC string — the RustCrypto defaults, so both
runtimes write the same strings.

Hashing is slow on purpose; at most ``max_concurrent_hashes`` hashes run at once in an
instance, and one that cannot start within ``hash_wait_ms`` is ``503 busy`` (:mod:`.guard`), so
a burst of sign-ups cannot take every core (the C libraries release the GIL).
"""

from __future__ import annotations

import hashlib
import hmac

import argon2
import bcrypt

from .errors import ApiError
from .guard import guards

MODES = ("plaintext", "sha256", "bcrypt", "bcrypt-pepper", "argon2id")

# argon2 0.5's `Argon2::default()`: Argon2id v19, m=19456 KiB, t=2, p=1, 32-byte hash, 16-byte salt.
_argon2 = argon2.PasswordHasher(
    time_cost=2, memory_cost=19456, parallelism=1, hash_len=32, salt_len=16, type=argon2.Type.ID
)


class Hasher:
    """One session's password mode. The pepper is never shown by ``repr``."""

    __slots__ = ("mode", "bcrypt_cost", "_pepper")

    def __init__(self, mode: str, bcrypt_cost: int, pepper: str):
        if mode not in MODES:
            raise ApiError.internal(f"unknown password mode {mode!r}")
        self.mode = mode
        self.bcrypt_cost = bcrypt_cost
        self._pepper = pepper

    def __repr__(self) -> str:
        return f"Hasher(mode={self.mode!r}, bcrypt_cost={self.bcrypt_cost})"

    def hash(self, password: str) -> str:
        return guards().hash(lambda: self._hash(password))

    def verify(self, password: str, stored: str) -> bool:
        return guards().hash(lambda: self._verify(password, stored))

    def _hash(self, password: str) -> str:
        if self.mode == "plaintext":
            return password
        if self.mode == "sha256":
            return hashlib.sha256(password.encode()).hexdigest()
        if self.mode == "bcrypt":
            return _bcrypt(password.encode(), self.bcrypt_cost)
        if self.mode == "bcrypt-pepper":
            return _bcrypt(self._peppered(password), self.bcrypt_cost)
        return _argon2.hash(password)

    def _verify(self, password: str, stored: str) -> bool:
        if self.mode == "plaintext":
            return hmac.compare_digest(password.encode(), stored.encode())
        if self.mode == "sha256":
            return hmac.compare_digest(hashlib.sha256(password.encode()).hexdigest().encode(), stored.encode())
        if self.mode in ("bcrypt", "bcrypt-pepper"):
            secret = self._peppered(password) if self.mode == "bcrypt-pepper" else password.encode()
            try:
                return bcrypt.checkpw(secret, stored.encode())
            except ValueError:  # not a bcrypt string
                return False
        try:
            return _argon2.verify(stored, password)
        except argon2.exceptions.VerificationError:
            return False
        except argon2.exceptions.InvalidHashError:
            return False

    def _peppered(self, password: str) -> bytes:
        """HMAC-SHA-256(pepper, password) as hex: 64 characters, under bcrypt's 72-byte limit."""
        if not self._pepper:
            raise ApiError.internal("bcrypt-pepper needs a pepper from control")
        return hmac.new(self._pepper.encode(), password.encode(), hashlib.sha256).hexdigest().encode()


def _bcrypt(secret: bytes, cost: int) -> str:
    return bcrypt.hashpw(secret, bcrypt.gensalt(rounds=cost, prefix=b"2b")).decode()
