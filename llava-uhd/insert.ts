/**
 * Inserting a compressor into a pretrained post-ViT baseline (issue 15; the paper's ablation
 * fine-tunes a baseline with D inserted after layer k). The new model keeps the baseline's tower
 * and LLM; its connector's single 2x2 round starts from the baseline connector's last round (the
 * one that outputs the LLM width: D takes over the first merge); D starts from layer k by
 * parameter reuse, or randomly from a seed. `featureAgreement` measures, before any training,
 * how far D moves the tower's final features from the baseline's (2x2-pooled per view).
 */
import * as ag from '../autograd/index.js';
import { assign, getRngState, manualSeed, setRngState, tidy, type Device, type Tensor } from '../tensor/index.js';
import { connectorMergeRounds, type CompressorName, type LlavaUHDConfig } from './config.js';
import { compressorVariant, poolViews, DEFAULT_COMPRESSOR } from './compressors.js';
import { Compressor } from './compressor.js';
import { LlavaUHD } from './model.js';
import { viewPixels } from './preprocess.js';
import type { StageSpec } from './recipe.js';
import type { Tokenizer } from './tokenizer.js';
import { encodeSample, validationLoss, type Dataset } from './train.js';

export type InitKind = 'reuse' | 'random';

export interface InsertOptions {
  variant: CompressorName;
  /** k: D runs after ViT layer k (0-based). */
  layer: number;
  init: InitKind;
  /** Seed of a random init (default 0); the global generator is left as it was. */
  seed?: number;
}

/** The baseline's config with D of `variant` after `layer` and one merge round in the connector. */
export function insertedConfig(base: LlavaUHDConfig, variant: CompressorName, layer: number): LlavaUHDConfig {
  const c: LlavaUHDConfig = { ...structuredClone(base), insert_layer_id: layer, compressor: variant, merger_times: 1 };
  if (variant === DEFAULT_COMPRESSOR) delete c.compressor;
  if (connectorMergeRounds({ ...c, merger_times: undefined }) === 1) delete c.merger_times; // what D implies
  return c;
}

/** A NEW model: the baseline with a compressor inserted (the baseline is not changed). */
export function insertCompressor(baseline: LlavaUHD, opts: InsertOptions): LlavaUHD {
  const { variant, layer, init } = opts;
  const spec = compressorVariant(variant);
  const layers = baseline.config.vision_config.num_hidden_layers;
  if (baseline.config.insert_layer_id !== null || baseline.vit_merger) {
    throw new Error(`insertCompressor: the baseline already has a compressor after layer ${baseline.config.insert_layer_id}; start from a post-ViT baseline (insert_layer_id null)`);
  }
  if (!Number.isInteger(layer) || layer < 0 || layer >= layers) throw new Error(`insertCompressor: layer ${layer} is not a ViT layer index 0..${layers - 1}`);
  if (init !== 'reuse' && init !== 'random') throw new Error(`insertCompressor: init must be 'reuse' or 'random', got ${String(init)}`);
  if (init === 'reuse' && spec.reuse === 'none') throw new Error(`insertCompressor: ${variant} has no parameter-reuse initialisation; use init 'random'`);
  const first = baseline.parameters()[0];
  const where = { device: first.device, dtype: first.dtype as 'float32' | 'float64' };
  const rng = getRngState();
  try {
    manualSeed(opts.seed ?? 0);
    const m = new LlavaUHD(insertedConfig(baseline.config, variant, layer), where);
    const fresh = spec.create(m.config.vision_config, where); // D's random init, drawn from the seed
    const from = baseline.stateDict();
    const last = connectorMergeRounds(baseline.config) - 1;
    const freshD = fresh.stateDict();
    ag.noGrad(() => {
      for (const [name, t] of m.stateDict()) {
        if (name.startsWith('vit_merger.')) {
          assign(t, freshD.get(name.slice('vit_merger.'.length))!);
          continue;
        }
        const src = name.startsWith('resampler.mlp.0.') ? `resampler.mlp.${last}.${name.slice('resampler.mlp.0.'.length)}` : name;
        const s = from.get(src);
        if (!s) throw new Error(`insertCompressor: the baseline has no ${src} for ${name}`);
        assign(t, s);
      }
    });
    fresh.dispose();
    if (init === 'reuse') m.initCompressor();
    // the release's unused copies of layer k in D are part of its layout either way
    else if (m.vit_merger instanceof Compressor) m.vit_merger.copyUnusedFromLayer(m.vpm.encoder.layers[layer]);
    return m;
  } finally {
    setRngState(rng);
  }
}

export interface AgreementOptions {
  tok: Tokenizer;
  device: Device;
  /** The stage whose slicing and loss the samples use (max_slices etc.). */
  stage: StageSpec;
  /** Samples used (default all of `samples`, at most 16). */
  limit?: number;
}

export interface Agreement {
  /** Mean over images of each image's mean token cosine. */
  cosine: number;
  /** Lowest cosine of any token. */
  minCosine: number;
  /** Mean answer loss of the D model on the samples (train.ts's validation loss). */
  loss: number;
  images: number;
}

/** Token-wise cosine similarity of a, b [1, N, d] -> N values. */
async function tokenCosines(a: Tensor, b: Tensor): Promise<Float64Array> {
  const c = tidy(() => {
    const dot = ag.sum(ag.mul(a, b), -1);
    const na = ag.sqrt(ag.sum(ag.mul(a, a), -1));
    const nb = ag.sqrt(ag.sum(ag.mul(b, b), -1));
    return ag.div(dot, ag.mul(na, nb));
  });
  const out = Float64Array.from(await c.data());
  c.dispose();
  return out;
}

/**
 * At step 0: cosine of the D model's final tower features against the baseline's final features
 * 2x2-average-pooled per view (how far D moves the tower off the pretrained manifold), and the D
 * model's mean answer loss.
 */
export async function featureAgreement(baseline: LlavaUHD, withD: LlavaUHD, samples: Dataset, opts: AgreementOptions): Promise<Agreement> {
  const n = Math.min(opts.limit ?? 16, samples.size);
  let sum = 0;
  let images = 0;
  let min = Infinity;
  for (let i = 0; i < n; i++) {
    const s = samples.get(i);
    if (s.images.length === 0) continue;
    const { pixels } = encodeSample(withD, opts.tok, s, opts.stage.max_slices);
    const px = viewPixels(pixels, opts.device);
    const [a, b] = ag.noGrad(() => {
      const base = baseline.vpm.forward(px, null, null);
      const pooled = poolViews(base.x, base.grids);
      base.x.dispose();
      const d = withD.vpm.forward(px, withD.vit_merger, withD.config.insert_layer_id);
      return [d.x, pooled];
    });
    const cos = await tokenCosines(a, b);
    for (const t of [a, b, ...px]) t.dispose();
    let m = 0;
    for (const c of cos) {
      m += c;
      min = Math.min(min, c);
    }
    sum += m / cos.length;
    images++;
  }
  if (images === 0) throw new Error('featureAgreement: none of the samples has an image');
  const loss = await validationLoss(withD, opts.tok, samples, opts.stage, opts.device, n);
  return { cosine: sum / images, minCosine: min, loss, images };
}
