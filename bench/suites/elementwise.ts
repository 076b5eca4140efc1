/** Memory-bound elementwise kernels: GB/s of a unary map, a broadcast add, a strided copy. */
import { BENCH_DEVICES, type BenchCase } from '../harness.js';
import * as uhd from '../../tensor/index.js';

export const name = 'elementwise';

export function cases(): BenchCase[] {
  const out: BenchCase[] = [];
  for (const device of BENCH_DEVICES) {
    for (const n of [1 << 16, 1 << 20]) {
      out.push({
        name: `gelu ${n}`,
        device,
        bytes: 8 * n,
        setup: () => {
          const x = uhd.randn([n], { device });
          return () => x.gelu();
        },
      });
      out.push({
        name: `add [${n / 1024},1024]+[1024]`,
        device,
        bytes: 8 * n,
        setup: () => {
          const a = uhd.randn([n / 1024, 1024], { device });
          const b = uhd.randn([1024], { device });
          return () => a.add(b);
        },
      });
      out.push({
        name: `transpose copy [${n / 1024},1024]`,
        device,
        bytes: 8 * n,
        setup: () => {
          const a = uhd.randn([n / 1024, 1024], { device });
          return () => a.transpose().contiguous();
        },
      });
    }
  }
  return out;
}
