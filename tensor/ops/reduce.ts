/** Reductions over any set of dims, and softmax / log-softmax over one dim. */
import type { ReduceOp } from '../backend.js';
import { isFloat } from '../dtype.js';
import { fmt, normalizeDim } from '../shape.js';
import type { Tensor } from '../tensor.js';
import { backendFor, empty } from './common.js';

function reduce(op: ReduceOp, x: Tensor, dims: number | number[] | undefined, keepdim: boolean): Tensor {
  const backend = backendFor(op, x);
  if (op === 'mean' && !isFloat(x.dtype)) throw new Error(`mean: needs a float tensor, got ${x.dtype}`);
  const list = dims === undefined ? [...x.shape.keys()] : (Array.isArray(dims) ? dims : [dims]);
  const reduced = [...new Set(list.map((d) => normalizeDim(op, d, x.rank)))].sort((a, b) => a - b);
  if ((op === 'max' || op === 'argmax') && reduced.some((d) => x.shape[d] === 0)) {
    throw new Error(`${op}: cannot reduce an empty dim of ${fmt(x.shape)}`);
  }
  const kept = [...x.shape.keys()].filter((d) => !reduced.includes(d));
  // Move reduced dims last (a view), so the backend reduces trailing dims.
  const moved = x.permute([...kept, ...reduced]);
  const outShape = keepdim ? x.shape.map((s, d) => (reduced.includes(d) ? 1 : s)) : kept.map((d) => x.shape[d]);
  const out = empty(outShape, op === 'argmax' ? 'int32' : x.dtype, x.device);
  backend.reduce(op, moved, reduced.length, out);
  moved.dispose();
  return out;
}

export const sum = (x: Tensor, dims?: number | number[], keepdim = false) => reduce('sum', x, dims, keepdim);
export const mean = (x: Tensor, dims?: number | number[], keepdim = false) => reduce('mean', x, dims, keepdim);
export const max = (x: Tensor, dims?: number | number[], keepdim = false) => reduce('max', x, dims, keepdim);
/** Index (int32) of the first maximum along `dim` (over the flattened tensor when omitted). */
export function argmax(x: Tensor, dim?: number, keepdim = false): Tensor {
  if (dim === undefined) {
    const flat = x.reshape(-1);
    const out = reduce('argmax', flat, 0, false);
    flat.dispose();
    return out;
  }
  return reduce('argmax', x, dim, keepdim);
}

function softmaxLike(name: string, log: boolean, x: Tensor, dim: number): Tensor {
  const backend = backendFor(name, x);
  if (!isFloat(x.dtype)) throw new Error(`${name}: needs a float tensor, got ${x.dtype}`);
  const d = normalizeDim(name, dim, x.rank);
  const order = [...x.shape.keys()].filter((i) => i !== d).concat(d);
  const moved = x.permute(order);
  const out = empty(moved.shape, x.dtype, x.device);
  backend.softmax(moved, log, out);
  moved.dispose();
  if (d === x.rank - 1) return out;
  // out is laid out in `order`; permute back (a view).
  const inverse = order.map((_, i) => order.indexOf(i));
  const back = out.permute(inverse);
  out.dispose();
  return back;
}

export const softmax = (x: Tensor, dim = -1) => softmaxLike('softmax', false, x, dim);
export const logSoftmax = (x: Tensor, dim = -1) => softmaxLike('logSoftmax', true, x, dim);
