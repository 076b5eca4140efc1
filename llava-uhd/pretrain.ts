/**
 * Pretraining a small LLaVA-UHD baseline from nothing, in two phases, on the pretraining mix
 * (llava-uhd/data/pretrain-mix.ts):
 * 1. the vision tower with one linear classification head per label (shape, colour, position,
 *    count, digit) on the mean of each image's final tokens, every image one view at full
 *    resolution: a stand-in for SigLIP's pretraining, which the paper starts from;
 * 2. connector + language model on the mix's question/answer pairs with the tower frozen,
 *    through the ordinary trainer (llava-uhd/train.ts: slices, packing, rolling checkpoints).
 * The result is a checkpoint folder in the release layout (checkpoint-folder.ts): the baseline
 * (no vit_merger, merger_times 2), into which D is inserted by parameter reuse afterwards.
 *
 * Seeded and reproducible: the tensor RNG is seeded before the model is built, phase 1's batches
 * come from the seed, phase 2 uses the trainer's own seeded batches. Phase 1 ends in an atomic
 * checkpoint (tower.safetensors) that `resume` picks up; phase 2 resumes through the trainer.
 */
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import * as ag from '../autograd/index.js';
import { AdamW, clipGradNorm, crossEntropy, LLAVA_UHD_ADAMW, Linear, loadCheckpoint, LRScheduler, Module, paramGroups, saveCheckpoint, warmupCosine } from '../nn/index.js';
import type { InitOptions } from '../nn/init.js';
import { manualSeed, tensor, tidy, type Device, type Tensor } from '../tensor/index.js';
import { saveCheckpointFolder } from './checkpoint-folder.js';
import type { LlavaUHDConfig } from './config.js';
import { MIX_CLASSES, MIX_LABELS, MixSplit, type MixLabel, type MixSample } from './data/pretrain-mix.js';
import { hashSeed, Rng } from './data/synthetic.js';
import { tokenizerFor } from './load.js';
import { CHECKPOINT_FILE } from './run-dir.js';
import { LlavaUHD } from './model.js';
import { viewPixels } from './preprocess.js';
import { train, type Recipe, type TrainEvents } from './train.js';

/** One linear head per label on the pooled tower output (whole view and quadrants). */
export class TowerHeads extends Module {
  readonly heads: Record<MixLabel, Linear>;
  constructor(width: number, opts: InitOptions = {}) {
    super();
    this.heads = Object.fromEntries(MIX_LABELS.map((l) => [l, this.module(l, new Linear(POOL_REGIONS * width, MIX_CLASSES[l].length, opts))])) as Record<MixLabel, Linear>;
  }
}

export interface TowerStepInfo {
  step: number;
  steps: number;
  loss: number;
  lr: number;
  imagesPerSecond: number;
}

export interface PretrainOptions {
  /** A baseline config (insert_layer_id null). */
  config: LlavaUHDConfig;
  device: Device;
  /** The output folder: the checkpoint folder's files, and the run's own under run/. */
  out: string;
  seed?: number;
  towerSteps: number;
  towerBatch: number;
  towerLr?: number;
  lmSteps: number;
  lmBatch: number;
  lmLr?: number;
  /** Slice budget in phase 2 (default 4: the mix's largest images are 2x2 slices). */
  maxSlices?: number;
  /** Images held out for the heads' accuracy (default 100). */
  heldOut?: number;
  /** Pick up tower.safetensors and the trainer's checkpoint in out/run. */
  resume?: boolean;
  events?: {
    towerStep?(s: TowerStepInfo): void;
    towerEval?(done: number, total: number): void;
    lm?: TrainEvents;
  };
}

export interface PretrainResult {
  model: LlavaUHD;
  /** Mean head loss of phase 1's last step. */
  towerLoss: number;
  /** Held-out accuracy of each head after phase 1. */
  headAccuracy: Record<MixLabel, number>;
  /** Phase 2's last loss. */
  lmLoss: number;
  seconds: { tower: number; lm: number };
  files: string[];
}

/** Indices of the training images of phase-1 step `step` (seeded; independent of any other step). */
export function towerBatch(step: number, batch: number, seed: number): number[] {
  const rng = new Rng(hashSeed(seed, 0x70e1, step));
  return Array.from({ length: batch }, () => rng.int(0, TRAIN_IMAGES - 1));
}

/** Regions each image's final tokens are averaged over: the whole view, then its four quadrants. */
export const POOL_REGIONS = 5;

/**
 * Pooled final tokens of each image, [B, 5 x width]: the mean over the whole view and over each
 * quadrant, concatenated (a plain mean keeps no layout, and the heads could not see where the
 * shape is: position stayed at chance with it). The images are one view each in one sequence.
 */
function pooledFeatures(model: LlavaUHD, samples: MixSample[], device: Device): Tensor {
  const pixels = viewPixels(samples.map((s) => s.images[0]), device);
  const { x, grids } = model.vpm.forward(pixels, null, null);
  for (const p of pixels) p.dispose();
  const n = grids.reduce((a, g) => a + g.h * g.w, 0);
  const B = samples.length;
  const pool = new Float32Array(B * POOL_REGIONS * n);
  let at = 0;
  grids.forEach((g, b) => {
    const rows = b * POOL_REGIONS;
    pool.fill(1 / (g.h * g.w), rows * n + at, rows * n + at + g.h * g.w);
    const inQuadrant = [0, 0, 0, 0];
    const quadrant = (r: number, c: number) => (c >= g.w / 2 ? 1 : 0) + (r >= g.h / 2 ? 2 : 0);
    for (let r = 0; r < g.h; r++) for (let c = 0; c < g.w; c++) inQuadrant[quadrant(r, c)]++;
    for (let r = 0; r < g.h; r++) {
      for (let c = 0; c < g.w; c++) {
        const q = quadrant(r, c);
        pool[(rows + 1 + q) * n + at + r * g.w + c] = 1 / inQuadrant[q];
      }
    }
    at += g.h * g.w;
  });
  const P = tensor(pool, { shape: [B * POOL_REGIONS, n], device });
  return ag.reshape(ag.matmul(P, ag.reshape(x, [n, x.shape[2]])), [B, POOL_REGIONS * x.shape[2]]);
}

function headLosses(heads: TowerHeads, pooled: Tensor, samples: MixSample[], device: Device): Tensor {
  let total: Tensor | null = null;
  for (const l of MIX_LABELS) {
    const target = tensor(samples.map((s) => s.labels[l]), { dtype: 'int32', device });
    const loss = crossEntropy(heads.heads[l].forward(pooled), target);
    total = total ? ag.add(total, loss) : loss;
  }
  return ag.div(total!, MIX_LABELS.length);
}

/** Accuracy of each head on `split` (no gradients). */
export async function headAccuracy(model: LlavaUHD, heads: TowerHeads, split: MixSplit, device: Device, onProgress?: (done: number, total: number) => void): Promise<Record<MixLabel, number>> {
  const correct = Object.fromEntries(MIX_LABELS.map((l) => [l, 0])) as Record<MixLabel, number>;
  const chunk = 16;
  for (let i = 0; i < split.size; i += chunk) {
    const samples = Array.from({ length: Math.min(chunk, split.size - i) }, (_, j) => split.get(i + j));
    const preds = ag.noGrad(() => tidy(() => {
      const pooled = pooledFeatures(model, samples, device);
      return MIX_LABELS.map((l) => heads.heads[l].forward(pooled).argmax(-1));
    }));
    for (const [li, l] of MIX_LABELS.entries()) {
      const p = await preds[li].data();
      samples.forEach((s, j) => (correct[l] += p[j] === s.labels[l] ? 1 : 0));
      preds[li].dispose();
    }
    onProgress?.(Math.min(i + chunk, split.size), split.size);
  }
  return Object.fromEntries(MIX_LABELS.map((l) => [l, correct[l] / split.size])) as Record<MixLabel, number>;
}

/** Phase 2's recipe: connector + LLM on the mix's questions, the tower frozen. */
export function lmRecipe(o: Pick<PretrainOptions, 'lmSteps' | 'lmBatch' | 'lmLr' | 'maxSlices' | 'seed'>): Recipe {
  const lr = o.lmLr ?? 5e-3;
  return {
    name: 'pretrain-lm',
    about: 'uhd pretrain phase 2: connector and LLM on the pretraining mix, the tower frozen',
    seed: o.seed ?? 0,
    eval_every: 0,
    checkpoint_every: 50,
    stages: [
      {
        name: 'lm',
        trainable: ['connector', 'llm'],
        lr,
        min_lr: lr / 5,
        warmup_steps: Math.min(10, o.lmSteps),
        steps: o.lmSteps,
        max_slices: o.maxSlices ?? 4,
        batch_size: o.lmBatch,
        pack_length: 2048,
      },
    ],
  };
}

const TRAIN_IMAGES = 1 << 30;

export async function pretrain(o: PretrainOptions): Promise<PretrainResult> {
  if (o.config.insert_layer_id !== null) throw new Error('pretrain: the config must be a baseline (insert_layer_id null); D is inserted into the pretrained tower afterwards');
  for (const [k, v] of [['towerSteps', o.towerSteps], ['towerBatch', o.towerBatch], ['lmSteps', o.lmSteps], ['lmBatch', o.lmBatch]] as const) {
    if (!Number.isInteger(v) || v < (k.endsWith('Steps') ? 0 : 1)) throw new Error(`pretrain: ${k} must be a ${k.endsWith('Steps') ? 'non-negative' : 'positive'} integer, got ${v}`);
  }
  const seed = o.seed ?? 0;
  const device = o.device;
  await mkdir(join(o.out, 'run'), { recursive: true });
  manualSeed(seed);
  const model = new LlavaUHD(o.config, { device });
  const heads = new TowerHeads(o.config.vision_config.hidden_size, { device });
  const tok = await tokenizerFor(o.config);

  // ---- phase 1: the tower with its heads
  const towerPath = join(o.out, 'run', 'tower.safetensors');
  const both = new (class extends Module {
    constructor() {
      super();
      this.module('vpm', model.vpm);
      this.module('heads', heads);
    }
  })();
  const trainImages = new MixSplit('train', TRAIN_IMAGES, seed);
  const heldOut = new MixSplit('val', o.heldOut ?? 100, seed);
  let towerLoss = NaN;
  const t0 = performance.now();
  if (o.resume && existsSync(towerPath)) {
    const { extra } = await loadCheckpoint(towerPath, { model: both });
    towerLoss = Number(extra.towerLoss);
  } else if (o.towerSteps > 0) {
    const named = [...both.namedParameters()];
    const params = named.map(([, p]) => p);
    for (const p of params) p.requiresGrad = true;
    const lr = o.towerLr ?? 3e-3;
    const opt = new AdamW(paramGroups(named, { weightDecay: LLAVA_UHD_ADAMW.weightDecay }), { lr, betas: [...LLAVA_UHD_ADAMW.betas] as [number, number] });
    const sched = new LRScheduler(opt, warmupCosine({ peak: lr, min: lr / 10, warmupSteps: Math.min(20, o.towerSteps), totalSteps: o.towerSteps }));
    for (let step = 0; step < o.towerSteps; step++) {
      const began = performance.now();
      const samples = towerBatch(step, o.towerBatch, seed).map((i) => trainImages.get(i));
      const loss = tidy(() => {
        const l = headLosses(heads, pooledFeatures(model, samples, device), samples, device);
        l.backward();
        return l;
      });
      towerLoss = await loss.item();
      loss.dispose();
      tidy(() => {
        clipGradNorm(params, LLAVA_UHD_ADAMW.maxGradNorm);
        opt.step();
        opt.zeroGrad();
        return undefined;
      });
      const lrNow = opt.groups[0].lr;
      sched.step();
      if (!Number.isFinite(towerLoss)) throw new Error(`pretrain: the tower's loss is ${towerLoss} at step ${step + 1}; lower --tower-lr`);
      o.events?.towerStep?.({ step: step + 1, steps: o.towerSteps, loss: towerLoss, lr: lrNow, imagesPerSecond: o.towerBatch / ((performance.now() - began) / 1000) });
    }
    opt.dispose();
    await saveCheckpoint(towerPath, { model: both, step: o.towerSteps, extra: { towerLoss } });
  }
  const accuracy = await headAccuracy(model, heads, heldOut, device, o.events?.towerEval);
  const towerSeconds = (performance.now() - t0) / 1000;

  // ---- phase 2: connector + LLM on the questions
  let lmLoss = NaN;
  let lmSeconds = 0;
  if (o.lmSteps > 0) {
    // phase 2 resumes where its own checkpoint is (resuming phase 1 alone starts phase 2 afresh)
    const resumeLm = o.resume === true && existsSync(join(o.out, 'run', CHECKPOINT_FILE));
    const r = await train(model, tok, lmRecipe({ ...o, seed }), {
      device,
      outDir: join(o.out, 'run'),
      train: new MixSplit('train', 100_000, seed),
      resume: resumeLm,
      fresh: !resumeLm,
      dataId: `pretrain-mix seed ${seed}`,
      events: o.events?.lm,
    });
    lmLoss = r.finalLoss[0];
    lmSeconds = r.seconds;
  }
  for (const p of model.parameters()) p.requiresGrad = false;
  const { files } = await saveCheckpointFolder(model, o.out);
  return { model, towerLoss, headAccuracy: accuracy, lmLoss, seconds: { tower: towerSeconds, lm: lmSeconds }, files };
}
