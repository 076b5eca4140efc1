/**
 * The fused backward kernels of softmax, log-softmax, layer norm and RMS norm on WebGPU against
 * the CPU reference (tensor/cpu/grad.ts: float64 arithmetic on the same float32 inputs), both
 * called through the front ends of tensor/ops/grad.ts.
 *
 * Tolerance: |gpu - cpu| <= 1e-5 * s_i for element i, where s_i is the element's formula with
 * every term replaced by its magnitude (computed in float64 from the inputs):
 *
 *   softmax      s_i = |y_i| (|gy_i| + sum |gy y|)
 *   log-softmax  s_i = |gy_i| + exp(y_i) sum |gy|
 *   layer norm   s_i = inv (|g_i| + mean |g| + |xhat_i| mean |g xhat|)
 *   RMS norm     s_i = r (|g_i| + |x_i| r^2 mean |g x|)
 *
 * An f32 evaluation is off by a few ulps of s_i per operation, plus the rounding of the row sums:
 * at most 64..127 terms in sequence per lane and a tree of <= 8 levels across lanes, so well
 * under 1e-5 * s_i (the largest seen is about 5e-7 * s_i). The bound holds for long rows whose
 * sums are large and cancel, and for rows with a large mean, where s_i grows with 1/std: layer
 * norm statistics taken without the forward kernel's shift by x[0] fail it there.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as uhd from '../../tensor/index.js';
import type { Device, Tensor } from '../../tensor/index.js';
import { arbShape, arbView, DEVICE, makeView, PROP, useDevice, values, type ViewRecipe } from '../support.js';

useDevice();

/** Allowed error per unit of s_i (see above). */
const REL = 1e-5;


/** One input of the op, built the same way on either device. */
type Input = (device: Device) => Tensor;
/** s_i for every element, given the CPU inputs as row-major arrays (rows along the last dim). */
type Scale = (xs: Float32Array[], len: number) => Float64Array;

const arbKind = fc.constantFrom<ViewRecipe['kind']>('dense', 'permuted', 'sliced', 'broadcast');
const arbSeed = fc.integer({ min: 1, max: 2 ** 31 - 1 });
const view = (r: ViewRecipe, lo = -1, hi = 1): Input => (device) => makeView(r, device, 'float32', lo, hi);

/** t read back in row-major order, after permuting by `order` when given. */
async function rowsOf(t: Tensor, order: number[] | null): Promise<Float32Array> {
  const v = order ? t.permute(order) : t;
  const data = Float32Array.from(await v.data());
  if (v !== t) v.dispose();
  return data;
}

/**
 * Runs `op` on the CPU and on WebGPU over the same inputs and compares within REL * s_i.
 * `order` moves the op's row dim last (softmax over another dim); it applies to the output and
 * to every input of the output's rank.
 */
async function agreeGrad(label: string, inputs: Input[], op: (xs: Tensor[]) => Tensor, scale: Scale, order: number[] | null = null): Promise<void> {
  const cpu = inputs.map((f) => f('cpu'));
  const gpu = inputs.map((f) => f(DEVICE));
  const want = op(cpu);
  const got = op(gpu);
  expect(got.shape).toEqual(want.shape);
  const w = await rowsOf(want, order);
  const g = await rowsOf(got, order);
  const xs = await Promise.all(cpu.map((t) => rowsOf(t, t.rank === want.rank ? order : null)));
  const len = order ? want.shape[order[order.length - 1]] : want.shape[want.rank - 1];
  const s = scale(xs, len);
  for (let i = 0; i < w.length; i++) {
    // the floor only covers results that flush to zero as denormals
    if (!(Math.abs(g[i] - w[i]) <= REL * s[i] + 1e-30)) {
      expect.fail(`${label} element ${i}: got ${g[i]}, expected ${w[i]} (allowed ${REL} * ${s[i]})`);
    }
  }
  for (const t of [...cpu, ...gpu, want, got]) t.dispose();
}

/** s_i of every row of `len` elements: `row(b)` fills the row starting at flat index b. */
function perRow(n: number, len: number, row: (b: number, s: Float64Array) => void): Float64Array {
  const s = new Float64Array(n);
  for (let b = 0; b < n; b += len) row(b, s);
  return s;
}

const softmaxScale = (log: boolean): Scale => ([y, gy], len) =>
  perRow(y.length, len, (b, s) => {
    let a = 0;
    for (let i = b; i < b + len; i++) a += Math.abs(log ? gy[i] : gy[i] * y[i]);
    for (let i = b; i < b + len; i++) s[i] = log ? Math.abs(gy[i]) + Math.exp(y[i]) * a : Math.abs(y[i]) * (Math.abs(gy[i]) + a);
  });

const normScale = (kind: 'layer' | 'rms', eps: number): Scale => ([x, gy, w], len) =>
  perRow(x.length, len, (b, s) => {
    const g = (i: number) => gy[i] * (w ? w[i - b] : 1);
    let mean = 0;
    if (kind === 'layer') for (let i = b; i < b + len; i++) mean += x[i] / len;
    let m2 = 0;
    for (let i = b; i < b + len; i++) m2 += (x[i] - mean) ** 2 / len;
    const inv = 1 / Math.sqrt(m2 + eps);
    const xhat = (i: number) => (x[i] - mean) * inv;
    let gAbs = 0;
    let gxAbs = 0;
    for (let i = b; i < b + len; i++) {
      gAbs += Math.abs(g(i)) / len;
      gxAbs += Math.abs(g(i) * xhat(i)) / len;
    }
    // layer: inv (|g| + mean|g| + |xhat| mean|g xhat|); rms (mean 0): r (|g| + |x| r^2 mean|g x|)
    for (let i = b; i < b + len; i++) s[i] = inv * (Math.abs(g(i)) + (kind === 'layer' ? gAbs : 0) + Math.abs(xhat(i)) * gxAbs);
  });

/** softmaxGrad over `dim` of y (in [0, 1), or log-probabilities in [-6, 0)) and gy in [-1, 1). */
async function checkSoftmax(y: ViewRecipe, gyKind: ViewRecipe['kind'], dim: number, log: boolean): Promise<void> {
  const rank = y.shape.length;
  const order = [...y.shape.keys()].filter((d) => d !== dim).concat(dim);
  const inputs = [view(y, log ? -6 : 0, log ? 0 : 1), view({ shape: y.shape, kind: gyKind, seed: y.seed + 1 })];
  // a negative dim half the time: the front end takes either
  const d = y.seed % 2 ? dim : dim - rank;
  await agreeGrad(`${log ? 'log' : ''}softmaxGrad dim ${d} ${JSON.stringify(y)} gy ${gyKind}`, inputs, ([a, g]) => uhd.softmaxGrad(a, g, d, log), softmaxScale(log), order);
}

interface Affine {
  weight: boolean;
  wKind: ViewRecipe['kind'];
}
const arbAffine: fc.Arbitrary<Affine> = fc.record({ weight: fc.boolean(), wKind: arbKind });

/** layerNormGrad / rmsNormGrad of x (values in [lo, hi)), gy in [-1, 1) of any layout, weight or not. */
async function checkNorm(kind: 'layer' | 'rms', x: Input, shape: number[], gyKind: ViewRecipe['kind'], seed: number, affine: Affine, eps = 1e-5): Promise<void> {
  const d = shape[shape.length - 1];
  const inputs = [x, view({ shape, kind: gyKind, seed: seed + 1 })];
  if (affine.weight) inputs.push(view({ shape: [d], kind: affine.wKind, seed: seed + 2 }));
  const op = ([a, g, w]: Tensor[]) => (kind === 'layer' ? uhd.layerNormGrad(a, w ?? null, g, eps) : uhd.rmsNormGrad(a, w ?? null, g, eps));
  await agreeGrad(`${kind}NormGrad ${JSON.stringify(shape)} gy ${gyKind} ${JSON.stringify(affine)}`, inputs, op, normScale(kind, eps));
}

/** Row counts and lengths: long rows (1000..3000, a multiple of 4 half the time) or many short ones. */
const arbRows = fc.oneof(
  fc.tuple(fc.integer({ min: 1, max: 6 }), fc.oneof(fc.integer({ min: 1000, max: 3000 }), fc.integer({ min: 250, max: 750 }).map((k) => 4 * k))),
  fc.tuple(fc.integer({ min: 200, max: 3000 }), fc.integer({ min: 1, max: 16 })),
);

describe('softmaxGrad matches the CPU reference', () => {
  it('over every dim of random shapes and views, softmax and log-softmax', async () => {
    const arb = fc.tuple(arbView(arbShape(1, 4, 37, 20_000)), arbKind, fc.nat(), fc.boolean());
    await fc.assert(
      fc.asyncProperty(arb, async ([y, gyKind, dim, log]) => {
        await checkSoftmax(y, gyKind, dim % y.shape.length, log);
      }),
      PROP,
    );
  });

  it('on long rows (1000..3000) and many short rows (1..16), along either dim', async () => {
    await fc.assert(
      fc.asyncProperty(arbRows, arbKind, arbKind, arbSeed, fc.integer({ min: 0, max: 1 }), fc.boolean(), async ([n, d], yKind, gyKind, seed, dim, log) => {
        await checkSoftmax({ shape: [n, d], kind: yKind, seed }, gyKind, dim, log);
      }),
      { ...PROP, numRuns: 16 },
    );
  });
});

for (const kind of ['layer', 'rms'] as const) {
  describe(`${kind}NormGrad matches the CPU reference`, () => {
    it('on random shapes and views, with and without a weight of any layout', async () => {
      await fc.assert(
        fc.asyncProperty(arbView(arbShape(1, 4, 37, 20_000)), arbKind, arbAffine, async (r, gyKind, affine) => {
          await checkNorm(kind, view(r), r.shape, gyKind, r.seed, affine);
        }),
        PROP,
      );
    });

    it('on long rows (1000..3000) and many short rows (1..16)', async () => {
      await fc.assert(
        fc.asyncProperty(arbRows, arbKind, arbKind, arbSeed, arbAffine, async ([n, d], xKind, gyKind, seed, affine) => {
          const shape = [n, d];
          await checkNorm(kind, view({ shape, kind: xKind, seed }), shape, gyKind, seed, affine);
        }),
        { ...PROP, numRuns: 14 },
      );
    });

    it('keeps its precision for rows with a large mean and a small spread', async () => {
      const ranges = fc.constantFrom([1000, 1001], [-1000, -999], [1e4, 1e4 + 0.1]);
      await fc.assert(
        fc.asyncProperty(fc.integer({ min: 1, max: 4 }), fc.integer({ min: 2, max: 3000 }), arbKind, arbSeed, arbAffine, ranges, async (n, d, xKind, seed, affine, [lo, hi]) => {
          const shape = [n, d];
          await checkNorm(kind, view({ shape, kind: xKind, seed }, lo, hi), shape, 'dense', seed, affine, kind === 'layer' ? 1e-12 : 1e-6);
        }),
        { ...PROP, numRuns: 12 },
      );
    });
  });
}

describe('every kernel matches the CPU reference on row windows at every alignment', () => {
  it('rows that move as vec4f and rows one element off', async () => {
    // x (or y) and gy are columns [at, at + d) of [n, d + pad + at] tensors: rows move as vec4f
    // when d, pad and at are multiples of 4, element by element otherwise.
    const kinds = fc.constantFrom('softmax', 'logSoftmax', 'layer', 'rms');
    const arb = fc.tuple(kinds, fc.integer({ min: 1, max: 40 }), fc.integer({ min: 1, max: 300 }), fc.constantFrom(0, 1, 4), fc.constantFrom(0, 1, 4), arbSeed, arbAffine);
    await fc.assert(
      fc.asyncProperty(arb, async ([kind, n, k, pad, at, seed, affine]) => {
        const d = seed % 3 === 0 ? k : 4 * k;
        const windowOf = (rows: number[], s: number, lo: number, hi: number): Input => (device) => {
          const shape = [...rows, d + pad + at];
          const base = uhd.tensor(values(shape.reduce((a, b) => a * b), s, lo, hi), { shape, dtype: 'float32', device });
          const w = base.slice(...rows.map(() => null), [at, at + d]);
          base.dispose();
          return w;
        };
        const label = `${kind} window ${JSON.stringify({ n, d, pad, at })}`;
        const gy = windowOf([n], seed + 1, -1, 1);
        if (kind === 'softmax' || kind === 'logSoftmax') {
          const log = kind === 'logSoftmax';
          const y = windowOf([n], seed, log ? -6 : 0, log ? 0 : 1);
          await agreeGrad(label, [y, gy], ([a, g]) => uhd.softmaxGrad(a, g, -1, log), softmaxScale(log));
          return;
        }
        const inputs = [windowOf([n], seed, -1, 1), gy];
        // the weight: a window at the same offset, or a view of any layout
        if (affine.weight) inputs.push(seed % 2 ? windowOf([], seed + 2, -1, 1) : view({ shape: [d], kind: affine.wKind, seed: seed + 2 }));
        const op = ([a, g, w]: Tensor[]) => (kind === 'layer' ? uhd.layerNormGrad(a, w ?? null, g, 1e-5) : uhd.rmsNormGrad(a, w ?? null, g, 1e-5));
        await agreeGrad(`${label} ${JSON.stringify(affine)}`, inputs, op, normScale(kind, 1e-5));
      }),
      { ...PROP, numRuns: 32 },
    );
  });
});

describe('norm gradients: edge cases', () => {
  it('an empty last dim gives an empty gradient', async () => {
    const x = uhd.zeros([3, 0], { device: DEVICE });
    for (const gx of [uhd.softmaxGrad(x, x, -1, false), uhd.layerNormGrad(x, null, x, 1e-5), uhd.rmsNormGrad(x, null, x, 1e-6)]) {
      expect(gx.shape).toEqual([3, 0]);
      expect((await gx.data()).length).toBe(0);
      gx.dispose();
    }
    x.dispose();
  });

  it('a weight that does not match the last dim is refused with both shapes', () => {
    const x = uhd.zeros([2, 5], { device: DEVICE });
    const w = uhd.zeros([4], { device: DEVICE });
    expect(() => uhd.layerNormGrad(x, w, x, 1e-5)).toThrow('layerNormGrad: weight must be [5] to match x [2,5], got [4]');
    expect(() => uhd.rmsNormGrad(x, w, x, 1e-5)).toThrow('rmsNormGrad: weight must be [5] to match x [2,5], got [4]');
    x.dispose();
    w.dispose();
  });
});
