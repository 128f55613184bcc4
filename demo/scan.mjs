// A small program the demo runs as a command agent (bg.registerCommand): it walks a
// directory, hashes every file and counts TODO/FIXME markers, reporting progress as JSON
// lines (`{"progress": n}`) on stdout and its result as the last line.
//
//   node demo/scan.mjs <dir> [delayMs]
//
// It is a separate process on purpose: the executor starts it from Rust, reads its output
// on the tokio runtime and only reports progress and the exit to JavaScript.

import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

const dir = path.resolve(process.argv[2] ?? '.');
const delayMs = Number(process.argv[3] ?? 0);

async function walk(d) {
  const out = [];
  for (const entry of await readdir(d, { withFileTypes: true })) {
    const full = path.join(d, entry.name);
    if (entry.isDirectory()) out.push(...(await walk(full)));
    else if (entry.isFile()) out.push(full);
  }
  return out.sort();
}

const files = await walk(dir);
const digest = createHash('sha256');
let bytes = 0;
let markers = 0;
for (let i = 0; i < files.length; i++) {
  const data = await readFile(files[i]);
  bytes += data.length;
  digest.update(data);
  markers += (data.toString('utf8').match(/\b(TODO|FIXME)\b/g) ?? []).length;
  console.log(JSON.stringify({ progress: Math.round(((i + 1) / files.length) * 100), file: path.relative(dir, files[i]) }));
  if (delayMs > 0) await sleep(delayMs);
}
console.error(`scanned ${files.length} files under ${dir}`);
console.log(JSON.stringify({ files: files.length, bytes, markers, sha256: digest.digest('hex') }));
