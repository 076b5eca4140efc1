/** Fused normalisations over the last dim. */
import { fmt } from '../shape.js';
import type { Tensor } from '../tensor.js';
import { backendFor, empty, requireDtype, requireSameDtype } from './common.js';

/** A norm's weight or bias must be [D] for x [..., D], in x's dtype. */
export function checkAffine(op: string, x: Tensor, name: string, p: Tensor | null | undefined): void {
  if (!p) return;
  requireSameDtype(op, x, p);
  const D = x.shape[x.rank - 1];
  if (p.rank !== 1 || p.shape[0] !== D) {
    throw new Error(`${op}: ${name} must be [${D}] to match x ${fmt(x.shape)}, got ${fmt(p.shape)}`);
  }
}

/** (x - mean) / sqrt(var + eps) * weight + bias over the last dim (biased variance). */
export function layerNorm(x: Tensor, weight?: Tensor | null, bias?: Tensor | null, eps = 1e-5): Tensor {
  const backend = backendFor('layerNorm', x, weight, bias);
  requireDtype('layerNorm', 'x', x, ['float32', 'float64']);
  if (x.rank === 0) throw new Error('layerNorm: x must have rank >= 1');
  checkAffine('layerNorm', x, 'weight', weight);
  checkAffine('layerNorm', x, 'bias', bias);
  const out = empty(x.shape, x.dtype, x.device);
  backend.layerNorm(x, weight ?? null, bias ?? null, eps, out);
  return out;
}

/** x / sqrt(mean(x^2) + eps) * weight over the last dim (Qwen3: times weight, not 1+weight). */
export function rmsNorm(x: Tensor, weight?: Tensor | null, eps = 1e-6): Tensor {
  const backend = backendFor('rmsNorm', x, weight);
  requireDtype('rmsNorm', 'x', x, ['float32', 'float64']);
  if (x.rank === 0) throw new Error('rmsNorm: x must have rank >= 1');
  checkAffine('rmsNorm', x, 'weight', weight);
  const out = empty(x.shape, x.dtype, x.device);
  backend.rmsNorm(x, weight ?? null, eps, out);
  return out;
}
