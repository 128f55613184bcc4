// Type definitions for bmad-background-executor (hand-written; the generated binding types
// are in binding.d.ts and are not part of the public API).
//
// This file is the CommonJS view, and the one source of every declaration:
// `require('bmad-background-executor')` is the BackgroundExecutor class itself, with
// `.BackgroundExecutor`, `.ResourceMonitor` and `.default` attached (index.js), hence
// `export =` a class merged with a namespace. index.d.mts is the ES module view over it.

import { EventEmitter } from 'node:events';

declare namespace Types {
  export type ExecutionId = string;
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
    | 'ERR_COMMAND_SPAWN';

  /** Every error the package creates carries one of these codes. */
  export interface ExecutorError extends Error {
    code: ErrorCode;
    executionId?: ExecutionId;
    agent?: string;
    timeoutMs?: number;
  }

  /** The third argument of every agent. */
  export interface AgentContext<Options = any> {
    readonly executionId: ExecutionId;
    readonly agent: string;
    readonly task: string;
    /** The options object passed at submission, unchanged (undefined when none). */
    readonly options: Options;
    readonly mode: ExecutionMode;
    /** The priority level name. */
    readonly priority: string;
    /** 1 for the first attempt. */
    readonly attempt: number;
    /** Aborted on cancel, timeout and forced shutdown; `reason` is an ExecutorError. */
    readonly signal: AbortSignal;
    /** Reports progress 0–100 (clamped; non-numbers ignored). Safe to destructure. */
    readonly progress: (percent: number, detail?: unknown) => void;
  }

  export type AgentFunction<Result = unknown, Options = any> = (
    task: string,
    options: Options,
    context: AgentContext<Options>,
  ) => Result | PromiseLike<Result>;

  export type DefaultAgentFunction<Result = unknown, Options = any> = (
    agent: string,
    task: string,
    options: Options,
    context: AgentContext<Options>,
  ) => Result | PromiseLike<Result>;

  export interface BackgroundExecutorConfig {
    /** Integer >= 1. Default 5. */
    maxConcurrentAgents?: number;
    /** Whole-machine CPU busy percent that throttles new starts, 0 < x <= 100. Default 80. */
    maxCpuPercent?: number;
    /** MB resident in this process and its agent processes that throttles new starts. Default 2048. */
    maxMemoryMb?: number;
    /** Default true. */
    throttleIfExceeded?: boolean;
    /** Level name -> positive integer, higher runs first. Default critical 5 … background 1. */
    priorityLevels?: Record<string, number>;
    agents?: Record<string, AgentFunction>;
    defaultAgent?: DefaultAgentFunction;
    /** Integer > 0 (ms); none by default. */
    defaultTimeoutMs?: number;
    /** Integer >= 0 (ms) a finished execution stays queryable. Default 60000. */
    resultTtlMs?: number;
    /** Integer >= 0: most finished executions kept. Default 10000. */
    maxRetainedResults?: number;
    /** Integer > 0 (ms): watched-mode progress-update cadence. Default 1000. */
    progressIntervalMs?: number;
    /** Integer > 0 (ms): resource sampling cadence. Default 1000. */
    monitorIntervalMs?: number;
    /** Integer >= 0: executions allowed to run while throttled. Default 1. */
    minConcurrentAgents?: number;
    /** Integer >= 0 (ms) a cancelled or timed-out agent may keep its slot before it is freed (a command agent: at least its killGraceMs + 1000). Default 5000. */
    cancelGraceMs?: number;
    /** Integer >= 0 (ms): a queued execution gains one priority level per agingMs waited. 0 (off) by default. */
    agingMs?: number;
    /** Integer 0–1000: attempts after the first when an attempt fails or times out. Default 0. */
    retries?: number;
    /** Integer >= 0 (ms): delay before a retry (the base of the exponential backoff). Default 1000. */
    retryDelayMs?: number;
    /** 'fixed': every retry waits retryDelayMs; 'exponential' (default): it doubles per attempt, with jitter. */
    backoff?: 'fixed' | 'exponential';
  }

  /** Options read by the executor; everything else is passed to the agent unchanged. */
  export interface SubmitOptions {
    /** A priority level name. */
    priority?: string;
    /** Integer > 0 (ms); overrides defaultTimeoutMs. */
    timeout?: number;
    /** Aborting it cancels the execution. */
    signal?: AbortSignal;
    /** Called with every progress report of this execution. */
    onProgress?: (update: ProgressReport) => void;
    /** Overrides the config's `retries` for this execution. */
    retries?: number;
    /** Overrides the config's `retryDelayMs`. */
    retryDelayMs?: number;
    /** Overrides the config's `backoff`. */
    backoff?: 'fixed' | 'exponential';
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

  export type ExecutionStatusResult =
    | { found: false }
    | {
        found: true;
        id: ExecutionId;
        executionId: ExecutionId;
        agent: string;
        task: string;
        mode: ExecutionMode;
        priority: string;
        status: ExecutionStatus;
        /** Attempts started so far (0 while queued for the first time). */
        attempt: number;
        progress: number;
        /** Submission time, ms since the epoch. */
        started: number;
        /** ms from submission to the end, or to now. */
        duration: number;
        /** The agent's value when completed, else null. */
        result: unknown;
        /** The error message when failed or cancelled, else null. */
        error: string | null;
        /** The original error value when failed or cancelled. */
        errorObject?: unknown;
        /** 1-based position in start order, while queued. */
        queuePosition?: number;
        startedAt?: number;
        finishedAt?: number;
      };

  export interface QueueStatus {
    queued: number;
    running: number;
    max_concurrent: number;
    /** Slots in use: running executions plus cancelled ones whose agent has not settled yet. */
    slots_used: number;
    paused: boolean;
    throttled: boolean;
    queue: Array<{ id: ExecutionId; agent: string; priority: string; mode: ExecutionMode }>;
  }

  /** A program run as an agent (`registerCommand`): no shell, its own process group. */
  export interface CommandSpec {
    /** The program: a path, or a name looked up in PATH. */
    command: string;
    /** Arguments, passed as they are (no shell, no interpolation). */
    args?: readonly string[];
    cwd?: string;
    /** Merged into the parent's environment (unless `inheritEnv: false`); `null` removes a variable, `undefined` is ignored. */
    env?: Readonly<Record<string, string | null | undefined>>;
    /** Default true. */
    inheritEnv?: boolean;
    /** Written to stdin, which is then closed. Without it stdin is /dev/null. */
    input?: string | Uint8Array;
    /** A RegExp with one capture group matched against each stdout line, or JSON lines `{"progress": n}`. */
    progressPattern?: RegExp | 'json-lines';
    /** Kept per stream; the rest is counted and dropped. Default 1 MiB. */
    maxOutputBytes?: number;
    /** Sent to the process group on cancel, timeout and forced shutdown. Default 'SIGTERM'. */
    killSignal?: NodeJS.Signals | number;
    /** Then SIGKILL after this many ms (the execution keeps its slot until then, + 1 s). Default 5000. */
    killGraceMs?: number;
  }

  /** Builds a spec per execution. */
  export type CommandSpecFunction<Options = any> = (task: string, options: Options) => CommandSpec | PromiseLike<CommandSpec>;

  /** What a command agent resolves with. */
  export interface CommandResult {
    /** null when the process was ended by a signal. */
    exitCode: number | null;
    /** The signal that ended it, e.g. 'SIGKILL', else null. */
    signal: NodeJS.Signals | null;
    stdout: string;
    stderr: string;
    durationMs: number;
    /** True when stdout or stderr was cut at `maxOutputBytes`. */
    truncated: boolean;
    /** Bytes written in all, kept or not. */
    stdoutBytes: number;
    stderrBytes: number;
  }

  /** `ERR_COMMAND_FAILED`: non-zero exit or death by a signal; carries the result fields. */
  export interface CommandFailedError extends Error, CommandResult {
    code: 'ERR_COMMAND_FAILED';
    command: string;
    args: string[];
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

  export interface ActiveExecution {
    id: ExecutionId;
    executionId: ExecutionId;
    agent: string;
    task: string;
    mode: ExecutionMode;
    priority: string;
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
    /** Per agent (ms, from log-linear histograms: within 12.5 %). */
    agents: Array<{ agent: string; queueWait: Percentiles; runTime: Percentiles }>;
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
    id: ExecutionId;
    agent: string;
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

  export interface MultipleOptions extends SubmitOptions {
    consistencyCheck?: (results: AggregatedResult[]) => boolean | { consistent: boolean; reason?: string };
  }

  export interface AggregationResult {
    aggregationId: string;
    results: AggregatedResult[];
    consistent: Consistency;
    report: AggregationReport;
  }

  export interface ShutdownOptions {
    /** 'cancel' (default) cancels the queue; 'drain' runs it to the end. */
    mode?: 'cancel' | 'drain';
    /** Integer >= 0 (ms): then running agents are aborted and marked cancelled. */
    timeoutMs?: number;
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

  export interface SubmittedEvent {
    executionId: ExecutionId;
    agent: string;
    task: string;
    priority: string;
  }

  export interface ThresholdExceededEvent {
    cpu: number;
    memory: number;
    timestamp: number;
    exceeded: Array<'cpu' | 'memory'>;
    thresholds: { cpu: number; memory: number };
  }

  export interface BackgroundExecutorEvents {
    initialized: [{ maxConcurrentAgents: number; priorityLevels: Record<string, number> }];
    'fire-and-forget-started': [SubmittedEvent];
    'async-callback-started': [SubmittedEvent];
    'watched-started': [SubmittedEvent];
    'execution-queued': [
      {
        executionId: ExecutionId;
        agent: string;
        task: string;
        mode: ExecutionMode;
        priority: string;
        /** 1-based place in start order; 0 when it started at once. */
        queuePosition: number;
        queueLength: number;
      },
    ];
    'execution-started': [
      { executionId: ExecutionId; agent: string; task: string; mode: ExecutionMode; priority: string; attempt: number },
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
    'progress-update': [
      { executionId: ExecutionId; agent: string; progress: number; status: ExecutionStatus; duration: number; detail: unknown },
    ];
    'aggregation-started': [{ aggregationId: string; agents: string[]; task: string; executionIds: ExecutionId[] }];
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

  export class BackgroundExecutor extends EventEmitter {
    constructor(config?: BackgroundExecutorConfig);
    /** The validated configuration, with defaults filled in. */
    readonly config: Readonly<Required<Omit<BackgroundExecutorConfig, 'defaultAgent' | 'defaultTimeoutMs' | 'priorityLevels' | 'agents'>>> & {
      defaultAgent: DefaultAgentFunction | undefined;
      defaultTimeoutMs: number | undefined;
      priorityLevels: ReadonlyMap<string, number>;
      agents: ReadonlyMap<string, AgentFunction>;
    };
    readonly resourceMonitor: ResourceMonitor;

    /** Starts the resource monitor; idempotent; resolves to this executor. */
    initialize(): Promise<this>;

    registerAgent(name: string, agent: AgentFunction): this;
    /** Registers a program as an agent; it resolves with a `CommandResult`. */
    registerCommand(name: string, spec: CommandSpec | CommandSpecFunction): this;
    unregisterAgent(name: string): boolean;
    /** The old extension point; override it to run agents yourself. */
    spawnAgentProcess(execution: {
      id: ExecutionId;
      executionId: ExecutionId;
      agent: string;
      task: string;
      options: any;
      mode: ExecutionMode;
      priority: string;
      context: AgentContext;
      signal: AbortSignal;
    }): unknown;

    fireAndForget(agent: string, task: string, options?: SubmitOptions): Promise<Submitted<'fire-and-forget'>>;
    executeWithCallback<Result = any>(
      agent: string,
      task: string,
      callback?: ExecutionCallback<Result> | null,
      options?: SubmitOptions,
    ): Promise<Submitted<'async-callback'>>;
    executeWatched(agent: string, task: string, options?: SubmitOptions): Promise<Submitted<'watched'>>;
    execute<Result = any>(agent: string, task: string, options?: SubmitOptions): Promise<Result>;
    executeMultiple(agents: string[], task: string, options?: MultipleOptions): Promise<AggregationResult>;
    waitFor(executionId: ExecutionId): Promise<ExecutionStatusResult>;
    /** Resolves once nothing is queued or running. */
    onIdle(): Promise<void>;
    /**
     * Progress reports of one execution, ending with its final status object:
     * `for await (const update of bg.watch(id)) …`. Unknown or expired ids yield `{ found: false }`.
     */
    watch(executionId: ExecutionId): AsyncIterableIterator<WatchUpdate | ExecutionStatusResult>;
    /** Counts, throughput over the last minute, per-agent wait/run percentiles (ms). */
    getStats(): ExecutorStats;

    cancelExecution(executionId: ExecutionId): Promise<CancelResult>;
    setConcurrency(n: number): this;
    pause(): this;
    resume(): this;

    getExecutionStatus(executionId: ExecutionId): ExecutionStatusResult;
    getQueueStatus(): QueueStatus;
    getActiveExecutions(): ActiveExecution[];
    getStatus(): ExecutorStatus;

    shutdown(options?: ShutdownOptions): Promise<void>;

    on<E extends keyof BackgroundExecutorEvents>(event: E, listener: Listener<BackgroundExecutorEvents[E]>): this;
    once<E extends keyof BackgroundExecutorEvents>(event: E, listener: Listener<BackgroundExecutorEvents[E]>): this;
    addListener<E extends keyof BackgroundExecutorEvents>(event: E, listener: Listener<BackgroundExecutorEvents[E]>): this;
    prependListener<E extends keyof BackgroundExecutorEvents>(event: E, listener: Listener<BackgroundExecutorEvents[E]>): this;
    off<E extends keyof BackgroundExecutorEvents>(event: E, listener: Listener<BackgroundExecutorEvents[E]>): this;
    removeListener<E extends keyof BackgroundExecutorEvents>(event: E, listener: Listener<BackgroundExecutorEvents[E]>): this;
    emit<E extends keyof BackgroundExecutorEvents>(event: E, ...args: BackgroundExecutorEvents[E]): boolean;
  }

  export interface ResourceMonitorOptions {
    /** ms between samples (integer >= 1). Default 1000. */
    interval?: number;
    /** Whole-machine CPU busy percent, 0 < x <= 100. Default 80. */
    cpuThreshold?: number;
    /** MB resident in this process and its children. Default 2048. */
    memoryThreshold?: number;
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
declare class BackgroundExecutor extends Types.BackgroundExecutor {
  static readonly default: typeof Types.BackgroundExecutor;
}

declare namespace BackgroundExecutor {
  export import ExecutionId = Types.ExecutionId;
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
  export import QueueStatus = Types.QueueStatus;
  export import CommandSpec = Types.CommandSpec;
  export import CommandSpecFunction = Types.CommandSpecFunction;
  export import CommandResult = Types.CommandResult;
  export import CommandFailedError = Types.CommandFailedError;
  export import CommandSpawnError = Types.CommandSpawnError;
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
