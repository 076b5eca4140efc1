import { getBackend, requireDeviceDtype } from './backend.js';
import type { Device } from './device.js';
import { autogradHooks, ops, type GradFn } from './dispatch.js';
import type { DType, TypedArray } from './dtype.js';
import { track, type Disposable, type Scope } from './memory.js';
import { contiguousStrides, fmt, isContiguous, numel, type Shape } from './shape.js';
import type { Storage } from './storage.js';
import { to } from './ops/elementwise.js';

/** One dim of a `slice`: null keeps the dim whole; [start, end?, step?] with Python semantics. */
export type SliceRange = null | number | readonly [number?, number?, number?];

type Nested = number | Nested[];

/**
 * An n-dimensional array on one device: a view (shape, strides, offset) into a storage.
 * Views (reshape, permute, slice, expand, ...) share the storage; ops return new tensors.
 */
export class Tensor implements Disposable {
  /**
   * Read-only (the types say so, and no code casts it away); not frozen, because V8 reads
   * frozen arrays several times slower, and shapes are read all through every op.
   */
  readonly shape: readonly number[];
  readonly strides: readonly number[];
  readonly offset: number;
  readonly dtype: DType;
  readonly device: Device;
  readonly storage: Storage;
  /** The number of elements (the product of the shape). */
  readonly size: number;
  /** Set on parameters and on tensors computed from them (used by autograd). */
  requiresGrad = false;
  /** Accumulated gradient (leaves), set by backward(). */
  grad: Tensor | null = null;
  /** The recorded op that made this tensor (set by autograd), or null. */
  gradFn: GradFn | null = null;
  /** The `tidy` scope that will dispose it, if any (tensor/memory.ts). */
  scope: Scope | null = null;
  private _disposed = false;
  private _contiguous: boolean | undefined = undefined;

  /** Takes over one reference of `storage`: the caller must not release it. Copies `shape` and `strides`. */
  constructor(storage: Storage, shape: Shape, strides?: readonly number[], offset = 0) {
    this.storage = storage;
    this.shape = shape.slice();
    this.strides = strides === undefined ? contiguousStrides(shape) : strides.slice();
    this.offset = offset;
    this.dtype = storage.dtype;
    this.device = storage.device;
    this.size = numel(shape);
    storage.counts.tensors++;
    track(this);
  }

  /** A new uninitialised contiguous tensor. */
  static empty(shape: Shape, dtype: DType, device: Device): Tensor {
    requireDeviceDtype('empty', device, dtype);
    return new Tensor(getBackend(device).alloc(numel(shape), dtype), shape);
  }

  get rank(): number {
    return this.shape.length;
  }
  /** Dense row-major over its whole storage (computed once: a tensor's view never changes). */
  get isContiguous(): boolean {
    return (this._contiguous ??=
      this.offset === 0 && this.size === this.storage.numel && isContiguous(this.shape, this.strides));
  }
  get disposed(): boolean {
    return this._disposed;
  }

  /** Frees this tensor's reference to its storage (the memory goes when no view uses it). */
  dispose(): void {
    if (this._disposed) return;
    // a recorded op's output: lets its graph go when nothing downstream needs it
    if (this.gradFn) autogradHooks()?.disposed(this);
    this._disposed = true;
    this.storage.counts.tensors--;
    this.storage.release();
  }
  [Symbol.dispose](): void {
    this.dispose();
  }

  /** Throws if this tensor was disposed; every op calls it on its inputs. */
  assertAlive(op: string): void {
    if (this._disposed) throw new Error(`${op}: tensor ${fmt(this.shape)} was disposed`);
  }

  toString(): string {
    return `Tensor(${fmt(this.shape)}, ${this.dtype}, ${this.device})`;
  }

  // ---- reading back -------------------------------------------------------------------

  /** The elements in row-major order (flushes queued GPU work). */
  async data(): Promise<TypedArray> {
    this.assertAlive('data');
    return getBackend(this.device).read(this);
  }

  async toArray(): Promise<Nested> {
    const flat = await this.data();
    const build = (dim: number, base: number): Nested => {
      if (dim === this.rank) return flat[base];
      const stride = this.shape.slice(dim + 1).reduce((a, b) => a * b, 1);
      return Array.from({ length: this.shape[dim] }, (_, i) => build(dim + 1, base + i * stride));
    };
    return build(0, 0);
  }

  async item(): Promise<number> {
    if (this.size !== 1) throw new Error(`item: tensor ${fmt(this.shape)} has ${this.size} elements, not 1`);
    return (await this.data())[0];
  }

  // ---- views: new strides over the same storage -----------------------------------------

  /** A view with other shape/strides/offset over the same storage (no checks: a raw view). */
  asStrided(shape: Shape, strides: readonly number[], offset: number): Tensor {
    this.assertAlive('view');
    return new Tensor(this.storage.retain(), shape, strides, offset);
  }

  // ---- gradients (recorded once the autograd layer is loaded) ----------------------------

  /** Backpropagates from this tensor (a scalar unless `gradient` is given). */
  backward(gradient?: Tensor, opts?: { retainGraph?: boolean }): void {
    const h = autogradHooks();
    if (!h) throw new Error("backward: the autograd layer is not loaded (import 'autograd/index.js', or uhd.autograd)");
    h.backward(this, gradient, opts);
  }

  /** The same data with no history: a new handle on the storage, gradients stop here. */
  detach(): Tensor {
    return this.asStrided(this.shape, this.strides, this.offset);
  }

  /** Sets requiresGrad (for leaves and parameters) and returns this. */
  requiresGrad_(on = true): Tensor {
    this.requiresGrad = on;
    return this;
  }

  // ---- ops as methods: each calls the op table (tensor/dispatch.ts), so that it records a
  // ---- gradient once autograd is loaded; tensor/ops and tensor/views hold the plain forms.

  /** Same elements, new shape; a view when the strides allow, otherwise a copy. One dim may be -1. */
  reshape(...shape: number[] | [readonly number[]]): Tensor { return ops().reshape(this, flatArgs(shape)); }
  /** Like reshape but never copies: throws when the strides do not allow a view. */
  view(...shape: number[] | [readonly number[]]): Tensor { return ops().view(this, flatArgs(shape)); }
  flatten(): Tensor { return ops().reshape(this, [this.size]); }
  permute(...dims: number[] | [readonly number[]]): Tensor { return ops().permute(this, flatArgs(dims)); }
  transpose(dim0 = -2, dim1 = -1): Tensor { return ops().transpose(this, dim0, dim1); }
  /** Python-style slicing per dim: `t.slice(null, [1, 5, 2])` keeps dim 0, takes 1,3 of dim 1. */
  slice(...ranges: SliceRange[]): Tensor { return ops().slice(this, ...ranges); }
  /** `length` elements of `dim` from `start`. */
  narrow(dim: number, start: number, length: number): Tensor { return ops().narrow(this, dim, start, length); }
  /** Broadcast view: size-1 dims repeat with stride 0; new leading dims may be added; -1 keeps a dim. */
  expand(...shape: number[] | [readonly number[]]): Tensor { return ops().expand(this, flatArgs(shape)); }
  squeeze(dim?: number): Tensor { return ops().squeeze(this, dim); }
  unsqueeze(dim: number): Tensor { return ops().unsqueeze(this, dim); }
  /** This tensor when already dense row-major, else a contiguous copy. Always a new handle. */
  contiguous(): Tensor { return ops().contiguous(this); }

  /** A copy on another device (synchronous when this device reads back synchronously). Not differentiable. */
  to(device: Device): Tensor { return to(this, device); }
  cast(dtype: DType): Tensor { return ops().cast(this, dtype); }
  clone(): Tensor { return ops().clone(this); }

  neg(): Tensor { return ops().neg(this); }
  abs(): Tensor { return ops().abs(this); }
  exp(): Tensor { return ops().exp(this); }
  log(): Tensor { return ops().log(this); }
  sqrt(): Tensor { return ops().sqrt(this); }
  rsqrt(): Tensor { return ops().rsqrt(this); }
  tanh(): Tensor { return ops().tanh(this); }
  sigmoid(): Tensor { return ops().sigmoid(this); }
  relu(): Tensor { return ops().relu(this); }
  gelu(approximate: 'tanh' | 'none' = 'tanh'): Tensor { return ops().gelu(this, approximate); }
  silu(): Tensor { return ops().silu(this); }

  add(b: Tensor | number): Tensor { return ops().add(this, b); }
  sub(b: Tensor | number): Tensor { return ops().sub(this, b); }
  mul(b: Tensor | number): Tensor { return ops().mul(this, b); }
  div(b: Tensor | number): Tensor { return ops().div(this, b); }
  pow(b: Tensor | number): Tensor { return ops().pow(this, b); }
  maximum(b: Tensor | number): Tensor { return ops().maximum(this, b); }
  minimum(b: Tensor | number): Tensor { return ops().minimum(this, b); }
  /** Comparisons return 1 or 0 in the operands' dtype (no gradient). */
  eq(b: Tensor | number): Tensor { return ops().eq(this, b); }
  ne(b: Tensor | number): Tensor { return ops().ne(this, b); }
  lt(b: Tensor | number): Tensor { return ops().lt(this, b); }
  le(b: Tensor | number): Tensor { return ops().le(this, b); }
  gt(b: Tensor | number): Tensor { return ops().gt(this, b); }
  ge(b: Tensor | number): Tensor { return ops().ge(this, b); }

  sum(dims?: number | number[], keepdim = false): Tensor { return ops().sum(this, dims, keepdim); }
  mean(dims?: number | number[], keepdim = false): Tensor { return ops().mean(this, dims, keepdim); }
  max(dims?: number | number[], keepdim = false): Tensor { return ops().max(this, dims, keepdim); }
  /** Index of the first maximum (int32, no gradient). */
  argmax(dim?: number, keepdim = false): Tensor { return ops().argmax(this, dim, keepdim); }
  softmax(dim = -1): Tensor { return ops().softmax(this, dim); }
  logSoftmax(dim = -1): Tensor { return ops().logSoftmax(this, dim); }

  matmul(b: Tensor): Tensor { return ops().matmul(this, b); }
}

/** The dims of `t.reshape(2, 3)` or `t.reshape([2, 3])` (the ops only read them). */
function flatArgs(args: number[] | [readonly number[]]): readonly number[] {
  return Array.isArray(args[0]) ? (args[0] as readonly number[]) : (args as number[]);
}
