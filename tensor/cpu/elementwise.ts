/** CPU reference: elementwise maps over strided views. */
import type { BinaryOp, UnaryOp } from '../backend.js';
import type { Tensor } from '../tensor.js';
import { erf, geluErf, geluTanh, sigmoid, silu } from './math.js';
import { buf, offsets } from './storage.js';

export const UNARY: Record<UnaryOp, (x: number) => number> = {
  neg: (x) => -x,
  abs: Math.abs,
  exp: Math.exp,
  log: Math.log,
  sqrt: Math.sqrt,
  rsqrt: (x) => 1 / Math.sqrt(x),
  tanh: Math.tanh,
  sigmoid,
  relu: (x) => (x > 0 ? x : 0),
  gelu: geluTanh,
  geluErf,
  silu,
};

export const BINARY: Record<BinaryOp, (a: number, b: number) => number> = {
  add: (a, b) => a + b,
  sub: (a, b) => a - b,
  mul: (a, b) => a * b,
  div: (a, b) => a / b,
  pow: Math.pow,
  maximum: (a, b) => (a >= b || Number.isNaN(a) ? a : b),
  minimum: (a, b) => (a <= b || Number.isNaN(a) ? a : b),
  eq: (a, b) => +(a === b),
  ne: (a, b) => +(a !== b),
  lt: (a, b) => +(a < b),
  le: (a, b) => +(a <= b),
  gt: (a, b) => +(a > b),
  ge: (a, b) => +(a >= b),
};

export { erf };

/** `out` is fresh and contiguous. */
export function unary(op: UnaryOp, x: Tensor, out: Tensor): void {
  const f = UNARY[op];
  const xs = buf(x);
  const o = buf(out);
  const xo = offsets(x);
  for (let i = 0; i < xo.length; i++) o[i] = f(xs[xo[i]]);
}

export function binary(op: BinaryOp, a: Tensor, b: Tensor, out: Tensor): void {
  const f = BINARY[op];
  const as = buf(a);
  const bs = buf(b);
  const o = buf(out);
  const ao = offsets(a);
  const bo = offsets(b);
  if (out.dtype === 'int32' && op === 'mul') {
    for (let i = 0; i < ao.length; i++) o[i] = Math.imul(as[ao[i]], bs[bo[i]]);
    return;
  }
  for (let i = 0; i < ao.length; i++) o[i] = f(as[ao[i]], bs[bo[i]]);
}

export function where(cond: Tensor, a: Tensor, b: Tensor, out: Tensor): void {
  const cs = buf(cond);
  const as = buf(a);
  const bs = buf(b);
  const o = buf(out);
  const co = offsets(cond);
  const ao = offsets(a);
  const bo = offsets(b);
  for (let i = 0; i < co.length; i++) o[i] = cs[co[i]] !== 0 ? as[ao[i]] : bs[bo[i]];
}

/** out (any view) = x, converting dtype; float -> int32 truncates toward zero. */
export function copy(x: Tensor, out: Tensor): void {
  const xs = buf(x);
  const o = buf(out);
  const xo = offsets(x);
  const oo = offsets(out);
  if (out.dtype === 'int32' && x.dtype !== 'int32') {
    for (let i = 0; i < xo.length; i++) o[oo[i]] = Math.trunc(xs[xo[i]]);
    return;
  }
  for (let i = 0; i < xo.length; i++) o[oo[i]] = xs[xo[i]];
}

export function fill(out: Tensor, value: number): void {
  const o = buf(out);
  const oo = offsets(out);
  for (let i = 0; i < oo.length; i++) o[oo[i]] = value;
}
