/**
 * The compressor variants of the paper's ablation (LLaVA-UHD v4, Table 4; issue 15): every one
 * turns each view's h x w grid of d-dim tokens into (h/2)(w/2) tokens after ViT layer k, under
 * `vit_merger.*`. The registry maps a config's `compressor` name to its module, whether the
 * parameter-reuse initialisation from layer k applies, and its MACs (flops.ts).
 *   avg-pool            mean of each 2x2 window, no parameters
 *   unshuffle-mlp       unshuffle -> LN(4d) -> Linear(4d,4d) -> GELU -> Linear(4d,d), random init
 *   reused-mlp          window mean + D's 4d -> 4f -> d MLP (reuse: layer k's MLP block), no attention
 *   cross-attn-topleft  per window one query (its top-left token) attends to its 4 tokens, then
 *   cross-attn-mean     layer k's MLP block; the query the window mean in -mean (reuse: layer k)
 *   win-attn-mlp        window attention (reuse: layer k's attention) then unshuffle-mlp
 *   win-attn-reused     the paper's D (compressor.ts), the release's layout
 */
import * as ag from '../autograd/index.js';
import { LayerNorm, Linear, MLP, Module, MultiHeadAttention } from '../nn/index.js';
import { assign, type Tensor } from '../tensor/index.js';
import { fmt } from '../tensor/shape.js';
import type { InitOptions } from '../nn/init.js';
import { COMPRESSOR_NAMES, type CompressorName, type VisionConfig } from './config.js';
import { Compressor, gridRuns, initMergeMlpFromLayer } from './compressor.js';
import type { EncoderLayer, ViewGrid } from './vision.js';

/** What the tower runs after layer k: [1, sum(h*w), d] over `grids` -> [1, sum(h*w)/4, d]. */
export interface VisionCompressor extends Module {
  forward(x: Tensor, grids: ViewGrid[]): Tensor;
  /** The parameter-reuse initialisation from layer k, where the variant has one. */
  initFromLayer?(layer: EncoderLayer): void;
}

export { COMPRESSOR_NAMES, type CompressorName };
export const DEFAULT_COMPRESSOR: CompressorName = 'win-attn-reused';

/**
 * What reuse-init sets from layer k: 'layer' (a window of 4 copies of t gives layer k on t),
 * 'mlp' (gives layer k's MLP block on t), 'attention' (only the attention is copied), 'none'.
 */
export type ReuseKind = 'layer' | 'mlp' | 'attention' | 'none';

/** Per view runs, x [1, N, d] as [count, n, d] batches: fn per run, results concatenated on dim 1. */
function perRun(x: Tensor, grids: ViewGrid[], who: string, fn: (batch: Tensor, g: ViewGrid, count: number) => Tensor): Tensor {
  const total = grids.reduce((n, g) => n + g.h * g.w, 0);
  if (x.rank !== 3 || x.shape[1] !== total) {
    throw new Error(`${who}: x ${fmt(x.shape)} does not hold the ${total} tokens of grids ${grids.map((g) => `${g.h}x${g.w}`).join(', ')}`);
  }
  const d = x.shape[2];
  let at = 0;
  const parts = gridRuns(grids).map(({ grid: g, count }) => {
    if (g.h % 2 || g.w % 2) throw new Error(`${who}: view grid ${g.h}x${g.w} is not divisible by 2`);
    const n = g.h * g.w;
    const batch = ag.reshape(ag.narrow(x, 1, at, n * count), [count, n, d]);
    at += n * count;
    return ag.reshape(fn(batch, g, count), [1, (count * n) / 4, -1]);
  });
  return parts.length === 1 ? parts[0] : ag.concat(parts, 1);
}

function copyAttention(dst: { layer_norm1: LayerNorm; self_attn: MultiHeadAttention }, layer: EncoderLayer): void {
  ag.noGrad(() => {
    for (const p of ['q_proj', 'k_proj', 'v_proj', 'out'] as const) {
      assign(dst.self_attn[p].weight, layer.self_attn[p].weight);
      assign(dst.self_attn[p].bias!, layer.self_attn[p].bias!);
    }
    assign(dst.layer_norm1.weight, layer.layer_norm1.weight);
    assign(dst.layer_norm1.bias, layer.layer_norm1.bias);
  });
}

/** Each view's 2x2 windows averaged: [1, sum(h*w), c] -> [1, sum(h*w)/4, c]. */
export function poolViews(x: Tensor, grids: ViewGrid[]): Tensor {
  return perRun(x, grids, 'avg-pool', (b, g) => ag.avgPool2x2(b, g.h, g.w));
}

/** Parameter-free: each 2x2 window's mean. */
export class AvgPoolCompressor extends Module implements VisionCompressor {
  forward(x: Tensor, grids: ViewGrid[]): Tensor {
    return poolViews(x, grids);
  }
}

/** unshuffle -> LN(4d) -> Linear(4d, 4d) -> GELU -> Linear(4d, d) (the connector's round at width d). */
export class UnshuffleMlpCompressor extends Module implements VisionCompressor {
  pre_norm: LayerNorm;
  linear_1: Linear;
  linear_2: Linear;
  constructor(readonly config: VisionConfig, opts: InitOptions = {}) {
    super();
    const d = config.hidden_size;
    this.pre_norm = this.module('pre_norm', new LayerNorm(4 * d, config.layer_norm_eps ?? 1e-6, opts));
    this.linear_1 = this.module('linear_1', new Linear(4 * d, 4 * d, opts));
    this.linear_2 = this.module('linear_2', new Linear(4 * d, d, opts));
  }
  /** The MLP on already unshuffled tokens [.., 4d] -> [.., d]. */
  merge(z: Tensor): Tensor {
    return this.linear_2.forward(this.linear_1.forward(this.pre_norm.forward(z), { activation: 'geluErf' }));
  }
  forward(x: Tensor, grids: ViewGrid[]): Tensor {
    return perRun(x, grids, 'unshuffle-mlp', (b, g) => this.merge(ag.pixelUnshuffle(b, g.h, g.w, 2)));
  }
}

/** D without its window attention: mean4(X) + linear_2(gelu(linear_1(pre_norm unshuffle X))). */
export class ReusedMlpCompressor extends Module implements VisionCompressor {
  pre_norm: LayerNorm;
  linear_1: Linear;
  linear_2: Linear;
  constructor(readonly config: VisionConfig, opts: InitOptions = {}) {
    super();
    const d = config.hidden_size;
    const f = config.intermediate_size;
    this.pre_norm = this.module('pre_norm', new LayerNorm(4 * d, config.layer_norm_eps ?? 1e-6, opts));
    this.linear_1 = this.module('linear_1', new Linear(4 * d, 4 * f, opts));
    this.linear_2 = this.module('linear_2', new Linear(4 * f, d, opts));
  }
  forward(x: Tensor, grids: ViewGrid[]): Tensor {
    return perRun(x, grids, 'reused-mlp', (b, g) => {
      const z = this.pre_norm.forward(ag.pixelUnshuffle(b, g.h, g.w, 2));
      return this.linear_2.forward(this.linear_1.forward(z, { activation: 'gelu' }), { residual: ag.avgPool2x2(b, g.h, g.w) });
    });
  }
  initFromLayer(layer: EncoderLayer): void {
    initMergeMlpFromLayer(this.pre_norm, this.linear_1, this.linear_2, layer);
  }
}

/**
 * Each 2x2 window -> one token by cross-attention: the query is the window's top-left token or
 * its mean, keys and values its 4 tokens; y = query + Attn(LN1 query, LN1 window), then layer k's
 * MLP block y + fc2(gelu(fc1(LN2 y))). Reuse copies layer k whole, so 4 copies of t give layer k on t.
 */
export class CrossAttnCompressor extends Module implements VisionCompressor {
  layer_norm1: LayerNorm;
  self_attn: MultiHeadAttention;
  layer_norm2: LayerNorm;
  mlp: MLP;
  constructor(readonly config: VisionConfig, readonly query: 'topleft' | 'mean', opts: InitOptions = {}) {
    super();
    const d = config.hidden_size;
    const eps = config.layer_norm_eps ?? 1e-6;
    this.layer_norm1 = this.module('layer_norm1', new LayerNorm(d, eps, opts));
    this.self_attn = this.module('self_attn', new MultiHeadAttention({ ...opts, dim: d, heads: config.num_attention_heads, bias: true, outName: 'out_proj' }));
    this.layer_norm2 = this.module('layer_norm2', new LayerNorm(d, eps, opts));
    this.mlp = this.module('mlp', new MLP(d, config.intermediate_size, 'tanh', opts));
  }
  forward(x: Tensor, grids: ViewGrid[]): Tensor {
    const d = x.shape[2];
    const a = this.self_attn;
    const heads = a.heads;
    const hd = d / heads;
    return perRun(x, grids, `cross-attn-${this.query}`, (b, g, count) => {
      const m = (count * g.h * g.w) / 4;
      const win = ag.reshape(ag.pixelUnshuffle(b, g.h, g.w, 2), [m, 4, d]); // [tl, tr, bl, br]
      const q0 = this.query === 'topleft' ? ag.narrow(win, 1, 0, 1) : ag.mean(win, 1, true); // [m, 1, d]
      const normed = this.layer_norm1.forward(win);
      const normedQ = this.query === 'topleft' ? ag.narrow(normed, 1, 0, 1) : this.layer_norm1.forward(q0);
      const split = (t: Tensor, s: number) => ag.permute(ag.reshape(t, [m, s, heads, hd]), [0, 2, 1, 3]);
      const o = ag.attention(split(a.q_proj.forward(normedQ), 1), split(a.k_proj.forward(normed), 4), split(a.v_proj.forward(normed), 4));
      const y = a.out.forward(ag.reshape(ag.permute(o, [0, 2, 1, 3]), [m, 1, d]), { residual: q0 });
      return this.mlp.forward(this.layer_norm2.forward(y), y);
    });
  }
  initFromLayer(layer: EncoderLayer): void {
    copyAttention(this, layer);
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

/** Y = X + WindowAttn(LN1 X) as D, then unshuffle-mlp on Y (no window-mean residual). */
export class WinAttnMlpCompressor extends Module implements VisionCompressor {
  layer_norm1: LayerNorm;
  self_attn: MultiHeadAttention;
  merger: UnshuffleMlpCompressor;
  constructor(readonly config: VisionConfig, opts: InitOptions = {}) {
    super();
    const d = config.hidden_size;
    this.layer_norm1 = this.module('layer_norm1', new LayerNorm(d, config.layer_norm_eps ?? 1e-6, opts));
    this.self_attn = this.module('self_attn', new MultiHeadAttention({ ...opts, dim: d, heads: config.num_attention_heads, bias: true, outName: 'out_proj' }));
    this.merger = this.module('merger', new UnshuffleMlpCompressor(config, opts));
  }
  forward(x: Tensor, grids: ViewGrid[]): Tensor {
    return perRun(x, grids, 'win-attn-mlp', (b, g) => {
      const y = this.self_attn.forward(this.layer_norm1.forward(b), { window: { h: g.h, w: g.w }, residual: b });
      return this.merger.merge(ag.pixelUnshuffle(y, g.h, g.w, 2));
    });
  }
  /** Only the attention comes from layer k; the merge MLP keeps its random init. */
  initFromLayer(layer: EncoderLayer): void {
    copyAttention(this, layer);
  }
}

export interface CompressorVariant {
  name: CompressorName;
  /** One line for tables and --help. */
  summary: string;
  reuse: ReuseKind;
  create(config: VisionConfig, opts: InitOptions): VisionCompressor;
}

export const COMPRESSORS: Record<CompressorName, CompressorVariant> = {
  'avg-pool': { name: 'avg-pool', summary: '2x2 mean, no parameters', reuse: 'none', create: () => new AvgPoolCompressor() },
  'unshuffle-mlp': { name: 'unshuffle-mlp', summary: 'unshuffle, LN(4d), 4d->4d->d MLP, random init', reuse: 'none', create: (c, o) => new UnshuffleMlpCompressor(c, o) },
  'reused-mlp': { name: 'reused-mlp', summary: "window mean + 4d->4f->d MLP from layer k's MLP", reuse: 'mlp', create: (c, o) => new ReusedMlpCompressor(c, o) },
  'cross-attn-topleft': { name: 'cross-attn-topleft', summary: 'cross-attention, query = top-left token, then MLP block (layer k)', reuse: 'layer', create: (c, o) => new CrossAttnCompressor(c, 'topleft', o) },
  'cross-attn-mean': { name: 'cross-attn-mean', summary: 'cross-attention, query = window mean, then MLP block (layer k)', reuse: 'layer', create: (c, o) => new CrossAttnCompressor(c, 'mean', o) },
  'win-attn-mlp': { name: 'win-attn-mlp', summary: "window attention (layer k's) then unshuffle-mlp", reuse: 'attention', create: (c, o) => new WinAttnMlpCompressor(c, o) },
  'win-attn-reused': { name: 'win-attn-reused', summary: "the paper's D: window attention + reused MLP", reuse: 'layer', create: (c, o) => new Compressor(c, o) },
};

/** The registry entry of a name, or an error listing the allowed names. */
export function compressorVariant(name: string): CompressorVariant {
  const v = (COMPRESSORS as Record<string, CompressorVariant>)[name];
  if (!v) throw new Error(`unknown compressor "${name}"; allowed: ${COMPRESSOR_NAMES.join(', ')}`);
  return v;
}
