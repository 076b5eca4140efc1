/**
 * `npx tsx bench/host-cost/trees.ts [--rounds R] [--steps N] [--warmup W] DIR...`: host µs per
 * dispatch of the main job's training step, the same measurement in two or more checkouts of
 * this repo (e.g. `git worktree add /tmp/before <rev>`), alternating processes round by round so
 * every tree sees the same load. A probe file is written into each tree's bench/ for the run
 * (it uses only trainStepFixture and measure(), which every tree since the host-cost work has)
 * and removed after. Prints per tree the median over all measured steps of host µs per
 * dispatch, host ms, dispatches, bind groups and buffers made, and GC ms per step, with the load
 * average, the speed probe's range and the CPU steal over the run; writes nothing else.
 */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describeTree } from '../lab/timing.js';
import { takeCount, WARMUP_STEPS } from '../args.js';
import { describeMachine, runProbes } from './compare.js';

const args = process.argv.slice(2);
const ROUNDS = takeCount(args, '--rounds', 3);
const STEPS = takeCount(args, '--steps', 6);
const WARMUP = takeCount(args, '--warmup', WARMUP_STEPS);
const trees = args.map((d) => resolve(d));
if (trees.length < 1) throw new Error('give one or more repo checkouts to compare');
for (const t of trees) {
  if (!existsSync(join(t, 'bench', 'host-cost', 'measure.ts'))) throw new Error(`${t}: no bench/host-cost/measure.ts (not a checkout of this repo with the host-cost benchmark)`);
}

const PROBE = 'host-cost-probe.tmp.ts';
const probe = `
import { PerformanceObserver } from 'node:perf_hooks';
import { initWebGPU, shutdown } from '../kernels/index.js';
import { trainStepFixture } from './host-cost/measure.js';
let gcMs = 0;
new PerformanceObserver((l) => { for (const e of l.getEntries()) gcMs += e.duration; }).observe({ entryTypes: ['gc'] });
await initWebGPU();
const train = await trainStepFixture();
const rows = [];
for (let i = 0; i < ${WARMUP + STEPS}; i++) {
  const batch = train.prepare(i);
  const g0 = gcMs;
  const r = await train.run(batch);
  if (i >= ${WARMUP}) rows.push({ hostMs: r.hostMs, dispatches: r.dispatches, bindGroups: r.bindGroupsCreated, buffers: r.buffersCreated, gcMs: gcMs - g0 });
}
train.dispose();
shutdown();
console.log('PROBE ' + JSON.stringify(rows));
`;

interface Row { hostMs: number; dispatches: number; bindGroups: number; buffers: number; gcMs: number }
const { rows, machine } = runProbes<Row>(trees, PROBE, probe, ROUNDS);
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
console.log(`${ROUNDS} rounds x ${STEPS} steps after ${WARMUP} warm-up ones per tree, alternating; ${describeMachine(machine)}`);
console.log('| tree | host µs/dispatch | host ms/step | dispatches | bind groups made | buffers made | GC ms/step |');
console.log('|---|---:|---:|---:|---:|---:|---:|');
for (const [t, rs] of rows) {
  const m = (f: (r: Row) => number) => median(rs.map(f));
  console.log(`| ${describeTree(t)} | ${m((r) => (1e3 * r.hostMs) / r.dispatches).toFixed(1)} | ${m((r) => r.hostMs).toFixed(1)} | ${m((r) => r.dispatches)} | ${m((r) => r.bindGroups)} | ${m((r) => r.buffers)} | ${m((r) => r.gcMs).toFixed(1)} |`);
}
