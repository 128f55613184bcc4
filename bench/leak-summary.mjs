// Groups the leak records of a LeakSanitizer or valgrind (memcheck) report by who owns them,
// so the addon's own leaks stand out from Node/V8 noise. See docs/memory-safety.md.
//
// Usage
//   c++filt < asan.12345 | node bench/leak-summary.mjs            (LSan log; c++filt demangles Rust v0)
//   node bench/leak-summary.mjs valgrind.log [more logs...]       (valgrind already demangles)
//
// Each record goes to exactly one group:
//   OURS      allocated by Rust code, with a bmad_background_executor frame on the stack
//   ONE-TIME  a known once-per-process (or once-per-module-load) allocation: the shared tokio
//             runtime (runtime::handle's OnceLock), tracing's subscriber, napi-rs registering
//             the classes at module load, the Rust test harness
//   NAPI      allocated by Rust code with no frame of ours (napi-rs internals)
//   NODE      allocated by node / V8 / OpenSSL / libuv themselves (even when one of our calls is
//             further down the stack, e.g. V8 growing its heap while we build a JS object)
// Exit code: 1 if any OURS record is "definitely lost" (valgrind) or Direct (LSan), else 0.

import { readFileSync } from 'node:fs';

const inputs = process.argv.slice(2);
const text = inputs.length > 0 ? inputs.map((f) => readFileSync(f, 'utf8')).join('\n') : readFileSync(0, 'utf8');

const ONE_TIME = [
  [/bmad_background_executor(\[[0-9a-f]+\])?::runtime::handle\b/, 'shared tokio runtime (OnceLock in runtime::handle)'],
  [/init_tracing|tracing_subscriber|tracing_core::callsite/, 'tracing subscriber (once)'],
  [/napi_register_module_v1|module_register::register_classes/, 'napi-rs class registration at module load'],
  [/\btest::run_test|\btest::test_main|test::console::run_tests_console|bmad_background_executor::main\b/, 'Rust test harness'],
  [/__cxa_thread_atexit_impl|thread_local::|std::thread::current/, 'std thread-locals / thread handles'],
];

/** Splits a report into records: { kind, bytes, blocks, frames }. */
function records(src) {
  const out = [];
  // LeakSanitizer: "Direct leak of 24 byte(s) in 1 object(s) allocated from:" + "#N 0x.. in FRAME".
  const lsan = /^(Direct|Indirect) leak of (\d+) byte\(s\) in (\d+) object\(s\) allocated from:\n((?:\s+#\d+ .*\n?)+)/gm;
  for (const m of src.matchAll(lsan)) {
    const frames = [...m[4].matchAll(/#\d+ 0x[0-9a-f]+ (?:in )?(.*)/g)].map((f) => f[1]).filter((f) => !/libsanitizer|__interceptor_|asan_/.test(f));
    out.push({ kind: m[1] === 'Direct' ? 'direct' : 'indirect', bytes: +m[2], blocks: +m[3], frames });
  }
  // valgrind: "==PID== 24 bytes in 1 blocks are definitely lost in loss record 3 of 9" + "at/by 0x..: FRAME".
  const vg = /^==\d+== ([\d,]+)(?: \(([\d,]+) direct, [\d,]+ indirect\))? bytes in ([\d,]+) blocks are (definitely lost|indirectly lost|possibly lost|still reachable) in loss record[^\n]*\n((?:==\d+==\s+(?:at|by) .*\n?)+)/gm;
  for (const m of src.matchAll(vg)) {
    const frames = [...m[5].matchAll(/(?:at|by) 0x[0-9A-F]+: (.*)/g)].map((f) => f[1]).filter((f) => !/vgpreload_memcheck/.test(f));
    const kind = { 'definitely lost': 'direct', 'indirectly lost': 'indirect', 'possibly lost': 'possibly', 'still reachable': 'reachable' }[m[4]];
    out.push({ kind, bytes: Number(m[1].replaceAll(',', '')), blocks: Number(m[3].replaceAll(',', '')), frames });
  }
  return out;
}

const clean = (f) => f.replace(/\[[0-9a-f]{16}\]/g, '').replace(/\s+\/(?:rustc|root\/\.cargo)\/\S+$/, '');
const RUST_ALLOC = /^(?:alloc|alloc_impl|allocate|__rust_|<?alloc::|std::|core::|<std::|<core::|hashbrown|box_new|with_capacity|grow_|finish_grow|try_allocate_in|new<|__rdl_)/;

function classify(rec) {
  const all = rec.frames.join('\n');
  for (const [re, label] of ONE_TIME) if (re.test(all)) return `ONE-TIME  ${label}`;
  const first = rec.frames[0] || '?';
  const inNode = /\(\/usr\/bin\/node|\(in \/usr\/bin\/node\)|libc\.so|libstdc\+\+|\/usr\/bin\/node\+/.test(first);
  const ours = rec.frames.find((f) => /\bbmad_background_executor(\[[0-9a-f]+\])?::/.test(f));
  if (inNode) {
    const fn = clean(first).replace(/\s*\(.*$/, '').slice(0, 110);
    return `NODE      ${fn}${ours ? `   [under ${clean(ours).replace(/\s*\(.*$/, '').slice(-80)}]` : ''}`;
  }
  if (ours) return `OURS      ${clean(ours).slice(0, 200)}`;
  const napi = rec.frames.find((f) => /\bnapi(\[[0-9a-f]+\])?::/.test(f) && !RUST_ALLOC.test(f));
  if (napi === undefined && rec.frames.every((f) => /^\s*(\?|\(.*\))?\s*$/.test(f) || / \(\/.*\.node\+0x/.test(f))) {
    return `UNKNOWN   no symbols (a stripped binary, e.g. a release .node): ${clean(first).slice(0, 100)}`;
  }
  return `NAPI      ${clean(napi || first).slice(0, 160)}`;
}

const groups = new Map();
for (const rec of records(text)) {
  const key = classify(rec);
  let g = groups.get(key);
  if (g === undefined) groups.set(key, (g = { direct: [0, 0], indirect: [0, 0], possibly: [0, 0], reachable: [0, 0] }));
  g[rec.kind][0] += rec.bytes;
  g[rec.kind][1] += rec.blocks;
}

const total = (g) => g.direct[0] + g.indirect[0] + g.possibly[0] + g.reachable[0];
const cell = ([b, n]) => (b === 0 ? '-' : `${b} B/${n}`).padStart(12);
console.log(`${'direct'.padStart(12)} ${'indirect'.padStart(12)} ${'possibly'.padStart(12)} ${'reachable'.padStart(12)}  owner`);
let real = 0;
for (const [key, g] of [...groups].sort((a, b) => total(b[1]) - total(a[1]))) {
  console.log(`${cell(g.direct)} ${cell(g.indirect)} ${cell(g.possibly)} ${cell(g.reachable)}  ${key}`);
  if (key.startsWith('OURS') && g.direct[0] > 0) real++;
}
if (groups.size === 0) console.log('(no leak records found)');
console.log(real > 0 ? `\n${real} group(s) of the addon's own code leaked (direct / definitely lost): see above` : "\nnothing of the addon's own code leaked");
process.exitCode = real > 0 ? 1 : 0;
