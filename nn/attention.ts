/**
 * Multi-head attention as the two towers use it: SigLIP's (biases, per-view segment ids or
 * 2x2 windows) and Qwen3's (grouped-query kv heads, RMSNorm on q and k per head, rotary
 * position embedding, causal, a KV cache for incremental decoding).
 */
import * as ag from '../autograd/index.js';
import { fmt } from '../tensor/shape.js';
import { indexSelect, keep, tensor, type Device, type DType, type Tensor } from '../tensor/index.js';
import type { InitOptions } from './init.js';
import { Linear, RMSNorm } from './layers.js';
import { Module } from './module.js';

export interface AttentionConfig extends InitOptions {
  dim: number;
  heads: number;
  /** Fewer kv heads than q heads: grouped-query attention (default: heads). */
  kvHeads?: number;
  /** Default dim / heads (Qwen3 may differ: 16 heads x 128 for hidden 1024). */
  headDim?: number;
  /** Biases on the projections (SigLIP: yes; Qwen3: no). */
  bias?: boolean;
  /** RMSNorm on q and k per head after projection, before RoPE (Qwen3). */
  qkNorm?: boolean;
  normEps?: number;
  /** Rotary embedding base (Qwen3: 1e6); none when omitted. */
  ropeTheta?: number;
  /** Name of the output projection: SigLIP 'out_proj', Qwen3 'o_proj'. */
  outName?: 'out_proj' | 'o_proj';
}

/**
 * Past keys and values of one layer: [B, Hkv, S_past, headDim].
 *
 * Several sequences decoded together (batched generation) are left-padded to one length; then
 * `padding[b]` says how many leading positions of row b are padding. Attention through this
 * cache hides them, and row b's rotary positions start after them, so each row computes what it
 * would alone. `select` reorders rows (beam search) and drops finished ones.
 */
export class KVCache {
  k: Tensor | null = null;
  v: Tensor | null = null;
  /** Leading padded positions per row; null: none (one sequence, or rows of equal length). */
  padding: number[] | null = null;
  get length(): number {
    return this.k?.shape[2] ?? 0;
  }
  /** Appends new keys/values and returns the full ones (owned by the cache). */
  append(k: Tensor, v: Tensor): [Tensor, Tensor] {
    if (this.padding && this.padding.length !== k.shape[0]) {
      throw new Error(`KVCache: padding is given for ${this.padding.length} rows but the keys have ${k.shape[0]}`);
    }
    const nk = this.k ? ag.concat([this.k, k], 2) : ag.contiguous(k);
    const nv = this.v ? ag.concat([this.v, v], 2) : ag.contiguous(v);
    this.k?.dispose();
    this.v?.dispose();
    this.k = keep(nk);
    this.v = keep(nv);
    return [this.k, this.v];
  }
  /** Keeps rows `rows` in that order: a row may repeat (beams sharing a prefix) or go (finished). */
  select(rows: readonly number[]): void {
    const B = this.k?.shape[0] ?? this.padding?.length ?? 0;
    for (const r of rows) {
      if (!(Number.isInteger(r) && r >= 0 && r < B)) throw new Error(`KVCache.select: row ${r} is not one of the ${B} rows`);
    }
    if (this.padding) this.padding = rows.map((r) => this.padding![r]);
    if (!this.k || !this.v || (rows.length === B && rows.every((r, i) => r === i))) return;
    const index = tensor(Int32Array.from(rows), { dtype: 'int32', device: this.k.device });
    const nk = keep(indexSelect(this.k, 0, index));
    const nv = keep(indexSelect(this.v, 0, index));
    index.dispose();
    this.k.dispose();
    this.v.dispose();
    this.k = nk;
    this.v = nv;
  }
  /** int32 [B, n]: 0 at padded positions start..start+n-1 of each row, 1 elsewhere (segment ids). */
  paddingSegments(start: number, n: number, device: Device): Tensor {
    const pad = this.padding ?? [];
    const ids = new Int32Array(pad.length * n);
    pad.forEach((p, b) => {
      for (let i = 0; i < n; i++) ids[b * n + i] = start + i < p ? 0 : 1;
    });
    return tensor(ids, { shape: [pad.length, n], dtype: 'int32', device });
  }
  dispose(): void {
    this.k?.dispose();
    this.v?.dispose();
    this.k = this.v = null;
  }
}

export interface AttentionCall {
  segmentIds?: Tensor;
  window?: { h: number; w: number };
  causal?: boolean;
  /** Position of the first token (for RoPE); defaults to the cache length. */
  start?: number;
  cache?: KVCache;
  /** Added to the output (a block's skip connection), fused into the output projection. */
  residual?: Tensor;
}

/**
 * cos and sin tables [S, headDim] for rotate-half RoPE at positions start..start+S-1; with one
 * start per row, [B, 1, S, headDim] (rows of a padded batch start at different positions).
 */
export function ropeTables(start: number | readonly number[], S: number, headDim: number, theta: number, device: Device, dtype: DType = 'float32'): [Tensor, Tensor] {
  const starts = typeof start === 'number' ? [start] : start;
  const [cos, sin] = ropeHost(starts, S, headDim, theta);
  const shape = typeof start === 'number' ? [S, headDim] : [starts.length, 1, S, headDim];
  return [tensor(cos, { shape, device, dtype }), tensor(sin, { shape, device, dtype })];
}

/** Host cos/sin tables by (starts, S, headDim, theta): training steps repeat the same positions. */
const ropeCache = new Map<string, [Float64Array, Float64Array]>();
const ROPE_CACHE_MAX = 64;

function ropeHost(starts: readonly number[], S: number, headDim: number, theta: number): [Float64Array, Float64Array] {
  const key = `${starts.join(',')}|${S}|${headDim}|${theta}`;
  const hit = ropeCache.get(key);
  if (hit) return hit;
  const half = headDim / 2;
  const cos = new Float64Array(starts.length * S * headDim);
  const sin = new Float64Array(starts.length * S * headDim);
  const invFreq = new Float64Array(half);
  for (let i = 0; i < half; i++) invFreq[i] = theta ** (-(2 * i) / headDim);
  starts.forEach((s0, b) => {
    for (let p = 0; p < S; p++) {
      const row = (b * S + p) * headDim;
      for (let i = 0; i < half; i++) {
        const angle = (s0 + p) * invFreq[i];
        cos[row + i] = cos[row + i + half] = Math.cos(angle);
        sin[row + i] = sin[row + i + half] = Math.sin(angle);
      }
    }
  });
  if (ropeCache.size >= ROPE_CACHE_MAX) ropeCache.clear();
  ropeCache.set(key, [cos, sin]);
  return [cos, sin];
}

/** x * cos + rotateHalf(x) * sin, rotateHalf(x) = [-x2, x1]; x: [B, H, S, hd]. */
export function applyRope(x: Tensor, cos: Tensor, sin: Tensor): Tensor {
  const hd = x.shape[3];
  const x1 = ag.narrow(x, 3, 0, hd / 2);
  const x2 = ag.narrow(x, 3, hd / 2, hd / 2);
  const rotated = ag.concat([ag.neg(x2), x1], 3);
  return ag.add(ag.mul(x, cos), ag.mul(rotated, sin));
}

export class MultiHeadAttention extends Module {
  readonly heads: number;
  readonly kvHeads: number;
  readonly headDim: number;
  q_proj: Linear;
  k_proj: Linear;
  v_proj: Linear;
  out: Linear;
  q_norm: RMSNorm | null = null;
  k_norm: RMSNorm | null = null;

  constructor(readonly cfg: AttentionConfig) {
    super();
    this.heads = cfg.heads;
    this.kvHeads = cfg.kvHeads ?? cfg.heads;
    this.headDim = cfg.headDim ?? cfg.dim / cfg.heads;
    if (!Number.isInteger(this.headDim) || this.heads % this.kvHeads) {
      throw new Error(`MultiHeadAttention: dim ${cfg.dim}, heads ${cfg.heads}, kvHeads ${this.kvHeads}, headDim ${this.headDim} are inconsistent`);
    }
    const lin = { bias: cfg.bias ?? true, device: cfg.device, dtype: cfg.dtype, empty: cfg.empty, weightDtype: cfg.weightDtype };
    this.q_proj = this.module('q_proj', new Linear(cfg.dim, this.heads * this.headDim, lin));
    this.k_proj = this.module('k_proj', new Linear(cfg.dim, this.kvHeads * this.headDim, lin));
    this.v_proj = this.module('v_proj', new Linear(cfg.dim, this.kvHeads * this.headDim, lin));
    this.out = this.module(cfg.outName ?? 'out_proj', new Linear(this.heads * this.headDim, cfg.dim, lin));
    if (cfg.qkNorm) {
      this.q_norm = this.module('q_norm', new RMSNorm(this.headDim, cfg.normEps ?? 1e-6, cfg));
      this.k_norm = this.module('k_norm', new RMSNorm(this.headDim, cfg.normEps ?? 1e-6, cfg));
    }
  }

  /** [B, S, H*hd] -> [B, H, S, hd], with the per-head norm applied (a view plus the norm). */
  private split(x: Tensor, heads: number, norm: RMSNorm | null): Tensor {
    const [B, S] = x.shape;
    const h = ag.reshape(x, [B, S, heads, this.headDim]);
    return ag.permute(norm ? norm.forward(h) : h, [0, 2, 1, 3]);
  }

  /** x: [B, S, dim] -> [B, S, dim]. */
  forward(x: Tensor, call: AttentionCall = {}): Tensor {
    if (x.rank !== 3 || x.shape[2] !== this.cfg.dim) {
      throw new Error(`MultiHeadAttention: x must be [B, S, ${this.cfg.dim}], got ${fmt(x.shape)}`);
    }
    const [B, S] = x.shape;
    let q = this.split(this.q_proj.forward(x), this.heads, this.q_norm);
    let k = this.split(this.k_proj.forward(x), this.kvHeads, this.k_norm);
    let v = this.split(this.v_proj.forward(x), this.kvHeads, null);
    const past = call.cache?.length ?? 0;
    // a left-padded batch (KVCache.padding): per-row positions, and the padding hidden
    const padding = call.cache?.padding?.some((p) => p > 0) ? call.cache.padding : null;
    if (this.cfg.ropeTheta) {
      const start = call.start ?? (padding ? padding.map((p) => past - p) : past);
      const [cos, sin] = ropeTables(start, S, this.headDim, this.cfg.ropeTheta, x.device, x.dtype);
      q = applyRope(q, cos, sin);
      k = applyRope(k, cos, sin);
      cos.dispose();
      sin.dispose();
    }
    if (call.cache) [k, v] = call.cache.append(k, v);
    let padSegments: { q: Tensor; k: Tensor } | null = null;
    if (padding && call.cache) {
      if (call.segmentIds) throw new Error('MultiHeadAttention: segment ids and a padded KV cache cannot be combined');
      padSegments = { q: call.cache.paddingSegments(past, S, x.device), k: call.cache.paddingSegments(0, past + S, x.device) };
    }
    const o = ag.attention(q, k, v, {
      causal: call.causal,
      segmentIds: padSegments ?? call.segmentIds,
      window: call.window,
    });
    // (kept when recording: the backward pass reads them)
    if (padSegments && !ag.isGradEnabled()) {
      padSegments.q.dispose();
      padSegments.k.dispose();
    }
    const merged = ag.reshape(ag.permute(o, [0, 2, 1, 3]), [B, S, this.heads * this.headDim]);
    return this.out.forward(merged, { residual: call.residual ?? null });
  }
}
