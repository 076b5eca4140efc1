/**
 * Dispatch plans memoized per call signature. In a training step the same shapes and views
 * come back in every layer and every step, and a front end's work before `dispatch` (dim
 * coalescing, choosing a variant, the pipeline key, packing the uniforms) depends only on
 * them. A front end writes its call's signature (small integers: dtype codes, shapes,
 * strides, flags) into a `PlanCache`, and either finds the plan computed for it before or
 * builds one and adds it. Looking up hashes the signature and compares it exactly with the
 * stored one: it builds no string and allocates nothing.
 *
 * A plan belongs to one GpuContext: caches are emptied when the context changes (tests open
 * and close devices), and when they grow past their bound (shapes that never repeat).
 */
import type { DType } from '../tensor/dtype.js';

interface Entry<P> {
  signature: number[];
  plan: P;
  /** The next entry whose signature hashes alike. */
  next: Entry<P> | null;
}

/**
 * Plans are memoized unless this is off: then every call builds its plan afresh, as before
 * plans existed (tests compare the two; benchmarks measure what plans save).
 */
export const planCaching = { enabled: true };

/**
 * A call's signature as it is written: numbers pushed into an array that is reused from call
 * to call. Not a plain number[]: emptying one (`length = 0`) drops its backing store, so every
 * front-end call would allocate it again, and a rest parameter allocates too; `push` takes up
 * to nine numbers as fixed parameters (TypeScript refuses a tenth).
 */
export class Signature {
  /** The numbers pushed since the last `clear`: values[0 .. length). */
  readonly values: number[] = [];
  length = 0;

  clear(): void {
    this.length = 0;
  }

  /** Appends up to nine numbers (counted by arguments.length: a rest parameter would allocate). */
  push(a: number, b?: number, c?: number, d?: number, e?: number, f?: number, g?: number, h?: number, i?: number): void {
    const v = this.values;
    const k = arguments.length;
    let n = this.length;
    v[n++] = a;
    if (k > 1) v[n++] = b!;
    if (k > 2) v[n++] = c!;
    if (k > 3) v[n++] = d!;
    if (k > 4) v[n++] = e!;
    if (k > 5) v[n++] = f!;
    if (k > 6) v[n++] = g!;
    if (k > 7) v[n++] = h!;
    if (k > 8) v[n++] = i!;
    this.length = n;
  }
}

export class PlanCache<P> {
  /** The signature of the call being looked up: push its numbers, then `find` or `add`. */
  readonly signature = new Signature();
  private readonly buckets = new Map<number, Entry<P>>();
  private size = 0;
  private owner: object | null = null;

  /** At most `max` plans are kept (all are dropped when one more comes). */
  constructor(private readonly max = 1024) {}

  /** Starts a signature for `owner` (the GpuContext the plan will serve); returns it to push to. */
  start(owner: object): Signature {
    if (owner !== this.owner) {
      this.buckets.clear();
      this.size = 0;
      this.owner = owner;
    }
    this.signature.clear();
    return this.signature;
  }

  /** The plan stored under the current signature, if any. */
  find(): P | undefined {
    if (!planCaching.enabled) return undefined;
    const s = this.signature;
    for (let e: Entry<P> | null = this.buckets.get(hash(s)) ?? null; e; e = e.next) {
      if (sameNumbers(e.signature, s)) return e.plan;
    }
    return undefined;
  }

  /** Stores `plan` under the current signature (which `find` did not find) and returns it. */
  add(plan: P): P {
    if (!planCaching.enabled) return plan;
    if (this.size >= this.max) {
      this.buckets.clear();
      this.size = 0;
    }
    const h = hash(this.signature);
    const s = this.signature;
    this.buckets.set(h, { signature: s.values.slice(0, s.length), plan, next: this.buckets.get(h) ?? null });
    this.size++;
    return plan;
  }

  /** Plans stored (for tests). */
  get count(): number {
    return this.size;
  }
}

/** FNV-1a over the numbers' low 32 bits (fractions and signs only need to compare exactly). */
function hash(s: Signature): number {
  const v = s.values;
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ (v[i] | 0), 0x01000193);
  return h & 0x3fffffff; // a small integer: the fastest Map key
}

function sameNumbers(stored: readonly number[], s: Signature): boolean {
  if (stored.length !== s.length) return false;
  const v = s.values;
  for (let i = 0; i < stored.length; i++) if (stored[i] !== v[i]) return false;
  return true;
}

/**
 * What every single-dispatch plan hands to `dispatch`: the pipeline key, the WGSL (built only on
 * a pipeline miss) and the uniform words, of which a call rewrites only what changes.
 */
export interface PlannedDispatch {
  key: string;
  code: () => string;
  words: Uint32Array;
}

/** A small integer per dtype, for signatures. */
export function dtypeCode(dtype: DType): number {
  switch (dtype) {
    case 'float32': return 0;
    case 'int32': return 1;
    case 'float16': return 2;
    case 'bfloat16': return 3;
    case 'float64': return 4;
    default: return 5;
  }
}

/** Pushes a tensor-like list of numbers with its length first (so lists of any length cannot alias). */
export function pushList(signature: Signature, list: readonly number[]): void {
  signature.push(list.length);
  for (let i = 0; i < list.length; i++) signature.push(list[i]);
}
