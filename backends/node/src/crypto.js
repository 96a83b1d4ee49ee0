'use strict';
// Encryption at rest for personal fields and the blind index that keeps them searchable
// (CONTRACT.md §12): AES-256-GCM under the session's key with a fresh 96-bit nonce per value,
// stored as "v1:" + base64(nonce ‖ ciphertext ‖ tag); the index is HMAC-SHA-256 under a key
// derived from the session key, so the index cannot be turned into the cipher key.

const crypto = require('node:crypto');
const { ApiError } = require('./errors');

const PREFIX = 'v1:';
const INDEX_LABEL = 'stacklab blind index v1';
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

class FieldCrypto {
  #key;
  #indexKey;

  constructor(keyB64) {
    if (!BASE64.test(keyB64)) throw ApiError.internal("the session's encryption key is not base64");
    const raw = Buffer.from(keyB64, 'base64');
    if (raw.length !== 32) throw ApiError.internal("the session's encryption key is not 32 bytes");
    this.#key = raw;
    this.#indexKey = crypto.createHmac('sha256', raw).update(INDEX_LABEL).digest();
  }

  seal(plain) {
    const nonce = crypto.randomBytes(12);
    const c = crypto.createCipheriv('aes-256-gcm', this.#key, nonce);
    const body = Buffer.concat([c.update(plain, 'utf8'), c.final()]);
    return PREFIX + Buffer.concat([nonce, body, c.getAuthTag()]).toString('base64');
  }

  open(stored) {
    const notCiphertext = () => ApiError.internal('a stored value is not ciphertext');
    if (!stored.startsWith(PREFIX)) throw notCiphertext();
    const b64 = stored.slice(PREFIX.length);
    if (!BASE64.test(b64)) throw notCiphertext();
    const raw = Buffer.from(b64, 'base64');
    if (raw.length < 12 + 16) throw notCiphertext(); // a nonce and a tag at least
    const d = crypto.createDecipheriv('aes-256-gcm', this.#key, raw.subarray(0, 12));
    d.setAuthTag(raw.subarray(raw.length - 16));
    let plain;
    try {
      plain = Buffer.concat([d.update(raw.subarray(12, raw.length - 16)), d.final()]);
    } catch {
      throw ApiError.internal("a stored value does not decrypt under this session's key");
    }
    try {
      return new TextDecoder('utf-8', { fatal: true }).decode(plain);
    } catch {
      throw ApiError.internal('decrypted value is not UTF-8');
    }
  }

  index(normalized) {
    return crypto.createHmac('sha256', this.#indexKey).update(normalized, 'utf8').digest('hex');
  }
}

module.exports = { FieldCrypto };
