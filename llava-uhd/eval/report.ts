/**
 * The files an evaluation writes, named and laid out as VLMEvalKit writes them, so that its
 * scorers read our predictions and ours read theirs (with `PRED_FORMAT=tsv` VLMEvalKit writes
 * the same TSV):
 *
 *   <name>.tsv                   the benchmark's columns (without `image`) and `prediction`
 *   <name>_acc.csv               the accuracy table of the benchmark's scorer
 *   <name>_score.csv / .json     where VLMEvalKit names its table so (HallusionBench, OCRBench)
 *   <name>_result.tsv            every scored row with what was extracted and whether it was right
 *
 * All through pandas' `to_csv(..., quoting=csv.QUOTE_ALL)` layout (vlmeval/smp/file.py `dump`).
 */
import { mkdir, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ScoreReport } from './score.js';
import { formatTable } from './table.js';

/** Writes `content` to `path` atomically (a temporary file, then a rename). */
export async function writeAtomic(path: string, content: string): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}`;
  await writeFile(tmp, content);
  await rename(tmp, path);
}

/** The predictions file: `columns` (the input's, `image` left out) then `prediction`. */
export function formatPredictions(columns: readonly string[], rows: readonly { values: Readonly<Record<string, string | null>>; prediction: string }[]): string {
  const cols = columns.filter((c) => c !== 'image' && c !== 'prediction');
  return formatTable([...cols, 'prediction'], rows.map((r) => [...cols.map((c) => r.values[c] ?? null), r.prediction]));
}

/** Writes a score report's files next to the predictions; returns their paths. */
export async function writeScore(dir: string, name: string, report: ScoreReport): Promise<{ acc: string; files: string[] }> {
  await mkdir(dir, { recursive: true });
  const acc = join(dir, `${name}_acc.csv`);
  await writeAtomic(acc, formatTable(report.acc.columns, report.acc.rows, ','));
  const files = [acc];
  for (const e of report.extra) {
    const p = join(dir, `${name}${e.suffix}`);
    await writeAtomic(p, e.content);
    files.push(p);
  }
  if (report.result) {
    const p = join(dir, `${name}_result.tsv`);
    await writeAtomic(p, formatTable(report.result.columns, report.result.rows));
    files.push(p);
  }
  return { acc, files };
}

/** The report as lines for a terminal. */
export function summarize(report: ScoreReport): string[] {
  const pct = (x: number) => (Number.isNaN(x) ? 'n/a' : `${x.toFixed(1)}%`);
  const lines = [`${report.benchmark}: ${report.overall.label} ${pct(report.overall.value)} over ${report.scored} ${report.benchmark.startsWith('MMBench') ? 'questions' : 'rows'}`];
  const isCount = report.benchmark === 'OCRBench';
  for (const b of report.breakdown) lines.push(`  ${b.name.padEnd(40)} ${isCount ? String(b.value) : pct(b.value)}`);
  if (report.needsJudge) lines.push(`  needs judge: ${report.needsJudge}`);
  for (const n of report.notes) lines.push(`  note: ${n}`);
  return lines;
}
