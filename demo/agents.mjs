// The demo's agents. Each one does real work (sampling, hashing, file I/O, child
// processes, parsing) and talks to the executor only through its `context`:
// `context.progress(percent, detail)` and `context.signal`.
//
// `makeAgents({ bg, root, levels, log })` returns `{ monitor, eval, qa, oracle, validator }`.

import { createHash } from 'node:crypto';
import { execFile } from 'node:child_process';
import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { setImmediate as nextTurn, setTimeout as sleep } from 'node:timers/promises';

// ----- small helpers -----------------------------------------------------------------------

const sha256 = (data) => createHash('sha256').update(data).digest('hex');

/** Files under `dir`, recursively, sorted, as absolute paths. */
async function walk(dir, signal) {
  signal?.throwIfAborted();
  const out = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...(await walk(full, signal)));
    else if (entry.isFile()) out.push(full);
  }
  return out.sort();
}

/** `node --check file`: a real syntax check in a child process, killed on abort. */
function nodeCheck(file, signal) {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ['--check', file], { signal, timeout: 5000 }, (err, _stdout, stderr) => {
      if (err && err.name === 'AbortError') reject(signal.reason ?? err);
      // Killed by a signal (Ctrl-C reaches the whole process group): not a syntax error.
      else if (err && err.signal) reject(new Error(`node --check ${path.basename(file)} was killed by ${err.signal}`));
      else if (err) resolve({ ok: false, message: String(stderr).trim().split('\n')[0] });
      else resolve({ ok: true });
    });
  });
}

/** The artifact the validation agents check: a file, or an in-memory markdown string. */
async function loadArtifact(options, signal) {
  if (typeof options.path === 'string') return readFile(options.path, { encoding: 'utf8', signal });
  if (typeof options.source === 'string') return options.source;
  throw new Error('validate: options.path or options.source is required');
}

/** Splits markdown into headings, fenced code blocks and links (outside code blocks). */
export function parseMarkdown(text) {
  const headings = [];
  const blocks = [];
  const links = [];
  let fence = null;
  const lines = text.split('\n');
  lines.forEach((line, i) => {
    const marker = /^(```|~~~)\s*([\w+-]*)\s*$/.exec(line);
    if (fence !== null) {
      if (marker !== null && marker[1] === fence.marker && marker[2] === '') {
        blocks.push({ lang: fence.lang, line: fence.line, body: fence.body.join('\n') });
        fence = null;
      } else {
        fence.body.push(line);
      }
      return;
    }
    if (marker !== null) {
      fence = { marker: marker[1], lang: marker[2], line: i + 1, body: [] };
      return;
    }
    const h = /^(#{1,6})\s+(.+?)\s*#*\s*$/.exec(line);
    if (h !== null) headings.push({ level: h[1].length, text: h[2], line: i + 1 });
    for (const m of line.matchAll(/\[([^\]]+)\]\(([^)\s]+)\)/g)) links.push({ text: m[1], target: m[2], line: i + 1 });
  });
  return { lines: lines.length, headings, blocks, links, unclosedFence: fence };
}

/** Compiles (never runs) a JavaScript example: as an async function body, else as an expression. */
const AsyncFunction = (async () => {}).constructor;
function compileExample(code) {
  // ES `import` lines cannot appear in a function body: keep the line count, drop the import.
  const body = code.replace(/^\s*import\s.+$/gm, (l) => `/* ${l.replace(/\*\//g, '')} */`);
  try {
    new AsyncFunction(body); // eslint-disable-line no-new
    return null;
  } catch (first) {
    try {
      new AsyncFunction(`return (${body}\n);`); // eslint-disable-line no-new
      return null;
    } catch {
      return first.message;
    }
  }
}

/** A check list helper: records each named check, reports progress, yields between checks. */
function checklist(context, total) {
  const checks = [];
  return {
    checks,
    async add(name, ok, detail) {
      context.signal.throwIfAborted();
      checks.push({ name, ok, detail });
      context.progress(Math.round((checks.length / total) * 100), name);
      await nextTurn();
    },
    finish(agent, extra) {
      const failed = checks.filter((c) => !c.ok);
      if (failed.length > 0) {
        const err = new Error(`${agent}: ${failed.length} check(s) failed: ${failed.map((c) => `${c.name} (${c.detail})`).join('; ')}`);
        err.checks = checks;
        throw err;
      }
      return { checks: checks.length, passed: checks.length, names: checks.map((c) => c.name), ...extra };
    },
  };
}

// ----- the agents ----------------------------------------------------------------------------

export function makeAgents({ bg, root, levels, log }) {
  return {
    /** 'monitor': samples the executor's resource monitor a few times. */
    async monitor(task, options, context) {
      const count = options?.samples ?? 5;
      const every = options?.intervalMs ?? 300;
      const samples = [];
      for (let i = 0; i < count; i++) {
        const s = bg.resourceMonitor.getStatus();
        samples.push({ cpu: s.cpu, memory: s.memory, free: s.free_memory, at: s.timestamp });
        context.progress(((i + 1) / count) * 100, `sample ${i + 1}/${count}`);
        if (i + 1 < count) await sleep(every, undefined, { signal: context.signal });
      }
      const stats = (key) => {
        const v = samples.map((s) => s[key]);
        return { min: Math.min(...v), max: Math.max(...v), avg: v.reduce((a, b) => a + b, 0) / v.length };
      };
      return { task, samples: samples.length, cpu: stats('cpu'), memory: stats('memory') };
    },

    /**
     * 'eval':
     * - 'generate-tests': builds hash-chain test vectors (input -> sha256 iterated N times),
     *   in chunks, yielding to the event loop between chunks; returns `{ tests }`.
     * - any other task (validation): compiles every JavaScript example of the artifact.
     */
    async eval(task, options, context) {
      if (task.startsWith('generate-test')) {
        const datasets = options?.datasets ?? 6;
        const perSet = options?.casesPerDataset ?? 16;
        const iterations = options?.iterations ?? 1500;
        const tests = [];
        for (let d = 0; d < datasets; d++) {
          for (let c = 0; c < perSet; c++) {
            // Yield before every few vectors (and before the first: the agent is called inside
            // the submitting call, so work done before the first await would delay the caller).
            if (c % 4 === 0) await nextTurn();
            context.signal.throwIfAborted();
            const input = sha256(`${task}/${d}/${c}`).slice(0, 32);
            let h = Buffer.from(input, 'hex');
            for (let i = 0; i < iterations; i++) h = createHash('sha256').update(h).digest();
            tests.push({ id: `chain-${d + 1}.${String(c + 1).padStart(2, '0')}`, input, iterations, expected: h.toString('hex') });
          }
          context.progress(((d + 1) / datasets) * 100, `dataset ${d + 1}/${datasets}`);
        }
        return { task, datasets, tests };
      }

      const text = await loadArtifact(options, context.signal);
      const md = parseMarkdown(text);
      const js = md.blocks.filter((b) => /^(js|javascript|mjs)$/i.test(b.lang));
      const list = checklist(context, 3);
      await list.add('code fences closed', md.unclosedFence === null, md.unclosedFence ? `line ${md.unclosedFence.line}` : '');
      const untagged = md.blocks.filter((b) => b.lang === '');
      await list.add('code blocks tagged with a language', untagged.length === 0, untagged.map((b) => `line ${b.line}`).join(', '));
      const broken = js.map((b) => ({ line: b.line, error: compileExample(b.body) })).filter((b) => b.error !== null);
      await list.add(
        `${js.length} JavaScript examples compile`,
        broken.length === 0,
        broken.map((b) => `line ${b.line}: ${b.error}`).join('; '),
      );
      return list.finish('eval', { artifact: options.artifact, sha256: sha256(text), codeBlocks: md.blocks.length, compiled: js.length });
    },

    /**
     * 'qa': the "test suite" of this repository: reads and checksums every file of src/ and
     * lib/, and syntax-checks the JavaScript ones with `node --check`; one progress report per
     * file. `options.rounds` repeats the suite (a soak run). Honours `context.signal`.
     */
    async qa(task, options, context) {
      const { signal } = context;
      const files = [...(await walk(path.join(root, 'src'), signal)), ...(await walk(path.join(root, 'lib'), signal))];
      const rounds = options?.rounds ?? 1;
      const total = files.length * rounds;
      const digest = createHash('sha256');
      let done = 0;
      let bytes = 0;
      let lines = 0;
      let syntaxChecked = 0;
      const failures = [];
      try {
        for (let r = 0; r < rounds; r++) {
          for (const file of files) {
            signal.throwIfAborted();
            const rel = path.relative(root, file);
            const data = await readFile(file, { signal });
            const sum = sha256(data);
            digest.update(`${rel}:${sum}\n`);
            bytes += data.length;
            lines += data.toString('utf8').split('\n').length;
            if (/\.(c|m)?js$/.test(file)) {
              const res = await nodeCheck(file, signal);
              syntaxChecked++;
              if (!res.ok) failures.push(`${rel}: ${res.message}`);
            }
            done++;
            context.progress((done / total) * 100, rel);
          }
        }
      } catch (err) {
        if (signal.aborted) {
          // Stop promptly and say how far we got; the executor has already marked us cancelled.
          log('qa', `${context.executionId} saw its signal abort (${signal.reason?.code ?? 'aborted'}): stopped after ${done}/${total} files`);
          const e = new Error(`qa ${task}: stopped after ${done}/${total} files (${signal.reason?.code ?? 'aborted'})`);
          e.cause = signal.reason;
          e.filesDone = done;
          throw e;
        }
        throw err;
      }
      if (failures.length > 0) throw new Error(`qa ${task}: syntax check failed: ${failures.join('; ')}`);
      return { task, files: files.length, rounds, bytes, lines, syntaxChecked, digest: digest.digest('hex') };
    },

    /** 'oracle': the artifact's structure, and its priority table against the executor's. */
    async oracle(task, options, context) {
      const text = await loadArtifact(options, context.signal);
      const md = parseMarkdown(text);
      const list = checklist(context, 4);
      const h1 = md.headings.filter((h) => h.level === 1);
      await list.add('exactly one top-level heading', h1.length === 1, `${h1.length} found`);
      const skips = md.headings.filter((h, i) => i > 0 && h.level > md.headings[i - 1].level + 1);
      await list.add('no skipped heading levels', skips.length === 0, skips.map((h) => `line ${h.line}`).join(', '));
      const required = options.requiredSections ?? [];
      const titles = new Set(md.headings.map((h) => h.text));
      const missing = required.filter((s) => !titles.has(s));
      await list.add(`${required.length} required sections present`, missing.length === 0, `missing: ${missing.join(', ')}`);
      // The "Priority Queue" example must show the levels the executor really uses.
      const section = md.headings.findIndex((h) => /priorit/i.test(h.text));
      const block = section < 0 ? undefined : md.blocks.find((b) => b.line > md.headings[section].line);
      const documented = block ? Object.fromEntries([...block.body.matchAll(/(\w+):\s*(\d+)/g)].map((m) => [m[1], Number(m[2])])) : {};
      const actual = levels();
      const same = JSON.stringify(documented) === JSON.stringify(actual);
      await list.add('documented priority levels match the executor', same, `doc ${JSON.stringify(documented)} vs ${JSON.stringify(actual)}`);
      return list.finish('oracle', { artifact: options.artifact, sha256: sha256(text), headings: md.headings.length, lines: md.lines });
    },

    /**
     * 'validator': traceability from the artifact to the code: every `bg.method(...)` and
     * `bg.resourceMonitor.method(...)` it shows must exist; relative links must resolve
     * (a broken link is a warning, not a failure).
     */
    async validator(task, options, context) {
      const text = await loadArtifact(options, context.signal);
      const md = parseMarkdown(text);
      const code = md.blocks.map((b) => b.body).join('\n');
      const list = checklist(context, 3);
      const methods = [...new Set([...code.matchAll(/\bbg\.(\w+)\s*\(/g)].map((m) => m[1]))];
      const missing = methods.filter((m) => typeof bg[m] !== 'function');
      await list.add(`${methods.length} executor methods exist`, missing.length === 0, `missing: ${missing.join(', ')}`);
      const monitorMethods = [...new Set([...code.matchAll(/\bbg\.resourceMonitor\.(\w+)\s*\(/g)].map((m) => m[1]))];
      const missingMon = monitorMethods.filter((m) => typeof bg.resourceMonitor[m] !== 'function');
      await list.add(`${monitorMethods.length} resource monitor methods exist`, missingMon.length === 0, `missing: ${missingMon.join(', ')}`);
      const base = typeof options.path === 'string' ? path.dirname(options.path) : null;
      const warnings = [];
      let checked = 0;
      for (const link of md.links) {
        if (/^[a-z]+:/i.test(link.target) || link.target.startsWith('#') || base === null) continue;
        checked++;
        try {
          await readFile(path.resolve(base, link.target.split('#')[0]), { signal: context.signal });
        } catch (err) {
          if (context.signal.aborted) throw err;
          warnings.push(`line ${link.line}: link ${link.target} does not resolve (${err.code})`);
        }
      }
      await list.add(`${checked} relative links checked`, true, '');
      return list.finish('validator', { artifact: options.artifact, sha256: sha256(text), methods, monitorMethods, warnings });
    },
  };
}
