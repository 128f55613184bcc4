// Negative checks: every line after a `// @ts-expect-error` directive is a mistake the typings
// must catch. If a typing is loosened (to `any`, or to a plain string event name...), the error
// disappears and tsc reports "Unused '@ts-expect-error' directive" (TS2578), failing the check.
//
// Compiled by tsconfig.negative.json (--strict without noImplicitAny: see there why).
// Each directive names the TypeScript error code(s) the line must produce; ../types.test.mjs
// compiles this file with the directives removed and checks that every such line fails with one
// of the named codes, and that no other line fails. Keep each mistake on ONE line.

import { BackgroundExecutor, ResourceMonitor } from 'bmad-background-executor';
import type { CommandResult, ExecutionStatusResult, SubmitOptions } from 'bmad-background-executor';

declare const bg: BackgroundExecutor;
declare const monitor: ResourceMonitor;
declare const id: string;
declare const defaultOptions: SubmitOptions;
declare const commandStatus: ExecutionStatusResult<CommandResult>;
const custom = new BackgroundExecutor({ priorityLevels: { urgent: 2, later: 1 } });

export async function mistakes(): Promise<void> {
  // ----- command agents ---------------------------------------------------------------------

  // @ts-expect-error TS2322 args must be strings
  bg.registerCommand('c', { command: 'ls', args: [1] });

  // @ts-expect-error TS2345 a spec needs a command
  bg.registerCommand('c', { args: ['-l'] });

  // @ts-expect-error TS2322 progressPattern is a RegExp or 'json-lines'
  bg.registerCommand('c', { command: 'ls', progressPattern: '(\\d+)%' });

  // @ts-expect-error TS2322 killSignal must be a signal name or number
  bg.registerCommand('c', { command: 'ls', killSignal: 'SIGNOPE' });

  // @ts-expect-error TS2322 command-output lines come from 'stdout' or 'stderr' only
  bg.on('command-output', (d) => { const s: 'stdout' = d.stream; });

  // ----- events -----------------------------------------------------------------------------

  // @ts-expect-error TS2345 misspelled event name
  bg.on('execution-complete', () => {});

  // @ts-expect-error TS2345 misspelled event name with once()
  bg.once('progress-updated', () => {});

  // @ts-expect-error TS2551 wrong payload field (execution-completed has `result`)
  bg.on('execution-completed', (d) => d.resullt);

  // @ts-expect-error TS2339 progress-update has `progress`, not `percent`
  bg.on('progress-update', (d) => d.percent);

  // @ts-expect-error TS2322 execution-failed `error` is a string, not an Error
  bg.on('execution-failed', (d) => { const e: Error = d.error; return e; });

  // @ts-expect-error TS2345 a listener expecting a different payload type
  bg.on('idle', (d: { timestamp: string }) => d);

  // @ts-expect-error TS2345 TS2741 emit() with a payload missing its fields
  bg.emit('idle', {});

  // @ts-expect-error TS2345 misspelled ResourceMonitor event name
  monitor.on('threshold-exceed', () => {});

  // @ts-expect-error TS2339 threshold-exceeded has `exceeded`, not `reason`
  monitor.on('threshold-exceeded', (d) => d.reason);

  // ----- configuration ------------------------------------------------------------------------

  // @ts-expect-error TS2322 wrong config type: maxConcurrentAgents is a number
  new BackgroundExecutor({ maxConcurrentAgents: '5' });

  // @ts-expect-error TS2322 throttleIfExceeded is a boolean
  new BackgroundExecutor({ throttleIfExceeded: 'yes' });

  // @ts-expect-error TS2353 TS2561 unknown (misspelled) config key
  new BackgroundExecutor({ maxConcurentAgents: 5 });

  // @ts-expect-error TS2322 priority levels map to numbers
  new BackgroundExecutor({ priorityLevels: { urgent: 'top' } });

  // @ts-expect-error TS2322 an agent is a function
  new BackgroundExecutor({ agents: { qa: 'qa.js' } });

  // @ts-expect-error TS2353 TS2561 unknown ResourceMonitor option
  new ResourceMonitor({ intervalMs: 500 });

  // ----- submissions ----------------------------------------------------------------------------

  // @ts-expect-error TS2322 unknown priority type: a level is named by a string
  await bg.fireAndForget('monitor', 'track-metrics', { priority: 5 });

  // @ts-expect-error TS2322 timeout is a number of ms
  await bg.executeWatched('qa', 'suite', { timeout: '5s' });

  // @ts-expect-error TS2740 TS2739 TS2322 signal must be an AbortSignal
  await bg.execute('qa', 'suite', { signal: new AbortController() });

  // @ts-expect-error TS2345 the agent name is a string
  await bg.fireAndForget(42, 'task');

  // @ts-expect-error TS2554 the task is required
  await bg.execute('qa');

  // @ts-expect-error TS2345 wrong callback arity: a callback takes (err, result)
  await bg.executeWithCallback('eval', 'generate-tests', (err: unknown, result: unknown, extra: string) => [err, result, extra]);

  // @ts-expect-error TS2345 wrong callback type: not a function
  await bg.executeWithCallback('eval', 'generate-tests', 'done');

  // @ts-expect-error TS2345 the callback's err is unknown, not necessarily an Error
  await bg.executeWithCallback('eval', 'generate-tests', (err: Error) => err.message);

  // @ts-expect-error TS2769 executeMultiple takes an array of agent names or of items
  await bg.executeMultiple('oracle', 'validate-prd');

  // @ts-expect-error TS2322 consistencyCheck returns a boolean or { consistent, reason }
  await bg.executeMultiple(['oracle'], 'validate-prd', { consistencyCheck: () => 'yes' });

  // @ts-expect-error TS2322 executeMultiple takes no key: each of its executions runs
  await bg.executeMultiple(['oracle'], 'validate-prd', { key: 'prd' });

  // @ts-expect-error TS2322 nor does one of its items
  await bg.executeMultiple([{ agent: 'oracle', task: 'validate-prd', options: { key: 'prd' } }]);

  // @ts-expect-error TS2345 registerAgent takes a function
  bg.registerAgent('qa', 42);

  // @ts-expect-error TS2551 the context has `progress`, not `progres`
  bg.registerAgent('qa', (_task, _options, context) => context.progres(50));

  // ----- priority levels ---------------------------------------------------------------------------

  // @ts-expect-error TS2322 the default levels have no 'urgent'
  await bg.fireAndForget('monitor', 'x', { priority: 'urgent' });

  // @ts-expect-error TS2322 custom levels replace the defaults: 'high' is not one of them
  await custom.execute('qa', 'suite', { priority: 'high' });

  // @ts-expect-error TS2322 executeWithCallback options name the configured levels
  await custom.executeWithCallback('qa', 'suite', null, { priority: 'critical' });

  // @ts-expect-error TS2322 executeMultiple options name the configured levels
  await custom.executeMultiple(['qa'], 'suite', { priority: 'low' });

  // @ts-expect-error TS2345 options typed for the default levels do not fit custom levels
  await custom.executeWatched('qa', 'suite', defaultOptions);

  // @ts-expect-error TS2367 status objects report the configured level names
  { const s = custom.getExecutionStatus(id); if (s.found && s.priority === 'high') return; }

  // @ts-expect-error TS2367 queue entries report the configured level names
  if (custom.getQueueStatus().queue[0]?.priority === 'medium') return;

  // @ts-expect-error TS2322 events report the configured level names
  custom.on('execution-started', (d) => { const p: 'high' = d.priority; });

  // @ts-expect-error TS2322 an inline agent's context reports the configured level names
  custom.registerAgent('qa', (_task, _options, context) => { const p: 'high' = context.priority; });

  // @ts-expect-error TS2820 TS2322 a misspelled level name
  await custom.fireAndForget('monitor', 'x', { priority: 'urgnt' });

  // ----- status objects ------------------------------------------------------------------------------

  // @ts-expect-error TS2339 waitFor() may resolve { found: false }: narrow on `found` before reading `status`
  if ((await bg.waitFor(id)).status === 'completed') return;

  // @ts-expect-error TS18046 a result is unknown unless its type is given: waitFor<CommandResult>(id)
  { const s = await bg.waitFor(id); if (s.found && s.status === 'completed') s.result.stdout; }

  // @ts-expect-error TS18047 a result is null until the execution has completed
  if (commandStatus.found) commandStatus.result.stdout;

  // @ts-expect-error TS2551 a typed result has its own fields only (`stdout`)
  if (commandStatus.found && commandStatus.status === 'completed') commandStatus.result.stdot;

  // @ts-expect-error TS2322 a failed execution's error is a string
  { const s = await bg.waitFor(id); if (s.found && s.status === 'failed') { const e: null = s.error; } }

  // @ts-expect-error TS2322 a completed execution has no error
  if (commandStatus.found && commandStatus.status === 'completed') { const e: string = commandStatus.error; }

  // @ts-expect-error TS2367 waitFor() resolves once the execution has ended: never 'running'
  { const s = await bg.waitFor(id); if (s.found && s.status === 'running') return; }

  // ----- control and queries ---------------------------------------------------------------------

  // @ts-expect-error TS2345 setConcurrency takes a number
  bg.setConcurrency('3');

  // @ts-expect-error TS2353 an agent's limits are concurrency and rateLimit only
  bg.setAgentLimits('qa', { maxConcurrent: 2 });

  // @ts-expect-error TS2322 a rate limit's max is a number
  bg.setRateLimit({ max: '5', intervalMs: 1000 });

  // @ts-expect-error TS2322 shutdown mode is 'cancel' or 'drain'
  await bg.shutdown({ mode: 'force' });

  // @ts-expect-error TS2339 the status must be narrowed on `found` before reading fields
  bg.getExecutionStatus(id).progress;

  // @ts-expect-error TS2367 'done' is not a status
  if (bg.getQueueStatus().queue[0]?.mode === 'done') return;

  // @ts-expect-error TS2339 cancel result must be narrowed on `success`
  (await bg.cancelExecution(id)).previousStatus;

  // @ts-expect-error TS2339 getStats() counts have no `pending`
  bg.getStats().counts.pending;

  // @ts-expect-error TS2551 TS2339 resources use `free_memory`, not `freeMemory`
  bg.resourceMonitor.getStatus().freeMemory;

  // @ts-expect-error TS2322 onIdle() resolves to nothing
  const idle: number = await bg.onIdle();

  // @ts-expect-error TS2322 the id given back is a string
  const n: number = (await bg.fireAndForget('monitor', 'x')).executionId;

  use(idle, n);
}

function use(..._values: unknown[]): void {}
