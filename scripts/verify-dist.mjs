// `npm run verify:dist`: the release, end to end, on this machine (Linux x64).
//
//  1. tools      qemu-user-static and an arm64 C runtime (apt-get), the aarch64 Rust std
//                (rustup), the glibc-2.17 cross toolchains, Node.js 22/24/26 for x64 and 22 for
//                arm64 (npm's node-linux-* packages) and verdaccio; kept in
//                node_modules/.cache/bmad-verify-dist, fetched when missing
//  2. build      linux-x64-gnu and linux-arm64-gnu with `napi build --use-napi-cross` into
//                target/dist; the highest GLIBC_ symbol each needs must be <= 2.17, and the
//                loader and typings they generate must equal the committed binding.js/.d.ts
//  3. stage      a copy of the package with the two binaries moved in by `napi artifacts`
//  4. registry   verdaccio on 127.0.0.1 with an empty storage and no uplink
//  5. publish    `npm publish` of the copy, whose prepublishOnly (`napi prepublish`)
//                publishes the platform packages and writes exact-version optionalDependencies
//  6. install    into a fresh project, from that registry only, with no cargo or rustc on PATH;
//                the binary must load from the platform package; a smoke run
//  7. no binary  an install with --omit=optional must fail with ERR_NATIVE_BINDING_NOT_FOUND,
//                and work with NAPI_RS_NATIVE_LIBRARY_PATH set to a built binary
//  8. tests      the __test__ suites that apply to an installed package, run inside it, on
//                Node.js 20, 22, 24 and 26; a test that fails is run once more by itself, and
//                the summary names every test that needed that
//  9. arm64      an install for arm64 (--cpu=arm64) and the smoke run under qemu-aarch64, with
//                PostgreSQL over verify-full TLS when PostgreSQL and openssl are here
//
// Besides what apt-get and rustup install, everything it writes is under /tmp (a directory
// removed at the end; VERIFY_DIST_KEEP=1 keeps it), node_modules/.cache/bmad-verify-dist and
// target/dist. VERIFY_DIST_SUITES=a,b narrows step 8 to those suites.
import { execFileSync, spawn } from 'node:child_process';
import {
  copyFileSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:net';
import { homedir, tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ensureToolchain } from './dist/cross-toolchain.mjs';
import { checkGlibc } from './dist/check-glibc.mjs';
import { runSuites, selectSuites } from './dist/run-tests.mjs';
import { findPostgres, hasOpenssl, startPostgres } from './pg-cluster.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const pkg = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8'));
const NAME = pkg.name;
const BIN = pkg.napi.binaryName;
const TARGETS = [
  { triple: 'x86_64-unknown-linux-gnu', platform: 'linux-x64-gnu', machine: 'x86-64' },
  { triple: 'aarch64-unknown-linux-gnu', platform: 'linux-arm64-gnu', machine: 'aarch64' },
];
const GLIBC_LIMIT = '2.17';
const NODE_MAJORS = [20, 22, 24, 26];
const ARM64_NODE_MAJOR = 22;
const VERDACCIO = 'verdaccio@6';
const CACHE = path.join(root, 'node_modules', '.cache', 'bmad-verify-dist');
const NAPI = path.join(root, 'node_modules', '@napi-rs', 'cli', 'dist', 'cli.js');

if (process.platform !== 'linux' || process.arch !== 'x64') {
  console.error(`verify:dist runs on Linux x64; this is ${process.platform}-${process.arch}`);
  process.exit(2);
}

// ----- plumbing ----------------------------------------------------------------------------------

/** This environment without npm's lifecycle variables (npm_config_local_prefix would aim npm at the repo). */
function cleanEnv(extra = {}) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (/^npm_/i.test(k) || k === 'INIT_CWD' || k === 'NODE_TEST_CONTEXT') continue;
    env[k] = v;
  }
  return { ...env, NO_UPDATE_NOTIFIER: '1', npm_config_update_notifier: 'false', npm_config_fund: 'false', npm_config_audit: 'false', ...extra };
}

/** Runs a command, output to this terminal prefixed; rejects on a non-zero exit. Resolves its output. */
function run(cmd, args, { cwd = root, env = cleanEnv(), quiet = false, timeout = 600_000 } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd, env, stdio: ['ignore', 'pipe', 'pipe'], timeout, killSignal: 'SIGKILL', detached: true });
    track(child);
    let out = '';
    const take = (chunk) => {
      const s = chunk.toString();
      out += s;
      if (!quiet) process.stdout.write(s.replace(/^(?=.)/gm, '    '));
    };
    child.stdout.on('data', take);
    child.stderr.on('data', take);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (code === 0) resolve(out);
      else {
        const err = new Error(`${cmd} ${args.join(' ')} exited with ${code ?? signal}${quiet ? `\n${out.slice(-4000)}` : ''}`);
        err.output = out;
        reject(err);
      }
    });
  });
}

/** The children still running, each the leader of its own process group, ended with the run. */
const children = new Set();
function track(child) {
  children.add(child);
  child.on('exit', () => children.delete(child));
}

const which = (name, env = process.env) => {
  for (const dir of (env.PATH || '').split(path.delimiter)) {
    if (dir && existsSync(path.join(dir, name))) return path.join(dir, name);
  }
  return undefined;
};

const results = [];
const facts = {};
/** `names` and every dependency they need, as installed in this checkout's node_modules. */
function dependencyClosure(names) {
  const seen = new Set();
  const visit = (name) => {
    if (seen.has(name)) return;
    seen.add(name);
    const manifest = JSON.parse(readFileSync(path.join(root, 'node_modules', name, 'package.json'), 'utf8'));
    for (const dep of Object.keys(manifest.dependencies || {})) visit(dep);
  };
  names.forEach(visit);
  return [...seen];
}

/** The top-level names an install of the package brings: it, one platform package, the typings' dependencies. */
function expectedInstall(platform) {
  const deps = dependencyClosure(Object.keys(pkg.dependencies || {})).map((d) => d.split('/')[0]);
  return [...new Set([NAME, `${NAME}-${platform}`, ...deps])].sort();
}

async function step(name, fn) {
  const t0 = Date.now();
  console.log(`\n== ${name}`);
  try {
    const note = await fn();
    const s = ((Date.now() - t0) / 1000).toFixed(1);
    results.push({ name, ok: true, s, note });
    console.log(`   ok (${s} s)${note ? `: ${note}` : ''}`);
  } catch (err) {
    const s = ((Date.now() - t0) / 1000).toFixed(1);
    results.push({ name, ok: false, s, note: err.message.split('\n')[0] });
    throw Object.assign(err, { step: name });
  }
}

function check(cond, message) {
  if (!cond) throw new Error(message);
}

// ----- state, cleanup ----------------------------------------------------------------------------

const work = mkdtempSync(path.join(tmpdir(), 'bmad-verify-dist-'));
const dirs = {
  build: path.join(work, 'build'),
  artifacts: path.join(work, 'artifacts'),
  stage: path.join(work, 'stage'),
  registry: path.join(work, 'registry'),
  npmCache: path.join(work, 'npm-cache'),
  x64: path.join(work, 'consumer-x64'),
  arm64: path.join(work, 'consumer-arm64'),
  noOptional: path.join(work, 'consumer-no-optional'),
};
let registryChild;
let registryUrl;

function cleanup() {
  for (const child of children) {
    try {
      process.kill(-child.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  if (registryChild && registryChild.exitCode === null) {
    try {
      process.kill(-registryChild.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  if (process.env.VERIFY_DIST_KEEP) console.log(`kept ${work}`);
  else rmSync(work, { recursive: true, force: true });
}
process.on('exit', cleanup);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    console.error(`\nverify:dist: ${sig}, stopping`);
    process.exit(130);
  });
}

// The environment for downloads of tools (the user's registry, a cache of our own).
const downloadEnv = cleanEnv({ npm_config_cache: path.join(CACHE, 'npm') });

// ----- 1. tools ----------------------------------------------------------------------------------

const tools = {};

async function aptGet(args) {
  const sudo = process.getuid && process.getuid() !== 0 ? ['sudo', '-n'] : [];
  const cmd = sudo.length ? sudo[0] : 'apt-get';
  const full = [...sudo.slice(1), ...(sudo.length ? ['apt-get'] : []), ...args];
  return run(cmd, full, { quiet: true, env: cleanEnv({ DEBIAN_FRONTEND: 'noninteractive' }) });
}

async function ensureQemu() {
  let qemu = which('qemu-aarch64-static') || which('qemu-aarch64');
  if (!qemu) {
    check(which('apt-get'), 'qemu-aarch64 is missing and there is no apt-get to install qemu-user-static');
    await aptGet(['update', '-qq']);
    await aptGet(['install', '-y', '-qq', '--no-install-recommends', 'qemu-user-static']);
    qemu = which('qemu-aarch64-static') || which('qemu-aarch64');
    check(qemu, 'apt-get installed qemu-user-static but no qemu-aarch64 is on PATH');
    return { qemu, installed: true };
  }
  return { qemu, installed: false };
}

/** An arm64 glibc + libstdc++ from Debian, unpacked (not installed) for qemu's -L. */
async function ensureArm64Sysroot() {
  const sysroot = path.join(CACHE, 'arm64-sysroot');
  if (existsSync(path.join(sysroot, 'lib', 'ld-linux-aarch64.so.1'))) return { sysroot, fetched: false };
  check(which('apt-get') && which('dpkg-deb'), 'an arm64 C runtime is needed for qemu, and this needs apt-get and dpkg-deb (Debian)');
  const apt = path.join(CACHE, 'apt-arm64');
  const debs = path.join(apt, 'debs');
  for (const d of ['state/lists/partial', 'cache/archives/partial', 'debs']) mkdirSync(path.join(apt, d), { recursive: true });
  writeFileSync(path.join(apt, 'state', 'status'), '');
  // A private apt state for arch arm64 only: the machine's own package lists stay as they are.
  const opts = [
    `-o=Dir::State=${path.join(apt, 'state')}`,
    `-o=Dir::State::status=${path.join(apt, 'state', 'status')}`,
    `-o=Dir::Cache=${path.join(apt, 'cache')}`,
    '-o=APT::Architecture=arm64',
    '-o=APT::Architectures::=arm64',
    '-o=Debug::NoLocking=1',
    '-o=APT::Sandbox::User=root',
    '-qq',
  ];
  await run('apt-get', [...opts, 'update'], { quiet: true });
  await run('apt-get', [...opts, 'download', 'libc6:arm64', 'libstdc++6:arm64', 'libgcc-s1:arm64'], { cwd: debs, quiet: true });
  rmSync(sysroot, { recursive: true, force: true });
  mkdirSync(sysroot, { recursive: true });
  for (const deb of readdirSync(debs).filter((f) => f.endsWith('.deb'))) {
    execFileSync('dpkg-deb', ['-x', path.join(debs, deb), sysroot]);
  }
  rmSync(apt, { recursive: true, force: true });
  check(existsSync(path.join(sysroot, 'lib', 'ld-linux-aarch64.so.1')), 'the arm64 C runtime has no lib/ld-linux-aarch64.so.1');
  return { sysroot, fetched: true };
}

async function ensureRustTarget(triple) {
  const installed = execFileSync('rustup', ['target', 'list', '--installed'], { encoding: 'utf8' }).split('\n');
  if (installed.includes(triple)) return false;
  await run('rustup', ['target', 'add', triple], { quiet: true });
  return true;
}

/** bin/node of npm's `node-linux-<arch>@<major>`, unpacked once into the cache. */
async function ensureNode(arch, major) {
  if (arch === 'x64' && Number(process.versions.node.split('.')[0]) === major) {
    return { node: process.execPath, version: process.version, fetched: false };
  }
  const dir = path.join(CACHE, 'node', `${arch}-${major}`);
  const node = path.join(dir, 'package', 'bin', 'node');
  const versionFile = path.join(dir, 'version');
  if (existsSync(node) && existsSync(versionFile)) return { node, version: readFileSync(versionFile, 'utf8').trim(), fetched: false };
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const out = await run('npm', ['pack', `node-linux-${arch}@${major}`, '--json', '--pack-destination', dir, '--loglevel=error'], {
    env: downloadEnv,
    quiet: true,
  });
  const entry = JSON.parse(out.slice(out.indexOf('[')))[0];
  const tgz = path.join(dir, entry.filename);
  execFileSync('tar', ['-xzf', tgz, '-C', dir]);
  rmSync(tgz);
  check(existsSync(node), `node-linux-${arch}@${entry.version} has no bin/node`);
  writeFileSync(versionFile, `v${entry.version}\n`);
  return { node, version: `v${entry.version}`, fetched: true };
}

async function ensureVerdaccio() {
  const prefix = path.join(CACHE, 'verdaccio');
  const bin = path.join(prefix, 'node_modules', 'verdaccio', 'bin', 'verdaccio');
  if (existsSync(bin)) return { bin, fetched: false };
  mkdirSync(prefix, { recursive: true });
  writeFileSync(path.join(prefix, 'package.json'), '{ "private": true }\n');
  await run('npm', ['install', '--prefix', prefix, VERDACCIO, '--no-save', '--omit=dev', '--loglevel=error'], { env: downloadEnv, quiet: true });
  check(existsSync(bin), `${VERDACCIO} installed without bin/verdaccio`);
  return { bin, fetched: true };
}

// ----- 2. build ----------------------------------------------------------------------------------

// napi looks for its cross toolchains under $HOME: a home of our own keeps them in the cache;
// cargo and rustup keep theirs.
const buildHome = path.join(CACHE, 'home');
const buildEnv = () =>
  cleanEnv({
    HOME: buildHome,
    CARGO_HOME: process.env.CARGO_HOME || path.join(homedir(), '.cargo'),
    RUSTUP_HOME: process.env.RUSTUP_HOME || path.join(homedir(), '.rustup'),
    CARGO_TARGET_DIR: path.join(root, 'target', 'dist'),
    npm_config_cache: path.join(CACHE, 'npm'),
  });

async function buildTarget({ triple, platform, machine }) {
  const out = path.join(dirs.build, platform);
  mkdirSync(out, { recursive: true });
  const t0 = Date.now();
  await run(
    process.execPath,
    [NAPI, 'build', '--platform', '--release', '--target', triple, '--use-napi-cross', '--js', 'binding.js', '--dts', 'binding.d.ts', '-o', out],
    { env: buildEnv(), quiet: true },
  );
  const seconds = ((Date.now() - t0) / 1000).toFixed(1);
  const file = path.join(out, `${BIN}.${platform}.node`);
  check(existsSync(file), `napi build wrote no ${file}`);
  const g = checkGlibc(file, GLIBC_LIMIT);
  check(g.machine === machine, `${file} is ${g.machine}, not ${machine}`);
  check(g.ok, `${platform} needs GLIBC_${g.max}, newer than ${GLIBC_LIMIT}`);
  for (const f of ['binding.js', 'binding.d.ts']) {
    const same = readFileSync(path.join(out, f), 'utf8') === readFileSync(path.join(root, f), 'utf8');
    check(same, `the ${f} built with ${platform} differs from the committed one: run npm run build and commit it`);
  }
  copyFileSync(file, path.join(dirs.artifacts, path.basename(file)));
  facts[platform] = { glibcMax: g.max, machine: g.machine, bytes: statSync(file).size, buildSeconds: seconds };
  return `${platform}: ${g.machine}, highest GLIBC_${g.max}, ${(statSync(file).size / 1024).toFixed(0)} KiB, ${seconds} s`;
}

// ----- 3. stage ----------------------------------------------------------------------------------

function stage() {
  const s = dirs.stage;
  mkdirSync(s, { recursive: true });
  const entries = ['package.json', 'README.md', 'npm', ...pkg.files];
  for (const e of readdirSync(root).filter((f) => /^licen[cs]e/i.test(f))) entries.push(e);
  for (const e of entries) {
    const from = path.join(root, e.replace(/\/$/, ''));
    check(existsSync(from), `${e} (package.json "files") is missing`);
    cpSync(from, path.join(s, e.replace(/\/$/, '')), { recursive: true, filter: (f) => !f.endsWith('.node') });
  }
  // Publish the targets built here; the release publishes every target of package.json.
  const staged = JSON.parse(readFileSync(path.join(s, 'package.json'), 'utf8'));
  const all = staged.napi.targets;
  for (const t of TARGETS) check(all.includes(t.triple), `package.json napi.targets lacks ${t.triple}`);
  staged.napi.targets = TARGETS.map((t) => t.triple);
  writeFileSync(path.join(s, 'package.json'), `${JSON.stringify(staged, null, 2)}\n`);
  return all;
}

// ----- 4. registry -------------------------------------------------------------------------------

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

async function startRegistry(bin) {
  const dir = dirs.registry;
  mkdirSync(path.join(dir, 'storage'), { recursive: true });
  const config = path.join(dir, 'config.yaml');
  writeFileSync(
    config,
    [
      `storage: ${path.join(dir, 'storage')}`,
      'auth:',
      '  htpasswd:',
      `    file: ${path.join(dir, 'htpasswd')}`,
      '    max_users: 10',
      'uplinks: {}',
      'packages:',
      "  '**':",
      '    access: $all',
      '    publish: $authenticated',
      '    unpublish: $authenticated',
      'web:',
      '  enable: false',
      'max_body_size: 200mb',
      'log: { type: stdout, format: pretty, level: warn }',
      '',
    ].join('\n'),
  );
  const port = await freePort();
  registryUrl = `http://127.0.0.1:${port}/`;
  const log = openSync(path.join(dir, 'verdaccio.log'), 'a');
  registryChild = spawn(process.execPath, [bin, '--config', config, '--listen', `127.0.0.1:${port}`], {
    cwd: dir,
    env: cleanEnv(),
    stdio: ['ignore', log, log],
    detached: true,
  });
  registryChild.unref();
  const t0 = Date.now();
  for (;;) {
    check(registryChild.exitCode === null, `verdaccio exited (${registryChild.exitCode}):\n${readFileSync(path.join(dir, 'verdaccio.log'), 'utf8')}`);
    try {
      const r = await fetch(`${registryUrl}-/ping`);
      if (r.ok) break;
    } catch {
      // not listening yet
    }
    check(Date.now() - t0 < 30_000, 'verdaccio did not answer /-/ping within 30 s');
    await new Promise((r) => setTimeout(r, 100));
  }
  const user = await fetch(`${registryUrl}-/user/org.couchdb.user:verify`, {
    method: 'PUT',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'verify', password: 'verify-dist', email: 'verify@127.0.0.1' }),
  });
  const { token } = await user.json();
  check(user.ok && token, `verdaccio did not create a user (${user.status})`);
  const host = registryUrl.replace(/^http:/, '');
  writeFileSync(path.join(work, 'npmrc'), `registry=${registryUrl}\n${host}:_authToken=${token}\n`);
  writeFileSync(path.join(work, 'npmrc-global'), '');
  return registryUrl;
}

/** The environment for npm against the throw-away registry: nothing else is reachable through it. */
const registryEnv = (extra = {}) =>
  cleanEnv({
    npm_config_userconfig: path.join(work, 'npmrc'),
    npm_config_globalconfig: path.join(work, 'npmrc-global'),
    npm_config_registry: registryUrl,
    npm_config_cache: dirs.npmCache,
    npm_config_loglevel: 'warn',
    ...extra,
  });

async function packument(name) {
  const r = await fetch(`${registryUrl}${name}`);
  check(r.ok, `${name} is not in the registry (${r.status})`);
  return r.json();
}

// ----- 6. install without cargo ------------------------------------------------------------------

/** PATH with `nodeBin`'s directory first and no directory that holds cargo or rustc. */
function pathWithoutRust(nodeBin) {
  const keep = (process.env.PATH || '')
    .split(path.delimiter)
    .filter((d) => d && !existsSync(path.join(d, 'cargo')) && !existsSync(path.join(d, 'rustc')));
  return [path.dirname(nodeBin), ...keep].join(path.delimiter);
}

const noRustEnv = (nodeBin, extra = {}) => {
  const env = registryEnv({ PATH: pathWithoutRust(nodeBin), ...extra });
  for (const k of Object.keys(env)) if (/^(CARGO|RUSTUP|RUSTC)/.test(k)) delete env[k];
  return env;
};

/** `npm install <args>` in a fresh project through sh, which first proves cargo and rustc are not on PATH. */
async function installFresh(dir, args, nodeBin = process.execPath) {
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'package.json'), `${JSON.stringify({ name: path.basename(dir), private: true, type: 'module' }, null, 2)}\n`);
  const script = [
    'for tool in cargo rustc rustup; do',
    '  if command -v "$tool" >/dev/null 2>&1; then echo "$tool is on PATH: $(command -v "$tool")" >&2; exit 97; fi',
    'done',
    'echo "no cargo, rustc or rustup on PATH"',
    'exec npm install "$@"',
  ].join('\n');
  const t0 = Date.now();
  const out = await run('sh', ['-c', script, 'sh', ...args], { cwd: dir, env: noRustEnv(nodeBin), quiet: true });
  check(out.includes('no cargo, rustc or rustup on PATH'), 'the install did not run the PATH check');
  return ((Date.now() - t0) / 1000).toFixed(1);
}

const installedPackages = (dir) =>
  readdirSync(path.join(dir, 'node_modules'))
    .filter((n) => !n.startsWith('.'))
    .sort();

function filesUnder(dir) {
  const out = [];
  (function walk(d) {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out.push(path.relative(dir, p));
    }
  })(dir);
  return out;
}

const escapeRegExp = (s) => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');

/** The report lines of each failed test in node --test output (TAP or spec), with its diagnostics. */
function failureDetails(output) {
  const lines = output.split('\n');
  const out = [];
  lines.forEach((line, i) => {
    if (/^\s*not ok \d+ - /.test(line) || /^\s*✖ /.test(line)) out.push(...lines.slice(i, i + 40), '');
  });
  return out.join('\n').slice(0, 20_000);
}

async function runSmoke(dir, command, args, env) {
  copyFileSync(path.join(root, 'scripts', 'dist', 'smoke.mjs'), path.join(dir, 'smoke.mjs'));
  const out = await run(command, [...args, 'smoke.mjs'], { cwd: dir, env, quiet: true, timeout: 120_000 });
  const line = out.split('\n').find((l) => l.startsWith('SMOKE '));
  check(line, `the smoke run printed no SMOKE line:\n${out}`);
  return JSON.parse(line.slice('SMOKE '.length));
}

// ----- the run -----------------------------------------------------------------------------------

const tStart = Date.now();
let failure;
try {
  console.log(`verify:dist ${NAME}@${pkg.version} in ${work}`);
  for (const d of [dirs.build, dirs.artifacts, dirs.npmCache, CACHE]) mkdirSync(d, { recursive: true });

  await step('1. tools', async () => {
    const notes = [];
    const q = await ensureQemu();
    tools.qemu = q.qemu;
    notes.push(`${path.basename(q.qemu)}${q.installed ? ' (apt-get installed qemu-user-static)' : ''}`);
    const sr = await ensureArm64Sysroot();
    tools.sysroot = sr.sysroot;
    if (sr.fetched) notes.push('arm64 libc6/libstdc++6 unpacked from Debian');
    for (const t of TARGETS) if (await ensureRustTarget(t.triple)) notes.push(`rustup added ${t.triple}`);
    for (const t of TARGETS) {
      const { source } = ensureToolchain(t.triple, { home: buildHome, env: downloadEnv });
      if (source !== 'present') notes.push(`${source} unpacked`);
    }
    tools.node = {};
    for (const major of NODE_MAJORS) tools.node[major] = await ensureNode('x64', major);
    tools.nodeArm64 = await ensureNode('arm64', ARM64_NODE_MAJOR);
    notes.push(`node ${Object.values(tools.node).map((n) => n.version).join(', ')}; arm64 ${tools.nodeArm64.version}`);
    const v = await ensureVerdaccio();
    tools.verdaccio = v.bin;
    if (v.fetched) notes.push(`${VERDACCIO} installed`);
    return notes.join('; ');
  });

  for (const t of TARGETS) await step(`2. build ${t.platform} (--use-napi-cross)`, () => buildTarget(t));

  let allTargets;
  await step('3. stage: napi artifacts', async () => {
    allTargets = stage();
    await run(process.execPath, [NAPI, 'artifacts', '--output-dir', dirs.artifacts, '--npm-dir', 'npm'], { cwd: dirs.stage, quiet: true });
    for (const t of TARGETS) {
      const f = path.join(dirs.stage, 'npm', t.platform, `${BIN}.${t.platform}.node`);
      check(existsSync(f), `napi artifacts did not put ${path.relative(dirs.stage, f)} in place`);
    }
    const out = await run('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: dirs.stage, env: cleanEnv({ npm_config_cache: dirs.npmCache }), quiet: true });
    const files = JSON.parse(out.slice(out.indexOf('['))).at(0).files.map((f) => f.path);
    check(!files.some((f) => f.endsWith('.node')), `the root package would carry a binary: ${files.filter((f) => f.endsWith('.node'))}`);
    const lifecycle = ['preinstall', 'install', 'postinstall', 'prepare'].filter((s) => pkg.scripts?.[s]);
    check(lifecycle.length === 0, `package.json has install-time scripts: ${lifecycle}`);
    return `root tarball: ${files.length} files, no .node, no install scripts; release targets: ${allTargets.length}`;
  });

  await step('4. registry: verdaccio on 127.0.0.1', async () => `${await startRegistry(tools.verdaccio)} (no uplinks)`);

  await step(`5. publish: npm publish -> prepublishOnly: ${pkg.scripts.prepublishOnly}`, async () => {
    const env = registryEnv({ PATH: [path.join(root, 'node_modules', '.bin'), process.env.PATH].join(path.delimiter) });
    // The registry has no uplinks: the package's own dependencies (the typings' @types/node
    // and what it needs) are published to it from this checkout's node_modules first.
    for (const dep of dependencyClosure(Object.keys(pkg.dependencies || {}))) {
      await run('npm', ['publish', path.join(root, 'node_modules', dep), '--ignore-scripts', '--access', 'public', '--tag', 'latest'], { env, quiet: true });
    }
    await run('npm', ['publish', '--access', 'public'], { cwd: dirs.stage, env, quiet: true });
    const doc = await packument(NAME);
    const published = doc.versions[pkg.version];
    check(published, `${NAME}@${pkg.version} was not published`);
    const expected = Object.fromEntries(TARGETS.map((t) => [`${NAME}-${t.platform}`, pkg.version]));
    check(
      JSON.stringify(published.optionalDependencies) === JSON.stringify(expected),
      `optionalDependencies ${JSON.stringify(published.optionalDependencies)}, expected ${JSON.stringify(expected)}`,
    );
    check(!published.scripts?.install && !published.scripts?.postinstall && !published.scripts?.preinstall, 'the published root has install scripts');
    for (const t of TARGETS) {
      const p = (await packument(`${NAME}-${t.platform}`)).versions[pkg.version];
      check(p, `${NAME}-${t.platform}@${pkg.version} was not published`);
      const [os, cpu, libc] = t.platform.split('-');
      check(p.os?.[0] === os && p.cpu?.[0] === cpu && p.libc?.[0] === (libc === 'gnu' ? 'glibc' : libc), `${p.name} has os/cpu/libc ${p.os}/${p.cpu}/${p.libc}`);
      check(p.repository?.url === pkg.repository?.url, `${p.name} has repository ${JSON.stringify(p.repository)}`);
    }
    return `${NAME}@${pkg.version} with optionalDependencies ${Object.keys(expected).join(', ')} (exact versions)`;
  });

  await step('6. install (no cargo on PATH) and load from the platform package', async () => {
    const seconds = await installFresh(dirs.x64, [`${NAME}@${pkg.version}`]);
    facts.installSeconds = seconds;
    const names = installedPackages(dirs.x64);
    check(JSON.stringify(names) === JSON.stringify(expectedInstall('linux-x64-gnu')), `installed packages: ${names}`);
    const rootDir = path.join(dirs.x64, 'node_modules', NAME);
    check(!filesUnder(rootDir).some((f) => f.endsWith('.node')), 'the installed root package holds a .node file');
    const expected = path.join(dirs.x64, 'node_modules', `${NAME}-linux-x64-gnu`, `${BIN}.linux-x64-gnu.node`);
    const smoke = await runSmoke(dirs.x64, process.execPath, [], noRustEnv(process.execPath));
    check(JSON.stringify(smoke.native) === JSON.stringify([expected]), `loaded ${smoke.native}, expected ${expected}`);
    facts.smokeX64 = smoke;
    return `npm install took ${seconds} s; loaded ${path.relative(dirs.x64, expected)}; smoke ok`;
  });

  await step('7. no binary: --omit=optional gives ERR_NATIVE_BINDING_NOT_FOUND; NAPI_RS_NATIVE_LIBRARY_PATH works', async () => {
    await installFresh(dirs.noOptional, [`${NAME}@${pkg.version}`, '--omit=optional']);
    const withoutPlatform = expectedInstall('').filter((n) => !n.startsWith(`${NAME}-`));
    check(JSON.stringify(installedPackages(dirs.noOptional)) === JSON.stringify(withoutPlatform), `installed: ${installedPackages(dirs.noOptional)}`);
    const env0 = noRustEnv(process.execPath);
    const probe = `try { require('${NAME}'); console.log('LOADED') } catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })) }`;
    const out = await run(process.execPath, ['-e', probe], { cwd: dirs.noOptional, env: env0, quiet: true });
    const line = out.split('\n').find((l) => l.startsWith('{'));
    check(line, `require() did not fail:\n${out}`);
    const e = JSON.parse(line);
    // An ES module that imports the package ends with the same error.
    const esm = await run(process.execPath, ['--input-type=module', '-e', `import '${NAME}';`], { cwd: dirs.noOptional, env: env0, quiet: true }).then(
      (o) => ({ ok: true, output: o }),
      (err) => ({ ok: false, output: err.output }),
    );
    check(!esm.ok && esm.output.includes("code: 'ERR_NATIVE_BINDING_NOT_FOUND'"), `import did not fail with the error:\n${esm.output}`);
    check(e.code === 'ERR_NATIVE_BINDING_NOT_FOUND', `code ${e.code}:\n${e.message}`);
    for (const s of ['linux x64 (glibc ', `${NAME}-linux-x64-gnu@${pkg.version}`, 'Published platforms: linux-x64-gnu, linux-arm64-gnu', 'NAPI_RS_NATIVE_LIBRARY_PATH']) {
      check(e.message.includes(s), `the message lacks "${s}":\n${e.message}`);
    }
    check(!/package-lock|lockfile/i.test(e.message.split('Load attempts:')[0]), `the message gives lockfile advice:\n${e.message}`);
    const env = noRustEnv(process.execPath, { NAPI_RS_NATIVE_LIBRARY_PATH: path.join(dirs.artifacts, `${BIN}.linux-x64-gnu.node`) });
    const smoke = await runSmoke(dirs.noOptional, process.execPath, [], env);
    check(smoke.native[0] === env.NAPI_RS_NATIVE_LIBRARY_PATH, `loaded ${smoke.native}`);
    return 'message names linux x64 (glibc), the missing package, the published platforms and what to do';
  });

  const only = process.env.VERIFY_DIST_SUITES?.split(',').filter(Boolean);
  const pkgDir = path.join(dirs.x64, 'node_modules', NAME);
  cpSync(path.join(root, '__test__'), path.join(pkgDir, '__test__'), { recursive: true });
  const { files, skipped } = selectSuites({ dir: pkgDir, installed: true, only });
  console.log(`\nsuites run against the installed package (${files.length}): ${files.join(' ')}`);
  for (const [f, why] of skipped) console.log(`not run there: ${f} (${why})`);
  facts.tests = {};
  for (const major of NODE_MAJORS) {
    const { node, version } = tools.node[major];
    await step(`8. tests on Node.js ${version} against the installed package`, async () => {
      const r = await runSuites({ dir: pkgDir, node, files, env: noRustEnv(node), onSpawn: track, detached: true });
      facts.tests[version] = { ...r.counts, rerun: [] };
      const summary = `${r.counts.pass}/${r.counts.tests} passed${r.counts.skipped ? `, ${r.counts.skipped} skipped` : ''} (${files.length} suites)`;
      if (r.code === 0) {
        check(r.counts.tests > 0 && !r.counts.fail && !r.counts.cancelled, `counts ${JSON.stringify(r.counts)}`);
        return summary;
      }
      // A test that fails once is run again by itself; both results are reported.
      const namePattern = r.failed.map((n) => `^${escapeRegExp(n)}$`).join('|');
      const again = r.failed.length > 0 && r.failed.length <= 5 ? await runSuites({ dir: pkgDir, node, files, env: noRustEnv(node), namePattern, onSpawn: track, detached: true }) : undefined;
      const passedAgain = (name) => again.output.split('\n').some((l) => /^\s*ok /.test(l) && l.replace(/^\s*ok \d+ - /, '') === name);
      if (!again || again.code !== 0 || !r.failed.every(passedAgain) || r.failed.some((n) => n.includes('__test__'))) {
        throw new Error(`${r.counts.fail ?? '?'} of ${r.counts.tests ?? '?'} failed on ${version}${again ? ' (and again when rerun)' : ''}: ${r.failed.join('; ')}\n${failureDetails(again && again.code !== 0 ? again.output : r.output)}`);
      }
      facts.tests[version].rerun = r.failed;
      console.log(failureDetails(r.output));
      return `${summary}; FLAKY: failed in the full run, passed when rerun: ${r.failed.join('; ')}`;
    });
  }

  await step('9. arm64: install with --cpu=arm64, smoke run under qemu-aarch64', async () => {
    const seconds = await installFresh(dirs.arm64, [`${NAME}@${pkg.version}`, '--cpu=arm64', '--os=linux', '--libc=glibc']);
    const names = installedPackages(dirs.arm64);
    check(JSON.stringify(names) === JSON.stringify(expectedInstall('linux-arm64-gnu')), `installed packages: ${names}`);
    const expected = path.join(dirs.arm64, 'node_modules', `${NAME}-linux-arm64-gnu`, `${BIN}.linux-arm64-gnu.node`);
    // With PostgreSQL and openssl here, the smoke also connects over verified TLS (rustls
    // with aws-lc-rs, built by the cross toolchain) from the arm64 build.
    const pg = findPostgres() !== null && hasOpenssl() ? await startPostgres(findPostgres(), { ssl: true }) : null;
    let smoke;
    try {
      const env = pg === null ? {} : { BMAD_SMOKE_PG_URL: pg.url, BMAD_SMOKE_PG_CA: pg.ca };
      smoke = await runSmoke(dirs.arm64, tools.qemu, ['-L', tools.sysroot, tools.nodeArm64.node], noRustEnv(process.execPath, env));
    } finally {
      if (pg !== null) pg.stop();
    }
    check(smoke.arch === 'arm64', `the smoke ran on ${smoke.arch}`);
    if (pg !== null) check(smoke.postgresTls && smoke.postgresTls.wrongName === 'refused', `PostgreSQL over TLS on arm64: ${JSON.stringify(smoke.postgresTls)}`);
    check(JSON.stringify(smoke.native) === JSON.stringify([expected]), `loaded ${smoke.native}, expected ${expected}`);
    facts.smokeArm64 = smoke;
    const tlsNote = pg === null ? 'no PostgreSQL/openssl here: TLS not checked' : 'PostgreSQL over verify-full TLS ok';
    return `install ${seconds} s; node ${smoke.node} arm64 under qemu loaded ${path.relative(dirs.arm64, expected)}; smoke ok; ${tlsNote}`;
  });
} catch (err) {
  failure = err;
}

// ----- summary -----------------------------------------------------------------------------------

const total = ((Date.now() - tStart) / 1000).toFixed(1);
console.log('\n== summary');
for (const r of results) console.log(`${r.ok ? 'ok  ' : 'FAIL'} ${r.s.padStart(6)} s  ${r.name}${r.note ? ` — ${r.note}` : ''}`);
for (const t of TARGETS) if (facts[t.platform]) console.log(`${t.platform}: highest GLIBC_${facts[t.platform].glibcMax} (limit ${GLIBC_LIMIT})`);
if (facts.tests) {
  for (const [v, c] of Object.entries(facts.tests)) {
    console.log(`node ${v}: ${c.pass ?? 0} passed, ${c.fail ?? 0} failed, ${c.skipped ?? 0} skipped${c.rerun.length ? `; passed when rerun: ${c.rerun.join('; ')}` : ''}`);
  }
}
console.log(`total ${total} s`);
if (failure) {
  console.error(`\nverify:dist FAILED${failure.step ? ` at "${failure.step}"` : ''}: ${failure.message}`);
  process.exitCode = 1;
} else {
  console.log('verify:dist passed');
}
