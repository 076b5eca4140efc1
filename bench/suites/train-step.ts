/**
 * Forward + backward timings of the training hot spots on both devices: fused attention,
 * layerNorm, a Qwen3-style transformer block, and an AdamW step over a block's parameters.
 */
import * as ag from '../../autograd/index.js';
import { AdamW, DecoderLayer } from '../../nn/index.js';
import * as uhd from '../../tensor/index.js';
import type { Tensor } from '../../tensor/index.js';
import { BENCH_DEVICES, type BenchCase } from '../harness.js';

export const name = 'train-step';

/** Runs f forward and backward from x; returns x's gradient (the harness reads and frees it). */
function fwdBwd(x: Tensor, f: (x: Tensor) => Tensor): () => Tensor {
  return () => {
    uhd.tidy(() => {
      const y = f(x);
      ag.sum(ag.mul(y, 1e-3)).backward();
      return undefined;
    });
    const g = x.grad!;
    x.grad = null;
    return g;
  };
}

export function cases(): BenchCase[] {
  const out: BenchCase[] = [];
  for (const device of BENCH_DEVICES) {
    const [B, H, S, D] = [1, 4, 256, 64];
    out.push({
      name: `attention fwd+bwd causal [${B},${H},${S},${D}]`,
      device,
      // forward 4·S²·D·H/2 (causal) + backward about 2.5x that
      flops: 3.5 * 4 * H * (S * (S + 1)) / 2 * D,
      setup: () => {
        const q = uhd.randn([B, H, S, D], { device }).requiresGrad_();
        const k = uhd.randn([B, H, S, D], { device });
        const v = uhd.randn([B, H, S, D], { device });
        return fwdBwd(q, (x) => ag.attention(x, k, v, { causal: true }));
      },
    });
    out.push({
      name: 'layerNorm fwd+bwd [2048,1152] +w +b',
      device,
      bytes: 4 * 2048 * 1152 * 5,
      setup: () => {
        const x = uhd.randn([2048, 1152], { device }).requiresGrad_();
        const w = uhd.ones([1152], { device }).requiresGrad_();
        const b = uhd.zeros([1152], { device }).requiresGrad_();
        return fwdBwd(x, (t) => ag.layerNorm(t, w, b, 1e-6));
      },
    });
    const cfg = { vocab_size: 512, hidden_size: 256, intermediate_size: 768, num_hidden_layers: 1, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 64 };
    const tokens = 256;
    const blockMacs = tokens * (256 * 64 * (4 + 2 + 2 + 4) + 3 * 256 * 768) + 2 * 4 * (tokens * tokens) / 2 * 64;
    out.push({
      name: `Qwen3 block fwd+bwd d=256 S=${tokens}`,
      device,
      flops: 3 * 2 * blockMacs,
      setup: () => {
        uhd.manualSeed(0);
        const layer = new DecoderLayer(cfg, { device });
        const x = uhd.randn([1, tokens, 256], { device }).requiresGrad_();
        return fwdBwd(x, (t) => layer.forward(t));
      },
    });
    out.push({
      name: 'AdamW step, Qwen3 block d=256 params',
      device,
      // reads param, grad, m, v and writes param, m, v
      bytes: 4 * 7 * (256 * 64 * 12 + 3 * 256 * 768),
      setup: () => {
        uhd.manualSeed(0);
        const layer = new DecoderLayer(cfg, { device });
        const params = layer.parameters();
        for (const p of params) p.grad = uhd.keep(uhd.randn(p.shape, { device }).mul(1e-3));
        const opt = new AdamW(params, { lr: 1e-3 });
        return () => {
          opt.step();
          return params[0].flatten().narrow(0, 0, 1);
        };
      },
    });
  }
  return out;
}
