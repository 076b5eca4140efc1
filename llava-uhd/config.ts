/**
 * Model configuration with the upstream config.json keys: the vision tower (SigLIP), the
 * language model (Qwen3) and LLaVA-UHD v4's own (where the compressor sits, how the connector
 * merges, the slicing policy). Named configs ship for the paper's model and tiny test models.
 */
import type { DecoderConfig } from '../nn/transformer.js';

/** SigLIP vision config keys. */
export interface VisionConfig {
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  patch_size: number;
  num_channels?: number;
  layer_norm_eps?: number;
  /** Side of the learned position-embedding table (70 -> 4900 rows for so400m at 980 px). */
  position_embedding_side?: number;
}

/** Slicing policy (LLaVA-UHD-V4.md, "Slice-based encoding"). */
export interface SliceConfig {
  /** S: views are resized around S x S pixels (448). */
  scale_resolution: number;
  /** M: at most this many slices (9; 1 in stage 1). */
  max_slice_nums: number;
  /** Every view side is a multiple of this (patch 14 x 4 = 56). */
  align_unit?: number;
}

export interface LlavaUHDConfig {
  vision_config: VisionConfig;
  text_config: DecoderConfig;
  /**
   * k, the 0-based ViT layer after which the compressor D (`vit_merger`) runs; null for the
   * post-ViT baseline (no D, two 2x2 merges in the connector).
   */
  insert_layer_id: number | null;
  slice_config: SliceConfig;
  /**
   * Whole-word tokens added to the byte tokenizer of tiny models (ignored with Qwen3's, whose
   * BPE already keeps common words whole); the vocabulary must have room for them.
   */
  tokenizer_words?: string[];
}

/** 2x2 merges in the connector: one with D (D already merged once), two for the baseline. */
export function connectorMergeRounds(c: LlavaUHDConfig): number {
  return c.insert_layer_id === null ? 2 : 1;
}

const SIGLIP_SO400M: VisionConfig = {
  hidden_size: 1152,
  intermediate_size: 4304,
  num_hidden_layers: 27,
  num_attention_heads: 16,
  patch_size: 14,
  num_channels: 3,
  layer_norm_eps: 1e-6,
  position_embedding_side: 70,
};

const QWEN3_8B: DecoderConfig = {
  vocab_size: 151936,
  hidden_size: 4096,
  intermediate_size: 12288,
  num_hidden_layers: 36,
  num_attention_heads: 32,
  num_key_value_heads: 8,
  head_dim: 128,
  rms_norm_eps: 1e-6,
  rope_theta: 1e6,
  tie_word_embeddings: false,
};

/** Configs by name: the paper's model and tiny ones for tests and the demo. */
export const CONFIGS: Record<string, LlavaUHDConfig> = {
  /** SigLIP so400m/14 + Qwen3-8B, D after layer 6 (the paper's setting). */
  'llava-uhd-v4': {
    vision_config: SIGLIP_SO400M,
    text_config: QWEN3_8B,
    insert_layer_id: 6,
    slice_config: { scale_resolution: 448, max_slice_nums: 9, align_unit: 56 },
  },
  /** The same without D: the post-ViT baseline (16x in the connector). */
  'llava-uhd-v4-baseline': {
    vision_config: SIGLIP_SO400M,
    text_config: QWEN3_8B,
    insert_layer_id: null,
    slice_config: { scale_resolution: 448, max_slice_nums: 9, align_unit: 56 },
  },
  /** A tiny model for tests and the demo: 4 ViT layers of width 32, D after layer 1, a 2-layer LLM. */
  tiny: {
    vision_config: {
      hidden_size: 32,
      intermediate_size: 64,
      num_hidden_layers: 4,
      num_attention_heads: 2,
      patch_size: 14,
      num_channels: 3,
      layer_norm_eps: 1e-6,
      position_embedding_side: 16,
    },
    text_config: {
      vocab_size: 384,
      hidden_size: 48,
      intermediate_size: 96,
      num_hidden_layers: 2,
      num_attention_heads: 4,
      num_key_value_heads: 2,
      head_dim: 12,
      rms_norm_eps: 1e-6,
      rope_theta: 1e6,
      tie_word_embeddings: true,
      initializer_range: 0.02,
    },
    insert_layer_id: 1,
    // S = 112 instead of 448 so the demo fits a 2-core CPU: images up to ~336 px, 3x the thumbnail
    slice_config: { scale_resolution: 112, max_slice_nums: 9, align_unit: 56 },
    // the synthetic task's colour answers as single tokens, as Qwen3's BPE has them
    tokenizer_words: ['red', 'green', 'blue', 'yellow'],
  },
};
CONFIGS['tiny-baseline'] = { ...CONFIGS.tiny, insert_layer_id: null };

/** A named config, or a JSON file's (same keys). */
export async function resolveConfig(nameOrPath: string): Promise<LlavaUHDConfig> {
  if (CONFIGS[nameOrPath]) return structuredClone(CONFIGS[nameOrPath]);
  const { readFile } = await import('node:fs/promises');
  let text: string;
  try {
    text = await readFile(nameOrPath, 'utf8');
  } catch {
    throw new Error(`config: '${nameOrPath}' is neither a named config (${Object.keys(CONFIGS).join(', ')}) nor a readable file`);
  }
  return validateConfig(JSON.parse(text) as LlavaUHDConfig, nameOrPath);
}

/** Checks the fields the model needs, naming the first one that is wrong. */
export function validateConfig(c: LlavaUHDConfig, source = 'config'): LlavaUHDConfig {
  const need = (ok: boolean, field: string, what: string) => {
    if (!ok) throw new Error(`${source}: ${field} ${what}`);
  };
  const posInt = (v: unknown) => Number.isInteger(v) && (v as number) > 0;
  need(typeof c === 'object' && c !== null, 'the config', 'must be a JSON object');
  const v = c.vision_config;
  need(typeof v === 'object' && v !== null, 'vision_config', 'is missing');
  for (const k of ['hidden_size', 'intermediate_size', 'num_hidden_layers', 'num_attention_heads', 'patch_size'] as const) {
    need(posInt(v[k]), `vision_config.${k}`, `must be a positive integer, got ${JSON.stringify(v[k])}`);
  }
  need(v.hidden_size % v.num_attention_heads === 0, 'vision_config.hidden_size', 'must be divisible by num_attention_heads');
  const t = c.text_config;
  need(typeof t === 'object' && t !== null, 'text_config', 'is missing');
  for (const k of ['vocab_size', 'hidden_size', 'intermediate_size', 'num_hidden_layers', 'num_attention_heads', 'num_key_value_heads'] as const) {
    need(posInt(t[k]), `text_config.${k}`, `must be a positive integer, got ${JSON.stringify(t[k])}`);
  }
  need(c.insert_layer_id === null || (Number.isInteger(c.insert_layer_id) && c.insert_layer_id >= 0 && c.insert_layer_id < v.num_hidden_layers),
    'insert_layer_id', `must be null or a layer index 0..${v.num_hidden_layers - 1}, got ${JSON.stringify(c.insert_layer_id)}`);
  const s = c.slice_config;
  need(typeof s === 'object' && s !== null, 'slice_config', 'is missing');
  need(posInt(s.scale_resolution), 'slice_config.scale_resolution', 'must be a positive integer');
  need(posInt(s.max_slice_nums), 'slice_config.max_slice_nums', 'must be a positive integer');
  need(c.tokenizer_words === undefined || (Array.isArray(c.tokenizer_words) && c.tokenizer_words.every((w) => typeof w === 'string')),
    'tokenizer_words', 'must be a list of words');
  return c;
}
