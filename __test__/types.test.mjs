// The typings (index.d.ts) checked with the TypeScript compiler, as a consumer's project would:
// module NodeNext, target ES2022, types ["node"], --strict, the package imported by its name.
//
// - types/example.ts uses every public method, option and event (with their payload fields);
// - types/negative.ts holds mistakes marked `// @ts-expect-error`: if the typings were loosened,
//   tsc would report the directive unused (TS2578) and the check would fail (compiled by
//   tsconfig.negative.json: --strict without noImplicitAny, see there why);
// - the directives are also checked to fail for the reason they name, and the whole check is
//   run once against a copy of index.d.ts loosened to `any` (and once with untyped event
//   methods) to prove it then fails;
// - types/entry-esm.mts and types/entry-cjs.cts check that the ESM default import and CommonJS
//   `import x = require()` are typed as they behave at run time.
import { describe, test as nodeTest } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, rmSync, writeFileSync, copyFileSync, symlinkSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const typesDir = join(root, '__test__', 'types');
const TSC = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
const require = createRequire(import.meta.url);
const ts = require(join(root, 'node_modules', 'typescript'));
const PKG = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).name;

const test = (name, fn) => nodeTest(name, { timeout: 60_000 }, fn);

/**
 * tsc -p <project> --noEmit --strict; resolves { code, output } (stdout + stderr). Only the main
 * check (example.ts) also type-checks every .d.ts, index.d.ts included (skipLibCheck false in
 * tsconfig.json); the other runs pass --skipLibCheck, which halves their time.
 */
function tsc(project, { cwd = root, skipLibCheck = true } = {}) {
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      [TSC, '-p', project, '--noEmit', '--strict', '--pretty', 'false', ...(skipLibCheck ? ['--skipLibCheck'] : [])],
      { cwd, timeout: 60_000, maxBuffer: 16 * 1024 * 1024 },
      (err, stdout, stderr) => {
        if (err && typeof err.code !== 'number') reject(err);
        else resolve({ code: err ? err.code : 0, output: stdout + stderr });
      },
    );
  });
}

const negativeSource = readFileSync(join(typesDir, 'negative.ts'), 'utf8');

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

// tsc runs take seconds each: the tests of this file run concurrently.
describe('typings (tsc, module NodeNext, --strict)', { concurrency: true }, () => {

  // ----- the main check ------------------------------------------------------------------------

  test('example.ts (the whole public API) type-checks: tsc -p types/tsconfig.json --noEmit --strict', async () => {
    const r = await tsc(join(typesDir, 'tsconfig.json'), { skipLibCheck: false });
    assert.equal(r.output, '', `tsc reported:\n${r.output}`);
    assert.equal(r.code, 0, `tsc exited with ${r.code}`);
  });

  test('negative.ts type-checks, i.e. every @ts-expect-error is used: tsc -p types/tsconfig.negative.json --noEmit --strict', async () => {
    const r = await tsc(join(typesDir, 'tsconfig.negative.json'));
    assert.equal(r.output, '', `tsc reported:\n${r.output}`);
    assert.equal(r.code, 0, `tsc exited with ${r.code}`);
  });

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

  test('every @ts-expect-error line of negative.ts fails for the reason it names, and no other line fails', () => {
    assert.ok(DIRECTIVES.length >= 20, `negative.ts has ${DIRECTIVES.length} directives`);
    const configPath = join(typesDir, 'tsconfig.negative.json');
    const parsed = ts.getParsedCommandLineOfConfigFile(configPath, { strict: true, noEmit: true }, {
      ...ts.sys,
      onUnRecoverableConfigFileDiagnostic: (d) => assert.fail(ts.flattenDiagnosticMessageText(d.messageText, '\n')),
    });
    const negativePath = join(typesDir, 'negative.ts');
    // Compile negative.ts with the directives disabled (same length: columns stay put).
    const stripped = negativeSource.replace(/\/\/ @ts-expect-error/g, '// @ts-expect-errxr');
    const host = ts.createCompilerHost(parsed.options);
    const getSourceFile = host.getSourceFile.bind(host);
    host.getSourceFile = (fileName, languageVersion, ...rest) =>
      fileName.replace(/\\/g, '/') === negativePath.replace(/\\/g, '/')
        ? ts.createSourceFile(fileName, stripped, languageVersion, true)
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
    assert.deepEqual(problems, []);
  });

  // ----- proof that the check catches loosened typings ---------------------------------------------

  /**
   * Type-checks example.ts and negative.ts (with their tsconfigs) against a modified copy of
   * index.d.ts, installed as node_modules/<pkg> of a temp project (a CommonJS-scope directory,
   * like the repo, so the imports resolve and are read exactly as there).
   */
  async function checkAgainst(modifiedDts) {
    const dir = mkdtempSync(join(tmpdir(), 'bmad-bg-types-'));
    try {
      const pkgDir = join(dir, 'node_modules', PKG);
      mkdirSync(pkgDir, { recursive: true });
      copyFileSync(join(root, 'package.json'), join(pkgDir, 'package.json'));
      writeFileSync(join(pkgDir, 'index.d.ts'), modifiedDts);
      symlinkSync(join(root, 'node_modules', '@types'), join(dir, 'node_modules', '@types'), 'junction');
      for (const f of ['example.ts', 'negative.ts', 'tsconfig.json', 'tsconfig.negative.json']) {
        copyFileSync(join(typesDir, f), join(dir, f));
      }
      const [a, b] = await Promise.all([tsc(join(dir, 'tsconfig.json'), { cwd: dir }), tsc(join(dir, 'tsconfig.negative.json'), { cwd: dir })]);
      const output = a.output + b.output;
      return { code: a.code || b.code, output, diagnostics: parseDiagnostics(output) };
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  test('control: the same check against an unmodified copy of index.d.ts passes', async () => {
    const r = await checkAgainst(readFileSync(join(root, 'index.d.ts'), 'utf8'));
    assert.equal(r.output, '', r.output);
    assert.equal(r.code, 0);
  });

  test('with index.d.ts loosened to `any`, the check fails: every @ts-expect-error is reported unused', async () => {
    const src = readFileSync(join(root, 'index.d.ts'), 'utf8');
    let loose = '';
    for (const m of src.matchAll(/^export (?:declare )?(type|interface|class) (\w+)(<[^>]*>)?/gm)) {
      const [, kind, name, params = ''] = m;
      loose += kind === 'class' ? `export declare const ${name}: any;\nexport type ${name} = any;\n` : `export type ${name}${params} = any;\n`;
    }
    loose += 'export default BackgroundExecutor;\n';
    const r = await checkAgainst(loose);
    assert.notEqual(r.code, 0, 'tsc must fail against typings loosened to any');
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

  // ----- the entry points -----------------------------------------------------------------------------

  test('entry points are typed as they behave: ESM `import BackgroundExecutor from` and CJS `import x = require()` are constructable', async () => {
    const r = await tsc(join(typesDir, 'tsconfig.entry.json'));
    assert.equal(
      r.output,
      '',
      'tsc (module NodeNext) rejects how the package is documented to be used:\n' +
        r.output +
        '\nAt run time index.mjs has a real default export and require() returns the class itself, but both ' +
        'conditions of package.json "exports" use the single index.d.ts, which TypeScript reads as a CommonJS ' +
        'module (the package has no "type": "module") whose `export default` is `module.exports.default`.',
    );
    assert.equal(r.code, 0);
  });

});
