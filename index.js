'use strict';

// CommonJS entry point. `require('bmad-background-executor')` gives the BackgroundExecutor
// class itself (so `new (require(...))()` works) with every named export attached.

const { BackgroundExecutor } = require('./lib/executor.js');
const { ResourceMonitor } = require('./lib/monitor.js');

module.exports = BackgroundExecutor;
module.exports.BackgroundExecutor = BackgroundExecutor;
module.exports.ResourceMonitor = ResourceMonitor;
module.exports.default = BackgroundExecutor;
