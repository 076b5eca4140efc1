/**
 * Differentiable fused ops (tensor/ops/fused.ts): the forward asks the backend for its fused
 * kernel (or composes plain ops), the backward is written with plain tensor ops.
 */
import type { LinearOptions } from '../tensor/ops/fused.js';
import * as T from '../tensor/ops/index.js';
import type { Tensor } from '../tensor/tensor.js';
import { isGradEnabled, noGrad, record } from './graph.js';

/**
 * y = act(x @ weightᵀ + bias) + residual, x: [..., K], weight: [N, K], bias: [N] (PyTorch's
 * Linear). Backward: gz = gy · act'(z) (z saved by the forward), gx = gz W, gW = gzᵀ x over
 * the flattened rows (one matmul, no per-batch partial products to sum), gb = Σ_rows gz,
 * g_residual = gy.
 */
export function linear(x: Tensor, weight: Tensor, bias: Tensor | null = null, opts: LinearOptions = {}): Tensor {
  const act = opts.activation ?? 'none';
  const residual = opts.residual ?? null;
  const inputs = [x, weight, ...(bias ? [bias] : []), ...(residual ? [residual] : [])];
  // as `record` decides: under noGrad no pre-activation is kept (one epilogue pass, no extra [M, N])
  const wantsGrad = isGradEnabled() && inputs.some((t) => t.requiresGrad);
  const { out, preact } = noGrad(() => T.linearForward(x, weight, bias, { ...opts, keepPreact: wantsGrad }));
  const xShape = x.shape;
  const res = record('linear', inputs, out, preact ? [x, weight, preact] : [x, weight], (g, saved, needs) => {
    const [xs, w, z] = saved;
    const N = w.shape[0];
    const K = w.shape[1];
    const M = g.size / Math.max(N, 1);
    const gz = act === 'none' ? g : T.unaryGrad(act, z, g);
    const gz2 = gz.reshape([M, N]);
    const grads: (Tensor | null)[] = [];
    grads.push(needs[0] ? T.matmul(gz2, w).reshape([...xShape]) : null);
    if (needs[1]) {
      const x2 = xs.reshape([M, K]);
      grads.push(T.matmul(gz2.transpose(), x2));
    } else grads.push(null);
    if (bias) grads.push(needs[2] ? T.sum(gz2, 0) : null);
    if (residual) grads.push(needs[grads.length] ? g.reshape([...g.shape]) : null);
    return grads;
  });
  preact?.dispose();
  return res;
}
