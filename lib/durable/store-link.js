'use strict';

// The link to the store's thread (`NativeStore`). Writes are grouped: submissions, attempt
// ends, progress and releases made in one microtask run go together in one batch — one
// transaction, one commit (group commit). Up to MAX_IN_FLIGHT batches are in flight, so the
// store's thread commits one while this thread handles the answer to the other; more wait. Other requests
// (cancel, fetch, check, close) are answered by promise. Every answer and notice arrives
// through one callback, `owner._onStoreEvent(event)`, except batch answers, which go to
// `owner._batchDone(sent, event)`.
//
// PostgreSQL: while nothing else claims, a claim for the free slots is parked in the store's
// thread, which runs it as soon as work may be waiting (another process's notification, a
// poll, a due time, a submission of this one) and answers it like a batch; a submission
// elsewhere may also hand its executions to it, answered from the listener's thread. Work
// from elsewhere starts without a round trip through this thread. It is taken back (answered
// with nothing claimed) when it would claim more than is free now, or agents held here.

const { binding, weakCallback } = require('../native.js');
const { coded } = require('../errors.js');
const P = require('../protocol.js');

const MAX_IN_FLIGHT = 2;
/** After a failed batch, the next waits 10 ms, doubling up to 1 s. */
const RETRY_FIRST_MS = 10;
const RETRY_MAX_MS = 1000;
/** Failed batches in a row after which close() gives up on what is pending. */
const CLOSE_ATTEMPTS = 8;

/**
 * The most stored text one batch carries, in UTF-16 code units (at most 3 bytes each as
 * UTF-8: 384 MiB), so no statement of it reaches PostgreSQL's 1 GB message limit; a single
 * larger value (up to MAX_STORED_BYTES) goes in a batch of its own.
 */
const BATCH_UNITS = 128 * 1024 * 1024;

/** The text of a submission, in UTF-16 code units. */
const insertUnits = (row) => row.agent.length + row.task.length + row.level.length + (row.options === undefined ? 0 : row.options.length) + (row.key === undefined ? 0 : row.key.length);

/** The stored text of a batch's submissions and attempt ends (see BATCH_UNITS). */
function unitsOf(part) {
  let units = 0;
  for (const row of part.inserts) units += insertUnits(row);
  for (const v of part.finishValues) units += v.length;
  return units;
}

/** Numbers per submission in a batch: its P.INSERT_NUMBERS, then its texts' lengths. */
const INSERT_WIDTH = P.INSERT_NUMBERS.length + P.INSERT_TEXTS.length;

/**
 * The submissions of a batch as the store takes them (see P.INSERT_TEXTS): their texts one
 * after the other, and per submission its numbers then the length of each text (-1: none).
 */
function insertColumns(inserts) {
  const texts = [];
  const numbers = new Float64Array(inserts.length * INSERT_WIDTH);
  let k = 0;
  for (const row of inserts) {
    for (const f of P.INSERT_NUMBERS) numbers[k++] = row[f];
    for (const f of P.INSERT_TEXTS) {
      const t = row[f];
      if (t === undefined || t === null) numbers[k++] = -1;
      else {
        numbers[k++] = t.length;
        texts.push(t);
      }
    }
  }
  return { text: texts.join(''), numbers };
}

/** The pause before the retry that follows `n` earlier ones: doubling, capped. */
const retryDelay = (n) => Math.min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** n);

/** What one batch carries, and the records its answers concern. */
class Pending {
  constructor() {
    this.inserts = [];
    this.insertRecs = [];
    this.finishes = []; // [id, attempt, status, retryable, ...]
    this.finishValues = []; // JSON text per finish
    this.finishRecs = [];
    this.progress = [];
    this.releases = [];
    this.claim = 0; // executions claimed with it
    this.req = 0;
    this.units = 0; // stored text it carries (see BATCH_UNITS)
    this.isolated = false; // part of a refused batch (see StoreLink.isolate)
  }
  get empty() {
    return this.inserts.length === 0 && this.finishes.length === 0 && this.progress.length === 0 && this.releases.length === 0;
  }

  /** Moves its first `inserts` submissions, `finishes` attempt ends and `releases` releases to a batch of their own. */
  take(inserts, finishes, releases) {
    const part = new Pending();
    part.inserts = this.inserts.splice(0, inserts);
    part.insertRecs = this.insertRecs.splice(0, inserts);
    part.finishes = this.finishes.splice(0, finishes * 4);
    part.finishValues = this.finishValues.splice(0, finishes);
    part.finishRecs = this.finishRecs.splice(0, finishes);
    part.releases = this.releases.splice(0, releases * 2);
    part.units = unitsOf(part);
    this.units -= part.units;
    return part;
  }

  /** Its writes: submissions, then attempt ends, then releases (progress is not one). */
  get writes() {
    return this.insertRecs.length + this.finishRecs.length + this.releases.length / 2;
  }

  /** A batch of its writes `from` to `to` (as `writes` counts them), without progress. */
  slice(from, to) {
    const part = new Pending();
    const within = (n, offset) => [Math.max(0, Math.min(n, from - offset)), Math.max(0, Math.min(n, to - offset))];
    const [a, b] = within(this.insertRecs.length, 0);
    part.inserts = this.inserts.slice(a, b);
    part.insertRecs = this.insertRecs.slice(a, b);
    const [c, d] = within(this.finishRecs.length, this.insertRecs.length);
    part.finishes = this.finishes.slice(c * 4, d * 4);
    part.finishValues = this.finishValues.slice(c, d);
    part.finishRecs = this.finishRecs.slice(c, d);
    const [e, f] = within(this.releases.length / 2, this.insertRecs.length + this.finishRecs.length);
    part.releases = this.releases.slice(e * 2, f * 2);
    part.units = unitsOf(part);
    return part;
  }

  /** Appends the writes of `other` (for giving them up together). */
  append(other) {
    for (const key of ['inserts', 'insertRecs', 'finishes', 'finishValues', 'finishRecs', 'releases']) {
      for (const item of other[key]) this[key].push(item);
    }
    this.units += other.units;
  }
}

/** A claim parked in the store's thread (see `StoreLink.park`). */
class Parked extends Pending {
  /** @param {number} claim @param {number} req @param {string[]} exclude */
  constructor(claim, req, exclude) {
    super();
    this.claim = claim;
    this.req = req;
    this.exclude = exclude;
    this.running = false; // asked to run now
    this.unparking = false; // asked back
  }
}

/**
 * A store error as users see it: `ERR_STORE` / `ERR_STORE_VERSION`, the path in the message
 * (a busy database, a lost connection or a refused write, told apart inside, is an
 * `ERR_STORE` once it reaches users).
 */
const storeError = (code, message) => coded(Error, code === 'ERR_STORE_VERSION' ? code : 'ERR_STORE', message);

class StoreLink {
  /** `options`: NativeStoreOptions; `owner`: the durable layer (see durable.js). */
  constructor(options, owner) {
    this.owner = owner;
    this.native = new binding.NativeStore(options, weakCallback(owner, '_onStoreEvent'));
    this.pending = new Pending();
    this.claimWanted = false;
    this.inFlight = []; // the Pendings sent, oldest first, until their answers
    this.inFlightClaim = 0; // executions they claim at most
    this.scheduled = false;
    this.requests = new Map(); // req -> { resolve, reject, send, order, failed, write }
    // Requests a lost connection failed, and those made since (or behind a write still
    // unanswered), waiting to be sent in the order they were made: a limit set twice keeps
    // the later value.
    this.held = [];
    this.writing = 0; // writes sent and unanswered (at most one)
    this.heldTries = 0;
    this.heldTimer = null;
    this.nextOrder = 1;
    this.nextReq = 1;
    this.closed = false;
    this.onDrained = null; // close() waiting for the batches before it
    this.failures = 0; // failed batches in a row
    this.retryTimer = null; // the pause after a failed batch
    this.dead = false; // the store's thread has stopped: nothing more can be sent
    // Parts of refused batches, sent one at a time before what is pending (see `isolate`).
    this.isolated = [];
    this.soloClaim = false; // then the refused batch's claim alone
    this.parks = options.postgresUrl != null; // see `park`
    /** @type {Parked | null} the claim parked in the store's thread, until answered */
    this.parked = null;
    this.reviewing = false; // a look at the parked claim is queued (see `reviewSoon`)
    this.send = () => {
      this.scheduled = false;
      this.flush();
    };
  }

  /** Requests and batches in flight (a parked claim once its answer is waited for). */
  get busy() {
    const p = this.parked;
    return (
      this.inFlight.length > 0 ||
      this.requests.size > 0 ||
      this.held.length > 0 ||
      !this.pending.empty ||
      this.isolated.length > 0 ||
      (p !== null && (p.running || p.unparking))
    );
  }

  insert(row, rec) {
    const p = this.pending;
    p.inserts.push(row);
    p.insertRecs.push(rec);
    p.units += insertUnits(row);
    this.schedule();
  }

  /** An attempt ended: `status` a STATUS_* code, `json` its result or error as JSON text. */
  finish(id, attempt, status, retryable, json, rec) {
    const p = this.pending;
    p.finishes.push(id, attempt, status, retryable ? 1 : 0);
    p.finishValues.push(json);
    p.finishRecs.push(rec);
    p.units += json.length;
    this.schedule();
  }

  progress(id, attempt, percent) {
    if (this.dead) return; // nothing can be written any more
    this.pending.progress.push(id, attempt, percent);
    this.schedule();
  }

  release(id, attempt) {
    if (this.dead) return; // its lease runs out instead
    this.pending.releases.push(id, attempt);
    this.schedule();
  }

  /** Claimable work may be waiting: claim with the next batch (now, if slots are free). */
  wantClaim() {
    this.claimWanted = true;
    this.schedule();
    // A flush looks at the parked claim; without one due, it is looked at on its own.
    if (!this.scheduled) this.reviewSoon();
  }

  /**
   * Slots may have been taken or given back (an execution started here without a claim, a
   * pause, a throttle, fewer slots): the parked claim is looked at once this run of
   * microtasks ends, whatever batches are in flight.
   */
  reviewSoon() {
    if (this.parked === null || this.reviewing) return;
    this.reviewing = true;
    queueMicrotask(() => {
      this.reviewing = false;
      this.reviewParked();
    });
  }

  schedule() {
    if (!this.scheduled && this.inFlight.length < MAX_IN_FLIGHT && !this.closed && this.retryTimer === null) {
      this.scheduled = true;
      queueMicrotask(this.send);
    }
  }

  /** Sends what is pending, unless MAX_IN_FLIGHT batches are in flight (an answer sends it). */
  flush() {
    if (this.inFlight.length >= MAX_IN_FLIGHT || this.closed || this.retryTimer !== null || this.dead) return;
    const isolating = this.inFlight.some((b) => b.isolated);
    if (this.isolated.length > 0 || isolating) {
      // One at a time, and nothing else until the last is answered: what was submitted
      // first is stored first, and the claim goes after them all.
      if (!isolating) this.sendBatch(this.isolated.shift(), 0);
      return;
    }
    this.reviewParked();
    const parked = this.parked;
    if (this.claimWanted && parked !== null && !parked.running && !parked.unparking && this.pending.units <= BATCH_UNITS) {
      // The parked claim takes the work, after what is pending.
      this.claimWanted = false;
      if (!this.pending.empty) {
        const sent = this.pending;
        this.pending = new Pending();
        this.sendBatch(sent, 0);
      }
      parked.running = true;
      this.owner._storeBusy();
      if (!this.native.unpark(true)) this.threadStopped();
      return;
    }
    const claim = this.claimWanted ? Math.max(0, Math.min(this.owner._freeSlots() - this.inFlightClaim, this.owner.claimChunk)) : 0;
    if (this.soloClaim) {
      // After a refused batch, its claim alone: refused again, it is the one to blame.
      this.soloClaim = false;
      if (claim > 0) {
        this.claimWanted = false;
        this.sendBatch(new Pending(), claim);
        return;
      }
    }
    if (this.pending.empty && claim === 0) {
      this.park();
      return;
    }
    if (claim > 0) this.claimWanted = false;
    let sent = this.pending;
    if (sent.units > BATCH_UNITS) {
      // Too much text for one batch: the first part now, the rest after.
      sent = this.takeWithin(BATCH_UNITS);
      this.schedule();
    } else this.pending = new Pending();
    this.sendBatch(sent, claim);
    this.park();
  }

  /**
   * Nothing else claiming, slots free: a claim for them waits in the store's thread for
   * work (PostgreSQL). Its executions count as in flight meanwhile. Only a worker (one that
   * called initialize()) that runs some agent parks one: it keeps Node.js alive, so what the
   * claim takes runs; another process could exit with executions claimed in its name.
   */
  park() {
    if (!this.parks || this.parked !== null || this.claimWanted || this.closed || this.dead || this.onDrained !== null) return;
    // A process that runs no agent has nothing to claim (an agent registered later sets the
    // interest, and the store's thread then tells of work).
    if (!this.owner.worker || this.owner.closing || !this.owner.claims) return;
    if (this.retryTimer !== null || this.failures > 0 || this.isolated.length > 0 || this.soloClaim) return;
    const claim = Math.min(this.owner._freeSlots() - this.inFlightClaim, this.owner.claimChunk);
    if (claim <= 0) return;
    const p = new Parked(claim, this.takeReq(), this.owner.claimExclude);
    this.parked = p;
    this.inFlightClaim += claim;
    if (!this.native.park(p.req, claim, p.exclude)) this.threadStopped();
  }

  /**
   * The parked claim is asked back when it would claim more than is free now (paused,
   * throttled, fewer slots, closing) or agents now held here; answered, a new one fits.
   */
  reviewParked() {
    const p = this.parked;
    if (p === null || p.running || p.unparking || this.dead) return;
    const free = this.closed || this.onDrained !== null ? 0 : this.owner._freeSlots() - (this.inFlightClaim - p.claim);
    const held = this.owner.claimExclude;
    if (free >= p.claim && held.length === p.exclude.length && held.every((a, i) => a === p.exclude[i])) return;
    p.unparking = true;
    this.owner._updateKeepAlive();
    if (!this.native.unpark(false)) this.threadStopped();
  }

  sendBatch(sent, claim) {
    const req = this.takeReq();
    sent.claim = claim;
    sent.req = req;
    // Before the batch counts as in flight: nothing after this throws.
    const inserts = insertColumns(sent.inserts);
    this.inFlight.push(sent);
    this.inFlightClaim += claim;
    const queued = this.native.batch(req, {
      insertText: inserts.text,
      insertNumbers: inserts.numbers,
      finishes: sent.finishes,
      finishValues: sent.finishValues,
      progress: sent.progress,
      releases: sent.releases,
      claim,
      exclude: claim > 0 ? this.owner.claimExclude : [],
    });
    this.owner._storeBusy();
    if (!queued) this.threadStopped();
  }

  /**
   * The store refused a write of a batch that carried several (submissions, attempt ends,
   * releases, a claim): which one is unknown. Its writes go again ahead of what is pending,
   * in two halves sent one after the other; a half refused again is halved in turn, so the
   * refused write ends up alone (and fails alone) in about 2·log2(n) batches, while every
   * half without it is stored whole. The claim goes last, alone.
   */
  isolate(sent) {
    const n = sent.writes;
    const half = Math.ceil(n / 2);
    const parts = [sent.slice(0, half), sent.slice(half, n)].filter((p) => p.writes > 0);
    for (const p of parts) p.isolated = true;
    // A part refused again holds the earliest writes still to send; a batch refused later
    // than another, later ones.
    this.isolated = sent.isolated ? parts.concat(this.isolated) : this.isolated.concat(parts);
    if (sent.claim > 0) {
      this.soloClaim = true;
      this.claimWanted = true;
    }
  }

  /** A part of a refused batch that failed for a passing reason goes again first, whole. */
  retryIsolated(part) {
    this.isolated.unshift(part);
  }

  /** What is pending and the parts of refused batches still to send, as one batch. */
  unsent() {
    const all = new Pending();
    for (const p of this.isolated) all.append(p);
    all.append(this.pending);
    return all;
  }

  /**
   * Takes from `pending` the first submissions and attempt ends whose text fits in `units`
   * (at least one), with all progress and releases, as a batch of their own.
   */
  takeWithin(units) {
    const p = this.pending;
    let used = 0;
    let i = 0;
    for (; i < p.inserts.length; i++) {
      const u = insertUnits(p.inserts[i]);
      if (used > 0 && used + u > units) break;
      used += u;
    }
    let j = 0;
    if (i === p.inserts.length) {
      for (; j < p.finishRecs.length; j++) {
        const u = p.finishValues[j].length;
        if (used > 0 && used + u > units) break;
        used += u;
      }
    }
    const part = p.take(i, j, p.releases.length / 2);
    part.progress = p.progress;
    p.progress = [];
    return part;
  }

  /** Drops what is pending (given up, or sent elsewhere): a new, empty batch. */
  resetPending() {
    this.pending = new Pending();
    this.isolated = [];
    this.soloClaim = false;
  }

  /** The next request number, 1 to 2^32 - 1: it crosses to Rust as a u32 (0 answers the open). */
  takeReq() {
    const req = this.nextReq;
    this.nextReq = req >= 0xffffffff ? 1 : req + 1;
    return req;
  }

  /** The store's thread is gone (it can only stop when its callback can no longer be called). */
  threadStopped(text = 'The store has stopped (its thread ended); nothing more can be written', reported = false) {
    if (this.dead) return;
    this.dead = true;
    // Said once: the batches it fails reject their submissions but report nothing more.
    if (!reported) this.owner._backgroundError(storeError('ERR_STORE', text));
    const failed = { kind: P.STORE_FAILED, req: 0, errorCode: 'ERR_STORE', text, stopped: true };
    if (this.retryTimer !== null) {
      clearTimeout(this.retryTimer);
      this.retryTimer = null;
    }
    queueMicrotask(() => {
      while (this.inFlight.length > 0) this.batchAnswered({ ...failed, req: this.inFlight[0].req });
      if (this.parked !== null) this.batchAnswered({ ...failed, req: this.parked.req });
      for (const req of [...this.requests.keys()]) this.answer({ ...failed, req });
      // What was never sent (or came back to be sent again) cannot be written any more:
      // submissions are refused, the rest dropped; then nothing holds the executor.
      this.owner._gaveUp(this.unsent(), text);
      this.resetPending();
      this.claimWanted = false;
      this.owner._linkSettled(text);
    });
  }

  /** Whether `req` is the oldest batch in flight (answers come in order), or the parked claim. */
  isBatch(req) {
    return (this.inFlight.length > 0 && this.inFlight[0].req === req) || (this.parked !== null && this.parked.req === req);
  }

  /** A `STORE_BATCH` or a failed batch came back. */
  batchAnswered(event) {
    let sent;
    if (this.parked !== null && this.parked.req === event.req) {
      sent = this.parked;
      this.parked = null;
    } else sent = this.inFlight.shift();
    this.inFlightClaim -= sent.claim;
    const failed = event.kind === P.STORE_FAILED;
    // A write the store refused is not the store failing: what the batch grouped goes again
    // at once, one by one. Only a claim refused on its own, with nothing else to blame,
    // counts (and waits) as a failure.
    const counted = failed && (event.errorCode !== 'ERR_STORE_REFUSED' || (sent.claim > 0 && sent.empty));
    if (!failed) this.failures = 0;
    else if (counted) this.failures++;
    this.owner._batchDone(sent, event);
    if (counted && this.onDrained !== null && (this.dead || this.failures >= CLOSE_ATTEMPTS)) {
      // Closing, and the store keeps failing: give up what is pending (attempts it ended stay
      // 'running' in the store and are rescued by lease like a crash's).
      this.owner._gaveUp(this.unsent());
      this.resetPending();
    } else if (counted && !this.dead && this.retryTimer === null) {
      const delay = retryDelay(this.failures - 1);
      this.retryTimer = setTimeout(() => {
        this.retryTimer = null;
        this.flush();
        // Closing, a failed claim is not tried again (no free slots): nothing may be in flight.
        this.checkDrained();
      }, delay);
    }
    if (!this.pending.empty || this.claimWanted || this.isolated.length > 0) this.flush();
    else this.park();
    this.checkDrained();
  }

  /**
   * Writes made before close() that only wait for an earlier write (none has failed): they
   * go out before it. Held after a failure, they fail once closed, as batches give up.
   */
  writesQueued() {
    return this.held.length > 0 && this.heldTries === 0 && this.held.every((h) => h.failed === null);
  }

  /** close() waits for the batches in flight: once none is, and no retry is due, it goes on. */
  checkDrained() {
    if (this.onDrained !== null && this.inFlight.length === 0 && this.parked === null && (this.retryTimer === null || this.dead)) {
      const go = this.onDrained;
      this.onDrained = null;
      go();
    }
  }

  /**
   * One request answered by promise; `send(req)` queues it on the store's thread. A `write`
   * goes out only once no earlier write is unanswered: one that a lost connection fails is
   * sent again before any later write can land (the store thread may be connected again by
   * the time it runs the next request).
   */
  request(send, write = false) {
    if (this.closed) return Promise.reject(storeError('ERR_STORE', 'The store is closed'));
    return new Promise((resolve, reject) => {
      const r = { resolve, reject, send, order: this.nextOrder++, failed: null, write };
      if (this.held.length > 0 || (write && this.writing > 0)) this.held.push(r);
      else this.sendRequest(r);
    });
  }

  /** `r` goes back among the held requests, in the order it was made. */
  hold(r, failed) {
    r.failed = failed;
    let i = this.held.length;
    while (i > 0 && this.held[i - 1].order > r.order) i--;
    this.held.splice(i, 0, r);
    // Closing: a store that fails requests is not waited for (they fail once closed).
    this.checkDrained();
    if (this.heldTimer !== null) return;
    this.heldTimer = setTimeout(() => {
      this.heldTimer = null;
      this.sendHeld();
    }, retryDelay(this.heldTries++));
  }

  /** Sends the held requests in order, up to a write that must wait for an earlier one. */
  sendHeld() {
    while (this.held.length > 0) {
      const h = this.held[0];
      if (this.closed || this.dead) {
        this.held.shift();
        if (h.failed !== null) h.reject(storeError(h.failed.errorCode, h.failed.text));
        else h.reject(storeError('ERR_STORE', 'The store is closed'));
        continue;
      }
      if (h.write && this.writing > 0) return;
      this.held.shift();
      this.sendRequest(h);
    }
  }

  sendRequest(r) {
    if (this.dead) {
      r.reject(storeError('ERR_STORE', 'The store has stopped (its thread ended); nothing more can be asked'));
      return;
    }
    const req = this.takeReq();
    this.requests.set(req, r);
    if (r.write) this.writing++;
    const queued = r.send(req);
    // The close of a shutdown keeps Node.js alive until answered, but is no work: the
    // executor does not turn busy (and idle again) for it.
    if (r.close) this.owner._updateKeepAlive();
    else this.owner._storeBusy();
    if (!queued) this.threadStopped();
  }

  /** Routes an answer to its request; false when `event` answers none of them. */
  answer(event) {
    const r = this.requests.get(event.req);
    if (r === undefined) return false;
    this.requests.delete(event.req);
    if (r.write) this.writing--;
    if (event.kind === P.STORE_FAILED && event.errorCode === 'ERR_STORE_DISCONNECTED' && !this.closed && !this.dead) {
      // A lost connection to a server: asked again, as batches are, until it is back.
      this.hold(r, event);
      return true;
    }
    if (this.held.length === 0) this.heldTries = 0;
    // Sent again: an earlier try may have been carried out, its answer lost with the connection.
    if (r.failed !== null) event.resent = true;
    if (event.kind !== P.STORE_FAILED) r.resolve(event);
    else r.reject(storeError(event.errorCode, event.text));
    // Writes that waited for this one, and what was made after them.
    if (this.heldTimer === null) this.sendHeld();
    this.checkDrained();
    return true;
  }

  cancel(id, errorJson) {
    return this.request((req) => this.native.cancel(req, id, errorJson), true);
  }

  /**
   * Reads one execution as committed: beside the batches (PostgreSQL), or, while a cancel or
   * limit written here is unanswered, after it (it sees it). Batches are not waited for:
   * what they carry is told to callers only once committed.
   */
  fetch(id) {
    return this.request((req) => (this.writing > 0 ? this.native.fetchInLine(req, id) : this.native.fetch(req, id)));
  }

  check() {
    return this.request((req) => this.native.check(req));
  }

  globalLimit(agent, limit) {
    return this.request((req) => this.native.globalLimit(req, agent, limit), true);
  }

  /** Sends what is pending, then closes; resolves once the thread has let go of the file. */
  close() {
    return new Promise((resolve, reject) => {
      const go = () => {
        if (!this.dead && (this.inFlight.length > 0 || this.parked !== null || !this.pending.empty || this.isolated.length > 0 || this.writesQueued())) {
          this.onDrained = go;
          this.flush();
          this.reviewParked(); // closing: it comes back
          return;
        }
        if (this.dead) {
          this.closed = true;
          resolve();
          return;
        }
        // Sent at once, ahead of requests held for a lost connection (they fail once closed).
        this.sendRequest({ resolve, reject, send: (req) => this.native.close(req), order: this.nextOrder++, failed: null, close: true });
        this.closed = true;
      };
      go();
    });
  }
}

module.exports = { StoreLink, storeError };
