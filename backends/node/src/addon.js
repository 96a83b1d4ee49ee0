'use strict';
// The native addon (native/passwords.c): bcrypt over libcrypt, argon2id over libargon2. Built
// by setup.sh into the cache (STACKLAB_NODE_ADDON, set by bin/stacklab-node), or by node-gyp
// into build/Release under `npm ci`.

const path = require('node:path');

const file = process.env.STACKLAB_NODE_ADDON || path.join(__dirname, '..', 'build', 'Release', 'passwords.node');
module.exports = require(file);
