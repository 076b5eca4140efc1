/**
 * `uhd start` (`npm start`): the main job. Trains a tiny LLaVA-UHD v4 with the intra-ViT
 * compressor and the post-ViT baseline on the synthetic high-resolution task, evaluates both,
 * prints them side by side, saves both checkpoints, and answers a question about a freshly
 * generated image.
 */
import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { autoDevice, closeDevice as shutdown, openDevice, parseDevice } from '../backends/index.js';
import { CONFIGS, type LlavaUHDConfig } from '../llava-uhd/config.js';
import { chanceBaseline, generateSample, majorityBaseline, type QuestionType, type SyntheticOptions, type SyntheticSplit } from '../llava-uhd/data/synthetic.js';
import { loadDatasets } from '../llava-uhd/datasets.js';
import type { EvalResult } from '../llava-uhd/evaluate.js';
import { answer } from '../llava-uhd/evaluate.js';
import { encodePng } from '../llava-uhd/image.js';
import { LlavaUHD } from '../llava-uhd/model.js';
import { tokenizerFor } from '../llava-uhd/load.js';
import type { Tokenizer } from '../llava-uhd/tokenizer.js';
import { saveWeights } from '../llava-uhd/weights.js';
import { manualSeed, type Device } from '../tensor/index.js';
import { intFlag } from './options.js';
import { evaluateWithProgress, resolveRecipe, trainWithProgress } from './train.js';

export interface StartOptions {
  steps?: string;
  device: string;
  out: string;
  test?: string;
}

interface Outcome {
  label: string;
  config: LlavaUHDConfig;
  model: LlavaUHD;
  eval: EvalResult;
  /** The same test split with the thumbnail only (no slices): what slicing adds. */
  thumbnailOnly: EvalResult;
  trainSeconds: number;
}

/** How the start banner describes each question type. */
const TASKS: Record<QuestionType, string> = {
  count: 'count the dots',
  colour: "name the small square's colour",
  read: 'read the boxed digit',
  stripes: 'name the top colour of 1 px stripes drawn on the grey of their mean',
};

const pct = (x: number) => `${(100 * x).toFixed(1)}%`;

export async function startCommand(o: StartOptions): Promise<void> {
  const chosen = o.device === 'auto' ? null : parseDevice('--device', o.device, ['auto']);
  const { recipe, baseDir } = resolveRecipe('tiny-demo');
  if (o.steps) {
    const steps = Number(o.steps);
    if (!Number.isInteger(steps) || steps < 1) throw new Error(`--steps: '${o.steps}' is not a positive integer`);
    const last = recipe.stages[recipe.stages.length - 1];
    last.steps = steps;
    last.warmup_steps = Math.min(last.warmup_steps, steps);
  }
  const spec = recipe.data!;
  const test = intFlag(o.test, '--test', { min: 1 });
  if (test !== undefined && spec.kind === 'synthetic') spec.test = test;
  const data = await loadDatasets(spec, baseDir);
  const out = resolve(o.out);
  mkdirSync(out, { recursive: true });
  let device: Device;
  if (chosen) await openDevice((device = chosen));
  else {
    const auto = await autoDevice();
    device = auto.device;
    console.log(`--device auto: ${device} (${auto.reason})`);
  }
  const tok = await tokenizerFor(CONFIGS.tiny);
  console.log(
    `LLaVA-UHD v4, tiny: ${recipe.stages.map((s) => `${s.name} ${s.steps} steps x ${s.batch_size}`).join(', ')} on the synthetic task ` +
      `(${data.test!.size} test questions: ${(data.test as SyntheticSplit).options.types.map((t) => TASKS[t]).join('; ')}; the thumbnail alone cannot resolve them). Device: ${device}.\n`,
  );
  const outcomes: Outcome[] = [];
  try {
    for (const [label, name] of [['with D', 'tiny'], ['baseline', 'tiny-baseline']] as const) {
      const config = structuredClone(CONFIGS[name]);
      manualSeed(0);
      const model = new LlavaUHD(config, { device });
      const dir = join(out, name);
      // the main job always trains afresh (its folder holds the previous run's files)
      const r = await trainWithProgress(model, tok, recipe, data, { device, out: dir, label, fresh: true });
      await saveWeights(model, join(dir, 'final.safetensors'), config);
      const ev = await evaluateWithProgress(model, tok, data.test!, { device, label });
      const thumbnailOnly = await evaluateWithProgress(model, tok, data.test!, { device, label: `${label}, thumbnail only`, maxSlices: 1 });
      outcomes.push({ label, config, model, eval: ev, thumbnailOnly, trainSeconds: r.seconds });
    }
    report(outcomes, data.test as SyntheticSplit, data.train as SyntheticSplit, out);
    await askAboutFreshImage(outcomes[0], tok, device, out, (data.test as SyntheticSplit).options);
  } finally {
    shutdown();
  }
}

function report(outcomes: Outcome[], test: SyntheticSplit, trainSplit: SyntheticSplit, out: string): void {
  const chance = chanceBaseline(test.questions());
  const majority = majorityBaseline(trainSplit.questions(), test.questions());
  const types = Object.keys(outcomes[0].eval.byType).sort();
  const rows: [string, ...string[]][] = [
    ['', ...outcomes.map((x) => `${x.label} (${x.config.insert_layer_id === null ? 'post-ViT 16x' : `D after layer ${x.config.insert_layer_id}`})`), 'chance', 'majority'],
    ['accuracy (exact match)', ...outcomes.map((x) => pct(x.eval.accuracy)), pct(chance.overall), pct(majority.overall)],
    ...types.map((t): [string, ...string[]] => [
      `  ${t}`,
      ...outcomes.map((x) => `${pct(x.eval.byType[t].accuracy)} (${x.eval.byType[t].correct}/${x.eval.byType[t].total})`),
      pct(chance.byType.find((b) => b.type === t)?.accuracy ?? NaN),
      pct(majority.byType.find((b) => b.type === t)?.accuracy ?? NaN),
    ]),
    ['accuracy, thumbnail only (no slices)', ...outcomes.map((x) => pct(x.thumbnailOnly.accuracy)), '', ''],
    ['visual tokens per image (LLM)', ...outcomes.map((x) => x.eval.visualTokensPerImage.toFixed(1)), '', ''],
    ['visual encoding GMACs per image', ...outcomes.map((x) => x.eval.gmacsPerImage.toFixed(3)), '', ''],
    ['measured encode ms per image', ...outcomes.map((x) => x.eval.encodeMsPerImage.toFixed(1)), '', ''],
    ['training time', ...outcomes.map((x) => `${x.trainSeconds.toFixed(0)} s`), '', ''],
  ];
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  console.log('\n' + rows.map((r) => r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]) : cell.padStart(widths[c]))).join('  ')).join('\n'));
  const [d, b] = outcomes;
  console.log(
    `\nD vs baseline: ${pct(1 - d.eval.gmacsPerImage / b.eval.gmacsPerImage)} fewer visual-encoding MACs, ` +
      `encode time ratio baseline/D ${(b.eval.encodeMsPerImage / d.eval.encodeMsPerImage).toFixed(2)}. Checkpoints: ${out}/{tiny,tiny-baseline}/final.safetensors\n`,
  );
}

async function askAboutFreshImage(x: Outcome, tok: Tokenizer, device: Device, out: string, options: SyntheticOptions): Promise<void> {
  // a seed no split uses: an image nobody has seen
  const o = { ...options, seed: 424242 };
  const s = generateSample(7, 'test', o);
  const path = join(out, 'fresh-question.png');
  await encodePng(s.image, path);
  const a = await answer(x.model, tok, s, { device });
  console.log(`A fresh image: ${path}\n  Q: ${s.question}\n  model (${x.label}): ${JSON.stringify(a.text)}   (truth: ${JSON.stringify(s.answer)})`);
}
