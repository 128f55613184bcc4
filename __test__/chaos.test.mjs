// Chaos test: over 50,000 executions through every mode (fireAndForget,
// executeWithCallback, executeWatched, execute, executeMultiple), six executors in pairs, with a
// seeded random mix of agents that return, throw synchronously, reject with Errors and
// non-Errors (undefined, null, strings, plain objects), never settle (and time out), ignore or
// honour their signal, hog the event loop, report wild progress (NaN, -5, 300, '50'...), fail
// then succeed on retry, or are not registered at all; executions get cancelled while queued and
// while running (cancelExecution and options.signal, some signals aborted before submission),
// callbacks and onProgress listeners throw. Meanwhile the driver changes the concurrency limit,
// pauses and resumes, stalls the event loop, floods the executor (more than 1024 starts in one
// turn, past its start budget), and shuts two executors down mid-run (cancel and drain modes,
// with timeoutMs).
//
// Invariants checked for every executor:
// - every submitted execution gets an id and reaches exactly one terminal status, which agrees
//   with its one terminal event, its callback (called exactly once), its execute() promise
//   (settled), its executeMultiple() entry, its waitFor()/watch() snapshots, and with what its
//   agent actually did (the same result object, the same thrown value, a timeout only when it
//   had one, a cancellation only when something cancelled it);
// - getStatus(): completed + failed + cancelled = submitted = the ids seen, nothing left over;
// - a throwing callback / onProgress surfaces as exactly one callback-error each;
// - progress values reported anywhere are numbers in [0, 100]; one final progress-update per
//   watched execution and none after it;
// - retries: at most `retries` execution-retry events, attempts in order, an attempt never
//   starting while the previous one still holds its slot;
// - the slot rule: no agent starts while the agents holding a slot (running, or cancelled /
//   timed out and neither settled nor past cancelGraceMs: see SlotTracker) already fill the
//   limit in force, and none starts while paused (executions the core started before a pause
//   or a lowering of the limit are exempt: lowering the limit stops nothing);
// - no 'unhandledRejection' or 'uncaughtException' in the process.
//
// The mix comes from a seed printed at the start; rerun with CHAOS_SEED=<seed>. Timing still
// varies from run to run, so a seed reproduces the workload, not the exact interleaving.
import assert from 'node:assert/strict';
import { test, shutDownAfterEach, exitIfWorkLeftBehind, sleep, waitUntil } from './helpers.mjs';

exitIfWorkLeftBehind();
const create = shutDownAfterEach({ timeoutMs: 50 });

// ----- seed and PRNG -------------------------------------------------------------------------

function parseSeed(text) {
  if (text === undefined || text === '') return (Math.random() * 2 ** 32) >>> 0;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0 || n >= 2 ** 32) throw new RangeError(`CHAOS_SEED must be an integer in [0, 2^32), got ${text}`);
  return n;
}
const SEED = parseSeed(process.env.CHAOS_SEED);
process.stdout.write(`chaos seed: ${SEED} (rerun with CHAOS_SEED=${SEED})\n`);

/** mulberry32: a tiny, fast, good-enough 32-bit PRNG. */
function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function makeRng(seed) {
  const next = mulberry32(seed);
  return {
    next,
    int: (lo, hi) => lo + Math.floor(next() * (hi - lo + 1)),
    chance: (p) => next() < p,
    pick: (arr) => arr[Math.floor(next() * arr.length)],
    /** `table`: [[value, weight], ...] */
    weighted(table) {
      let total = 0;
      for (const [, w] of table) total += w;
      let r = next() * total;
      for (const [v, w] of table) if ((r -= w) < 0) return v;
      return table[table.length - 1][0];
    },
  };
}

/** An independent stream per executor, so one executor's timing does not shift another's mix. */
const seedFor = (index, salt) => (SEED ^ Math.imul(index + 1, 0x9e3779b9) ^ Math.imul(salt, 0x85ebca6b)) >>> 0;

// ----- process-level failures ----------------------------------------------------------------

/** One summary per executor that ran to the end (pushed before its own assertions). */
const summaries = [];

const processErrors = [];
process.on('unhandledRejection', (reason) => processErrors.push(['unhandledRejection', reason]));
process.on('uncaughtException', (err) => processErrors.push(['uncaughtException', err]));

const describeProcessErrors = () =>
  processErrors.slice(0, 5).map(([kind, e]) => `${kind}: ${e instanceof Error ? e.stack : String(e)}`);

// ----- the slot tracker ----------------------------------------------------------------------

/**
 * Counts the agent functions that hold a concurrency slot: entered and not settled, except
 * that an aborted one (cancel, timeout, forced shutdown) only holds it until its grace period
 * (cancelGraceMs) ends. The core starts that period when it decides the cancel or timeout,
 * and the signal is aborted just after; but a GC pause can fall in between, so the abort time
 * is not a safe origin. The tracker uses a lower bound of the core's decision instead:
 * - a cancel (cancelExecution or a signal the driver aborts) happens inside the driver's
 *   call, so it started no earlier than that call (`cancelCallAt`, set before each call);
 * - a timeout is only acted on once the agent has been called, so after its entry.
 * Counting an aborted agent until `lowerBound + graceMs - MARGIN` therefore never counts one
 * the core has already let go: the count is a lower bound of the core's slots in use, and a
 * start seen while it already fills the limit is a real violation, never an artefact of timing.
 */
const GRACE_MARGIN_MS = 2;

class SlotTracker {
  constructor(limit, graceMs) {
    this.limit = limit;
    this.paused = false;
    this.window = graceMs - GRACE_MARGIN_MS;
    this.cancelCallAt = -Infinity; // when the driver's latest cancelExecution / abort() began
    this.live = new Set(); // entered, unsettled, not aborted
    this.zombies = []; // aborted, unsettled, maybe still in the grace period
    this.latest = new Map(); // execution id -> its latest attempt's token
    this.exempt = new Map(); // execution id -> limit in force when the core started it
    this.violations = [];
    this.holdersAtFirstViolation = null;
    this.maxHeld = 0;
    this.entries = 0;
  }

  held(now) {
    if (this.zombies.length > 0) this.zombies = this.zombies.filter((t) => now < t.holdsUntil);
    return this.live.size + this.zombies.length;
  }

  holds(tok, now) {
    return !tok.settled && (!tok.aborted || now < tok.holdsUntil);
  }

  enter(ctx) {
    const now = performance.now();
    const id = ctx.executionId;
    const attempt = ctx.attempt;
    this.entries++;
    const held = this.held(now);
    let limit = this.limit;
    const exempt = this.exempt.get(id);
    if (exempt !== undefined) {
      this.exempt.delete(id);
      limit = Math.max(limit, exempt);
    } else if (this.paused) {
      this.violations.push(`${id} attempt ${attempt} started while paused (${held} slots held)`);
    }
    if (held >= limit) {
      this.violations.push(`${id} attempt ${attempt} started while ${held} agents held slots, limit ${limit}`);
      // Who held them, for the report (the first time only).
      if (this.holdersAtFirstViolation === null) this.holdersAtFirstViolation = [...this.live, ...this.zombies].map((t) => ({ ...t, age: now - t.enteredAt }));
    }
    const prev = this.latest.get(id);
    if (prev !== undefined && this.holds(prev, now)) {
      this.violations.push(`${id} attempt ${attempt} started while attempt ${prev.attempt} still held its slot`);
    }
    if (prev !== undefined && prev.attempt >= attempt) {
      this.violations.push(`${id} attempt ${attempt} started after attempt ${prev.attempt}`);
    }
    if (held + 1 > this.maxHeld) this.maxHeld = held + 1;
    const tok = { id, attempt, settled: false, aborted: false, abortedAt: 0, holdsUntil: 0, enteredAt: now };
    this.latest.set(id, tok);
    const signal = ctx.signal;
    if (signal.aborted) {
      // Its execution was cancelled or timed out before the agent was even called: whatever
      // slot it had is in its grace period already. Count it as holding nothing (an
      // under-count is safe), but an agent must never start like this.
      this.violations.push(`${id} attempt ${attempt} started with an already aborted signal (${signal.reason && signal.reason.code})`);
      tok.aborted = true;
      tok.abortedAt = tok.holdsUntil = -Infinity;
    } else {
      this.live.add(tok);
      signal.addEventListener(
        'abort',
        () => {
          if (tok.settled) return;
          tok.aborted = true;
          tok.abortedAt = performance.now();
          const code = signal.reason !== null && typeof signal.reason === 'object' ? signal.reason.code : undefined;
          // After a forced shutdown nothing starts any more: no need to count it.
          const from = code === 'ERR_EXECUTION_CANCELLED' ? this.cancelCallAt : code === 'ERR_EXECUTION_TIMEOUT' ? tok.enteredAt : -Infinity;
          tok.holdsUntil = from + this.window;
          this.live.delete(tok);
          this.zombies.push(tok);
        },
        { once: true },
      );
    }
    return tok;
  }

  leave(tok) {
    if (tok.settled) return;
    tok.settled = true;
    if (tok.aborted) {
      const i = this.zombies.indexOf(tok);
      if (i >= 0) this.zombies.splice(i, 1);
    } else {
      this.live.delete(tok);
    }
    if (this.latest.get(tok.id) === tok) this.latest.delete(tok.id);
  }

  /** Executions the core has started whose agent has not been called yet (a deferred start). */
  exemptStartedNotEntered(bg, limit) {
    for (const { id } of bg.getActiveExecutions()) {
      const tok = this.latest.get(id);
      if (tok !== undefined && !tok.settled && !tok.aborted) continue; // its agent runs already
      this.exempt.set(id, Math.max(limit, this.exempt.get(id) ?? 0));
    }
  }
}

// ----- what agents throw -----------------------------------------------------------------------

const WILD_PROGRESS = [NaN, -5, 300, '50', undefined, null, Infinity, -Infinity, 42.5, {}, 1e308, -0, 99.999, 0, 100, '7', true];

function errorValue(variant, tag) {
  switch (variant) {
    case 0:
      return new Error(`boom ${tag}`);
    case 1:
      return undefined;
    case 2:
      return `string rejection ${tag}`;
    case 3:
      return { plain: tag };
    case 4:
      return null;
    default:
      return Object.assign(new TypeError(`typed ${tag}`), { code: 'E_AGENT' });
  }
}

const TERMINAL = new Set(['completed', 'failed', 'cancelled']);
const EVENT_STATUS = { 'execution-completed': 'completed', 'execution-failed': 'failed', 'execution-cancelled': 'cancelled' };
const LEVELS = ['critical', 'high', 'medium', 'low', 'background'];
const KIND_TABLE = [
  ['ok', 22],
  ['okAsync', 12],
  ['throwSync', 10],
  ['reject', 12],
  ['never', 3],
  ['honour', 6],
  ['slowIgnore', 3],
  ['progress', 12],
  ['flaky', 10],
  ['ghost', 2],
  ['hog', 2],
];
const MODE_TABLE = [
  ['fire', 20],
  ['callback', 25],
  ['watched', 15],
  ['execute', 30],
  ['multiple', 10],
];
const MODE_NAME = { fire: 'fire-and-forget', callback: 'async-callback', watched: 'watched', execute: 'execute', multiple: 'aggregate' };

/** Keeps the JS thread busy for `ms` (an agent that computes, a long GC pause...). */
function busy(ms) {
  const end = performance.now() + ms;
  while (performance.now() < end);
}

const isNum01 = (p) => typeof p === 'number' && !Number.isNaN(p) && p >= 0 && p <= 100;

// ----- one chaotic executor ------------------------------------------------------------------

/**
 * Runs `plan` against a new executor and checks every invariant. Returns a summary; throws
 * (an AssertionError listing the first problems) when an invariant fails.
 */
async function runChaos(plan, index) {
  const rng = makeRng(seedFor(index, 1)); // the driver: workload and control actions
  const arng = makeRng(seedFor(index, 2)); // agents' own choices (called in timing order)
  const tag = `[seed ${SEED}, executor ${plan.name}]`;
  const t0 = performance.now();

  const bg = create({
    throttleIfExceeded: false,
    maxConcurrentAgents: plan.concurrency,
    cancelGraceMs: plan.graceMs,
    retries: plan.retries ?? 0,
    retryDelayMs: plan.retryDelayMs ?? 2,
    backoff: plan.backoff ?? 'fixed',
    maxRetainedResults: 1_000_000,
    resultTtlMs: 600_000,
    progressIntervalMs: 50,
    defaultTimeoutMs: plan.defaultTimeoutMs,
  });
  await bg.initialize();
  const tracker = new SlotTracker(plan.concurrency, plan.graceMs);

  const problems = [];
  const problem = (msg) => {
    if (problems.length < 200) problems.push(msg);
  };

  const subs = new Map(); // task key -> submission
  const execs = new Map(); // execution id -> record
  const recent = []; // ring of recently queued ids (likely still queued: cancel targets)
  const controllers = []; // live AbortControllers of submissions
  const stats = {
    executions: 0,
    completed: 0,
    failed: 0,
    cancelled: 0,
    timeouts: 0,
    retries: 0,
    callbackErrors: 0,
    cancelCalls: 0,
    cancelSucceeded: 0,
    cancelledQueued: 0,
    cancelledRunning: 0,
    signalAborts: 0,
    concurrencyChanges: 0,
    pauses: 0,
    floods: 0,
    stalls: 0,
    rejectedAfterShutdown: 0,
    progressUpdates: 0,
  };
  let shutdownCalled = false;
  let shuttingDownEvents = 0;
  let shutdownCompleteEvents = 0;
  let paused = false;
  let resumeTimer = null;

  const execOf = (id) => {
    let e = execs.get(id);
    if (e === undefined) {
      e = {
        id,
        sub: null,
        index: -1,
        agent: null,
        queued: 0,
        terminal: [],
        starts: 0,
        entries: 0,
        retryEvents: [],
        returned: [],
        thrown: [],
        threw: [],
        cbErrors: 0,
        expectedCbErrors: 0,
        cancelOk: false,
        cancelFailedWith: null,
        progressFinal: 0,
        progressAfterFinal: 0,
        waitForSnap: null,
        watchFinal: null,
        watchItems: 0,
      };
      execs.set(id, e);
    }
    return e;
  };

  // ----- agents (each instrumented for the slot tracker) -----

  const instrument = (body) => (task, options, ctx) => {
    const tok = tracker.enter(ctx);
    const e = execOf(ctx.executionId);
    e.entries++;
    let v;
    try {
      v = body(task, options, ctx, e);
    } catch (err) {
      tracker.leave(tok);
      throw err;
    }
    if (v !== null && typeof v === 'object' && typeof v.then === 'function') {
      // Registered before the executor's own handlers, so the slot is counted as free no
      // later than the executor learns of the settlement.
      v.then(
        () => tracker.leave(tok),
        () => tracker.leave(tok),
      );
    } else {
      tracker.leave(tok);
    }
    return v;
  };
  const resultOf = (ctx, e) => {
    const r = { tag: ctx.executionId, attempt: ctx.attempt };
    e.returned[ctx.attempt] = r;
    return r;
  };
  const failWith = (ctx, e, value) => {
    e.thrown[ctx.attempt] = value;
    e.threw[ctx.attempt] = true;
    return value;
  };
  const wildProgress = (progress, n) => {
    for (let i = 0; i < n; i++) {
      const p = arng.chance(0.7) ? arng.pick(WILD_PROGRESS) : arng.int(-50, 150);
      if (arng.chance(0.3)) progress(p, { step: i, note: arng.pick(['a', 'b', undefined]) });
      else progress(p);
    }
  };

  const agents = {
    ok: (task, o, ctx, e) => resultOf(ctx, e),
    okAsync: (task, o, ctx, e) =>
      o.delay === 0 ? Promise.resolve().then(() => resultOf(ctx, e)) : new Promise((res) => setTimeout(() => res(resultOf(ctx, e)), o.delay)),
    throwSync: (task, o, ctx, e) => {
      throw failWith(ctx, e, errorValue(o.errVariant, ctx.executionId));
    },
    reject: (task, o, ctx, e) => {
      const v = failWith(ctx, e, errorValue(o.errVariant, ctx.executionId));
      if (o.syncReject) return Promise.reject(v);
      return new Promise((res, rej) => setTimeout(() => rej(v), o.delay));
    },
    never: (task, o, { progress }) => {
      if (o.nProgress > 0) wildProgress(progress, 2);
      return new Promise(() => {});
    },
    // Settles at once when aborted (rejecting with the reason), else resolves after holdMs.
    honour: (task, o, ctx, e) => {
      const { signal } = ctx;
      return new Promise((res, rej) => {
        const t = setTimeout(() => res(resultOf(ctx, e)), o.holdMs);
        signal.addEventListener('abort', () => {
          clearTimeout(t);
          rej(failWith(ctx, e, signal.reason));
        });
      });
    },
    // Ignores its signal: resolves after holdMs whatever happens (a late result to discard).
    slowIgnore: (task, o, ctx, e) => new Promise((res) => setTimeout(() => res(resultOf(ctx, e)), o.holdMs)),
    progress: (task, o, ctx, e) => {
      const { progress } = ctx;
      wildProgress(progress, o.nProgress);
      return new Promise((res) =>
        setImmediate(() => {
          wildProgress(progress, 2);
          res(resultOf(ctx, e));
        }),
      );
    },
    // Blocks the event loop for a moment (a CPU-bound agent), then returns.
    hog: (task, o, ctx, e) => {
      busy(o.delay / 2);
      return resultOf(ctx, e);
    },
    flaky: (task, o, ctx, e) => {
      if (ctx.attempt <= o.failTimes) {
        const v = failWith(ctx, e, errorValue(o.errVariant, `${ctx.executionId}#${ctx.attempt}`));
        if (o.syncReject) throw v;
        return Promise.reject(v);
      }
      return arng.chance(0.5) ? resultOf(ctx, e) : Promise.resolve(resultOf(ctx, e));
    },
  };
  for (const [name, body] of Object.entries(agents)) bg.registerAgent(name, instrument(body));
  // 'ghost' is never registered: refused at submission, or ERR_AGENT_NOT_FOUND in executeMultiple.

  // ----- events -----

  bg.on('execution-queued', (p) => {
    const e = execOf(p.executionId);
    e.queued++;
    if (e.queued > 1) problem(`${p.executionId}: execution-queued ${e.queued} times`);
    const sub = subs.get(p.task);
    if (sub === undefined) {
      problem(`${p.executionId}: execution-queued for unknown task ${p.task}`);
      return;
    }
    e.sub = sub;
    e.index = sub.ids.length;
    e.agent = p.agent;
    sub.ids.push(p.executionId);
    if (p.agent !== sub.agents[e.index]) problem(`${p.executionId}: agent ${p.agent}, submitted ${sub.agents[e.index]}`);
    if (p.mode !== MODE_NAME[sub.mode]) problem(`${p.executionId}: mode ${p.mode}, submitted ${sub.mode}`);
    if (recent.length < 256) recent.push(p.executionId);
    else recent[arng.int(0, 255)] = p.executionId;
    if (arng.chance(0.03)) {
      bg.waitFor(p.executionId).then((s) => (e.waitForSnap = s));
    }
    if (sub.mode === 'watched' && arng.chance(0.02)) {
      (async () => {
        let last;
        for await (const item of bg.watch(p.executionId)) {
          e.watchItems++;
          last = item;
          if (item.progress !== undefined && !isNum01(item.progress)) problem(`${p.executionId}: watch() progress ${item.progress}`);
        }
        e.watchFinal = last;
      })().catch((err) => problem(`${p.executionId}: watch() threw ${err}`));
    }
  });
  bg.on('execution-started', (p) => {
    const e = execOf(p.executionId);
    e.starts++;
    if (p.attempt !== e.starts) problem(`${p.executionId}: execution-started attempt ${p.attempt}, expected ${e.starts}`);
  });
  for (const name of Object.keys(EVENT_STATUS)) {
    bg.on(name, (p) => execOf(p.executionId).terminal.push({ name, p }));
  }
  bg.on('execution-retry', (p) => {
    stats.retries++;
    execOf(p.executionId).retryEvents.push(p);
  });
  bg.on('callback-error', (p) => {
    stats.callbackErrors++;
    execOf(p.executionId).cbErrors++;
  });
  bg.on('progress-update', (p) => {
    stats.progressUpdates++;
    const e = execOf(p.executionId);
    if (!isNum01(p.progress)) problem(`${p.executionId}: progress-update progress ${String(p.progress)}`);
    if (e.progressFinal > 0) e.progressAfterFinal++;
    if (TERMINAL.has(p.status)) e.progressFinal++;
  });
  bg.on('shutting-down', () => shuttingDownEvents++);
  bg.on('shutdown-complete', () => shutdownCompleteEvents++);

  // ----- submissions -----

  let keyCount = 0;

  function makeOptions(kinds) {
    const o = {
      delay: rng.int(0, 6),
      holdMs: rng.int(3, 40),
      errVariant: rng.int(0, 5),
      failTimes: rng.int(0, 3),
      nProgress: rng.int(0, 6),
      syncReject: rng.chance(0.5),
    };
    if (rng.chance(0.5)) o.priority = rng.pick(LEVELS);
    if (kinds.includes('never')) o.timeout = rng.int(2, 15);
    else if (rng.chance(0.12)) o.timeout = rng.int(8, 60);
    if (rng.chance(0.2)) {
      o.retries = rng.int(1, 3);
      if (rng.chance(0.8)) o.retryDelayMs = rng.int(0, 4);
      if (rng.chance(0.5)) o.backoff = rng.pick(['fixed', 'exponential']);
    }
    return o;
  }

  function submitOne() {
    const key = `${plan.name}-k${++keyCount}`;
    const mode = rng.weighted(MODE_TABLE);
    const kinds = mode === 'multiple' ? Array.from({ length: rng.int(2, 4) }, () => rng.weighted(KIND_TABLE)) : [rng.weighted(KIND_TABLE)];
    if (mode !== 'multiple' && kinds[0] === 'ghost') {
      // An agent nobody can run is refused at submission in every single-execution mode:
      // no id, no callback, no event.
      const refused =
        mode === 'fire'
          ? bg.fireAndForget('ghost', key)
          : mode === 'watched'
            ? bg.executeWatched('ghost', key)
            : mode === 'callback'
              ? bg.executeWithCallback('ghost', key, () => problem(`${key}: callback of a refused submission`))
              : bg.execute('ghost', key);
      refused.then(
        () => problem(`${key}: ${mode} for an unregistered agent was accepted`),
        (err) => {
          if (err?.code !== 'ERR_AGENT_NOT_FOUND') problem(`${key}: ${mode} refused with ${err?.code}`);
        },
      );
      return;
    }
    const options = makeOptions(kinds);
    const sub = {
      key,
      mode,
      agents: kinds,
      options,
      ids: [],
      controller: null,
      abortReason: undefined,
      preAborted: false,
      cbCalls: 0,
      cbArgs: null,
      cbThrew: false,
      admitted: null,
      outcome: null, // execute(): { ok, value }
      agg: null, // executeMultiple(): the resolved value
      aggErr: null,
      aggStartedIds: null,
    };
    subs.set(key, sub);
    const r = rng.next();
    if (r < 0.02) {
      sub.abortReason = rng.chance(0.5) ? new Error(`pre-aborted ${key}`) : { reason: key };
      sub.preAborted = true;
      options.signal = AbortSignal.abort(sub.abortReason);
    } else if (r < 0.12) {
      sub.controller = new AbortController();
      options.signal = sub.controller.signal;
      controllers.push(sub);
    }
    if (rng.chance(0.15)) {
      const throws = rng.chance(0.3);
      options.onProgress = (p) => {
        if (!isNum01(p.progress)) problem(`${p.executionId}: onProgress progress ${String(p.progress)}`);
        if (throws) {
          execOf(p.executionId).expectedCbErrors++;
          throw new Error(`onProgress throws for ${p.executionId}`);
        }
      };
    }
    stats.executions += kinds.length;
    const admit = (p) =>
      p.then(
        (a) => (sub.admitted = a),
        (err) => problem(`${key}: ${mode} submission rejected: ${err && err.stack}`),
      );
    switch (mode) {
      case 'fire':
        admit(bg.fireAndForget(kinds[0], key, options));
        break;
      case 'watched':
        admit(bg.executeWatched(kinds[0], key, options));
        break;
      case 'callback': {
        const throws = rng.chance(0.25);
        const cb = (err, result) => {
          sub.cbCalls++;
          sub.cbArgs = [err, result];
          if (throws) {
            sub.cbThrew = true;
            throw rng.chance(0.5) ? new Error(`callback throws for ${key}`) : `callback throws a string for ${key}`;
          }
        };
        admit(bg.executeWithCallback(kinds[0], key, cb, options));
        break;
      }
      case 'execute':
        bg.execute(kinds[0], key, options).then(
          (value) => (sub.outcome = { ok: true, value }),
          (value) => (sub.outcome = { ok: false, value }),
        );
        break;
      case 'multiple':
        bg.executeMultiple(kinds, key, options).then(
          (v) => (sub.agg = v),
          (err) => (sub.aggErr = err),
        );
        break;
    }
  }
  bg.on('aggregation-started', (p) => {
    const sub = subs.get(p.task);
    if (sub === undefined) problem(`aggregation-started for unknown task ${p.task}`);
    else sub.aggStartedIds = p.executionIds;
  });

  // ----- control actions -----

  function cancelSome() {
    const n = rng.int(1, 4);
    const active = rng.chance(0.5) ? bg.getActiveExecutions() : [];
    for (let i = 0; i < n; i++) {
      const id = active.length > 0 && rng.chance(0.5) ? rng.pick(active).id : recent.length > 0 ? rng.pick(recent) : null;
      if (id === null) continue;
      stats.cancelCalls++;
      tracker.cancelCallAt = performance.now();
      bg.cancelExecution(id).then(
        (r) => {
          const e = execOf(id);
          if (r.success) {
            stats.cancelSucceeded++;
            if (r.previousStatus === 'running') stats.cancelledRunning++;
            else stats.cancelledQueued++;
            e.cancelOk = true;
            if (r.previousStatus !== 'queued' && r.previousStatus !== 'running') problem(`${id}: cancel previousStatus ${r.previousStatus}`);
          } else {
            e.cancelFailedWith = r.error;
          }
        },
        (err) => problem(`${id}: cancelExecution rejected: ${err}`),
      );
    }
  }

  function abortSome() {
    const n = rng.int(1, 3);
    for (let i = 0; i < n && controllers.length > 0; i++) {
      const k = rng.int(0, controllers.length - 1);
      const sub = controllers[k];
      controllers[k] = controllers[controllers.length - 1];
      controllers.pop();
      const roll = rng.int(0, 2);
      sub.abortReason = roll === 0 ? new Error(`aborted ${sub.key}`) : roll === 1 ? `aborted ${sub.key}` : { aborted: sub.key };
      stats.signalAborts++;
      tracker.cancelCallAt = performance.now();
      sub.controller.abort(sub.abortReason);
    }
  }

  function changeConcurrency() {
    stats.concurrencyChanges++;
    const n = rng.chance(0.1) ? 1 : rng.int(2, plan.maxConcurrency);
    const old = tracker.limit;
    if (n >= old) {
      tracker.limit = n; // relaxing: before the call (it starts agents synchronously)
      bg.setConcurrency(n);
    } else {
      bg.setConcurrency(n); // tightening: after the call (its flush may start under the old limit)
      tracker.exemptStartedNotEntered(bg, old);
      tracker.limit = n;
    }
  }

  function pauseNow() {
    if (paused) return;
    stats.pauses++;
    paused = true;
    bg.pause();
    tracker.exemptStartedNotEntered(bg, tracker.limit);
    tracker.paused = true;
    resumeTimer = setTimeout(resumeNow, rng.int(1, 12));
  }

  function resumeNow() {
    if (!paused) return;
    clearTimeout(resumeTimer);
    resumeTimer = null;
    paused = false;
    tracker.paused = false; // relaxing: before the call
    bg.resume();
  }

  // A flood: more than 1024 executions start in one turn (from a timer callback), so the
  // executor's yield to the event loop (setImmediate after 1024 starts) defers some of them.
  async function flood() {
    stats.floods++;
    if (!paused) {
      paused = true;
      bg.pause();
      tracker.exemptStartedNotEntered(bg, tracker.limit);
      tracker.paused = true;
    }
    clearTimeout(resumeTimer);
    const n = rng.int(1100, 1400);
    for (let i = 0; i < n; i++) submitOne();
    await sleep(1);
    tracker.limit = 2000; // relaxing: before the call
    bg.setConcurrency(2000);
    resumeNow();
    await sleep(rng.int(5, 20));
    changeConcurrency();
  }

  const yieldRandom = () => {
    const r = rng.next();
    if (r < 0.25) return null;
    if (r < 0.55) return new Promise((res) => setImmediate(res));
    if (r < 0.85) return sleep(rng.int(0, 2));
    return sleep(rng.int(2, 6));
  };

  // ----- the run -----

  const shutdownAt = plan.shutdown ? Math.floor(plan.executions * plan.shutdown.at) : Infinity;
  let shutdownPromise = null;
  let floodsDone = 0;
  const floods = plan.floods ?? [];
  while (stats.executions < plan.executions) {
    // Keep the backlog bounded (a queue of thousands only costs time, not coverage), but keep
    // the control actions going while it drains (a limit of 1 must not stay for long).
    if (bg.getStatus().queued < 1500) {
      const burst = rng.int(1, plan.burst ?? 100);
      for (let i = 0; i < burst; i++) submitOne();
    }
    if (rng.chance(0.35)) cancelSome();
    if (rng.chance(0.25)) abortSome();
    if (rng.chance(0.08)) changeConcurrency();
    if (rng.chance(0.04)) pauseNow();
    // Event-loop stalls, in whichever phase this continuation runs: timers fire in Rust
    // meanwhile and reach JS late, after whatever the timers phase settles first.
    if (rng.chance(0.05)) {
      stats.stalls++;
      busy(rng.int(2, 25));
    }
    if (floodsDone < floods.length && stats.executions >= floods[floodsDone] * plan.executions) {
      floodsDone++;
      await flood();
    }
    if (stats.executions >= shutdownAt) {
      shutdownCalled = true;
      shutdownPromise = bg.shutdown({ mode: plan.shutdown.mode, timeoutMs: plan.shutdown.timeoutMs });
      break;
    }
    const y = yieldRandom();
    if (y !== null) await y;
  }

  if (shutdownPromise !== null) {
    assert.equal(bg.shutdown(), shutdownPromise, `${tag} shutdown() returns the same promise`);
    // Submissions after shutdown reject with ERR_EXECUTOR_SHUT_DOWN and create nothing.
    const before = execs.size;
    const late = [
      bg.fireAndForget('ok', 'late'),
      bg.executeWithCallback('ok', 'late', () => problem('a callback of a rejected submission was called')),
      bg.executeWatched('ok', 'late'),
      bg.execute('ok', 'late'),
      bg.executeMultiple(['ok', 'reject'], 'late'),
    ];
    for (const out of await Promise.allSettled(late)) {
      stats.rejectedAfterShutdown++;
      assert.equal(out.status, 'rejected', `${tag} a submission after shutdown must reject`);
      assert.equal(out.reason.code, 'ERR_EXECUTOR_SHUT_DOWN', `${tag} ${out.reason}`);
    }
    await shutdownPromise;
    assert.equal(execs.size, before, `${tag} rejected submissions create no execution`);
    assert.equal(shuttingDownEvents, 1, `${tag} one shutting-down event`);
    assert.equal(shutdownCompleteEvents, 1, `${tag} one shutdown-complete event`);
  } else {
    resumeNow();
    tracker.limit = Math.max(tracker.limit, 8);
    bg.setConcurrency(tracker.limit);
    await waitUntil(() => bg.getStatus().queued === 0 && bg.getStatus().running === 0, `${tag} the executor to become idle`, {
      timeoutMs: 15000,
      intervalMs: 10,
    });
    await bg.onIdle();
  }
  resumeNow();

  // Every execute() / executeMultiple() promise and callback has settled by now; wait a
  // little for the ones delivered in the last turn.
  const unsettled = () =>
    [...subs.values()].filter(
      (s) =>
        (s.mode === 'execute' && s.outcome === null) ||
        (s.mode === 'multiple' && s.agg === null && s.aggErr === null) ||
        (s.mode === 'callback' && s.cbCalls === 0) ||
        ((s.mode === 'fire' || s.mode === 'watched' || s.mode === 'callback') && s.admitted === null),
    );
  try {
    await waitUntil(() => unsettled().length === 0, 'every promise and callback to settle', { timeoutMs: 3000, intervalMs: 10 });
  } catch {
    for (const s of unsettled().slice(0, 10)) problem(`${s.key} (${s.mode}, ${s.agents}): promise or callback never settled, ids [${s.ids}]`);
  }
  await sleep(5); // pending waitFor()/watch() snapshots

  // ----- the checks -----

  const status = bg.getStatus();
  const ids = [...execs.keys()];
  const counts = { completed: 0, failed: 0, cancelled: 0 };
  for (const sub of subs.values()) {
    if (sub.ids.length !== sub.agents.length) problem(`${sub.key}: ${sub.agents.length} executions submitted, ${sub.ids.length} ids seen`);
    if (sub.admitted !== null) {
      const a = sub.admitted;
      if (a.executionId !== sub.ids[0]) problem(`${sub.key}: resolved ${a.executionId}, queued as ${sub.ids[0]}`);
      if (a.mode !== MODE_NAME[sub.mode]) problem(`${sub.key}: resolved mode ${a.mode}`);
      // A signal aborted before the submission reached the core (in the same turn) cancels it
      // at once: the resolved status is then 'cancelled'.
      const allowed = sub.preAborted ? ['cancelled'] : sub.abortReason !== undefined ? ['queued', 'running', 'cancelled'] : ['queued', 'running'];
      if (!allowed.includes(a.status)) problem(`${sub.key}: resolved status ${a.status}${sub.preAborted ? ' (pre-aborted signal)' : ''}`);
    }
    if (sub.mode === 'callback' && sub.cbCalls !== 1) problem(`${sub.key}: callback called ${sub.cbCalls} times`);
    if (sub.mode === 'multiple') {
      if (sub.aggErr !== null) problem(`${sub.key}: executeMultiple rejected: ${sub.aggErr}`);
      if (sub.aggStartedIds === null || sub.aggStartedIds.join() !== sub.ids.join()) {
        problem(`${sub.key}: aggregation-started ids [${sub.aggStartedIds}] != queued [${sub.ids}]`);
      }
    }
  }

  for (const id of ids) {
    const e = execs.get(id);
    const sub = e.sub;
    if (sub === null) {
      problem(`${id}: events for an execution that was never queued`);
      continue;
    }
    const kind = sub.agents[e.index];
    const o = sub.options;
    const s = bg.getExecutionStatus(id);
    const where = `${id} (${sub.mode}, ${kind}, timeout ${o.timeout}, retries ${o.retries ?? plan.retries ?? 0})`;
    if (!s.found) {
      problem(`${where}: not found at the end`);
      continue;
    }
    if (!TERMINAL.has(s.status)) {
      problem(`${where}: status ${s.status} at the end`);
      continue;
    }
    counts[s.status]++;
    if (e.terminal.length !== 1) {
      problem(`${where}: ${e.terminal.length} terminal events [${e.terminal.map((t) => t.name)}]`);
      if (e.terminal.length === 0) continue;
    }
    const ev = e.terminal[0];
    if (EVENT_STATUS[ev.name] !== s.status) problem(`${where}: event ${ev.name} but status ${s.status}`);
    const ok = s.status === 'completed';
    const err = s.errorObject;
    if (ok) {
      if (ev.p.result !== s.result) problem(`${where}: event result differs from status result`);
    } else if (ev.p.errorObject !== err) {
      problem(`${where}: event errorObject differs from status errorObject`);
    }
    if (!isNum01(s.progress)) problem(`${where}: status progress ${s.progress}`);

    // What the agent did decides the outcome.
    const code = err !== null && typeof err === 'object' ? err.code : undefined;
    if (s.status === 'completed') {
      if (!['ok', 'okAsync', 'honour', 'slowIgnore', 'progress', 'flaky', 'hog'].includes(kind)) problem(`${where}: completed`);
      else if (s.result !== e.returned[s.attempt] || s.result.tag !== id) problem(`${where}: result is not what attempt ${s.attempt} returned`);
    } else if (s.status === 'failed') {
      if (code === 'ERR_EXECUTION_TIMEOUT') {
        stats.timeouts++;
        if (!(o.timeout > 0) && !(plan.defaultTimeoutMs > 0)) problem(`${where}: timed out without a timeout`);
      } else if (code === 'ERR_AGENT_NOT_FOUND') {
        if (kind !== 'ghost') problem(`${where}: ERR_AGENT_NOT_FOUND`);
      } else if (kind === 'never' || kind === 'ghost') {
        problem(`${where}: failed with ${String(s.error)}`);
      } else if (!e.threw[s.attempt] || !Object.is(err, e.thrown[s.attempt])) {
        problem(`${where}: failed with ${String(s.error)}, not what attempt ${s.attempt} threw`);
      }
    } else {
      if (code === 'ERR_EXECUTION_CANCELLED') {
        const bySignal = sub.abortReason !== undefined && err.cause === sub.abortReason;
        if (!e.cancelOk && !bySignal) problem(`${where}: cancelled, but neither cancelExecution nor its signal cancelled it`);
        if (err.cause !== undefined && err.cause !== sub.abortReason) problem(`${where}: cancel cause is not the signal's reason`);
      } else if (code === 'ERR_EXECUTOR_SHUT_DOWN') {
        if (!shutdownCalled) problem(`${where}: cancelled by a shutdown that did not happen`);
      } else {
        problem(`${where}: cancelled with ${String(s.error)}`);
      }
    }
    if (e.cancelOk && s.status !== 'cancelled') problem(`${where}: cancelExecution succeeded, but it ended ${s.status}`);
    if (e.cancelFailedWith !== null) {
      const m = /^Cannot cancel execution in (\w+) status$/.exec(e.cancelFailedWith);
      if (m === null) problem(`${where}: cancelExecution said ${e.cancelFailedWith}`);
      else if (m[1] !== s.status) problem(`${where}: cancelExecution said ${m[1]}, it ended ${s.status}`);
    }

    // Delivery: callback, promise, aggregation, waitFor, watch.
    if (sub.mode === 'callback' && sub.cbCalls === 1) {
      const [cbErr, cbRes] = sub.cbArgs;
      if (ok ? cbErr !== null || cbRes !== s.result : !Object.is(cbErr, err) || cbRes !== undefined) {
        problem(`${where}: callback(${String(cbErr)}, ${String(cbRes)}) disagrees with ${s.status}`);
      }
    }
    if (sub.mode === 'execute' && sub.outcome !== null) {
      if (sub.outcome.ok !== ok || !Object.is(sub.outcome.value, ok ? s.result : err)) {
        problem(`${where}: execute() ${sub.outcome.ok ? 'resolved' : 'rejected'} with ${String(sub.outcome.value)}, status ${s.status}`);
      }
    }
    if (sub.mode === 'multiple' && sub.agg !== null) {
      const r = sub.agg.results[e.index];
      if (r === undefined || r.id !== id || r.status !== s.status || (ok ? r.result !== s.result : !Object.is(r.errorObject, err))) {
        problem(`${where}: executeMultiple result ${r && r.id} ${r && r.status} disagrees with ${s.status}`);
      }
    }
    if (e.waitForSnap !== null && (e.waitForSnap.status !== s.status || e.waitForSnap.attempt !== s.attempt)) {
      problem(`${where}: waitFor() said ${e.waitForSnap.status}, it ended ${s.status}`);
    }
    if (e.watchFinal !== null && e.watchFinal.status !== s.status) problem(`${where}: watch() ended with ${e.watchFinal.status}, not ${s.status}`);

    // Events around it.
    const expectedCbErrors = e.expectedCbErrors + (sub.mode === 'callback' && sub.cbThrew ? 1 : 0);
    if (e.cbErrors !== expectedCbErrors) problem(`${where}: ${e.cbErrors} callback-error events, expected ${expectedCbErrors}`);
    if (sub.mode === 'watched') {
      if (e.progressFinal !== 1) problem(`${where}: ${e.progressFinal} final progress-updates`);
      if (e.progressAfterFinal !== 0) problem(`${where}: ${e.progressAfterFinal} progress-updates after the final one`);
    }
    const retries = o.retries ?? plan.retries ?? 0;
    if (e.starts !== s.attempt) problem(`${where}: ${e.starts} execution-started events, attempt ${s.attempt}`);
    // An attempt whose agent call was deferred (past the per-turn start budget) and that was
    // cancelled meanwhile is started but never called; only the last attempt can be.
    if (kind !== 'ghost' && e.entries !== e.starts && !(e.entries === e.starts - 1 && s.status === 'cancelled')) {
      problem(`${where}: agent called ${e.entries} times, ${e.starts} starts`);
    }
    if (s.attempt > retries + 1) problem(`${where}: ${s.attempt} attempts`);
    const re = e.retryEvents;
    if (re.length !== s.attempt && re.length !== s.attempt - 1 && !(re.length === 0 && s.attempt === 0)) {
      problem(`${where}: ${re.length} execution-retry events after ${s.attempt} attempts`);
    }
    if (re.length === s.attempt && s.attempt > 0 && s.status !== 'cancelled') problem(`${where}: retry pending but it ended ${s.status}`);
    re.forEach((r, i) => {
      if (r.attempt !== i + 1) problem(`${where}: execution-retry #${i + 1} says attempt ${r.attempt}`);
    });
  }

  const total = counts.completed + counts.failed + counts.cancelled;
  if (ids.length !== stats.executions) problem(`${stats.executions} executions submitted, ${ids.length} ids seen`);
  if (status.submitted !== stats.executions) problem(`getStatus().submitted ${status.submitted}, submitted ${stats.executions}`);
  if (status.completed + status.failed + status.cancelled !== status.submitted) {
    problem(`getStatus(): completed ${status.completed} + failed ${status.failed} + cancelled ${status.cancelled} != submitted ${status.submitted}`);
  }
  if (status.completed !== counts.completed || status.failed !== counts.failed || status.cancelled !== counts.cancelled) {
    problem(`getStatus() totals ${status.completed}/${status.failed}/${status.cancelled} != statuses ${counts.completed}/${counts.failed}/${counts.cancelled}`);
  }
  if (status.running !== 0 || status.queued !== 0) problem(`getStatus(): running ${status.running}, queued ${status.queued} at the end`);
  if (total !== ids.length) problem(`${ids.length - total} executions without a terminal status`);
  for (const v of tracker.violations.slice(0, 20)) problem(`slot rule: ${v}`);
  if (tracker.violations.length > 20) problem(`slot rule: ${tracker.violations.length - 20} more violations`);
  if (tracker.holdersAtFirstViolation !== null) {
    for (const h of tracker.holdersAtFirstViolation) {
      const e = execs.get(h.id);
      const s = bg.getExecutionStatus(h.id);
      problem(
        `slot rule: at the first violation, ${h.id} attempt ${h.attempt} (${e.sub && e.sub.agents[e.index]}, timeout ${e.sub && e.sub.options.timeout}) ` +
          `held a slot: entered ${h.age.toFixed(1)} ms before, ${h.aborted ? 'aborted' : 'not aborted'}, ${h.settled ? 'settled since' : 'never settled'}; ` +
          `it ended ${s.status} after ${s.attempt} attempt(s), execution-retry attempts [${e.retryEvents.map((r) => r.attempt)}]`,
      );
    }
  }

  Object.assign(stats, counts);
  const summary = {
    executor: plan.name,
    ...stats,
    maxSlotsHeld: tracker.maxHeld,
    agentCalls: tracker.entries,
    ms: Math.round(performance.now() - t0),
  };

  if (!shutdownCalled) await bg.shutdown({ timeoutMs: 50 });
  summaries.push(summary);
  assert.deepEqual(problems, [], `${tag} ${problems.length} problem(s); summary ${JSON.stringify(summary)}`);
  return summary;
}

// ----- the plans ---------------------------------------------------------------------------

const PLANS = [
  { name: 'A', executions: 9000, concurrency: 8, maxConcurrency: 24, graceMs: 20, floods: [0.3] },
  { name: 'B', executions: 9000, concurrency: 4, maxConcurrency: 16, graceMs: 15, retries: 1, retryDelayMs: 1, backoff: 'exponential', floods: [0.5] },
  { name: 'C', executions: 9500, concurrency: 12, maxConcurrency: 32, graceMs: 25, shutdown: { at: 0.8, mode: 'cancel', timeoutMs: 40 }, floods: [0.2] },
  { name: 'D', executions: 9000, concurrency: 6, maxConcurrency: 20, graceMs: 20, defaultTimeoutMs: 200, floods: [0.4] },
  { name: 'E', executions: 9500, concurrency: 16, maxConcurrency: 40, graceMs: 30, shutdown: { at: 0.85, mode: 'drain', timeoutMs: 60 }, floods: [0.7] },
  { name: 'F', executions: 9000, concurrency: 2, maxConcurrency: 10, graceMs: 12, retries: 2, retryDelayMs: 0, floods: [0.6] },
];

const runPlans = async (t, list) => {
  const results = await Promise.allSettled(list.map((plan) => runChaos(plan, PLANS.indexOf(plan))));
  for (const r of results) if (r.status === 'fulfilled') t.diagnostic(JSON.stringify(r.value));
  for (const r of results) if (r.status === 'rejected') throw r.reason;
};

test(`chaos (seed ${SEED}): executors A and B, concurrency changes, pauses, retries`, (t) => runPlans(t, [PLANS[0], PLANS[1]]));

test(`chaos (seed ${SEED}): executors C and D, a mid-run shutdown('cancel', timeoutMs) and a default timeout`, (t) =>
  runPlans(t, [PLANS[2], PLANS[3]]));

test(`chaos (seed ${SEED}): executors E and F, a mid-run shutdown('drain', timeoutMs) and config retries`, (t) =>
  runPlans(t, [PLANS[4], PLANS[5]]));

test(`chaos (seed ${SEED}): at least 50,000 executions in all, and no unhandled rejection or uncaught exception`, async (t) => {
  await sleep(50); // let anything late surface
  const total = summaries.reduce((n, s) => n + s.executions, 0);
  t.diagnostic(`seed ${SEED}: ${total} executions, ${summaries.reduce((n, s) => n + s.agentCalls, 0)} agent calls`);
  assert.equal(summaries.length, PLANS.length, 'every executor ran');
  assert.ok(total >= 50_000, `only ${total} executions`);
  assert.deepEqual(describeProcessErrors(), [], `seed ${SEED}: process-level errors`);
});
