/**
 * Front ends of the optional fused ops (see `FusedOps` in tensor/backend.ts). Each validates
 * its inputs, asks the backend for its kernel, and composes plain ops when the backend has
 * none or declines: the composition is the reference the fused kernels are tested against.
 */
import { getBackend, type AdamWItem, type Backend, type LinearActivation, type UnaryOp } from '../backend.js';
import { isHalf } from '../dtype.js';
import { fmt, shapesEqual } from '../shape.js';
import type { Tensor } from '../tensor.js';
import type { Device } from '../storage.js';
import { backendFor, backendForAll, empty, onDevice, requireDtype } from './common.js';
import { add, assign, binary, cast, mul, unary } from './elementwise.js';
import { adamwStep } from './grad.js';
import { matmul } from './matmul.js';
import { sum } from './reduce.js';

export interface LinearOptions {
  /** Added after the activation: out = act(x Wᵀ + b) + residual (a block's skip connection). */
  residual?: Tensor | null;
  activation?: LinearActivation;
}

/**
 * y = act(x @ weightᵀ + bias) + residual, with x: [..., K], weight: [N, K] (PyTorch's Linear
 * layout), bias: [N], residual: [..., N]. Also returns the pre-activation z = x Wᵀ + b when
 * `keepPreact` (a backward through the activation needs it) and there is an activation.
 */
export function linearForward(x: Tensor, weight: Tensor, bias: Tensor | null, opts: LinearOptions & { keepPreact?: boolean } = {}): { out: Tensor; preact: Tensor | null } {
  const backend = backendFor('linear', x, weight, bias, opts.residual);
  requireDtype('linear', 'x', x, ['float32', 'float64']);
  const act = opts.activation ?? 'none';
  const K = x.shape[x.rank - 1];
  if (x.rank < 1 || weight.rank !== 2 || weight.shape[1] !== K) {
    throw new Error(`linear: x ${fmt(x.shape)} and weight ${fmt(weight.shape)} do not match (weight must be [out, ${K}])`);
  }
  const N = weight.shape[0];
  const outShape = [...x.shape.slice(0, -1), N];
  for (const [name, t] of [['weight', weight], ['bias', bias], ['residual', opts.residual]] as const) {
    // a half weight (bfloat16, float16) with float32 x: decoded in the kernel, float32 out
    const halfWeight = name === 'weight' && isHalf(weight.dtype) && x.dtype === 'float32';
    if (t && t.dtype !== x.dtype && !halfWeight) throw new Error(`linear: ${name} has dtype ${t.dtype}, x ${x.dtype}`);
  }
  if (bias && (bias.rank !== 1 || bias.shape[0] !== N)) throw new Error(`linear: bias ${fmt(bias.shape)} must be [${N}]`);
  const residual = opts.residual ?? null;
  if (residual && !shapesEqual(residual.shape, outShape)) {
    throw new Error(`linear: residual ${fmt(residual.shape)} must have the output's shape ${fmt(outShape)}`);
  }
  const keep = opts.keepPreact === true && act !== 'none';
  if (backend.linear) {
    const M = x.size / Math.max(K, 1);
    const flat = x.rank === 2; // already [M, K]: no reshaped handles
    const x2 = flat ? x : x.reshape([M, K]);
    const r2 = residual && !flat ? residual.reshape([M, N]) : residual;
    const out = empty([M, N], x.dtype, x.device);
    const preact = keep ? empty([M, N], x.dtype, x.device) : null;
    const done = backend.linear(x2, weight, bias, r2, act, out, preact);
    if (x2 !== x) x2.dispose();
    if (r2 !== residual) r2?.dispose();
    if (done) {
      if (flat) return { out, preact };
      const shaped = { out: out.reshape(outShape), preact: preact ? preact.reshape(outShape) : null };
      out.dispose();
      preact?.dispose();
      return shaped;
    }
    out.dispose();
    preact?.dispose();
  }
  return linearComposed(x, weight, bias, residual, act, keep);
}

/** The composition of plain ops: matmul, add bias, activation, add residual. */
export function linearComposed(x: Tensor, weight: Tensor, bias: Tensor | null, residual: Tensor | null, act: LinearActivation, keepPreact = false): { out: Tensor; preact: Tensor | null } {
  const wt = weight.transpose();
  const xw = matmul(x, wt);
  wt.dispose();
  let z = xw;
  if (bias) {
    z = add(xw, bias);
    xw.dispose();
  }
  let y = z;
  if (act !== 'none') y = unary(act as UnaryOp, z);
  if (residual) {
    const r = add(y, residual);
    if (y !== z) y.dispose();
    y = r;
  }
  const preact = keepPreact && act !== 'none' ? z : null;
  if (z !== y && !preact) z.dispose();
  return { out: y, preact };
}

/** y = act(x @ weightᵀ + bias) + residual (see `linearForward`). */
export function linear(x: Tensor, weight: Tensor, bias: Tensor | null = null, opts: LinearOptions = {}): Tensor {
  return linearForward(x, weight, bias, opts).out;
}

/** AdamW steps for many parameters at once (each as `adamwStep`, validated the same way). */
export function adamwSteps(items: readonly AdamWItem[]): void {
  if (items.length === 0) return;
  const backend = adamwBackend(items);
  if (backend.adamwMany) {
    for (const it of items) validateAdamW(it);
    if (backend.adamwMany(items)) return;
  }
  for (const it of items) adamwStep(it.param, it.grad, it.m, it.v, it.h);
}

/** The backend of every item's four tensors, checked one by one (not spread: 4 arguments per parameter). */
function adamwBackend(items: readonly AdamWItem[]): Backend {
  let device: Device | null = null;
  for (const { param, grad, m, v } of items) {
    device = onDevice('adamw', device, param);
    device = onDevice('adamw', device, grad);
    device = onDevice('adamw', device, m);
    device = onDevice('adamw', device, v);
  }
  return getBackend(device!);
}

function validateAdamW({ param, grad, m, v }: AdamWItem): void {
  requireDtype('adamw', 'param', param, ['float32', 'float64']);
  // checked one by one, not over arrays of pairs: this runs for every parameter every step
  matchesParam(param, grad, 'grad');
  matchesParam(param, m, 'm');
  matchesParam(param, v, 'v');
  updatableInPlace(param, param, 'param');
  updatableInPlace(param, m, 'm');
  updatableInPlace(param, v, 'v');
}

function matchesParam(param: Tensor, t: Tensor, name: string): void {
  if (!shapesEqual(param.shape, t.shape)) throw new Error(`adamw: param ${fmt(param.shape)} and ${name} ${fmt(t.shape)} differ`);
  if (t.dtype !== param.dtype) throw new Error(`adamw: ${name} has dtype ${t.dtype}, param ${param.dtype}`);
}

function updatableInPlace(param: Tensor, t: Tensor, name: string): void {
  if (!t.isContiguous) throw new Error(`adamw: ${name} ${fmt(param.shape)} must be contiguous (it is updated in place)`);
}

/** The sum of the squares of every element of every tensor, as a 0-d tensor of their dtype. */
export function sumOfSquares(xs: readonly Tensor[]): Tensor {
  if (xs.length === 0) throw new Error('sumOfSquares: needs at least one tensor');
  const backend = backendForAll('sumOfSquares', xs);
  const dtype = xs[0].dtype;
  requireDtype('sumOfSquares', 'x', xs[0], ['float32', 'float64']);
  for (const x of xs) if (x.dtype !== dtype) throw new Error(`sumOfSquares: dtypes differ (${dtype} and ${x.dtype})`);
  if (backend.sumOfSquares) {
    const out = empty([], dtype, xs[0].device);
    if (backend.sumOfSquares(xs, out)) return out;
    out.dispose();
  }
  let total: Tensor | null = null;
  for (const x of xs) {
    const sq = mul(x, x);
    const s = sum(sq);
    sq.dispose();
    if (total) {
      const t2 = add(total, s);
      total.dispose();
      s.dispose();
      total = t2;
    } else total = s;
  }
  return total!;
}

/**
 * xs[i] *= scale for every i, in place (scale a 0-d tensor of the xs' dtype): the gradient
 * clipping's rescale, which keeps each gradient in its buffer (on WebGPU the optimizer's bind
 * groups then stay the same from step to step).
 */
export function scaleManyInPlace(xs: readonly Tensor[], scale: Tensor): void {
  if (xs.length === 0) return;
  const backend = backendForAll('scaleManyInPlace', [scale], xs);
  if (scale.size !== 1) throw new Error(`scaleManyInPlace: scale must hold one value, got ${fmt(scale.shape)}`);
  for (const x of xs) {
    if (x.dtype !== scale.dtype) throw new Error(`scaleManyInPlace: a tensor is ${x.dtype} and the scale ${scale.dtype}`);
  }
  if (backend.scaleMany?.(xs, scale, xs)) return;
  for (const x of xs) {
    const y = binary('mul', x, scale);
    assign(x, y);
    y.dispose();
  }
}

/** xs[i] * scale for every i (scale a 0-d tensor, cast to each x's dtype), as new tensors. */
export function scaleMany(xs: readonly Tensor[], scale: Tensor): Tensor[] {
  if (xs.length === 0) return [];
  const backend = backendForAll('scaleMany', [scale], xs);
  if (scale.size !== 1) throw new Error(`scaleMany: scale must hold one value, got ${fmt(scale.shape)}`);
  if (backend.scaleMany && xs.every((x) => x.dtype === scale.dtype)) {
    const outs = xs.map((x) => empty(x.shape, x.dtype, x.device));
    if (backend.scaleMany(xs, scale, outs)) return outs;
    for (const o of outs) o.dispose();
  }
  return xs.map((x) => {
    if (x.dtype === scale.dtype) return binary('mul', x, scale);
    const s = cast(scale, x.dtype);
    const out = binary('mul', x, s);
    s.dispose();
    return out;
  });
}
