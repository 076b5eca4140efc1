/** CPU reference: reductions over trailing dims, softmax, layer/RMS norm. */
import type { ReduceOp } from '../backend.js';
import type { Tensor } from '../tensor.js';
import { buf, offsets } from './storage.js';

/** Reduces the last `reducedRank` dims of x (a view); out is contiguous, one value per row. */
export function reduce(op: ReduceOp, x: Tensor, reducedRank: number, out: Tensor): void {
  const xs = buf(x);
  const o = buf(out);
  const xo = offsets(x);
  const inner = x.shape.slice(x.rank - reducedRank).reduce((a, b) => a * b, 1);
  const rows = out.size;
  for (let r = 0; r < rows; r++) {
    const base = r * inner;
    if (op === 'sum' || op === 'mean') {
      let s = 0;
      for (let i = 0; i < inner; i++) s += xs[xo[base + i]];
      o[r] = op === 'mean' ? s / inner : s;
    } else {
      let best = -Infinity;
      let at = 0;
      for (let i = 0; i < inner; i++) {
        const v = xs[xo[base + i]];
        if (v > best || (Number.isNaN(v) && !Number.isNaN(best))) {
          best = v;
          at = i;
        }
      }
      o[r] = op === 'max' ? best : at;
    }
  }
}

/** Rows of the last dim, each as (offsets, start index) pairs: helper for row-wise kernels. */
export function rows(x: Tensor): { xo: Int32Array; n: number; D: number } {
  const D = x.shape[x.rank - 1] ?? 1;
  const xo = offsets(x);
  return { xo, n: D === 0 ? 0 : xo.length / D, D };
}

export function softmax(x: Tensor, log: boolean, out: Tensor): void {
  const xs = buf(x);
  const o = buf(out);
  const { xo, n, D } = rows(x);
  for (let r = 0; r < n; r++) {
    const base = r * D;
    let m = -Infinity;
    for (let i = 0; i < D; i++) m = Math.max(m, xs[xo[base + i]]);
    let s = 0;
    for (let i = 0; i < D; i++) s += Math.exp(xs[xo[base + i]] - m);
    const logS = Math.log(s);
    for (let i = 0; i < D; i++) {
      const z = xs[xo[base + i]] - m;
      o[base + i] = log ? z - logS : Math.exp(z) / s;
    }
  }
}

export function layerNorm(x: Tensor, weight: Tensor | null, bias: Tensor | null, eps: number, out: Tensor): void {
  const xs = buf(x);
  const o = buf(out);
  const { xo, n, D } = rows(x);
  const wo = weight ? offsets(weight) : null;
  const bo = bias ? offsets(bias) : null;
  const ws = weight ? buf(weight) : null;
  const bs = bias ? buf(bias) : null;
  for (let r = 0; r < n; r++) {
    const base = r * D;
    let mean = 0;
    for (let i = 0; i < D; i++) mean += xs[xo[base + i]];
    mean /= D;
    let v = 0;
    for (let i = 0; i < D; i++) v += (xs[xo[base + i]] - mean) ** 2;
    const inv = 1 / Math.sqrt(v / D + eps);
    for (let i = 0; i < D; i++) {
      let y = (xs[xo[base + i]] - mean) * inv;
      if (ws && wo) y *= ws[wo[i]];
      if (bs && bo) y += bs[bo[i]];
      o[base + i] = y;
    }
  }
}

export function rmsNorm(x: Tensor, weight: Tensor | null, eps: number, out: Tensor): void {
  const xs = buf(x);
  const o = buf(out);
  const { xo, n, D } = rows(x);
  const wo = weight ? offsets(weight) : null;
  const ws = weight ? buf(weight) : null;
  for (let r = 0; r < n; r++) {
    const base = r * D;
    let ss = 0;
    for (let i = 0; i < D; i++) ss += xs[xo[base + i]] ** 2;
    const inv = 1 / Math.sqrt(ss / D + eps);
    for (let i = 0; i < D; i++) {
      let y = xs[xo[base + i]] * inv;
      if (ws && wo) y *= ws[wo[i]];
      o[base + i] = y;
    }
  }
}
