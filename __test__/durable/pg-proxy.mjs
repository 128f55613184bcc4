// A TCP proxy to the PostgreSQL test server that reads the protocol, for tests of a lost
// connection: answers dropped after a COMMIT (`arm()`), connections cut (`cut()`) and
// refused until `open()`.
import { execFileSync } from 'node:child_process';
import net from 'node:net';
import { test } from '../helpers.mjs';

export const SERVER = process.env.BMAD_TEST_PG_URL;
const PSQL = process.env.PSQL || 'psql';

/** `test` where the test server is there; elsewhere a test that says why it is skipped. */
export const pgTest = SERVER ? test : (name) => test(name, (t) => t.skip('BMAD_TEST_PG_URL is not set (run it through scripts/pg-cluster.mjs)'));

/** The test server's URL with `schema`, not through a proxy. */
export const direct = (schema) => `${SERVER}?schema=${schema}`;

/** One JSON value selected by `query` on the test server. */
export function sql(query) {
  const out = execFileSync(PSQL, ['-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-d', SERVER, '-c', query], { encoding: 'utf8', timeout: 30000 });
  return JSON.parse(out.trim());
}

/**
 * Splits a byte stream of PostgreSQL protocol messages (type byte, then a length that counts
 * itself) and calls `each(type, body)`; `untypedFirst`: the client's startup message has no
 * type byte.
 */
function messages(untypedFirst, each) {
  let buf = Buffer.alloc(0);
  let started = !untypedFirst;
  return (chunk) => {
    buf = Buffer.concat([buf, chunk]);
    for (;;) {
      if (!started) {
        if (buf.length < 4 || buf.length < buf.readUInt32BE(0)) return;
        buf = buf.subarray(buf.readUInt32BE(0));
        started = true;
        continue;
      }
      if (buf.length < 5 || buf.length < 1 + buf.readUInt32BE(1)) return;
      const len = buf.readUInt32BE(1);
      each(String.fromCharCode(buf[0]), buf.subarray(5, 1 + len));
      buf = buf.subarray(1 + len);
    }
  };
}

/** The first `n` NUL-terminated strings of a message body. */
function cstrings(body, n) {
  const out = [];
  let at = 0;
  for (let i = 0; i < n; i++) {
    const end = body.indexOf(0, at);
    if (end < 0) break;
    out.push(body.toString('utf8', at, end));
    at = end + 1;
  }
  return out;
}

/**
 * A TCP proxy to the test server. `arm()`: the next batch's COMMIT is forwarded, the server's
 * answers on that connection are dropped, and the connection is cut 100 ms later (time for
 * the server to commit). A batch of submissions only is one statement that commits alone at
 * its Sync: that Sync stands for its COMMIT. New connections are refused until `open()`. A batch is told from
 * the store's housekeeping by its pipeline: its BEGIN, statements and COMMIT go out without
 * waiting for answers, so when its COMMIT is sent some of the requests before it (each ends
 * with a Sync, answered by ReadyForQuery) are unanswered; housekeeping waits for each answer.
 */
export async function startProxy() {
  const { hostname, port } = new URL(SERVER);
  const state = { armed: false, after: null, refusing: false, cuts: 0, sockets: new Set(), hold: null, held: null };
  const server = net.createServer((client) => {
    if (state.refusing) {
      client.destroy();
      return;
    }
    const upstream = net.connect(Number(port), hostname);
    let dropping = false;
    let cut = false;
    let asked = 0; // requests ending with a Sync (a simple query is one)
    let answered = 0; // ReadyForQuery
    // `arm(after)`: a statement whose text contains `after` ran since the last COMMIT.
    let seen = false;
    const texts = new Map(); // prepared statement name -> its text (from Parse)
    // Holding: this connection's transaction is kept from the server (`held`) and the
    // client cut; the server connection stays open for `release()`.
    let holding = null;
    const end = () => {
      client.destroy();
      if (holding === null) upstream.destroy();
    };
    for (const s of [client, upstream]) {
      state.sockets.add(s);
      s.on('error', end);
      s.on('close', () => {
        state.sockets.delete(s);
        end();
      });
    }
    let chunkHasBegin = false;
    let chunkBinds = false;
    let chunkCommits = false;
    // Outside BEGIN … COMMIT a statement commits alone at its Sync: a batch of submissions
    // only is one such statement (told by its notification's CTE, `notified AS`).
    let inTransaction = false;
    let lone = null; // the text of a statement bound outside a transaction, until its Sync
    let chunkLone = false; // this chunk binds a batch that commits alone
    const loneBatch = (text) => text.includes('notified AS');
    const fromClient = messages(true, (type, body) => {
      if (type === 'P') {
        const [name, text] = cstrings(body, 2);
        texts.set(name, text);
      }
      if (type === 'Q') {
        // The sweep opens its transaction with `BEGIN; SET LOCAL …`.
        const q = body.toString();
        if (/^\s*(BEGIN|START TRANSACTION)\b/i.test(q)) inTransaction = true;
        if (/^\s*(COMMIT|ROLLBACK|END)\b/i.test(q)) inTransaction = false;
      }
      if (type === 'B' && !inTransaction) {
        lone = texts.get(cstrings(body, 2)[1]) || '';
        if (loneBatch(lone)) chunkLone = true;
      }
      if (type === 'S' && lone !== null) {
        const text = lone;
        lone = null;
        if (loneBatch(text)) {
          // Its commit: as a COMMIT of a batch's transaction.
          chunkCommits = true;
          const mine = state.after === null ? true : seen;
          if (state.armed && mine) cut = true;
          else seen = false;
        }
      }
      if (type === 'B' && state.armed && state.after !== null) {
        const [, name] = cstrings(body, 2);
        if ((texts.get(name) || '').includes(state.after)) seen = true;
      }
      if (type === 'Q' && body.toString() === 'BEGIN\0') chunkHasBegin = true;
      if (type === 'B' && state.hold !== null) {
        const [, name] = cstrings(body, 2);
        if ((texts.get(name) || '').includes(state.hold)) chunkBinds = true;
      }
      if (type === 'Q' && body.toString() === 'COMMIT\0') chunkCommits = true;
      if (type === 'Q' && body.toString() === 'COMMIT\0') {
        const mine = state.after === null ? asked > answered : seen;
        if (state.armed && mine) cut = true;
        else seen = false;
      }
      if (type === 'Q' || type === 'S') asked++;
    });
    const fromServer = messages(false, (type, body) => {
      if (type === 'Z') answered++;
      if (type === 'E' && holding !== null && holding.released) {
        const code = body
          .toString('utf8')
          .split('\0')
          .find((f) => f.startsWith('C'));
        holding.errors.push(code === undefined ? '?' : code.slice(1));
      }
      if (type === 'Z' && holding !== null && holding.released) holding.done();
    });
    client.on('data', (d) => {
      chunkHasBegin = chunkBinds = chunkCommits = chunkLone = false;
      fromClient(d);
      // A pipeline that opens a transaction running the held statement, or a batch that
      // commits alone running it: kept back whole.
      if (holding === null && state.hold !== null && (chunkHasBegin || chunkLone) && chunkBinds) {
        state.hold = null;
        holding = { chunks: [], released: false, errors: [], done: () => {}, upstream };
      }
      if (holding !== null && !holding.released) {
        holding.chunks.push(d);
        if (chunkCommits) {
          state.held = holding;
          client.destroy();
        }
        return;
      }
      if (cut && !dropping) {
        state.armed = false;
        state.refusing = true;
        state.cuts++;
        dropping = true;
        setTimeout(end, 100);
      }
      upstream.write(d);
    });
    upstream.on('data', (d) => {
      fromServer(d);
      if (!dropping) client.write(d);
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const through = new URL(SERVER);
  through.port = String(server.address().port);
  return {
    state,
    /** The store URL through the proxy (plain TCP, so the proxy can read the protocol). */
    url: (schema) => {
      const u = new URL(through);
      u.search = `?schema=${schema}&sslmode=disable`;
      return u.toString();
    },
    /** `after`: cut instead the next COMMIT of a transaction that ran a statement whose text contains it. */
    arm(after = null) {
      state.armed = true;
      state.after = after;
    },
    /**
     * Keeps back the next transaction that runs a statement whose text contains `text`,
     * whole, and cuts its client once its COMMIT is sent: the try is lost on the way, as in
     * a partition, and the server has seen none of it.
     */
    hold(text) {
      state.hold = text;
    },
    /**
     * Delivers the transaction kept back (a partition's late packets) on its own server
     * connection; resolves with the SQLSTATE codes of the errors the server answered.
     */
    release() {
      const h = state.held;
      if (h === null) throw new Error('nothing held');
      // Answered once every request ending with a Sync (a simple query is one) is.
      let expected = 0;
      const count = messages(false, (type) => {
        if (type === 'Q' || type === 'S') expected++;
      });
      for (const c of h.chunks) count(c);
      return new Promise((resolve) => {
        const timer = setTimeout(() => resolve(h.errors), 5000);
        h.done = () => {
          if (--expected > 0) return;
          clearTimeout(timer);
          resolve(h.errors);
        };
        h.released = true;
        for (const c of h.chunks) h.upstream.write(c);
      });
    },
    /** Cuts every connection now and refuses new ones until `open()`. */
    cut() {
      state.refusing = true;
      for (const s of state.sockets) s.destroy();
    },
    open() {
      state.refusing = false;
    },
    close() {
      for (const s of state.sockets) s.destroy();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}
