/**
 * Fused layer norm and RMS norm on WebGPU against the CPU reference (two-pass, float64).
 * Tolerance: atol 2e-5, rtol 1e-4 on outputs of order 1 (times weight, plus bias, in [-1, 1]),
 * also for rows around 1000 with a spread of 1 and 1e4 with a spread of 0.1, where a variance from
 * E[x^2] - E[x]^2 in f32 would be off by orders of magnitude.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as uhd from '../../tensor/index.js';
import type { Device, Tensor } from '../../tensor/index.js';
import { agree, arbShape, arbView, DEVICE, expectClose, makeView, PROP, useDevice, type Tolerance, type ViewRecipe } from '../support.js';

useDevice();

const NORM_TOL: Tolerance = { atol: 2e-5, rtol: 1e-4 };

const arbKind = fc.constantFrom('dense', 'permuted', 'sliced', 'broadcast');
const arbSeed = fc.integer({ min: 1, max: 2 ** 31 - 1 });
/** A 1-d parameter view of length d with a random layout (broadcast repeats one value). */
const paramOf = (d: number, kind: string, seed: number): ViewRecipe => ({ shape: [d], kind: kind as ViewRecipe['kind'], seed });

/** x of shape `r.shape`, with weight and bias (each present or not, any 1-d layout) matching its last dim. */
async function checkNorm(
  kind: 'layer' | 'rms',
  r: ViewRecipe,
  affine: { weight: boolean; bias: boolean; wKind: string; bKind: string },
  opts: { lo?: number; hi?: number; eps?: number } = {},
): Promise<void> {
  const d = r.shape[r.shape.length - 1];
  const recipes = [r];
  if (affine.weight) recipes.push(paramOf(d, affine.wKind, r.seed + 1));
  if (affine.bias && kind === 'layer') recipes.push(paramOf(d, affine.bKind, r.seed + 2));
  const eps = opts.eps ?? 1e-5;
  const op = (x: Tensor, ...p: Tensor[]): Tensor => {
    const w = affine.weight ? p[0] : null;
    const b = affine.bias && kind === 'layer' ? p[affine.weight ? 1 : 0] : null;
    return kind === 'layer' ? uhd.layerNorm(x, w, b, eps) : uhd.rmsNorm(x, w, eps);
  };
  if (opts.lo === undefined) {
    await agree(op, recipes, NORM_TOL, { label: `${kind} ${JSON.stringify(r)}` });
    return;
  }
  // x in [lo, hi) far from 0, weight and bias of order 1 (agree() would shift them too).
  const lo = opts.lo;
  const hi = opts.hi ?? lo + 1;
  const build = (device: Device) => [makeView(r, device, 'float32', lo, hi), ...recipes.slice(1).map((p) => makeView(p, device))];
  const cpu = build('cpu');
  const gpu = build(DEVICE);
  const want = op(cpu[0], ...cpu.slice(1));
  const got = op(gpu[0], ...gpu.slice(1));
  expectClose(await got.data(), await want.data(), NORM_TOL, `${kind} [${lo}, ${hi}) ${JSON.stringify(r)}`);
  for (const t of [...cpu, ...gpu, want, got]) t.dispose();
}

const arbAffine = fc.record({ weight: fc.boolean(), bias: fc.boolean(), wKind: arbKind, bKind: arbKind });

for (const kind of ['layer', 'rms'] as const) {
  describe(`${kind === 'layer' ? 'layerNorm' : 'rmsNorm'} matches the CPU reference`, () => {
    it('on random shapes and views, with and without weight/bias of any layout', async () => {
      await fc.assert(
        fc.asyncProperty(arbView(arbShape(1, 4, 37, 30_000)), arbAffine, async (r, affine) => {
          await checkNorm(kind, r, affine);
        }),
        PROP,
      );
    });

    it('on long rows (1000..5000) and many short rows (1..16)', async () => {
      const rows = fc.oneof(
        fc.tuple(fc.integer({ min: 1, max: 6 }), fc.integer({ min: 1000, max: 5000 })),
        fc.tuple(fc.integer({ min: 200, max: 3000 }), fc.integer({ min: 1, max: 16 })),
      );
      await fc.assert(
        fc.asyncProperty(rows, arbKind, arbSeed, arbAffine, async ([n, d], k, seed, affine) => {
          await checkNorm(kind, { shape: [n, d], kind: k as ViewRecipe['kind'], seed }, affine);
        }),
        { ...PROP, numRuns: 15 },
      );
    });

    it('on views of rank 6..8', async () => {
      await fc.assert(
        fc.asyncProperty(arbView(arbShape(6, 8, 5, 6_000)), arbAffine, async (r, affine) => {
          await checkNorm(kind, r, affine);
        }),
        { ...PROP, numRuns: 8 },
      );
    });

    it('keeps its precision for rows with a large mean and a small spread', async () => {
      await fc.assert(
        fc.asyncProperty(fc.integer({ min: 1, max: 4 }), fc.integer({ min: 2, max: 3000 }), arbKind, arbSeed, arbAffine, fc.constantFrom([1000, 1001], [-1000, -999], [1e4, 1e4 + 0.1]), async (n, d, k, seed, affine, [lo, hi]) => {
          const r: ViewRecipe = { shape: [n, d], kind: k as ViewRecipe['kind'], seed };
          // rmsNorm of such rows is near-constant; it is checked on the same inputs all the same
          await checkNorm(kind, r, affine, { lo, hi, eps: kind === 'layer' ? 1e-12 : 1e-6 });
        }),
        { ...PROP, numRuns: 8 },
      );
    });
  });
}

describe('vec4 rows (contiguous, aligned, a multiple of 4 long) and unaligned ones', () => {
  it('layerNorm and rmsNorm over windows x[:, off : off + len] of a wider tensor, weight and bias windows too', async () => {
    const arbWindow = fc.record({
      rows: fc.integer({ min: 1, max: 40 }), len: fc.integer({ min: 1, max: 1200 }), off: fc.nat(5), pad: fc.nat(5),
      seed: arbSeed, quad: fc.boolean(), wOff: fc.nat(3),
    });
    await fc.assert(
      fc.asyncProperty(arbWindow, async ({ rows, len, off, pad, seed, quad, wOff }) => {
        const l = quad ? 4 * Math.ceil(len / 4) : len;
        const o = quad ? 4 * Math.floor(off / 2) : off;
        const width = quad ? o + l + 4 * Math.floor(pad / 2) : o + l + pad;
        const recipes: ViewRecipe[] = [
          { shape: [rows, width], kind: 'dense', seed },
          { shape: [l + wOff], kind: 'dense', seed: seed + 1 },
          { shape: [l + wOff], kind: 'dense', seed: seed + 2 },
        ];
        const win = (x: Tensor) => x.narrow(1, o, l);
        const par = (p: Tensor) => p.narrow(0, wOff, l);
        await agree((x, w, b) => uhd.tidy(() => uhd.layerNorm(win(x), par(w), par(b))), recipes, NORM_TOL);
        await agree((x, w) => uhd.tidy(() => uhd.rmsNorm(win(x), par(w))), recipes.slice(0, 2), NORM_TOL);
        await agree((x) => uhd.tidy(() => uhd.layerNorm(win(x))), recipes.slice(0, 1), NORM_TOL);
      }),
      PROP,
    );
  });
});

describe('norm properties on the GPU', () => {
  it('layerNorm rows have mean 0 and variance 1; rmsNorm rows have mean square 1', async () => {
    await fc.assert(
      fc.asyncProperty(arbView(arbShape(2, 3, 600, 30_000).filter((s) => s[0] > 1 && s[s.length - 1] >= 8)), async (r) => {
        const x = makeView(r, DEVICE, 'float32', -3, 5);
        const ln = uhd.layerNorm(x, null, null, 1e-12);
        const rms = uhd.rmsNorm(x, null, 1e-12);
        const stats = [ln.mean(-1), uhd.tidy(() => ln.mul(ln).mean(-1)), uhd.tidy(() => rms.mul(rms).mean(-1))];
        const [m, v, ms] = await Promise.all(stats.map((t) => t.data()));
        for (let i = 0; i < m.length; i++) {
          expect(Math.abs(m[i])).toBeLessThan(1e-5);
          expect(Math.abs(v[i] - 1)).toBeLessThan(1e-4);
          expect(Math.abs(ms[i] - 1)).toBeLessThan(1e-4);
        }
        for (const t of [x, ln, rms, ...stats]) t.dispose();
      }),
      { ...PROP, numRuns: 8 },
    );
  });

  it('an empty last dim gives an empty result', async () => {
    const x = uhd.zeros([3, 0], { device: DEVICE });
    const y = uhd.layerNorm(x);
    expect(y.shape).toEqual([3, 0]);
    expect((await y.data()).length).toBe(0);
    for (const t of [x, y]) t.dispose();
  });
});
