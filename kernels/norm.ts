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
import { Uniforms } from './layout.js';
import { bufferOf, ctx } from './runtime.js';
import { dimsOf, laneTree, offsetFn, rowTiling, tileGrid, tilePrelude, type RowTiling } from './reduce.js';

interface NormSpec {
  kind: 'layer' | 'rms';
  tiling: RowTiling;
  outerRank: number;
  hasWeight: boolean;
  hasBias: boolean;
}

function normWgsl(s: NormSpec, u: Uniforms): string {
  const { lanes } = s.tiling;
  const threads = s.tiling.cols * lanes;
  const layer = s.kind === 'layer';
  let binding = 2;
  const decls = ['@group(0) @binding(1) var<storage, read> x: array<f32>;'];
  if (s.hasWeight) decls.push(`@group(0) @binding(${binding++}) var<storage, read> w: array<f32>;`);
  if (s.hasBias) decls.push(`@group(0) @binding(${binding++}) var<storage, read> b: array<f32>;`);
  decls.push(`@group(0) @binding(${binding}) var<storage, read_write> o: array<f32>;`);

  // Per lane: layer norm keeps (count, mean, M2) by Welford's update; RMS norm a sum of squares.
  const stats = layer
    ? `  var n = 0.0;
  var mean = 0.0;
  var m2 = 0.0;`
    : '  var ss = 0.0;';
  const update = layer
    ? `      n += 1.0;
      let d = (v - shift) - mean;
      mean += d / n;
      m2 += d * ((v - shift) - mean);`
    : '      ss += v * v;';
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
    ? '  sh_n[slot] = n;\n  sh_mean[slot] = mean;\n  sh_m2[slot] = m2;'
    : '  sh_ss[slot] = ss;';
  const load = lanes === 1 ? '' : layer
    ? `  mean = sh_mean[col * ${lanes}u];\n  m2 = sh_m2[col * ${lanes}u];`
    : `  ss = sh_ss[col * ${lanes}u];`;
  const scale = layer ? 'let inv = 1.0 / sqrt(m2 / f32(P.len) + P.eps);' : 'let inv = 1.0 / sqrt(ss / f32(P.len) + P.eps);';
  let y = layer ? '((v - shift) - mean) * inv' : 'v * inv';
  if (s.hasWeight) y = `${y} * w[P.w_off + i * P.w_str]`;
  if (s.hasBias) y = `${y} + b[P.b_off + i * P.b_str]`;

  return /* wgsl */ `
${u.declaration()}
${decls.join('\n')}
${shared}
${offsetFn('outer_offset', s.outerRank, 'oshape', 'ostr')}

@compute @workgroup_size(${threads})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
${tilePrelude(s.tiling)}
  // Pass 1: this lane's statistics over elements lane, lane + ${lanes}, ...
${stats}
  var base = 0u;
  var shift = 0.0;
  if (live) {
    base = P.x_off + outer_offset(row);
    ${layer ? 'shift = x[base]; // statistics of x - x[0]: exact differences, so a large mean costs no precision' : ''}
    for (var i = lane; i < P.len; i += ${lanes}u) {
      let v = x[base + i * P.x_last];
${update}
    }
  }
${store}
${laneTree(lanes, merge)}
${load}
  if (!live) { return; }
  // Pass 2: normalise (biased variance, as PyTorch), then the affine weight and bias.
  ${scale}
  let ob = P.o_off + row * P.len;
  for (var i = lane; i < P.len; i += ${lanes}u) {
    let v = x[base + i * P.x_last];
    o[ob + i] = ${y};
  }
}`;
}

function norm(kind: 'layer' | 'rms', x: Tensor, weight: Tensor | null, bias: Tensor | null, eps: number, out: Tensor): void {
  const len = x.shape[x.rank - 1];
  const rows = len === 0 ? 0 : x.size / len;
  if (rows === 0) return;
  const outer = dimsOf(x, 0, x.rank - 1);
  const last = x.strides[x.rank - 1];
  const tiling = rowTiling(rows, len, last === 1 || len === 1, false);
  const u = new Uniforms()
    .u32('rows', rows)
    .u32('len', len)
    .f32('eps', eps)
    .u32('x_off', x.offset)
    .u32('x_last', last)
    .u32('o_off', out.offset)
    .u32('w_off', weight?.offset ?? 0)
    .u32('w_str', weight?.strides[0] ?? 0)
    .u32('b_off', bias?.offset ?? 0)
    .u32('b_str', bias?.strides[0] ?? 0)
    .vec8('oshape', outer.shape)
    .vec8('ostr', outer.strides);
  const spec: NormSpec = { kind, tiling, outerRank: outer.shape.length, hasWeight: weight !== null, hasBias: bias !== null };
  const inputs = [x, weight, bias].filter((t): t is Tensor => t !== null);
  ctx().dispatch({
    label: kind === 'layer' ? 'layerNorm' : 'rmsNorm',
    code: normWgsl(spec, u),
    uniforms: u.bytes(),
    buffers: [...inputs, out].map(bufferOf),
    workgroups: tileGrid(rows, tiling),
  });
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
