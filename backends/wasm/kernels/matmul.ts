/**
 * Matrix multiply, batched, on every core: b is packed once into panels of NR columns
 * (k-major, zero-padded), read through any strides; a is read in place through its strides
 * (each of the MR rows of a register block has its own pointer: a transposed a costs nothing).
 * Transposed operands and broadcast batches cost no copy beyond b's packing. Each output tile
 * of MC x NC is one work item: for each KC-long slice of K, for each NR-column panel of b
 * (8 KiB, held in L1), for each MR-row block of a, an MR x NR register block accumulates
 * KC rank-1 updates (f32x4.relaxed_madd where the engine has it, else mul + add) and is added
 * into the output. MR x NR = 6 x 8: 12 accumulator vectors, 2 of b and a splat of a fill the
 * 16 SIMD registers of x86-64 (as XNNPACK's wasmsimd 6x8 kernels).
 *
 * A batch whose b is shared (a Linear's weight) and whose a rows are evenly strided is one
 * matrix with batch*M rows, so tiles span the batch.
 */
import { Tensor } from '../../../tensor/tensor.js';
import { copy } from './elementwise.js';
import { Func, type Local } from '../emit.js';
import { MAX_PAGES, WasmStorage } from '../memory.js';
import { Args, ARGS_PTR, runtime, type Runtime } from '../runtime.js';

export const MR = 6;
export const NR = 8;
const KC = 256;
const MC = 16 * MR;
const NC = 32 * NR;
/** Words of scratch the partial-tile store uses (MR x NR floats). */
const TILE_OFFSET = 0;

const ptrOf = (t: Tensor): number => (t.storage as WasmStorage).ptr;

const spec = (f: Func) => ({ funcs: [{ name: 'run', func: f }], maxPages: MAX_PAGES, globals: ['tid', 'scratch'] });
const GLOBAL_SCRATCH = 1;

/**
 * Packs panels of `rows` (MR or NR) lines of a strided matrix, k-major: panel p holds lines
 * [p*rows, p*rows + rows) as dst[p][k][line]. Item = panel (over all packed matrices).
 * args: 0 lines (M or N), 1 K, 2 line stride (elements), 3 k stride, 4 panels per matrix,
 * 5 table of source byte addresses, 6 table of destination byte addresses.
 */
function packKernel(rows: number, kContiguous: boolean): Func {
  const f = new Func(['i32', 'i32', 'i32']);
  const [args, lo, hi] = f.params;
  const [lines, K, ls, ks, ppm, srcTab, dstTab] = Array.from({ length: 7 }, () => f.local('i32'));
  const [item, m, p, src, dst, line, k, n] = Array.from({ length: 8 }, () => f.local('i32'));
  const ptrs = Array.from({ length: rows }, () => f.local('i32'));
  [lines, K, ls, ks, ppm, srcTab, dstTab].forEach((l, i) => f.get(args).i32_load(4 * i).set(l));
  // byte strides
  f.get(ls).i32(2).i32_shl().set(ls).get(ks).i32(2).i32_shl().set(ks);
  f.for(item, lo, hi, 1, () => {
    f.get(item).get(ppm).i32_div_u().set(m);
    f.get(item).get(ppm).i32_rem_u().set(p);
    f.get(srcTab).get(m).i32(2).i32_shl().i32_add().i32_load().set(src);
    // dst = dstTab[m] + p * rows * K * 4
    f.get(dstTab).get(m).i32(2).i32_shl().i32_add().i32_load().get(p).i32(rows * 4).i32_mul().get(K).i32_mul().i32_add().set(dst);
    f.get(p).i32(rows).i32_mul().set(line);
    // n = lines in this panel that exist
    f.get(lines).get(line).i32_sub().set(n);
    ptrs.forEach((q, r) => f.get(src).get(line).i32(r).i32_add().get(ls).i32_mul().i32_add().set(q));
    f.get(n).i32(rows).i32_ge_s().if(
      () => {
        if (kContiguous && rows % 4 === 0) {
          // each line is contiguous along k: 4 k at a time from each line, 4x4 transposes
          const vs = Array.from({ length: 4 }, () => f.local('v128'));
          const t = Array.from({ length: 4 }, () => f.local('v128'));
          const k4 = f.local('i32');
          f.get(K).i32(-4).i32_and().set(k4);
          f.for(k, 0, k4, 4, () => {
            for (let g = 0; g < rows / 4; g++) {
              for (let r = 0; r < 4; r++) f.get(ptrs[4 * g + r]).v128_load().set(vs[r]);
              // transpose [v0 v1 v2 v3] (rows) into k-major columns
              f.get(vs[0]).get(vs[1]).f32x4_shuffle(0, 4, 1, 5).set(t[0]);
              f.get(vs[0]).get(vs[1]).f32x4_shuffle(2, 6, 3, 7).set(t[1]);
              f.get(vs[2]).get(vs[3]).f32x4_shuffle(0, 4, 1, 5).set(t[2]);
              f.get(vs[2]).get(vs[3]).f32x4_shuffle(2, 6, 3, 7).set(t[3]);
              const out = (kk: number, a: Local, b: Local, sel: [number, number, number, number]) =>
                f.get(dst).get(a).get(b).f32x4_shuffle(...sel).v128_store(kk * rows * 4 + g * 16);
              out(0, t[0], t[2], [0, 1, 4, 5]);
              out(1, t[0], t[2], [2, 3, 6, 7]);
              out(2, t[1], t[3], [0, 1, 4, 5]);
              out(3, t[1], t[3], [2, 3, 6, 7]);
            }
            for (const q of ptrs) f.get(q).i32(16).i32_add().set(q);
            f.get(dst).i32(4 * rows * 4).i32_add().set(dst);
          });
          f.for(k, k4, K, 1, () => {
            ptrs.forEach((q, r) => f.get(dst).get(q).f32_load().f32_store(r * 4));
            for (const q of ptrs) f.get(q).i32(4).i32_add().set(q);
            f.get(dst).i32(rows * 4).i32_add().set(dst);
          });
        } else if (!kContiguous && rows % 4 === 0) {
          // lines adjacent in memory (line stride 1): rows/4 vector loads per k
          f.get(ls).i32(4).i32_eq().if(
            () => {
              f.for(k, 0, K, 1, () => {
                for (let g = 0; g < rows / 4; g++) f.get(dst).get(ptrs[0]).v128_load(g * 16).v128_store(g * 16);
                f.get(ptrs[0]).get(ks).i32_add().set(ptrs[0]);
                f.get(dst).i32(rows * 4).i32_add().set(dst);
              });
            },
            () => scalarPanel(),
          );
        } else scalarPanel();
      },
      () => {
        // the last panel: lines past the end are zero
        f.for(k, 0, K, 1, () => {
          ptrs.forEach((q, r) => {
            f.i32(r).get(n).i32_lt_s().if(() => void f.get(dst).get(q).f32_load().f32_store(r * 4), () => void f.get(dst).f32(0).f32_store(r * 4));
            f.get(q).get(ks).i32_add().set(q);
          });
          f.get(dst).i32(rows * 4).i32_add().set(dst);
        });
      },
    );
  });
  return f;

  function scalarPanel(): void {
    f.for(k, 0, K, 1, () => {
      ptrs.forEach((q, r) => {
        f.get(dst).get(q).f32_load().f32_store(r * 4);
        f.get(q).get(ks).i32_add().set(q);
      });
      f.get(dst).i32(rows * 4).i32_add().set(dst);
    });
  }
}

/**
 * The tiles. Item = (matrix, tile row block, tile column block). args: 0 M, 1 N, 2 K,
 * 3 table of a's byte addresses per matrix (read in place), 4 packed b's, 5 output byte address,
 * 6 tile row blocks, 7 tile column blocks, 8 rows per tile (MC), 9 columns per tile (NC),
 * 10 a's row stride and 11 its k stride (bytes).
 */
/**
 * How the tile kernel reads a: in place with unit k stride ('k1', a row-major a: offsets
 * unrolled), in place with adjacent rows ('cols', a transposed a such as xᵀ in a weight
 * gradient: one pointer, the MR values of a k side by side), in place with any strides ('ks'),
 * or from MR-row panels packed k-major
 * ('packed': for long K, where in-place rows thousands of floats apart cost TLB and cache misses).
 */
type AMode = 'k1' | 'ks' | 'cols' | 'packed';

function tileKernel(relaxed: boolean, aMode: AMode): Func {
  const f = new Func(['i32', 'i32', 'i32']);
  const [args, lo, hi] = f.params;
  const [M, N, K, aTab, bTab, cOut, nI, nJ, mc, nc, aRS, aKS] = Array.from({ length: 12 }, () => f.local('i32'));
  const aRows = Array.from({ length: MR }, () => f.local('i32'));
  const [item, mat, rem, i0, i1, j0, j1, pc, kc, i, j, bp, apBase, bpBase, cBase, k, k4, row, N4, r, c, rows, cols] =
    Array.from({ length: 23 }, () => f.local('i32'));
  const acc = Array.from({ length: MR * (NR / 4) }, () => f.local('v128'));
  const [b0, b1, av] = [f.local('v128'), f.local('v128'), f.local('v128')];
  const v = f.local('f32');
  const bPanel = f.local('i32');
  const addr = f.local('i32');
  [M, N, K, aTab, bTab, cOut, nI, nJ, mc, nc, aRS, aKS].forEach((l, x) => f.get(args).i32_load(4 * x).set(l));
  f.get(N).i32(2).i32_shl().set(N4);

  const rankUpdate = (u: number, mode: AMode) => {
    // one k: b's NR values, then each a row splat times them
    f.get(bp).v128_load(u * NR * 4).set(b0);
    f.get(bp).v128_load(u * NR * 4 + 16).set(b1);
    for (let rr = 0; rr < MR; rr++) {
      // a read in place through its strides: row rr's pointer (k stride 4: unrolled offsets)
      if (mode === 'packed') f.get(aRows[0]).v128_load32_splat(u * MR * 4 + rr * 4).set(av);
      else if (mode === 'cols') f.get(aRows[0]).v128_load32_splat(rr * 4).set(av);
      else f.get(aRows[rr]).v128_load32_splat(mode === 'k1' ? u * 4 : 0).set(av);
      for (const [cc, bv] of [[0, b0], [1, b1]] as const) {
        const a = acc[rr * 2 + cc];
        if (relaxed) f.get(av).get(bv).get(a).f32x4_relaxed_madd().set(a);
        else f.get(a).get(av).get(bv).f32x4_mul().f32x4_add().set(a);
      }
    }
  };

  f.for(item, lo, hi, 1, () => {
    f.get(item).get(nI).get(nJ).i32_mul().i32_div_u().set(mat);
    f.get(item).get(nI).get(nJ).i32_mul().i32_rem_u().set(rem);
    f.get(rem).get(nJ).i32_div_u().get(mc).i32_mul().set(i0);
    f.get(rem).get(nJ).i32_rem_u().get(nc).i32_mul().set(j0);
    minInto(i1, i0, mc, M);
    minInto(j1, j0, nc, N);
    f.get(aTab).get(mat).i32(2).i32_shl().i32_add().i32_load().set(apBase);
    f.get(bTab).get(mat).i32(2).i32_shl().i32_add().i32_load().set(bpBase);
    // cBase = cOut + mat * M * N * 4
    f.get(cOut).get(mat).get(M).i32_mul().get(N4).i32_mul().i32_add().set(cBase);
    f.for(pc, 0, K, KC, () => {
      minInto(kc, pc, KC, K);
      f.get(kc).get(pc).i32_sub().set(kc);
      f.get(kc).i32(-4).i32_and().set(k4);
      f.for(j, j0, j1, NR, () => {
        // bp = bpBase + (j / NR) * NR * K * 4 + pc * NR * 4
        f.get(bpBase).get(j).get(K).i32_mul().i32(4).i32_mul().i32_add().get(pc).i32(NR * 4).i32_mul().i32_add().set(bPanel);
        f.for(i, i0, i1, MR, () => {
          f.get(bPanel).set(bp);
          const compute = (mode: AMode) => {
            // row pointers of a at (min(i + r, M - 1), pc): rows past the end repeat the last (their results are not stored)
            if (mode === 'packed') {
              // panel i / MR: apBase + i * K * 4 + pc * MR * 4
              f.get(apBase).get(i).get(K).i32_mul().i32(4).i32_mul().i32_add().get(pc).i32(MR * 4).i32_mul().i32_add().set(aRows[0]);
            } else if (mode === 'cols') {
              f.get(apBase).get(i).i32(2).i32_shl().i32_add().get(pc).get(aKS).i32_mul().i32_add().set(aRows[0]);
            } else for (let rr = 0; rr < MR; rr++) {
              f.get(i).i32(rr).i32_add().get(M).i32(1).i32_sub().get(i).i32(rr).i32_add().get(M).i32(1).i32_sub().i32_lt_s().select();
              f.get(aRS).i32_mul().get(apBase).i32_add().get(pc).get(aKS).i32_mul().i32_add().set(aRows[rr]);
            }
            for (const a of acc) f.f32x4(0).set(a);
            const advanceA = (steps: number) => {
              if (mode === 'packed') f.get(aRows[0]).i32(steps * MR * 4).i32_add().set(aRows[0]);
              else if (mode === 'cols') f.get(aRows[0]).get(aKS).i32_add().set(aRows[0]);
              else for (const q of aRows) {
                if (mode === 'k1') f.get(q).i32(4 * steps).i32_add().set(q);
                else f.get(q).get(aKS).i32_add().set(q);
              }
            };
            // modes with constant offsets unroll by 4
            const unrolled = mode === 'k1' || mode === 'packed';
            if (unrolled) {
              f.for(k, 0, k4, 4, () => {
                for (let u = 0; u < 4; u++) rankUpdate(u, mode);
                advanceA(4);
                f.get(bp).i32(4 * NR * 4).i32_add().set(bp);
              });
            }
            f.for(k, unrolled ? k4 : 0, kc, 1, () => {
              rankUpdate(0, mode);
              advanceA(1);
              f.get(bp).i32(NR * 4).i32_add().set(bp);
            });
          };
          // 'cols' reads the MR rows side by side: a last block past M takes the clamped pointers
          if (aMode === 'cols') f.get(i).i32(MR).i32_add().get(M).i32_le_s().if(() => compute('cols'), () => compute('ks'));
          else compute(aMode);
          store();
        });
      });
    });
  });
  return f;

  /** dst = min(base + step, limit). */
  function minInto(dst: Local, base: Local, step: Local | number, limit: Local): void {
    f.get(base).val(step).i32_add().set(dst);
    f.get(dst).get(limit).i32_gt_s().if(() => void f.get(limit).set(dst));
  }

  /** Adds (pc > 0) or writes the register block into the output at (i, j). */
  function store(): void {
    f.get(M).get(i).i32_sub().set(rows);
    f.get(N).get(j).i32_sub().set(cols);
    f.get(rows).i32(MR).i32_ge_s().get(cols).i32(NR).i32_ge_s().i32_and().if(
      () => {
        // row = cBase + (i * N + j) * 4
        f.get(cBase).get(i).get(N).i32_mul().get(j).i32_add().i32(2).i32_shl().i32_add().set(row);
        for (let rr = 0; rr < MR; rr++) {
          for (let cc = 0; cc < 2; cc++) {
            const a = acc[rr * 2 + cc];
            f.get(row);
            f.get(pc).if(() => void f.get(row).v128_load(cc * 16).get(a).f32x4_add().set(a));
            f.get(a).v128_store(cc * 16);
          }
          f.get(row).get(N4).i32_add().set(row);
        }
      },
      () => {
        // an edge tile: through the thread's scratch, then the existing elements
        for (let rr = 0; rr < MR; rr++) for (let cc = 0; cc < 2; cc++) f.globalGet(GLOBAL_SCRATCH).get(acc[rr * 2 + cc]).v128_store(TILE_OFFSET + (rr * NR + cc * 4) * 4);
        f.get(rows).i32(MR).i32_gt_s().if(() => void f.i32(MR).set(rows));
        f.get(cols).i32(NR).i32_gt_s().if(() => void f.i32(NR).set(cols));
        f.for(r, 0, rows, 1, () => {
          f.get(cBase).get(i).get(r).i32_add().get(N).i32_mul().get(j).i32_add().i32(2).i32_shl().i32_add().set(row);
          f.for(c, 0, cols, 1, () => {
            f.globalGet(GLOBAL_SCRATCH).get(r).i32(NR).i32_mul().get(c).i32_add().i32(2).i32_shl().i32_add().f32_load(TILE_OFFSET).set(v);
            f.get(row).get(c).i32(2).i32_shl().i32_add().set(addr);
            f.get(pc).if(() => void f.get(v).get(addr).f32_load().f32_add().set(v));
            f.get(addr).get(v).f32_store();
          });
        });
      },
    );
  }
}

/** Distinct storage offsets of each batch entry's matrix, and which one each entry uses. */
function batchMatrices(t: Tensor, batch: readonly number[]): { bases: number[]; index: Int32Array } {
  const count = batch.reduce((x, y) => x * y, 1);
  const index = new Int32Array(count);
  const bases: number[] = [];
  const seen = new Map<number, number>();
  const idx = new Array<number>(batch.length).fill(0);
  for (let e = 0; e < count; e++) {
    let off = t.offset;
    for (let d = 0; d < idx.length; d++) off += idx[d] * t.strides[d];
    let m = seen.get(off);
    if (m === undefined) {
      seen.set(off, (m = bases.length));
      bases.push(off);
    }
    index[e] = m;
    for (let d = idx.length - 1; d >= 0 && ++idx[d] === batch[d]; d--) idx[d] = 0;
  }
  return { bases, index };
}

/** Whether every batch entry of `a` [..., M, K] sits at base + e * M * rowStride (rows evenly spaced over the batch). */
function rowsSpanBatch(a: Tensor, batch: readonly number[], M: number): boolean {
  const rs = a.strides[a.rank - 2];
  let expected = rs * M;
  for (let d = batch.length - 1; d >= 0; d--) {
    if (batch[d] === 1) continue;
    if (a.strides[d] !== expected) return false;
    expected *= batch[d];
  }
  return true;
}

/** out [...batch, M, N] (fresh, contiguous) = a [...batch, M, K] @ b [...batch, K, N]. */
export const matmulLog: Map<string, { n: number; ms: number; flops: number }> | null = process.env.UHD_WASM_PROFILE ? new Map() : null;

export function matmul(a: Tensor, b: Tensor, out: Tensor): void {
  if (!matmulLog) return void (repeated(a, b, out) || matmulImpl(a, b, out));
  const t0 = performance.now();
  if (!repeated(a, b, out)) matmulImpl(a, b, out);
  const key = `${a.shape.join('x')} @ ${b.shape.join('x')} a${a.strides.slice(-2)} b${b.strides.slice(-2)}`;
  const e = matmulLog.get(key) ?? { n: 0, ms: 0, flops: 0 };
  e.n++;
  e.ms += performance.now() - t0;
  e.flops += 2 * out.size * a.shape[a.rank - 1];
  matmulLog.set(key, e);
}

/**
 * a whose M rows are one row (row stride 0: the gradient of a sum or mean, expanded, as it
 * reaches a Linear's backward) gives M equal output rows: one row's product, then a broadcast
 * copy, for M times fewer multiply-adds. Likewise b whose N columns are one column.
 */
/** Calls that took the repeated-row (or column) path, for the tests. */
export const matmulRuns = { repeated: 0 };

function repeated(a: Tensor, b: Tensor, out: Tensor): boolean {
  const r = a.rank;
  const [M, K] = a.shape.slice(-2);
  const N = b.shape[r - 1];
  const batch = out.shape.slice(0, -2);
  const rowsOne = M > 1 && a.strides[r - 2] === 0;
  const colsOne = !rowsOne && N > 1 && b.strides[r - 1] === 0;
  if (!rowsOne && !colsOne) return false;
  const a1 = rowsOne ? a.asStrided([...batch.map((_, d) => a.shape[d]), 1, K], a.strides, a.offset) : a;
  const b1 = colsOne ? b.asStrided([...batch.map((_, d) => b.shape[d]), K, 1], b.strides, b.offset) : b;
  const o1 = Tensor.empty([...batch, rowsOne ? 1 : M, colsOne ? 1 : N], 'float32', out.device);
  const bs = o1.strides.slice(0, -2);
  const rep = o1.asStrided(out.shape, rowsOne ? [...bs, 0, 1] : [...bs, 1, 0], 0);
  try {
    matmulImpl(a1, b1, o1);
    if (!copy(rep, out)) throw new Error('matmul: the broadcast copy of a repeated row did not map');
  } finally {
    for (const t of [rep, o1, ...(a1 !== a ? [a1] : []), ...(b1 !== b ? [b1] : [])]) t.dispose();
  }
  matmulRuns.repeated++;
  return true;
}

function matmulImpl(a: Tensor, b: Tensor, out: Tensor): void {
  if (out.size === 0) return;
  const rt = runtime();
  const r = a.rank;
  let [M, K] = a.shape.slice(-2);
  const N = b.shape[r - 1];
  const batch = out.shape.slice(0, -2);
  if (K === 0) {
    (out.storage as WasmStorage).data.fill(0, out.offset, out.offset + out.size);
    return;
  }
  let am = batchMatrices(a, batch);
  const bm = batchMatrices(b, batch);
  let matrices = batch.reduce((x, y) => x * y, 1);
  // one shared b and evenly spaced a rows: a single matrix of matrices * M rows
  if (bm.bases.length === 1 && matrices > 1 && rowsSpanBatch(a, batch, M)) {
    M *= matrices;
    matrices = 1;
    am = { bases: [a.offset], index: new Int32Array(1) };
  }
  const [aRow, aCol] = a.strides.slice(-2);
  const [bRow, bCol] = b.strides.slice(-2);
  const panelsB = Math.ceil(N / NR);
  const heap = rt.heap;
  const packB = heap.alloc(bm.bases.length * panelsB * NR * K * 4, 'matmul');
  // long K: a packed into MR-row panels too (see AMode)
  // a with neither stride 1 (a broadcast or doubly strided view) is packed too: per-row pointers
  // stepping by a stride ran at half the speed of a packed panel
  const aStrided = aCol !== 1 && aRow !== 1 && K > 1;
  const packA = aStrided || (K >= MATMUL_TUNING.packAK && N >= 4 * NR) ? heap.alloc(am.bases.length * Math.ceil(M / MR) * MR * K * 4, 'matmul') : null;
  // tables: b's source and packed addresses per distinct b, then a's address and packed b's per matrix
  const words = 2 * bm.bases.length + 2 * matrices + 2 * am.bases.length;
  const tab = heap.alloc(4 * words, 'matmul');
  const w = new Int32Array(heap.buffer, tab.ptr, words);
  const bSrc = 0, bDst = bm.bases.length, aPer = 2 * bm.bases.length, bPer = aPer + matrices, aSrc = bPer + matrices, aDst = aSrc + am.bases.length;
  const panelsA = Math.ceil(M / MR);
  am.bases.forEach((off, x) => {
    w[aSrc + x] = ptrOf(a) + 4 * off;
    w[aDst + x] = packA ? packA.ptr + x * panelsA * MR * K * 4 : 0;
  });
  bm.bases.forEach((off, x) => {
    w[bSrc + x] = ptrOf(b) + 4 * off;
    w[bDst + x] = packB.ptr + x * panelsB * NR * K * 4;
  });
  for (let e = 0; e < matrices; e++) {
    w[aPer + e] = packA ? w[aDst + am.index[e]] : w[aSrc + am.index[e]];
    w[bPer + e] = w[bDst + bm.index[e]];
  }
  try {
    const pool = rt.pool;
    const args = new Args(rt);
    const work = matrices * M * N * K;
    // b: lines are columns (stride bCol), k stride bRow
    args.i32s(0, [N, K, bCol, bRow, panelsB, tab.ptr + 4 * bSrc, tab.ptr + 4 * bDst]);
    pool.run(packer(rt, NR, bRow === 1), ARGS_PTR, bm.bases.length * panelsB, packChunk(NR, K), work >= PARALLEL_WORK && bm.bases.length * N * K >= 1 << 16);
    if (packA) {
      // a: lines are rows (stride aRow), k stride aCol
      args.i32s(0, [M, K, aRow, aCol, panelsA, tab.ptr + 4 * aSrc, tab.ptr + 4 * aDst]);
      pool.run(packer(rt, MR, aCol === 1), ARGS_PTR, am.bases.length * panelsA, packChunk(MR, K), work >= PARALLEL_WORK);
    }
    // smaller tiles when the default ones would leave threads idle
    let [mc, nc] = [MC, NC];
    const enough = 3 * pool.threads;
    while (matrices * Math.ceil(M / mc) * Math.ceil(N / nc) < enough && (mc > MR || nc > NR)) {
      if (mc > MR && (mc >= nc || nc <= NR)) mc = Math.max(MR, Math.floor(mc / 2 / MR) * MR);
      else nc = Math.max(NR, Math.floor(nc / 2 / NR) * NR);
    }
    const nI = Math.ceil(M / mc);
    const nJ = Math.ceil(N / nc);
    args.i32s(0, [M, N, K, tab.ptr + 4 * aPer, tab.ptr + 4 * bPer, ptrOf(out) + 4 * out.offset, nI, nJ, mc, nc, 4 * aRow, 4 * aCol]);
    const relaxed = rt.features.relaxedSimd;
    const aMode: AMode = packA ? 'packed' : aCol === 1 || K === 1 ? 'k1' : aRow === 1 ? 'cols' : 'ks';
    const tiles = pool.kernel(`matmul.tiles.${MR}x${NR}.${aMode}.${relaxed ? 'fma' : 'muladd'}`, () => spec(tileKernel(relaxed, aMode)));
    pool.run(tiles, ARGS_PTR, matrices * nI * nJ, 1, work >= PARALLEL_WORK);
  } finally {
    heap.release(packB.ptr, packB.size);
    if (packA) heap.release(packA.ptr, packA.size);
    heap.release(tab.ptr, tab.size);
  }
}

/**
 * Tuning knobs the benchmarks vary: K from which a is packed. In interleaved runs here reading a
 * in place was as fast or faster at every size up to 2048 (the packing pass costs more than the
 * cache and TLB misses it saves), so it is off by default; tests run both.
 */
export const MATMUL_TUNING = { packAK: Infinity };

/** Multiply-adds below which a matmul runs on the main thread alone (about 50 us of work). */
const PARALLEL_WORK = 1 << 20;

/** The panel packer (also attention's, for its keys): `rows` lines per panel, k-major. */
export function packer(rt: Runtime, rows: number, kContiguous: boolean) {
  return rt.pool.kernel(`matmul.pack.${rows}.${kContiguous ? 'k1' : 'ks'}`, () => spec(packKernel(rows, kContiguous)));
}

/** Panels per chunk: about 16K elements each. */
export const packChunk = (rows: number, K: number) => Math.max(1, Math.floor(16384 / (rows * K)));
