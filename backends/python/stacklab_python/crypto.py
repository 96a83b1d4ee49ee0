"""Encryption at rest for personal fields, and the blind index that keeps them searchable
(CONTRACT.md §12).

Each value is sealed with AES-256-GCM under the session's key (made and kept by control) with
a fresh random 96-bit nonce, stored as ``v1:`` + base64(nonce ‖ ciphertext ‖ tag), so the raw
row shows ciphertext and two equal emails do not look equal. Exact-match search and uniqueness
use a blind index: HMAC-SHA-256 of the normalized value under a key derived from the session
key (a separate key, so the index cannot be turned into the cipher key).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import ApiError

PREFIX = "v1:"
_INDEX_LABEL = b"stacklab blind index v1"


class FieldCrypto:
    __slots__ = ("_cipher", "_index_key")

    def __init__(self, key_b64: str):
        try:
            raw = base64.b64decode(key_b64, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError.internal("the session's encryption key is not base64") from None
        if len(raw) != 32:
            raise ApiError.internal("the session's encryption key is not 32 bytes")
        self._cipher = AESGCM(raw)
        self._index_key = hmac.new(raw, _INDEX_LABEL, hashlib.sha256).digest()

    def __repr__(self) -> str:
        return "FieldCrypto([redacted])"

    def seal(self, plain: str) -> str:
        nonce = os.urandom(12)
        sealed = self._cipher.encrypt(nonce, plain.encode(), None)
        return PREFIX + base64.b64encode(nonce + sealed).decode()

    def open(self, stored: str) -> str:
        not_ciphertext = ApiError.internal("a stored value is not ciphertext")
        if not stored.startswith(PREFIX):
            raise not_ciphertext
        try:
            raw = base64.b64decode(stored[len(PREFIX):], validate=True)
        except (binascii.Error, ValueError):
            raise not_ciphertext from None
        if len(raw) <= 12:
            raise not_ciphertext
        try:
            plain = self._cipher.decrypt(raw[:12], raw[12:], None)
        except InvalidTag:
            raise ApiError.internal("a stored value does not decrypt under this session's key") from None
        try:
            return plain.decode()
        except UnicodeDecodeError:
            raise ApiError.internal("decrypted value is not UTF-8") from None

    def index(self, normalized: str) -> str:
        """The blind index of a normalized value, lowercase hex."""
        return hmac.new(self._index_key, normalized.encode(), hashlib.sha256).hexdigest()
