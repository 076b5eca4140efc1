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
import { spawnSync } from 'node:child_process';
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join, resolve } from 'node:path';
import { cpuSteal, describeTree, speedProbeMs } from '../lab/timing.js';

const args = process.argv.slice(2);
const flag = (name: string, dflt: number): number => {
  const i = args.indexOf(name);
  if (i < 0) return dflt;
  const v = Number(args.splice(i, 2)[1]);
  if (!Number.isInteger(v) || v < 1) throw new Error(`${name}: expected a positive integer`);
  return v;
};
const ROUNDS = flag('--rounds', 3);
const STEPS = flag('--steps', 6);
const WARMUP = flag('--warmup', 3);
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
const rows = new Map<string, Row[]>(trees.map((t) => [t, []]));
const loads: number[] = [];
const probes: number[] = [];
const steal0 = cpuSteal().sample;
try {
  for (const t of trees) writeFileSync(join(t, 'bench', PROBE), probe);
  for (let r = 0; r < ROUNDS; r++) {
    for (const t of trees) {
      loads.push(os.loadavg()[0]);
      probes.push(speedProbeMs());
      const p = spawnSync(process.execPath, ['--import', 'tsx', join('bench', PROBE)], { cwd: t, encoding: 'utf8', timeout: 30 * 60_000 });
      const line = p.stdout.split('\n').find((l) => l.startsWith('PROBE '));
      if (!line) throw new Error(`${t}: the probe printed no result (exit ${p.status})\n${p.stderr.slice(-2000)}`);
      rows.get(t)!.push(...(JSON.parse(line.slice(6)) as Row[]));
      process.stderr.write(`round ${r + 1}/${ROUNDS} ${t} done\n`);
    }
  }
} finally {
  for (const t of trees) rmSync(join(t, 'bench', PROBE), { force: true });
}
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const steal = cpuSteal(steal0).share;
console.log(`${ROUNDS} rounds x ${STEPS} steps after ${WARMUP} warm-up ones per tree, alternating; load average (1 min) ${Math.min(...loads).toFixed(2)}-${Math.max(...loads).toFixed(2)}; speed probe ${Math.min(...probes).toFixed(1)}-${Math.max(...probes).toFixed(1)} ms (bench/lab/timing.ts: lower is a faster machine); CPU steal ${steal === null ? 'unknown' : `${(100 * steal).toFixed(1)}%`}`);
console.log('| tree | host µs/dispatch | host ms/step | dispatches | bind groups made | buffers made | GC ms/step |');
console.log('|---|---:|---:|---:|---:|---:|---:|');
for (const [t, rs] of rows) {
  const m = (f: (r: Row) => number) => median(rs.map(f));
  console.log(`| ${describeTree(t)} | ${m((r) => (1e3 * r.hostMs) / r.dispatches).toFixed(1)} | ${m((r) => r.hostMs).toFixed(1)} | ${m((r) => r.dispatches)} | ${m((r) => r.bindGroups)} | ${m((r) => r.buffers)} | ${m((r) => r.gcMs).toFixed(1)} |`);
}
