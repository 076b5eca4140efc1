/**
 * The connector (`resampler`, LLaVA-UHD-V4.md "Connector"): 2x2 pixel-unshuffle ->
 * LayerNorm(4d, eps 1e-6) -> Linear(4d -> 4d) -> GELU (exact erf form) -> Linear(4d -> LLM width).
 *
 * The post-ViT baseline merges twice (16x). The spec leaves the first round's shape open; here
 * each extra round is unshuffle -> LayerNorm(4d) -> Linear(4d -> d) -> GELU(erf), so that the
 * last round is exactly the one above (`merges.N.*` hold the extra rounds' weights).
 */
import * as ag from '../autograd/index.js';
import { LayerNorm, Linear, Module } from '../nn/index.js';
import type { Tensor } from '../tensor/index.js';
import type { InitOptions } from '../nn/init.js';
import type { ViewGrid } from './vision.js';

class MergeRound extends Module {
  norm: LayerNorm;
  proj: Linear;
  constructor(d: number, opts: InitOptions) {
    super();
    this.norm = this.module('norm', new LayerNorm(4 * d, 1e-6, opts));
    this.proj = this.module('proj', new Linear(4 * d, d, opts));
  }
}

/** Per view: unshuffle each view's grid by 2x2; x: [1, sum(h*w), c] -> [1, sum(h*w)/4, 4c]. */
export function unshuffleViews(x: Tensor, grids: ViewGrid[]): Tensor {
  let at = 0;
  const parts = grids.map((g) => {
    const n = g.h * g.w;
    const v = ag.pixelUnshuffle(ag.narrow(x, 1, at, n), g.h, g.w, 2);
    at += n;
    return v;
  });
  return parts.length === 1 ? parts[0] : ag.concat(parts, 1);
}

export class Connector extends Module {
  merges: MergeRound[];
  norm: LayerNorm;
  linear_1: Linear;
  linear_2: Linear;
  constructor(readonly visionWidth: number, readonly llmWidth: number, readonly rounds: number, opts: InitOptions = {}) {
    super();
    const d = visionWidth;
    this.merges = Array.from({ length: rounds - 1 }, (_, i) => this.module(`merges.${i}`, new MergeRound(d, opts)));
    this.norm = this.module('norm', new LayerNorm(4 * d, 1e-6, opts));
    this.linear_1 = this.module('linear_1', new Linear(4 * d, 4 * d, opts));
    this.linear_2 = this.module('linear_2', new Linear(4 * d, llmWidth, opts));
  }

  /** x: [1, sum(h*w), d] -> [1, sum(h*w)/4^rounds, llmWidth] and the final grids. */
  forward(x: Tensor, grids: ViewGrid[]): { x: Tensor; grids: ViewGrid[] } {
    let h = x;
    let g = grids;
    const half = (gs: ViewGrid[]) => gs.map((v) => ({ h: v.h / 2, w: v.w / 2 }));
    for (const round of this.merges) {
      h = ag.gelu(round.proj.forward(round.norm.forward(unshuffleViews(h, g))), 'none');
      g = half(g);
    }
    const z = unshuffleViews(h, g);
    const out = this.linear_2.forward(ag.gelu(this.linear_1.forward(this.norm.forward(z)), 'none'));
    return { x: out, grids: half(g) };
  }
}
