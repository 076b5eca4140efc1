/** Reductions over any set of dims, and softmax / log-softmax over one dim. */
import type { ReduceOp } from '../backend.js';
import { isFloat } from '../dtype.js';
import { fmt, normalizeDim } from '../shape.js';
import type { Tensor } from '../tensor.js';
import { backendFor, empty } from './common.js';

function reduce(op: ReduceOp, x: Tensor, dims: number | number[] | undefined, keepdim: boolean): Tensor {
  const backend = backendFor(op, x);
  if (op === 'mean' && !isFloat(x.dtype)) throw new Error(`mean: needs a float tensor, got ${x.dtype}`);
  const rank = x.rank;
  const isReduced = new Array<boolean>(rank).fill(dims === undefined);
  if (dims !== undefined) for (const d of Array.isArray(dims) ? dims : [dims]) isReduced[normalizeDim(op, d, rank)] = true;
  // the kept dims in order, then the reduced ones: the backend reduces trailing dims
  const order: number[] = [];
  const outShape: number[] = [];
  for (let d = 0; d < rank; d++) {
    if (!isReduced[d]) order.push(d);
    if (!isReduced[d] || keepdim) outShape.push(isReduced[d] ? 1 : x.shape[d]);
  }
  const kept = order.length;
  for (let d = 0; d < rank; d++) {
    if (!isReduced[d]) continue;
    if ((op === 'max' || op === 'argmax') && x.shape[d] === 0) throw new Error(`${op}: cannot reduce an empty dim of ${fmt(x.shape)}`);
    order.push(d);
  }
  // a view with the reduced dims last, unless they already are
  const moved = order.every((d, i) => d === i) ? x : x.permute(order);
  const out = empty(outShape, op === 'argmax' ? 'int32' : x.dtype, x.device);
  backend.reduce(op, moved, rank - kept, out);
  if (moved !== x) moved.dispose();
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
  if (d === x.rank - 1) {
    const out = empty(x.shape, x.dtype, x.device);
    backend.softmax(x, log, out);
    return out;
  }
  const order = [...x.shape.keys()].filter((i) => i !== d).concat(d);
  const moved = x.permute(order);
  const out = empty(moved.shape, x.dtype, x.device);
  backend.softmax(moved, log, out);
  moved.dispose();
  // out is laid out in `order`; permute back (a view).
  const inverse = order.map((_, i) => order.indexOf(i));
  const back = out.permute(inverse);
  out.dispose();
  return back;
}

export const softmax = (x: Tensor, dim = -1) => softmaxLike('softmax', false, x, dim);
export const logSoftmax = (x: Tensor, dim = -1) => softmaxLike('logSoftmax', true, x, dim);
