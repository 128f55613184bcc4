// The typings (index.d.ts, index.d.mts) checked with the TypeScript compiler, as consumers'
// projects would: module NodeNext, target ES2022, --strict, exactOptionalPropertyTypes, the
// package imported by its name; with TypeScript 5 (node_modules/typescript) and TypeScript 7
// (node_modules/typescript7, the native compiler).
//
// - types/example.ts uses every public method, option and event (with their payload fields),
//   types/entry-esm.mts and types/entry-cjs.cts check that the ESM default import and CommonJS
//   `import x = require()` are typed as they behave at run time (tsconfig.json);
// - types/negative.ts holds mistakes marked `// @ts-expect-error`: if the typings were loosened,
//   tsc would report the directive unused (TS2578) and the check would fail (compiled by
//   tsconfig.negative.json: --strict without noImplicitAny, see there why); the directives are
//   also checked to fail for the reason they name, with both compilers;
// - a consumer-like project (a temp directory: "type": "module", the package in node_modules,
//   @types/node inside the package's own node_modules, a tsconfig without "types") compiles
//   the same files: TypeScript 7 loads no @types by default, nor does TypeScript 5 from there,
//   so only the package's `/// <reference types="node" />` brings in the Node.js types;
// - the whole check is run against copies of index.d.ts loosened to `any`, with untyped event
//   methods, and without that reference, to prove it then fails.
//
// TypeScript 5 runs take seconds each and TypeScript 7 ones a fraction of that: the proofs use
// TypeScript 7, and TypeScript 5 compiles each project once.
import { after, describe, test as nodeTest } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync, copyFileSync, symlinkSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const typesDir = join(root, '__test__', 'types');
const require = createRequire(import.meta.url);
const ts = require(join(root, 'node_modules', 'typescript'));
const PKG = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).name;

/** The two compilers: `dir` under node_modules, the major version it must have. */
const TS5 = { name: 'TypeScript 5', dir: 'typescript', major: 5 };
const TS7 = { name: 'TypeScript 7', dir: 'typescript7', major: 7, install: '"typescript7": "npm:typescript@^7.0.2" (devDependencies)' };
const COMPILERS = [TS5, TS7];

const versionOf = (c) => {
  const file = join(root, 'node_modules', c.dir, 'package.json');
  return existsSync(file) ? JSON.parse(readFileSync(file, 'utf8')).version : undefined;
};

const test = (name, fn) => nodeTest(name, { timeout: 60_000 }, fn);

/** Memoizes a function of no arguments (runs shared by several tests). */
const once = (fn) => {
  let value;
  return () => (value ??= fn());
};

/**
 * tsc -p <project> --noEmit --strict with `compiler`; resolves { code, output } (stdout + stderr).
 * skipLibCheck false type-checks every .d.ts, index.d.ts included (the main checks); the other
 * runs pass --skipLibCheck, which halves their time.
 */
function tsc(compiler, project, { cwd = root, skipLibCheck = true, args = [] } = {}) {
  const bin = join(root, 'node_modules', compiler.dir, 'bin', 'tsc');
  if (!existsSync(bin)) {
    return Promise.reject(new Error(`${compiler.name} is not installed (${bin} is missing): npm install (package.json: ${compiler.install})`));
  }
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      [bin, '-p', project, '--noEmit', '--strict', '--pretty', 'false', ...(skipLibCheck ? ['--skipLibCheck'] : []), ...args],
      { cwd, timeout: 60_000, maxBuffer: 16 * 1024 * 1024 },
      (err, stdout, stderr) => {
        if (err && typeof err.code !== 'number') reject(err);
        else resolve({ code: err ? err.code : 0, output: stdout + stderr });
      },
    );
  });
}

const negativeSource = readFileSync(join(typesDir, 'negative.ts'), 'utf8');
/** negative.ts with its directives disabled (same length: lines and columns stay put). */
const negativeStripped = negativeSource.replace(/\/\/ @ts-expect-error/g, '// @ts-expect-errxr');

/** The `// @ts-expect-error TSxxxx ...` directives of negative.ts: 1-based line, codes, section. */
function directives(source) {
  const out = [];
  let section = '';
  source.split('\n').forEach((text, i) => {
    const header = /^\s*\/\/ -{3,} (\w+)/.exec(text);
    if (header) section = header[1];
    if (/^\s*\/\/ @ts-expect-error/.test(text)) {
      const m = /^\s*\/\/ @ts-expect-error((?:\s+TS\d+)+)\s+(.*)$/.exec(text);
      assert.ok(m, `negative.ts:${i + 1}: a directive must name the TS error code(s) it expects: ${text.trim()}`);
      out.push({ line: i + 1, codes: m[1].trim().split(/\s+/).map((c) => Number(c.slice(2))), why: m[2], section });
    }
  });
  return out;
}
const DIRECTIVES = directives(negativeSource);

/** "file(line,col): error TSxxxx: ..." lines of tsc output, parsed. */
function parseDiagnostics(output) {
  return [...output.matchAll(/^(.+?)\((\d+),(\d+)\): error TS(\d+): (.*)$/gm)].map((m) => ({
    file: m[1],
    line: Number(m[2]),
    code: Number(m[4]),
    message: m[5],
  }));
}

/**
 * What is wrong with the errors of negative.ts compiled without its directives (`byLine`: line
 * -> [{ code, message }]): a directive's line without the error it names, or a line failing
 * without a directive.
 */
function reasonProblems(byLine) {
  const problems = [];
  const expectedLines = new Set();
  for (const { line, codes, why } of DIRECTIVES) {
    const target = line + 1;
    expectedLines.add(target);
    const errs = byLine.get(target) || [];
    if (errs.length === 0) problems.push(`line ${target} (${why}): no error at all`);
    else if (!errs.some((e) => codes.includes(e.code))) {
      problems.push(`line ${target} (${why}): expected TS${codes.join('/TS')}, got ${errs.map((e) => `TS${e.code} ${e.message}`).join('; ')}`);
    }
  }
  for (const [line, errs] of byLine) {
    if (!expectedLines.has(line)) problems.push(`line ${line} fails without a directive: ${errs.map((e) => `TS${e.code} ${e.message}`).join('; ')}`);
  }
  return problems;
}

const ENTRY_HINT =
  '\nAt run time index.mjs has a real default export and require() returns the class itself, but both ' +
  'conditions of package.json "exports" use the single index.d.ts, which TypeScript reads as a CommonJS ' +
  'module (the package has no "type": "module") whose `export default` is `module.exports.default`.';

/** Asserts a clean tsc run of example.ts and the entry points, explaining entry-point failures. */
function assertClean(r, what) {
  const entryFailed = parseDiagnostics(r.output).some((d) => /entry-(esm|cjs)\.[cm]ts$/.test(d.file));
  assert.equal(r.output, '', `tsc (${what}) reported:\n${r.output}${entryFailed ? ENTRY_HINT : ''}`);
  assert.equal(r.code, 0, `tsc exited with ${r.code}`);
}

// ----- temp projects ------------------------------------------------------------------------------

const tempDirs = [];
function tempDir() {
  const dir = mkdtempSync(join(tmpdir(), 'bmad-bg-types-'));
  tempDirs.push(dir);
  return dir;
}

/** The compilerOptions of types/tsconfig.json (a JSON-with-comments file). */
function mainCompilerOptions() {
  const { config, error } = ts.readConfigFile(join(typesDir, 'tsconfig.json'), ts.sys.readFile);
  assert.equal(error, undefined, 'types/tsconfig.json parses');
  return config.compilerOptions;
}

const REFERENCE = /^\/\/\/ <reference types="node" \/>\r?\n/m;

/**
 * A consumer's project: "type": "module", the package (package.json, index.d.ts given as `dts`,
 * index.d.mts) in node_modules, @types/node in the package's own node_modules (where npm puts
 * it when the consumer's tree holds another version) and nowhere else, and a tsconfig with the
 * options of types/tsconfig.json but no "types". example.ts, the entry points, negative.ts and
 * negative-stripped.ts (negative.ts without its directives) beside it.
 */
function consumerProject(dts = readFileSync(join(root, 'index.d.ts'), 'utf8')) {
  const dir = tempDir();
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }, null, 2));
  const pkgDir = join(dir, 'node_modules', PKG);
  mkdirSync(join(pkgDir, 'node_modules', '@types'), { recursive: true });
  copyFileSync(join(root, 'package.json'), join(pkgDir, 'package.json'));
  copyFileSync(join(root, 'index.d.mts'), join(pkgDir, 'index.d.mts'));
  writeFileSync(join(pkgDir, 'index.d.ts'), dts);
  symlinkSync(join(root, 'node_modules', '@types', 'node'), join(pkgDir, 'node_modules', '@types', 'node'), 'junction');
  for (const f of ['example.ts', 'entry-esm.mts', 'entry-cjs.cts', 'negative.ts']) copyFileSync(join(typesDir, f), join(dir, f));
  writeFileSync(join(dir, 'negative-stripped.ts'), negativeStripped);
  const compilerOptions = { ...mainCompilerOptions() };
  assert.deepEqual(compilerOptions.types, ['node']);
  delete compilerOptions.types;
  const tsconfig = { compilerOptions, files: ['example.ts', 'entry-esm.mts', 'entry-cjs.cts'] };
  writeFileSync(join(dir, 'tsconfig.json'), JSON.stringify(tsconfig, null, 2));
  const negative = { extends: './tsconfig.json', compilerOptions: { noImplicitAny: false }, files: ['negative.ts', 'negative-stripped.ts'] };
  writeFileSync(join(dir, 'tsconfig.negative.json'), JSON.stringify(negative, null, 2));
  return dir;
}

/** Files of a project's program (tsc --listFilesOnly: resolution only, no type-checking). */
async function programFiles(compiler, dir) {
  const r = await tsc(compiler, join(dir, 'tsconfig.json'), { cwd: dir, args: ['--listFilesOnly'] });
  assert.equal(r.code, 0, r.output);
  return r.output.split(/\r?\n/).filter(Boolean);
}
const nodeTypesIn = (files) => files.filter((f) => /[/\\]@types[/\\]node[/\\]/.test(f));

/**
 * Type-checks example.ts and negative.ts (with their tsconfigs) against a modified copy of
 * index.d.ts with TypeScript 7, installed as node_modules/<pkg> of a temp project (a
 * CommonJS-scope directory, like the repo, so the imports resolve and are read exactly as there).
 */
async function checkAgainst(modifiedDts) {
  const dir = tempDir();
  const pkgDir = join(dir, 'node_modules', PKG);
  mkdirSync(pkgDir, { recursive: true });
  copyFileSync(join(root, 'package.json'), join(pkgDir, 'package.json'));
  writeFileSync(join(pkgDir, 'index.d.ts'), modifiedDts);
  symlinkSync(join(root, 'node_modules', '@types'), join(dir, 'node_modules', '@types'), 'junction');
  for (const f of ['example.ts', 'negative.ts', 'tsconfig.json', 'tsconfig.negative.json']) {
    copyFileSync(join(typesDir, f), join(dir, f));
  }
  writeFileSync(join(dir, 'tsconfig.example.json'), JSON.stringify({ extends: './tsconfig.json', files: ['example.ts'] }));
  const [a, b] = await Promise.all([
    tsc(TS7, join(dir, 'tsconfig.example.json'), { cwd: dir }),
    tsc(TS7, join(dir, 'tsconfig.negative.json'), { cwd: dir }),
  ]);
  const output = a.output + b.output;
  return { code: a.code || b.code, output, diagnostics: parseDiagnostics(output) };
}

// ----- shared runs --------------------------------------------------------------------------------

const repoMain = Object.fromEntries(
  COMPILERS.map((c) => [c.major, once(() => tsc(c, join(typesDir, 'tsconfig.json'), { skipLibCheck: false }))]),
);
const consumer = once(() => consumerProject());
const consumerMain = Object.fromEntries(
  COMPILERS.map((c) => [c.major, once(() => tsc(c, join(consumer(), 'tsconfig.json'), { cwd: consumer(), skipLibCheck: false }))]),
);
const consumerNegative = once(() => tsc(TS7, join(consumer(), 'tsconfig.negative.json'), { cwd: consumer() }));

// tsc runs take seconds each: the tests of this file run concurrently.
describe('typings (tsc, module NodeNext, --strict, exactOptionalPropertyTypes)', { concurrency: true }, () => {
  after(() => {
    for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
  });

  test('the compilers are TypeScript 5.x (node_modules/typescript) and 7.x (node_modules/typescript7)', () => {
    for (const c of COMPILERS) {
      const version = versionOf(c);
      assert.ok(version, `${c.name} is not installed in node_modules/${c.dir}: npm install (package.json: ${c.install || c.dir})`);
      assert.equal(Number(version.split('.')[0]), c.major, `node_modules/${c.dir} is TypeScript ${version}`);
    }
    assert.equal(ts.version, versionOf(TS5), 'the compiler API used below is TypeScript 5');
  });

  // ----- the main checks ---------------------------------------------------------------------------

  for (const c of COMPILERS) {
    test(`example.ts and the entry points type-check, types ["node"]: ${c.name}, tsc -p types/tsconfig.json`, async () => {
      assertClean(await repoMain[c.major](), `${c.name}, types/tsconfig.json`);
    });
  }

  test('example.ts and the entry points type-check without exactOptionalPropertyTypes: TypeScript 7', async () => {
    const r = await tsc(TS7, join(typesDir, 'tsconfig.json'), { skipLibCheck: false, args: ['--exactOptionalPropertyTypes', 'false'] });
    assertClean(r, 'TypeScript 7, exactOptionalPropertyTypes false');
  });

  test('negative.ts type-checks, i.e. every @ts-expect-error is used: TypeScript 7, tsc -p types/tsconfig.negative.json', async () => {
    // With TypeScript 5 this follows from the in-process check below (every directive's line
    // fails, and no other line does).
    const r = await tsc(TS7, join(typesDir, 'tsconfig.negative.json'));
    assert.equal(r.output, '', `tsc reported:\n${r.output}`);
    assert.equal(r.code, 0, `tsc exited with ${r.code}`);
  });

  // ----- a consumer's project without "types" -------------------------------------------------------

  for (const c of COMPILERS) {
    test(`a consumer project without "types" compiles example.ts and the entry points: ${c.name}`, async () => {
      assertClean(await consumerMain[c.major](), `${c.name}, consumer project`);
    });
  }

  test('in the consumer project, negative.ts type-checks and each of its lines fails for the reason it names: TypeScript 7', async () => {
    const r = await consumerNegative();
    const diagnostics = parseDiagnostics(r.output);
    const elsewhere = diagnostics.filter((d) => d.file !== 'negative-stripped.ts');
    assert.deepEqual(elsewhere.map((d) => `${d.file}(${d.line}): TS${d.code} ${d.message}`), [], 'errors outside negative-stripped.ts');
    assert.notEqual(r.code, 0, 'negative-stripped.ts fails');
    const byLine = new Map();
    for (const d of diagnostics) {
      if (!byLine.has(d.line)) byLine.set(d.line, []);
      byLine.get(d.line).push({ code: d.code, message: d.message });
    }
    assert.deepEqual(reasonProblems(byLine), []);
  });

  test('the consumer project sees @types/node only through the reference in index.d.ts: without it, tsc fails', async () => {
    const src = readFileSync(join(root, 'index.d.ts'), 'utf8');
    assert.match(src, REFERENCE, 'index.d.ts references the Node.js types');
    const without = consumerProject(src.replace(REFERENCE, ''));
    for (const c of COMPILERS) {
      const [withRef, withoutRef] = await Promise.all([programFiles(c, consumer()), programFiles(c, without)]);
      assert.ok(nodeTypesIn(withRef).length > 10, `${c.name}: the consumer program holds @types/node:\n${withRef.join('\n')}`);
      assert.deepEqual(nodeTypesIn(withoutRef), [], `${c.name}: without the reference, nothing else brings in @types/node`);
    }
    const r = await tsc(TS7, join(without, 'tsconfig.json'), { cwd: without, skipLibCheck: false });
    assert.notEqual(r.code, 0, 'TypeScript 7 fails without the reference');
    assert.match(r.output, /Cannot find name 'node:events'/);
    assert.match(r.output, /Cannot find namespace 'NodeJS'/);
  });

  // ----- proof that the check catches loosened typings ---------------------------------------------

  test('control: the same check against an unmodified copy of index.d.ts passes', async () => {
    const r = await checkAgainst(readFileSync(join(root, 'index.d.ts'), 'utf8'));
    assert.equal(r.output, '', r.output);
    assert.equal(r.code, 0);
  });

  test('with index.d.ts loosened to `any`, the check fails: every @ts-expect-error is reported unused', async () => {
    const src = readFileSync(join(root, 'index.d.ts'), 'utf8');
    const loose = new Map();
    for (const m of src.matchAll(/^\s*export (?:declare )?(type|interface|class) (\w+)(<[^>]*>)?/gm)) {
      const [, kind, name, params = ''] = m;
      if (loose.has(name)) continue;
      loose.set(name, kind === 'class' ? `export declare const ${name}: any;\nexport type ${name}${params} = any;\n` : `export type ${name}${params} = any;\n`);
    }
    assert.ok(loose.size > 40, `every public name is loosened (${loose.size} found)`);
    const r = await checkAgainst([...loose.values()].join('') + 'export default BackgroundExecutor;\n');
    assert.notEqual(r.code, 0, 'tsc must fail against typings loosened to any');
    const imports = r.diagnostics.filter((d) => d.code === 2305 || d.code === 2307);
    assert.deepEqual(imports, [], 'the loosened typings export every name the checks import');
    const unused = new Set(r.diagnostics.filter((d) => d.file === 'negative.ts' && d.code === 2578).map((d) => d.line));
    const notReported = DIRECTIVES.filter((d) => !unused.has(d.line)).map((d) => `line ${d.line + 1}: ${d.why}`);
    assert.deepEqual(notReported, [], 'directives that stayed "used" with any-typings (they test nothing)');
    assert.ok(
      r.diagnostics.some((d) => d.file === 'example.ts'),
      `example.ts's exact-type checks must fail with any-typings too:\n${r.output}`,
    );
  });

  test('with untyped event methods (plain EventEmitter on/once/emit), every event check fails', async () => {
    const src = readFileSync(join(root, 'index.d.ts'), 'utf8');
    const loose = src.replace(/^\s+(on|once|off|addListener|prependListener|removeListener|emit)<E extends keyof \w+>\(.*\): (this|boolean);\n/gm, '');
    assert.notEqual(loose, src, 'the typed listener methods were found and removed');
    const r = await checkAgainst(loose);
    assert.notEqual(r.code, 0, 'tsc must fail when the event methods are untyped');
    const unused = new Set(r.diagnostics.filter((d) => d.file === 'negative.ts' && d.code === 2578).map((d) => d.line));
    const eventDirectives = DIRECTIVES.filter((d) => d.section === 'events');
    assert.ok(eventDirectives.length >= 8, `negative.ts has ${eventDirectives.length} event checks`);
    const notReported = eventDirectives.filter((d) => !unused.has(d.line)).map((d) => `line ${d.line + 1}: ${d.why}`);
    assert.deepEqual(notReported, [], 'event checks that did not notice untyped event methods');
  });

  // ----- in-process checks (TypeScript 5's API; they block this process while the tsc runs go on) ------

  test('the typed example uses every public method, property, option and event name of index.d.ts', () => {
    const dts = ts.createSourceFile('index.d.ts', readFileSync(join(root, 'index.d.ts'), 'utf8'), ts.ScriptTarget.ES2022, true);
    const example = readFileSync(join(typesDir, 'example.ts'), 'utf8');
    const wanted = new Map(); // name -> where it is declared
    // `default` (the CommonJS module's `.default`) is exercised by types/entry-cjs.cts.
    const INHERITED_OK = new Set(['constructor', 'default']);
    const nameOf = (m) => (m.name && (ts.isIdentifier(m.name) || ts.isStringLiteral(m.name)) ? m.name.text : undefined);
    // Declarations stand at the top level or inside `declare namespace` blocks.
    const statements = (list) =>
      list.flatMap((n) => (ts.isModuleDeclaration(n) && n.body && ts.isModuleBlock(n.body) ? statements(n.body.statements) : [n]));
    for (const node of statements(dts.statements)) {
      const decl = ts.isClassDeclaration(node) || ts.isInterfaceDeclaration(node) ? node : undefined;
      if (!decl || !decl.name) continue;
      const owner = decl.name.text;
      const relevant =
        ts.isClassDeclaration(decl) ||
        /Config$|Options$|Events$/.test(owner) ||
        ['AgentContext', 'ExecutorError'].includes(owner);
      if (!relevant) continue;
      for (const m of decl.members) {
        const name = nameOf(m);
        if (name !== undefined && !INHERITED_OK.has(name)) wanted.set(`${owner}.${name}`, name);
      }
    }
    assert.ok(wanted.size > 60, `found the public surface (${wanted.size} names)`);
    const missing = [...wanted]
      .filter(([, name]) => {
        const esc = name.replace(/[-/\\^$*+?.()|[\]{}]/g, '\\$&');
        // a property access, a key, a call or an event-name string
        return !new RegExp(`(\\.${esc}\\b|\\b${esc}\\s*[:(,=]|['"]${esc}['"]|\\{[^}]*\\b${esc}\\b)`).test(example);
      })
      .map(([where]) => where);
    assert.deepEqual(missing, [], `index.d.ts names not used by __test__/types/example.ts: ${missing.join(', ')}`);
  });

  test('every @ts-expect-error line of negative.ts fails for the reason it names, and no other line fails: TypeScript 5', () => {
    assert.ok(DIRECTIVES.length >= 20, `negative.ts has ${DIRECTIVES.length} directives`);
    const configPath = join(typesDir, 'tsconfig.negative.json');
    // index.d.ts itself is checked by the main runs: skipLibCheck here.
    const parsed = ts.getParsedCommandLineOfConfigFile(configPath, { strict: true, noEmit: true, skipLibCheck: true }, {
      ...ts.sys,
      onUnRecoverableConfigFileDiagnostic: (d) => assert.fail(ts.flattenDiagnosticMessageText(d.messageText, '\n')),
    });
    assert.equal(parsed.options.exactOptionalPropertyTypes, true);
    const negativePath = join(typesDir, 'negative.ts');
    const host = ts.createCompilerHost(parsed.options);
    const getSourceFile = host.getSourceFile.bind(host);
    host.getSourceFile = (fileName, languageVersion, ...rest) =>
      fileName.replace(/\\/g, '/') === negativePath.replace(/\\/g, '/')
        ? ts.createSourceFile(fileName, negativeStripped, languageVersion, true)
        : getSourceFile(fileName, languageVersion, ...rest);
    const program = ts.createProgram({ rootNames: [negativePath], options: parsed.options, host });
    const diagnostics = ts.getPreEmitDiagnostics(program);
    const elsewhere = diagnostics.filter((d) => !d.file || d.file.fileName.replace(/\\/g, '/') !== negativePath.replace(/\\/g, '/'));
    assert.deepEqual(
      elsewhere.map((d) => ts.flattenDiagnosticMessageText(d.messageText, '\n')),
      [],
      'no errors outside negative.ts',
    );
    const byLine = new Map();
    for (const d of diagnostics) {
      const line = d.file.getLineAndCharacterOfPosition(d.start).line + 1;
      if (!byLine.has(line)) byLine.set(line, []);
      byLine.get(line).push({ code: d.code, message: ts.flattenDiagnosticMessageText(d.messageText, ' ') });
    }
    assert.deepEqual(reasonProblems(byLine), []);
  });
});
