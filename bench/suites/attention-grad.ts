/**
 * Attention backward (dQ, dK, dV from dO) in the three shapes of the forward suite
 * (bench/suites/attention.ts): per-view attention over slices (segment ids), the compressor's
 * 2x2 window attention, and causal grouped-query attention of the LLM.
 *
 * FLOP convention: 10 · D per (q head, query, visible key) triple: the five products of the
 * standard recompute backward, 2·D each: s = q·k, dP = dO·v, dV += P dO, dQ += dS k,
 * dK += dS q. Masked pairs are not counted, nor exps. The WebGPU kernels do more than that:
 * 18 · D (s and dP are computed twice by the dq pass, once more by the dk/dv pass, so the
 * Sq x Sk matrix is never stored); the convention counts only the useful work, as is usual.
 */
import { BENCH_DEVICES, type BenchCase } from '../harness.js';
import * as uhd from '../../tensor/index.js';
import type { Device } from '../../tensor/index.js';
import type { AttentionOptions, Tensor } from '../../tensor/index.js';
import { attentionGrad } from '../../tensor/ops/grad.js';

export const name = 'attention-grad';

/** A [B, H, S, D] view of a random [B, S, H, D] tensor, the layout a projection produces. */
function bhsd(device: Device, B: number, H: number, S: number, D: number): Tensor {
  const base = uhd.randn([B, S, H, D], { device });
  const view = base.permute(0, 2, 1, 3);
  base.dispose();
  return view;
}

/** The timed call: all three gradients are computed; dK and dV are dropped, dQ returned (reading it waits for all). */
function backward(device: Device, B: number, Hq: number, Hkv: number, S: number, D: number, opts: AttentionOptions): () => Tensor {
  const [q, k, v, gOut] = [bhsd(device, B, Hq, S, D), bhsd(device, B, Hkv, S, D), bhsd(device, B, Hkv, S, D), bhsd(device, B, Hq, S, D)];
  return () => {
    const { gq, gk, gv } = attentionGrad(q, k, v, gOut, opts);
    gk.dispose();
    gv.dispose();
    return gq;
  };
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
        flops: 10 * H * S * per * D,
        setup: () => {
          const ids = uhd.tensor(Int32Array.from({ length: S }, (_, i) => Math.floor(i / per)), { shape: [1, S], dtype: 'int32', device });
          return backward(device, 1, H, H, S, D, { segmentIds: ids });
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
        flops: 10 * H * S * 4 * D,
        setup: () => backward(device, 1, H, H, S, D, { window: { h, w } }),
      });
    }
    {
      // (c) causal LLM attention with grouped-query heads.
      const [S, Hq, Hkv, D] = [512, 8, 2, 64];
      out.push({
        name: `causal ${S} tok, GQA ${Hq}q/${Hkv}kv, D ${D}`,
        device,
        flops: 10 * Hq * ((S * (S + 1)) / 2) * D,
        setup: () => backward(device, 1, Hq, Hkv, S, D, { causal: true }),
      });
    }
  }
  return out;
}
