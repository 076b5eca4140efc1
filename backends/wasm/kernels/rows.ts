/**
 * Row-wise kernels over the last dim: layerNorm, rmsNorm, softmax and log-softmax, and their
 * backward. Item = one row; each row is read as f32x4 vectors, the last partial vector through
 * lane loads padded with the neutral value of what is being computed (0 for sums, -inf for a
 * max), so every pass is vector code. Sums accumulate in f32 (the CPU reference in float64; the
 * tests bound the difference). Rows must be dense along the last dim and evenly spaced
 * (the front end copies other views once).
 */
import type { Tensor } from '../../../tensor/tensor.js';
import { Func, type Local } from '../emit.js';
import { MAX_PAGES, WasmStorage } from '../memory.js';
import { Args, ARGS_PTR, runtime } from '../runtime.js';
import { exp4, log4, mathTemps, type MathTemps } from './simd-math.js';

const spec = (f: Func) => ({ funcs: [{ name: 'run', func: f }], maxPages: MAX_PAGES, globals: ['tid', 'scratch'] });

/** Argument words: 0 rows, 1 D, 2 x, 3 x row stride, 4 out, 5 weight or 0, 6 bias or 0, 7 eps (f32), 8 gy, 9 gy row stride. */
const W = { rows: 0, D: 1, x: 2, xs: 3, out: 4, w: 5, b: 6, eps: 7, gy: 8, gys: 9 } as const;

type RowOp = 'layerNorm' | 'rmsNorm' | 'softmax' | 'logSoftmax' | 'layerNormGrad' | 'rmsNormGrad' | 'softmaxGrad' | 'logSoftmaxGrad';

class RowEmitter {
  readonly f = new Func(['i32', 'i32', 'i32']);
  readonly p: Record<keyof typeof W, Local>;
  readonly t: MathTemps;
  readonly u: Local;
  readonly D4 = this.f.local('i32');
  readonly rest = this.f.local('i32');
  readonly c = this.f.local('i32');
  readonly off = this.f.local('i32');
  readonly row = this.f.local('i32');
  readonly xRow = this.f.local('i32');
  readonly gRow = this.f.local('i32');
  readonly oRow = this.f.local('i32');
  readonly v = [0, 1, 2, 3].map(() => this.f.local('v128'));

  constructor() {
    const f = this.f;
    this.p = Object.fromEntries(Object.keys(W).map((k) => [k, f.local(k === 'eps' ? 'f32' : 'i32')])) as Record<keyof typeof W, Local>;
    for (const [name, word] of Object.entries(W)) {
      f.get(f.params[0]);
      if (name === 'eps') f.f32_load(4 * word);
      else f.i32_load(4 * word);
      f.set(this.p[name as keyof typeof W]);
    }
    this.t = mathTemps(f);
    this.u = f.local('v128');
    f.get(this.p.D).i32(-4).i32_and().set(this.D4);
    f.get(this.p.D).get(this.D4).i32_sub().set(this.rest);
  }

  /** Loads the vector at element offset `off` (bytes) of row `ptr`: whole, or the tail lanes with `pad`. */
  private load(ptr: Local, tail: boolean, pad: number, into: Local): void {
    const f = this.f;
    if (!tail) {
      f.get(ptr).get(this.off).i32_add().v128_load().set(into);
      return;
    }
    f.f32x4(pad).set(into);
    for (let l = 0; l < 3; l++) {
      f.i32(l).get(this.rest).i32_lt_s().if(() => {
        f.get(into).get(ptr).get(this.off).i32_add().f32_load(4 * l).f32x4_replace_lane(l).set(into);
      });
    }
  }

  /** Stores `value` (a local) at offset `off` of row `ptr`: whole, or only the tail lanes. */
  store(ptr: Local, tail: boolean, value: Local): void {
    const f = this.f;
    if (!tail) {
      f.get(ptr).get(this.off).i32_add().get(value).v128_store();
      return;
    }
    for (let l = 0; l < 3; l++) {
      f.i32(l).get(this.rest).i32_lt_s().if(() => {
        f.get(ptr).get(this.off).i32_add().get(value).f32x4_extract_lane(l).f32_store(4 * l);
      });
    }
  }

  /**
   * One pass over the row: `body(tail)` with this.v[k] holding vector k of each of `rows`
   * (loaded with `pad`); `off` is the byte offset of the vector in the row.
   */
  pass(rows: Local[], pad: number, body: (tail: boolean) => void): void {
    const f = this.f;
    const run = (tail: boolean) => {
      rows.forEach((r, k) => this.load(r, tail, pad, this.v[k]));
      body(tail);
    };
    f.for(this.c, 0, this.D4, 4, () => {
      f.get(this.c).i32(2).i32_shl().set(this.off);
      run(false);
    });
    f.get(this.rest).if(() => {
      f.get(this.D4).i32(2).i32_shl().set(this.off);
      run(true);
    });
  }

  /** Horizontal sum (or max) of a vector local, as an f32 on the stack. */
  reduce(v: Local, op: 'add' | 'max'): void {
    const f = this.f;
    const combine = () => (op === 'add' ? f.f32x4_add() : f.f32x4_max());
    f.get(v).get(v).get(v).f32x4_shuffle(2, 3, 0, 1);
    combine();
    f.set(this.u);
    f.get(this.u).get(this.u).get(this.u).f32x4_shuffle(1, 0, 3, 2);
    combine();
    f.f32x4_extract_lane(0);
  }
}

function rowKernel(op: RowOp, hasW: boolean, hasB: boolean): Func {
  const e = new RowEmitter();
  const { f, p, v, t } = e;
  const [, lo, hi] = f.params;
  const [acc, acc2, y] = [f.local('v128'), f.local('v128'), f.local('v128')];
  // mean is relative to shift (the row's first element, or 0): x - mean is (x - shift) - mean
  const [mean, inv, s1, s2] = [f.local('f32'), f.local('f32'), f.local('f32'), f.local('f32')];
  const wRow = p.w;
  const wAt = f.local('i32');
  const shift = f.local('f32');
  const bRow = p.b;
  /** mean and 1/sqrt(var + eps) of the row (layer norm), or 1/sqrt(mean square + eps) (rms). */
  const stats = (layer: boolean) => {
    if (layer) {
      // shifted by the row's first element: sums of small differences keep f32 precision
      // for rows with a large mean and a small spread
      f.get(e.xRow).f32_load().set(shift);
      f.f32x4(0).set(acc);
      e.pass([e.xRow], 0, (tail) => {
        f.get(v[0]).get(shift).f32x4_splat().f32x4_sub().set(y);
        if (tail) tailMask(y);
        f.get(acc).get(y).f32x4_add().set(acc);
      });
      e.reduce(acc, 'add');
      f.get(p.D).f32_convert_i32_s().f32_div().set(mean);
    } else f.f32(0).set(mean).f32(0).set(shift);
    f.f32x4(0).set(acc);
    e.pass([e.xRow], 0, (tail) => {
      f.get(v[0]).get(shift).f32x4_splat().f32x4_sub().get(mean).f32x4_splat().f32x4_sub().set(y);
      // padded lanes are 0 - mean in layer norm: mask them out of the variance
      if (tail && layer) tailMask(y);
      f.get(acc).get(y).get(y).f32x4_mul().f32x4_add().set(acc);
    });
    e.reduce(acc, 'add');
    f.get(p.D).f32_convert_i32_s().f32_div().get(p.eps).f32_add().f32_sqrt().set(inv);
    f.f32(1).get(inv).f32_div().set(inv);
  };
  /** Zeroes the lanes of `x` past the row's end (in the tail vector). */
  const tailMask = (x: Local) => {
    f.get(x).f32x4(0).get(e.rest).i32x4_splat().i32x4(0, 1, 2, 3).i32x4_gt_s().v128_bitselect().set(x);
  };
  // g = gy (* weight) for vector k of the row, into `into`
  const gTimesW = (into: Local, tail: boolean) => {
    f.get(v[1]).set(into);
    if (hasW) {
      f.get(wRow).get(e.off).i32_add().set(wAt);
      if (tail) {
        f.f32x4(0).set(e.u);
        for (let l = 0; l < 3; l++) f.i32(l).get(e.rest).i32_lt_s().if(() => void f.get(e.u).get(wAt).f32_load(4 * l).f32x4_replace_lane(l).set(e.u));
        f.get(into).get(e.u).f32x4_mul().set(into);
      } else f.get(into).get(wAt).v128_load().f32x4_mul().set(into);
    }
  };
  const wb = (tail: boolean) => {
    // y *= w; y += b (vector k of the weight and bias rows)
    for (const [has, ptr, mul] of [[hasW, wRow, true], [hasB, bRow, false]] as const) {
      if (!has) continue;
      if (tail) {
        f.f32x4(mul ? 1 : 0).set(e.u);
        for (let l = 0; l < 3; l++) f.i32(l).get(e.rest).i32_lt_s().if(() => void f.get(e.u).get(ptr).get(e.off).i32_add().f32_load(4 * l).f32x4_replace_lane(l).set(e.u));
        f.get(y).get(e.u);
      } else f.get(y).get(ptr).get(e.off).i32_add().v128_load();
      if (mul) f.f32x4_mul();
      else f.f32x4_add();
      f.set(y);
    }
  };

  f.for(e.row, lo, hi, 1, () => {
    f.get(p.x).get(e.row).get(p.xs).i32_mul().i32(2).i32_shl().i32_add().set(e.xRow);
    f.get(p.gy).get(e.row).get(p.gys).i32_mul().i32(2).i32_shl().i32_add().set(e.gRow);
    f.get(p.out).get(e.row).get(p.D).i32_mul().i32(2).i32_shl().i32_add().set(e.oRow);
    switch (op) {
      case 'layerNorm':
      case 'rmsNorm':
        stats(op === 'layerNorm');
        e.pass([e.xRow], 0, (tail) => {
          f.get(v[0]).get(shift).f32x4_splat().f32x4_sub().get(mean).f32x4_splat().f32x4_sub().get(inv).f32x4_splat().f32x4_mul().set(y);
          wb(tail);
          e.store(e.oRow, tail, y);
        });
        break;
      case 'softmax':
      case 'logSoftmax': {
        f.f32x4(-Infinity).set(acc);
        e.pass([e.xRow], -Infinity, () => void f.get(acc).get(v[0]).f32x4_max().set(acc));
        e.reduce(acc, 'max');
        f.set(mean);
        // a row of -inf: m = 0 keeps exp(x - m) = 0 and not NaN
        f.get(mean).f32(-Infinity).f32_eq().if(() => void f.f32(0).set(mean));
        f.f32x4(0).set(acc);
        e.pass([e.xRow], -Infinity, (tail) => {
          f.get(v[0]).get(shift).f32x4_splat().f32x4_sub().get(mean).f32x4_splat().f32x4_sub().set(y);
          exp4(f, y, t);
          f.set(acc2);
          f.get(acc).get(acc2).f32x4_add().set(acc);
          if (op === 'softmax') e.store(e.oRow, tail, acc2);
        });
        e.reduce(acc, 'add');
        f.set(s1);
        if (op === 'softmax') {
          f.f32(1).get(s1).f32_div().set(inv);
          e.pass([e.oRow], 0, (tail) => {
            f.get(v[0]).get(inv).f32x4_splat().f32x4_mul().set(y);
            e.store(e.oRow, tail, y);
          });
        } else {
          f.get(s1).f32x4_splat().set(y);
          log4(f, y, t, e.u);
          f.f32x4_extract_lane(0).set(s1);
          // (x - m) - log s: subtracting m first keeps the small differences exact
          e.pass([e.xRow], 0, (tail) => {
            f.get(v[0]).get(mean).f32x4_splat().f32x4_sub().get(s1).f32x4_splat().f32x4_sub().set(y);
            e.store(e.oRow, tail, y);
          });
        }
        break;
      }
      case 'layerNormGrad':
      case 'rmsNormGrad': {
        const layer = op === 'layerNormGrad';
        stats(layer);
        // s1 = sum g, s2 = sum g * xhat (layer) or sum g * x (rms)
        f.f32x4(0).set(acc).f32x4(0).set(acc2);
        e.pass([e.xRow, e.gRow], 0, (tail) => {
          gTimesW(y, tail);
          f.get(acc).get(y).f32x4_add().set(acc);
          f.get(v[0]).get(shift).f32x4_splat().f32x4_sub().get(mean).f32x4_splat().f32x4_sub();
          if (layer) f.get(inv).f32x4_splat().f32x4_mul();
          f.set(e.u);
          if (tail) tailMask(e.u);
          f.get(acc2).get(y).get(e.u).f32x4_mul().f32x4_add().set(acc2);
        });
        e.reduce(acc, 'add');
        f.get(p.D).f32_convert_i32_s().f32_div().set(s1);
        e.reduce(acc2, 'add');
        f.get(p.D).f32_convert_i32_s().f32_div().set(s2);
        e.pass([e.xRow, e.gRow], 0, (tail) => {
          gTimesW(y, tail);
          if (layer) {
            // inv * (g - mean(g) - xhat * mean(g xhat))
            f.get(y).get(s1).f32x4_splat().f32x4_sub();
            f.get(v[0]).get(shift).f32x4_splat().f32x4_sub().get(mean).f32x4_splat().f32x4_sub().get(inv).f32x4_splat().f32x4_mul().get(s2).f32x4_splat().f32x4_mul();
            f.f32x4_sub().get(inv).f32x4_splat().f32x4_mul().set(y);
          } else {
            // inv * (g - x inv^2 mean(g x))
            f.get(y).get(v[0]).get(inv).get(inv).f32_mul().get(s2).f32_mul().f32x4_splat().f32x4_mul().f32x4_sub();
            f.get(inv).f32x4_splat().f32x4_mul().set(y);
          }
          e.store(e.oRow, tail, y);
        });
        break;
      }
      case 'softmaxGrad':
      case 'logSoftmaxGrad': {
        // x holds y (the forward's output), gy the gradient
        const log = op === 'logSoftmaxGrad';
        f.f32x4(0).set(acc);
        e.pass([e.xRow, e.gRow], 0, () => {
          f.get(acc).get(v[1]);
          if (!log) f.get(v[0]).f32x4_mul();
          f.f32x4_add().set(acc);
        });
        e.reduce(acc, 'add');
        f.set(s1);
        e.pass([e.xRow, e.gRow], 0, (tail) => {
          if (log) {
            exp4(f, v[0], t);
            f.get(s1).f32x4_splat().f32x4_mul().set(y);
            f.get(v[1]).get(y).f32x4_sub().set(y);
          } else f.get(v[0]).get(v[1]).get(s1).f32x4_splat().f32x4_sub().f32x4_mul().set(y);
          e.store(e.oRow, tail, y);
        });
        break;
      }
    }
  });
  return f;
}

/** x as rows of its last dim, dense and evenly spaced: the view itself, or a copy. */
function asRows(x: Tensor): { t: Tensor; stride: number } {
  const D = x.shape[x.rank - 1];
  const rows = D === 0 ? 0 : x.size / D;
  if (x.strides[x.rank - 1] === 1 || D === 1) {
    // the leading dims must collapse into one stride
    let stride = -1;
    let expected = -1;
    let ok = true;
    for (let d = x.rank - 2; d >= 0; d--) {
      if (x.shape[d] === 1) continue;
      if (stride < 0) {
        stride = x.strides[d];
        expected = stride * x.shape[d];
      } else if (x.strides[d] !== expected) ok = false;
      else expected *= x.shape[d];
    }
    if (ok && (stride >= D || rows <= 1)) return { t: x.asStrided(x.shape, x.strides, x.offset), stride: stride < 0 ? D : stride };
  }
  return { t: x.contiguous(), stride: D };
}

const ptrOf = (t: Tensor): number => (t.storage as WasmStorage).ptr + 4 * t.offset;

/** Runs a row kernel: x (and gy) as rows, out contiguous, weight and bias contiguous [D] or null. */
export function rowOp(op: RowOp, x: Tensor, out: Tensor, opts: { weight?: Tensor | null; bias?: Tensor | null; eps?: number; gy?: Tensor } = {}): void {
  const D = x.shape[x.rank - 1] ?? 1;
  if (x.size === 0 || D === 0) return;
  const rt = runtime();
  const held: Tensor[] = [];
  const rows = x.size / D;
  const xr = asRows(x);
  held.push(xr.t);
  const gr = opts.gy ? asRows(opts.gy) : null;
  if (gr) held.push(gr.t);
  const dense = (t: Tensor | null | undefined) => {
    if (!t) return 0;
    const c = t.contiguous();
    held.push(c);
    return ptrOf(c);
  };
  try {
    const w = dense(opts.weight);
    const b = dense(opts.bias);
    new Args(rt).i32s(0, [rows, D, ptrOf(xr.t), xr.stride, ptrOf(out), w, b, 0, gr ? ptrOf(gr.t) : 0, gr?.stride ?? 0]).f32(W.eps, opts.eps ?? 0);
    const k = rt.pool.kernel(`rows.${op}.${w ? 'w' : ''}${b ? 'b' : ''}`, () => spec(rowKernel(op, w !== 0, b !== 0)));
    const chunk = Math.max(1, Math.floor(16384 / D));
    rt.pool.run(k, ARGS_PTR, rows, chunk, rows * D >= 1 << 15);
  } finally {
    for (const t of held) t.dispose();
  }
}
