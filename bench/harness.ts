/**
 * Benchmark harness over benny: each case is one op call (GPU cases include the flush and
 * a read-back of one element, so queued work is really done). Reports the median time per
 * call and the throughput (GFLOP/s for compute-bound ops, GB/s for memory-bound ones),
 * prints a table, and writes bench/results/<suite>.json and .md.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import os from 'node:os';
import b from 'benny';
import { gpuContext } from '../kernels/index.js';
import { hasBackend, type Device, type Tensor } from '../tensor/index.js';
import { LabTimer, median } from './lab/timing.js';

/**
 * The devices the suites make cases for, in table order (UHD_BENCH_DEVICES=cpu,wasm to pick);
 * a device that is not open when the suite runs is left out.
 */
export const BENCH_DEVICES: readonly Device[] = (process.env.UHD_BENCH_DEVICES?.split(',') ?? ['cpu', 'wasm', 'webgpu']) as Device[];

export interface BenchCase {
  /** e.g. 'matmul 512x512x512'. */
  name: string;
  device: Device;
  /** Floating-point operations per call (2·M·N·K for a matmul), if compute-bound. */
  flops?: number;
  /** Bytes moved per call (read + written), if memory-bound. */
  bytes?: number;
  /** Builds inputs once; returns the timed function. It must dispose what it creates. */
  setup: () => (() => Tensor) | Promise<() => Tensor>;
}

export interface BenchRow {
  suite: string;
  name: string;
  device: string;
  medianMs: number;
  gflops: number | null;
  gbps: number | null;
  samples: number;
  /** GPU time per call by timestamp queries (median of 5), where the adapter has them. */
  gpuMs?: number | null;
}

export interface SuiteOptions {
  /** Seconds per case (benny's maxTime). */
  maxTime?: number;
  minSamples?: number;
  /** Adapter description for the results header. */
  adapter?: string;
}

const RESULTS = join(dirname(fileURLToPath(import.meta.url)), 'results');

export async function runSuite(suite: string, all: BenchCase[], opts: SuiteOptions = {}): Promise<BenchRow[]> {
  const cases = all.filter((c) => hasBackend(c.device));
  const options = { maxTime: opts.maxTime ?? 2, minSamples: opts.minSamples ?? 5, delay: 0 };
  const adds = cases.map((c) =>
    b.add(
      `${c.device} ${c.name}`,
      async () => {
        const fn = await c.setup();
        return async () => {
          const out = fn();
          // Reading one element forces the batch to run to completion.
          if (out.size > 0) await out.slice(...out.shape.map(() => [0, 1] as const)).data();
          out.dispose();
        };
      },
      options,
    ),
  );
  const summary = await b.suite(suite, ...adds, b.cycle());
  const rows: BenchRow[] = summary.results.map((r, i) => {
    const c = cases[i];
    const sec = r.details.median;
    return {
      suite,
      name: c.name,
      device: c.device,
      medianMs: sec * 1e3,
      gflops: c.flops ? c.flops / sec / 1e9 : null,
      gbps: c.bytes ? c.bytes / sec / 1e9 : null,
      samples: r.samples,
    };
  });
  await gpuTimes(cases, rows);
  write(suite, rows, opts.adapter ?? '');
  return rows;
}

/**
 * Where the adapter offers timestamp-query, each WebGPU case is also timed on the GPU's clock
 * (bench/lab/timing.ts): the kernels alone, without host encoding, flush and read-back.
 */
async function gpuTimes(cases: BenchCase[], rows: BenchRow[]): Promise<void> {
  if (!cases.some((c) => c.device === 'webgpu') || !hasBackend('webgpu')) return;
  if (!gpuContext().device.features.has('timestamp-query')) return;
  const timer = new LabTimer();
  try {
    for (const [i, c] of cases.entries()) {
      if (c.device !== 'webgpu') continue;
      const fn = await c.setup();
      const samples: number[] = [];
      for (let s = 0; s < 5; s++) samples.push(await timer.sample(() => fn().dispose(), 3));
      rows[i].gpuMs = median(samples);
    }
  } finally {
    timer.dispose();
  }
}

function fmtNum(x: number | null, digits = 2): string {
  return x === null ? '' : x.toFixed(digits);
}

export function table(rows: BenchRow[]): string {
  const gpu = rows.some((r) => r.gpuMs != null);
  const head = `| case | device | median ms | GFLOP/s | GB/s | samples |${gpu ? ' GPU ms (timestamps) |' : ''}\n|---|---|---:|---:|---:|---:|${gpu ? '---:|' : ''}`;
  const body = rows.map((r) => `| ${r.name} | ${r.device} | ${fmtNum(r.medianMs, 3)} | ${fmtNum(r.gflops)} | ${fmtNum(r.gbps)} | ${r.samples} |${gpu ? ` ${fmtNum(r.gpuMs ?? null, 3)} |` : ''}`);
  return [head, ...body].join('\n');
}

function write(suite: string, rows: BenchRow[], adapter: string): void {
  mkdirSync(RESULTS, { recursive: true });
  const meta = {
    suite,
    date: new Date().toISOString(),
    machine: `${os.cpus()[0]?.model ?? 'unknown cpu'} x${os.cpus().length}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, node ${process.version}`,
    load: os.loadavg()[0],
    adapter,
  };
  writeFileSync(join(RESULTS, `${suite}.json`), JSON.stringify({ ...meta, rows }, null, 2) + '\n');
  const md = `# ${suite}\n\n${meta.date} · ${meta.machine} · adapter: ${adapter || 'n/a'} · load average ${meta.load.toFixed(1)} (2 cores shared: read ratios)\n\n${table(rows)}\n`;
  writeFileSync(join(RESULTS, `${suite}.md`), md);
  console.log(`\n${md}`);
}
