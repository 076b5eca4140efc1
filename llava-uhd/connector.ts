/**
 * The connector (`resampler`, LLaVA-UHD-V4.md "Connector"): 2x2 pixel-unshuffle ->
 * LayerNorm(4d, eps 1e-6) -> Linear(4d -> 4d) -> GELU (exact erf form) -> Linear(4d -> LLM width).
 *
 * The post-ViT baseline merges twice (16x). Every round has the shape above; a round before the
 * last projects back to the vision width d instead of the LLM width. Names as the release's
 * `Merger` (mlp_merger.py of THUMAI-Lab/LLaVA-UHD-v4): round i is `resampler.mlp.{i}`, holding
 * `pre_norm` and an nn.Sequential(Linear, GELU, Linear) whose Linears are `mlp.0` and `mlp.2`.
 */
import * as ag from '../autograd/index.js';
import { LayerNorm, Linear, Module } from '../nn/index.js';
import type { Tensor } from '../tensor/index.js';
import type { InitOptions } from '../nn/init.js';
import type { ViewGrid } from './vision.js';
import { gridRuns } from './compressor.js';

/** unshuffle -> LayerNorm(4d) -> Linear(4d -> 4d) -> GELU(erf) -> Linear(4d -> out). */
class MergeRound extends Module {
  pre_norm: LayerNorm;
  /** `mlp.0`, the first Linear of the release's Sequential. */
  linear_1: Linear;
  /** `mlp.2` (index 1 is the GELU, which has no weights). */
  linear_2: Linear;
  constructor(d: number, out: number, opts: InitOptions) {
    super();
    this.pre_norm = this.module('pre_norm', new LayerNorm(4 * d, 1e-6, opts));
    this.linear_1 = this.module('mlp.0', new Linear(4 * d, 4 * d, opts));
    this.linear_2 = this.module('mlp.2', new Linear(4 * d, out, opts));
  }
  /** x: [1, sum(h*w), d] over `grids` -> [1, sum(h*w)/4, out]. */
  forward(x: Tensor, grids: ViewGrid[]): Tensor {
    const z = unshuffleViews(x, grids);
    return this.linear_2.forward(this.linear_1.forward(this.pre_norm.forward(z), { activation: 'geluErf' }));
  }
}

/** Per view: unshuffle each view's grid by 2x2; x: [1, sum(h*w), c] -> [1, sum(h*w)/4, 4c]. */
export function unshuffleViews(x: Tensor, grids: ViewGrid[]): Tensor {
  let at = 0;
  const c = x.shape[2];
  // consecutive views with the same grid (an image's slices) unshuffle as one batch
  const parts = gridRuns(grids).map(({ grid: g, count }) => {
    const n = g.h * g.w;
    const views = ag.reshape(ag.narrow(x, 1, at, n * count), [count, n, c]);
    at += n * count;
    return ag.reshape(ag.pixelUnshuffle(views, g.h, g.w, 2), [1, (n * count) / 4, 4 * c]);
  });
  return parts.length === 1 ? parts[0] : ag.concat(parts, 1);
}

export class Connector extends Module {
  /** Round i is `mlp.{i}`; all but the last output the vision width. */
  rounds: MergeRound[];
  constructor(readonly visionWidth: number, readonly llmWidth: number, readonly mergeRounds: number, opts: InitOptions = {}) {
    super();
    if (!Number.isInteger(mergeRounds) || mergeRounds < 1) throw new Error(`Connector: merge rounds must be a positive integer, got ${mergeRounds}`);
    const d = visionWidth;
    this.rounds = Array.from({ length: mergeRounds }, (_, i) => this.module(`mlp.${i}`, new MergeRound(d, i === mergeRounds - 1 ? llmWidth : d, opts)));
  }

  /** x: [1, sum(h*w), d] -> [1, sum(h*w)/4^rounds, llmWidth] and the final grids. */
  forward(x: Tensor, grids: ViewGrid[]): { x: Tensor; grids: ViewGrid[] } {
    let h = x;
    let g = grids;
    for (const round of this.rounds) {
      h = round.forward(h, g);
      g = g.map((v) => ({ h: v.h / 2, w: v.w / 2 }));
    }
    return { x: h, grids: g };
  }
}
