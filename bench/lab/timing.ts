/**
 * How the kernel labs time GPU work, one sample at a time (the labs take medians).
 *
 * - `timestamp-query`, where the device has the feature: the GPU's own clock. While a sample
 *   runs, every compute pass the runtime begins carries timestampWrites (a begin and an end
 *   query, through the opt-in `GpuContext.passTimestamps` hook); afterwards the query set is
 *   resolved into a buffer and read back, and the sample is the sum of end - begin over its
 *   passes, divided by the iterations. Host-side encoding and the gaps between passes are not
 *   in it. (Compute passes time themselves through timestampWrites: the encoder-level
 *   writeTimestamp is no longer in WebGPU.)
 * - `wall-clock` otherwise (Dawn's OpenGL ES backend over llvmpipe offers no timestamp
 *   queries): performance.now() around queuing the iterations, the flush and the wait until
 *   the queue has drained, divided by the iterations. It includes the JavaScript cost of
 *   encoding the dispatches, which on llvmpipe is small next to the kernels themselves.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { ctx } from '../../kernels/runtime.js';

export type TimingMethod = 'timestamp-query' | 'wall-clock';

/** Queries in one set: a begin/end pair per compute pass, so 2048 passes per sample. */
const QUERY_CAPACITY = 4096;

export class LabTimer {
  readonly method: TimingMethod;
  private querySet: GPUQuerySet | null = null;
  private resolved: GPUBuffer | null = null;
  private readback: GPUBuffer | null = null;

  /** `wallClock` forces the wall clock even where timestamp queries exist. */
  constructor(opts: { wallClock?: boolean } = {}) {
    const device = ctx().device;
    this.method = !opts.wallClock && device.features.has('timestamp-query') ? 'timestamp-query' : 'wall-clock';
    if (this.method === 'timestamp-query') {
      this.querySet = device.createQuerySet({ type: 'timestamp', count: QUERY_CAPACITY });
      this.resolved = device.createBuffer({ size: QUERY_CAPACITY * 8, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
      this.readback = device.createBuffer({ size: QUERY_CAPACITY * 8, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    }
  }

  /** One line for a lab's header: the method and why. */
  describe(): string {
    if (this.method === 'timestamp-query') return 'timestamp-query (GPU time summed over compute passes, per iteration)';
    const offered = ctx().device.features.has('timestamp-query');
    return `wall-clock (queue, flush, wait for the queue to drain; per iteration)${offered ? ', forced' : ': the adapter has no timestamp-query'}`;
  }

  /** Milliseconds per iteration of `run`, which queues GPU work (and may allocate), `iters` times. */
  async sample(run: () => void, iters = 1): Promise<number> {
    const c = ctx();
    if (this.method === 'wall-clock') {
      await c.sync(); // start from an empty queue
      const t0 = performance.now();
      for (let i = 0; i < iters; i++) run();
      await c.sync();
      return (performance.now() - t0) / iters;
    }
    const querySet = this.querySet!;
    c.flush(); // so that the sample's work starts in a pass of its own
    let used = 0;
    c.passTimestamps = () => {
      if (used + 2 > QUERY_CAPACITY) throw new Error(`LabTimer: a sample began more than ${QUERY_CAPACITY / 2} compute passes; time fewer iterations`);
      const writes = { querySet, beginningOfPassWriteIndex: used, endOfPassWriteIndex: used + 1 };
      used += 2;
      return writes;
    };
    try {
      for (let i = 0; i < iters; i++) run();
      c.flush();
    } finally {
      c.passTimestamps = null;
    }
    if (used === 0) return 0;
    const encoder = c.device.createCommandEncoder();
    encoder.resolveQuerySet(querySet, 0, used, this.resolved!, 0);
    encoder.copyBufferToBuffer(this.resolved!, 0, this.readback!, 0, used * 8);
    c.device.queue.submit([encoder.finish()]);
    await this.readback!.mapAsync(GPUMapMode.READ, 0, used * 8);
    const ticks = new BigUint64Array(this.readback!.getMappedRange(0, used * 8).slice(0));
    this.readback!.unmap();
    let ns = 0n;
    // a pass whose end reads before its begin (a clock reset) counts as zero, not as a wrap
    for (let i = 0; i < used; i += 2) if (ticks[i + 1] > ticks[i]) ns += ticks[i + 1] - ticks[i];
    return Number(ns) / 1e6 / iters;
  }

  dispose(): void {
    this.querySet?.destroy();
    this.resolved?.destroy();
    this.readback?.destroy();
  }
}

export function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/**
 * Iterations per sample so that one sample lasts about `targetMs` (at least 1, at most
 * `maxIters`): short kernels are queued many times between flushes, so that the flush and the
 * wait do not dominate them.
 */
export async function itersFor(timer: LabTimer, run: () => void, targetMs: number, maxIters = 200): Promise<number> {
  const once = await timer.sample(run, 1);
  if (!(once > 0)) return maxIters;
  return Math.max(1, Math.min(maxIters, Math.round(targetMs / once)));
}

/**
 * Median milliseconds per iteration of each of `runs`, timed in interleaved rounds (one sample
 * of each per round), so that load from other processes on a shared machine spreads evenly
 * over the variants instead of falling on whichever ran while it lasted.
 */
export async function timeInterleaved(timer: LabTimer, runs: readonly { run: () => void; iters: number }[], samples: number): Promise<number[]> {
  const ms = runs.map((): number[] => []);
  for (let s = 0; s < samples; s++) {
    for (const [i, r] of runs.entries()) ms[i].push(await timer.sample(r.run, r.iters));
  }
  return ms.map(median);
}

/** How many compute dispatches `run` queues (it runs once, for real). */
export function countDispatches<T>(run: () => T): { result: T; dispatches: number } {
  const c = ctx();
  const dispatch = c.dispatch;
  let dispatches = 0;
  c.dispatch = (args) => {
    dispatches++;
    dispatch.call(c, args);
  };
  try {
    return { result: run(), dispatches };
  } finally {
    c.dispatch = dispatch;
  }
}

/**
 * How fast this (shared, virtual) machine runs plain JavaScript right now: ms for a fixed
 * workload (object allocation, a Map, arithmetic: the kind of work the runtime's host side
 * does), the best of 5. The same code on the same machine has measured ~2x apart an hour apart
 * with the load average alike, so the host-cost benchmarks print this beside their numbers:
 * compare results only at a similar probe time, or interleaved in one run.
 */
export function speedProbeMs(): number {
  let best = Infinity;
  for (let rep = 0; rep < 5; rep++) {
    const t0 = performance.now();
    const m = new Map<number, { a: number; b: number[] }>();
    let acc = 0;
    for (let i = 0; i < 200_000; i++) {
      const o = { a: i, b: [i & 7, i >> 3] };
      m.set(i & 4095, o);
      acc += (m.get((i * 7) & 4095)?.a ?? 0) + o.b[0];
    }
    best = Math.min(best, performance.now() - t0 + (acc < 0 ? 1 : 0));
  }
  return best;
}

/** Share of CPU time the hypervisor gave to other guests (steal, /proc/stat) since `since`; null where unknown. */
export function cpuSteal(since?: readonly number[]): { sample: number[]; share: number | null } {
  let sample: number[] = [];
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n')[0];
    sample = line.trim().split(/\s+/).slice(1).map(Number);
  } catch {
    return { sample, share: null };
  }
  if (!since || since.length < 8 || sample.length < 8) return { sample, share: null };
  const total = sample.reduce((s, x, i) => s + x - (since[i] ?? 0), 0);
  return { sample, share: total > 0 ? (sample[7] - since[7]) / total : null };
}

/** `dir (commit abc1234[, with changes])` for the before/after benchmarks that compare checkouts. */
export function describeTree(dir: string): string {
  const git = (...a: string[]) => spawnSync('git', ['-C', dir, ...a], { encoding: 'utf8' });
  const rev = git('rev-parse', '--short', 'HEAD').stdout.trim();
  if (!rev) return dir;
  const dirty = git('status', '--porcelain', '--untracked-files=no').stdout.trim() !== '';
  return `${dir} (commit ${rev}${dirty ? ', with uncommitted changes' : ''})`;
}
