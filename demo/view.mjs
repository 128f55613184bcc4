// The demo's terminal output.
//
// On a TTY (process.stdout.isTTY): one live progress bar per tracked execution (cli-progress
// MultiBar), log lines scrolling above the bars (MultiBar#log), and summary tables
// (cli-table3) once the bars are stopped. Anywhere else (piped, redirected, CI, tests): plain
// log lines only, exactly as before; bar calls do nothing.
//
// `createView({ stream })` returns:
//   tty                       true when bars and tables are drawn
//   log(text)                 one log line (may contain '\n'), above the bars when they are live
//   track(id, info)           creates the bar of execution `id` if it has none (TTY only);
//                             info: { id, agent, task, status, progress, detail, since, duration }
//   update(id, patch)         updates a tracked execution's bar (same fields as info)
//   stop()                    final redraw, stops the bars, restores the cursor; idempotent
//   table(head, rows, opts)   prints a cli-table3 table (TTY only; returns false otherwise)
//   paint(status, text)       colours text by execution status (TTY with colours only)

import cliProgress from 'cli-progress';
import Table from 'cli-table3';

const ESC = '\x1b[';
const STATUS_COLOR = { queued: '90', running: '36', completed: '32', failed: '31', cancelled: '33' };
/** Escape bytes the colour of a bar line's status adds (ESC[3Xm and ESC[0m). */
const COLOR_OVERHEAD = 9;

const BOX_CHARS = ['top', 'top-mid', 'top-left', 'top-right', 'bottom', 'bottom-mid', 'bottom-left', 'bottom-right', 'left', 'left-mid', 'mid', 'mid-mid', 'right', 'right-mid', 'middle'];

const truncate = (s, n) => (s.length <= n ? s : n <= 1 ? s.slice(0, n) : `${s.slice(0, n - 1)}…`);
const seconds = (ms) => `${(ms / 1000).toFixed(1)}s`;

export function createView({ stream = process.stdout } = {}) {
  const tty = stream.isTTY === true;
  const color = tty && !('NO_COLOR' in process.env) && process.env.TERM !== 'dumb';
  const paint = (status, text) => (color && STATUS_COLOR[status] ? `${ESC}${STATUS_COLOR[status]}m${text}${ESC}0m` : text);

  if (!tty) {
    return {
      tty,
      log: (text) => stream.write(`${text}\n`),
      track() {},
      update() {},
      stop() {},
      table: () => false,
      paint,
    };
  }

  /**
   * One bar line. cli-progress cuts a line at the terminal's width counting raw bytes, colour
   * escapes included, so the visible text is kept under the width minus the escapes' bytes.
   */
  function format(_options, params, p) {
    const width = params.maxWidth - 1;
    const budget = width - (color ? COLOR_OVERHEAD : 0);
    const pct = Math.round(params.value);
    const elapsed = p.duration ?? performance.now() - p.since;
    const head = `${p.id.padEnd(6)} ${truncate(p.agent, 9).padEnd(9)} ${truncate(p.task, 14).padEnd(14)} `;
    const tail = ` ${String(pct).padStart(3)}% ${p.status.padEnd(9)} ${seconds(elapsed).padStart(6)}`;
    // Bar: 10 to 24 cells, leaving ~24 for the detail; narrower only if the terminal is.
    let size = Math.max(10, Math.min(24, budget - head.length - tail.length - 24));
    if (head.length + size + tail.length > budget) size = Math.max(4, budget - head.length - tail.length);
    const filled = Math.round((size * Math.min(100, Math.max(0, params.value))) / 100);
    const room = budget - head.length - size - tail.length - 2;
    const detail = p.detail !== undefined && p.detail !== null && room > 4 ? `  ${truncate(String(p.detail), room)}` : '';
    const bar = '█'.repeat(filled) + '░'.repeat(size - filled);
    const line = `${head}${bar}${tail.replace(p.status, paint(p.status, p.status))}${detail}`;
    // Too narrow even for that: plain text, cut to the width (never a colour escape cut in two).
    return line.length <= params.maxWidth ? line : `${head}${bar}${tail}`.slice(0, width);
  }

  const multibar = new cliProgress.MultiBar({
    stream,
    format,
    fps: 10,
    hideCursor: true,
    // Long log lines must wrap; bar lines are kept within the width by `format`.
    linewrap: true,
    // Bars below a flushed log line move down: redraw every bar on every frame, not only
    // the ones whose text changed (cli-progress skips unchanged lines).
    forceRedraw: true,
    clearOnComplete: false,
    stopOnComplete: false,
    gracefulExit: false,
  });
  const bars = new Map(); // id -> { bar, info }
  const maxBars = () => Math.max(3, (stream.rows || 24) - 6);
  let stopped = false;

  // A crash or process.exit() (Ctrl-C) must not leave the cursor hidden.
  process.once('exit', () => stop());

  function track(id, info) {
    if (stopped || bars.has(id)) return;
    if (bars.size >= maxBars()) {
      // Keep the bars on screen: drop the oldest finished one (never a live one).
      for (const [oldId, entry] of bars) {
        if (entry.info.duration !== undefined) {
          multibar.remove(entry.bar);
          bars.delete(oldId);
          break;
        }
      }
    }
    const payload = { ...info, id, status: info.status ?? 'queued' };
    const bar = multibar.create(100, info.progress ?? 0, payload);
    bars.set(id, { bar, info: payload });
  }

  function update(id, patch) {
    const entry = bars.get(id);
    if (entry === undefined || stopped) return;
    const changes = {};
    for (const [key, value] of Object.entries(patch)) {
      if (value !== undefined && key !== 'progress') changes[key] = value;
    }
    Object.assign(entry.info, changes);
    if (typeof patch.progress === 'number') entry.bar.update(patch.progress, changes);
    else entry.bar.update(changes);
  }

  function log(text) {
    // Until the first bar (and after the last), plain writes; meanwhile MultiBar prints the
    // line above the bars at its next frame. ESC[J first: clear the old bar rows the line may
    // land on (a wrapped line would otherwise keep the tail of a bar).
    if (multibar.isActive && !stopped) multibar.log(`${ESC}J${text}\n`);
    else stream.write(`${text}\n`);
  }

  function stop() {
    if (stopped) return;
    stopped = true;
    if (multibar.isActive) {
      multibar.update(); // flush buffered log lines, draw the final state
      multibar.stop();
    }
  }

  /**
   * A cli-table3 table, boxed, with `footer` as a last full-width row; where the box is wider
   * than the terminal, a borderless table with the footer as a line under it.
   */
  function table(head, rows, { align = [], footer } = {}) {
    const colAligns = head.map((_, i) => align[i] ?? 'left');
    const style = { head: color ? ['cyan'] : [], border: color ? ['grey'] : [], compact: true };
    const boxed = new Table({ head, colAligns, style });
    boxed.push(...rows);
    if (footer !== undefined) boxed.push([{ colSpan: head.length, content: footer }]);
    const text = boxed.toString();
    const visible = Math.max(...text.split('\n').map((l) => l.replace(/\x1b\[[0-9;]*m/g, '').length));
    if (visible < (stream.columns || 80)) {
      log(text);
      return true;
    }
    const plain = new Table({
      // Narrower headers: 'duration ms' over two lines ('duration' / 'ms').
      head: head.map((h) => h.replace(/ (?=\S+$)/, '\n')),
      colAligns,
      chars: Object.fromEntries(BOX_CHARS.map((k) => [k, ''])),
      style: { ...style, 'padding-left': 0, 'padding-right': 1 },
    });
    plain.push(...rows);
    log(plain.toString().replace(/ +$/gm, ''));
    if (footer !== undefined) log(footer);
    return true;
  }

  return { tty, log, track, update, stop, table, paint };
}
