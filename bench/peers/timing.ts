/**
 * Times an async call: warm-up calls, then calls until `maxTime` seconds have passed and at
 * least `minSamples` were taken; reports the median. (The same statistic as bench/harness.ts,
 * without benny, so that every library's call is timed by the one loop.)
 */
export interface TimingOptions {
  /** Seconds of timed calls per case (after the warm-up). */
  maxTime: number;
  minSamples: number;
  warmup: number;
  /** Stop after this many samples even when time is left. */
  maxSamples: number;
}

export interface Timing {
  medianMs: number;
  samples: number;
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

export async function time(call: () => Promise<void>, opts: TimingOptions): Promise<Timing> {
  for (let i = 0; i < opts.warmup; i++) await call();
  const ms: number[] = [];
  const start = performance.now();
  while (ms.length < opts.maxSamples && (ms.length < opts.minSamples || performance.now() - start < opts.maxTime * 1e3)) {
    const t0 = performance.now();
    await call();
    ms.push(performance.now() - t0);
  }
  return { medianMs: median(ms), samples: ms.length };
}
