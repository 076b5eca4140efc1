/**
 * A recipe's `data` section resolved into datasets: the built-in synthetic high-resolution task
 * (generated on the fly from the index) or a user's LLaVA-style data files: `.jsonl` or `.json`,
 * one image, several (a list of paths, or MiniCPM-V's `{"<image_00>": path}`) or none per sample
 * (llava-uhd/data/jsonl.ts, `loadConversations`).
 */
import { resolve } from 'node:path';
import { formatProblem, loadConversations } from './data/jsonl.js';
import { MIX_LABELS, MixSplit, type MixLabel } from './data/pretrain-mix.js';
import { makeSplit, syntheticOptions, type PresetName, type QuestionType } from './data/synthetic.js';
import type { Dataset } from './train.js';

export type DataSpec =
  | {
      kind: 'synthetic';
      preset?: PresetName;
      train: number;
      val: number;
      test: number;
      /** Faint decoy marks that make the thumbnail useless (default true). */
      ghosts?: boolean;
      /** Side in px of the fine marks (default: the preset's, 2). */
      detail?: number;
      types?: QuestionType[];
      seed?: number;
    }
  /** The pretraining mix (llava-uhd/data/pretrain-mix.ts): large shapes, colours, positions, blocks, a digit. */
  | { kind: 'pretrain-mix'; train: number; val: number; test: number; seed?: number; types?: MixLabel[] }
  /** Paths of `.jsonl` or `.json` files (the kind keeps its historical name). */
  | { kind: 'jsonl'; train: string; val?: string; test?: string; on_bad?: 'skip' | 'reject' };

export interface Datasets {
  train: Dataset;
  val?: Dataset;
  test?: Dataset;
  /** Bad records that were skipped, as `file:line: reason`. */
  problems: string[];
}

/** Checks a data spec, naming the bad field. */
export function validateData(d: DataSpec | undefined, source: string): DataSpec {
  const fail = (field: string, what: string): never => {
    throw new Error(`${source}: data.${field} ${what}`);
  };
  if (!d || typeof d !== 'object') throw new Error(`${source}: data is missing (synthetic or jsonl)`);
  if (d.kind === 'synthetic') {
    for (const k of ['train', 'val', 'test'] as const) if (!(Number.isInteger(d[k]) && d[k] >= 0)) fail(k, 'must be an integer >= 0');
    if (d.preset !== undefined && d.preset !== 'tiny' && d.preset !== 'paper') fail('preset', `must be 'tiny' or 'paper', got '${String(d.preset)}'`);
    if (d.detail !== undefined && !(Number.isInteger(d.detail) && d.detail >= 1)) fail('detail', 'must be a positive integer (pixels)');
  } else if (d.kind === 'pretrain-mix') {
    for (const k of ['train', 'val', 'test'] as const) if (!(Number.isInteger(d[k]) && d[k] >= 0)) fail(k, 'must be an integer >= 0');
    if (d.seed !== undefined && !(Number.isInteger(d.seed) && d.seed >= 0)) fail('seed', 'must be an integer >= 0');
    if (d.types !== undefined && !(Array.isArray(d.types) && d.types.length > 0 && d.types.every((t) => MIX_LABELS.includes(t)))) fail('types', `must be a non-empty list of ${MIX_LABELS.join(', ')}`);
  } else if (d.kind === 'jsonl') {
    if (typeof d.train !== 'string') fail('train', 'must be the path of a JSONL file');
  } else {
    fail('kind', `must be 'synthetic', 'pretrain-mix' or 'jsonl', got '${String((d as { kind: unknown }).kind)}'`);
  }
  return d;
}

/** Builds the datasets; relative JSONL paths resolve against `baseDir` (the recipe's folder). */
export async function loadDatasets(spec: DataSpec, baseDir = '.'): Promise<Datasets> {
  if (spec.kind === 'synthetic') {
    const o = syntheticOptions(spec.preset ?? 'tiny', {
      ...(spec.ghosts === undefined ? {} : { ghosts: spec.ghosts }),
      ...(spec.detail === undefined ? {} : { detail: spec.detail }),
      ...(spec.types ? { types: spec.types } : {}),
      ...(spec.seed === undefined ? {} : { seed: spec.seed }),
    });
    return { train: makeSplit('train', spec.train, o), val: makeSplit('val', spec.val, o), test: makeSplit('test', spec.test, o), problems: [] };
  }
  if (spec.kind === 'pretrain-mix') {
    const seed = spec.seed ?? 0;
    const types = spec.types ?? MIX_LABELS;
    return { train: new MixSplit('train', spec.train, seed, types), val: new MixSplit('val', spec.val, seed, types), test: new MixSplit('test', spec.test, seed, types), problems: [] };
  }
  const problems: string[] = [];
  const load = async (p: string | undefined): Promise<Dataset | undefined> => {
    if (!p) return undefined;
    const path = resolve(baseDir, p);
    const data = await loadConversations(path, { onBad: spec.on_bad ?? 'reject' });
    problems.push(...data.problems.map((x) => formatProblem(path, x)));
    if (data.records.length === 0) throw new Error(`data: ${path} has no usable records`);
    return { size: data.records.length, get: (i: number) => data.records[i] };
  };
  const train = (await load(spec.train))!;
  return { train, val: await load(spec.val), test: await load(spec.test), problems };
}
