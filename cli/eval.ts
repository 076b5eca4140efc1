/**
 * `uhd eval --data FILE.tsv`: a VLMEvalKit benchmark file evaluated as the paper did
 * (llava-uhd/eval/): the release wrapper's prompts and settings, predictions appended to a cache
 * as they come (run it again to resume), then `<name>.tsv` and `<name>_acc.csv` in `--out`.
 * `uhd eval --predictions FILE.tsv --benchmark NAME` scores an existing predictions file (ours
 * or VLMEvalKit's, written with PRED_FORMAT=tsv) without a model.
 *
 * The other `uhd eval` forms (a recipe's test split, a LLaVA-style .jsonl/.json file) stay in
 * cli/train.ts, which hands `.tsv` data here.
 */
import { basename } from 'node:path';
import { chooseDevice, closeDevice as shutdown, parseDevice } from '../backends/index.js';
import { modelAnswerFn } from '../llava-uhd/eval/answer.js';
import { parseBenchmark, RELEASE_GENERATION, type GenerationSettings } from '../llava-uhd/eval/benchmarks.js';
import { summarize } from '../llava-uhd/eval/report.js';
import { runVlmeval, scorePredictionsFile } from '../llava-uhd/eval/run.js';
import type { ScoreReport } from '../llava-uhd/eval/score.js';
import { loadModel } from '../llava-uhd/load.js';
import { progress } from './progress.js';

export interface VlmevalCliOptions {
  config?: string;
  weights?: string;
  data?: string;
  predictions?: string;
  benchmark?: string;
  out?: string;
  limit?: string;
  n?: string;
  shuffle?: boolean;
  seed?: string;
  batchSize?: string;
  maxNewTokens?: string;
  numBeams?: string;
  repetitionPenalty?: string;
  maxInputLength?: string;
  maxSlices?: string;
  modelName?: string;
  imageRoot?: string;
  jpegRoundtrip?: boolean;
  device: string;
  json?: boolean;
}

function int(text: string | undefined, flag: string, min: number): number | undefined {
  if (text === undefined) return undefined;
  if (!/^\d+$/.test(text.trim()) || Number(text) < min) throw new Error(`${flag}: must be an integer >= ${min}, got '${text}'`);
  return Number(text);
}

function num(text: string | undefined, flag: string): number | undefined {
  if (text === undefined) return undefined;
  const v = Number(text);
  if (!Number.isFinite(v) || v <= 0) throw new Error(`${flag}: must be a positive number, got '${text}'`);
  return v;
}

/** A score report without its per-row table (that is in the _result.tsv file). */
function brief(s: ScoreReport): Omit<ScoreReport, 'result' | 'extra'> {
  const { result: _r, extra: _e, ...rest } = s;
  return rest;
}

/** `uhd eval --data FILE.tsv` and `uhd eval --predictions FILE.tsv`. */
export async function vlmevalCommand(o: VlmevalCliOptions): Promise<void> {
  if (o.predictions) {
    if (!o.benchmark) throw new Error('--predictions: give --benchmark too (the file name of a predictions file is not the benchmark\'s)');
    const { score, files } = await scorePredictionsFile(o.predictions, parseBenchmark(o.benchmark), o.out);
    if (o.json) console.log(JSON.stringify(brief(score), null, 2));
    else for (const l of summarize(score)) console.log(l);
    console.log(`wrote ${files.join(', ')}`);
    return;
  }
  if (!o.data) throw new Error('--data: the benchmark .tsv to evaluate');
  if (!o.weights) throw new Error('--weights: required (the model to evaluate)');
  if (o.device && o.device !== 'auto') parseDevice('--device', o.device, ['auto']);
  const settings: Partial<GenerationSettings> = {};
  const set = <K extends keyof GenerationSettings>(k: K, v: number | undefined) => {
    if (v !== undefined) settings[k] = v;
  };
  set('maxNewTokens', int(o.maxNewTokens, '--max-new-tokens', 1));
  set('numBeams', int(o.numBeams, '--num-beams', 1));
  set('repetitionPenalty', num(o.repetitionPenalty, '--repetition-penalty'));
  set('maxInputLength', int(o.maxInputLength, '--max-input-length', 1));
  const maxSlices = int(o.maxSlices, '--max-slices', 1);
  const limit = int(o.limit ?? o.n, o.limit ? '--limit' : '--n', 1);
  const effective = { ...RELEASE_GENERATION, ...settings };
  try {
    const { model, tok, device, config, checkpoint } = await loadModel({ config: o.config, weights: o.weights, device: await chooseDevice('--device', o.device ?? 'auto') });
    model.eval();
    let bar: ReturnType<typeof progress> | null = null;
    console.error(
      `evaluating ${o.weights} (${o.config ?? 'its own config'}, ${device}) on ${o.data}: ${(Object.keys(effective) as (keyof GenerationSettings)[]).map((k) => `${k} ${effective[k]}`).join(', ')}`,
    );
    const r = await runVlmeval({
      data: o.data,
      outDir: o.out ?? 'runs/eval',
      answer: modelAnswerFn(model, tok, { device, maxSlices, chatTemplate: checkpoint?.chatTemplate }),
      benchmark: o.benchmark ? parseBenchmark(o.benchmark) : undefined,
      modelName: o.modelName,
      limit,
      shuffle: o.shuffle,
      seed: int(o.seed, '--seed', 0),
      batchSize: int(o.batchSize, '--batch-size', 1),
      settings,
      jpegRoundTrip: o.jpegRoundtrip !== false,
      imageRoot: o.imageRoot,
      fingerprint: { weights: basename(o.weights), config: JSON.stringify(config), maxSlices: maxSlices ?? null },
      onProgress: (done, total) => {
        bar ??= progress(`evaluate ${basename(o.data!)}`, total);
        bar.update(done);
      },
    });
    (bar as ReturnType<typeof progress> | null)?.stop();
    if (r.fromCache) console.error(`resumed: ${r.fromCache} of ${r.total} predictions were in the cache`);
    if (o.json) console.log(JSON.stringify({ benchmark: r.benchmark.name, files: r.files, fromCache: r.fromCache, score: r.score && brief(r.score) }, null, 2));
    else {
      if (r.score) for (const l of summarize(r.score)) console.log(l);
      else console.log(`${r.benchmark.name}: the data has no 'answer' column; predictions written, nothing scored`);
      console.log(`wrote ${r.files.join(', ')}`);
    }
  } finally {
    shutdown();
  }
}
