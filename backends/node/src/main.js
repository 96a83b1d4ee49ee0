'use strict';
// One instance of the Node runtime (CONTRACT.md §1): arguments, the credential on stdin, the
// HTTP server, shutdown. One process, one event loop (never a cluster of workers: a session's
// in-process cache must be one per instance). The first stdout line says where it listens;
// stdin reaching EOF (control went away), SIGTERM or SIGINT stop it: the listener closes,
// requests in flight get up to DRAIN_MS to finish, the sessions' connections close, exit 0.

const http = require('node:http');

const DRAIN_MS = 10000;
const MAX_CONNECTIONS = 1024;
// Longer than any proxy's idle upstream timeout, so the proxy closes first and never reuses
// a connection this side is closing.
const KEEP_ALIVE_MS = 75000;

function parseArgs(argv) {
  const out = { tokenStdin: false, check: false };
  const takes = { '--addr': 'addr', '--control-url': 'controlUrl', '--config': 'config' };
  for (let i = 0; i < argv.length; i++) {
    let a = argv[i];
    let value = null;
    const eq = a.indexOf('=');
    if (a.startsWith('--') && eq > 0) { value = a.slice(eq + 1); a = a.slice(0, eq); }
    if (a === '--token-stdin') out.tokenStdin = true;
    else if (a === '--check') out.check = true;
    else if (takes[a]) {
      if (value === null) {
        if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
        value = argv[++i];
      }
      out[takes[a]] = value;
    } else if (a === '--help' || a === '-h') {
      out.help = true;
    } else {
      throw new Error(`unknown argument \`${argv[i]}\``);
    }
  }
  return out;
}

function check() {
  try {
    for (const m of ['express', 'pg', 'mysql', 'redis', 'mongodb', 'graphql', 'sqlite3']) require(m);
    require('./addon');
    require('./app');
    require('./gql');
  } catch (e) {
    const what = (/Cannot find module '([^']+)'/.exec(e.message) || [])[1] || e.message.split('\n')[0];
    console.error(`the Node runtime's module ${what} is missing or does not load; run backends/node/setup.sh`);
    return 1;
  }
  console.log('ok');
  return 0;
}

// The first line of stdin; then `onEof` when stdin closes.
function readCredential(onEof) {
  return new Promise((resolve) => {
    let buf = '';
    let done = false;
    process.stdin.setEncoding('utf8');
    process.stdin.on('data', (chunk) => {
      if (done) return; // the rest is read and dropped
      buf += chunk;
      const nl = buf.indexOf('\n');
      if (nl >= 0) { done = true; resolve(buf.slice(0, nl).trim()); buf = ''; }
    });
    process.stdin.on('end', () => {
      if (!done) { done = true; resolve(buf.trim()); }
      onEof();
    });
    process.stdin.on('error', () => onEof());
  });
}

async function main(argv) {
  let args;
  try {
    args = parseArgs(argv);
  } catch (e) {
    console.error(`stacklab-node: ${e.message}`);
    return 2;
  }
  if (args.help) {
    console.log('usage: stacklab-node --addr HOST:PORT --control-url URL --token-stdin [--config FILE] | --check');
    return 0;
  }
  if (args.check) return check();

  const config = require('./config');
  let cfg;
  try {
    cfg = config.load(args.config);
    if (args.addr !== undefined) {
      const addr = config.parseAddr(args.addr);
      if (!addr) throw new config.ConfigError([['--addr', `\`${args.addr}\` is not \`host:port\``]]);
      cfg.addr = addr;
    }
  } catch (e) {
    if (!(e instanceof config.ConfigError)) throw e;
    for (const [key, message] of e.problems) console.error(`${key}: ${message}`);
    return 1;
  }
  const controlUrl = args.controlUrl || cfg.controlUrl;
  if (!args.tokenStdin) {
    console.error('stacklab-node takes its credential only from stdin: pass --token-stdin');
    return 1;
  }
  let stop = null;
  let eof = false;
  let signalled = null;
  // Handlers before the first line: a parent may signal as soon as it has read it.
  process.on('SIGTERM', () => (stop ? stop('SIGTERM') : (signalled = 'SIGTERM')));
  process.on('SIGINT', () => (stop ? stop('SIGINT') : (signalled = 'SIGINT')));
  const credential = await readCredential(() => { eof = true; if (stop) stop('stdin closed'); });
  if (!credential) {
    console.error('--token-stdin: no token on the first line of stdin');
    return 1;
  }

  const { Guards } = require('./guard');
  const { Sessions, ControlStacks } = require('./sessions');
  const { createApp, Runtime } = require('./app');
  const { ApiError } = require('./errors');
  const { sendJson } = require('./http');

  // The drivers load now, before the first connection: sqlite3's loader (node-pre-gyp, via
  // detect-libc) calls process.report.getReport(), which on Node 18 resolves the address of
  // every open socket by reverse DNS, synchronously on the event loop — seconds per socket
  // where DNS does not answer (an internal Docker network), and no request is served meanwhile.
  if (process.report && 'excludeNetwork' in process.report) process.report.excludeNetwork = true;
  for (const m of ['sqlite3', 'pg', 'mysql', 'redis', 'mongodb']) require(m);

  const guards = new Guards(cfg.limits);
  const sessions = new Sessions(new ControlStacks(controlUrl, credential), cfg, guards);
  const rt = new Runtime(cfg, sessions, guards, credential);
  const app = createApp(rt);
  const server = http.createServer({ keepAliveTimeout: KEEP_ALIVE_MS, headersTimeout: KEEP_ALIVE_MS + 5000 }, app);
  server.keepAliveTimeout = KEEP_ALIVE_MS;
  server.maxConnections = MAX_CONNECTIONS;
  let inFlight = 0;
  let drained = null;
  server.on('request', (req, res) => {
    inFlight++;
    res.on('close', () => {
      inFlight--;
      if (inFlight === 0 && drained) drained();
    });
  });
  // A request Node's parser refuses: the JSON error body too.
  server.on('clientError', (err, socket) => {
    if (!socket.writable || socket.bytesWritten > 0) { socket.destroy(); return; }
    const e = err.code === 'HPE_HEADER_OVERFLOW'
      ? new ApiError(431, 'bad_request', 'the request headers are too large')
      : ApiError.badRequest('the request could not be read; send it again');
    const body = JSON.stringify(e.body());
    socket.end(`HTTP/1.1 ${e.status} ${http.STATUS_CODES[e.status]}\r\nContent-Type: application/json\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n` +
      `Server-Timing: backend;dur=0.000, cache;dur=0.000, db;dur=0.000\r\n\r\n${body}`);
  });
  void sendJson;

  try {
    await new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: cfg.addr.host, port: cfg.addr.port }, resolve);
    });
  } catch (e) {
    console.error(`cannot bind the backend on ${cfg.addr.host}:${cfg.addr.port}: ${e.code || e.message}`);
    return 1;
  }
  const { address, port } = server.address();

  const interval = Math.min(30000, Math.max(50, cfg.sessionIdleMs / 4));
  const sweeper = setInterval(() => { sessions.sweep().catch((e) => console.error('session sweep failed:', e)); }, interval);

  return new Promise((resolve) => {
    let stopping = false;
    stop = async (why) => {
      if (stopping) return;
      stopping = true;
      console.error(`${why}: stopping`);
      rt.stopping = true;
      clearInterval(sweeper);
      server.close();
      server.closeIdleConnections();
      if (inFlight > 0) {
        const left = await Promise.race([
          new Promise((r) => { drained = () => r(false); }),
          new Promise((r) => setTimeout(() => r(true), DRAIN_MS)),
        ]);
        if (left) console.error(`requests still running after ${DRAIN_MS / 1000} s: stopping anyway`);
      }
      server.closeAllConnections();
      await sessions.closeAll().catch(() => {});
      resolve(0);
    };
    process.stdout.write(`stacklab backend on http://${address.includes(':') ? `[${address}]` : address}:${port}\n`);
    if (signalled) stop(signalled);
    else if (eof) stop('stdin closed');
  });
}

main(process.argv.slice(2)).then(
  (code) => {
    process.stdout.write('', () => process.exit(code));
  },
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
