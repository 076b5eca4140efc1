/**
 * Training checkpoints: model, optimizer state, step, schedule position and RNG state in one
 * safetensors file (tensors under `model.` and `optim.`, the rest as JSON metadata), written
 * atomically (temp file, then rename), so an interrupted save never destroys the last good one.
 * Resuming from step N reproduces the uninterrupted run from step N+1 on.
 */
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
  await saveSafetensors(path, tensors, { metadata });
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
