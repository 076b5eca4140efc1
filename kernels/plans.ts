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

export class PlanCache<P> {
  /** The signature of the call being looked up: push its numbers, then `find` or `add`. */
  readonly signature: number[] = [];
  private readonly buckets = new Map<number, Entry<P>>();
  private size = 0;
  private owner: object | null = null;

  /** At most `max` plans are kept (all are dropped when one more comes). */
  constructor(private readonly max = 1024) {}

  /** Starts a signature for `owner` (the GpuContext the plan will serve); returns it to push to. */
  start(owner: object): number[] {
    if (owner !== this.owner) {
      this.buckets.clear();
      this.size = 0;
      this.owner = owner;
    }
    this.signature.length = 0;
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
    this.buckets.set(h, { signature: this.signature.slice(), plan, next: this.buckets.get(h) ?? null });
    this.size++;
    return plan;
  }

  /** Plans stored (for tests). */
  get count(): number {
    return this.size;
  }
}

/** FNV-1a over the numbers' low 32 bits (fractions and signs only need to compare exactly). */
function hash(s: readonly number[]): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ (s[i] | 0), 0x01000193);
  return h & 0x3fffffff; // a small integer: the fastest Map key
}

function sameNumbers(a: readonly number[], b: readonly number[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
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
export function pushList(signature: number[], list: readonly number[]): void {
  signature.push(list.length);
  for (let i = 0; i < list.length; i++) signature.push(list[i]);
}
