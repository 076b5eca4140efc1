/**
 * What the before/after benchmarks that compare checkouts share (trees.ts, baseline.ts): running a
 * probe script in each tree, round by round, and the line describing the machine meanwhile.
 */
import { spawnSync } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { cpuSteal, speedProbeMs } from '../lab/timing.js';

/** The machine around a run: load averages, speed probes and CPU steal (bench/lab/timing.ts). */
export interface MachineLog {
  loads: number[];
  probes: number[];
  steal: number | null;
}

/** "load average (1 min) a-b; speed probe c-d ms; CPU steal e%" */
export function describeMachine(m: MachineLog): string {
  const range = (xs: number[], digits: number) => `${Math.min(...xs).toFixed(digits)}-${Math.max(...xs).toFixed(digits)}`;
  return `load average (1 min) ${range(m.loads, 2)}; speed probe ${range(m.probes, 1)} ms (bench/lab/timing.ts: lower is a faster machine); CPU steal ${m.steal === null ? 'unknown' : `${(100 * m.steal).toFixed(1)}%`}`;
}

/**
 * Writes `source` as bench/`file` into every tree and runs it there `rounds` times, the trees
 * alternating within each round so that all see the same machine; each run must print one line
 * `PROBE <json array>`, whose rows are collected per tree. The probe files are removed after.
 */
export function runProbes<Row>(trees: readonly string[], file: string, source: string, rounds: number): { rows: Map<string, Row[]>; machine: MachineLog } {
  const rows = new Map<string, Row[]>(trees.map((t) => [t, []]));
  const machine: MachineLog = { loads: [], probes: [], steal: null };
  const steal0 = cpuSteal().sample;
  try {
    for (const t of trees) writeFileSync(join(t, 'bench', file), source);
    for (let r = 0; r < rounds; r++) {
      for (const t of trees) {
        machine.loads.push(os.loadavg()[0]);
        machine.probes.push(speedProbeMs());
        const p = spawnSync(process.execPath, ['--import', 'tsx', join('bench', file)], { cwd: t, encoding: 'utf8', timeout: 30 * 60_000 });
        const line = p.stdout.split('\n').find((l) => l.startsWith('PROBE '));
        if (!line) throw new Error(`${t}: the probe printed no result (exit ${p.status})\n${p.stderr.slice(-2000)}`);
        rows.get(t)!.push(...(JSON.parse(line.slice(6)) as Row[]));
        process.stderr.write(`round ${r + 1}/${rounds} ${t} done\n`);
      }
    }
  } finally {
    for (const t of trees) rmSync(join(t, 'bench', file), { force: true });
  }
  machine.steal = cpuSteal(steal0).share;
  return { rows, machine };
}
