/**
 * `uhd ablate`: the compressor ablation grid (issue 15; the paper's Table 4 and its k / init
 * study) from one pretrained post-ViT baseline: every {variant, insertion layer, init} is
 * inserted, measured at step 0, fine-tuned with the same recipe and evaluated; writes
 * ablation.md and ablation.json to --out and prints the table.
 */
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { chooseDevice, closeDevice as shutdown, parseDevice } from '../backends/index.js';
import { ablationTable, fineTuneVariant, type VariantResult, type VariantSpec } from '../llava-uhd/ablate.js';
import { COMPRESSORS, COMPRESSOR_NAMES, type CompressorName } from '../llava-uhd/compressors.js';
import { loadDatasets } from '../llava-uhd/datasets.js';
import type { InitKind } from '../llava-uhd/insert.js';
import { loadModel } from '../llava-uhd/load.js';
import type { Recipe } from '../llava-uhd/recipe.js';
import { FlagError, intFlag } from './options.js';
import { resolveRecipe } from './train.js';

export const DEFAULT_BASELINE = 'pretrained/mini';

export interface AblateCliOptions {
  from?: string;
  variants?: string;
  insertLayers?: string;
  init?: string;
  recipe?: string;
  steps?: string;
  device?: string;
  out?: string;
}

function list(text: string, flag: string): string[] {
  const items = text.split(',').map((s) => s.trim());
  if (items.some((s) => s === '')) throw new FlagError(flag, `has an empty item in '${text}'`);
  if (new Set(items).size !== items.length) throw new FlagError(flag, `lists a value twice in '${text}'`);
  return items;
}

/** The grid's rows: one per variant x layer x init; a variant without reuse-init runs once per layer (random). */
export function ablationGrid(variants: (CompressorName | 'baseline')[], layers: number[], inits: InitKind[]): VariantSpec[] {
  const specs: VariantSpec[] = [];
  for (const v of variants) {
    if (v === 'baseline') {
      specs.push({ label: 'baseline', variant: 'baseline', init: 'random' });
      continue;
    }
    for (const layer of layers) {
      const usable = COMPRESSORS[v].reuse === 'none' ? (['random'] as InitKind[]) : inits;
      for (const init of usable) specs.push({ label: `${v}-k${layer}-${init}`, variant: v, layer, init });
    }
  }
  return specs;
}

/** The recipe with every stage's steps set to `steps` (warmup shortened to fit). */
function withSteps(r: Recipe, steps: number): Recipe {
  return { ...r, stages: r.stages.map((s) => ({ ...s, steps, warmup_steps: Math.min(s.warmup_steps ?? 0, steps - 1) })) };
}

export async function ablateCommand(o: AblateCliOptions): Promise<{ results: VariantResult[]; markdown: string }> {
  if (o.device && o.device !== 'auto') parseDevice('--device', o.device, ['auto']);
  const from = o.from ?? DEFAULT_BASELINE;
  const variants = list(o.variants ?? 'baseline,win-attn-reused', '--variants').map((v) => {
    if (v !== 'baseline' && !(COMPRESSOR_NAMES as readonly string[]).includes(v)) throw new FlagError('--variants', `'${v}' is not a compressor; allowed: baseline, ${COMPRESSOR_NAMES.join(', ')}`);
    return v as CompressorName | 'baseline';
  });
  const layers = list(o.insertLayers ?? '1', '--insert-layers').map((t) => intFlag(t, '--insert-layers', { min: 0 }, 0));
  const inits = list(o.init ?? 'reuse', '--init').map((t) => {
    if (t !== 'reuse' && t !== 'random') throw new FlagError('--init', `must be reuse or random, got '${t}'`);
    return t as InitKind;
  });
  const steps = intFlag(o.steps, '--steps', { min: 1 });
  const out = o.out ?? 'runs/ablate';
  if (!existsSync(from)) {
    throw new FlagError('--from', `${from} does not exist: it must be a pretrained post-ViT baseline checkpoint folder${from === DEFAULT_BASELINE ? ` (the default, ${DEFAULT_BASELINE}, is made by \`uhd pretrain\`: see pretrained/NOTES.md)` : ''}`);
  }
  const resolved = resolveRecipe(o.recipe ?? 'mini-finetune');
  const recipe = steps ? withSteps(resolved.recipe, steps) : resolved.recipe;
  try {
    const { model: baseline, tok, device: used } = await loadModel({ weights: from, device: await chooseDevice('--device', o.device ?? 'auto') });
    if (baseline.config.insert_layer_id !== null) throw new FlagError('--from', `${from} has a compressor after layer ${baseline.config.insert_layer_id}; the ablation starts from a post-ViT baseline (insert_layer_id null / -1)`);
    const L = baseline.config.vision_config.num_hidden_layers;
    for (const k of layers) if (k >= L) throw new FlagError('--insert-layers', `${k} is not a layer of ${from}'s tower (0..${L - 1})`);
    const data = await loadDatasets(recipe.data!, resolved.baseDir);
    for (const p of data.problems) console.error(`skipped ${p}`);
    const specs = ablationGrid(variants, layers, inits);
    console.error(`ablation: ${specs.length} models from ${from}, recipe ${recipe.name} (${recipe.stages.map((s) => `${s.name} ${s.steps} steps`).join(', ')}) on ${used} -> ${out}`);
    mkdirSync(out, { recursive: true });
    const results: VariantResult[] = [];
    for (const [i, spec] of specs.entries()) {
      console.error(`[${i + 1}/${specs.length}] ${spec.label}`);
      const r = await fineTuneVariant({ baseline, spec, recipe, data, tok, device: used, out, events: { notice: (m) => console.error(m) } });
      results.push(r);
      r.model.dispose(); // the table keeps the numbers; the weights are in the run folder
      const { markdown, json } = ablationTable(results); // written after every row: a stopped grid keeps what it finished
      writeFileSync(join(out, 'ablation.md'), markdown);
      writeFileSync(join(out, 'ablation.json'), JSON.stringify({ from, recipe: recipe.name, steps: recipe.stages.map((s) => s.steps), device: used, ...json }, null, 2) + '\n');
    }
    const { markdown } = ablationTable(results);
    console.log(markdown);
    return { results, markdown };
  } finally {
    shutdown();
  }
}
