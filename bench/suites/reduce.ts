/**
 * Row-wise kernels, all memory-bound: softmax, the fused norms at model widths (SigLIP 1152,
 * Qwen-style 1024), and sums along a contiguous and along a strided dim. GB/s counts the bytes
 * read plus the bytes written (f32), each element once.
 */
import { BENCH_DEVICES, type BenchCase } from '../harness.js';
import * as uhd from '../../tensor/index.js';

export const name = 'reduce';

export function cases(): BenchCase[] {
  const out: BenchCase[] = [];
  for (const device of BENCH_DEVICES) {
    for (const [rows, d] of [[1024, 1024], [4096, 256]] as const) {
      out.push({
        name: `softmax [${rows},${d}]`,
        device,
        bytes: 8 * rows * d,
        setup: () => {
          const x = uhd.randn([rows, d], { device });
          return () => x.softmax(-1);
        },
      });
    }
    out.push({
      name: 'layerNorm [4096,1152] +w +b',
      device,
      bytes: 8 * 4096 * 1152 + 8 * 1152,
      setup: () => {
        const x = uhd.randn([4096, 1152], { device });
        const w = uhd.randn([1152], { device });
        const b = uhd.randn([1152], { device });
        return () => uhd.layerNorm(x, w, b);
      },
    });
    out.push({
      name: 'rmsNorm [4096,1024] +w',
      device,
      bytes: 8 * 4096 * 1024 + 4 * 1024,
      setup: () => {
        const x = uhd.randn([4096, 1024], { device });
        const w = uhd.randn([1024], { device });
        return () => uhd.rmsNorm(x, w);
      },
    });
    for (const dim of [1, 0]) {
      out.push({
        name: `sum [1024,1024] dim ${dim}`,
        device,
        bytes: 4 * 1024 * 1024 + 4 * 1024,
        setup: () => {
          const x = uhd.randn([1024, 1024], { device });
          return () => x.sum(dim);
        },
      });
    }
  }
  return out;
}
