'use strict';
// Password storage, five ways, from "never do this" to "do this" (CONTRACT.md §11).
// stored_password shows exactly what the database holds: plaintext as typed; sha256 unsalted
// hex; bcrypt `$2b$CC$…`; bcrypt-pepper, bcrypt of hex(HMAC-SHA-256(pepper, password)); argon2id
// as the PHC string with the RustCrypto defaults (m=19456, t=2, p=1). bcrypt and argon2id run
// in the native addon on libuv's thread pool, never on the event loop; every hash and
// verification passes the instance's hashing gate (guard.js).

const crypto = require('node:crypto');
const { ApiError } = require('./errors');
const addon = require('./addon');

const MODES = ['plaintext', 'sha256', 'bcrypt', 'bcrypt-pepper', 'argon2id'];

function constEq(a, b) {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  // timingSafeEqual needs equal lengths; comparing y with itself keeps the time independent of x.
  return x.length === y.length ? crypto.timingSafeEqual(x, y) : (crypto.timingSafeEqual(y, y), false);
}

const sha256Hex = (s) => crypto.createHash('sha256').update(s, 'utf8').digest('hex');

class Hasher {
  #pepper;

  constructor(mode, bcryptCost, pepper, guards) {
    if (!MODES.includes(mode)) throw ApiError.internal(`unknown password mode ${mode}`);
    this.mode = mode;
    this.bcryptCost = bcryptCost;
    this.#pepper = pepper;
    this.guards = guards;
  }

  hash(password) { return this.guards.hash(() => this.#hash(password)); }

  verify(password, stored) { return this.guards.hash(() => this.#verify(password, stored)); }

  #peppered(password) {
    if (!this.#pepper) throw ApiError.internal('bcrypt-pepper needs a pepper from control');
    return Buffer.from(crypto.createHmac('sha256', this.#pepper).update(password, 'utf8').digest('hex'));
  }

  async #hash(password) {
    switch (this.mode) {
      case 'plaintext': return password;
      case 'sha256': return sha256Hex(password);
      case 'bcrypt': return addon.bcryptHash(Buffer.from(password), this.bcryptCost, crypto.randomBytes(16));
      case 'bcrypt-pepper': return addon.bcryptHash(this.#peppered(password), this.bcryptCost, crypto.randomBytes(16));
      default: return addon.argon2idHash(Buffer.from(password), crypto.randomBytes(16));
    }
  }

  async #verify(password, stored) {
    switch (this.mode) {
      case 'plaintext': return constEq(password, stored);
      case 'sha256': return constEq(sha256Hex(password), stored);
      case 'bcrypt':
        // bcrypt stops at a NUL; a password holding one was never stored.
        return !password.includes('\0') && addon.bcryptVerify(Buffer.from(password), stored);
      case 'bcrypt-pepper': return addon.bcryptVerify(this.#peppered(password), stored);
      default: return addon.argon2idVerify(Buffer.from(password), stored);
    }
  }
}

module.exports = { Hasher, MODES };
