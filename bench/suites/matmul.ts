/**
 * Compute-bound matmul: GFLOP/s (2·M·N·K per call) of square products, x @ w.T as in a
 * linear layer (b a transposed view, no copy), and a batched product as in attention.
 */
import { BENCH_DEVICES, type BenchCase } from '../harness.js';
import * as uhd from '../../tensor/index.js';

export const name = 'matmul';

export function cases(): BenchCase[] {
  const out: BenchCase[] = [];
  for (const device of BENCH_DEVICES) {
    for (const n of [256, 512, 1024, ...(device === 'wasm' ? [2048] : [])]) {
      out.push({
        name: `${n}x${n}x${n}`,
        device,
        flops: 2 * n ** 3,
        setup: () => {
          const a = uhd.randn([n, n], { device });
          const b = uhd.randn([n, n], { device });
          return () => a.matmul(b);
        },
      });
    }
    // x: [tokens, in] @ w.T with w: [out, in]
    const [tokens, dIn, dOut] = [512, 768, 768];
    out.push({
      name: `x @ w.T ${tokens}x${dOut}x${dIn}`,
      device,
      flops: 2 * tokens * dOut * dIn,
      setup: () => {
        const x = uhd.randn([tokens, dIn], { device });
        const w = uhd.randn([dOut, dIn], { device });
        const wt = w.transpose();
        return () => x.matmul(wt);
      },
    });
    // scores = q @ k.T per head: [batch*heads, seq, headDim] @ [batch*heads, headDim, seq]
    const [bh, seq, hd] = [16, 256, 64];
    out.push({
      name: `batched [${bh},${seq},${hd}] @ [${bh},${hd},${seq}]`,
      device,
      flops: 2 * bh * seq * seq * hd,
      setup: () => {
        const q = uhd.randn([bh, seq, hd], { device });
        const k = uhd.randn([bh, seq, hd], { device });
        const kt = k.transpose();
        return () => q.matmul(kt);
      },
    });
  }
  return out;
}
