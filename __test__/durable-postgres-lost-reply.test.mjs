// A COMMIT that reaches PostgreSQL but whose answer never comes back: the executor talks to
// the server through a TCP proxy that forwards a COMMIT, drops the server's answer and cuts
// the connection. The transaction is committed; the executor only knows the connection was
// lost, sends the batch again once it reconnects, and must not store, run or record
// anything twice.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import net from 'node:net';
import { test, shutDownAfterEach, waitUntil } from './helpers.mjs';

const SERVER = process.env.BMAD_TEST_PG_URL;
const PSQL = process.env.PSQL || 'psql';
const pgTest = SERVER ? test : (name) => test(name, (t) => t.skip('BMAD_TEST_PG_URL is not set (run it through scripts/pg-cluster.mjs)'));
const create = shutDownAfterEach({ timeoutMs: 5000 });
let schemas = 0;

/** One JSON value selected by `query` on the test server. */
function sql(query) {
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

/**
 * A TCP proxy to the test server. `arm()`: the next batch's COMMIT is forwarded, the server's
 * answers on that connection are dropped, and the connection is cut 100 ms later (time for
 * the server to commit). New connections are refused until `open()`. A batch is told from
 * the store's housekeeping by its pipeline: its BEGIN, statements and COMMIT go out without
 * waiting for answers, so when its COMMIT is sent some of the requests before it (each ends
 * with a Sync, answered by ReadyForQuery) are unanswered; housekeeping waits for each answer.
 */
async function startProxy() {
  const { hostname, port } = new URL(SERVER);
  const state = { armed: false, refusing: false, cuts: 0, sockets: new Set() };
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
    const end = () => {
      client.destroy();
      upstream.destroy();
    };
    for (const s of [client, upstream]) {
      state.sockets.add(s);
      s.on('error', end);
      s.on('close', () => {
        state.sockets.delete(s);
        end();
      });
    }
    const fromClient = messages(true, (type, body) => {
      if (type === 'Q' && body.toString() === 'COMMIT\0' && state.armed && asked > answered) cut = true;
      if (type === 'Q' || type === 'S') asked++;
    });
    const fromServer = messages(false, (type) => {
      if (type === 'Z') answered++;
    });
    client.on('data', (d) => {
      fromClient(d);
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
    arm() {
      state.armed = true;
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

const direct = (schema) => `${SERVER}?schema=${schema}`;

pgTest('a batch of submissions whose COMMIT answer was lost is sent again and stored once', async () => {
  const schema = `lost_insert_${process.pid}_${++schemas}`;
  const proxy = await startProxy();
  try {
    const runs = new Map();
    const runner = create({ store: direct(schema), throttleIfExceeded: false, maxConcurrentAgents: 8 });
    runner.registerAgent('count', async (task) => {
      runs.set(task, (runs.get(task) || 0) + 1);
      return { task };
    });
    const submitter = create({ store: proxy.url(schema), throttleIfExceeded: false });
    const links = [];
    submitter.on('store-disconnected', () => links.push('down'));
    submitter.on('store-reconnected', () => links.push('up'));
    await Promise.all([runner.initialize(), submitter.initialize()]);

    proxy.arm();
    const N = 50;
    const submitted = Promise.all(Array.from({ length: N }, (_, i) => submitter.fireAndForget('count', `t${i}`)));
    await waitUntil(() => proxy.state.cuts === 1, 'the COMMIT went through the proxy and its answer was dropped');
    // The first try committed: its rows are in the store while the submitter cannot reconnect.
    await waitUntil(() => sql(`SELECT count(*) FROM "${schema}".bmad_executions`) === N, 'the first try committed', { timeoutMs: 3000 });
    proxy.open();
    const answers = await submitted;
    const ids = answers.map((a) => a.executionId);
    assert.equal(new Set(ids).size, N, 'one execution per submission');
    await Promise.all(ids.map((id) => submitter.waitFor(id)));
    assert.equal(sql(`SELECT count(*) FROM "${schema}".bmad_executions`), N, 'nothing stored twice');
    assert.equal(sql(`SELECT count(*) FROM "${schema}".bmad_executions WHERE state = 2 AND attempt = 1`), N);
    assert.equal(runs.size, N);
    assert.ok([...runs.values()].every((n) => n === 1), 'each ran once');
    for (const [i, id] of ids.entries()) {
      const st = await submitter.fetchExecutionStatus(id);
      assert.deepEqual(st.found && st.result, { task: `t${i}` }, 'each answer names its own execution');
    }
    assert.deepEqual(links, ['down', 'up']);
  } finally {
    await proxy.close();
  }
});

pgTest("a runner's batch whose COMMIT answer was lost: its ends are recorded once, its claims handed back, nothing runs twice", async () => {
  const schema = `lost_end_${process.pid}_${++schemas}`;
  const proxy = await startProxy();
  try {
    // Everything is queued before the runner starts: its batches after its first claim are
    // its ends (with the claims they carry), and the first end arms the proxy.
    const submitter = create({ store: direct(schema), throttleIfExceeded: false });
    await submitter.initialize();
    const N = 40;
    const ids = (await Promise.all(Array.from({ length: N }, (_, i) => submitter.fireAndForget('count', `t${i}`)))).map((a) => a.executionId);
    const runs = new Map();
    const stale = [];
    const runner = create({ store: proxy.url(schema), throttleIfExceeded: false, maxConcurrentAgents: 4 });
    runner.on('execution-stale', (e) => stale.push(e));
    let returned = 0;
    runner.registerAgent('count', async (task) => {
      runs.set(task, (runs.get(task) || 0) + 1);
      await new Promise((resolve) => setTimeout(resolve, 5));
      // The first end goes in the next batch: that batch's answer is lost.
      if (++returned === 1) proxy.arm();
      return { task };
    });
    await runner.initialize();
    await waitUntil(() => proxy.state.cuts === 1, 'a batch of the runner lost its answer', { timeoutMs: 10000 });
    // The batch committed: an end is stored though the runner never heard so.
    await waitUntil(() => sql(`SELECT count(*) FROM "${schema}".bmad_executions WHERE state = 2`) >= 1, 'the cut batch committed an end', {
      timeoutMs: 3000,
    });
    proxy.open();
    const finals = await Promise.all(ids.map((id) => submitter.waitFor(id)));
    assert.ok(finals.every((f) => f.found && f.status === 'completed'));
    assert.equal(sql(`SELECT count(*) FROM "${schema}".bmad_executions WHERE state = 2 AND attempt = 1`), N, 'each ended once, in its first attempt');
    assert.equal(runs.size, N);
    assert.deepEqual(
      [...runs].filter(([, n]) => n !== 1),
      [],
      'nothing ran twice',
    );
    assert.deepEqual(stale, [], 'no end reported stale');
  } finally {
    await proxy.close();
  }
});
