// The highest GLIBC_ symbol version a Linux .node file needs, read with `objdump -T` (or
// `readelf --dyn-syms` where objdump is missing), and its ELF machine from the header.
//
//   node scripts/dist/check-glibc.mjs <file.node> [--max 2.17]
// prints `<file>: <machine>, GLIBC_<max>` and exits 1 when a symbol needs more than --max.
import { execFileSync } from 'node:child_process';
import { openSync, readSync, closeSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const MACHINES = { 0x3e: 'x86-64', 0xb7: 'aarch64', 0x28: 'arm', 0x15: 'ppc64', 0x16: 's390x' };

/** The ELF machine of `file` ('x86-64', 'aarch64', ...); throws when it is not ELF. */
export function elfMachine(file) {
  const fd = openSync(file, 'r');
  const head = Buffer.alloc(20);
  try {
    readSync(fd, head, 0, 20, 0);
  } finally {
    closeSync(fd);
  }
  if (head.readUInt32BE(0) !== 0x7f454c46) throw new Error(`${file} is not an ELF file`);
  const code = head[5] === 2 ? head.readUInt16BE(18) : head.readUInt16LE(18);
  return MACHINES[code] ?? `machine 0x${code.toString(16)}`;
}

const compare = (a, b) => {
  const x = a.split('.').map(Number);
  const y = b.split('.').map(Number);
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    if ((x[i] ?? 0) !== (y[i] ?? 0)) return (x[i] ?? 0) - (y[i] ?? 0);
  }
  return 0;
};

/** The GLIBC_ versions the dynamic symbols of `file` need, highest last. */
export function glibcVersions(file) {
  let text;
  try {
    text = execFileSync('objdump', ['-T', file], { encoding: 'utf8', maxBuffer: 64 << 20 });
  } catch (err) {
    if (err.code !== 'ENOENT') throw err;
    text = execFileSync('readelf', ['--dyn-syms', '-W', file], { encoding: 'utf8', maxBuffer: 64 << 20 });
  }
  const found = new Set([...text.matchAll(/GLIBC_(\d+(?:\.\d+)+)/g)].map((m) => m[1]));
  return [...found].sort(compare);
}

/** { machine, versions, max, ok } for `file` against the highest allowed version `limit`. */
export function checkGlibc(file, limit = '2.17') {
  const versions = glibcVersions(file);
  const max = versions.at(-1);
  return { machine: elfMachine(file), versions, max, ok: max === undefined || compare(max, limit) <= 0 };
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const i = args.indexOf('--max');
  const limit = i >= 0 ? args.splice(i, 2)[1] : '2.17';
  if (args.length === 0) {
    console.error('usage: node scripts/dist/check-glibc.mjs <file.node>... [--max 2.17]');
    process.exit(2);
  }
  let failed = false;
  for (const file of args) {
    const r = checkGlibc(file, limit);
    console.log(`${file}: ${r.machine}, highest GLIBC_${r.max ?? '(none)'} (limit ${limit})`);
    if (!r.ok) {
      console.error(`${file} needs GLIBC_${r.max}, newer than ${limit}`);
      failed = true;
    }
  }
  process.exit(failed ? 1 : 0);
}
