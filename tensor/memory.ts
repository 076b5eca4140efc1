import { countedDevices, liveCounts, type Device } from './storage.js';

/** Anything that can be disposed and counted: Tensor implements this. */
export interface Disposable {
  dispose(): void;
  readonly disposed: boolean;
}


const scopes: Set<Disposable>[] = [];

/** Called by every new tensor: the innermost `tidy` scope will own it. */
export function track(t: Disposable): void {
  const scope = scopes[scopes.length - 1];
  if (scope) scope.add(t);
}

/** Removes `t` from the current scope so that `tidy` will not dispose it. */
export function keep<T extends Disposable>(t: T): T {
  // a tensor sits in one scope at most (the one it was made in, or the one it was returned to)
  for (let i = scopes.length - 1; i >= 0; i--) if (scopes[i].delete(t)) break;
  return t;
}

function collect(value: unknown, into: Set<Disposable>, depth = 0): void {
  if (value === null || typeof value !== 'object' || depth > 4) return;
  if ('dispose' in value && 'disposed' in value) {
    into.add(value as Disposable);
    return;
  }
  const items = Array.isArray(value) ? value : Object.values(value);
  for (const v of items) collect(v, into, depth + 1);
}

/**
 * Runs `fn` and disposes every tensor created inside it, except those reachable from
 * its return value (a tensor, or arrays/objects of tensors), which move to the outer scope.
 * If `fn` throws, everything it created is disposed before the error propagates.
 */
export function tidy<T>(fn: () => T): T {
  const scope = new Set<Disposable>();
  scopes.push(scope);
  let result: T;
  try {
    result = fn();
  } catch (e) {
    // what was created before the throw is garbage too: nothing can reach it
    scopes.pop();
    for (const t of scope) t.dispose();
    throw e;
  }
  scopes.pop();
  if (result instanceof Promise) {
    throw new Error('tidy: fn must be synchronous (it returned a Promise); await outside tidy');
  }
  const kept = new Set<Disposable>();
  collect(result, kept);
  const parent = scopes[scopes.length - 1];
  for (const t of scope) {
    if (kept.has(t)) parent?.add(t);
    else t.dispose();
  }
  return result;
}

export interface MemoryInfo {
  /** Tensors created and not yet disposed. */
  tensors: number;
  /** Distinct allocations (views share one). */
  storages: number;
  bytes: number;
}

/**
 * Live tensors, storages and bytes per device: every device that has held a tensor (the CPU
 * always), so `memory().wasm` is defined once anything ran there; `memory(device)` for one.
 */
export function memory(): Record<Device, MemoryInfo>;
export function memory(device: Device): MemoryInfo;
export function memory(device?: Device): Record<Device, MemoryInfo> | MemoryInfo {
  const info = (d: Device): MemoryInfo => ({ ...liveCounts(d) });
  if (device !== undefined) return info(device);
  const all = new Set<Device>(['cpu', ...countedDevices()]);
  return Object.fromEntries([...all].map((d) => [d, info(d)])) as Record<Device, MemoryInfo>;
}
