/**
 * The peers table: one row per case and library/backend, with the time relative to ours, the
 * check against ours, and a row per peer that could not run; written as bench/results/peers.md
 * and .json with the header bench/harness.ts writes (date, machine, adapter).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import os from 'node:os';
import type { Unavailable } from './runner.js';

export interface PeerRow {
  case: string;
  library: string;
  backend: string;
  /**
   * 'checked': matches our CPU result; 'wrong': it does not; 'failed': threw; 'skipped': one call
   * would take too long at the rate this backend showed on a smaller case (see reason).
   */
  status: 'checked' | 'wrong' | 'failed' | 'skipped';
  /** max |peer - ours| / max |ours| over every output (the worst output). */
  maxRelErr: number | null;
  medianMs: number | null;
  gflops: number | null;
  samples: number;
  /** This row's median over our CPU backend's (> 1: ours is faster). */
  vsUhdCpu: number | null;
  /** This row's median over our wasm backend's. */
  vsUhdWasm: number | null;
  /** This row's median over our WebGPU backend's. */
  vsUhdWebgpu: number | null;
  reason?: string;
}

export interface Report {
  date: string;
  machine: string;
  adapter: string;
  /** 1-minute load averages at the start and the end: this machine is shared. */
  load: [number, number];
  /** 'library / backend' of every runner, in run order. */
  peers: string[];
  rows: PeerRow[];
  unavailable: Unavailable[];
  /** Runner notes (threads, modes) by 'library / backend'. */
  notes: Record<string, string>;
  tolerance: Record<string, number>;
}

const RESULTS = join(dirname(fileURLToPath(import.meta.url)), '..', 'results');

export const machine = () =>
  `${os.cpus()[0]?.model ?? 'unknown cpu'} x${os.cpus().length}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, node ${process.version}`;

const num = (x: number | null, digits: number) => (x === null || !Number.isFinite(x) ? '' : x.toFixed(digits));

function checkCell(r: PeerRow): string {
  if (r.status === 'failed' || r.status === 'skipped') return `${r.status}: ${r.reason ?? ''}`;
  const err = r.maxRelErr === null ? '' : ` (${r.maxRelErr.toExponential(1)})`;
  return r.status === 'checked' ? `checked${err}` : `**wrong**${err}`;
}

export function table(rep: Report): string {
  const head = [
    '| case | library | backend | median ms | GFLOP/s | ÷ uhd cpu | ÷ uhd wasm | ÷ uhd webgpu | check (max rel err) | samples |',
    '|---|---|---|---:|---:|---:|---:|---:|---|---:|',
  ];
  const body = rep.rows.map((r) =>
    `| ${r.case} | ${r.library} | ${r.backend} | ${num(r.medianMs, 3)} | ${num(r.gflops, 2)} | ${num(r.vsUhdCpu, 2)} | ${num(r.vsUhdWasm, 2)} | ${num(r.vsUhdWebgpu, 2)} | ${checkCell(r)} | ${r.samples || ''} |`);
  const missing = rep.unavailable.map((u) => `| all | ${u.library} | ${u.backend} |  |  |  |  |  | could not run: ${u.reason} |  |`);
  return [...head, ...body, ...missing].join('\n');
}

const geomean = (xs: number[]) => Math.exp(xs.reduce((s, x) => s + Math.log(x), 0) / xs.length);

/** Per peer backend: geometric mean and range of its time over ours, on the checked cases. */
export function summary(rep: Report): string {
  const peers = new Map<string, PeerRow[]>(rep.peers.filter((k) => !k.startsWith('uhd')).map((k) => [k, []]));
  for (const r of rep.rows) {
    if (r.status === 'checked') peers.get(`${r.library} / ${r.backend}`)?.push(r);
  }
  const finite = (xs: (number | null)[]) => xs.filter((x): x is number => x !== null && Number.isFinite(x));
  const cell = (xs: number[]) => (xs.length ? `${geomean(xs).toFixed(2)} (${Math.min(...xs).toFixed(2)}–${Math.max(...xs).toFixed(2)})` : 'n/a');
  /** Time over the fastest of our backends (the larger ratio), per case. */
  const vsBest = (r: PeerRow) => {
    const ratios = finite([r.vsUhdCpu, r.vsUhdWasm, r.vsUhdWebgpu]);
    return ratios.length ? Math.max(...ratios) : null;
  };
  const lines = [
    '## Summary',
    '',
    'Peer time ÷ our time, geometric mean over the cases the peer ran and passed the check (range in brackets).',
    '\\> 1: ours is faster; < 1: the peer is. "best": the fastest of our backends on that case.',
    '',
    '| library / backend | cases | ÷ uhd cpu | ÷ uhd wasm | ÷ uhd webgpu | ÷ uhd best |',
    '|---|---:|---:|---:|---:|---:|',
  ];
  const faster: string[] = [];
  const slower: string[] = [];
  const mixed: string[] = [];
  for (const [k, rows] of peers) {
    if (!rows.length) continue;
    const best = finite(rows.map(vsBest));
    lines.push(`| ${k} | ${rows.length} | ${cell(finite(rows.map((r) => r.vsUhdCpu)))} | ${cell(finite(rows.map((r) => r.vsUhdWasm)))} | ${cell(finite(rows.map((r) => r.vsUhdWebgpu)))} | ${cell(best)} |`);
    const tag = `${k} (${geomean(best).toFixed(2)})`;
    if (best.every((x) => x < 1)) faster.push(tag);
    else if (best.every((x) => x > 1)) slower.push(tag);
    else mixed.push(`${k} (faster than ours on ${rows.filter((r) => (vsBest(r) ?? 1) < 1).map((r) => r.case).join('; ')})`);
  }
  lines.push('');
  if (faster.length) lines.push(`- Faster than our fastest backend on every case it ran: ${faster.join(', ')}.`);
  if (slower.length) lines.push(`- Slower than our fastest backend on every case it ran: ${slower.join(', ')}.`);
  if (mixed.length) lines.push(`- Mixed: ${mixed.join('; ')}.`);
  return lines.join('\n');
}

export function notes(rep: Report): string {
  const lines = Object.entries(rep.notes).map(([k, v]) => `- ${k}: ${v}`);
  const tol = Object.entries(rep.tolerance).map(([k, v]) => `${k} ${v}`).join(', ');
  return [
    '## Notes',
    '',
    '- Same inputs everywhere (float32, from our seeded generator). Each output is compared with our CPU backend',
    '  before timing: max |peer − ours| / max |ours| per output (the worst output; a scale of at least 1e-3 of the',
    `  largest output, for the key bias's gradient, which is zero in exact arithmetic); tolerance ${tol}.`,
    '- A timed call ends when the result is usable: ours and TF.js read back one element (which submits and waits',
    '  for queued GPU work), jax-js awaits blockUntilReady on every output, onnxruntime returns the output array.',
    '- block fwd+bwd: the gradients of sum(y) with respect to all 16 parameters (the timed call returns those).',
    ...(Math.max(...rep.load) > os.cpus().length
      ? [`- Other processes ran: load average ${rep.load.map((l) => l.toFixed(1)).join(' → ')} on ${os.cpus().length} cores. Times are inflated, most for the llvmpipe (WebGPU) rows, whose threads compete for the same cores; read ratios, not times.`]
      : []),
    ...lines,
  ].join('\n');
}

export function write(rep: Report, summaryMd: string): string {
  mkdirSync(RESULTS, { recursive: true });
  writeFileSync(join(RESULTS, 'peers.json'), JSON.stringify(rep, null, 2) + '\n');
  const load = `load average ${rep.load.map((l) => l.toFixed(1)).join(' → ')}`;
  const md = `# peers\n\n${rep.date} · ${rep.machine} · adapter: ${rep.adapter || 'n/a'} · ${load}\n\n${table(rep)}\n\n${summaryMd}\n\n${notes(rep)}\n`;
  writeFileSync(join(RESULTS, 'peers.md'), md);
  return md;
}
