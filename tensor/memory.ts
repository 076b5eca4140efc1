import { countedDevices, liveCounts, type Device } from './storage.js';

/** Anything that can be disposed and counted: Tensor implements this. */
export interface Disposable {
  dispose(): void;
  readonly disposed: boolean;
  /** The `tidy` scope that will dispose it (null: none), as track, keep and tidy set it. */
  scope: Scope | null;
}

/**
 * What one `tidy` made, in order. An array, not a Set: every tensor is pushed here, and a Set's
 * add (its hashing, its growth) cost more than the rest of a small op's bookkeeping. Who owns a
 * tensor is its `scope` field: `keep` and a move to the outer scope change that field and leave
 * the entry, which the scope's end then skips.
 */
export type Scope = Disposable[];

const scopes: Scope[] = [];

/** Called by every new tensor: the innermost `tidy` scope will own it. */
export function track(t: Disposable): void {
  const scope = scopes.length > 0 ? scopes[scopes.length - 1] : null;
  t.scope = scope;
  if (scope) scope.push(t);
}

/** Removes `t` from its scope so that `tidy` will not dispose it. */
export function keep<T extends Disposable>(t: T): T {
  t.scope = null;
  return t;
}

/**
 * Hands what `value` reaches (a tensor, or arrays/objects of them) and `scope` owns over to
 * `parent`: such a tensor survives the scope's end.
 */
function handOver(value: unknown, scope: Scope, parent: Scope | null, depth = 0): void {
  if (value === null || typeof value !== 'object' || depth > 4) return;
  if ('dispose' in value && 'disposed' in value) {
    const t = value as Disposable;
    if (t.scope === scope) {
      t.scope = parent;
      parent?.push(t);
    }
    return;
  }
  const items = Array.isArray(value) ? value : Object.values(value);
  for (const v of items) handOver(v, scope, parent, depth + 1);
}

/**
 * Runs `fn` and disposes every tensor created inside it, except those reachable from
 * its return value (a tensor, or arrays/objects of tensors), which move to the outer scope.
 * If `fn` throws, everything it created is disposed before the error propagates.
 */
export function tidy<T>(fn: () => T): T {
  const scope: Scope = [];
  scopes.push(scope);
  let result: T;
  try {
    result = fn();
  } catch (e) {
    // what was created before the throw is garbage too: nothing can reach it
    scopes.pop();
    disposeOwned(scope);
    throw e;
  }
  scopes.pop();
  if (result instanceof Promise) {
    throw new Error('tidy: fn must be synchronous (it returned a Promise); await outside tidy');
  }
  handOver(result, scope, scopes.length > 0 ? scopes[scopes.length - 1] : null);
  disposeOwned(scope);
  return result;
}

/** Disposes what `scope` still owns (not kept, not handed over). */
function disposeOwned(scope: Scope): void {
  for (const t of scope) if (t.scope === scope) t.dispose();
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
