/**
 * Scoring per benchmark as VLMEvalKit scores without a judge (`--judge exact_matching`, or no
 * API key), and the tables it writes:
 *
 * - MCQ (MMBench, MMStar, AI2D, MMMU, custom): release `ImageMCQDataset.evaluate` filters the
 *   "Answer: X" pattern, then upstream `mcq_vanilla_eval` (a row is right when `can_infer` reads
 *   its answer letter; nothing readable is 'Z', wrong) or, for MMBench, `mcq_circular_eval`: rows
 *   share a question when `index % 1e6` (or the `g_index` column) is the same, the question
 *   counts once, on its main row (index == g_index), and is right only when every rotation is.
 *   MMMU's open questions become two options (`MMMU_preproc`: A = the answer, B = 'Other
 *   Answers', ground truth A). Table: `report_acc` (split x Overall, l2-category, category).
 * - Y/N (HallusionBench): release `ImageYORNDataset.evaluate` ("Answer:" filter, then
 *   `YOrN_Extraction`) and `Hallusion_rating`: aAcc over questions, fAcc over figures and qAcc over
 *   question pairs (groups read from the index `..._set_figure_question`), where the columns allow.
 * - OCRBench: `OCRBench.evaluate` (containment, category sums, Final Score over 1000).
 * - MathVista: `post_check` prefetch only; the rest needs the GPT judge and is reported so.
 * - custom open questions: VLMEvalKit's VQA `accuracy` method (case-insensitive exact match).
 *
 * What would go to a judge (an MCQ answer no rule reads, a Y/N answer that is neither, a
 * MathVista answer that is not already a bare number or letter) is counted and reported as
 * "needs judge"; VLMEvalKit's exact-matching mode counts those rows wrong, and so do we.
 */
import { canInfer, mathVistaPrefetch, ocrBenchHit, releaseMcqFilter, releaseYOrNFilter, yOrNExtraction, lastAnswerLine } from './extract.js';
import type { Benchmark } from './benchmarks.js';
import { parsePyList, pyFloat, pyInt } from './python.js';
import { formatTable } from './table.js';

/** A row with its prediction, as the predictions file holds it. */
export interface PredictedRow {
  index: string;
  /** Column text as Python's str() of pandas' value; null for NaN. */
  values: Readonly<Record<string, string | null>>;
  options: readonly { letter: string; text: string }[];
  prediction: string;
}

/** A table as VLMEvalKit dumps it (cells already formatted; null is written empty). */
export interface OutTable {
  columns: string[];
  rows: (string | null)[][];
}

export interface ScoreReport {
  benchmark: string;
  /** `<name>_acc.csv`: the benchmark's accuracy table in VLMEvalKit's layout. */
  acc: OutTable;
  /** Files VLMEvalKit writes under another name, written too: suffix -> content. */
  extra: { suffix: string; content: string }[];
  /** The scored rows with `hit` and `log` (VLMEvalKit's `_exact_matching_result` file). */
  result: OutTable | null;
  /** The headline figure in percent, and what it is. */
  overall: { label: string; value: number };
  /** Per category (or split), in percent. */
  breakdown: { name: string; value: number }[];
  /** Rows a judge would have looked at (counted wrong here). */
  needsJudge: number;
  /** Questions scored (MMBench: circular groups). */
  scored: number;
  notes: string[];
}

/** MMBench's ability names as `report_acc` abbreviates them (upstream `MMB_abbrs`). */
const MMB_ABBRS: Readonly<Record<string, string>> = {
  coarse_perception: 'CP',
  'finegrained_perception (instance-level)': 'FP-S',
  'finegrained_perception (cross-instance)': 'FP-C',
  logic_reasoning: 'LR',
  relation_reasoning: 'RR',
  attribute_reasoning: 'AR',
};

const mean = (xs: readonly number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN);
const fmt = (x: number): string | null => (Number.isNaN(x) ? null : pyFloat(x));
const sortedUnique = (xs: Iterable<string>) => [...new Set(xs)].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
const firstSeen = (xs: Iterable<string>) => [...new Set(xs)];

/** Rows in VLMEvalKit's `sort_values(by='index')` order (numeric when every index is an integer). */
function sortByIndex<T extends { index: string }>(rows: readonly T[]): T[] {
  const ints = rows.every((r) => pyInt(r.index) !== null);
  return [...rows].sort((a, b) => {
    if (ints) {
      const d = BigInt(a.index) - BigInt(b.index);
      return d < 0n ? -1 : d > 0n ? 1 : 0;
    }
    return a.index < b.index ? -1 : a.index > b.index ? 1 : 0;
  });
}

/** Upstream `report_acc`: one row per split, columns Overall then each l2-category and category. */
export function reportAcc(rows: readonly { values: Readonly<Record<string, string | null>>; hit: number }[]): OutTable {
  const split = (r: (typeof rows)[number]) => (('split' in r.values) ? r.values.split ?? 'nan' : 'none');
  const splits = firstSeen(rows.map(split));
  const columns = ['split', 'Overall'];
  const byCol: (number | null)[][] = [splits.map((sp) => mean(rows.filter((r) => split(r) === sp).map((r) => r.hit)))];
  const names: string[] = ['Overall'];
  for (const group of ['l2-category', 'category']) {
    if (!rows.length || !(group in rows[0].values)) continue;
    for (const ab of sortedUnique(rows.map((r) => r.values[group] ?? 'nan'))) {
      const name = MMB_ABBRS[ab] ?? ab;
      const sub = rows.filter((r) => (r.values[group] ?? 'nan') === ab);
      const col = splits.map((sp) => mean(sub.filter((r) => split(r) === sp).map((r) => r.hit)));
      const at = names.indexOf(name);
      if (at >= 0) byCol[at] = col; // a dict key set twice keeps its first place
      else {
        names.push(name);
        byCol.push(col);
      }
    }
  }
  columns.splice(1, 1, ...names);
  return { columns, rows: splits.map((sp, i) => [sp, ...byCol.map((c) => fmt(c[i] as number))]) };
}

function mcqChoices(row: PredictedRow): Record<string, string> {
  const c: Record<string, string> = {};
  for (const o of row.options) c[o.letter] = o.text;
  return c;
}

function scoreMcq(bench: Benchmark, rows: readonly PredictedRow[], datasetName: string): ScoreReport {
  const notes: string[] = [];
  // release: the "Answer: X" filter, then the rows sorted by index
  const data = sortByIndex(rows).map((r) => {
    const prediction = releaseMcqFilter(datasetName, r.prediction, r.values.question_type ?? null);
    let choices = mcqChoices(r);
    let gt = r.values.answer;
    if (datasetName.includes('MMMU')) {
      // MMMU_preproc: an open question is a choice between its answer and 'Other Answers'
      if (!('A' in choices)) choices = { ...choices, A: r.values.answer ?? 'nan', B: 'Other Answers' };
      if (gt === null || !/^[A-Z]$/.test(gt)) gt = 'A';
    }
    return { ...r, prediction, choices, gt };
  });
  let needsJudge = 0;
  const judged: { row: (typeof data)[number]; hit: number; log: string }[] = [];
  if (!bench.circular) {
    for (const row of data) {
      const opt = canInfer(row.prediction, row.choices);
      if (!opt) needsJudge++;
      const log = opt ? row.prediction : 'Failed in Prefetch, no GPT-based answer matching under `exact_matching` policy.';
      judged.push({ row, hit: (opt || 'Z') === row.gt ? 1 : 0, log: `Match Log: ${log}. ` });
    }
  } else {
    for (const r of data) if (pyInt(r.index) === null) throw new Error(`circular evaluation: index ${r.index} is not an integer (MMBench's rotations are numbered base + k * 1e6)`);
    const group = (r: (typeof data)[number]) => (r.values.g_index != null ? String(pyInt(r.values.g_index) ?? r.values.g_index) : String(BigInt(r.index) % 1_000_000n));
    for (const main of data.filter((r) => group(r) === r.index)) {
      const members = data.filter((r) => group(r) === main.index);
      let result: { hit: number; log: string } | null = null;
      const preds = members.map((m) => canInfer(m.prediction, m.choices));
      for (let i = 0; i < members.length; i++) {
        if (preds[i] && preds[i] !== members[i].gt) {
          result = { hit: 0, log: `Failed in Prefetching Rolling ${i}: Answer is ${members[i].gt}, Prediction is ${members[i].prediction}, Pre-fetched is ${preds[i]}. ` };
          break;
        }
      }
      if (!result && preds.every((p, i) => p === members[i].gt)) result = { hit: 1, log: 'Succeed During Pre-fetching' };
      if (!result) {
        needsJudge++;
        result = { hit: 0, log: 'Failed in Prefetch, no GPT-based answer matching under `exact_matching` policy.' };
      }
      judged.push({ row: main, ...result });
    }
    const mains = new Set(judged.map((j) => j.row.index));
    const orphans = data.filter((r) => !mains.has(group(r))).length;
    if (orphans) notes.push(`${orphans} rows belong to no main row (index = g_index) among the evaluated rows and are not scored, as in VLMEvalKit`);
  }
  const acc = reportAcc(judged.map((j) => ({ values: j.row.values, hit: j.hit })));
  const resultCols = [...Object.keys(rows[0]?.values ?? {}).filter((c) => c !== 'image'), 'prediction', 'hit', 'log'];
  const result: OutTable = {
    columns: resultCols,
    rows: judged.map((j) => [...resultCols.slice(0, -3).map((c) => j.row.values[c] ?? null), j.row.prediction, String(j.hit), j.log]),
  };
  const overall = mean(judged.map((j) => j.hit));
  // the same figures over all splits together, for the console
  const whole = reportAcc(judged.map((j) => ({ values: { ...j.row.values, split: 'all' }, hit: j.hit })));
  const breakdown = [
    ...(acc.rows.length > 1 ? acc.rows.map((r) => ({ name: `split ${r[0]}`, value: 100 * Number(r[1]) })) : []),
    ...whole.columns.slice(2).map((name, k) => ({ name, value: 100 * Number(whole.rows[0][k + 2] ?? NaN) })),
  ];
  if (needsJudge) notes.push(`${needsJudge} ${bench.circular ? 'questions have a rotation' : 'answers are'} that no rule reads: VLMEvalKit's GPT judge would look at them; counted wrong (its exact_matching mode)`);
  return {
    benchmark: bench.name, acc, extra: [], result,
    overall: { label: bench.circular ? 'accuracy (circular, exact matching)' : 'accuracy (exact matching)', value: 100 * overall },
    breakdown, needsJudge, scored: judged.length, notes,
  };
}

function scoreYOrN(bench: Benchmark, rows: readonly PredictedRow[]): ScoreReport {
  const data = rows.map((r) => {
    const extracted = yOrNExtraction(releaseYOrNFilter(r.prediction));
    return { r, extracted, score: r.values.answer === extracted ? 1 : 0 };
  });
  const needsJudge = data.filter((d) => d.extracted === 'Unknown').length;
  const parts = data.map((d) => d.r.index.split('_'));
  const grouped = parts.every((p) => p.length >= 6) && rows.length > 0 && 'l2-category' in rows[0].values;
  const notes: string[] = [];
  if (!grouped) notes.push('fAcc and qAcc need indices of the form ..._set_figure_question and an l2-category column; only aAcc is given');
  type D = (typeof data)[number];
  const aAcc = (sub: D[]) => 100 * mean(sub.map((d) => d.score));
  const groupAcc = (sub: D[], key: (d: D, p: string[]) => string) => {
    const g = new Map<string, number[]>();
    sub.forEach((d) => {
      const k = key(d, d.r.index.split('_'));
      g.set(k, [...(g.get(k) ?? []), d.score]);
    });
    return 100 * mean([...g.values()].map((s) => (s.every((x) => x === 1) ? 1 : 0)));
  };
  const fAcc = (sub: D[]) => (grouped ? groupAcc(sub, (d, p) => `${d.r.values['l2-category']}_${p[3]}_${p[4]}`) : NaN);
  const qAcc = (sub: D[]) => (grouped ? groupAcc(sub, (d, p) => `${d.r.values['l2-category']}_${p[3]}_${p[5]}`) : NaN);
  const line = (name: string, sub: D[]) => {
    const a = aAcc(sub);
    const f = fAcc(sub);
    const q = qAcc(sub);
    return [name, fmt(a), fmt(f), fmt(q), fmt((a + f + q) / 3)];
  };
  const table: OutTable = { columns: ['split', 'aAcc', 'fAcc', 'qAcc', 'mean_acc'], rows: [line('Overall', data)] };
  for (const col of ['category', 'l2-category']) {
    if (!rows.length || !(col in rows[0].values)) continue;
    for (const c of sortedUnique(data.map((d) => d.r.values[col] ?? 'nan'))) table.rows.push(line(c, data.filter((d) => (d.r.values[col] ?? 'nan') === c)));
  }
  if (needsJudge) notes.push(`${needsJudge} answers are neither yes nor no: VLMEvalKit's judge would look at them; counted wrong`);
  const cols = [...Object.keys(rows[0]?.values ?? {}).filter((c) => c !== 'image'), 'prediction', 'extracted', 'score'];
  return {
    benchmark: bench.name,
    acc: table,
    extra: [{ suffix: '_score.csv', content: formatTable(table.columns, table.rows, ',') }],
    result: { columns: cols, rows: data.map((d) => [...cols.slice(0, -3).map((c) => d.r.values[c] ?? null), d.r.prediction, d.extracted, d.score ? 'True' : 'False']) },
    overall: { label: 'aAcc (yes/no accuracy)', value: aAcc(data) },
    breakdown: grouped ? [{ name: 'fAcc', value: fAcc(data) }, { name: 'qAcc', value: qAcc(data) }] : [],
    needsJudge, scored: data.length, notes,
  };
}

const OCRBENCH_CATEGORIES = [
  'Regular Text Recognition', 'Irregular Text Recognition', 'Artistic Text Recognition', 'Handwriting Recognition', 'Digit String Recognition',
  'Non-Semantic Text Recognition', 'Scene Text-centric VQA', 'Doc-oriented VQA', 'Key Information Extraction', 'Handwritten Mathematical Expression Recognition',
];

function scoreOcrBench(bench: Benchmark, rows: readonly PredictedRow[]): ScoreReport {
  const score: Record<string, number> = Object.fromEntries(OCRBENCH_CATEGORIES.map((c) => [c, 0]));
  const hits = rows.map((r) => {
    if (r.values.answer === null) throw new Error(`OCRBench: row index ${r.index} has no answer`);
    const answers = parsePyList(r.values.answer, `OCRBench: row index ${r.index}: answer`);
    const cat = r.values.category ?? null;
    const hit = ocrBenchHit(r.prediction, answers, cat);
    if (hit) {
      if (cat === null || !(cat in score)) throw new Error(`OCRBench: row index ${r.index}: category '${cat}' is not one of OCRBench's ten`);
      score[cat]++;
    }
    return hit;
  });
  const text = OCRBENCH_CATEGORIES.slice(0, 6).reduce((s, c) => s + score[c], 0);
  const final: Record<string, number> = {
    'Text Recognition': text,
    'Scene Text-centric VQA': score['Scene Text-centric VQA'],
    'Doc-oriented VQA': score['Doc-oriented VQA'],
    'Key Information Extraction': score['Key Information Extraction'],
    'Handwritten Mathematical Expression Recognition': score['Handwritten Mathematical Expression Recognition'],
  };
  final['Final Score'] = Object.values(final).reduce((a, b) => a + b, 0);
  final['Final Score Norm'] = final['Final Score'] / 10;
  const keys = Object.keys(final);
  const cell = (k: string) => (k === 'Final Score Norm' ? pyFloat(final[k]) : String(final[k]));
  const json = `{\n${keys.map((k) => `    ${JSON.stringify(k)}: ${cell(k)}`).join(',\n')}\n}`;
  const notes = rows.length !== 1000 ? [`Final Score counts hits out of these ${rows.length} rows (OCRBench has 1000; Final Score Norm is the score / 10)`] : [];
  const cols = [...Object.keys(rows[0]?.values ?? {}).filter((c) => c !== 'image'), 'prediction', 'hit'];
  return {
    benchmark: bench.name,
    acc: { columns: keys, rows: [keys.map(cell)] },
    extra: [{ suffix: '_score.json', content: json + '\n' }],
    result: { columns: cols, rows: rows.map((r, i) => [...cols.slice(0, -2).map((c) => r.values[c] ?? null), r.prediction, hits[i] ? '1' : '0']) },
    overall: { label: 'accuracy (Final Score / rows)', value: rows.length ? (100 * final['Final Score']) / rows.length : NaN },
    breakdown: keys.slice(0, 5).map((k) => ({ name: k, value: final[k] })),
    needsJudge: 0, scored: rows.length, notes,
  };
}

function scoreMathVista(bench: Benchmark, rows: readonly PredictedRow[]): ScoreReport {
  const tot = new Map<string, number>();
  const fetch = new Map<string, number>();
  const hit = new Map<string, number>();
  const pattern = new Map<string, number>();
  const add = (m: Map<string, number>, k: string) => m.set(k, (m.get(k) ?? 0) + 1);
  const results = rows.map((r) => {
    const choices = r.values.choices === null || r.values.choices === undefined ? null : parsePyList(r.values.choices, `MathVista: row index ${r.index}: choices`);
    const fields = { question_type: r.values.question_type ?? null, answer_type: r.values.answer_type ?? null, answer: r.values.answer ?? null, answer_option: r.values.answer_option ?? null, choices };
    const pf = mathVistaPrefetch(fields, r.prediction);
    const tail = lastAnswerLine(r.prediction);
    const viaPattern = pf.hit || (tail !== null && mathVistaPrefetch(fields, tail).hit);
    let skills: string[];
    try {
      skills = r.values.skills ? parsePyList(r.values.skills, 'skills') : [String(r.values.skills)];
    } catch {
      skills = [String(r.values.skills)];
    }
    const cate = r.values.task ?? 'nan';
    for (const k of ['Overall', ...skills, cate]) add(tot, k);
    if (pf.prefetched) for (const k of ['Overall', cate, ...skills]) add(fetch, k);
    if (pf.hit) for (const k of ['Overall', cate, ...skills]) add(hit, k);
    if (viaPattern) for (const k of ['Overall', cate, ...skills]) add(pattern, k);
    return { r, pf };
  });
  const keys = [...tot.keys()];
  const pct = (m: Map<string, number>, k: string) => pyFloat(((m.get(k) ?? 0) / tot.get(k)!) * 100);
  const acc: OutTable = {
    columns: ['Task&Skill', 'tot', 'prefetch', 'hit', 'prefetch_rate', 'acc', 'needs_judge', 'acc_answer_pattern'],
    rows: keys.map((k) => [k, String(tot.get(k)), String(fetch.get(k) ?? 0), String(hit.get(k) ?? 0), pct(fetch, k), pct(hit, k), String(tot.get(k)! - (fetch.get(k) ?? 0)), pct(pattern, k)]),
  };
  const total = rows.length;
  const needsJudge = total - (fetch.get('Overall') ?? 0);
  const cols = [...Object.keys(rows[0]?.values ?? {}).filter((c) => c !== 'image'), 'prediction', 'res', 'log', 'hit'];
  return {
    benchmark: bench.name, acc, extra: [],
    result: { columns: cols, rows: results.map(({ r, pf }) => [...cols.slice(0, -4).map((c) => r.values[c] ?? null), r.prediction, pf.res, pf.prefetched ? 'Prefetch succeed' : 'needs judge', pf.hit ? 'True' : 'False']) },
    overall: { label: 'accuracy, prefetch only (a lower bound: the rest needs the GPT judge)', value: total ? (100 * (hit.get('Overall') ?? 0)) / total : NaN },
    breakdown: [{ name: 'with the "Answer:" line read as the answer (ours, not the paper\'s judge)', value: total ? (100 * (pattern.get('Overall') ?? 0)) / total : NaN }],
    needsJudge, scored: total,
    notes: needsJudge ? [`${needsJudge} of ${total} answers need VLMEvalKit's GPT judge (MathVista has no judge-free scorer); they are counted wrong in 'acc'`] : [],
  };
}

function scoreOpen(bench: Benchmark, rows: readonly PredictedRow[]): ScoreReport {
  // VLMEvalKit's vqa_eval `process_line(method='accuracy')`: case-insensitive exact match with any answer
  const strip = (s: string) => s.trim().toLowerCase();
  const hits = rows.map((r) => {
    const a = r.values.answer ?? 'nan';
    const answers = a.startsWith('[') && a.endsWith(']') ? parsePyList(a, `row index ${r.index}: answer`) : [a];
    return mean(answers.map((x) => (strip(x) === strip(r.prediction) ? 1 : 0)));
  });
  const ret: [string, number][] = [['Overall', 100 * mean(hits)]];
  if (rows.length && 'split' in rows[0].values) {
    for (const sp of firstSeen(rows.map((r) => r.values.split ?? 'nan'))) ret.splice(ret.length - 1, 0, [sp, 100 * mean(hits.filter((_, i) => (rows[i].values.split ?? 'nan') === sp))]);
  } else if (rows.length && 'category' in rows[0].values) {
    for (const c of sortedUnique(rows.map((r) => r.values.category ?? 'nan'))) ret.push([c, 100 * mean(hits.filter((_, i) => (rows[i].values.category ?? 'nan') === c))]);
  }
  const cols = [...Object.keys(rows[0]?.values ?? {}).filter((c) => c !== 'image'), 'prediction', 'hit'];
  return {
    benchmark: bench.name,
    acc: { columns: ret.map(([k]) => k), rows: [ret.map(([, v]) => fmt(v))] },
    extra: [],
    result: { columns: cols, rows: rows.map((r, i) => [...cols.slice(0, -2).map((c) => r.values[c] ?? null), r.prediction, fmt(hits[i])]) },
    overall: { label: 'accuracy (exact match, case-insensitive)', value: ret.find(([k]) => k === 'Overall')![1] },
    breakdown: ret.filter(([k]) => k !== 'Overall').map(([name, value]) => ({ name, value })),
    needsJudge: 0, scored: rows.length, notes: [],
  };
}

/** Scores predicted rows of `bench` (see the module comment); `datasetName` picks the release's filters. */
export function scoreBenchmark(bench: Benchmark, rows: readonly PredictedRow[]): ScoreReport {
  if (rows.length === 0) throw new Error(`score ${bench.name}: no predictions to score`);
  if (bench.type === 'MCQ') return scoreMcq(bench, rows, bench.name);
  if (bench.type === 'Y/N') return scoreYOrN(bench, rows);
  if (bench.name === 'OCRBench') return scoreOcrBench(bench, rows);
  if (bench.name === 'MathVista_MINI') return scoreMathVista(bench, rows);
  return scoreOpen(bench, rows);
}
