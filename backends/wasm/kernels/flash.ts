/**
 * Blocked attention forward for queries that each see one key range (no mask, causal,
 * segment runs): FlashAttention's tiling on SIMD registers. An item is 6 query rows of one
 * head; keys go by blocks of 64:
 *
 *   1. S = scale · Q Kᵀ (6 x 64) with the matmul's 6x8 register block: the keys packed once per
 *      kv head into panels of 8 (k-major over the head dim), the query rows read in place;
 *   2. per row: mask to its range, the block max, the online-softmax correction
 *      alpha = exp(m_old - m_new), P = exp(S - m_new) (f32x4 exp), l = alpha l + sum P;
 *   3. O = alpha O + P V over column tiles of 8 (6 x 8 accumulators, V rows read in place).
 *
 * O (6 x D) and S (6 x 64) live in the thread's scratch (L1); no score matrix beyond a block.
 * Also the backward's stats pass (m, 1/l and delta = dO · O per row). Windows and segment ids
 * whose keys are not one run keep the row kernel (attention.ts).
 */
import type { Local } from '../emit.js';
import { Func } from '../emit.js';
import { MAX_PAGES } from '../memory.js';
import { exp4, mathTemps } from './simd-math.js';

export const QROWS = 6;
const KB = 64;
/** Scratch layout (bytes): S/P [6][64], alpha [6] (padded to 16), then O [6][D]. */
const S_OFF = 0;
const ALPHA_OFF = QROWS * KB * 4;
const O_OFF = ALPHA_OFF + 32;

/** Argument words. */
export const F = {
  B: 0, Hq: 1, Sq: 2, Sk: 3, group: 4, Hkv: 5,
  q: 6, qb: 7, qh: 8, qs: 9, kp: 10, panels: 11, v: 12, vb: 13, vh: 14, vs: 15,
  out: 16, ranges: 17, scale: 18 /* f32 */, stats: 19, dO: 20, delta: 21,
} as const;

export function flashKernel(D: number, relaxed: boolean, mode: 'forward' | 'stats'): Func {
  if (D % 4) throw new Error(`flash attention: head dim ${D} is not a multiple of 4`);
  const f = new Func(['i32', 'i32', 'i32']);
  const [args, lo, hi] = f.params;
  const p = Object.fromEntries(Object.keys(F).map((k) => [k, f.local(k === 'scale' ? 'f32' : 'i32')])) as Record<keyof typeof F, Local>;
  for (const [name, word] of Object.entries(F)) {
    f.get(args);
    if (name === 'scale') f.f32_load(4 * word);
    else f.i32_load(4 * word);
    f.set(p[name as keyof typeof F]);
  }
  const t = mathTemps(f);
  const SCRATCH = 1; // the thread's scratch pointer: global 1 (after tid)
  const I = () => f.local('i32');
  const [item, blocks, qblk, r0, b, h, kvh, i0, kpBase, vBase, klo, khi, j0, nk, sb, jj, d, pk, l, vrow, pp, c, rr, rp, oRow] = Array.from({ length: 25 }, I);
  const qp = Array.from({ length: QROWS }, I);
  const rlo = Array.from({ length: QROWS }, I);
  const rhi = Array.from({ length: QROWS }, I);
  const m = Array.from({ length: QROWS }, () => f.local('f32'));
  const ls = Array.from({ length: QROWS }, () => f.local('f32'));
  const [bm, mnew, muse, alpha, sum, inv] = Array.from({ length: 6 }, () => f.local('f32'));
  const acc = Array.from({ length: 2 * QROWS }, () => f.local('v128'));
  const [b0, b1, av, x, msk, idx] = Array.from({ length: 6 }, () => f.local('v128'));
  const scr = f.local('i32');

  const madd = (a: Local, load: () => void, other: () => void) => {
    if (relaxed) {
      load();
      other();
      f.get(a).f32x4_relaxed_madd().set(a);
    } else {
      f.get(a);
      load();
      other();
      f.f32x4_mul().f32x4_add().set(a);
    }
  };
  const minI = (a: () => void, bnd: () => void) => {
    a(); bnd(); a(); bnd(); f.i32_lt_s().select();
  };

  f.globalGet(SCRATCH).set(scr);
  f.get(p.Sq).i32(QROWS - 1).i32_add().i32(QROWS).i32_div_u().set(blocks);
  f.for(item, lo, hi, 1, () => {
    // item = (b * Hq + h) * blocks + qblk
    f.get(item).get(blocks).i32_rem_u().set(qblk);
    f.get(item).get(blocks).i32_div_u().set(r0);
    f.get(r0).get(p.Hq).i32_rem_u().set(h);
    f.get(r0).get(p.Hq).i32_div_u().set(b);
    f.get(h).get(p.group).i32_div_u().set(kvh);
    f.get(qblk).i32(QROWS).i32_mul().set(i0);
    // packed keys of (b, kvh), and v's rows
    f.get(p.kp).get(b).get(p.Hkv).i32_mul().get(kvh).i32_add().get(p.panels).i32_mul().i32(8 * D * 4).i32_mul().i32_add().set(kpBase);
    f.get(p.v).get(b).get(p.vb).i32_mul().get(kvh).get(p.vh).i32_mul().i32_add().i32(2).i32_shl().i32_add().set(vBase);
    // rows: pointers (clamped to the last query), ranges, state; the union of the ranges
    f.get(p.Sk).set(klo);
    f.i32(0).set(khi);
    for (let r = 0; r < QROWS; r++) {
      minI(() => void f.get(i0).i32(r).i32_add(), () => void f.get(p.Sq).i32(1).i32_sub());
      f.set(rr);
      f.get(p.q).get(b).get(p.qb).i32_mul().get(h).get(p.qh).i32_mul().i32_add().get(rr).get(p.qs).i32_mul().i32_add().i32(2).i32_shl().i32_add().set(qp[r]);
      f.get(p.ranges).get(b).get(p.Sq).i32_mul().get(rr).i32_add().i32(4).i32_shl().i32_add().set(rp);
      f.get(rp).i32_load(0).set(rlo[r]).get(rp).i32_load(4).set(rhi[r]);
      f.get(rhi[r]).get(rlo[r]).i32_gt_s().if(() => {
        f.get(rlo[r]).get(klo).i32_lt_s().if(() => void f.get(rlo[r]).set(klo));
        f.get(rhi[r]).get(khi).i32_gt_s().if(() => void f.get(rhi[r]).set(khi));
      });
      f.f32(-Infinity).set(m[r]).f32(0).set(ls[r]);
    }
    f.for(c, 0, QROWS * D, 4, () => void f.get(scr).get(c).i32(2).i32_shl().i32_add().f32x4(0).v128_store(O_OFF));
    // key blocks from the panel holding klo
    f.get(klo).i32(-8).i32_and().set(j0);
    f.block((done) => f.loop((nextBlock) => {
      f.get(j0).get(khi).i32_ge_s().brIf(done);
      minI(() => void f.i32(KB), () => void f.get(khi).get(j0).i32_sub());
      f.set(nk);
      // 1. S = scale Q K^T, 8 keys at a time (past nk: -inf)
      f.for(sb, 0, KB / 8, 1, () => {
        f.get(j0).get(sb).i32(8).i32_mul().i32_add().set(jj);
        f.get(jj).get(khi).i32_lt_s().if(() => {
          for (const a of acc) f.f32x4(0).set(a);
          f.get(kpBase).get(jj).i32(D * 4).i32_mul().i32_add().set(pk);
          f.for(d, 0, D, 4, () => {
            for (let u = 0; u < 4; u++) {
              f.get(pk).v128_load(u * 32).set(b0);
              f.get(pk).v128_load(u * 32 + 16).set(b1);
              for (let r = 0; r < QROWS; r++) {
                f.get(qp[r]).get(d).i32(2).i32_shl().i32_add().v128_load32_splat(4 * u).set(av);
                madd(acc[2 * r], () => void f.get(av), () => void f.get(b0));
                madd(acc[2 * r + 1], () => void f.get(av), () => void f.get(b1));
              }
            }
            f.get(pk).i32(4 * 32).i32_add().set(pk);
          });
          for (let r = 0; r < QROWS; r++) {
            for (let k = 0; k < 2; k++) {
              f.get(scr).get(sb).i32(32).i32_mul().i32_add().get(acc[2 * r + k]).get(p.scale).f32x4_splat().f32x4_mul().v128_store(S_OFF + (r * KB) * 4 + 16 * k);
            }
          }
        }, () => {
          for (let r = 0; r < QROWS; r++) for (let k = 0; k < 2; k++) f.get(scr).get(sb).i32(32).i32_mul().i32_add().f32x4(-Infinity).v128_store(S_OFF + (r * KB) * 4 + 16 * k);
        });
      });
      // 2. per row: mask to its range, online softmax, P in place of S
      for (let r = 0; r < QROWS; r++) {
        f.f32x4(-Infinity).set(x);
        f.for(c, 0, KB, 4, () => {
          f.get(j0).get(c).i32_add().i32x4_splat().i32x4(0, 1, 2, 3).i32x4_add().set(idx);
          f.get(idx).get(rlo[r]).i32x4_splat().i32x4_ge_s().get(idx).get(rhi[r]).i32x4_splat().i32x4_lt_s().v128_and().set(msk);
          f.get(scr).get(c).i32(2).i32_shl().i32_add().set(pp);
          f.get(pp).get(pp).v128_load(S_OFF + r * KB * 4).f32x4(-Infinity).get(msk).v128_bitselect().set(av);
          f.get(av).v128_store(S_OFF + r * KB * 4);
          f.get(x).get(av).f32x4_max().set(x);
        });
        f.get(x).get(x).get(x).f32x4_shuffle(2, 3, 0, 1).f32x4_max().set(x);
        f.get(x).get(x).get(x).f32x4_shuffle(1, 0, 3, 2).f32x4_max().f32x4_extract_lane(0).set(bm);
        f.get(m[r]).get(bm).f32_max().set(mnew);
        // a row that has seen no key: m stays -inf, exp(s - 0) of -inf scores is 0
        f.get(mnew).f32(-Infinity).f32_eq().if(() => void f.f32(0).set(muse), () => void f.get(mnew).set(muse));
        f.get(m[r]).get(muse).f32_sub().f32x4_splat().set(x);
        exp4(f, x, t);
        f.f32x4_extract_lane(0).set(alpha);
        f.get(scr).get(alpha).f32_store(ALPHA_OFF + 4 * r);
        f.f32x4(0).set(b1);
        f.for(c, 0, KB, 4, () => {
          f.get(scr).get(c).i32(2).i32_shl().i32_add().set(pp);
          f.get(pp).v128_load(S_OFF + r * KB * 4).get(muse).f32x4_splat().f32x4_sub().set(x);
          exp4(f, x, t);
          f.set(av);
          f.get(pp).get(av).v128_store(S_OFF + r * KB * 4);
          f.get(b1).get(av).f32x4_add().set(b1);
        });
        f.get(b1).get(b1).get(b1).f32x4_shuffle(2, 3, 0, 1).f32x4_add().set(b1);
        f.get(b1).get(b1).get(b1).f32x4_shuffle(1, 0, 3, 2).f32x4_add().f32x4_extract_lane(0).set(sum);
        f.get(ls[r]).get(alpha).f32_mul().get(sum).f32_add().set(ls[r]);
        f.get(mnew).set(m[r]);
      }
      // 3. O = alpha O + P V, column tiles of 8 (and a last one of 4)
      const tile = (c0: number, width: 1 | 2) => {
        for (let r = 0; r < QROWS; r++) for (let k = 0; k < width; k++) f.f32x4(0).set(acc[2 * r + k]);
        f.get(vBase).get(j0).get(p.vs).i32_mul().i32(2).i32_shl().i32_add().set(vrow);
        f.get(scr).set(pp);
        f.for(l, 0, nk, 1, () => {
          f.get(vrow).v128_load(4 * c0).set(b0);
          if (width === 2) f.get(vrow).v128_load(4 * c0 + 16).set(b1);
          for (let r = 0; r < QROWS; r++) {
            f.get(pp).v128_load32_splat(S_OFF + r * KB * 4).set(av);
            madd(acc[2 * r], () => void f.get(av), () => void f.get(b0));
            if (width === 2) madd(acc[2 * r + 1], () => void f.get(av), () => void f.get(b1));
          }
          f.get(vrow).get(p.vs).i32(2).i32_shl().i32_add().set(vrow);
          f.get(pp).i32(4).i32_add().set(pp);
        });
        for (let r = 0; r < QROWS; r++) {
          for (let k = 0; k < width; k++) {
            const off = O_OFF + (r * D + c0) * 4 + 16 * k;
            f.get(scr).get(scr).v128_load(off).get(scr).v128_load32_splat(ALPHA_OFF + 4 * r).f32x4_mul().get(acc[2 * r + k]).f32x4_add().v128_store(off);
          }
        }
      };
      for (let c0 = 0; c0 + 8 <= D; c0 += 8) tile(c0, 2);
      if (D % 8) tile(D - 4, 1);
      f.get(j0).i32(KB).i32_add().set(j0).br(nextBlock);
    }));
    // the rows: O / l (0 where no key was seen)
    for (let r = 0; r < QROWS; r++) {
      f.get(i0).i32(r).i32_add().get(p.Sq).i32_lt_s().if(() => {
        f.get(ls[r]).f32(0).f32_gt().if(() => void f.f32(1).get(ls[r]).f32_div().set(inv), () => void f.f32(0).set(inv).f32(0).set(m[r]));
        // row item = (b * Hq + h) * Sq + i0 + r
        f.get(b).get(p.Hq).i32_mul().get(h).i32_add().get(p.Sq).i32_mul().get(i0).i32_add().i32(r).i32_add().set(rr);
        if (mode === 'forward') {
          f.get(p.out).get(rr).i32(D * 4).i32_mul().i32_add().set(oRow);
          for (let c0 = 0; c0 < D; c0 += 4) f.get(oRow).get(scr).v128_load(O_OFF + (r * D + c0) * 4).get(inv).f32x4_splat().f32x4_mul().v128_store(4 * c0);
        } else {
          f.get(p.stats).get(rr).i32(3).i32_shl().i32_add().set(oRow);
          f.get(oRow).get(m[r]).f32_store(0).get(oRow).get(inv).f32_store(4);
          f.get(p.dO).get(rr).i32(D * 4).i32_mul().i32_add().set(oRow);
          f.f32x4(0).set(x);
          for (let c0 = 0; c0 < D; c0 += 4) madd(x, () => void f.get(oRow).v128_load(4 * c0), () => void f.get(scr).v128_load(O_OFF + (r * D + c0) * 4));
          f.get(x).get(x).get(x).f32x4_shuffle(2, 3, 0, 1).f32x4_add().set(x);
          f.get(p.delta).get(rr).i32(2).i32_shl().i32_add();
          f.get(x).get(x).get(x).f32x4_shuffle(1, 0, 3, 2).f32x4_add().f32x4_extract_lane(0).get(inv).f32_mul();
          f.f32_store();
        }
      });
    }
  });
  return f;
}

export const flashSpec = (f: Func) => ({ funcs: [{ name: 'run', func: f }], maxPages: MAX_PAGES, globals: ['tid', 'scratch'] });
