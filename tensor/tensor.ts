import { getBackend } from './backend.js';
import type { DType, TypedArray } from './dtype.js';
import { liveTensors, track, type Disposable } from './memory.js';
import { contiguousStrides, fmt, isContiguous, normalizeDim, numel, type Shape } from './shape.js';
import type { Device, Storage } from './storage.js';
import * as ops from './ops/index.js';

/** One dim of a `slice`: null keeps the dim whole; [start, end?, step?] with Python semantics. */
export type SliceRange = null | number | readonly [number?, number?, number?];

type Nested = number | Nested[];

/**
 * An n-dimensional array on one device: a view (shape, strides, offset) into a storage.
 * Views (reshape, permute, slice, expand, ...) share the storage; ops return new tensors.
 */
export class Tensor implements Disposable {
  readonly shape: readonly number[];
  readonly strides: readonly number[];
  readonly offset: number;
  readonly dtype: DType;
  readonly device: Device;
  readonly storage: Storage;
  /** Set on parameters and on tensors computed from them (used by autograd). */
  requiresGrad = false;
  private _disposed = false;

  /** Takes over one reference of `storage`: the caller must not release it. */
  constructor(storage: Storage, shape: Shape, strides?: readonly number[], offset = 0) {
    this.storage = storage;
    this.shape = Object.freeze([...shape]);
    this.strides = Object.freeze(strides ? [...strides] : contiguousStrides(shape));
    this.offset = offset;
    this.dtype = storage.dtype;
    this.device = storage.device;
    liveTensors[this.device]++;
    track(this);
  }

  /** A new uninitialised contiguous tensor. */
  static empty(shape: Shape, dtype: DType, device: Device): Tensor {
    return new Tensor(getBackend(device).alloc(numel(shape), dtype), shape);
  }

  get rank(): number {
    return this.shape.length;
  }
  get size(): number {
    return numel(this.shape);
  }
  get isContiguous(): boolean {
    return this.offset === 0 && isContiguous(this.shape, this.strides) && this.size === this.storage.numel;
  }
  get disposed(): boolean {
    return this._disposed;
  }

  /** Frees this tensor's reference to its storage (the memory goes when no view uses it). */
  dispose(): void {
    if (this._disposed) return;
    this._disposed = true;
    liveTensors[this.device]--;
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

  /** A view with other shape/strides/offset over the same storage. */
  asStrided(shape: Shape, strides: readonly number[], offset: number): Tensor {
    this.assertAlive('view');
    return new Tensor(this.storage.retain(), shape, strides, offset);
  }

  /** Same elements, new shape; a view when the strides allow, otherwise a copy. One dim may be -1. */
  reshape(...shape: number[] | [readonly number[]]): Tensor {
    const target = inferShape('reshape', this.shape, flatArgs(shape));
    const strides = viewStrides(this.shape, this.strides, target);
    if (strides) return this.asStrided(target, strides, this.offset);
    return ops.contiguous(this).reshapeOwned(target);
  }

  /** Like reshape but never copies: throws when the strides do not allow a view. */
  view(...shape: number[] | [readonly number[]]): Tensor {
    const target = inferShape('view', this.shape, flatArgs(shape));
    const strides = viewStrides(this.shape, this.strides, target);
    if (!strides) {
      throw new Error(`view: cannot view ${fmt(this.shape)} with strides ${fmt(this.strides)} as ${fmt(target)}; use reshape`);
    }
    return this.asStrided(target, strides, this.offset);
  }

  /** reshape of a fresh tensor that nobody else holds: the result replaces `this`. */
  private reshapeOwned(target: number[]): Tensor {
    const out = this.asStrided(target, contiguousStrides(target), 0);
    this.dispose();
    return out;
  }

  flatten(): Tensor {
    return this.reshape(this.size);
  }

  permute(...dims: number[] | [readonly number[]]): Tensor {
    const order = flatArgs(dims).map((d) => normalizeDim('permute', d, this.rank));
    if (order.length !== this.rank || new Set(order).size !== this.rank) {
      throw new Error(`permute: [${order.join(',')}] is not a permutation of ${this.rank} dims (tensor ${fmt(this.shape)})`);
    }
    return this.asStrided(order.map((d) => this.shape[d]), order.map((d) => this.strides[d]), this.offset);
  }

  transpose(dim0 = -2, dim1 = -1): Tensor {
    const a = normalizeDim('transpose', dim0, this.rank);
    const b = normalizeDim('transpose', dim1, this.rank);
    const order = [...this.shape.keys()];
    [order[a], order[b]] = [order[b], order[a]];
    return this.permute(order);
  }

  /** Python-style slicing per dim: `t.slice(null, [1, 5, 2])` keeps dim 0, takes 1,3 of dim 1. */
  slice(...ranges: SliceRange[]): Tensor {
    if (ranges.length > this.rank) {
      throw new Error(`slice: ${ranges.length} ranges for a tensor of rank ${this.rank} ${fmt(this.shape)}`);
    }
    const shape = [...this.shape];
    const strides = [...this.strides];
    let offset = this.offset;
    ranges.forEach((r, d) => {
      if (r === null) return;
      const n = this.shape[d];
      const [s0, e0, step = 1] = typeof r === 'number' ? [r, r + 1, 1] : r;
      if (!Number.isInteger(step) || step <= 0) throw new Error(`slice: step must be a positive integer, got ${step} (dim ${d})`);
      const clamp = (v: number | undefined, dflt: number) => {
        if (v === undefined) return dflt;
        const x = v < 0 ? v + n : v;
        return Math.min(Math.max(x, 0), n);
      };
      const start = clamp(s0, 0);
      const end = Math.max(clamp(e0, n), start);
      shape[d] = Math.ceil((end - start) / step);
      offset += start * this.strides[d];
      strides[d] = this.strides[d] * step;
    });
    return this.asStrided(shape, strides, offset);
  }

  /** `length` elements of `dim` from `start`. */
  narrow(dim: number, start: number, length: number): Tensor {
    const d = normalizeDim('narrow', dim, this.rank);
    if (start < 0 || length < 0 || start + length > this.shape[d]) {
      throw new Error(`narrow: [${start}, ${start + length}) out of range for dim ${d} of size ${this.shape[d]}`);
    }
    const ranges: SliceRange[] = this.shape.map(() => null);
    ranges[d] = [start, start + length];
    return this.slice(...ranges);
  }

  /** Broadcast view: size-1 dims repeat with stride 0; new leading dims may be added; -1 keeps a dim. */
  expand(...shape: number[] | [readonly number[]]): Tensor {
    const target = flatArgs(shape);
    const lead = target.length - this.rank;
    if (lead < 0) throw new Error(`expand: target ${fmt(target)} has fewer dims than ${fmt(this.shape)}`);
    const strides = target.map((size, i) => {
      if (i < lead) return 0;
      const own = this.shape[i - lead];
      if (size === -1 || size === own) return this.strides[i - lead];
      if (own === 1) return 0;
      throw new Error(`expand: cannot expand ${fmt(this.shape)} to ${fmt(target)} (dim ${i}: ${own} -> ${size})`);
    });
    const out = target.map((size, i) => (size === -1 ? this.shape[i - lead] : size));
    return this.asStrided(out, strides, this.offset);
  }

  squeeze(dim?: number): Tensor {
    const keep = [...this.shape.keys()].filter((i) =>
      dim === undefined ? this.shape[i] !== 1 : i !== normalizeDim('squeeze', dim, this.rank) || this.shape[i] !== 1,
    );
    return this.asStrided(keep.map((i) => this.shape[i]), keep.map((i) => this.strides[i]), this.offset);
  }

  unsqueeze(dim: number): Tensor {
    const d = normalizeDim('unsqueeze', dim, this.rank + 1);
    const shape = [...this.shape];
    const strides = [...this.strides];
    shape.splice(d, 0, 1);
    strides.splice(d, 0, d < this.rank ? this.strides[d] * this.shape[d] : 1);
    return this.asStrided(shape, strides, this.offset);
  }

  /** This tensor when already dense row-major, else a contiguous copy. Always a new handle. */
  contiguous(): Tensor {
    return ops.contiguous(this);
  }

  // ---- ops as methods (see tensor/ops for the functional forms) -------------------------

  to(device: Device): Tensor { return ops.to(this, device); }
  cast(dtype: DType): Tensor { return ops.cast(this, dtype); }
  clone(): Tensor { return ops.clone(this); }

  neg(): Tensor { return ops.neg(this); }
  abs(): Tensor { return ops.abs(this); }
  exp(): Tensor { return ops.exp(this); }
  log(): Tensor { return ops.log(this); }
  sqrt(): Tensor { return ops.sqrt(this); }
  rsqrt(): Tensor { return ops.rsqrt(this); }
  tanh(): Tensor { return ops.tanh(this); }
  sigmoid(): Tensor { return ops.sigmoid(this); }
  relu(): Tensor { return ops.relu(this); }
  gelu(approximate: 'tanh' | 'none' = 'tanh'): Tensor { return ops.gelu(this, approximate); }
  silu(): Tensor { return ops.silu(this); }

  add(b: Tensor | number): Tensor { return ops.add(this, b); }
  sub(b: Tensor | number): Tensor { return ops.sub(this, b); }
  mul(b: Tensor | number): Tensor { return ops.mul(this, b); }
  div(b: Tensor | number): Tensor { return ops.div(this, b); }
  pow(b: Tensor | number): Tensor { return ops.pow(this, b); }
  maximum(b: Tensor | number): Tensor { return ops.maximum(this, b); }
  minimum(b: Tensor | number): Tensor { return ops.minimum(this, b); }
  eq(b: Tensor | number): Tensor { return ops.eq(this, b); }
  ne(b: Tensor | number): Tensor { return ops.ne(this, b); }
  lt(b: Tensor | number): Tensor { return ops.lt(this, b); }
  le(b: Tensor | number): Tensor { return ops.le(this, b); }
  gt(b: Tensor | number): Tensor { return ops.gt(this, b); }
  ge(b: Tensor | number): Tensor { return ops.ge(this, b); }

  sum(dims?: number | number[], keepdim = false): Tensor { return ops.sum(this, dims, keepdim); }
  mean(dims?: number | number[], keepdim = false): Tensor { return ops.mean(this, dims, keepdim); }
  max(dims?: number | number[], keepdim = false): Tensor { return ops.max(this, dims, keepdim); }
  argmax(dim?: number, keepdim = false): Tensor { return ops.argmax(this, dim, keepdim); }
  softmax(dim = -1): Tensor { return ops.softmax(this, dim); }
  logSoftmax(dim = -1): Tensor { return ops.logSoftmax(this, dim); }

  matmul(b: Tensor): Tensor { return ops.matmul(this, b); }
}

function flatArgs(args: number[] | [readonly number[]]): number[] {
  return Array.isArray(args[0]) ? [...(args[0] as readonly number[])] : (args as number[]);
}

/** Resolves one -1 in `target` and checks the element count matches. */
function inferShape(op: string, from: Shape, target: number[]): number[] {
  const total = numel(from);
  const minus = target.filter((s) => s === -1).length;
  if (minus > 1 || target.some((s) => !Number.isInteger(s) || s < -1)) {
    throw new Error(`${op}: invalid target shape ${fmt(target)}`);
  }
  if (minus === 1) {
    const known = target.filter((s) => s !== -1).reduce((a, b) => a * b, 1);
    if (known === 0 || total % known !== 0) throw new Error(`${op}: cannot reshape ${fmt(from)} into ${fmt(target)}`);
    target = target.map((s) => (s === -1 ? total / known : s));
  }
  if (numel(target) !== total) {
    throw new Error(`${op}: cannot reshape ${fmt(from)} (${total} elements) into ${fmt(target)} (${numel(target)} elements)`);
  }
  return target;
}

/**
 * Strides that make `target` a view of (shape, strides), or null when a copy is needed.
 * Groups of source dims that are mutually contiguous can be split/merged freely.
 */
function viewStrides(shape: Shape, strides: readonly number[], target: readonly number[]): number[] | null {
  if (numel(shape) === 0) return contiguousStrides(target);
  // Size-1 dims constrain nothing: match the others, then give the 1s any consistent stride.
  const src = shape.map((s, i) => [s, strides[i]] as const).filter(([s]) => s !== 1);
  const dims = [...target.keys()].filter((i) => target[i] !== 1);
  const out = new Array<number>(target.length).fill(0);
  let ti = dims.length - 1;
  let si = src.length - 1;
  while (si >= 0) {
    // a maximal run of source dims that is contiguous among itself can be split/merged freely
    let sj = si;
    let chunk = src[si][0];
    while (sj > 0 && src[sj - 1][1] === src[sj][1] * src[sj][0]) chunk *= src[--sj][0];
    let stride = src[si][1];
    let prod = 1;
    while (ti >= 0 && prod < chunk) {
      const d = dims[ti--];
      out[d] = stride;
      stride *= target[d];
      prod *= target[d];
    }
    if (prod !== chunk) return null;
    si = sj - 1;
  }
  for (let i = target.length - 1; i >= 0; i--) {
    if (target[i] === 1) out[i] = i + 1 < target.length ? out[i + 1] * target[i + 1] : 1;
  }
  return out;
}
