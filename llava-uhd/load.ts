/** Building a ready model: config, tokenizer, weights (or an explicit random init), device. */
import { totalmem } from 'node:os';
import { openDevice } from '../backends/index.js';
import type { Device } from '../tensor/index.js';
import { folderTokenizer, readCheckpointFolder, type CheckpointFolder } from './checkpoint-folder.js';
import { configDifferences, connectorMergeRounds, describeDifferences, resolveConfig, type LlavaUHDConfig } from './config.js';
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
  // D: attention, linear_1 (4f x 4d), linear_2 (d x 4f), and the release's unused MLP copy (2df)
  const merger = c.insert_layer_id === null ? 0 : 4 * d * d + 16 * d * f + 4 * d * f + 2 * d * f;
  const rounds = connectorMergeRounds(c);
  const connector = rounds * 16 * d * d + (rounds - 1) * 4 * d * d + 4 * d * t.hidden_size;
  const hd = t.head_dim ?? t.hidden_size / t.num_attention_heads;
  const layer = t.hidden_size * hd * (2 * t.num_attention_heads + 2 * t.num_key_value_heads) + 3 * t.hidden_size * t.intermediate_size;
  const llm = t.vocab_size * t.hidden_size * (t.tie_word_embeddings ? 1 : 2) + t.num_hidden_layers * layer;
  return vit + merger + connector + llm;
}

export interface LoadModelOptions {
  /**
   * A named config, a config file, or a checkpoint folder. Default: the config the weights carry
   * (their folder's config.json, or the file's metadata); `tiny` when there are no weights.
   * When both are there they must agree on every architecture key.
   */
  config?: string;
  weights?: string;
  /** Allow running without weights (random initialisation): refused unless asked for. */
  randomInit?: boolean;
  device?: Device;
}

export interface LoadedModel {
  model: LlavaUHD;
  tok: Tokenizer;
  config: LlavaUHDConfig;
  device: Device;
  /**
   * What the checkpoint brought besides weights (absent with --random-init): its chat template
   * (Jinja source, from tokenizer_config.json or chat_template.jinja), generation_config.json,
   * the storage dtype (config.json's torch_dtype), the files read.
   */
  checkpoint?: CheckpointFolder;
}

export async function loadModel(opts: LoadModelOptions): Promise<LoadedModel> {
  if (!opts.weights && !opts.randomInit) {
    throw new Error('no --weights given: pass a safetensors file or folder, or --random-init to run an untrained model');
  }
  const folder = opts.weights ? await readCheckpointFolder(opts.weights) : undefined;
  let config: LlavaUHDConfig;
  if (opts.config) {
    config = await resolveConfig(opts.config);
    const diffs = folder?.config ? configDifferences(folder.config.config, config) : [];
    if (diffs.length) {
      throw new Error(
        `--config ${opts.config} does not describe --weights ${opts.weights}: ${describeDifferences(diffs, `the checkpoint (${folder!.config!.from})`, `--config ${opts.config}`)}. ` +
          'Leave out --config to use the checkpoint\'s own',
      );
    }
  } else if (folder) {
    if (!folder.config) {
      throw new Error(`--weights ${opts.weights} carries no config (no config.json beside it, no "config" in its metadata): pass --config`);
    }
    config = structuredClone(folder.config.config);
  } else {
    config = await resolveConfig('tiny');
  }
  const device = opts.device ?? 'cpu';
  const bytes = approxParameters(config) * 4;
  if (bytes > 0.8 * totalmem()) {
    throw new Error(`${opts.config ?? folder?.config?.from ?? 'config'}: about ${(bytes / 2 ** 30).toFixed(1)} GiB of float32 weights, more than this machine's ${(totalmem() / 2 ** 30).toFixed(0)} GiB allows`);
  }
  const tok = (folder && (await folderTokenizer(folder))) ?? (await tokenizerFor(config));
  if (tok.vocabSize > config.text_config.vocab_size) {
    throw new Error(`tokenizer${folder?.tokenizer ? ` ${folder.tokenizer.json}` : ''}: ${tok.vocabSize} ids, more than the model's vocab_size ${config.text_config.vocab_size}`);
  }
  await openDevice(device);
  const model = new LlavaUHD(config, { device });
  if (folder) {
    try {
      await loadWeights(model, folder.weights, { checkConfig: false });
    } catch (err) {
      model.dispose();
      throw err;
    }
  }
  return { model, tok, config, device, ...(folder && { checkpoint: folder }) };
}
