// Draws W1 (µs per execution against N) from the JSON written by `bench.mjs --json` as a
// hand-written SVG line chart: log-scale x (N) and log-scale y (µs/exec: the systems differ
// by more than an order of magnitude). Points are medians, whiskers the min–max of the runs;
// a run aborted by the time budget is drawn hollow at its lower bound, with an arrow.
//
//   node bench/chart.mjs bench/results.json            -> docs/bench-w1.svg
//   node bench/chart.mjs bench/results.json --out other.svg [--semaphore]
// The floor series is drawn whenever the results contain it.

import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);
const opt = (name, fallback) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && i + 1 < args.length ? args[i + 1] : fallback;
};
const input = args.find((a, i) => !a.startsWith('--') && (i === 0 || !['--out'].includes(args[i - 1]))) || path.join(ROOT, 'bench', 'results.json');
const output = path.resolve(opt('out', path.join(ROOT, 'docs', 'bench-w1.svg')));

const data = JSON.parse(readFileSync(input, 'utf8'));
if (!data.w1) {
  console.error(`${input}: no W1 results (run bench.mjs with W1 and --json)`);
  process.exit(1);
}
const sizes = [...data.w1.sizes].sort((a, b) => a - b);

const SERIES = [
  { key: 'this', label: 'bmad-background-executor (5 priorities)', color: '#d6336c', width: 3 },
  { key: 'pqueue', label: 'p-queue (5 priorities)', color: '#1c7ed6', width: 2 },
  { key: 'fastq', label: 'fastq (no priorities)', color: '#2b8a3e', width: 2 },
];
// The floor (promises and 64 agent loops, no scheduler), when the run measured it: what the
// 1.0 µs goal line is up against on this machine.
if (data.w1.systems.floor) SERIES.push({ key: 'floor', label: 'floor: promises only, no scheduler (reference)', color: '#495057', width: 1.5, dash: '2 3' });
if (args.includes('--semaphore')) SERIES.push({ key: 'semaphore', label: 'bare JS semaphore (no priorities)', color: '#868e96', width: 1.5, dash: '4 3' });

// Points per series: { n, y, lo, hi, bound } (bound: aborted run, y is a lower bound).
const series = SERIES.map((s) => {
  const per = data.w1.systems[s.key] || {};
  const points = [];
  for (const n of sizes) {
    const r = per[n];
    if (!r) continue;
    if (!r.skipped && typeof r.usPerExec === 'number') points.push({ n, y: r.usPerExec, lo: r.minUs, hi: r.maxUs, bound: false });
    else if (r.skipped && typeof r.lowerBoundUsPerExec === 'number') points.push({ n, y: r.lowerBoundUsPerExec, bound: true, after: r.abortedAfterS, phase: r.abortedPhase });
  }
  return { ...s, points };
}).filter((s) => s.points.length > 0);

// ----- scales ----------------------------------------------------------------------------

// Each legend line beyond three gets 18 px more at the bottom; the plot keeps its size.
const EXTRA = 18 * Math.max(0, series.length - 3);
const W = 760;
const H = 480 + EXTRA;
const M = { left: 72, right: 24, top: 70, bottom: 150 + EXTRA };
const PW = W - M.left - M.right;
const PH = H - M.top - M.bottom;

const GOAL = 1.0;
const ys = series.flatMap((s) => s.points.flatMap((p) => [p.y, p.lo ?? p.y, p.hi ?? p.y])).concat([GOAL]);
/** The smallest 1-2-5 step value >= v. */
function niceUp(v) {
  const d = 10 ** Math.floor(Math.log10(v));
  return [1, 2, 5, 10].map((m) => m * d).find((x) => x >= v * 0.9999);
}
const yMin = 10 ** Math.floor(Math.log10(Math.min(...ys)));
const yMax = niceUp(Math.max(...ys) * 2.5);
const xMin = 10 ** Math.floor(Math.log10(sizes[0]));
const xMax = 10 ** Math.ceil(Math.log10(sizes[sizes.length - 1]));
const lx = (n) => Math.log10(n);
const X = (n) => M.left + ((lx(n) - lx(xMin)) / (lx(xMax) - lx(xMin) || 1)) * PW;
const Y = (v) => M.top + PH - ((Math.log10(v) - Math.log10(yMin)) / (Math.log10(yMax) - Math.log10(yMin))) * PH;

const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const r2 = (v) => Math.round(v * 10) / 10;
const fmtN = (n) => (n >= 1e6 ? `${n / 1e6}M` : n >= 1e3 ? `${n / 1e3}k` : String(n));
const fmtY = (v) => (v >= 1 ? String(+v.toPrecision(3)) : String(+v.toPrecision(2)));

// ----- drawing ---------------------------------------------------------------------------

const out = [];
out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="system-ui, -apple-system, 'Segoe UI', sans-serif" font-size="12">`);
out.push(`<rect width="${W}" height="${H}" fill="#ffffff"/>`);
const env = data.env || {};
out.push(`<text x="${M.left}" y="26" font-size="16" font-weight="600" fill="#212529">W1 throughput: µs per execution (lower is better)</text>`);
out.push(
  `<text x="${M.left}" y="46" fill="#495057">${esc(
    `median of runs, whiskers min–max; concurrency 64; node ${env.node || '?'}, ${env.cores || '?'} cores; ${(env.date || '').slice(0, 10)}`,
  )}</text>`,
);

// Grid and y ticks (1-2-5 per decade).
for (let d = yMin; d < yMax * 1.0001; d *= 10) {
  for (const m of [1, 2, 5]) {
    const v = d * m;
    if (v < yMin * 0.999 || v > yMax * 1.001) continue;
    const y = r2(Y(v));
    out.push(`<line x1="${M.left}" x2="${M.left + PW}" y1="${y}" y2="${y}" stroke="${m === 1 ? '#ced4da' : '#f1f3f5'}"/>`);
    out.push(`<text x="${M.left - 8}" y="${y + 4}" text-anchor="end" fill="#495057">${fmtY(v)}</text>`);
  }
}
// x ticks: decades (grid) and the measured sizes (labels).
for (let d = xMin; d <= xMax * 1.0001; d *= 10) {
  const x = r2(X(d));
  out.push(`<line x1="${x}" x2="${x}" y1="${M.top}" y2="${M.top + PH}" stroke="#e9ecef"/>`);
  out.push(`<text x="${x}" y="${M.top + PH + 18}" text-anchor="middle" fill="#495057">${fmtN(d)}</text>`);
}
out.push(`<rect x="${M.left}" y="${M.top}" width="${PW}" height="${PH}" fill="none" stroke="#adb5bd"/>`);
out.push(`<text x="${M.left + PW / 2}" y="${M.top + PH + 38}" text-anchor="middle" fill="#212529">N executions (log scale)</text>`);
out.push(`<text transform="translate(18 ${M.top + PH / 2}) rotate(-90)" text-anchor="middle" fill="#212529">µs per execution (log scale)</text>`);

// Goal line.
const gy = r2(Y(GOAL));
out.push(`<line x1="${M.left}" x2="${M.left + PW}" y1="${gy}" y2="${gy}" stroke="#f08c00" stroke-width="1.5" stroke-dasharray="6 4"/>`);
out.push(`<text x="${M.left + PW / 2}" y="${gy + 14}" text-anchor="middle" fill="#e67700">goal ≤ ${GOAL} µs/exec</text>`);

// Series.
const notes = [];
const labels = []; // value labels, placed after all series so they can avoid each other
for (const s of series) {
  const dash = s.dash ? ` stroke-dasharray="${s.dash}"` : '';
  const solid = s.points.filter((p) => !p.bound);
  if (solid.length > 1) {
    out.push(`<polyline fill="none" stroke="${s.color}" stroke-width="${s.width}"${dash} points="${solid.map((p) => `${r2(X(p.n))},${r2(Y(p.y))}`).join(' ')}"/>`);
  }
  for (const p of s.points) {
    const x = r2(X(p.n));
    const y = r2(Y(p.y));
    if (p.bound) {
      const prev = solid.filter((q) => q.n < p.n).pop();
      if (prev) out.push(`<line x1="${r2(X(prev.n))}" y1="${r2(Y(prev.y))}" x2="${x}" y2="${y}" stroke="${s.color}" stroke-width="${s.width}" stroke-dasharray="3 4"/>`);
      out.push(`<circle cx="${x}" cy="${y}" r="5" fill="#fff" stroke="${s.color}" stroke-width="2"/>`);
      out.push(`<path d="M${x} ${y - 8} l0 -16 m-5 5 l5 -5 l5 5" fill="none" stroke="${s.color}" stroke-width="2"/>`);
      out.push(`<text x="${x - 8}" y="${y - 16}" text-anchor="end" fill="${s.color}" stroke="#fff" stroke-width="3" paint-order="stroke">&gt; ${fmtY(p.y)} (aborted)</text>`);
      notes.push(
        `${s.label.split(' (')[0]} at N=${fmtN(p.n)}: one run exceeded the time budget` +
          (p.after !== undefined ? ` (aborted after ${p.after.toFixed(0)} s, ${p.phase} phase)` : '') +
          '; drawn at its lower bound, elapsed / N.',
      );
      continue;
    }
    if (p.lo !== undefined && p.hi !== undefined && p.hi > p.lo) {
      out.push(`<line x1="${x}" x2="${x}" y1="${r2(Y(p.hi))}" y2="${r2(Y(p.lo))}" stroke="${s.color}" stroke-width="1"/>`);
    }
    out.push(`<circle cx="${x}" cy="${y}" r="4" fill="${s.color}"/>`);
    labels.push({ n: p.n, x, y, text: fmtY(p.y), color: s.color });
  }
}

// Value labels: per N, stacked so that none overlaps; at the right edge they go to the left.
for (const n of sizes) {
  const at = labels.filter((l) => l.n === n).sort((a, b) => a.y - b.y);
  let prev = -Infinity;
  for (const l of at) {
    l.ty = l.y - 7 >= prev + 13 ? l.y - 7 : Math.max(l.y + 16, prev + 13); // above its point, else below
    prev = l.ty;
  }
  for (const l of at) {
    const right = l.x > M.left + PW - 40;
    out.push(`<text x="${right ? l.x - 8 : l.x + 8}" y="${r2(l.ty)}" text-anchor="${right ? 'end' : 'start'}" fill="${l.color}" font-size="11" stroke="#fff" stroke-width="3" paint-order="stroke">${l.text}</text>`);
  }
}

// Legend and notes.
let ly = M.top + PH + 62;
for (const s of series) {
  const dash = s.dash ? ` stroke-dasharray="${s.dash}"` : '';
  out.push(`<line x1="${M.left}" x2="${M.left + 28}" y1="${ly - 4}" y2="${ly - 4}" stroke="${s.color}" stroke-width="${s.width}"${dash}/>`);
  out.push(`<circle cx="${M.left + 14}" cy="${ly - 4}" r="3.5" fill="${s.color}"/>`);
  out.push(`<text x="${M.left + 36}" y="${ly}" fill="#212529">${esc(s.label)}</text>`);
  ly += 18;
}
/** Splits text into lines of at most `width` characters, at spaces. */
function wrap(text, width) {
  const lines = [];
  let line = '';
  for (const word of text.split(' ')) {
    if (line && line.length + 1 + word.length > width) {
      lines.push(line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  if (line) lines.push(line);
  return lines;
}
for (const n of notes) {
  for (const line of wrap(n, 110)) {
    out.push(`<text x="${M.left}" y="${ly}" fill="#495057" font-size="11">${esc(line)}</text>`);
    ly += 14;
  }
}
out.push('</svg>');

mkdirSync(path.dirname(output), { recursive: true });
writeFileSync(output, `${out.join('\n')}\n`);
console.log(`wrote ${path.relative(process.cwd(), output) || output} (${series.map((s) => `${s.key}: ${s.points.length} points`).join(', ')})`);
