/**
 * Differentiable ops: each forward (the tensor layer's op, run without recording) sits next
 * to its backward rule. Rules are tensor code, so they run on the device of the tensors.
 */
import type { BinaryOp, DType, SliceRange, UnaryOp } from '../tensor/index.js';
import * as T from '../tensor/ops/index.js';
import type { AttentionOptions } from '../tensor/ops/attention.js';
import { normalizeDim, shapesEqual } from '../tensor/shape.js';
import { Tensor } from '../tensor/tensor.js';
import * as V from '../tensor/views.js';
import { zeros } from '../tensor/creation.js';
import { scalarLike } from '../tensor/ops/common.js';
import { isGradEnabled, noGrad, record } from './graph.js';

/** The tensor layer's plain views (Tensor's methods record once autograd is loaded). */
const base = V;

type Operand = Tensor | number;

/**
 * Whether an op on `x` would record (as `record` decides): when not, the ops below call the
 * plain op straight away, without making the closures a recording needs. Backward rules and
 * the kernels' front ends run most views and elementwise ops this way.
 */
const records = (x: Tensor) => x.requiresGrad && isGradEnabled();

/** A new handle on g (rules must not hand back the tensor they were given). */
const alias = (g: Tensor) => g.asStrided(g.shape, g.strides, g.offset);

/** Sums g over broadcast dims so that it has `shape` (the inverse of broadcasting). */
export function sumTo(g: Tensor, shape: readonly number[]): Tensor {
  if (shapesEqual(g.shape, shape)) return alias(g);
  const lead = g.rank - shape.length;
  const dims = [...g.shape.keys()].filter((d) => d < lead || (shape[d - lead] === 1 && g.shape[d] !== 1));
  const s = T.sum(g, dims, true);
  const out = base.reshape(s, [...shape]);
  s.dispose();
  return out;
}

// ---- elementwise -------------------------------------------------------------------------

export function unary(op: UnaryOp, x: Tensor): Tensor {
  if (!records(x)) return T.unary(op, x);
  const out = noGrad(() => T.unary(op, x));
  return record(op, [x], out, [x], (g, [xs]) => [T.unaryGrad(op, xs, g)]);
}
export const neg = (x: Tensor) => unary('neg', x);
export const abs = (x: Tensor) => unary('abs', x);
export const exp = (x: Tensor) => unary('exp', x);
export const log = (x: Tensor) => unary('log', x);
export const sqrt = (x: Tensor) => unary('sqrt', x);
export const rsqrt = (x: Tensor) => unary('rsqrt', x);
export const tanh = (x: Tensor) => unary('tanh', x);
export const sigmoid = (x: Tensor) => unary('sigmoid', x);
export const relu = (x: Tensor) => unary('relu', x);
export const silu = (x: Tensor) => unary('silu', x);
export const gelu = (x: Tensor, approximate: 'tanh' | 'none' = 'tanh') => unary(approximate === 'tanh' ? 'gelu' : 'geluErf', x);

/** A number operand as a 0-d tensor of `like`'s dtype and device (uploaded: no fill dispatch). */
function asTensor(v: Operand, like: Tensor): Tensor {
  return typeof v === 'number' ? scalarLike(v, like) : v;
}

/** d(a op b)/da and /db as tensor code, before summing over broadcast dims. */
const BINARY_GRADS: Partial<Record<BinaryOp, (g: Tensor, a: Tensor, b: Tensor, needs: readonly boolean[]) => [Tensor | null, Tensor | null]>> = {
  add: (g) => [alias(g), alias(g)],
  sub: (g, _a, _b, n) => [alias(g), n[1] ? T.neg(g) : null],
  mul: (g, a, b, n) => [n[0] ? T.mul(g, b) : null, n[1] ? T.mul(g, a) : null],
  div: (g, a, b, n) => [n[0] ? T.div(g, b) : null, n[1] ? T.neg(T.div(T.mul(g, a), T.mul(b, b))) : null],
  pow: (g, a, b, n) => [
    n[0] ? T.mul(g, T.mul(b, T.pow(a, T.sub(b, 1)))) : null,
    n[1] ? T.mul(g, T.mul(T.pow(a, b), T.log(a))) : null,
  ],
  // ties send the gradient to a
  maximum: (g, a, b, n) => [n[0] ? T.mul(g, T.ge(a, b)) : null, n[1] ? T.mul(g, T.lt(a, b)) : null],
  minimum: (g, a, b, n) => [n[0] ? T.mul(g, T.le(a, b)) : null, n[1] ? T.mul(g, T.gt(a, b)) : null],
};

export function binary(op: BinaryOp, a: Operand, b: Operand): Tensor {
  const rule = BINARY_GRADS[op];
  if (!rule) return T.binary(op, a, b); // comparisons: no gradient
  if (typeof a === 'number' && typeof b === 'number') return T.binary(op, a, b);
  if (!((typeof a !== 'number' && records(a)) || (typeof b !== 'number' && records(b)))) return T.binary(op, a, b);
  const ta = asTensor(a, (typeof a === 'number' ? b : a) as Tensor);
  const tb = asTensor(b, ta);
  const out = noGrad(() => T.binary(op, ta, tb));
  const res = record(op, [ta, tb], out, [ta, tb], (g, [sa, sb], needs) => {
    const [ga, gb] = rule(g, sa, sb, needs);
    return [ga && sumTo(ga, sa.shape), gb && sumTo(gb, sb.shape)];
  });
  if (ta !== a) ta.dispose();
  if (tb !== b) tb.dispose();
  return res;
}
export const add = (a: Operand, b: Operand) => binary('add', a, b);
export const sub = (a: Operand, b: Operand) => binary('sub', a, b);
export const mul = (a: Operand, b: Operand) => binary('mul', a, b);
export const div = (a: Operand, b: Operand) => binary('div', a, b);
export const pow = (a: Operand, b: Operand) => binary('pow', a, b);
export const maximum = (a: Operand, b: Operand) => binary('maximum', a, b);
export const minimum = (a: Operand, b: Operand) => binary('minimum', a, b);

/** Comparisons have no gradient: they are the tensor layer's ops. */
export const { eq, ne, lt, le, gt, ge } = T;

export function where(cond: Tensor, a: Operand, b: Operand): Tensor {
  const like = typeof a === 'number' ? (typeof b === 'number' ? null : b) : a;
  if (!like) return T.where(cond, a, b);
  const ta = asTensor(a, like);
  const tb = asTensor(b, like);
  const out = noGrad(() => T.where(cond, ta, tb));
  const res = record('where', [ta, tb], out, [cond, ta, tb], (g, [c, sa, sb], needs) => [
    needs[0] ? sumTo(T.where(c, g, 0), sa.shape) : null,
    needs[1] ? sumTo(T.where(c, 0, g), sb.shape) : null,
  ]);
  if (ta !== a) ta.dispose();
  if (tb !== b) tb.dispose();
  return res;
}

// ---- reductions --------------------------------------------------------------------------

function reducedDims(x: Tensor, dims: number | number[] | undefined): number[] {
  const list = dims === undefined ? [...x.shape.keys()] : Array.isArray(dims) ? dims : [dims];
  return list.map((d) => normalizeDim('reduce', d, x.rank));
}

/** g (shaped like a reduction's output) as a view broadcast back over x's shape. */
function unreduce(g: Tensor, xShape: readonly number[], dims: number[]): Tensor {
  const kept = base.reshape(g, xShape.map((s, d) => (dims.includes(d) ? 1 : s)));
  const out = base.expand(kept, [...xShape]);
  kept.dispose();
  return out;
}

export function sum(x: Tensor, dims?: number | number[], keepdim = false): Tensor {
  if (!records(x)) return T.sum(x, dims, keepdim);
  const out = noGrad(() => T.sum(x, dims, keepdim));
  const rd = reducedDims(x, dims);
  const shape = x.shape;
  return record('sum', [x], out, [], (g) => [unreduce(g, shape, rd)]);
}

export function mean(x: Tensor, dims?: number | number[], keepdim = false): Tensor {
  if (!records(x)) return T.mean(x, dims, keepdim);
  const out = noGrad(() => T.mean(x, dims, keepdim));
  const rd = reducedDims(x, dims);
  const shape = x.shape;
  const count = rd.reduce((n, d) => n * shape[d], 1);
  return record('mean', [x], out, [], (g) => {
    const e = unreduce(g, shape, rd);
    return [T.div(e, count)];
  });
}

/** Max over dims; the gradient is shared equally among tied maxima. */
export function max(x: Tensor, dims?: number | number[], keepdim = false): Tensor {
  const out = noGrad(() => T.max(x, dims, keepdim));
  const rd = reducedDims(x, dims);
  return record('max', [x], out, [x, out], (g, [xs, m]) => {
    const mask = T.eq(xs, unreduce(m, xs.shape, rd));
    const ties = T.sum(mask, rd, true);
    return [T.div(T.mul(mask, unreduce(g, xs.shape, rd)), ties)];
  });
}

export const argmax = T.argmax;

export function softmax(x: Tensor, dim = -1): Tensor {
  if (!records(x)) return T.softmax(x, dim);
  const out = noGrad(() => T.softmax(x, dim));
  return record('softmax', [x], out, [out], (g, [y]) => [T.softmaxGrad(y, g, dim, false)]);
}

export function logSoftmax(x: Tensor, dim = -1): Tensor {
  if (!records(x)) return T.logSoftmax(x, dim);
  const out = noGrad(() => T.logSoftmax(x, dim));
  return record('logSoftmax', [x], out, [out], (g, [y]) => [T.softmaxGrad(y, g, dim, true)]);
}

// ---- matmul, attention, norms --------------------------------------------------------------

/**
 * a @ b with NumPy's rules for 1-d operands (a row vector, a column vector, both: a scalar):
 * the matrix product of the 2-d forms is recorded, then reshaped to the result's shape.
 */
export function matmul(a: Tensor, b: Tensor): Tensor {
  if (a.rank === 1 || b.rank === 1) {
    if (a.rank === 0 || b.rank === 0) return T.matmul(a, b); // throws naming both shapes
    const a2 = a.rank === 1 ? unsqueeze(a, 0) : a;
    const b2 = b.rank === 1 ? unsqueeze(b, 1) : b;
    const o = matmul(a2, b2);
    const shape = o.shape.slice(0, -2);
    if (a.rank > 1) shape.push(o.shape[o.rank - 2]);
    if (b.rank > 1) shape.push(o.shape[o.rank - 1]);
    const out = reshape(o, shape);
    for (const t of [a2, b2, o]) if (t !== a && t !== b) t.dispose();
    return out;
  }
  if (!records(a) && !records(b)) return T.matmul(a, b);
  const out = noGrad(() => T.matmul(a, b));
  return record('matmul', [a, b], out, [a, b], (g, [sa, sb], needs) => [
    needs[0] ? sumTo(T.matmul(g, sb.transpose()), sa.shape) : null,
    needs[1] ? sumTo(T.matmul(sa.transpose(), g), sb.shape) : null,
  ]);
}

export function attention(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions = {}): Tensor {
  const out = noGrad(() => T.attention(q, k, v, opts));
  const seg = opts.segmentIds;
  const segs = !seg ? [] : seg instanceof Tensor ? [seg] : [seg.q, seg.k];
  return record('attention', [q, k, v], out, [q, k, v, ...segs], (g, saved) => {
    const [sq, sk, sv, ...ss] = saved;
    const segmentIds = ss.length === 0 ? undefined : ss.length === 1 ? ss[0] : { q: ss[0], k: ss[1] };
    const { gq, gk, gv } = T.attentionGrad(sq, sk, sv, g, { ...opts, segmentIds });
    return [gq, gk, gv];
  });
}

export function layerNorm(x: Tensor, weight?: Tensor | null, bias?: Tensor | null, eps = 1e-5): Tensor {
  const out = noGrad(() => T.layerNorm(x, weight, bias, eps));
  const inputs = [x, weight, bias].filter((t): t is Tensor => !!t);
  return record('layerNorm', inputs, out, inputs, (g, saved, needs) => {
    const [xs, ...rest] = saved;
    const w = weight ? rest[0] : null;
    const rows = [...Array(xs.rank - 1).keys()];
    const grads: (Tensor | null)[] = [needs[0] ? T.layerNormGrad(xs, w, g, eps) : null];
    if (weight) grads.push(needs[1] ? T.sum(T.mul(g, T.layerNorm(xs, null, null, eps)), rows) : null);
    if (bias) grads.push(needs[grads.length] ? T.sum(g, rows) : null);
    return grads;
  });
}

export function rmsNorm(x: Tensor, weight?: Tensor | null, eps = 1e-6): Tensor {
  const out = noGrad(() => T.rmsNorm(x, weight, eps));
  const inputs = [x, weight].filter((t): t is Tensor => !!t);
  return record('rmsNorm', inputs, out, inputs, (g, [xs, w], needs) => {
    const rows = [...Array(xs.rank - 1).keys()];
    return [
      needs[0] ? T.rmsNormGrad(xs, w ?? null, g, eps) : null,
      ...(w ? [needs[1] ? T.sum(T.mul(g, T.rmsNorm(xs, null, eps)), rows) : null] : []),
    ];
  });
}

// ---- indexing and joining ----------------------------------------------------------------

export function gather(x: Tensor, dim: number, index: Tensor): Tensor {
  const out = noGrad(() => T.gather(x, dim, index));
  const shape = x.shape;
  return record('gather', [x], out, [index], (g, [idx]) => {
    const z = zeros(shape, { dtype: g.dtype, device: g.device });
    return [T.scatterAdd(z, dim, idx, g)];
  });
}

export function indexSelect(x: Tensor, dim: number, index: Tensor): Tensor {
  const d = normalizeDim('indexSelect', dim, x.rank);
  const out = noGrad(() => T.indexSelect(x, d, index));
  const shape = x.shape;
  return record('indexSelect', [x], out, [index], (g, [idx]) => {
    const view = [...shape.keys()].map((i) => (i === d ? idx.shape[0] : 1));
    const expanded = idx.reshape(view).expand(g.shape);
    return [T.scatterAdd(zeros(shape, { dtype: g.dtype, device: g.device }), d, expanded, g)];
  });
}

export function scatterAdd(x: Tensor, dim: number, index: Tensor, src: Tensor): Tensor {
  const out = noGrad(() => T.scatterAdd(x, dim, index, src));
  const srcShape = src.shape;
  return record('scatterAdd', [x, src], out, [index], (g, [idx], needs) => {
    let gs: Tensor | null = null;
    if (needs[1]) {
      const picked = T.gather(g, dim, idx);
      gs = shapesEqual(picked.shape, srcShape) ? picked : padTo(picked, srcShape);
    }
    return [needs[0] ? alias(g) : null, gs];
  });
}

/** Zeros of `shape` with `t` written into its leading corner. */
function padTo(t: Tensor, shape: readonly number[]): Tensor {
  const z = zeros(shape, { dtype: t.dtype, device: t.device });
  const corner = base.slice(z, ...t.shape.map((n) => [0, n] as const));
  T.assign(corner, t);
  corner.dispose();
  return z;
}

export function concat(tensors: readonly Tensor[], dim = 0): Tensor {
  const out = noGrad(() => T.concat(tensors, dim));
  const d = normalizeDim('concat', dim, tensors[0].rank);
  const sizes = tensors.map((t) => t.shape[d]);
  return record('concat', tensors, out, [], (g, _s, needs) => {
    let at = 0;
    return sizes.map((n, i) => {
      const part = needs[i] ? g.narrow(d, at, n) : null;
      at += n;
      return part;
    });
  });
}

export function stack(tensors: readonly Tensor[], dim = 0): Tensor {
  const d = normalizeDim('stack', dim, tensors[0].rank + 1);
  const views = tensors.map((t) => unsqueeze(t, d));
  const out = concat(views, d);
  for (const v of views) v.dispose();
  return out;
}

// ---- token grids ---------------------------------------------------------------------------

export function pixelUnshuffle(x: Tensor, h: number, w: number, r = 2): Tensor {
  const out = noGrad(() => T.pixelUnshuffle(x, h, w, r));
  const shape = x.shape;
  return record('pixelUnshuffle', [x], out, [], (g) => {
    // [..., (h/r)(w/r), r*r*d] -> [..., h/r, w/r, r, r, d] -> [..., h/r, r, w/r, r, d] -> [..., h*w, d]
    const lead = shape.slice(0, -2);
    const n = lead.length;
    const d = shape[shape.length - 1];
    const split = g.reshape([...lead, h / r, w / r, r, r, d]);
    const back = split.permute([...lead.keys(), n, n + 2, n + 1, n + 3, n + 4]);
    return [back.reshape([...shape])];
  });
}

export function avgPool2x2(x: Tensor, h: number, w: number): Tensor {
  const out = noGrad(() => T.avgPool2x2(x, h, w));
  const shape = x.shape;
  return record('avgPool2x2', [x], out, [], (g) => {
    const lead = shape.slice(0, -2);
    const d = shape[shape.length - 1];
    const win = g.reshape([...lead, h / 2, 1, w / 2, 1, d]).expand([...lead, h / 2, 2, w / 2, 2, d]);
    return [T.div(win, 4).reshape([...shape])];
  });
}

// ---- copies and casts ----------------------------------------------------------------------

export function contiguous(x: Tensor): Tensor {
  if (!records(x)) return T.contiguous(x);
  const out = noGrad(() => T.contiguous(x));
  return record('contiguous', [x], out, [], (g) => [alias(g)]);
}

export function clone(x: Tensor): Tensor {
  if (!records(x)) return T.clone(x);
  const out = noGrad(() => T.clone(x));
  return record('clone', [x], out, [], (g) => [alias(g)]);
}

export function cast(x: Tensor, dtype: DType): Tensor {
  const out = noGrad(() => T.cast(x, dtype));
  if (dtype === 'int32') return out;
  const from = x.dtype;
  return record('cast', [x], out, [], (g) => [T.cast(g, from)]);
}

// ---- views ---------------------------------------------------------------------------------

export function reshape(x: Tensor, shape: readonly number[]): Tensor {
  if (!records(x)) return base.reshape(x, shape);
  const out = noGrad(() => base.reshape(x, shape));
  const from = x.shape;
  return record('reshape', [x], out, [], (g) => [g.reshape(from)]);
}

export function view(x: Tensor, shape: readonly number[]): Tensor {
  if (!records(x)) return base.view(x, shape);
  const out = noGrad(() => base.view(x, shape));
  const from = x.shape;
  return record('view', [x], out, [], (g) => [g.reshape(from)]);
}

export function permute(x: Tensor, order: readonly number[]): Tensor {
  if (!records(x)) return base.permute(x, order);
  const out = noGrad(() => base.permute(x, order));
  const dims = order.map((d) => normalizeDim('permute', d, x.rank));
  return record('permute', [x], out, [], (g) => [g.permute(dims.map((_, i) => dims.indexOf(i)))]);
}

export function transpose(x: Tensor, dim0 = -2, dim1 = -1): Tensor {
  return permute(x, base.swappedDims('transpose', x.rank, dim0, dim1));
}

export function slice(x: Tensor, ...ranges: SliceRange[]): Tensor {
  if (!records(x)) return base.slice(x, ...ranges);
  const out = noGrad(() => base.slice(x, ...ranges));
  const shape = x.shape;
  return record('slice', [x], out, [], (g) => {
    const z = zeros(shape, { dtype: g.dtype, device: g.device });
    const region = base.slice(z, ...ranges);
    T.assign(region, g);
    region.dispose();
    return [z];
  });
}

export function narrow(x: Tensor, dim: number, start: number, length: number): Tensor {
  const d = normalizeDim('narrow', dim, x.rank);
  if (start < 0 || length < 0 || start + length > x.shape[d]) {
    throw new Error(`narrow: [${start}, ${start + length}) out of range for dim ${d} of size ${x.shape[d]}`);
  }
  const ranges: SliceRange[] = x.shape.map(() => null);
  ranges[d] = [start, start + length];
  return slice(x, ...ranges);
}

export function expand(x: Tensor, shape: readonly number[]): Tensor {
  if (!records(x)) return base.expand(x, shape);
  const out = noGrad(() => base.expand(x, shape));
  const from = x.shape;
  return record('expand', [x], out, [], (g) => [sumTo(g, from)]);
}

export function squeeze(x: Tensor, dim?: number): Tensor {
  if (!records(x)) return base.squeeze(x, dim);
  const out = noGrad(() => base.squeeze(x, dim));
  const from = x.shape;
  return record('squeeze', [x], out, [], (g) => [g.reshape(from)]);
}

export function unsqueeze(x: Tensor, dim: number): Tensor {
  if (!records(x)) return base.unsqueeze(x, dim);
  const out = noGrad(() => base.unsqueeze(x, dim));
  const from = x.shape;
  return record('unsqueeze', [x], out, [], (g) => [g.reshape(from)]);
}
