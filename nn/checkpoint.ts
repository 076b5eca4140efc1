/**
 * Training checkpoints: model, optimizer state, step, schedule position and RNG state in one
 * safetensors file (tensors under `model.` and `optim.`, the rest as JSON metadata), written
 * atomically (temp file, then rename), so an interrupted save never destroys the last good one.
 * Resuming from step N reproduces the uninterrupted run from step N+1 on.
 *
 * A checkpoint holding a NaN or an infinity is never written (NonFiniteError, naming the tensor):
 * the last good one stays. A save killed midway leaves its temp file (`<name>.tmp-<pid>-<hex>`,
 * as big as the checkpoint); `removeStaleTemps` deletes those at the next start.
 */
import { readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { getRngState, setRngState, type Device, type Tensor } from '../tensor/index.js';
import type { Module } from './module.js';
import { flattenStateDict, unflattenStateDict, type LRScheduler, type Optimizer, type ParamState } from './optim.js';
import { loadSafetensors, readSafetensorsHeader, saveSafetensors } from './safetensors.js';

export const CHECKPOINT_FORMAT = 'uhd-training-checkpoint-v1';

export interface TrainingState<S extends ParamState = ParamState> {
  model: Module;
  optimizer?: Optimizer<S>;
  scheduler?: LRScheduler;
  /** Optimizer steps taken so far. */
  step: number;
  /** Anything JSON-serialisable the caller wants back (e.g. the stage, data position). */
  extra?: Record<string, unknown>;
}

/** A tensor holding a value that is not finite: where, and what. */
export interface NonFiniteValue {
  name: string;
  index: number;
  value: number;
}

export class NonFiniteError extends Error {
  constructor(message: string, readonly found: NonFiniteValue) {
    super(message);
    this.name = 'NonFiniteError';
  }
}

/** The first NaN or infinity among `tensors` (in order), or null when all are finite. Reads each back. */
export async function findNonFinite(tensors: Iterable<[string, Tensor]>): Promise<NonFiniteValue | null> {
  for (const [name, t] of tensors) {
    if (t.dtype === 'int32') continue;
    const data = await t.data();
    for (let i = 0; i < data.length; i++) {
      if (!Number.isFinite(data[i])) return { name, index: i, value: data[i] };
    }
  }
  return null;
}

/**
 * Temp files of interrupted saves in `dir`: `<file>.safetensors.tmp-<pid>-<12 hex>`, the names
 * saveSafetensors writes (nn/safetensors.ts), from any process but this one. Call it only where
 * no other process saves into `dir` (a training run holds the folder's lock). Returns the names removed.
 */
export function removeStaleTemps(dir: string): string[] {
  const pattern = /^.+\.safetensors\.tmp-(\d+)-[0-9a-f]{12}$/;
  const removed: string[] = [];
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return removed;
  }
  for (const f of names) {
    const m = pattern.exec(f);
    if (!m || Number(m[1]) === process.pid) continue;
    rmSync(join(dir, f), { force: true });
    removed.push(f);
  }
  return removed;
}

/** Writes the checkpoint atomically; refuses (NonFiniteError) when any tensor holds a NaN or an infinity. */
export async function saveCheckpoint<S extends ParamState>(path: string, s: TrainingState<S>): Promise<void> {
  const tensors = new Map<string, Tensor>();
  for (const [k, t] of s.model.stateDict()) tensors.set(`model.${k}`, t);
  const metadata: Record<string, string> = {
    format: CHECKPOINT_FORMAT,
    step: String(s.step),
    rng: JSON.stringify(getRngState()),
    extra: JSON.stringify(s.extra ?? {}),
  };
  if (s.optimizer) {
    const { tensors: opt, meta } = flattenStateDict(s.optimizer.stateDict());
    for (const [k, t] of Object.entries(opt)) tensors.set(`optim.${k}`, t);
    metadata.optimizer = meta;
  }
  if (s.scheduler) metadata.scheduler = JSON.stringify(s.scheduler.stateDict());
  const bad = await findNonFinite(tensors);
  if (bad) {
    throw new NonFiniteError(`saveCheckpoint: not writing ${path}: ${bad.name} holds ${bad.value} at element ${bad.index}; the file there (if any) is left as it was`, bad);
  }
  await saveSafetensors(path, tensors, { metadata });
}

/** What a checkpoint says about itself (step and the caller's extra data), without loading its tensors. */
export async function readCheckpointInfo(path: string): Promise<{ step: number; extra: Record<string, unknown> }> {
  const meta = (await readSafetensorsHeader(path)).metadata;
  if (meta.format !== CHECKPOINT_FORMAT) throw new Error(`readCheckpointInfo: ${path} is not a training checkpoint (format '${meta.format ?? 'none'}')`);
  let extra: unknown;
  try {
    extra = JSON.parse(meta.extra ?? '{}');
  } catch (e) {
    throw new Error(`readCheckpointInfo: ${path}: metadata 'extra' is not JSON (${(e as Error).message})`);
  }
  if (typeof extra !== 'object' || extra === null || Array.isArray(extra)) throw new Error(`readCheckpointInfo: ${path}: metadata 'extra' is not an object`);
  return { step: Number(meta.step), extra: extra as Record<string, unknown> };
}

export interface ResumeTargets<S extends ParamState = ParamState> {
  model: Module;
  optimizer?: Optimizer<S>;
  scheduler?: LRScheduler;
  /** Where the model lives (tensors load there). Default: the device of its first parameter. */
  device?: Device;
}

/**
 * Loads a checkpoint into freshly built objects (same architecture, same param groups) and
 * restores the RNG. Returns the step and the caller's extra data.
 */
export async function loadCheckpoint<S extends ParamState>(path: string, into: ResumeTargets<S>): Promise<{ step: number; extra: Record<string, unknown> }> {
  const device = into.device ?? into.model.parameters()[0]?.device ?? 'cpu';
  const all = await loadSafetensors(path, { device });
  try {
    const meta = (await readSafetensorsHeader(path)).metadata;
    if (meta.format !== CHECKPOINT_FORMAT) {
      throw new Error(`loadCheckpoint: ${path} is not a training checkpoint (format '${meta.format ?? 'none'}')`);
    }
    const model = new Map<string, Tensor>();
    const optim = new Map<string, Tensor>();
    for (const [k, t] of all) {
      if (k.startsWith('model.')) model.set(k.slice(6), t);
      else if (k.startsWith('optim.')) optim.set(k.slice(6), t);
    }
    into.model.loadStateDict(model);
    if (into.optimizer) {
      if (!meta.optimizer) throw new Error(`loadCheckpoint: ${path} holds no optimizer state`);
      into.optimizer.loadStateDict(unflattenStateDict<S>(optim, meta.optimizer));
    }
    if (into.scheduler) {
      if (!meta.scheduler) throw new Error(`loadCheckpoint: ${path} holds no scheduler state`);
      into.scheduler.loadStateDict(JSON.parse(meta.scheduler) as { step: number });
    }
    setRngState(JSON.parse(meta.rng) as number[]);
    return { step: Number(meta.step), extra: JSON.parse(meta.extra ?? '{}') as Record<string, unknown> };
  } finally {
    for (const t of all.values()) t.dispose();
  }
}
