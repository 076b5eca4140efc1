/**
 * The ablation core (issue 15; the paper's Table 4 and its insertion-layer / init study): from one
 * pretrained post-ViT baseline, fine-tune each {variant, layer k, init} with the same recipe and
 * data, and tabulate accuracy (overall and per question type), visual tokens, visual-encoding
 * MACs, measured encode time, the step-0 feature agreement and loss, and training time.
 * Used by `uhd ablate` (cli/ablate.ts) and the main job.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { evaluateWithProgress, trainWithProgress } from '../cli/train.js';
import type { Device } from '../tensor/index.js';
import type { CompressorName, LlavaUHDConfig } from './config.js';
import type { Datasets } from './datasets.js';
import type { EvalResult } from './evaluate.js';
import { featureAgreement, insertCompressor, type InitKind } from './insert.js';
import { LlavaUHD } from './model.js';
import type { Recipe } from './recipe.js';
import { METRICS_FILE } from './run-dir.js';
import type { Tokenizer } from './tokenizer.js';
import { validationLoss } from './train.js';

export interface VariantSpec {
  /** Row name, and the run's folder under `out`. */
  label: string;
  /** A compressor to insert, or 'baseline' (the baseline fine-tuned as it is). */
  variant: CompressorName | 'baseline';
  /** k (required with a compressor). */
  layer?: number;
  init: InitKind;
  seed?: number;
}

export interface FineTuneOptions {
  baseline: LlavaUHD;
  spec: VariantSpec;
  recipe: Recipe;
  data: Datasets;
  tok: Tokenizer;
  device: Device;
  /** The run folder is out/<label>. */
  out: string;
  /** Also evaluate with the thumbnail alone (max_slices 1). */
  thumbnailOnly?: boolean;
  /** Step-0 samples (default 16, from val, else train). */
  agreementSamples?: number;
  /** Evaluate the first `evalLimit` test samples (default all). */
  evalLimit?: number;
  events?: { notice?(message: string): void };
}

export interface Step0 {
  cosine: number;
  minCosine: number;
  loss: number;
}

export interface VariantResult {
  label: string;
  spec: VariantSpec;
  config: LlavaUHDConfig;
  model: LlavaUHD;
  step0: Step0;
  eval: EvalResult;
  thumbnailOnly?: EvalResult;
  trainSeconds: number;
  /** Training loss per optimizer step (from the run's metrics file). */
  curve: { stage: string; step: number; loss: number }[];
}

/** A copy of a model (same config and weights, the source untouched). */
function copyModel(m: LlavaUHD): LlavaUHD {
  const first = m.parameters()[0];
  const c = new LlavaUHD(structuredClone(m.config), { device: first.device, dtype: first.dtype as 'float32' | 'float64' });
  c.loadStateDict(m.stateDict(), { strict: true });
  return c;
}

function readCurve(dir: string): VariantResult['curve'] {
  const path = join(dir, METRICS_FILE);
  if (!existsSync(path)) return [];
  const out: VariantResult['curve'] = [];
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    if (!line.trim()) continue;
    const j = JSON.parse(line) as { stage?: string; step?: number; loss?: number };
    if (typeof j.loss === 'number' && typeof j.step === 'number') out.push({ stage: j.stage ?? '', step: j.step, loss: j.loss });
  }
  return out;
}

/** Builds the spec's model from the baseline, measures step 0, fine-tunes and evaluates it. */
export async function fineTuneVariant(o: FineTuneOptions): Promise<VariantResult> {
  const { spec, baseline, recipe, data, tok, device } = o;
  if (!data.test || data.test.size === 0) throw new Error(`ablation ${spec.label}: the data has no test split to evaluate on`);
  const stage = recipe.stages[0];
  const probe = data.val && data.val.size > 0 ? data.val : data.train;
  const n = o.agreementSamples ?? 16;
  let model: LlavaUHD;
  let step0: Step0;
  if (spec.variant === 'baseline') {
    model = copyModel(baseline);
    step0 = { cosine: 1, minCosine: 1, loss: await validationLoss(model, tok, probe, stage, device, n) };
  } else {
    if (spec.layer === undefined) throw new Error(`ablation ${spec.label}: variant ${spec.variant} needs an insertion layer`);
    model = insertCompressor(baseline, { variant: spec.variant, layer: spec.layer, init: spec.init, seed: spec.seed });
    const a = await featureAgreement(baseline, model, probe, { tok, device, stage, limit: n });
    step0 = { cosine: a.cosine, minCosine: a.minCosine, loss: a.loss };
  }
  o.events?.notice?.(`${spec.label}: step 0 cosine ${step0.cosine.toFixed(4)} (min ${step0.minCosine.toFixed(4)}), loss ${step0.loss.toFixed(3)}`);
  const dir = join(o.out, spec.label);
  const trained = await trainWithProgress(model, tok, recipe, data, { device, out: dir, fresh: true, label: spec.label });
  const ev = await evaluateWithProgress(model, tok, data.test, { device, label: spec.label, limit: o.evalLimit });
  const thumb = o.thumbnailOnly ? await evaluateWithProgress(model, tok, data.test, { device, label: `${spec.label} thumbnail`, limit: o.evalLimit, maxSlices: 1 }) : undefined;
  return { label: spec.label, spec, config: model.config, model, step0, eval: ev, ...(thumb && { thumbnailOnly: thumb }), trainSeconds: trained.seconds, curve: readCurve(dir) };
}

export interface AblationRow {
  label: string;
  variant: string;
  layer: number | null;
  init: InitKind | null;
  accuracy: number;
  byType: Record<string, number>;
  thumbnailAccuracy?: number;
  visualTokens: number;
  gmacs: number;
  encodeMs: number;
  step0Cosine: number;
  step0MinCosine: number;
  step0Loss: number;
  trainSeconds: number;
  finalLoss: number | null;
}

const pct = (x: number) => `${(100 * x).toFixed(1)}%`;

/** One row per model: markdown for people, JSON for the report. */
export function ablationTable(results: readonly VariantResult[]): { markdown: string; json: { rows: AblationRow[] } } {
  const types = [...new Set(results.flatMap((r) => Object.keys(r.eval.byType)))].sort();
  const thumb = results.some((r) => r.thumbnailOnly);
  const rows: AblationRow[] = results.map((r) => ({
    label: r.label,
    variant: r.spec.variant,
    layer: r.spec.variant === 'baseline' ? null : (r.spec.layer ?? null),
    init: r.spec.variant === 'baseline' ? null : r.spec.init,
    accuracy: r.eval.accuracy,
    byType: Object.fromEntries(types.map((t) => [t, r.eval.byType[t]?.accuracy ?? NaN])),
    ...(r.thumbnailOnly && { thumbnailAccuracy: r.thumbnailOnly.accuracy }),
    visualTokens: r.eval.visualTokensPerImage,
    gmacs: r.eval.gmacsPerImage,
    encodeMs: r.eval.encodeMsPerImage,
    step0Cosine: r.step0.cosine,
    step0MinCosine: r.step0.minCosine,
    step0Loss: r.step0.loss,
    trainSeconds: r.trainSeconds,
    finalLoss: r.curve.length ? r.curve[r.curve.length - 1].loss : null,
  }));
  const head = ['model', 'variant', 'k', 'init', 'accuracy', ...types, ...(thumb ? ['thumbnail only'] : []), 'visual tokens', 'encode GMACs', 'encode ms', 'step-0 cosine (min)', 'step-0 loss', 'train s'];
  const lines = [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`];
  for (const r of rows) {
    const cells = [
      r.label, r.variant, r.layer === null ? '-' : String(r.layer), r.init ?? '-', pct(r.accuracy),
      ...types.map((t) => (Number.isNaN(r.byType[t]) ? '-' : pct(r.byType[t]))),
      ...(thumb ? [r.thumbnailAccuracy === undefined ? '-' : pct(r.thumbnailAccuracy)] : []),
      r.visualTokens.toFixed(1), r.gmacs.toFixed(3), r.encodeMs.toFixed(1),
      `${r.step0Cosine.toFixed(4)} (${r.step0MinCosine.toFixed(4)})`, r.step0Loss.toFixed(3), r.trainSeconds.toFixed(1),
    ];
    lines.push(`| ${cells.join(' | ')} |`);
  }
  return { markdown: lines.join('\n') + '\n', json: { rows } };
}
