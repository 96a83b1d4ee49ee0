'use strict';
// MongoDB through the official driver (Debian packages 3.6), in the format of CONTRACT.md §10:
// one document per user with an Int64 `_id` from a counter document (so ids look the same on
// every engine), unique indexes on username_key and email_key, search by an escaped $regex.
// Filters are built from typed values here, never from the client's JSON. Numbers are written
// as Int64 (Long) explicitly, and read back whatever width a server (or stand-in) returns.

const { StoreError, Conflict, describe } = require('../errors');
const { regexLiteral } = require('./index');

const TIMEOUT_MS = 5000;

const num = (v) => {
  if (v === null || v === undefined) return 0;
  if (typeof v === 'number') return Math.trunc(v);
  if (typeof v.toNumber === 'function') return v.toNumber();
  return Number(v) || 0;
};
const str = (v) => (typeof v === 'string' ? v : '');

function user(d) {
  return {
    id: num(d._id), username: str(d.username), email: str(d.email), full_name: str(d.full_name),
    password: str(d.password), created_at: num(d.created_at), updated_at: num(d.updated_at),
  };
}

function conflict(e) {
  const pattern = e.keyPattern || (e.errorResponse && e.errorResponse.keyPattern);
  if (pattern && Object.keys(pattern).length) return new Conflict('email_key' in pattern ? 'email' : 'username');
  const m = /index:? '?([\w.$-]+)/.exec(e.errmsg || e.message || '');
  return new Conflict((m ? m[1] : String(e.message)).includes('email_key') ? 'email' : 'username');
}

const unavailable = (what, e) => new StoreError(`MongoDB could not ${what}: ${describe(e)}`);
const isDuplicate = (e) => e && (e.code === 11000 || e.code === 11001);

class MongoStore {
  constructor(mongodb, client, db) {
    this.engine = 'mongodb';
    this.Long = mongodb.Long;
    this.client = client;
    this.db = db;
    this.users = db.collection('users');
    this.counters = db.collection('counters');
  }

  static async open(url, database, maxConnections) {
    const mongodb = require('mongodb');
    let client;
    try {
      client = await mongodb.MongoClient.connect(url, {
        useUnifiedTopology: true, useNewUrlParser: true, poolSize: Math.max(1, maxConnections),
        serverSelectionTimeoutMS: TIMEOUT_MS, connectTimeoutMS: TIMEOUT_MS, socketTimeoutMS: 30000,
      });
    } catch (e) {
      throw new StoreError(`cannot reach MongoDB: ${/Invalid connection string|URI/i.test(e.message) ? 'the connection string is not valid' : describe(e)}`);
    }
    try {
      const m = /^mongodb(?:\+srv)?:\/\/[^/?]*\/([^?]*)/.exec(url);
      const fromUrl = m ? decodeURIComponent(m[1]) : '';
      const store = new MongoStore(mongodb, client, client.db(database || fromUrl || 'stacklab'));
      await store.db.command({ ping: 1 });
      for (const key of ['username_key', 'email_key']) {
        await store.users.createIndex({ [key]: 1 }, { unique: true, name: `users_${key}` });
      }
      return store;
    } catch (e) {
      await client.close().catch(() => {});
      throw unavailable('answer a ping and create its indexes', e);
    }
  }

  long(n) { return this.Long.fromNumber(n); }

  filter(s) {
    if (s.lower === null) return {};
    const re = regexLiteral(s.lower);
    const email = s.emailIndex === null ? { $regex: re } : s.emailIndex;
    return { $or: [{ username_key: { $regex: re } }, { email_key: email }] };
  }

  async insert(u) {
    let counter;
    try {
      counter = await this.counters.findOneAndUpdate(
        { _id: 'users' }, { $inc: { seq: this.long(1) } }, { upsert: true, returnOriginal: false, returnDocument: 'after' });
    } catch (e) {
      throw unavailable('number the new user', e);
    }
    if (!counter || !counter.value) throw new StoreError('MongoDB returned no counter');
    const id = num(counter.value.seq);
    try {
      await this.users.insertOne({
        _id: this.long(id),
        username: u.username, username_key: u.username_key,
        email: u.email, email_key: u.email_key,
        full_name: u.full_name, password: u.password,
        created_at: this.long(u.now), updated_at: this.long(u.now),
      });
    } catch (e) {
      if (isDuplicate(e)) throw conflict(e);
      throw unavailable('insert', e);
    }
    return id;
  }

  async get(id) {
    try {
      const d = await this.users.findOne({ _id: this.long(id) });
      return d ? user(d) : null;
    } catch (e) {
      throw unavailable('read', e);
    }
  }

  async search(s, limit, offset) {
    const f = this.filter(s);
    try {
      const docs = await this.users.find(f).sort({ _id: 1 }).skip(Math.max(0, offset)).limit(limit).toArray();
      const total = await this.users.countDocuments(f);
      return { rows: docs.map(user), total: num(total) };
    } catch (e) {
      throw unavailable('search', e);
    }
  }

  async update(id, c) {
    const s = { updated_at: this.long(c.now) };
    if (c.username) [s.username, s.username_key] = c.username;
    if (c.email) [s.email, s.email_key] = c.email;
    if (c.full_name !== undefined) s.full_name = c.full_name;
    if (c.password !== undefined) s.password = c.password;
    try {
      const r = await this.users.findOneAndUpdate({ _id: this.long(id) }, { $set: s }, { returnOriginal: false, returnDocument: 'after' });
      return r && r.value ? user(r.value) : null;
    } catch (e) {
      if (isDuplicate(e)) throw conflict(e);
      throw unavailable('update', e);
    }
  }

  async delete(id) {
    try {
      const r = await this.users.deleteOne({ _id: this.long(id) });
      return r.deletedCount > 0;
    } catch (e) {
      throw unavailable('delete', e);
    }
  }

  async stats() {
    try {
      const rows = await this.users.countDocuments({});
      const st = await this.db.command({ collStats: 'users' });
      return { engine: 'mongodb', size_bytes: num(st.size) + num(st.totalIndexSize), rows: num(rows) };
    } catch (e) {
      throw unavailable('read its size', e);
    }
  }

  close() { return this.client.close().catch(() => {}); }
}

module.exports = { MongoStore };
