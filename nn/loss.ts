/** Losses. */
import * as ag from '../autograd/index.js';
import { fmt } from '../tensor/shape.js';
import type { Tensor } from '../tensor/index.js';

export interface CrossEntropyOptions {
  /** Targets equal to this are ignored (default -100, as PyTorch). */
  ignoreIndex?: number;
}

/**
 * Mean negative log-likelihood of int32 `targets` [N] under `logits` [N, V], over the
 * targets that are not ignored (0 when all are). Masking the loss to answer tokens is done
 * by setting the other targets to ignoreIndex.
 */
export function crossEntropy(logits: Tensor, targets: Tensor, opts: CrossEntropyOptions = {}): Tensor {
  const ignore = opts.ignoreIndex ?? -100;
  if (logits.rank !== 2 || targets.rank !== 1 || targets.shape[0] !== logits.shape[0]) {
    throw new Error(`crossEntropy: logits must be [N, V] and targets [N], got ${fmt(logits.shape)} and ${fmt(targets.shape)}`);
  }
  if (targets.dtype !== 'int32') throw new Error(`crossEntropy: targets must be int32, got ${targets.dtype}`);
  const { valid, safe, count } = ag.noGrad(() => {
    const keepMask = targets.ne(ignore); // int32 1/0
    const safeIdx = keepMask.mul(targets); // ignored -> class 0, masked out below
    const n = keepMask.sum().cast(logits.dtype).maximum(1);
    const v = keepMask.cast(logits.dtype);
    keepMask.dispose();
    return { valid: v, safe: safeIdx, count: n };
  });
  const logp = ag.logSoftmax(logits, -1);
  const picked = ag.gather(logp, 1, ag.reshape(safe, [-1, 1])); // [N, 1]
  const loss = ag.div(ag.neg(ag.sum(ag.mul(ag.reshape(picked, [-1]), valid))), count);
  for (const t of [valid, safe, count]) t.dispose();
  return loss;
}
