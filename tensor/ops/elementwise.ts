/** Elementwise ops: unary maps, broadcasting binary ops, comparisons, where, copies and casts. */
import { getBackend, requireDeviceDtype, type BinaryOp, type UnaryOp } from '../backend.js';
import { isFloat, type DType } from '../dtype.js';
import { broadcastShapes, fmt } from '../shape.js';
import type { Device } from '../storage.js';
import { Tensor } from '../tensor.js';
import { backendFor, broadcastTo, empty, requireSameDtype, scalarLike } from './common.js';

const FLOAT_ONLY: ReadonlySet<UnaryOp> = new Set([
  'exp', 'log', 'sqrt', 'rsqrt', 'tanh', 'sigmoid', 'gelu', 'geluErf', 'silu',
]);

export function unary(op: UnaryOp, x: Tensor): Tensor {
  const backend = backendFor(op, x);
  if (FLOAT_ONLY.has(op) && !isFloat(x.dtype)) {
    throw new Error(`${op}: needs a float tensor, got ${x.dtype} ${fmt(x.shape)}; cast it first`);
  }
  const out = empty(x.shape, x.dtype, x.device);
  backend.unary(op, x, out);
  return out;
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
/** GELU; 'tanh' is the approximation SigLIP uses, 'none' the exact erf form the connector uses. */
export const gelu = (x: Tensor, approximate: 'tanh' | 'none' = 'tanh') =>
  unary(approximate === 'tanh' ? 'gelu' : 'geluErf', x);

/** Broadcasting binary op; a number operand takes the tensor's dtype and device. */
export function binary(op: BinaryOp, a: Tensor | number, b: Tensor | number): Tensor {
  if (typeof a === 'number' && typeof b === 'number') throw new Error(`${op}: at least one operand must be a Tensor`);
  const ta = typeof a === 'number' ? scalarLike(a, b as Tensor) : a;
  const tb = typeof b === 'number' ? scalarLike(b, ta) : b;
  try {
    const backend = backendFor(op, ta, tb);
    requireSameDtype(op, ta, tb);
    if (op === 'pow' && !isFloat(ta.dtype)) throw new Error(`pow: needs float tensors, got ${ta.dtype}`);
    const shape = broadcastShapes(op, ta.shape, tb.shape);
    const out = empty(shape, ta.dtype, ta.device);
    const ea = broadcastTo(ta, shape);
    const eb = broadcastTo(tb, shape);
    backend.binary(op, ea, eb, out);
    if (ea !== ta) ea.dispose();
    if (eb !== tb) eb.dispose();
    return out;
  } finally {
    if (ta !== a) ta.dispose();
    if (tb !== b) tb.dispose();
  }
}

type Operand = Tensor | number;
export const add = (a: Operand, b: Operand) => binary('add', a, b);
export const sub = (a: Operand, b: Operand) => binary('sub', a, b);
export const mul = (a: Operand, b: Operand) => binary('mul', a, b);
export const div = (a: Operand, b: Operand) => binary('div', a, b);
export const pow = (a: Operand, b: Operand) => binary('pow', a, b);
export const maximum = (a: Operand, b: Operand) => binary('maximum', a, b);
export const minimum = (a: Operand, b: Operand) => binary('minimum', a, b);
/** Comparisons return 1 or 0 in the operands' dtype. */
export const eq = (a: Operand, b: Operand) => binary('eq', a, b);
export const ne = (a: Operand, b: Operand) => binary('ne', a, b);
export const lt = (a: Operand, b: Operand) => binary('lt', a, b);
export const le = (a: Operand, b: Operand) => binary('le', a, b);
export const gt = (a: Operand, b: Operand) => binary('gt', a, b);
export const ge = (a: Operand, b: Operand) => binary('ge', a, b);

/** cond != 0 ? a : b, broadcasting all three. `a` and `b` share a dtype, which the result takes. */
export function where(cond: Tensor, a: Operand, b: Operand): Tensor {
  const like = typeof a === 'number' ? (typeof b === 'number' ? null : b) : a;
  const dtype = like?.dtype ?? (cond.dtype === 'int32' ? 'float32' : cond.dtype);
  const ta = typeof a === 'number' ? scalarOf(a, dtype, cond.device) : a;
  const tb = typeof b === 'number' ? scalarOf(b, dtype, cond.device) : b;
  try {
    const backend = backendFor('where', cond, ta, tb);
    requireSameDtype('where', ta, tb);
    const shape = broadcastShapes('where', broadcastShapes('where', cond.shape, ta.shape), tb.shape);
    const out = empty(shape, ta.dtype, cond.device);
    const [ec, ea, eb] = [broadcastTo(cond, shape), broadcastTo(ta, shape), broadcastTo(tb, shape)];
    backend.where(ec, ea, eb, out);
    if (ec !== cond) ec.dispose();
    if (ea !== ta) ea.dispose();
    if (eb !== tb) eb.dispose();
    return out;
  } finally {
    if (ta !== a) ta.dispose();
    if (tb !== b) tb.dispose();
  }
}

function scalarOf(value: number, dtype: DType, device: Device): Tensor {
  const t = empty([], dtype, device);
  getBackend(device).fill(t, value);
  return t;
}

/** A dense row-major copy (always a new tensor, even when `x` is already contiguous). */
export function clone(x: Tensor): Tensor {
  const backend = backendFor('clone', x);
  const out = empty(x.shape, x.dtype, x.device);
  backend.copy(x, out);
  return out;
}

/** `x` itself (as a new handle on the same storage) when dense row-major, else a copy. */
export function contiguous(x: Tensor): Tensor {
  x.assertAlive('contiguous');
  if (x.isContiguous) return x.asStrided(x.shape, x.strides, x.offset);
  return clone(x);
}

export function cast(x: Tensor, dtype: DType): Tensor {
  const backend = backendFor('cast', x);
  if (dtype === x.dtype) return clone(x);
  requireDeviceDtype('cast', x.device, dtype);
  const out = empty(x.shape, dtype, x.device);
  backend.copy(x, out);
  return out;
}

/**
 * A copy on another device (a new handle if already there). Synchronous when the source
 * device reads back synchronously (`capabilities.syncRead`: the CPU, wasm); from a device
 * with queued work (WebGPU) use `await toDevice(x, device)`.
 */
export function to(x: Tensor, device: Device): Tensor {
  x.assertAlive('to');
  if (x.device === device) return x.asStrided(x.shape, x.strides, x.offset);
  const src = getBackend(x.device);
  if (!src.readSync) {
    throw new Error(`to: moving ${x} to ${device} needs a read-back; use \`await toDevice(x, '${device}')\``);
  }
  requireDeviceDtype('to', device, x.dtype);
  return new Tensor(getBackend(device).upload(src.readSync(x), x.dtype), x.shape);
}

/** Moves a tensor between devices (asynchronous because the source may be on the GPU). */
export async function toDevice(x: Tensor, device: Device): Promise<Tensor> {
  x.assertAlive('toDevice');
  if (x.device === device) return x.asStrided(x.shape, x.strides, x.offset);
  requireDeviceDtype('toDevice', device, x.dtype);
  const data = await x.data();
  return new Tensor(getBackend(device).upload(data, x.dtype), x.shape);
}

/** Writes `src` (broadcast to dst's shape) into the view `dst` in place. */
export function assign(dst: Tensor, src: Tensor): void {
  const backend = backendFor('assign', dst, src);
  const e = broadcastTo(src, dst.shape);
  backend.copy(e, dst);
  if (e !== src) e.dispose();
}
