/**
 * Kernels over many tensors in one dispatch (the optimizer's step and gradient clipping):
 * each tensor is a record in a table (its length, addresses, hyper-parameters), the work is
 * cut into chunks of CHUNK elements, and one item is one chunk of one tensor (a table of
 * (record, start) pairs), so a model's hundred small parameters cost one pool run, not a
 * hundred.
 *   - adamwMany: the AdamW step of ./adamw.ts, each record with its own hyper-parameters;
 *   - sumOfSquares: a partial sum of x² per chunk (f32x4 lanes), the partials added on the host
 *     in float64;
 *   - scaleMany: out_i = x_i * s (the gradient clipping's rescale).
 * Inputs dense; a strided gradient is copied once (as adamw does), a strided x declines.
 */
import type { AdamWItem } from '../../../tensor/backend.js';
import { isContiguous } from '../../../tensor/shape.js';
import type { Tensor } from '../../../tensor/tensor.js';
import { Func, type Local } from '../emit.js';
import { MAX_PAGES, WasmStorage } from '../memory.js';
import { Args, ARGS_PTR, runtime } from '../runtime.js';
import { adamwElement } from './adamw.js';

const CHUNK = 4096;
const spec = (f: Func) => ({ funcs: [{ name: 'run', func: f }], maxPages: MAX_PAGES, globals: ['tid', 'scratch'] });
const ptrOf = (t: Tensor): number => (t.storage as WasmStorage).ptr + 4 * t.offset;

/** Counts of runs per kernel, for the tests that check the fused path was taken. */
export const multiTensorRuns = { adamwMany: 0, sumOfSquares: 0, scaleMany: 0 };

/**
 * The item loop shared by the three kernels. args: 0 chunk table ((record, start) pairs),
 * 1 record table (`words` words per record, word 0 the length), 2 extra (kernel's own).
 * `body(rec, i0, i1, item)` runs elements [i0, i1) of the record at byte address rec.
 */
function chunked(words: number, body: (f: Func, rec: Local, i0: Local, i1: Local, item: Local, extra: Local) => void): Func {
  const f = new Func(['i32', 'i32', 'i32']);
  const [args, lo, hi] = f.params;
  const [chunks, recs, extra, item, at, rec, i0, i1] = Array.from({ length: 8 }, () => f.local('i32'));
  f.get(args).i32_load(0).set(chunks);
  f.get(args).i32_load(4).set(recs);
  f.get(args).i32_load(8).set(extra);
  f.for(item, lo, hi, 1, () => {
    f.get(chunks).get(item).i32(3).i32_shl().i32_add().set(at);
    f.get(recs).get(at).i32_load().i32(words * 4).i32_mul().i32_add().set(rec);
    f.get(at).i32_load(4).set(i0);
    f.get(i0).i32(CHUNK).i32_add().set(i1);
    f.get(i1).get(rec).i32_load().i32_gt_s().if(() => void f.get(rec).i32_load().set(i1));
    body(f, rec, i0, i1, item, extra);
  });
  return f;
}

/** Elements [i0, i1) four at a time, then one at a time: `vec(at)` and `one(at)` with at the byte offset. */
function elements(f: Func, i0: Local, i1: Local, vec: (at: Local) => void, one: (at: Local) => void): void {
  const i = f.local('i32');
  const at = f.local('i32');
  f.get(i0).set(i);
  f.block((exit) => f.loop((repeat) => {
    f.get(i).i32(4).i32_add().get(i1).i32_gt_s().brIf(exit);
    f.get(i).i32(2).i32_shl().set(at);
    vec(at);
    f.get(i).i32(4).i32_add().set(i).br(repeat);
  }));
  f.block((exit) => f.loop((repeat) => {
    f.get(i).get(i1).i32_ge_s().brIf(exit);
    f.get(i).i32(2).i32_shl().set(at);
    one(at);
    f.get(i).i32(1).i32_add().set(i).br(repeat);
  }));
}

/** Record: 0 n, 1 param, 2 grad, 3 m, 4 v, f32: 5 1 - lr wd, 6 beta1, 7 1 - beta1, 8 beta2, 9 1 - beta2, 10 lr / c1, 11 1 / c2, 12 eps. */
const ADAMW_WORDS = 13;

function adamwManyKernel(): Func {
  return chunked(ADAMW_WORDS, (f, rec, i0, i1) => {
    const [P, G, M, V] = Array.from({ length: 4 }, () => f.local('i32'));
    [P, G, M, V].forEach((l, k) => f.get(rec).i32_load(4 * (1 + k)).set(l));
    const h = Array.from({ length: 8 }, () => f.local('v128'));
    h.forEach((l, k) => f.get(rec).f32_load(4 * (5 + k)).f32x4_splat().set(l));
    const update = adamwElement(f, [P, G, M, V], h);
    elements(f, i0, i1, update.vector, update.scalar);
  });
}

/** Record: 0 n, 1 x. extra: the partials (one f32 per chunk). */
function sumOfSquaresKernel(): Func {
  return chunked(2, (f, rec, i0, i1, item, extra) => {
    const X = f.local('i32');
    const [acc, x] = [f.local('v128'), f.local('v128')];
    const s = f.local('f32');
    f.get(rec).i32_load(4).set(X);
    f.f32x4(0).set(acc);
    f.f32(0).set(s);
    elements(f, i0, i1, (at) => {
      f.get(X).get(at).i32_add().v128_load().set(x);
      f.get(acc).get(x).get(x).f32x4_mul().f32x4_add().set(acc);
    }, (at) => {
      f.get(X).get(at).i32_add().f32_load().set(s);
      f.get(acc).get(s).get(s).f32_mul().get(acc).f32x4_extract_lane(0).f32_add().f32x4_replace_lane(0).set(acc);
    });
    f.get(extra).get(item).i32(2).i32_shl().i32_add();
    f.get(acc).f32x4_extract_lane(0).get(acc).f32x4_extract_lane(1).f32_add();
    f.get(acc).f32x4_extract_lane(2).get(acc).f32x4_extract_lane(3).f32_add().f32_add();
    f.f32_store();
  });
}

/** Record: 0 n, 1 x, 2 out. extra: the address of the scale (f32). */
function scaleManyKernel(): Func {
  return chunked(3, (f, rec, i0, i1, _item, extra) => {
    const [X, O] = [f.local('i32'), f.local('i32')];
    const sv = f.local('v128');
    const s = f.local('f32');
    f.get(rec).i32_load(4).set(X);
    f.get(rec).i32_load(8).set(O);
    f.get(extra).f32_load().set(s);
    f.get(s).f32x4_splat().set(sv);
    elements(f, i0, i1, (at) => {
      f.get(O).get(at).i32_add().get(X).get(at).i32_add().v128_load().get(sv).f32x4_mul().v128_store();
    }, (at) => {
      f.get(O).get(at).i32_add().get(X).get(at).i32_add().f32_load().get(s).f32_mul().f32_store();
    });
  });
}

/**
 * Writes the record table (`words` per tensor, from `fill`) and the chunk table into the heap,
 * runs `kernel` once over every chunk, frees the tables.
 */
function runChunked(name: string, build: () => Func, words: number, sizes: readonly number[], fill: (w: Int32Array, f: Float32Array, base: number, i: number) => void, extra: number): void {
  const rt = runtime();
  const heap = rt.heap;
  let chunks = 0;
  for (const n of sizes) chunks += Math.ceil(n / CHUNK);
  const recBlock = heap.alloc(4 * words * sizes.length, name);
  const chunkBlock = heap.alloc(8 * Math.max(chunks, 1), name);
  try {
    const w = new Int32Array(heap.buffer, recBlock.ptr, words * sizes.length);
    const fw = new Float32Array(heap.buffer, recBlock.ptr, words * sizes.length);
    const c = new Int32Array(heap.buffer, chunkBlock.ptr, 2 * chunks);
    let at = 0;
    sizes.forEach((n, i) => {
      w[i * words] = n;
      fill(w, fw, i * words, i);
      for (let s = 0; s < n; s += CHUNK) {
        c[at++] = i;
        c[at++] = s;
      }
    });
    new Args(rt).i32s(0, [chunkBlock.ptr, recBlock.ptr, extra]);
    const k = rt.pool.kernel(`multi.${name}`, () => spec(build()));
    const total = sizes.reduce((a, b) => a + b, 0);
    rt.pool.run(k, ARGS_PTR, chunks, 4, total >= 1 << 16);
  } finally {
    heap.release(recBlock.ptr, recBlock.size);
    heap.release(chunkBlock.ptr, chunkBlock.size);
  }
}

const dense = (t: Tensor) => isContiguous(t.shape, t.strides);

export function adamwMany(items: readonly AdamWItem[]): boolean {
  if (!items.every((it) => it.param.dtype === 'float32')) return false;
  const grads = items.map((it) => (dense(it.grad) ? it.grad : it.grad.contiguous()));
  try {
    runChunked('adamwMany', adamwManyKernel, ADAMW_WORDS, items.map((it) => it.param.size), (w, fw, b, i) => {
      const { param, m, v, h } = items[i];
      w[b + 1] = ptrOf(param);
      w[b + 2] = ptrOf(grads[i]);
      w[b + 3] = ptrOf(m);
      w[b + 4] = ptrOf(v);
      const c1 = 1 - h.beta1 ** h.step;
      const c2 = 1 - h.beta2 ** h.step;
      [1 - h.lr * h.weightDecay, h.beta1, 1 - h.beta1, h.beta2, 1 - h.beta2, h.lr / c1, 1 / c2, h.eps].forEach((x, k) => (fw[b + 5 + k] = x));
    }, 0);
  } finally {
    grads.forEach((g, i) => g !== items[i].grad && g.dispose());
  }
  multiTensorRuns.adamwMany++;
  return true;
}

export function sumOfSquares(xs: readonly Tensor[], out: Tensor): boolean {
  if (!xs.every((x) => x.dtype === 'float32' && dense(x))) return false;
  const heap = runtime().heap;
  let chunks = 0;
  for (const x of xs) chunks += Math.ceil(x.size / CHUNK);
  const partials = heap.alloc(4 * Math.max(chunks, 1), 'sumOfSquares');
  try {
    runChunked('sumOfSquares', sumOfSquaresKernel, 2, xs.map((x) => x.size), (w, _f, b, i) => void (w[b + 1] = ptrOf(xs[i])), partials.ptr);
    const p = new Float32Array(heap.buffer, partials.ptr, chunks);
    let total = 0;
    for (let i = 0; i < chunks; i++) total += p[i];
    (out.storage as WasmStorage).data[out.offset] = total;
  } finally {
    heap.release(partials.ptr, partials.size);
  }
  multiTensorRuns.sumOfSquares++;
  return true;
}

export function scaleMany(xs: readonly Tensor[], scale: Tensor, outs: readonly Tensor[]): boolean {
  if (scale.dtype !== 'float32' || !xs.every((x) => x.dtype === 'float32' && dense(x))) return false;
  runChunked('scaleMany', scaleManyKernel, 3, xs.map((x) => x.size), (w, _f, b, i) => {
    w[b + 1] = ptrOf(xs[i]);
    w[b + 2] = ptrOf(outs[i]);
  }, ptrOf(scale));
  multiTensorRuns.scaleMany++;
  return true;
}
