'use strict';

// `executeMultiple`: one task through several agents, their results side by side, a
// consistency verdict and a report.

const { describe, messageOf, typeError } = require('./errors.js');
const { isArray } = require('./validate.js');
const { extId } = require('./record.js');
const { onEnd } = require('./watch.js');
const { MODE_AGGREGATE } = require('./protocol.js');

const round2 = (x) => Math.round(x * 100) / 100;
/** An execution's id; null for one refused before it was queued (the core gave it none). */
const idOf = (rec) => (rec.id === 0 ? null : extId(rec.id));

/** Array.isArray that answers true for a revoked Proxy's throw: refused like an array. */
function safeIsArray(v) {
  try {
    return isArray(v);
  } catch {
    return true;
  }
}

/**
 * The executions of one call: `agents` is an array of agent names (each runs `task` with
 * `options`) or of `{ agent, task, options }` items (a name among them still runs the shared
 * task), then `(items, options)` is accepted too. Returns `{ list, options }`.
 */
function parseItems(agents, task, options) {
  if (!isArray(agents) || agents.length === 0) {
    throw typeError(`agents must be a non-empty array of agent names or { agent, task, options } items, got ${describe(agents)}`);
  }
  if (task !== undefined && task !== null && typeof task === 'object' && options === undefined) {
    options = task; // executeMultiple(items, options)
    task = undefined;
  }
  const list = [];
  for (let i = 0; i < agents.length; i++) {
    const item = agents[i];
    if (typeof item === 'string') {
      if (item === '') throw typeError(`agents[${i}] must be a non-empty string, got ""`);
      if (typeof task !== 'string') throw typeError(`task must be a string (agents[${i}] is a name and runs the shared task), got ${describe(task)}`);
      list.push({ agent: item, task, options, where: 'options' });
      continue;
    }
    if (item === null || typeof item !== 'object' || safeIsArray(item)) {
      throw typeError(`agents[${i}] must be an agent name or { agent, task, options }, got ${describe(item)}`);
    }
    let agent;
    let t;
    let o;
    let where = 'options';
    try {
      agent = item.agent;
      t = item.task === undefined ? task : item.task;
      o = item.options === undefined ? options : item.options;
      if (item.options !== undefined) where = `agents[${i}].options`;
    } catch (err) {
      const e = typeError(`agents[${i}] must be an agent name or { agent, task, options }, got ${describe(item)} (reading it threw)`);
      e.cause = err;
      throw e;
    }
    if (typeof agent !== 'string' || agent === '') throw typeError(`agents[${i}].agent must be a non-empty string, got ${describe(agent)}`);
    if (typeof t !== 'string') throw typeError(`agents[${i}].task must be a string, got ${describe(t)}`);
    list.push({ agent, task: t, options: o, where });
  }
  return { list, options };
}

async function executeMultiple(ex, agents, task, options) {
  const parsed = parseItems(agents, task, options);
  const list = parsed.list;
  options = parsed.options;
  const check = options !== undefined && options !== null && typeof options === 'object' ? options.consistencyCheck : undefined;
  if (check !== undefined && typeof check !== 'function') {
    throw typeError(`options.consistencyCheck must be a function, got ${describe(check)}`);
  }
  // Every item is validated before any is submitted: a bad call submits nothing.
  for (const it of list) {
    ex._rules.record(MODE_AGGREGATE, it.agent, it.task, it.options);
    if (it.options !== undefined && it.options !== null) {
      ex._durableOption(it.options);
      // Every execution of a call runs: a key would make one wait for another, or be skipped.
      const key = it.options.key;
      if (key !== undefined && key !== null) {
        throw typeError(`${it.where}.key: executeMultiple takes no key (each of its executions runs), got ${describe(key)}`);
      }
    }
  }
  // Each record is waited on as soon as it exists: a large call syncs full batches while it
  // submits, and their answers (a refusal, an aborted signal) may end earlier records.
  const recs = [];
  const finished = [];
  for (const it of list) {
    const rec = ex._submit(MODE_AGGREGATE, it.agent, it.task, it.options);
    recs.push(rec);
    finished.push(new Promise((resolve) => onEnd(rec, (snapshot, status) => resolve({ snapshot, status }))));
  }
  ex._flush();
  const aggregationId = `agg-${++ex._aggregations}`;
  const tasks = list.map((it) => it.task);
  ex._emit('aggregation-started', {
    aggregationId,
    agents: list.map((it) => it.agent),
    task: typeof task === 'string' ? task : tasks[0],
    tasks,
    executionIds: recs.map(idOf),
  });
  const ends = await Promise.all(finished);
  const results = ends.map(({ snapshot, status }, i) => {
    const rec = recs[i];
    const ok = status === 'completed';
    return {
      id: idOf(rec),
      agent: rec.agent,
      task: rec.task,
      status,
      result: ok ? rec.value : null,
      error: ok ? null : messageOf(rec.value),
      errorObject: ok ? undefined : rec.value,
      duration: snapshot.found ? snapshot.duration : 0,
    };
  });
  const consistent = await consistency(results, check);
  const report = { ...arithmetic(results), consistency: consistent, timestamp: new Date().toISOString() };
  ex._emit('aggregation-completed', { aggregationId, results, report });
  return { aggregationId, results, consistent, report };
}

/** Counts, success rate and durations (ms, two decimals; a bad duration counts as 0). */
function arithmetic(results) {
  const total = results.length;
  let successful = 0;
  let duration = 0;
  for (const r of results) {
    if (r.status === 'completed') successful++;
    if (Number.isFinite(r.duration) && r.duration > 0) duration += r.duration;
  }
  return {
    total,
    successful,
    failed: total - successful,
    success_rate: total === 0 ? 0 : round2((successful * 100) / total),
    total_duration: round2(duration),
    average_duration: total === 0 ? 0 : round2(duration / total),
  };
}

/** The verdict: every execution succeeded, and `check` (which may return a promise) agrees. */
async function consistency(results, check) {
  const failures = results.filter((r) => r.status !== 'completed');
  if (failures.length > 0) {
    return {
      consistent: false,
      reason: `${failures.length} of ${results.length} executions did not succeed`,
      failures: failures.map((f) => ({ id: f.id, agent: f.agent, status: f.status, error: f.error })),
    };
  }
  if (check === undefined) return { consistent: true, all_succeeded: true };
  try {
    const verdict = await check(results);
    if (verdict === true) return { consistent: true, all_succeeded: true };
    if (verdict === false) return { consistent: false, reason: 'consistencyCheck returned false', failures: [] };
    if (verdict !== null && typeof verdict === 'object') {
      const reason = verdict.reason;
      if (verdict.consistent === true) return { consistent: true, all_succeeded: true, reason };
      return { consistent: false, reason: reason || 'consistencyCheck reported an inconsistency', failures: [] };
    }
    return { consistent: false, reason: `consistencyCheck returned ${describe(verdict)}`, failures: [] };
  } catch (err) {
    return { consistent: false, reason: `consistencyCheck threw: ${messageOf(err)}`, failures: [] };
  }
}

module.exports = { executeMultiple };
