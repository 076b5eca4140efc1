/**
 * The Backend interface and the registry of open backends.
 *
 * A backend is one folder (tensor/cpu, kernels/ for WebGPU, backends/wasm) that implements
 * `Backend`, adds its device name to `DeviceNames` (tensor/device.ts) by declaration merging,
 * and registers itself with `registerBackend` when opened; backends/index.ts holds one line per
 * backend saying how to open it. A backend imports only tensor/.
 *
 * Capabilities, not device names, decide what callers may do: `capabilities.dtypes` (float64
 * lives where the reference is), `capabilities.syncRead` (`readSync` exists: `to()` needs no
 * await), and the fused ops a backend offers (optional methods of `FusedOps`).
 *
 * Adding a fused op (one Backend method, one front end, one test):
 *   1. add its method to `FusedOps` below, with its arguments' contract; like every Backend
 *      method it writes into fresh outputs the front end allocated and returns true, or returns
 *      false to decline a call (a shape its kernel does not tile, fusion switched off), having
 *      written nothing;
 *   2. add its front end in tensor/ops/: validate, then `backend.foo?.(args)` unless a gradient
 *      is being recorded through the inputs (`recording(...)` from tensor/dispatch.ts: a fused
 *      kernel has no backward rule), else compose it from plain ops called through `ops()`
 *      (so the composition records gradients when autograd is loaded). The composition is
 *      also the fused kernel's reference;
 *   3. a test that the fused path equals the composition on each backend that offers it
 *      (tests/tensor/fused.test.ts), and that it declines what it cannot run.
 */
import type { DType, HalfDType, TypedArray } from './dtype.js';
import type { Device } from './device.js';
import type { Storage } from './storage.js';
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

/** What a backend can hold and do, checked by callers instead of its name. */
export interface Capabilities {
  /** Element types its storages hold (float64 only where gradient checks run: the CPU). */
  readonly dtypes: readonly DType[];
  /** Tensors can be read back synchronously (`readSync`): host memory, no queued work. */
  readonly syncRead: boolean;
  /** One line for `uhd info`: threads, instruction set, adapter. */
  describe?(): string;
}

/** The compressor's window-merge middle: D from its q/k/v projections to pre_norm. */
export interface WindowMergeArgs {
  /** D's input, the residual: [B, h*w, d]. */
  x: Tensor;
  /** The projections, [B, h*w, d] each (heads side by side, as a Linear produces them). */
  q: Tensor;
  k: Tensor;
  v: Tensor;
  /** out_proj weight [d, d] (Linear's [out, in]) and bias [d]. */
  outWeight: Tensor;
  outBias: Tensor;
  /** pre_norm weight and bias [4d]. */
  normWeight: Tensor;
  normBias: Tensor;
  /** The token grid of each of the B views (row-major, h*w tokens, even sides). */
  grid: { h: number; w: number };
  heads: number;
  /** pre_norm's epsilon. */
  eps: number;
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
 * Optional fused kernels (see "Adding a fused op" at the top of this file). Inputs reach them
 * validated and on this backend; each writes its fresh contiguous outputs and returns true, or
 * returns false to decline the call, and the front end in tensor/ops then composes the op from
 * plain ones, which is also its reference.
 */
export interface FusedOps {
  /**
   * z = pre_norm(pixelUnshuffle(y)) [B, h*w/4, 4d] and mean = avgPool2x2(y) [B, h*w/4, d] with
   * y = x + WindowAttn(q, k, v) · outWeightᵀ + outBias (tensor/ops/window-merge.ts); inputs
   * dense float32.
   */
  windowMerge?(args: WindowMergeArgs, z: Tensor, mean: Tensor): boolean;
  /**
   * out = act(x @ weightᵀ + bias) + residual; preact (when given) = x @ weightᵀ + bias.
   * x: [M, K], weight: [N, K], bias: [N] or null, residual: [M, N] or null (unit column stride),
   * out and preact fresh contiguous [M, N] (tensor/ops/fused.ts).
   */
  linear?(x: Tensor, weight: Tensor, bias: Tensor | null, residual: Tensor | null, act: LinearActivation, out: Tensor, preact: Tensor | null): boolean;
  /** Every item's AdamW step (as `adamw`), in as few dispatches as the device allows. */
  adamwMany?(items: readonly AdamWItem[]): boolean;
  /** out (0-d) = the sum of the squares of every element of every x (dense tensors, one dtype). */
  sumOfSquares?(xs: readonly Tensor[], out: Tensor): boolean;
  /** outs[i] = xs[i] * scale (scale 0-d; outs fresh, contiguous). */
  scaleMany?(xs: readonly Tensor[], scale: Tensor, outs: readonly Tensor[]): boolean;
}

/** The names of the fused ops, for `fusedOpsOf` and `uhd info`. */
export const FUSED_OPS: readonly (keyof FusedOps)[] = ['windowMerge', 'linear', 'adamwMany', 'sumOfSquares', 'scaleMany'];

/** The fused ops `backend` offers. */
export function fusedOpsOf(backend: Backend): (keyof FusedOps)[] {
  return FUSED_OPS.filter((name) => typeof backend[name] === 'function');
}

/**
 * What a device must implement. Every method receives tensors that may be strided views
 * and writes into `out`, a fresh contiguous tensor the front end allocated with `alloc`.
 * Validation happens in the front end (tensor/ops/*), so a backend may assume
 * shapes, dtypes and devices are consistent.
 */
export interface Backend extends FusedOps {
  readonly device: Device;
  readonly capabilities: Capabilities;
  alloc(numel: number, dtype: DType): Storage;
  /** A new storage holding a copy of `data`. */
  upload(data: TypedArray, dtype: DType): Storage;
  /** The elements of `x` in row-major order of its (view) shape. */
  read(x: Tensor): Promise<TypedArray>;
  /** The same, at once: present exactly when `capabilities.syncRead`. */
  readSync?(x: Tensor): TypedArray;

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
      `device '${device}' is not open (open: ${[...backends.keys()].join(', ')}); ` +
        `open it first with \`await openDevice('${device}')\` (backends/index.ts)`,
    );
  }
  return b;
}

export function hasBackend(device: Device): boolean {
  return backends.has(device);
}

/** The devices open now, in the order they were registered. */
export function openDevices(): Device[] {
  return [...backends.keys()];
}

/** Throws naming `op` when `device` cannot hold `dtype`. */
export function requireDeviceDtype(op: string, device: Device, dtype: DType): void {
  const { dtypes } = getBackend(device).capabilities;
  if (!dtypes.includes(dtype)) {
    throw new Error(`${op}: ${dtype} is not a dtype of device '${device}' (it holds ${dtypes.join(', ')}); cast first`);
  }
}
