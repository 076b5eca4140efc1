/** Checks shared by every op's front end. */
import { getBackend, type Backend } from '../backend.js';
import { convertArray, type DType } from '../dtype.js';
import { fmt, shapesEqual, type Shape } from '../shape.js';
import type { Device } from '../storage.js';
import { Tensor } from '../tensor.js';

/** Checks the inputs are alive and on one device; returns that device's backend. */
export function backendFor(op: string, ...inputs: (Tensor | null | undefined)[]): Backend {
  let device: Device | null = null;
  for (const t of inputs) {
    if (!t) continue;
    if (!(t instanceof Tensor)) throw new Error(`${op}: expected a Tensor, got ${typeof t}`);
    t.assertAlive(op);
    if (device === null) device = t.device;
    else if (t.device !== device) {
      throw new Error(`${op}: tensors are on different devices (${device} and ${t.device}); move one with .to()`);
    }
  }
  return getBackend(device ?? 'cpu');
}

export function requireDtype(op: string, name: string, t: Tensor, allowed: readonly DType[]): void {
  if (!allowed.includes(t.dtype)) {
    throw new Error(`${op}: ${name} has dtype ${t.dtype}, expected ${allowed.join(' or ')}`);
  }
}

export function requireSameDtype(op: string, a: Tensor, b: Tensor): void {
  if (a.dtype !== b.dtype) {
    throw new Error(`${op}: dtypes differ, ${a.dtype} ${fmt(a.shape)} vs ${b.dtype} ${fmt(b.shape)}; cast one first`);
  }
}

export function requireRank(op: string, name: string, t: Tensor, rank: number): void {
  if (t.rank !== rank) throw new Error(`${op}: ${name} must have rank ${rank}, got ${fmt(t.shape)}`);
}

export function empty(shape: Shape, dtype: DType, device: Device): Tensor {
  return Tensor.empty(shape, dtype, device);
}

/**
 * `t` itself when it already has `shape` (most operands of a broadcasting op), else its
 * broadcast view; the caller disposes the view when it is not `t`.
 */
export function broadcastTo(t: Tensor, shape: readonly number[]): Tensor {
  return shapesEqual(t.shape, shape) ? t : t.expand(shape);
}

/** A 0-d tensor holding `value`, shaped to broadcast against `like`. */
export function scalarLike(value: number, like: Tensor): Tensor {
  return new Tensor(getBackend(like.device).upload(convertArray([value], like.dtype), like.dtype), []);
}
