// ES module entry point: `import BackgroundExecutor, { BackgroundExecutor, ResourceMonitor }`.
import cjs from './index.js';

export const BackgroundExecutor = cjs.BackgroundExecutor;
export const ResourceMonitor = cjs.ResourceMonitor;
export default cjs.BackgroundExecutor;
