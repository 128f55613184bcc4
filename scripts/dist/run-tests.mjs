// Runs the node --test suites of __test__/ with the Node.js that runs this script, naming each
// file (no shell glob, so it works the same under cmd.exe and on every Node version).
//
//   node scripts/dist/run-tests.mjs [--dir DIR] [--installed] [--only a,b] [--list]
//
// --dir        the directory holding __test__/ (default: the repository). With --installed it
//              is an installed copy of the package, where `../index.mjs` is that package.
// --installed  leaves out the suites that need the repository itself (see REPO_ONLY).
// --only       runs just these suites (file names without .test.mjs/.test.cjs).
// --list       prints the selection and runs nothing.
// Suites of command agents are left out on Windows (see isPosixOnly).
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** Suites that test the repository rather than an installed package, and why. */
export const REPO_ONLY = {
  'pack.test.mjs': 'packs the repository with npm pack and installs the tarball',
  'types.test.mjs': 'compiles against the repository typescript and @types/node (devDependencies)',
};

/** Suites of command agents (`commands*.test.*`), which need POSIX process groups and signals. */
export const isPosixOnly = (f) => /^commands\b/.test(f);

const isSuite = (f) => /\.test\.(mjs|cjs)$/.test(f);
const stem = (f) => f.replace(/\.test\.(mjs|cjs)$/, '');

/** { files, skipped: [[file, reason]] } for the suites in `dir`/__test__. */
export function selectSuites({ dir = root, installed = false, only, platform = process.platform } = {}) {
  const all = readdirSync(path.join(dir, '__test__')).filter(isSuite).sort();
  const files = [];
  const skipped = [];
  for (const f of all) {
    if (only && !only.includes(stem(f))) continue;
    if (installed && REPO_ONLY[f]) skipped.push([f, REPO_ONLY[f]]);
    else if (platform === 'win32' && isPosixOnly(f)) skipped.push([f, 'command agents: POSIX only']);
    else files.push(f);
  }
  if (only) {
    const missing = only.filter((s) => !all.some((f) => stem(f) === s));
    if (missing.length > 0) throw new Error(`no such suites in ${dir}/__test__: ${missing.join(', ')}`);
  }
  return { files, skipped };
}

/**
 * Runs `node --test` (TAP output) on the selected suites with `node` (default: this process's),
 * in `dir`; resolves { code, counts, failed, output }: counts are the runner's closing totals,
 * failed the names of the tests reported `not ok`. `namePattern` runs only the tests it matches;
 * `onSpawn` gets the child process; `detached` starts it in a process group of its own.
 */
export function runSuites({ dir = root, node = process.execPath, files, env = process.env, concurrency = 2, namePattern, onOutput, onSpawn, detached = false } = {}) {
  return new Promise((resolve, reject) => {
    const args = ['--test', '--test-reporter=tap', `--test-concurrency=${concurrency}`];
    if (namePattern) args.push(`--test-name-pattern=${namePattern}`);
    args.push(...files.map((f) => path.join('__test__', f)));
    const child = spawn(node, args, { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'], detached });
    if (onSpawn) onSpawn(child);
    let out = '';
    const take = (chunk) => {
      const s = chunk.toString();
      out += s;
      if (onOutput) onOutput(s);
    };
    child.stdout.on('data', take);
    child.stderr.on('data', take);
    child.on('error', reject);
    child.on('close', (code, signal) => {
      const counts = {};
      for (const m of out.matchAll(/^# (tests|suites|pass|fail|cancelled|skipped|todo) (\d+)$/gm)) counts[m[1]] = Number(m[2]);
      const failed = [...new Set([...out.matchAll(/^\s*not ok \d+ - (.+)$/gm)].map((m) => m[1].replace(/ # .*$/, '')))];
      resolve({ code: code ?? signal, counts, failed, output: out });
    });
  });
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const value = (name) => {
    const i = args.indexOf(name);
    return i >= 0 ? args[i + 1] : undefined;
  };
  const dir = path.resolve(value('--dir') ?? root);
  const only = value('--only')?.split(',').filter(Boolean);
  const { files, skipped } = selectSuites({ dir, installed: args.includes('--installed'), only });
  for (const [f, why] of skipped) console.log(`# not run: ${f} (${why})`);
  if (args.includes('--list')) {
    console.log(files.join('\n'));
  } else {
    console.log(`# node ${process.version}: ${files.length} suites in ${dir}`);
    const { code } = await runSuites({ dir, files, onOutput: (s) => process.stdout.write(s) });
    process.exitCode = code === 0 ? 0 : 1;
  }
}
