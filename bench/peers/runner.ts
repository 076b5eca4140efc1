/**
 * What each library's adapter provides: a runner per backend that prepares a workload (inputs
 * on its device) and returns the timed call and its outputs, for the check against ours.
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Workload } from './workloads.js';

export interface Prepared {
  /** One call, resolved once the work is done (GPU work flushed and waited for). */
  run(): Promise<void>;
  /**
   * One call, read back in full: the output, then (block fwd+bwd) the gradients in
   * BLOCK_PARAM_NAMES order. Row-major float32.
   */
  outputs(): Promise<Float32Array[]>;
  /** For peers that time their own calls (out of process): the median of calls timed as asked. */
  timed?(timing: import('./timing.js').TimingOptions): Promise<import('./timing.js').Timing>;
  dispose(): void;
}

export interface Runner {
  /** e.g. 'tfjs 4.22.0'. */
  library: string;
  /** e.g. 'cpu', 'webgpu', 'wasm'. */
  backend: string;
  /** Threads, execution mode: what a reader needs to weigh the numbers. */
  note?: string;
  /** Whether this runner has a row for the workload (default: all); e.g. jit only where it can fuse. */
  covers?: (w: Workload) => boolean;
  /** Throws, with a one-line reason, when this library cannot run the workload. */
  prepare(w: Workload): Promise<Prepared>;
}

/** A library or backend that could not start, with why (the error, shortened). */
export interface Unavailable {
  library: string;
  backend: string;
  reason: string;
}

export type Opened = Runner | Unavailable;

/** Thrown by `prepare` for a workload the library does not do by design (a row that says why). */
export class Skip extends Error {}

export const isRunner = (o: Opened): o is Runner => 'prepare' in o;

/** The first line of an error's message, at most `max` characters. */
export function reason(e: unknown, max = 160): string {
  const msg = e instanceof Error ? e.message : String(e);
  const line = msg.split('\n').find((l) => l.trim()) ?? msg;
  return line.length > max ? `${line.slice(0, max - 1)}…` : line;
}

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** The installed version of a package (read from node_modules; exports maps hide package.json). */
export function installedVersion(pkg: string): string {
  try {
    return (JSON.parse(readFileSync(join(ROOT, 'node_modules', pkg, 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return '?';
  }
}
