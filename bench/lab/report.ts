/**
 * What every kernel lab shares around its variants: the command-line settings (`--quick`,
 * `--samples n`, `--wall`), the device and the timer, and the report: tables printed as they
 * fill and written to bench/results/lab-<name>.md and .json with the machine, the adapter,
 * the date and the timing method.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import os from 'node:os';
import { initWebGPU, shutdown, type GpuInfo } from '../../kernels/index.js';
import { LabTimer } from './timing.js';

const RESULTS = join(dirname(fileURLToPath(import.meta.url)), '..', 'results');

export interface LabSettings {
  /** Fewer samples and, where a lab says so, fewer or smaller shapes. */
  quick: boolean;
  /** Timed samples per variant and shape; the report gives their median. */
  samples: number;
  /** Positional arguments left for the lab. */
  rest: string[];
}

/** Reads `--quick`, `--samples n` and `--wall` (forces the wall clock) from the command line. */
export function labSettings(argv = process.argv.slice(2), defaultSamples = 5): LabSettings & { wall: boolean } {
  const args = [...argv];
  const take = (name: string) => {
    const i = args.indexOf(name);
    return i >= 0 ? args.splice(i, 2)[1] : undefined;
  };
  const has = (name: string) => {
    const i = args.indexOf(name);
    if (i >= 0) args.splice(i, 1);
    return i >= 0;
  };
  const quick = has('--quick');
  const wall = has('--wall');
  const samples = Number(take('--samples') ?? (quick ? 3 : defaultSamples));
  return { quick, wall, samples, rest: args };
}

export interface LabTable {
  title: string;
  /** Printed before each row on the console when a lab has several tables. */
  tag: string;
  columns: string[];
  rows: (string | number)[][];
}

export class LabReport {
  readonly tables: LabTable[] = [];
  readonly notes: string[] = [];
  private readonly started = new Date();

  constructor(
    readonly name: string,
    readonly info: GpuInfo,
    readonly timer: LabTimer,
    readonly settings: LabSettings,
  ) {}

  get adapter(): string {
    return `${this.info.backend}/${this.info.featureLevel}: ${this.info.description}`;
  }

  /** The header lines: machine, adapter and its features, timing method. */
  header(): string[] {
    const cpus = os.cpus();
    return [
      `date: ${this.started.toISOString()}`,
      `machine: ${cpus[0]?.model ?? 'unknown cpu'} x${cpus.length}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, node ${process.version}`,
      `adapter: ${this.adapter}`,
      `adapter features: ${this.info.adapterFeatures.join(', ') || '(none)'}`,
      `timing: ${this.timer.describe()}; median of ${this.settings.samples} samples${this.settings.quick ? ' (--quick)' : ''}`,
    ];
  }

  /** A note printed now and kept for the report (a skipped variant, a wrong result, a caveat). */
  note(text: string): void {
    console.log(`  note: ${text}`);
    this.notes.push(text);
  }

  /** Starts a table; rows added later print as they come. */
  table(title: string, columns: string[], tag = title): LabTable {
    const t: LabTable = { title, tag, columns, rows: [] };
    this.tables.push(t);
    console.log(`\n${title}\n  ${columns.join(' | ')}`);
    return t;
  }

  row(t: LabTable, cells: (string | number)[]): void {
    t.rows.push(cells);
    const tag = this.tables.length > 1 ? `[${t.tag}] ` : '';
    console.log(`  ${tag}${cells.map(cell).join(' | ')}`);
  }

  markdown(): string {
    const parts = [`# lab: ${this.name}`, '', ...this.header().map((l) => `- ${l}`)];
    for (const t of this.tables) {
      const line = (cells: string[]) => `| ${cells.map((c) => c.replaceAll('|', '\\|')).join(' | ')} |`;
      parts.push('', `## ${t.title}`, '', line(t.columns), `|${t.columns.map((_, i) => (i === 0 ? '---' : '---:')).join('|')}|`);
      for (const r of t.rows) parts.push(line(r.map(cell)));
    }
    if (this.notes.length) parts.push('', '## Notes', '', ...this.notes.map((n) => `- ${n}`));
    return parts.join('\n') + '\n';
  }

  /** Writes bench/results/lab-<name>.md and .json. */
  write(): void {
    mkdirSync(RESULTS, { recursive: true });
    const base = join(RESULTS, `lab-${this.name}`);
    const json = {
      lab: this.name,
      date: this.started.toISOString(),
      machine: this.header()[1].slice('machine: '.length),
      adapter: this.adapter,
      adapterFeatures: this.info.adapterFeatures,
      timing: this.timer.method,
      samples: this.settings.samples,
      quick: this.settings.quick,
      tables: this.tables.map((t) => ({ title: t.title, rows: t.rows.map((r) => Object.fromEntries(t.columns.map((c, i) => [c, r[i]]))) })),
      notes: this.notes,
    };
    writeFileSync(`${base}.json`, JSON.stringify(json, null, 2) + '\n');
    writeFileSync(`${base}.md`, this.markdown());
    console.log(`\nwrote ${base}.md and .json`);
  }
}

/** Numbers print with 3 significant digits past the point where they matter. */
function cell(x: string | number): string {
  if (typeof x === 'string') return x;
  if (!Number.isFinite(x) || Number.isInteger(x)) return String(x);
  const a = Math.abs(x);
  return a >= 100 ? x.toFixed(0) : a >= 10 ? x.toFixed(1) : a >= 1 ? x.toFixed(2) : x.toFixed(3);
}

/**
 * Opens the device, prints the header, runs `body` with a report and a timer, writes the
 * report and closes the device (also when `body` throws).
 */
export async function runLab(name: string, body: (r: LabReport) => Promise<void>, defaultSamples = 5): Promise<void> {
  const settings = labSettings(process.argv.slice(2), defaultSamples);
  const info = await initWebGPU();
  const timer = new LabTimer({ wallClock: settings.wall });
  const report = new LabReport(name, info, timer, settings);
  try {
    console.log(`lab: ${name}\n${report.header().map((l) => `  ${l}`).join('\n')}`);
    await body(report);
    report.write();
  } finally {
    timer.dispose();
    shutdown();
  }
}
