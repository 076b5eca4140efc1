/** Parameter initialisation from the seeded generator (same numbers on every device). */
import { normal } from '../tensor/random.js';
import { tensor, zeros, ones, Tensor, type Device } from '../tensor/index.js';

export interface InitOptions {
  device?: Device;
  dtype?: 'float32' | 'float64';
  /**
   * Random-initialised weights are allocated, not drawn (their values are undefined): for a
   * model whose weights are loaded next, or filled on the device. Drawing 8B numbers on the
   * host would take minutes.
   */
  empty?: boolean;
  /** Storage of random-initialised matrices (rank >= 2) where the device has half storage; vectors stay float32. */
  weightDtype?: 'bfloat16' | 'float16';
}

/** An uninitialised weight (opts.empty), in the weight dtype for matrices. */
function emptyWeight(shape: number[], opts: InitOptions): Tensor {
  const dtype = opts.weightDtype && shape.length >= 2 ? opts.weightDtype : opts.dtype ?? 'float32';
  return Tensor.empty(shape, dtype, opts.device ?? 'cpu');
}

/** N(0, std²), as Qwen3 initialises its projections (std = initializer_range, 0.02). */
export function normalInit(shape: number[], std: number, opts: InitOptions = {}): Tensor {
  if (opts.empty) return emptyWeight(shape, opts);
  const n = shape.reduce((a, b) => a * b, 1);
  const v = new Float64Array(n);
  for (let i = 0; i < n; i++) v[i] = normal() * std;
  return tensor(v, { shape, dtype: opts.dtype ?? 'float32', device: opts.device });
}

/** N(0, std²) redrawn outside [-2std, 2std], as SigLIP's trunc_normal_ initialisation. */
export function truncNormalInit(shape: number[], std: number, opts: InitOptions = {}): Tensor {
  if (opts.empty) return emptyWeight(shape, opts);
  const n = shape.reduce((a, b) => a * b, 1);
  const v = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let x = normal();
    while (Math.abs(x) > 2) x = normal();
    v[i] = x * std;
  }
  return tensor(v, { shape, dtype: opts.dtype ?? 'float32', device: opts.device });
}

export const zerosInit = (shape: number[], opts: InitOptions = {}) => zeros(shape, { dtype: opts.dtype ?? 'float32', device: opts.device });
export const onesInit = (shape: number[], opts: InitOptions = {}) => ones(shape, { dtype: opts.dtype ?? 'float32', device: opts.device });
