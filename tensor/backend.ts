import type { DType, HalfDType, TypedArray } from './dtype.js';
import type { Device, Storage } from './storage.js';
import type { Tensor } from './tensor.js';

export type UnaryOp =
  | 'neg' | 'abs' | 'exp' | 'log' | 'sqrt' | 'rsqrt' | 'tanh' | 'sigmoid' | 'relu'
  | 'gelu' /* tanh form */ | 'geluErf' /* exact erf form */ | 'silu';

export type BinaryOp =
  | 'add' | 'sub' | 'mul' | 'div' | 'pow' | 'maximum' | 'minimum'
  | 'eq' | 'ne' | 'lt' | 'le' | 'gt' | 'ge';

export type ReduceOp = 'sum' | 'mean' | 'max' | 'argmax';

export const UNARY_OPS: readonly UnaryOp[] = [
  'neg', 'abs', 'exp', 'log', 'sqrt', 'rsqrt', 'tanh', 'sigmoid', 'relu', 'gelu', 'geluErf', 'silu',
];
export const BINARY_OPS: readonly BinaryOp[] = [
  'add', 'sub', 'mul', 'div', 'pow', 'maximum', 'minimum', 'eq', 'ne', 'lt', 'le', 'gt', 'ge',
];

/** What the attention kernel is told beyond q, k, v. Shapes are checked by the front end. */
export interface AttentionParams {
  /** Multiplies q·k before the softmax. */
  scale: number;
  /** Query i (of Sq) sees key j (of Sk) only when j <= i + (Sk - Sq). */
  causal: boolean;
  /** int32 [B, Sq] and [B, Sk]: a query sees only keys with the same id. */
  segmentIdsQ: Tensor | null;
  segmentIdsK: Tensor | null;
  /** Tokens form an h x w grid (row-major, Sq = Sk = h*w); a query sees only its 2x2 window. */
  window: { h: number; w: number } | null;
}

/** AdamW hyper-parameters for one step (`step` counts from 1, for bias correction). */
export interface AdamWHyper {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  step: number;
}

/** Activations a fused linear layer applies (GELU tanh form, GELU erf form). */
export type LinearActivation = 'none' | 'gelu' | 'geluErf';

/** One parameter's AdamW step, for the multi-tensor update. */
export interface AdamWItem {
  param: Tensor;
  grad: Tensor;
  m: Tensor;
  v: Tensor;
  h: AdamWHyper;
}

/**
 * Fused ops, all optional. A backend with a kernel for one implements the method and returns
 * true; without one (or declining a call: a dtype, a view, fusion switched off) it leaves the
 * method out or returns false, and the front end in tensor/ops/fused.ts composes plain ops,
 * which is also the op's reference. Adding one: a method here, its front end (validation, then
 * `backend.op?.(...) || composition`), a kernel, and a test comparing kernel and composition.
 */
export interface FusedOps {
  /**
   * out = act(x @ weightᵀ + bias) + residual; preact (when given) = x @ weightᵀ + bias.
   * x: [M, K], weight: [N, K], bias: [N] or null, residual: [M, N] or null (unit column stride),
   * out and preact fresh contiguous [M, N].
   */
  linear?(x: Tensor, weight: Tensor, bias: Tensor | null, residual: Tensor | null, act: LinearActivation, out: Tensor, preact: Tensor | null): boolean;
  /** Every item's AdamW step (as `adamw`), in as few dispatches as the device allows. */
  adamwMany?(items: readonly AdamWItem[]): boolean;
  /** out (0-d) = the sum of the squares of every element of every x (dense tensors, one dtype). */
  sumOfSquares?(xs: readonly Tensor[], out: Tensor): boolean;
  /** outs[i] = xs[i] * scale (scale 0-d; outs fresh, contiguous). */
  scaleMany?(xs: readonly Tensor[], scale: Tensor, outs: readonly Tensor[]): boolean;
}

/**
 * What a device must implement. Every method receives tensors that may be strided views
 * and writes into `out`, a fresh contiguous tensor the front end allocated with `alloc`.
 * Validation happens in the front end (tensor/ops/*), so a backend may assume
 * shapes, dtypes and devices are consistent.
 */
export interface Backend extends FusedOps {
  readonly device: Device;
  alloc(numel: number, dtype: DType): Storage;
  /** A new storage holding a copy of `data`. */
  upload(data: TypedArray, dtype: DType): Storage;
  /** The elements of `x` in row-major order of its (view) shape. */
  read(x: Tensor): Promise<TypedArray>;

  /** out[i] = x[i] elementwise over the same shape; `out` may be a strided view; converts dtype. */
  copy(x: Tensor, out: Tensor): void;
  fill(out: Tensor, value: number): void;
  unary(op: UnaryOp, x: Tensor, out: Tensor): void;
  /** `a` and `b` are already broadcast (expanded) to `out.shape`. Comparisons write 1 or 0. */
  binary(op: BinaryOp, a: Tensor, b: Tensor, out: Tensor): void;
  /** out = cond != 0 ? a : b, all three expanded to out.shape. */
  where(cond: Tensor, a: Tensor, b: Tensor, out: Tensor): void;
  /** Reduces the last `reducedRank` dims of `x`; out holds one value per leading index. */
  reduce(op: ReduceOp, x: Tensor, reducedRank: number, out: Tensor): void;
  /** Softmax (or log-softmax) over the last dim. */
  softmax(x: Tensor, log: boolean, out: Tensor): void;
  /** a: [...batch, M, K], b: [...batch, K, N] (batch dims already equal), out: [...batch, M, N]. */
  matmul(a: Tensor, b: Tensor, out: Tensor): void;
  /** q: [B, Hq, Sq, D], k and v: [B, Hkv, Sk, D] with Hq % Hkv == 0, out: [B, Hq, Sq, D]. */
  attention(q: Tensor, k: Tensor, v: Tensor, params: AttentionParams, out: Tensor): void;
  /** Normalises over the last dim; weight and bias are [D] or null. */
  layerNorm(x: Tensor, weight: Tensor | null, bias: Tensor | null, eps: number, out: Tensor): void;
  rmsNorm(x: Tensor, weight: Tensor | null, eps: number, out: Tensor): void;
  /** out[..., i_dim, ...] = x[..., index[...], ...] (PyTorch gather; index int32, same rank as x). */
  gather(x: Tensor, dim: number, index: Tensor, out: Tensor): void;
  /** out = x, then out[..., index[...], ...] += src[...] (PyTorch scatter_add). */
  scatterAdd(x: Tensor, dim: number, index: Tensor, src: Tensor, out: Tensor): void;

  // ---- fused backward kernels and the optimizer step (used by autograd and nn) --------

  /** out = gy * f'(x) for a unary op (all shapes equal; x and gy may be views). */
  unaryGrad(op: UnaryOp, x: Tensor, gy: Tensor, out: Tensor): void;
  /** Given y = softmax(x) (log: y = logSoftmax(x)) over the last dim and gy, writes gx. */
  softmaxGrad(y: Tensor, gy: Tensor, log: boolean, out: Tensor): void;
  /** Gradient wrt x of layerNorm(x, weight, ·) over the last dim (weight may be null). */
  layerNormGrad(x: Tensor, weight: Tensor | null, gy: Tensor, eps: number, out: Tensor): void;
  /** Gradient wrt x of rmsNorm(x, weight) over the last dim (weight may be null). */
  rmsNormGrad(x: Tensor, weight: Tensor | null, gy: Tensor, eps: number, out: Tensor): void;
  /**
   * Attention backward by recomputation (no stored score matrix): given the forward inputs,
   * and gOut [B,Hq,Sq,D], writes gq [B,Hq,Sq,D], gk and gv [B,Hkv,Sk,D] (fresh, contiguous).
   */
  attentionGrad(q: Tensor, k: Tensor, v: Tensor, params: AttentionParams, gOut: Tensor, gq: Tensor, gk: Tensor, gv: Tensor): void;
  /** One AdamW step in place on contiguous param, m, v (grad may be a view). */
  adamw(param: Tensor, grad: Tensor, m: Tensor, v: Tensor, h: AdamWHyper): void;

  /** A half tensor's storage from its raw bits (optional: backends with half storage). */
  uploadHalf?(bits: Uint16Array, dtype: HalfDType): Storage;
  /** Writes raw little-endian bytes into a storage at a byte offset (streamed checkpoint loading). */
  writeBytes?(dst: Storage, byteOffset: number, bytes: Uint8Array): void;

  /** Waits for all queued work (no-op on the CPU). */
  sync(): Promise<void>;
}

const backends = new Map<Device, Backend>();

export function registerBackend(backend: Backend): void {
  backends.set(backend.device, backend);
}

export function unregisterBackend(device: Device): void {
  backends.delete(device);
}

export function getBackend(device: Device): Backend {
  const b = backends.get(device);
  if (!b) {
    throw new Error(
      device === 'webgpu'
        ? 'webgpu backend not initialised: call `await initWebGPU()` first'
        : `no backend registered for device '${device}'`,
    );
  }
  return b;
}

export function hasBackend(device: Device): boolean {
  return backends.has(device);
}
