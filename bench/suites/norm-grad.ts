/**
 * The fused backward kernels of the row ops, at the forward suite's sizes (SigLIP width 1152,
 * Qwen-style 1024): gx from (x or y) and gy. All memory-bound; GB/s counts the bytes read plus
 * the bytes written (f32), each element once: x (or y), gy and gx, plus the weight.
 */
import { BENCH_DEVICES, type BenchCase } from '../harness.js';
import * as uhd from '../../tensor/index.js';

export const name = 'norm-grad';

export function cases(): BenchCase[] {
  const out: BenchCase[] = [];
  for (const device of BENCH_DEVICES) {
    out.push({
      name: 'layerNormGrad [4096,1152] +w',
      device,
      bytes: 12 * 4096 * 1152 + 4 * 1152,
      setup: () => {
        const x = uhd.randn([4096, 1152], { device });
        const w = uhd.randn([1152], { device });
        const gy = uhd.randn([4096, 1152], { device });
        return () => uhd.layerNormGrad(x, w, gy, 1e-5);
      },
    });
    out.push({
      name: 'rmsNormGrad [4096,1024] +w',
      device,
      bytes: 12 * 4096 * 1024 + 4 * 1024,
      setup: () => {
        const x = uhd.randn([4096, 1024], { device });
        const w = uhd.randn([1024], { device });
        const gy = uhd.randn([4096, 1024], { device });
        return () => uhd.rmsNormGrad(x, w, gy, 1e-6);
      },
    });
    out.push({
      name: 'softmaxGrad [1024,1024]',
      device,
      bytes: 12 * 1024 * 1024,
      setup: () => {
        const y = uhd.tidy(() => uhd.randn([1024, 1024], { device }).softmax(-1));
        const gy = uhd.randn([1024, 1024], { device });
        return () => uhd.softmaxGrad(y, gy, -1, false);
      },
    });
  }
  return out;
}
