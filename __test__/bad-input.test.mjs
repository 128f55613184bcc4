// Bad input, systematically. Every public method and
// every config key is fed wrong types, NaN, ±Infinity, negative and huge numbers (1e300,
// 2**53), non-integers, empty strings, Symbols, BigInts, boxed primitives, arrays, functions,
// revoked Proxies, throwing getters, circular objects and the names of Object.prototype.
//
// Each table row is one case. A bad value must produce a TypeError or RangeError with the
// documented `code` and a message naming the bad argument (config and monitor messages also
// name the value); promise-returning methods must reject, never throw synchronously; the
// executor must run a good execution afterwards (checked after every row). Rows of one
// method and argument share a subtest that lists every failing row, so one bug shows up as
// one precise list instead of hiding the rows after it.
//
// Decisions this file pins down:
// - A getter (or Proxy trap) that throws while the executor reads the options: the call
//   rejects with that very error (not synchronously) and nothing is submitted.
// - Options are read once, in the call: changing or revoking them afterwards changes nothing.
// - Arrays are not options objects (as for the config, shutdown and ResourceMonitor options).
// - An execution id is only what the executor issued: `exec-01`, `exec-0x1`, `exec- 1` and
//   friends are not `exec-1`.
// - `getExecutionStatus` never throws: any non-id is `{ found: false }`. `watch` is not
//   promise-returning and throws (documented).
import assert from 'node:assert/strict';
import { after } from 'node:test';
import BackgroundExecutor, { ResourceMonitor } from '../index.mjs';
import { test, exitIfWorkLeftBehind, makeExecutor, gate, sleep, waitUntil } from './helpers.mjs';

exitIfWorkLeftBehind();

const MAX_INT32 = 2 ** 31 - 1;
const MAX_MS = 2 ** 31 - 1;
const MAX_SAFE = Number.MAX_SAFE_INTEGER;
const SYM = Symbol('bad');
const BIG = 5n;

function revokedProxy() {
  const { proxy, revoke } = Proxy.revocable({}, {});
  revoke();
  return proxy;
}
const REVOKED = revokedProxy();

// Object.prototype as it was before any case ran (checked at the end and after the
// prototype-named config keys).
const PROTO_SNAPSHOT = snapshotPrototype();
function snapshotPrototype() {
  return Object.getOwnPropertyNames(Object.prototype)
    .sort()
    .map((name) => {
      const d = Object.getOwnPropertyDescriptor(Object.prototype, name);
      return [name, d.value, d.get, d.set, d.writable, d.enumerable, d.configurable];
    });
}
function assertPrototypeUntouched(label) {
  assert.deepEqual(snapshotPrototype(), PROTO_SNAPSHOT, `${label}: Object.prototype changed`);
  for (const k of ['polluted', 'maxConcurrentAgents', 'priority', 'ok', 'worker']) {
    assert.equal(k in {}, false, `${label}: Object.prototype.${k} appeared`);
  }
}

// ----- rendering and assertions -----------------------------------------------------------

/** A label for any value: never throws, never recurses for ever. */
function show(v, depth = 0) {
  switch (typeof v) {
    case 'symbol':
      return v.toString();
    case 'bigint':
      return `${v}n`;
    case 'number':
      return Object.is(v, -0) ? '-0' : String(v);
    case 'string':
      return JSON.stringify(v.length > 40 ? v.slice(0, 37) + '...' : v);
    case 'function':
      return 'function';
    case 'undefined':
      return 'undefined';
    case 'boolean':
      return String(v);
    default:
      if (v === null) return 'null';
      try {
        if (Array.isArray(v)) return depth > 1 ? '[…]' : `[${v.map((x) => show(x, depth + 1)).join(', ')}]`;
        if (v instanceof String || v instanceof Number) return `new ${v.constructor.name}(${show(v.valueOf())})`;
        const keys = Object.keys(v);
        if (depth > 1) return '{…}';
        return `{${keys.map((k) => ` ${k}: ${show(v[k], depth + 1)}`).join(',')}${keys.length ? ' ' : ''}}`;
      } catch {
        return 'revoked Proxy';
      }
  }
}

function errText(err) {
  try {
    return err instanceof Error ? `${err.name} [${err.code}]: ${err.message}` : `non-error ${show(err)}`;
  } catch {
    return 'an unprintable error';
  }
}

/** How a bad value must appear in a config or monitor message (key and value). */
function rendered(value) {
  if (typeof value === 'number') return Object.is(value, -0) ? null : String(value);
  if (typeof value === 'bigint') return `${value}n`;
  if (typeof value === 'symbol') return value.toString();
  if (typeof value === 'string' && value.length > 0 && value.length <= 40) return value;
  return null;
}

/**
 * `err` is a `Ctor` with `code`, and its message names each of `names` (a string, a RegExp,
 * or an array of alternatives) and, with `value`, renders the value.
 */
function assertCoded(err, { Ctor, code, names = [], value, checkValue = false }, label) {
  assert.ok(err instanceof Ctor, `${label}: expected a ${Ctor.name} [${code}], got ${errText(err)}`);
  assert.ok(err.code === code, `${label}: expected code ${code}, got ${errText(err)}`);
  assert.equal(typeof err.message, 'string', `${label}: message is not a string`);
  for (const name of [].concat(names)) {
    const alternatives = Array.isArray(name) ? name : [name];
    const ok = alternatives.some((n) => (n instanceof RegExp ? n.test(err.message) : err.message.includes(n)));
    assert.ok(ok, `${label}: message ${JSON.stringify(err.message)} does not name ${alternatives.join(' / ')}`);
  }
  if (checkValue) {
    const r = rendered(value);
    if (r !== null) assert.ok(err.message.includes(r), `${label}: message ${JSON.stringify(err.message)} does not name the value ${r}`);
  }
}

/** The error `fn` throws synchronously (fails if it returns; shuts down what it built). */
async function thrownBy(fn, label) {
  let made;
  try {
    made = fn();
  } catch (err) {
    return err;
  }
  if (made instanceof BackgroundExecutor) await made.shutdown();
  if (made instanceof ResourceMonitor) made.stop();
  assert.fail(`${label}: accepted (no error thrown)`);
}

/** Settles `p` within `ms`, as `{ ok, value }` or `{ hang: true }`. */
function within(p, ms = 2000) {
  let timer;
  const timeout = new Promise((resolve) => {
    timer = setTimeout(() => resolve({ hang: true }), ms);
  });
  return Promise.race([
    Promise.resolve(p).then(
      (value) => ({ ok: true, value }),
      (value) => ({ ok: false, value }),
    ),
    timeout,
  ]).finally(() => clearTimeout(timer));
}

/** The rejection of the promise `fn` returns; fails on a synchronous throw, a resolution, a hang. */
async function rejectionOf(fn, label) {
  let p;
  try {
    p = fn();
  } catch (err) {
    assert.fail(`${label}: threw synchronously (${errText(err)}) instead of returning a rejected promise`);
  }
  assert.ok(p !== null && typeof p === 'object' && typeof p.then === 'function', `${label}: did not return a promise`);
  const r = await within(p);
  if (r.hang) assert.fail(`${label}: neither resolved nor rejected within 2 s`);
  if (r.ok) assert.fail(`${label}: resolved (${show(r.value).slice(0, 120)}) instead of rejecting`);
  return r.value;
}

/** The value the promise `fn` returns resolves to; fails on a throw, a rejection, a hang. */
async function resolutionOf(fn, label, ms = 2000) {
  let p;
  try {
    p = fn();
  } catch (err) {
    assert.fail(`${label}: threw synchronously (${errText(err)})`);
  }
  const r = await within(p, ms);
  if (r.hang) assert.fail(`${label}: did not settle within ${ms} ms`);
  if (!r.ok) assert.fail(`${label}: rejected (${errText(r.value)})`);
  return r.value;
}

let caseCount = 0;

/**
 * Runs `check(row)` for every row, then `after(row)` (the "still works" check), collecting
 * the failures; fails once with all of them.
 */
async function rows(list, labelOf, check, afterEach) {
  const failures = [];
  for (const row of list) {
    caseCount++;
    const label = labelOf(row);
    try {
      await check(row, label);
    } catch (err) {
      const message = String(err && err.message);
      failures.push(message.startsWith(label) ? message : `${label}: ${message}`);
    }
    if (afterEach) {
      try {
        await afterEach(row, label);
      } catch (err) {
        failures.push(`${label} (afterwards): ${err && err.message}`);
      }
    }
  }
  assert.equal(failures.length, 0, `${failures.length} of ${list.length} cases failed:\n  ${failures.join('\n  ')}`);
}

// ----- value tables --------------------------------------------------------------------------

/** Values of the wrong type for a number: every one must be a TypeError. */
// (Revoked Proxies have their own test below.)
const NOT_NUMBERS = ['5', '', true, null, SYM, BIG, {}, [], [5], () => 5, new Number(5)];

/** Numbers outside the integer range [min, max]: every one must be a RangeError. */
function badIntegers(min, max) {
  const out = [];
  const candidates = [NaN, Infinity, -Infinity, -1, min - 1, 1.5, min + 0.5, 1e300, -1e300, 2 ** 53, max + 1, 2 ** 31, 1e-300];
  for (const v of candidates) {
    if (Number.isInteger(v) && v >= min && v <= max) continue; // valid
    if (out.some((x) => Object.is(x, v))) continue;
    out.push(v);
  }
  return out;
}

/** `[value, Ctor]` rows for an integer in [min, max]. */
function integerRows(min, max) {
  return [...badIntegers(min, max).map((v) => [v, RangeError]), ...NOT_NUMBERS.map((v) => [v, TypeError])];
}

/** `[value, Ctor]` rows for a number accepted by `valid`. */
function numberRows(valid) {
  const candidates = [NaN, Infinity, -Infinity, 0, -0, -1, -Number.MIN_VALUE, -1e300, 1e300, 2 ** 53, 100.5, 101, 1.5, 50];
  return [
    ...candidates.filter((v) => !valid(v)).map((v) => [v, RangeError]),
    ...NOT_NUMBERS.map((v) => [v, TypeError]),
  ];
}

const NOT_STRINGS = [5, 0, NaN, -Infinity, 1e300, null, undefined, true, SYM, BIG, {}, [], ['ok'], () => 'ok', new String('ok')];
const NOT_OBJECTS = ['high', '', 5, 0, NaN, Infinity, true, false, SYM, BIG, () => ({}), [], ['high'], [{ priority: 'high' }]];
const NOT_FUNCTIONS = ['fn', '', 5, NaN, true, SYM, BIG, {}, [], [() => 1], new String('fn')];

// ----- executors ------------------------------------------------------------------------------

const AGENTS = {
  ok: (task) => `ok:${task}`,
  echoOptions: (task, options) => options,
  // Never settles on its own; honours its signal.
  hang: (task, options, { signal }) =>
    new Promise((resolve, reject) => {
      signal.addEventListener('abort', () => reject(signal.reason), { once: true });
    }),
  fail: () => {
    throw new Error('agent failed');
  },
};

/** The executor still runs a good execution, and nothing is left half done. */
async function stillWorks(bg, label) {
  const r = await within(bg.execute('ok', 'after'));
  assert.ok(!r.hang, `${label}: the next good execution hung`);
  assert.ok(r.ok, `${label}: the next good execution failed: ${r.ok ? '' : errText(r.value)}`);
  assert.equal(r.value, 'ok:after', `${label}: the next good execution`);
}

/** Runs `fn(bg)` with a fresh executor, checks it still works at the end, shuts it down. */
async function withExecutor(extra, fn) {
  const bg = makeExecutor({ agents: { ...AGENTS }, ...extra });
  try {
    await fn(bg);
    await stillWorks(bg, 'end of test');
  } finally {
    await bg.shutdown({ timeoutMs: 50 });
  }
}

const submitted = (bg) => bg.getStats().counts.submitted;

/** Expects `call()` to reject with the coded error, submitting nothing. */
async function expectRejected(bg, call, expected, label) {
  const before = submitted(bg);
  const err = await rejectionOf(call, label);
  assertCoded(err, expected, label);
  assert.equal(submitted(bg), before, `${label}: the bad call submitted something`);
}

// The submitting methods, with the name their messages give the agent argument.
const SUBMITTERS = {
  fireAndForget: { agentArg: 'agent', call: (bg, a, t, o) => bg.fireAndForget(a, t, o) },
  executeWithCallback: { agentArg: 'agent', call: (bg, a, t, o) => bg.executeWithCallback(a, t, () => {}, o) },
  executeWatched: { agentArg: 'agent', call: (bg, a, t, o) => bg.executeWatched(a, t, o) },
  execute: { agentArg: 'agent', call: (bg, a, t, o) => bg.execute(a, t, o) },
  executeMultiple: { agentArg: 'agents[0]', call: (bg, a, t, o) => bg.executeMultiple([a], t, o) },
};

/** Submits with `method` and returns the execution's outcome: `{ status, result, error }`. */
async function outcomeOf(bg, method, agent, task, options) {
  switch (method) {
    case 'execute': {
      const r = await within(bg.execute(agent, task, options));
      if (r.hang) throw new Error('execute() did not settle');
      return r.ok ? { status: 'completed', result: r.value } : { status: 'failed', error: r.value };
    }
    case 'executeMultiple': {
      const { results } = await bg.executeMultiple([agent], task, options);
      return { status: results[0].status, result: results[0].result, error: results[0].errorObject };
    }
    case 'executeWithCallback': {
      let settled;
      const done = new Promise((resolve) => (settled = resolve));
      await bg.executeWithCallback(agent, task, (err, result) => settled({ err, result }), options);
      const { err, result } = await done;
      return err ? { status: 'failed', error: err } : { status: 'completed', result };
    }
    default: {
      const { executionId } = await bg[method](agent, task, options);
      const s = await bg.waitFor(executionId);
      return { status: s.status, result: s.result, error: s.errorObject };
    }
  }
}

// ===== 1. constructor config: every key ==========================================================

const CONFIG_ROWS = [];
{
  const intKeys = {
    maxConcurrentAgents: [1, MAX_INT32],
    defaultTimeoutMs: [1, MAX_MS],
    resultTtlMs: [0, MAX_SAFE],
    maxRetainedResults: [0, MAX_SAFE],
    progressIntervalMs: [1, MAX_MS],
    monitorIntervalMs: [1, MAX_MS],
    minConcurrentAgents: [0, MAX_INT32],
    cancelGraceMs: [0, MAX_MS],
    agingMs: [0, MAX_MS],
    retries: [0, 1000],
    retryDelayMs: [0, MAX_MS],
  };
  for (const [key, [min, max]] of Object.entries(intKeys)) {
    for (const [value, Ctor] of integerRows(min, max)) CONFIG_ROWS.push({ key, value, Ctor, names: key });
  }
  for (const [value, Ctor] of numberRows((v) => v > 0 && v <= 100)) CONFIG_ROWS.push({ key: 'maxCpuPercent', value, Ctor, names: 'maxCpuPercent' });
  for (const [value, Ctor] of numberRows((v) => v > 0 && Number.isFinite(v))) CONFIG_ROWS.push({ key: 'maxMemoryMb', value, Ctor, names: 'maxMemoryMb' });
  for (const value of ['true', '', 1, 0, NaN, null, SYM, BIG, {}, [], () => true, new Boolean(false)]) {
    CONFIG_ROWS.push({ key: 'throttleIfExceeded', value, Ctor: TypeError, names: 'throttleIfExceeded' });
  }
  for (const value of ['linear', '', 'FIXED', 'exponential ', 'Exponential']) {
    CONFIG_ROWS.push({ key: 'backoff', value, Ctor: RangeError, names: 'backoff' });
  }
  for (const value of [5, NaN, null, true, SYM, BIG, {}, [], ['fixed'], () => 'fixed', new String('fixed')]) {
    CONFIG_ROWS.push({ key: 'backoff', value, Ctor: TypeError, names: 'backoff' });
  }
  for (const value of [...NOT_FUNCTIONS, null]) CONFIG_ROWS.push({ key: 'defaultAgent', value, Ctor: TypeError, names: 'defaultAgent' });
  // priorityLevels: the object itself, then one bad level
  for (const value of ['high', '', 5, NaN, true, null, SYM, BIG, [], [['high', 5]], () => ({})]) {
    CONFIG_ROWS.push({ key: 'priorityLevels', value, Ctor: TypeError, names: 'priorityLevels' });
  }
  CONFIG_ROWS.push({ key: 'priorityLevels', value: {}, Ctor: RangeError, names: 'priorityLevels', label: '{} (no level)' });
  for (const [v, Ctor] of integerRows(1, MAX_INT32)) {
    if (v === REVOKED) continue; // in the revoked-Proxy test
    CONFIG_ROWS.push({ key: 'priorityLevels', value: { high: 4, urgent: v }, Ctor, names: 'priorityLevels.urgent', shown: v });
  }
  CONFIG_ROWS.push({ key: 'priorityLevels', value: { urgent: 0 }, Ctor: RangeError, names: 'priorityLevels.urgent' });
  CONFIG_ROWS.push({ key: 'priorityLevels', value: JSON.parse('{"__proto__": 0}'), Ctor: RangeError, names: 'priorityLevels.__proto__', label: 'JSON {"__proto__": 0}' });
  CONFIG_ROWS.push({ key: 'priorityLevels', value: { constructor: -1 }, Ctor: RangeError, names: 'priorityLevels.constructor' });
  // agents: the object itself, then one bad agent
  for (const value of ['worker', '', 5, NaN, true, null, SYM, BIG, [], [() => 1], () => 1]) {
    CONFIG_ROWS.push({ key: 'agents', value, Ctor: TypeError, names: 'agents' });
  }
  for (const v of [...NOT_FUNCTIONS, null, undefined]) {
    CONFIG_ROWS.push({ key: 'agents', value: { ok: () => 1, worker: v }, Ctor: TypeError, names: 'agents.worker', label: `{ ok: fn, worker: ${show(v)} }` });
  }
  CONFIG_ROWS.push({ key: 'agents', value: { '': () => 1 }, Ctor: TypeError, names: 'agents', label: '{ "": fn }' });
  CONFIG_ROWS.push({ key: 'agents', value: JSON.parse('{"__proto__": 5}'), Ctor: TypeError, names: 'agents.__proto__', label: 'JSON {"__proto__": 5}' });
  CONFIG_ROWS.push({ key: 'agents', value: { toString: 'not a function' }, Ctor: TypeError, names: 'agents.toString' });
  CONFIG_ROWS.push({ key: 'agents', value: { constructor: Object.prototype }, Ctor: TypeError, names: 'agents.constructor', label: '{ constructor: Object.prototype }' });
}

test('config: every key rejects wrong types, NaN, ±Infinity, negative, huge and non-integer values (coded, naming key and value)', async () => {
  const good = makeExecutor({ agents: { ...AGENTS } });
  try {
    await rows(
      CONFIG_ROWS,
      (r) => `new BackgroundExecutor({ ${r.key}: ${r.label ?? show(r.value)} })`,
      async (r, label) => {
        const err = await thrownBy(() => new BackgroundExecutor({ throttleIfExceeded: false, [r.key]: r.value }), label);
        const scalar = typeof r.value !== 'object' || r.value === null;
        assertCoded(err, { Ctor: r.Ctor, code: 'ERR_INVALID_ARG', names: r.names, value: 'shown' in r ? r.shown : r.value, checkValue: scalar || 'shown' in r }, label);
      },
      // the constructor keeps working, and so does an executor built before
      async (r, label) => stillWorks(good, label),
    );
    const keys = new Set(CONFIG_ROWS.map((r) => r.key));
    assert.equal(keys.size, 18, `every config key of the README is covered: ${[...keys]}`);
  } finally {
    await good.shutdown();
  }
});

test('config: non-object configs (strings, numbers, Symbols, BigInts, arrays, functions, boxed) are a TypeError naming config', async () => {
  await rows(
    ['x', '', 5, 0, NaN, Infinity, true, false, SYM, BIG, [], [{ maxConcurrentAgents: 2 }], () => ({})],
    (v) => `new BackgroundExecutor(${show(v)})`,
    async (v, label) => {
      const err = await thrownBy(() => new BackgroundExecutor(v), label);
      assertCoded(err, { Ctor: TypeError, code: 'ERR_INVALID_ARG', names: 'config' }, label);
    },
  );
  const bg = makeExecutor({ agents: { ...AGENTS } });
  await stillWorks(bg, 'after the bad configs');
  await bg.shutdown();
});

// ===== 2. ResourceMonitor options ==================================================================

test('ResourceMonitor: interval, cpuThreshold, memoryThreshold and the options object are validated (coded, naming option and value)', async () => {
  const monitorRows = [
    ...integerRows(1, MAX_MS).map(([value, Ctor]) => ({ key: 'interval', value, Ctor })),
    ...numberRows((v) => v > 0 && v <= 100).map(([value, Ctor]) => ({ key: 'cpuThreshold', value, Ctor })),
    ...numberRows((v) => v > 0 && Number.isFinite(v)).map(([value, Ctor]) => ({ key: 'memoryThreshold', value, Ctor })),
  ].filter((r) => r.value !== REVOKED);
  const good = new ResourceMonitor({ interval: 1000 });
  const works = (label) => {
    const s = good.check();
    assert.equal(typeof s.cpu, 'number', `${label}: a good monitor samples`);
    assert.ok(Number.isFinite(s.memory) && s.memory > 0, `${label}: memory ${s.memory}`);
  };
  await rows(
    monitorRows,
    (r) => `new ResourceMonitor({ ${r.key}: ${show(r.value)} })`,
    async (r, label) => {
      const err = await thrownBy(() => new ResourceMonitor({ [r.key]: r.value }), label);
      assertCoded(err, { Ctor: r.Ctor, code: 'ERR_INVALID_ARG', names: r.key, value: r.value, checkValue: true }, label);
    },
    (r, label) => works(label),
  );
  await rows(
    ['x', '', 5, NaN, true, SYM, BIG, [], [{ interval: 5 }], () => ({})],
    (v) => `new ResourceMonitor(${show(v)})`,
    async (v, label) => {
      const err = await thrownBy(() => new ResourceMonitor(v), label);
      assertCoded(err, { Ctor: TypeError, code: 'ERR_INVALID_ARG', names: 'options' }, label);
    },
    (v, label) => works(label),
  );
  // A throwing getter propagates its own error; a circular options object is fine.
  const boom = new Error('interval getter');
  assert.equal(await thrownBy(() => new ResourceMonitor({ get interval() { throw boom; } }), 'getter'), boom);
  const circular = { interval: 500, cpuThreshold: 90 };
  circular.self = circular;
  // An unknown key (a typo) is warned about, as the executor's config keys are.
  const warnings = [];
  const onWarning = (w) => warnings.push(w);
  process.on('warning', onWarning);
  const m = new ResourceMonitor(circular);
  await sleep(0);
  process.off('warning', onWarning);
  const mine = warnings.filter((w) => w.code === 'BMAD_BG_UNKNOWN_CONFIG').map((w) => w.message);
  assert.deepEqual(mine, ['ResourceMonitor: unknown option "self" is ignored']);
  assert.equal(m.interval, 500);
  m.start();
  m.stop();
  caseCount += 2;
  works('after the getter and circular cases');
});

// ===== 3. submissions: agent, task, options and every option, for every submitting method ==========

/** Option-field rows: `[field, value, Ctor, code]`. */
const OPTION_FIELD_ROWS = [
  ...['urgent', 'HIGH', '', ' high', '__proto__', 'constructor', 'toString', 'hasOwnProperty', 'valueOf', 5, 0, NaN, Infinity, 1e300, true, SYM, BIG, {}, ['high'], () => 'high', new String('high')].map(
    (v) => ['priority', v, RangeError, 'ERR_UNKNOWN_PRIORITY'],
  ),
  ...integerRows(1, MAX_MS)
    .filter(([v]) => v !== null && v !== REVOKED) // null means "no timeout"
    .map(([v, Ctor]) => ['timeout', v, Ctor, 'ERR_INVALID_ARG']),
  ...['abort', '', 5, true, SYM, BIG, {}, { aborted: false, addEventListener() {} }, [], new AbortController(), () => {}].map((v) => ['signal', v, TypeError, 'ERR_INVALID_ARG']),
  ...['log', '', 5, NaN, true, SYM, BIG, {}, [], new String('f')].map((v) => ['onProgress', v, TypeError, 'ERR_INVALID_ARG']),
  ...integerRows(0, 1000)
    .filter(([v]) => v !== REVOKED)
    .map(([v, Ctor]) => ['retries', v, Ctor, 'ERR_INVALID_ARG']),
  ...integerRows(0, MAX_MS)
    .filter(([v]) => v !== REVOKED)
    .map(([v, Ctor]) => ['retryDelayMs', v, Ctor, 'ERR_INVALID_ARG']),
  ...['linear', '', 'FIXED'].map((v) => ['backoff', v, RangeError, 'ERR_INVALID_ARG']),
  ...[5, NaN, null, true, SYM, BIG, {}, []].map((v) => ['backoff', v, TypeError, 'ERR_INVALID_ARG']),
];

for (const [method, { agentArg, call }] of Object.entries(SUBMITTERS)) {
  test(`${method}: bad agent / task / options / option values reject (never throw) with a coded error naming the argument`, async (t) => {
    await withExecutor({}, async (bg) => {
      const after = (row, label) => stillWorks(bg, label);
      await t.test('agent', () =>
        rows(
          NOT_STRINGS.concat(['']),
          (v) => `${method}(agent = ${show(v)})`,
          (v, label) => expectRejected(bg, () => call(bg, v, 't'), { Ctor: TypeError, code: 'ERR_INVALID_ARG', names: agentArg }, label),
          after,
        ),
      );
      await t.test('task', () =>
        rows(
          NOT_STRINGS,
          (v) => `${method}(task = ${show(v)})`,
          (v, label) => expectRejected(bg, () => call(bg, 'ok', v), { Ctor: TypeError, code: 'ERR_INVALID_ARG', names: 'task' }, label),
          after,
        ),
      );
      await t.test('options (not an object: strings, numbers, Symbols, BigInts, functions, arrays)', () =>
        rows(
          NOT_OBJECTS,
          (v) => `${method}(options = ${show(v)})`,
          (v, label) => expectRejected(bg, () => call(bg, 'ok', 't', v), { Ctor: TypeError, code: 'ERR_INVALID_ARG', names: 'options' }, label),
          after,
        ),
      );
      await t.test('option values', () =>
        rows(
          OPTION_FIELD_ROWS,
          ([field, v]) => `${method}(options = { ${field}: ${show(v)} })`,
          ([field, v, Ctor, code], label) =>
            expectRejected(bg, () => call(bg, 'ok', 't', { [field]: v }), { Ctor, code, names: `options.${field}` }, label),
          after,
        ),
      );
      await t.test('valid edge values are accepted', async () => {
        caseCount++;
        const r = await resolutionOf(() => call(bg, 'ok', 't', { priority: 'critical', timeout: MAX_MS, retries: 1000, retryDelayMs: 0, backoff: 'fixed', signal: null, onProgress: null }), 'edges');
        assert.ok(r !== undefined);
      });
    });
  });
}

test('executeWithCallback: a callback that is not a function, null or undefined rejects naming callback', async () => {
  await withExecutor({}, async (bg) => {
    await rows(
      ['fn', '', 5, 0, NaN, false, true, SYM, BIG, {}, [], [() => {}], new String('f')],
      (v) => `executeWithCallback(callback = ${show(v)})`,
      (v, label) => expectRejected(bg, () => bg.executeWithCallback('ok', 't', v), { Ctor: TypeError, code: 'ERR_INVALID_ARG', names: 'callback' }, label),
      (v, label) => stillWorks(bg, label),
    );
  });
});

test('executeMultiple: bad agents arrays, bad elements and bad consistencyCheck reject naming the argument', async () => {
  await withExecutor({}, async (bg) => {
    const after = (v, label) => stillWorks(bg, label);
    await rows(
      ['ok', '', [], 5, NaN, null, undefined, true, SYM, BIG, {}, { length: 1, 0: 'ok' }, new Set(['ok']), () => ['ok'], new String('ok')],
      (v) => `executeMultiple(agents = ${show(v)})`,
      (v, label) => expectRejected(bg, () => bg.executeMultiple(v, 't'), { Ctor: TypeError, code: 'ERR_INVALID_ARG', names: 'agents' }, label),
      after,
    );
    // eslint-disable-next-line no-sparse-arrays
    const sparse = ['ok', , 'ok'];
    await rows(
      [['ok', 5], ['ok', ''], ['ok', SYM], ['ok', BIG], ['ok', null], ['ok', {}], ['ok', ['ok']], sparse],
      (v) => `executeMultiple(agents = ${v === sparse ? '[ok, <hole>, ok]' : show(v)})`,
      (v, label) => expectRejected(bg, () => bg.executeMultiple(v, 't'), { Ctor: TypeError, code: 'ERR_INVALID_ARG', names: 'agents[1]' }, label),
      after,
    );
    await rows(
      ['x', '', 5, NaN, true, SYM, BIG, {}, []],
      (v) => `executeMultiple(options.consistencyCheck = ${show(v)})`,
      (v, label) =>
        expectRejected(bg, () => bg.executeMultiple(['ok'], 't', { consistencyCheck: v }), { Ctor: TypeError, code: 'ERR_INVALID_ARG', names: 'consistencyCheck' }, label),
      after,
    );
  });
});

// ===== 4. execution ids ===========================================================================

const BAD_IDS = [5, 0, 1, -1, NaN, Infinity, -Infinity, 1e300, 2 ** 53, null, undefined, true, SYM, BIG, {}, [], ['exec-1'], () => 'exec-1', new String('exec-1'), { toString: () => 'exec-1' }];

test('execution ids of every wrong type: waitFor / cancelExecution reject, watch throws, getExecutionStatus says not found', async () => {
  await withExecutor({}, async (bg) => {
    // A running execution with id exec-1: no bad id may reach it.
    const g = gate();
    bg.registerAgent('gated', () => g.promise);
    const { executionId } = await bg.fireAndForget('gated', 't');
    assert.equal(executionId, 'exec-1');
    const expected = { Ctor: TypeError, code: 'ERR_INVALID_ARG', names: 'executionId' };
    const untouched = async (v, label) => {
      assert.equal(bg.getExecutionStatus(executionId).status, 'running', `${label}: exec-1 was affected`);
      await stillWorks(bg, label);
    };
    await rows(BAD_IDS, (v) => `waitFor(${show(v)})`, async (v, label) => assertCoded(await rejectionOf(() => bg.waitFor(v), label), expected, label), untouched);
    await rows(BAD_IDS, (v) => `cancelExecution(${show(v)})`, async (v, label) => assertCoded(await rejectionOf(() => bg.cancelExecution(v), label), expected, label), untouched);
    await rows(BAD_IDS, (v) => `watch(${show(v)})`, async (v, label) => assertCoded(await thrownBy(() => bg.watch(v), label), expected, label), untouched);
    await rows(
      BAD_IDS,
      (v) => `getExecutionStatus(${show(v)})`,
      (v, label) => {
        let r;
        assert.doesNotThrow(() => (r = bg.getExecutionStatus(v)), `${label} threw`);
        assert.deepEqual(r, { found: false }, label);
      },
      untouched,
    );
    g.open('done');
    assert.equal((await bg.waitFor(executionId)).result, 'done');
  });
});

test('an id the executor did not issue is not found, even when it parses to an issued number (exec-01, exec-0x1, exec- 1, …)', async () => {
  await withExecutor({}, async (bg) => {
    const aliases = [
      (n) => `exec-0${n}`,
      (n) => `exec-00${n}`,
      (n) => `exec-+${n}`,
      (n) => `exec- ${n}`,
      (n) => `exec-${n} `,
      (n) => `exec-${n}\n`,
      (n) => `exec-\t${n}`,
      (n) => `exec-${n}.0`,
      (n) => `exec-${n}.`,
      (n) => `exec-${n}e0`,
      (n) => `exec-0x${n.toString(16)}`,
      (n) => `exec-0b${n.toString(2)}`,
      (n) => `exec-0o${n.toString(8)}`,
      (n) => `EXEC-${n}`,
      (n) => `exec_${n}`,
      (n) => `${n}`,
      (n) => `exec-${n}-`,
      () => '',
      () => 'exec-',
      () => 'exec-0',
      () => 'exec--1',
      () => 'exec-NaN',
      () => 'exec-Infinity',
      () => 'exec-1e300',
      () => 'exec-9007199254740993',
      () => '__proto__',
      () => 'constructor',
      () => 'toString',
    ];
    let g;
    bg.registerAgent('gated', () => g.promise);
    await rows(
      aliases,
      (f) => `id ${JSON.stringify(f('N'))} (exec-N issued)`,
      async (f, label) => {
        g = gate();
        const { executionId } = await bg.fireAndForget('gated', 't');
        const n = Number(executionId.slice(5));
        const id = f(n);
        try {
          assert.deepEqual(bg.getExecutionStatus(id), { found: false }, `getExecutionStatus(${JSON.stringify(id)}) of ${executionId}`);
          const w = await within(bg.waitFor(id), 300);
          assert.ok(!w.hang, `waitFor(${JSON.stringify(id)}) waits for ${executionId} instead of resolving { found: false }`);
          assert.deepEqual(w.value, { found: false }, `waitFor(${JSON.stringify(id)})`);
          const first = await within(bg.watch(id).next(), 300);
          assert.deepEqual(first.value, { value: { found: false }, done: false }, `watch(${JSON.stringify(id)})`);
          assert.deepEqual(await bg.cancelExecution(id), { success: false, error: 'Execution not found' }, `cancelExecution(${JSON.stringify(id)})`);
          assert.equal(bg.getExecutionStatus(executionId).status, 'running', `${executionId} was cancelled through ${JSON.stringify(id)}`);
        } finally {
          g.open('done');
          await bg.waitFor(executionId);
        }
      },
      (f, label) => stillWorks(bg, label),
    );
  });
});

// ===== 5. registerAgent / unregisterAgent / setConcurrency (synchronous, documented to throw) ==========

test('registerAgent / unregisterAgent / setConcurrency: every bad value throws a coded error naming the parameter; nothing changes', async () => {
  await withExecutor({}, async (bg) => {
    const after = async (v, label) => {
      assert.equal(bg.getQueueStatus().max_concurrent, 5, `${label}: concurrency changed`);
      await stillWorks(bg, label);
    };
    const badNames = NOT_STRINGS.concat(['']);
    await rows(
      badNames,
      (v) => `registerAgent(${show(v)}, fn)`,
      async (v, label) => assertCoded(await thrownBy(() => bg.registerAgent(v, () => 1), label), { Ctor: TypeError, code: 'ERR_INVALID_ARG', names: 'name' }, label),
      after,
    );
    await rows(
      [...NOT_FUNCTIONS, null, undefined],
      (v) => `registerAgent("x", ${show(v)})`,
      async (v, label) =>
        assertCoded(await thrownBy(() => bg.registerAgent('x', v), label), { Ctor: TypeError, code: 'ERR_INVALID_ARG', names: [['fn', 'agent']] }, label),
      after,
    );
    await assert.rejects(bg.execute('x', 't'), { code: 'ERR_AGENT_NOT_FOUND' }, 'a failed registration registered nothing');
    await rows(
      badNames,
      (v) => `unregisterAgent(${show(v)})`,
      async (v, label) => assertCoded(await thrownBy(() => bg.unregisterAgent(v), label), { Ctor: TypeError, code: 'ERR_INVALID_ARG', names: 'name' }, label),
      after,
    );
    assert.equal(await bg.execute('ok', 'still registered'), 'ok:still registered');
    await rows(
      [...integerRows(1, MAX_INT32), [undefined, TypeError]].filter(([v]) => v !== REVOKED),
      ([v]) => `setConcurrency(${show(v)})`,
      async ([v, Ctor], label) =>
        assertCoded(await thrownBy(() => bg.setConcurrency(v), label), { Ctor, code: 'ERR_INVALID_ARG', names: [/\bn\b/, 'setConcurrency'], value: v, checkValue: true }, label),
      after,
    );
  });
});

// ===== 6. shutdown options ========================================================================

test('shutdown: bad options, throwing getters and Proxies reject (never throw) and leave the executor running', async () => {
  await withExecutor({}, async (bg) => {
    const after = async (v, label) => {
      assert.equal(bg.getStatus().shutting_down, false, `${label}: the executor started shutting down`);
      await stillWorks(bg, label);
    };
    const shutdownRows = [
      ...['now', '', 5, NaN, true, SYM, BIG, [], [{ mode: 'drain' }], () => ({})].map((v) => ({ v, Ctor: TypeError, names: 'options' })),
      ...['nuke', '', 'CANCEL', 'drain '].map((mode) => ({ v: { mode }, Ctor: RangeError, names: 'options.mode' })),
      ...[5, NaN, null, true, SYM, BIG, {}, [], () => 'cancel', new String('cancel')].map((mode) => ({ v: { mode }, Ctor: TypeError, names: 'options.mode' })),
      ...integerRows(0, MAX_MS)
        .filter(([t]) => t !== REVOKED)
        .map(([timeoutMs, Ctor]) => ({ v: { timeoutMs }, Ctor, names: 'options.timeoutMs' })),
    ];
    await rows(
      shutdownRows,
      (r) => `shutdown(${show(r.v)})`,
      async (r, label) => assertCoded(await rejectionOf(() => bg.shutdown(r.v), label), { Ctor: r.Ctor, code: 'ERR_INVALID_ARG', names: r.names }, label),
      after,
    );
    const boom = new Error('shutdown option getter');
    await rows(
      [
        ['{ get mode() { throw } }', { get mode() { throw boom; } }],
        ['{ get timeoutMs() { throw } }', { mode: 'drain', get timeoutMs() { throw boom; } }],
        ['Proxy whose get trap throws', new Proxy({}, { get() { throw boom; } })],
      ],
      ([label]) => `shutdown(${label})`,
      async ([, v], label) => assert.equal(await rejectionOf(() => bg.shutdown(v), label), boom, `${label}: rejects with the getter's own error`),
      after,
    );
  });
});

// ===== 7. getters, Proxies, circular objects and options changed after the call ====================

test('options with a throwing getter or Proxy trap: the call rejects with that error, submits nothing, and the executor works', async () => {
  await withExecutor({}, async (bg) => {
    const fields = ['priority', 'timeout', 'signal', 'onProgress', 'retries', 'retryDelayMs', 'backoff'];
    const list = [];
    for (const method of Object.keys(SUBMITTERS)) {
      for (const field of fields) list.push({ method, what: `a throwing ${field} getter`, make: (boom) => Object.defineProperty({}, field, { get() { throw boom; }, enumerable: true }) });
      list.push({ method, what: 'a Proxy whose get trap throws', make: (boom) => new Proxy({}, { get() { throw boom; } }) });
    }
    list.push({ method: 'executeMultiple', what: 'a throwing consistencyCheck getter', make: (boom) => ({ get consistencyCheck() { throw boom; } }) });
    await rows(
      list,
      (r) => `${r.method}(options = ${r.what})`,
      async (r, label) => {
        const boom = new Error(`boom: ${label}`);
        const before = submitted(bg);
        const err = await rejectionOf(() => SUBMITTERS[r.method].call(bg, 'ok', 't', r.make(boom)), label);
        assert.equal(err, boom, `${label}: rejected with ${errText(err)} instead of the getter's own error`);
        assert.equal(submitted(bg), before, `${label}: submitted something`);
      },
      (r, label) => stillWorks(bg, label),
    );
    // A revoked Proxy as options: reading it throws a TypeError, which the call rejects with.
    await rows(
      Object.keys(SUBMITTERS),
      (m) => `${m}(options = revoked Proxy)`,
      async (m, label) => {
        const err = await rejectionOf(() => SUBMITTERS[m].call(bg, 'ok', 't', revokedProxy()), label);
        assert.ok(err instanceof TypeError, `${label}: ${errText(err)}`);
      },
      (m, label) => stillWorks(bg, label),
    );
  });
});

test('a revoked Proxy where a string, function, id or config is expected gets the usual coded error (describing it must not throw)', async () => {
  await withExecutor({}, async (bg) => {
    const invalid = (Ctor, names) => ({ Ctor, code: 'ERR_INVALID_ARG', names });
    const P = REVOKED;
    const promised = [
      ['execute(P, "t")', () => bg.execute(P, 't'), invalid(TypeError, 'agent')],
      ['fireAndForget("ok", P)', () => bg.fireAndForget('ok', P), invalid(TypeError, 'task')],
      ['executeWithCallback("ok", "t", P)', () => bg.executeWithCallback('ok', 't', P), invalid(TypeError, 'callback')],
      ['executeMultiple(P, "t")', () => bg.executeMultiple(P, 't'), invalid(TypeError, 'agents')],
      ['executeMultiple([P], "t")', () => bg.executeMultiple([P], 't'), invalid(TypeError, 'agents[0]')],
      ['execute("ok", "t", { timeout: P })', () => bg.execute('ok', 't', { timeout: P }), invalid(TypeError, 'options.timeout')],
      ['execute("ok", "t", { signal: P })', () => bg.execute('ok', 't', { signal: P }), invalid(TypeError, 'options.signal')],
      ['execute("ok", "t", { retries: P })', () => bg.execute('ok', 't', { retries: P }), invalid(TypeError, 'options.retries')],
      ['execute("ok", "t", { priority: P })', () => bg.execute('ok', 't', { priority: P }), { Ctor: RangeError, code: 'ERR_UNKNOWN_PRIORITY', names: 'options.priority' }],
      ['waitFor(P)', () => bg.waitFor(P), invalid(TypeError, 'executionId')],
      ['cancelExecution(P)', () => bg.cancelExecution(P), invalid(TypeError, 'executionId')],
      ['shutdown(P)', () => bg.shutdown(P), invalid(TypeError, 'options')],
      ['shutdown({ mode: P })', () => bg.shutdown({ mode: P }), invalid(TypeError, 'options.mode')],
    ];
    const synchronous = [
      ['watch(P)', () => bg.watch(P), invalid(TypeError, 'executionId')],
      ['registerAgent(P, fn)', () => bg.registerAgent(P, () => 1), invalid(TypeError, 'name')],
      ['registerAgent("x", P)', () => bg.registerAgent('x', P), invalid(TypeError, [['fn', 'agent']])],
      ['unregisterAgent(P)', () => bg.unregisterAgent(P), invalid(TypeError, 'name')],
      ['setConcurrency(P)', () => bg.setConcurrency(P), invalid(TypeError, 'setConcurrency')],
      ['new BackgroundExecutor(P)', () => new BackgroundExecutor(P), invalid(TypeError, 'config')],
      ['new BackgroundExecutor({ agents: P })', () => new BackgroundExecutor({ agents: P }), invalid(TypeError, 'agents')],
      ['new BackgroundExecutor({ priorityLevels: P })', () => new BackgroundExecutor({ priorityLevels: P }), invalid(TypeError, 'priorityLevels')],
      ['new BackgroundExecutor({ defaultAgent: P })', () => new BackgroundExecutor({ defaultAgent: P }), invalid(TypeError, 'defaultAgent')],
      ['new BackgroundExecutor({ maxConcurrentAgents: P })', () => new BackgroundExecutor({ maxConcurrentAgents: P }), invalid(TypeError, 'maxConcurrentAgents')],
      ['new BackgroundExecutor({ backoff: P })', () => new BackgroundExecutor({ backoff: P }), invalid(TypeError, 'backoff')],
      ['new ResourceMonitor(P)', () => new ResourceMonitor(P), invalid(TypeError, 'options')],
      ['new ResourceMonitor({ interval: P })', () => new ResourceMonitor({ interval: P }), invalid(TypeError, 'interval')],
    ];
    // Both lists in one table, so that every row runs whatever fails before it.
    await rows(
      [...promised.map((r) => [...r, rejectionOf]), ...synchronous.map((r) => [...r, thrownBy])],
      ([label]) => label,
      async ([label, fn, expected, how]) => assertCoded(await how(fn, label), expected, label),
      (r, label) => stillWorks(bg, label),
    );
    assert.deepEqual(bg.getExecutionStatus(P), { found: false });
  });
});

test('Proxy options that behave are accepted, and the agent receives the very same object', async () => {
  await withExecutor({}, async (bg) => {
    await rows(
      Object.keys(SUBMITTERS),
      (m) => `${m}(options = forwarding Proxy { priority: "high" })`,
      async (m, label) => {
        const seen = [];
        // The traps other than get throw: reading the options needs nothing else.
        const proxy = new Proxy(
          { priority: 'high', timeout: 1000 },
          {
            get: (target, key) => {
              seen.push(key);
              return target[key];
            },
            ownKeys: () => {
              throw new Error('ownKeys');
            },
            has: () => {
              throw new Error('has');
            },
          },
        );
        const out = await outcomeOf(bg, m, 'echoOptions', 't', proxy);
        assert.equal(out.status, 'completed', `${label}: ${out.error && errText(out.error)}`);
        assert.equal(out.result, proxy, `${label}: the agent got another object`);
        assert.ok(seen.includes('priority'), `${label}: priority was not read`);
      },
      (m, label) => stillWorks(bg, label),
    );
  });
});

test('circular options, config, agents and priority levels neither hang nor crash', async () => {
  await withExecutor({}, async (bg) => {
    await rows(
      Object.keys(SUBMITTERS),
      (m) => `${m}(options = circular)`,
      async (m, label) => {
        const options = { priority: 'high', nested: { list: [] } };
        options.self = options;
        options.nested.parent = options;
        options.nested.list.push(options, options.nested);
        const out = await outcomeOf(bg, m, 'echoOptions', 't', options);
        assert.equal(out.status, 'completed', label);
        assert.equal(out.result, options, `${label}: same object`);
      },
      (m, label) => stillWorks(bg, label),
    );
  });
  caseCount += 4;
  const warnings = [];
  const onWarning = (w) => warnings.push(String(w.message));
  process.on('warning', onWarning);
  try {
    const config = { throttleIfExceeded: false, agents: { ok: AGENTS.ok } };
    config.self = config;
    const bg = new BackgroundExecutor(config);
    assert.equal(await bg.execute('ok', 'c'), 'ok:c');
    await bg.shutdown();
    await sleep(0);
    assert.equal(warnings.filter((m) => m.includes('"self"')).length, 1, `one warning for the circular key: ${warnings}`);
  } finally {
    process.off('warning', onWarning);
  }
  const levels = { high: 2, low: 1 };
  levels.self = levels;
  assertCoded(await thrownBy(() => new BackgroundExecutor({ priorityLevels: levels }), 'circular levels'), { Ctor: TypeError, code: 'ERR_INVALID_ARG', names: 'priorityLevels.self' }, 'circular priorityLevels');
  const agents = { ok: AGENTS.ok };
  agents.self = agents;
  assertCoded(await thrownBy(() => new BackgroundExecutor({ agents }), 'circular agents'), { Ctor: TypeError, code: 'ERR_INVALID_ARG', names: 'agents.self' }, 'circular agents');
  // shutdown with a circular options object
  const last = makeExecutor({ agents: { ...AGENTS } });
  const opts = { mode: 'drain' };
  opts.self = opts;
  assert.equal(await resolutionOf(() => last.shutdown(opts), 'shutdown(circular)'), undefined);
});

test('options are read once, in the call: changing or revoking them afterwards changes nothing and crashes nothing', async () => {
  await withExecutor({}, async (bg) => {
    await rows(
      Object.keys(SUBMITTERS),
      (m) => `${m}: options mutated after the call`,
      async (m, label) => {
        const options = { priority: 'high' };
        const before = submitted(bg);
        const pending = outcomeOf(bg, m, 'ok', 't', options);
        Object.assign(options, { signal: {}, onProgress: 5, timeout: 'soon', priority: 'nope', retries: -1, backoff: 5 });
        const out = await pending;
        assert.equal(out.status, 'completed', `${label}: ${out.error && errText(out.error)}`);
        assert.equal(out.result, 'ok:t');
        assert.equal(submitted(bg), before + 1);
      },
      (m, label) => stillWorks(bg, label),
    );
    await rows(
      Object.keys(SUBMITTERS),
      (m) => `${m}: a Proxy whose get trap starts throwing after the call`,
      async (m, label) => {
        let armed = false;
        const proxy = new Proxy(
          { priority: 'high' },
          {
            get(target, key) {
              if (armed) throw new Error(`read ${String(key)} after the call`);
              return target[key];
            },
          },
        );
        const pending = outcomeOf(bg, m, 'ok', 't', proxy);
        armed = true;
        const out = await pending;
        assert.equal(out.status, 'completed', `${label}: ${out.error && errText(out.error)}`);
      },
      (m, label) => stillWorks(bg, label),
    );
    // The timeout in force is the one read in the call, even when the timer fires later.
    caseCount++;
    let armed = false;
    const proxy = new Proxy(
      { timeout: 30 },
      {
        get(target, key) {
          if (armed) throw new Error(`read ${String(key)} when the timeout fired`);
          return target[key];
        },
      },
    );
    const p = bg.execute('hang', 't', proxy);
    armed = true;
    const r = await within(p, 3000);
    assert.ok(!r.hang && !r.ok, 'the execution timed out');
    assert.equal(r.value.code, 'ERR_EXECUTION_TIMEOUT', errText(r.value));
    assert.match(r.value.message, /30 ms/);
  });
});

// ===== 8. the names of Object.prototype: agents, priorities, config keys ==========================

const PROTO_NAMES = ['__proto__', 'constructor', 'toString', 'hasOwnProperty', 'valueOf', 'isPrototypeOf', '__defineGetter__'];

test('__proto__ / constructor / toString … as agent names: ERR_AGENT_NOT_FOUND until registered, whatever the mode', async () => {
  await withExecutor({}, async (bg) => {
    const list = [];
    for (const method of Object.keys(SUBMITTERS)) for (const name of PROTO_NAMES) list.push([method, name]);
    await rows(
      list,
      ([m, name]) => `${m}(${JSON.stringify(name)}) unregistered`,
      async ([m, name], label) => {
        const expected = (err) => {
          assert.ok(err instanceof Error, `${label}: ${errText(err)}`);
          assert.equal(err.code, 'ERR_AGENT_NOT_FOUND', `${label}: ${errText(err)}`);
          assert.equal(err.message, `No agent registered for ${JSON.stringify(name)}`);
          return true;
        };
        if (m === 'executeMultiple') {
          // Reported as that agent's failure in the results.
          const out = await outcomeOf(bg, m, name, 't');
          assert.equal(out.status, 'failed', `${label}: status ${out.status} (result ${show(out.result)})`);
          expected(out.error);
        } else {
          // Refused at submission: no id, no callback.
          const args = m === 'executeWithCallback' ? [name, 't', () => assert.fail(`${label}: callback called`)] : [name, 't'];
          await assert.rejects(bg[m](...args), expected, label);
        }
      },
      ([, name], label) => stillWorks(bg, label),
    );
    await rows(
      PROTO_NAMES,
      (name) => `registerAgent(${JSON.stringify(name)}) / unregisterAgent`,
      async (name, label) => {
        bg.registerAgent(name, (task) => `${name}:${task}`);
        assert.equal(await bg.execute(name, 't'), `${name}:t`, label);
        assert.equal((await outcomeOf(bg, 'executeMultiple', name, 'm')).result, `${name}:m`);
        assert.ok(bg.getStatus().agents.includes(name), `${label}: listed`);
        assert.equal(bg.unregisterAgent(name), true, `${label}: unregistered`);
        assert.equal(bg.unregisterAgent(name), false, `${label}: a second unregister finds nothing`);
        await assert.rejects(bg.execute(name, 't'), { code: 'ERR_AGENT_NOT_FOUND' }, `${label}: gone again`);
      },
      (name, label) => stillWorks(bg, label),
    );
  });
  assertPrototypeUntouched('after registering prototype names');
});

test('__proto__ / constructor / toString as config.agents keys (JSON.parse, Object.defineProperty, null prototype) are ordinary agents', async () => {
  const fromJson = JSON.parse('{"__proto__": 0, "constructor": 0, "toString": 0}');
  for (const k of Object.keys(fromJson)) fromJson[k] = (task) => `${k}:${task}`;
  const defined = {};
  for (const k of ['__proto__', 'constructor', 'toString']) Object.defineProperty(defined, k, { value: (task) => `${k}:${task}`, enumerable: true });
  const bare = Object.create(null);
  for (const k of ['__proto__', 'constructor', 'toString']) bare[k] = (task) => `${k}:${task}`;
  await rows(
    [
      ['JSON.parse', fromJson],
      ['Object.defineProperty', defined],
      ['Object.create(null)', bare],
    ],
    ([how]) => `agents built with ${how}`,
    async ([how, agents], label) => {
      assert.deepEqual(Object.keys(agents).sort(), ['__proto__', 'constructor', 'toString'], `${label}: own keys`);
      await withExecutor({ agents: { ...AGENTS, ...Object.fromEntries(Object.entries(agents)) } }, async (bg) => {
        for (const k of ['__proto__', 'constructor', 'toString']) assert.equal(await bg.execute(k, 't'), `${k}:t`, `${label}: ${k}`);
        await assert.rejects(bg.execute('valueOf', 't'), { code: 'ERR_AGENT_NOT_FOUND' }, `${label}: valueOf`);
      });
      // and passed as is, not spread
      const direct = new BackgroundExecutor({ throttleIfExceeded: false, agents });
      try {
        for (const k of ['__proto__', 'constructor', 'toString']) assert.equal(await direct.execute(k, 'd'), `${k}:d`, `${label} (direct): ${k}`);
      } finally {
        await direct.shutdown();
      }
    },
  );
  assertPrototypeUntouched('after prototype-named agents');
});

test('__proto__ / constructor / toString as priorities: unknown unless they are configured levels', async () => {
  // Unknown with the default levels (also in the option tables above, here for every mode).
  await withExecutor({}, async (bg) => {
    const list = [];
    for (const method of Object.keys(SUBMITTERS)) for (const name of PROTO_NAMES) list.push([method, name]);
    await rows(
      list,
      ([m, name]) => `${m}(priority ${JSON.stringify(name)}) with the default levels`,
      async ([m, name], label) =>
        expectRejected(bg, () => SUBMITTERS[m].call(bg, 'ok', 't', { priority: name }), { Ctor: RangeError, code: 'ERR_UNKNOWN_PRIORITY', names: ['options.priority', 'critical'] }, label),
      (r, label) => stillWorks(bg, label),
    );
  });
  // Real levels when configured (JSON.parse makes "__proto__" an own key).
  const levels = JSON.parse('{"__proto__": 3, "constructor": 2, "toString": 1}');
  const bg = new BackgroundExecutor({ throttleIfExceeded: false, maxConcurrentAgents: 1, priorityLevels: levels, agents: { ...AGENTS } });
  try {
    caseCount += 3;
    bg.pause();
    const ids = [];
    for (const p of ['toString', 'constructor', '__proto__']) ids.push((await bg.fireAndForget('ok', p, { priority: p })).executionId);
    const def = (await bg.fireAndForget('ok', 'default')).executionId;
    assert.deepEqual(
      bg.getQueueStatus().queue.map((q) => q.priority),
      ['__proto__', 'constructor', 'toString', 'toString'],
      'levels order the queue; the missing default "low" falls back to the lowest level',
    );
    assert.equal(bg.getExecutionStatus(def).priority, 'toString');
    await assert.rejects(bg.execute('ok', 't', { priority: 'valueOf' }), { code: 'ERR_UNKNOWN_PRIORITY' });
    bg.resume();
    for (const id of ids) assert.equal((await bg.waitFor(id)).status, 'completed');
    await stillWorks(bg, 'prototype-named levels');
  } finally {
    await bg.shutdown();
  }
  assertPrototypeUntouched('after prototype-named levels');
});

test('__proto__ / constructor / toString … as config keys: one unknown-key warning each, no effect, no prototype pollution', async () => {
  const keys = ['__proto__', 'constructor', 'toString', 'hasOwnProperty', 'valueOf'];
  const json = JSON.parse(
    '{"__proto__": {"polluted": 1, "maxConcurrentAgents": 0, "priority": "urgent"}, "constructor": {"prototype": {"polluted": 2}}, ' +
      '"toString": 5, "hasOwnProperty": null, "valueOf": "x", "throttleIfExceeded": false}',
  );
  const warnings = [];
  const onWarning = (w) => warnings.push(w);
  process.on('warning', onWarning);
  let bg;
  try {
    bg = new BackgroundExecutor(json);
    bg.registerAgent('ok', AGENTS.ok);
    await sleep(0);
    await rows(
      keys,
      (k) => `config key ${JSON.stringify(k)}`,
      (k, label) => {
        const mine = warnings.filter((w) => String(w.message).includes(JSON.stringify(k)));
        assert.equal(mine.length, 1, `${label}: warnings ${warnings.map((w) => w.message)}`);
        assert.equal(mine[0].code, 'BMAD_BG_UNKNOWN_CONFIG');
        assertPrototypeUntouched(label);
      },
    );
    assert.equal(bg.getQueueStatus().max_concurrent, 5, 'the "__proto__" key changed nothing');
    assert.equal(await bg.execute('ok', 'x', {}), 'ok:x', 'no inherited priority');
    await stillWorks(bg, 'prototype-named config keys');
  } finally {
    process.off('warning', onWarning);
    if (bg) await bg.shutdown();
  }
});

// ===== 9. values that reach the native layer =====================================================

test('native layer: every key at its maximum, 2**31-1 concurrency and priorities, huge retry delays and timeouts — no crash', async () => {
  caseCount += 6;
  const bg = new BackgroundExecutor({
    throttleIfExceeded: false,
    maxConcurrentAgents: MAX_INT32,
    minConcurrentAgents: MAX_INT32,
    priorityLevels: { top: MAX_INT32, mid: 2 ** 30, bottom: 1 },
    agingMs: 1,
    resultTtlMs: MAX_SAFE,
    maxRetainedResults: MAX_SAFE,
    progressIntervalMs: MAX_MS,
    monitorIntervalMs: MAX_MS,
    cancelGraceMs: MAX_MS,
    defaultTimeoutMs: MAX_MS,
    retries: 1000,
    retryDelayMs: MAX_MS,
    backoff: 'exponential',
    maxCpuPercent: 100,
    maxMemoryMb: Number.MAX_VALUE,
    agents: { ...AGENTS },
  });
  try {
    await bg.initialize();
    assert.equal(bg.getQueueStatus().max_concurrent, MAX_INT32);
    assert.equal(await bg.execute('ok', 'max', { priority: 'bottom' }), 'ok:max');
    // aging with extreme priorities, one slot
    bg.setConcurrency(1);
    const g = gate();
    bg.registerAgent('gated', () => g.promise);
    const first = bg.execute('gated', 't', { priority: 'top' });
    const queued = [];
    for (let i = 0; i < 30; i++) queued.push(bg.execute('ok', `q${i}`, { priority: ['top', 'mid', 'bottom'][i % 3] }));
    assert.equal(bg.getQueueStatus().queued, 30);
    g.open('opened');
    assert.equal(await first, 'opened');
    assert.equal((await Promise.all(queued)).length, 30);
    bg.setConcurrency(MAX_INT32);
    // a failing execution waits ~MAX_MS (exponential, jittered) for its retry; cancelling it works
    let retry;
    bg.once('execution-retry', (e) => (retry = e));
    const retrying = bg.execute('fail', 't');
    await waitUntil(() => retry !== undefined, 'the execution-retry event');
    assert.ok(retry.delayMs >= MAX_MS / 2 && retry.delayMs <= MAX_MS, `retry delay ${retry.delayMs}`);
    const id = retry.executionId;
    assert.equal(bg.getExecutionStatus(id).status, 'queued');
    assert.equal((await bg.cancelExecution(id)).success, true);
    await assert.rejects(retrying, { code: 'ERR_EXECUTION_CANCELLED' });
    // a MAX_MS timeout, cancelled
    const { executionId } = await bg.fireAndForget('hang', 't', { timeout: MAX_MS });
    assert.equal((await bg.cancelExecution(executionId)).success, true);
    assert.equal((await bg.waitFor(executionId)).status, 'cancelled');
    const stats = bg.getStats();
    assert.ok(stats.counts.submitted >= 33);
    assert.equal(typeof bg.getStatus().resources.cpu, 'number');
    await stillWorks(bg, 'maxima');
  } finally {
    const s = bg.shutdown({ timeoutMs: MAX_MS });
    await resolutionOf(() => s, 'shutdown({ timeoutMs: MAX_MS }) of an executor whose agents honour their signal', 6000);
  }
});

test('native layer: progress() with NaN, ±Infinity, 1e300, 2**53, BigInt, Symbol, strings, objects stays a number in 0..100', async () => {
  await withExecutor({ progressIntervalMs: 1 }, async (bg) => {
    const values = [NaN, Infinity, -Infinity, 1e300, -1e300, 2 ** 53, -(2 ** 53), -0, Number.MIN_VALUE, 150, -5, 42.5, BIG, SYM, '50', '', null, undefined, {}, [], () => 1, REVOKED];
    let step;
    let release;
    const seen = [];
    bg.registerAgent('reporter', async (task, options, { progress }) => {
      for (const v of values) {
        progress(v, { v: show(v) });
        await new Promise((r) => {
          step = r;
          release();
        });
      }
      return 'reported';
    });
    const updates = [];
    bg.on('progress-update', (u) => updates.push(u.progress));
    let ready = new Promise((r) => (release = r));
    const { executionId } = await bg.executeWatched('reporter', 't', { onProgress: (u) => seen.push(u.progress) });
    await rows(
      values,
      (v) => `progress(${show(v)})`,
      async (v, label) => {
        await ready;
        const p = bg.getExecutionStatus(executionId).progress;
        assert.equal(typeof p, 'number', `${label}: progress is ${show(p)}`);
        assert.ok(Number.isFinite(p) && p >= 0 && p <= 100, `${label}: progress ${p}`);
        ready = new Promise((r) => (release = r));
        step();
      },
    );
    assert.equal((await bg.waitFor(executionId)).result, 'reported');
    for (const p of [...seen, ...updates]) assert.ok(Number.isFinite(p) && p >= 0 && p <= 100, `a reported progress of ${p}`);
  });
});

test('native layer: extreme ResourceMonitor thresholds and intervals, many priority levels, 5000 agent names, huge strings', async () => {
  caseCount += 5;
  // monitor extremes
  for (const opts of [
    { interval: MAX_MS, cpuThreshold: Number.MIN_VALUE, memoryThreshold: Number.MAX_VALUE },
    { interval: 1, cpuThreshold: 100, memoryThreshold: Number.MIN_VALUE },
  ]) {
    const m = new ResourceMonitor(opts);
    const exceeded = [];
    m.on('threshold-exceeded', (e) => exceeded.push(...e.exceeded));
    m.start();
    const s = m.check();
    assert.ok(Number.isFinite(s.cpu) && Number.isFinite(s.memory), show(opts));
    await sleep(5);
    m.stop();
    assert.equal(typeof m.getTrends(), 'object');
    if (opts.memoryThreshold === Number.MIN_VALUE) assert.ok(exceeded.includes('memory'), 'any memory exceeds MIN_VALUE MB');
  }
  // 1000 priority levels, the extremes included
  const levels = {};
  for (let i = 0; i < 1000; i++) levels[`l${i}`] = i === 0 ? MAX_INT32 : i;
  await withExecutor({ priorityLevels: levels, maxConcurrentAgents: 1 }, async (bg) => {
    const ps = [];
    for (let i = 0; i < 1000; i += 37) ps.push(bg.execute('ok', `p${i}`, { priority: `l${i}` }));
    assert.equal((await Promise.all(ps)).length, ps.length);
  });
  // 5000 distinct agent names (more than the 4096 with their own statistics) through defaultAgent
  await withExecutor({ defaultAgent: (agent) => agent.length }, async (bg) => {
    const names = Array.from({ length: 5000 }, (_, i) => `agent-${i}`);
    const { results, report } = await bg.executeMultiple(names, 't');
    assert.equal(report.successful, 5000);
    assert.equal(results[4999].result, 'agent-4999'.length);
    assert.ok(bg.getStats().agents.length <= 4097);
  });
  // huge and odd strings as agent names and tasks
  await withExecutor({}, async (bg) => {
    const huge = 'x'.repeat(1 << 20);
    const odd = '\u0000\ud800 \u202e"\\';
    bg.registerAgent(huge, (task) => task.length);
    assert.equal(await bg.execute(huge, huge), 1 << 20);
    await assert.rejects(bg.execute(odd, 't'), (err) => err.code === 'ERR_AGENT_NOT_FOUND' && err.message === `No agent registered for ${JSON.stringify(odd)}`);
    await assert.rejects(bg.execute('ok', 't', { priority: huge }), (err) => err.code === 'ERR_UNKNOWN_PRIORITY' && err.message.length < 1000);
  });
});

test('methods without parameters ignore arguments of every kind', async () => {
  await withExecutor({}, async (bg) => {
    const junk = [SYM, BIG, NaN, REVOKED, { priority: 'nope' }, 'x', () => {}];
    const calls = {
      initialize: async (v) => assert.equal(await bg.initialize(v), bg),
      pause_resume: async (v) => {
        bg.pause(v);
        assert.equal(bg.getQueueStatus(v).paused, true);
        bg.resume(v);
        assert.equal(bg.getQueueStatus(v).paused, false);
      },
      onIdle: async (v) => assert.equal(await resolutionOf(() => bg.onIdle(v), 'onIdle'), undefined),
      queries: (v) => {
        assert.ok(Array.isArray(bg.getActiveExecutions(v)));
        assert.equal(typeof bg.getStatus(v).running, 'number');
        assert.equal(typeof bg.getStats(v).counts.submitted, 'number');
      },
      monitor: (v) => {
        const m = bg.resourceMonitor;
        assert.equal(typeof m.check(v).cpu, 'number');
        assert.equal(typeof m.getStatus(v).memory, 'number');
        assert.ok(Array.isArray(m.getTrends(v).cpu));
      },
    };
    const list = [];
    for (const [name, fn] of Object.entries(calls)) for (const v of junk) list.push([name, fn, v]);
    await rows(list, ([name, , v]) => `${name}(${show(v)})`, ([, fn, v]) => fn(v), (r, label) => stillWorks(bg, label));
  });
});

after(() => assertPrototypeUntouched('end of file'));

test('case count', (t) => {
  t.diagnostic(`bad-input cases: ${caseCount}`);
  assert.ok(caseCount >= 60, `${caseCount} cases`);
});

test('config: each key is read once, so a getter that answers differently later cannot slip past the checks', async () => {
  const reads = new Map();
  const counted = (key, first, later) => ({
    get() {
      const n = (reads.get(key) || 0) + 1;
      reads.set(key, n);
      return n === 1 ? first : later;
    },
    enumerable: true,
  });
  const rate = Object.defineProperties({}, { max: counted('rateLimit.max', 5, 0), intervalMs: counted('rateLimit.intervalMs', 1000, -1) });
  const config = Object.defineProperties(
    {},
    {
      maxConcurrentAgents: counted('maxConcurrentAgents', 2, -1),
      resultTtlMs: counted('resultTtlMs', 1000, -5),
      maxRetainedResults: counted('maxRetainedResults', 10, Number.NaN),
      retryIf: counted('retryIf', () => false, 'not a function'),
      rateLimit: counted('rateLimit', rate, null),
    },
  );
  const bg = new BackgroundExecutor(config); // not spread into another object: read by the executor itself
  try {
    assert.deepEqual(Object.fromEntries(reads), {
      maxConcurrentAgents: 1,
      resultTtlMs: 1,
      maxRetainedResults: 1,
      retryIf: 1,
      rateLimit: 1,
      'rateLimit.max': 1,
      'rateLimit.intervalMs': 1,
    });
    assert.equal(bg.config.resultTtlMs, 1000);
    bg.registerAgent('a', async () => 'ok');
    assert.equal(await bg.execute('a', 't'), 'ok');
  } finally {
    await bg.shutdown();
  }
});

test('ResourceMonitor: interval is read-only, as typed: what start() samples at was checked at construction', () => {
  const m = new ResourceMonitor({ interval: 500 });
  assert.throws(() => {
    m.interval = 0;
  }, TypeError);
  assert.equal(m.interval, 500);
});
