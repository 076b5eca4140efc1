/**
 * Fused attention, forward and backward, with segment ids, 2x2 windows, causal masks and GQA:
 * online softmax over the visible keys, four at a time (f32x4 lanes hold four scores), SIMD
 * over the head dim, no score matrix. Kernels are generated per head dim D.
 *
 * Which keys a query sees is resolved in TypeScript into at most two key ranges per query
 * ([lo1, hi1) and [lo2, hi2)): the whole sequence, a segment's run of keys, or a 2x2 window's
 * two pairs, clipped by the causal bound; the kernel also compares segment ids when a
 * segment's keys are not one run. Keys past a range's end are clamped to its last key and
 * masked, so no read leaves the tensor.
 *
 * Forward: the blocked kernel of flash.ts where it applies, else item = one query row (b, h, i). Backward (by recomputation, FlashAttention-2's
 * split): a stats pass (the forward, keeping each row's max m, 1/l and delta = dO·O); then dK
 * and dV with item = (b, kv head, block of 16 keys), looping over the group's heads and the
 * queries that see the block (no two items write the same key); then dQ with item = a row.
 */
import type { AttentionParams } from '../../../tensor/backend.js';
import type { Tensor } from '../../../tensor/tensor.js';
import { buf } from '../../../tensor/cpu/storage.js';
import { Func, type Local } from '../emit.js';
import { MAX_PAGES, WasmStorage } from '../memory.js';
import { Args, ARGS_PTR, runtime } from '../runtime.js';
import { exp4, mathTemps, type MathTemps } from './simd-math.js';
import { F, flashKernel, flashSpec, QROWS } from './flash.js';
import { flashDkvKernel, flashDqKernel, G } from './flash-grad.js';
import { packChunk, packer } from './matmul.js';

const KEY_BLOCK = 16;
const spec = (f: Func) => ({ funcs: [{ name: 'run', func: f }], maxPages: MAX_PAGES, globals: ['tid', 'scratch'] });

/** Argument words (i32 unless noted). */
const A = {
  B: 0, Hq: 1, Sq: 2, Sk: 3, group: 4,
  q: 5, qb: 6, qh: 7, qs: 8, k: 9, kb: 10, kh: 11, ks: 12, v: 13, vb: 14, vh: 15, vs: 16,
  out: 17, ranges: 18, segQ: 19, segK: 20, scale: 21 /* f32 */, stats: 22, dO: 23, delta: 24, dk: 25, dv: 26, Hkv: 27,
} as const;

type Mode = 'forward' | 'stats' | 'dq' | 'dkv';

/** Emits the code shared by the four kernels for head dim D. */
class AttentionEmitter {
  readonly f = new Func(['i32', 'i32', 'i32']);
  readonly p: Record<keyof typeof A, Local>;
  readonly t: MathTemps;
  readonly D4: number;
  readonly tail: number;
  // per row
  readonly b = this.f.local('i32');
  readonly h = this.f.local('i32');
  readonly i = this.f.local('i32');
  readonly kvh = this.f.local('i32');
  readonly qRow = this.f.local('i32');
  readonly dORow = this.f.local('i32');
  readonly kBase = this.f.local('i32');
  readonly vBase = this.f.local('i32');
  readonly segId = this.f.local('i32');
  readonly kp = [0, 1, 2, 3].map(() => this.f.local('i32'));
  readonly vp = [0, 1, 2, 3].map(() => this.f.local('i32'));
  readonly s = this.f.local('v128');
  readonly part = [0, 1, 2, 3].map(() => this.f.local('v128'));
  readonly mask = this.f.local('v128');
  readonly x = this.f.local('v128');
  readonly tailS = [0, 1, 2, 3].map(() => this.f.local('f32'));

  constructor(readonly D: number, readonly checkIds: boolean, readonly relaxed: boolean) {
    const f = this.f;
    this.p = Object.fromEntries(Object.keys(A).map((k) => [k, f.local(k === 'scale' ? 'f32' : 'i32')])) as Record<keyof typeof A, Local>;
    for (const [name, word] of Object.entries(A)) {
      f.get(f.params[0]);
      if (name === 'scale') f.f32_load(4 * word);
      else f.i32_load(4 * word);
      f.set(this.p[name as keyof typeof A]);
    }
    this.t = mathTemps(f);
    this.D4 = Math.floor(D / 4);
    this.tail = D % 4;
  }

  madd(acc: Local, load: () => void, other: () => void): void {
    const f = this.f;
    if (this.relaxed) {
      load();
      other();
      f.get(acc).f32x4_relaxed_madd().set(acc);
    } else {
      f.get(acc);
      load();
      other();
      f.f32x4_mul().f32x4_add().set(acc);
    }
  }

  /** Byte address of row j of a [B, H, S, D] view: base + (b*sb + head*sh + j*ss) * 4. */
  rowAddr(base: Local, sb: Local, sh: Local, ss: Local, head: Local, j: Local | number): void {
    const f = this.f;
    f.get(base).get(this.b).get(sb).i32_mul().get(head).get(sh).i32_mul().i32_add().val(j).get(ss).i32_mul().i32_add().i32(2).i32_shl().i32_add();
  }

  /** this.s = [row·key_0, ..., row·key_3] for the key rows at `keys` (SIMD over D, then a 4x4 transpose-add). */
  dot4(row: Local, keys: Local[]): void {
    const f = this.f;
    for (let l = 0; l < 4; l++) f.f32x4(0).set(this.part[l]);
    for (let c = 0; c < this.D4; c++) {
      for (let l = 0; l < 4; l++) this.madd(this.part[l], () => void f.get(row).v128_load(16 * c), () => void f.get(keys[l]).v128_load(16 * c));
    }
    const [p0, p1, p2, p3] = this.part;
    f.get(p0).get(p1).f32x4_shuffle(0, 4, 1, 5).get(p0).get(p1).f32x4_shuffle(2, 6, 3, 7).f32x4_add().set(p0);
    f.get(p2).get(p3).f32x4_shuffle(0, 4, 1, 5).get(p2).get(p3).f32x4_shuffle(2, 6, 3, 7).f32x4_add().set(p2);
    f.get(p0).get(p2).f32x4_shuffle(0, 1, 4, 5).get(p0).get(p2).f32x4_shuffle(2, 3, 6, 7).f32x4_add().set(this.s);
    if (this.tail) {
      for (let l = 0; l < 4; l++) {
        f.f32(0).set(this.tailS[l]);
        for (let d = 4 * this.D4; d < this.D; d++) f.get(this.tailS[l]).get(row).f32_load(4 * d).get(keys[l]).f32_load(4 * d).f32_mul().f32_add().set(this.tailS[l]);
        f.get(this.s).get(this.s).f32x4_extract_lane(l).get(this.tailS[l]).f32_add().f32x4_replace_lane(l).set(this.s);
      }
    }
  }

  /** acc[c] (+)= w_l * row_l[c] summed over the 4 lanes of `w` (accumulators in locals). */
  axpy4ToLocals(acc: Local[], tailAcc: Local[], w: Local, rows: Local[]): void {
    const f = this.f;
    for (let l = 0; l < 4; l++) {
      f.get(w).get(w).f32x4_shuffle(l, l, l, l).set(this.x);
      for (let c = 0; c < this.D4; c++) this.madd(acc[c], () => void f.get(this.x), () => void f.get(rows[l]).v128_load(16 * c));
      for (let d = 0; d < this.tail; d++) {
        f.get(tailAcc[d]).get(w).f32x4_extract_lane(l).get(rows[l]).f32_load(4 * (4 * this.D4 + d)).f32_mul().f32_add().set(tailAcc[d]);
      }
    }
  }

  /** mem(dst)[c] += scalar lane `l` of w * row[c], for one destination row in memory. */
  axpyToMemory(dst: Local, w: Local, l: number, row: Local): void {
    const f = this.f;
    f.get(w).get(w).f32x4_shuffle(l, l, l, l).set(this.x);
    for (let c = 0; c < this.D4; c++) {
      f.get(dst);
      if (this.relaxed) f.get(this.x).get(row).v128_load(16 * c).get(dst).v128_load(16 * c).f32x4_relaxed_madd();
      else f.get(dst).v128_load(16 * c).get(this.x).get(row).v128_load(16 * c).f32x4_mul().f32x4_add();
      f.v128_store(16 * c);
    }
    for (let d = 4 * this.D4; d < this.D; d++) {
      f.get(dst).get(dst).f32_load(4 * d).get(w).f32x4_extract_lane(l).get(row).f32_load(4 * d).f32_mul().f32_add().f32_store(4 * d);
    }
  }

  /** Key and value row addresses for the 4 keys from j (clamped to last), and the lane mask (j + l < hi, ids). */
  keysAt(j: Local, lo: Local, hi: Local, withValues: boolean): void {
    const f = this.f;
    for (let l = 0; l < 4; l++) {
      // key index min(j + l, hi - 1)
      f.get(j).i32(l).i32_add().get(hi).i32(1).i32_sub().get(j).i32(l).i32_add().get(hi).i32(1).i32_sub().i32_lt_s().select();
      f.set(this.kp[l]);
      if (withValues) f.get(this.vBase).get(this.kp[l]).get(this.p.vs).i32_mul().i32(2).i32_shl().i32_add().set(this.vp[l]);
    }
    // mask: lo <= j + l < hi
    f.get(j).i32x4_splat().i32x4(0, 1, 2, 3).i32x4_add().set(this.mask);
    f.get(this.mask).get(hi).i32x4_splat().i32x4_lt_s().get(this.mask).get(lo).i32x4_splat().i32x4_ge_s().v128_and().set(this.mask);
    if (this.checkIds) {
      // ids of the 4 keys against the query's
      f.i32x4(0).set(this.x);
      for (let l = 0; l < 4; l++) {
        f.get(this.x).get(this.p.segK).get(this.b).get(this.p.Sk).i32_mul().get(this.kp[l]).i32_add().i32(2).i32_shl().i32_add().i32_load();
        f.i32x4_replace_lane(l).set(this.x);
      }
      f.get(this.mask).get(this.x).get(this.segId).i32x4_splat().i32x4_eq().v128_and().set(this.mask);
    }
    for (let l = 0; l < 4; l++) f.get(this.kBase).get(this.kp[l]).get(this.p.ks).i32_mul().i32(2).i32_shl().i32_add().set(this.kp[l]);
  }
}

/**
 * The forward (mode 'forward': writes out) or the stats pass (mode 'stats': writes m, 1/l per
 * row and delta = dO·O). Item = row (b, h, i).
 */
function forwardKernel(D: number, checkIds: boolean, relaxed: boolean, mode: 'forward' | 'stats'): Func {
  const e = new AttentionEmitter(D, checkIds, relaxed);
  const { f, p, t } = e;
  const [, lo, hi] = f.params;
  const [item, j, rlo, rhi, rp, r, outRow] = Array.from({ length: 7 }, () => f.local('i32'));
  const [m, l, mnew, bm, alpha, inv] = Array.from({ length: 6 }, () => f.local('f32'));
  const acc = Array.from({ length: e.D4 }, () => f.local('v128'));
  const tailAcc = Array.from({ length: e.tail }, () => f.local('f32'));
  const pv = f.local('v128');
  f.for(item, lo, hi, 1, () => {
    // item = (b * Hq + h) * Sq + i
    f.get(item).get(p.Sq).i32_rem_u().set(e.i);
    f.get(item).get(p.Sq).i32_div_u().set(r);
    f.get(r).get(p.Hq).i32_rem_u().set(e.h);
    f.get(r).get(p.Hq).i32_div_u().set(e.b);
    f.get(e.h).get(p.group).i32_div_u().set(e.kvh);
    e.rowAddr(p.q, p.qb, p.qh, p.qs, e.h, e.i);
    f.set(e.qRow);
    e.rowAddr(p.k, p.kb, p.kh, p.ks, e.kvh, 0);
    f.set(e.kBase);
    e.rowAddr(p.v, p.vb, p.vh, p.vs, e.kvh, 0);
    f.set(e.vBase);
    if (checkIds) f.get(p.segQ).get(e.b).get(p.Sq).i32_mul().get(e.i).i32_add().i32(2).i32_shl().i32_add().i32_load().set(e.segId);
    f.f32(-Infinity).set(m).f32(0).set(l);
    for (const a of acc) f.f32x4(0).set(a);
    for (const a of tailAcc) f.f32(0).set(a);
    // ranges[(b * Sq + i) * 4 ..]
    f.get(p.ranges).get(e.b).get(p.Sq).i32_mul().get(e.i).i32_add().i32(4).i32_shl().i32_add().set(rp);
    for (let range = 0; range < 2; range++) {
      f.get(rp).i32_load(8 * range).set(rlo).get(rp).i32_load(8 * range + 4).set(rhi);
      f.for(j, rlo, rhi, 4, () => {
        e.keysAt(j, rlo, rhi, true);
        e.dot4(e.qRow, e.kp);
        f.get(e.s).get(p.scale).f32x4_splat().f32x4_mul().f32x4(-Infinity).get(e.mask).v128_bitselect().set(e.s);
        // block max
        f.get(e.s).get(e.s).get(e.s).f32x4_shuffle(2, 3, 0, 1).f32x4_max().set(e.x);
        f.get(e.x).get(e.x).get(e.x).f32x4_shuffle(1, 0, 3, 2).f32x4_max().f32x4_extract_lane(0).set(bm);
        f.get(bm).f32(-Infinity).f32_ne().if(() => {
          f.get(m).get(bm).f32_max().set(mnew);
          f.get(m).get(mnew).f32_sub().f32x4_splat().set(e.x);
          exp4(f, e.x, t);
          f.f32x4_extract_lane(0).set(alpha);
          f.get(e.s).get(mnew).f32x4_splat().f32x4_sub().set(e.x);
          exp4(f, e.x, t);
          f.set(pv);
          f.get(pv).get(pv).get(pv).f32x4_shuffle(2, 3, 0, 1).f32x4_add().set(e.x);
          f.get(l).get(alpha).f32_mul().get(e.x).get(e.x).get(e.x).f32x4_shuffle(1, 0, 3, 2).f32x4_add().f32x4_extract_lane(0).f32_add().set(l);
          for (const a of acc) f.get(a).get(alpha).f32x4_splat().f32x4_mul().set(a);
          for (const a of tailAcc) f.get(a).get(alpha).f32_mul().set(a);
          e.axpy4ToLocals(acc, tailAcc, pv, e.vp);
          f.get(mnew).set(m);
        });
      });
    }
    f.get(l).f32(0).f32_gt().if(() => void f.f32(1).get(l).f32_div().set(inv), () => void f.f32(0).set(inv).f32(0).set(m));
    if (mode === 'forward') {
      f.get(p.out).get(item).i32(D * 4).i32_mul().i32_add().set(outRow);
      acc.forEach((a, c) => f.get(outRow).get(a).get(inv).f32x4_splat().f32x4_mul().v128_store(16 * c));
      tailAcc.forEach((a, d) => f.get(outRow).get(a).get(inv).f32_mul().f32_store(4 * (4 * e.D4 + d)));
    } else {
      f.get(p.stats).get(item).i32(3).i32_shl().i32_add().set(outRow);
      f.get(outRow).get(m).f32_store(0).get(outRow).get(inv).f32_store(4);
      // delta = dO · O = inv * (dO · acc); dO is dense [B, Hq, Sq, D]
      f.get(p.dO).get(item).i32(D * 4).i32_mul().i32_add().set(e.dORow);
      f.f32x4(0).set(e.x);
      acc.forEach((a, c) => e.madd(e.x, () => void f.get(e.dORow).v128_load(16 * c), () => void f.get(a)));
      f.get(e.x).get(e.x).get(e.x).f32x4_shuffle(2, 3, 0, 1).f32x4_add().set(e.x);
      f.get(e.x).get(e.x).get(e.x).f32x4_shuffle(1, 0, 3, 2).f32x4_add().f32x4_extract_lane(0).set(bm);
      tailAcc.forEach((a, d) => f.get(bm).get(e.dORow).f32_load(4 * (4 * e.D4 + d)).get(a).f32_mul().f32_add().set(bm));
      f.get(p.delta).get(item).i32(2).i32_shl().i32_add().get(bm).get(inv).f32_mul().f32_store();
    }
  });
  return f;
}

/**
 * p = exp(scale q·k - m) / l (masked lanes 0) and ds = scale p (dO·v - delta) for the 4 keys
 * set up by keysAt; leaves them in `pv` and `ds`.
 */
function probabilities(e: AttentionEmitter, m: Local, inv: Local, delta: Local, pv: Local, ds: Local): void {
  const { f, p, t } = e;
  e.dot4(e.qRow, e.kp);
  f.get(e.s).get(p.scale).f32x4_splat().f32x4_mul().get(m).f32x4_splat().f32x4_sub().set(e.x);
  exp4(f, e.x, t);
  f.get(inv).f32x4_splat().f32x4_mul().f32x4(0).get(e.mask).v128_bitselect().set(pv);
  e.dot4(e.dORow, e.vp);
  f.get(e.s).get(delta).f32x4_splat().f32x4_sub().get(pv).f32x4_mul().get(p.scale).f32x4_splat().f32x4_mul().set(ds);
}

/** Loads m, 1/l, delta of row item (b, h, i) and sets qRow, dORow. */
function rowState(e: AttentionEmitter, rowItem: Local, m: Local, inv: Local, delta: Local): void {
  const { f, p, D } = e;
  f.get(p.stats).get(rowItem).i32(3).i32_shl().i32_add().set(e.dORow);
  f.get(e.dORow).f32_load(0).set(m).get(e.dORow).f32_load(4).set(inv);
  f.get(p.delta).get(rowItem).i32(2).i32_shl().i32_add().f32_load().set(delta);
  e.rowAddr(p.q, p.qb, p.qh, p.qs, e.h, e.i);
  f.set(e.qRow);
  f.get(p.dO).get(rowItem).i32(D * 4).i32_mul().i32_add().set(e.dORow);
}

/** dQ: item = row (b, h, i); dq (dense [B, Hq, Sq, D]) written to `out`. */
function dqKernel(D: number, checkIds: boolean, relaxed: boolean): Func {
  const e = new AttentionEmitter(D, checkIds, relaxed);
  const { f, p } = e;
  const [, lo, hi] = f.params;
  const [item, j, rlo, rhi, rp, r, outRow] = Array.from({ length: 7 }, () => f.local('i32'));
  const [m, inv, delta] = [f.local('f32'), f.local('f32'), f.local('f32')];
  const [pv, ds] = [f.local('v128'), f.local('v128')];
  const acc = Array.from({ length: e.D4 }, () => f.local('v128'));
  const tailAcc = Array.from({ length: e.tail }, () => f.local('f32'));
  f.for(item, lo, hi, 1, () => {
    f.get(item).get(p.Sq).i32_rem_u().set(e.i);
    f.get(item).get(p.Sq).i32_div_u().set(r);
    f.get(r).get(p.Hq).i32_rem_u().set(e.h);
    f.get(r).get(p.Hq).i32_div_u().set(e.b);
    f.get(e.h).get(p.group).i32_div_u().set(e.kvh);
    rowState(e, item, m, inv, delta);
    e.rowAddr(p.k, p.kb, p.kh, p.ks, e.kvh, 0);
    f.set(e.kBase);
    e.rowAddr(p.v, p.vb, p.vh, p.vs, e.kvh, 0);
    f.set(e.vBase);
    if (checkIds) f.get(p.segQ).get(e.b).get(p.Sq).i32_mul().get(e.i).i32_add().i32(2).i32_shl().i32_add().i32_load().set(e.segId);
    for (const a of acc) f.f32x4(0).set(a);
    for (const a of tailAcc) f.f32(0).set(a);
    f.get(p.ranges).get(e.b).get(p.Sq).i32_mul().get(e.i).i32_add().i32(4).i32_shl().i32_add().set(rp);
    for (let range = 0; range < 2; range++) {
      f.get(rp).i32_load(8 * range).set(rlo).get(rp).i32_load(8 * range + 4).set(rhi);
      f.for(j, rlo, rhi, 4, () => {
        e.keysAt(j, rlo, rhi, true);
        probabilities(e, m, inv, delta, pv, ds);
        e.axpy4ToLocals(acc, tailAcc, ds, e.kp);
      });
    }
    f.get(p.out).get(item).i32(D * 4).i32_mul().i32_add().set(outRow);
    acc.forEach((a, c) => f.get(outRow).get(a).v128_store(16 * c));
    tailAcc.forEach((a, d) => f.get(outRow).get(a).f32_store(4 * (4 * e.D4 + d)));
  });
  return f;
}

/** dK, dV: item = (b, kv head, block of KEY_BLOCK keys); dk, dv dense [B, Hkv, Sk, D]. */
function dkvKernel(D: number, checkIds: boolean, relaxed: boolean): Func {
  const e = new AttentionEmitter(D, checkIds, relaxed);
  const { f, p } = e;
  const [, lo, hi] = f.params;
  const [item, blocks, j0, j1, jg, g, rp, r, a1, b1, lo1, hi1, lo2, hi2, dkRow, dvRow, rowItem, key] = Array.from({ length: 18 }, () => f.local('i32'));
  const [m, inv, delta] = [f.local('f32'), f.local('f32'), f.local('f32')];
  const [pv, ds] = [f.local('v128'), f.local('v128')];
  f.get(p.Sk).i32(KEY_BLOCK - 1).i32_add().i32(KEY_BLOCK).i32_div_u().set(blocks);
  f.for(item, lo, hi, 1, () => {
    // item = (b * Hkv + kvh) * blocks + block
    f.get(item).get(blocks).i32_rem_u().i32(KEY_BLOCK).i32_mul().set(j0);
    f.get(item).get(blocks).i32_div_u().set(r);
    f.get(r).get(p.Hkv).i32_rem_u().set(e.kvh);
    f.get(r).get(p.Hkv).i32_div_u().set(e.b);
    f.get(j0).i32(KEY_BLOCK).i32_add().set(j1);
    f.get(j1).get(p.Sk).i32_gt_s().if(() => void f.get(p.Sk).set(j1));
    e.rowAddr(p.k, p.kb, p.kh, p.ks, e.kvh, 0);
    f.set(e.kBase);
    e.rowAddr(p.v, p.vb, p.vh, p.vs, e.kvh, 0);
    f.set(e.vBase);
    // zero this block's dk, dv rows
    f.for(key, j0, j1, 1, () => {
      f.get(e.b).get(p.Hkv).i32_mul().get(e.kvh).i32_add().get(p.Sk).i32_mul().get(key).i32_add().i32(D * 4).i32_mul().set(r);
      for (let d = 0; d < D; d++) {
        f.get(p.dk).get(r).i32_add().f32(0).f32_store(4 * d);
        f.get(p.dv).get(r).i32_add().f32(0).f32_store(4 * d);
      }
    });
    f.for(g, 0, p.group, 1, () => {
      f.get(e.kvh).get(p.group).i32_mul().get(g).i32_add().set(e.h);
      f.for(e.i, 0, p.Sq, 1, () => {
        f.get(p.ranges).get(e.b).get(p.Sq).i32_mul().get(e.i).i32_add().i32(4).i32_shl().i32_add().set(rp);
        f.get(rp).i32_load(0).set(lo1).get(rp).i32_load(4).set(hi1).get(rp).i32_load(8).set(lo2).get(rp).i32_load(12).set(hi2);
        // does either range meet [j0, j1)?  max(lo, j0) < min(hi, j1)
        const meets = (lo: Local, hi: Local) => {
          f.get(lo).get(j0).get(lo).get(j0).i32_gt_s().select().set(a1);
          f.get(hi).get(j1).get(hi).get(j1).i32_lt_s().select().set(b1);
          f.get(a1).get(b1).i32_lt_s();
        };
        meets(lo1, hi1);
        meets(lo2, hi2);
        f.i32_or().if(() => {
          f.get(e.b).get(p.Hq).i32_mul().get(e.h).i32_add().get(p.Sq).i32_mul().get(e.i).i32_add().set(rowItem);
          rowState(e, rowItem, m, inv, delta);
          if (checkIds) f.get(p.segQ).get(e.b).get(p.Sq).i32_mul().get(e.i).i32_add().i32(2).i32_shl().i32_add().i32_load().set(e.segId);
          f.for(jg, j0, j1, 4, () => {
            // lanes: key jg + l < j1 and inside range 1 or range 2
            e.keysAt(jg, jg, j1, true);
            // keysAt's mask is jg <= j < j1 (and ids); intersect with the ranges
            f.get(jg).i32x4_splat().i32x4(0, 1, 2, 3).i32x4_add().set(e.x);
            f.get(e.x).get(hi1).i32x4_splat().i32x4_lt_s().get(e.x).get(lo1).i32x4_splat().i32x4_ge_s().v128_and();
            f.get(e.x).get(hi2).i32x4_splat().i32x4_lt_s().get(e.x).get(lo2).i32x4_splat().i32x4_ge_s().v128_and();
            f.v128_or().get(e.mask).v128_and().set(e.mask);
            f.get(e.mask).v128_any_true().if(() => {
              probabilities(e, m, inv, delta, pv, ds);
              for (let l = 0; l < 4; l++) {
                // the l-th key's row: (jg + l) clamped; masked lanes add 0
                f.get(jg).i32(l).i32_add().get(j1).i32(1).i32_sub().get(jg).i32(l).i32_add().get(j1).i32(1).i32_sub().i32_lt_s().select().set(key);
                f.get(e.b).get(p.Hkv).i32_mul().get(e.kvh).i32_add().get(p.Sk).i32_mul().get(key).i32_add().i32(D * 4).i32_mul().set(r);
                f.get(p.dv).get(r).i32_add().set(dvRow);
                f.get(p.dk).get(r).i32_add().set(dkRow);
                e.axpyToMemory(dvRow, pv, l, e.dORow);
                e.axpyToMemory(dkRow, ds, l, e.qRow);
              }
            });
          });
        });
      });
    });
  });
  return f;
}

const ptrOf = (t: Tensor): number => (t.storage as WasmStorage).ptr + 4 * t.offset;

/** A view whose last (head) dim is dense, as the kernels read rows with v128 loads. */
function rowsDense(t: Tensor): Tensor {
  return t.strides[3] === 1 || t.shape[3] <= 1 ? t.asStrided(t.shape, t.strides, t.offset) : t.contiguous();
}

interface Prepared {
  words: number[];
  checkIds: boolean;
  temps: { ptr: number; size: number }[];
  views: Tensor[];
}

/** Resolves the masks into key ranges and writes the shared argument words. */
function prepare(q: Tensor, k: Tensor, v: Tensor, prm: AttentionParams): Prepared {
  const rt = runtime();
  const [B, Hq, Sq, D] = q.shape;
  const [, Hkv, Sk] = k.shape;
  void D;
  const views = [rowsDense(q), rowsDense(k), rowsDense(v)];
  const [qv, kv, vv] = views;
  const temps: { ptr: number; size: number }[] = [];
  const take = (n: number) => {
    const b = rt.heap.alloc(Math.max(4, n * 4), 'attention');
    temps.push(b);
    return b;
  };
  const ranges = take(B * Sq * 4);
  const R = new Int32Array(rt.heap.buffer, ranges.ptr, B * Sq * 4);
  let checkIds = false;
  let segQ = 0;
  let segK = 0;
  const ids = (t: Tensor, S: number) => {
    const block = take(B * S);
    const dense = new Int32Array(rt.heap.buffer, block.ptr, B * S);
    const src = buf(t);
    for (let b = 0; b < B; b++) for (let s = 0; s < S; s++) dense[b * S + s] = src[t.offset + b * t.strides[0] + s * t.strides[1]];
    return { block, dense };
  };
  let qIds: Int32Array | null = null;
  let kIds: Int32Array | null = null;
  if (prm.segmentIdsQ && prm.segmentIdsK) {
    const a = ids(prm.segmentIdsQ, Sq);
    const b = ids(prm.segmentIdsK, Sk);
    [segQ, segK, qIds, kIds] = [a.block.ptr, b.block.ptr, a.dense, b.dense];
  }
  const shift = Sk - Sq;
  for (let b = 0; b < B; b++) {
    // per segment id: the run [first, last + 1) of its keys, and whether that run is all its keys
    let runs: Map<number, { lo: number; hi: number; count: number }> | null = null;
    if (kIds) {
      runs = new Map();
      for (let j = 0; j < Sk; j++) {
        const id = kIds[b * Sk + j];
        const r = runs.get(id);
        if (!r) runs.set(id, { lo: j, hi: j + 1, count: 1 });
        else {
          r.hi = j + 1;
          r.count++;
        }
      }
      for (const r of runs.values()) if (r.count !== r.hi - r.lo) checkIds = true;
    }
    for (let i = 0; i < Sq; i++) {
      let pairs: [number, number][];
      if (prm.window) {
        const w = prm.window.w;
        const top = (Math.floor(i / w) >> 1) * 2 * w + ((i % w) >> 1) * 2;
        pairs = [[top, top + 2], [top + w, top + w + 2]];
      } else pairs = [[0, Sk], [0, 0]];
      let cap = Sk;
      if (prm.causal) cap = Math.min(cap, i + shift + 1);
      let floor = 0;
      if (runs && qIds) {
        const r = runs.get(qIds[b * Sq + i]);
        if (!r) cap = 0;
        else {
          floor = r.lo;
          cap = Math.min(cap, r.hi);
        }
      }
      const at = (b * Sq + i) * 4;
      pairs.forEach(([lo, hi], x) => {
        const l = Math.max(lo, floor);
        const h = Math.min(hi, cap);
        R[at + 2 * x] = h > l ? l : 0;
        R[at + 2 * x + 1] = h > l ? h : 0;
      });
    }
  }
  const words = new Array<number>(28).fill(0);
  const set = (name: keyof typeof A, value: number) => (words[A[name]] = value);
  set('B', B); set('Hq', Hq); set('Sq', Sq); set('Sk', Sk); set('group', Hq / Hkv); set('Hkv', Hkv);
  for (const [name, t] of [['q', qv], ['k', kv], ['v', vv]] as const) {
    set(name, ptrOf(t));
    set(`${name}b` as keyof typeof A, t.strides[0]);
    set(`${name}h` as keyof typeof A, t.strides[1]);
    set(`${name}s` as keyof typeof A, t.strides[2]);
  }
  set('ranges', ranges.ptr);
  set('segQ', segQ);
  set('segK', segK);
  return { words, checkIds, temps, views };
}

function write(p: Prepared, scale: number, extra: Partial<Record<keyof typeof A, number>>): void {
  const args = new Args(runtime());
  args.i32s(0, p.words);
  for (const [name, value] of Object.entries(extra)) args.i32(A[name as keyof typeof A], value);
  args.f32(A.scale, scale);
}

function release(p: Prepared): void {
  const heap = runtime().heap;
  for (const t of p.temps) heap.release(t.ptr, t.size);
  for (const v of p.views) v.dispose();
}

function kernelFor(mode: Mode, D: number, checkIds: boolean) {
  const rt = runtime();
  const relaxed = rt.features.relaxedSimd;
  const key = `attention.${mode}.D${D}.${checkIds ? 'ids' : 'ranges'}.${relaxed ? 'fma' : 'muladd'}`;
  return rt.pool.kernel(key, () => spec(
    mode === 'dq' ? dqKernel(D, checkIds, relaxed)
      : mode === 'dkv' ? dkvKernel(D, checkIds, relaxed)
      : forwardKernel(D, checkIds, relaxed, mode),
  ));
}

/**
 * The blocked kernel (flash.ts) where every query sees one key range and the head dim is a
 * multiple of 4: the keys packed into panels of 8 first (the matmul's packer), then items of 6
 * query rows. Returns false where it does not apply (windows, segment ids that are not runs).
 */
function flash(q: Tensor, k: Tensor, v: Tensor, prm: AttentionParams, p: Prepared, mode: 'forward' | 'stats', extra: Partial<Record<keyof typeof F, number>>): boolean {
  const [B, Hq, Sq, D] = q.shape;
  const [, Hkv, Sk] = k.shape;
  if (prm.window || p.checkIds || D % 4 !== 0 || Sk < 8) return false;
  const rt = runtime();
  const [, kv, vv] = p.views;
  const panels = Math.ceil(Sk / 8);
  const mats = B * Hkv;
  const kp = rt.heap.alloc(mats * panels * 8 * D * 4, 'attention');
  const tab = rt.heap.alloc(8 * mats, 'attention');
  try {
    const w = new Int32Array(rt.heap.buffer, tab.ptr, 2 * mats);
    for (let b = 0; b < B; b++) {
      for (let h = 0; h < Hkv; h++) {
        const m = b * Hkv + h;
        w[m] = ptrOf(kv) + 4 * (b * kv.strides[0] + h * kv.strides[1]);
        w[mats + m] = kp.ptr + m * panels * 8 * D * 4;
      }
    }
    const args = new Args(rt);
    // lines are keys (stride ks), k is the head dim (stride 1)
    args.i32s(0, [Sk, D, kv.strides[2], 1, panels, tab.ptr, tab.ptr + 4 * mats]);
    const work = B * Hq * Sq * Sk * D;
    rt.pool.run(packer(rt, 8, true), ARGS_PTR, mats * panels, packChunk(8, D), work >= 1 << 16 && mats * panels * D * 8 >= 1 << 15);
    const words = new Array<number>(22).fill(0);
    const set = (name: keyof typeof F, value: number) => (words[F[name]] = value);
    set('B', B); set('Hq', Hq); set('Sq', Sq); set('Sk', Sk); set('group', Hq / Hkv); set('Hkv', Hkv);
    set('q', ptrOf(p.views[0])); set('qb', p.views[0].strides[0]); set('qh', p.views[0].strides[1]); set('qs', p.views[0].strides[2]);
    set('kp', kp.ptr); set('panels', panels);
    set('v', ptrOf(vv)); set('vb', vv.strides[0]); set('vh', vv.strides[1]); set('vs', vv.strides[2]);
    set('ranges', p.words[A.ranges]);
    for (const [name, value] of Object.entries(extra)) set(name as keyof typeof F, value);
    args.i32s(0, words).f32(F.scale, prm.scale);
    const relaxed = rt.features.relaxedSimd;
    const kern = rt.pool.kernel(`attention.flash.${mode}.D${D}.${relaxed ? 'fma' : 'muladd'}`, () => flashSpec(flashKernel(D, relaxed, mode)));
    const items = B * Hq * Math.ceil(Sq / QROWS);
    rt.pool.run(kern, ARGS_PTR, items, Math.max(1, Math.floor(32768 / (QROWS * Sk * D))), work >= 1 << 16);
    return true;
  } finally {
    rt.heap.release(kp.ptr, kp.size);
    rt.heap.release(tab.ptr, tab.size);
  }
}

/** Packs the rows of every (b, head) of t [B, H, S, D] (head dim dense) into panels of 8 rows, k-major over D. */
function packHeads(t: Tensor): { block: { ptr: number; size: number }; panels: number } {
  const rt = runtime();
  const [B, H, S, D] = t.shape;
  const panels = Math.ceil(S / 8);
  const mats = B * H;
  const block = rt.heap.alloc(Math.max(4, mats * panels * 8 * D * 4), 'attentionGrad');
  const tab = rt.heap.alloc(8 * mats, 'attentionGrad');
  try {
    const w = new Int32Array(rt.heap.buffer, tab.ptr, 2 * mats);
    for (let b = 0; b < B; b++) {
      for (let h = 0; h < H; h++) {
        w[b * H + h] = ptrOf(t) + 4 * (b * t.strides[0] + h * t.strides[1]);
        w[mats + b * H + h] = block.ptr + (b * H + h) * panels * 8 * D * 4;
      }
    }
    new Args(rt).i32s(0, [S, D, t.strides[2], 1, panels, tab.ptr, tab.ptr + 4 * mats]);
    rt.pool.run(packer(rt, 8, true), ARGS_PTR, mats * panels, packChunk(8, D), mats * S * D >= 1 << 15);
  } finally {
    rt.heap.release(tab.ptr, tab.size);
  }
  return { block, panels };
}

/** The blocked backward (flash-grad.ts) after the stats pass; false where flash() does not apply. */
function flashGrad(q: Tensor, prm: AttentionParams, p: Prepared, dO: Tensor, stats: number, delta: number, gq: Tensor, gk: Tensor, gv: Tensor): boolean {
  const [B, Hq, Sq, D] = q.shape;
  const [qv, kv, vv] = p.views;
  const [, Hkv, Sk] = kv.shape;
  if (prm.window || p.checkIds || D % 4 !== 0 || Sk < 8) return false;
  const rt = runtime();
  const relaxed = rt.features.relaxedSimd;
  const words = new Array<number>(29).fill(0);
  const set = (name: keyof typeof G, value: number) => (words[G[name]] = value);
  set('B', B); set('Hq', Hq); set('Sq', Sq); set('Sk', Sk); set('group', Hq / Hkv); set('Hkv', Hkv);
  for (const [name, t] of [['q', qv], ['k', kv], ['v', vv]] as const) {
    set(name, ptrOf(t));
    set(`${name}b` as keyof typeof G, t.strides[0]);
    set(`${name}h` as keyof typeof G, t.strides[1]);
    set(`${name}s` as keyof typeof G, t.strides[2]);
  }
  set('dO', ptrOf(dO)); set('stats', stats); set('delta', delta); set('ranges', p.words[A.ranges]);
  set('dq', ptrOf(gq)); set('dk', ptrOf(gk)); set('dv', ptrOf(gv));
  const work = B * Hq * Sq * Sk * D;
  const held: { ptr: number; size: number }[] = [];
  try {
    // dQ: K and V packed per kv head
    const kp = packHeads(kv);
    const vp = packHeads(vv);
    held.push(kp.block, vp.block);
    set('pa', kp.block.ptr); set('pb', vp.block.ptr); set('panels', kp.panels);
    new Args(rt).i32s(0, words).f32(G.scale, prm.scale);
    const dq = rt.pool.kernel(`attention.flash.dq.D${D}.${relaxed ? 'fma' : 'muladd'}`, () => flashSpec(flashDqKernel(D, relaxed)));
    rt.pool.run(dq, ARGS_PTR, B * Hq * Math.ceil(Sq / QROWS), Math.max(1, Math.floor(16384 / (QROWS * Sk * D))), work >= 1 << 15);
    // dK, dV: Q and dO packed per query head
    const qp = packHeads(qv);
    const dop = packHeads(dO);
    held.push(qp.block, dop.block);
    set('pa', qp.block.ptr); set('pb', dop.block.ptr); set('panels', qp.panels);
    new Args(rt).i32s(0, words).f32(G.scale, prm.scale);
    const dkv = rt.pool.kernel(`attention.flash.dkv.D${D}.${relaxed ? 'fma' : 'muladd'}`, () => flashSpec(flashDkvKernel(D, relaxed)));
    rt.pool.run(dkv, ARGS_PTR, B * Hkv * Math.ceil(Sk / QROWS), 1, work >= 1 << 15);
    return true;
  } finally {
    for (const b of held) rt.heap.release(b.ptr, b.size);
  }
}

/** Query rows per chunk: about 64K key-dims of work each. */
const rowChunk = (Sk: number, D: number) => Math.max(1, Math.floor(65536 / Math.max(1, Sk * D)));

/** out [B, Hq, Sq, D] (fresh, contiguous) = attention(q, k, v). */
export function attention(q: Tensor, k: Tensor, v: Tensor, prm: AttentionParams, out: Tensor): void {
  const [B, Hq, Sq, D] = q.shape;
  const Sk = k.shape[2];
  if (out.size === 0) return;
  const o = out.storage as WasmStorage;
  if (Sk === 0 || D === 0) {
    o.data.fill(0, out.offset, out.offset + out.size);
    return;
  }
  const p = prepare(q, k, v, prm);
  try {
    if (flash(q, k, v, prm, p, 'forward', { out: ptrOf(out) })) return;
    write(p, prm.scale, { out: ptrOf(out) });
    const work = B * Hq * Sq * Sk * D;
    runtime().pool.run(kernelFor('forward', D, p.checkIds), ARGS_PTR, B * Hq * Sq, rowChunk(prm.window ? 4 : Sk, D), work >= 1 << 16);
  } finally {
    release(p);
  }
}

/** gq, gk, gv (fresh, contiguous) of attention(q, k, v) given gOut, by recomputation. */
export function attentionGrad(q: Tensor, k: Tensor, v: Tensor, prm: AttentionParams, gOut: Tensor, gq: Tensor, gk: Tensor, gv: Tensor): void {
  const [B, Hq, Sq, D] = q.shape;
  const [, Hkv, Sk] = k.shape;
  const zero = (t: Tensor) => (t.storage as WasmStorage).data.fill(0, t.offset, t.offset + t.size);
  if (Sq === 0 || Sk === 0 || D === 0) {
    for (const t of [gq, gk, gv]) zero(t);
    return;
  }
  const rt = runtime();
  const p = prepare(q, k, v, prm);
  const dO = gOut.contiguous();
  const stats = rt.heap.alloc(B * Hq * Sq * 8, 'attentionGrad');
  const delta = rt.heap.alloc(B * Hq * Sq * 4, 'attentionGrad');
  try {
    const parallel = B * Hq * Sq * Sk * D >= 1 << 15;
    const chunk = rowChunk(prm.window ? 4 : Sk, D);
    const extra = { dO: ptrOf(dO), stats: stats.ptr, delta: delta.ptr, out: ptrOf(gq), dk: ptrOf(gk), dv: ptrOf(gv) };
    if (flash(q, k, v, prm, p, 'stats', { stats: stats.ptr, dO: ptrOf(dO), delta: delta.ptr })) {
      if (flashGrad(q, prm, p, dO, stats.ptr, delta.ptr, gq, gk, gv)) return;
    } else {
      write(p, prm.scale, extra);
      rt.pool.run(kernelFor('stats', D, p.checkIds), ARGS_PTR, B * Hq * Sq, chunk, parallel);
    }
    write(p, prm.scale, extra);
    rt.pool.run(kernelFor('dq', D, p.checkIds), ARGS_PTR, B * Hq * Sq, chunk, parallel);
    rt.pool.run(kernelFor('dkv', D, p.checkIds), ARGS_PTR, B * Hkv * Math.ceil(Sk / KEY_BLOCK), 1, parallel);
  } finally {
    dO.dispose();
    rt.heap.release(stats.ptr, stats.size);
    rt.heap.release(delta.ptr, delta.size);
    release(p);
  }
}
