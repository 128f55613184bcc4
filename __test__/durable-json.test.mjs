// lib/durable/json.js: the JSON text of durable tasks, options and results, and the refusal
// (ERR_NOT_SERIALIZABLE, naming the path) of every value JSON would drop or change.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { toJson, resultJson, MAX_DEPTH } = require('../lib/durable/json.js');

/** The error `fn` throws, asserted to be a refusal of `path` whose message includes `message`. */
function assertRefused(fn, path, message) {
  let err;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  assert.ok(err, `expected a refusal of ${path}`);
  assert.ok(err instanceof TypeError, `expected a TypeError, got ${err.name}: ${err.message}`);
  assert.equal(err.code, 'ERR_NOT_SERIALIZABLE', err.message);
  assert.equal(err.path, path, err.message);
  assert.ok(err.message.includes(message), `message ${JSON.stringify(err.message)} lacks ${JSON.stringify(message)}`);
  return err;
}

class Point {
  constructor() {
    this.x = 1;
  }
}
class List extends Array {}

const cyclic = () => {
  const o = { a: 1 };
  o.self = o;
  return o;
};
const deepCycle = () => {
  const a = { b: [] };
  a.b.push({ c: a });
  return { a };
};
const symbolKeyed = () => ({ meta: { ok: 1, [Symbol('k')]: 2 } });
const hiddenProperty = () => ({ meta: Object.defineProperty({ ok: 1 }, 'secret', { value: 2, enumerable: false }) });
const arrayWithToJson = () => {
  const list = [1, 2];
  list.toJSON = () => 'x';
  return { list };
};

// [what, root, value, path, message]
const REFUSED = [
  ['a function', 'options', { onDone() {} }, 'options.onDone', 'options.onDone is a function'],
  ['an arrow function in an array', 'options', { list: [1, 2, () => 3] }, 'options.list[2]', 'options.list[2] is a function'],
  ['a class', 'options', { Type: Point }, 'options.Type', 'options.Type is a function'],
  ['a symbol', 'options', { s: Symbol('s') }, 'options.s', 'options.s is a symbol (Symbol(s))'],
  ['a BigInt', 'result', { n: 10n }, 'result.n', 'result.n is a BigInt'],
  ['NaN', 'result', { x: NaN }, 'result.x', 'result.x is NaN'],
  ['Infinity', 'result', { x: [Infinity] }, 'result.x[0]', 'result.x[0] is Infinity'],
  ['-Infinity', 'result', { x: -Infinity }, 'result.x', 'result.x is -Infinity'],
  ['undefined in an array', 'options', { list: [0, undefined] }, 'options.list[1]', 'options.list[1] is undefined (JSON turns it into null)'],
  // eslint-disable-next-line no-sparse-arrays
  ['a hole', 'options', { list: [0, , 2] }, 'options.list[1]', 'options.list[1] is a hole (JSON turns it into null)'],
  ['a Date', 'options', { when: new Date(0) }, 'options.when', 'options.when is a Date (a class instance); pass date.toISOString()'],
  ['a Map', 'options', { m: new Map() }, 'options.m', 'options.m is a Map (a class instance)'],
  ['a Set', 'options', { s: new Set([1]) }, 'options.s', 'options.s is a Set (a class instance)'],
  ['a WeakMap', 'options', { w: new WeakMap() }, 'options.w', 'options.w is a WeakMap (a class instance)'],
  ['a RegExp', 'options', { re: /x/g }, 'options.re', 'options.re is a RegExp (a class instance)'],
  ['an Error', 'result', { error: new Error('e') }, 'result.error', 'result.error is an Error (a class instance)'],
  ['a Promise', 'result', { p: Promise.resolve(1) }, 'result.p', 'result.p is a Promise (a class instance)'],
  ['a Buffer', 'result', { data: Buffer.from('ab') }, 'result.data', 'result.data is a Buffer (a class instance)'],
  ['a Uint8Array', 'result', { data: new Uint8Array(2) }, 'result.data', 'result.data is a Uint8Array (a class instance)'],
  ['a Float64Array', 'result', { data: new Float64Array(2) }, 'result.data', 'result.data is a Float64Array (a class instance)'],
  ['an ArrayBuffer', 'result', { data: new ArrayBuffer(2) }, 'result.data', 'result.data is an ArrayBuffer (a class instance)'],
  ['a boxed string', 'options', { s: new String('a') }, 'options.s', 'options.s is a boxed string'],
  ['a boxed number', 'options', { n: new Number(1) }, 'options.n', 'options.n is a boxed number'],
  ['a boxed boolean', 'options', { b: new Boolean(false) }, 'options.b', 'options.b is a boxed boolean'],
  ['a boxed BigInt', 'options', { b: Object(1n) }, 'options.b', 'options.b is a boxed BigInt'],
  ['a class instance', 'result', { at: new Point() }, 'result.at', 'result.at is a Point (a class instance)'],
  ['an Array subclass', 'result', { items: List.from([1]) }, 'result.items', 'result.items is a List (a class instance)'],
  ['an inherited prototype', 'options', { o: Object.create({ inherited: 1 }) }, 'options.o', 'options.o is an object with a custom prototype'],
  ['a symbol key', 'options', symbolKeyed(), 'options.meta', 'options.meta is an object with a symbol key Symbol(k)'],
  ['a non-enumerable property', 'options', hiddenProperty(), 'options.meta', 'options.meta is an object with a non-enumerable property "secret"'],
  ['an object with toJSON', 'options', { x: { toJSON: () => 1 } }, 'options.x', 'options.x is an object with a toJSON method'],
  ['an array with toJSON', 'options', arrayWithToJson(), 'options.list', 'options.list is an array with a toJSON method'],
  ['a cycle', 'options', cyclic(), 'options.self', 'options.self is a cycle (it refers back to options)'],
  ['a deeper cycle', 'result', deepCycle(), 'result.a.b[0].c', 'result.a.b[0].c is a cycle (it refers back to result.a)'],
  ['a key with a space', 'options', { 'a b': { c: () => 1 } }, 'options["a b"].c', 'options["a b"].c is a function'],
  ['a numeric key', 'options', { 1: Symbol.iterator }, 'options["1"]', 'options["1"] is a symbol'],
  ['an empty key', 'options', { '': 1n }, 'options[""]', 'options[""] is a BigInt'],
  ['a key with a quote', 'options', { 'say "hi"': NaN }, 'options["say \\"hi\\""]', 'options["say \\"hi\\""] is NaN'],
  ['an identifier key with $ and _', 'options', { $ok_1: { _x: 1n } }, 'options.$ok_1._x', 'options.$ok_1._x is a BigInt'],
  ['a top-level function', 'task', () => 1, 'task', 'task is a function'],
  ['a top-level Date', 'options', new Date(0), 'options', 'options is a Date (a class instance)'],
];

for (const [what, root, value, path, message] of REFUSED) {
  test(`refuses ${what} at ${path}`, () => {
    assertRefused(() => toJson(value, root), path, message);
    if (root === 'result') assertRefused(() => resultJson(value), path, message);
  });
}

test('a refused options object names its root and nothing is returned', () => {
  assertRefused(() => toJson(undefined, 'options'), 'options', 'options is undefined');
  assertRefused(() => toJson({ a: { b: 1n } }), 'value.a.b', 'value.a.b is a BigInt');
});

test('resultJson stores undefined as null, refuses undefined below the top', () => {
  assert.equal(resultJson(undefined), 'null');
  assert.equal(resultJson(null), 'null');
  assert.equal(resultJson({ a: 1 }), '{"a":1}');
  assertRefused(() => resultJson([undefined]), 'result[0]', 'result[0] is undefined');
  assertRefused(() => resultJson({ n: 1n }), 'result.n', 'result.n is a BigInt');
});

test('a getter that throws is refused with the error as cause', () => {
  const boom = new Error('boom');
  const err = assertRefused(
    () =>
      toJson(
        {
          list: [
            {
              get secret() {
                throw boom;
              },
            },
          ],
        },
        'options',
      ),
    'options.list[0].secret',
    'options.list[0].secret is unreadable (reading it threw: boom)',
  );
  assert.equal(err.cause, boom);
});

test('a Proxy whose traps throw is refused with the error as cause', () => {
  const { proxy, revoke } = Proxy.revocable({}, {});
  revoke();
  const err = assertRefused(() => toJson({ p: proxy }, 'options'), 'options.p', 'options.p is unreadable');
  assert.ok(err.cause instanceof TypeError);

  const trapError = new Error('no keys');
  const noKeys = new Proxy(
    {},
    {
      ownKeys() {
        throw trapError;
      },
    },
  );
  assert.equal(assertRefused(() => toJson({ a: [noKeys] }, 'options'), 'options.a[0]', 'no keys').cause, trapError);
});

test('a getter that throws only when JSON.stringify reads it again is refused at the root', () => {
  let reads = 0;
  const value = {
    get flaky() {
      if (++reads > 1) throw new Error('second read');
      return 1;
    },
  };
  const err = assertRefused(() => toJson({ value }, 'result'), 'result', 'second read');
  assert.equal(err.cause.message, 'second read');
});

test('a getter that calls toJson itself: its refusal is the cause, not the answer', () => {
  const value = {
    get inner() {
      return toJson({ bad: 1n }, 'inner');
    },
  };
  const err = assertRefused(() => toJson(value, 'options'), 'options.inner', 'options.inner is unreadable');
  assert.equal(err.cause.path, 'inner.bad');
  const ok = {
    get inner() {
      return toJson({ good: 1 }, 'inner');
    },
  };
  assert.equal(toJson(ok, 'options'), JSON.stringify(ok));
});

/** `depth` arrays nested in one another. */
function nestedArrays(depth) {
  const root = [];
  let inner = root;
  for (let i = 1; i < depth; i++) {
    const next = [];
    inner.push(next);
    inner = next;
  }
  return root;
}

test(`nesting: ${MAX_DEPTH} levels accepted, one more refused`, () => {
  assert.equal(MAX_DEPTH, 1000);
  const ok = nestedArrays(MAX_DEPTH);
  assert.equal(toJson(ok, 'result'), JSON.stringify(ok));
  const path = 'result' + '[0]'.repeat(MAX_DEPTH);
  const err = assertRefused(() => toJson(nestedArrays(MAX_DEPTH + 1), 'result'), path, 'is nested deeper than 1000 levels');
  assert.ok(err.message.length < 400, `message of ${err.message.length} characters`);
  assert.ok(err.message.startsWith('result[0][0]'), err.message);
});

test('deep nesting is refused without a stack overflow', () => {
  for (const depth of [10_000, 200_000]) {
    const arrays = nestedArrays(depth);
    const objects = {};
    let inner = objects;
    for (let i = 0; i < depth; i++) inner = inner.a = {};
    for (const value of [arrays, objects]) {
      let err;
      try {
        toJson(value, 'options');
      } catch (e) {
        err = e;
      }
      assert.ok(err && !(err instanceof RangeError), `depth ${depth}: ${err && err.message}`);
      assert.equal(err.code, 'ERR_NOT_SERIALIZABLE');
      assert.match(err.message, /is nested deeper than 1000 levels/);
    }
  }
  assert.ok(assertRefused(() => toJson({ a: nestedArrays(5000) }, 'options'), `options.a${'[0]'.repeat(999)}`, 'nested'));
});

const lone = JSON.parse('"\\ud800"');
const protoKey = JSON.parse('{"__proto__": {"x": 1}, "y": [1]}');
const nullProto = Object.assign(Object.create(null), { a: 1, nested: Object.assign(Object.create(null), { b: [true] }) });
const ACCEPTED = [
  null,
  true,
  false,
  0,
  1,
  -1.5,
  0.1,
  1e21,
  1e-7,
  123456789012345680000,
  Number.MAX_VALUE,
  -Number.MAX_VALUE,
  Number.MIN_VALUE,
  Number.MAX_SAFE_INTEGER,
  2 ** 53 + 2,
  '',
  'plain',
  'héllo wörld 世界 🎉 ﷺ',
  '"quotes" \\backslash\\ /slash/',
  '\n\r\t\b\f\v\u0000\u0001\u001f\u007f',
  '\u2028\u2029',
  lone,
  '\udc00x\ud83d',
  'x'.repeat(100_000),
  [],
  {},
  [[[]]],
  [1, [2, [3, [4, [5]]]], 'x', null, true, { a: [{}] }],
  { 'a b': 1, 'é': 2, '"q"': 3, '\n': 4, '': 5, '🎉': 6, '\u0000': 7, [lone]: 8 },
  { 2: 'two', 1: 'one', b: 'b', a: 'a', 10: 'ten' },
  { priority: 'high', timeout: 5000, meta: { user: 'a', tags: ['x', 'y'] } },
  nullProto,
  protoKey,
  Object.freeze({ frozen: Object.freeze([1, 2]) }),
  { toJSON: 'not a function', nested: { toJSON: null } },
  new Array(3).fill(0),
  Array.from({ length: 1000 }, (_, i) => ({ i, s: String(i), f: i / 3, even: i % 2 === 0 })),
];

test('accepted values: the text is JSON.stringify and reads back equal', () => {
  for (const value of ACCEPTED) {
    const text = toJson(value, 'options');
    assert.equal(text, JSON.stringify(value));
    assert.deepEqual(JSON.parse(text), value === nullProto ? { a: 1, nested: { b: [true] } } : value);
    assert.equal(resultJson(value), text);
  }
});

test('-0 is written as 0, as JSON.stringify does', () => {
  assert.equal(toJson(-0), '0');
  assert.equal(toJson({ z: -0, list: [-0] }), JSON.stringify({ z: -0, list: [-0] }));
});

test('a string task is its JSON text', () => {
  for (const task of ['', 'write the tests', 'line\nbreak "quoted" 🎉', lone]) assert.equal(toJson(task, 'task'), JSON.stringify(task));
});

test('properties whose value is undefined are dropped, as JSON.stringify does', () => {
  const value = { a: undefined, b: 1, c: { d: undefined }, e: [{ f: undefined }] };
  assert.equal(toJson(value, 'options'), '{"b":1,"c":{},"e":[{}]}');
  assert.equal(toJson(value, 'options'), JSON.stringify(value));
});

test('the same object twice, not a cycle, is accepted (JSON writes it twice)', () => {
  const shared = { k: [1, 2] };
  const list = [shared, shared];
  const value = { a: shared, b: list, c: { d: { e: shared } }, f: [list, list], g: shared.k };
  const text = toJson(value, 'options');
  assert.equal(text, JSON.stringify(value));
  assert.deepEqual(JSON.parse(text), value);
  // A sibling after a deeper branch that held the same object.
  const inner = {};
  const siblings = { a: { b: { c: inner } }, d: inner, e: [inner, { f: inner }] };
  assert.equal(toJson(siblings, 'result'), JSON.stringify(siblings));
});

test('getters and Proxies are read as the values they give', () => {
  const withGetter = {
    get computed() {
      return { n: 2 };
    },
  };
  assert.equal(toJson(withGetter, 'options'), '{"computed":{"n":2}}');
  assert.equal(toJson(new Proxy({ a: [1, 2] }, {}), 'options'), '{"a":[1,2]}');
  assert.equal(toJson(new Proxy([1, { b: 'c' }], {}), 'options'), '[1,{"b":"c"}]');
  assertRefused(() => toJson(new Proxy({ f() {} }, {}), 'options'), 'options.f', 'options.f is a function');
  assertRefused(() => toJson({ p: new Proxy(() => 1, {}) }, 'options'), 'options.p', 'options.p is a function');
});

test('each refusal is a new error', () => {
  const a = assertRefused(() => toJson({ x: 1n }, 'options'), 'options.x', 'BigInt');
  const b = assertRefused(() => toJson({ x: 1n }, 'options'), 'options.x', 'BigInt');
  assert.notEqual(a, b);
  assert.equal(toJson({ x: 1 }, 'options'), '{"x":1}');
});
