/** Fused scaled-dot-product attention with the masks LLaVA-UHD needs. */
import type { AttentionParams, Backend } from '../backend.js';
import { fmt } from '../shape.js';
import type { Tensor } from '../tensor.js';
import { backendFor, empty, requireDtype, requireRank, requireSameDtype } from './common.js';

export interface AttentionOptions {
  /** Defaults to 1/sqrt(head dim). */
  scale?: number;
  /** Query i sees key j only when j <= i + (Sk - Sq) (so decoding with a KV cache works). */
  causal?: boolean;
  /**
   * int32 [B, S]: a token attends only to tokens with the same id (per-view attention for
   * slice-based encoding). Pass {q, k} when queries and keys differ in length.
   */
  segmentIds?: Tensor | { q: Tensor; k: Tensor };
  /** The sequence is an h x w token grid; each token attends only within its 2x2 window. */
  window?: { h: number; w: number };
}

/**
 * q: [B, Hq, Sq, D], k and v: [B, Hkv, Sk, D] -> [B, Hq, Sq, D].
 * Grouped-query: Hq must be a multiple of Hkv; q head h uses kv head floor(h / (Hq/Hkv)).
 * A query with no visible key (fully masked) gets zeros.
 */
export function attention(q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions = {}): Tensor {
  const { backend, params } = attentionParams('attention', q, k, v, opts);
  const out = empty(q.shape, q.dtype, q.device);
  backend.attention(q, k, v, params, out);
  return out;
}

/** Validates attention inputs (naming `op` in errors) and resolves the options. */
export function attentionParams(op: string, q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions): { backend: Backend; params: AttentionParams } {
  const segQ = opts.segmentIds && 'q' in opts.segmentIds ? opts.segmentIds.q : (opts.segmentIds as Tensor | undefined);
  const segK = opts.segmentIds && 'k' in opts.segmentIds ? opts.segmentIds.k : (opts.segmentIds as Tensor | undefined);
  const backend = backendFor(op, q, k, v, segQ, segK);
  requireRank(op, 'q', q, 4);
  requireRank(op, 'k', k, 4);
  requireRank(op, 'v', v, 4);
  requireDtype(op, 'q', q, ['float32', 'float64']);
  requireSameDtype(op, q, k);
  requireSameDtype(op, q, v);
  const [B, Hq, Sq, D] = q.shape;
  const [Bk, Hkv, Sk, Dk] = k.shape;
  const shapes = `q ${fmt(q.shape)}, k ${fmt(k.shape)}, v ${fmt(v.shape)}`;
  if (Bk !== B || Dk !== D || v.shape.some((s, i) => s !== k.shape[i])) {
    throw new Error(`${op}: q, k, v shapes disagree: ${shapes}`);
  }
  if (Hkv === 0 || Hq % Hkv !== 0) {
    throw new Error(`${op}: q heads (${Hq}) must be a multiple of kv heads (${Hkv}): ${shapes}`);
  }
  for (const [name, seg, S] of [['segmentIds.q', segQ, Sq], ['segmentIds.k', segK, Sk]] as const) {
    if (!seg) continue;
    requireDtype(op, name, seg, ['int32']);
    if (seg.rank !== 2 || seg.shape[0] !== B || seg.shape[1] !== S) {
      throw new Error(`${op}: ${name} must be [${B}, ${S}], got ${fmt(seg.shape)}`);
    }
  }
  if (opts.window) {
    const { h, w } = opts.window;
    if (!Number.isInteger(h) || !Number.isInteger(w) || h % 2 || w % 2 || h * w !== Sq || Sq !== Sk) {
      throw new Error(`${op}: window ${h}x${w} needs even h, w with h*w = Sq = Sk (Sq ${Sq}, Sk ${Sk})`);
    }
  }
  const params: AttentionParams = {
    scale: opts.scale ?? 1 / Math.sqrt(D),
    causal: opts.causal ?? false,
    segmentIdsQ: segQ ?? null,
    segmentIdsK: segK ?? null,
    window: opts.window ?? null,
  };
  return { backend, params };
}
