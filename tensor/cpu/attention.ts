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
 * What forward and backward share: the inputs' storage offsets and, per query row, the softmax
 * probabilities over its candidate keys (0 where a mask hides the key, all 0 when every key is
 * hidden). Probabilities are computed in float64 from the scaled scores minus their maximum.
 */
export function attentionRows(q: Tensor, k: Tensor, v: Tensor, p: AttentionParams) {
  const [B, Hq, Sq, D] = q.shape;
  const [, Hkv, Sk] = k.shape;
  const group = Hq / Hkv;
  const qs = buf(q), ks = buf(k), vs = buf(v);
  const qo = offsets(q), ko = offsets(k), vo = offsets(v);
  const segQ = p.segmentIdsQ ? buf(p.segmentIdsQ) : null;
  const segK = p.segmentIdsK ? buf(p.segmentIdsK) : null;
  const segQo = p.segmentIdsQ ? offsets(p.segmentIdsQ) : null;
  const segKo = p.segmentIdsK ? offsets(p.segmentIdsK) : null;
  const candidates = keyCandidates(p, B, Sq, Sk);
  const visible = (b: number, i: number, j: number): boolean => {
    if (p.causal && j > i + (Sk - Sq)) return false;
    if (segQ && segK && segQo && segKo && segQ[segQo[b * Sq + i]] !== segK[segKo[b * Sk + j]]) return false;
    return !p.window || windowOf(i, p.window.w) === windowOf(j, p.window.w);
  };
  return {
    shape: { B, Hq, Hkv, Sq, Sk, D, group },
    qs, ks, vs, qo, ko, vo,
    /** Row-major index of q[b, h, i, 0] (also of the output and dq). */
    qBase: (b: number, h: number, i: number) => ((b * Hq + h) * Sq + i) * D,
    /** Row-major index of k[b, kh, j, 0] (also of v, dk, dv). */
    kBase: (b: number, kh: number, j: number) => ((b * Hkv + kh) * Sk + j) * D,
    /** Fills prob[c] for the candidate keys of (b, h, i) and returns those keys. */
    probabilities(b: number, h: number, i: number, prob: Float64Array): Int32Array {
      const keys = candidates(b, i);
      const kh = Math.floor(h / group);
      const qb = ((b * Hq + h) * Sq + i) * D;
      let m = -Infinity;
      for (let c = 0; c < keys.length; c++) {
        const j = keys[c];
        if (!visible(b, i, j)) {
          prob[c] = -Infinity;
          continue;
        }
        const kb = ((b * Hkv + kh) * Sk + j) * D;
        let s = 0;
        for (let d = 0; d < D; d++) s += qs[qo[qb + d]] * ks[ko[kb + d]];
        prob[c] = s * p.scale;
        m = Math.max(m, prob[c]);
      }
      let total = 0;
      for (let c = 0; c < keys.length; c++) {
        prob[c] = m === -Infinity || prob[c] === -Infinity ? 0 : Math.exp(prob[c] - m);
        total += prob[c];
      }
      if (total > 0) for (let c = 0; c < keys.length; c++) prob[c] /= total;
      return keys;
    },
  };
}

/**
 * Reference attention: for each query row, the probabilities of its visible keys and the
 * weighted sum of their values, in float64. A query with no visible key gets zeros.
 */
export function attention(q: Tensor, k: Tensor, v: Tensor, p: AttentionParams, out: Tensor): void {
  const rows = attentionRows(q, k, v, p);
  const { B, Hq, Sq, Sk, D, group } = rows.shape;
  const o = buf(out);
  const prob = new Float64Array(Sk);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < Hq; h++) {
      const kh = Math.floor(h / group);
      for (let i = 0; i < Sq; i++) {
        const qb = rows.qBase(b, h, i);
        const keys = rows.probabilities(b, h, i, prob);
        for (let d = 0; d < D; d++) {
          let acc = 0;
          for (let c = 0; c < keys.length; c++) if (prob[c] !== 0) acc += prob[c] * rows.vs[rows.vo[rows.kBase(b, kh, keys[c]) + d]];
          o[qb + d] = acc;
        }
      }
    }
  }
}
