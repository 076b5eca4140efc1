/**
 * Tensors larger than one storage binding (maxStorageBufferBindingSize: Qwen3-8B's embedding
 * is 1.2 GB in bf16, D's linear_1 at the paper's width 303 MiB in f32, over llvmpipe's 128 MiB)
 * are split into windows by the kernels that see them: matmul / linear with a large weight or
 * long activations, the embedding gather, AdamW (tests/kernels/fused.test.ts). Tested here by
 * lowering the binding limit to a few KiB (`gpuContext().bindingLimit`), against the CPU.
 */
import fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { gpuContext } from '../../kernels/index.js';
import { roundToHalf } from '../../tensor/dtype.js';
import * as uhd from '../../tensor/index.js';
import type { Tensor } from '../../tensor/index.js';
import { expectClose, PROP, useWebGPU, values } from '../support.js';

useWebGPU();

const LIMIT = 4096;
beforeEach(() => {
  gpuContext().bindingLimit = LIMIT;
});
afterEach(() => {
  gpuContext().bindingLimit = null;
});

function pair(shape: number[], seed: number, dtype: 'float32' | 'bfloat16' = 'float32'): { g: Tensor; c: Tensor } {
  const v = Float32Array.from(values(shape.reduce((a, b) => a * b, 1), seed));
  return {
    g: uhd.tensor(v, { shape, dtype, device: 'webgpu' }),
    c: uhd.tensor(dtype === 'float32' ? v : roundToHalf(v, dtype), { shape }),
  };
}

async function counted<T>(f: () => T): Promise<{ result: T; labels: Map<string, number> }> {
  const labels = new Map<string, number>();
  gpuContext().stats.byLabel = labels;
  try {
    return { result: f(), labels };
  } finally {
    gpuContext().stats.byLabel = null;
  }
}

describe('over the binding limit', () => {
  it('linear with a large weight and long activations: blocks of rows and columns, epilogue included', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(3, 130), fc.constantFrom(20, 33), fc.constantFrom(130, 300), fc.constantFrom('float32', 'bfloat16'), fc.integer({ min: 1, max: 1e6 }),
        async (M, K, N, wd, seed) => {
          const x = pair([M, K], seed);
          const w = pair([N, K], seed + 1, wd as 'float32' | 'bfloat16');
          const b = pair([N], seed + 2);
          const r = pair([M, N], seed + 3);
          expect(w.g.storage.bytes).toBeGreaterThan(LIMIT);
          const { result: got, labels } = await counted(() => uhd.linearForward(x.g, w.g, b.g, { activation: 'gelu', residual: r.g, keepPreact: true }));
          const want = uhd.linearForward(x.c, w.c, b.c, { activation: 'gelu', residual: r.c, keepPreact: true });
          expect(labels.get('linear (split)') ?? 0).toBeGreaterThan(1);
          const tol = { atol: 4e-6 * Math.sqrt(K) + 2e-6, rtol: 1e-5 };
          expectClose(await got.out.data(), await want.out.data(), tol, `out ${M}x${K}x${N} ${wd}`);
          expectClose(await got.preact!.data(), await want.preact!.data(), tol, 'preact');
          // plain matmul with the transposed weight
          const y = uhd.matmul(x.g, w.g.transpose());
          const yc = uhd.matmul(x.c, w.c.transpose());
          expectClose(await y.data(), await yc.data(), tol, 'matmul');
          for (const t of [x, w, b, r]) { t.g.dispose(); t.c.dispose(); }
          for (const t of [got.out, got.preact!, want.out, want.preact!, y, yc]) t.dispose();
        },
      ),
      { ...PROP, numRuns: Math.min(PROP.numRuns, 8) },
    );
  }, 300_000);

  it('an embedding gather from a large table, in windows of rows, float32 and bfloat16', async () => {
    for (const dt of ['float32', 'bfloat16'] as const) {
      const table = pair([1000, 8], 9, dt);
      expect(table.g.storage.bytes).toBeGreaterThan(LIMIT);
      const ids = Array.from({ length: 77 }, (_, i) => (i * 7919 + 13) % 1000);
      const { result: got, labels } = await counted(() => uhd.indexSelect(table.g, 0, uhd.tensor(ids, { dtype: 'int32', device: 'webgpu' })));
      const want = uhd.indexSelect(table.c, 0, uhd.tensor(ids, { dtype: 'int32' }));
      expect(labels.get('gather (split)') ?? 0).toBeGreaterThan(1);
      expectClose(await got.data(), await want.data(), { atol: 0, rtol: 0 }, dt);
      for (const t of [table.g, table.c, got, want]) t.dispose();
    }
  });

  it('a kernel that does not split refuses by name, with the limit that was set', () => {
    const x = uhd.tensor(new Float32Array(2000), { device: 'webgpu' });
    expect(() => x.add(x)).toThrow(/add: input\/output 0 needs a storage binding of \d+ bytes, over the binding limit set \(gpuContext\(\)\.bindingLimit\) 4096/);
    x.dispose();
  });
});
