/**
 * Checkpoint folders the way the Hugging Face ecosystem ships them, read and written:
 *
 *   config.json                      MiniCPM-V style (the release's): Qwen3 keys at the top level,
 *                                    vision_config, slice_config, insert_layer_id, merger_times,
 *                                    torch_dtype (how the weights are stored)
 *   model.safetensors                or model.safetensors.index.json + model-0000i-of-0000n shards
 *   tokenizer.json, tokenizer_config.json   optional: the tokenizer and its chat_template
 *   chat_template.jinja              optional (newer transformers put the template here)
 *   generation_config.json           optional: default generation settings
 *
 * Reading also takes this project's run folders (`uhd start`, `uhd train`: see locateWeights)
 * and lone safetensors files whose metadata carries the config.
 */
import { copyFile, mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import type { Module } from '../nn/index.js';
import { saveSafetensors, SHARD_INDEX_FILE, type SafetensorsFloatDType } from '../nn/safetensors.js';
import type { Tensor } from '../tensor/index.js';
import { readConfig, toMiniCPMVConfig, type LlavaUHDConfig, type TorchDType } from './config.js';
import { FileTokenizer } from './hf-tokenizer.js';
import { checkSchema, readJsonFile, MAX_JSON_FILE_BYTES } from './schema.js';
import { checkpointConfig, detectLayout, locateWeights, type WeightSource } from './weights.js';

// ---- reading -------------------------------------------------------------------------------------

/** generation_config.json: the keys checked here are typed; any others pass through. */
const generationSchema = z.looseObject({
  max_new_tokens: z.number().int().positive().optional(),
  max_length: z.number().int().positive().optional(),
  do_sample: z.boolean().optional(),
  temperature: z.number().min(0).optional(),
  top_p: z.number().gt(0).max(1).optional(),
  top_k: z.number().int().min(0).optional(),
  repetition_penalty: z.number().positive().optional(),
  num_beams: z.number().int().positive().optional(),
  bos_token_id: z.number().int().min(0).optional(),
  eos_token_id: z.union([z.number().int().min(0), z.array(z.number().int().min(0))]).optional(),
  pad_token_id: z.number().int().min(0).optional(),
});
export type GenerationConfig = z.output<typeof generationSchema>;

/** tokenizer_config.json: only chat_template is read (a string, or a list of named templates). */
const tokenizerConfigSchema = z.looseObject({
  chat_template: z.union([z.string(), z.array(z.looseObject({ name: z.string(), template: z.string() }))]).optional(),
});

/** What a checkpoint brings besides its weights. */
export interface CheckpointFolder {
  weights: WeightSource;
  /** The config it carries (config.json, else the weights' metadata), and where it came from. */
  config?: { config: LlavaUHDConfig; from: string; torchDType?: TorchDType };
  /** tokenizer.json (and tokenizer_config.json) when the folder has them. */
  tokenizer?: { json: string; config?: string };
  /** The chat template (Jinja source) from chat_template.jinja or tokenizer_config.json. */
  chatTemplate?: string;
  /** generation_config.json, parsed and checked. */
  generationConfig?: GenerationConfig;
}

const exists = (p: string) => stat(p).then((s) => s.isFile(), () => false);

/** Reads a checkpoint (folder, index or file): weights located and checked, the rest if present. */
export async function readCheckpointFolder(path: string): Promise<CheckpointFolder> {
  const weights = await locateWeights(path);
  // what the weights are (a training checkpoint, another model) is told before anything else
  detectLayout(weights.files.flatMap((f) => f.names), weights.files[0]?.header.metadata ?? {}, weights.index ?? weights.files[0]?.path ?? path);
  const dir = weights.dir;
  const out: CheckpointFolder = { weights };
  const saved = await checkpointConfig(weights);
  if (saved) {
    const torchDType = saved.from.endsWith('config.json') ? (await readConfig(saved.from)).torchDType : undefined;
    out.config = { ...saved, ...(torchDType && { torchDType }) };
  }
  const tokJson = join(dir, 'tokenizer.json');
  const tokConfig = join(dir, 'tokenizer_config.json');
  let tokenizerConfig: z.output<typeof tokenizerConfigSchema> | undefined;
  if (await exists(tokConfig)) tokenizerConfig = checkSchema(tokenizerConfigSchema, await readJsonFile(tokConfig), tokConfig);
  if (await exists(tokJson)) out.tokenizer = { json: tokJson, ...(tokenizerConfig && { config: tokConfig }) };
  const jinja = join(dir, 'chat_template.jinja');
  if (await exists(jinja)) {
    if ((await stat(jinja)).size > MAX_JSON_FILE_BYTES) throw new Error(`${jinja}: larger than ${MAX_JSON_FILE_BYTES} bytes`);
    out.chatTemplate = await readFile(jinja, 'utf8');
  } else if (tokenizerConfig?.chat_template !== undefined) {
    const t = tokenizerConfig.chat_template;
    if (typeof t === 'string') out.chatTemplate = t;
    else {
      const named = t.find((x) => x.name === 'default') ?? t[0];
      if (named) out.chatTemplate = named.template;
    }
  }
  const gen = join(dir, 'generation_config.json');
  if (await exists(gen)) out.generationConfig = checkSchema(generationSchema, await readJsonFile(gen), gen);
  return out;
}

/** The folder's tokenizer (tokenizer.json with tokenizer_config.json), or null without one. */
export async function folderTokenizer(folder: CheckpointFolder): Promise<FileTokenizer | null> {
  if (!folder.tokenizer) return null;
  const json = await readJsonFile(folder.tokenizer.json);
  const config = folder.tokenizer.config ? ((await readJsonFile(folder.tokenizer.config)) as Record<string, unknown>) : {};
  return new FileTokenizer(json, config, folder.tokenizer.json);
}

// ---- writing -------------------------------------------------------------------------------------

export interface SaveFolderOptions {
  /** On-disk float format: F32 (default), BF16 (as the release ships) or F16. */
  dtype?: SafetensorsFloatDType;
  /** Weights larger than this (bytes, on disk) are split into shards with an index. Default 5 GB, as transformers. */
  maxShardBytes?: number;
  /** Copies tokenizer.json, tokenizer_config.json and chat_template.jinja from this folder, where present. */
  tokenizerFrom?: string;
  /** Written as generation_config.json. */
  generationConfig?: GenerationConfig;
}

const TORCH_NAME: Record<SafetensorsFloatDType, TorchDType> = { F32: 'float32', BF16: 'bfloat16', F16: 'float16' };

/** JSON written atomically (temporary file, then rename). */
async function writeJsonAtomic(path: string, value: unknown): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    await writeFile(tmp, `${JSON.stringify(value, null, 2)}\n`);
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

/**
 * Writes `model` as a checkpoint folder (created if needed): config.json (MiniCPM-V style, with
 * torch_dtype the storage format), the weights in the release layout, as model.safetensors or,
 * above `maxShardBytes`, as shards plus model.safetensors.index.json, each with `__metadata__`
 * `{"format": "pt"}` and the config. Files of an earlier save that no longer belong (an index
 * beside a now single file, surplus shards) are removed after the new ones are complete.
 */
export async function saveCheckpointFolder(model: Module & { config: LlavaUHDConfig }, dir: string, opts: SaveFolderOptions = {}): Promise<{ files: string[] }> {
  const dtype = opts.dtype ?? 'F32';
  const maxShard = opts.maxShardBytes ?? 5e9;
  if (!(maxShard > 0)) throw new Error(`saveCheckpointFolder: maxShardBytes must be positive, got ${maxShard}`);
  await mkdir(dir, { recursive: true });
  const sd = [...model.stateDict()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const bytesOf = (t: Tensor) => t.size * (t.dtype === 'int32' || dtype === 'F32' ? 4 : 2);
  const shards: [string, Tensor][][] = [[]];
  let used = 0;
  for (const entry of sd) {
    const b = bytesOf(entry[1]);
    if (used > 0 && used + b > maxShard) {
      shards.push([]);
      used = 0;
    }
    shards[shards.length - 1].push(entry);
    used += b;
  }
  const metadata = { format: 'pt', config: JSON.stringify(model.config) };
  const written: string[] = [];
  const n = shards.length;
  const shardName = (i: number) => `model-${String(i + 1).padStart(5, '0')}-of-${String(n).padStart(5, '0')}.safetensors`;
  await writeJsonAtomic(join(dir, 'config.json'), toMiniCPMVConfig(model.config, TORCH_NAME[dtype]));
  written.push('config.json');
  if (n === 1) {
    await saveSafetensors(join(dir, 'model.safetensors'), new Map(shards[0]), { metadata, dtype });
    written.push('model.safetensors');
  } else {
    const weightMap: Record<string, string> = {};
    let total = 0;
    for (const [i, part] of shards.entries()) {
      await saveSafetensors(join(dir, shardName(i)), new Map(part), { metadata, dtype });
      written.push(shardName(i));
      for (const [k, t] of part) {
        weightMap[k] = shardName(i);
        total += bytesOf(t);
      }
    }
    await writeJsonAtomic(join(dir, SHARD_INDEX_FILE), { metadata: { total_size: total }, weight_map: weightMap });
    written.push(SHARD_INDEX_FILE);
  }
  if (opts.tokenizerFrom) {
    for (const f of ['tokenizer.json', 'tokenizer_config.json', 'chat_template.jinja']) {
      const src = join(opts.tokenizerFrom, f);
      if ((await exists(src)) && src !== join(dir, f)) {
        await copyFile(src, join(dir, f));
        written.push(f);
      }
    }
  }
  if (opts.generationConfig) {
    checkSchema(generationSchema, opts.generationConfig, 'generationConfig');
    await writeJsonAtomic(join(dir, 'generation_config.json'), opts.generationConfig);
    written.push('generation_config.json');
  }
  // what an earlier save left that this one does not use
  for (const f of await readdir(dir)) {
    const stale = (f === 'model.safetensors' && n > 1) || (f === SHARD_INDEX_FILE && n === 1) || (/^model-\d{5}-of-\d{5}\.safetensors$/.test(f) && !written.includes(f));
    if (stale) await rm(join(dir, f), { force: true });
  }
  return { files: written };
}
