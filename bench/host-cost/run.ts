/**
 * `npm run bench:host [-- --steps N] [--warmup W] [--ab]`: dispatches, copies, submits and host µs per dispatch for
 * training steps of the main job's tiny model and for a ViT encode, on WebGPU. Writes
 * bench/results/host-cost.{md,json} with the load average beside the numbers.
 *
 * The first W steps of each setting (default 6, bench/args.ts's WARMUP_STEPS: pipelines compile, the pool fills) are left out;
 * the median of the rest is reported. With `--ab`, steps alternate between the runtime as shipped and with its
 * host-side shortcuts and fused ops switched off (`gpuContext().tuning`, `planCaching`), in one process, so
 * both see the same load.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gpuContext, initWebGPU, shutdown } from '../../kernels/index.js';
import { planCaching } from '../../kernels/plans.js';
import { CONFIGS } from '../../llava-uhd/config.js';
import { cpuSteal, median, speedProbeMs } from '../lab/timing.js';
import { trainStepFixture, vitEncodeFixture, type HostCost } from './measure.js';
import { takeCount, WARMUP_STEPS } from '../args.js';

const args = process.argv.slice(2);
/** Steps measured (default 8): a step's batch shapes, and so its cost, vary; 4 medians proved fragile. */
const STEPS = takeCount(args, '--steps', 8);
/** Steps run before the measured ones (default measure.ts's WARMUP_STEPS, which says why). */
const WARMUP = takeCount(args, '--warmup', WARMUP_STEPS);
const AB = args.includes('--ab');
const OUT = join(dirname(fileURLToPath(import.meta.url)), '..', 'results');

const info = await initWebGPU();
const c = gpuContext();
const load0 = os.loadavg();
const probe0 = speedProbeMs();
const steal0 = cpuSteal().sample;

type Mode = 'shipped' | 'plain';
const modes: Mode[] = AB ? ['shipped', 'plain'] : ['shipped'];
function setMode(m: Mode): void {
  const t = c.tuning;
  t.fused = m === 'shipped';
  t.cacheBindGroups = m === 'shipped';
  planCaching.enabled = m === 'shipped';
}

const results: { setting: string; mode: Mode; runs: HostCost[]; warm: HostCost[] }[] = [];
async function bench(setting: string, run: () => Promise<HostCost>): Promise<void> {
  const rows = new Map<Mode, HostCost[]>(modes.map((m) => [m, []]));
  const warm = new Map<Mode, HostCost[]>(modes.map((m) => [m, []]));
  for (let w = 0; w < WARMUP; w++) {
    for (const m of modes) {
      setMode(m);
      warm.get(m)!.push(await run()); // pipelines compile, the pool fills
    }
  }
  for (let i = 0; i < STEPS; i++) {
    for (const m of modes) {
      setMode(m);
      rows.get(m)!.push(await run());
    }
  }
  setMode('shipped');
  for (const m of modes) results.push({ setting, mode: m, runs: rows.get(m)!, warm: warm.get(m)! });
}

try {
  const train = await trainStepFixture();
  let i = 0;
  await bench('train step (tiny-demo stage 2, batch 8, 9 slices)', () => train.step(i++));
  train.dispose();
  const vit = await vitEncodeFixture(CONFIGS.tiny, 448);
  await bench('ViT encode (tiny d=32 L=4, D k=1, one 448x448 view)', () => vit.encode());
  vit.dispose();
} finally {
  shutdown();
}
const load1 = os.loadavg();
const probe1 = speedProbeMs();
const steal = cpuSteal(steal0).share;

const summary = results.map(({ setting, mode, runs, warm }) => {
  const m = (f: (r: HostCost) => number) => median(runs.map(f));
  const total = (f: (r: HostCost) => number) => runs.reduce((a, r) => a + f(r), 0);
  return {
    setting, mode, samples: runs.length,
    wallMs: m((r) => r.wallMs), hostMs: m((r) => r.hostMs), submitMs: m((r) => r.submitMs), waitMs: m((r) => r.waitMs),
    dispatches: m((r) => r.dispatches), copies: m((r) => r.copies), submits: m((r) => r.submits),
    hostUsPerDispatch: m((r) => r.hostUsPerDispatch),
    /** Made in all the measured steps: what a warm step still meets for the first time. */
    created: { pipelines: total((r) => r.pipelinesCreated), bindGroups: total((r) => r.bindGroupsCreated), buffers: total((r) => r.buffersCreated) },
    warmUsPerDispatch: warm.map((r) => r.hostUsPerDispatch),
    byLabel: runs[runs.length - 1].byLabel.slice(0, 12),
  };
});
const date = new Date().toISOString();
const machine = `${os.cpus()[0]?.model ?? 'cpu'} x${os.cpus().length}, node ${process.version}`;
const adapter = `${info.backend}/${info.featureLevel}: ${info.description}`;
const loadText = `load average ${load0.map((x) => x.toFixed(2)).join(' ')} before, ${load1.map((x) => x.toFixed(2)).join(' ')} after · speed probe ${probe0.toFixed(1)} / ${probe1.toFixed(1)} ms before / after (lower: a faster machine right now) · CPU steal ${steal === null ? 'unknown' : `${(100 * steal).toFixed(1)}%`}`;
const lines = [
  '# host-cost', '',
  `${date} · ${machine} · adapter: ${adapter} · ${loadText}`, '',
  'Host µs per dispatch = (wall − time inside queue.submit − waits for read-backs) / dispatches: our JavaScript and',
  `Dawn's encoding on the main thread. Median of ${STEPS} steps after ${WARMUP} warm-up ones.` + (AB ? ' `plain`: the same run with fused ops, bind-group caching and front-end plans off (interleaved).' : ''), '',
  '| setting | mode | dispatches | copies | submits | wall ms | host ms | submit ms | host µs/dispatch |',
  '|---|---|---:|---:|---:|---:|---:|---:|---:|',
  ...summary.map((s) => `| ${s.setting} | ${s.mode} | ${s.dispatches} | ${s.copies} | ${s.submits} | ${s.wallMs.toFixed(0)} | ${s.hostMs.toFixed(0)} | ${s.submitMs.toFixed(0)} | ${s.hostUsPerDispatch.toFixed(1)} |`),
  '',
  ...summary.map((s) => `- ${s.setting}, ${s.mode}: ${s.byLabel.map(([k, v]) => `${k} ${v}`).join(', ')}`),
  '',
  ...summary.map((s) => `- ${s.setting}, ${s.mode}: the ${s.samples} measured steps made ${s.created.pipelines} pipelines, ${s.created.bindGroups} bind groups and ${s.created.buffers} buffers in all; the warm-up steps cost ${s.warmUsPerDispatch.map((x) => x.toFixed(0)).join(', ')} host µs per dispatch`),
];
mkdirSync(OUT, { recursive: true });
writeFileSync(join(OUT, 'host-cost.md'), lines.join('\n') + '\n');
writeFileSync(join(OUT, 'host-cost.json'), JSON.stringify({ date, machine, adapter, loadavg: { before: load0, after: load1 }, speedProbeMs: { before: probe0, after: probe1 }, cpuSteal: steal, summary, results }, null, 1) + '\n');
console.log(lines.join('\n'));
