'use strict';
// Bounds on the work one request can make an instance do (CONTRACT.md §9a): at most
// maxConcurrentHashes password hashes at once, one that cannot start within hashWaitMs
// refused with 503 busy (a FIFO queue bounded by the requests in flight and its wait by the
// deadline); one benchmark per session, at most maxConcurrentBenchmarks per instance. One
// Guards per instance; its counters are in GET /healthz.

const { ApiError } = require('./errors');

class Guards {
  constructor(limits) {
    this.maxHashes = limits.maxConcurrentHashes;
    this.hashWaitMs = limits.hashWaitMs;
    this.maxBenchmarks = limits.maxConcurrentBenchmarks;
    this.hashing = 0;
    this.waiting = []; // resolvers of hashes waiting for a turn, oldest first
    this.benchmarking = new Set();
    this.counts = { hashes: 0, hashesRefused: 0, graphqlRefused: 0, benchmarks: 0, refusedSession: 0, refusedBusy: 0 };
  }

  async turn() {
    if (this.hashing < this.maxHashes && this.waiting.length === 0) {
      this.hashing++;
      return;
    }
    await new Promise((resolve, reject) => {
      const waiter = { resolve };
      waiter.timer = setTimeout(() => {
        const i = this.waiting.indexOf(waiter);
        if (i >= 0) this.waiting.splice(i, 1);
        this.counts.hashesRefused++;
        reject(ApiError.busy(
          `this instance is hashing ${this.maxHashes} passwords already and none finished ` +
          `within ${this.hashWaitMs} ms; retry in a second`));
      }, this.hashWaitMs);
      this.waiting.push(waiter);
    });
  }

  release() {
    const next = this.waiting.shift();
    if (next) {
      clearTimeout(next.timer);
      next.resolve(); // the turn passes on: `hashing` stays as it is
    } else {
      this.hashing--;
    }
  }

  // Runs fn (a hash or a verification, returning a Promise) once a turn is free.
  async hash(fn) {
    await this.turn();
    this.counts.hashes++;
    try {
      return await fn();
    } finally {
      this.release();
    }
  }

  async benchmark(session, fn) {
    if (this.benchmarking.has(session)) {
      this.counts.refusedSession++;
      throw ApiError.benchmarkRunning();
    }
    if (this.benchmarking.size >= this.maxBenchmarks) {
      this.counts.refusedBusy++;
      throw ApiError.busy(`this instance runs ${this.maxBenchmarks} benchmarks already; retry when one has finished`);
    }
    this.benchmarking.add(session);
    this.counts.benchmarks++;
    try {
      return await fn();
    } finally {
      this.benchmarking.delete(session);
    }
  }

  graphqlRefused() { this.counts.graphqlRefused++; }

  snapshot() {
    const c = this.counts;
    return {
      hashing: { max: this.maxHashes, running: this.hashing, started: c.hashes, refused: c.hashesRefused },
      benchmarks: {
        max: this.maxBenchmarks, running: this.benchmarking.size, started: c.benchmarks,
        refused_session: c.refusedSession, refused_busy: c.refusedBusy,
      },
      graphql_hashes_refused: c.graphqlRefused,
    };
  }
}

module.exports = { Guards };
