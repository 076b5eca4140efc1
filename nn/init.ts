/** Parameter initialisation from the seeded generator (same numbers on every device). */
import { normal } from '../tensor/random.js';
import { tensor, zeros, ones, type Device, type Tensor } from '../tensor/index.js';

export interface InitOptions {
  device?: Device;
  dtype?: 'float32' | 'float64';
}

/** N(0, std²), as Qwen3 initialises its projections (std = initializer_range, 0.02). */
export function normalInit(shape: number[], std: number, opts: InitOptions = {}): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const v = new Float64Array(n);
  for (let i = 0; i < n; i++) v[i] = normal() * std;
  return tensor(v, { shape, dtype: opts.dtype ?? 'float32', device: opts.device });
}

/** N(0, std²) redrawn outside [-2std, 2std], as SigLIP's trunc_normal_ initialisation. */
export function truncNormalInit(shape: number[], std: number, opts: InitOptions = {}): Tensor {
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
