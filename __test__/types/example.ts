// A typed tour of the whole public API in index.d.ts: every config key, every submit option,
// every method, every event (with its payload fields read), the spawnAgentProcess extension
// point, ResourceMonitor on its own, custom priority levels and typed status results. It is
// only type-checked (`tsc --noEmit --strict --exactOptionalPropertyTypes`, see
// ../types.test.mjs), never run.
//
// The package is imported by its own name (self-reference through package.json "exports"),
// exactly as a consumer would. This file is CommonJS-format for TypeScript (the package has no
// "type": "module"), so it uses named imports; the ESM default import and `import = require()`
// are checked in entry-esm.mts / entry-cjs.cts.

import { BackgroundExecutor, ResourceMonitor } from 'bmad-background-executor';
import type {
  ActiveExecution,
  AgentContext,
  AgentFunction,
  AggregatedResult,
  AggregationReport,
  AggregationResult,
  AgentLimits,
  AgentLimitsStatus,
  BackgroundExecutorConfig,
  BackgroundExecutorEvents,
  CancelResult,
  CommandFailedError,
  CommandResult,
  CommandSpawnError,
  CommandSpecError,
  CommandSpec,
  CommandSpecFunction,
  Consistency,
  DefaultAgentFunction,
  DefaultPriorityLevel,
  ErrorCode,
  ExecutionCallback,
  ExecutionId,
  ExecutionMode,
  ExecutionStatus,
  ExecutionStatusResult,
  ExecutorError,
  ExecutorStats,
  ExecutorStatus,
  FinalExecutionStatus,
  MultipleOptions,
  MultipleItem,
  MultipleItemOptions,
  ConsistencyVerdict,
  Percentiles,
  ProgressReport,
  QueueStatus,
  RateLimit,
  ResourceMonitorEvents,
  ResourceMonitorOptions,
  ResourceStatus,
  ResourceTrends,
  ShutdownOptions,
  StoreSettings,
  SubmitOptions,
  Submitted,
  SubmittedEvent,
  ThresholdExceededEvent,
  WatchUpdate,
} from 'bmad-background-executor';

// ----- compile-time helpers ---------------------------------------------------------------

type IsAny<T> = 0 extends 1 & T ? true : false;
type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
/** Compiles only when T is exactly `true`. */
function check<T extends true>(_proof?: T): void {}
/** Compiles only when `value` is not `any` (a loosened typing would make it `any`). */
function notAny<T>(_value: T, ..._proof: IsAny<T> extends true ? [never] : []): void {}

const sink: unknown[] = [];
const use = (...values: unknown[]): void => {
  sink.push(...values);
};

// ----- agents -------------------------------------------------------------------------------

interface EvalResult {
  tests: string[];
}
interface ArtifactOptions extends SubmitOptions {
  artifact: string;
}

const evalAgent: AgentFunction<EvalResult> = async (task, options, context) => {
  use(task, options);
  return { tests: [`${context.task}: unit`, 'integration'] };
};

// Every field of the agent context.
const qaAgent: AgentFunction<{ passed: number }, ArtifactOptions | undefined> = async (task, options, context) => {
  const ctx: AgentContext<ArtifactOptions | undefined> = context;
  const id: ExecutionId = ctx.executionId;
  const agent: string = ctx.agent;
  const sameTask: string = ctx.task;
  const artifact: string | undefined = ctx.options?.artifact;
  const mode: ExecutionMode = ctx.mode;
  const priority: string = ctx.priority;
  const attempt: number = ctx.attempt;
  const signal: AbortSignal = ctx.signal;
  const { progress } = ctx; // documented as safe to destructure
  progress(50);
  progress(75, { step: 'integration' });
  signal.addEventListener('abort', () => {
    const reason = signal.reason as ExecutorError;
    const code: ErrorCode = reason.code;
    use(code, reason.executionId, reason.agent, reason.timeoutMs, reason.message);
  });
  notAny(ctx.signal);
  use(task, options, id, agent, sameTask, artifact, mode, priority, attempt);
  return { passed: 120 };
};

const fallback: DefaultAgentFunction<string> = (agent, task, options, context) => {
  use(options, context.executionId);
  return `${agent} did ${task}`;
};

// ----- construction: every config key ------------------------------------------------------

const fullConfig: Required<BackgroundExecutorConfig> = {
  maxConcurrentAgents: 5,
  maxCpuPercent: 80,
  maxMemoryMb: 2048,
  throttleIfExceeded: true,
  priorityLevels: { critical: 5, high: 4, medium: 3, low: 2, background: 1 },
  agents: { eval: evalAgent, monitor: () => ({ cpu: 1 }) },
  defaultAgent: fallback,
  defaultTimeoutMs: 30_000,
  resultTtlMs: 60_000,
  maxRetainedResults: 10_000,
  progressIntervalMs: 1000,
  monitorIntervalMs: 1000,
  minConcurrentAgents: 1,
  cancelGraceMs: 5000,
  agingMs: 0,
  maxRetainedOutputBytes: 64 * 1024 * 1024,
  retries: 2,
  retryDelayMs: 1000,
  backoff: 'exponential',
  retryIf: (error: unknown, attempt: number) => attempt < 3 && !(error instanceof TypeError),
  maxQueued: 10_000,
  rateLimit: { max: 50, intervalMs: 1000 },
  store: 'sqlite:.bmad/executions.db',
  leaseMs: 30_000,
  storePollMs: 0.25,
  storePrefetch: 0,
};
// Several hosts on one PostgreSQL database.
const onPostgres: BackgroundExecutorConfig = { store: 'postgres://bmad@db.internal:5432/agents?schema=bmad' };
use(onPostgres);

// The old extension point, overridden in a subclass.
class LoggingExecutor extends BackgroundExecutor {
  readonly spawned: string[] = [];
  override spawnAgentProcess(execution: Parameters<BackgroundExecutor['spawnAgentProcess']>[0]): unknown {
    const { id, executionId, agent, task, options, mode, priority, context, signal } = execution;
    this.spawned.push(`${id}/${executionId}: ${agent} ${task} (${mode}, ${priority})`);
    const aborted: boolean = signal.aborted;
    const attempt: number = context.attempt;
    use(options, aborted, attempt);
    return super.spawnAgentProcess(execution);
  }
}

// Every event name the example listens to; checked against BackgroundExecutorEvents below.
const LISTENED = [
  'initialized',
  'fire-and-forget-started',
  'async-callback-started',
  'watched-started',
  'execution-queued',
  'execution-started',
  'execution-retry',
  'execution-completed',
  'execution-failed',
  'execution-cancelled',
  'callback-error',
  'progress-update',
  'aggregation-started',
  'aggregation-completed',
  'queue-throttled',
  'queue-resumed',
  'queue-paused',
  'queue-unpaused',
  'resource-threshold-exceeded',
  'shutting-down',
  'shutdown-complete',
  'idle',
  'command-output',
  'execution-rescued',
  'execution-stale',
  'store-error',
  'store-disconnected',
  'store-reconnected',
] as const;
check<Equal<(typeof LISTENED)[number], keyof BackgroundExecutorEvents>>();

function listenToEverything(bg: BackgroundExecutor): void {
  bg.on('initialized', (d) => {
    const max: number = d.maxConcurrentAgents;
    const levels: Record<string, number> = d.priorityLevels;
    use(max, levels);
  });
  const started = (d: SubmittedEvent): void => {
    const id: ExecutionId = d.executionId;
    const agent: string = d.agent;
    const task: string = d.task;
    const priority: string = d.priority;
    use(id, agent, task, priority);
  };
  bg.on('fire-and-forget-started', started);
  bg.on('async-callback-started', started);
  bg.on('watched-started', started);
  bg.on('execution-queued', (d) => {
    const mode: ExecutionMode = d.mode;
    if ('durable' in d) {
      const durable: true = d.durable;
      use(d.executionId, d.agent, d.task, mode, d.priority, durable);
      return;
    }
    const position: number = d.queuePosition;
    const length: number = d.queueLength;
    use(d.executionId, d.agent, d.task, mode, d.priority, position, length);
  });
  bg.on('execution-rescued', (d) => {
    const status: 'queued' | 'failed' | 'cancelled' = d.status;
    use(d.executionId, d.agent, d.attempt, d.owner, status);
  });
  bg.on('execution-stale', (d) => use(d.executionId, d.agent, d.attempt));
  bg.on('store-error', (d) => use(d.error.message, d.code, d.message));
  bg.on('store-disconnected', (d) => use(d.store));
  bg.on('store-reconnected', (d) => use(d.store));
  bg.on('execution-started', (d) => {
    const mode: ExecutionMode = d.mode;
    const attempt: number = d.attempt;
    use(d.executionId, d.agent, d.task, mode, d.priority, attempt);
  });
  bg.on('execution-retry', (d) => {
    const attempt: number = d.attempt;
    const delayMs: number = d.delayMs;
    const message: string = d.error;
    use(d.executionId, d.agent, d.task, attempt, delayMs, message, d.errorObject);
  });
  bg.on('execution-completed', (d) => {
    const result: unknown = d.result;
    const duration: number = d.duration;
    notAny(d.result);
    use(d.executionId, d.agent, d.task, d.mode, result, duration);
  });
  bg.on('execution-failed', (d) => {
    const error: string = d.error;
    const original: unknown = d.errorObject;
    const code: string | undefined = d.code;
    use(d.executionId, d.agent, d.task, d.mode, error, original, code, d.duration);
  });
  bg.on('execution-cancelled', (d) => {
    const error: string = d.error;
    const code: string | undefined = d.code;
    use(d.executionId, d.agent, d.task, d.mode, error, d.errorObject, code, d.duration);
  });
  bg.on('callback-error', (d) => {
    const error: unknown = d.error;
    use(d.executionId, d.agent, error);
  });
  bg.on('progress-update', (d) => {
    const progress: number = d.progress;
    const status: ExecutionStatus = d.status;
    use(d.executionId, d.agent, progress, status, d.duration, d.detail);
  });
  bg.on('aggregation-started', (d) => {
    const agents: string[] = d.agents;
    const ids: Array<ExecutionId | null> = d.executionIds; // null: an item the full queue refused
    const tasks: string[] = d.tasks;
    use(d.aggregationId, agents, d.task, ids, tasks);
  });
  bg.on('aggregation-completed', (d) => {
    const results: AggregatedResult[] = d.results;
    const report: AggregationReport = d.report;
    use(d.aggregationId, results, report.success_rate);
  });
  bg.on('queue-throttled', (d) => {
    const reason: Array<'cpu' | 'memory'> = d.reason;
    const cpu: number = d.resources.cpu;
    const memory: number = d.resources.memory;
    use(reason, cpu, memory, d.running, d.queued, d.minConcurrentAgents, d.timestamp);
  });
  bg.on('queue-resumed', (d) => {
    use(d.resources.cpu, d.resources.memory, d.running, d.queued, d.started, d.timestamp);
  });
  bg.on('queue-paused', (d) => {
    const queued: number = d.queued;
    use(queued);
  });
  bg.on('queue-unpaused', (d) => {
    const started: number = d.started;
    use(started);
  });
  bg.on('resource-threshold-exceeded', (d: ThresholdExceededEvent) => {
    const exceeded: Array<'cpu' | 'memory'> = d.exceeded;
    use(d.cpu, d.memory, d.timestamp, exceeded, d.thresholds.cpu, d.thresholds.memory);
  });
  bg.on('shutting-down', (d) => {
    const mode: 'cancel' | 'drain' = d.mode;
    const timeoutMs: number | undefined = d.timeoutMs;
    use(d.running, d.queued, mode, timeoutMs);
  });
  bg.on('shutdown-complete', (d) => {
    const forced: boolean = d.forced;
    use(forced, d.completed, d.failed, d.cancelled, d.timestamp);
  });
  bg.on('idle', (d) => {
    const timestamp: number = d.timestamp;
    use(timestamp);
  });
  bg.on('command-output', (d) => {
    const stream: 'stdout' | 'stderr' = d.stream;
    use(d.executionId, d.agent, stream, d.line);
  });

  // The other typed listener methods, and emit.
  const onIdle = (d: { timestamp: number }): void => use(d.timestamp);
  bg.once('idle', onIdle);
  bg.addListener('idle', onIdle);
  bg.prependListener('idle', onIdle);
  bg.off('idle', onIdle);
  bg.removeListener('idle', onIdle);
  const delivered: boolean = bg.emit('idle', { timestamp: Date.now() });
  use(delivered);
  // Chaining: every listener method returns the executor.
  const chained: BackgroundExecutor = bg.on('idle', onIdle).once('idle', onIdle).off('idle', onIdle);
  use(chained);
}

// ----- the whole API ------------------------------------------------------------------------

export async function tour(): Promise<void> {
  const bg = new LoggingExecutor(fullConfig);
  const minimal = new BackgroundExecutor();
  const alsoMinimal = new BackgroundExecutor({});
  use(minimal, alsoMinimal);

  // The validated config, defaults filled in.
  const max: number = bg.config.maxConcurrentAgents;
  const levels: ReadonlyMap<string, number> = bg.config.priorityLevels;
  const agents: ReadonlyMap<string, AgentFunction> = bg.config.agents;
  const timeout: number | undefined = bg.config.defaultTimeoutMs;
  const defaultAgent: DefaultAgentFunction | undefined = bg.config.defaultAgent;
  const throttle: boolean = bg.config.throttleIfExceeded;
  use(max, levels, agents, timeout, defaultAgent, throttle, bg.config.agingMs, bg.config.cancelGraceMs);
  const queued: number | undefined = bg.config.maxQueued;
  const retryIf: ((error: unknown, attempt: number) => boolean) | undefined = bg.config.retryIf;
  // The store's settings, null without a store.
  const storeSettings: StoreSettings | null = bg.config.store;
  if (storeSettings !== null) use(storeSettings.url, storeSettings.leaseMs, storeSettings.pollMs, storeSettings.prefetch, storeSettings.path, storeSettings.postgres, storeSettings.synchronous);
  use(queued, retryIf);

  listenToEverything(bg);

  const same: LoggingExecutor = await bg.initialize();
  use(same.spawned);

  // Agent registry; both return values are typed.
  const registered: LoggingExecutor = bg.registerAgent('qa', qaAgent as AgentFunction).registerAgent('eval', evalAgent);
  bg.registerAgent('oracle', async (task, options: { artifact?: string } | undefined, { signal }) => {
    signal.throwIfAborted();
    return { valid: true, artifact: options?.artifact, task };
  });
  const removed: boolean = bg.unregisterAgent('oracle');
  use(registered, removed);
  // Per-agent limits: at registration and at run time; the global rate limit.
  const llmLimits: AgentLimits = { concurrency: 4, rateLimit: { max: 60, intervalMs: 60_000 }, globalConcurrency: 8 };
  bg.registerAgent('llm', evalAgent, llmLimits);
  const limited: LoggingExecutor = bg.setAgentLimits('llm', { concurrency: null }).setAgentLimits('qa', { concurrency: Infinity });
  const globalRate: RateLimit = { max: 100, intervalMs: 1000 };
  bg.setRateLimit(globalRate).setRateLimit(null);
  use(limited);

  // Command agents: a fixed spec with every field, and a spec function.
  const spec: CommandSpec = {
    command: 'npm',
    args: ['test'],
    cwd: '/tmp',
    env: { CI: '1', NODE_OPTIONS: null },
    inheritEnv: true,
    input: 'yes\n',
    progressPattern: /(\d+)%/,
    maxOutputBytes: 65536,
    killSignal: 'SIGINT',
    killGraceMs: 2000,
  };
  const perTask: CommandSpecFunction<{ dir: string }> = (task, options) => ({
    command: process.execPath,
    args: ['-e', task],
    cwd: options.dir,
    progressPattern: 'json-lines',
    input: new Uint8Array([1]),
    killSignal: 15,
  });
  const chainedCommands: LoggingExecutor = bg.registerCommand('tests', spec).registerCommand('script', perTask, { concurrency: 2 });
  bg.registerCommand('async-spec', async (task) => ({ command: 'sh', args: ['-c', task] }));
  const commandResult = (await bg.execute('tests', 'run')) as CommandResult;
  const typedRun: CommandResult = await bg.execute<CommandResult>('tests', 'run');
  use(typedRun.stdout);
  const exitCode: number | null = commandResult.exitCode;
  const exitSignal: NodeJS.Signals | `${number}` | null = commandResult.signal;
  use(chainedCommands, exitCode, exitSignal, commandResult.stdout, commandResult.stderr, commandResult.durationMs);
  use(commandResult.truncated, commandResult.stdoutBytes, commandResult.stderrBytes);
  try {
    await bg.execute('tests', 'run');
  } catch (err) {
    const e = err as CommandFailedError | CommandSpawnError;
    if (e.code === 'ERR_COMMAND_FAILED') use(e.exitCode, e.signal, e.stdout, e.stderr, e.command, e.args, e.truncated);
    else use(e.reason, e.cause.code, e.cause.errno, e.cwd, e.command);
    const code: ErrorCode = e.code;
    use(code);
  }
  try {
    await bg.execute('built', 'run');
  } catch (err) {
    const e = err as CommandSpecError | ExecutorError;
    if (e.code === 'ERR_COMMAND_SPEC') use(e.agent, e.cause);
    else use(e.attempt, e.code === 'ERR_NATIVE_BINDING_NOT_FOUND');
  }

  // Every submit option, plus an extra key passed to the agent.
  const controller = new AbortController();
  const fullOptions: Required<SubmitOptions> & { artifact: string } = {
    priority: 'high',
    timeout: 5000,
    signal: controller.signal,
    onProgress: (update: ProgressReport) => {
      const progress: number = update.progress;
      use(update.executionId, update.agent, progress, update.detail);
    },
    artifact: 'prd.md',
    retries: 1,
    retryDelayMs: 250,
    backoff: 'fixed',
    durable: true,
    key: 'prd:review',
    retryIf: (error: unknown) => (error as { code?: string }).code !== 'E_FATAL',
    delayMs: 0,
    startAfter: new Date(),
  };

  // 1. Fire-and-forget.
  const fired: Submitted<'fire-and-forget'> = await bg.fireAndForget('monitor', 'track-metrics', { priority: 'low' });
  const firedMode: 'fire-and-forget' = fired.mode;
  const firedStatus: ExecutionStatus = fired.status;
  await bg.fireAndForget('monitor', 'no-options');
  use(firedMode, firedStatus);

  // 2. Async with callback: a typed result, a null callback, no callback, a plain callback.
  const callback: ExecutionCallback<EvalResult> = (err, result) => {
    if (err) use(err);
    else if (result) use(result.tests.length);
  };
  const cb: Submitted<'async-callback'> = await bg.executeWithCallback<EvalResult>(
    'eval',
    'generate-test-datasets',
    callback,
    { priority: 'medium' },
  );
  await bg.executeWithCallback('eval', 'no-callback', null, { priority: 'medium' });
  await bg.executeWithCallback('eval', 'undefined-callback');
  await bg.executeWithCallback('eval', 'inline', (err: unknown, result?: EvalResult) => use(err, result?.tests));
  use(cb.executionId, cb.mode satisfies 'async-callback');

  // 3. Watched, with every submit option.
  const { executionId, mode, status } = await bg.executeWatched('qa', 'run-full-test-suite', fullOptions);
  const watchedMode: 'watched' = mode;
  use(watchedMode, status);

  // Async iteration over one execution's progress, ending with its final status.
  for await (const update of bg.watch(executionId)) {
    if (!('found' in update)) {
      const w: WatchUpdate = update;
      const running: 'queued' | 'running' = w.status;
      use(w.executionId, w.agent, w.progress, w.detail, running);
    } else if (update.found) {
      const final: ExecutionStatus = update.status;
      use(final, update.result);
    }
  }
  const iterator: AsyncIterableIterator<WatchUpdate | ExecutionStatusResult> = bg.watch(executionId);
  await iterator.return?.();

  // execute(): resolves with the agent's own value, typed by the caller.
  const evalResult: EvalResult = await bg.execute<EvalResult>('eval', 'generate-tests', { priority: 'critical' });
  const untyped = await bg.execute('monitor', 'x');
  use(evalResult.tests, untyped);

  // waitFor() and the status object (a discriminated union on `found`).
  const finished: ExecutionStatusResult = await bg.waitFor(executionId);
  const status2 = bg.getExecutionStatus(executionId);
  // A store: any process's execution, as stored; its integrity.
  const stored = await bg.fetchExecutionStatus<EvalResult>(executionId);
  if (stored.found && stored.status === 'completed') use(stored.result.tests, stored.durable, stored.key, stored.owner, stored.maxAttempts);
  const integrity: string | null = await bg.checkStore();
  await bg.onQueueSizeLessThan(100);
  use(integrity);
  if (status2.found) {
    const s: ExecutionStatus = status2.status;
    const progress: number = status2.progress;
    const started: number = status2.started;
    const duration: number = status2.duration;
    const result: unknown = status2.result;
    const error: string | null = status2.error;
    const queuePosition: number | undefined = status2.queuePosition;
    const startAfter: number | undefined = status2.startAfter;
    use(startAfter, status2.key);
    const startedAt: number | undefined = status2.startedAt;
    const finishedAt: number | undefined = status2.finishedAt;
    use(status2.id, status2.executionId, status2.agent, status2.task, status2.mode, status2.priority);
    use(s, progress, started, duration, result, error, status2.errorObject, queuePosition, startedAt, finishedAt);
  } else {
    const found: false = status2.found;
    use(found);
  }
  use(finished);

  // Cancellation: a discriminated union on `success`.
  const cancelled: CancelResult = await bg.cancelExecution(executionId);
  if (cancelled.success) {
    const previous: 'queued' | 'running' = cancelled.previousStatus;
    use(cancelled.executionId, previous);
  } else {
    const why: string = cancelled.error;
    use(why);
  }
  controller.abort();

  // Run-time control; each returns the executor for chaining.
  const chained: LoggingExecutor = bg.setConcurrency(3).pause().resume();
  use(chained);

  // Queries.
  const queue: QueueStatus = bg.getQueueStatus();
  use(queue.queued, queue.running, queue.max_concurrent, queue.slots_used, queue.paused, queue.throttled);
  queue.queue.forEach((item) => use(item.id, item.agent, item.priority, item.mode));
  for (const [agentName, a] of Object.entries(queue.agents)) {
    const limits: AgentLimitsStatus = a;
    const next: number | null = a.nextStartAt;
    use(agentName, limits.running, limits.queued, limits.concurrency, limits.rateLimit?.max, limits.rateLimit?.intervalMs, next);
  }
  if (queue.rateLimit !== null) use(queue.rateLimit.max, queue.rateLimit.intervalMs, queue.rateLimit.nextStartAt);
  const active: ActiveExecution[] = bg.getActiveExecutions();
  active.forEach((e) => use(e.id, e.executionId, e.agent, e.task, e.mode, e.priority, e.progress, e.duration, e.startedAt));
  active.forEach((e) => use(e.pid, e.cpuPercent, e.rssMb));
  const st: ExecutorStatus = bg.getStatus();
  use(st.initialized, st.running, st.queued, st.max_concurrent, st.active_processes, st.slots_used, st.paused);
  use(st.command_processes);
  use(st.throttled, st.shutting_down, st.submitted, st.completed, st.failed, st.cancelled, st.retained);
  const agentNames: string[] = st.agents;
  const resources: ResourceStatus = st.resources;
  use(agentNames, resources.cpu);

  // getStats(): counts, throughput, per-agent percentiles.
  const stats: ExecutorStats = bg.getStats();
  const c = stats.counts;
  use(c.submitted, c.queued, c.running, c.completed, c.failed, c.cancelled);
  use(stats.limits.rateLimited, stats.limits.limitDeferred);
  use(stats.throughput.lastMinute, stats.throughput.perSecond);
  if (stats.store !== null) use(stats.store.claimed, stats.store.staleResults, stats.store.rescued, stats.store.storeErrors, stats.store.busy);
  for (const a of stats.agents) {
    const wait: Percentiles = a.queueWait;
    const run: Percentiles = a.runTime;
    use(a.agent, wait.count, wait.p50, wait.p90, wait.p99, run.p50);
  }

  // Aggregation, with both forms of consistencyCheck.
  const multipleOptions: MultipleOptions = {
    artifact: 'prd.md',
    priority: 'high',
    consistencyCheck: (results: AggregatedResult[]) => results.every((r) => r.status === 'completed'),
  };
  const agg: AggregationResult = await bg.executeMultiple(['oracle', 'eval', 'validator'], 'validate-artifact', multipleOptions);
  await bg.executeMultiple(['oracle', 'eval'], 'validate-prd', {
    consistencyCheck: (results) => ({ consistent: results.length === 2, reason: 'two results' }),
  });
  await bg.executeMultiple(['oracle'], 'no-options');
  // A check may be async (it compares with something it has to fetch).
  await bg.executeMultiple(['oracle', 'eval'], 'validate-prd', {
    consistencyCheck: async (results): Promise<ConsistencyVerdict> => ({ consistent: results.length === 2 }),
  });
  // Names (the shared task) mixed with items (their own).
  await bg.executeMultiple(['oracle', { agent: 'eval', task: 'its own' }], 'shared');
  // Different tasks in one aggregation.
  const evalOptions: MultipleItemOptions = { priority: 'high' };
  const items: MultipleItem[] = [
    { agent: 'oracle', task: 'check-prd' },
    { agent: 'eval', task: 'score-prd', options: evalOptions },
  ];
  const mixed = await bg.executeMultiple(items, { consistencyCheck: (results) => results.length === 2 });
  for (const r of mixed.results) use(r.task);
  const aggregationId: string = agg.aggregationId;
  for (const r of agg.results) {
    const error: string | null = r.error;
    use(r.id, r.agent, r.status, r.result, error, r.errorObject, r.duration);
  }
  const consistency: Consistency = agg.consistent;
  if (consistency.consistent) {
    const all: true = consistency.all_succeeded;
    use(all, consistency.reason);
  } else {
    use(consistency.reason, consistency.failures.map((f) => [f.id, f.agent, f.status, f.error]));
  }
  const report: AggregationReport = agg.report;
  use(aggregationId, report.total, report.successful, report.failed, report.success_rate);
  use(report.total_duration, report.average_duration, report.consistency, report.timestamp);

  // The executor's own monitor.
  const res: ResourceStatus = bg.resourceMonitor.getStatus();
  use(res.cpu, res.memory, res.total_memory, res.free_memory, res.process_cpu, res.load_average, res.processes, res.timestamp);
  bg.resourceMonitor.on('threshold-exceeded', (data) => use(data.cpu, data.memory, data.exceeded));

  await bg.onIdle();

  // Shutdown with every option; the default form too.
  const shutdownOptions: Required<ShutdownOptions> = { mode: 'drain', timeoutMs: 10_000 };
  const done: void = await bg.shutdown(shutdownOptions);
  await bg.shutdown({ mode: 'cancel' });
  await minimal.shutdown();
  use(done);

  // Errors carry a typed code.
  try {
    await bg.execute('nobody', 'x');
  } catch (err) {
    const e = err as ExecutorError;
    const code: ErrorCode = e.code;
    use(code);
  }
}

// ----- ResourceMonitor alone ------------------------------------------------------------------

export function monitorAlone(): ResourceTrends {
  const options: Required<ResourceMonitorOptions> = { interval: 500, cpuThreshold: 90, memoryThreshold: 4096 };
  const monitor = new ResourceMonitor(options);
  const defaults = new ResourceMonitor();
  use(defaults);

  const interval: number = monitor.interval;
  const cpuThreshold: number = monitor.cpuThreshold;
  const memoryThreshold: number = monitor.memoryThreshold;
  const running: boolean = monitor.running;
  use(interval, cpuThreshold, memoryThreshold, running);

  const MONITOR_EVENTS = ['threshold-exceeded', 'sample', 'started', 'stopped'] as const;
  check<Equal<(typeof MONITOR_EVENTS)[number], keyof ResourceMonitorEvents>>();

  monitor.on('threshold-exceeded', (d: ThresholdExceededEvent) => {
    use(d.cpu, d.memory, d.timestamp, d.exceeded, d.thresholds.cpu, d.thresholds.memory);
  });
  monitor.on('sample', (s) => {
    const exceeded: Array<'cpu' | 'memory'> = s.exceeded;
    use(s.cpu, s.memory, s.total_memory, s.free_memory, s.process_cpu, s.load_average, s.processes, s.timestamp, exceeded);
  });
  const onStarted = (d: { interval: number; timestamp: number }): void => use(d.interval, d.timestamp);
  monitor.once('started', onStarted);
  monitor.on('stopped', (d) => use(d.timestamp));
  monitor.off('started', onStarted);
  const emitted: boolean = monitor.emit('stopped', { timestamp: Date.now() });
  use(emitted);

  const started: ResourceMonitor = monitor.start();
  const checked: ResourceStatus = monitor.check();
  const status: ResourceStatus = monitor.getStatus();
  const trends: ResourceTrends = monitor.getTrends();
  trends.cpu.forEach((p) => use(p.value, p.timestamp));
  trends.memory.forEach((p) => use(p.value, p.timestamp));
  const stopped: ResourceMonitor = monitor.stop();
  use(started, checked, status, stopped);
  notAny(status.cpu);
  return trends;
}

// ----- priority levels: the configured names ----------------------------------------------------

export async function priorityLevels(): Promise<void> {
  // The level names are inferred from `priorityLevels`; they replace the default ones.
  const custom = new BackgroundExecutor({
    priorityLevels: { urgent: 2, later: 1 },
    agents: {
      triage: (task, _options, context) => {
        const level: 'urgent' | 'later' = context.priority;
        return `${task} at ${level}`;
      },
    },
    defaultAgent: (agent, _task, _options, context) => [agent, context.priority],
  });
  check<Equal<typeof custom, BackgroundExecutor<'urgent' | 'later'>>>();
  await custom.fireAndForget('triage', 'a', { priority: 'urgent' });
  await custom.executeWithCallback('triage', 'b', null, { priority: 'later' });
  await custom.executeWatched('triage', 'c', { priority: 'urgent', timeout: 1000 });
  await custom.execute('triage', 'd', { priority: 'later' });
  await custom.executeMultiple(['triage'], 'e', { priority: 'urgent' });
  const options: SubmitOptions<'urgent' | 'later'> = { priority: 'later', artifact: 'prd.md' };
  const multiple: MultipleOptions<'urgent' | 'later'> = { priority: 'urgent', consistencyCheck: () => true };
  await custom.fireAndForget('triage', 'f', options);
  await custom.executeMultiple(['triage'], 'g', multiple);

  // Agents written for any executor (AgentFunction) fit; inline ones see the level names.
  custom.registerAgent('eval', evalAgent).registerAgent('qa', qaAgent as AgentFunction);
  custom.registerAgent('inline', (_task, _options, { priority }) => {
    const level: 'urgent' | 'later' = priority;
    return level;
  });

  // Status objects, queries and events report them.
  const levels: ReadonlyMap<'urgent' | 'later', number> = custom.config.priorityLevels;
  const { executionId } = await custom.fireAndForget('triage', 'h');
  const status: ExecutionStatusResult<unknown, 'urgent' | 'later'> = custom.getExecutionStatus(executionId);
  if (status.found) check<Equal<typeof status.priority, 'urgent' | 'later'>>();
  const final = await custom.waitFor(executionId);
  if (final.found) check<Equal<typeof final.priority, 'urgent' | 'later'>>();
  for (const item of custom.getQueueStatus().queue) check<Equal<typeof item.priority, 'urgent' | 'later'>>();
  for (const active of custom.getActiveExecutions()) check<Equal<typeof active.priority, 'urgent' | 'later'>>();
  custom.on('initialized', (d) => check<Equal<typeof d.priorityLevels, Record<'urgent' | 'later', number>>>());
  custom.on('fire-and-forget-started', (d: SubmittedEvent<'urgent' | 'later'>) => use(d.priority));
  custom.on('execution-queued', (d) => check<Equal<typeof d.priority, 'urgent' | 'later'>>());
  custom.on('execution-started', (d) => check<Equal<typeof d.priority, 'urgent' | 'later'>>());
  check<Equal<BackgroundExecutorEvents<'urgent'>['watched-started'], [SubmittedEvent<'urgent'>]>>();
  use(levels);

  // Without priorityLevels: the default names, as a plain `BackgroundExecutor`.
  const plain = new BackgroundExecutor({ maxConcurrentAgents: 2 });
  check<Equal<typeof plain, BackgroundExecutor<DefaultPriorityLevel>>>();
  check<Equal<typeof plain, BackgroundExecutor>>();
  check<Equal<DefaultPriorityLevel, 'critical' | 'high' | 'medium' | 'low' | 'background'>>();
  check<Equal<typeof fullConfig, Required<BackgroundExecutorConfig<DefaultPriorityLevel>>>>();
  // Levels only known at run time: any string.
  const fromFile: Record<string, number> = { nightly: 1 };
  const dynamic = new BackgroundExecutor({ priorityLevels: fromFile });
  check<Equal<typeof dynamic, BackgroundExecutor<string>>>();
  await dynamic.fireAndForget('monitor', 'i', { priority: 'nightly' });
  // An explicit type argument, a typed config, and a subclass generic in the levels.
  const explicit = new BackgroundExecutor<'now' | 'soon'>({ priorityLevels: { now: 2, soon: 1 } });
  const config: BackgroundExecutorConfig<'now' | 'soon'> = { priorityLevels: { now: 2, soon: 1 } };
  const annotated = new BackgroundExecutor(config);
  check<Equal<typeof explicit, typeof annotated>>();
  class Tracing<Level extends string = DefaultPriorityLevel> extends BackgroundExecutor<Level> {}
  const traced = new Tracing({ priorityLevels: { now: 1 } });
  await traced.execute('monitor', 'j', { priority: 'now' });
  check<Equal<Parameters<Tracing['fireAndForget']>[2], SubmitOptions | undefined>>();
}

// ----- typed results of status queries ------------------------------------------------------------

export async function typedStatus(bg: BackgroundExecutor): Promise<void> {
  // A command agent followed to its end, its result typed as a CommandResult.
  bg.registerCommand('project-tests', (_task, options) => ({
    command: 'npm',
    args: ['test'],
    cwd: options.dir,
    env: { CI: '1', NODE_OPTIONS: null },
    maxOutputBytes: 4 * 1024 * 1024,
    killGraceMs: 10_000,
  }));
  const { executionId } = await bg.executeWatched('project-tests', 'ci', { dir: '../other-project', timeout: 600_000 });
  const status = await bg.waitFor<CommandResult>(executionId);
  if (!status.found) use('expired');
  else if (status.status === 'completed') use(status.result.stdout.slice(-500));
  else {
    // waitFor() resolves once the execution has ended: here it failed or was cancelled.
    const ended: 'failed' | 'cancelled' = status.status;
    const message: string = status.error;
    const result: null = status.result;
    use(ended, message, result, status.errorObject);
  }

  // getExecutionStatus() and watch() take the result type too.
  const now = bg.getExecutionStatus<CommandResult>(executionId);
  if (now.found) {
    switch (now.status) {
      case 'completed': {
        const exitCode: number | null = now.result.exitCode;
        const error: null = now.error;
        use(exitCode, error);
        break;
      }
      case 'failed':
      case 'cancelled': {
        const error: string = now.error;
        use(error);
        break;
      }
      default: {
        const pending: 'queued' | 'running' = now.status;
        const result: null = now.result;
        use(pending, result, now.queuePosition);
      }
    }
  }
  for await (const update of bg.watch<CommandResult>(executionId)) {
    if ('found' in update && update.found && update.status === 'completed') use(update.result.stdoutBytes);
  }

  // Reading `status` before narrowing on `found` does not compile (see negative.ts); this does.
  const maybe = bg.getExecutionStatus(executionId);
  const state: ExecutionStatus | 'not found' = maybe.found ? maybe.status : 'not found';
  use(state);

  check<Equal<Awaited<ReturnType<typeof bg.waitFor>>, FinalExecutionStatus>>();
  check<Equal<Extract<ExecutionStatusResult<CommandResult>, { status: 'completed' }>['result'], CommandResult>>();
  check<Equal<Extract<FinalExecutionStatus, { found: true }>['status'], 'completed' | 'failed' | 'cancelled'>>();
  check<Equal<Extract<FinalExecutionStatus<CommandResult>, { found: false }>, { found: false }>>();
}

// ----- exactOptionalPropertyTypes: `undefined` where the executor takes it as "not given" ---------

export async function explicitUndefined(timeout: number | undefined, dir: string | undefined): Promise<void> {
  const bg = new BackgroundExecutor({ defaultTimeoutMs: timeout, priorityLevels: undefined, retries: undefined });
  check<Equal<typeof bg, BackgroundExecutor>>();
  await bg.fireAndForget('monitor', 'x', { priority: undefined, timeout, signal: undefined, onProgress: undefined });
  await bg.executeMultiple(['oracle'], 'y', { consistencyCheck: undefined, backoff: undefined });
  bg.registerCommand('ls', { command: 'ls', args: undefined, cwd: dir, env: { HOME: undefined }, killSignal: undefined });
  await bg.shutdown({ mode: undefined, timeoutMs: timeout });
  use(new ResourceMonitor({ interval: undefined, cpuThreshold: undefined }));
}

// ----- exact types of a few results (they must not be `any`) -------------------------------------

declare const bgDecl: BackgroundExecutor;
check<Equal<Awaited<ReturnType<typeof bgDecl.fireAndForget>>, Submitted<'fire-and-forget'>>>();
check<Equal<Awaited<ReturnType<typeof bgDecl.executeWatched>>, Submitted<'watched'>>>();
check<Equal<ReturnType<typeof bgDecl.getExecutionStatus>, ExecutionStatusResult>>();
check<Equal<ReturnType<typeof bgDecl.getQueueStatus>, QueueStatus>>();
check<Equal<ReturnType<typeof bgDecl.getStats>, ExecutorStats>>();
check<Equal<ReturnType<typeof bgDecl.onIdle>, Promise<void>>>();
check<Equal<ReturnType<typeof bgDecl.shutdown>, Promise<void>>>();
check<Equal<Parameters<typeof bgDecl.unregisterAgent>, [name: string]>>();
check<Equal<BackgroundExecutorEvents['idle'], [{ timestamp: number }]>>();
check<Equal<ResourceMonitorEvents['stopped'], [{ timestamp: number }]>>();
notAny(bgDecl.getStatus());
notAny(bgDecl.resourceMonitor);
