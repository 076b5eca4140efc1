/** Gathering, scattering and joining. */
import { fmt, normalizeDim } from '../shape.js';
import type { Tensor } from '../tensor.js';
import { isHalf } from '../dtype.js';
import { backendFor, backendForAll, empty, requireDtype, requireSameDtype } from './common.js';

function checkIndex(op: string, x: Tensor, dim: number, index: Tensor): void {
  requireDtype(op, 'index', index, ['int32']);
  if (index.rank !== x.rank) {
    throw new Error(`${op}: index ${fmt(index.shape)} must have the rank of x ${fmt(x.shape)}`);
  }
  for (let d = 0; d < x.rank; d++) {
    if (d !== dim && index.shape[d] > x.shape[d]) {
      throw new Error(`${op}: index ${fmt(index.shape)} is larger than x ${fmt(x.shape)} in dim ${d}`);
    }
  }
}

/**
 * out[i][j] = x[index[i][j]][j] for dim 0 (PyTorch gather); out has index's shape.
 * Out-of-range indices throw on the CPU; on the GPU they read 0 (checked on the CPU side
 * when the index tensor lives there).
 */
export function gather(x: Tensor, dim: number, index: Tensor): Tensor {
  const backend = backendFor('gather', x, index);
  const d = normalizeDim('gather', dim, x.rank);
  checkIndex('gather', x, d, index);
  // a half table (bfloat16 embeddings) gathers into float32
  const out = empty(index.shape, isHalf(x.dtype) ? 'float32' : x.dtype, x.device);
  backend.gather(x, d, index, out);
  return out;
}

/** Rows (along `dim`) of x picked by a 1-d int32 index: an embedding lookup for dim 0. */
export function indexSelect(x: Tensor, dim: number, index: Tensor): Tensor {
  backendFor('indexSelect', x, index);
  const d = normalizeDim('indexSelect', dim, x.rank);
  requireDtype('indexSelect', 'index', index, ['int32']);
  if (index.rank !== 1) throw new Error(`indexSelect: index must be 1-d, got ${fmt(index.shape)}`);
  const shape = x.shape.map((s, i) => (i === d ? index.shape[0] : s));
  const view = [...x.shape.keys()].map((i) => (i === d ? index.shape[0] : 1));
  const idx = index.reshape(view);
  const expanded = idx.expand(shape);
  const out = gather(x, d, expanded);
  idx.dispose();
  expanded.dispose();
  return out;
}

/** out = x; out[index[i][j]][j] += src[i][j] for dim 0 (PyTorch scatter_add). index and src share a shape. */
export function scatterAdd(x: Tensor, dim: number, index: Tensor, src: Tensor): Tensor {
  const backend = backendFor('scatterAdd', x, index, src);
  const d = normalizeDim('scatterAdd', dim, x.rank);
  checkIndex('scatterAdd', x, d, index);
  requireSameDtype('scatterAdd', x, src);
  if (src.rank !== index.rank || src.shape.some((s, i) => s < index.shape[i])) {
    throw new Error(`scatterAdd: src ${fmt(src.shape)} must cover index ${fmt(index.shape)}`);
  }
  const out = empty(x.shape, x.dtype, x.device);
  backend.scatterAdd(x, d, index, src, out);
  return out;
}

/** Joins tensors along an existing dim. */
export function concat(tensors: readonly Tensor[], dim = 0): Tensor {
  if (tensors.length === 0) throw new Error('concat: needs at least one tensor');
  const backend = backendForAll('concat', tensors);
  const first = tensors[0];
  const d = normalizeDim('concat', dim, first.rank);
  for (const t of tensors) {
    requireSameDtype('concat', first, t);
    if (t.rank !== first.rank || t.shape.some((s, i) => i !== d && s !== first.shape[i])) {
      throw new Error(`concat: shapes differ outside dim ${d}: ${tensors.map((x) => fmt(x.shape)).join(', ')}`);
    }
  }
  const total = tensors.reduce((n, t) => n + t.shape[d], 0);
  const out = empty(first.shape.map((s, i) => (i === d ? total : s)), first.dtype, first.device);
  let at = 0;
  for (const t of tensors) {
    const part = out.narrow(d, at, t.shape[d]);
    backend.copy(t, part);
    part.dispose();
    at += t.shape[d];
  }
  return out;
}

/** Joins same-shaped tensors along a new dim. */
export function stack(tensors: readonly Tensor[], dim = 0): Tensor {
  if (tensors.length === 0) throw new Error('stack: needs at least one tensor');
  const d = normalizeDim('stack', dim, tensors[0].rank + 1);
  for (const t of tensors) {
    if (t.rank !== tensors[0].rank || t.shape.some((s, i) => s !== tensors[0].shape[i])) {
      throw new Error(`stack: shapes differ: ${tensors.map((x) => fmt(x.shape)).join(', ')}`);
    }
  }
  const views = tensors.map((t) => t.unsqueeze(d));
  const out = concat(views, d);
  for (const v of views) v.dispose();
  return out;
}
