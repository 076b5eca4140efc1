/**
 * The four-stage training pipeline (LLaVA-UHD-V4.md, "Training: four stages"): a recipe lists
 * stages; each stage picks trainable modules, learning rates (with a scale for non-LLM groups),
 * warmup and steps, the slice budget, batch size and gradient accumulation. Each stage starts
 * from the previous one's weights; frozen modules get no gradients and no optimizer state.
 * Loss: next-token cross-entropy on answer tokens only. Checkpoints are atomic, and `resume`
 * continues exactly where an interrupted run stopped (data order and RNG are functions of the
 * step, and the RNG state is in the checkpoint).
 *
 * What a run guards against (README, "What it guarantees"):
 * - another run in the same folder (a lock, llava-uhd/run-dir.ts), and overwriting a run that is
 *   there (refused unless `resume` or `fresh`);
 * - resuming with another recipe, config or data (a fingerprint in the checkpoint, compared);
 * - non-finite losses and gradient norms (the step is skipped and counted, never applied; the run
 *   stops by the recipe's `non_finite` policy), and checkpoints holding NaN (never written);
 * - bad samples (lone surrogates, too many tokens, undecodable layouts): reported with their line
 *   and left out of their batch, or refused before the first step;
 * - an interrupt (`signal`): a checkpoint at the next step boundary, then a clean return;
 * - temp files of a save that was killed: removed at the next start.
 */
import { appendFileSync, existsSync, mkdirSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import * as ag from '../autograd/index.js';
import {
  AdamW, clipGradNorm, crossEntropy, LLAVA_UHD_ADAMW, LRScheduler, loadCheckpoint, paramGroups, saveCheckpoint, warmupCosine,
} from '../nn/index.js';
import { findNonFinite, NonFiniteError, readCheckpointInfo, removeStaleTemps, type TrainingState } from '../nn/checkpoint.js';
import type { ParamState } from '../nn/optim.js';
import { concat, tensor, tidy, type Device, type Tensor } from '../tensor/index.js';
import { recordTextProblem } from './data/jsonl.js';
import type { RgbImage } from './image.js';
import { buildConversation, pack, type SampleLayout, type Turn } from './layout.js';
import type { LlavaUHD } from './model.js';
import { prepareImage, viewPixels } from './preprocess.js';
import { maxSampleTokens, MODULE_NAMES, nonFinitePolicy, validateRecipe, type ModuleName, type Recipe, type StageSpec } from './recipe.js';
import { acquireRunLock, CHECKPOINT_FILE, clearRun, METRICS_FILE, runFiles } from './run-dir.js';
import { writeCurves } from './report/curves.js';
import type { Tokenizer } from './tokenizer.js';
import { saveWeights } from './weights.js';

export { MODULE_NAMES, validateRecipe, type ModuleName, type Recipe, type StageSpec } from './recipe.js';

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

/**
 * Which parameters each module name covers. A null-prototype object, looked up with
 * `moduleMatcher`: a name such as 'constructor' must never find Object.prototype's function
 * (which returned a truthy object for every name and made everything trainable).
 */
export const MODULES: Readonly<Record<ModuleName, (n: string) => boolean>> = Object.assign(Object.create(null) as Record<ModuleName, (n: string) => boolean>, {
  compressor: (n: string) => n.startsWith('vit_merger.'),
  connector: (n: string) => n.startsWith('resampler.'),
  vit: (n: string) => n.startsWith('vpm.'),
  vit_position_embedding: (n: string) => n === 'vpm.embeddings.position_embedding.weight',
  llm: (n: string) => n.startsWith('llm.'),
});

/** The matcher of a module name; throws for anything that is not one. */
export function moduleMatcher(m: string): (n: string) => boolean {
  if (!Object.hasOwn(MODULES, m)) throw new Error(`'${m}' is not a module (one of ${MODULE_NAMES.join(', ')})`);
  return MODULES[m as ModuleName];
}

/** A stage's trainable parameters; throws naming the stage when there are none in this model. */
export function applyTrainable(model: LlavaUHD, stage: StageSpec): [string, Tensor][] {
  const matchers = stage.trainable.map((m) => {
    try {
      return moduleMatcher(m);
    } catch (e) {
      throw new Error(`stage '${stage.name}': ${(e as Error).message}`);
    }
  });
  const picked: [string, Tensor][] = [];
  for (const [n, p] of model.namedParameters()) {
    p.requiresGrad = matchers.some((match) => match(n));
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

/** One encoded training sample. */
interface Encoded {
  layout: SampleLayout;
  pixels: RgbImage[];
}

/** A sample that cannot be trained on, and why (reported, then left out). */
export class BadSampleError extends Error {}

/**
 * Encodes a sample after the checks every sample passes before it is trained on (the record text
 * checks of data/jsonl.ts, a layout that builds, at most `maxSampleTokens(stage)` tokens); throws
 * BadSampleError with the reason.
 */
export function checkedSample(model: LlavaUHD, tok: Tokenizer, s: Sample, stage: StageSpec): Encoded {
  if (!s || !Array.isArray(s.turns)) throw new BadSampleError('the sample has no turns');
  const text = recordTextProblem(s.turns);
  if (text) throw new BadSampleError(text);
  let e: Encoded;
  try {
    e = encodeSample(model, tok, s, stage.max_slices);
  } catch (err) {
    throw new BadSampleError((err as Error).message);
  }
  const limit = maxSampleTokens(stage);
  if (e.layout.ids.length > limit) {
    const why = stage.max_sample_tokens !== undefined ? 'max_sample_tokens' : stage.pack_length ? 'pack_length' : 'the default max_sample_tokens';
    throw new BadSampleError(`${e.layout.ids.length} tokens (${e.layout.visualTokens} of them visual), over stage '${stage.name}''s limit of ${limit} (${why})`);
  }
  if (!e.layout.labels.some((l) => l >= 0)) throw new BadSampleError('no answer token to train on');
  return e;
}

/** The values of one-element tensors, in one read-back. */
async function readScalars(xs: readonly Tensor[]): Promise<number[]> {
  const joined = tidy(() => concat(xs.map((x) => x.reshape([1]))));
  try {
    return Array.from(await joined.data());
  } finally {
    joined.dispose();
  }
}

/** Mean answer-token loss of a group of samples, packed into sequences; returns one loss per sequence. */
function sequenceLosses(model: LlavaUHD, encoded: Encoded[], stage: StageSpec, device: Device): Tensor[] {
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
  /** After each optimizer step (skipped ones included: `info.skipped`). */
  step?(info: StepInfo): void;
  /** After each validation. */
  validation?(info: { stage: string; step: number; loss: number }): void;
  stageEnd?(i: number, stage: StageSpec, seconds: number): void;
  /** Something the user should know that is not an error: a bad sample left out, a stale lock taken over, files removed. */
  notice?(message: string): void;
}

export interface StepInfo {
  stage: string;
  stageIndex: number;
  step: number;
  steps: number;
  /** Mean loss of the step (NaN or an infinity when the step was skipped for it). */
  loss: number;
  /** Global gradient norm before clipping. */
  gradNorm: number;
  lr: number;
  samplesPerSecond: number;
  /** Why the step changed no weights, or absent when it did: a non-finite loss or gradient norm, or no usable sample. */
  skipped?: string;
}

/** What `resume` compares: everything that decides how a run continues (data order included). */
export interface RunFingerprint {
  seed: number;
  stages: StageSpec[];
  /** sha256 of the model config (keys sorted). */
  config: string;
  /** What identifies the training data (TrainOptions.dataId). */
  data: string;
}

export interface TrainOptions {
  device: Device;
  outDir: string;
  train: Dataset;
  val?: Dataset;
  /** Validation samples used per validation (default 16). */
  valSamples?: number;
  /** Continue from outDir/checkpoint.safetensors. */
  resume?: boolean;
  /** Start afresh in a folder that holds a run: its checkpoint, stage weights and metrics are deleted first. */
  fresh?: boolean;
  /** Resume even when the checkpoint's fingerprint (recipe, config, data) differs; a recipe too short for the checkpoint stays an error. */
  forceResume?: boolean;
  /** Identifies the training data in the fingerprint (a hash of the files, the synthetic spec). Default: the training set's size. */
  dataId?: string;
  /** Overrides the recipe's `on_bad_sample`. */
  onBadSample?: 'skip' | 'fail';
  /** Names training sample i in messages, e.g. `data/train.jsonl:17` (default `training sample i`). */
  describeSample?(i: number): string;
  /** Checked at every step boundary: once aborted, a checkpoint is saved and train returns `interrupted`. */
  signal?: AbortSignal;
  events?: TrainEvents;
  /** Stop after this many optimizer steps in this call (to simulate an interruption in tests). */
  stopAfter?: number;
}

export interface CheckpointRef {
  path: string;
  /** The stage index it continues at, and the step within it. */
  stage: number;
  step: number;
}

export interface TrainResult {
  /** Seconds of training in this call. */
  seconds: number;
  /** Final loss of each stage (the last step's). */
  finalLoss: number[];
  /** Stopped by `stopAfter`. */
  stopped: boolean;
  /** Stopped by `signal`, after saving `checkpoint`. */
  interrupted: boolean;
  /** `resume` found the run complete: nothing was trained. */
  alreadyComplete: boolean;
  /** Steps skipped for a non-finite loss or gradient norm. */
  nonFiniteSteps: number;
  /** Bad samples left out, each once, as `<sample>: <reason>`. */
  badSamples: string[];
  /** The last checkpoint written or resumed from (null if none). */
  checkpoint: CheckpointRef | null;
}

/** A run stopped because of non-finite losses or weights; the message says where the last good checkpoint is. */
export class TrainingDivergedError extends Error {
  constructor(message: string, readonly lastCheckpoint: CheckpointRef | null) {
    super(message);
    this.name = 'TrainingDivergedError';
  }
}

/** Mean validation loss over the first `n` samples of `val` (bad samples are left out). */
export async function validationLoss(model: LlavaUHD, tok: Tokenizer, val: Dataset, stage: StageSpec, device: Device, n: number): Promise<number> {
  // every sample's loss is queued, then all are read at once
  const losses: Tensor[] = [];
  const count = Math.min(n, val.size);
  const single = { ...stage, pack_length: 0 };
  try {
    for (let i = 0; i < count; i++) {
      let e: Encoded;
      try {
        e = checkedSample(model, tok, val.get(i), single);
      } catch (err) {
        if (err instanceof BadSampleError) continue;
        throw err;
      }
      losses.push(ag.noGrad(() => tidy(() => sequenceLosses(model, [e], single, device)[0])));
    }
    if (losses.length === 0) return 0;
    let sum = 0;
    for (const v of await readScalars(losses)) sum += v;
    return sum / losses.length;
  } finally {
    for (const l of losses) l.dispose();
  }
}

/** JSON with object keys sorted, so that equal values give equal text. */
function canonical(v: unknown): string {
  return JSON.stringify(v, (_k, x: unknown) =>
    x && typeof x === 'object' && !Array.isArray(x) ? Object.fromEntries(Object.entries(x).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) : x,
  );
}

export function runFingerprint(config: unknown, recipe: Recipe, dataId: string): RunFingerprint {
  return {
    seed: recipe.seed ?? 0,
    stages: JSON.parse(canonical(recipe.stages)) as StageSpec[],
    config: createHash('sha256').update(canonical(config)).digest('hex'),
    data: dataId,
  };
}

/** How a checkpoint's fingerprint differs from this run's, one line per difference (empty: the same). */
export function fingerprintDifferences(saved: unknown, now: RunFingerprint): string[] {
  if (!saved || typeof saved !== 'object') return ['the checkpoint records no fingerprint of its recipe, config and data (it predates them)'];
  const s = saved as Partial<RunFingerprint>;
  const out: string[] = [];
  const show = (v: unknown) => (v === undefined ? 'absent' : JSON.stringify(v));
  if (s.seed !== now.seed) out.push(`seed: ${show(s.seed)} in the checkpoint, ${show(now.seed)} now (another data order)`);
  const a = Array.isArray(s.stages) ? s.stages : [];
  for (let i = 0; i < Math.max(a.length, now.stages.length); i++) {
    const x = a[i] as unknown as Record<string, unknown> | undefined;
    const y = now.stages[i] as unknown as Record<string, unknown> | undefined;
    if (!x || !y) {
      out.push(`stages[${i}] (${String((x ?? y)!.name)}) is only in ${x ? 'the checkpoint' : 'this recipe'}`);
      continue;
    }
    for (const k of [...new Set([...Object.keys(x), ...Object.keys(y)])].sort()) {
      if (canonical(x[k]) !== canonical(y[k])) out.push(`stages[${i}].${k}: ${show(x[k])} in the checkpoint, ${show(y[k])} now`);
    }
  }
  if (s.config !== now.config) out.push('the model config differs');
  if (s.data !== now.data) out.push(`the data differs: ${show(s.data)} in the checkpoint, ${show(now.data)} now`);
  return out;
}

const describeCheckpoint = (c: CheckpointRef | null, recipe: Recipe): string =>
  c
    ? `the last good checkpoint is ${c.path} (${c.stage < recipe.stages.length ? `stage ${c.stage + 1} '${recipe.stages[c.stage].name}', step ${c.step}` : 'the end of the run'}; continue from it with --resume)`
    : 'no checkpoint was written by this run (set checkpoint_every to keep one)';

/**
 * Runs the recipe's stages on `model`, writing `metrics.jsonl`, `checkpoint.safetensors`
 * (latest, atomic) and `stage-<i>-<name>.safetensors` (weights at the end of each stage) to outDir.
 */
export async function train(model: LlavaUHD, tok: Tokenizer, recipeIn: Recipe, opts: TrainOptions): Promise<TrainResult> {
  const recipe = validateRecipe(recipeIn);
  if (opts.resume && opts.fresh) throw new Error('train: resume and fresh exclude each other (continue the run, or start it afresh)');
  const policy = nonFinitePolicy(recipe);
  const onBad = opts.onBadSample ?? recipe.on_bad_sample ?? 'skip';
  const notice = (m: string) => opts.events?.notice?.(m);
  const describe = opts.describeSample ?? ((i: number) => `training sample ${i}`);
  mkdirSync(opts.outDir, { recursive: true });
  const lock = acquireRunLock(opts.outDir);
  try {
    if (lock.recovered) notice(lock.recovered);
    const removed = removeStaleTemps(opts.outDir);
    if (removed.length) notice(`removed ${removed.length} temp file${removed.length > 1 ? 's' : ''} of an interrupted save: ${removed.join(', ')}`);
    return await runStages(model, tok, recipe, opts, { policy, onBad, notice, describe });
  } finally {
    lock.release();
  }
}

interface RunSettings {
  policy: ReturnType<typeof nonFinitePolicy>;
  onBad: 'skip' | 'fail';
  notice: (m: string) => void;
  describe: (i: number) => string;
}

async function runStages(model: LlavaUHD, tok: Tokenizer, recipe: Recipe, opts: TrainOptions, cfg: RunSettings): Promise<TrainResult> {
  const { policy, notice, describe } = cfg;
  const ckptPath = join(opts.outDir, CHECKPOINT_FILE);
  const metricsPath = join(opts.outDir, METRICS_FILE);
  const seed = recipe.seed ?? 0;
  const fingerprint = runFingerprint(model.config, recipe, opts.dataId ?? `${opts.train.size} training samples`);
  const result: TrainResult = { seconds: 0, finalLoss: [], stopped: false, interrupted: false, alreadyComplete: false, nonFiniteSteps: 0, badSamples: [], checkpoint: null };
  const began = performance.now();

  // Where to start: a checkpoint's `extra` says which stage and step it was taken at.
  let resumeAt: { stage: number; step: number } | null = null;
  if (!opts.resume) {
    const files = runFiles(opts.outDir);
    if (files.length && !opts.fresh) {
      throw new Error(`train: ${opts.outDir} already holds a run (${files.join(', ')}). Continue it with --resume, or start afresh with --fresh (which deletes those files)`);
    }
    if (files.length) notice(`--fresh: deleted the previous run's ${files.join(', ')}`);
    clearRun(opts.outDir);
  } else {
    if (!existsSync(ckptPath)) throw new Error(`train: --resume given but ${ckptPath} does not exist`);
    const { extra } = await readCheckpointInfo(ckptPath);
    const at = { stage: extra.stage as number, step: extra.step as number };
    if (!Number.isInteger(at.stage) || !Number.isInteger(at.step) || at.stage < 0 || at.step < 0) throw new Error(`train: ${ckptPath} does not say where it was taken (stage/step)`);
    const n = recipe.stages.length;
    if (at.stage > n || (at.stage < n && at.step > 0 && at.step >= recipe.stages[at.stage].steps)) {
      const where = at.stage < n ? `stage ${at.stage + 1} ('${recipe.stages[at.stage].name}') step ${at.step}, but this recipe's stage ${at.stage + 1} has ${recipe.stages[at.stage].steps} steps` : `the start of stage ${at.stage + 1}, but this recipe has ${n} stages`;
      throw new Error(`train: ${ckptPath} was taken at ${where}: this recipe is too short to continue it (use --fresh to start over)`);
    }
    const diffs = fingerprintDifferences(extra.fingerprint, fingerprint);
    if (diffs.length && !opts.forceResume) {
      throw new Error(`train: ${ckptPath} was written by a different run:\n  ${diffs.join('\n  ')}\nResume with the same recipe, config and data, or pass --force-resume to continue anyway (or --fresh to start over)`);
    }
    if (diffs.length) notice(`resuming despite: ${diffs.join('; ')}`);
    result.checkpoint = { path: ckptPath, ...at };
    if (at.stage === n) {
      result.alreadyComplete = true;
      notice(`${ckptPath}: the run is complete (all ${n} stages); nothing to resume`);
      return result;
    }
    resumeAt = at;
  }

  // bad samples are reported once each
  const reported = new Set<number>();
  const sampleFor = (i: number, stage: StageSpec): Encoded | null => {
    try {
      return checkedSample(model, tok, opts.train.get(i), stage);
    } catch (e) {
      if (!(e instanceof BadSampleError)) throw e;
      const line = `${describe(i)}: ${e.message}`;
      if (!reported.has(i)) {
        reported.add(i);
        result.badSamples.push(line);
        notice(`skipped ${line}`);
        appendFileSync(metricsPath, JSON.stringify({ bad_sample: line, stage: stage.name }) + '\n');
      }
      return null;
    }
  };
  if (cfg.onBad === 'fail') {
    // every sample under every stage's settings, before the first step
    const problems = new Map<number, string>();
    const checkedSettings = new Set<string>();
    for (const stage of recipe.stages) {
      const key = `${stage.max_slices}/${maxSampleTokens(stage)}`;
      if (checkedSettings.has(key)) continue;
      checkedSettings.add(key);
      for (let i = 0; i < opts.train.size && problems.size < 20; i++) {
        if (problems.has(i)) continue;
        try {
          checkedSample(model, tok, opts.train.get(i), stage);
        } catch (e) {
          if (!(e instanceof BadSampleError)) throw e;
          problems.set(i, `${describe(i)}: ${e.message}`);
        }
      }
    }
    if (problems.size) {
      const list = [...problems].sort(([a], [b]) => a - b).map(([, p]) => p);
      throw new Error(`train: bad training samples (on_bad_sample 'fail'; the first ${list.length}):\n  ${list.join('\n  ')}`);
    }
  }

  let consecutive = 0;
  let stepsThisCall = 0;
  const save = async <S extends ParamState>(what: string, si: number, step: number, state: TrainingState<S>) => {
    try {
      await saveCheckpoint(ckptPath, state);
    } catch (e) {
      if (!(e instanceof NonFiniteError)) throw e;
      throw new TrainingDivergedError(`train: stage '${recipe.stages[Math.min(si, recipe.stages.length - 1)].name}' step ${step}: not saving the ${what}: ${e.found.name} holds ${e.found.value} (element ${e.found.index}); ${describeCheckpoint(result.checkpoint, recipe)}`, result.checkpoint);
    }
    result.checkpoint = { path: ckptPath, stage: si, step };
  };
  const extra = (si: number, step: number) => ({ stage: si, step, recipe: recipe.name, fingerprint });

  for (let si = 0; si < recipe.stages.length; si++) {
    const stage = recipe.stages[si];
    if (resumeAt && resumeAt.stage > si) continue; // finished before the interruption; later weights are in the checkpoint
    const named = applyTrainable(model, stage);
    const params = named.map(([, p]) => p);
    const scale = stage.non_llm_lr_scale ?? 1;
    const groups = paramGroups(named, {
      weightDecay: stage.weight_decay ?? LLAVA_UHD_ADAMW.weightDecay,
      lrScale: (n) => (n.startsWith('llm.') ? 1 : scale),
    });
    const opt = new AdamW(groups, { lr: stage.lr, betas: [...LLAVA_UHD_ADAMW.betas] as [number, number], weightDecay: stage.weight_decay ?? LLAVA_UHD_ADAMW.weightDecay });
    try {
      const sched = new LRScheduler(opt, warmupCosine({ peak: stage.lr, min: stage.min_lr, warmupSteps: stage.warmup_steps, totalSteps: stage.steps }));
      let step = 0;
      if (resumeAt) {
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
          result.seconds = (performance.now() - began) / 1000;
          return result;
        }
        if (opts.signal?.aborted) {
          const c = result.checkpoint;
          if (step > 0 && !(c && c.stage === si && c.step === step)) await save('checkpoint', si, step, { model, optimizer: opt, scheduler: sched, step, extra: extra(si, step) });
          result.interrupted = true;
          result.seconds = (performance.now() - began) / 1000;
          return result;
        }
        const t0 = performance.now();
        // the checked samples of each micro-batch; bad ones are left out (and reported once)
        const micro: Encoded[][] = [];
        for (let a = 0; a < accum; a++) {
          const idx = batchIndices(opts.train.size, stage.batch_size, step * accum + a, seed + si * 1000003);
          const enc = idx.map((i) => sampleFor(i, stage)).filter((e): e is Encoded => e !== null);
          if (enc.length) micro.push(enc);
        }
        // every micro-batch's loss and then the gradient norm are queued before anything is read:
        // one read-back per step (each one drains the GPU's queue while the host waits)
        const queued: Tensor[] = [];
        let skipped: string | undefined;
        let gradNorm = NaN;
        if (micro.length === 0) {
          skipped = 'every sample of this step is bad';
        } else {
          try {
            for (const enc of micro) {
              queued.push(tidy(() => {
                const ls = sequenceLosses(model, enc, stage, opts.device);
                const total = ls.reduce((acc: Tensor | null, l) => (acc ? ag.add(acc, l) : l), null)!;
                const mean = ag.div(total, ls.length * micro.length);
                mean.backward();
                return mean;
              }));
            }
            queued.push(tidy(() => clipGradNorm(params, stage.clip_norm ?? LLAVA_UHD_ADAMW.maxGradNorm)));
            const read = await readScalars(queued);
            let lossSum = 0;
            for (let m = 0; m < micro.length; m++) lossSum += read[m] * micro.length;
            lastLoss = lossSum / micro.length;
            gradNorm = read[micro.length];
          } finally {
            for (const t of queued) t.dispose();
          }
          if (Number.isFinite(lastLoss) && Number.isFinite(gradNorm)) {
            consecutive = 0;
            tidy(() => {
              opt.step();
              return undefined;
            });
          } else {
            skipped = `non-finite ${Number.isFinite(lastLoss) ? '' : `loss ${lastLoss}, `}gradient norm ${gradNorm}`;
            consecutive++;
            result.nonFiniteSteps++;
          }
        }
        const lr = opt.groups[0].lr;
        tidy(() => {
          opt.zeroGrad();
          sched.step();
          return undefined;
        });
        step++;
        stepsThisCall++;
        const info: StepInfo = {
          stage: stage.name, stageIndex: si, step, steps: stage.steps, loss: micro.length ? lastLoss : NaN, gradNorm, lr,
          samplesPerSecond: (stage.batch_size * accum) / ((performance.now() - t0) / 1000),
          ...(skipped ? { skipped } : {}),
        };
        appendFileSync(metricsPath, JSON.stringify({ ...info, time: new Date().toISOString() }) + '\n');
        opts.events?.step?.(info);
        if (skipped && micro.length) {
          const why = policy.action === 'stop'
            ? "non_finite.action is 'stop'"
            : consecutive >= policy.max_consecutive
              ? `${consecutive} such steps in a row (non_finite.max_consecutive ${policy.max_consecutive})`
              : result.nonFiniteSteps >= policy.max_total
                ? `${result.nonFiniteSteps} such steps in this run (non_finite.max_total ${policy.max_total})`
                : null;
          if (why) {
            throw new TrainingDivergedError(
              `train: stage '${stage.name}' step ${step}: ${skipped}; stopping: ${why}. Skipped steps update no weights; ${describeCheckpoint(result.checkpoint, recipe)}. Lower the learning rate, or look for bad values in the data`,
              result.checkpoint,
            );
          }
          notice(`stage '${stage.name}' step ${step}: ${skipped}; the step was skipped (${result.nonFiniteSteps} so far)`);
        }
        const evalEvery = recipe.eval_every ?? 0;
        if (opts.val && evalEvery > 0 && step % evalEvery === 0 && step < stage.steps) {
          const v = await validationLoss(model, tok, opts.val, stage, opts.device, opts.valSamples ?? 16);
          appendFileSync(metricsPath, JSON.stringify({ stage: stage.name, step, val_loss: v }) + '\n');
          opts.events?.validation?.({ stage: stage.name, step, loss: v });
          writeCurves(opts.outDir);
        }
        const every = recipe.checkpoint_every ?? 0;
        if (every > 0 && step % every === 0 && step < stage.steps) {
          await save('checkpoint', si, step, { model, optimizer: opt, scheduler: sched, step, extra: extra(si, step) });
        }
      }
      if (opts.val) {
        const v = await validationLoss(model, tok, opts.val, stage, opts.device, opts.valSamples ?? 16);
        appendFileSync(metricsPath, JSON.stringify({ stage: stage.name, step, val_loss: v }) + '\n');
        opts.events?.validation?.({ stage: stage.name, step, loss: v });
      }
      writeCurves(opts.outDir); // curves.svg beside metrics.jsonl, at each stage's end
      const bad = await findNonFinite(model.stateDict());
      if (bad) {
        throw new TrainingDivergedError(`train: stage '${stage.name}' ended with ${bad.name} holding ${bad.value} (element ${bad.index}); not saving its weights; ${describeCheckpoint(result.checkpoint, recipe)}`, result.checkpoint);
      }
      await saveWeights(model, join(opts.outDir, `stage-${si}-${stage.name}.safetensors`), model.config);
      // the next stage starts from these weights with a fresh optimizer
      await save('checkpoint', si + 1, 0, { model, step: 0, extra: extra(si + 1, 0) });
      result.finalLoss.push(lastLoss);
      opts.events?.stageEnd?.(si, stage, (performance.now() - stageBegan) / 1000);
    } finally {
      ag.zeroGrad(params);
      opt.dispose();
    }
  }
  for (const p of model.parameters()) p.requiresGrad = true;
  result.seconds = (performance.now() - began) / 1000;
  return result;
}
