/**
 * Makes Tensor's methods record gradients: once autograd is imported, `x.matmul(w)` and
 * `x.reshape(...)` build the graph exactly like the functional forms in ./functions.ts.
 * The tensor layer itself stays ignorant of autograd; this file is the one bridge.
 */
import { Tensor } from '../tensor/tensor.js';
import type { DType, SliceRange } from '../tensor/index.js';
import * as F from './functions.js';
import { backward, detach, releaseOutput, type BackwardOptions } from './graph.js';

declare module '../tensor/tensor.js' {
  interface Tensor {
    /** Backpropagates from this tensor (a scalar unless `gradient` is given). */
    backward(gradient?: Tensor, opts?: BackwardOptions): void;
    /** The same data with no history. */
    detach(): Tensor;
    /** Sets requiresGrad (for leaves/parameters) and returns this. */
    requiresGrad_(on?: boolean): Tensor;
  }
}

type Operand = Tensor | number;
type Shape = number[] | [readonly number[]];
const flat = (s: Shape): number[] => (Array.isArray(s[0]) ? [...(s[0] as readonly number[])] : (s as number[]));

const P = Tensor.prototype;

// Disposing the tensor a recorded op made lets its graph go when nothing downstream needs it
// (a forward without backward would otherwise keep its saved tensors alive).
const disposeTensor = P.dispose;
P.dispose = function (this: Tensor) {
  if (!this.disposed && this.gradFn) releaseOutput(this.gradFn);
  disposeTensor.call(this);
};

Object.assign(P, {
  cast(this: Tensor, dtype: DType) { return F.cast(this, dtype); },
  clone(this: Tensor) { return F.clone(this); },
  contiguous(this: Tensor) { return F.contiguous(this); },
  neg(this: Tensor) { return F.neg(this); },
  abs(this: Tensor) { return F.abs(this); },
  exp(this: Tensor) { return F.exp(this); },
  log(this: Tensor) { return F.log(this); },
  sqrt(this: Tensor) { return F.sqrt(this); },
  rsqrt(this: Tensor) { return F.rsqrt(this); },
  tanh(this: Tensor) { return F.tanh(this); },
  sigmoid(this: Tensor) { return F.sigmoid(this); },
  relu(this: Tensor) { return F.relu(this); },
  gelu(this: Tensor, approximate: 'tanh' | 'none' = 'tanh') { return F.gelu(this, approximate); },
  silu(this: Tensor) { return F.silu(this); },
  add(this: Tensor, b: Operand) { return F.add(this, b); },
  sub(this: Tensor, b: Operand) { return F.sub(this, b); },
  mul(this: Tensor, b: Operand) { return F.mul(this, b); },
  div(this: Tensor, b: Operand) { return F.div(this, b); },
  pow(this: Tensor, b: Operand) { return F.pow(this, b); },
  maximum(this: Tensor, b: Operand) { return F.maximum(this, b); },
  minimum(this: Tensor, b: Operand) { return F.minimum(this, b); },
  sum(this: Tensor, dims?: number | number[], keepdim = false) { return F.sum(this, dims, keepdim); },
  mean(this: Tensor, dims?: number | number[], keepdim = false) { return F.mean(this, dims, keepdim); },
  max(this: Tensor, dims?: number | number[], keepdim = false) { return F.max(this, dims, keepdim); },
  softmax(this: Tensor, dim = -1) { return F.softmax(this, dim); },
  logSoftmax(this: Tensor, dim = -1) { return F.logSoftmax(this, dim); },
  matmul(this: Tensor, b: Tensor) { return F.matmul(this, b); },
  reshape(this: Tensor, ...shape: Shape) { return F.reshape(this, flat(shape)); },
  view(this: Tensor, ...shape: Shape) { return F.view(this, flat(shape)); },
  flatten(this: Tensor) { return F.reshape(this, [this.size]); },
  permute(this: Tensor, ...dims: Shape) { return F.permute(this, flat(dims)); },
  transpose(this: Tensor, dim0 = -2, dim1 = -1) { return F.transpose(this, dim0, dim1); },
  slice(this: Tensor, ...ranges: SliceRange[]) { return F.slice(this, ...ranges); },
  narrow(this: Tensor, dim: number, start: number, length: number) { return F.narrow(this, dim, start, length); },
  expand(this: Tensor, ...shape: Shape) { return F.expand(this, flat(shape)); },
  squeeze(this: Tensor, dim?: number) { return F.squeeze(this, dim); },
  unsqueeze(this: Tensor, dim: number) { return F.unsqueeze(this, dim); },
  backward(this: Tensor, gradient?: Tensor, opts?: BackwardOptions) { backward(this, gradient, opts); },
  detach(this: Tensor) { return detach(this); },
  requiresGrad_(this: Tensor, on = true) { this.requiresGrad = on; return this; },
});
