'use strict';
// The [backend] reader over the project's real config files (every section but [backend]
// skipped whole) and over the forms a config may write.

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { readTable, TomlError } = require('../src/toml');
const { fromSection, ConfigError } = require('../src/config');

const CONFIG = path.resolve(__dirname, '..', '..', '..', 'config');

test("the project's config files read, and their [backend] sections validate", () => {
  for (const f of fs.readdirSync(CONFIG).filter((n) => n.endsWith('.toml'))) {
    const section = readTable(fs.readFileSync(path.join(CONFIG, f), 'utf8'), 'backend');
    assert.doesNotThrow(() => fromSection(section), f);
  }
});

test('values: integers with underscores, strings with escapes, multi-line values elsewhere', () => {
  const text = `
top = 1
[other]
list = [
  "[backend]",  # not a header
  { a = 1 },
]
s = """
[backend]
x = 1
"""
[backend]
max_sessions = 1_000 # a comment
addr = "127.0.0.1:\\u0030"
control_url = 'http://h:1'
[backend.nested]
y = 2
`;
  assert.deepEqual(readTable(text, 'backend'), { max_sessions: 1000, addr: '127.0.0.1:0', control_url: 'http://h:1' });
  assert.throws(() => readTable('[backend]\na = 1\na = 2\n', 'backend'), TomlError);
  assert.throws(() => fromSection(readTable('[backend]\nbcrypt_cost = 1.5\n', 'backend')), ConfigError);
});
