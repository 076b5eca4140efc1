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
 * The keys query i of batch b is checked against (the masks still decide): with a window only
 * the 4 tokens of its window, with segment ids only the keys of its segment, otherwise all Sk.
 * Every other key is masked anyway; skipping them keeps the reference fast on long sequences.
 */
export function keyCandidates(p: AttentionParams, B: number, Sq: number, Sk: number): (b: number, i: number) => Int32Array {
  if (p.window) {
    const w = p.window.w;
    const keys = new Int32Array(4);
    return (_b, i) => {
      const top = (Math.floor(i / w) >> 1) * 2 * w + ((i % w) >> 1) * 2;
      keys.set([top, top + 1, top + w, top + w + 1]);
      return keys;
    };
  }
  const all = Int32Array.from({ length: Sk }, (_, j) => j);
  if (!p.segmentIdsQ || !p.segmentIdsK) return () => all;
  const segQ = buf(p.segmentIdsQ), segK = buf(p.segmentIdsK);
  const segQo = offsets(p.segmentIdsQ), segKo = offsets(p.segmentIdsK);
  const bySegment: Map<number, Int32Array>[] = [];
  for (let b = 0; b < B; b++) {
    const lists = new Map<number, number[]>();
    for (let j = 0; j < Sk; j++) {
      const id = segK[segKo[b * Sk + j]];
      let l = lists.get(id);
      if (!l) lists.set(id, (l = []));
      l.push(j);
    }
    bySegment.push(new Map([...lists].map(([id, l]) => [id, Int32Array.from(l)])));
  }
  const none = new Int32Array(0);
  return (b, i) => bySegment[b].get(segQ[segQo[b * Sq + i]]) ?? none;
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
  const candidates = keyCandidates(p, B, Sq, Sk);
  const scores = new Float64Array(Sk);
  const acc = new Float64Array(D);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < Hq; h++) {
      const kh = Math.floor(h / group);
      for (let i = 0; i < Sq; i++) {
        const qbase = ((b * Hq + h) * Sq + i) * D;
        const keys = candidates(b, i);
        const n = keys.length;
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
