/** Progress on long work: a bar on a terminal (cli-progress), plain log lines otherwise. */
import cliProgress from 'cli-progress';

export interface Progress {
  update(value: number, fields?: Record<string, string>): void;
  stop(): void;
}

/** A bar for `total` steps; `fields` are shown after it (loss, lr, samples/s...). */
export function progress(label: string, total: number, fieldNames: string[] = []): Progress {
  const tail = fieldNames.map((f) => `${f} {${f}}`).join(' | ');
  if (process.stderr.isTTY) {
    const bar = new cliProgress.SingleBar(
      {
        format: `${label.padEnd(24)} [{bar}] {value}/{total}${tail ? ` | ${tail}` : ''} | ETA {eta_formatted}`,
        stream: process.stderr,
        hideCursor: true,
        etaBuffer: 20,
      },
      cliProgress.Presets.shades_classic,
    );
    bar.start(total, 0, Object.fromEntries(fieldNames.map((f) => [f, '-'])));
    return { update: (v, fields) => bar.update(v, fields), stop: () => bar.stop() };
  }
  // not a terminal (CI, a log file): a line every 10% of the work
  const began = Date.now();
  let nextAt = 0;
  return {
    update(v, fields) {
      if (v < nextAt && v < total) return;
      nextAt = v + Math.max(1, Math.ceil(total / 10));
      const secs = (Date.now() - began) / 1000;
      const eta = v > 0 ? ((total - v) * secs) / v : 0;
      const extra = fields ? Object.entries(fields).map(([k, x]) => `${k} ${x}`).join(' | ') : '';
      console.error(`${label} ${v}/${total}${extra ? ` | ${extra}` : ''} | ${secs.toFixed(0)}s elapsed, ETA ${eta.toFixed(0)}s`);
    },
    stop() {},
  };
}
