'use strict';

// What users can ask about executions and the executor. Each query syncs the pending batch
// first, so it sees every submission and settlement made before it.

const { idOf, isDurable, parseId } = require('./record.js');
const { messageOf } = require('./errors.js');
const { MODE_NAMES } = require('./protocol.js');
const { limitsStatus } = require('./limits.js');

/** The status object of one execution (`v` is the core's view of it). */
function statusObject(rec, v) {
  const status = v.status;
  const completed = status === 'completed';
  const failed = status === 'failed' || status === 'cancelled';
  const out = {
    found: true,
    id: idOf(rec),
    executionId: idOf(rec),
    agent: rec.agent,
    task: rec.task,
    mode: MODE_NAMES[rec.mode],
    priority: rec.priority,
    status,
    attempt: rec.attempt,
    progress: completed ? 100 : v.progress,
    started: v.submittedAt,
    duration: v.duration,
    result: completed ? rec.value : null,
    error: failed ? messageOf(rec.value) : null,
    errorObject: failed ? rec.value : undefined,
    startedAt: v.startedAt == null ? undefined : v.startedAt,
    finishedAt: v.finishedAt == null ? undefined : v.finishedAt,
  };
  if (status === 'queued') out.queuePosition = v.queuePosition;
  if (rec.x !== null && rec.x.key !== undefined) out.key = rec.x.key;
  if (status === 'queued' && rec.attempt === 0 && rec.x !== null && rec.x.startAfter !== undefined && rec.x.startAfter > Date.now()) {
    out.startAfter = rec.x.startAfter;
  }
  return out;
}

/**
 * The record of core id `id`, unless it is a stored execution: its core id is never given to
 * users (they know it by its `exec-d` id, answered from the store's side).
 */
function recordOf(ex, id) {
  const rec = ex._records.get(id);
  return rec === undefined || isDurable(rec) ? undefined : rec;
}

/** The record of a user-given execution id, when the core still knows it. */
function findRecord(ex, executionId) {
  ex._flush();
  const id = parseId(executionId);
  if (id === 0 || ex._native.statusOf(id) < 0) return undefined;
  return recordOf(ex, id);
}

function executionStatus(ex, executionId) {
  ex._flush();
  const id = parseId(executionId);
  const v = id === 0 ? null : ex._native.view(id);
  const rec = v === null ? undefined : recordOf(ex, id);
  if (rec === undefined) return { found: false };
  return statusObject(rec, v);
}

function queueStatus(ex) {
  ex._flush();
  const c = ex._native.counts();
  const queue = [];
  for (const id of ex._native.queueOrder()) {
    const rec = ex._records.get(id);
    if (rec !== undefined) queue.push({ id: idOf(rec), agent: rec.agent, priority: rec.priority, mode: MODE_NAMES[rec.mode] });
  }
  return {
    queued: c.queued,
    running: c.running,
    max_concurrent: c.maxConcurrent,
    slots_used: c.slotsUsed,
    paused: c.paused,
    throttled: c.throttled,
    queue,
    ...limitsStatus(ex),
  };
}

function activeExecutions(ex) {
  ex._flush();
  const out = [];
  for (const id of ex._native.runningIds()) {
    const rec = ex._records.get(id);
    const v = ex._native.view(id);
    if (rec === undefined || v === null) continue;
    const executionId = idOf(rec);
    const entry = {
      id: executionId,
      executionId,
      agent: rec.agent,
      task: rec.task,
      mode: MODE_NAMES[rec.mode],
      priority: rec.priority,
      progress: v.progress,
      duration: v.duration,
      startedAt: v.startedAt,
    };
    const usage = ex._commands === null ? null : ex._commands.usageOf(executionId);
    out.push(usage === null ? entry : Object.assign(entry, usage));
  }
  return out;
}

function executorStatus(ex) {
  ex._flush();
  const c = ex._native.counts();
  return {
    initialized: ex._initialized,
    running: c.running,
    queued: c.queued,
    max_concurrent: c.maxConcurrent,
    active_processes: c.running,
    command_processes: ex._commands === null ? 0 : ex._commands.live,
    slots_used: c.slotsUsed,
    paused: c.paused,
    throttled: c.throttled,
    shutting_down: ex._closing,
    submitted: c.submitted,
    completed: c.completed,
    failed: c.failed,
    cancelled: c.cancelled,
    retained: c.retained,
    agents: [...ex._agents.keys()],
    resources: ex.resourceMonitor.getStatus(),
  };
}

/**
 * Counts by status, executions finished in the last minute, and per agent the queue-wait
 * and run-time percentiles (ms, from bounded histograms kept in Rust: ±12.5 %).
 */
function stats(ex) {
  ex._flush();
  const c = ex._native.counts();
  const st = ex._native.stats();
  return {
    counts: {
      submitted: c.submitted,
      queued: c.queued,
      running: c.running,
      completed: c.completed,
      failed: c.failed,
      cancelled: c.cancelled,
    },
    // Starts that waited for a rate limit, and for their agent's concurrency limit.
    limits: { rateLimited: st.rateLimited, limitDeferred: st.limitDeferred },
    throughput: { lastMinute: st.lastMinute, perSecond: Math.round((st.lastMinute / 60) * 100) / 100 },
    agents: st.agents.map((a) => ({ agent: ex._agentNames[a.key], queueWait: a.wait, runTime: a.run })),
    store: ex._store === null ? null : { ...ex._store.stats },
  };
}

module.exports = { statusObject, recordOf, findRecord, executionStatus, queueStatus, activeExecutions, executorStatus, stats };
