// Writes lib/protocol.js from src/protocol.rs: the codes shared by JS and Rust have one
// source. `--check` writes nothing and exits 1 when lib/protocol.js is stale, and also when
// the committed binding loader and typings (binding.js, binding.d.ts, written by
// `npm run build`) differ from what the last build produced.
import { readFileSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const SOURCE = 'src/protocol.rs';
const TARGET = 'lib/protocol.js';

/** `[{ name, value, doc }]` from the one-line `pub const` items of protocol.rs. */
export function parseProtocol(text) {
  const items = [];
  const names = new Set();
  let doc = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line.startsWith('///')) {
      doc.push(line.slice(3).trim());
      return;
    }
    if (line.startsWith('pub const')) {
      const m = /^pub const ([A-Z][A-Z0-9_]*): ([^=]+) = (.+);$/.exec(line);
      if (m === null) throw new Error(`${SOURCE}:${i + 1}: not a one-line \`pub const NAME: type = value;\``);
      const [, name, type, rawValue] = m;
      let value;
      if (/^-?[0-9][0-9_]*$/.test(rawValue) && /^[iu](8|16|32|64|size)$/.test(type.trim())) {
        value = Number(rawValue.replaceAll('_', ''));
      } else if (/^\[&str; \d+\]$/.test(type.trim())) {
        value = JSON.parse(rawValue);
        if (!Array.isArray(value) || !value.every((v) => typeof v === 'string')) {
          throw new Error(`${SOURCE}:${i + 1}: ${name} must be an array of string literals`);
        }
      } else {
        throw new Error(`${SOURCE}:${i + 1}: ${name}: only integers and arrays of strings can be shared`);
      }
      if (names.has(name)) throw new Error(`${SOURCE}:${i + 1}: ${name} is defined twice`);
      names.add(name);
      items.push({ name, value, doc: doc.join(' ') });
    }
    if (!line.startsWith('///')) doc = [];
  });
  return items;
}

export function renderProtocol(items) {
  const out = [
    '// Generated from src/protocol.rs by `npm run generate`; do not edit. `npm test` fails when',
    '// this file is stale.',
    "'use strict';",
    '',
    'module.exports = Object.freeze({',
  ];
  for (const { name, value, doc } of items) {
    if (doc !== '') out.push(`  /** ${doc.replaceAll('*/', '*\\/')} */`);
    const literal = Array.isArray(value) ? `Object.freeze(${JSON.stringify(value).replaceAll(',', ', ')})` : String(value);
    out.push(`  ${name}: ${literal},`);
  }
  out.push('});', '');
  return out.join('\n');
}

function read(file) {
  return readFileSync(path.join(root, file), 'utf8');
}

const expected = renderProtocol(parseProtocol(read(SOURCE)));
if (process.argv.includes('--check')) {
  const problems = [];
  let current = '';
  try {
    current = read(TARGET);
  } catch {
    // missing: stale
  }
  if (current !== expected) problems.push(`${TARGET} is stale: run \`npm run generate\``);
  // The loader and typings napi writes at build time are committed: a build that changes them
  // (a new #[napi] item, a changed signature) must be committed with the Rust change.
  try {
    execFileSync('git', ['diff', '--quiet', '--', 'binding.js', 'binding.d.ts'], { cwd: root, stdio: 'ignore' });
  } catch (err) {
    if (err.status === 1) problems.push('binding.js / binding.d.ts differ from the committed ones: commit what `npm run build` wrote');
    else process.stdout.write('generate --check: not a git checkout, binding typings not compared\n');
  }
  if (problems.length > 0) {
    for (const p of problems) process.stderr.write(`generate --check: ${p}\n`);
    process.exit(1);
  }
  process.stdout.write('generate --check: lib/protocol.js and the binding typings are current\n');
} else {
  writeFileSync(path.join(root, TARGET), expected);
  process.stdout.write(`wrote ${TARGET}\n`);
}
