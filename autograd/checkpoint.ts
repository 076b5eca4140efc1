/**
 * Gradient checkpointing: run a block without keeping its activations, and recompute them
 * during backward. Trades one extra forward of the block for its activation memory, which
 * is what limits VLM training.
 */
import { keep, tidy, Tensor } from '../tensor/index.js';
import { backward, detach, enableGrad, noGrad, record } from './graph.js';

/**
 * out = fn(...inputs), recorded as one node. Parameters used inside fn (leaves with
 * requiresGrad) get their `.grad` during the recomputation, as without checkpointing.
 * fn must be deterministic (no dropout drawing new randomness) for the gradients to match.
 */
export function checkpoint(fn: (...xs: Tensor[]) => Tensor, ...inputs: Tensor[]): Tensor {
  const out = noGrad(() => tidy(() => fn(...inputs)));
  return record('checkpoint', inputs, out, inputs, (g, saved, needs) =>
    enableGrad(() => {
      const xs = saved.map((s, i) => {
        const d = detach(s);
        d.requiresGrad = needs[i];
        return d;
      });
      const y = fn(...xs);
      backward(y, g);
      const grads = xs.map((x) => (x.grad ? keep(x.grad) : null));
      for (const x of xs) x.dispose();
      y.dispose();
      return grads;
    }), true);
}
