/**
 * The intra-ViT compressor D (`vit_merger`, LLaVA-UHD-V4.md "The intra-ViT compressor D"):
 * per view, an h x w grid of d-dim tokens becomes (h/2)(w/2) tokens:
 *   Y = X + WindowAttn(LN1 X)                       attention within each 2x2 window
 *   Z = pixelUnshuffle(Y)                          [tl, tr, bl, br] concatenated, 4d wide
 *   out = mean4(Y) + linear_2(gelu_tanh(linear_1(pre_norm Z)))
 * and its parameter-reuse initialisation from ViT layer k. Its parameters carry the release's names
 * (`vit_merger.*`, vit_insert_merger.py of THUMAI-Lab/LLaVA-UHD-v4), including `layer_norm2` and
 * `mlp.fc{1,2}`: copied from layer k at initialisation and unused in the forward pass, but part of
 * every released checkpoint, so they are kept, loaded strictly and saved back.
 */
import * as ag from '../autograd/index.js';
import { LayerNorm, Linear, MLP, Module, MultiHeadAttention } from '../nn/index.js';
import { assign, concat, getRngState, setRngState, windowMerge, type Tensor } from '../tensor/index.js';
import { fmt } from '../tensor/shape.js';
import type { InitOptions } from '../nn/init.js';
import type { VisionConfig } from './config.js';
import type { EncoderLayer, ViewGrid } from './vision.js';

/** Runs of consecutive equal grids: [{grid, count}], in order. */
export function gridRuns(grids: readonly ViewGrid[]): { grid: ViewGrid; count: number }[] {
  const runs: { grid: ViewGrid; count: number }[] = [];
  for (const g of grids) {
    const last = runs[runs.length - 1];
    if (last && last.grid.h === g.h && last.grid.w === g.w) last.count++;
    else runs.push({ grid: g, count: 1 });
  }
  return runs;
}

export class Compressor extends Module {
  /**
   * On: forward runs D's middle (window attention, out_proj, residual, unshuffle, window mean,
   * pre_norm) as the windowMerge op, which the backend fuses when it can (WebGPU, at inference;
   * the kernel lab measured 0.26-0.33x the time of the eight library ops at d=32 and 0.75-0.86x at
   * d=1152 on llvmpipe, bench/results/lab-compressor-variants.md). Off: the module's own chain of
   * library ops (tests and the kernel lab compare the two).
   */
  static fuseMiddle = true;

  layer_norm1: LayerNorm;
  self_attn: MultiHeadAttention;
  pre_norm: LayerNorm;
  linear_1: Linear;
  linear_2: Linear;
  /** Layer k's LN2 and MLP as copied at initialisation: carried for the release's layout, never run. */
  layer_norm2: LayerNorm;
  mlp: MLP;

  constructor(readonly config: VisionConfig, opts: InitOptions = {}) {
    super();
    const d = config.hidden_size;
    const f = config.intermediate_size;
    const eps = config.layer_norm_eps ?? 1e-6;
    this.layer_norm1 = this.module('layer_norm1', new LayerNorm(d, eps, opts));
    this.self_attn = this.module('self_attn', new MultiHeadAttention({ ...opts, dim: d, heads: config.num_attention_heads, bias: true, outName: 'out_proj' }));
    this.pre_norm = this.module('pre_norm', new LayerNorm(4 * d, eps, opts));
    this.linear_1 = this.module('linear_1', new Linear(4 * d, 4 * f, opts));
    this.linear_2 = this.module('linear_2', new Linear(4 * f, d, opts));
    // initFromLayer overwrites these copies; drawing their random init from the generator and
    // then rewinding it keeps the init of everything built after D what it was without them
    const rng = getRngState();
    this.layer_norm2 = this.module('layer_norm2', new LayerNorm(d, eps, opts));
    this.mlp = this.module('mlp', new MLP(d, f, 'tanh', opts));
    setRngState(rng);
  }

  /** x: [1, sum(h*w), d] (views concatenated) -> [1, sum(h*w)/4, d]. */
  forward(x: Tensor, grids: ViewGrid[]): Tensor {
    const total = grids.reduce((n, g) => n + g.h * g.w, 0);
    if (x.rank !== 3 || x.shape[1] !== total) {
      throw new Error(`Compressor: x ${fmt(x.shape)} does not hold the ${total} tokens of grids ${grids.map((g) => `${g.h}x${g.w}`).join(', ')}`);
    }
    const normed = this.layer_norm1.forward(x);
    const fused = Compressor.fuseMiddle;
    const merged: Tensor[] = [];
    const means: Tensor[] = [];
    let at = 0;
    // Consecutive views with the same grid (an image's slices) run as one batch.
    for (const { grid: g, count } of gridRuns(grids)) {
      if (g.h % 2 || g.w % 2) throw new Error(`Compressor: view grid ${g.h}x${g.w} is not divisible by 2`);
      const n = g.h * g.w;
      const d = x.shape[2];
      const batch = (t: Tensor) => ag.reshape(ag.narrow(t, 1, at, n * count), [count, n, d]);
      if (fused) {
        // the same Y, unshuffle, pre_norm and window mean as one op: one dispatch where the
        // backend offers it and no gradient is recorded through it (tensor/ops/window-merge.ts)
        const a = this.self_attn;
        const h = batch(normed);
        const { z, mean } = windowMerge({
          x: batch(x).contiguous(), q: a.q_proj.forward(h), k: a.k_proj.forward(h), v: a.v_proj.forward(h),
          outWeight: a.out.weight, outBias: a.out.bias!, normWeight: this.pre_norm.weight, normBias: this.pre_norm.bias,
          grid: g, heads: a.heads, eps: this.pre_norm.eps,
        });
        merged.push(ag.reshape(z, [1, (count * n) / 4, 4 * d]));
        means.push(ag.reshape(mean, [1, (count * n) / 4, d]));
      } else {
        // Y = X + Attn(LN1 X), attention restricted to the 4 tokens of each 2x2 window
        const y = this.self_attn.forward(batch(normed), { window: { h: g.h, w: g.w }, residual: batch(x) });
        merged.push(ag.reshape(ag.pixelUnshuffle(y, g.h, g.w, 2), [1, (count * n) / 4, 4 * d]));
        means.push(ag.reshape(ag.avgPool2x2(y, g.h, g.w), [1, (count * n) / 4, d]));
      }
      at += n * count;
    }
    const z = merged.length === 1 ? merged[0] : ag.concat(merged, 1);
    const residual = means.length === 1 ? means[0] : ag.concat(means, 1);
    const normedZ = fused ? z : this.pre_norm.forward(z); // windowMerge applied pre_norm
    return this.linear_2.forward(this.linear_1.forward(normedZ, { activation: 'gelu' }), { residual });
  }

  /**
   * Parameter-reuse initialisation from ViT layer k (spec, "Parameter-reuse initialisation"):
   * self_attn and layer_norm1 copied; pre_norm = layer_norm2 tiled 4x; linear_1 =
   * BlockDiag(fc1 x4) with fc1.bias tiled; linear_2 = [fc2 | fc2 | fc2 | fc2] / 4 with fc2.bias;
   * the unused layer_norm2 and mlp copied as they are (the release copies them too).
   */
  initFromLayer(layer: EncoderLayer): void {
    this.copyUnusedFromLayer(layer);
    ag.noGrad(() => {
      const copy = (dst: Tensor, src: Tensor) => assign(dst, src);
      for (const p of ['q_proj', 'k_proj', 'v_proj'] as const) {
        copy(this.self_attn[p].weight, layer.self_attn[p].weight);
        copy(this.self_attn[p].bias!, layer.self_attn[p].bias!);
      }
      copy(this.self_attn.out.weight, layer.self_attn.out.weight);
      copy(this.self_attn.out.bias!, layer.self_attn.out.bias!);
      copy(this.layer_norm1.weight, layer.layer_norm1.weight);
      copy(this.layer_norm1.bias, layer.layer_norm1.bias);
      initMergeMlpFromLayer(this.pre_norm, this.linear_1, this.linear_2, layer);
    });
  }

  /** Copies layer k's LN2 and MLP into the unused `layer_norm2` / `mlp` (checkpoints without them). */
  copyUnusedFromLayer(layer: EncoderLayer): void {
    ag.noGrad(() => {
      assign(this.layer_norm2.weight, layer.layer_norm2.weight);
      assign(this.layer_norm2.bias, layer.layer_norm2.bias);
      for (const fc of ['fc1', 'fc2'] as const) {
        assign(this.mlp[fc].weight, layer.mlp[fc].weight);
        assign(this.mlp[fc].bias!, layer.mlp[fc].bias!);
      }
    });
  }
}

/**
 * D's merge MLP from layer k's MLP sub-block (spec, "Parameter-reuse initialisation"): pre_norm =
 * layer_norm2 tiled 4x; linear_1 = BlockDiag(fc1 x4) with fc1.bias tiled; linear_2 =
 * [fc2 | fc2 | fc2 | fc2] / 4 with fc2.bias. On a window of 4 copies of t, with the window mean as
 * the residual, it gives t + fc2(gelu(fc1(LN2 t))): layer k's MLP block.
 */
export function initMergeMlpFromLayer(preNorm: LayerNorm, linear1: Linear, linear2: Linear, layer: EncoderLayer): void {
  ag.noGrad(() => {
    const copy = (dst: Tensor, src: Tensor) => assign(dst, src);
    const tile4 = (t: Tensor) => concat([t, t, t, t], 0);
    const tiled = [tile4(layer.layer_norm2.weight), tile4(layer.layer_norm2.bias), tile4(layer.mlp.fc1.bias!)];
    copy(preNorm.weight, tiled[0]);
    copy(preNorm.bias, tiled[1]);
    copy(linear1.bias!, tiled[2]);
    const fc1 = layer.mlp.fc1.weight; // [f, d]
    const fc2 = layer.mlp.fc2.weight; // [d, f]
    const [f, d] = fc1.shape;
    const w1 = linear1.weight; // [4f, 4d]
    const zero = w1.mul(0);
    copy(w1, zero);
    for (let b = 0; b < 4; b++) {
      const block = w1.slice([b * f, (b + 1) * f], [b * d, (b + 1) * d]);
      copy(block, fc1);
      block.dispose();
    }
    const quarter = fc2.div(4);
    const w2 = concat([quarter, quarter, quarter, quarter], 1); // [d, 4f]
    copy(linear2.weight, w2);
    copy(linear2.bias!, layer.mlp.fc2.bias!);
    for (const t of [...tiled, zero, quarter, w2]) t.dispose();
  });
}
