/**
 * Running a benchmark: read the TSV, pick the rows (`limit`, `shuffle` with a seed; MMBench by
 * whole circular groups), build each row's prompt and images as the release's wrapper would,
 * have an `AnswerFn` answer them in batches, append every prediction to a cache file as it comes
 * (an interrupted run resumes where it stopped, as VLMEvalKit resumes from its cache), then write
 * the predictions file and score it (report.ts, score.ts).
 *
 * Resuming gives the same files as an uninterrupted run: the cache names the settings it was
 * made with (a different benchmark, generation setting or data file is refused), a line cut by a
 * kill is dropped, and the up-scaling draws of the rows already answered are replayed from their
 * image sizes, so later rows draw what they would have drawn.
 */
import { existsSync } from 'node:fs';
import { mkdir, open, readFile, truncate } from 'node:fs/promises';
import { basename, join } from 'node:path';
import type { RgbImage } from '../image.js';
import type { Turn } from '../layout.js';
import { benchmark, inferBenchmark, RELEASE_GENERATION, type Benchmark, type BenchmarkName, type GenerationSettings } from './benchmarks.js';
import { imageHeader, sourceBytes, vlmevalImage } from './dump-image.js';
import { buildMessages, userContent } from './prompts.js';
import { PythonRandom } from './python-random.js';
import { formatPredictions, writeAtomic, writeScore } from './report.js';
import { scoreBenchmark, type PredictedRow, type ScoreReport } from './score.js';
import { cellText, readTable } from './table.js';
import { upsize, upsizeSize } from './upsize.js';
import { readVlmevalTsv, rowError, type VlmDataset, type VlmRow } from './vlmeval-tsv.js';

/** One row ready for the model: a single user turn (with `<image>` where each image goes) and its images. */
export interface PreparedItem {
  index: string;
  turns: Turn[];
  /** In placeholder order, after the release's up-scaling where it applies. */
  images: RgbImage[];
}

/** Answers a batch of prepared rows (one string per item, in order). */
export type AnswerFn = (batch: PreparedItem[], settings: GenerationSettings) => Promise<string[]>;

export interface RunOptions {
  /** The benchmark TSV. */
  data: string;
  outDir: string;
  answer: AnswerFn;
  /** Default: from the file name (the eight names), else custom_mcq / custom_vqa by its columns. */
  benchmark?: BenchmarkName;
  /** The files' stem (default `<modelName>_<dataset>`, VLMEvalKit's `{model}_{dataset}`). */
  name?: string;
  modelName?: string;
  /** Evaluate only this many rows (MMBench: questions, each with all its rotations). */
  limit?: number;
  /** Pick the rows in a seeded random order (with `limit`: a random subset). */
  shuffle?: boolean;
  seed?: number;
  batchSize?: number;
  /** Override the release's generation settings. */
  settings?: Partial<GenerationSettings>;
  /** VLMEvalKit's JPEG re-encoding of single-image rows (default true; see dump-image.ts). */
  jpegRoundTrip?: boolean;
  /** Relative `image_path` files start here (default: the TSV's folder). */
  imageRoot?: string;
  /** Anything else the predictions depend on (weights, config, slice budget): a resumed run must match. */
  fingerprint?: Record<string, unknown>;
  /** Progress: rows answered so far (cached ones included) of the total. */
  onProgress?: (done: number, total: number) => void;
  /** Stop after answering this many rows in this call (tests simulate an interruption). */
  stopAfter?: number;
}

export interface RunResult {
  benchmark: Benchmark;
  name: string;
  predictionsPath: string;
  /** Rows answered in this call, and taken from the cache. */
  answered: number;
  fromCache: number;
  total: number;
  /** Null when the run stopped early or the data has no answers to score against. */
  score: ScoreReport | null;
  files: string[];
  stopped: boolean;
}

/** The rows to evaluate, in the order they are answered. */
export function selectRows(ds: VlmDataset, bench: Benchmark, opts: Pick<RunOptions, 'limit' | 'shuffle' | 'seed'>): VlmRow[] {
  let units: VlmRow[][];
  if (bench.circular && ds.intIndex) {
    // MMBench: a question and its rotations travel together (group = g_index, else index % 1e6)
    const groups = new Map<string, VlmRow[]>();
    for (const r of ds.rows) {
      const g = r.values.g_index != null ? r.values.g_index : String(BigInt(r.index) % 1_000_000n);
      groups.set(g, [...(groups.get(g) ?? []), r]);
    }
    units = [...groups.values()];
  } else {
    units = ds.rows.map((r) => [r]);
  }
  if (opts.shuffle) {
    const rng = new PythonRandom(opts.seed ?? 0);
    for (let i = units.length - 1; i > 0; i--) {
      const j = rng.randint(0, i);
      [units[i], units[j]] = [units[j], units[i]];
    }
  }
  if (opts.limit !== undefined) {
    if (!Number.isInteger(opts.limit) || opts.limit < 1) throw new Error(`limit: must be a positive integer, got ${opts.limit}`);
    units = units.slice(0, opts.limit);
  }
  return units.flat();
}

interface CacheHeader {
  uhd_eval_cache: 1;
  data: string;
  rows: number;
  benchmark: string;
  settings: GenerationSettings;
  jpegRoundTrip: boolean;
  fingerprint: Record<string, unknown>;
}

/** Reads the cache: its header and predictions; a last line cut by a kill is dropped (and cut off the file). */
async function readCache(path: string, header: CacheHeader, ds: VlmDataset): Promise<Map<string, string>> {
  const done = new Map<string, string>();
  if (!existsSync(path)) {
    await writeAtomic(path, JSON.stringify(header) + '\n');
    return done;
  }
  const text = await readFile(path, 'utf8');
  const lines = text.split('\n');
  let good = 0; // characters of complete, parsed lines
  for (let k = 0; k < lines.length; k++) {
    const line = lines[k];
    const complete = k < lines.length - 1;
    if (!complete) break; // whatever follows the last newline is a cut line
    let v: unknown;
    try {
      v = JSON.parse(line);
    } catch {
      if (k === lines.length - 2) break; // the last full line, garbled by a kill mid-write
      throw new Error(`${path}:${k + 1}: not a cache line (delete the file to start over)`);
    }
    if (k === 0) {
      const want = JSON.stringify(header);
      if (JSON.stringify(v) !== want) {
        throw new Error(`${path}: made by another evaluation (${JSON.stringify(v)}), not this one (${want}); use another --out or delete it to start over`);
      }
    } else {
      const rec = v as { index?: unknown; prediction?: unknown };
      if (typeof rec.index !== 'string' || typeof rec.prediction !== 'string') throw new Error(`${path}:${k + 1}: a cache line needs a string index and prediction`);
      if (!ds.byIndex.has(rec.index)) throw new Error(`${path}:${k + 1}: index ${rec.index} is not a row of ${ds.path}`);
      done.set(rec.index, rec.prediction);
    }
    good += line.length + 1;
  }
  if (good === 0) {
    await writeAtomic(path, JSON.stringify(header) + '\n');
    return done;
  }
  if (Buffer.byteLength(text.slice(0, good)) < Buffer.byteLength(text)) await truncate(path, Buffer.byteLength(text.slice(0, good)));
  return done;
}

/** Runs (or resumes) a benchmark and scores it (see the module comment). */
export async function runVlmeval(opts: RunOptions): Promise<RunResult> {
  const ds = await readVlmevalTsv(opts.data, { imageRoot: opts.imageRoot });
  const bench = benchmark(opts.benchmark ?? inferBenchmark(ds.name, ds.columns));
  if (bench.requireOptions || bench.name === 'custom_mcq') {
    for (const r of ds.rows) if (r.options.length < 2) throw rowError(r, `${r.options.length} options (A, B, ...), but ${bench.name} is multiple choice`, ds.path);
  }
  const settings: GenerationSettings = { ...RELEASE_GENERATION, ...opts.settings };
  const jpegRoundTrip = opts.jpegRoundTrip ?? true;
  const name = opts.name ?? `${opts.modelName ?? 'uhd'}_${ds.name}`;
  await mkdir(opts.outDir, { recursive: true });
  const rows = selectRows(ds, bench, opts);
  const total = rows.length;
  if (total === 0) throw new Error(`${ds.path}: no rows to evaluate`);

  // every selected row's images, checked before the first answer (errors name the row)
  const sizes = new Map<string, { width: number; height: number }[]>();
  const seen = new Map<string, { width: number; height: number }>(); // rows sharing an image (MMBench's rotations) decode it once
  for (const r of rows) {
    const list = [];
    for (const [k, src] of r.images.entries()) {
      const key = src.kind === 'base64' ? src.data : `file:${src.path}`;
      const where = `${ds.path}: row index ${r.index}: image ${k + 1}`;
      if (!seen.has(key)) seen.set(key, await imageHeader(await sourceBytes(src, where), where));
      list.push(seen.get(key)!);
    }
    sizes.set(r.index, list);
    userContent(buildMessages(r, bench), r); // prompt errors too
  }

  const cachePath = join(opts.outDir, `${name}_cache.jsonl`);
  const header: CacheHeader = {
    uhd_eval_cache: 1, data: basename(ds.path), rows: ds.rows.length, benchmark: bench.name, settings, jpegRoundTrip, fingerprint: opts.fingerprint ?? {},
  };
  const cached = await readCache(cachePath, header, ds);
  const rng = bench.upsize ? new PythonRandom(0) : null; // MiniCPM_4_V.__init__: random.seed(0)

  const prepare = async (r: VlmRow): Promise<PreparedItem> => {
    const { content, images: order } = userContent(buildMessages(r, bench), r);
    const decoded = new Map<number, RgbImage>();
    const images: RgbImage[] = [];
    for (const k of order) {
      if (!decoded.has(k)) decoded.set(k, await vlmevalImage(r.images[k], `${ds.path}: row index ${r.index}: image ${k + 1}`, { jpegRoundTrip }));
      const img = decoded.get(k)!;
      images.push(rng ? upsize(img, rng) : img);
    }
    return { index: r.index, turns: [{ role: 'user', content }], images };
  };
  const replayDraws = (r: VlmRow) => {
    if (!rng) return;
    const { images: order } = userContent(buildMessages(r, bench), r);
    for (const k of order) {
      const s = sizes.get(r.index)![k];
      upsizeSize(s.width, s.height, rng);
    }
  };

  let answered = 0;
  let stopped = false;
  const batchSize = opts.batchSize ?? 1;
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new Error(`batch size: must be a positive integer, got ${batchSize}`);
  const fromCache = rows.filter((r) => cached.has(r.index)).length;
  let done = fromCache;
  opts.onProgress?.(done, total);
  let pending: VlmRow[] = [];
  const flush = async () => {
    if (!pending.length) return;
    const items: PreparedItem[] = [];
    for (const r of pending) items.push(await prepare(r));
    const out = await opts.answer(items, settings);
    if (out.length !== items.length) throw new Error(`answer: returned ${out.length} answers for ${items.length} rows`);
    const lines = items.map((it, k) => {
      if (typeof out[k] !== 'string') throw new Error(`answer: the answer for row ${it.index} is not a string`);
      cached.set(it.index, out[k]);
      return JSON.stringify({ index: it.index, prediction: out[k] }) + '\n';
    });
    const fh = await open(cachePath, 'a');
    try {
      await fh.appendFile(lines.join(''));
      await fh.sync();
    } finally {
      await fh.close();
    }
    answered += items.length;
    done += items.length;
    pending = [];
    opts.onProgress?.(done, total);
  };
  for (const r of rows) {
    if (cached.has(r.index)) {
      await flush(); // keep the draw order: rows before this one draw first
      replayDraws(r);
      continue;
    }
    if (opts.stopAfter !== undefined && answered + pending.length >= opts.stopAfter) {
      stopped = true;
      break;
    }
    pending.push(r);
    if (pending.length >= batchSize) await flush();
  }
  await flush();

  const predictionsPath = join(opts.outDir, `${name}.tsv`);
  if (stopped) {
    return { benchmark: bench, name, predictionsPath, answered, fromCache, total, score: null, files: [cachePath], stopped };
  }
  // the predictions file: the evaluated rows in file order
  const picked = new Set(rows.map((r) => r.index));
  const inOrder = ds.rows.filter((r) => picked.has(r.index));
  await writeAtomic(predictionsPath, formatPredictions(ds.columns, inOrder.map((r) => ({ values: r.values, prediction: cached.get(r.index)! }))));
  const files = [predictionsPath];
  let score: ScoreReport | null = null;
  if (ds.columns.includes('answer')) {
    const scored = await scorePredictionsFile(predictionsPath, bench.name, opts.outDir, name);
    score = scored.score;
    files.push(...scored.files);
  }
  return { benchmark: bench, name, predictionsPath, answered, fromCache, total, score, files, stopped: false };
}

/**
 * Scores a predictions file (ours, or VLMEvalKit's written with PRED_FORMAT=tsv): the input's
 * columns plus `prediction`, read back as VLMEvalKit's `load` reads it. Writes the score files
 * to `outDir` under `name` (default: the file's own stem and folder).
 */
export async function scorePredictionsFile(path: string, bench: BenchmarkName, outDir?: string, name?: string): Promise<{ score: ScoreReport; files: string[] }> {
  const table = await readTable(path);
  const col = (c: string) => table.columns.indexOf(c);
  for (const need of ['index', 'prediction']) if (col(need) < 0) throw new Error(`${path}: no '${need}' column: not a predictions file`);
  const letters = table.columns.filter((c) => /^[A-Z]$/.test(c)).sort();
  const rows: PredictedRow[] = table.rows.map((cells) => {
    const values: Record<string, string | null> = {};
    table.columns.forEach((c, k) => {
      if (c !== 'prediction') values[c] = cellText(cells[k], table.dtypes[k]);
    });
    const index = values.index;
    if (index === null) throw new Error(`${path}: a row has no index`);
    const options = letters.filter((l) => values[l] !== null).map((letter) => ({ letter, text: values[letter]! }));
    const k = col('prediction');
    return { index, values, options, prediction: cellText(cells[k], table.dtypes[k]) ?? 'nan' }; // str(NaN) is 'nan'
  });
  const score = scoreBenchmark(benchmark(bench), rows);
  const dir = outDir ?? join(path, '..');
  const stem = name ?? basename(path).replace(/\.tsv$/i, '');
  const written = await writeScore(dir, stem, score);
  return { score, files: written.files };
}
