/** Checks shared by every op's front end. */
import { getBackend, type Backend } from '../backend.js';
import { convertArray, type DType } from '../dtype.js';
import { fmt, shapesEqual, type Shape } from '../shape.js';
import type { Device } from '../storage.js';
import { Tensor } from '../tensor.js';

/** Checks the inputs are alive and on one device; returns that device's backend. */
export function backendFor(op: string, ...inputs: (Tensor | null | undefined)[]): Backend {
  return getBackend(deviceOfAll(op, inputs, null) ?? 'cpu');
}

/**
 * backendFor over arrays of tensors (nulls skipped), without spreading them into arguments: the
 * multi-tensor ops pass every parameter of a model (AdamW four tensors each), every step.
 */
export function backendForAll(op: string, ...groups: readonly (readonly (Tensor | null | undefined)[])[]): Backend {
  let device: Device | null = null;
  for (const g of groups) device = deviceOfAll(op, g, device);
  return getBackend(device ?? 'cpu');
}

/** The one device of `inputs` and `device` (null: none yet), each input checked alive. */
function deviceOfAll(op: string, inputs: readonly (Tensor | null | undefined)[], device: Device | null): Device | null {
  for (let i = 0; i < inputs.length; i++) {
    const t = inputs[i];
    if (t) device = onDevice(op, device, t);
  }
  return device;
}

/** Checks `t` is a live tensor on `device` (null: any); returns its device. */
export function onDevice(op: string, device: Device | null, t: Tensor): Device {
  if (!(t instanceof Tensor)) throw new Error(`${op}: expected a Tensor, got ${typeof t}`);
  t.assertAlive(op);
  if (device !== null && t.device !== device) {
    throw new Error(`${op}: tensors are on different devices (${device} and ${t.device}); move one with .to()`);
  }
  return t.device;
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
