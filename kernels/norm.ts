/**
 * Fused layer norm and RMS norm over the last dim, in one dispatch. Each row is split over
 * `lanes` threads of a workgroup (`rowTiling` in kernels/reduce.ts: a long row gets a workgroup
 * to itself, shorter rows share one, rows of up to 127 elements get one thread each): every lane
 * gathers statistics over its share of the row in one pass, a tree in shared memory combines
 * the lanes, and a second pass writes the normalised row.
 *
 * Layer norm's statistics use Welford's update per lane and Chan's pairwise merge across lanes,
 * so the variance never comes from a difference of two large sums. They are taken of x - s, s
 * the row's first element, and the output is ((x - s) - mean) * inv: for inputs like 1000 plus
 * small noise every difference is exact and the mean of the small remainders keeps full
 * precision, where a mean of about 1000 held in f32 would be off by up to half an ulp (3e-5).
 */
import type { Tensor } from '../tensor/tensor.js';
import { isDense, Uniforms } from './layout.js';
import { PlanCache, pushList, type PlannedDispatch } from './plans.js';
import { bufferOf, ctx } from './runtime.js';
import { dimsOf, laneTree, offsetFn, pushDenseRows, rowsAsVec4, rowsSetter, rowTiling, tileGrid, tilePrelude, type RowTiling } from './reduce.js';

interface NormSpec {
  kind: 'layer' | 'rms';
  tiling: RowTiling;
  outerRank: number;
  hasWeight: boolean;
  hasBias: boolean;
  /** Rows are contiguous, 16-byte aligned and a multiple of 4 long: x and out move as vec4f. */
  vec4: boolean;
}

function normWgsl(s: NormSpec, u: Uniforms): string {
  const { lanes } = s.tiling;
  const threads = s.tiling.cols * lanes;
  const layer = s.kind === 'layer';
  const V = s.vec4 ? 'vec4f' : 'f32';
  // x and o first, the parameters last: the runtime gives the first three bindings a bind group
  // each and shares one among the rest, which then (a bias) stays the same from step to step
  let binding = 3;
  const decls = [`@group(0) @binding(1) var<storage, read> x: array<${V}>;`, `@group(0) @binding(2) var<storage, read_write> o: array<${V}>;`];
  if (s.hasWeight) decls.push(`@group(0) @binding(${binding++}) var<storage, read> w: array<f32>;`);
  if (s.hasBias) decls.push(`@group(0) @binding(${binding++}) var<storage, read> b: array<f32>;`);

  // Unit i of a row (an element, or 4 of them as a vec4f), and of weight and bias (any stride).
  const param = (name: string) =>
    s.vec4
      ? `fn ${name}_at(i: u32) -> vec4f {
  let at = P.${name}_off + 4u * i * P.${name}_str;
  return vec4f(${name}[at], ${name}[at + P.${name}_str], ${name}[at + 2u * P.${name}_str], ${name}[at + 3u * P.${name}_str]);
}`
      : `fn ${name}_at(i: u32) -> f32 { return ${name}[P.${name}_off + i * P.${name}_str]; }`;
  const accessors = [
    s.vec4
      ? 'fn x_at(base: u32, i: u32) -> vec4f { return x[base / 4u + i]; }'
      : 'fn x_at(base: u32, i: u32) -> f32 { return x[base + i * P.x_last]; }',
    s.vec4 ? 'fn o_set(base: u32, i: u32, v: vec4f) { o[base / 4u + i] = v; }' : 'fn o_set(base: u32, i: u32, v: f32) { o[base + i] = v; }',
    ...(s.hasWeight ? [param('w')] : []),
    ...(s.hasBias ? [param('b')] : []),
  ];

  // Per lane: layer norm keeps (count, mean, M2) by Welford's update (per component of a vec4,
  // all with the same count); RMS norm a sum of squares. Then the components fold into one.
  const stats = layer ? `  var n = 0.0;
  var mean = ${V}(0.0);
  var m2 = ${V}(0.0);` : `  var ss = ${V}(0.0);`;
  const update = layer
    ? `      n += 1.0;
      let d = (v - shift) - mean;
      mean += d / n;
      m2 += d * ((v - shift) - mean);`
    : '      ss += v * v;';
  const fold = !s.vec4
    ? layer ? '  var ln = n;\n  var lmean = mean;\n  var lm2 = m2;' : '  var lss = ss;'
    : layer
      ? `  // four equal-count parts: M2 = sum of M2s + n * sum of squared deviations of their means
  var ln = 4.0 * n;
  var lmean = dot(mean, vec4f(0.25));
  let dm = mean - lmean;
  var lm2 = dot(m2, vec4f(1.0)) + n * dot(dm, dm);`
      : '  var lss = dot(ss, vec4f(1.0));';
  const shared = lanes === 1 ? '' : layer
    ? `var<workgroup> sh_n: array<f32, ${threads}>;\nvar<workgroup> sh_mean: array<f32, ${threads}>;\nvar<workgroup> sh_m2: array<f32, ${threads}>;`
    : `var<workgroup> sh_ss: array<f32, ${threads}>;`;
  // Chan et al.: merging (na, ma, M2a) and (nb, mb, M2b).
  const merge = layer
    ? `      let na = sh_n[slot]; let nb = sh_n[slot + stride];
      let nn = na + nb;
      if (nb > 0.0) {
        let d = sh_mean[slot + stride] - sh_mean[slot];
        sh_mean[slot] = sh_mean[slot] + d * (nb / nn);
        sh_m2[slot] = sh_m2[slot] + sh_m2[slot + stride] + d * d * (na * nb / nn);
        sh_n[slot] = nn;
      }`
    : '      sh_ss[slot] = sh_ss[slot] + sh_ss[slot + stride];';
  const store = lanes === 1 ? '' : layer
    ? '  sh_n[slot] = ln;\n  sh_mean[slot] = lmean;\n  sh_m2[slot] = lm2;'
    : '  sh_ss[slot] = lss;';
  const load = lanes === 1 ? '' : layer
    ? `  lmean = sh_mean[col * ${lanes}u];\n  lm2 = sh_m2[col * ${lanes}u];`
    : `  lss = sh_ss[col * ${lanes}u];`;
  const scale = layer ? 'let inv = 1.0 / sqrt(lm2 / f32(P.len) + P.eps);' : 'let inv = 1.0 / sqrt(lss / f32(P.len) + P.eps);';
  let y = layer ? '((v - shift) - lmean) * inv' : 'v * inv';
  if (s.hasWeight) y = `${y} * w_at(i)`;
  if (s.hasBias) y = `${y} + b_at(i)`;
  const units = s.vec4 ? 'P.len / 4u' : 'P.len';

  return /* wgsl */ `
${u.declaration()}
${decls.join('\n')}
${shared}
${offsetFn('outer_offset', s.outerRank, 'oshape', 'ostr')}
${accessors.join('\n')}

@compute @workgroup_size(${threads})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
${tilePrelude(s.tiling)}
  // Pass 1: this lane's statistics over units lane, lane + ${lanes}, ...
${stats}
  var base = 0u;
  var shift = 0.0;
  let units = ${units};
  if (live) {
    base = P.x_off + outer_offset(row);
    ${layer ? `shift = x_at(base, 0u)${s.vec4 ? '.x' : ''}; // statistics of x - x[0]: exact differences, so a large mean costs no precision` : ''}
    for (var i = lane; i < units; i += ${lanes}u) {
      let v = x_at(base, i);
${update}
    }
  }
${fold}
${store}
${laneTree(lanes, merge)}
${load}
  if (!live) { return; }
  // Pass 2: normalise (biased variance, as PyTorch), then the affine weight and bias.
  ${scale}
  let ob = P.o_off + row * P.len;
  for (var i = lane; i < units; i += ${lanes}u) {
    let v = x_at(base, i);
    o_set(ob, i, ${y});
  }
}`;
}

/** A norm of one signature; the operands' offsets are written per call. */
interface NormPlan extends PlannedDispatch {
  label: string;
  /** Words of x_off, o_off, w_off, b_off. */
  offsetWords: readonly number[];
  workgroups: readonly [number, number];
  /** Over dense rows: writes the row count, returns the workgroups. */
  setRows: (rows: number) => readonly [number, number];
}
const normPlans = new PlanCache<NormPlan>();

function norm(kind: 'layer' | 'rms', x: Tensor, weight: Tensor | null, bias: Tensor | null, eps: number, out: Tensor): void {
  const len = x.shape[x.rank - 1];
  const rows = len === 0 ? 0 : x.size / len;
  if (rows === 0) return;
  const c = ctx();
  const sig = normPlans.start(c);
  const dense = isDense(x);
  sig.push(kind === 'layer' ? 1 : 0, eps, x.offset & 3, out.offset & 3, weight ? weight.strides[0] : -1, bias ? bias.strides[0] : -1, len, x.strides[x.rank - 1]);
  if (dense) pushDenseRows(sig, rows);
  else {
    pushList(sig, x.shape);
    pushList(sig, x.strides);
  }
  const plan = normPlans.find() ?? normPlans.add(normPlan(kind, x, weight, bias, eps, out, rows, len));
  const w = plan.words;
  const at = plan.offsetWords;
  w[at[0]] = x.offset;
  w[at[1]] = out.offset;
  w[at[2]] = weight ? weight.offset : 0;
  w[at[3]] = bias ? bias.offset : 0;
  const buffers = [bufferOf(x), bufferOf(out)];
  if (weight) buffers.push(bufferOf(weight));
  if (bias) buffers.push(bufferOf(bias));
  c.dispatch({ label: plan.label, key: plan.key, code: plan.code, uniforms: w, buffers, workgroups: dense ? plan.setRows(rows) : plan.workgroups });
}

function normPlan(kind: 'layer' | 'rms', x: Tensor, weight: Tensor | null, bias: Tensor | null, eps: number, out: Tensor, rows: number, len: number): NormPlan {
  const outer = dimsOf(x, 0, x.rank - 1);
  const last = x.strides[x.rank - 1];
  const tiling = rowTiling(rows, len, last === 1 || len === 1, false);
  const u = new Uniforms()
    .u32('rows', rows)
    .u32('len', len)
    .f32('eps', eps)
    .u32('x_off', 0)
    .u32('x_last', last)
    .u32('o_off', 0)
    .u32('w_off', 0)
    .u32('w_str', weight?.strides[0] ?? 0)
    .u32('b_off', 0)
    .u32('b_str', bias?.strides[0] ?? 0)
    .vec8('oshape', outer.shape)
    .vec8('ostr', outer.strides);
  const spec: NormSpec = {
    kind, tiling, outerRank: outer.shape.length, hasWeight: weight !== null, hasBias: bias !== null,
    vec4: rowsAsVec4(x, outer, out),
  };
  const words = u.words32();
  return {
    label: kind === 'layer' ? 'layerNorm' : 'rmsNorm',
    key: `norm|${JSON.stringify(spec)}`,
    code: () => normWgsl(spec, u),
    words,
    setRows: rowsSetter(words, u, tiling),
    offsetWords: ['x_off', 'o_off', 'w_off', 'b_off'].map((f) => u.wordOf(f)),
    workgroups: tileGrid(rows, tiling),
  };
}

/**
 * (x - mean) / sqrt(var + eps) * weight + bias over the last dim of x (any strided view),
 * biased variance; weight and bias are [D] (possibly strided) or null; out is contiguous.
 */
export function layerNorm(x: Tensor, weight: Tensor | null, bias: Tensor | null, eps: number, out: Tensor): void {
  norm('layer', x, weight, bias, eps, out);
}

/** x / sqrt(mean(x^2) + eps) * weight over the last dim of x (any strided view); out is contiguous. */
export function rmsNorm(x: Tensor, weight: Tensor | null, eps: number, out: Tensor): void {
  norm('rms', x, weight, null, eps, out);
}
