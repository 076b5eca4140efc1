/**
 * `npm run bench:peers [-- filter ...] [--quick]`: the same workloads in our runtime (CPU,
 * wasm and WebGPU) and in peers on this machine, in one process: TensorFlow.js (CPU, WebGPU),
 * jax-js (cpu, wasm on Web Workers, webgpu), onnxruntime-node (CPU, inference), and numpy and
 * torch through /usr/bin/python3 when present (optional). Every peer's output is checked
 * against our CPU result before it is timed. Writes bench/results/peers.{md,json}.
 * A peer that is missing or refuses to start gets a row saying why; the run goes on.
 * Filters keep the cases or libraries whose name contains one of them ('matmul', 'jax').
 */
import os from 'node:os';
import { closeDevice as shutdown, openDevice } from '../../backends/index.js';
import { gpuInfo, initWebGPU, type GpuInfo } from '../../kernels/index.js';
import { openJax } from './jax.js';
import { openOrt } from './ort.js';
import { closePython, openPython } from './python.js';
import { machine, summary, write, type PeerRow, type Report } from './report.js';
import { isRunner, reason, Skip, type Opened, type Runner, type Unavailable } from './runner.js';
import { openTfjs } from './tfjs.js';
import { time, type TimingOptions } from './timing.js';
import { uhdRunner } from './uhd.js';
import { workloads, type Workload } from './workloads.js';

const args = process.argv.slice(2);
const quick = args.includes('--quick');
const filters = args.filter((a) => !a.startsWith('-'));
const timing: TimingOptions = { maxTime: quick ? 0.5 : 2, minSamples: quick ? 3 : 5, warmup: 1, maxSamples: 50 };

/** A call slower than this is timed twice, without a warm-up beyond the checked call. */
const SLOW_CALL_MS = 3000;

/** A case whose one call would take longer than this (estimated from a smaller one) is skipped. */
const SLOW_CALL_S = 20;

/** Max relative error allowed per output: float32 sums in another order, tanh/exp approximations. */
const TOLERANCE = { forward: 1e-3, gradients: 5e-3 };

/**
 * The worst over outputs of max |a - ref| / scale, scale = max |ref| of that output but at least
 * 1e-3 of the largest output's: an output that is zero in exact arithmetic (the key bias's
 * gradient: softmax ignores a shift per row) is then judged against the others' magnitude.
 * Infinity on a length mismatch or a NaN.
 */
function relErr(outs: Float32Array[], refs: Float32Array[]): number {
  if (outs.length !== refs.length || outs.some((o, k) => o.length !== refs[k].length)) return Infinity;
  const maxAbs = (r: Float32Array) => r.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
  const scales = refs.map(maxAbs);
  const floor = 1e-3 * Math.max(...scales);
  let worst = 0;
  for (let k = 0; k < refs.length; k++) {
    const [a, r] = [outs[k], refs[k]];
    let diff = 0;
    for (let i = 0; i < r.length; i++) {
      const d = Math.abs(a[i] - r[i]);
      if (!(d <= diff)) diff = d; // NaN propagates
    }
    worst = Math.max(worst, Number.isNaN(diff) ? Infinity : diff / Math.max(scales[k], floor, 1e-30));
  }
  return worst;
}

/** Filters that name something in `names` select among them; the others are for the other axis. */
function selector(names: string[]): (s: string) => boolean {
  const has = (s: string, f: string) => s.toLowerCase().includes(f.toLowerCase());
  const mine = filters.filter((f) => names.some((n) => has(n, f)));
  return (s) => !mine.length || mine.some((f) => has(s, f));
}

async function main(): Promise<void> {
  const loadAtStart = os.loadavg()[0];
  let gpu: GpuInfo | null = null;
  const opened: Opened[] = [uhdRunner('cpu')];
  try {
    await openDevice('wasm');
    opened.push(uhdRunner('wasm'));
  } catch (e) {
    opened.push({ library: 'uhd (ours)', backend: 'wasm', reason: reason(e) });
  }
  try {
    await initWebGPU();
    gpu = gpuInfo();
    opened.push(uhdRunner('webgpu'));
  } catch (e) {
    opened.push({ library: 'uhd (ours)', backend: 'webgpu', reason: reason(e) });
  }
  opened.push(...(await openTfjs(gpu)), ...(await openJax(gpu)), ...(await openOrt()), ...(await openPython()));
  const label = (o: Opened) => `${o.library} ${o.backend}`;
  const wantedPeer = selector(opened.map(label));
  // Ours always run: they are the reference and the denominators.
  const runners = opened.filter(isRunner).filter((r) => r.library.startsWith('uhd') || wantedPeer(label(r)));
  const unavailable = opened.filter((o): o is Unavailable => !isRunner(o) && wantedPeer(label(o)));
  const ours = runners.filter((r) => r.library.startsWith('uhd'));
  const oursCpu = ours.find((r) => r.backend === 'cpu');

  const rows: PeerRow[] = [];
  /** FLOP/s each backend reached on its first case with a FLOP count (for SLOW_CALL_S). */
  const rate = new Map<string, number>();
  const rateCase = new Map<string, string>();
  const all = await workloads();
  const wantedCase = selector(all.map((w) => w.name));
  const cases = all.filter((w) => wantedCase(w.name));
  for (const w of cases) {
    console.log(`\n${w.name}`);
    let reference: Float32Array[] | null = null;
    const ourMs: Record<string, number | null> = { cpu: null, wasm: null, webgpu: null };
    for (const r of runners) {
      if (r.covers && !r.covers(w)) continue;
      const key = `${r.library} / ${r.backend}`;
      const est = w.flops && rate.has(key) ? w.flops / rate.get(key)! : 0;
      if (est > SLOW_CALL_S) {
        const reason = `one call would take ~${est.toFixed(0)} s at the ${(rate.get(key)! / 1e6).toFixed(1)} MFLOP/s it ran ${rateCase.get(key)} at`;
        rows.push({ case: w.name, library: r.library, backend: r.backend, status: 'skipped', maxRelErr: null, medianMs: null, gflops: null, samples: 0, vsUhdCpu: null, vsUhdWasm: null, vsUhdWebgpu: null, reason });
        console.log(`  ${key.padEnd(34)} skipped: ${reason}`);
        continue;
      }
      const row = await measure(r, w, r === oursCpu ? 'self' : reference);
      if (row.row.gflops !== null && !rate.has(key)) {
        rate.set(key, row.row.gflops * 1e9);
        rateCase.set(key, w.name);
      }
      if (r === oursCpu) reference = row.outputs;
      if (ours.includes(r)) ourMs[r.backend] = row.row.medianMs;
      rows.push(row.row);
      const m = row.row.medianMs;
      console.log(`  ${key.padEnd(34)} ${m === null ? '' : `${m.toFixed(2)} ms`.padStart(12)}  ${row.row.status}${row.row.reason ? `: ${row.row.reason}` : ''}`);
    }
    for (const row of rows.filter((x) => x.case === w.name && x.medianMs !== null)) {
      row.vsUhdCpu = ourMs.cpu ? row.medianMs! / ourMs.cpu : null;
      row.vsUhdWasm = ourMs.wasm ? row.medianMs! / ourMs.wasm : null;
      row.vsUhdWebgpu = ourMs.webgpu ? row.medianMs! / ourMs.webgpu : null;
    }
  }

  const report: Report = {
    date: new Date().toISOString(),
    machine: machine(),
    adapter: gpu ? `${gpu.backend}/${gpu.featureLevel}: ${gpu.description}` : '',
    load: [loadAtStart, os.loadavg()[0]],
    peers: runners.map((r) => `${r.library} / ${r.backend}`),
    rows,
    unavailable,
    notes: Object.fromEntries(runners.filter((r) => r.note).map((r) => [`${r.library} / ${r.backend}`, r.note!])),
    tolerance: TOLERANCE,
  };
  const md = write(report, summary(report));
  console.log(`\n${md}`);
}

/** Prepares, checks against `reference` (ours on the CPU, 'self' for that one), times. */
async function measure(r: Runner, w: Workload, reference: Float32Array[] | 'self' | null): Promise<{ row: PeerRow; outputs: Float32Array[] | null }> {
  const row: PeerRow = {
    case: w.name, library: r.library, backend: r.backend, status: 'failed', maxRelErr: null,
    medianMs: null, gflops: null, samples: 0, vsUhdCpu: null, vsUhdWasm: null, vsUhdWebgpu: null,
  };
  let prepared;
  try {
    prepared = await r.prepare(w);
  } catch (e) {
    return { row: { ...row, status: e instanceof Skip ? 'skipped' : 'failed', reason: reason(e) }, outputs: null };
  }
  try {
    const t0 = performance.now();
    const outputs = await prepared.outputs();
    const firstMs = performance.now() - t0;
    if (reference === null) return { row: { ...row, reason: 'not checked: ours on the CPU has no result' }, outputs: null };
    row.maxRelErr = reference === 'self' ? 0 : relErr(outputs, reference);
    const tol = w.work.kind === 'block' && w.work.train ? TOLERANCE.gradients : TOLERANCE.forward;
    row.status = row.maxRelErr <= tol ? 'checked' : 'wrong';
    // Over SLOW_CALL_MS a call: the checked call was the warm-up, and two timed calls suffice.
    const slow = firstMs > SLOW_CALL_MS;
    const opts = slow ? { ...timing, warmup: 0, minSamples: 2 } : timing;
    const t = prepared.timed ? await prepared.timed(opts) : await time(() => prepared.run(), opts);
    row.medianMs = t.medianMs;
    row.samples = t.samples;
    row.gflops = w.flops ? w.flops / (t.medianMs * 1e6) : null;
    return { row, outputs };
  } catch (e) {
    return { row: { ...row, status: 'failed', reason: reason(e) }, outputs: null };
  } finally {
    prepared.dispose();
  }
}

try {
  await main();
} finally {
  closePython();
  shutdown();
}
// The peers' Dawn instances keep the event loop alive; the results are written.
process.exit(0);
