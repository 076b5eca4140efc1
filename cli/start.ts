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
import * as ag from '../autograd/index.js';
import { chooseDevice, closeDevice } from '../backends/index.js';
import { saveCheckpointFolder } from '../llava-uhd/checkpoint-folder.js';
import type { CompressorName } from '../llava-uhd/compressors.js';
import { type LlavaUHDConfig } from '../llava-uhd/config.js';
import { MIX_CLASSES, MIX_LABELS, mixSample, type MixLabel, type MixSample } from '../llava-uhd/data/pretrain-mix.js';
import { loadDatasets } from '../llava-uhd/datasets.js';
import { answer, type EvalResult } from '../llava-uhd/evaluate.js';
import { encodePng } from '../llava-uhd/image.js';
import { loadModel } from '../llava-uhd/load.js';
import { LlavaUHD } from '../llava-uhd/model.js';
import { viewPixels, prepareImage } from '../llava-uhd/preprocess.js';
import { parseCurves } from '../llava-uhd/report/curves.js';
import { writeReport } from '../llava-uhd/report/html.js';
import { mergeMap, mergeMapSvg, sliceGridSvg } from '../llava-uhd/report/picture.js';
import { METRICS_FILE } from '../llava-uhd/run-dir.js';
import type { Tokenizer } from '../llava-uhd/tokenizer.js';
import { validationLoss, type Dataset, type StageSpec } from '../llava-uhd/train.js';
import type { ViewGrid } from '../llava-uhd/vision.js';
import { manualSeed, tensor, tidy, type Device, type Tensor } from '../tensor/index.js';
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

/**
 * The baseline with D inserted after layer k: every weight carried over, the connector's last
 * merge round (the one into the LLM) becoming the only one (D did the first 2x2 merge), D
 * initialised from layer k by parameter reuse (LLAVA-UHD-V4.md, "D") or drawn at random;
 * `variant` puts another compressor of the paper's Table 4 in D's place (compressors.ts).
 */
export function withCompressor(baseline: LlavaUHD, k: number, init: 'reuse' | 'random', seed: number, variant?: CompressorName): LlavaUHD {
  const config: LlavaUHDConfig = { ...structuredClone(baseline.config), insert_layer_id: k, merger_times: 1, ...(variant ? { compressor: variant } : {}) };
  const device = baseline.parameters()[0].device;
  manualSeed(seed);
  const m = new LlavaUHD(config, { device }); // its D: drawn at random, then reused from its own layer k
  const rounds = baseline.resampler.rounds.length;
  const sd = new Map<string, Tensor>();
  for (const [n, t] of baseline.stateDict()) {
    if (n.startsWith('resampler.mlp.')) {
      const round = Number(n.split('.')[2]);
      if (round === rounds - 1) sd.set(n.replace(`resampler.mlp.${round}.`, 'resampler.mlp.0.'), t);
    } else sd.set(n, t);
  }
  const randomD = init === 'random' ? new Map([...m.stateDict()].filter(([n]) => n.startsWith('vit_merger.')).map(([n, t]) => [n, t.clone()])) : null;
  m.loadStateDict(sd, { strict: false });
  if (randomD) {
    m.loadStateDict(randomD, { strict: false });
    for (const t of randomD.values()) t.dispose();
  } else m.initCompressor();
  return m;
}

/** Pools each view's tokens [1, sum(h*w), d] over 2x2 windows -> [sum(h*w)/4, d]. */
function pool2x2(x: Tensor, grids: ViewGrid[], device: Device): Tensor {
  const n = grids.reduce((a, g) => a + g.h * g.w, 0);
  const P = new Float32Array((n / 4) * n);
  let at = 0;
  let row = 0;
  for (const g of grids) {
    for (let r = 0; r < g.h; r += 2) {
      for (let c = 0; c < g.w; c += 2, row++) {
        for (const [dr, dc] of [[0, 0], [0, 1], [1, 0], [1, 1]]) P[row * n + at + (r + dr) * g.w + c + dc] = 0.25;
      }
    }
    at += g.h * g.w;
  }
  return ag.matmul(tensor(P, { shape: [n / 4, n], device }), ag.reshape(x, [n, x.shape[2]]));
}

/**
 * Mean cosine similarity, over tokens and images, between the D model's final tower features and
 * the baseline's pooled 2x2 (what D replaces): 1 is no disturbance of the pretrained output.
 */
export async function featureCosine(baseline: LlavaUHD, withD: LlavaUHD, images: Dataset, n: number, device: Device): Promise<number> {
  let sum = 0;
  let count = 0;
  for (let i = 0; i < Math.min(n, images.size); i++) {
    const views = prepareImage(images.get(i).images[0], withD.config, 4).views;
    const cos = ag.noGrad(() =>
      tidy(() => {
        const px = viewPixels(views, device);
        const a = baseline.vpm.forward(px, null, null);
        const b = withD.vpm.forward(px, withD.vit_merger, withD.config.insert_layer_id);
        const pa = pool2x2(a.x, a.grids, device);
        const pb = ag.reshape(b.x, [b.x.shape[1], b.x.shape[2]]);
        const dot = ag.sum(ag.mul(pa, pb), -1);
        const norms = ag.mul(ag.sqrt(ag.sum(ag.mul(pa, pa), -1)), ag.sqrt(ag.sum(ag.mul(pb, pb), -1)));
        return ag.sum(ag.div(dot, norms));
      }),
    );
    sum += await cos.item();
    count += (views.reduce((a, v) => a + (v.width / 14) * (v.height / 14), 0)) / 4;
    cos.dispose();
  }
  return sum / count;
}

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
      { label: `D after layer ${k}, reuse`, name: 'reuse-d', model: withCompressor(baseline, k, 'reuse', recipe.seed ?? 0) },
      { label: `D after layer ${k}, random`, name: 'random-d', model: withCompressor(baseline, k, 'random', recipe.seed ?? 0) },
      { label: `avg-pool after layer ${k}`, name: 'avg-pool', model: withCompressor(baseline, k, 'reuse', recipe.seed ?? 0, 'avg-pool') },
    ];
    // step 0: how far D moves the pretrained output, before any fine-tuning
    const probe = data.val && data.val.size > 0 ? data.val : data.test!;
    for (const c of contenders) {
      const loss = await validationLoss(c.model, tok, probe, stage, device, probe.size);
      const cosine = c.model.vit_merger ? await featureCosine(baseline, c.model, probe, 8, device) : 1;
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
    writeReport(
      {
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
      },
      reportPath,
    );
    console.log(`Report: ${reportPath}`);
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
