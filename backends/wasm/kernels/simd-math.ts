/**
 * Transcendental functions on f32x4, emitted inline: wasm has none. Each takes its argument
 * from a v128 local and leaves the result on the stack. Accuracy is checked against the CPU
 * reference (Math.*, float64) by the kernels' property tests.
 *
 * exp: Cephes' expf. x = n ln2 + r with n = nearest(x log2 e), |r| <= ln2/2; e^r by a degree-6
 * polynomial; 2^n built in the exponent bits. x below -87.3 gives 0 (so -inf, a masked score,
 * gives 0), above 88.7 gives +inf, NaN stays NaN.
 */
import type { Func, Local } from '../emit.js';

const LOG2E = 1.44269504088896341;
const LN2_HI = 0.693359375;
const LN2_LO = -2.12194440e-4;
const EXP_P = [1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1];

/** Temporaries the functions need (allocate once per kernel). */
export interface MathTemps {
  t0: Local;
  t1: Local;
  t2: Local;
}

export function mathTemps(f: Func): MathTemps {
  return { t0: f.local('v128'), t1: f.local('v128'), t2: f.local('v128') };
}

/** Horner's rule: p(r) = c[0] r^(n-1) + ... + c[n-1], r in a local; leaves p on the stack. */
function horner(f: Func, r: Local, c: readonly number[]): void {
  f.f32x4(c[0]);
  for (let i = 1; i < c.length; i++) f.get(r).f32x4_mul().f32x4(c[i]).f32x4_add();
}

/** e^x for each lane of `x` (not modified). */
export function exp4(f: Func, x: Local, t: MathTemps): void {
  const { t0: n, t1: r, t2: y } = t;
  // n = nearest(clamp(x) * log2e)
  f.get(x).f32x4(-87.33654).f32x4_max().f32x4(88.72284).f32x4_min().set(r);
  f.get(r).f32x4(LOG2E).f32x4_mul().f32x4_nearest().set(n);
  // r = x - n ln2 (in two parts for accuracy)
  f.get(r).get(n).f32x4(LN2_HI).f32x4_mul().f32x4_sub().get(n).f32x4(LN2_LO).f32x4_mul().f32x4_sub().set(r);
  // y = 1 + r + r^2 p(r)
  horner(f, r, EXP_P);
  f.get(r).f32x4_mul().get(r).f32x4_mul().get(r).f32x4_add().f32x4(1).f32x4_add().set(y);
  // * 2^n via the exponent bits; n in [-126, 128]: split as 2^(n/2) twice keeps the bits valid
  f.get(n).i32x4_trunc_sat_f32x4_s().set(n);
  f.get(y);
  f.get(n).i32x4(1).v128_and().get(n).i32x4_add().i32(1).i32x4_shr_s().set(r); // ceil-ish half: (n + (n & 1)) >> 1
  f.get(r).i32x4(127).i32x4_add().i32(23).i32x4_shl().f32x4_mul();
  f.get(n).get(r).i32x4_sub().i32x4(127).i32x4_add().i32(23).i32x4_shl().f32x4_mul().set(y);
  // underflow to 0 (and -inf), overflow to +inf; NaN passes through y
  f.f32x4(0).get(y).get(x).f32x4(-87.33654).f32x4_lt().v128_bitselect().set(y);
  f.f32x4(Infinity).get(y).get(x).f32x4(88.72284).f32x4_gt().v128_bitselect();
}

const SQRTHF = 0.707106781186547524;
const LOG_P = [7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1, 1.4249322787e-1, -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1, 3.3333331174e-1];

/**
 * ln x for each lane (Cephes' logf): x = 2^e m with m in [sqrt(1/2), sqrt(2)), ln m by a
 * degree-9 polynomial in m - 1. 0 gives -inf, negatives NaN, +inf +inf. Needs 4 temporaries:
 * t and one more v128 local `u`.
 */
export function log4(f: Func, x: Local, t: MathTemps, u: Local): void {
  const { t0: e, t1: m, t2: z } = t;
  // e = exponent - 126, m = mantissa in [0.5, 1)
  f.get(x).i32(23).i32x4_shr_u().i32x4(126).i32x4_sub().set(e);
  f.get(x).i32x4(0x007fffff).v128_and().i32x4(0x3f000000).v128_or().set(m);
  // m < sqrt(1/2): e -= 1, m = 2m - 1; else m = m - 1
  f.get(m).f32x4(SQRTHF).f32x4_lt().set(u);
  f.get(e).get(u).i32x4_add().set(e); // the mask is -1 where true
  f.get(m).get(m).f32x4(0).get(u).v128_bitselect().f32x4_add().f32x4(1).f32x4_sub().set(m);
  f.get(e).f32x4_convert_i32x4_s().set(e);
  f.get(m).get(m).f32x4_mul().set(z);
  // y = m z P(m) - 2.12194440e-4 e - z/2; ln x = m + y + 0.693359375 e
  horner(f, m, LOG_P);
  f.get(m).f32x4_mul().get(z).f32x4_mul();
  f.get(e).f32x4(-2.12194440e-4).f32x4_mul().f32x4_add();
  f.get(z).f32x4(0.5).f32x4_mul().f32x4_sub();
  f.get(m).f32x4_add().get(e).f32x4(0.693359375).f32x4_mul().f32x4_add().set(u);
  // special values: 0 -> -inf, < 0 or NaN -> NaN, +inf -> +inf
  f.f32x4(-Infinity).get(u).get(x).f32x4(0).f32x4_eq().v128_bitselect().set(u);
  f.get(u).f32x4(NaN).get(x).f32x4(0).f32x4_ge().v128_bitselect().set(u);
  f.get(x).get(u).get(x).f32x4(Infinity).f32x4_eq().v128_bitselect();
}

const TANH_P = [-5.70498872745e-3, 2.06390887954e-2, -5.37397155531e-2, 1.33314422036e-1, -3.33332819422e-1];

/** tanh x (Cephes' tanhf): x + x^3 P(x^2) for |x| < 0.625, else sign(x) (1 - t) / (1 + t) with t = e^(-2|x|). Needs `u` and `w` besides t. */
export function tanh4(f: Func, x: Local, t: MathTemps, u: Local, w: Local): void {
  // large: (1 - e) / (1 + e), e = exp(-2|x|), sign restored
  f.get(x).f32x4_abs().f32x4(-2).f32x4_mul().set(w);
  exp4(f, w, t);
  f.set(w);
  f.f32x4(1).get(w).f32x4_sub().f32x4(1).get(w).f32x4_add().f32x4_div().set(w);
  f.get(w).get(x).i32x4(0x80000000).v128_and().v128_or().set(w);
  // small: x + x z P(z), z = x^2
  f.get(x).get(x).f32x4_mul().set(u);
  f.f32x4(TANH_P[0]);
  for (let i = 1; i < TANH_P.length; i++) f.get(u).f32x4_mul().f32x4(TANH_P[i]).f32x4_add();
  f.get(u).f32x4_mul().get(x).f32x4_mul().get(x).f32x4_add();
  f.get(w).get(x).f32x4_abs().f32x4(0.625).f32x4_lt().v128_bitselect();
}

/** 1 / (1 + e^-x). Needs `u` besides t. */
export function sigmoid4(f: Func, x: Local, t: MathTemps, u: Local): void {
  f.get(x).f32x4_neg().set(u);
  exp4(f, u, t);
  f.set(u);
  f.f32x4(1).f32x4(1).get(u).f32x4_add().f32x4_div();
}

const ERF_A = [1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592];

/**
 * erf x (Abramowitz and Stegun 7.1.26, |error| < 1.5e-7): 1 - t P(t) e^(-x^2) with
 * t = 1 / (1 + 0.3275911 |x|), sign restored. Needs `u` and `w` besides t.
 */
export function erf4(f: Func, x: Local, t: MathTemps, u: Local, w: Local): void {
  f.get(x).get(x).f32x4_mul().f32x4_neg().set(w);
  exp4(f, w, t);
  f.set(w);
  f.f32x4(1).f32x4(1).get(x).f32x4_abs().f32x4(0.3275911).f32x4_mul().f32x4_add().f32x4_div().set(u);
  f.f32x4(ERF_A[0]);
  for (let i = 1; i < ERF_A.length; i++) f.get(u).f32x4_mul().f32x4(ERF_A[i]).f32x4_add();
  f.get(u).f32x4_mul().get(w).f32x4_mul().set(w);
  f.f32x4(1).get(w).f32x4_sub().get(x).i32x4(0x80000000).v128_and().v128_or();
}
