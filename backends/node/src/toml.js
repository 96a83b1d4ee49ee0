'use strict';
// Just enough TOML to read one table of a stacklab config file (the `[backend]` section,
// CONTRACT.md §2): `key = value` lines whose values are integers, strings or booleans.
// Other tables are skipped whole, their values only scanned far enough to find where they end
// (strings, arrays and inline tables may span lines). No TOML package is packaged for Node.

class TomlError extends Error {}

// Splits the text into top-level statements: [header] lines and key = value assignments,
// each with the table it belongs to.
function statements(text) {
  const out = [];
  let i = 0;
  let table = '';
  const n = text.length;
  const skipSpace = () => { while (i < n && (text[i] === ' ' || text[i] === '\t')) i++; };
  const skipComment = () => { if (text[i] === '#') while (i < n && text[i] !== '\n') i++; };
  // Reads one value's raw text, following nesting and strings across lines.
  const rawValue = () => {
    const start = i;
    let depth = 0;
    while (i < n) {
      const c = text[i];
      if (c === '"' || c === "'") {
        const triple = text.startsWith(c.repeat(3), i);
        const q = triple ? c.repeat(3) : c;
        i += q.length;
        while (i < n && !text.startsWith(q, i)) {
          if (c === '"' && text[i] === '\\') i++;
          if (!triple && text[i] === '\n') throw new TomlError('a string is not closed on its line');
          i++;
        }
        if (i >= n) throw new TomlError('a string is not closed');
        i += q.length;
        continue;
      }
      if (c === '[' || c === '{') depth++;
      else if (c === ']' || c === '}') depth--;
      else if (c === '#' && depth > 0) { while (i < n && text[i] !== '\n') i++; continue; }
      else if ((c === '\n' || c === '#') && depth <= 0) break;
      i++;
    }
    return text.slice(start, i).trim();
  };
  let line = 1;
  while (i < n) {
    skipSpace();
    skipComment();
    if (i >= n) break;
    if (text[i] === '\r' || text[i] === '\n') { if (text[i] === '\n') line++; i++; continue; }
    if (text[i] === '[') {
      const end = text.indexOf('\n', i);
      const header = (end < 0 ? text.slice(i) : text.slice(i, end)).replace(/#.*$/, '').trim();
      const m = /^\[\[?\s*([^\]]+?)\s*\]\]?$/.exec(header);
      if (!m) throw new TomlError(`line ${line}: a table header is not valid`);
      table = header.startsWith('[[') ? `[[${m[1]}]]` : m[1].replace(/\s*\.\s*/g, '.').replace(/"/g, '');
      i = end < 0 ? n : end;
      continue;
    }
    const eq = text.indexOf('=', i);
    const nl = text.indexOf('\n', i);
    if (eq < 0 || (nl >= 0 && nl < eq)) throw new TomlError(`line ${line}: expected key = value`);
    const key = text.slice(i, eq).trim().replace(/^"(.*)"$/, '$1');
    i = eq + 1;
    skipSpace();
    const at = line;
    const raw = rawValue();
    line += (raw.match(/\n/g) || []).length;
    out.push({ table, key, raw, line: at });
  }
  return out;
}

function parseValue(raw) {
  if (/^[+-]?(0|[1-9](_?[0-9])*)$/.test(raw)) {
    const v = Number(raw.replace(/_/g, ''));
    if (!Number.isSafeInteger(v)) throw new TomlError('an integer out of range');
    return v;
  }
  if (raw === 'true' || raw === 'false') return raw === 'true';
  if (raw.startsWith("'") && raw.endsWith("'") && !raw.startsWith("'''")) return raw.slice(1, -1);
  if (raw.startsWith('"') && raw.endsWith('"') && !raw.startsWith('"""')) {
    try {
      return JSON.parse(raw.replace(/\\U([0-9a-fA-F]{8})/g, (_, h) => String.fromCodePoint(parseInt(h, 16))));
    } catch {
      throw new TomlError('a string is not valid');
    }
  }
  if (/^[+-]?[0-9_.eE+-]+$/.test(raw) || raw === 'inf' || raw === 'nan') return { float: raw };
  return { other: raw };
}

// The key/value pairs of one table; throws TomlError for text that is not TOML enough.
function readTable(text, name) {
  const seen = new Set();
  const out = {};
  let present = false;
  for (const s of statements(text)) {
    if (s.table !== name) continue;
    present = true;
    if (seen.has(s.key)) throw new TomlError(`line ${s.line}: duplicate key \`${s.key}\``);
    seen.add(s.key);
    out[s.key] = parseValue(s.raw);
  }
  if (!present && /^\s*\[\s*backend\s*\]/m.test(text) && name === 'backend') return {};
  return out;
}

module.exports = { readTable, TomlError };
