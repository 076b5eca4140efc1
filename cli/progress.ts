/** Progress on long work: a bar on a terminal (cli-progress), plain log lines otherwise. */
import cliProgress from 'cli-progress';

export interface Progress {
  update(value: number, fields?: Record<string, string>): void;
  stop(): void;
}

/**
 * A duration for people: `42s`, `1m05s`, `2h03m`. Rounded to the second before it is split, so
 * 119.6 s reads `2m00s` (cli-progress's own formatter rounds the parts and printed `1m60s`).
 * Not yet known (NaN, Infinity, negative): `-`.
 */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '-';
  const s = Math.round(seconds);
  const pad = (n: number) => String(n).padStart(2, '0');
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${pad(s % 60)}s`;
  const m = Math.round(s / 60);
  return `${Math.floor(m / 60)}h${pad(m % 60)}m`;
}

/**
 * The cli-progress format string: the label, the bar and `name {token}` per field. Tokens are
 * `f0`, `f1`, ... because cli-progress fills only `{\w+}` placeholders (a field named
 * `samples/s` used to print literally as `samples/s {samples/s}`).
 */
export function barFormat(label: string, fieldNames: readonly string[]): string {
  const tail = fieldNames.map((f, i) => `${f} {f${i}}`).join(' | ');
  return `${label.padEnd(24)} [{bar}] {value}/{total}${tail ? ` | ${tail}` : ''} | ETA {eta_formatted}`;
}

/** A bar for `total` steps; `fields` are shown after it (loss, lr, samples/s...). */
export function progress(label: string, total: number, fieldNames: string[] = []): Progress {
  const tokens = (fields: Record<string, string> | undefined) =>
    Object.fromEntries(fieldNames.map((f, i) => [`f${i}`, fields?.[f] ?? '-']));
  if (process.stderr.isTTY) {
    const bar = new cliProgress.SingleBar(
      {
        format: barFormat(label, fieldNames),
        formatTime: (t: number) => formatDuration(t),
        stream: process.stderr,
        hideCursor: true,
        etaBuffer: 20,
      },
      cliProgress.Presets.shades_classic,
    );
    bar.start(total, 0, tokens(undefined));
    let last: Record<string, string> | undefined;
    return {
      update: (v, fields) => {
        if (fields) last = { ...last, ...fields };
        bar.update(v, tokens(last));
      },
      stop: () => bar.stop(),
    };
  }
  // not a terminal (CI, a log file): a line every 10% of the work
  const began = Date.now();
  let nextAt = 0;
  return {
    update(v, fields) {
      if (v < nextAt && v < total) return;
      nextAt = v + Math.max(1, Math.ceil(total / 10));
      const secs = (Date.now() - began) / 1000;
      const eta = v > 0 ? ((total - v) * secs) / v : NaN;
      const extra = fields ? Object.entries(fields).map(([k, x]) => `${k} ${x}`).join(' | ') : '';
      console.error(`${label} ${v}/${total}${extra ? ` | ${extra}` : ''} | ${formatDuration(secs)} elapsed, ETA ${formatDuration(eta)}`);
    },
    stop() {},
  };
}
