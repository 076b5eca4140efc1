/** Scalar definitions of the nonlinearities: the reference every kernel is checked against. */

const SQRT_2_OVER_PI = Math.sqrt(2 / Math.PI);

/**
 * erf(x) to about 1e-15 in float64: Taylor series near 0, a continued fraction for erfc
 * in the tails. (Math has no erf.)
 */
export function erf(x: number): number {
  const ax = Math.abs(x);
  if (ax < 2.5) {
    // erf(x) = 2/sqrt(pi) * sum_n (-1)^n x^(2n+1) / (n! (2n+1))
    let term = ax;
    let sum = ax;
    const x2 = ax * ax;
    for (let n = 1; n < 80; n++) {
      term *= -x2 / n;
      const add = term / (2 * n + 1);
      sum += add;
      if (Math.abs(add) < 1e-17 * Math.abs(sum)) break;
    }
    return Math.sign(x) * (2 / Math.sqrt(Math.PI)) * sum;
  }
  if (ax > 6) return Math.sign(x);
  // erfc(x) = exp(-x^2)/sqrt(pi) * 1/(x + 1/2/(x + 1/(x + 3/2/(x + ...)))), evaluated bottom-up
  let f = ax;
  for (let n = 60; n >= 1; n--) f = ax + n / 2 / f;
  const erfc = Math.exp(-ax * ax) / Math.sqrt(Math.PI) / f;
  return Math.sign(x) * (1 - erfc);
}

/** GELU, tanh approximation (SigLIP's gelu_pytorch_tanh). */
export function geluTanh(x: number): number {
  return 0.5 * x * (1 + Math.tanh(SQRT_2_OVER_PI * (x + 0.044715 * x * x * x)));
}

/** GELU, exact form x·Φ(x). */
export function geluErf(x: number): number {
  return 0.5 * x * (1 + erf(x / Math.SQRT2));
}

export function sigmoid(x: number): number {
  return x >= 0 ? 1 / (1 + Math.exp(-x)) : Math.exp(x) / (1 + Math.exp(x));
}

export function silu(x: number): number {
  return x * sigmoid(x);
}

/** d/dx of each unary op, as a function of x (the reference for fused backward kernels). */
export const UNARY_DERIVATIVE: Record<string, (x: number) => number> = {
  neg: () => -1,
  abs: (x) => Math.sign(x),
  exp: Math.exp,
  log: (x) => 1 / x,
  sqrt: (x) => 0.5 / Math.sqrt(x),
  rsqrt: (x) => -0.5 / (x * Math.sqrt(x)),
  tanh: (x) => 1 - Math.tanh(x) ** 2,
  sigmoid: (x) => sigmoid(x) * (1 - sigmoid(x)),
  relu: (x) => (x > 0 ? 1 : 0),
  gelu: (x) => {
    const k = SQRT_2_OVER_PI;
    const t = Math.tanh(k * (x + 0.044715 * x * x * x));
    return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * k * (1 + 3 * 0.044715 * x * x);
  },
  geluErf: (x) => 0.5 * (1 + erf(x / Math.SQRT2)) + (x * Math.exp(-0.5 * x * x)) / Math.sqrt(2 * Math.PI),
  silu: (x) => {
    const s = sigmoid(x);
    return s + x * s * (1 - s);
  },
};
