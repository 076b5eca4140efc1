/**
 * Fused backward kernels of softmax / log-softmax, layer norm and RMS norm over the last dim,
 * one dispatch each. The references that define the math are in tensor/cpu/grad.ts:
 *
 *   softmax      gx = y * (gy - sum(gy * y))
 *   log-softmax  gx = gy - exp(y) * sum(gy)
 *   layer norm   gx = inv * (g - mean(g) - xhat * mean(g * xhat)),  g = gy * weight
 *   RMS norm     gx = r * (g - x * r^2 * mean(g * x)),              g = gy * weight
 *
 * Every one is a row kernel with the forward kernels' tiling (`rowTiling` in kernels/reduce.ts):
 * each lane of a row gathers a few statistics over its share of the row in one pass, a tree in
 * shared memory combines the lanes, and a second pass writes gx. Inputs are any strided views
 * with the same shape; their leading dims are coalesced together, so one index computation
 * serves both.
 *
 * Layer norm needs mean(x), var(x), mean(g) and mean(g * xhat) = inv * cov(x, g), and gets all
 * of them in the single pass by Welford's update extended to the co-moment
 * C = sum (x - mean x)(g - mean g), merged across lanes by Chan's pairwise formula (Bennett et
 * al., "Numerically stable, single-pass, parallel statistics algorithms", IEEE Cluster 2009).
 * As in the forward kernel, the statistics are taken of x - s, s the row's first element, so a
 * large mean costs no precision; sum(g * (x - mean)) equals C exactly (the g-mean term vanishes)
 * and never comes from a difference of two large sums.
 */
import type { Tensor } from '../tensor/tensor.js';
import { coalesce, isDense, Uniforms } from './layout.js';
import { PlanCache, pushList, type PlannedDispatch } from './plans.js';
import { bufferOf, ctx } from './runtime.js';
import { laneTree, offsetFn, pushDenseRows, rowsAsVec4, rowsSetter, rowTiling, tileGrid, tilePrelude, type RowTiling } from './reduce.js';

/**
 * What sets one row-gradient kernel apart. In its WGSL snippets the current element of the row
 * is `x` (norms) or `y` (softmax), the incoming gradient `gy`, for the norms also `g` (gy times
 * the weight), and for layer norm `shift` (the row's first x). When rows move as vec4f these
 * are vec4f, and so are the statistics inside `update`; `finish` and `gx` see the row's
 * statistics as f32 (a vec4f gx expression mixes both).
 */
interface RowGradKernel {
  label: string;
  /** The forward tensor the kernel reads beside gy: the norms' input x or the softmax output y. */
  input: 'x' | 'y';
  /** Statistics each lane accumulates from 0, one per component of a vec4f unit. */
  stats: readonly string[];
  /** f32 statistics kept once per lane whatever the unit (layer norm's count). */
  counts?: readonly string[];
  /** Statistics are of x - shift, shift the row's first x (layer norm). */
  shifted?: boolean;
  /** WGSL statements folding one unit into this lane's statistics. */
  update: string;
  /** WGSL expression of the lane's `Stats` from vec4f statistics; absent: each stat's components add. */
  fold4?: string;
  /** WGSL folding cell `slot + stride` of the `sh_<stat>` arrays into `slot`; absent: they add. */
  merge?: string;
  /** WGSL statements run once per row after the tree, with the row's statistics. */
  finish: string;
  /** WGSL expression of gx for one unit. */
  gx: string;
}

const SOFTMAX: RowGradKernel = {
  label: 'softmaxGrad',
  input: 'y',
  stats: ['gy_y'],
  update: 'gy_y += gy * y;',
  finish: '',
  gx: 'y * (gy - gy_y)',
};

const LOG_SOFTMAX: RowGradKernel = {
  label: 'logSoftmaxGrad',
  input: 'y',
  stats: ['gy_sum'],
  update: 'gy_sum += gy;',
  finish: '',
  gx: 'gy - exp(y) * gy_sum',
};

const RMS_NORM: RowGradKernel = {
  label: 'rmsNormGrad',
  input: 'x',
  stats: ['x_x', 'g_x'],
  update: `x_x += x * x;
    g_x += g * x;`,
  finish: `let r = 1.0 / sqrt(x_x / f32(P.len) + P.eps);
  let k = r * r * g_x / f32(P.len); // r^2 * mean(g * x)`,
  gx: 'r * (g - x * k)',
};

/*
 * Per lane (per vec4 component): count n, means mx of x - shift and mg of g, M2 = sum (x - mx)^2
 * and the co-moment C = sum (x - mx)(g - mg), by Welford's update. The four components (equal
 * counts) fold as M2 = sum M2_j + n * sum (mx_j - mx)^2, C likewise; lanes merge by Chan's
 * formula for two parts (na, ...) and (nb, ...).
 */
const LAYER_NORM: RowGradKernel = {
  label: 'layerNormGrad',
  input: 'x',
  counts: ['n'],
  stats: ['mx', 'mg', 'm2', 'c'],
  shifted: true,
  update: `n += 1.0;
    let rn = 1.0 / n;
    let d = x - shift;
    let dx = d - mx;
    let dg = g - mg;
    mx += dx * rn;
    mg += dg * rn;
    m2 += dx * (d - mx);
    c += dx * (g - mg);`,
  fold4: `Stats(4.0 * n, mean4(mx), mean4(mg),
    sum4(m2) + n * dot(mx - mean4(mx), mx - mean4(mx)),
    sum4(c) + n * dot(mx - mean4(mx), mg - mean4(mg)))`,
  merge: `      let na = sh_n[slot];
      let nb = sh_n[slot + stride];
      if (nb > 0.0) {
        let nn = na + nb;
        let f = nb / nn;
        let dx = sh_mx[slot + stride] - sh_mx[slot];
        let dg = sh_mg[slot + stride] - sh_mg[slot];
        sh_mx[slot] += dx * f;
        sh_mg[slot] += dg * f;
        sh_m2[slot] += sh_m2[slot + stride] + dx * dx * na * f;
        sh_c[slot] += sh_c[slot + stride] + dx * dg * na * f;
        sh_n[slot] = nn;
      }`,
  finish: `let inv = 1.0 / sqrt(m2 / f32(P.len) + P.eps); // biased variance, as the forward
  let k = inv * inv * c / f32(P.len); // inv * mean(g * xhat)`,
  gx: 'inv * ((g - mg) - ((x - shift) - mx) * k)',
};

interface RowGradSpec {
  kernel: RowGradKernel;
  tiling: RowTiling;
  /** Rank of the coalesced leading dims. */
  outerRank: number;
  /** A norm whose weight is present: g = gy * w. */
  hasWeight: boolean;
  /** Rows of src, gy and out are contiguous and 16-byte aligned, len a multiple of 4: units are vec4f. */
  vec4: boolean;
  /** With vec4: the weight is contiguous and 16-byte aligned too. */
  wVec4: boolean;
}

function rowGradWgsl(s: RowGradSpec, u: Uniforms): string {
  const k = s.kernel;
  const { lanes } = s.tiling;
  const threads = s.tiling.cols * lanes;
  const V = s.vec4 ? 'vec4f' : 'f32';
  const counts = k.counts ?? [];
  const all = [...counts, ...k.stats];

  // Unit i of a row (one element, or four as a vec4f) in src, grad and o, and of the weight.
  const accessors = s.vec4
    ? [
        'fn src_at(base: u32, i: u32) -> vec4f { return src[base / 4u + i]; }',
        'fn gy_at(base: u32, i: u32) -> vec4f { return grad[base / 4u + i]; }',
        'fn o_set(base: u32, i: u32, v: vec4f) { o[base / 4u + i] = v; }',
        'fn sum4(v: vec4f) -> f32 { return dot(v, vec4f(1.0)); }',
        'fn mean4(v: vec4f) -> f32 { return dot(v, vec4f(0.25)); }',
      ]
    : [
        'fn src_at(base: u32, i: u32) -> f32 { return src[base + i * P.src_last]; }',
        'fn gy_at(base: u32, i: u32) -> f32 { return grad[base + i * P.gy_last]; }',
        'fn o_set(base: u32, i: u32, v: f32) { o[base + i] = v; }',
      ];
  if (s.hasWeight) {
    accessors.push(
      !s.vec4
        ? 'fn w_at(i: u32) -> f32 { return w[P.w_off + i * P.w_str]; }'
        : s.wVec4
          ? 'fn w_at(i: u32) -> vec4f { return w[P.w_off / 4u + i]; }'
          : `fn w_at(i: u32) -> vec4f {
  let at = P.w_off + 4u * i * P.w_str;
  return vec4f(w[at], w[at + P.w_str], w[at + 2u * P.w_str], w[at + 3u * P.w_str]);
}`,
    );
  }
  // The unit's values, named as the kernel's snippets expect.
  const unit = [`let ${k.input} = src_at(sb, i);`, 'let gy = gy_at(gb, i);'];
  if (k.input === 'x') unit.push(s.hasWeight ? 'let g = gy * w_at(i);' : 'let g = gy;');
  const unitCode = (indent: string) => unit.map((l) => indent + l).join('\n');
  const fold = !s.vec4 ? `Stats(${all.join(', ')})` : k.fold4 ?? `Stats(${[...counts, ...k.stats.map((n) => `sum4(${n})`)].join(', ')})`;

  const shared = lanes === 1 ? '' : all.map((n) => `var<workgroup> sh_${n}: array<f32, ${threads}>;`).join('\n');
  const merge = k.merge ?? all.map((n) => `      sh_${n}[slot] += sh_${n}[slot + stride];`).join('\n');
  const store = lanes === 1 ? '' : all.map((n) => `  sh_${n}[slot] = st.${n};`).join('\n');
  const load = lanes === 1 ? '' : all.map((n) => `  st.${n} = sh_${n}[col * ${lanes}u];`).join('\n');

  return /* wgsl */ `
${u.declaration()}
@group(0) @binding(1) var<storage, read> src: array<${V}>;
@group(0) @binding(2) var<storage, read> grad: array<${V}>;
@group(0) @binding(3) var<storage, read_write> o: array<${V}>;
${s.hasWeight ? `@group(0) @binding(4) var<storage, read> w: array<${s.wVec4 ? 'vec4f' : 'f32'}>;` : ''}
${shared}
// Storage offsets of row r's first element in src and grad: shared leading dims, own strides.
${offsetFn('src_row', s.outerRank, 'oshape', 'src_ostr')}
${offsetFn('gy_row', s.outerRank, 'oshape', 'gy_ostr')}
${accessors.join('\n')}

// One lane's statistics of a row, then the row's.
struct Stats {
${all.map((n) => `  ${n}: f32,`).join('\n')}
}

// Pass 1 of a lane: its statistics over units lane, lane + ${lanes}, ... of the row at sb, gb.
fn lane_stats(sb: u32, gb: u32, lane: u32, shift: f32) -> Stats {
${counts.map((n) => `  var ${n} = 0.0;`).join('\n')}
${k.stats.map((n) => `  var ${n} = ${V}(0.0);`).join('\n')}
  for (var i = lane; i < ${s.vec4 ? 'P.len / 4u' : 'P.len'}; i += ${lanes}u) {
${unitCode('    ')}
    ${k.update}
  }
  return ${fold};
}

@compute @workgroup_size(${threads})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
${tilePrelude(s.tiling)}
  var st = Stats();
  var sb = 0u;
  var gb = 0u;
  var shift = 0.0;
  if (live) {
    sb = P.src_off + src_row(row);
    gb = P.gy_off + gy_row(row);
    ${k.shifted ? `shift = src_at(sb, 0u)${s.vec4 ? '.x' : ''}; // statistics of x - x[0]: exact differences, so a large mean costs no precision` : ''}
    st = lane_stats(sb, gb, lane, shift);
  }
${store}
${laneTree(lanes, merge)}
${load}
  if (!live) { return; }
  // Pass 2: gx from the row's statistics.
${all.map((n) => `  let ${n} = st.${n};`).join('\n')}
  ${k.finish}
  let ob = P.o_off + row * P.len;
  for (var i = lane; i < ${s.vec4 ? 'P.len / 4u' : 'P.len'}; i += ${lanes}u) {
${unitCode('    ')}
    o_set(ob, i, ${k.gx});
  }
}`;
}

/**
 * Runs `kernel` over the rows (last dim) of src and gy, same shape, any strided views;
 * out is contiguous. weight, for the norms, is [D] of any stride or null.
 */
function rowGrad(kernel: RowGradKernel, src: Tensor, gy: Tensor, weight: Tensor | null, eps: number, out: Tensor): void {
  const label = kernel.label;
  if (src.dtype !== 'float32' || gy.dtype !== 'float32' || (weight && weight.dtype !== 'float32') || out.dtype !== 'float32') {
    for (const [name, t] of [[kernel.input, src], ['gy', gy], ['weight', weight], ['out', out]] as const) {
      if (t && t.dtype !== 'float32') throw new Error(`${label}: webgpu takes float32, ${name} is ${t.dtype}`);
    }
  }
  const last = src.rank - 1;
  const len = src.shape[last] ?? 1;
  if (weight && (weight.rank !== 1 || weight.shape[0] !== len)) {
    throw new Error(`${label}: weight must be [${len}] to match ${kernel.input} [${src.shape.join(',')}], got [${weight.shape.join(',')}]`);
  }
  const rows = len === 0 ? 0 : src.size / len;
  if (rows === 0) return;
  const c = ctx();
  const plans = rowGradPlans(kernel);
  const sig = plans.start(c);
  const dense = isDense(src) && isDense(gy);
  sig.push(eps, src.offset & 3, gy.offset & 3, out.offset & 3, weight ? weight.strides[0] : -1, weight ? weight.offset & 3 : -1, len, src.strides[last] ?? 1, gy.strides[last] ?? 1);
  if (dense) pushDenseRows(sig, rows);
  else {
    pushList(sig, src.shape);
    pushList(sig, src.strides);
    pushList(sig, gy.strides);
  }
  const plan = plans.find() ?? plans.add(rowGradPlan(kernel, src, gy, weight, eps, out, rows, len));
  const w = plan.words;
  const at = plan.offsetWords;
  w[at[0]] = src.offset;
  w[at[1]] = gy.offset;
  w[at[2]] = weight ? weight.offset : 0;
  w[at[3]] = out.offset;
  // the weight last: it shares the runtime's common bind group, where it stays from step to step
  const buffers = weight ? [bufferOf(src), bufferOf(gy), bufferOf(out), bufferOf(weight)] : [bufferOf(src), bufferOf(gy), bufferOf(out)];
  c.dispatch({ label, key: plan.key, code: plan.code, uniforms: w, buffers, workgroups: dense ? plan.setRows(rows) : plan.workgroups });
}

/** A row-gradient dispatch of one signature; the operands' offsets are written per call. */
interface RowGradPlan extends PlannedDispatch {
  /** Words of src_off, gy_off, w_off, o_off. */
  offsetWords: readonly number[];
  workgroups: readonly [number, number];
  /** Over dense rows: writes the row count, returns the workgroups. */
  setRows: (rows: number) => readonly [number, number];
}

/** Plans per kernel (softmax, log-softmax, layer norm, RMS norm). */
const plansByKernel = new Map<RowGradKernel, PlanCache<RowGradPlan>>();
function rowGradPlans(kernel: RowGradKernel): PlanCache<RowGradPlan> {
  let p = plansByKernel.get(kernel);
  if (!p) plansByKernel.set(kernel, (p = new PlanCache()));
  return p;
}

function rowGradPlan(kernel: RowGradKernel, src: Tensor, gy: Tensor, weight: Tensor | null, eps: number, out: Tensor, rows: number, len: number): RowGradPlan {
  const label = kernel.label;
  const last = src.rank - 1;
  // Leading dims coalesced over both operands: one shape, a stride list each.
  const lead = Math.max(0, last);
  const outer = coalesce(src.shape.slice(0, lead), [src.strides.slice(0, lead), gy.strides.slice(0, lead)]);
  const [srcOuter, gyOuter] = outer.strides;
  const srcLast = src.strides[last] ?? 1;
  const gyLast = gy.strides[last] ?? 1;
  const alongRowUnit = len === 1 || (srcLast === 1 && gyLast === 1);
  const acrossRowsUnit = srcOuter[srcOuter.length - 1] === 1 && gyOuter[gyOuter.length - 1] === 1;
  const tiling = rowTiling(rows, len, alongRowUnit, acrossRowsUnit);
  const u = new Uniforms()
    .u32('rows', rows)
    .u32('len', len)
    .f32('eps', eps)
    .u32('src_off', 0)
    .u32('src_last', srcLast)
    .u32('gy_off', 0)
    .u32('gy_last', gyLast)
    .u32('w_off', 0)
    .u32('w_str', weight?.strides[0] ?? 0)
    .u32('o_off', 0)
    .vec8('oshape', outer.shape)
    .vec8('src_ostr', srcOuter)
    .vec8('gy_ostr', gyOuter);
  const vec4 = rowsAsVec4(src, { shape: outer.shape, strides: srcOuter }, out) && rowsAsVec4(gy, { shape: outer.shape, strides: gyOuter }, out);
  const wVec4 = vec4 && weight !== null && weight.strides[0] === 1 && weight.offset % 4 === 0;
  const spec: RowGradSpec = { kernel, tiling, outerRank: outer.shape.length, hasWeight: weight !== null, vec4, wVec4 };
  const words = u.words32();
  return {
    key: `${label}|${JSON.stringify({ ...spec, kernel: label })}`,
    code: () => rowGradWgsl(spec, u),
    words,
    setRows: rowsSetter(words, u, tiling),
    offsetWords: ['src_off', 'gy_off', 'w_off', 'o_off'].map((f) => u.wordOf(f)),
    workgroups: tileGrid(rows, tiling),
  };
}

/** Given y = softmax(x) (log: y = logSoftmax(x)) over the last dim and gy, writes gx to out. */
export function softmaxGrad(y: Tensor, gy: Tensor, log: boolean, out: Tensor): void {
  rowGrad(log ? LOG_SOFTMAX : SOFTMAX, y, gy, null, 0, out);
}

/** Gradient wrt x of layerNorm(x, weight, ·, eps) over the last dim (weight [D] or null). */
export function layerNormGrad(x: Tensor, weight: Tensor | null, gy: Tensor, eps: number, out: Tensor): void {
  rowGrad(LAYER_NORM, x, gy, weight, eps, out);
}

/** Gradient wrt x of rmsNorm(x, weight, eps) over the last dim (weight [D] or null). */
export function rmsNormGrad(x: Tensor, weight: Tensor | null, gy: Tensor, eps: number, out: Tensor): void {
  rowGrad(RMS_NORM, x, gy, weight, eps, out);
}
