// The CommonJS entry point as a TypeScript CommonJS consumer sees it. At run time
// `require('bmad-background-executor')` IS the BackgroundExecutor class, with
// `.BackgroundExecutor`, `.ResourceMonitor` and `.default` attached (index.js), so all of
// these forms must type-check. Type-checked only (tsconfig.json).

import BackgroundExecutor = require('bmad-background-executor');
import { BackgroundExecutor as Named, ResourceMonitor } from 'bmad-background-executor';

// The module itself is the class: `new (require('bmad-background-executor'))()`.
const bg = new BackgroundExecutor({ maxConcurrentAgents: 2 });
// ...with the named exports and `default` attached to it.
const { BackgroundExecutor: Destructured, ResourceMonitor: DestructuredMonitor } = BackgroundExecutor;
const viaDefault = new BackgroundExecutor.default();
const viaNamed: Named = new Named();
const viaDestructured = new Destructured();
const monitor: ResourceMonitor = new DestructuredMonitor({ interval: 500 });
// Level names inferred from priorityLevels, through `require()` and its `.default`.
type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
type PriorityOf<E extends { fireAndForget(a: string, t: string, o?: any): unknown }> = NonNullable<Parameters<E['fireAndForget']>[2]>['priority'];
const custom = new BackgroundExecutor({ priorityLevels: { urgent: 2, later: 1 } });
const customDefault = new BackgroundExecutor.default({ priorityLevels: { now: 1 } });
const customNamed: Named<'urgent' | 'later'> = custom;
const levelsTyped: [Equal<PriorityOf<typeof custom>, 'urgent' | 'later' | undefined>, Equal<PriorityOf<typeof customDefault>, 'now' | undefined>] = [true, true];
const defaultLevels: Equal<PriorityOf<typeof bg>, BackgroundExecutor.DefaultPriorityLevel | undefined> = true;

async function main(): Promise<void> {
  await bg.initialize();
  const { executionId } = await bg.fireAndForget('monitor', 'track-metrics');
  const status = await bg.waitFor(executionId);
  if (status.found) console.log(status.status);
  await custom.execute('monitor', 'track-metrics', { priority: 'later' });
  console.log(customNamed, levelsTyped, defaultLevels);
  await Promise.all([bg.shutdown(), viaDefault.shutdown(), viaNamed.shutdown(), viaDestructured.shutdown(), custom.shutdown(), customDefault.shutdown()]);
  monitor.stop();
}

export = main;
