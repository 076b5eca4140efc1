/** CPU reference attention: scores, mask, softmax, weighted sum, one query row at a time. */
import type { AttentionParams } from '../backend.js';
import type { Tensor } from '../tensor.js';
import { buf, offsets } from './storage.js';

/** Which 2x2 window token t of an h x w grid (row-major) falls in. */
export function windowOf(t: number, w: number): number {
  const r = Math.floor(t / w);
  const c = t % w;
  return (r >> 1) * (w >> 1) + (c >> 1);
}

/**
 * Reference attention: for each query row, the scores of its visible keys, a softmax, and the
 * weighted sum of their values, accumulated in float64. A query with no visible key gets zeros.
 */
export function attention(q: Tensor, k: Tensor, v: Tensor, p: AttentionParams, out: Tensor): void {
  const [B, Hq, Sq, D] = q.shape;
  const [, Hkv, Sk] = k.shape;
  const group = Hq / Hkv;
  const qs = buf(q), ks = buf(k), vs = buf(v), o = buf(out);
  const qo = offsets(q), ko = offsets(k), vo = offsets(v);
  const segQ = p.segmentIdsQ ? buf(p.segmentIdsQ) : null;
  const segK = p.segmentIdsK ? buf(p.segmentIdsK) : null;
  const segQo = p.segmentIdsQ ? offsets(p.segmentIdsQ) : null;
  const segKo = p.segmentIdsK ? offsets(p.segmentIdsK) : null;
  // The keys a query is checked against: with a window only the 4 tokens of its window
  // (every other key is masked anyway), otherwise all Sk. The masks below decide.
  const keys = Int32Array.from({ length: Sk }, (_, j) => j);
  const candidates = (i: number): number => {
    if (!p.window) return Sk;
    const w = p.window.w;
    const top = (Math.floor(i / w) >> 1) * 2 * w + ((i % w) >> 1) * 2;
    keys[0] = top;
    keys[1] = top + 1;
    keys[2] = top + w;
    keys[3] = top + w + 1;
    return 4;
  };
  const scores = new Float64Array(Sk);
  const acc = new Float64Array(D);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < Hq; h++) {
      const kh = Math.floor(h / group);
      for (let i = 0; i < Sq; i++) {
        const qbase = ((b * Hq + h) * Sq + i) * D;
        const n = candidates(i);
        let m = -Infinity;
        for (let c = 0; c < n; c++) {
          const j = keys[c];
          let visible = !p.causal || j <= i + (Sk - Sq);
          if (visible && segQ && segK && segQo && segKo) visible = segQ[segQo[b * Sq + i]] === segK[segKo[b * Sk + j]];
          if (visible && p.window) visible = windowOf(i, p.window.w) === windowOf(j, p.window.w);
          if (!visible) {
            scores[c] = -Infinity;
            continue;
          }
          const kbase = ((b * Hkv + kh) * Sk + j) * D;
          let s = 0;
          for (let d = 0; d < D; d++) s += qs[qo[qbase + d]] * ks[ko[kbase + d]];
          scores[c] = s * p.scale;
          m = Math.max(m, scores[c]);
        }
        acc.fill(0);
        let total = 0;
        if (m > -Infinity) {
          for (let c = 0; c < n; c++) {
            if (scores[c] === -Infinity) continue;
            const e = Math.exp(scores[c] - m);
            total += e;
            const vbase = ((b * Hkv + kh) * Sk + keys[c]) * D;
            for (let d = 0; d < D; d++) acc[d] += e * vs[vo[vbase + d]];
          }
        }
        for (let d = 0; d < D; d++) o[qbase + d] = total > 0 ? acc[d] / total : 0;
      }
    }
  }
}
