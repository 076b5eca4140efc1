/**
 * Model configuration with the upstream config.json keys: the vision tower (SigLIP), the
 * language model (Qwen3) and LLaVA-UHD v4's own (where the compressor sits, how the connector
 * merges, the slicing policy). Named configs ship for the paper's model and tiny test models.
 *
 * Two file formats are read, both checked with zod (messages name the file, the key and what is
 * allowed): the project's own (`vision_config`, `text_config`, `insert_layer_id`, `slice_config`,
 * exact keys), and the `config.json` of a MiniCPM-V-style checkpoint folder, which the release's
 * model is (its Qwen3 keys at the top level, `vision_config`, `slice_config`, `insert_layer_id`,
 * `merger_times`); the latter is also written, beside the weights, by checkpoint-folder.ts.
 */
import { z } from 'zod';
import type { DecoderConfig } from '../nn/transformer.js';
import { checkSchema, describeValue, readJsonFile } from './schema.js';

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
  /**
   * 2x2 merge rounds in the connector (the release's `merger_times`). Absent: 1 with D, 2
   * without (16x overall either way); set only for other combinations.
   */
  merger_times?: number;
  /**
   * The compressor after layer k (llava-uhd/compressors.ts, the paper's Table 4 variants).
   * Absent: `win-attn-reused`, the paper's D.
   */
  compressor?: CompressorName;
}

/** The compressor variants (llava-uhd/compressors.ts holds their modules). */
export const COMPRESSOR_NAMES = ['avg-pool', 'unshuffle-mlp', 'reused-mlp', 'cross-attn-topleft', 'cross-attn-mean', 'win-attn-mlp', 'win-attn-reused'] as const;
export type CompressorName = (typeof COMPRESSOR_NAMES)[number];
const compressorSchema = z.enum(COMPRESSOR_NAMES, { error: `must be one of ${COMPRESSOR_NAMES.join(', ')}` });

/** 2x2 merges in the connector: one with D (D already merged once), two for the baseline. */
export function connectorMergeRounds(c: LlavaUHDConfig): number {
  return c.merger_times ?? (c.insert_layer_id === null ? 2 : 1);
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

/**
 * `mini`: the pretrained checkpoint's shape (pretrained/mini/, `uhd pretrain`): a SigLIP-shaped
 * tower of width 64 x 6 layers, D after layer 2, a 2-layer Qwen3-shaped LLM of width 64, the
 * pretraining mix's answers as whole words. `mini-baseline` is the same without D (merger_times
 * 2): what the checkpoint holds, D being inserted into it by parameter reuse.
 */
CONFIGS.mini = {
  vision_config: {
    hidden_size: 64,
    intermediate_size: 128,
    num_hidden_layers: 6,
    num_attention_heads: 4,
    patch_size: 14,
    num_channels: 3,
    layer_norm_eps: 1e-6,
    position_embedding_side: 16,
  },
  text_config: {
    vocab_size: 320,
    hidden_size: 64,
    intermediate_size: 128,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    head_dim: 16,
    rms_norm_eps: 1e-6,
    rope_theta: 1e6,
    tie_word_embeddings: true,
    initializer_range: 0.02,
  },
  insert_layer_id: 2,
  slice_config: { scale_resolution: 112, max_slice_nums: 9, align_unit: 56 },
  tokenizer_words: ['red', 'green', 'blue', 'yellow', 'square', 'disc', 'bar', 'cross', 'top', 'bottom', 'left', 'right'],
};
CONFIGS['mini-baseline'] = { ...CONFIGS.mini, insert_layer_id: null, merger_times: 2 };


// ---- the project's format ---------------------------------------------------------------------

const posInt = z.number().int().positive();
const posNumber = z.number().positive();

const visionSchema = z.strictObject({
  hidden_size: posInt,
  intermediate_size: posInt,
  num_hidden_layers: posInt,
  num_attention_heads: posInt,
  patch_size: posInt,
  num_channels: posInt.optional(),
  layer_norm_eps: posNumber.optional(),
  position_embedding_side: posInt.optional(),
});

const textSchema = z.strictObject({
  vocab_size: posInt,
  hidden_size: posInt,
  intermediate_size: posInt,
  num_hidden_layers: posInt,
  num_attention_heads: posInt,
  num_key_value_heads: posInt,
  head_dim: posInt.optional(),
  rms_norm_eps: posNumber.optional(),
  rope_theta: posNumber.optional(),
  tie_word_embeddings: z.boolean().optional(),
  initializer_range: posNumber.optional(),
});

const sliceSchema = z.strictObject({
  scale_resolution: posInt,
  max_slice_nums: posInt,
  align_unit: posInt.optional(),
});

/** Checks between keys, shared by both formats: `at` maps a field to its key in the file. */
function checkConsistency(c: LlavaUHDConfig, ctx: z.RefinementCtx, at: (field: string) => (string | number)[], noD = 'null'): void {
  const v = c.vision_config;
  const t = c.text_config;
  const fail = (field: string, message: string) => ctx.addIssue({ code: 'custom', path: at(field), message });
  if (v.hidden_size % v.num_attention_heads) fail('vision_config.hidden_size', `${v.hidden_size} is not divisible by vision_config.num_attention_heads (${v.num_attention_heads})`);
  if (t.num_attention_heads % t.num_key_value_heads) {
    fail('text_config.num_key_value_heads', `${t.num_key_value_heads} does not divide num_attention_heads (${t.num_attention_heads})`);
  }
  if (t.head_dim === undefined && t.hidden_size % t.num_attention_heads) {
    fail('text_config.hidden_size', `${t.hidden_size} is not divisible by num_attention_heads (${t.num_attention_heads}); give head_dim`);
  }
  const k = c.insert_layer_id;
  if (k !== null && k >= v.num_hidden_layers) fail('insert_layer_id', `must be ${noD} (no D) or a layer index 0..${v.num_hidden_layers - 1}, got ${k}`);
  if (c.merger_times !== undefined && c.merger_times < 1) fail('merger_times', `must be >= 1, got ${c.merger_times}`);
  const unit = c.slice_config.align_unit;
  if (unit !== undefined && unit % (v.patch_size * 4)) {
    fail('slice_config.align_unit', `${unit} is not a multiple of 4 x patch_size (${v.patch_size * 4}): both 2x2 merges need view grids divisible by 4`);
  }
  if (c.tokenizer_words && new Set(c.tokenizer_words).size !== c.tokenizer_words.length) fail('tokenizer_words', 'lists a word twice');
}

const projectSchema = z
  .strictObject({
    vision_config: visionSchema,
    text_config: textSchema,
    insert_layer_id: z.union([z.number().int().min(0), z.null()], { error: 'must be null (no D) or a layer index >= 0' }),
    slice_config: sliceSchema,
    tokenizer_words: z.array(z.string().regex(/^[A-Za-z]+$/, 'must be letters only')).optional(),
    merger_times: posInt.optional(),
    compressor: compressorSchema.optional(),
  })
  .superRefine((c, ctx) => checkConsistency(c, ctx, (f) => f.split('.')));

/** Checks a config in the project's format (every key known, every value in range); returns it. */
export function validateConfig(c: unknown, source = 'config'): LlavaUHDConfig {
  if (typeof c !== 'object' || c === null || Array.isArray(c)) throw new Error(`${source}: the config must be a JSON object, got ${describeValue(c)}`);
  return checkSchema(projectSchema, c, source);
}

// ---- the MiniCPM-V format (config.json of a checkpoint folder) ----------------------------------

/** The vision tower's activation: SigLIP's tanh GELU is the only one this ViT implements. */
const VISION_ACT = 'gelu_pytorch_tanh';

const minicpmvVision = z.looseObject({
  hidden_size: posInt,
  intermediate_size: posInt,
  num_hidden_layers: posInt,
  num_attention_heads: posInt,
  patch_size: posInt,
  /** The position table's side is image_size / patch_size (980 / 14 = 70). */
  image_size: posInt,
  num_channels: posInt.optional(),
  layer_norm_eps: posNumber.optional(),
  hidden_act: z.enum([VISION_ACT]).optional(),
});

export const TORCH_DTYPES = ['float32', 'bfloat16', 'float16'] as const;
export type TorchDType = (typeof TORCH_DTYPES)[number];

/**
 * MiniCPM-V's config.json (its `MiniCPMVConfig` extends Qwen3Config): the LLM's keys at the top
 * level; other keys (architectures, auto_map, query_num, the top-level image_size 448, ...) are
 * allowed and ignored. Options this project does not implement are refused by name.
 */
const minicpmvSchema = z
  .looseObject({
    hidden_size: posInt,
    intermediate_size: posInt,
    num_hidden_layers: posInt,
    num_attention_heads: posInt,
    num_key_value_heads: posInt,
    head_dim: posInt.optional(),
    rms_norm_eps: posNumber.optional(),
    rope_theta: posNumber.optional(),
    vocab_size: posInt,
    tie_word_embeddings: z.boolean().optional(),
    initializer_range: posNumber.optional(),
    hidden_act: z.enum(['silu']).optional(),
    attention_bias: z.literal(false).optional(),
    rope_scaling: z.null().optional(),
    use_sliding_window: z.literal(false).optional(),
    vision_config: minicpmvVision,
    slice_config: z.looseObject({ max_slice_nums: posInt, scale_resolution: posInt, patch_size: posInt.optional() }),
    /** k; absent or -1: no D (the release's VLU_SmartCPM defaults it to -1). */
    insert_layer_id: z.number().int().min(-1).optional(),
    merger_times: posInt.optional(),
    compressor: compressorSchema.optional(),
    /** MiniCPM-V drops the tower's last layer when set (its checkpoints then hold one layer fewer). */
    drop_vision_last_layer: z.boolean().optional(),
    torch_dtype: z.enum(TORCH_DTYPES).optional(),
    tokenizer_words: z.array(z.string().regex(/^[A-Za-z]+$/, 'must be letters only')).optional(),
  })
  .superRefine((j, ctx) => {
    if (j.slice_config.patch_size !== undefined && j.slice_config.patch_size !== j.vision_config.patch_size) {
      ctx.addIssue({ code: 'custom', path: ['slice_config', 'patch_size'], message: `${j.slice_config.patch_size} differs from vision_config.patch_size (${j.vision_config.patch_size})` });
    }
    if (j.vision_config.image_size % j.vision_config.patch_size) {
      ctx.addIssue({ code: 'custom', path: ['vision_config', 'image_size'], message: `${j.vision_config.image_size} is not a multiple of vision_config.patch_size (${j.vision_config.patch_size})` });
    }
    if (j.drop_vision_last_layer && j.vision_config.num_hidden_layers < 2) {
      ctx.addIssue({ code: 'custom', path: ['drop_vision_last_layer'], message: 'leaves a tower with no layers' });
    }
  })
  .transform((j, ctx): LlavaUHDConfig => {
    const v = j.vision_config;
    const k = j.insert_layer_id === undefined || j.insert_layer_id === -1 ? null : j.insert_layer_id;
    const c: LlavaUHDConfig = {
      vision_config: {
        hidden_size: v.hidden_size,
        intermediate_size: v.intermediate_size,
        num_hidden_layers: v.num_hidden_layers - (j.drop_vision_last_layer ? 1 : 0),
        num_attention_heads: v.num_attention_heads,
        patch_size: v.patch_size,
        num_channels: v.num_channels ?? 3,
        layer_norm_eps: v.layer_norm_eps ?? 1e-6,
        position_embedding_side: v.image_size / v.patch_size,
      },
      text_config: {
        vocab_size: j.vocab_size,
        hidden_size: j.hidden_size,
        intermediate_size: j.intermediate_size,
        num_hidden_layers: j.num_hidden_layers,
        num_attention_heads: j.num_attention_heads,
        num_key_value_heads: j.num_key_value_heads,
        ...(j.head_dim !== undefined && { head_dim: j.head_dim }),
        rms_norm_eps: j.rms_norm_eps ?? 1e-6,
        rope_theta: j.rope_theta ?? 1e6,
        tie_word_embeddings: j.tie_word_embeddings ?? false,
        ...(j.initializer_range !== undefined && { initializer_range: j.initializer_range }),
      },
      insert_layer_id: k,
      slice_config: { scale_resolution: j.slice_config.scale_resolution, max_slice_nums: j.slice_config.max_slice_nums, align_unit: v.patch_size * 4 },
      ...(j.tokenizer_words && { tokenizer_words: j.tokenizer_words }),
      ...(j.compressor && j.compressor !== 'win-attn-reused' && { compressor: j.compressor }),
    };
    // merger_times is kept only where it differs from what insert_layer_id implies
    if (j.merger_times !== undefined && j.merger_times !== connectorMergeRounds(c)) c.merger_times = j.merger_times;
    const at: Record<string, (string | number)[]> = {
      'vision_config.hidden_size': ['vision_config', 'hidden_size'],
      'text_config.num_key_value_heads': ['num_key_value_heads'],
      'text_config.hidden_size': ['hidden_size'],
      insert_layer_id: ['insert_layer_id'],
      merger_times: ['merger_times'],
      'slice_config.align_unit': ['vision_config', 'patch_size'],
      tokenizer_words: ['tokenizer_words'],
    };
    checkConsistency(c, ctx, (f) => at[f] ?? [f], '-1');
    return c;
  });

/** A config.json's format, told from its keys. */
export type ConfigFormat = 'uhd' | 'minicpmv';

/** What a config file holds: the model's config, the format it was in, its storage dtype if given. */
export interface ConfigFile {
  config: LlavaUHDConfig;
  format: ConfigFormat;
  /** `torch_dtype` of a MiniCPM-V config.json: how the weights are stored (compute stays float32). */
  torchDType?: TorchDType;
}

/** Reads parsed JSON in either format (told apart by its keys), naming `file` in every error. */
export function parseConfigJson(json: unknown, file: string): ConfigFile {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new Error(`${file}: the config must be a JSON object, got ${describeValue(json)}`);
  const j = json as Record<string, unknown>;
  const textConfig = j.text_config as Record<string, unknown> | undefined;
  if (j.model_type === 'minicpmv4_6' || (textConfig && typeof textConfig === 'object' && 'model_type' in textConfig)) {
    const family = textConfig && typeof textConfig === 'object' ? String(textConfig.model_type) : 'unknown';
    throw new Error(
      `${file}: a Hugging Face transformers config (model_type ${describeValue(j.model_type)}, text_config.model_type ${describeValue(family)}): ` +
        `its language model is another family than this project's Qwen3 decoder. Its vision tower, D and connector can be loaded into a model ` +
        `built from a config of this project (loadWeights with only: 'vision')`,
    );
  }
  if ('text_config' in j) return { config: validateConfig(j, file), format: 'uhd' };
  if ('vision_config' in j && 'hidden_size' in j) {
    const config = checkSchema(minicpmvSchema, j, file);
    const dtype = j.torch_dtype as TorchDType | undefined;
    return { config, format: 'minicpmv', ...(dtype && { torchDType: dtype }) };
  }
  throw new Error(
    `${file}: neither this project's config format (keys vision_config, text_config, insert_layer_id, slice_config) ` +
      `nor a MiniCPM-V config.json (the LLM's hidden_size etc. at the top level, plus vision_config and slice_config); its keys: ${Object.keys(j).slice(0, 12).join(', ')}`,
  );
}

/** A config as MiniCPM-V's config.json writes it (the release's format), for a checkpoint folder. */
export function toMiniCPMVConfig(c: LlavaUHDConfig, torchDType: TorchDType = 'float32'): Record<string, unknown> {
  const v = c.vision_config;
  const t = c.text_config;
  const side = v.position_embedding_side ?? 70;
  return {
    architectures: ['MiniCPMV'],
    model_type: 'minicpmv',
    hidden_size: t.hidden_size,
    intermediate_size: t.intermediate_size,
    num_hidden_layers: t.num_hidden_layers,
    num_attention_heads: t.num_attention_heads,
    num_key_value_heads: t.num_key_value_heads,
    head_dim: t.head_dim ?? t.hidden_size / t.num_attention_heads,
    rms_norm_eps: t.rms_norm_eps ?? 1e-6,
    rope_theta: t.rope_theta ?? 1e6,
    vocab_size: t.vocab_size,
    tie_word_embeddings: t.tie_word_embeddings ?? false,
    ...(t.initializer_range !== undefined && { initializer_range: t.initializer_range }),
    hidden_act: 'silu',
    attention_bias: false,
    torch_dtype: torchDType,
    vision_config: {
      model_type: 'siglip_vision_model',
      hidden_size: v.hidden_size,
      intermediate_size: v.intermediate_size,
      num_hidden_layers: v.num_hidden_layers,
      num_attention_heads: v.num_attention_heads,
      patch_size: v.patch_size,
      image_size: side * v.patch_size,
      num_channels: v.num_channels ?? 3,
      layer_norm_eps: v.layer_norm_eps ?? 1e-6,
      hidden_act: VISION_ACT,
    },
    slice_config: { model_type: 'minicpmv', max_slice_nums: c.slice_config.max_slice_nums, scale_resolution: c.slice_config.scale_resolution, patch_size: v.patch_size },
    insert_layer_id: c.insert_layer_id ?? -1,
    merger_times: connectorMergeRounds(c),
    drop_vision_last_layer: false,
    ...(c.tokenizer_words && { tokenizer_words: c.tokenizer_words }),
    ...(c.compressor && c.compressor !== 'win-attn-reused' && { compressor: c.compressor }),
  };
}

/**
 * A named config, a JSON file in either format, or a checkpoint folder (its config.json).
 * The slice_config's align_unit defaults to 4 x patch_size when the file gives none.
 */
export async function resolveConfig(nameOrPath: string): Promise<LlavaUHDConfig> {
  return (await readConfig(nameOrPath)).config;
}

/** resolveConfig with the format and storage dtype of a file. */
export async function readConfig(nameOrPath: string): Promise<ConfigFile> {
  if (Object.prototype.hasOwnProperty.call(CONFIGS, nameOrPath)) return { config: structuredClone(CONFIGS[nameOrPath]), format: 'uhd' };
  const { stat } = await import('node:fs/promises');
  const { join } = await import('node:path');
  let path = nameOrPath;
  try {
    if ((await stat(path)).isDirectory()) path = join(path, 'config.json');
    await stat(path);
  } catch {
    throw new Error(`config: '${nameOrPath}' is neither a named config (${Object.keys(CONFIGS).join(', ')}) nor a readable file or checkpoint folder`);
  }
  return parseConfigJson(await readJsonFile(path), path);
}

// ---- comparing two configs ------------------------------------------------------------------------

/** One architecture key on which two configs differ. */
export interface ConfigDifference {
  key: string;
  a: unknown;
  b: unknown;
}

/**
 * The keys that decide what weights mean, defaults filled in (head_dim, eps, rope_theta, the
 * position side, merge rounds). The slicing policy and initializer_range are left out: a model
 * may run under another slice budget than it was trained with, and init does not matter once
 * weights are loaded.
 */
function architectureOf(c: LlavaUHDConfig): Record<string, unknown> {
  const v = c.vision_config;
  const t = c.text_config;
  return {
    'vision_config.hidden_size': v.hidden_size,
    'vision_config.intermediate_size': v.intermediate_size,
    'vision_config.num_hidden_layers': v.num_hidden_layers,
    'vision_config.num_attention_heads': v.num_attention_heads,
    'vision_config.patch_size': v.patch_size,
    'vision_config.num_channels': v.num_channels ?? 3,
    'vision_config.layer_norm_eps': v.layer_norm_eps ?? 1e-6,
    'vision_config.position_embedding_side': v.position_embedding_side ?? 70,
    'text_config.vocab_size': t.vocab_size,
    'text_config.hidden_size': t.hidden_size,
    'text_config.intermediate_size': t.intermediate_size,
    'text_config.num_hidden_layers': t.num_hidden_layers,
    'text_config.num_attention_heads': t.num_attention_heads,
    'text_config.num_key_value_heads': t.num_key_value_heads,
    'text_config.head_dim': t.head_dim ?? t.hidden_size / t.num_attention_heads,
    'text_config.rms_norm_eps': t.rms_norm_eps ?? 1e-6,
    'text_config.rope_theta': t.rope_theta ?? 1e6,
    'text_config.tie_word_embeddings': t.tie_word_embeddings ?? false,
    insert_layer_id: c.insert_layer_id,
    merger_times: connectorMergeRounds(c),
    tokenizer_words: (c.tokenizer_words ?? []).join(','),
  };
}

/** Architecture keys on which `a` and `b` differ (empty: the same model). */
export function configDifferences(a: LlavaUHDConfig, b: LlavaUHDConfig): ConfigDifference[] {
  const x = architectureOf(a);
  const y = architectureOf(b);
  return Object.keys(x).filter((k) => x[k] !== y[k]).map((key) => ({ key, a: x[key], b: y[key] }));
}

/** `key is A in <aName>, B in <bName>` lines for a list of differences. */
export function describeDifferences(diffs: readonly ConfigDifference[], aName: string, bName: string): string {
  const show = (key: string, v: unknown) => (key === 'tokenizer_words' ? describeValue(String(v) === '' ? [] : String(v).split(',')) : describeValue(v));
  return diffs.map((d) => `${d.key} is ${show(d.key, d.a)} in ${aName}, ${show(d.key, d.b)} in ${bName}`).join('; ');
}
