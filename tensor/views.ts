/**
 * Views: new shape/strides/offset over the same storage, no copy (a reshape that the strides
 * do not allow copies once). These are the plain forms; Tensor's methods call them through
 * the op table (tensor/dispatch.ts), so that they record gradients once autograd is loaded.
 *
 * A training step makes thousands of views: these are plain loops over the dims.
 */
import { contiguousStrides, fmt, isContiguous, normalizeDim, numel, type Shape } from './shape.js';
import { contiguous } from './ops/elementwise.js';
import type { SliceRange, Tensor } from './tensor.js';

/** Same elements, new shape; a view when the strides allow, otherwise a copy. One dim may be -1. */
export function reshape(x: Tensor, shape: readonly number[]): Tensor {
  const target = inferShape('reshape', x.shape, shape);
  const strides = viewStrides(x.shape, x.strides, target);
  if (strides) return x.asStrided(target, strides, x.offset);
  const dense = contiguous(x);
  const out = dense.asStrided(target, contiguousStrides(target), 0);
  dense.dispose();
  return out;
}

/** Like reshape but never copies: throws when the strides do not allow a view. */
export function view(x: Tensor, shape: readonly number[]): Tensor {
  const target = inferShape('view', x.shape, shape);
  const strides = viewStrides(x.shape, x.strides, target);
  if (!strides) {
    throw new Error(`view: cannot view ${fmt(x.shape)} with strides ${fmt(x.strides)} as ${fmt(target)}; use reshape`);
  }
  return x.asStrided(target, strides, x.offset);
}

export function permute(x: Tensor, dims: readonly number[]): Tensor {
  const rank = x.rank;
  const order = new Array<number>(rank);
  const shape = new Array<number>(rank);
  const strides = new Array<number>(rank);
  let ok = dims.length === rank;
  for (let i = 0; ok && i < rank; i++) {
    const d = normalizeDim('permute', dims[i], rank);
    for (let j = 0; j < i; j++) if (order[j] === d) ok = false;
    order[i] = d;
    shape[i] = x.shape[d];
    strides[i] = x.strides[d];
  }
  if (!ok) {
    // the message lists every dim normalised (and a dim out of range throws first, naming it)
    const order = dims.map((d) => normalizeDim('permute', d, rank));
    throw new Error(`permute: [${order.join(',')}] is not a permutation of ${rank} dims (tensor ${fmt(x.shape)})`);
  }
  return x.asStrided(shape, strides, x.offset);
}

/** The dims 0..rank-1 with `dim0` and `dim1` swapped (normalised, or throws naming `op`). */
export function swappedDims(op: string, rank: number, dim0: number, dim1: number): number[] {
  const a = normalizeDim(op, dim0, rank);
  const b = normalizeDim(op, dim1, rank);
  const order = new Array<number>(rank);
  for (let i = 0; i < rank; i++) order[i] = i;
  order[a] = b;
  order[b] = a;
  return order;
}

export function transpose(x: Tensor, dim0 = -2, dim1 = -1): Tensor {
  return permute(x, swappedDims('transpose', x.rank, dim0, dim1));
}

/** Python-style slicing per dim: `slice(t, null, [1, 5, 2])` keeps dim 0, takes 1,3 of dim 1. */
export function slice(x: Tensor, ...ranges: SliceRange[]): Tensor {
  if (ranges.length > x.rank) {
    throw new Error(`slice: ${ranges.length} ranges for a tensor of rank ${x.rank} ${fmt(x.shape)}`);
  }
  const shape = x.shape.slice();
  const strides = x.strides.slice();
  let offset = x.offset;
  for (let d = 0; d < ranges.length; d++) {
    const r = ranges[d];
    if (r === null) continue;
    const n = x.shape[d];
    const step = typeof r === 'number' || r[2] === undefined ? 1 : r[2];
    if (!Number.isInteger(step) || step <= 0) throw new Error(`slice: step must be a positive integer, got ${step} (dim ${d})`);
    let start: number;
    let end: number;
    if (typeof r === 'number') {
      // one index, kept as a size-1 dim (empty when out of range); -1 is the last
      const i = r < 0 ? r + n : r;
      start = Math.min(Math.max(i, 0), n);
      end = Math.min(Math.max(i + 1, start), n);
    } else {
      start = clampIndex(r[0], 0, n);
      end = Math.max(clampIndex(r[1], n, n), start);
    }
    shape[d] = Math.ceil((end - start) / step);
    offset += start * x.strides[d];
    strides[d] = x.strides[d] * step;
  }
  return x.asStrided(shape, strides, offset);
}

/** A Python slice bound in 0..n (negative counts from the end); `dflt` when omitted. */
function clampIndex(v: number | undefined, dflt: number, n: number): number {
  if (v === undefined) return dflt;
  const c = v < 0 ? v + n : v;
  return Math.min(Math.max(c, 0), n);
}

/** `length` elements of `dim` from `start`. */
export function narrow(x: Tensor, dim: number, start: number, length: number): Tensor {
  const d = normalizeDim('narrow', dim, x.rank);
  if (start < 0 || length < 0 || start + length > x.shape[d]) {
    throw new Error(`narrow: [${start}, ${start + length}) out of range for dim ${d} of size ${x.shape[d]}`);
  }
  const ranges: SliceRange[] = x.shape.map(() => null);
  ranges[d] = [start, start + length];
  return slice(x, ...ranges);
}

/** Broadcast view: size-1 dims repeat with stride 0; new leading dims may be added; -1 keeps a dim. */
export function expand(x: Tensor, shape: readonly number[]): Tensor {
  const lead = shape.length - x.rank;
  if (lead < 0) throw new Error(`expand: target ${fmt(shape)} has fewer dims than ${fmt(x.shape)}`);
  const out = new Array<number>(shape.length);
  const strides = new Array<number>(shape.length);
  for (let i = 0; i < shape.length; i++) {
    const size = shape[i];
    if (i < lead) {
      if (size === -1) throw new Error(`expand: -1 in ${fmt(shape)} is for existing dims, not the new leading dim ${i} (tensor ${fmt(x.shape)})`);
      out[i] = size;
      strides[i] = 0;
      continue;
    }
    const own = x.shape[i - lead];
    if (size === -1 || size === own) {
      out[i] = own;
      strides[i] = x.strides[i - lead];
    } else if (own === 1) {
      out[i] = size;
      strides[i] = 0;
    } else {
      throw new Error(`expand: cannot expand ${fmt(x.shape)} to ${fmt(shape)} (dim ${i}: ${own} -> ${size})`);
    }
  }
  return x.asStrided(out, strides, x.offset);
}

/** Drops size-1 dims (all of them, or `dim` when it has size 1). */
export function squeeze(x: Tensor, dim?: number): Tensor {
  const shape: number[] = [];
  const strides: number[] = [];
  // (a 0-d tensor has nothing to squeeze, whatever dim is asked for)
  const d = dim === undefined || x.rank === 0 ? -1 : normalizeDim('squeeze', dim, x.rank);
  for (let i = 0; i < x.rank; i++) {
    if (x.shape[i] === 1 && (d === -1 || i === d)) continue;
    shape.push(x.shape[i]);
    strides.push(x.strides[i]);
  }
  return x.asStrided(shape, strides, x.offset);
}

export function unsqueeze(x: Tensor, dim: number): Tensor {
  const d = normalizeDim('unsqueeze', dim, x.rank + 1);
  const shape = x.shape.slice();
  const strides = x.strides.slice();
  shape.splice(d, 0, 1);
  strides.splice(d, 0, d < x.rank ? x.strides[d] * x.shape[d] : 1);
  return x.asStrided(shape, strides, x.offset);
}

/** A copy of `target` with its one -1 resolved; checks the element count matches. */
function inferShape(op: string, from: Shape, target: readonly number[]): readonly number[] {
  const total = numel(from);
  const out = new Array<number>(target.length);
  let minus = -1;
  let known = 1;
  for (let i = 0; i < target.length; i++) {
    const s = target[i];
    if (!Number.isInteger(s) || s < -1 || (s === -1 && minus >= 0)) throw new Error(`${op}: invalid target shape ${fmt(target)}`);
    if (s === -1) minus = i;
    else known *= s;
    out[i] = s;
  }
  if (minus >= 0) {
    if (known === 0 || total % known !== 0) throw new Error(`${op}: cannot reshape ${fmt(from)} into ${fmt(target)}`);
    out[minus] = total / known;
  } else if (known !== total) {
    throw new Error(`${op}: cannot reshape ${fmt(from)} (${total} elements) into ${fmt(target)} (${known} elements)`);
  }
  return out;
}

/**
 * Strides that make `target` a view of (shape, strides), or null when a copy is needed.
 * Groups of source dims that are mutually contiguous can be split/merged freely.
 */
function viewStrides(shape: Shape, strides: readonly number[], target: readonly number[]): readonly number[] | null {
  // a dense source (the common case) views as any shape of its size with row-major strides
  if (numel(shape) === 0 || isContiguous(shape, strides)) return contiguousStrides(target);
  // Size-1 dims constrain nothing: match the others, then give the 1s any consistent stride.
  const srcSize: number[] = [];
  const srcStride: number[] = [];
  for (let i = 0; i < shape.length; i++) {
    if (shape[i] === 1) continue;
    srcSize.push(shape[i]);
    srcStride.push(strides[i]);
  }
  const dims: number[] = [];
  for (let i = 0; i < target.length; i++) if (target[i] !== 1) dims.push(i);
  const out = new Array<number>(target.length).fill(0);
  let ti = dims.length - 1;
  let si = srcSize.length - 1;
  while (si >= 0) {
    // a maximal run of source dims that is contiguous among itself can be split/merged freely
    let sj = si;
    let chunk = srcSize[si];
    while (sj > 0 && srcStride[sj - 1] === srcStride[sj] * srcSize[sj]) chunk *= srcSize[--sj];
    let stride = srcStride[si];
    let prod = 1;
    while (ti >= 0 && prod < chunk) {
      const d = dims[ti--];
      out[d] = stride;
      stride *= target[d];
      prod *= target[d];
    }
    if (prod !== chunk) return null;
    si = sj - 1;
  }
  for (let i = target.length - 1; i >= 0; i--) {
    if (target[i] === 1) out[i] = i + 1 < target.length ? out[i + 1] * target[i + 1] : 1;
  }
  return out;
}
