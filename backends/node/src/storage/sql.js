'use strict';
// SQLite (node-sqlite3), PostgreSQL (pg) and MySQL/MariaDB (mysql): one adapter, three
// dialects. The differences are in one place each — the driver, the placeholder (`?` against
// `$n`), the DDL (CONTRACT.md §10 verbatim, so a table another runtime made is this table), how
// an insert returns its id, how a unique violation names its index, and where the catalog
// keeps a table's size. Every query is shared, so the engines cannot drift.

const { StoreError, Conflict, describe } = require('../errors');
const { ENGINE_NAMES, likePattern } = require('./index');

const COLUMNS = 'id, username, email, full_name, password, created_at, updated_at';
const CONNECT_TIMEOUT_MS = 5000;
const IDLE_MS = 60000;

const CONSTRAINTS = `CONSTRAINT users_username_key UNIQUE (username_key),
    CONSTRAINT users_email_key UNIQUE (email_key))`;
const DDL = {
  sqlite: `CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    username TEXT NOT NULL, username_key TEXT NOT NULL,
    email TEXT NOT NULL, email_key TEXT NOT NULL,
    full_name TEXT NOT NULL DEFAULT '', password TEXT NOT NULL,
    created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL,
    ${CONSTRAINTS}`,
  postgres: `CREATE TABLE IF NOT EXISTS users (
    id BIGSERIAL PRIMARY KEY,
    username TEXT NOT NULL, username_key TEXT NOT NULL,
    email TEXT NOT NULL, email_key TEXT NOT NULL,
    full_name TEXT NOT NULL DEFAULT '', password TEXT NOT NULL,
    created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL,
    ${CONSTRAINTS}`,
  mysql: `CREATE TABLE IF NOT EXISTS users (
    id BIGINT AUTO_INCREMENT PRIMARY KEY,
    username VARCHAR(64) NOT NULL, username_key VARCHAR(64) NOT NULL,
    email VARCHAR(1024) NOT NULL, email_key VARCHAR(255) NOT NULL,
    full_name VARCHAR(1024) NOT NULL DEFAULT '', password VARCHAR(1024) NOT NULL,
    created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL,
    ${CONSTRAINTS}
 CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci`,
};

const SIZE_SQL = {
  sqlite: 'SELECT page_count * page_size AS n FROM pragma_page_count(), pragma_page_size()',
  postgres: "SELECT pg_total_relation_size('users') AS n",
  mysql: 'SELECT CAST(COALESCE(SUM(data_length + index_length), 0) AS SIGNED) AS n ' +
    "FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = 'users'",
};

// --- the drivers: run(sql, params) -> {rows, changes, lastId} -----------------------------

function sqliteDriver(url) {
  const sqlite3 = require('sqlite3');
  const rest = url.startsWith('sqlite://') ? url.slice('sqlite://'.length) : url.replace(/^sqlite:/, '');
  const q = rest.indexOf('?');
  const file = decodeURIComponent(q < 0 ? rest : rest.slice(0, q));
  const mode = new URLSearchParams(q < 0 ? '' : rest.slice(q + 1)).get('mode') || 'rw';
  const flags = { ro: sqlite3.OPEN_READONLY, rw: sqlite3.OPEN_READWRITE, rwc: sqlite3.OPEN_READWRITE | sqlite3.OPEN_CREATE }[mode];
  if (flags === undefined) throw new StoreError('the URL\'s mode is not ro, rw or rwc');
  let db = null;
  const statements = new Map();
  const open = () => new Promise((resolve, reject) => {
    const d = new sqlite3.Database(file, flags, (e) => (e ? reject(e) : resolve(d)));
  });
  const exec = (d, sql) => new Promise((resolve, reject) => d.exec(sql, (e) => (e ? reject(e) : resolve())));
  return {
    // One connection per session: node-sqlite3 runs its statements one at a time on libuv's
    // pool, and SQLite writes one at a time anyway.
    async connect() {
      db = await open();
      db.configure('busyTimeout', 5000);
      await exec(db, 'PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000');
    },
    run(sql, params) {
      return new Promise((resolve, reject) => {
        if (/^\s*CREATE/i.test(sql)) {
          db.run(sql, params, (e) => (e ? reject(e) : resolve({ rows: [] })));
          return;
        }
        // Each statement is prepared once per connection (the queries are a fixed few).
        let stmt = statements.get(sql);
        if (!stmt) {
          stmt = db.prepare(sql);
          statements.set(sql, stmt);
        }
        if (/^\s*(SELECT|PRAGMA)/i.test(sql)) {
          stmt.all(params, (e, rows) => (e ? reject(e) : resolve({ rows })));
        } else {
          stmt.run(params, function done(e) {
            if (e) reject(e);
            else resolve({ rows: [], changes: this.changes, lastId: this.lastID });
          });
        }
      });
    },
    close() {
      return new Promise((resolve) => {
        if (!db) { resolve(); return; }
        for (const st of statements.values()) st.finalize();
        statements.clear();
        db.close(() => resolve());
      });
    },
    uniqueIndex(e) {
      // "SQLITE_CONSTRAINT: UNIQUE constraint failed: users.email_key"
      return e && e.code === 'SQLITE_CONSTRAINT' && /UNIQUE/.test(e.message) ? e.message : null;
    },
  };
}

function postgresDriver(url, max) {
  const pg = require('pg');
  const pool = new pg.Pool({ connectionString: url, max, connectionTimeoutMillis: CONNECT_TIMEOUT_MS, idleTimeoutMillis: IDLE_MS });
  pool.on('error', () => {}); // an idle connection that died is dropped by the pool
  const names = new Map();
  return {
    async connect() { await pool.query('SELECT 1'); },
    async run(sql, params) {
      let n = 0;
      const text = sql.replace(/\?/g, () => `$${++n}`);
      // Named, so each connection parses and plans a statement once (the queries are a fixed few).
      let name = names.get(text);
      if (!name) {
        name = `s${names.size + 1}`;
        names.set(text, name);
      }
      const r = await pool.query(/^\s*CREATE/i.test(text) ? { text, values: params } : { name, text, values: params });
      return { rows: r.rows, changes: r.rowCount };
    },
    close() { return pool.end().catch(() => {}); },
    uniqueIndex(e) { return e && e.code === '23505' ? e.constraint || '' : null; },
  };
}

function mysqlDriver(url, max) {
  const mysql = require('mysql');
  let u;
  try {
    u = new URL(url);
  } catch {
    throw new StoreError('the connection string is not valid');
  }
  if (!['mysql:', 'mariadb:'].includes(u.protocol) || !u.hostname) throw new StoreError('the connection string is not valid');
  const pool = mysql.createPool({
    host: u.hostname.replace(/^\[|\]$/g, ''),
    port: Number(u.port || 3306),
    user: decodeURIComponent(u.username),
    password: decodeURIComponent(u.password),
    database: decodeURIComponent(u.pathname.replace(/^\//, '')) || undefined,
    charset: 'UTF8MB4_UNICODE_CI',
    connectionLimit: max,
    connectTimeout: CONNECT_TIMEOUT_MS,
    acquireTimeout: CONNECT_TIMEOUT_MS,
    supportBigNumbers: true,
    bigNumberStrings: false,
  });
  pool.on('error', () => {});
  const query = (sql, params) => new Promise((resolve, reject) => {
    pool.query({ sql, values: params, timeout: 30000 }, (e, r) => (e ? reject(e) : resolve(r)));
  });
  return {
    async connect() { await query('SELECT 1', []); },
    async run(sql, params) {
      const r = await query(sql, params);
      if (Array.isArray(r)) return { rows: r };
      return { rows: [], changes: r.affectedRows, lastId: r.insertId };
    },
    close() { return new Promise((resolve) => pool.end(() => resolve())); },
    uniqueIndex(e) {
      if (!e || e.errno !== 1062) return null;
      // "Duplicate entry 'x' for key 'users_email_key'": the index name alone decides.
      const m = /for key '([^']*)'$/.exec(e.sqlMessage || '');
      return m ? m[1] : '';
    },
  };
}

const DRIVERS = { sqlite: sqliteDriver, postgres: postgresDriver, mysql: mysqlDriver };

class SqlStore {
  constructor(engine, driver) {
    this.engine = engine;
    this.name = ENGINE_NAMES[engine];
    this.driver = driver;
  }

  static async open(engine, url, maxConnections) {
    let driver;
    try {
      driver = DRIVERS[engine](url, maxConnections);
    } catch (e) {
      throw new StoreError(`cannot connect to ${ENGINE_NAMES[engine]}: ${e instanceof StoreError ? e.message : describe(e)}`);
    }
    const store = new SqlStore(engine, driver);
    try {
      await driver.connect();
      await store.init();
    } catch (e) {
      await driver.close();
      throw new StoreError(`cannot connect to ${store.name}: ${e instanceof StoreError ? e.message : describe(e)}`);
    }
    return store;
  }

  // Two instances opening a new session's database at once both run this, and PostgreSQL's
  // CREATE TABLE IF NOT EXISTS can fail on its catalog then: tried again, the table exists.
  async init() {
    for (let attempt = 0; ; attempt++) {
      try {
        await this.driver.run(DDL[this.engine], []);
        return;
      } catch (e) {
        if (attempt === 3) throw e;
        await new Promise((r) => setTimeout(r, 20 * (attempt + 1)));
      }
    }
  }

  async run(what, sql, params = []) {
    try {
      return await this.driver.run(sql, params);
    } catch (e) {
      const index = this.driver.uniqueIndex(e);
      if (index !== null) throw new Conflict(index.includes('email_key') ? 'email' : 'username');
      throw new StoreError(`${this.name} could not ${what}: ${describe(e)}`);
    }
  }

  static row(r) {
    return {
      id: Number(r.id), username: r.username, email: r.email, full_name: r.full_name,
      password: r.password, created_at: Number(r.created_at), updated_at: Number(r.updated_at),
    };
  }

  async insert(u) {
    const sql = 'INSERT INTO users (username, username_key, email, email_key, full_name, password, ' +
      'created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)';
    const params = [u.username, u.username_key, u.email, u.email_key, u.full_name, u.password, u.now, u.now];
    if (this.engine === 'postgres') {
      const r = await this.run('insert', `${sql} RETURNING id`, params);
      return Number(r.rows[0].id);
    }
    const r = await this.run('insert', sql, params);
    if (!r.lastId) throw new StoreError(`${this.name} returned no id for the insert`);
    return Number(r.lastId);
  }

  async get(id) {
    const r = await this.run('read', `SELECT ${COLUMNS} FROM users WHERE id = ?`, [id]);
    return r.rows.length ? SqlStore.row(r.rows[0]) : null;
  }

  async search(s, limit, offset) {
    let where = '';
    let binds = [];
    if (s.lower !== null) {
      const pattern = likePattern(s.lower);
      if (s.emailIndex === null) {
        where = " WHERE username_key LIKE ? ESCAPE '!' OR email_key LIKE ? ESCAPE '!'";
        binds = [pattern, pattern];
      } else {
        where = " WHERE username_key LIKE ? ESCAPE '!' OR email_key = ?";
        binds = [pattern, s.emailIndex];
      }
    }
    const rows = await this.run('search', `SELECT ${COLUMNS} FROM users${where} ORDER BY id LIMIT ? OFFSET ?`, [...binds, limit, offset]);
    const total = await this.run('count', `SELECT COUNT(*) AS n FROM users${where}`, binds);
    return { rows: rows.rows.map(SqlStore.row), total: Number(total.rows[0].n) };
  }

  async update(id, c) {
    const sets = [];
    const binds = [];
    const set = (col, v) => { if (v !== undefined) { sets.push(`${col} = ?`); binds.push(v); } };
    if (c.username) { set('username', c.username[0]); set('username_key', c.username[1]); }
    if (c.email) { set('email', c.email[0]); set('email_key', c.email[1]); }
    set('full_name', c.full_name);
    set('password', c.password);
    sets.push('updated_at = ?');
    binds.push(c.now, id);
    const r = await this.run('update', `UPDATE users SET ${sets.join(', ')} WHERE id = ?`, binds);
    // MySQL counts only changed rows; "missing" and "unchanged" are told apart by reading.
    if (r.changes === 0 && this.engine !== 'mysql') return null;
    return this.get(id);
  }

  async delete(id) {
    const r = await this.run('delete', 'DELETE FROM users WHERE id = ?', [id]);
    return r.changes > 0;
  }

  async stats() {
    const size = await this.run('read its size', SIZE_SQL[this.engine]);
    const rows = await this.run('count rows', 'SELECT COUNT(*) AS n FROM users');
    return { engine: this.engine, size_bytes: Number(size.rows[0].n || 0), rows: Number(rows.rows[0].n) };
  }

  close() { return this.driver.close(); }
}

module.exports = { SqlStore };
