/**
 * `npm run bench:frontends [-- --calls N --rounds R --ab]`: host µs per call of the
 * kernels' front ends (kernels/elementwise, reduce, norm, matmul, attention, multi-tensor) at
 * the tiny model's shapes (widths 32-256, 128-512 rows), called directly with preallocated
 * outputs, so only the front end and the runtime's dispatch are timed.
 *
 *   host µs per call = (wall of N calls - time inside queue.submit) / N
 *
 * The runtime submits on its own every 512 dispatches, and on Dawn's GL backend the kernels run
 * inside queue.submit: that time (gpuContext().stats.submitMs) is taken out, and the final
 * sync of each round is outside the timed part. Each row is the median of R rounds. The first
 * row, a `dispatch` of fixed arguments, is the runtime's share alone (no front end).
 *
 * To compare two versions, run this file of each in alternating processes and say the load.
 * `--ab` compares plans on and off (kernels/plans.ts) in one process: off, every call is a miss.
 */
import os from 'node:os';
import { gpuContext, initWebGPU, shutdown } from '../../kernels/index.js';
import { attention } from '../../kernels/attention.js';
import { binary, copy } from '../../kernels/elementwise.js';
import { linear, matmul } from '../../kernels/matmul.js';
import { adamwMany } from '../../kernels/multi-tensor.js';
import { layerNorm, rmsNorm } from '../../kernels/norm.js';
import { reduce } from '../../kernels/reduce.js';
import { planCaching } from '../../kernels/plans.js';
import { bufferOf } from '../../kernels/runtime.js';
import type { AdamWItem } from '../../tensor/backend.js';
import * as uhd from '../../tensor/index.js';
import { Tensor } from '../../tensor/index.js';
import { takeCount } from '../args.js';

const args = process.argv.slice(2);
const CALLS = takeCount(args, '--calls', 200);
const ROUNDS = takeCount(args, '--rounds', 7);
/** --ab: each round times every call with plans on and with them off (kernels/plans.ts), in one process. */
const AB = args.includes('--ab');

await initWebGPU();
const c = gpuContext();
const load0 = os.loadavg();

const gpu = (shape: number[]) => uhd.randn(shape, { device: 'webgpu' });
const empty = (shape: number[]) => Tensor.empty(shape, 'float32', 'webgpu');
const zeros = (shape: number[]) => uhd.zeros(shape, { device: 'webgpu' });

type Case = { name: string; call: () => void };
const cases: Case[] = [];

{
  const a = gpu([512, 64]);
  const b = gpu([512, 64]);
  const out = empty([512, 64]);
  // the runtime alone: a copy's dispatch (uniforms of a rank-1 view) with its arguments built once
  const u = new Uint32Array(36); // the struct below: 33 words, in whole 16-byte rows
  u[0] = a.size;
  u[4] = a.size; // shape
  u[12] = 1; // x's stride
  u[24] = 1; // o's stride
  const code = `struct Params { n: u32, shape: array<vec4u, 2>, x_str: array<vec4u, 2>, x_off: u32, o_str: array<vec4u, 2>, o_off: u32 }
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> o: array<f32>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) g: vec3u) { if (g.x < P.n) { o[g.x] = x[g.x]; } }`;
  const fixed = { label: 'fixed', key: 'bench fixed copy', code, uniforms: u.buffer, buffers: [bufferOf(a), bufferOf(out)], workgroups: [128, 1] as [number, number] };
  cases.push({ name: 'runtime dispatch alone (fixed args)', call: () => c.dispatch(fixed) });
  cases.push({ name: 'add [512,64] + [512,64]', call: () => binary('add', a, b, out) });
  const w = gpu([64]);
  const wb = w.expand([512, 64]);
  cases.push({ name: 'mul [512,64] * [64] (broadcast)', call: () => binary('mul', a, wb, out) });
}
{
  const x = gpu([8, 64, 2, 16]);
  const xp = x.permute(0, 2, 1, 3);
  const out = empty([8, 2, 64, 16]);
  cases.push({ name: 'copy permuted [8,64,2,16] -> [8,2,64,16]', call: () => copy(xp, out) });
}
{
  const x = gpu([512, 64]);
  const rows = empty([512]);
  const cols = empty([64]);
  const xt = x.transpose(0, 1);
  cases.push({ name: 'sum [512,64] over dim 1', call: () => reduce('sum', x, 1, rows) });
  cases.push({ name: 'sum [512,64] over dim 0', call: () => reduce('sum', xt, 1, cols) });
  const w = gpu([64]);
  const b = gpu([64]);
  const out = empty([512, 64]);
  cases.push({ name: 'layerNorm [512,64] (weight, bias)', call: () => layerNorm(x, w, b, 1e-5, out) });
  cases.push({ name: 'rmsNorm [512,64] (weight)', call: () => rmsNorm(x, w, 1e-6, out) });
}
{
  const a = gpu([512, 64]);
  const b = gpu([64, 128]);
  const out = empty([512, 128]);
  cases.push({ name: 'matmul [512,64] @ [64,128]', call: () => matmul(a, b, out) });
  const qa = gpu([8, 2, 64, 16]);
  const kb = gpu([8, 2, 64, 16]).transpose(-2, -1);
  const s = empty([8, 2, 64, 64]);
  cases.push({ name: 'matmul [8,2,64,16] @ [8,2,16,64]ᵀ (batched)', call: () => matmul(qa, kb, s) });
  const w = gpu([256, 64]);
  const bias = gpu([256]);
  const y = empty([512, 256]);
  const pre = empty([512, 256]);
  cases.push({ name: 'linear [512,64] x [256,64]ᵀ + bias, gelu, preact', call: () => void linear(a, w, bias, null, 'gelu', y, pre) });
}
{
  const q = gpu([1, 2, 256, 16]);
  const k = gpu([1, 2, 256, 16]);
  const v = gpu([1, 2, 256, 16]);
  const seg = uhd.tensor([Array.from({ length: 256 }, (_, i) => (i < 100 ? 0 : 1))], { dtype: 'int32', device: 'webgpu' });
  const out = empty([1, 2, 256, 16]);
  const p = { scale: 0.25, causal: true, segmentIdsQ: seg, segmentIdsK: seg, window: null };
  cases.push({ name: 'attention [1,2,256,16] causal, segment ids', call: () => attention(q, k, v, p, out) });
}
{
  const shapes = [[64, 64], [64], [256, 64], [64, 256], [256], [32, 64], [64, 32], [32], [128, 64], [64, 128]];
  const items: AdamWItem[] = [];
  for (let i = 0; i < 20; i++) {
    const shape = shapes[i % shapes.length];
    items.push({ param: gpu(shape), grad: gpu(shape), m: zeros(shape), v: zeros(shape), h: { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, step: 1 } });
  }
  // how many dispatches the 20 make depends on the adapter's bindings: counted, not assumed
  const before = c.stats.dispatches;
  adamwMany(items);
  cases.push({ name: `adamwMany over 20 tensors (${c.stats.dispatches - before} dispatches)`, call: () => void adamwMany(items) });
}

/** µs per call of `call`, outside queue.submit. */
async function time(call: () => void, n: number): Promise<number> {
  await c.sync();
  const s0 = c.stats.submitMs;
  const t0 = performance.now();
  for (let i = 0; i < n; i++) call();
  const wall = performance.now() - t0;
  const inSubmit = c.stats.submitMs - s0;
  await c.sync();
  return (1e3 * (wall - inSubmit)) / n;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

try {
  for (const cs of cases) await time(cs.call, 8); // compile pipelines, fill caches
  const modes = AB ? [true, false] : [true];
  const samples = new Map<string, number[]>();
  const at = (name: string, plans: boolean) => {
    const k = `${name}|${plans}`;
    if (!samples.has(k)) samples.set(k, []);
    return samples.get(k)!;
  };
  // rounds interleave the cases (and the modes), so slow phases of a noisy machine spread over all of them
  for (let r = 0; r < ROUNDS; r++) {
    for (const cs of cases) {
      for (const plans of modes) {
        planCaching.enabled = plans;
        at(cs.name, plans).push(await time(cs.call, CALLS));
      }
    }
  }
  planCaching.enabled = true;
  const load1 = os.loadavg();
  const fmt = (l: number[]) => l.map((x) => x.toFixed(2)).join(' ');
  console.log(`# kernel front ends: host µs per call (median of ${ROUNDS} rounds of ${CALLS} calls)`);
  console.log(`load average ${fmt(load0)} before, ${fmt(load1)} after; node ${process.version}`);
  console.log('');
  const cell = (xs: number[]) => `${median(xs).toFixed(1)} | ${Math.min(...xs).toFixed(1)}`;
  console.log(AB ? '| call | plans: µs per call | min | no plans: µs per call | min |' : '| call | µs per call | min | max |');
  console.log(AB ? '|---|---:|---:|---:|---:|' : '|---|---:|---:|---:|');
  for (const cs of cases) {
    const xs = at(cs.name, true);
    console.log(AB ? `| ${cs.name} | ${cell(xs)} | ${cell(at(cs.name, false))} |` : `| ${cs.name} | ${cell(xs)} | ${Math.max(...xs).toFixed(1)} |`);
  }
} finally {
  shutdown();
}
