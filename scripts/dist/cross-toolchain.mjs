// Puts the glibc-2.17 gcc toolchain that `napi build --use-napi-cross` uses where napi looks for
// it ($HOME/.napi-rs/cross-toolchain/<version>/<triple>), from npm's
// @napi-rs/cross-toolchain-<host>-target-<arch> package. napi would fetch it itself, but its
// fetch needs @napi-rs/lzma, whose native part npm skips on Node 20, and it asks for the exact
// version of @napi-rs/cross-toolchain, which not every target package is published at: this
// takes that version when it exists and the newest otherwise.
//
//   node scripts/dist/cross-toolchain.mjs x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { homedir, tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const require = createRequire(path.join(root, 'package.json'));

const ARCH_OF_TRIPLE = { x86_64: 'x86_64', aarch64: 'aarch64', armv7: 'armv7', powerpc64le: 'ppc64le', s390x: 's390x' };
const TARBALL_NAME = { 's390x-unknown-linux-gnu': 's390x-ibm-linux-gnu' };

/** The version of @napi-rs/cross-toolchain the installed napi CLI resolves (it names the directory). */
export function napiCrossVersion() {
  return JSON.parse(readFileSync(require.resolve('@napi-rs/cross-toolchain/package.json'), 'utf8')).version;
}

/** Where napi looks for the toolchain of `triple`. */
export function toolchainDir(triple, home = homedir()) {
  return path.join(home, '.napi-rs', 'cross-toolchain', napiCrossVersion(), triple);
}

function npmPack(spec, dest, env) {
  const out = execFileSync('npm', ['pack', spec, '--json', '--pack-destination', dest, '--loglevel=error'], {
    env,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const entry = JSON.parse(out.slice(out.indexOf('[')))[0];
  return { file: path.join(dest, entry.filename), version: entry.version };
}

/**
 * Makes sure the toolchain of `triple` is extracted; returns { dir, source } where source is the
 * npm package it came from, or 'present'. `env` is the environment for npm (cache, registry).
 */
export function ensureToolchain(triple, { home = homedir(), env = process.env, log = () => {} } = {}) {
  const dir = toolchainDir(triple, home);
  if (existsSync(path.join(dir, 'package.json'))) return { dir, source: 'present' };
  const hostArch = { x64: 'x64', arm64: 'arm64' }[process.arch];
  const arch = ARCH_OF_TRIPLE[triple.split('-')[0]];
  if (process.platform !== 'linux' || !hostArch || !arch || !/-linux-gnu(eabihf)?$/.test(triple)) {
    throw new Error(`no napi cross toolchain for ${triple} on ${process.platform}-${process.arch}`);
  }
  const pkg = `@napi-rs/cross-toolchain-${hostArch}-target-${arch}`;
  const tmp = mkdtempSync(path.join(tmpdir(), 'napi-cross-'));
  try {
    let packed;
    try {
      packed = npmPack(`${pkg}@${napiCrossVersion()}`, tmp, env);
    } catch {
      packed = npmPack(`${pkg}@latest`, tmp, env);
    }
    log(`${pkg}@${packed.version} -> ${dir}`);
    execFileSync('tar', ['-xzf', packed.file, '-C', tmp]);
    const xz = path.join(tmp, 'package', `${TARBALL_NAME[triple] ?? triple}.tar.xz`);
    if (!existsSync(xz)) throw new Error(`${pkg}@${packed.version} has no ${path.basename(xz)}: ${readdirSync(path.join(tmp, 'package'))}`);
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    try {
      execFileSync('tar', ['-xJf', xz, '-C', dir]);
    } catch (err) {
      rmSync(dir, { recursive: true, force: true });
      throw err;
    }
    if (!existsSync(path.join(dir, 'package.json'))) throw new Error(`${xz} did not hold a toolchain (no package.json at its top)`);
    return { dir, source: `${pkg}@${packed.version}` };
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const triples = process.argv.slice(2);
  if (triples.length === 0) {
    console.error('usage: node scripts/dist/cross-toolchain.mjs <triple>...');
    process.exit(2);
  }
  for (const triple of triples) {
    const { dir, source } = ensureToolchain(triple, { log: (m) => console.log(m) });
    console.log(`${triple}: ${dir} (${source})`);
  }
}
