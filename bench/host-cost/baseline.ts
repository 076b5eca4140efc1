/**
 * `npx tsx bench/host-cost/baseline.ts [--rounds R] [--steps N] [--warmup W] DIR...`: host µs per
 * dispatch of the main job's training step measured the same way in every tree, including trees
 * from before the host-cost work (the one issue 14 was filed against, ~2,200 dispatches a step,
 * has no bench/host-cost/ and no runtime counters). The probe written into each tree's bench/
 * uses only APIs every tree since the training pipeline has (initWebGPU, the model, the recipe,
 * the optimizer) and times Dawn from outside: queue.submit, mapAsync and onSubmittedWorkDone are
 * wrapped on their prototypes and dispatchWorkgroups is counted, so
 *
 *   host µs per dispatch = (wall - inside submit - waiting for the GPU) / dispatches
 *
 * exactly as bench:host defines it, with one probe for old and new alike. The batch is uploaded
 * before the timed part in every tree. Processes alternate round by round so that every tree
 * sees the same machine; the speed probe and CPU steal are printed (bench/lab/timing.ts).
 * Writes bench/results/host-baseline.md.
 */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describeTree, median } from '../lab/timing.js';
import { takeCount, WARMUP_STEPS } from '../args.js';
import { describeMachine, runProbes } from './compare.js';

const args = process.argv.slice(2);
const ROUNDS = takeCount(args, '--rounds', 3);
const STEPS = takeCount(args, '--steps', 6);
const WARMUP = takeCount(args, '--warmup', WARMUP_STEPS);
const trees = args.map((d) => resolve(d));
if (trees.length < 1) throw new Error('give one or more repo checkouts to compare');
for (const t of trees) {
  if (!existsSync(join(t, 'llava-uhd', 'train.ts')) || !existsSync(join(t, 'recipes', 'tiny-demo.json'))) {
    throw new Error(`${t}: no llava-uhd/train.ts or recipes/tiny-demo.json (not a checkout of this repo with the training pipeline)`);
  }
}

const PROBE = 'host-cost-baseline-probe.tmp.ts';
const probe = `
import { readFileSync } from 'node:fs';
import * as ag from '../autograd/index.js';
import { initWebGPU, shutdown } from '../kernels/index.js';
import { ctx } from '../kernels/runtime.js';
import { CONFIGS } from '../llava-uhd/config.js';
import { loadDatasets } from '../llava-uhd/datasets.js';
import { pack } from '../llava-uhd/layout.js';
import { tokenizerFor } from '../llava-uhd/load.js';
import { LlavaUHD } from '../llava-uhd/model.js';
import { viewPixels } from '../llava-uhd/preprocess.js';
import { applyTrainable, batchIndices, encodeSample } from '../llava-uhd/train.js';
import { AdamW, clipGradNorm, crossEntropy, LLAVA_UHD_ADAMW, paramGroups } from '../nn/index.js';
import * as uhd from '../tensor/index.js';

await initWebGPU();
const device = ctx().device;
const t = { submit: 0, wait: 0, dispatches: 0 };
const timed = (proto, name, field) => {
  const fn = proto[name];
  proto[name] = function (...a) {
    const t0 = performance.now();
    const r = fn.apply(this, a);
    if (r && typeof r.then === 'function') return r.finally(() => { t[field] += performance.now() - t0; });
    t[field] += performance.now() - t0;
    return r;
  };
};
timed(Object.getPrototypeOf(device.queue), 'submit', 'submit');
timed(Object.getPrototypeOf(device.queue), 'onSubmittedWorkDone', 'wait');
const probeBuffer = device.createBuffer({ size: 16, usage: 0x01 | 0x08 });
timed(Object.getPrototypeOf(probeBuffer), 'mapAsync', 'wait');
probeBuffer.destroy();
const enc = device.createCommandEncoder();
const pass = enc.beginComputePass();
const passProto = Object.getPrototypeOf(pass);
pass.end();
enc.finish();
const dispatch = passProto.dispatchWorkgroups;
passProto.dispatchWorkgroups = function (...a) { t.dispatches++; return dispatch.apply(this, a); };

const recipe = JSON.parse(readFileSync('recipes/tiny-demo.json', 'utf8'));
const stage = recipe.stages[1];
const data = await loadDatasets(recipe.data, '.');
uhd.manualSeed(0);
const config = structuredClone(CONFIGS.tiny);
const model = new LlavaUHD(config, { device: 'webgpu' });
const tok = await tokenizerFor(config);
const named = applyTrainable(model, stage);
const opt = new AdamW(paramGroups(named, { weightDecay: LLAVA_UHD_ADAMW.weightDecay }), {
  lr: stage.lr, betas: [...LLAVA_UHD_ADAMW.betas], weightDecay: LLAVA_UHD_ADAMW.weightDecay,
});
const vocab = config.text_config.vocab_size;
// bench/lab/timing.ts's speedProbeMs, restated (old trees lack it): the machine's speed at each step
const speed = () => {
  let best = Infinity;
  for (let rep = 0; rep < 5; rep++) {
    const t0 = performance.now();
    const m = new Map();
    let acc = 0;
    for (let i = 0; i < 200000; i++) {
      const o = { a: i, b: [i & 7, i >> 3] };
      m.set(i & 4095, o);
      acc += (m.get((i * 7) & 4095)?.a ?? 0) + o.b[0];
    }
    best = Math.min(best, performance.now() - t0 + (acc < 0 ? 1 : 0));
  }
  return best;
};
const rows = [];
for (let i = 0; i < ${WARMUP + STEPS}; i++) {
  const samples = batchIndices(data.train.size, stage.batch_size, i, 1000003).map((k) => data.train.get(k));
  const encoded = samples.map((s) => encodeSample(model, tok, s, stage.max_slices));
  const packed = pack(encoded.map((e) => e.layout), stage.pack_length);
  const inputs = packed.map((g) => ({
    ids: uhd.tensor([Array.from(g.ids)], { dtype: 'int32', device: 'webgpu' }),
    labels: uhd.tensor(g.labels, { dtype: 'int32', device: 'webgpu' }),
    seg: uhd.tensor([Array.from(g.segmentIds)], { dtype: 'int32', device: 'webgpu' }),
    pixels: g.samples.flatMap((m) => viewPixels(encoded[m.index].pixels, 'webgpu')),
    unk: g.unkPositions,
  }));
  await device.queue.onSubmittedWorkDone();
  const probeMs = speed();
  const before = { ...t };
  const t0 = performance.now();
  const mean = uhd.tidy(() => {
    const ls = inputs.map((g) => crossEntropy(ag.reshape(model.forward(g.ids, g.pixels, g.unk, { segmentIds: g.seg }), [-1, vocab]), g.labels));
    const m = ag.div(ls.reduce((acc, l) => (acc ? ag.add(acc, l) : l), null), ls.length);
    m.backward();
    return m;
  });
  await mean.item();
  mean.dispose();
  uhd.tidy(() => {
    clipGradNorm(named.map(([, p]) => p), LLAVA_UHD_ADAMW.maxGradNorm).dispose();
    opt.step();
    opt.zeroGrad();
    return undefined;
  });
  await ctx().sync();
  const wall = performance.now() - t0;
  const hostMs = wall - (t.submit - before.submit) - (t.wait - before.wait);
  if (i >= ${WARMUP}) rows.push({ hostMs, dispatches: t.dispatches - before.dispatches, probeMs });
  for (const g of inputs) for (const x of [g.ids, g.labels, g.seg, ...g.pixels]) x.dispose();
}
opt.dispose();
for (const p of model.parameters()) p.dispose();
shutdown();
console.log('PROBE ' + JSON.stringify(rows));
`;

interface Row { hostMs: number; dispatches: number; probeMs: number }
const { rows, machine } = runProbes<Row>(trees, PROBE, probe, ROUNDS);
const out: string[] = [];
out.push(`${ROUNDS} rounds x ${STEPS} steps after ${WARMUP} warm-up ones per tree, alternating, one probe for all (Dawn timed from outside); ${describeMachine(machine)}`);
// Each step's host time is also scaled by the speed probe taken just before it, to the run's
// median probe: the machine's speed changes within minutes (the probe has ranged 2x in one run).
const allProbes = [...rows.values()].flat().map((r) => r.probeMs);
const ref = median(allProbes);
out.push(`speed-scaled columns: each step's host time x (median probe ${ref.toFixed(2)} ms / the probe just before that step)`);
out.push('| tree | host µs/dispatch | speed-scaled | host ms/step | speed-scaled | dispatches/step | host µs/dispatch by round |');
out.push('|---|---:|---:|---:|---:|---:|---|');
for (const [t, rs] of rows) {
  const m = (f: (r: Row) => number) => median(rs.map(f));
  const perRound = Array.from({ length: ROUNDS }, (_, r) => median(rs.slice(r * STEPS, (r + 1) * STEPS).map((x) => (1e3 * x.hostMs) / x.dispatches)).toFixed(1));
  out.push(`| ${describeTree(t)} | ${m((r) => (1e3 * r.hostMs) / r.dispatches).toFixed(1)} | ${m((r) => (1e3 * r.hostMs * ref) / r.probeMs / r.dispatches).toFixed(1)} | ${m((r) => r.hostMs).toFixed(1)} | ${m((r) => (r.hostMs * ref) / r.probeMs).toFixed(1)} | ${m((r) => r.dispatches)} | ${perRound.join(' ')} |`);
}
const text = [`# host-baseline`, '', `${new Date().toISOString()} · trees: ${trees.map(describeTree).join(', ')}`, '', ...out].join('\n') + '\n';
const OUT = join(dirname(fileURLToPath(import.meta.url)), '..', 'results');
mkdirSync(OUT, { recursive: true });
writeFileSync(join(OUT, 'host-baseline.md'), text);
console.log(text);
