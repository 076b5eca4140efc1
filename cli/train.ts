/** `uhd train` and `uhd eval`: the training pipeline and evaluation from the command line. */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chooseDevice, closeDevice as shutdown, parseDevice } from '../backends/index.js';
import { loadDatasets, validateData, type Datasets, type DataSpec } from '../llava-uhd/datasets.js';
import { evaluate, type EvalResult } from '../llava-uhd/evaluate.js';
import { loadModel } from '../llava-uhd/load.js';
import type { LlavaUHD } from '../llava-uhd/model.js';
import { parseJsonText } from '../llava-uhd/recipe.js';
import type { Tokenizer } from '../llava-uhd/tokenizer.js';
import { train, validateRecipe, type Recipe, type TrainResult } from '../llava-uhd/train.js';
import type { Device } from '../tensor/index.js';
import type { VlmevalCliOptions } from './eval.js';
import { FlagError, intFlag } from './options.js';
import { progress } from './progress.js';

const RECIPES = join(dirname(fileURLToPath(import.meta.url)), '..', 'recipes');

/** A shipped recipe by name (recipes/<name>.json) or a JSON file; validated, data included. */
export function resolveRecipe(nameOrPath: string): { recipe: Recipe; baseDir: string } {
  const shipped = join(RECIPES, `${nameOrPath}.json`);
  const path = existsSync(shipped) ? shipped : resolve(nameOrPath);
  if (!existsSync(path)) throw new Error(`recipe: '${nameOrPath}' is neither a shipped recipe (recipes/*.json) nor a file`);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new Error(`recipe: cannot read ${path}: ${(e as Error).message}`);
  }
  const recipe = validateRecipe(parseJsonText(text, path), path);
  validateData(recipe.data, path);
  return { recipe, baseDir: dirname(path) };
}

/**
 * What identifies a recipe's training data in a checkpoint's fingerprint: the synthetic spec, or
 * the sha256 of the training JSONL file (its order and content decide the data order).
 */
export function dataIdentity(spec: DataSpec, baseDir: string): string {
  if (spec.kind !== 'jsonl') return `${spec.kind} ${JSON.stringify(spec)}`;
  const path = resolve(baseDir, spec.train);
  return `jsonl train file sha256:${createHash('sha256').update(readFileSync(path)).digest('hex')}`;
}

export interface TrainProgressOptions {
  device: Device;
  out: string;
  resume?: boolean;
  fresh?: boolean;
  forceResume?: boolean;
  /** Refuse to start if any training sample is bad (default: skip them, reporting each). */
  strictData?: boolean;
  label?: string;
  signal?: AbortSignal;
  dataId?: string;
  describeSample?: (i: number) => string;
}

/** Trains with bars per stage and a line per validation and notice; returns the pipeline's result. */
export async function trainWithProgress(model: LlavaUHD, tok: Tokenizer, recipe: Recipe, data: Datasets, o: TrainProgressOptions): Promise<TrainResult> {
  let bar: ReturnType<typeof progress> | null = null;
  const tag = o.label ? `${o.label} ` : '';
  return train(model, tok, recipe, {
    device: o.device,
    outDir: o.out,
    train: data.train,
    val: data.val && data.val.size > 0 ? data.val : undefined,
    resume: o.resume,
    fresh: o.fresh,
    forceResume: o.forceResume,
    onBadSample: o.strictData ? 'fail' : undefined,
    signal: o.signal,
    dataId: o.dataId,
    describeSample: o.describeSample,
    events: {
      stageStart: (i, s, from) => {
        bar = progress(`${tag}stage ${i + 1}/${recipe.stages.length} ${s.name}`, s.steps, ['loss', 'lr', 'samples/s']);
        bar.update(from);
      },
      step: (s) => bar?.update(s.step, { loss: s.loss.toFixed(3), lr: s.lr.toExponential(1), 'samples/s': s.samplesPerSecond.toFixed(1) }),
      validation: (v) => {
        if (process.stderr.isTTY) return;
        console.error(`${tag}${v.stage} step ${v.step}: validation loss ${v.loss.toFixed(3)}`);
      },
      stageEnd: (i, s, secs) => {
        bar?.stop();
        console.error(`${tag}stage ${s.name} done in ${secs.toFixed(0)}s`);
      },
      notice: (m) => console.error(`${process.stderr.isTTY ? '\n' : ''}${tag}${m}`),
    },
  });
}

export async function evaluateWithProgress(model: LlavaUHD, tok: Tokenizer, data: NonNullable<Datasets['test']>, o: { device: Device; limit?: number; label?: string; maxSlices?: number }): Promise<EvalResult> {
  const n = Math.min(o.limit ?? data.size, data.size);
  const bar = progress(`${o.label ? `${o.label} ` : ''}evaluate`, n);
  const r = await evaluate(model, tok, data, { device: o.device, limit: n, maxSlices: o.maxSlices, onSample: (done) => bar.update(done) });
  bar.stop();
  return r;
}

export interface TrainCliOptions {
  recipe: string;
  config?: string;
  out: string;
  device: string;
  resume?: boolean;
  forceResume?: boolean;
  fresh?: boolean;
  strictData?: boolean;
  weights?: string;
}

/** Exit code of a run stopped by Ctrl-C after saving its checkpoint (128 + SIGINT, the shell's convention). */
export const EXIT_INTERRUPTED = 130;

/**
 * Ctrl-C while training: the first asks for a checkpoint at the next step boundary (the run then
 * exits with EXIT_INTERRUPTED); the handler then steps aside, so a second Ctrl-C ends the process
 * at once by the default action of SIGINT (the lock and any half-written temp file are cleaned up
 * by the next start).
 */
function interruptOnSigint(): { signal: AbortSignal; dispose(): void } {
  const controller = new AbortController();
  const onSigint = () => {
    process.off('SIGINT', onSigint);
    console.error('\ninterrupt: saving a checkpoint at the end of this step (Ctrl-C again quits at once, without saving)');
    controller.abort();
  };
  process.on('SIGINT', onSigint);
  return { signal: controller.signal, dispose: () => process.off('SIGINT', onSigint) };
}

export async function trainCommand(o: TrainCliOptions): Promise<void> {
  if (o.device && o.device !== 'auto') parseDevice('--device', o.device, ['auto']);
  if (o.fresh && (o.resume || o.forceResume)) throw new FlagError('--fresh', 'starts the run afresh; it cannot be combined with --resume / --force-resume');
  const { recipe, baseDir } = resolveRecipe(o.recipe);
  const spec = recipe.data!;
  const data = await loadDatasets(spec, baseDir);
  for (const p of data.problems) console.error(`skipped ${p}`);
  const trainPath = spec.kind === 'jsonl' ? resolve(baseDir, spec.train) : null;
  const describeSample = (i: number) => {
    const line = (data.train.get(i) as { line?: unknown }).line;
    return trainPath && typeof line === 'number' ? `${trainPath}:${line}` : `training sample ${i}`;
  };
  const interrupt = interruptOnSigint();
  try {
    const device = await chooseDevice('--device', o.device ?? 'auto');
    const { model, tok, device: used } = await loadModel({ config: o.config, weights: o.weights, randomInit: !o.weights, device });
    console.error(`training ${o.config ?? (o.weights ? `the config of ${o.weights}` : 'tiny')} with recipe ${recipe.name} on ${used}: ${data.train.size} training samples -> ${o.out}`);
    const r = await trainWithProgress(model, tok, recipe, data, {
      device: used, out: o.out, resume: o.resume || o.forceResume, forceResume: o.forceResume, fresh: o.fresh, strictData: o.strictData,
      signal: interrupt.signal, dataId: dataIdentity(spec, baseDir), describeSample,
    });
    if (r.interrupted) {
      const c = r.checkpoint;
      console.error(c ? `interrupted: checkpoint ${c.path} (stage ${c.stage + 1}, step ${c.step}); continue with --resume` : 'interrupted before the first step: nothing to save');
      process.exitCode = EXIT_INTERRUPTED;
      return;
    }
    console.log(JSON.stringify({ seconds: Math.round(r.seconds), final_loss: r.finalLoss, non_finite_steps: r.nonFiniteSteps, bad_samples: r.badSamples.length, ...(r.alreadyComplete ? { already_complete: true } : {}) }, null, 2));
  } finally {
    interrupt.dispose();
    shutdown();
  }
}

export interface EvalCliOptions extends VlmevalCliOptions {
  recipe?: string;
}

export async function evalCommand(o: EvalCliOptions): Promise<void> {
  // a VLMEvalKit benchmark (or a predictions file to score) goes the paper's way (cli/eval.ts)
  if (o.predictions || o.data?.toLowerCase().endsWith('.tsv')) return (await import('./eval.js')).vlmevalCommand(o);
  const limit = intFlag(o.limit ?? o.n, o.limit ? '--limit' : '--n', { min: 1 });
  if (o.device && o.device !== 'auto') parseDevice('--device', o.device, ['auto']);
  if (!o.weights) throw new Error('--weights: required (the trained weights to evaluate)');
  // a user's JSONL file is evaluated whole; otherwise the recipe's test split
  const data = o.data
    ? await loadDatasets({ kind: 'jsonl', train: o.data, on_bad: 'skip' })
    : await (async () => {
        const { recipe, baseDir } = resolveRecipe(o.recipe ?? 'tiny-demo');
        return loadDatasets(recipe.data!, baseDir);
      })();
  for (const p of data.problems) console.error(`skipped ${p}`);
  const test = o.data ? data.train : (data.test ?? data.train);
  try {
    const { model, tok, device } = await loadModel({ config: o.config, weights: o.weights, device: await chooseDevice('--device', o.device ?? 'auto') });
    const r = await evaluateWithProgress(model, tok, test, { device, limit });
    if (o.json) {
      console.log(JSON.stringify({ ...r, answers: r.answers.slice(0, 20) }, null, 2));
      return;
    }
    console.log(`accuracy ${(100 * r.accuracy).toFixed(1)}% on ${r.samples} samples`);
    for (const [t, b] of Object.entries(r.byType)) console.log(`  ${t.padEnd(8)} ${(100 * b.accuracy).toFixed(1)}% (${b.correct}/${b.total})`);
    console.log(`visual tokens per image ${r.visualTokensPerImage.toFixed(1)}, visual encoding ${r.gmacsPerImage.toFixed(3)} GMACs per image, encode ${r.encodeMsPerImage.toFixed(1)} ms per image`);
  } finally {
    shutdown();
  }
}
