/**
 * How much device memory LLaVA-UHD v4 needs, for inference and for each training stage of a
 * recipe, and whether that fits a given GPU (`uhd info --model llava-uhd-v4 --dtype bf16
 * --gpu-memory h200`). An estimate from the config, no allocation:
 *
 *   - parameters, counted exactly per module (the same tensors nn/ and llava-uhd/ create;
 *     tests/llava-uhd/memory-estimate.test.ts checks the counts against real models);
 *   - weights: matrices in the weight dtype, vectors (biases, norms) in float32 (as
 *     nn/half-weights.ts loads them); trainable parameters in float32 with a float32 gradient
 *     and AdamW's two float32 moments (16 bytes each), frozen ones in the weight dtype;
 *   - activations kept for backward (float32), per token and layer from the tensors each
 *     layer's backward saves (counted in `savedPerToken*` below), for a micro-batch of the
 *     stage: all layers without gradient checkpointing; with it, each layer's input plus one
 *     layer's working set. Attention is flash-style (no S x S score matrix is kept);
 *   - working memory that is not saved: the LM head's logits (tokens x vocab, float32, and
 *     their gradient in training) and the KV cache at inference.
 *
 * Real use adds the allocator's rounding (size classes up to 25%), the pool holding freed
 * buffers, and fragmentation: the verdict keeps a 10% margin.
 */
import type { DecoderConfig } from '../nn/transformer.js';
import type { LlavaUHDConfig, VisionConfig } from './config.js';
import type { Recipe, StageSpec } from './train.js';
import { MODULES, type ModuleName } from './train.js';

/** Parameters per trainable module group (the recipe's names), split into matrices and vectors. */
export interface ParameterCounts {
  /** Elements in tensors of rank >= 2 and in vectors, per module. */
  matrices: Record<ModuleName, number>;
  vectors: Record<ModuleName, number>;
  total: number;
}

/** Bytes per element of a weight dtype. */
export const WEIGHT_BYTES = { float32: 4, bfloat16: 2, float16: 2 } as const;
export type WeightDType = keyof typeof WEIGHT_BYTES;

const GiB = 2 ** 30;

/** Known cards (memory as the driver reports it, rounded down), for `--gpu-memory <name>`. */
export const GPUS: Record<string, number> = {
  h200: 139 * GiB, // NVIDIA H200: 141 GB (143771 MiB reported, ~139 GiB usable)
  h100: 79 * GiB,
  'a100-80gb': 79 * GiB,
  'a100-40gb': 39 * GiB,
  l40s: 44 * GiB,
  'rtx-4090': 23 * GiB,
  'rtx-3090': 23 * GiB,
};

/** "80GiB", "141GB", "24G", "h200" -> bytes. */
export function parseGpuMemory(spec: string): number {
  const known = GPUS[spec.toLowerCase()];
  if (known) return known;
  const m = /^(\d+(?:\.\d+)?)\s*(GiB|GB|G|MiB|MB|M|TiB|TB|T)?$/i.exec(spec.trim());
  if (!m) throw new Error(`--gpu-memory: '${spec}' is neither a size (80GiB, 141GB) nor a known card (${Object.keys(GPUS).join(', ')})`);
  const unit = (m[2] ?? 'GiB').toLowerCase();
  const scale: Record<string, number> = { gib: GiB, g: GiB, gb: 1e9, mib: 2 ** 20, m: 2 ** 20, mb: 1e6, tib: 2 ** 40, t: 2 ** 40, tb: 1e12 };
  return Number(m[1]) * scale[unit];
}

// ---- parameters -------------------------------------------------------------------------------

function linear(i: number, o: number, bias = true): [number, number] {
  return [i * o, bias ? o : 0];
}
function sum(...parts: [number, number][]): [number, number] {
  return parts.reduce(([m, v], [a, b]) => [m + a, v + b], [0, 0]);
}
const layerNorm = (d: number): [number, number] => [0, 2 * d];
const rmsNorm = (d: number): [number, number] => [0, d];

/** One SigLIP encoder layer: LN, attention (q, k, v, out with biases), LN, GELU MLP. */
function vitLayer(v: VisionConfig): [number, number] {
  const d = v.hidden_size;
  return sum(layerNorm(d), linear(d, d), linear(d, d), linear(d, d), linear(d, d), layerNorm(d), linear(d, v.intermediate_size), linear(v.intermediate_size, d));
}

/** One Qwen3 decoder layer: RMSNorm, attention (no biases, q/k norms), RMSNorm, SwiGLU. */
function llmLayer(t: DecoderConfig): [number, number] {
  const h = t.hidden_size;
  const hd = t.head_dim ?? h / t.num_attention_heads;
  const q = t.num_attention_heads * hd;
  const kv = t.num_key_value_heads * hd;
  return sum(rmsNorm(h), linear(h, q, false), linear(h, kv, false), linear(h, kv, false), linear(q, h, false), rmsNorm(hd), rmsNorm(hd),
    rmsNorm(h), linear(h, t.intermediate_size, false), linear(h, t.intermediate_size, false), linear(t.intermediate_size, h, false));
}

/** Exact parameter counts of a config, by the recipe's module names. */
export function countParameters(c: LlavaUHDConfig): ParameterCounts {
  const v = c.vision_config;
  const t = c.text_config;
  const d = v.hidden_size;
  const f = v.intermediate_size;
  const side = v.position_embedding_side ?? 70;
  const C = v.num_channels ?? 3;
  const vit = sum(linear(C * v.patch_size ** 2, d), ...Array.from({ length: v.num_hidden_layers }, () => vitLayer(v)), layerNorm(d));
  const position: [number, number] = [side * side * d, 0];
  // D (vit_merger): LN, window attention, pre_norm over 4d, MLP 4d -> 4f -> d, and the release's
  // copies of layer k's layer_norm2 and MLP (unused in forward, but held and saved)
  const compressor = c.insert_layer_id === null
    ? [0, 0] as [number, number]
    : sum(layerNorm(d), linear(d, d), linear(d, d), linear(d, d), linear(d, d), layerNorm(4 * d), linear(4 * d, 4 * f), linear(4 * f, d),
      layerNorm(d), linear(d, f), linear(f, d));
  // connector (resampler): 2x2 merge rounds of LN(4d), 4d -> 4d, 4d -> d (the last one -> LLM width)
  const rounds = c.insert_layer_id === null ? 2 : 1;
  const round = (out: number) => sum(layerNorm(4 * d), linear(4 * d, 4 * d), linear(4 * d, out));
  const connector = sum(...Array.from({ length: rounds - 1 }, () => round(d)), round(t.hidden_size));
  const llm = sum([t.vocab_size * t.hidden_size * (t.tie_word_embeddings ? 1 : 2), 0], ...Array.from({ length: t.num_hidden_layers }, () => llmLayer(t)), rmsNorm(t.hidden_size));
  const matrices = { vit: vit[0], vit_position_embedding: position[0], compressor: compressor[0], connector: connector[0], llm: llm[0] };
  const vectors = { vit: vit[1], vit_position_embedding: 0, compressor: compressor[1], connector: connector[1], llm: llm[1] };
  const total = Object.values(matrices).reduce((a, b) => a + b, 0) + Object.values(vectors).reduce((a, b) => a + b, 0);
  return { matrices, vectors, total };
}

// ---- activations ------------------------------------------------------------------------------

/** float32 values one ViT layer keeps per token for backward (inputs of LN, projections, GELU...). */
export function savedPerTokenVit(v: VisionConfig): number {
  const d = v.hidden_size;
  // LN1 in, LN1 out (q/k/v input), q, k, v, attention out (out_proj input), LN2 in, LN2 out,
  // fc1 pre-activation and GELU out (fc2 input)
  return 9 * d + 2 * v.intermediate_size;
}

/** float32 values one LLM layer keeps per token for backward. */
export function savedPerTokenLlm(t: DecoderConfig): number {
  const h = t.hidden_size;
  const hd = t.head_dim ?? h / t.num_attention_heads;
  const q = t.num_attention_heads * hd;
  const kv = t.num_key_value_heads * hd;
  // norm in/out x2, q/k before and after their norms and RoPE, v, attention out, gate, up,
  // silu(gate), their product (down's input)
  return 4 * h + 3 * (q + kv) + kv + q + 4 * t.intermediate_size;
}

/** Tokens one micro-batch of a stage sends through the ViT and the LLM. */
export interface StageTokens {
  /** ViT tokens before D (all views of all samples). */
  vit: number;
  llm: number;
}

/** Views per sample: the thumbnail plus up to `max_slices` slices (stage 1: the thumbnail). */
export function stageTokens(c: LlavaUHDConfig, s: Pick<StageSpec, 'max_slices' | 'batch_size'>, textTokens = 256): StageTokens {
  const S = c.slice_config.scale_resolution;
  const patches = (S / c.vision_config.patch_size) ** 2; // a view around S x S
  const views = s.max_slices <= 1 ? 1 : 1 + s.max_slices;
  const perView = patches / 16; // D (or the baseline's two merges) and the connector: 16x fewer
  return { vit: s.batch_size * views * patches, llm: s.batch_size * (views * perView + textTokens) };
}

// ---- the estimate -----------------------------------------------------------------------------

export interface MemoryLine {
  what: string;
  bytes: number;
}

export interface MemoryScenario {
  name: string;
  /** What fills the memory, largest first. */
  lines: MemoryLine[];
  total: number;
  /** With gradient checkpointing (training stages only): the same but activations recomputed per layer. */
  checkpointed?: { lines: MemoryLine[]; total: number };
}

export interface MemoryEstimate {
  model: string;
  dtype: WeightDType;
  parameters: ParameterCounts;
  inference: MemoryScenario;
  stages: MemoryScenario[];
  /** When a GPU size was given: what fits (with a 10% margin). */
  gpu?: { bytes: number; inference: boolean; stages: { name: string; fits: boolean; fitsCheckpointed: boolean }[] };
}

export interface EstimateOptions {
  dtype: WeightDType;
  recipe?: Recipe;
  /** Text tokens per sample besides the visual ones (default 256). */
  textTokens?: number;
  /** Context of the inference scenario: one image at max slices plus this many tokens (default 1024 generated + prompt). */
  inferenceContext?: number;
  gpuBytes?: number;
  modelName?: string;
}

const total = (lines: MemoryLine[]) => lines.reduce((n, l) => n + l.bytes, 0);
const sorted = (lines: MemoryLine[]) => lines.filter((l) => l.bytes > 0).sort((a, b) => b.bytes - a.bytes);

export function estimateMemory(c: LlavaUHDConfig, opts: EstimateOptions): MemoryEstimate {
  const p = countParameters(c);
  const wb = WEIGHT_BYTES[opts.dtype];
  const names = Object.keys(MODULES) as ModuleName[];
  const weightsBytes = (m: ModuleName) => p.matrices[m] * wb + p.vectors[m] * 4;
  const t = c.text_config;
  const v = c.vision_config;
  const hd = t.head_dim ?? t.hidden_size / t.num_attention_heads;
  const k = c.insert_layer_id;

  // inference: weights, one image at max slices, its prefill, a KV cache
  const inf = stageTokens(c, { max_slices: c.slice_config.max_slice_nums, batch_size: 1 }, opts.textTokens ?? 256);
  const context = inf.llm + (opts.inferenceContext ?? 1024);
  const vitWorking = inf.vit * (4 * v.hidden_size + 2 * v.intermediate_size) * 4; // a layer's live tensors
  const inference: MemoryScenario = {
    name: 'inference (one image, max slices)',
    lines: sorted([
      ...names.map((m) => ({ what: `weights: ${m} (${opts.dtype})`, bytes: weightsBytes(m) })),
      { what: `KV cache: ${context} tokens x ${t.num_hidden_layers} layers (float32)`, bytes: context * t.num_hidden_layers * 2 * t.num_key_value_heads * hd * 4 },
      { what: `logits of the prefill: ${inf.llm} tokens x ${t.vocab_size}`, bytes: inf.llm * t.vocab_size * 4 },
      { what: `ViT working set: ${inf.vit} tokens`, bytes: vitWorking },
      { what: `LLM working set: ${inf.llm} tokens`, bytes: inf.llm * (3 * t.hidden_size + 3 * t.intermediate_size) * 4 },
    ]),
    total: 0,
  };
  inference.total = total(inference.lines);

  const stages = (opts.recipe?.stages ?? []).map((s): MemoryScenario => {
    // 'vit' covers every vpm.* tensor, the position embedding included
    const trainable = names.filter((m) => s.trainable.includes(m) || (m === 'vit_position_embedding' && s.trainable.includes('vit')));
    const trainParams = trainable.reduce((n, m) => n + p.matrices[m] + p.vectors[m], 0);
    const frozen = names.filter((m) => !trainable.includes(m));
    const tok = stageTokens(c, s, opts.textTokens ?? 256);
    // D after layer k: the layers after it see a quarter of the tokens
    const vitLayers = v.num_hidden_layers;
    const vitTokenLayers = k === null ? vitLayers * tok.vit : (k + 1) * tok.vit + (vitLayers - k - 1) * (tok.vit / 4);
    // the ViT needs saved activations only if something before its last layer trains or a grad flows through it
    const vitSaves = s.trainable.some((m) => m === 'vit' || m === 'vit_position_embedding' || m === 'compressor');
    const vitActs = vitSaves ? vitTokenLayers * savedPerTokenVit(v) * 4 : 0;
    const llmActs = tok.llm * t.num_hidden_layers * savedPerTokenLlm(t) * 4; // grads flow through the LLM into the connector
    const logits = 2 * tok.llm * t.vocab_size * 4; // logits and their gradient
    const base: MemoryLine[] = [
      { what: `trainable parameters (${trainable.join(', ')}): ${trainParams.toLocaleString('en')} x (float32 weight + grad + AdamW m, v)`, bytes: trainParams * 16 },
      ...frozen.map((m) => ({ what: `frozen: ${m} (${opts.dtype})`, bytes: weightsBytes(m) })),
      { what: `logits and their gradient: ${tok.llm} tokens x ${t.vocab_size}`, bytes: logits },
    ];
    const lines = sorted([
      ...base,
      { what: `ViT activations for backward: ${tok.vit} tokens (batch ${s.batch_size} x views), ${vitLayers} layers`, bytes: vitActs },
      { what: `LLM activations for backward: ${tok.llm} tokens, ${t.num_hidden_layers} layers`, bytes: llmActs },
    ]);
    // checkpointing: each layer's input (hidden size) plus one layer recomputed at a time
    const ckVit = vitSaves ? (vitTokenLayers * v.hidden_size + tok.vit * savedPerTokenVit(v)) * 4 : 0;
    const ckLlm = (tok.llm * t.num_hidden_layers * t.hidden_size + tok.llm * savedPerTokenLlm(t)) * 4;
    const ckLines = sorted([
      ...base,
      { what: 'ViT layer inputs + one layer recomputed', bytes: ckVit },
      { what: 'LLM layer inputs + one layer recomputed', bytes: ckLlm },
    ]);
    return { name: `stage '${s.name}' (batch ${s.batch_size}, ${s.max_slices} slices)`, lines, total: total(lines), checkpointed: { lines: ckLines, total: total(ckLines) } };
  });

  const out: MemoryEstimate = { model: opts.modelName ?? 'config', dtype: opts.dtype, parameters: p, inference, stages };
  if (opts.gpuBytes !== undefined) {
    const fits = (n: number) => n * 1.1 <= opts.gpuBytes!;
    out.gpu = {
      bytes: opts.gpuBytes,
      inference: fits(inference.total),
      stages: stages.map((s) => ({ name: s.name, fits: fits(s.total), fitsCheckpointed: fits(s.checkpointed!.total) })),
    };
  }
  return out;
}

export function formatBytes(n: number): string {
  if (n >= GiB) return `${(n / GiB).toFixed(1)} GiB`;
  if (n >= 2 ** 20) return `${(n / 2 ** 20).toFixed(1)} MiB`;
  return `${(n / 1024).toFixed(1)} KiB`;
}

export function formatEstimate(e: MemoryEstimate): string {
  const p = e.parameters;
  const lines = [`${e.model}: ${(p.total / 1e9).toFixed(2)}B parameters, weights in ${e.dtype} (vectors float32)`];
  for (const m of Object.keys(p.matrices) as ModuleName[]) lines.push(`  ${m.padEnd(24)} ${(p.matrices[m] + p.vectors[m]).toLocaleString('en').padStart(16)}`);
  const scenario = (s: MemoryScenario, label = s.name) => {
    lines.push('', `${label}: ${formatBytes(s.total)}`);
    for (const l of s.lines) lines.push(`  ${formatBytes(l.bytes).padStart(10)}  ${l.what}`);
  };
  scenario(e.inference);
  for (const s of e.stages) {
    scenario(s);
    lines.push(`  with gradient checkpointing: ${formatBytes(s.checkpointed!.total)} (activations: ${s.checkpointed!.lines.filter((l) => l.what.includes('recomputed')).map((l) => formatBytes(l.bytes)).join(' + ')})`);
  }
  if (e.gpu) {
    const yes = (b: boolean) => (b ? 'fits' : 'does not fit');
    lines.push('', `on a GPU with ${formatBytes(e.gpu.bytes)} (10% margin kept):`, `  inference: ${yes(e.gpu.inference)}`);
    for (const s of e.gpu.stages) lines.push(`  ${s.name}: ${yes(s.fits)}${s.fits ? '' : `; with gradient checkpointing: ${yes(s.fitsCheckpointed)}`}`);
  }
  lines.push('', 'An estimate (llava-uhd/memory-estimate.ts): allocator size classes, the buffer pool and fragmentation add to it.');
  return lines.join('\n');
}
