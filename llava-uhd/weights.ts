/**
 * Model weights in safetensors, read and written in the release's layout, which is also the
 * model's own parameter names (the PyTorch model of THUMAI-Lab/LLaVA-UHD-v4, a MiniCPM-V-style
 * wrapper, vlu_minicpm_navit.py): `vpm.*` (SigLIP), `vit_merger.*` (D, with its unused
 * `layer_norm2` / `mlp` copies), `resampler.mlp.{i}.{pre_norm,mlp.0,mlp.2}.*` (the connector),
 * `llm.model.*` and `llm.lm_head.weight` (Hugging Face Qwen3 names).
 *
 * Also read, and mapped onto those names:
 * - the Hugging Face transformers layout of MiniCPM-V 4.6 (modeling_minicpmv4_6.py), the
 *   production model with the same compressor: `model.vision_tower.{embeddings,encoder,
 *   post_layernorm,vit_merger}.*`, `model.merger.mlp.{i}.{pre_norm,linear_1,linear_2}.*`. Its
 *   language model (`model.language_model.*`) is another family: refused by name, or skipped
 *   with `parts: 'vision'`.
 * - this project's first layout (`resampler.{norm,linear_1,linear_2}`, `resampler.merges.N.*`,
 *   no unused D copies), so checkpoints written before the rename still load.
 *
 * Loading checks everything the headers can tell (names, shapes, dtypes, byte ranges, the
 * config the checkpoint was saved with) before the first tensor is assigned: a failed load
 * leaves the model as it was. Tensors then stream in one at a time (bf16/f16 widened to
 * float32), so a large checkpoint never sits in memory twice.
 */
import { open, readdir, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import * as ag from '../autograd/index.js';
import { CHECKPOINT_FORMAT } from '../nn/checkpoint.js';
import type { LoadReport, Module } from '../nn/index.js';
import {
  readSafetensorsHeader, readShardIndex, saveSafetensors, SHARD_INDEX_FILE, streamSafetensors,
  type SafetensorsFloatDType, type SafetensorsHeader,
} from '../nn/safetensors.js';
import { assign, type Tensor } from '../tensor/index.js';
import { fmt } from '../tensor/shape.js';
import { configDifferences, describeDifferences, parseConfigJson, validateConfig, type LlavaUHDConfig } from './config.js';
import { LlavaUHD } from './model.js';
import { Compressor } from './compressor.js';
import { readJsonFile } from './schema.js';

// ---- where the weights are ------------------------------------------------------------------------

/** One safetensors file of a checkpoint and the tensor names taken from it. */
export interface WeightFile {
  path: string;
  header: SafetensorsHeader;
  /** Names this file contributes (for a shard: those the index assigns to it). */
  names: string[];
}

/** A located checkpoint: its files, in load order, with checked headers. */
export interface WeightSource {
  /** What was asked for (file, index or folder). */
  path: string;
  files: WeightFile[];
  /** The folder the checkpoint lives in (where config.json and tokenizer files would be). */
  dir: string;
  /** The index, for a sharded checkpoint. */
  index?: string;
}

/** File names a run folder of this project holds its final weights under, best first. */
const RUN_WEIGHTS = ['final.safetensors'];

/** A hint for a PyTorch pickle (the release's exporter writes `<name>_<step>.pt`). */
async function pickleHint(path: string): Promise<string | null> {
  let fh;
  try {
    fh = await open(path, 'r');
    const { buffer } = await fh.read(Buffer.alloc(4), 0, 4, 0);
    const zip = buffer[0] === 0x50 && buffer[1] === 0x4b && buffer[2] === 3 && buffer[3] === 4;
    const pickle = buffer[0] === 0x80 && buffer[1] >= 2 && buffer[1] <= 5;
    if (!zip && !pickle) return null;
  } catch {
    return null;
  } finally {
    await fh?.close();
  }
  return (
    `weights: ${path} is a PyTorch pickle (torch.save, as the release's exporter writes .pt files), not safetensors: convert it once with ` +
    `python -c "import torch; from safetensors.torch import save_file; sd = torch.load('${basename(path)}', map_location='cpu'); ` +
    `save_file({k: v.contiguous() for k, v in sd.items()}, 'model.safetensors', metadata={'format': 'pt'})"`
  );
}

async function singleFile(path: string, dir: string, asked = path): Promise<WeightSource> {
  let header: SafetensorsHeader;
  try {
    header = await readSafetensorsHeader(path);
  } catch (err) {
    const hint = await pickleHint(path);
    if (hint) throw new Error(hint);
    throw err;
  }
  return { path: asked, dir, files: [{ path, header, names: [...header.tensors.keys()] }] };
}

async function shardedFiles(indexPath: string, asked: string): Promise<WeightSource> {
  const index = await readShardIndex(indexPath);
  const byShard = new Map<string, string[]>();
  for (const [name, shard] of index.weightMap) {
    const names = byShard.get(shard);
    if (names) names.push(name);
    else byShard.set(shard, [name]);
  }
  const files: WeightFile[] = [];
  for (const [shard, names] of [...byShard].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    const header = await readSafetensorsHeader(shard);
    const absent = names.filter((n) => !header.tensors.has(n));
    if (absent.length) throw new Error(`weights: ${shard}: ${absent.length} tensor(s) listed in ${index.path} are not in this shard (first: ${absent[0]})`);
    files.push({ path: shard, header, names });
  }
  return { path: asked, dir: dirname(index.path), index: index.path, files };
}

/** Folders one level down that hold weights (for a run folder with one model per subfolder). */
async function subfoldersWithWeights(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    if (!e.isDirectory()) continue;
    const inner = await readdir(join(dir, e.name)).catch(() => [] as string[]);
    if (inner.some((f) => f.endsWith('.safetensors') || f === SHARD_INDEX_FILE)) out.push(`${e.name}/`);
  }
  return out.sort();
}

/**
 * Finds a checkpoint's weight files. A file is itself (or, ending in .index.json, a sharded
 * checkpoint's index); a folder is, in this order: `model.safetensors.index.json` + shards,
 * `model.safetensors` (a Hugging Face folder), `final.safetensors` (a run of `uhd start`), the
 * last `stage-<i>-<name>.safetensors` (a run of `uhd train`), or its only *.safetensors file.
 */
export async function locateWeights(path: string): Promise<WeightSource> {
  let info;
  try {
    info = await stat(path);
  } catch {
    throw new Error(`weights: ${path} does not exist`);
  }
  if (!info.isDirectory()) return path.endsWith('.index.json') ? shardedFiles(path, path) : singleFile(path, dirname(path));
  const entries = await readdir(path);
  if (entries.includes(SHARD_INDEX_FILE)) return shardedFiles(join(path, SHARD_INDEX_FILE), path);
  for (const name of ['model.safetensors', ...RUN_WEIGHTS]) if (entries.includes(name)) return singleFile(join(path, name), path, path);
  const stages = entries
    .map((f) => /^stage-(\d+)-.*\.safetensors$/.exec(f))
    .filter((m): m is RegExpExecArray => m !== null)
    .sort((a, b) => Number(b[1]) - Number(a[1]));
  if (stages.length) return singleFile(join(path, stages[0][0]), path, path);
  const tensors = entries.filter((f) => f.endsWith('.safetensors'));
  if (tensors.length === 1) return singleFile(join(path, tensors[0]), path, path);
  if (tensors.length > 1) throw new Error(`weights: ${path} holds ${tensors.length} safetensors files and no model.safetensors(.index.json): pass one of ${tensors.sort().join(', ')}`);
  const sub = await subfoldersWithWeights(path);
  if (sub.length) throw new Error(`weights: ${path} holds no weights itself; its subfolders ${sub.join(', ')} do (pass one of them, e.g. ${join(path, sub[0])})`);
  throw new Error(`weights: ${path} holds no model.safetensors, model.safetensors.index.json or other *.safetensors file`);
}

// ---- which layout -------------------------------------------------------------------------------

/** The name layouts a checkpoint can be in. */
export type WeightLayout = 'release' | 'uhd-v0' | 'minicpm-v-4.6-hf';

const HF_VISION = 'model.vision_tower.';
const HF_MERGER = 'model.merger.';
const HF_LLM = 'model.language_model.';

/** What a set of names is, when it is not a LLaVA-UHD v4 checkpoint (for the error). */
function identifyForeign(names: readonly string[]): string {
  const has = (p: string) => names.some((n) => n.startsWith(p));
  if (names.includes('resampler.query') || has('resampler.attn.')) {
    return "MiniCPM-V's perceiver resampler (resampler.query, resampler.attn.*: a fixed number of learned queries), not LLaVA-UHD v4's MLP merger (resampler.mlp.{i}.*)";
  }
  if (has('language_model.') || has('multi_modal_projector.')) return 'a LLaVA-style transformers checkpoint (language_model.*, multi_modal_projector.*)';
  if (has('vision_model.') && !has('model.layers.')) return 'a standalone SigLIP/CLIP vision checkpoint (vision_model.*)';
  if (has('model.layers.') || names.includes('model.embed_tokens.weight')) return 'a text-only language model (model.layers.*, model.embed_tokens.weight), with no vision tower';
  return `not a LLaVA-UHD v4 checkpoint (none of its ${names.length} tensors is under vpm., vit_merger., resampler. or llm.; first: ${names.slice(0, 3).join(', ')})`;
}

/** Tells the layout from the names; throws naming what the checkpoint is when it is none of them. */
export function detectLayout(names: readonly string[], metadata: Record<string, string>, where: string): WeightLayout {
  if (metadata.format === CHECKPOINT_FORMAT) {
    let step = '';
    let recipe = '';
    try {
      step = metadata.step ? `, step ${metadata.step}` : '';
      const extra = JSON.parse(metadata.extra ?? '{}') as { recipe?: unknown };
      recipe = typeof extra.recipe === 'string' ? ` of recipe ${extra.recipe}` : '';
    } catch {
      // the description is best-effort
    }
    throw new Error(
      `weights: ${where} is a training checkpoint (${CHECKPOINT_FORMAT}${step}${recipe}: model, optimizer state and RNG), not model weights: ` +
        `continue it with \`uhd train --resume --out ${dirname(where)}\`, or load the stage-<i>-<name>.safetensors weights written beside it`,
    );
  }
  const has = (p: string) => names.some((n) => n.startsWith(p));
  if (has(HF_VISION) || has(HF_MERGER) || has(HF_LLM)) return 'minicpm-v-4.6-hf';
  if (names.includes('resampler.norm.weight') || names.includes('resampler.linear_1.weight') || has('resampler.merges.')) return 'uhd-v0';
  if (names.includes('resampler.query') || has('resampler.attn.')) throw new Error(`weights: ${where}: ${identifyForeign(names)}`);
  if (has('vpm.') || has('vit_merger.') || has('resampler.mlp.') || has('llm.')) return 'release';
  throw new Error(`weights: ${where}: ${identifyForeign(names)}`);
}

/** A checkpoint name in our names; `llm` for a foreign language model's tensor; null if unmapped. */
type Mapped = { ours: string } | { foreignLLM: true } | null;

function mapName(layout: WeightLayout, name: string, rounds: number): Mapped {
  if (layout === 'release') return { ours: name };
  if (layout === 'uhd-v0') {
    const last = /^resampler\.(norm|linear_1|linear_2)\.(.+)$/.exec(name);
    const early = /^resampler\.merges\.(\d+)\.(norm|linear_1|linear_2)\.(.+)$/.exec(name);
    const part = (p: string) => (p === 'norm' ? 'pre_norm' : p === 'linear_1' ? 'mlp.0' : 'mlp.2');
    if (last) return { ours: `resampler.mlp.${rounds - 1}.${part(last[1])}.${last[2]}` };
    if (early) return { ours: `resampler.mlp.${early[1]}.${part(early[2])}.${early[3]}` };
    return { ours: name };
  }
  if (name.startsWith(HF_LLM) || name === 'lm_head.weight') return { foreignLLM: true };
  if (name.startsWith(`${HF_VISION}vit_merger.`)) return { ours: `vit_merger.${name.slice(HF_VISION.length + 'vit_merger.'.length)}` };
  if (name.startsWith(HF_VISION)) return { ours: `vpm.${name.slice(HF_VISION.length)}` };
  const m = /^model\.merger\.mlp\.(\d+)\.(pre_norm|linear_1|linear_2)\.(.+)$/.exec(name);
  if (m) return { ours: `resampler.mlp.${m[1]}.${m[2] === 'pre_norm' ? 'pre_norm' : m[2] === 'linear_1' ? 'mlp.0' : 'mlp.2'}.${m[3]}` };
  return null;
}

/** Connector rounds a checkpoint holds (for the old layout, whose last round had no index). */
function roundsIn(layout: WeightLayout, names: readonly string[]): number {
  if (layout !== 'uhd-v0') return 0;
  const early = new Set(names.map((n) => /^resampler\.merges\.(\d+)\./.exec(n)?.[1]).filter((x) => x !== undefined));
  return early.size + 1;
}

/** D's unused copies, absent from layouts other than the release's and filled from layer k. */
const isUnusedCopy = (n: string) => n.startsWith('vit_merger.layer_norm2.') || n.startsWith('vit_merger.mlp.');

// ---- the config a checkpoint was saved with ------------------------------------------------------

/** The config a checkpoint carries: its folder's config.json, else the `config` metadata. */
export async function checkpointConfig(source: WeightSource): Promise<{ config: LlavaUHDConfig; from: string } | null> {
  const json = join(source.dir, 'config.json');
  const beside = await stat(json).then((s) => s.isFile(), () => false);
  const first = source.files[0];
  const meta = first?.header.metadata.config;
  // a file named explicitly speaks for itself; a folder's (or index's) config.json for its weights
  const explicitFile = source.index === undefined && source.path === first?.path;
  const fromMetadata = () => {
    const where = `the "config" metadata of ${first.path}`;
    let parsed: unknown;
    try {
      parsed = JSON.parse(meta!);
    } catch (err) {
      throw new Error(`weights: ${where} is not valid JSON (${(err as Error).message})`);
    }
    return { config: validateConfig(parsed, where), from: where };
  };
  if (meta !== undefined && (explicitFile || !beside)) return fromMetadata();
  if (!beside) return null;
  const folder = { config: parseConfigJson(await readJsonFile(json), json).config, from: json };
  if (meta !== undefined) {
    const diffs = configDifferences(folder.config, fromMetadata().config);
    if (diffs.length) throw new Error(`weights: ${json} and the config stored in ${first.path} disagree: ${describeDifferences(diffs, 'config.json', 'the weights')}`);
  }
  return folder;
}

// ---- loading ----------------------------------------------------------------------------------------

export interface LoadWeightsOptions {
  /** Default true: any missing, unexpected or mismatched tensor throws (listing them all). */
  strict?: boolean;
  /** 'vision': the vision tower, D and the connector only; the LLM is left as it is. Default 'all'. */
  parts?: 'all' | 'vision';
  /** Default true: a config stored with the checkpoint must match the model's (LlavaUHD models). */
  checkConfig?: boolean;
}

export interface LoadWeightsReport extends LoadReport {
  layout: WeightLayout;
  /** The safetensors files read, in order. */
  files: string[];
}

interface Planned {
  file: string;
  name: string;
  ours: string;
}

const FLOAT_DTYPES = new Set(['F32', 'F16', 'BF16', 'F64']);

/** Reads one tensor of a file (CPU). */
async function readOne(file: string, name: string): Promise<Tensor> {
  for await (const [, t] of streamSafetensors(file, { filter: (n) => n === name })) return t;
  throw new Error(`weights: ${file}: tensor '${name}' vanished between reading the header and the data`);
}

/** What a failed strict load most likely means, from the shape of its problems (or ''). */
function diagnose(model: Module, missing: string[], unexpected: string[]): string {
  if (!(model instanceof LlavaUHD)) return '';
  const withD = model.config.insert_layer_id !== null;
  const missingD = missing.some((n) => n.startsWith('vit_merger.'));
  const extraD = unexpected.some((n) => n.startsWith('vit_merger.'));
  if (withD && missingD) return '\n  (the checkpoint has no D (vit_merger): it looks like the post-ViT baseline; load it with its own config, e.g. --config tiny-baseline, or without --config when it carries one)';
  if (!withD && extraD) return '\n  (the checkpoint has D (vit_merger) but the model is the post-ViT baseline: load it with its own config)';
  return '';
}

/**
 * Loads a checkpoint (file, index or folder; see `locateWeights`) into `model` in place. Every
 * check runs before the first tensor is assigned; with strict (default) any problem throws,
 * listing them all, and the model is left untouched.
 */
export async function loadWeights(model: Module, pathOrSource: string | WeightSource, opts: LoadWeightsOptions = {}): Promise<LoadWeightsReport> {
  const strict = opts.strict ?? true;
  const parts = opts.parts ?? 'all';
  const source = typeof pathOrSource === 'string' ? await locateWeights(pathOrSource) : pathOrSource;
  const where = source.index ?? (source.files.length === 1 ? source.files[0].path : source.path);
  const names = source.files.flatMap((f) => f.names);
  const layout = detectLayout(names, source.files[0]?.header.metadata ?? {}, where);

  if (model instanceof LlavaUHD && (opts.checkConfig ?? true)) {
    const saved = await checkpointConfig(source);
    const diffs = saved ? configDifferences(saved.config, model.config) : [];
    if (saved && diffs.length) {
      throw new Error(`weights: ${where}: the checkpoint's config differs from the model's: ${describeDifferences(diffs, `the checkpoint (${saved.from})`, 'the model')}`);
    }
  }

  const own = model.stateDict();
  const device = own.values().next().value?.device ?? 'cpu';
  const rounds = roundsIn(layout, names);
  const skip = (ours: string) => parts === 'vision' && ours.startsWith('llm.');
  const plan: Planned[] = [];
  const planned = new Map<string, string>();
  const report: LoadWeightsReport = { missing: [], unexpected: [], mismatched: [], layout, files: source.files.map((f) => f.path) };
  const dtypeProblems: string[] = [];
  let foreignLLM = 0;
  let tiedHead: { file: string; name: string } | null = null;
  for (const f of source.files) {
    for (const name of f.names) {
      const mapped = mapName(layout, name, rounds);
      if (mapped && 'foreignLLM' in mapped) {
        foreignLLM++;
        continue;
      }
      const shown = mapped && mapped.ours !== name ? `${name} (as ${mapped.ours})` : name;
      if (!mapped) {
        report.unexpected.push(shown);
        continue;
      }
      if (skip(mapped.ours)) continue;
      const mine = own.get(mapped.ours);
      if (!mine) {
        // a tied LM head saved anyway (torch.save keeps both keys): checked equal to the embedding below
        if (mapped.ours === 'llm.lm_head.weight' && own.has('llm.model.embed_tokens.weight')) tiedHead = { file: f.path, name };
        else report.unexpected.push(shown);
        continue;
      }
      const entry = f.header.tensors.get(name)!;
      if (planned.has(mapped.ours)) {
        report.mismatched.push(`${mapped.ours}: given twice, as ${planned.get(mapped.ours)} and ${name}`);
        continue;
      }
      if (mine.rank !== entry.shape.length || mine.shape.some((s, i) => s !== entry.shape[i])) {
        report.mismatched.push(`${mapped.ours}: expected ${fmt(mine.shape)}, got ${fmt(entry.shape)}${mapped.ours !== name ? ` (${name})` : ''}`);
        continue;
      }
      if (mine.dtype !== 'int32' && !FLOAT_DTYPES.has(entry.dtype)) {
        dtypeProblems.push(`${mapped.ours}: stored as ${entry.dtype}, expected a float type (F32, BF16, F16, F64)`);
        continue;
      }
      planned.set(mapped.ours, name);
      plan.push({ file: f.path, name, ours: mapped.ours });
    }
  }
  if (foreignLLM && parts !== 'vision') {
    throw new Error(
      `weights: ${where}: MiniCPM-V 4.6's transformers layout, whose language model (${foreignLLM} tensors under ${HF_LLM}*, lm_head.weight) ` +
        `is another family (MiniCPM-V 4.6 ships a Qwen3.5 text model) than this project's Qwen3 decoder. Its vision tower, D and connector ` +
        `map onto this model: load them with loadWeights(model, path, { parts: 'vision' })`,
    );
  }
  const derived = layout !== 'release';
  const mismatchedNames = new Set(report.mismatched.map((m) => m.slice(0, m.indexOf(':'))));
  report.missing = [...own.keys()].filter((k) => !planned.has(k) && !mismatchedNames.has(k) && !skip(k) && !(derived && isUnusedCopy(k)));
  const groups: [string, string[]][] = [['missing', report.missing], ['unexpected', report.unexpected], ['shape mismatch', report.mismatched], ['dtype', dtypeProblems]];
  const count = groups.reduce((sum, [, g]) => sum + g.length, 0);
  if ((strict && count) || dtypeProblems.length) {
    // up to 8 of each kind, so that one long list does not hide the others
    const lines = groups.flatMap(([kind, g]) => [...g.slice(0, 8).map((k) => `${kind} ${k}`), ...(g.length > 8 ? [`... and ${g.length - 8} more ${kind}`] : [])]);
    throw new Error(`weights: ${where} (${layout} layout): ${count} problem(s), nothing loaded:\n  ${lines.join('\n  ')}${diagnose(model, report.missing, report.unexpected)}`);
  }
  if (tiedHead && planned.has('llm.model.embed_tokens.weight')) {
    const embedName = planned.get('llm.model.embed_tokens.weight')!;
    const embedFile = plan.find((p) => p.ours === 'llm.model.embed_tokens.weight')!.file;
    const [head, embed] = [await readOne(tiedHead.file, tiedHead.name), await readOne(embedFile, embedName)];
    const [a, b] = [await head.data(), await embed.data()];
    head.dispose();
    embed.dispose();
    const same = a.length === b.length && a.every((x, i) => Object.is(x, b[i]));
    if (!same) {
      throw new Error(`weights: ${where}: the model ties its LM head to the embedding (tie_word_embeddings true), but the checkpoint's ${tiedHead.name} differs from ${embedName}: it needs tie_word_embeddings false`);
    }
  }

  // every check passed: assign, file by file, one tensor at a time
  let assigned = 0;
  try {
    for (const f of source.files) {
      const mine = new Map(plan.filter((p) => p.file === f.path).map((p) => [p.name, own.get(p.ours)!]));
      if (mine.size === 0) continue;
      for await (const [name, t] of streamSafetensors(f.path, { device, filter: (n) => mine.has(n) })) {
        const target = mine.get(name)!;
        ag.noGrad(() => {
          const src = t.dtype === target.dtype ? t : t.cast(target.dtype);
          assign(target, src);
          if (src !== t) src.dispose();
        });
        t.dispose();
        assigned++;
      }
    }
  } catch (err) {
    throw new Error(`weights: ${where}: reading failed after ${assigned} of ${plan.length} tensors were assigned; the model is partly loaded, discard it (${(err as Error).message})`, { cause: err });
  }
  if (derived && model instanceof LlavaUHD && model.vit_merger instanceof Compressor && model.config.insert_layer_id !== null && !planned.has('vit_merger.mlp.fc1.weight')) {
    model.vit_merger.copyUnusedFromLayer(model.vpm.encoder.layers[model.config.insert_layer_id]);
  }
  return report;
}

// ---- saving ----------------------------------------------------------------------------------------

export interface SaveWeightsOptions {
  /** On-disk float format: F32 (default), BF16 (the release's storage) or F16. */
  dtype?: SafetensorsFloatDType;
}

/**
 * Saves the model's weights to one safetensors file in the release layout, with `__metadata__`
 * `{"format": "pt"}` (which transformers' loader requires) and, when given, the config as JSON
 * under "config" (so the file loads without a config passed beside it).
 */
export async function saveWeights(model: Module, path: string, config?: LlavaUHDConfig, opts: SaveWeightsOptions = {}): Promise<void> {
  const metadata: Record<string, string> = { format: 'pt' };
  if (config !== undefined) metadata.config = JSON.stringify(config);
  await saveSafetensors(path, model.stateDict(), { metadata, dtype: opts.dtype });
}
