/**
 * The op table Tensor's methods (and the fused ops' compositions) call, and the hooks the
 * autograd layer installs. The tensor layer's own table holds the plain ops; autograd
 * (autograd/install.ts) replaces it with recording versions of the same ops, one for one
 * (its table must satisfy `OpTable`, so none can be missing), and supplies `backward` and the
 * `recording` test. tensor/ knows nothing of autograd beyond these signatures.
 */
import * as T from './ops/index.js';
import * as V from './views.js';
import type { Tensor } from './tensor.js';

/** The plain ops, by the name Tensor's methods use. */
function plainTable() {
  return {
    unary: T.unary, neg: T.neg, abs: T.abs, exp: T.exp, log: T.log, sqrt: T.sqrt, rsqrt: T.rsqrt,
    tanh: T.tanh, sigmoid: T.sigmoid, relu: T.relu, gelu: T.gelu, silu: T.silu,
    binary: T.binary, add: T.add, sub: T.sub, mul: T.mul, div: T.div, pow: T.pow, maximum: T.maximum, minimum: T.minimum,
    eq: T.eq, ne: T.ne, lt: T.lt, le: T.le, gt: T.gt, ge: T.ge, where: T.where,
    sum: T.sum, mean: T.mean, max: T.max, argmax: T.argmax, softmax: T.softmax, logSoftmax: T.logSoftmax,
    matmul: T.matmul, attention: T.attention, layerNorm: T.layerNorm, rmsNorm: T.rmsNorm,
    gather: T.gather, indexSelect: T.indexSelect, scatterAdd: T.scatterAdd, concat: T.concat, stack: T.stack,
    pixelUnshuffle: T.pixelUnshuffle, avgPool2x2: T.avgPool2x2,
    contiguous: T.contiguous, clone: T.clone, cast: T.cast,
    reshape: V.reshape, view: V.view, permute: V.permute, transpose: V.transpose, slice: V.slice,
    narrow: V.narrow, expand: V.expand, squeeze: V.squeeze, unsqueeze: V.unsqueeze,
  };
}

/** Every op that Tensor's methods dispatch, with its plain signature. */
export type OpTable = ReturnType<typeof plainTable>;

/** What a tensor made by a recorded op keeps (autograd's GradNode extends it). */
export interface GradFn {
  readonly op: string;
}

export interface AutogradHooks {
  /** The recording ops. */
  ops: OpTable;
  /** Whether a gradient is being recorded through any of `inputs` (fused ops then compose). */
  recording(inputs: readonly (Tensor | null | undefined)[]): boolean;
  backward(t: Tensor, gradient?: Tensor, opts?: { retainGraph?: boolean }): void;
  /** Called when a tensor that has a gradFn is disposed, before its storage is released. */
  disposed(t: Tensor): void;
}

let plain: OpTable | null = null;
let hooks: AutogradHooks | null = null;

/** The current op table: autograd's once installed, else the plain ops. */
export function ops(): OpTable {
  return hooks?.ops ?? (plain ??= plainTable());
}

/** The plain ops, whatever is installed. */
export function plainOps(): OpTable {
  return (plain ??= plainTable());
}

/** Installs the autograd layer (once, from autograd/install.ts). */
export function installAutograd(h: AutogradHooks): void {
  hooks = h;
}

export function autogradHooks(): AutogradHooks | null {
  return hooks;
}

/** Whether a gradient is recorded through any of `inputs` (always false without autograd). */
export function recording(...inputs: (Tensor | null | undefined)[]): boolean {
  return hooks !== null && hooks.recording(inputs);
}
