'use strict';

// What waits here for stored executions to end: the submissions' own records (handles:
// their promises and callbacks), waitFor() resolvers, and the latest final statuses. Ends
// come from attempts run here (their own values) or from the store (JSON values), and each
// reaches every waiter once. The Durable class (durable.js) builds on this.

const { Execution } = require('../record.js');
const { coded, messageOf } = require('../errors.js');
const { durableId, parseDurableId, rowStatus } = require('./values.js');
// ENDED_KEPT: final statuses remembered for `waitFor` and `getExecutionStatus` of ended
// executions; the store's thread reads no more rows than that of fire-and-forget ends.
const { ENDED_KEPT, MODE_EXECUTE, MODE_NAMES, STATUS_NAMES } = require('../protocol.js');

/** An execution that ended here, until its status object is asked for. */
class Ended {
  constructor(rec, status, value, at) {
    this.rec = rec;
    this.status = status;
    this.value = value;
    this.at = at;
  }
}

/** An execution that ended elsewhere, read from the store, until its status object is asked for. */
class StoredEnd {
  constructor(row) {
    row.options = null; // not in a status object: not kept
    this.row = row;
  }
}

/** Whether `rec` takes the value of its execution's end (a promise or a callback). */
const takesValue = (rec) => rec.mode === MODE_EXECUTE || rec.callback !== null;

class Outcomes {
  constructor(ex) {
    this.ex = ex;
    this.handles = new Map(); // rowId -> submission records waiting for the outcome
    this.awaiting = 0; // of those, the ones with a promise or callback to settle
    this.runs = new Map(); // rowId -> the record running an attempt here
    this.waiters = new Map(); // rowId -> waitFor() resolvers
    this.watching = new Map(); // rowId -> Set of watch() iterators, told of progress made here
    this.ended = new Map(); // rowId -> final status object, Ended or StoredEnd (the latest ENDED_KEPT)
    this.endedAt = new Map(); // rowId -> when its end was heard here (Date.now()), in the order of `ended`
    this.endedTtlMs = Infinity; // how long an end stays in `ended`: the store's resultTtlMs (set by Durable)
    this.toWatch = []; // just inserted: cannot have ended yet
    this.toCheck = []; // may have ended already: looked up when watched
    this.toUnwatch = [];
    this.closed = false;
    /** @type {Promise<void> | undefined} what close() returns, once called (set by the subclass) */
    this.closePromise = undefined;
    /** @type {import('./store-link.js').StoreLink} set by the subclass */
    this.link;
  }

  /** Node.js stays alive while an outcome is awaited: implemented by Durable. */
  _updateKeepAlive() {
    throw new Error('implemented by Durable');
  }

  /**
   * Execution `rowId` ended: every handle and waiter here gets its outcome. `final` is its
   * status object, the record that ran it here, or its stored row as a StoredEnd (the
   * object is then built when first read).
   */
  _settle(rowId, status, value, final) {
    const now = Date.now();
    this._forgetEnds(now);
    this.ended.delete(rowId); // kept in the order of their ends
    this.ended.set(rowId, final instanceof Execution ? new Ended(final, status, value, now) : final);
    this.endedAt.delete(rowId);
    this.endedAt.set(rowId, now);
    if (this.ended.size > ENDED_KEPT) this._forgetOldestEnd();
    const list = this.handles.get(rowId);
    if (list !== undefined) {
      this.handles.delete(rowId);
      this.toUnwatch.push(rowId);
      for (const rec of list) this._settleHandle(rec, status, value);
    }
    const waiters = this.waiters.get(rowId);
    if (waiters !== undefined) {
      this.waiters.delete(rowId);
      const snapshot = this._endedStatus(rowId);
      for (const w of waiters) w(snapshot);
    }
  }

  /**
   * The kept final value of `rowId`, `from`, is replaced by `to` (its command output dropped).
   * A status object already given out stays as it is: the one kept is replaced by a copy.
   */
  replaceKept(rowId, from, to) {
    const e = this.ended.get(rowId);
    if (e instanceof Ended) {
      if (e.value === from) e.value = to;
    } else if (e !== undefined && !(e instanceof StoredEnd) && (e.result === from || e.errorObject === from)) {
      this.ended.set(rowId, { ...e, result: e.result === from ? to : e.result, errorObject: e.errorObject === from ? to : e.errorObject });
    }
  }

  /** Ends heard more than `endedTtlMs` ago are forgotten, as the store deletes their rows. */
  _forgetEnds(now) {
    for (const at of this.endedAt.values()) {
      if (now - at <= this.endedTtlMs) return;
      this._forgetOldestEnd();
    }
  }

  _forgetOldestEnd() {
    const rowId = this.ended.keys().next().value;
    this.ended.delete(rowId);
    this.endedAt.delete(rowId);
  }

  /** The remembered final status of `rowId`, or undefined. */
  _endedStatus(rowId) {
    this._forgetEnds(Date.now());
    const e = this.ended.get(rowId);
    let status;
    if (e instanceof Ended) status = this._localStatus(e.rec, e.status, e.value, e.at);
    else if (e instanceof StoredEnd) {
      try {
        status = rowStatus(e.row);
      } catch {
        status = { found: false }; // its stored value cannot be read
      }
    } else return e;
    this.ended.set(rowId, status);
    return status;
  }

  /** The final status object of `rec`, which ended here as `status` with `value`. */
  _localStatus(rec, status, value, finishedAt) {
    const d = rec.x.durable;
    const completed = status === 'completed';
    return {
      found: true,
      id: d.extId,
      executionId: d.extId,
      agent: rec.agent,
      task: rec.task,
      mode: MODE_NAMES[rec.mode],
      priority: rec.priority,
      status,
      attempt: d.attempt,
      progress: completed ? 100 : d.progress,
      started: d.submittedAt,
      duration: finishedAt - d.startedAt,
      result: completed ? value : null,
      error: completed ? null : messageOf(value),
      errorObject: completed ? undefined : value,
      startedAt: d.startedAt,
      finishedAt,
      durable: true,
    };
  }

  _settleHandle(rec, status, value) {
    // An attempt still running here (its lease ran out, another executor ended the
    // execution) ends on its own: its end is written, found stale, and it leaves `runs`.
    if (!rec.x.durable.running) rec.done = true;
    if (rec.x.userSignal !== null) this.ex._unwireSignal(rec);
    if (rec.mode === MODE_EXECUTE || rec.callback !== null) this.awaiting--;
    this.ex._answer(rec, status === 'completed', value);
  }

  /** A stored row that ended, read from the store: settles what waits for it here. */
  _endedRow(row) {
    const list = this.handles.get(row.id);
    const waiting = this.waiters.has(row.id);
    if (list === undefined && !waiting) return;
    if (!waiting && !list.some(takesValue)) {
      // Nothing takes the value now (fire-and-forget): its status object, and the parse of
      // its stored value, wait until someone asks for them.
      this._settle(row.id, STATUS_NAMES[row.status], undefined, new StoredEnd(row));
      return;
    }
    let final;
    let value;
    try {
      final = rowStatus(row);
      value = final.status === 'completed' ? final.result : final.errorObject;
    } catch (err) {
      const e = coded(Error, 'ERR_STORE', `The stored result of execution ${durableId(row.id)} cannot be read: ${messageOf(err)}`);
      this._settle(row.id, 'failed', e, { found: false });
      return;
    }
    this._settle(row.id, final.status, value, final);
  }

  /**
   * An execution that ended elsewhere, its row not read: its submissions here take no value
   * and its status would not be among the latest ENDED_KEPT. Their records are done with;
   * `getExecutionStatus` says not found, as for an end older than those kept.
   */
  _endedUnread(rowId) {
    const list = this.handles.get(rowId);
    if (list === undefined) return;
    if (this.waiters.has(rowId) || list.some(takesValue)) {
      // Something here waits for it after all: read it.
      this.toCheck.push(rowId);
      return;
    }
    this.handles.delete(rowId);
    this.toUnwatch.push(rowId);
    for (const rec of list) this._settleHandle(rec, null, undefined);
  }

  /** An execution that no longer exists in the store (deleted by retention unseen). */
  _gone(rowId) {
    const err = coded(Error, 'ERR_STORE', `Execution ${durableId(rowId)} was deleted from the store before its outcome was read`);
    this._settle(rowId, 'failed', err, { found: false });
  }

  /**
   * `it` (a watch() iterator) is told of the progress reported here for execution `rowId`
   * (see Durable.progress) until the returned function is called.
   */
  followProgress(rowId, it) {
    let set = this.watching.get(rowId);
    if (set === undefined) this.watching.set(rowId, (set = new Set()));
    set.add(it);
    return () => {
      set.delete(it);
      if (set.size === 0 && this.watching.get(rowId) === set) this.watching.delete(rowId);
    };
  }

  /** The submission made here that wrote row `rowId` (not one that joined it by key), or undefined. */
  _writer(rowId) {
    const list = this.handles.get(rowId);
    return list === undefined ? undefined : list.find((r) => !r.x.durable.joined);
  }

  /**
   * The record here that best describes execution `rowId`: the one running it, else the
   * submission that wrote its row, else one that joined it by key (which holds its own task
   * and options, not the row's); undefined when none.
   */
  _known(rowId) {
    return this.runs.get(rowId) || this._writer(rowId) || (this.handles.get(rowId) || [])[0];
  }

  _fallbackStatus(rowId, executionId, err) {
    const rec = this._known(rowId);
    return {
      found: true,
      id: executionId,
      executionId,
      agent: rec !== undefined ? rec.agent : err.agent,
      task: rec !== undefined ? rec.task : undefined,
      mode: rec !== undefined ? MODE_NAMES[rec.mode] : undefined,
      priority: rec !== undefined ? rec.priority : undefined,
      attempt: 0,
      progress: 0,
      result: null,
      error: err.message,
      errorObject: err,
      durable: true,
    };
  }

  /** What this process knows of a durable execution, synchronously. */
  localStatus(rowId) {
    const ended = this._endedStatus(rowId);
    if (ended !== undefined) return ended;
    const rec = this._known(rowId);
    if (rec === undefined) return { found: false };
    const d = rec.x.durable;
    const running = d.running;
    const now = Date.now();
    const out = {
      found: true,
      id: d.extId,
      executionId: d.extId,
      agent: rec.agent,
      task: rec.task,
      mode: MODE_NAMES[rec.mode],
      priority: rec.priority,
      status: running ? 'running' : 'queued',
      attempt: d.attempt,
      progress: 0,
      started: d.submittedAt,
      duration: running ? now - d.startedAt : 0,
      result: null,
      error: null,
      startedAt: running ? d.startedAt : undefined,
      durable: true,
    };
    if (d.key !== undefined) out.key = d.key;
    const startAfter = rec.x.startAfter;
    if (!running && d.attempt === 0 && startAfter !== undefined && startAfter > now) out.startAfter = startAfter;
    return out;
  }

  /** Resolves with the final status object of a durable execution, wherever it runs. */
  waitFor(executionId) {
    const rowId = parseDurableId(executionId);
    const ended = this._endedStatus(rowId);
    if (ended !== undefined) return Promise.resolve(ended);
    // Closed (or closing): no end can be heard any more, as for the waiters close() answered.
    if (this.closePromise !== undefined) return Promise.resolve({ found: false });
    return new Promise((resolve) => {
      let list = this.waiters.get(rowId);
      if (list === undefined) {
        list = [];
        this.waiters.set(rowId, list);
        // Read when it ends, at once (the store's thread reads the ends of submissions that
        // take no value, fire-and-forget ones, a while later and only the latest).
        const handles = this.handles.get(rowId);
        if (handles === undefined || !handles.some(takesValue)) this.toCheck.push(rowId);
      }
      list.push(resolve);
      this._flushWatches();
      this._updateKeepAlive();
    });
  }

  _flushWatches() {
    if (this.closed) return;
    if (this.toWatch.length > 0) {
      this.link.native.watch(this.toWatch, false);
      this.toWatch = [];
    }
    if (this.toCheck.length > 0) {
      this.link.native.watch(this.toCheck, true);
      this.toCheck = [];
    }
    if (this.toUnwatch.length > 0) {
      this.link.native.unwatch(this.toUnwatch);
      this.toUnwatch = [];
    }
  }
}

module.exports = { Outcomes, takesValue };
