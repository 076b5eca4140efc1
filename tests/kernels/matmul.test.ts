import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  chooseConfig, chooseVariant, CPU_TILES, GPU_TILES, matmulWith, type MatmulVariant, type PanelMode,
} from '../../kernels/matmul.js';
import * as uhd from '../../tensor/index.js';
import type { Device, Tensor } from '../../tensor/index.js';
import { agree, DEVICE, expectClose, PROP, useDevice, values, type Tolerance, type ViewRecipe } from '../support.js';

useDevice();

/**
 * f32 accumulation against the f64-accumulated reference, operands in [-1, 1]: the rounding
 * error of a K-term dot product grows about like sqrt(K) (random signs), so atol does too.
 */
function tol(K: number): Tolerance {
  return { atol: 4e-6 * Math.sqrt(Math.max(K, 1)), rtol: 1e-5 };
}

const matmul = (a: Tensor, b: Tensor) => uhd.matmul(a, b);

/** Matrix sizes that stress tiling: 1, primes, around vec4 and tile multiples, several tiles. */
const dim = fc.oneof(
  fc.constantFrom(1, 2, 3, 4, 5, 7, 8, 13, 16, 31, 33, 64, 65),
  fc.integer({ min: 1, max: 40 }),
  fc.integer({ min: 70, max: 130 }),
);
const kind = fc.constantFrom<ViewRecipe['kind']>('dense', 'permuted', 'sliced', 'broadcast');
const seed = fc.integer({ min: 1, max: 2 ** 31 - 1 });

/** The same strided view (shape, strides, offset into a 1-d base of random values) on a device. */
function strided(device: Device, s: number, shape: number[], strides: number[], offset: number): Tensor {
  const extent = offset + shape.reduce((acc, n, d) => acc + (n - 1) * strides[d], 0) + 1;
  const base = uhd.tensor(values(extent, s), { dtype: 'float32', device });
  const view = base.asStrided(shape, strides, offset);
  base.dispose();
  return view;
}

/** Like support's `agree`, for operands `make` builds (views `makeView` has no recipe for). */
async function expectAgree(
  make: (device: Device) => [Tensor, Tensor],
  K: number,
  run: (a: Tensor, b: Tensor) => Tensor = matmul,
): Promise<void> {
  const [ca, cb] = make('cpu');
  const [ga, gb] = make(DEVICE);
  const want = run(ca, cb);
  const got = run(ga, gb);
  expect(got.shape).toEqual(want.shape);
  expectClose(await got.data(), await want.data(), tol(K), `${JSON.stringify(ga.shape)} @ ${JSON.stringify(gb.shape)}`);
  for (const t of [ca, cb, ga, gb, want, got]) t.dispose();
}

describe('the CPU reference', () => {
  it('matches a hand-computed product, batched and broadcast', async () => {
    const a = uhd.tensor([[1, 2, 3], [4, 5, 6]], { dtype: 'float64' });
    const b = uhd.tensor([[7, 8], [9, 10], [11, 12]], { dtype: 'float64' });
    expect(await uhd.matmul(a, b).toArray()).toEqual([[58, 64], [139, 154]]);
    // b transposed through strides, a batch of two with the second scaled by -1
    const bt = uhd.tensor([[7, 9, 11], [8, 10, 12]], { dtype: 'float64' }).transpose();
    const a2 = uhd.stack([a, a.mul(-1)], 0);
    expect(await uhd.matmul(a2, bt).toArray()).toEqual([[[58, 64], [139, 154]], [[-58, -64], [-139, -154]]]);
    // vectors: row @ matrix, matrix @ column, dot product
    const v = uhd.tensor([1, -1, 2], { dtype: 'float64' });
    expect(await uhd.matmul(v, b).toArray()).toEqual([20, 22]);
    expect(await uhd.matmul(a, v).toArray()).toEqual([5, 11]);
    expect(await uhd.matmul(v, v).item()).toBe(6);
  });

  it('gives zeros when K = 0 and an empty result when M = 0', async () => {
    const z = uhd.matmul(uhd.zeros([3, 0]), uhd.zeros([0, 2]));
    expect(await z.toArray()).toEqual([[0, 0], [0, 0], [0, 0]]);
    expect(uhd.matmul(uhd.zeros([0, 4]), uhd.zeros([4, 2])).shape).toEqual([0, 2]);
  });
});

describe(`${DEVICE} matmul matches the CPU reference`, () => {
  it('on random sizes and views of 2-d operands (transposed, sliced, broadcast rows)', async () => {
    await fc.assert(
      fc.asyncProperty(dim, dim, dim, kind, kind, seed, seed, async (M, N, K, ka, kb, sa, sb) => {
        await agree(matmul, [{ shape: [M, K], kind: ka, seed: sa }, { shape: [K, N], kind: kb, seed: sb }], tol(K));
      }),
      { ...PROP, numRuns: 20 },
    );
  });

  it('with broadcast batch dims of any rank up to 6, and views of them', async () => {
    const batchDim = fc.constantFrom(1, 2, 3);
    await fc.assert(
      fc.asyncProperty(
        fc.array(batchDim, { minLength: 0, maxLength: 6 }), fc.nat(63), fc.nat(63), fc.nat(2),
        fc.integer({ min: 1, max: 19 }), fc.integer({ min: 1, max: 19 }), fc.integer({ min: 1, max: 19 }),
        kind, kind, seed, seed,
        async (batch, maskA, maskB, drop, M, N, K, ka, kb, sa, sb) => {
          // each operand sees some batch dims as 1 (broadcast), b may lack leading dims
          const aBatch = batch.map((s, i) => ((maskA >> i) & 1 ? 1 : s));
          const bBatch = batch.map((s, i) => ((maskB >> i) & 1 ? 1 : s)).slice(Math.min(drop, batch.length));
          await agree(matmul, [{ shape: [...aBatch, M, K], kind: ka, seed: sa }, { shape: [...bBatch, K, N], kind: kb, seed: sb }], tol(K));
        },
      ),
      { ...PROP, numRuns: 20 },
    );
  });

  it('for [3,1,M,K] @ [1,4,K,N], a 2-d b against a 3-d a, and transposed operands', async () => {
    await agree(matmul, [{ shape: [3, 1, 9, 21], kind: 'dense', seed: 1 }, { shape: [1, 4, 21, 10], kind: 'dense', seed: 2 }], tol(21));
    await agree(matmul, [{ shape: [5, 70, 33], kind: 'sliced', seed: 3 }, { shape: [33, 65], kind: 'dense', seed: 4 }], tol(33));
    // x @ w.T as in a linear layer, and a.T @ b as in its weight gradient
    await expectAgree((d) => [strided(d, 5, [6, 40, 96], [3840, 96, 1], 0), strided(d, 6, [130, 96], [96, 1], 0).transpose()], 96);
    await expectAgree((d) => [strided(d, 7, [96, 77], [77, 1], 0).transpose(), strided(d, 8, [96, 50], [50, 1], 0)], 96);
    // one buffer bound as both operands: x @ x.T
    await expectAgree((d) => {
      const x = strided(d, 9, [33, 20], [20, 1], 0);
      return [x, x.transpose()];
    }, 20);
  });

  it('for vector operands: row @ matrix, matrix @ column, dot, batched matrix @ vector', async () => {
    await agree(matmul, [{ shape: [37], kind: 'dense', seed: 1 }, { shape: [37, 70], kind: 'dense', seed: 2 }], tol(37));
    await agree(matmul, [{ shape: [70, 37], kind: 'permuted', seed: 3 }, { shape: [37], kind: 'sliced', seed: 4 }], tol(37));
    await agree(matmul, [{ shape: [130], kind: 'dense', seed: 5 }, { shape: [130], kind: 'dense', seed: 6 }], tol(130));
    await agree(matmul, [{ shape: [3, 5, 8], kind: 'dense', seed: 7 }, { shape: [8], kind: 'dense', seed: 8 }], tol(8));
    await agree(matmul, [{ shape: [8], kind: 'dense', seed: 9 }, { shape: [2, 8, 6], kind: 'permuted', seed: 10 }], tol(8));
  });

  it('for K = 1, and gives zeros for K = 0 and empty results for M = 0 or N = 0', async () => {
    await agree(matmul, [{ shape: [67, 1], kind: 'dense', seed: 1 }, { shape: [1, 129], kind: 'sliced', seed: 2 }], tol(1));
    for (const [M, K, N] of [[5, 0, 7], [0, 4, 3], [4, 3, 0], [2, 0, 0]]) {
      await agree(matmul, [{ shape: [2, M, K], kind: 'dense', seed: 1 }, { shape: [K, N], kind: 'dense', seed: 2 }], tol(K));
    }
  });

  it('on a larger case spanning many tiles: 257x129x300, plain and with b transposed', async () => {
    await agree(matmul, [{ shape: [257, 300], kind: 'dense', seed: 11 }, { shape: [300, 129], kind: 'dense', seed: 12 }], tol(300));
    await agree(matmul, [{ shape: [257, 300], kind: 'sliced', seed: 13 }, { shape: [300, 129], kind: 'permuted', seed: 14 }], tol(300));
  });
});

describe.skipIf(DEVICE !== 'webgpu')('WebGPU kernel variants', () => {
  // [M, K] views of a and [K, N] views of b that select each fetch mode: [mode, strides, offset]
  const M = 8;
  const K = 12;
  type View = [PanelMode, number[], number];
  const aViews: View[] = [['k4', [K, 1], 4], ['x4', [1, M], 8], ['scalar', [K, 1], 1], ['scalar', [1, M], 3]];
  const bViews = (N: number): View[] => [['x4', [N, 1], 4], ['k4', [1, K], 8], ['scalar', [N, 1], 1], ['scalar', [1, K], 5]];

  // stage_a and stage_b are generated independently, so pairing the modes covers them all
  const pairs: [number, View, View][] = [
    [8, aViews[0], bViews(8)[0]], [8, aViews[1], bViews(8)[1]], [8, aViews[2], bViews(8)[2]], [8, aViews[3], bViews(8)[3]],
    [6, aViews[0], bViews(6)[2]], [6, aViews[1], bViews(6)[1]], [6, aViews[3], bViews(6)[3]],
  ];

  it('every fetch mode of a and b, and both output stores, agree with the reference', async () => {
    for (const [N, [ma, as, ao], [mb, bs, bo]] of pairs) {
      const make = (d: Device): [Tensor, Tensor] => [strided(d, 1, [M, K], as, ao), strided(d, 2, [K, N], bs, bo)];
      const [ga, gb] = make('webgpu');
      const out = uhd.Tensor.empty([M, N], 'float32', 'webgpu');
      const v = chooseVariant(ga, gb, out);
      expect([v.a, v.b, v.out]).toEqual([ma, mb, N % 4 === 0 ? 'v4' : 's']);
      for (const t of [ga, gb, out]) t.dispose();
      // on the big CPU tile config, whatever the shape would pick
      await expectAgree(make, K, (x, y) => {
        if (x.device === 'cpu') return uhd.matmul(x, y);
        const o = uhd.Tensor.empty([M, N], 'float32', 'webgpu');
        matmulWith({ ...chooseVariant(x, y, o), config: CPU_TILES[0].config }, x, y, o);
        return o;
      });
    }
  });

  it('every tile config, CPU and GPU tables, gives the same result on edge tiles and batches', async () => {
    for (const { config } of [...CPU_TILES, ...GPU_TILES]) {
      await expectAgree(
        (d) => [strided(d, 3, [2, 133, 37], [37 * 133, 37, 1], 0), strided(d, 4, [141, 37], [37, 1], 0).transpose()],
        37,
        (a, b) => {
          if (a.device === 'cpu') return uhd.matmul(a, b);
          const eb = b.expand([2, 37, 141]);
          const out = uhd.Tensor.empty([2, 133, 141], 'float32', 'webgpu');
          const variant: MatmulVariant = { ...chooseVariant(a, eb, out), config };
          matmulWith(variant, a, eb, out);
          eb.dispose();
          return out;
        },
      );
    }
  });

  it('splits dispatches past 65535 workgroups per dimension (batch and rows)', async () => {
    // 65537 batch entries of a 1x2 @ 2x1 product: one workgroup each along z
    await agree(matmul, [{ shape: [65537, 1, 2], kind: 'dense', seed: 1 }, { shape: [65537, 2, 1], kind: 'dense', seed: 2 }], tol(2));
    // 65537 row tiles of the 4-row config
    const rows = 4 * 65536 + 3;
    const wide = CPU_TILES.find((t) => t.config.bm === 4);
    expect(wide).toBeDefined();
    await expectAgree(
      (d) => [strided(d, 5, [rows, 2], [2, 1], 0), strided(d, 6, [2, 3], [3, 1], 0)],
      2,
      (a, b) => {
        if (a.device === 'cpu') return uhd.matmul(a, b);
        const out = uhd.Tensor.empty([rows, 3], 'float32', 'webgpu');
        matmulWith({ ...chooseVariant(a, b, out), config: wide!.config }, a, b, out);
        return out;
      },
    );
  });

  it('tile choice: skinny tiles for vector shapes, the big tile for large matrices', () => {
    expect(chooseConfig(1, 4096, 1, true).bm).toBe(4);
    expect(chooseConfig(4096, 1, 1, true).bn).toBe(4);
    expect(chooseConfig(1024, 1024, 1, true)).toEqual(CPU_TILES[0].config);
    // narrow outputs: no 128-wide tile padded 2-4x
    expect(chooseConfig(2048, 32, 1, true).bn).toBe(32);
    expect(chooseConfig(2048, 48, 1, true).bn).toBe(64);
    expect(chooseConfig(2048, 64, 1, true).bn).toBe(64);
    expect(chooseConfig(2048, 96, 1, true).bn).toBe(128);
    expect(chooseConfig(4096, 4096, 1, false)).toEqual(GPU_TILES[0].config);
  });
});
