/** CPU references for the fused backward kernels and the AdamW step. */
import type { AdamWHyper, AttentionParams, UnaryOp } from '../backend.js';
import type { Tensor } from '../tensor.js';
import { attentionRows } from './attention.js';
import { rows } from './reduce.js';
import { UNARY_DERIVATIVE } from './math.js';
import { buf, offsets } from './storage.js';

export function unaryGrad(op: UnaryOp, x: Tensor, gy: Tensor, out: Tensor): void {
  const d = UNARY_DERIVATIVE[op];
  const xs = buf(x), gs = buf(gy), o = buf(out);
  const xo = offsets(x), go = offsets(gy);
  for (let i = 0; i < xo.length; i++) o[i] = gs[go[i]] * d(xs[xo[i]]);
}

export function softmaxGrad(y: Tensor, gy: Tensor, log: boolean, out: Tensor): void {
  const ys = buf(y), gs = buf(gy), o = buf(out);
  const { xo: yo, n, D } = rows(y);
  const go = offsets(gy);
  for (let r = 0; r < n; r++) {
    const b = r * D;
    let dot = 0;
    for (let i = 0; i < D; i++) dot += log ? gs[go[b + i]] : gs[go[b + i]] * ys[yo[b + i]];
    for (let i = 0; i < D; i++) {
      const yv = ys[yo[b + i]];
      o[b + i] = log ? gs[go[b + i]] - Math.exp(yv) * dot : yv * (gs[go[b + i]] - dot);
    }
  }
}

/** gx = inv * (g - mean(g) - xhat * mean(g * xhat)) with g = gy * weight. */
export function layerNormGrad(x: Tensor, weight: Tensor | null, gy: Tensor, eps: number, out: Tensor): void {
  const xs = buf(x), gs = buf(gy), o = buf(out);
  const { xo, n, D } = rows(x);
  const go = offsets(gy);
  const ws = weight ? buf(weight) : null;
  const wo = weight ? offsets(weight) : null;
  const g = new Float64Array(D);
  const xhat = new Float64Array(D);
  for (let r = 0; r < n; r++) {
    const b = r * D;
    let mean = 0;
    for (let i = 0; i < D; i++) mean += xs[xo[b + i]];
    mean /= D;
    let v = 0;
    for (let i = 0; i < D; i++) v += (xs[xo[b + i]] - mean) ** 2;
    const inv = 1 / Math.sqrt(v / D + eps);
    let gMean = 0;
    let gxMean = 0;
    for (let i = 0; i < D; i++) {
      xhat[i] = (xs[xo[b + i]] - mean) * inv;
      g[i] = gs[go[b + i]] * (ws && wo ? ws[wo[i]] : 1);
      gMean += g[i];
      gxMean += g[i] * xhat[i];
    }
    gMean /= D;
    gxMean /= D;
    for (let i = 0; i < D; i++) o[b + i] = inv * (g[i] - gMean - xhat[i] * gxMean);
  }
}

/** gx = r * (g - x * r^2 * mean(g * x)) with r = 1/sqrt(mean(x^2) + eps), g = gy * weight. */
export function rmsNormGrad(x: Tensor, weight: Tensor | null, gy: Tensor, eps: number, out: Tensor): void {
  const xs = buf(x), gs = buf(gy), o = buf(out);
  const { xo, n, D } = rows(x);
  const go = offsets(gy);
  const ws = weight ? buf(weight) : null;
  const wo = weight ? offsets(weight) : null;
  for (let r = 0; r < n; r++) {
    const b = r * D;
    let ss = 0;
    for (let i = 0; i < D; i++) ss += xs[xo[b + i]] ** 2;
    const inv = 1 / Math.sqrt(ss / D + eps);
    let dot = 0;
    for (let i = 0; i < D; i++) dot += gs[go[b + i]] * (ws && wo ? ws[wo[i]] : 1) * xs[xo[b + i]];
    dot /= D;
    for (let i = 0; i < D; i++) {
      const g = gs[go[b + i]] * (ws && wo ? ws[wo[i]] : 1);
      o[b + i] = inv * (g - xs[xo[b + i]] * inv * inv * dot);
    }
  }
}

/**
 * Attention backward, recomputing the probabilities row by row:
 * dV += P^T dO; dP = dO V^T; dS = P * (dP - rowsum(dO * O)); dQ = scale dS K; dK += scale dS^T Q.
 */
export function attentionGrad(
  q: Tensor, k: Tensor, v: Tensor, p: AttentionParams, gOut: Tensor, gq: Tensor, gk: Tensor, gv: Tensor,
): void {
  const rows = attentionRows(q, k, v, p);
  const { B, Hq, Sq, Sk, D, group } = rows.shape;
  const { qs, ks, vs, qo, ko, vo } = rows;
  const gos = buf(gOut), goo = offsets(gOut);
  const dq = buf(gq), dk = buf(gk), dv = buf(gv);
  dk.fill(0);
  dv.fill(0);
  const prob = new Float64Array(Sk);
  const o = new Float64Array(D);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < Hq; h++) {
      const kh = Math.floor(h / group);
      for (let i = 0; i < Sq; i++) {
        const qb = rows.qBase(b, h, i);
        const keys = rows.probabilities(b, h, i, prob);
        o.fill(0);
        for (let c = 0; c < keys.length; c++) {
          if (prob[c] === 0) continue;
          const vb = rows.kBase(b, kh, keys[c]);
          for (let d = 0; d < D; d++) o[d] += prob[c] * vs[vo[vb + d]];
        }
        let rowDot = 0; // sum_d dO * O
        for (let d = 0; d < D; d++) rowDot += gos[goo[qb + d]] * o[d];
        for (let d = 0; d < D; d++) dq[qb + d] = 0;
        for (let c = 0; c < keys.length; c++) {
          if (prob[c] === 0) continue;
          const kb = rows.kBase(b, kh, keys[c]);
          let dpj = 0;
          for (let d = 0; d < D; d++) {
            dpj += gos[goo[qb + d]] * vs[vo[kb + d]];
            dv[kb + d] += prob[c] * gos[goo[qb + d]];
          }
          const ds = prob[c] * (dpj - rowDot) * p.scale;
          for (let d = 0; d < D; d++) {
            dq[qb + d] += ds * ks[ko[kb + d]];
            dk[kb + d] += ds * qs[qo[qb + d]];
          }
        }
      }
    }
  }
}

/** Decoupled weight decay, then Adam with bias correction (as torch.optim.AdamW). */
export function adamw(param: Tensor, grad: Tensor, m: Tensor, v: Tensor, h: AdamWHyper): void {
  const ps = buf(param), ms = buf(m), vs = buf(v), gs = buf(grad);
  const go = offsets(grad);
  const c1 = 1 - h.beta1 ** h.step;
  const c2 = 1 - h.beta2 ** h.step;
  for (let i = 0; i < ps.length; i++) {
    const g = gs[go[i]];
    ps[i] *= 1 - h.lr * h.weightDecay;
    ms[i] = h.beta1 * ms[i] + (1 - h.beta1) * g;
    vs[i] = h.beta2 * vs[i] + (1 - h.beta2) * g * g;
    ps[i] -= (h.lr * (ms[i] / c1)) / (Math.sqrt(vs[i] / c2) + h.eps);
  }
}
