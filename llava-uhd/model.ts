/**
 * LLaVA-UHD v4: vision tower (`vpm.`) with the compressor D (`vit_merger.`) after layer k,
 * connector (`resampler.`), Qwen3-style language model (`llm.`). Visual features overwrite the
 * `<unk>` placeholders of the token sequence in order (LLaVA-UHD-V4.md, "Pipeline").
 */
import * as ag from '../autograd/index.js';
import { CausalLM, Module, type KVCache } from '../nn/index.js';
import type { InitOptions } from '../nn/init.js';
import { tensor, zeros, type Tensor } from '../tensor/index.js';
import { fmt } from '../tensor/shape.js';
import { compressorVariant, DEFAULT_COMPRESSOR, type VisionCompressor } from './compressors.js';
import { connectorMergeRounds, validateConfig, type LlavaUHDConfig } from './config.js';
import { Connector } from './connector.js';
import { VisionTower, type ViewGrid } from './vision.js';

export interface VisualFeatures {
  /** [1, sum of tokens, LLM width], views in order. */
  features: Tensor;
  /** LLM tokens per view (thumbnail, slices row-major, next image ...). */
  tokensPerView: number[];
  /** Patch grids after the ViT (after D when present). */
  grids: ViewGrid[];
}

export class LlavaUHD extends Module {
  vpm: VisionTower;
  /** D, or the variant `config.compressor` names (compressors.ts). */
  vit_merger: VisionCompressor | null;
  resampler: Connector;
  llm: CausalLM;

  constructor(readonly config: LlavaUHDConfig, opts: InitOptions = {}) {
    super();
    validateConfig(config);
    this.vpm = this.module('vpm', new VisionTower(config.vision_config, opts));
    this.vit_merger = config.insert_layer_id === null ? null : this.module('vit_merger', compressorVariant(config.compressor ?? DEFAULT_COMPRESSOR).create(config.vision_config, opts));
    this.resampler = this.module('resampler', new Connector(config.vision_config.hidden_size, config.text_config.hidden_size, connectorMergeRounds(config), opts));
    this.llm = this.module('llm', new CausalLM(config.text_config, opts));
    if (this.vit_merger) this.initCompressor();
  }

  /** D's parameter-reuse initialisation from layer k (call again after loading a pretrained tower). */
  initCompressor(): void {
    const k = this.config.insert_layer_id;
    if (!this.vit_merger || k === null) throw new Error('initCompressor: this configuration has no compressor (insert_layer_id is null)');
    this.vit_merger.initFromLayer?.(this.vpm.encoder.layers[k]); // variants without one keep their init
  }

  /** Normalised views [3, H, W] (H, W multiples of 56) -> LLM-width features per view. */
  encodeViews(pixels: Tensor[]): VisualFeatures {
    if (pixels.length === 0) throw new Error('encodeViews: no views');
    const unit = this.config.vision_config.patch_size * 4;
    for (const p of pixels) {
      if (p.rank !== 3 || p.shape[0] !== 3 || p.shape[1] % unit || p.shape[2] % unit) {
        throw new Error(`encodeViews: a view must be [3, H, W] with H, W multiples of ${unit}, got ${fmt(p.shape)}`);
      }
    }
    const vit = this.vpm.forward(pixels, this.vit_merger, this.config.insert_layer_id);
    const { x, grids } = this.resampler.forward(vit.x, vit.grids);
    return { features: x, tokensPerView: grids.map((g) => g.h * g.w), grids };
  }

  /**
   * Token embeddings [1, S, W] with `features` written over the placeholder positions
   * (a mismatch of counts is an error naming both).
   */
  embed(ids: Tensor, visual: Tensor | null, unkPositions: readonly number[]): Tensor {
    if (ids.rank !== 2 || ids.shape[0] !== 1) throw new Error(`embed: ids must be [1, S], got ${fmt(ids.shape)}`);
    const n = visual ? visual.shape[1] : 0;
    if (unkPositions.length !== n) {
      throw new Error(`layout: ${unkPositions.length} <unk> placeholders but ${n} visual features`);
    }
    const text = this.llm.model.embed_tokens.forward(ids); // [1, S, W]
    if (!visual || n === 0) return text;
    const [, S, W] = text.shape;
    const device = ids.device;
    const keepMask = ag.noGrad(() => {
      const m = new Float32Array(S).fill(1);
      for (const p of unkPositions) m[p] = 0;
      return tensor(m, { shape: [1, S, 1], device, dtype: text.dtype });
    });
    const pos = tensor(unkPositions.map((p) => p), { dtype: 'int32', shape: [n, 1], device });
    const index = pos.expand(n, W);
    const placed = ag.scatterAdd(zeros([S, W], { device, dtype: text.dtype }), 0, index, ag.reshape(visual, [n, W]));
    const out = ag.add(ag.mul(text, keepMask), ag.reshape(placed, [1, S, W]));
    for (const t of [keepMask, pos, index]) t.dispose();
    return out;
  }

  /** Logits [1, S, vocab] for a token sequence whose placeholders take the views' features. */
  forward(ids: Tensor, pixels: Tensor[], unkPositions: readonly number[], call: { segmentIds?: Tensor; caches?: KVCache[] } = {}): Tensor {
    const visual = pixels.length ? this.encodeViews(pixels).features : null;
    const h = this.llm.model.forward(this.embed(ids, visual, unkPositions), call);
    return this.llm.logits(h);
  }
}
