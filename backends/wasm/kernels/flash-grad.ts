/**
 * Blocked attention backward for single key ranges (flash.ts's cases), by recomputation from
 * the stats pass (m, 1/l and delta = dO·O per query row). Two kernels, each built of the same
 * 6x8 register-block products as flash.ts:
 *
 *   dQ: item = 6 query rows of a head; per block of 64 keys: S = scale Q Kᵀ, dP = dO Vᵀ,
 *       P = exp(S - m) / l (masked 0), dS = scale P (dP - delta), dQ += dS K.
 *   dK, dV: item = 6 keys of a kv head; per query head of its group and block of 64 queries that
 *       can see them: Sᵀ = scale K Qᵀ, dPᵀ = V dOᵀ, Pᵀ and dSᵀ as above (the stats per query
 *       are vector lanes), dV += Pᵀ dO, dK += dSᵀ Q. No two items write one key.
 *
 * K and V (for dQ) or Q and dO (for dK, dV) are packed into panels of 8 rows first; the other
 * operands are read in place. Accumulators of 6 x D live in the thread's scratch.
 */
import type { Local } from '../emit.js';
import { Func } from '../emit.js';
import { exp4, mathTemps } from './simd-math.js';

const R = 6;
const KB = 64;
const SCRATCH = 1;

/** Argument words. */
export const G = {
  B: 0, Hq: 1, Sq: 2, Sk: 3, group: 4, Hkv: 5,
  q: 6, qb: 7, qh: 8, qs: 9, k: 10, kb: 11, kh: 12, ks: 13, v: 14, vb: 15, vh: 16, vs: 17,
  dO: 18, stats: 19, delta: 20, ranges: 21, scale: 22 /* f32 */,
  // packed panels: (dq) of K and V per kv head, (dkv) of Q and dO per query head; panels per matrix
  pa: 23, pb: 24, panels: 25,
  // outputs: dq [B, Hq, Sq, D]; dk, dv [B, Hkv, Sk, D] (dense)
  dq: 26, dk: 27, dv: 28,
} as const;

/** Scratch (bytes): S [6][64], DP [6][64], then accumulators [6][D] (one, or two for dK and dV). */
const S_OFF = 0;
const DP_OFF = R * KB * 4;
const ACC_OFF = 2 * R * KB * 4;

class Emitter {
  readonly f = new Func(['i32', 'i32', 'i32']);
  readonly p: Record<keyof typeof G, Local>;
  readonly scr: Local;
  readonly acc: Local[];
  readonly b0: Local;
  readonly b1: Local;
  readonly av: Local;
  readonly t = mathTemps(this.f);

  constructor(readonly D: number, readonly relaxed: boolean) {
    const f = this.f;
    this.p = Object.fromEntries(Object.keys(G).map((k) => [k, f.local(k === 'scale' ? 'f32' : 'i32')])) as Record<keyof typeof G, Local>;
    for (const [name, word] of Object.entries(G)) {
      f.get(f.params[0]);
      if (name === 'scale') f.f32_load(4 * word);
      else f.i32_load(4 * word);
      f.set(this.p[name as keyof typeof G]);
    }
    this.scr = f.local('i32');
    f.globalGet(SCRATCH).set(this.scr);
    this.acc = Array.from({ length: 2 * R }, () => f.local('v128'));
    [this.b0, this.b1, this.av] = [f.local('v128'), f.local('v128'), f.local('v128')];
  }

  i32(): Local {
    return this.f.local('i32');
  }

  madd(a: Local, x: Local, y: Local): void {
    const f = this.f;
    if (this.relaxed) f.get(x).get(y).get(a).f32x4_relaxed_madd().set(a);
    else f.get(a).get(x).get(y).f32x4_mul().f32x4_add().set(a);
  }

  /**
   * dst[r][c] (scratch, 6 x 64) = scale * rows[r] · panel row c, for the 64 columns from col0
   * (panels of 8 at `panelBase`, column col0 starting at panel col0 / 8); columns at or past
   * `limit` get `pad`.
   */
  product(rows: Local[], panelBase: Local, col0: Local, limit: Local, dst: number, scale: Local, pad: number): void {
    const { f, D, acc, b0, b1, av, scr } = this;
    const [sb, jj, d, pk] = [this.i32(), this.i32(), this.i32(), this.i32()];
    f.for(sb, 0, KB / 8, 1, () => {
      f.get(col0).get(sb).i32(8).i32_mul().i32_add().set(jj);
      f.get(jj).get(limit).i32_lt_s().if(() => {
        for (const a of acc) f.f32x4(0).set(a);
        f.get(panelBase).get(jj).i32(D * 4).i32_mul().i32_add().set(pk);
        f.for(d, 0, D, 4, () => {
          for (let u = 0; u < 4; u++) {
            f.get(pk).v128_load(u * 32).set(b0);
            f.get(pk).v128_load(u * 32 + 16).set(b1);
            for (let r = 0; r < R; r++) {
              f.get(rows[r]).get(d).i32(2).i32_shl().i32_add().v128_load32_splat(4 * u).set(av);
              this.madd(acc[2 * r], av, b0);
              this.madd(acc[2 * r + 1], av, b1);
            }
          }
          f.get(pk).i32(4 * 32).i32_add().set(pk);
        });
        for (let r = 0; r < R; r++) {
          for (let k = 0; k < 2; k++) f.get(scr).get(sb).i32(32).i32_mul().i32_add().get(acc[2 * r + k]).get(scale).f32x4_splat().f32x4_mul().v128_store(dst + r * KB * 4 + 16 * k);
        }
      }, () => {
        for (let r = 0; r < R; r++) for (let k = 0; k < 2; k++) f.get(scr).get(sb).i32(32).i32_mul().i32_add().f32x4(pad).v128_store(dst + r * KB * 4 + 16 * k);
      });
    });
  }

  /** out[r][:] (scratch, 6 x D) += sum over l < n of a[r][l] (scratch, 6 x 64) * row l (rows from `base`, `stride` bytes apart). */
  accumulate(a: number, base: Local, stride: Local, n: Local, out: number): void {
    const { f, D, acc, b0, b1, av, scr } = this;
    const [l, row, pp] = [this.i32(), this.i32(), this.i32()];
    const tile = (c0: number, width: 1 | 2) => {
      for (let r = 0; r < R; r++) for (let k = 0; k < width; k++) f.f32x4(0).set(acc[2 * r + k]);
      f.get(base).set(row);
      f.get(scr).set(pp);
      f.for(l, 0, n, 1, () => {
        f.get(row).v128_load(4 * c0).set(b0);
        if (width === 2) f.get(row).v128_load(4 * c0 + 16).set(b1);
        for (let r = 0; r < R; r++) {
          f.get(pp).v128_load32_splat(a + r * KB * 4).set(av);
          this.madd(acc[2 * r], av, b0);
          if (width === 2) this.madd(acc[2 * r + 1], av, b1);
        }
        f.get(row).get(stride).i32_add().set(row);
        f.get(pp).i32(4).i32_add().set(pp);
      });
      for (let r = 0; r < R; r++) {
        for (let k = 0; k < width; k++) {
          const off = out + (r * D + c0) * 4 + 16 * k;
          f.get(scr).get(scr).v128_load(off).get(acc[2 * r + k]).f32x4_add().v128_store(off);
        }
      }
    };
    for (let c0 = 0; c0 + 8 <= D; c0 += 8) tile(c0, 2);
    if (D % 8) tile(D - 4, 1);
  }

  /** Zeroes `count` floats of scratch at `off`. */
  zero(off: number, count: number): void {
    const { f, scr } = this;
    const c = this.i32();
    f.for(c, 0, count, 4, () => void f.get(scr).get(c).i32(2).i32_shl().i32_add().f32x4(0).v128_store(off));
  }

  /** Writes 6 x D scratch rows at `off` to dense rows of `dst` from row `first` (those below `count`). */
  writeRows(off: number, dst: Local, first: Local, count: Local): void {
    const { f, D, scr } = this;
    const at = this.i32();
    for (let r = 0; r < R; r++) {
      f.i32(r).get(count).i32_lt_s().if(() => {
        f.get(dst).get(first).i32(r).i32_add().i32(D * 4).i32_mul().i32_add().set(at);
        for (let c0 = 0; c0 < D; c0 += 4) f.get(at).get(scr).v128_load(off + (r * D + c0) * 4).v128_store(4 * c0);
      });
    }
  }

  /** Byte address of row `j` of head `head` of a [B, H, S, D] view. */
  rowAddr(base: Local, sb: Local, sh: Local, ss: Local, b: Local, head: Local, j: Local | (() => void)): void {
    const f = this.f;
    f.get(base).get(b).get(sb).i32_mul().get(head).get(sh).i32_mul().i32_add();
    if (typeof j === 'function') j();
    else f.get(j);
    f.get(ss).i32_mul().i32_add().i32(2).i32_shl().i32_add();
  }

  /** min(a, b) of two i32 pushed by the callbacks. */
  min(a: () => void, b: () => void): void {
    a(); b(); a(); b(); this.f.i32_lt_s().select();
  }
}

export function flashDqKernel(D: number, relaxed: boolean): Func {
  const e = new Emitter(D, relaxed);
  const { f, p, t } = e;
  const [, lo, hi] = f.params;
  const [item, blocks, b, h, kvh, i0, rr, rp, klo, khi, j0, nk, c, pp, kpBase, vpBase, rowItem, valid] = Array.from({ length: 18 }, () => e.i32());
  const qRows = Array.from({ length: R }, () => e.i32());
  const dORows = Array.from({ length: R }, () => e.i32());
  const rlo = Array.from({ length: R }, () => e.i32());
  const rhi = Array.from({ length: R }, () => e.i32());
  const m = Array.from({ length: R }, () => f.local('f32'));
  const inv = Array.from({ length: R }, () => f.local('f32'));
  const delta = Array.from({ length: R }, () => f.local('f32'));
  const [x, idx, msk, one] = [f.local('v128'), f.local('v128'), f.local('v128'), f.local('f32')];
  f.f32(1).set(one);
  f.get(p.Sq).i32(R - 1).i32_add().i32(R).i32_div_u().set(blocks);
  f.for(item, lo, hi, 1, () => {
    f.get(item).get(blocks).i32_rem_u().i32(R).i32_mul().set(i0);
    f.get(item).get(blocks).i32_div_u().set(rr);
    f.get(rr).get(p.Hq).i32_rem_u().set(h);
    f.get(rr).get(p.Hq).i32_div_u().set(b);
    f.get(h).get(p.group).i32_div_u().set(kvh);
    f.get(p.Sq).get(i0).i32_sub().set(valid);
    f.get(b).get(p.Hkv).i32_mul().get(kvh).i32_add().get(p.panels).i32_mul().i32(8 * D * 4).i32_mul().set(rr);
    f.get(p.pa).get(rr).i32_add().set(kpBase);
    f.get(p.pb).get(rr).i32_add().set(vpBase);
    f.get(p.Sk).set(klo);
    f.i32(0).set(khi);
    for (let r = 0; r < R; r++) {
      e.min(() => void f.get(i0).i32(r).i32_add(), () => void f.get(p.Sq).i32(1).i32_sub());
      f.set(rr);
      e.rowAddr(p.q, p.qb, p.qh, p.qs, b, h, rr);
      f.set(qRows[r]);
      f.get(b).get(p.Hq).i32_mul().get(h).i32_add().get(p.Sq).i32_mul().get(rr).i32_add().set(rowItem);
      f.get(p.dO).get(rowItem).i32(D * 4).i32_mul().i32_add().set(dORows[r]);
      f.get(p.stats).get(rowItem).i32(3).i32_shl().i32_add().set(pp);
      f.get(pp).f32_load(0).set(m[r]).get(pp).f32_load(4).set(inv[r]);
      f.get(p.delta).get(rowItem).i32(2).i32_shl().i32_add().f32_load().set(delta[r]);
      f.get(p.ranges).get(b).get(p.Sq).i32_mul().get(rr).i32_add().i32(4).i32_shl().i32_add().set(rp);
      f.get(rp).i32_load(0).set(rlo[r]).get(rp).i32_load(4).set(rhi[r]);
      f.get(rhi[r]).get(rlo[r]).i32_gt_s().if(() => {
        f.get(rlo[r]).get(klo).i32_lt_s().if(() => void f.get(rlo[r]).set(klo));
        f.get(rhi[r]).get(khi).i32_gt_s().if(() => void f.get(rhi[r]).set(khi));
      });
    }
    e.zero(ACC_OFF, R * D);
    f.get(klo).i32(-8).i32_and().set(j0);
    f.block((done) => f.loop((next) => {
      f.get(j0).get(khi).i32_ge_s().brIf(done);
      e.min(() => void f.i32(KB), () => void f.get(khi).get(j0).i32_sub());
      f.set(nk);
      e.product(qRows, kpBase, j0, khi, S_OFF, p.scale, -Infinity);
      e.product(dORows, vpBase, j0, khi, DP_OFF, one, 0);
      // dS = scale P (dP - delta), P = exp(S - m) / l masked; dS replaces S
      for (let r = 0; r < R; r++) {
        f.for(c, 0, KB, 4, () => {
          f.get(j0).get(c).i32_add().i32x4_splat().i32x4(0, 1, 2, 3).i32x4_add().set(idx);
          f.get(idx).get(rlo[r]).i32x4_splat().i32x4_ge_s().get(idx).get(rhi[r]).i32x4_splat().i32x4_lt_s().v128_and().set(msk);
          f.get(e.scr).get(c).i32(2).i32_shl().i32_add().set(pp);
          f.get(pp).v128_load(S_OFF + r * KB * 4).get(m[r]).f32x4_splat().f32x4_sub().set(x);
          exp4(f, x, t);
          f.get(inv[r]).f32x4_splat().f32x4_mul().f32x4(0).get(msk).v128_bitselect().set(x);
          f.get(pp).get(pp).v128_load(DP_OFF + r * KB * 4).get(delta[r]).f32x4_splat().f32x4_sub().get(x).f32x4_mul().get(p.scale).f32x4_splat().f32x4_mul().v128_store(S_OFF + r * KB * 4);
        });
      }
      // dQ += dS K (K rows in place)
      e.rowAddr(p.k, p.kb, p.kh, p.ks, b, kvh, j0);
      f.set(rr);
      f.get(p.ks).i32(2).i32_shl().set(rp);
      e.accumulate(S_OFF, rr, rp, nk, ACC_OFF);
      f.get(j0).i32(KB).i32_add().set(j0).br(next);
    }));
    f.get(b).get(p.Hq).i32_mul().get(h).i32_add().get(p.Sq).i32_mul().get(i0).i32_add().set(rowItem);
    e.writeRows(ACC_OFF, p.dq, rowItem, valid);
  });
  return f;
}

export function flashDkvKernel(D: number, relaxed: boolean): Func {
  const e = new Emitter(D, relaxed);
  const { f, p, t } = e;
  const [, lo, hi] = f.params;
  const [item, blocks, b, kvh, h, g, j0, rr, q0, qend, nq, c, pp, qpBase, dopBase, valid, any, qi, rp, a1, b1, stride] = Array.from({ length: 22 }, () => e.i32());
  const kRows = Array.from({ length: R }, () => e.i32());
  const vRows = Array.from({ length: R }, () => e.i32());
  const [x, msk, lov, hiv, mv, iv, dl, r0, r1, r2, r3] = Array.from({ length: 11 }, () => f.local('v128'));
  const one = f.local('f32');
  const dkOff = ACC_OFF;
  const dvOff = ACC_OFF + R * D * 4;
  f.f32(1).set(one);
  f.get(p.Sk).i32(R - 1).i32_add().i32(R).i32_div_u().set(blocks);
  f.for(item, lo, hi, 1, () => {
    f.get(item).get(blocks).i32_rem_u().i32(R).i32_mul().set(j0);
    f.get(item).get(blocks).i32_div_u().set(rr);
    f.get(rr).get(p.Hkv).i32_rem_u().set(kvh);
    f.get(rr).get(p.Hkv).i32_div_u().set(b);
    f.get(p.Sk).get(j0).i32_sub().set(valid);
    for (let r = 0; r < R; r++) {
      e.min(() => void f.get(j0).i32(r).i32_add(), () => void f.get(p.Sk).i32(1).i32_sub());
      f.set(rr);
      e.rowAddr(p.k, p.kb, p.kh, p.ks, b, kvh, rr);
      f.set(kRows[r]);
      e.rowAddr(p.v, p.vb, p.vh, p.vs, b, kvh, rr);
      f.set(vRows[r]);
    }
    e.zero(ACC_OFF, 2 * R * D);
    f.for(g, 0, p.group, 1, () => {
      f.get(kvh).get(p.group).i32_mul().get(g).i32_add().set(h);
      f.get(b).get(p.Hq).i32_mul().get(h).i32_add().get(p.panels).i32_mul().i32(8 * D * 4).i32_mul().set(rr);
      f.get(p.pa).get(rr).i32_add().set(qpBase);
      f.get(p.pb).get(rr).i32_add().set(dopBase);
      f.for(q0, 0, p.Sq, KB, () => {
        e.min(() => void f.i32(KB), () => void f.get(p.Sq).get(q0).i32_sub());
        f.set(nq);
        f.get(q0).get(nq).i32_add().set(qend);
        // does any query of the block see any of these keys?  max(lo, j0) < min(hi, j0 + 6)
        f.i32(0).set(any);
        f.for(qi, q0, qend, 1, () => {
          f.get(p.ranges).get(b).get(p.Sq).i32_mul().get(qi).i32_add().i32(4).i32_shl().i32_add().set(rp);
          f.get(rp).i32_load(0).get(j0).get(rp).i32_load(0).get(j0).i32_gt_s().select().set(a1);
          f.get(rp).i32_load(4).get(j0).i32(R).i32_add().get(rp).i32_load(4).get(j0).i32(R).i32_add().i32_lt_s().select().set(b1);
          f.get(a1).get(b1).i32_lt_s().get(any).i32_or().set(any);
        });
        f.get(any).if(() => {
          // S^T = scale K Q^T, dP^T = V dO^T (6 keys x 64 queries)
          e.product(kRows, qpBase, q0, qend, S_OFF, p.scale, -Infinity);
          e.product(vRows, dopBase, q0, qend, DP_OFF, one, 0);
          // per key row r, 4 queries a vector: mask lo_q <= j_r < hi_q; P^T, dS^T
          f.for(c, 0, KB, 4, () => {
            // ranges of queries q0 + c .. + 3 (clamped to the last query), transposed into lo and hi vectors
            [r0, r1, r2, r3].forEach((rv, l) => {
              e.min(() => void f.get(q0).get(c).i32_add().i32(l).i32_add(), () => void f.get(p.Sq).i32(1).i32_sub());
              f.set(qi);
              f.get(p.ranges).get(b).get(p.Sq).i32_mul().get(qi).i32_add().i32(4).i32_shl().i32_add().v128_load().set(rv);
            });
            f.get(r0).get(r1).f32x4_shuffle(0, 4, 1, 5).set(x);
            f.get(r2).get(r3).f32x4_shuffle(0, 4, 1, 5).set(msk);
            f.get(x).get(msk).f32x4_shuffle(0, 1, 4, 5).set(lov);
            f.get(x).get(msk).f32x4_shuffle(2, 3, 6, 7).set(hiv);
            // queries past nq: an empty range
            f.get(q0).get(c).i32_add().i32x4_splat().i32x4(0, 1, 2, 3).i32x4_add().get(qend).i32x4_splat().i32x4_lt_s().set(msk);
            f.get(hiv).i32x4(0).get(msk).v128_bitselect().set(hiv);
            // stats of the 4 queries (each clamped to the last query; lanes past it are masked)
            for (let l = 0; l < 4; l++) {
              e.min(() => void f.get(q0).get(c).i32_add().i32(l).i32_add(), () => void f.get(p.Sq).i32(1).i32_sub());
              f.set(qi);
              f.get(b).get(p.Hq).i32_mul().get(h).i32_add().get(p.Sq).i32_mul().get(qi).i32_add().set(rp);
              f.get(p.stats).get(rp).i32(3).i32_shl().i32_add().set(pp);
              f.get(mv).get(pp).f32_load(0).f32x4_replace_lane(l).set(mv);
              f.get(iv).get(pp).f32_load(4).f32x4_replace_lane(l).set(iv);
              f.get(dl).get(p.delta).get(rp).i32(2).i32_shl().i32_add().f32_load().f32x4_replace_lane(l).set(dl);
            }
            for (let r = 0; r < R; r++) {
              f.get(j0).i32(r).i32_add().i32x4_splat().set(x);
              f.get(x).get(lov).i32x4_ge_s().get(x).get(hiv).i32x4_lt_s().v128_and().set(msk);
              f.get(e.scr).get(c).i32(2).i32_shl().i32_add().set(pp);
              f.get(pp).v128_load(S_OFF + r * KB * 4).get(mv).f32x4_sub().set(x);
              exp4(f, x, t);
              f.get(iv).f32x4_mul().f32x4(0).get(msk).v128_bitselect().set(x);
              f.get(pp).get(x).v128_store(S_OFF + r * KB * 4);
              f.get(pp).get(pp).v128_load(DP_OFF + r * KB * 4).get(dl).f32x4_sub().get(x).f32x4_mul().get(p.scale).f32x4_splat().f32x4_mul().v128_store(DP_OFF + r * KB * 4);
            }
          });
          // dV += P^T dO, dK += dS^T Q (query rows in place)
          // dO is dense [B, Hq, Sq, D]
          f.get(p.dO).get(b).get(p.Hq).i32_mul().get(h).i32_add().get(p.Sq).i32_mul().get(q0).i32_add().i32(D * 4).i32_mul().i32_add().set(rr);
          f.i32(D * 4).set(stride);
          e.accumulate(S_OFF, rr, stride, nq, dvOff);
          e.rowAddr(p.q, p.qb, p.qh, p.qs, b, h, q0);
          f.set(rr);
          f.get(p.qs).i32(2).i32_shl().set(stride);
          e.accumulate(DP_OFF, rr, stride, nq, dkOff);
        });
      });
    });
    f.get(b).get(p.Hkv).i32_mul().get(kvh).i32_add().get(p.Sk).i32_mul().get(j0).i32_add().set(rr);
    e.writeRows(dkOff, p.dk, rr, valid);
    e.writeRows(dvOff, p.dv, rr, valid);
  });
  return f;
}
