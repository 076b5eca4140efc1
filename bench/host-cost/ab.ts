/**
 * `npx tsx bench/host-cost/ab.ts [--pairs N] [--warmup W] A_DIR B_DIR`: host µs per dispatch of
 * the main job's training step in two checkouts of this repo, loaded side by side in ONE process
 * (each tree's modules are its own instances, each with its own Dawn device) and stepped
 * alternately, N pairs of steps (A then B, then B then A, ...). Both steps of a pair see the same machine, which on this
 * shared VM changes speed ~2x within minutes (bench/lab/timing.ts's speed probe), more than the
 * differences worth measuring; separate processes (trees.ts) stay at the mercy of that.
 *
 * Prints the median host µs per dispatch and host ms per step of each tree, the median of the
 * per-pair ratios B/A, and in how many pairs B was faster (a sign test). Two trees in one heap
 * cost more per step than one (caches, GC): read the ratio, not the absolute numbers. Which tree is
 * loaded first matters a little (a tree against itself: 0.98); swap A and B to see it cancel. Both trees must have
 * bench/host-cost/measure.ts with trainStepFixture's prepare/run (every tree since 2026-12-02).
 * Writes bench/results/host-ab.md.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { cpuSteal, describeTree, median, speedProbeMs } from '../lab/timing.js';
import { takeCount, WARMUP_STEPS } from '../args.js';

const args = process.argv.slice(2);
const PAIRS = takeCount(args, '--pairs', 12);
const WARMUP = takeCount(args, '--warmup', WARMUP_STEPS);
if (args.length !== 2) throw new Error('give two repo checkouts: A_DIR B_DIR');
const dirs = args.map((d) => resolve(d));

interface Cost { hostMs: number; dispatches: number; hostUsPerDispatch: number }
interface Fixture { prepare: (i: number) => unknown; run: (b: unknown) => Promise<Cost>; dispose: () => void }
interface Tree { dir: string; fixture: Fixture; shutdown: () => void; rows: Cost[] }

const trees: Tree[] = [];
for (const dir of dirs) {
  const kernels = (await import(pathToFileURL(join(dir, 'kernels', 'index.ts')).href)) as { initWebGPU: () => Promise<unknown>; shutdown: () => void };
  const measure = (await import(pathToFileURL(join(dir, 'bench', 'host-cost', 'measure.ts')).href)) as { trainStepFixture: () => Promise<Fixture> };
  await kernels.initWebGPU();
  const fixture = await measure.trainStepFixture();
  if (typeof fixture.prepare !== 'function' || typeof fixture.run !== 'function') throw new Error(`${dir}: trainStepFixture has no prepare/run (too old a tree)`);
  trees.push({ dir, fixture, shutdown: kernels.shutdown, rows: [] });
}

const load0 = os.loadavg();
const steal0 = cpuSteal().sample;
const probes: number[] = [];
try {
  for (let i = 0; i < WARMUP + PAIRS; i++) {
    if (i >= WARMUP) probes.push(speedProbeMs());
    // A then B in even pairs, B then A in odd ones: whatever the order costs falls on both
    for (const t of i % 2 ? [...trees].reverse() : trees) {
      const batch = t.fixture.prepare(i);
      const r = await t.fixture.run(batch);
      if (i >= WARMUP) t.rows.push(r);
    }
    if (i >= WARMUP) process.stderr.write(`pair ${i - WARMUP + 1}/${PAIRS}: ${trees.map((t) => t.rows[t.rows.length - 1].hostUsPerDispatch.toFixed(1)).join(' / ')} µs per dispatch\n`);
  }
} finally {
  for (const t of trees) {
    t.fixture.dispose();
    t.shutdown();
  }
}
const load1 = os.loadavg();
const out: string[] = [];
const steal = cpuSteal(steal0).share;
const [a, b] = trees;
const ratios = a.rows.map((r, i) => b.rows[i].hostMs / r.hostMs);
const perDispatchRatios = a.rows.map((r, i) => b.rows[i].hostUsPerDispatch / r.hostUsPerDispatch);
const bFaster = perDispatchRatios.filter((x) => x < 1).length;
out.push(`${PAIRS} pairs of steps after ${WARMUP} warm-up pairs, alternating order in one process; load average ${load0[0].toFixed(2)} before, ${load1[0].toFixed(2)} after; speed probe ${Math.min(...probes).toFixed(1)}-${Math.max(...probes).toFixed(1)} ms; CPU steal ${steal === null ? 'unknown' : `${(100 * steal).toFixed(1)}%`}`);
out.push('| tree | host µs/dispatch | host ms/step | dispatches/step |');
out.push('|---|---:|---:|---:|');
for (const [name, t] of [['A', a], ['B', b]] as const) {
  const m = (f: (r: Cost) => number) => median(t.rows.map(f));
  out.push(`| ${name}: ${describeTree(t.dir)} | ${m((r) => r.hostUsPerDispatch).toFixed(1)} | ${m((r) => r.hostMs).toFixed(1)} | ${m((r) => r.dispatches)} |`);
}
out.push(`B/A per pair, median: host µs per dispatch ${median(perDispatchRatios).toFixed(3)}, host ms per step ${median(ratios).toFixed(3)}; B faster per dispatch in ${bFaster} of ${PAIRS} pairs`);
const text = [`# host-ab`, '', `${new Date().toISOString()} · trees: ${dirs.map(describeTree).join(', ')}`, '', ...out].join('\n') + '\n';
const OUT = join(dirname(fileURLToPath(import.meta.url)), '..', 'results');
mkdirSync(OUT, { recursive: true });
writeFileSync(join(OUT, 'host-ab.md'), text);
console.log(text);
