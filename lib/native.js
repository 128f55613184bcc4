'use strict';

// The native core (the loader `npm run build` writes as binding.js) and the one way this
// package hands it a callback.

const { existsSync } = require('node:fs');
const path = require('node:path');

const { platformOfTriple, libcOfThisProcess, platformOfThisProcess } = require('./platform.js');

const pkg = require(path.join(__dirname, '..', 'package.json'));

/** The first line of each message in an error's `cause` chain, in the order they were thrown. */
function causeMessages(err) {
  const out = [];
  for (let e = err, depth = 0; e && depth < 20; e = e.cause, depth++) {
    out.unshift(e && typeof e.message === 'string' ? e.message.split('\n')[0] : String(e));
  }
  return out;
}

/** The error thrown when no native binary loads: what was found, what exists, what to do. */
function noBindingError(cause) {
  const libc = libcOfThisProcess();
  const platform = platformOfThisProcess(libc);
  const published = ((pkg.napi && pkg.napi.targets) || []).map(platformOfTriple);
  const platformPkg = `${pkg.name}-${platform}@${pkg.version}`;
  const found = `${process.platform} ${process.arch}${libc ? ` (${libc})` : ''}, Node.js ${process.version}`;
  const repo = ((pkg.repository && pkg.repository.url) || '').replace(/^git\+/, '').replace(/\.git$/, '');
  const fromSource = `build the addon from source ("Building from source" in docs/contributing.md${repo ? ` of ${repo}` : ''}) and set NAPI_RS_NATIVE_LIBRARY_PATH to the built .node file.`;
  const lines = [`${pkg.name}: no native binary loaded on ${found}.`];
  if (published.includes(platform)) {
    lines.push(
      `The binary for ${platform} is in the optional dependency ${platformPkg}, which did not load. To fix:`,
      '- install optional dependencies: run `npm install` on this machine without --omit=optional or --no-optional',
      `  (a node_modules copied from another OS or CPU lacks it), or add it explicitly: \`npm install ${platformPkg}\`;`,
      `- or ${fromSource}`,
    );
  } else {
    lines.push(`No prebuilt binary is published for ${platform}. To use it here, ${fromSource}`);
  }
  if (existsSync(path.join(__dirname, '..', 'Cargo.toml'))) {
    lines.push('This is a source checkout: `npm run build` builds the binary for this machine.');
  }
  lines.push(`Published platforms: ${published.join(', ')}.`);
  const attempts = causeMessages(cause).filter((m) => !/^Cannot find native binding|wasi/.test(m));
  if (attempts.length > 0) lines.push('Load attempts:', ...attempts.map((m) => `- ${m}`));
  return Object.assign(new Error(lines.join('\n')), { code: 'ERR_NATIVE_BINDING_NOT_FOUND', platform, published, cause });
}

let binding;
try {
  binding = require('../binding.js');
} catch (err) {
  throw noBindingError(err);
}

/**
 * A callback for the native side that calls `target[method](arg)` through a WeakRef. A native
 * threadsafe function holds its JS function strongly; going through a WeakRef lets an object
 * nobody references any more be collected, and its native half dropped with it.
 */
function weakCallback(target, method) {
  const weak = new WeakRef(target);
  return (arg) => {
    const t = weak.deref();
    if (t !== undefined) t[method](arg);
  };
}

module.exports = { binding, weakCallback };
