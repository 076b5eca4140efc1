/**
 * The fused linear layer: out = act(x Wᵀ + b) + residual. The matmul (./matmul.ts) reads the
 * weight [N, K] through a transposed view (its packing of b absorbs the transpose), writing
 * into the pre-activation when one is kept and into out otherwise; then one elementwise pass
 * (./elementwise.ts `linearEpilogue`) adds the bias, applies the activation and adds the
 * residual. Against the composition (matmul, add, activation, add) it saves two or three
 * passes over [M, N] and their allocations.
 */
import type { LinearActivation } from '../../../tensor/backend.js';
import type { Tensor } from '../../../tensor/tensor.js';
import { linearEpilogue } from './elementwise.js';
import { matmul } from './matmul.js';

/** Calls that ran fused, for the tests that check the wasm path was taken. */
export const linearRuns = { n: 0 };

export function linear(x: Tensor, weight: Tensor, bias: Tensor | null, residual: Tensor | null, act: LinearActivation, out: Tensor, preact: Tensor | null): boolean {
  if (x.dtype !== 'float32' || weight.dtype !== 'float32') return false;
  const [M, K] = x.shape;
  const N = weight.shape[0];
  const wt = weight.asStrided([K, N], [weight.strides[1], weight.strides[0]], weight.offset);
  const z = preact ?? out;
  const b = bias ? bias.asStrided([M, N], [0, bias.strides[0]], bias.offset) : null;
  try {
    matmul(x, wt, z);
    if (preact) {
      // z = x Wᵀ + b kept for the backward, then out = act(z) + residual
      if (b && !linearEpilogue('none', z, b, null, z)) return false;
      if (!linearEpilogue(act, z, null, residual, out)) return false;
    } else if ((b || act !== 'none' || residual) && !linearEpilogue(act, z, b, residual, out)) return false;
  } finally {
    wt.dispose();
    b?.dispose();
  }
  linearRuns.n++;
  return true;
}
