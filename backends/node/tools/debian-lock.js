'use strict';
// Writes package-lock.json from the modules setup.sh unpacked (Debian's node-* packages): the
// versions this runtime is tested with, laid out as npm would place them, so that `npm ci` on a
// machine with an npm registry installs the same tree. No registry is reached here, so the
// lock has no `integrity` fields; npm fills them in on the first `npm install`.
//
//   bin/env.sh's NODE_PATH, then: node tools/debian-lock.js > package-lock.json

const fs = require('node:fs');
const path = require('node:path');
const Module = require('node:module');

const root = path.resolve(__dirname, '..');
const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
const searchPaths = (process.env.NODE_PATH || '').split(':').filter(Boolean);

// The folder of `name` as Node resolves it from `from` (a package folder), or null.
function resolve(name, from) {
  const paths = [...Module._nodeModulePaths(from), ...searchPaths];
  for (const p of paths) {
    const dir = path.join(p, name);
    if (fs.existsSync(path.join(dir, 'package.json'))) return dir;
  }
  return null;
}

// Packages npm installs that Debian folds into others or into Node itself, with the version
// npm resolves their range to and their own dependencies.
const NOT_IN_DEBIAN = {
  buffer: { version: '5.7.1', license: 'MIT', dependencies: { 'base64-js': '^1.3.1', ieee754: '^1.1.13' } },
  'node-addon-api': { version: '4.3.0', license: 'MIT' },
  'base64-js': { version: '1.5.1', license: 'MIT' },
  ieee754: { version: '1.2.1', license: 'BSD-3-Clause' },
};

const packages = { '': { name: pkg.name, version: pkg.version, hasInstallScript: true, license: pkg.license, dependencies: pkg.dependencies, engines: pkg.engines } };
const placed = new Map(); // name -> version at the top level
const seen = new Set();

function place(name, dir, parentKey) {
  const meta = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'));
  const version = meta.version;
  let key = `node_modules/${name}`;
  if (placed.has(name) && placed.get(name) !== version) key = `${parentKey}/node_modules/${name}`;
  else placed.set(name, version);
  if (packages[key]) return;
  const entry = { version, resolved: `https://registry.npmjs.org/${name}/-/${name.split('/').pop()}-${version}.tgz` };
  if (meta.license) entry.license = typeof meta.license === 'string' ? meta.license : meta.license.type;
  const deps = meta.dependencies || {};
  if (Object.keys(deps).length) entry.dependencies = deps;
  if (meta.engines) entry.engines = meta.engines;
  packages[key] = entry;
  if (seen.has(dir)) return;
  seen.add(dir);
  for (const dep of Object.keys(deps)) {
    const d = resolve(dep, dir);
    if (d) place(dep, d, key);
    else if (NOT_IN_DEBIAN[dep]) placeKnown(dep, key);
    else if (!(meta.optionalDependencies || {})[dep]) process.stderr.write(`debian-lock: ${name} needs ${dep}, which Debian does not ship\n`);
  }
}

function placeKnown(name, parentKey) {
  const known = NOT_IN_DEBIAN[name];
  const key = placed.has(name) && placed.get(name) !== known.version ? `${parentKey}/node_modules/${name}` : `node_modules/${name}`;
  placed.set(name, known.version);
  if (packages[key]) return;
  packages[key] = { version: known.version, resolved: `https://registry.npmjs.org/${name}/-/${name}-${known.version}.tgz`, license: known.license, ...(known.dependencies ? { dependencies: known.dependencies } : {}) };
  for (const dep of Object.keys(known.dependencies || {})) {
    const d = resolve(dep, root);
    if (d) place(dep, d, key);
    else if (NOT_IN_DEBIAN[dep]) placeKnown(dep, key);
    else process.stderr.write(`debian-lock: ${name} needs ${dep}, which Debian does not ship\n`);
  }
}

for (const name of Object.keys(pkg.dependencies)) {
  const dir = resolve(name, root);
  if (!dir) throw new Error(`${name} is not among the unpacked modules`);
  place(name, dir, '');
}
const sorted = Object.fromEntries(Object.entries(packages).sort(([a], [b]) => (a === '' ? -1 : b === '' ? 1 : a < b ? -1 : 1)));
process.stdout.write(`${JSON.stringify({ name: pkg.name, version: pkg.version, lockfileVersion: 3, requires: true, packages: sorted }, null, 2)}\n`);
