'use strict';

// Platform names as napi-rs spells them (`linux-x64-gnu`, `darwin-arm64`, `win32-x64-msvc`):
// of a Rust target triple, and of this process.

/** The napi platform name (`linux-x64-gnu`, `darwin-arm64`, `win32-x64-msvc`) of a Rust target triple. */
function platformOfTriple(triple) {
  const [cpu, , sys, abi] = triple.split('-');
  const arch = { x86_64: 'x64', aarch64: 'arm64', i686: 'ia32', armv7: 'arm' }[cpu] || cpu;
  if (sys === 'darwin') return `darwin-${arch}`;
  if (sys === 'windows') return `win32-${arch}-${abi}`;
  return `${sys}-${arch}${abi ? `-${abi}` : ''}`;
}

/** The C library of this Linux process: `glibc 2.36`, `musl`, or undefined elsewhere. */
function libcOfThisProcess() {
  if (process.platform !== 'linux') return undefined;
  try {
    const header = /** @type {any} */ (process.report.getReport()).header;
    if (header.glibcVersionRuntime) return `glibc ${header.glibcVersionRuntime}`;
  } catch {
    // no report: fall through
  }
  return 'musl';
}

/** The napi platform name this process needs, e.g. `linux-x64-gnu`. */
function platformOfThisProcess(libc) {
  const name = `${process.platform}-${process.arch}`;
  if (process.platform === 'linux') return `${name}-${libc && libc.startsWith('glibc') ? 'gnu' : 'musl'}`;
  if (process.platform === 'win32') return `${name}-msvc`;
  return name;
}

module.exports = { platformOfTriple, libcOfThisProcess, platformOfThisProcess };
