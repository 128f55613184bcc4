// Type definitions for bmad-background-executor (hand-written; the generated binding types
// are in binding.d.ts and are not part of the public API).
//
// This file is the CommonJS view, and the one source of every declaration:
// `require('bmad-background-executor')` is the BackgroundExecutor class itself, with
// `.BackgroundExecutor`, `.ResourceMonitor` and `.default` attached (index.js), hence
// `export =` a class merged with a namespace. index.d.mts is the ES module view over it.
//
// The Node.js names used here (node:events, NodeJS.Signals, AbortSignal) come from @types/node,
// which the reference below loads even when a project's tsconfig lists no "types".

/// <reference types="node" />

import { EventEmitter } from 'node:events';

declare namespace Types {
  export type ExecutionId = string;
  /** The level names of an executor constructed without `priorityLevels`. */
  export type DefaultPriorityLevel = 'critical' | 'high' | 'medium' | 'low' | 'background';
  export type ExecutionMode = 'fire-and-forget' | 'async-callback' | 'watched' | 'execute' | 'aggregate';
  export type ExecutionStatus = 'queued' | 'running' | 'completed' | 'failed' | 'cancelled';
  export type ErrorCode =
    | 'ERR_INVALID_ARG'
    | 'ERR_UNKNOWN_PRIORITY'
    | 'ERR_AGENT_NOT_FOUND'
    | 'ERR_EXECUTION_TIMEOUT'
    | 'ERR_EXECUTION_CANCELLED'
    | 'ERR_EXECUTOR_SHUT_DOWN'
    | 'ERR_COMMAND_FAILED'
    | 'ERR_COMMAND_SPAWN'
    | 'ERR_COMMAND_SPEC'
    | 'ERR_UNSUPPORTED_PLATFORM'
    | 'ERR_STORE'
    | 'ERR_STORE_VERSION'
    | 'ERR_NOT_SERIALIZABLE'
    | 'ERR_VALUE_TOO_LARGE'
    | 'ERR_WORKER_LOST'
    | 'ERR_NO_STORE'
    | 'ERR_QUEUE_FULL'
    | 'ERR_TOO_MANY_AGENTS'
    | 'ERR_NATIVE_BINDING_NOT_FOUND';

  /** Every error the package creates carries one of these codes. */
  export interface ExecutorError extends Error {
    code: ErrorCode;
    executionId?: ExecutionId;
    agent?: string;
    timeoutMs?: number;
    /** The attempt a timeout ended. */
    attempt?: number;
  }

  /** The third argument of every agent. `Level`: the executor's level names (any string by default). */
  export interface AgentContext<Options = any, Level extends string = string> {
    readonly executionId: ExecutionId;
    readonly agent: string;
    readonly task: string;
    /** The options object passed at submission, unchanged (undefined when none). */
    readonly options: Options;
    readonly mode: ExecutionMode;
    /** The priority level name. */
    readonly priority: Level;
    /** 1 for the first attempt. */
    readonly attempt: number;
    /** Aborted on cancel, timeout and forced shutdown; `reason` is an ExecutorError. */
    readonly signal: AbortSignal;
    /** Reports progress 0–100 (clamped; non-numbers ignored). Safe to destructure. */
    readonly progress: (percent: number, detail?: unknown) => void;
  }

  export type AgentFunction<Result = unknown, Options = any, Level extends string = string> = (
    task: string,
    options: Options,
    context: AgentContext<Options, Level>,
  ) => Result | PromiseLike<Result>;

  export type DefaultAgentFunction<Result = unknown, Options = any, Level extends string = string> = (
    agent: string,
    task: string,
    options: Options,
    context: AgentContext<Options, Level>,
  ) => Result | PromiseLike<Result>;

  /** `T`, but not a place the level names are inferred from (the constructor infers them from `priorityLevels` only). */
  type NotInferred<T> = [T][T extends any ? 0 : never];

  /**
   * `Level`: the level names. `new BackgroundExecutor(config)` infers them from the keys of
   * `priorityLevels`; without it they are the default levels.
   */
  export interface BackgroundExecutorConfig<Level extends string = DefaultPriorityLevel> {
    /** Integer >= 1. Default 5. */
    maxConcurrentAgents?: number | undefined;
    /** Whole-machine CPU busy percent that throttles new starts, 0 < x <= 100. Default 80. */
    maxCpuPercent?: number | undefined;
    /** MB resident in this process and its agent processes that throttles new starts. Default 2048. */
    maxMemoryMb?: number | undefined;
    /** Default true. */
    throttleIfExceeded?: boolean | undefined;
    /** Level name -> positive integer, higher runs first; replaces the defaults (critical 5 … background 1). */
    priorityLevels?: Record<Level, number> | undefined;
    agents?: Record<string, AgentFunction<unknown, any, NotInferred<Level>>> | undefined;
    defaultAgent?: DefaultAgentFunction<unknown, any, NotInferred<Level>> | undefined;
    /** Integer > 0 (ms); none by default. */
    defaultTimeoutMs?: number | undefined;
    /** Integer >= 0 (ms) a finished execution stays queryable. Default 60000. */
    resultTtlMs?: number | undefined;
    /** Integer >= 0: most finished executions kept. Default 10000. */
    maxRetainedResults?: number | undefined;
    /** Integer > 0 (ms): watched-mode progress-update cadence. Default 1000. */
    progressIntervalMs?: number | undefined;
    /** Integer > 0 (ms): resource sampling cadence. Default 1000. */
    monitorIntervalMs?: number | undefined;
    /** Integer >= 0: executions allowed to run while throttled. Default 1. */
    minConcurrentAgents?: number | undefined;
    /** Integer >= 0 (ms) a cancelled or timed-out agent may keep its slot before it is freed (a command agent: at least its killGraceMs + 1000). Default 5000. */
    cancelGraceMs?: number | undefined;
    /** Integer >= 0 (ms): a queued execution gains one priority level per agingMs waited. 0 (off) by default. */
    agingMs?: number | undefined;
    /**
     * Integer >= 0: command output (stdout + stderr, bytes of JS strings) that finished
     * executions keep in all; past it the oldest lose theirs (`outputDropped: true`). 64 MiB by default.
     */
    maxRetainedOutputBytes?: number | undefined;
    /** Integer 0–1000: attempts after the first when an attempt fails or times out. Default 0. */
    retries?: number | undefined;
    /** Integer >= 0 (ms): delay before a retry (the base of the exponential backoff). Default 1000. */
    retryDelayMs?: number | undefined;
    /** 'fixed': every retry waits retryDelayMs; 'exponential' (default): it doubles per attempt, with jitter. */
    backoff?: 'fixed' | 'exponential' | undefined;
    /**
     * Asked before each retry the policy allows, with the error and the attempt that failed: a
     * falsy answer ends the execution with that error. Default: every error but
     * ERR_AGENT_NOT_FOUND and ERR_COMMAND_SPAWN is retried (a spawn that failed for want of a
     * resource — EAGAIN, EMFILE, ENFILE, ENOMEM, EINTR — is retried).
     */
    retryIf?: ((error: unknown, attempt: number) => boolean) | undefined;
    /** Integer >= 1: most executions waiting in the queue; a submission beyond it rejects with ERR_QUEUE_FULL. No limit by default. */
    maxQueued?: number | undefined;
    /** At most `max` agent starts in any window of `intervalMs`, all agents together (`setRateLimit` changes it). None by default. */
    rateLimit?: RateLimit | null | undefined;
    /**
     * Durable executions: `'sqlite:<path>'` (relative to the working directory; `?synchronous=full`
     * to survive power loss), or `'postgres://user@host/db?schema=…'` for executors on several
     * hosts (see the README). Every execution is then stored before it is
     * acknowledged and run by any executor on the store, unless its options say `durable: false`.
     */
    store?: string | undefined;
    /** Integer >= 100 (ms): the lease of an attempt this executor runs, renewed every leaseMs/3. Default 30000. */
    leaseMs?: number | undefined;
    /** Number 0.1–60000 (ms): how often the store is checked for other processes' changes while busy. Default 0.25. */
    storePollMs?: number | undefined;
    /**
     * Integer 0–10000: executions this executor claims beyond its free slots, to wait in its own
     * queue (within `maxQueued`) for a slot. They count as running in the store: other executors
     * cannot run them meanwhile, and a crash counts an attempt for each. Default 0.
     */
    storePrefetch?: number | undefined;
  }

  /** Options read by the executor; everything else is passed to the agent unchanged. */
  export interface SubmitOptions<Level extends string = DefaultPriorityLevel> {
    /** A level name of the executor. */
    priority?: Level | undefined;
    /** Integer > 0 (ms); overrides defaultTimeoutMs. */
    timeout?: number | undefined;
    /** Aborting it cancels the execution. */
    signal?: AbortSignal | undefined;
    /** Called with every progress report of this execution. */
    onProgress?: ((update: ProgressReport) => void) | undefined;
    /** Overrides the config's `retries` for this execution. */
    retries?: number | undefined;
    /** Overrides the config's `retryDelayMs`. */
    retryDelayMs?: number | undefined;
    /** Overrides the config's `backoff`. */
    backoff?: 'fixed' | 'exponential' | undefined;
    /** Integer, 0 to 2147483647 (ms): the execution is queued but does not start before this delay. */
    delayMs?: number | undefined;
    /** A Date or ms since the epoch, at most 2147483647 ms ahead: the execution does not start before then (instead of delayMs). */
    startAfter?: Date | number | undefined;
    /** Overrides the config's `retryIf` (not stored: with a store it applies where the execution was submitted). */
    retryIf?: ((error: unknown, attempt: number) => boolean) | undefined;
    /** With a store: `false` runs this execution in memory only. Default true. */
    durable?: boolean | undefined;
    /**
     * While an execution with this key is queued or running, a submission with it gets that
     * execution's id and outcome instead of a second run (with a store: across processes).
     */
    key?: string | undefined;
    [key: string]: unknown;
  }

  export interface ProgressReport {
    executionId: ExecutionId;
    agent: string;
    progress: number;
    detail: unknown;
  }

  export interface Submitted<M extends ExecutionMode> {
    executionId: ExecutionId;
    mode: M;
    /** The real status when the call returned. */
    status: ExecutionStatus;
  }

  export type ExecutionCallback<Result = unknown> = (err: unknown, result?: Result) => void;

  /** The fields of every status object of a known execution. */
  interface ExecutionStatusFields<Level extends string> {
    found: true;
    id: ExecutionId;
    executionId: ExecutionId;
    agent: string;
    task: string;
    mode: ExecutionMode;
    priority: Level;
    /** Attempts started so far (0 while queued for the first time). */
    attempt: number;
    progress: number;
    /** Submission time, ms since the epoch. */
    started: number;
    /** ms from submission to the end, or to now. */
    duration: number;
    /** The original error value when failed or cancelled. */
    errorObject?: unknown;
    /** 1-based position in start order, while queued. */
    queuePosition?: number | undefined;
    startedAt?: number | undefined;
    finishedAt?: number | undefined;
    /** True for an execution of the store. */
    durable?: boolean | undefined;
    /** Its deduplication key (`options.key`). */
    key?: string | undefined;
    /** While a delayed execution waits for its first start: when it may start (ms since the epoch). */
    startAfter?: number | undefined;
    /** The executor that runs or ran it (stored executions read with `fetchExecutionStatus`). */
    owner?: string | undefined;
    /** Attempts it may have: `retries` + 1 (stored executions read with `fetchExecutionStatus`). */
    maxAttempts?: number | undefined;
  }

  /**
   * `{ found: false }`, or the execution's fields: narrow on `found`, then on `status`.
   * `result` is the agent's value once `status` is 'completed' (typed `Result`, e.g.
   * `CommandResult`; else null); `error` the message once 'failed' or 'cancelled' (else null).
   */
  export type ExecutionStatusResult<Result = unknown, Level extends string = DefaultPriorityLevel> =
    | { found: false }
    | (ExecutionStatusFields<Level> & { status: 'queued' | 'running'; result: null; error: null })
    | (ExecutionStatusFields<Level> & { status: 'completed'; result: Result; error: null })
    | (ExecutionStatusFields<Level> & { status: 'failed' | 'cancelled'; result: null; error: string });

  /** What `waitFor()` resolves to and `watch()` ends with: `{ found: false }` or a finished execution. */
  export type FinalExecutionStatus<Result = unknown, Level extends string = DefaultPriorityLevel> = Exclude<
    ExecutionStatusResult<Result, Level>,
    { status: 'queued' | 'running' }
  >;

  /** A sliding-window rate limit: at most `max` starts in any window of `intervalMs`. */
  export interface RateLimit {
    /** Integer 1–1000000. */
    max: number;
    /** Integer >= 1 (ms). */
    intervalMs: number;
  }

  /**
   * An agent's limits (`registerAgent`, `registerCommand`, `setAgentLimits`). A key left out
   * keeps its value; null (or an Infinity concurrency) removes that limit.
   */
  export interface AgentLimits {
    /** Integer >= 1: most executions of this agent holding a slot at once. */
    concurrency?: number | null | undefined;
    rateLimit?: RateLimit | null | undefined;
    /**
     * Integer >= 1: most executions of this agent running at once on every executor sharing a
     * PostgreSQL store (kept in the store; refused with ERR_NO_STORE otherwise).
     */
    globalConcurrency?: number | null | undefined;
  }

  /** One agent with limits, in `getQueueStatus().agents`. */
  export interface AgentLimitsStatus {
    /** Its executions holding a slot (running, or cancelled and not settled yet). */
    running: number;
    queued: number;
    concurrency: number | null;
    /**
     * The `globalConcurrency` this executor set in the store (another executor may have set
     * another since: the store keeps the last one set).
     */
    globalConcurrency: number | null;
    rateLimit: RateLimit | null;
    /** While its rate window is full: when it lets the next start through (ms since the epoch). */
    nextStartAt: number | null;
  }

  export interface QueueStatus<Level extends string = DefaultPriorityLevel> {
    queued: number;
    running: number;
    max_concurrent: number;
    /** Slots in use: running executions plus cancelled ones whose agent has not settled yet. */
    slots_used: number;
    paused: boolean;
    throttled: boolean;
    /** In priority and FIFO order (an execution behind an agent's limit is listed in its place). */
    queue: Array<{ id: ExecutionId; agent: string; priority: Level; mode: ExecutionMode }>;
    /** Per agent with limits. */
    agents: Record<string, AgentLimitsStatus>;
    /** The global rate limit, null without one. */
    rateLimit: (RateLimit & { nextStartAt: number | null }) | null;
  }

  /** A program run as an agent (`registerCommand`): no shell, its own process group. */
  export interface CommandSpec {
    /** The program: a path, or a name looked up in PATH. */
    command: string;
    /** Arguments, passed as they are (no shell, no interpolation). */
    args?: readonly string[] | undefined;
    cwd?: string | undefined;
    /** Merged into the parent's environment (unless `inheritEnv: false`); `null` removes a variable, `undefined` is ignored. */
    env?: Readonly<Record<string, string | null | undefined>> | undefined;
    /** Default true. */
    inheritEnv?: boolean | undefined;
    /** Written to stdin, which is then closed. Without it stdin is /dev/null. */
    input?: string | Uint8Array | undefined;
    /** A RegExp matched against each stdout line (its first capture group is the progress), or JSON lines `{"progress": n}`. */
    progressPattern?: RegExp | 'json-lines' | undefined;
    /** Kept per stream; the rest is counted and dropped. Default 1 MiB. */
    maxOutputBytes?: number | undefined;
    /** Sent to the process group on cancel, timeout and forced shutdown. Default 'SIGTERM'. */
    killSignal?: NodeJS.Signals | number | undefined;
    /** Then SIGKILL after this many ms (the execution keeps its slot until then, + 1 s). Default 5000. */
    killGraceMs?: number | undefined;
  }

  /** Builds a spec per execution. */
  export type CommandSpecFunction<Options = any> = (task: string, options: Options) => CommandSpec | PromiseLike<CommandSpec>;

  /** What a command agent resolves with: `execute<CommandResult>()`, `waitFor<CommandResult>()`. */
  export interface CommandResult {
    /** null when the process was ended by a signal. */
    exitCode: number | null;
    /** The signal that ended it, e.g. 'SIGKILL', else null. */
    /** The signal's name; a realtime signal, which has none, as its number (e.g. '40'). */
    signal: NodeJS.Signals | `${number}` | null;
    stdout: string;
    stderr: string;
    durationMs: number;
    /** True when stdout or stderr was cut at `maxOutputBytes`. */
    truncated: boolean;
    /** Bytes written in all, kept or not. */
    stdoutBytes: number;
    stderrBytes: number;
    /**
     * True in what the executor retains (status queries) once `maxRetainedOutputBytes` made it
     * drop this output (`stdout` and `stderr` are then ''); what callers received keeps it.
     */
    outputDropped: boolean;
  }

  /** `ERR_COMMAND_FAILED`: non-zero exit or death by a signal; carries the result fields. */
  export interface CommandFailedError extends Error, CommandResult {
    code: 'ERR_COMMAND_FAILED';
    command: string;
    args: string[];
  }

  /**
   * A validated store setting, as `config.store` reports it. Its retention is the store's
   * (`resultTtlMs` 7 days and `maxRetainedResults` 1 000 000 unless the config sets them);
   * `config.resultTtlMs` and `config.maxRetainedResults` are the in-memory ones.
   */
  export interface StoreSettings {
    readonly url: string;
    readonly leaseMs: number;
    /** `storePollMs`. */
    readonly pollMs: number;
    /** `storePrefetch`. */
    readonly prefetch: number;
    readonly resultTtlMs: number;
    readonly maxRetainedResults: number;
    /** The SQLite file, absolute ('' on PostgreSQL). */
    readonly path: string;
    /** The PostgreSQL URL, null on SQLite. */
    readonly postgres: string | null;
    readonly synchronous: 'normal' | 'full';
  }

  /** `ERR_COMMAND_SPEC`: a command spec function threw or rejected. */
  export interface CommandSpecError extends Error {
    code: 'ERR_COMMAND_SPEC';
    /** The command agent's name. */
    agent: string;
    /** What the spec function threw. */
    cause: unknown;
  }

  /** `ERR_COMMAND_SPAWN`: the program could not be started. */
  export interface CommandSpawnError extends Error {
    code: 'ERR_COMMAND_SPAWN';
    command: string;
    args: string[];
    cwd: string | null;
    /** The OS error name, e.g. 'ENOENT'. */
    reason: string;
    cause: Error & { code: string; errno: number };
  }

  export interface ActiveExecution<Level extends string = DefaultPriorityLevel> {
    id: ExecutionId;
    executionId: ExecutionId;
    agent: string;
    task: string;
    mode: ExecutionMode;
    priority: Level;
    progress: number;
    duration: number;
    startedAt: number;
    /** Command agents only: the process (group leader) id. */
    pid?: number;
    /** Command agents only: CPU percent of one core used by its process tree since the last query (or its start). */
    cpuPercent?: number | null;
    /** Command agents only: resident memory of its process tree, MB. */
    rssMb?: number | null;
  }

  export interface ResourceStatus {
    /** Whole-machine CPU busy percent over the last sampling interval. */
    cpu: number;
    /** MB resident in this process plus the processes it started. */
    memory: number;
    /** The machine's total memory, MB. */
    total_memory: number;
    /** The machine's available memory, MB. */
    free_memory: number;
    /** This process's CPU use over the last interval, percent of one core. */
    process_cpu: number;
    load_average: number[];
    /** Processes counted in `memory`. */
    processes: number;
    timestamp: number;
  }

  export interface WatchUpdate {
    executionId: ExecutionId;
    agent: string;
    progress: number;
    /** 'queued' only in the first item, when watching began before the start. */
    status: 'queued' | 'running';
    detail: unknown;
  }

  export interface Percentiles {
    count: number;
    p50: number;
    p90: number;
    p99: number;
  }

  export interface ExecutorStats {
    counts: {
      submitted: number;
      queued: number;
      running: number;
      completed: number;
      failed: number;
      cancelled: number;
    };
    /** Executions that ended in the last 60 s, and that count per second. */
    throughput: { lastMinute: number; perSecond: number };
    /**
     * Starts a rate limit held back while a slot was free, released when its window had room
     * (`rateLimited`); starts of executions queued while their agent was at its concurrency
     * limit (`limitDeferred`).
     */
    limits: { rateLimited: number; limitDeferred: number };
    /** Per agent (ms, from log-linear histograms: within 12.5 %). */
    agents: Array<{ agent: string; queueWait: Percentiles; runTime: Percentiles }>;
    /**
     * With a store: executions this executor claimed, results it discarded because a rescue
     * had taken the execution (`staleResults`), executions of stopped executors it rescued,
     * store failures reported as `store-error`, and writes that found the database locked by
     * another process and went again by themselves (`busy`). null without a store.
     */
    store: { claimed: number; staleResults: number; rescued: number; storeErrors: number; busy: number } | null;
  }

  export interface ExecutorStatus {
    initialized: boolean;
    running: number;
    queued: number;
    max_concurrent: number;
    active_processes: number;
    /** Command processes not finished yet (including ones being terminated). */
    command_processes: number;
    slots_used: number;
    paused: boolean;
    throttled: boolean;
    shutting_down: boolean;
    submitted: number;
    completed: number;
    failed: number;
    cancelled: number;
    retained: number;
    agents: string[];
    resources: ResourceStatus;
  }

  export type CancelResult =
    | { success: true; executionId: ExecutionId; previousStatus: 'queued' | 'running' }
    | { success: false; error: string };

  export interface AggregatedResult {
    /** null: refused before it was queued (`ERR_QUEUE_FULL`), so no execution has an id. */
    id: ExecutionId | null;
    agent: string;
    task: string;
    status: ExecutionStatus;
    result: unknown;
    error: string | null;
    errorObject?: unknown;
    duration: number;
  }

  export type Consistency =
    | { consistent: true; all_succeeded: true; reason?: string }
    | {
        consistent: false;
        reason: string;
        failures: Array<{ id: ExecutionId; agent: string; status: ExecutionStatus; error: string | null }>;
      };

  export interface AggregationReport {
    total: number;
    successful: number;
    failed: number;
    /** 0–100, two decimals. */
    success_rate: number;
    /** Sum of the executions' durations, ms. */
    total_duration: number;
    average_duration: number;
    consistency: Consistency;
    /** ISO 8601. */
    timestamp: string;
  }

  /** The options of one `executeMultiple` execution: no `key`, since each of them runs. */
  export interface MultipleItemOptions<Level extends string = DefaultPriorityLevel> extends SubmitOptions<Level> {
    key?: undefined;
  }

  /** One execution of `executeMultiple(items, options?)`. */
  export interface MultipleItem<Level extends string = DefaultPriorityLevel> {
    agent: string;
    task: string;
    options?: MultipleItemOptions<Level> | undefined;
  }

  /** What a `consistencyCheck` answers. */
  export type ConsistencyVerdict = boolean | { consistent: boolean; reason?: string | undefined };

  export interface MultipleOptions<Level extends string = DefaultPriorityLevel> extends MultipleItemOptions<Level> {
    /** Compares the results once all succeeded; a check that throws or rejects makes them inconsistent. */
    consistencyCheck?: ((results: AggregatedResult[]) => ConsistencyVerdict | Promise<ConsistencyVerdict>) | undefined;
  }

  export interface AggregationResult {
    aggregationId: string;
    results: AggregatedResult[];
    consistent: Consistency;
    report: AggregationReport;
  }

  export interface ShutdownOptions {
    /** 'cancel' (default) cancels the queue; 'drain' runs it to the end. */
    mode?: 'cancel' | 'drain' | undefined;
    /** Integer >= 0 (ms): then running agents are aborted and marked cancelled. */
    timeoutMs?: number | undefined;
  }

  /** Payload of `execution-failed` and `execution-cancelled`. */
  export interface ExecutionEndedEvent {
    executionId: ExecutionId;
    agent: string;
    task: string;
    mode: ExecutionMode;
    /** The error's message. */
    error: string;
    /** The original value thrown or rejected (or the executor's cancel/timeout error). */
    errorObject: unknown;
    /** The error's `code`, when it has one. */
    code: string | undefined;
    duration: number;
  }

  export interface SubmittedEvent<Level extends string = DefaultPriorityLevel> {
    executionId: ExecutionId;
    agent: string;
    task: string;
    priority: Level;
  }

  export interface ThresholdExceededEvent {
    cpu: number;
    memory: number;
    timestamp: number;
    exceeded: Array<'cpu' | 'memory'>;
    thresholds: { cpu: number; memory: number };
  }

  /** Event name -> listener arguments; `Level`: the executor's level names. */
  export interface BackgroundExecutorEvents<Level extends string = DefaultPriorityLevel> {
    initialized: [{ maxConcurrentAgents: number; priorityLevels: Record<Level, number> }];
    'fire-and-forget-started': [SubmittedEvent<Level>];
    'async-callback-started': [SubmittedEvent<Level>];
    'watched-started': [SubmittedEvent<Level>];
    'execution-queued': [
      | {
          executionId: ExecutionId;
          agent: string;
          task: string;
          mode: ExecutionMode;
          priority: Level;
          /** 1-based place in start order; 0 when it started at once. */
          queuePosition: number;
          queueLength: number;
        }
      | {
          executionId: ExecutionId;
          agent: string;
          task: string;
          mode: ExecutionMode;
          priority: Level;
          /** A stored execution, committed: any executor on the store may run it. */
          durable: true;
        },
    ];
    'execution-started': [
      { executionId: ExecutionId; agent: string; task: string; mode: ExecutionMode; priority: Level; attempt: number },
    ];
    /** An attempt failed (or timed out) and the execution will run again after `delayMs`. */
    'execution-retry': [
      {
        executionId: ExecutionId;
        agent: string;
        task: string;
        /** The attempt that failed. */
        attempt: number;
        error: string;
        errorObject: unknown;
        delayMs: number;
      },
    ];
    'execution-completed': [
      { executionId: ExecutionId; agent: string; task: string; mode: ExecutionMode; result: unknown; duration: number },
    ];
    'execution-failed': [ExecutionEndedEvent];
    'execution-cancelled': [ExecutionEndedEvent];
    'callback-error': [{ executionId: ExecutionId; agent: string; error: unknown }];
    /** A stored execution whose executor stopped (crashed, or lost its lease) was moved on by this one. */
    'execution-rescued': [
      { executionId: ExecutionId; agent: string; attempt: number; owner: string; status: 'queued' | 'failed' | 'cancelled' },
    ];
    /** The result of an attempt that no longer owned its stored execution (rescued meanwhile) was discarded. */
    'execution-stale': [{ executionId: ExecutionId; agent: string; attempt: number }];
    /** The store failed outside any call (a heartbeat, a rescue, a retried write). */
    'store-error': [{ error: Error; code: string; message: string }];
    /** The connection to a PostgreSQL store was lost (`store`: its URL, password hidden); work waits for it. */
    'store-disconnected': [{ store: string }];
    /** The connection to a PostgreSQL store is back; what failed meanwhile is sent again. */
    'store-reconnected': [{ store: string }];
    'progress-update': [
      { executionId: ExecutionId; agent: string; progress: number; status: ExecutionStatus; duration: number; detail: unknown },
    ];
    /** `task`: the shared task (the first item's when each item has its own); `tasks`: each execution's. */
    'aggregation-started': [{ aggregationId: string; agents: string[]; task: string; tasks: string[]; executionIds: Array<ExecutionId | null> }];
    'aggregation-completed': [{ aggregationId: string; results: AggregatedResult[]; report: AggregationReport }];
    'queue-throttled': [
      {
        reason: Array<'cpu' | 'memory'>;
        resources: { cpu: number; memory: number };
        running: number;
        queued: number;
        minConcurrentAgents: number;
        timestamp: number;
      },
    ];
    'queue-resumed': [
      { resources: { cpu: number; memory: number }; running: number; queued: number; started: number; timestamp: number },
    ];
    'queue-paused': [{ queued: number }];
    'queue-unpaused': [{ started: number }];
    'resource-threshold-exceeded': [ThresholdExceededEvent];
    'shutting-down': [{ running: number; queued: number; mode: 'cancel' | 'drain'; timeoutMs: number | undefined }];
    'shutdown-complete': [{ forced: boolean; completed: number; failed: number; cancelled: number; timestamp: number }];
    idle: [{ timestamp: number }];
    /** Each line a command agent writes; sent only while someone listens. */
    'command-output': [{ executionId: ExecutionId; agent: string; stream: 'stdout' | 'stderr'; line: string }];
  }

  type Listener<Args extends unknown[]> = (...args: Args) => void;

  /**
   * `Level`: the priority level names, inferred from `priorityLevels` by the constructor
   * (`new BackgroundExecutor({ priorityLevels: { urgent: 2, later: 1 } })` takes 'urgent' | 'later');
   * the default levels otherwise. Submit options name them; status objects and events report them.
   */
  export class BackgroundExecutor<Level extends string = DefaultPriorityLevel> extends EventEmitter {
    constructor(config?: BackgroundExecutorConfig<Level>);
    /** The validated configuration, with defaults filled in. */
    readonly config: {
      readonly [K in Exclude<
        keyof BackgroundExecutorConfig,
        'defaultAgent' | 'defaultTimeoutMs' | 'priorityLevels' | 'agents' | 'retryIf' | 'maxQueued' | 'store' | 'leaseMs' | 'storePollMs' | 'storePrefetch'
      >]-?: Exclude<BackgroundExecutorConfig[K], undefined>;
    } & {
      defaultAgent: DefaultAgentFunction | undefined;
      defaultTimeoutMs: number | undefined;
      priorityLevels: ReadonlyMap<Level, number>;
      agents: ReadonlyMap<string, AgentFunction>;
      retryIf: ((error: unknown, attempt: number) => boolean) | undefined;
      maxQueued: number | undefined;
      /** The store's settings (`leaseMs`, `storePollMs`, `storePrefetch` and its retention), null without a store. */
      store: StoreSettings | null;
    };
    readonly resourceMonitor: ResourceMonitor;

    /** Starts the resource monitor; idempotent; resolves to this executor. */
    initialize(): Promise<this>;

    /** `limits`: this agent's concurrency and rate limits (see `setAgentLimits`). */
    registerAgent(name: string, agent: AgentFunction<unknown, any, Level>, limits?: AgentLimits): this;
    /** Registers a program as an agent; it resolves with a `CommandResult`. */
    registerCommand(name: string, spec: CommandSpec | CommandSpecFunction, limits?: AgentLimits): this;
    unregisterAgent(name: string): boolean;
    /** Changes an agent's limits at run time; what they now allow starts at once. */
    setAgentLimits(name: string, limits: AgentLimits): this;
    /** Sets the global rate limit, or removes it with null. */
    setRateLimit(limit: RateLimit | null): this;
    /** The old extension point; override it to run agents yourself. */
    spawnAgentProcess(execution: {
      id: ExecutionId;
      executionId: ExecutionId;
      agent: string;
      task: string;
      options: any;
      mode: ExecutionMode;
      priority: Level;
      context: AgentContext<any, Level>;
      signal: AbortSignal;
    }): unknown;

    fireAndForget(agent: string, task: string, options?: SubmitOptions<Level>): Promise<Submitted<'fire-and-forget'>>;
    executeWithCallback<Result = any>(
      agent: string,
      task: string,
      callback?: ExecutionCallback<Result> | null,
      options?: SubmitOptions<Level>,
    ): Promise<Submitted<'async-callback'>>;
    executeWatched(agent: string, task: string, options?: SubmitOptions<Level>): Promise<Submitted<'watched'>>;
    /** Resolves with the agent's value: `execute<CommandResult>()` for a command agent. */
    execute<Result = any>(agent: string, task: string, options?: SubmitOptions<Level>): Promise<Result>;
    /** `agents` may mix names (which run `task`) with items (which run their own). */
    executeMultiple(agents: Array<string | MultipleItem<Level>>, task: string, options?: MultipleOptions<Level>): Promise<AggregationResult>;
    /** Different tasks in one aggregation: one execution per item; `options` holds `consistencyCheck` and the items' default options. */
    executeMultiple(items: Array<MultipleItem<Level>>, options?: MultipleOptions<Level>): Promise<AggregationResult>;
    /** The final status once the execution has ended; `Result` types its `result` (e.g. `CommandResult`). */
    waitFor<Result = unknown>(executionId: ExecutionId): Promise<FinalExecutionStatus<Result, Level>>;
    /** Resolves once nothing is queued or running. */
    onIdle(): Promise<void>;
    /** Resolves once fewer than `n` executions wait in the queue (a producer's backpressure). */
    onQueueSizeLessThan(n: number): Promise<void>;
    /**
     * Progress reports of one execution, ending with its final status object:
     * `for await (const update of bg.watch(id)) …`. Unknown or expired ids yield `{ found: false }`.
     */
    watch<Result = unknown>(executionId: ExecutionId): AsyncIterableIterator<WatchUpdate | FinalExecutionStatus<Result, Level>>;
    /** Counts, throughput over the last minute, per-agent wait/run percentiles (ms). */
    getStats(): ExecutorStats;

    cancelExecution(executionId: ExecutionId): Promise<CancelResult>;
    setConcurrency(n: number): this;
    pause(): this;
    resume(): this;

    /** `Result` types `result` once completed (e.g. `CommandResult`). For a stored execution: what this process knows. */
    getExecutionStatus<Result = unknown>(executionId: ExecutionId): ExecutionStatusResult<Result, Level>;
    /** With a store: the execution as stored, whichever process submitted or ran it. */
    fetchExecutionStatus<Result = unknown>(executionId: ExecutionId): Promise<ExecutionStatusResult<Result, Level>>;
    /**
     * With a store: 'ok' when sound, else what is wrong (SQLite's `PRAGMA integrity_check`; on
     * PostgreSQL, executions in an impossible state); null without one.
     */
    checkStore(): Promise<string | null>;
    getQueueStatus(): QueueStatus<Level>;
    getActiveExecutions(): ActiveExecution<Level>[];
    getStatus(): ExecutorStatus;

    shutdown(options?: ShutdownOptions): Promise<void>;

    on<E extends keyof BackgroundExecutorEvents>(event: E, listener: Listener<BackgroundExecutorEvents<Level>[E]>): this;
    once<E extends keyof BackgroundExecutorEvents>(event: E, listener: Listener<BackgroundExecutorEvents<Level>[E]>): this;
    addListener<E extends keyof BackgroundExecutorEvents>(event: E, listener: Listener<BackgroundExecutorEvents<Level>[E]>): this;
    prependListener<E extends keyof BackgroundExecutorEvents>(event: E, listener: Listener<BackgroundExecutorEvents<Level>[E]>): this;
    off<E extends keyof BackgroundExecutorEvents>(event: E, listener: Listener<BackgroundExecutorEvents<Level>[E]>): this;
    removeListener<E extends keyof BackgroundExecutorEvents>(event: E, listener: Listener<BackgroundExecutorEvents<Level>[E]>): this;
    emit<E extends keyof BackgroundExecutorEvents>(event: E, ...args: BackgroundExecutorEvents<Level>[E]): boolean;
  }

  export interface ResourceMonitorOptions {
    /** ms between samples (integer >= 1). Default 1000. */
    interval?: number | undefined;
    /** Whole-machine CPU busy percent, 0 < x <= 100. Default 80. */
    cpuThreshold?: number | undefined;
    /** MB resident in this process and its children. Default 2048. */
    memoryThreshold?: number | undefined;
  }

  export interface ResourceTrends {
    cpu: Array<{ value: number; timestamp: number }>;
    memory: Array<{ value: number; timestamp: number }>;
  }

  export interface ResourceMonitorEvents {
    'threshold-exceeded': [ThresholdExceededEvent];
    sample: [ResourceStatus & { exceeded: Array<'cpu' | 'memory'> }];
    started: [{ interval: number; timestamp: number }];
    stopped: [{ timestamp: number }];
  }

  export class ResourceMonitor extends EventEmitter {
    constructor(options?: ResourceMonitorOptions);
    readonly interval: number;
    readonly cpuThreshold: number;
    readonly memoryThreshold: number;
    readonly running: boolean;
    start(): this;
    stop(): this;
    /** Samples now and emits as a periodic sample would. */
    check(): ResourceStatus;
    getStatus(): ResourceStatus;
    /** The last 60 samples. */
    getTrends(): ResourceTrends;

    on<E extends keyof ResourceMonitorEvents>(event: E, listener: Listener<ResourceMonitorEvents[E]>): this;
    once<E extends keyof ResourceMonitorEvents>(event: E, listener: Listener<ResourceMonitorEvents[E]>): this;
    off<E extends keyof ResourceMonitorEvents>(event: E, listener: Listener<ResourceMonitorEvents[E]>): this;
    emit<E extends keyof ResourceMonitorEvents>(event: E, ...args: ResourceMonitorEvents[E]): boolean;
  }
}

/** The module itself: the BackgroundExecutor class, with every other name attached. */
declare class BackgroundExecutor<Level extends string = Types.DefaultPriorityLevel> extends Types.BackgroundExecutor<Level> {
  static readonly default: typeof Types.BackgroundExecutor;
}

declare namespace BackgroundExecutor {
  export import ExecutionId = Types.ExecutionId;
  export import DefaultPriorityLevel = Types.DefaultPriorityLevel;
  export import ExecutionMode = Types.ExecutionMode;
  export import ExecutionStatus = Types.ExecutionStatus;
  export import ErrorCode = Types.ErrorCode;
  export import ExecutorError = Types.ExecutorError;
  export import AgentContext = Types.AgentContext;
  export import AgentFunction = Types.AgentFunction;
  export import DefaultAgentFunction = Types.DefaultAgentFunction;
  export import BackgroundExecutorConfig = Types.BackgroundExecutorConfig;
  export import SubmitOptions = Types.SubmitOptions;
  export import ProgressReport = Types.ProgressReport;
  export import Submitted = Types.Submitted;
  export import ExecutionCallback = Types.ExecutionCallback;
  export import ExecutionStatusResult = Types.ExecutionStatusResult;
  export import FinalExecutionStatus = Types.FinalExecutionStatus;
  export import QueueStatus = Types.QueueStatus;
  export import RateLimit = Types.RateLimit;
  export import AgentLimits = Types.AgentLimits;
  export import AgentLimitsStatus = Types.AgentLimitsStatus;
  export import CommandSpec = Types.CommandSpec;
  export import CommandSpecFunction = Types.CommandSpecFunction;
  export import CommandResult = Types.CommandResult;
  export import CommandFailedError = Types.CommandFailedError;
  export import CommandSpawnError = Types.CommandSpawnError;
  export import CommandSpecError = Types.CommandSpecError;
  export import StoreSettings = Types.StoreSettings;
  export import ActiveExecution = Types.ActiveExecution;
  export import ResourceStatus = Types.ResourceStatus;
  export import WatchUpdate = Types.WatchUpdate;
  export import Percentiles = Types.Percentiles;
  export import ExecutorStats = Types.ExecutorStats;
  export import ExecutorStatus = Types.ExecutorStatus;
  export import CancelResult = Types.CancelResult;
  export import AggregatedResult = Types.AggregatedResult;
  export import Consistency = Types.Consistency;
  export import AggregationReport = Types.AggregationReport;
  export import MultipleOptions = Types.MultipleOptions;
  export import MultipleItem = Types.MultipleItem;
  export import MultipleItemOptions = Types.MultipleItemOptions;
  export import ConsistencyVerdict = Types.ConsistencyVerdict;
  export import AggregationResult = Types.AggregationResult;
  export import ShutdownOptions = Types.ShutdownOptions;
  export import ExecutionEndedEvent = Types.ExecutionEndedEvent;
  export import SubmittedEvent = Types.SubmittedEvent;
  export import ThresholdExceededEvent = Types.ThresholdExceededEvent;
  export import BackgroundExecutorEvents = Types.BackgroundExecutorEvents;
  export import BackgroundExecutor = Types.BackgroundExecutor;
  export import ResourceMonitorOptions = Types.ResourceMonitorOptions;
  export import ResourceTrends = Types.ResourceTrends;
  export import ResourceMonitorEvents = Types.ResourceMonitorEvents;
  export import ResourceMonitor = Types.ResourceMonitor;
}

export = BackgroundExecutor;
