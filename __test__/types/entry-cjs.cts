// The CommonJS entry point as a TypeScript CommonJS consumer sees it. At run time
// `require('bmad-background-executor')` IS the BackgroundExecutor class, with
// `.BackgroundExecutor`, `.ResourceMonitor` and `.default` attached (index.js), so all of
// these forms must type-check. Type-checked only (tsconfig.entry.json).

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

async function main(): Promise<void> {
  await bg.initialize();
  const { executionId } = await bg.fireAndForget('monitor', 'track-metrics');
  const status = await bg.waitFor(executionId);
  if (status.found) console.log(status.status);
  await Promise.all([bg.shutdown(), viaDefault.shutdown(), viaNamed.shutdown(), viaDestructured.shutdown()]);
  monitor.stop();
}

export = main;
