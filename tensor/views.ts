/**
 * Views: new shape/strides/offset over the same storage, no copy (a reshape that the strides
 * do not allow copies once). These are the plain forms; Tensor's methods call them through
 * the op table (tensor/dispatch.ts), so that they record gradients once autograd is loaded.
 */
import { contiguousStrides, fmt, normalizeDim, numel, type Shape } from './shape.js';
import { contiguous } from './ops/elementwise.js';
import type { SliceRange, Tensor } from './tensor.js';

/** Same elements, new shape; a view when the strides allow, otherwise a copy. One dim may be -1. */
export function reshape(x: Tensor, shape: readonly number[]): Tensor {
  const target = inferShape('reshape', x.shape, [...shape]);
  const strides = viewStrides(x.shape, x.strides, target);
  if (strides) return x.asStrided(target, strides, x.offset);
  const dense = contiguous(x);
  const out = dense.asStrided(target, contiguousStrides(target), 0);
  dense.dispose();
  return out;
}

/** Like reshape but never copies: throws when the strides do not allow a view. */
export function view(x: Tensor, shape: readonly number[]): Tensor {
  const target = inferShape('view', x.shape, [...shape]);
  const strides = viewStrides(x.shape, x.strides, target);
  if (!strides) {
    throw new Error(`view: cannot view ${fmt(x.shape)} with strides ${fmt(x.strides)} as ${fmt(target)}; use reshape`);
  }
  return x.asStrided(target, strides, x.offset);
}

export function permute(x: Tensor, dims: readonly number[]): Tensor {
  const order = dims.map((d) => normalizeDim('permute', d, x.rank));
  if (order.length !== x.rank || new Set(order).size !== x.rank) {
    throw new Error(`permute: [${order.join(',')}] is not a permutation of ${x.rank} dims (tensor ${fmt(x.shape)})`);
  }
  return x.asStrided(order.map((d) => x.shape[d]), order.map((d) => x.strides[d]), x.offset);
}

export function transpose(x: Tensor, dim0 = -2, dim1 = -1): Tensor {
  const a = normalizeDim('transpose', dim0, x.rank);
  const b = normalizeDim('transpose', dim1, x.rank);
  const order = [...x.shape.keys()];
  [order[a], order[b]] = [order[b], order[a]];
  return permute(x, order);
}

/** Python-style slicing per dim: `slice(t, null, [1, 5, 2])` keeps dim 0, takes 1,3 of dim 1. */
export function slice(x: Tensor, ...ranges: SliceRange[]): Tensor {
  if (ranges.length > x.rank) {
    throw new Error(`slice: ${ranges.length} ranges for a tensor of rank ${x.rank} ${fmt(x.shape)}`);
  }
  const shape = [...x.shape];
  const strides = [...x.strides];
  let offset = x.offset;
  ranges.forEach((r, d) => {
    if (r === null) return;
    const n = x.shape[d];
    const [s0, e0, step = 1] = typeof r === 'number' ? [r, r + 1, 1] : r;
    if (!Number.isInteger(step) || step <= 0) throw new Error(`slice: step must be a positive integer, got ${step} (dim ${d})`);
    const clamp = (v: number | undefined, dflt: number) => {
      if (v === undefined) return dflt;
      const c = v < 0 ? v + n : v;
      return Math.min(Math.max(c, 0), n);
    };
    const start = clamp(s0, 0);
    const end = Math.max(clamp(e0, n), start);
    shape[d] = Math.ceil((end - start) / step);
    offset += start * x.strides[d];
    strides[d] = x.strides[d] * step;
  });
  return x.asStrided(shape, strides, offset);
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
  const strides = shape.map((size, i) => {
    if (i < lead) return 0;
    const own = x.shape[i - lead];
    if (size === -1 || size === own) return x.strides[i - lead];
    if (own === 1) return 0;
    throw new Error(`expand: cannot expand ${fmt(x.shape)} to ${fmt(shape)} (dim ${i}: ${own} -> ${size})`);
  });
  const out = shape.map((size, i) => (size === -1 ? x.shape[i - lead] : size));
  return x.asStrided(out, strides, x.offset);
}

/** Drops size-1 dims (all of them, or `dim` when it has size 1). */
export function squeeze(x: Tensor, dim?: number): Tensor {
  const keep = [...x.shape.keys()].filter((i) =>
    dim === undefined ? x.shape[i] !== 1 : i !== normalizeDim('squeeze', dim, x.rank) || x.shape[i] !== 1,
  );
  return x.asStrided(keep.map((i) => x.shape[i]), keep.map((i) => x.strides[i]), x.offset);
}

export function unsqueeze(x: Tensor, dim: number): Tensor {
  const d = normalizeDim('unsqueeze', dim, x.rank + 1);
  const shape = [...x.shape];
  const strides = [...x.strides];
  shape.splice(d, 0, 1);
  strides.splice(d, 0, d < x.rank ? x.strides[d] * x.shape[d] : 1);
  return x.asStrided(shape, strides, x.offset);
}

/** Resolves one -1 in `target` and checks the element count matches. */
function inferShape(op: string, from: Shape, target: number[]): number[] {
  const total = numel(from);
  const minus = target.filter((s) => s === -1).length;
  if (minus > 1 || target.some((s) => !Number.isInteger(s) || s < -1)) {
    throw new Error(`${op}: invalid target shape ${fmt(target)}`);
  }
  if (minus === 1) {
    const known = target.filter((s) => s !== -1).reduce((a, b) => a * b, 1);
    if (known === 0 || total % known !== 0) throw new Error(`${op}: cannot reshape ${fmt(from)} into ${fmt(target)}`);
    target = target.map((s) => (s === -1 ? total / known : s));
  }
  if (numel(target) !== total) {
    throw new Error(`${op}: cannot reshape ${fmt(from)} (${total} elements) into ${fmt(target)} (${numel(target)} elements)`);
  }
  return target;
}

/**
 * Strides that make `target` a view of (shape, strides), or null when a copy is needed.
 * Groups of source dims that are mutually contiguous can be split/merged freely.
 */
function viewStrides(shape: Shape, strides: readonly number[], target: readonly number[]): number[] | null {
  if (numel(shape) === 0) return contiguousStrides(target);
  // Size-1 dims constrain nothing: match the others, then give the 1s any consistent stride.
  const src = shape.map((s, i) => [s, strides[i]] as const).filter(([s]) => s !== 1);
  const dims = [...target.keys()].filter((i) => target[i] !== 1);
  const out = new Array<number>(target.length).fill(0);
  let ti = dims.length - 1;
  let si = src.length - 1;
  while (si >= 0) {
    // a maximal run of source dims that is contiguous among itself can be split/merged freely
    let sj = si;
    let chunk = src[si][0];
    while (sj > 0 && src[sj - 1][1] === src[sj][1] * src[sj][0]) chunk *= src[--sj][0];
    let stride = src[si][1];
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
