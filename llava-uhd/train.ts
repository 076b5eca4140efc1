/**
 * The four-stage training pipeline (LLaVA-UHD-V4.md, "Training: four stages"): a recipe lists
 * stages; each stage picks trainable modules, learning rates (with a scale for non-LLM groups),
 * warmup and steps, the slice budget, batch size and gradient accumulation. Each stage starts
 * from the previous one's weights; frozen modules get no gradients and no optimizer state.
 * Loss: next-token cross-entropy on answer tokens only. Checkpoints are atomic, and `resume`
 * continues exactly where an interrupted run stopped (data order and RNG are functions of the
 * step, and the RNG state is in the checkpoint).
 */
import { appendFileSync, existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import * as ag from '../autograd/index.js';
import {
  AdamW, clipGradNorm, crossEntropy, LLAVA_UHD_ADAMW, LRScheduler, loadCheckpoint, paramGroups, saveCheckpoint, warmupCosine,
} from '../nn/index.js';
import { tensor, tidy, type Device, type Tensor } from '../tensor/index.js';
import type { RgbImage } from './image.js';
import { buildConversation, pack, type SampleLayout, type Turn } from './layout.js';
import type { LlavaUHD } from './model.js';
import { prepareImage, viewPixels } from './preprocess.js';
import type { Tokenizer } from './tokenizer.js';
import type { DataSpec } from './datasets.js';
import { readSafetensorsHeader } from '../nn/safetensors.js';
import { saveWeights } from './weights.js';

/**
 * One training example: a conversation and its images (none for a text-only sample; several in
 * the user turns' `<image>` order, or all at the start of the first user turn when it has none).
 */
export interface Sample {
  images: RgbImage[];
  turns: Turn[];
  /** The expected answer (for evaluation) and its question type (for the breakdown). */
  answer: string;
  type: string;
}

export interface Dataset {
  readonly size: number;
  get(i: number): Sample;
}

/** Names a stage can train. */
export const MODULES = {
  compressor: (n: string) => n.startsWith('vit_merger.'),
  connector: (n: string) => n.startsWith('resampler.'),
  vit: (n: string) => n.startsWith('vpm.'),
  vit_position_embedding: (n: string) => n === 'vpm.embeddings.position_embedding.weight',
  llm: (n: string) => n.startsWith('llm.'),
} as const;
export type ModuleName = keyof typeof MODULES;

export interface StageSpec {
  name: string;
  trainable: ModuleName[];
  /** Peak and final learning rate (linear warmup, then cosine to min_lr). */
  lr: number;
  min_lr: number;
  /** LR multiplier for parameters outside the LLM (0.2 in stages 2-3 of the recipe). */
  non_llm_lr_scale?: number;
  warmup_steps: number;
  steps: number;
  /** M: the slice budget (1 in stage 1). */
  max_slices: number;
  /** Samples per optimizer step. */
  batch_size: number;
  /** Micro-batches per optimizer step (batch_size samples each). */
  grad_accum?: number;
  /** Pack each micro-batch's samples into sequences of at most this many tokens (0: one sequence per sample). */
  pack_length?: number;
  weight_decay?: number;
  clip_norm?: number;
}

export interface Recipe {
  name: string;
  /** Free text shown to users. */
  about?: string;
  /** Where the samples come from (read by the CLI; `train` itself takes datasets). */
  data?: DataSpec;
  stages: StageSpec[];
  /** Validation every N steps (0: only at the end of each stage). */
  eval_every?: number;
  checkpoint_every?: number;
  seed?: number;
}

/** Checks a recipe before anything runs, naming the first bad field. */
export function validateRecipe(r: Recipe, source = 'recipe'): Recipe {
  const fail = (field: string, what: string): never => {
    throw new Error(`${source}: ${field} ${what}`);
  };
  if (typeof r !== 'object' || r === null) fail('the recipe', 'must be a JSON object');
  if (typeof r.name !== 'string' || !r.name) fail('name', 'must be a non-empty string');
  if (!Array.isArray(r.stages) || r.stages.length === 0) fail('stages', 'must be a non-empty array');
  const posInt = (v: unknown) => Number.isInteger(v) && (v as number) > 0;
  r.stages.forEach((s, i) => {
    const f = (k: string) => `stages[${i}].${k}`;
    if (typeof s.name !== 'string' || !s.name) fail(f('name'), 'must be a non-empty string');
    if (!Array.isArray(s.trainable) || s.trainable.length === 0) fail(f('trainable'), 'must list at least one module');
    s.trainable.forEach((m, j) => {
      if (!(m in MODULES)) fail(`${f('trainable')}[${j}]`, `'${m}' is not a module (one of ${Object.keys(MODULES).join(', ')})`);
    });
    for (const k of ['lr', 'min_lr'] as const) if (!(typeof s[k] === 'number' && s[k] >= 0)) fail(f(k), 'must be a number >= 0');
    if (s.min_lr > s.lr) fail(f('min_lr'), `(${s.min_lr}) exceeds lr (${s.lr})`);
    for (const k of ['steps', 'max_slices', 'batch_size'] as const) if (!posInt(s[k])) fail(f(k), `must be a positive integer, got ${JSON.stringify(s[k])}`);
    if (!(Number.isInteger(s.warmup_steps) && s.warmup_steps >= 0 && s.warmup_steps <= s.steps)) fail(f('warmup_steps'), 'must be an integer in 0..steps');
    if (s.grad_accum !== undefined && !posInt(s.grad_accum)) fail(f('grad_accum'), 'must be a positive integer');
    if (s.pack_length !== undefined && !(Number.isInteger(s.pack_length) && s.pack_length >= 0)) fail(f('pack_length'), 'must be an integer >= 0');
  });
  return r;
}

/** A stage's trainable parameters; throws naming the stage when there are none in this model. */
export function applyTrainable(model: LlavaUHD, stage: StageSpec): [string, Tensor][] {
  const picked: [string, Tensor][] = [];
  for (const [n, p] of model.namedParameters()) {
    p.requiresGrad = stage.trainable.some((m) => MODULES[m](n));
    if (p.requiresGrad) picked.push([n, p]);
  }
  if (picked.length === 0) {
    throw new Error(`stage '${stage.name}': nothing to train (trainable: ${stage.trainable.join(', ')}; this model has no such parameters)`);
  }
  return picked;
}

/** Builds one sample's token layout and view pixels (every image's views, in order) under a slice budget. */
export function encodeSample(model: LlavaUHD, tok: Tokenizer, s: Sample, maxSlices: number): { layout: SampleLayout; pixels: RgbImage[] } {
  const prepared = s.images.map((img) => prepareImage(img, model.config, maxSlices));
  return { layout: buildConversation(s.turns, prepared.map((p) => p.tokens), tok), pixels: prepared.flatMap((p) => p.views) };
}

/** Mean answer-token loss of a group of samples, packed into sequences; returns one loss per sequence. */
function sequenceLosses(model: LlavaUHD, tok: Tokenizer, samples: Sample[], stage: StageSpec, device: Device): Tensor[] {
  const encoded = samples.map((s) => encodeSample(model, tok, s, stage.max_slices));
  const packLength = stage.pack_length ?? 0;
  const groups = packLength > 0
    ? pack(encoded.map((e) => e.layout), packLength).map((p) => ({ ids: p.ids, labels: p.labels, unk: p.unkPositions, seg: p.segmentIds, members: p.samples.map((m) => m.index) }))
    : encoded.map((e, i) => ({ ids: e.layout.ids, labels: e.layout.labels, unk: e.layout.unkPositions, seg: null, members: [i] }));
  const vocab = model.config.text_config.vocab_size;
  return groups.map((g) => {
    const ids = tensor([Array.from(g.ids)], { dtype: 'int32', device });
    const labels = tensor(g.labels, { dtype: 'int32', device });
    const seg = g.seg ? tensor([Array.from(g.seg)], { dtype: 'int32', device }) : undefined;
    const pixels = g.members.flatMap((i) => viewPixels(encoded[i].pixels, device));
    const logits = model.forward(ids, pixels, g.unk, { segmentIds: seg });
    return crossEntropy(ag.reshape(logits, [-1, vocab]), labels);
  });
}

/** Sample indices of step `step` of a stage: a fixed permutation per epoch, from the seed. */
export function batchIndices(size: number, batch: number, step: number, seed: number): number[] {
  const out: number[] = [];
  for (let j = 0; j < batch; j++) {
    const k = step * batch + j;
    const epoch = Math.floor(k / size);
    out.push(permute(k % size, size, seed + epoch * 7919));
  }
  return out;
}

/** A bijection on 0..n-1 (cheap seeded shuffle: affine map with a step coprime to n, then rotate). */
function permute(i: number, n: number, seed: number): number {
  let a = (Math.abs(seed * 2654435761) % n) | 1;
  while (gcd(a, n) !== 1) a += 2;
  return (i * a + (seed % n)) % n;
}

function gcd(a: number, b: number): number {
  return b === 0 ? a : gcd(b, a % b);
}

export interface TrainEvents {
  /** A stage begins (index, spec, the step it resumes from). */
  stageStart?(i: number, stage: StageSpec, fromStep: number): void;
  /** After each optimizer step. */
  step?(info: StepInfo): void;
  /** After each validation. */
  validation?(info: { stage: string; step: number; loss: number }): void;
  stageEnd?(i: number, stage: StageSpec, seconds: number): void;
}

export interface StepInfo {
  stage: string;
  stageIndex: number;
  step: number;
  steps: number;
  loss: number;
  lr: number;
  samplesPerSecond: number;
}

export interface TrainOptions {
  device: Device;
  outDir: string;
  train: Dataset;
  val?: Dataset;
  /** Validation samples used per validation (default 16). */
  valSamples?: number;
  resume?: boolean;
  events?: TrainEvents;
  /** Stop after this many optimizer steps in this call (to simulate an interruption in tests). */
  stopAfter?: number;
}

export interface TrainResult {
  /** Seconds of training in this call. */
  seconds: number;
  /** Final loss of each stage (the last step's). */
  finalLoss: number[];
  stopped: boolean;
}

/** Mean validation loss over the first `n` samples of `val`. */
export async function validationLoss(model: LlavaUHD, tok: Tokenizer, val: Dataset, stage: StageSpec, device: Device, n: number): Promise<number> {
  let sum = 0;
  const count = Math.min(n, val.size);
  for (let i = 0; i < count; i++) {
    const l = ag.noGrad(() => tidy(() => sequenceLosses(model, tok, [val.get(i)], { ...stage, pack_length: 0 }, device)[0]));
    sum += await l.item();
    l.dispose();
  }
  return sum / Math.max(count, 1);
}

/**
 * Runs the recipe's stages on `model`, writing `metrics.jsonl`, `checkpoint.safetensors`
 * (latest, atomic) and `stage-<i>-<name>.safetensors` (weights at the end of each stage) to outDir.
 */
export async function train(model: LlavaUHD, tok: Tokenizer, recipe: Recipe, opts: TrainOptions): Promise<TrainResult> {
  validateRecipe(recipe);
  mkdirSync(opts.outDir, { recursive: true });
  const ckptPath = join(opts.outDir, 'checkpoint.safetensors');
  const metricsPath = join(opts.outDir, 'metrics.jsonl');
  const seed = recipe.seed ?? 0;
  // Where to start: a checkpoint's `extra` says which stage and step it was taken at.
  let resumeAt: { stage: number; step: number } | null = null;
  if (opts.resume) {
    if (!existsSync(ckptPath)) throw new Error(`train: --resume given but ${ckptPath} does not exist`);
    resumeAt = JSON.parse((await readSafetensorsHeader(ckptPath)).metadata.extra ?? '{}') as { stage: number; step: number };
    if (!Number.isInteger(resumeAt.stage) || !Number.isInteger(resumeAt.step)) throw new Error(`train: ${ckptPath} does not say where it was taken (stage/step)`);
  }
  const began = performance.now();
  const result: TrainResult = { seconds: 0, finalLoss: [], stopped: false };
  let stepsThisCall = 0;

  for (let si = 0; si < recipe.stages.length; si++) {
    const stage = recipe.stages[si];
    const named = applyTrainable(model, stage);
    const scale = stage.non_llm_lr_scale ?? 1;
    const groups = paramGroups(named, {
      weightDecay: stage.weight_decay ?? LLAVA_UHD_ADAMW.weightDecay,
      lrScale: (n) => (n.startsWith('llm.') ? 1 : scale),
    });
    const opt = new AdamW(groups, { lr: stage.lr, betas: [...LLAVA_UHD_ADAMW.betas] as [number, number], weightDecay: stage.weight_decay ?? LLAVA_UHD_ADAMW.weightDecay });
    const sched = new LRScheduler(opt, warmupCosine({ peak: stage.lr, min: stage.min_lr, warmupSteps: stage.warmup_steps, totalSteps: stage.steps }));
    let step = 0;
    if (resumeAt) {
      if (resumeAt.stage > si) {
        // this stage finished before the interruption; later weights are in the checkpoint
        opt.dispose();
        continue;
      }
      // mid-stage: everything; at a stage boundary: the weights (the optimizer starts fresh)
      await loadCheckpoint(ckptPath, resumeAt.step > 0 ? { model, optimizer: opt, scheduler: sched } : { model });
      step = resumeAt.step;
      resumeAt = null;
    }
    opts.events?.stageStart?.(si, stage, step);
    const stageBegan = performance.now();
    let lastLoss = NaN;
    const accum = stage.grad_accum ?? 1;
    while (step < stage.steps) {
      if (opts.stopAfter !== undefined && stepsThisCall >= opts.stopAfter) {
        result.stopped = true;
        opt.dispose();
        result.seconds = (performance.now() - began) / 1000;
        return result;
      }
      const t0 = performance.now();
      let lossSum = 0;
      for (let a = 0; a < accum; a++) {
        const idx = batchIndices(opts.train.size, stage.batch_size, step * accum + a, seed + si * 1000003);
        const samples = idx.map((i) => opts.train.get(i));
        const losses = tidy(() => {
          const ls = sequenceLosses(model, tok, samples, stage, opts.device);
          const total = ls.reduce((acc: Tensor | null, l) => (acc ? ag.add(acc, l) : l), null)!;
          const mean = ag.div(total, ls.length * accum);
          mean.backward();
          return mean;
        });
        lossSum += (await losses.item()) * accum;
        losses.dispose();
      }
      lastLoss = lossSum / accum;
      const lr = opt.groups[0].lr;
      tidy(() => {
        clipGradNorm(named.map(([, p]) => p), stage.clip_norm ?? LLAVA_UHD_ADAMW.maxGradNorm).dispose();
        opt.step();
        opt.zeroGrad();
        sched.step();
        return undefined;
      });
      step++;
      stepsThisCall++;
      const info: StepInfo = {
        stage: stage.name, stageIndex: si, step, steps: stage.steps, loss: lastLoss, lr,
        samplesPerSecond: (stage.batch_size * accum) / ((performance.now() - t0) / 1000),
      };
      appendFileSync(metricsPath, JSON.stringify({ ...info, time: new Date().toISOString() }) + '\n');
      opts.events?.step?.(info);
      const evalEvery = recipe.eval_every ?? 0;
      if (opts.val && evalEvery > 0 && step % evalEvery === 0 && step < stage.steps) {
        const v = await validationLoss(model, tok, opts.val, stage, opts.device, opts.valSamples ?? 16);
        appendFileSync(metricsPath, JSON.stringify({ stage: stage.name, step, val_loss: v }) + '\n');
        opts.events?.validation?.({ stage: stage.name, step, loss: v });
      }
      const every = recipe.checkpoint_every ?? 0;
      if (every > 0 && step % every === 0 && step < stage.steps) {
        await saveCheckpoint(ckptPath, { model, optimizer: opt, scheduler: sched, step, extra: { stage: si, step, recipe: recipe.name } });
      }
    }
    if (opts.val) {
      const v = await validationLoss(model, tok, opts.val, stage, opts.device, opts.valSamples ?? 16);
      appendFileSync(metricsPath, JSON.stringify({ stage: stage.name, step, val_loss: v }) + '\n');
      opts.events?.validation?.({ stage: stage.name, step, loss: v });
    }
    await saveWeights(model, join(opts.outDir, `stage-${si}-${stage.name}.safetensors`), model.config);
    // the next stage starts from these weights with a fresh optimizer
    await saveCheckpoint(ckptPath, { model, step: 0, extra: { stage: si + 1, step: 0, recipe: recipe.name } });
    result.finalLoss.push(lastLoss);
    opt.dispose();
    opts.events?.stageEnd?.(si, stage, (performance.now() - stageBegan) / 1000);
  }
  for (const p of model.parameters()) p.requiresGrad = true;
  result.seconds = (performance.now() - began) / 1000;
  return result;
}
