/**
 * Fused attention in the shapes LLaVA-UHD runs: per-view attention over slices (segment
 * ids), the compressor's 2x2 window attention, and the LLM's causal grouped-query attention,
 * over a whole prompt (prefill) and for one new token against a KV cache (decoding).
 *
 * FLOP convention: 4 · D per (query, visible key) pair, i.e. 2·D for q·k (multiply, add)
 * and 2·D for p·v; masked pairs are not counted (so a masked pair that a kernel skips costs
 * nothing, and one it computes anyway shows as lower throughput). Softmax exps are not counted.
 * Bytes: q, k, v read once and the output written once (f32), the least traffic possible;
 * it is the meaningful figure for the window case, which is memory-bound.
 */
import { BENCH_DEVICES, type BenchCase } from '../harness.js';
import * as uhd from '../../tensor/index.js';
import type { Device } from '../../tensor/index.js';
import type { Tensor } from '../../tensor/index.js';

export const name = 'attention';

/** q, k, v as [B, H, S, D] views of [B, S, H, D] tensors, the layout a projection produces. */
function qkv(device: Device, B: number, Hq: number, Hkv: number, S: number, D: number): [Tensor, Tensor, Tensor] {
  const make = (H: number) => {
    const base = uhd.randn([B, S, H, D], { device });
    const view = base.permute(0, 2, 1, 3);
    base.dispose();
    return view;
  };
  return [make(Hq), make(Hkv), make(Hkv)];
}

export function cases(): BenchCase[] {
  const out: BenchCase[] = [];
  for (const device of BENCH_DEVICES) {
    {
      // (a) 4 views of 256 tokens each in one sequence, attention only within a view.
      const [views, per, H, D] = [4, 256, 4, 64];
      const S = views * per;
      out.push({
        name: `segments ${views}x${per} tok, ${H} heads, D ${D}`,
        device,
        flops: 4 * H * S * per * D,
        bytes: 4 * 4 * H * S * D,
        setup: () => {
          const [q, k, v] = qkv(device, 1, H, H, S, D);
          const ids = uhd.tensor(Int32Array.from({ length: S }, (_, i) => Math.floor(i / per)), { shape: [1, S], dtype: 'int32', device });
          return () => uhd.attention(q, k, v, { segmentIds: ids });
        },
      });
    }
    {
      // (b) the compressor: 2x2 windows over a 32x32 token grid, SigLIP head dim.
      const [h, w, H, D] = [32, 32, 4, 72];
      const S = h * w;
      out.push({
        name: `window 2x2 over ${h}x${w}, ${H} heads, D ${D}`,
        device,
        flops: 4 * H * S * 4 * D,
        bytes: 4 * 4 * H * S * D,
        setup: () => {
          const [q, k, v] = qkv(device, 1, H, H, S, D);
          return () => uhd.attention(q, k, v, { window: { h, w } });
        },
      });
    }
    {
      // (c) causal LLM attention with grouped-query heads.
      const [S, Hq, Hkv, D] = [512, 8, 2, 64];
      out.push({
        name: `causal ${S} tok, GQA ${Hq}q/${Hkv}kv, D ${D}`,
        device,
        flops: 4 * Hq * ((S * (S + 1)) / 2) * D,
        bytes: 4 * (2 * Hq + 2 * Hkv) * S * D,
        setup: () => {
          const [q, k, v] = qkv(device, 1, Hq, Hkv, S, D);
          return () => uhd.attention(q, k, v, { causal: true });
        },
      });
    }
    {
      // (d) decoding: one new token's queries against a cache of 1024 keys.
      const [S, Hq, Hkv, D] = [1024, 8, 2, 64];
      out.push({
        name: `decode 1 tok vs ${S} cached, GQA ${Hq}q/${Hkv}kv, D ${D}`,
        device,
        flops: 4 * Hq * S * D,
        bytes: 4 * (2 * Hq + 2 * Hkv * S) * D,
        setup: () => {
          const [q, k, v] = qkv(device, 1, Hq, Hkv, S, D);
          const last = q.slice(null, null, [S - 1]);
          q.dispose();
          return () => uhd.attention(last, k, v, { causal: true });
        },
      });
    }
  }
  return out;
}
