import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as uhd from '../../tensor/index.js';
import { BINARY_OPS, UNARY_OPS, type BinaryOp, type UnaryOp } from '../../tensor/index.js';
import { agree, arbShape, arbView, DEVICE, F32, PROP, useDevice } from '../support.js';

useDevice();

/** Input ranges where each op is defined and well conditioned. */
const RANGE: Partial<Record<UnaryOp | BinaryOp, [number, number]>> = {
  log: [0.05, 4],
  sqrt: [0, 4],
  rsqrt: [0.05, 4],
  exp: [-8, 8],
  pow: [0.1, 3],
  div: [0.5, 3],
};

describe('unary kernels match the CPU reference', () => {
  for (const op of UNARY_OPS) {
    it(`${op} on random shapes and views`, async () => {
      const [lo, hi] = RANGE[op] ?? [-6, 6];
      await fc.assert(
        fc.asyncProperty(arbView(), async (r) => {
          await agree((x) => uhd.unary(op, x), [r], { atol: 2e-6, rtol: 2e-5 }, { lo, hi, label: op });
        }),
        { ...PROP, numRuns: 8 },
      );
    });
  }
});

describe('binary kernels broadcast like NumPy and match the CPU reference', () => {
  for (const op of BINARY_OPS) {
    it(`${op} with broadcasting and views`, async () => {
      const [lo, hi] = RANGE[op] ?? [-3, 3];
      await fc.assert(
        fc.asyncProperty(arbShape(1, 4, 9), fc.integer({ min: 0, max: 15 }), arbView(), arbView(), async (shape, mask, ra, rb) => {
          // b's shape: some of a's dims set to 1 (or dropped when leading)
          const bShape = shape.map((s, i) => ((mask >> i) & 1 ? 1 : s)).slice(mask & 1 ? 1 : 0);
          await agree((a, b) => uhd.binary(op, a, b), [{ ...ra, shape }, { ...rb, shape: bShape }], F32, { lo, hi, label: op });
        }),
        { ...PROP, numRuns: 6 },
      );
    });
  }
  it('int32 arithmetic and comparisons', async () => {
    for (const op of ['add', 'sub', 'mul', 'maximum', 'minimum', 'lt', 'eq'] as const) {
      await agree((a, b) => uhd.binary(op, a, b), [{ shape: [5, 7], kind: 'dense', seed: 3 }, { shape: [7], kind: 'dense', seed: 9 }], F32, { dtype: 'int32', lo: -50, hi: 50 });
    }
  });
});

describe('where, copy, cast, fill', () => {
  it('where selects per element with broadcasting', async () => {
    await fc.assert(
      fc.asyncProperty(arbView(arbShape(1, 3, 11)), async (r) => {
        await agree((x) => uhd.where(x.gt(0), x, x.mul(-2)), [r]);
      }),
      PROP,
    );
  });
  it('contiguous() of any view equals the CPU copy', async () => {
    await fc.assert(
      fc.asyncProperty(arbView(arbShape(1, 5, 13)), async (r) => {
        await agree((x) => x.contiguous(), [r]);
      }),
      PROP,
    );
  });
  it('cast float32 -> int32 truncates toward zero, int32 -> float32 is exact', async () => {
    await agree((x) => x.cast('int32'), [{ shape: [9, 4], kind: 'permuted', seed: 5 }], F32, { lo: -20, hi: 20 });
    await agree((x) => x.cast('float32'), [{ shape: [9, 4], kind: 'sliced', seed: 5 }], F32, { dtype: 'int32', lo: -1e6, hi: 1e6 });
  });
  it('full fills every element, including non-finite values', async () => {
    for (const v of [0, -3.5, Infinity]) {
      const t = uhd.full([3, 70001], v, { device: DEVICE });
      const d = await t.data();
      expect(d.every((x) => x === v)).toBe(true);
      t.dispose();
    }
  });
  it('concat writes each part into a strided slice of the output', async () => {
    await agree((a, b) => uhd.concat([a, b], 1), [{ shape: [4, 3, 5], kind: 'permuted', seed: 1 }, { shape: [4, 6, 5], kind: 'sliced', seed: 2 }]);
    await agree((a, b) => uhd.stack([a, b], 2), [{ shape: [4, 3], kind: 'dense', seed: 1 }, { shape: [4, 3], kind: 'broadcast', seed: 2 }]);
  });
});
