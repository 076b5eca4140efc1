/**
 * Gather, indexSelect, scatterAdd, concat and stack: WebGPU against the CPU reference on
 * random shapes and views. Gather and int32 scatter-add are exact; float32 scatter-add
 * adds colliding values in no fixed order on the GPU, so it is compared with a tolerance.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { gpuContext } from '../../kernels/index.js';
import * as uhd from '../../tensor/index.js';
import type { DType, Tensor } from '../../tensor/index.js';
import { agree, arbShape, arbView, DEVICE, expectClose, makeView, PROP, useDevice, type Tolerance, type ViewRecipe } from '../support.js';

useDevice();

const EXACT: Tolerance = { atol: 0, rtol: 0 };
/**
 * Float32 sums of up to ~12 values in [-1, 1] (the random scatter-add cases): each order
 * rounds at most ~12 times at 0.5 ulp of a sum below 16, so two orders differ by < 2e-5.
 */
const SUM_TOL: Tolerance = { atol: 3e-5, rtol: 1e-5 };

type ViewKind = ViewRecipe['kind'];
const arbKind = fc.constantFrom<ViewKind>('dense', 'permuted', 'sliced', 'broadcast');
const arbSeed = fc.integer({ min: 1, max: 2 ** 31 - 1 });

/** The same view on both devices. */
function onBoth(r: ViewRecipe, dtype: DType = 'float32', lo = -1, hi = 1): [Tensor, Tensor] {
  return [makeView(r, 'cpu', dtype, lo, hi), makeView(r, DEVICE, dtype, lo, hi)];
}

/** An int32 index view with values in [0, range) (makeView floors uniform values). */
function indexOnBoth(shape: number[], kind: ViewKind, seed: number, range: number): [Tensor, Tensor] {
  return onBoth({ shape, kind, seed }, 'int32', 0, range);
}

/** Compares the device under test's result with the CPU one, then disposes everything given. */
async function expectAgree(gpu: Tensor, cpu: Tensor, tol: Tolerance, label: string, ...rest: Tensor[]): Promise<void> {
  expect(gpu.shape, label).toEqual(cpu.shape);
  expect(gpu.dtype, label).toBe(cpu.dtype);
  expectClose(await gpu.data(), await cpu.data(), tol, label);
  for (const t of [gpu, cpu, ...rest]) t.dispose();
}

/** Index shape for x's shape: at most x's size off `dim`, 1..maxAlong along it. */
function indexShape(xShape: readonly number[], dim: number, picks: readonly number[], maxAlong: number): number[] {
  return xShape.map((s, d) => 1 + (picks[d] % (d === dim ? maxAlong : s)));
}

describe('gather matches the CPU reference', () => {
  it('along every dim of random shapes and views, with random (often repeated) indices', async () => {
    await fc.assert(
      fc.asyncProperty(
        arbView(arbShape(1, 4, 9, 3000)),
        fc.nat(),
        fc.array(fc.nat(), { minLength: 4, maxLength: 4 }),
        arbKind,
        arbSeed,
        fc.boolean(),
        fc.constantFrom<DType>('float32', 'int32'),
        async (xr, dimPick, picks, ikind, iseed, fewValues, dtype) => {
          const dim = dimPick % xr.shape.length;
          const ishape = indexShape(xr.shape, dim, picks, 6);
          const range = fewValues ? Math.min(2, xr.shape[dim]) : xr.shape[dim];
          const [xc, xg] = onBoth(xr, dtype, -100, 100);
          const [ic, ig] = indexOnBoth(ishape, ikind, iseed, range);
          const label = `gather x ${xr.kind} [${xr.shape}] dim ${dim} index ${ikind} [${ishape}]`;
          await expectAgree(uhd.gather(xg, dim, ig), uhd.gather(xc, dim, ic), EXACT, label, xc, xg, ic, ig);
        },
      ),
      { ...PROP, numRuns: 50 },
    );
  });

  it('on rank-8 views and negative dims', async () => {
    const shape = [2, 3, 1, 2, 3, 2, 1, 3];
    for (const dim of [0, 3, -1]) {
      const d = dim < 0 ? dim + shape.length : dim;
      const [xc, xg] = onBoth({ shape, kind: 'permuted', seed: 7 + d });
      const ishape = shape.map((s, i) => (i === d ? 4 : Math.max(1, s - (i % 2))));
      const [ic, ig] = indexOnBoth(ishape, 'sliced', 11 + d, shape[d]);
      await expectAgree(uhd.gather(xg, dim, ig), uhd.gather(xc, dim, ic), EXACT, `rank 8 dim ${dim}`, xc, xg, ic, ig);
    }
  });

  it('with an empty index gives an empty result', async () => {
    const x = uhd.ones([3, 4], { device: DEVICE });
    const i = uhd.zeros([0, 4], { dtype: 'int32', device: DEVICE });
    const out = uhd.gather(x, 0, i);
    expect(out.shape).toEqual([0, 4]);
    expect((await out.data()).length).toBe(0);
    for (const t of [x, i, out]) t.dispose();
  });
});

describe('indexSelect (gather through an expanded index) matches the CPU reference', () => {
  it('embedding lookup: [vocab, d] table, [N] ids with repeats', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 60 }),
        fc.integer({ min: 1, max: 70 }),
        fc.integer({ min: 0, max: 90 }),
        fc.constantFrom<ViewKind>('dense', 'sliced', 'permuted'),
        arbSeed,
        async (vocab, d, n, kind, seed) => {
          const [tc, tg] = onBoth({ shape: [vocab, d], kind, seed });
          const [ic, ig] = indexOnBoth([n], 'dense', seed ^ 0x5bd1, vocab);
          const label = `indexSelect table ${kind} [${vocab},${d}] ids [${n}]`;
          await expectAgree(uhd.indexSelect(tg, 0, ig), uhd.indexSelect(tc, 0, ic), EXACT, label, tc, tg, ic, ig);
        },
      ),
      { ...PROP, numRuns: 15 },
    );
  });

  it('along a middle dim of a 3-d view', async () => {
    const [xc, xg] = onBoth({ shape: [3, 10, 5], kind: 'sliced', seed: 3 });
    const [ic, ig] = indexOnBoth([13], 'dense', 4, 10);
    await expectAgree(uhd.indexSelect(xg, 1, ig), uhd.indexSelect(xc, 1, ic), EXACT, 'indexSelect dim 1', xc, xg, ic, ig);
  });
});

describe('scatterAdd matches the CPU reference under many collisions', () => {
  for (const dtype of ['float32', 'int32'] as const) {
    it(`${dtype}: random shapes, views and dims, index values from a small range, src larger than index`, async () => {
      await fc.assert(
        fc.asyncProperty(
          arbView(arbShape(1, 4, 8, 2000)),
          fc.nat(),
          fc.array(fc.nat(), { minLength: 4, maxLength: 4 }),
          fc.array(fc.integer({ min: 0, max: 2 }), { minLength: 4, maxLength: 4 }),
          arbKind,
          arbKind,
          arbSeed,
          async (xr, dimPick, picks, extra, ikind, skind, seed) => {
            const dim = dimPick % xr.shape.length;
            const ishape = indexShape(xr.shape, dim, picks, 12);
            const sshape = ishape.map((s, d) => s + extra[d]);
            const range = Math.min(3, xr.shape[dim]);
            const [lo, hi] = dtype === 'int32' ? [-50, 50] : [-1, 1];
            const [xc, xg] = onBoth(xr, dtype, lo, hi);
            const [ic, ig] = indexOnBoth(ishape, ikind, seed, range);
            const [sc, sg] = onBoth({ shape: sshape, kind: skind, seed: seed ^ 0x2f0 }, dtype, lo, hi);
            const label = `scatterAdd x ${xr.kind} [${xr.shape}] dim ${dim} index ${ikind} [${ishape}] src ${skind} [${sshape}]`;
            const tol = dtype === 'int32' ? EXACT : SUM_TOL;
            await expectAgree(uhd.scatterAdd(xg, dim, ig, sg), uhd.scatterAdd(xc, dim, ic, sc), tol, label, xc, xg, ic, ig, sc, sg);
          },
        ),
        { ...PROP, numRuns: 40 },
      );
    });
  }

  it('into a dense window at an offset of a larger tensor (the buffer-copy path)', async () => {
    const [bc, bg] = onBoth({ shape: [7, 6], kind: 'dense', seed: 5 });
    const [xc, xg] = [bc.narrow(0, 2, 4), bg.narrow(0, 2, 4)];
    const [ic, ig] = indexOnBoth([9, 6], 'dense', 6, 4);
    const [sc, sg] = onBoth({ shape: [9, 6], kind: 'dense', seed: 7 });
    await expectAgree(uhd.scatterAdd(xg, 0, ig, sg), uhd.scatterAdd(xc, 0, ic, sc), SUM_TOL, 'window', bc, bg, xc, xg, ic, ig, sc, sg);
  });

  it('embedding backward: [N, d] rows into a [vocab, d] table through ids expanded from [N, 1]', async () => {
    const [vocab, d, n] = [40, 67, 500];
    for (const dtype of ['float32', 'int32'] as const) {
      const [lo, hi] = dtype === 'int32' ? [-1000, 1000] : [-1, 1];
      const [gc, gg] = onBoth({ shape: [n, d], kind: 'dense', seed: 21 }, dtype, lo, hi);
      // ids from [0, 5): about 100 rows land on each of 5 table rows
      const [ic, ig] = indexOnBoth([n, 1], 'dense', 22, 5);
      const ec = ic.expand([n, d]);
      const eg = ig.expand([n, d]);
      const zc = uhd.zeros([vocab, d], { dtype });
      const zg = uhd.zeros([vocab, d], { dtype, device: DEVICE });
      // ~100 float32 additions of values in [-1, 1] per element, in any order
      const tol = dtype === 'int32' ? EXACT : { atol: 2e-4, rtol: 1e-5 };
      await expectAgree(uhd.scatterAdd(zg, 0, eg, gg), uhd.scatterAdd(zc, 0, ec, gc), tol, `embedding backward ${dtype}`, gc, gg, ic, ig, ec, eg, zc, zg);
    }
  });
});

describe('out-of-range indices', () => {
  it('the CPU reference throws naming the index, the dim and its size', () => {
    const x = uhd.zeros([5, 3]);
    const bad = uhd.tensor([[1, 9, 0]], { dtype: 'int32' });
    const neg = uhd.tensor([-1, 2], { dtype: 'int32' });
    expect(() => uhd.gather(x, 0, bad)).toThrow('gather: index 9 out of range for dim 0 of size 5');
    expect(() => uhd.scatterAdd(x, 0, bad, x)).toThrow('scatterAdd: index 9 out of range for dim 0 of size 5');
    expect(() => uhd.indexSelect(x, 1, neg)).toThrow('gather: index -1 out of range for dim 1 of size 3');
    for (const t of [x, bad, neg]) t.dispose();
  });

  it.skipIf(DEVICE === 'webgpu' || DEVICE === 'cpu')(`on ${DEVICE}, gather and scatterAdd throw as the CPU reference does`, () => {
    const x = uhd.zeros([5, 3], { device: DEVICE });
    const bad = uhd.tensor([[1, 9, 0]], { dtype: 'int32', device: DEVICE });
    expect(() => uhd.gather(x, 0, bad)).toThrow('gather: index 9 out of range for dim 0 of size 5');
    expect(() => uhd.scatterAdd(x, 0, bad, x)).toThrow('scatterAdd: index 9 out of range for dim 0 of size 5');
    for (const t of [x, bad]) t.dispose();
  });

  it.skipIf(DEVICE !== 'webgpu')('on WebGPU with index checks (as the tests run), the next read-back throws naming the index, as the CPU does', async () => {
    const c = gpuContext();
    expect(c.tuning.checkIndices).toBe(true);
    const x = uhd.tensor([[1, 2, 3], [4, 5, 6]], { device: 'webgpu' });
    const idx = uhd.tensor([[7, 0, 1]], { dtype: 'int32', device: 'webgpu' });
    const g = uhd.gather(x, 0, idx);
    await expect(g.data()).rejects.toThrow('gather: index 7 is out of range for a dim of size 2');
    const emb = uhd.indexSelect(x, 1, uhd.tensor([0, -1], { dtype: 'int32', device: 'webgpu' }));
    await expect(c.sync()).rejects.toThrow('gather: index -1 is out of range for a dim of size 3');
    const s = uhd.scatterAdd(x, 0, idx, x);
    await expect(s.data()).rejects.toThrow('scatterAdd: index 7 is out of range for a dim of size 2');
    // reported once: the record is reset, and in-range work reads back normally after
    const ok = uhd.gather(x, 0, uhd.tensor([[1, 0, 1]], { dtype: 'int32', device: 'webgpu' }));
    expect(Array.from(await ok.data())).toEqual([4, 2, 6]);
    for (const t of [x, idx, g, emb, s, ok]) t.dispose();
  });

  it.skipIf(DEVICE !== 'webgpu')('without index checks, gather writes 0 and scatterAdd drops the contribution, never touching memory outside the dim', async () => {
    const c = gpuContext();
    c.tuning.checkIndices = false;
    try {
      const x = uhd.tensor([[1, 2, 3], [4, 5, 6]], { device: 'webgpu' });
      const idx = uhd.tensor([[7, -1, 1]], { dtype: 'int32', device: 'webgpu' });
      const g = uhd.gather(x, 0, idx);
      const s = uhd.scatterAdd(x, 0, idx, x);
      expect(Array.from(await g.data())).toEqual([0, 0, 6]);
      expect(Array.from(await s.data())).toEqual([1, 2, 3, 4, 5, 9]);
      for (const t of [x, idx, g, s]) t.dispose();
    } finally {
      c.tuning.checkIndices = true;
    }
  });
});

describe('concat and stack match the CPU reference', () => {
  it('concat along each dim of 2..4 parts of different sizes, strided views, some of size 0', async () => {
    await fc.assert(
      fc.asyncProperty(
        arbShape(1, 4, 6, 500),
        fc.nat(),
        fc.array(fc.record({ size: fc.integer({ min: 0, max: 5 }), kind: arbKind, seed: arbSeed }), { minLength: 2, maxLength: 4 }),
        async (shape, dimPick, parts) => {
          const dim = dimPick % shape.length;
          const recipes = parts.map((p) => ({ shape: shape.map((s, d) => (d === dim ? p.size : s)), kind: p.kind, seed: p.seed }));
          await agree((...xs) => uhd.concat(xs, dim), recipes, EXACT, { label: `concat dim ${dim} ${JSON.stringify(recipes.map((r) => r.shape))}` });
        },
      ),
      { ...PROP, numRuns: 25 },
    );
  });

  it('concat with an empty part in the middle', async () => {
    const recipes: ViewRecipe[] = [
      { shape: [3, 2], kind: 'permuted', seed: 1 },
      { shape: [3, 0], kind: 'dense', seed: 2 },
      { shape: [3, 4], kind: 'sliced', seed: 3 },
    ];
    await agree((...xs) => uhd.concat(xs, 1), recipes, EXACT);
  });

  it('stack of 2..4 same-shaped views along every new dim', async () => {
    await fc.assert(
      fc.asyncProperty(
        arbShape(1, 3, 6, 300),
        fc.nat(),
        fc.array(fc.record({ kind: arbKind, seed: arbSeed }), { minLength: 2, maxLength: 4 }),
        async (shape, dimPick, parts) => {
          const dim = dimPick % (shape.length + 1);
          const recipes = parts.map((p) => ({ shape, ...p }));
          await agree((...xs) => uhd.stack(xs, dim), recipes, EXACT, { label: `stack dim ${dim} [${shape}]` });
        },
      ),
      { ...PROP, numRuns: 15 },
    );
  });
});
