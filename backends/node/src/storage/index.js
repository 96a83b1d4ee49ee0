'use strict';
// Database adapters behind one interface (CONTRACT.md §10). The service hands them values
// already in stored form (hashes, ciphertext, lower-cased or blind-indexed keys); an adapter
// only stores and finds rows, with parameterized queries, uniqueness left to the database's
// own unique indexes (a violation is a Conflict naming the field).
//
//   insert(newUser) -> id        get(id) -> row | null        search(s, limit, offset) -> {rows, total}
//   update(id, changes) -> row | null     delete(id) -> bool   stats() -> {engine, size_bytes, rows}
//   close()
//
// A row is {id, username, email, full_name, password, created_at, updated_at}.

const ENGINE_NAMES = { sqlite: 'SQLite', postgres: 'PostgreSQL', mysql: 'MySQL', mongodb: 'MongoDB' };

async function connect(spec, maxConnections) {
  if (spec.engine === 'mongodb') return require('./mongo').MongoStore.open(spec.url, spec.database, maxConnections);
  return require('./sql').SqlStore.open(spec.engine, spec.url, maxConnections);
}

// LIKE's wildcards escaped with `!` (the same in all three SQL dialects), wrapped in `%`.
function likePattern(text) {
  return `%${text.replace(/[%_!]/g, (c) => `!${c}`)}%`;
}

// Regular-expression syntax escaped, so search text matches literally (MongoDB).
function regexLiteral(text) {
  return text.replace(/[\\^$.|?*+()[\]{}\-/]/g, (c) => `\\${c}`);
}

module.exports = { connect, likePattern, regexLiteral, ENGINE_NAMES };
