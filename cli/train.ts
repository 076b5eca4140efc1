/** `uhd train` and `uhd eval`: the training pipeline and evaluation from the command line. */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { closeDevice as shutdown, parseDevice } from '../backends/index.js';
import { loadDatasets, validateData, type Datasets } from '../llava-uhd/datasets.js';
import { evaluate, type EvalResult } from '../llava-uhd/evaluate.js';
import { loadModel } from '../llava-uhd/load.js';
import type { LlavaUHD } from '../llava-uhd/model.js';
import type { Tokenizer } from '../llava-uhd/tokenizer.js';
import { train, validateRecipe, type Recipe, type TrainResult } from '../llava-uhd/train.js';
import type { Device } from '../tensor/index.js';
import { progress } from './progress.js';

const RECIPES = join(dirname(fileURLToPath(import.meta.url)), '..', 'recipes');

/** A shipped recipe by name (recipes/<name>.json) or a JSON file; validated, data included. */
export function resolveRecipe(nameOrPath: string): { recipe: Recipe; baseDir: string } {
  const shipped = join(RECIPES, `${nameOrPath}.json`);
  const path = existsSync(shipped) ? shipped : resolve(nameOrPath);
  if (!existsSync(path)) throw new Error(`recipe: '${nameOrPath}' is neither a shipped recipe (recipes/*.json) nor a file`);
  let recipe: Recipe;
  try {
    recipe = JSON.parse(readFileSync(path, 'utf8')) as Recipe;
  } catch (e) {
    throw new Error(`recipe: ${path}: not valid JSON (${(e as Error).message})`);
  }
  validateRecipe(recipe, path);
  validateData(recipe.data, path);
  return { recipe, baseDir: dirname(path) };
}

/** Trains with bars per stage and a line per validation; returns the pipeline's result. */
export async function trainWithProgress(model: LlavaUHD, tok: Tokenizer, recipe: Recipe, data: Datasets, o: { device: Device; out: string; resume?: boolean; label?: string }): Promise<TrainResult> {
  let bar: ReturnType<typeof progress> | null = null;
  const tag = o.label ? `${o.label} ` : '';
  return train(model, tok, recipe, {
    device: o.device,
    outDir: o.out,
    train: data.train,
    val: data.val && data.val.size > 0 ? data.val : undefined,
    resume: o.resume,
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
  config: string;
  out: string;
  device: string;
  resume?: boolean;
  weights?: string;
}

export async function trainCommand(o: TrainCliOptions): Promise<void> {
  const { recipe, baseDir } = resolveRecipe(o.recipe);
  const data = await loadDatasets(recipe.data!, baseDir);
  for (const p of data.problems) console.error(`skipped ${p}`);
  try {
    const { model, tok, device } = await loadModel({ config: o.config, weights: o.weights, randomInit: !o.weights, device: parseDevice('--device', o.device) });
    console.error(`training ${o.config} with recipe ${recipe.name} on ${device}: ${data.train.size} training samples -> ${o.out}`);
    const r = await trainWithProgress(model, tok, recipe, data, { device, out: o.out, resume: o.resume });
    console.log(JSON.stringify({ seconds: Math.round(r.seconds), final_loss: r.finalLoss }, null, 2));
  } finally {
    shutdown();
  }
}

export interface EvalCliOptions {
  config: string;
  weights: string;
  recipe?: string;
  data?: string;
  n?: string;
  device: string;
  json?: boolean;
}

export async function evalCommand(o: EvalCliOptions): Promise<void> {
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
    const { model, tok, device } = await loadModel({ config: o.config, weights: o.weights, device: parseDevice('--device', o.device) });
    const r = await evaluateWithProgress(model, tok, test, { device, limit: o.n ? Number(o.n) : undefined });
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
