/** Building a ready model: config, tokenizer, weights (or an explicit random init), device. */
import { totalmem } from 'node:os';
import { openDevice } from '../backends/index.js';
import type { Device } from '../tensor/index.js';
import { resolveConfig, type LlavaUHDConfig } from './config.js';
import { LlavaUHD } from './model.js';
import { ByteTokenizer, Qwen3Tokenizer, type Tokenizer } from './tokenizer.js';
import { loadWeights } from './weights.js';

/** Qwen3's tokenizer for a Qwen3-sized vocabulary, the byte tokenizer for tiny models. */
export async function tokenizerFor(config: LlavaUHDConfig): Promise<Tokenizer> {
  if (config.text_config.vocab_size >= 151_685) return Qwen3Tokenizer.load();
  const byte = new ByteTokenizer(config.tokenizer_words ?? []);
  if (config.text_config.vocab_size >= byte.vocabSize) return byte;
  throw new Error(`tokenizer: vocab_size ${config.text_config.vocab_size} fits neither the byte tokenizer (${byte.vocabSize}) nor Qwen3's`);
}

/** Approximate parameter count (the matmul weights and embeddings; norms and biases are noise). */
export function approxParameters(c: LlavaUHDConfig): number {
  const v = c.vision_config;
  const t = c.text_config;
  const d = v.hidden_size;
  const f = v.intermediate_size;
  const side = v.position_embedding_side ?? 70;
  const vit = 3 * v.patch_size ** 2 * d + side * side * d + v.num_hidden_layers * (4 * d * d + 2 * d * f);
  const merger = c.insert_layer_id === null ? 0 : 4 * d * d + 16 * d * f + 4 * d * f;
  const rounds = c.insert_layer_id === null ? 2 : 1;
  const connector = rounds * 16 * d * d + (rounds - 1) * 4 * d * d + 4 * d * t.hidden_size;
  const hd = t.head_dim ?? t.hidden_size / t.num_attention_heads;
  const layer = t.hidden_size * hd * (2 * t.num_attention_heads + 2 * t.num_key_value_heads) + 3 * t.hidden_size * t.intermediate_size;
  const llm = t.vocab_size * t.hidden_size * (t.tie_word_embeddings ? 1 : 2) + t.num_hidden_layers * layer;
  return vit + merger + connector + llm;
}

export interface LoadModelOptions {
  config: string;
  weights?: string;
  /** Allow running without weights (random initialisation): refused unless asked for. */
  randomInit?: boolean;
  device?: Device;
}

export async function loadModel(opts: LoadModelOptions): Promise<{ model: LlavaUHD; tok: Tokenizer; config: LlavaUHDConfig; device: Device }> {
  const config = await resolveConfig(opts.config);
  if (!opts.weights && !opts.randomInit) {
    throw new Error('no --weights given: pass a safetensors file or folder, or --random-init to run an untrained model');
  }
  const device = opts.device ?? 'cpu';
  const bytes = approxParameters(config) * 4;
  if (bytes > 0.8 * totalmem()) {
    throw new Error(`${opts.config}: about ${(bytes / 2 ** 30).toFixed(1)} GiB of float32 weights, more than this machine's ${(totalmem() / 2 ** 30).toFixed(0)} GiB allows`);
  }
  await openDevice(device);
  const model = new LlavaUHD(config, { device });
  if (opts.weights) await loadWeights(model, opts.weights);
  return { model, tok: await tokenizerFor(config), config, device };
}
