/**
 * LayerNorm forward lab (llm.c style): each variant is checked against the CPU reference, then
 * timed, on dense [rows, len] inputs with an affine weight and bias. Variants:
 *
 *   1. one thread per row: statistics and output in two passes over the row, no sharing;
 *   2. one workgroup (64 threads) per row: per-thread partial sums, a tree in workgroup memory;
 *   3. as 2, but each subgroup sums its partials with subgroupAdd and only one value per
 *      subgroup goes through workgroup memory (needs the 'subgroups' feature);
 *   4. the library's kernels/norm.ts: `rowTiling` splits a row over `lanes` threads (16 for a
 *      row of 1152, so 16 rows share a workgroup of 256; one thread per row below 128 elements),
 *      Welford statistics per lane merged by Chan's formula in a tree in workgroup memory.
 *
 * Variants 1-3 move rows as vec4f and take the statistics as shifted sums, of x - x[0] and its
 * square, (exact enough for the random rows here; the library's Welford update is the robust
 * form). Throughput is GB/s of the least traffic: x read once, y written once, weight and bias.
 *
 *   npx tsx bench/lab/layernorm-variants.ts [ROWSxLEN ...] [--quick] [--samples n] [--wall]
 */
import { grid, Uniforms } from '../../kernels/layout.js';
import { layerNorm as libraryLayerNorm } from '../../kernels/norm.js';
import { bufferOf, ctx } from '../../kernels/runtime.js';
import * as uhd from '../../tensor/index.js';
import type { Tensor } from '../../tensor/index.js';
import { runLab } from './report.js';
import { itersFor, timeInterleaved } from './timing.js';

const EPS = 1e-6;
/** Threads per workgroup of variants 2 and 3. */
const ROW_WG = 64;

interface Variant {
  name: string;
  /** A device feature the variant needs; without it the variant is skipped with a note. */
  needs?: GPUFeatureName;
  /** Queues out = layerNorm(x) * w + b for dense x: [rows, len], len a multiple of 4. */
  run: (x: Tensor, w: Tensor, b: Tensor, out: Tensor) => void;
}

const uniforms = (rows: number, len: number) => new Uniforms().u32('rows', rows).u32('len4', len / 4).f32('eps', EPS);

const BINDINGS = /* wgsl */ `
@group(0) @binding(1) var<storage, read> x: array<vec4f>;
@group(0) @binding(2) var<storage, read> w: array<vec4f>;
@group(0) @binding(3) var<storage, read> b: array<vec4f>;
@group(0) @binding(4) var<storage, read_write> o: array<vec4f>;`;

/** WGSL: from the row's shifted sums s1, s2 (over n = 4 len4 elements) to `mean` and `inv`. */
const STATS = /* wgsl */ `
  let n = f32(P.len4 * 4u);
  let mean = s1 / n;
  let inv = inverseSqrt(max(s2 / n - mean * mean, 0.0) + P.eps);`;

function dispatch(label: string, code: string, x: Tensor, w: Tensor, b: Tensor, out: Tensor, workgroups: [number, number]): void {
  const [rows, len] = x.shape;
  ctx().dispatch({ label, code, uniforms: uniforms(rows, len).bytes(), buffers: [x, w, b, out].map(bufferOf), workgroups });
}

function threadPerRow(): Variant {
  const code = /* wgsl */ `
${uniforms(0, 0).declaration()}
${BINDINGS}
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let row = gid.y * nwg.x * 64u + gid.x;
  if (row >= P.rows) { return; }
  let base = row * P.len4;
  let shift = x[base].x;
  var a1 = vec4f(0.0);
  var a2 = vec4f(0.0);
  for (var i = 0u; i < P.len4; i++) {
    let d = x[base + i] - shift;
    a1 += d;
    a2 += d * d;
  }
  let s1 = dot(a1, vec4f(1.0));
  let s2 = dot(a2, vec4f(1.0));
${STATS}
  for (var i = 0u; i < P.len4; i++) {
    o[base + i] = ((x[base + i] - shift) - mean) * inv * w[i] + b[i];
  }
}`;
  return {
    name: '1 thread per row',
    run: (x, w, b, out) => dispatch('lab layerNorm thread/row', code, x, w, b, out, grid(x.shape[0], 64)),
  };
}

/** Shared by variants 2 and 3: per-thread partial shifted sums a1, a2 over the row, then `reduce`, then the write pass. */
function workgroupPerRowWgsl(reduce: string, header = '', shared = ''): string {
  return /* wgsl */ `${header}
${uniforms(0, 0).declaration()}
${BINDINGS}
${shared}
@compute @workgroup_size(${ROW_WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32, @builtin(num_workgroups) nwg: vec3u) {
  let row = wid.y * nwg.x + wid.x;   // uniform across the workgroup, so returning keeps barriers uniform
  if (row >= P.rows) { return; }
  let base = row * P.len4;
  let shift = x[base].x;
  var a1 = vec4f(0.0);
  var a2 = vec4f(0.0);
  for (var i = lid; i < P.len4; i += ${ROW_WG}u) {
    let d = x[base + i] - shift;
    a1 += d;
    a2 += d * d;
  }
  let p1 = dot(a1, vec4f(1.0));
  let p2 = dot(a2, vec4f(1.0));
${reduce}
${STATS}
  for (var i = lid; i < P.len4; i += ${ROW_WG}u) {
    o[base + i] = ((x[base + i] - shift) - mean) * inv * w[i] + b[i];
  }
}`;
}

function workgroupTree(): Variant {
  const code = workgroupPerRowWgsl(/* wgsl */ `
  sh1[lid] = p1;
  sh2[lid] = p2;
  workgroupBarrier();
  for (var stride = ${ROW_WG / 2}u; stride > 0u; stride /= 2u) {
    if (lid < stride) {
      sh1[lid] += sh1[lid + stride];
      sh2[lid] += sh2[lid + stride];
    }
    workgroupBarrier();
  }
  let s1 = sh1[0];
  let s2 = sh2[0];`, '', `var<workgroup> sh1: array<f32, ${ROW_WG}>;\nvar<workgroup> sh2: array<f32, ${ROW_WG}>;`);
  return {
    name: `2 workgroup (${ROW_WG}) per row, shared-memory tree`,
    run: (x, w, b, out) => dispatch('lab layerNorm wg/row', code, x, w, b, out, grid(x.shape[0], 1)),
  };
}

/**
 * Each subgroup sums its threads' partials in registers (subgroupAdd); one elected thread per
 * subgroup appends the two sums to workgroup memory (an atomic counter gives the slot, since
 * how threads map to subgroups is up to the implementation); everyone then adds the slots.
 */
function subgroupReduce(): Variant {
  const code = workgroupPerRowWgsl(/* wgsl */ `
  if (lid == 0u) { atomicStore(&slots, 0u); }
  workgroupBarrier();
  let t1 = subgroupAdd(p1);
  let t2 = subgroupAdd(p2);
  if (subgroupElect()) {
    let s = atomicAdd(&slots, 1u);
    sh1[s] = t1;
    sh2[s] = t2;
  }
  workgroupBarrier();
  let count = atomicLoad(&slots);
  var s1 = 0.0;
  var s2 = 0.0;
  for (var s = 0u; s < count; s++) {
    s1 += sh1[s];
    s2 += sh2[s];
  }`, 'enable subgroups;', `var<workgroup> sh1: array<f32, ${ROW_WG}>;\nvar<workgroup> sh2: array<f32, ${ROW_WG}>;\nvar<workgroup> slots: atomic<u32>;`);
  return {
    name: `3 workgroup (${ROW_WG}) per row, subgroupAdd`,
    needs: 'subgroups' as GPUFeatureName,
    run: (x, w, b, out) => dispatch('lab layerNorm subgroups', code, x, w, b, out, grid(x.shape[0], 1)),
  };
}

function library(): Variant {
  return { name: '4 library kernels/norm.ts (rowTiling lanes per row)', run: (x, w, b, out) => libraryLayerNorm(x, w, b, EPS, out) };
}

const VARIANTS = [threadPerRow(), workgroupTree(), subgroupReduce(), library()];

await runLab('layernorm-variants', async (report) => {
  const { rest, samples, quick } = report.settings;
  const shapes = (rest.length ? rest : ['1024x1152', '4096x1152', '1024x32']).map((s) => s.split('x').map(Number) as [number, number]);
  const features = ctx().device.features;
  for (const v of VARIANTS) {
    if (v.needs && !features.has(v.needs)) report.note(`variant "${v.name}" skipped: the device has no '${v.needs}' feature`);
  }
  const table = report.table('layerNorm forward, f32, affine (weight and bias)', ['shape', 'variant', 'median ms', 'GB/s', 'max abs err', 'iters/sample']);
  for (const [rows, len] of shapes) {
    if (len % 4) throw new Error(`layernorm lab: len ${len} must be a multiple of 4 (the variants move vec4f)`);
    uhd.manualSeed(rows + len);
    const x = uhd.randn([rows, len]);
    const w = uhd.randn([len]);
    const b = uhd.randn([len]);
    const want = await uhd.layerNorm(x, w, b, EPS).data();
    const [gx, gw, gb] = [x, w, b].map((t) => t.to('webgpu'));
    const bytes = 4 * (2 * rows * len + 2 * len);
    // check every variant first (this also compiles its pipeline), then time them interleaved
    const timed: { v: Variant; out: Tensor; run: () => void; iters: number; err: number }[] = [];
    for (const v of VARIANTS) {
      if (v.needs && !features.has(v.needs)) continue;
      const out = uhd.Tensor.empty([rows, len], 'float32', 'webgpu');
      const run = () => v.run(gx, gw, gb, out);
      run();
      const got = await out.data();
      let err = 0;
      for (let i = 0; i < want.length; i++) err = Math.max(err, Math.abs(got[i] - want[i]));
      if (!(err < 1e-4)) {
        report.row(table, [`${rows}x${len}`, v.name, 'WRONG', '', err.toExponential(1), '']);
        out.dispose();
        continue;
      }
      timed.push({ v, out, run, err, iters: await itersFor(report.timer, run, quick ? 20 : 50) });
    }
    const ms = await timeInterleaved(report.timer, timed, samples);
    timed.forEach((t, i) => {
      report.row(table, [`${rows}x${len}`, t.v.name, ms[i], bytes / (ms[i] / 1e3) / 1e9, t.err.toExponential(1), t.iters]);
      t.out.dispose();
    });
    for (const t of [x, w, b, gx, gw, gb]) t.dispose();
  }
});
