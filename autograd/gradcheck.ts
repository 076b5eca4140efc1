/**
 * gradcheck: compares backward()'s gradients with central finite differences, in float64 on
 * the CPU. The output is projected on fixed random weights, L = sum(fn(x) * w), so one
 * backward checks a whole vector-Jacobian product.
 */
import { buf } from '../tensor/cpu/storage.js';
import { tensor, Tensor, tidy } from '../tensor/index.js';
import { noGrad } from './graph.js';
import { mul, sum } from './functions.js';

export interface GradcheckOptions {
  eps?: number;
  atol?: number;
  rtol?: number;
}

export interface GradcheckResult {
  /** Largest |analytic - numeric| over all checked elements. */
  maxAbsError: number;
  checked: number;
}

function weightsLike(t: Tensor, seed: number): Tensor {
  let s = seed >>> 0 || 1;
  const w = new Float64Array(t.size);
  for (let i = 0; i < w.length; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    w[i] = (s >>> 0) / 4294967296 - 0.5;
  }
  return tensor(w, { shape: t.shape, dtype: 'float64' });
}

/**
 * Throws naming the input, element, and both values when any gradient disagrees.
 * `inputs` must be float64 CPU tensors; those with requiresGrad are checked.
 */
export function gradcheck(fn: (...xs: Tensor[]) => Tensor, inputs: Tensor[], opts: GradcheckOptions = {}): GradcheckResult {
  const { eps = 1e-6, atol = 1e-6, rtol = 1e-4 } = opts;
  const leaves = inputs.map((x) => {
    if (x.device !== 'cpu' || x.dtype !== 'float64') throw new Error(`gradcheck: inputs must be float64 on the CPU, got ${x}`);
    const c = noGrad(() => x.clone());
    c.requiresGrad = x.requiresGrad;
    return c;
  });
  const w = tidy(() => weightsLike(noGrad(() => fn(...leaves)), 12345));
  const loss = (xs: Tensor[]) => tidy(() => sum(mul(fn(...xs), w)));
  const l = loss(leaves);
  l.backward();
  l.dispose();
  let maxAbsError = 0;
  let checked = 0;
  leaves.forEach((x, k) => {
    if (!x.requiresGrad) return;
    const data = buf(x) as Float64Array;
    const analytic = x.grad ? (buf(x.grad) as Float64Array) : new Float64Array(x.size);
    for (let i = 0; i < x.size; i++) {
      const orig = data[i];
      const value = () => noGrad(() => tidy(() => {
        const t = loss(leaves);
        const v = (buf(t) as Float64Array)[t.offset];
        t.dispose();
        return v;
      }));
      data[i] = orig + eps;
      const up = value();
      data[i] = orig - eps;
      const down = value();
      data[i] = orig;
      const numeric = (up - down) / (2 * eps);
      const err = Math.abs(analytic[i] - numeric);
      maxAbsError = Math.max(maxAbsError, err);
      checked++;
      if (err > atol + rtol * Math.abs(numeric)) {
        throw new Error(`gradcheck: input ${k} ${x} element ${i}: analytic ${analytic[i]}, numeric ${numeric} (|diff| ${err.toExponential(2)})`);
      }
    }
  });
  for (const x of leaves) {
    x.grad?.dispose();
    x.dispose();
  }
  w.dispose();
  return { maxAbsError, checked };
}
