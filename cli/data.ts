/**
 * `uhd data`: look at and export the synthetic training data (llava-uhd/data/synthetic.ts), and
 * check a LLaVA-style JSONL file (llava-uhd/data/jsonl.ts).
 *
 *   uhd data preview [--out DIR] [--n N] [--preset tiny|paper] [--split train] [--start I]
 *   uhd data export --out DIR --n N [--preset tiny|paper] [--split train] [--start I]
 *   uhd data export --format vlmeval --out FILE.tsv [--n N] [--question mcq|open] [--split test]
 *   uhd data check FILE.jsonl|FILE.json
 *
 * The commands are registered in cli/main.ts, which imports this file only when one runs.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { encodePngBytes, resizeBicubic } from '../llava-uhd/image.js';
import { formatProblem, loadConversations, writeJsonl } from '../llava-uhd/data/jsonl.js';
import { writeVlmevalTsv, type QuestionForm } from '../llava-uhd/eval/export.js';
import {
  ANSWERS, PRESETS, QUESTION_TYPES, SPLITS, chanceBaseline, generateSample, majorityBaseline, questionOf, syntheticOptions,
  type BaselineReport, type PresetName, type QuestionType, type Split, type SyntheticOptions, type SyntheticSample,
} from '../llava-uhd/data/synthetic.js';
import { sliceImage } from '../llava-uhd/slicing.js';

/** Options shared by preview and export, as commander hands them over (strings as typed). */
export interface DataCliOptions {
  out?: string;
  n?: string;
  preset?: string;
  split?: string;
  start?: string;
  thumbnails?: boolean;
  /** Comma-separated question types (default: the preset's). */
  types?: string;
  /** export: 'jsonl' (default: data.jsonl + images/) or 'vlmeval' (one benchmark TSV). */
  format?: string;
  /** export --format vlmeval: 'mcq' (default; the answer classes as options) or 'open'. */
  question?: string;
}

function count(text: string | undefined, flag: string, fallback: number, min: number): number {
  if (text === undefined) return fallback;
  if (!/^\d+$/.test(text.trim()) || Number(text) < min) throw new Error(`${flag}: must be an integer >= ${min}, got '${text}'`);
  return Number(text);
}

function parseCommon(opts: DataCliOptions): { n: number; start: number; split: Split; options: SyntheticOptions; preset: PresetName } {
  const preset = (opts.preset ?? 'tiny') as PresetName;
  if (!(preset in PRESETS)) throw new Error(`--preset: expected ${Object.keys(PRESETS).join(' or ')}, got '${opts.preset}'`);
  const split = (opts.split ?? 'train') as Split;
  if (!SPLITS.includes(split)) throw new Error(`--split: expected ${SPLITS.join(', ')}, got '${opts.split}'`);
  const types = opts.types?.split(',').map((t) => t.trim()) as QuestionType[] | undefined;
  for (const t of types ?? []) if (!QUESTION_TYPES.includes(t)) throw new Error(`--types: '${t}' is not a question type (${QUESTION_TYPES.join(', ')})`);
  return { n: count(opts.n, '--n', 6, 1), start: count(opts.start, '--start', 0, 0), split, options: syntheticOptions(preset, types ? { types } : {}), preset };
}

function* samples(split: Split, start: number, n: number, options: SyntheticOptions): Generator<SyntheticSample> {
  for (let i = start; i < start + n; i++) yield generateSample(i, split, options);
}

/** One entry of samples.json. */
export interface PreviewEntry {
  file: string;
  thumbnail?: string;
  index: number;
  type: string;
  question: string;
  answer: string;
  size: string;
  /** The slicing of the preset: thumbnail size and slice grid. */
  views: string;
}

/**
 * Writes N samples as PNGs (and, unless --no-thumbnails, each one's thumbnail at the size the
 * model sees it, to show what slicing keeps), plus samples.json and samples.md; returns the entries.
 */
export async function previewData(opts: DataCliOptions): Promise<{ dir: string; entries: PreviewEntry[] }> {
  const { n, start, split, options, preset } = parseCommon(opts);
  const dir = resolve(opts.out ?? join(tmpdir(), 'uhd-data-preview'));
  await mkdir(dir, { recursive: true });
  const entries: PreviewEntry[] = [];
  for (const s of samples(split, start, n, options)) {
    const base = `${split}-${String(s.index).padStart(5, '0')}-${s.type}`;
    const plan = sliceImage(s.width, s.height, options.slice);
    const t = plan.thumbnail;
    const entry: PreviewEntry = {
      file: `${base}.png`, index: s.index, type: s.type, question: s.question, answer: s.answer, size: `${s.width}x${s.height}`,
      views: `thumbnail ${t.width}x${t.height}` + (plan.grid && plan.slice ? `, ${plan.grid.cols}x${plan.grid.rows} slices of ${plan.slice.width}x${plan.slice.height}` : ', no slices'),
    };
    await writeFile(join(dir, entry.file), encodePngBytes(s.image));
    if (opts.thumbnails !== false) {
      entry.thumbnail = `${base}.thumb.png`;
      await writeFile(join(dir, entry.thumbnail), encodePngBytes(resizeBicubic(s.image, t.width, t.height)));
    }
    entries.push(entry);
  }
  await writeFile(join(dir, 'samples.json'), JSON.stringify({ preset, split, entries }, null, 2) + '\n');
  const md = [
    `# Synthetic samples: preset ${preset}, ${split} split`,
    '',
    '| file | thumbnail | type | question | answer | size | views |',
    '| --- | --- | --- | --- | --- | --- | --- |',
    ...entries.map((e) => `| ${e.file} | ${e.thumbnail ?? ''} | ${e.type} | ${e.question} | ${e.answer} | ${e.size} | ${e.views} |`),
    '',
  ].join('\n');
  await writeFile(join(dir, 'samples.md'), md);
  return { dir, entries };
}

function printBaselines(title: string, r: BaselineReport): void {
  const parts = r.byType.map((b) => `${b.type} ${(100 * b.accuracy).toFixed(1)}%${b.answer === undefined ? '' : ` ('${b.answer}')`}`);
  console.log(`${title}: ${(100 * r.overall).toFixed(1)}% overall; ${parts.join(', ')}`);
}

/** `uhd data preview`: writes the files and prints their paths with each question and answer. */
export async function previewCommand(opts: DataCliOptions): Promise<void> {
  const { dir, entries } = await previewData(opts);
  for (const e of entries) {
    console.log(`${join(dir, e.file)}  [${e.type}, ${e.size}; ${e.views}]`);
    console.log(`    Q: ${e.question}  A: ${e.answer}${e.thumbnail ? `  (thumbnail: ${e.thumbnail})` : ''}`);
  }
  console.log(`listing: ${join(dir, 'samples.json')}, ${join(dir, 'samples.md')}`);
}

/** `uhd data export --format vlmeval`: the synthetic task as a VLMEvalKit benchmark TSV (default: 60 test samples). */
async function exportVlmeval(opts: DataCliOptions): Promise<{ n: number; start: number; split: Split; options: SyntheticOptions }> {
  const form = (opts.question ?? 'mcq') as QuestionForm;
  if (form !== 'mcq' && form !== 'open') throw new Error(`--question: expected mcq or open, got '${opts.question}'`);
  if (!opts.out!.toLowerCase().endsWith('.tsv')) throw new Error(`--out: with --format vlmeval, the .tsv file to write, got '${opts.out}'`);
  const parsed = parseCommon({ ...opts, n: opts.n ?? '60', split: opts.split ?? 'test' });
  const { n, start, split, options } = parsed;
  const path = resolve(opts.out!);
  await mkdir(dirname(path), { recursive: true });
  const rows = (function* () {
    for (const s of samples(split, start, n, options)) yield { image: s.image, question: s.question, answer: s.answer, type: s.type, classes: ANSWERS[s.type] };
  })();
  const written = await writeVlmevalTsv(path, rows, form, { optionColumns: Math.max(...options.types.map((t) => ANSWERS[t].length)), firstIndex: start });
  console.log(`wrote ${written} ${split} samples as a VLMEvalKit TSV (${form === 'mcq' ? 'multiple choice' : 'open questions'}): ${path}`);
  return parsed;
}

/** `uhd data export`: writes data.jsonl + images/ (or, with --format vlmeval, one TSV) and prints the path and the baselines of what it wrote. */
export async function exportCommand(opts: DataCliOptions): Promise<void> {
  const format = opts.format ?? 'jsonl';
  if (format !== 'jsonl' && format !== 'vlmeval') throw new Error(`--format: expected jsonl or vlmeval, got '${opts.format}'`);
  if (opts.out === undefined) throw new Error(`--out: required (${format === 'jsonl' ? 'the folder to write data.jsonl and images/ into' : 'the .tsv file to write'})`);
  let n: number;
  let start: number;
  let split: Split;
  let options: SyntheticOptions;
  if (format === 'vlmeval') {
    ({ n, start, split, options } = await exportVlmeval(opts));
  } else {
    if (opts.n === undefined) throw new Error('--n: required (how many samples)');
    ({ n, start, split, options } = parseCommon(opts));
    const dir = resolve(opts.out);
    const { path, count: written } = await writeJsonl(dir, samples(split, start, n, options));
    console.log(`wrote ${written} samples: ${path} (images in ${join(dir, 'images')})`);
  }
  const labels = Array.from({ length: n }, (_, k) => questionOf(start + k, split, options));
  printBaselines('chance', chanceBaseline(labels));
  printBaselines('majority (on the exported samples)', majorityBaseline(labels));
}

/** `uhd data check`: loads a .jsonl or .json data file (any format training reads), skipping bad records, and lists them; exit code 1 if any. */
export async function checkCommand(file: string): Promise<void> {
  const { records, problems } = await loadConversations(file, { onBad: 'skip' });
  for (const p of problems) console.log(formatProblem(file, p));
  console.log(`${records.length} good records, ${problems.length} bad`);
  if (problems.length > 0) process.exitCode = 1;
}
