// Type definitions for the ES module entry point (index.mjs): the declarations live in
// index.d.ts (the CommonJS view); this file only re-exports them the way index.mjs does.
//   import BackgroundExecutor, { BackgroundExecutor, ResourceMonitor } from 'bmad-background-executor'

import Executor from './index.js';

export type ExecutionId = Executor.ExecutionId;
export type DefaultPriorityLevel = Executor.DefaultPriorityLevel;
export type ExecutionMode = Executor.ExecutionMode;
export type ExecutionStatus = Executor.ExecutionStatus;
export type ErrorCode = Executor.ErrorCode;
export type ExecutorError = Executor.ExecutorError;
export type AgentContext<Options = any, Level extends string = string> = Executor.AgentContext<Options, Level>;
export type AgentFunction<Result = unknown, Options = any, Level extends string = string> = Executor.AgentFunction<Result, Options, Level>;
export type DefaultAgentFunction<Result = unknown, Options = any, Level extends string = string> = Executor.DefaultAgentFunction<Result, Options, Level>;
export type BackgroundExecutorConfig<Level extends string = DefaultPriorityLevel> = Executor.BackgroundExecutorConfig<Level>;
export type SubmitOptions<Level extends string = DefaultPriorityLevel> = Executor.SubmitOptions<Level>;
export type ProgressReport = Executor.ProgressReport;
export type Submitted<M extends ExecutionMode> = Executor.Submitted<M>;
export type ExecutionCallback<Result = unknown> = Executor.ExecutionCallback<Result>;
export type ExecutionStatusResult<Result = unknown, Level extends string = DefaultPriorityLevel> = Executor.ExecutionStatusResult<Result, Level>;
export type FinalExecutionStatus<Result = unknown, Level extends string = DefaultPriorityLevel> = Executor.FinalExecutionStatus<Result, Level>;
export type QueueStatus<Level extends string = DefaultPriorityLevel> = Executor.QueueStatus<Level>;
export type RateLimit = Executor.RateLimit;
export type AgentLimits = Executor.AgentLimits;
export type AgentLimitsStatus = Executor.AgentLimitsStatus;
export type CommandSpec = Executor.CommandSpec;
export type CommandSpecFunction<Options = any> = Executor.CommandSpecFunction<Options>;
export type CommandResult = Executor.CommandResult;
export type CommandFailedError = Executor.CommandFailedError;
export type CommandSpawnError = Executor.CommandSpawnError;
export type CommandSpecError = Executor.CommandSpecError;
export type StoreSettings = Executor.StoreSettings;
export type ActiveExecution<Level extends string = DefaultPriorityLevel> = Executor.ActiveExecution<Level>;
export type ResourceStatus = Executor.ResourceStatus;
export type WatchUpdate = Executor.WatchUpdate;
export type Percentiles = Executor.Percentiles;
export type ExecutorStats = Executor.ExecutorStats;
export type ExecutorStatus = Executor.ExecutorStatus;
export type CancelResult = Executor.CancelResult;
export type AggregatedResult = Executor.AggregatedResult;
export type Consistency = Executor.Consistency;
export type AggregationReport = Executor.AggregationReport;
export type MultipleOptions<Level extends string = DefaultPriorityLevel> = Executor.MultipleOptions<Level>;
export type MultipleItem<Level extends string = DefaultPriorityLevel> = Executor.MultipleItem<Level>;
export type MultipleItemOptions<Level extends string = DefaultPriorityLevel> = Executor.MultipleItemOptions<Level>;
export type ConsistencyVerdict = Executor.ConsistencyVerdict;
export type AggregationResult = Executor.AggregationResult;
export type ShutdownOptions = Executor.ShutdownOptions;
export type ExecutionEndedEvent = Executor.ExecutionEndedEvent;
export type SubmittedEvent<Level extends string = DefaultPriorityLevel> = Executor.SubmittedEvent<Level>;
export type ThresholdExceededEvent = Executor.ThresholdExceededEvent;
export type BackgroundExecutorEvents<Level extends string = DefaultPriorityLevel> = Executor.BackgroundExecutorEvents<Level>;
export type ResourceMonitorOptions = Executor.ResourceMonitorOptions;
export type ResourceTrends = Executor.ResourceTrends;
export type ResourceMonitorEvents = Executor.ResourceMonitorEvents;

export declare const BackgroundExecutor: typeof Executor.BackgroundExecutor;
export type BackgroundExecutor<Level extends string = DefaultPriorityLevel> = Executor.BackgroundExecutor<Level>;
export declare const ResourceMonitor: typeof Executor.ResourceMonitor;
export type ResourceMonitor = Executor.ResourceMonitor;
export default BackgroundExecutor;
