/**
 * `uhd start` (`npm start`): the main job, the paper's Table 4 in miniature. From the pretrained
 * baseline (pretrained/mini, `uhd pretrain`) it inserts D after layer k by parameter reuse and,
 * for contrast, a randomly initialised D; measures at step 0 how far each moves the tower's output
 * from the baseline's (cosine against the baseline's 2x2-pooled final features) and the answer
 * loss; fine-tunes the baseline, both D models and parameter-free 2x2 average pooling in D's place with the same recipe and budget
 * (recipes/mini-finetune.json); prints accuracy per question type, visual-encoding MACs and
 * measured encode time side by side; saves the three checkpoint folders and answers a question
 * about a freshly generated image.
 */
import { mkdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chooseDevice, closeDevice } from '../backends/index.js';
import { saveCheckpointFolder } from '../llava-uhd/checkpoint-folder.js';
import { MIX_CLASSES, MIX_LABELS, mixSample, type MixLabel, type MixSample } from '../llava-uhd/data/pretrain-mix.js';
import { loadDatasets } from '../llava-uhd/datasets.js';
import { answer, type EvalResult } from '../llava-uhd/evaluate.js';
import { encodePng } from '../llava-uhd/image.js';
import { loadModel } from '../llava-uhd/load.js';
import { insertCompressor, featureAgreement } from '../llava-uhd/insert.js';
import type { LlavaUHD } from '../llava-uhd/model.js';
import { parseCurves } from '../llava-uhd/report/curves.js';
import { renderReportPng, writeReport, type ReportInput } from '../llava-uhd/report/html.js';
import { mergeMap, mergeMapSvg, sliceGridSvg } from '../llava-uhd/report/picture.js';
import { METRICS_FILE } from '../llava-uhd/run-dir.js';
import type { Tokenizer } from '../llava-uhd/tokenizer.js';
import { validationLoss, type StageSpec } from '../llava-uhd/train.js';
import type { Device } from '../tensor/index.js';
import { intFlag } from './options.js';
import { evaluateWithProgress, resolveRecipe, trainWithProgress } from './train.js';

export interface StartOptions {
  steps?: string;
  device: string;
  out: string;
  test?: string;
  /** The pretrained baseline folder (default pretrained/mini). */
  weights?: string;
  /** D's layer k (default 2). */
  insertLayer?: string;
}

/** Where the repository keeps the pretrained baseline. */
export const PRETRAINED = join(dirname(fileURLToPath(import.meta.url)), '..', 'pretrained', 'mini');

interface Contender {
  label: string;
  name: string;
  model: LlavaUHD;
  step0?: { cosine: number; loss: number };
  eval?: EvalResult;
  trainSeconds?: number;
}

const pct = (x: number) => `${(100 * x).toFixed(1)}%`;

export async function startCommand(o: StartOptions): Promise<void> {
  const { recipe, baseDir } = resolveRecipe('mini-finetune');
  const stage: StageSpec = recipe.stages[0];
  const steps = intFlag(o.steps, '--steps', { min: 1 });
  if (steps !== undefined) {
    stage.steps = steps;
    stage.warmup_steps = Math.min(stage.warmup_steps, steps);
  }
  const spec = recipe.data!;
  const test = intFlag(o.test, '--test', { min: 1 });
  if (test !== undefined && spec.kind === 'pretrain-mix') spec.test = test;
  const k = intFlag(o.insertLayer, '--insert-layer', { min: 0 }, 2);
  const data = await loadDatasets(spec, baseDir);
  const types: readonly MixLabel[] = spec.kind === 'pretrain-mix' && spec.types ? spec.types : MIX_LABELS;
  const out = resolve(o.out);
  mkdirSync(out, { recursive: true });
  const device = await chooseDevice('--device', o.device, (l) => console.log(l));
  try {
    const weights = o.weights ? resolve(o.weights) : PRETRAINED;
    const loaded = await loadModel({ weights, device });
    const tok = loaded.tok;
    const baseline = loaded.model;
    if (baseline.vit_merger) throw new Error(`--weights: ${weights} holds a model with D; the main job starts from a baseline (no vit_merger)`);
    if (k >= baseline.config.vision_config.num_hidden_layers) throw new Error(`--insert-layer: ${k} is past the tower's last layer (${baseline.config.vision_config.num_hidden_layers - 1})`);
    const v = baseline.config.vision_config;
    console.log(
      `LLaVA-UHD v4 in miniature, from ${weights} (tower ${v.hidden_size} x ${v.num_hidden_layers} layers, pretrained by uhd pretrain). ` +
        `Each model fine-tunes ${stage.steps} steps x ${stage.batch_size} on the pretraining mix's ${types.join(', ')} questions (${stage.max_slices > 1 ? `thumbnail + up to ${stage.max_slices} slices` : 'thumbnails'}), ${data.test!.size} test questions. Device: ${device}.\n`,
    );
    const contenders: Contender[] = [
      { label: 'baseline (post-ViT 16x)', name: 'baseline', model: baseline },
      // llava-uhd/insert.ts: tower and LLM copied, the connector's last round the only one, D by
      // parameter reuse from layer k or drawn at random; avg-pool (Table 4) has no parameters
      { label: `D after layer ${k}, reuse`, name: 'reuse-d', model: insertCompressor(baseline, { variant: 'win-attn-reused', layer: k, init: 'reuse' }) },
      { label: `D after layer ${k}, random`, name: 'random-d', model: insertCompressor(baseline, { variant: 'win-attn-reused', layer: k, init: 'random', seed: recipe.seed ?? 0 }) },
      { label: `avg-pool after layer ${k}`, name: 'avg-pool', model: insertCompressor(baseline, { variant: 'avg-pool', layer: k, init: 'random' }) },
    ];
    // step 0: how far D moves the pretrained output, before any fine-tuning
    const probe = data.val && data.val.size > 0 ? data.val : data.test!;
    for (const c of contenders) {
      const loss = await validationLoss(c.model, tok, probe, stage, device, probe.size);
      const cosine = c.model.vit_merger ? (await featureAgreement(baseline, c.model, probe, { tok, device, stage, limit: 8 })).cosine : 1;
      c.step0 = { cosine, loss };
    }
    console.log('Step 0 (before fine-tuning):');
    for (const c of contenders) {
      console.log(`  ${c.label.padEnd(26)} cosine vs the baseline's 2x2-pooled features ${c.step0!.cosine.toFixed(3)}, answer loss ${c.step0!.loss.toFixed(3)}`);
    }
    console.log('');
    // the same recipe, data order and budget for each (the D models hold copies of the baseline's weights)
    for (const c of contenders) {
      const dir = join(out, c.name);
      const r = await trainWithProgress(c.model, tok, recipe, data, { device, out: join(dir, 'run'), label: c.name, fresh: true });
      c.trainSeconds = r.seconds;
      c.eval = await evaluateWithProgress(c.model, tok, data.test!, { device, label: c.name, maxSlices: stage.max_slices });
      await saveCheckpointFolder(c.model, dir);
    }
    const rows = table(contenders, out);
    const fresh = await askAboutFreshImage(contenders, tok, device, out, MIX_LABELS.length + MIX_LABELS.indexOf(types[0]), stage.max_slices);
    const reportPath = join(out, 'report.html');
    const map = await mergeMap(contenders[1].model, fresh.sample.images[0], { maxSlices: 4 });
    const reportInput: ReportInput = {
        title: 'LLaVA-UHD v4 in miniature: D inserted into a pretrained baseline',
        summary: `From ${weights}: the baseline, D after layer ${k} by parameter reuse and D drawn at random, each fine-tuned ${stage.steps} steps x ${stage.batch_size} on the ${types.join(', ')} questions (${device}).`,
        table: { header: rows[0], rows: rows.slice(1) },
        curves: contenders.map((c) => {
          const curves = parseCurves(readFileSync(join(out, c.name, 'run', METRICS_FILE), 'utf8'));
          return { label: c.label, loss: curves.loss, valLoss: curves.valLoss };
        }),
        sliceGridSvg: sliceGridSvg(fresh.sample.images[0], contenders[1].model, 4),
        mergeMapSvg: mergeMapSvg(map),
        question: { text: fresh.sample.question, truth: fresh.sample.answer, answers: fresh.answers },
        footer: `npm start (uhd start) on ${device}`,
    };
    writeReport(reportInput, reportPath);
    await renderReportPng(reportInput, join(out, 'report.png'));
    console.log(`Report: ${reportPath} (and a picture of it: ${join(out, 'report.png')})`);
  } finally {
    closeDevice();
  }
}

function table(cs: Contender[], out: string): [string, ...string[]][] {
  const types = Object.keys(cs[0].eval!.byType).sort();
  const chance = (t: string) => (MIX_CLASSES[t as MixLabel] ? 1 / MIX_CLASSES[t as MixLabel].length : NaN);
  const rows: [string, ...string[]][] = [
    ['', ...cs.map((c) => c.label), 'chance'],
    ['step 0: cosine vs baseline features', ...cs.map((c) => c.step0!.cosine.toFixed(3)), ''],
    ['step 0: answer loss', ...cs.map((c) => c.step0!.loss.toFixed(3)), ''],
    ['accuracy after fine-tuning', ...cs.map((c) => pct(c.eval!.accuracy)), pct(types.reduce((a, t) => a + chance(t) * cs[0].eval!.byType[t].total, 0) / cs[0].eval!.samples)],
    ...types.map((t): [string, ...string[]] => [`  ${t}`, ...cs.map((c) => `${pct(c.eval!.byType[t].accuracy)} (${c.eval!.byType[t].correct}/${c.eval!.byType[t].total})`), pct(chance(t))]),
    ['visual tokens per image (LLM)', ...cs.map((c) => c.eval!.visualTokensPerImage.toFixed(1)), ''],
    ['visual encoding GMACs per image', ...cs.map((c) => c.eval!.gmacsPerImage.toFixed(4)), ''],
    ['measured encode ms per image', ...cs.map((c) => c.eval!.encodeMsPerImage.toFixed(1)), ''],
    ['fine-tuning time', ...cs.map((c) => `${c.trainSeconds!.toFixed(0)} s`), ''],
  ];
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  console.log('\n' + rows.map((r) => r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]) : cell.padStart(widths[c]))).join('  ')).join('\n'));
  const [b, d] = cs;
  console.log(
    `\nD (reuse) vs baseline: ${pct(1 - d.eval!.gmacsPerImage / b.eval!.gmacsPerImage)} fewer visual-encoding MACs, encode time ratio baseline/D ` +
      `${(b.eval!.encodeMsPerImage / d.eval!.encodeMsPerImage).toFixed(2)}. Checkpoint folders: ${cs.map((c) => join(out, c.name)).join(', ')}\n`,
  );
  return rows;
}

async function askAboutFreshImage(cs: Contender[], tok: Tokenizer, device: Device, out: string, index: number, maxSlices: number): Promise<{ sample: MixSample; answers: { label: string; text: string }[] }> {
  // a seed no split uses: an image nobody has seen
  const s = mixSample(index, 'test', 424242);
  const path = join(out, 'fresh-question.png');
  await encodePng(s.images[0], path);
  const answers: { label: string; text: string }[] = [];
  for (const c of cs) answers.push({ label: c.label, text: (await answer(c.model, tok, s, { device, maxSlices })).text });
  console.log(`A fresh image: ${path}\n  Q: ${s.question}   (truth: ${JSON.stringify(s.answer)})\n${answers.map((a) => `  ${a.label.padEnd(26)} ${JSON.stringify(a.text)}`).join('\n')}`);
  return { sample: s, answers };
}
