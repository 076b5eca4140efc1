/**
 * Reductions (sum, mean, max, argmax) over the trailing dims of a strided view, and softmax /
 * log-softmax over the last dim.
 *
 * Every kernel here works on "rows": the front end moves the reduced dims last, so row r is
 * one output element and its `len` inputs are the trailing dims. A workgroup covers `cols`
 * rows side by side with `lanes` threads splitting each row (a `RowTiling`):
 *
 *   - long rows:  cols = 1, lanes = up to 256, partial results combined by a tree in shared memory;
 *   - short rows: lanes = 1, one thread per row, no shared memory and no barriers;
 *   - in between, or a reduction over a strided dim with contiguous neighbours (a column sum):
 *     several rows per workgroup, neighbouring threads on neighbouring addresses.
 *
 * Rows that are contiguous, 16-byte aligned and a multiple of 4 long are read (and softmax rows
 * written) as vec4: on llvmpipe that halved the time of softmax and the norms, and it gives GPUs
 * 16-byte accesses. When there are few rows and each is long (a full reduction), `reduce` splits
 * every row into chunks reduced by separate workgroups, then reduces the partial results in a
 * second dispatch. The norms in kernels/norm.ts use the same tiling.
 */
import type { ReduceOp } from '../tensor/backend.js';
import { Tensor } from '../tensor/tensor.js';
import { coalesce, grid, isDense, Uniforms, wgslType, writeVec8 } from './layout.js';
import { dtypeCode, PlanCache, pushList, type Signature } from './plans.js';
import { bufferOf, ctx } from './runtime.js';

// ---- row tiling, shared with kernels/norm.ts ----------------------------------------------

/** How one workgroup covers rows: `cols` rows, `lanes` threads per row (both powers of two). */
export interface RowTiling {
  cols: number;
  lanes: number;
  /** Consecutive thread ids walk along a row (true) or across rows (false), whichever is contiguous. */
  laneFast: boolean;
}

/*
 * Sizes chosen by measurement on llvmpipe (bench/suites/reduce.ts, CPU time per call, scalar
 * loads), where a barrier costs a switch of every SIMD group of the workgroup: 64 or more
 * elements per lane ran 1.5-2x cheaper than 8..16 per lane (softmax [1024,1024]: 11 vs 17 ms,
 * layerNorm [4096,1152]: 77 vs 108 ms) and within 10-20% of one thread per row, while still
 * giving long rows a workgroup each (a row of 4096 gets 64 lanes, one of 16384 or more 256).
 * With vec4 loads 32, 64 and 128 per lane measured alike within the noise of a shared machine.
 */
/** Threads per workgroup at most. */
const MAX_THREADS = 256;
/** Threads splitting one row at most. */
const MAX_LANES = 256;
/** Elements each lane should see at least before another lane is worth adding. */
const PER_LANE = 64;
/** Rows per workgroup when reducing a strided dim whose rows are contiguous (a column sum). */
const COLUMN_COLS = 32;

const pow2ceil = (n: number): number => 2 ** Math.ceil(Math.log2(Math.max(1, n)));
const pow2floor = (n: number): number => 2 ** Math.floor(Math.log2(Math.max(1, n)));

/**
 * Picks the tiling for `rows` rows of `len` elements. `alongRowUnit`: the elements of a row
 * are adjacent in memory; `acrossRowsUnit`: neighbouring rows start at adjacent addresses.
 */
export function rowTiling(rows: number, len: number, alongRowUnit: boolean, acrossRowsUnit: boolean): RowTiling {
  // Column-style: threads side by side read neighbouring rows (coalesced), lanes split the rest.
  const column = acrossRowsUnit && !alongRowUnit && rows > 1;
  const wantLanes = Math.min(MAX_LANES, pow2floor(len / PER_LANE));
  const lanes = column ? Math.min(wantLanes, MAX_THREADS / COLUMN_COLS) : wantLanes;
  const cols = Math.min(MAX_THREADS / lanes, pow2ceil(rows));
  return { cols, lanes, laneFast: !column && lanes > 1 };
}

/**
 * WGSL prelude of a tiled kernel's main: sets `col`, `lane`, `row` (the global row this thread
 * works on), `live` (row < P.rows) and `slot` (this thread's shared-memory cell, col-major
 * by lane so that a row's lanes are adjacent). Needs `wid`, `lid`, `nwg` builtins.
 */
export function tilePrelude(t: RowTiling): string {
  const [col, lane] = t.laneFast
    ? [`lid.x / ${t.lanes}u`, `lid.x % ${t.lanes}u`]
    : [`lid.x % ${t.cols}u`, `lid.x / ${t.cols}u`];
  return `
  let col = ${col};
  let lane = ${lane};
  let row = (wid.y * nwg.x + wid.x) * ${t.cols}u + col;
  let live = row < P.rows;
  let slot = col * ${t.lanes}u + lane;`;
}

/**
 * WGSL tree over a row's lanes: after it, the lane-0 slot of each row holds the combination of
 * all its lanes. `merge` is code that folds cell `slot + stride` into cell `slot`. Must run in
 * uniform control flow (every thread of the workgroup reaches it).
 */
export function laneTree(lanes: number, merge: string): string {
  if (lanes === 1) return '';
  return `
  workgroupBarrier();
  for (var stride = ${lanes / 2}u; stride > 0u; stride = stride / 2u) {
    if (lane < stride) {
${merge}
    }
    workgroupBarrier();
  }`;
}

/**
 * Row kernels (softmax, the norms and their gradients) over dense rows: their plan leaves the
 * row count out of the signature and pushes what it decides instead (a single row, and the
 * workgroup's row count in `rowTiling`); `rows` and `oshape[0]` are written per call.
 */
export function pushDenseRows(sig: Signature, rows: number): void {
  sig.push(-1, rows === 1 ? 1 : 0, Math.min(pow2ceil(rows), MAX_THREADS));
}

/** Workgroup counts for a tiled kernel over `rows` rows. */
export function tileGrid(rows: number, t: RowTiling): [number, number] {
  return grid(rows, t.cols, ctx().limits.maxComputeWorkgroupsPerDimension);
}

/**
 * WGSL `fn name(i: u32) -> u32`: storage offset (without base) of flat row-major index `i`
 * over dims whose shape and strides are the uniforms `shape` and `strides` (vec8).
 */
export function offsetFn(name: string, rank: number, shape: string, strides: string): string {
  const at = (d: number) => `[${d >> 2}][${d & 3}]`;
  if (rank === 1) return `fn ${name}(i: u32) -> u32 { return i * P.${strides}${at(0)}; }`;
  const lines = ['  var rem = i;', '  var off = 0u;'];
  for (let d = rank - 1; d >= 1; d--) {
    lines.push(`  { let s = P.${shape}${at(d)}; off += (rem % s) * P.${strides}${at(d)}; rem = rem / s; }`);
  }
  lines.push(`  off += rem * P.${strides}${at(0)};`, '  return off;');
  return `fn ${name}(i: u32) -> u32 {\n${lines.join('\n')}\n}`;
}

/** Coalesced shape and strides of dims [from, to) of x (rank >= 1 even when empty). */
export function dimsOf(x: Tensor, from: number, to: number): { shape: number[]; strides: number[] } {
  const c = coalesce(x.shape.slice(from, to), [x.strides.slice(from, to)]);
  return { shape: c.shape, strides: c.strides[0] };
}

/**
 * True when every row of x (last dim, `outer` its coalesced leading dims) and of the contiguous
 * `out` is contiguous, 16-byte aligned and a multiple of 4 long, so both can move as vec4f.
 */
export function rowsAsVec4(x: Tensor, outer: { shape: number[]; strides: number[] }, out: Tensor): boolean {
  const len = x.shape[x.rank - 1];
  return (
    len % 4 === 0 && x.strides[x.rank - 1] === 1 && x.offset % 4 === 0 && out.offset % 4 === 0 &&
    outer.shape.every((n, d) => n === 1 || outer.strides[d] % 4 === 0)
  );
}

/** True when neighbouring flat indices of these coalesced dims are adjacent in memory. */
const unitInner = (d: { shape: number[]; strides: number[] }) => d.strides[d.strides.length - 1] === 1 || d.shape.every((s) => s === 1);

/** WGSL constants shared by the float kernels: -inf and a quiet NaN, built at run time so nothing folds them. */
export const FLOAT_CONSTS = /* wgsl */ `
fn neg_inf() -> f32 { let bits = 0xff800000u; return bitcast<f32>(bits); }
fn nan_f32() -> f32 { let bits = 0x7fc00000u; return bitcast<f32>(bits); }`;

// ---- reductions -----------------------------------------------------------------------------

/** One dispatch of the reduction kernel. */
interface ReduceSpec {
  /** mean is a sum whose final dispatch divides by P.count. */
  op: 'sum' | 'max' | 'argmax';
  dtype: 'f32' | 'i32';
  outerRank: number;
  innerRank: number;
  tiling: RowTiling;
  /** Final value divided by P.count (mean). */
  divide: boolean;
  /** Candidate indices come from buffer `xi` at the element's offset (second stage of argmax). */
  inIdx: boolean;
  /** Write the reduced value to `o`, the index to `oi` (either or both). */
  outVal: boolean;
  outIdx: boolean;
  /** Rows (and chunks) are contiguous, 16-byte aligned, multiples of 4: read x as vec4 (sum, max). */
  vec4: boolean;
  /**
   * A sum whose workgroup is one row, on a device with `subgroups`: subgroupAdd within each
   * subgroup, then one lane adds the subgroups' partials (in the order the subgroups finish:
   * not bitwise deterministic, unlike the shared-memory tree). Compiled only where offered.
   */
  subgroups?: boolean;
}

/** The subgroup path's combine (see ReduceSpec.subgroups): one row per workgroup, lane 0 = thread 0. */
const SUBGROUP_SUM = `
  let part = subgroupAdd(acc);
  if (sg_inv == 0u) { sh_v[atomicAdd(&sg_count, 1u)] = part; }
  workgroupBarrier();
  if (lid.x == 0u) {
    let n = atomicLoad(&sg_count);
    acc = sh_v[0];
    for (var k = 1u; k < n; k++) { acc += sh_v[k]; }
  }`;

function reduceWgsl(s: ReduceSpec, u: Uniforms): string {
  const T = s.dtype;
  const isF = T === 'f32';
  const { lanes } = s.tiling;
  const threads = s.tiling.cols * lanes;
  const isArg = s.op === 'argmax';
  // Identity of each op; argmax's "no index yet" is 0xffffffff, which loses every tie.
  const identity = s.op === 'sum' ? `${T}(0)` : isF ? 'neg_inf()' : 'i32(-2147483647 - 1)';
  const nan = (v: string) => (isF ? `(${v} != ${v})` : 'false');
  // Sequential scan in increasing index order: a strictly greater value (or the first NaN) wins,
  // so ties keep the first index; the first candidate is always taken.
  const scan =
    s.op === 'sum'
      ? 'acc += v;'
      : s.op === 'max'
        ? `if (v > acc || ${nan('v')}) { acc = v; }`
        : `if (at == NONE || v > acc || (${nan('v')} && !${nan('acc')})) { acc = v; at = idx; }`;
  // Tree merge of two partial results: (acc, at) at `slot` and (b, bi) at `slot + stride`.
  const merge =
    s.op === 'sum'
      ? '      sh_v[slot] = sh_v[slot] + sh_v[slot + stride];'
      : s.op === 'max'
        ? `      let a = sh_v[slot]; let b = sh_v[slot + stride];
      if (b > a || ${nan('b')}) { sh_v[slot] = b; }`
        : `      let a = sh_v[slot]; let ai = sh_i[slot];
      let b = sh_v[slot + stride]; let bi = sh_i[slot + stride];
      // b wins when greater, or equal with a smaller index (first maximum), NaN counting as greatest
      let better = b > a || (b == a && bi < ai) || (${nan('b')} && (!${nan('a')} || bi < ai));
      if (ai == NONE || (bi != NONE && better)) { sh_v[slot] = b; sh_i[slot] = bi; }`;
  let binding = 1;
  const decl = (name: string, type: string, rw: boolean) =>
    `@group(0) @binding(${binding++}) var<storage, ${rw ? 'read_write' : 'read'}> ${name}: array<${type}>;`;
  const decls = [decl('x', s.vec4 ? `vec4<${T}>` : T, false)];
  if (s.inIdx) decls.push(decl('xi', 'i32', false));
  if (s.outVal) decls.push(decl('o', T, true));
  if (s.outIdx) decls.push(decl('oi', 'i32', true));
  const shared =
    lanes > 1
      ? `var<workgroup> sh_v: array<${T}, ${threads}>;\n${isArg ? `var<workgroup> sh_i: array<u32, ${threads}>;` : ''}`
      : '';
  const loop = `    for (var i = start + lane; i < end; i += ${lanes}u) {
      let off = base + inner_offset(i);
      let v = x[off];
      ${isArg ? (s.inIdx ? 'let idx = u32(xi[off]);' : 'let idx = i;') : ''}
      ${scan}
    }`;
  // vec4 loads: 4 running results side by side, folded into acc at the end (in index order).
  const fold = (c: string) => (s.op === 'sum' ? `acc += acc4.${c};` : `if (acc4.${c} > acc || ${nan(`acc4.${c}`)}) { acc = acc4.${c}; }`);
  const loop4 = `    var acc4 = vec4<${T}>(${identity});
    for (var i = (start / 4u) + lane; i < end / 4u; i += ${lanes}u) {
      let v = x[base / 4u + i];
      ${s.op === 'sum' ? 'acc4 += v;' : `acc4 = select(acc4, v, (v > acc4)${isF ? ' | (v != v)' : ''});`}
    }
    ${['x', 'y', 'z', 'w'].map(fold).join('\n    ')}`;
  const result = s.divide ? `select(acc / P.count, nan_f32(), P.count == 0.0)` : 'acc';
  return /* wgsl */ `${s.subgroups ? 'enable subgroups;\nvar<workgroup> sg_count: atomic<u32>;' : ''}
${u.declaration()}
${decls.join('\n')}
${FLOAT_CONSTS}
const NONE = 0xffffffffu;
${shared}
// Storage offset of output row r's first input (outer dims) and of element i within a row.
${offsetFn('outer_offset', s.outerRank, 'oshape', 'ostr')}
${offsetFn('inner_offset', s.innerRank, 'ishape', 'istr')}

@compute @workgroup_size(${threads})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u, @builtin(num_workgroups) nwg: vec3u${s.subgroups ? ', @builtin(subgroup_invocation_id) sg_inv: u32' : ''}) {
${tilePrelude(s.tiling)}
  var acc: ${T} = ${identity};
  var at: u32 = NONE;
  if (live) {
    // This row is chunk 'part' of input row (row % orows): its elements [start, end).
    let part = row / P.orows;
    let base = P.x_off + outer_offset(row % P.orows);
    let start = part * P.chunk;
    let end = min(P.len, start + P.chunk);
${s.vec4 ? loop4 : loop}
  }
${s.subgroups ? SUBGROUP_SUM : `${lanes > 1 ? `  sh_v[slot] = acc;${isArg ? '\n  sh_i[slot] = at;' : ''}` : ''}
${laneTree(lanes, merge)}
${lanes > 1 ? `  acc = sh_v[slot];${isArg ? '\n  at = sh_i[slot];' : ''}` : ''}`}
  if (live && lane == 0u) {
    ${s.outVal ? `o[P.o_off + row] = ${result};` : ''}
    ${s.outIdx ? `oi[${s.outVal ? '' : 'P.o_off + '}row] = i32(at);` : ''}
  }
}`;
}

/** Rows per dispatch below which a long reduction is split across workgroups. */
const MIN_GROUPS = 64;
/** A split chunk gives each lane at least this many elements. */
const SPLIT_PER_LANE = 2 * PER_LANE;

/** One dispatch of a reduction plan; x_off and o_off are written per call. */
interface ReduceStage {
  label: string;
  key: string;
  code: () => string;
  words: Uint32Array;
  xOffWord: number;
  oOffWord: number;
  workgroups: readonly [number, number];
}

/** A reduction dispatch's pipeline: key and code, and its uniforms (all written per call). */
interface ReduceKernel {
  label: string;
  key: string;
  code: () => string;
  words: Uint32Array;
  floats: Float32Array;
}

/** The kernels of one shape of work: a single stage, or stage 1 into partials and stage 2 over them. */
interface ReducePlan {
  stages: ReduceKernel[];
}

/**
 * Plans keyed by what the sizes decide (coalesced ranks, tilings, vec4, split), not by the
 * sizes: a changing token count reuses them, and the call writes its sizes and views.
 */
const reducePlans = new PlanCache<ReducePlan>();
const REDUCE_OPS: readonly ReduceOp[] = ['sum', 'mean', 'max', 'argmax'];

/** Every reduction kernel's uniform struct (the WGSL declaration does not depend on the values). */
function reduceUniforms(sizes: { rows: number; orows: number; chunk: number; len: number; count: number }, outer: Dims, inner: Dims): Uniforms {
  return new Uniforms()
    .u32('rows', sizes.rows)
    .u32('orows', sizes.orows)
    .u32('chunk', sizes.chunk)
    .u32('len', sizes.len)
    .f32('count', sizes.count)
    .u32('x_off', 0)
    .u32('o_off', 0)
    .vec8('oshape', outer.shape)
    .vec8('ostr', outer.strides)
    .vec8('ishape', inner.shape)
    .vec8('istr', inner.strides);
}
const R_TEMPLATE = reduceUniforms({ rows: 0, orows: 0, chunk: 0, len: 0, count: 0 }, { shape: [], strides: [] }, { shape: [], strides: [] });
const R_AT = {
  rows: R_TEMPLATE.wordOf('rows'), orows: R_TEMPLATE.wordOf('orows'), chunk: R_TEMPLATE.wordOf('chunk'), len: R_TEMPLATE.wordOf('len'),
  count: R_TEMPLATE.wordOf('count'), xOff: R_TEMPLATE.wordOf('x_off'), oOff: R_TEMPLATE.wordOf('o_off'),
  oshape: R_TEMPLATE.wordOf('oshape'), ostr: R_TEMPLATE.wordOf('ostr'), ishape: R_TEMPLATE.wordOf('ishape'), istr: R_TEMPLATE.wordOf('istr'),
};

/** A coalesced list of dims (shape and strides). */
interface Dims {
  shape: number[];
  strides: number[];
}
/** Scratch: x's outer and inner dims, coalesced per call. */
const xOuter: Dims = { shape: [], strides: [] };
const xInner: Dims = { shape: [], strides: [] };
/** Stage 2's dims over the partials [parts, rows]: rows (stride 1), and parts (stride rows). */
const pOuter: Dims = { shape: [0], strides: [1] };
const pInner: Dims = { shape: [0], strides: [0] };

/** `dimsOf` into `into` without allocating (coalesce of one operand over dims [from, to)). */
function dimsInto(x: Tensor, from: number, to: number, into: Dims): void {
  const { shape, strides } = into;
  // by index, cut to length at the end (as layout.ts's coalesceInto: no new backing stores)
  let n = 0;
  for (let d = from; d < to; d++) {
    const size = x.shape[d];
    if (size === 1) continue;
    const at = n - 1;
    if (at >= 0 && strides[at] === x.strides[d] * size) {
      shape[at] *= size;
      strides[at] = x.strides[d];
    } else {
      shape[n] = size;
      strides[n] = x.strides[d];
      n++;
    }
  }
  if (n === 0) {
    shape[0] = 1;
    strides[0] = 1;
    n = 1;
  }
  shape.length = n;
  strides.length = n;
}

/** Writes one stage's uniforms and queues it. */
function dispatchStage(
  k: ReduceKernel, sizes: { rows: number; orows: number; chunk: number; len: number; count: number }, outer: Dims, inner: Dims,
  xOff: number, oOff: number, buffers: GPUBuffer[], tiling: RowTiling,
): void {
  const w = k.words;
  w[R_AT.rows] = sizes.rows;
  w[R_AT.orows] = sizes.orows;
  w[R_AT.chunk] = sizes.chunk;
  w[R_AT.len] = sizes.len;
  k.floats[R_AT.count] = sizes.count;
  w[R_AT.xOff] = xOff;
  w[R_AT.oOff] = oOff;
  writeVec8(w, R_AT.oshape, outer.shape);
  writeVec8(w, R_AT.ostr, outer.strides);
  writeVec8(w, R_AT.ishape, inner.shape);
  writeVec8(w, R_AT.istr, inner.strides);
  ctx().dispatch({ label: k.label, key: k.key, code: k.code, uniforms: w, buffers, workgroups: tileGrid(sizes.rows, tiling) });
}

/** A tiling whose rows are each one workgroup's lanes (where a subgroup reduction can finish them). */
function laneTreeOnly(t: RowTiling): boolean {
  return t.cols === 1 && t.lanes > 1;
}

/** Pushes a tiling's three numbers. */
function pushTiling(sig: Signature, t: RowTiling): void {
  sig.push(t.cols, t.lanes, t.laneFast ? 1 : 0);
}

/**
 * Reduces the trailing `reducedRank` dims of x (any strided view, rank <= 8) into `out`
 * (contiguous, one value per leading index). argmax writes int32 indices of the first maximum
 * within the flattened reduced dims; max and argmax treat NaN as the greatest value.
 */
export function reduce(op: ReduceOp, x: Tensor, reducedRank: number, out: Tensor): void {
  const rows = out.size;
  if (rows === 0) return;
  const c = ctx();
  const T = wgslType(x.dtype);
  const outer = xOuter;
  const inner = xInner;
  dimsInto(x, 0, x.rank - reducedRank, outer);
  dimsInto(x, x.rank - reducedRank, x.rank, inner);
  let len = 1;
  for (const n of inner.shape) len *= n;
  const base = op === 'mean' ? 'sum' : op;
  const alongRowUnit = unitInner(inner);
  const acrossRowsUnit = unitInner(outer);

  // Few long rows: split each into chunks reduced by separate workgroups, then reduce those.
  const tiling = rowTiling(rows, len, alongRowUnit, acrossRowsUnit);
  const groups = Math.ceil(rows / tiling.cols);
  const splits = groups < MIN_GROUPS ? Math.min(Math.ceil(MIN_GROUPS / groups), Math.floor(len / (tiling.lanes * SPLIT_PER_LANE))) : 1;
  // vec4 loads need whole rows (and chunks) of aligned, contiguous groups of 4.
  let vec4 = op !== 'argmax' && len % 4 === 0 && inner.shape.length === 1 && inner.strides[0] === 1 && x.offset % 4 === 0;
  for (let d = 0; d < outer.shape.length && vec4; d++) vec4 = outer.shape[d] === 1 || outer.strides[d] % 4 === 0;
  const subgroupsOn = base === 'sum' && c.tuning.subgroups && c.hasFeature('subgroups');
  const sig = reducePlans.start(c);
  sig.push(REDUCE_OPS.indexOf(op), dtypeCode(x.dtype), outer.shape.length, inner.shape.length, vec4 ? 1 : 0, subgroupsOn ? 1 : 0);
  const spec = { op: base, dtype: T, outerRank: outer.shape.length, innerRank: inner.shape.length, inIdx: false, vec4 } as const;
  const xBuf = bufferOf(x);
  if (splits <= 1) {
    pushTiling(sig, tiling);
    const sizes = { rows, orows: rows, chunk: len, len, count: len };
    const plan = reducePlans.find() ?? reducePlans.add({
      stages: [reduceKernel({ ...spec, tiling, divide: op === 'mean', outVal: op !== 'argmax', outIdx: op === 'argmax', subgroups: subgroupsOn && laneTreeOnly(tiling) }, sizes, outer, inner)],
    });
    dispatchStage(plan.stages[0], sizes, outer, inner, x.offset, out.offset, [xBuf, bufferOf(out)], tiling);
    return;
  }
  // Stage 1: dispatch row p * rows + r reduces chunk p of input row r into partials [parts, rows]
  // (chunk index slowest, so neighbouring threads still read neighbouring rows).
  const chunk = Math.ceil(len / splits / 4) * 4;
  const parts = Math.ceil(len / chunk);
  const tiling1 = rowTiling(rows * parts, chunk, alongRowUnit, acrossRowsUnit);
  // Stage 2: a column reduction over the partials (argmax carries their indices along).
  const tiling2 = rowTiling(rows, parts, rows === 1, true);
  sig.push(-1);
  pushTiling(sig, tiling1);
  pushTiling(sig, tiling2);
  pOuter.shape[0] = rows;
  pInner.shape[0] = parts;
  pInner.strides[0] = rows;
  const sizes1 = { rows: rows * parts, orows: rows, chunk, len, count: len };
  const sizes2 = { rows, orows: rows, chunk: parts, len: parts, count: len };
  const plan = reducePlans.find() ?? reducePlans.add({
    stages: [
      reduceKernel({ ...spec, tiling: tiling1, divide: false, outVal: true, outIdx: op === 'argmax' }, sizes1, outer, inner),
      reduceKernel({
        ...spec, outerRank: 1, innerRank: 1, vec4: false, tiling: tiling2,
        divide: op === 'mean', inIdx: op === 'argmax', outVal: op !== 'argmax', outIdx: op === 'argmax',
      }, sizes2, pOuter, pInner),
    ],
  });
  const partVal = Tensor.empty([parts, rows], x.dtype, 'webgpu');
  const partIdx = op === 'argmax' ? Tensor.empty([parts, rows], 'int32', 'webgpu') : null;
  dispatchStage(plan.stages[0], sizes1, outer, inner, x.offset, partVal.offset,
    partIdx ? [xBuf, bufferOf(partVal), bufferOf(partIdx)] : [xBuf, bufferOf(partVal)], tiling1);
  dispatchStage(plan.stages[1], sizes2, pOuter, pInner, partVal.offset, out.offset,
    partIdx ? [bufferOf(partVal), bufferOf(partIdx), bufferOf(out)] : [bufferOf(partVal), bufferOf(out)], tiling2);
  partVal.dispose();
  partIdx?.dispose();
}

function reduceKernel(spec: ReduceSpec, sizes: { rows: number; orows: number; chunk: number; len: number; count: number }, outer: Dims, inner: Dims): ReduceKernel {
  const u = reduceUniforms(sizes, outer, inner);
  const words = u.words32();
  return {
    label: `reduce ${spec.op}`,
    key: `reduce|${JSON.stringify(spec)}`,
    code: () => reduceWgsl(spec, u),
    words,
    floats: new Float32Array(words.buffer),
  };
}

// ---- softmax --------------------------------------------------------------------------------

function softmaxWgsl(t: RowTiling, outerRank: number, log: boolean, vec4: boolean, u: Uniforms): string {
  const { lanes } = t;
  const threads = t.cols * lanes;
  const V = vec4 ? 'vec4f' : 'f32';
  // A vec4 lane keeps one (m, s) per component; they fold into one pair before the tree.
  const fold = vec4
    ? `  let m4 = m;
  let s4 = s;
  var lm = max(max(m4.x, m4.y), max(m4.z, m4.w));
  var ls = rescale(s4.x, m4.x, lm) + rescale(s4.y, m4.y, lm) + rescale(s4.z, m4.z, lm) + rescale(s4.w, m4.w, lm);`
    : '  var lm = m;\n  var ls = s;';
  // The lanes' (m, s) pairs merge in shared memory; every lane then reads its row's result.
  const merge = `      let ma = sh_m[slot]; let mb = sh_m[slot + stride];
      let mm = max(ma, mb);
      sh_s[slot] = rescale(sh_s[slot], ma, mm) + rescale(sh_s[slot + stride], mb, mm);
      sh_m[slot] = mm;`;
  const combine = lanes === 1 ? '' : `  sh_m[slot] = lm;
  sh_s[slot] = ls;
${laneTree(lanes, merge)}
  lm = sh_m[col * ${lanes}u];
  ls = sh_s[col * ${lanes}u];`;
  return /* wgsl */ `
${u.declaration()}
@group(0) @binding(1) var<storage, read> x: array<${V}>;
@group(0) @binding(2) var<storage, read_write> o: array<${V}>;
${FLOAT_CONSTS}
${lanes > 1 ? `var<workgroup> sh_m: array<f32, ${threads}>;\nvar<workgroup> sh_s: array<f32, ${threads}>;` : ''}
${offsetFn('outer_offset', outerRank, 'oshape', 'ostr')}
// Unit i of a row: an element, or 4 of them as a vec4f.
${vec4 ? 'fn x_at(base: u32, i: u32) -> vec4f { return x[base / 4u + i]; }' : 'fn x_at(base: u32, i: u32) -> f32 { return x[base + i * P.x_last]; }'}
${vec4 ? 'fn o_set(base: u32, i: u32, v: vec4f) { o[base / 4u + i] = v; }' : 'fn o_set(base: u32, i: u32, v: f32) { o[base + i] = v; }'}

// A partial sum s of exp(x - m) rescaled to the max m' >= m (0 stays 0, even when m = -inf).
fn rescale(s: f32, m: f32, to: f32) -> f32 {
  return select(s * exp(m - to), 0.0, s == 0.0);
}

@compute @workgroup_size(${threads})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
${tilePrelude(t)}
  // Pass 1, online: running max m and sum s of exp(x - m) over this lane's units.
  var m = ${V}(neg_inf());
  var s = ${V}(0.0);
  var base = 0u;
  let units = ${vec4 ? 'P.len / 4u' : 'P.len'};
  if (live) {
    base = P.x_off + outer_offset(row);
    for (var i = lane; i < units; i += ${lanes}u) {
      let v = x_at(base, i);
      // v > m: rescale s to the new max and count v; otherwise add exp(v - m), skipping -inf
      // (so an all -inf prefix adds nothing); a NaN v makes s NaN, as on the CPU.
      let up = v > m;
      let e = exp(select(v - m, m - v, up));
      s = select(select(s + e, s, v == ${V}(neg_inf())), s * e + 1.0, up);
      m = select(m, v, up);
    }
  }
${fold}
${combine}
  if (!live) { return; }
  // Pass 2: write exp(x - m) / s, or (x - m) - log(s).
  ${log ? 'let log_s = log(ls);' : 'let inv_s = 1.0 / ls;'}
  let ob = P.o_off + row * P.len;
  for (var i = lane; i < units; i += ${lanes}u) {
    let z = x_at(base, i) - lm;
    o_set(ob, i, ${log ? 'z - log_s' : 'exp(z) * inv_s'});
  }
}`;
}

/** A softmax of one signature (x_off and o_off are written per call; the row count too over dense rows). */
const softmaxPlans = new PlanCache<ReduceStage & { setRows: (rows: number) => readonly [number, number] }>();

/**
 * For a row kernel's plan over dense rows: writes `rows` and `oshape[0]` into its uniforms and
 * returns the workgroups for that many rows.
 */
export function rowsSetter(words: Uint32Array, u: Uniforms, t: RowTiling): (rows: number) => readonly [number, number] {
  const rowsWord = u.wordOf('rows');
  const shapeWord = u.wordOf('oshape');
  return (rows) => {
    words[rowsWord] = rows;
    words[shapeWord] = rows;
    return tileGrid(rows, t);
  };
}

/** Softmax (or log-softmax) over the last dim of x (any strided view); out is contiguous. */
export function softmax(x: Tensor, log: boolean, out: Tensor): void {
  const len = x.shape[x.rank - 1];
  const rows = len === 0 ? 0 : x.size / len;
  if (rows === 0) return;
  const c = ctx();
  const dense = isDense(x);
  const sig = softmaxPlans.start(c);
  sig.push(log ? 1 : 0, x.offset & 3, out.offset & 3, len, x.strides[x.rank - 1]);
  if (dense) pushDenseRows(sig, rows);
  else {
    pushList(sig, x.shape);
    pushList(sig, x.strides);
  }
  const plan = softmaxPlans.find() ?? softmaxPlans.add(softmaxPlan(x, log, out, rows, len));
  const w = plan.words;
  w[plan.xOffWord] = x.offset;
  w[plan.oOffWord] = out.offset;
  const workgroups = dense ? plan.setRows(rows) : plan.workgroups;
  c.dispatch({ label: plan.label, key: plan.key, code: plan.code, uniforms: w, buffers: [bufferOf(x), bufferOf(out)], workgroups });
}

function softmaxPlan(x: Tensor, log: boolean, out: Tensor, rows: number, len: number): ReduceStage & { setRows: (rows: number) => readonly [number, number] } {
  const outer = dimsOf(x, 0, x.rank - 1);
  const last = x.strides[x.rank - 1];
  const t = rowTiling(rows, len, last === 1 || len === 1, unitInner(outer));
  const u = new Uniforms()
    .u32('rows', rows)
    .u32('len', len)
    .u32('x_off', 0)
    .u32('x_last', last)
    .u32('o_off', 0)
    .vec8('oshape', outer.shape)
    .vec8('ostr', outer.strides);
  const vec4 = rowsAsVec4(x, outer, out);
  const words = u.words32();
  return {
    label: log ? 'logSoftmax' : 'softmax',
    key: `softmax|${JSON.stringify(t)}|${outer.shape.length}|${log}|${vec4}`,
    code: () => softmaxWgsl(t, outer.shape.length, log, vec4, u),
    words,
    xOffWord: u.wordOf('x_off'),
    oOffWord: u.wordOf('o_off'),
    workgroups: tileGrid(rows, t),
    setRows: rowsSetter(words, u, t),
  };
}
