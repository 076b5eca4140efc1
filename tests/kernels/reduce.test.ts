/**
 * Reductions and softmax on WebGPU against the CPU reference (float64 accumulation).
 * Tolerances: sums within atol 1e-3 / rtol 1e-4 (f32 accumulation of up to 40k elements in
 * [-1, 1]), means within atol 1e-5 / rtol 1e-4; max, argmax and int32 results exactly; softmax within atol 1e-5,
 * rtol 1e-4 (F32), log-softmax within atol 2e-5.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as uhd from '../../tensor/index.js';
import type { Device, Tensor } from '../../tensor/index.js';
import { agree, arbShape, arbView, DEVICE, F32, makeView, PROP, useDevice, type Tolerance, type ViewRecipe } from '../support.js';

useDevice();

const SUM_TOL: Tolerance = { atol: 1e-3, rtol: 1e-4 };
const MEAN_TOL: Tolerance = { atol: 1e-5, rtol: 1e-4 };
const EXACT: Tolerance = { atol: 0, rtol: 0 };
const LOG_TOL: Tolerance = { atol: 2e-5, rtol: 1e-5 };

const KINDS = ['dense', 'permuted', 'sliced', 'broadcast'] as const;
const arbKind = fc.constantFrom(...KINDS);
const arbSeed = fc.integer({ min: 1, max: 2 ** 31 - 1 });

/** A view of `shape` with a random layout. */
const viewOf = (shape: fc.Arbitrary<number[]>): fc.Arbitrary<ViewRecipe> =>
  fc.record({ shape, kind: arbKind, seed: arbSeed }) as fc.Arbitrary<ViewRecipe>;

/** Few long rows (longer than any workgroup) and many short rows, as [rows, len]. */
const longRows = fc.tuple(fc.integer({ min: 1, max: 6 }), fc.integer({ min: 1000, max: 5000 })).map(([r, n]) => [r, n]);
const shortRows = fc.tuple(fc.integer({ min: 200, max: 3000 }), fc.integer({ min: 2, max: 16 })).map(([r, n]) => [r, n]);

/** Dims chosen by the bits of `mask` (undefined, meaning all, when none). */
function dimsFrom(mask: number, rank: number): number[] | undefined {
  const dims = [...Array(rank).keys()].filter((d) => (mask >> d) & 1);
  return dims.length ? dims : undefined;
}

type ReduceName = 'sum' | 'mean' | 'max';
const tolFor = (op: ReduceName): Tolerance => (op === 'max' ? EXACT : op === 'mean' ? MEAN_TOL : SUM_TOL);

async function gpuData(t: Tensor): Promise<number[]> {
  const d = Array.from(await t.data());
  t.dispose();
  return d;
}

describe('sum, mean, max match the CPU reference', () => {
  for (const op of ['sum', 'mean', 'max'] as const) {
    it(`${op} over random subsets of dims of random views, with and without keepdim`, async () => {
      await fc.assert(
        fc.asyncProperty(arbView(arbShape(1, 5, 37, 40_000)), fc.nat(31), fc.boolean(), async (r, mask, keepdim) => {
          await agree((x) => x[op](dimsFrom(mask, r.shape.length), keepdim), [r], tolFor(op), { label: `${op} ${mask}` });
        }),
        PROP,
      );
    });
  }

  it('over long rows (1000..5000, longer than a workgroup) along either dim', async () => {
    await fc.assert(
      fc.asyncProperty(viewOf(longRows), fc.constantFrom('sum', 'mean', 'max') as fc.Arbitrary<ReduceName>, fc.nat(1), async (r, op, dim) => {
        await agree((x) => x[op](dim), [r], tolFor(op), { label: `${op} dim ${dim}` });
      }),
      { ...PROP, numRuns: 15 },
    );
  });

  it('over many short rows (2..16), along the short and the long dim', async () => {
    await fc.assert(
      fc.asyncProperty(viewOf(shortRows), fc.constantFrom('sum', 'mean', 'max') as fc.Arbitrary<ReduceName>, fc.nat(1), async (r, op, dim) => {
        await agree((x) => x[op](1 - dim), [r], tolFor(op), { label: `${op} dim ${1 - dim}` });
      }),
      { ...PROP, numRuns: 15 },
    );
  });

  it('on views of rank 6..8 (outer and reduced dims both strided)', async () => {
    await fc.assert(
      fc.asyncProperty(arbView(arbShape(6, 8, 4, 6_000)), fc.nat(255), async (r, mask) => {
        await agree((x) => x.sum(dimsFrom(mask, r.shape.length), true), [r], SUM_TOL);
        await agree((x) => x.max(dimsFrom(mask ^ 0x55, r.shape.length)), [r], EXACT);
        await agree((x) => x.argmax(mask % r.shape.length), [r], EXACT);
        await agree((x) => x.softmax(mask % r.shape.length), [r], F32);
      }),
      { ...PROP, numRuns: 15 },
    );
  });

  it('over a whole large tensor (the split two-stage path), including a strided view', async () => {
    for (const kind of ['dense', 'permuted', 'sliced'] as const) {
      const r: ViewRecipe = { shape: [301, 997], kind, seed: 11 };
      await agree((x) => x.sum(), [r], SUM_TOL);
      await agree((x) => x.mean(), [r], { atol: 1e-6, rtol: 1e-4 });
      await agree((x) => x.max(), [r], EXACT);
      await agree((x) => x.argmax(), [r], EXACT);
    }
    // few rows, each long: split too, partials stay per row
    await agree((x) => x.sum(1), [{ shape: [3, 70_000], kind: 'dense', seed: 4 }], SUM_TOL);
    await agree((x) => x.argmax(0), [{ shape: [70_000, 2], kind: 'dense', seed: 5 }], EXACT);
  });

  it('mean as an average pool: 2x2 windows and the global pool of [B, C, H, W]', async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 9 }), fc.integer({ min: 1, max: 12 }), fc.integer({ min: 1, max: 12 }), arbSeed, async (b, c, h2, w2, seed) => {
        const shape = [b, c, 2 * h2, 2 * w2];
        await agree((x) => uhd.tidy(() => x.reshape(b, c, h2, 2, w2, 2).mean([3, 5])), [{ shape, kind: 'dense', seed }], { atol: 1e-6, rtol: 1e-5 });
        await agree((x) => x.mean([2, 3], true), [{ shape, kind: 'permuted', seed }], { atol: 1e-6, rtol: 1e-5 });
      }),
      { ...PROP, numRuns: 6 },
    );
  });

  it('reducing an empty dim gives 0 for sum and NaN for mean; reducing no dims copies', async () => {
    const x = uhd.zeros([4, 0, 3], { device: DEVICE });
    expect(await gpuData(x.sum(1))).toEqual(new Array(12).fill(0));
    expect((await gpuData(x.mean(1))).every(Number.isNaN)).toBe(true);
    x.dispose();
    await agree((y) => y.sum([]), [{ shape: [5, 3], kind: 'permuted', seed: 2 }], EXACT);
    await agree((y) => y.max(), [{ shape: [], kind: 'dense', seed: 2 }], EXACT);
  });
});

/**
 * Windows x[:, off : off + len] of a dense [rows, width] tensor: with off and width multiples of
 * 4 and len too, rows are read (and softmax rows written) as vec4; otherwise element by element.
 */
const arbWindow = fc
  .record({ rows: fc.integer({ min: 1, max: 40 }), len: fc.integer({ min: 1, max: 1200 }), off: fc.nat(5), pad: fc.nat(5), seed: arbSeed, quad: fc.boolean() })
  .map(({ rows, len, off, pad, seed, quad }) => {
    const l = quad ? 4 * Math.ceil(len / 4) : len;
    const o = quad ? 4 * Math.floor(off / 2) : off;
    const width = quad ? o + l + 4 * Math.floor(pad / 2) : o + l + pad;
    return { base: { shape: [rows, width], kind: 'dense', seed } as ViewRecipe, off: o, len: l };
  });

describe('vec4 rows (contiguous, aligned, a multiple of 4 long) and unaligned ones', () => {
  it('sum, mean, max and softmax over windows of a wider tensor', async () => {
    await fc.assert(
      fc.asyncProperty(arbWindow, async ({ base, off, len }) => {
        const win = (f: (x: Tensor) => Tensor) => (b: Tensor) => uhd.tidy(() => f(b.narrow(1, off, len)));
        await agree(win((x) => x.sum(1)), [base], SUM_TOL);
        await agree(win((x) => x.mean(-1, true)), [base], MEAN_TOL);
        await agree(win((x) => x.max(1)), [base], EXACT);
        await agree(win((x) => x.sum(1)), [base], EXACT, { dtype: 'int32', lo: -100, hi: 100 });
        await agree(win((x) => x.max(1)), [base], EXACT, { dtype: 'int32', lo: -100, hi: 100 });
        await agree(win((x) => x.softmax(1)), [base], F32, { lo: -5, hi: 5 });
        await agree(win((x) => x.logSoftmax(1)), [base], LOG_TOL, { lo: -5, hi: 5 });
      }),
      PROP,
    );
  });

  it('full reductions of rows a multiple of 4 long take the split path with vec4 chunks', async () => {
    await agree((x) => x.sum(), [{ shape: [256, 1000], kind: 'dense', seed: 3 }], SUM_TOL);
    await agree((x) => x.mean(1), [{ shape: [2, 131_072], kind: 'dense', seed: 4 }], MEAN_TOL);
    await agree((x) => x.max(), [{ shape: [256, 1000], kind: 'dense', seed: 5 }], EXACT, { dtype: 'int32', lo: -1e6, hi: 1e6 });
  });
});

describe('argmax returns the first maximum, like the CPU', () => {
  it('over each dim and over the flattened tensor of random views', async () => {
    await fc.assert(
      fc.asyncProperty(arbView(arbShape(1, 4, 37, 40_000)), fc.nat(4), fc.boolean(), async (r, pick, keepdim) => {
        const dim = pick < r.shape.length ? pick : undefined;
        // broadcast views repeat values, so ties are common there
        await agree((x) => x.argmax(dim, keepdim), [r], EXACT, { label: `argmax ${dim}` });
      }),
      PROP,
    );
  });

  it('over long rows and many short rows', async () => {
    await fc.assert(
      fc.asyncProperty(viewOf(fc.oneof(longRows, shortRows)), fc.nat(1), async (r, dim) => {
        await agree((x) => x.argmax(dim), [r], EXACT);
      }),
      { ...PROP, numRuns: 12 },
    );
  });

  it('breaks ties toward the first index on both devices, across lanes and split chunks', async () => {
    const n = 100_000;
    const cases: { data: number[]; shape: number[]; dim?: number; want: number[] }[] = [
      { data: [1, 5, 5, 2, 7, 7, 7, 7, 3, 1, 3, 3], shape: [3, 4], dim: 1, want: [1, 0, 0] },
      { data: [-Infinity, -Infinity, -Infinity, 2, 2, -Infinity], shape: [2, 3], dim: 1, want: [0, 0] },
      { data: [0, 9, 0, 9, 0, 9], shape: [3, 2], dim: 0, want: [0, 0] },
      { data: Array.from({ length: 3000 }, (_, i) => (i === 1234 || i === 2999 || i === 2222 ? 8 : i % 7)), shape: [3000], want: [1234] },
      { data: Array.from({ length: n }, (_, i) => (i % 25_000 === 777 ? 1 : 0)), shape: [n], want: [777] },
      { data: Array.from({ length: n }, () => 4), shape: [n], want: [0] },
    ];
    for (const device of [...new Set<Device>(['cpu', DEVICE])]) {
      for (const c of cases) {
        for (const dtype of ['float32', 'int32'] as const) {
          if (dtype === 'int32' && c.data.some((v) => !Number.isFinite(v))) continue;
          const x = uhd.tensor(c.data, { shape: c.shape, dtype, device });
          expect(await gpuData(x.argmax(c.dim)), `${device} ${dtype} ${c.shape}`).toEqual(c.want);
          x.dispose();
        }
      }
    }
  });

  it('treats NaN as the greatest value (first NaN wins), like the CPU; max propagates NaN', async () => {
    const data = [1, NaN, 3, NaN, 2, 5, 5, 1];
    for (const device of [...new Set<Device>(['cpu', DEVICE])]) {
      const x = uhd.tensor(data, { shape: [2, 4], device });
      expect(await gpuData(x.argmax(1))).toEqual([1, 1]);
      const m = await gpuData(x.max(1));
      expect(Number.isNaN(m[0]) && m[1] === 5).toBe(true);
      x.dispose();
    }
  });
});

describe('int32 reductions are exact', () => {
  it('sum, max and argmax of int32 views over random dims', async () => {
    await fc.assert(
      fc.asyncProperty(arbView(arbShape(1, 4, 37, 20_000)), fc.nat(15), async (r, mask) => {
        const dims = dimsFrom(mask, r.shape.length);
        const opts = { dtype: 'int32' as const, lo: -50, hi: 50 };
        await agree((x) => x.sum(dims), [r], EXACT, opts);
        await agree((x) => x.max(dims, true), [r], EXACT, opts);
        await agree((x) => x.argmax(dims?.[0]), [r], EXACT, opts);
      }),
      { ...PROP, numRuns: 15 },
    );
  });
});

describe('softmax and log-softmax match the CPU reference', () => {
  it('over each dim of random views', async () => {
    await fc.assert(
      fc.asyncProperty(arbView(arbShape(1, 4, 37, 20_000)), async (r) => {
        for (let d = 0; d < r.shape.length; d++) {
          await agree((x) => x.softmax(d), [r], F32, { lo: -4, hi: 4, label: `softmax ${d}` });
          await agree((x) => x.logSoftmax(d), [r], LOG_TOL, { lo: -4, hi: 4, label: `logSoftmax ${d}` });
        }
      }),
      { ...PROP, numRuns: 15 },
    );
  });

  it('over long rows and many short rows, along either dim', async () => {
    await fc.assert(
      fc.asyncProperty(viewOf(fc.oneof(longRows, shortRows)), fc.nat(1), fc.boolean(), async (r, dim, log) => {
        await agree((x) => (log ? x.logSoftmax(dim) : x.softmax(dim)), [r], log ? LOG_TOL : F32, { lo: -6, hi: 6 });
      }),
      { ...PROP, numRuns: 12 },
    );
  });

  it('rows sum to 1 on the GPU', async () => {
    await fc.assert(
      fc.asyncProperty(arbView(arbShape(1, 3, 300, 30_000)), fc.nat(2), async (r, pick) => {
        const d = pick % r.shape.length;
        const x = makeView(r, DEVICE, 'float32', -10, 10);
        const sums = await gpuData(uhd.tidy(() => x.softmax(d).sum(d)));
        for (const s of sums) expect(Math.abs(s - 1)).toBeLessThan(1e-5);
        x.dispose();
      }),
      { ...PROP, numRuns: 15 },
    );
  });

  it('is stable for large inputs and handles -inf (masked) entries', async () => {
    await agree((x) => x.softmax(1), [{ shape: [7, 333], kind: 'sliced', seed: 9 }], F32, { lo: -1000, hi: 1000 });
    await agree((x) => x.logSoftmax(0), [{ shape: [300, 5], kind: 'permuted', seed: 9 }], { atol: 1e-3, rtol: 1e-6 }, { lo: -1000, hi: 1000 });
    const row = [-Infinity, 0, -Infinity, 1, 2000, -Infinity, 1999];
    for (const device of [...new Set<Device>(['cpu', DEVICE])]) {
      const x = uhd.tensor(row, { shape: [1, 7], device });
      const p = await gpuData(x.softmax(-1));
      const e = Math.exp(-1);
      const want = [0, 0, 0, 0, 1 / (1 + e), 0, e / (1 + e)];
      p.forEach((v, i) => expect(Math.abs(v - want[i]), `${device} ${i}`).toBeLessThan(1e-6));
      const lp = await gpuData(x.logSoftmax(-1));
      expect(lp[0]).toBe(-Infinity);
      expect(Math.abs(lp[4] + Math.log1p(e))).toBeLessThan(1e-5);
      x.dispose();
    }
  });
});
