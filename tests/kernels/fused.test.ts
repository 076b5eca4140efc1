/**
 * The fused ops' kernels (kernels/matmul.ts's linear epilogue, kernels/multi-tensor.ts) against
 * their compositions of plain ops on the CPU (tensor/ops/fused.ts), on random shapes, views
 * and, for the multi-tensor kernels, with the binding limit lowered so that tensors are cut
 * into windows bound separately.
 */
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { gpuContext } from '../../kernels/index.js';
import { bufferOf } from '../../kernels/runtime.js';
import * as uhd from '../../tensor/index.js';
import type { AdamWHyper, Tensor } from '../../tensor/index.js';
import { expectClose, PROP, useWebGPU, values } from '../support.js';

useWebGPU();

afterEach(() => {
  gpuContext().bindingLimit = null;
  gpuContext().tuning.fused = true;
});

function t(device: 'cpu' | 'webgpu', shape: number[], seed: number, lo = -1, hi = 1): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return uhd.tensor(values(n, seed, lo, hi), { shape, dtype: 'float32', device });
}

/** Runs `f` counting dispatches by label. */
async function counted<T>(f: () => T): Promise<{ result: T; labels: Map<string, number> }> {
  const c = gpuContext();
  const labels = new Map<string, number>();
  c.stats.byLabel = labels;
  try {
    return { result: f(), labels };
  } finally {
    c.stats.byLabel = null;
  }
}

const ACTS = ['none', 'gelu', 'geluErf'] as const;

describe('linear: x Wᵀ + b, activation and residual in the matmul epilogue', () => {
  it('equals the composition matmul, add, activation, add on random shapes, in one dispatch', async () => {
    // Each (tile config, operand modes, epilogue) is a pipeline that llvmpipe compiles for a
    // second or more: sizes and flags are drawn from few values to keep the count down.
    const dim = fc.constantFrom(1, 5, 32, 61, 130);
    await fc.assert(
      fc.asyncProperty(dim, fc.constantFrom(3, 32, 61), dim, fc.constantFrom(0, 5, 10, 13, 20, 30), fc.integer({ min: 1, max: 1e6 }), async (M, K, N, flags, seed) => {
        const act = ACTS[flags % 3];
        const withBias = (flags & 4) > 0;
        const withRes = (flags & 8) > 0;
        const transposedX = (flags & 16) > 0; // x as a transposed view [K, M]ᵀ
        const make = (device: 'cpu' | 'webgpu') => {
          const xb = transposedX ? t(device, [K, M], seed) : t(device, [M, K], seed);
          const x = transposedX ? xb.transpose() : xb;
          if (x !== xb) xb.dispose();
          return { x, w: t(device, [N, K], seed + 1), b: t(device, [N], seed + 2), r: t(device, [M, N], seed + 3) };
        };
        const c = make('cpu');
        const g = make('webgpu');
        const want = uhd.linear(c.x, c.w, withBias ? c.b : null, { activation: act, residual: withRes ? c.r : null });
        const { result: got, labels } = await counted(() => uhd.linear(g.x, g.w, withBias ? g.b : null, { activation: act, residual: withRes ? g.r : null }));
        expect(labels.get('linear') ?? 0).toBe(1);
        expect([...labels.keys()].filter((k) => k !== 'linear' && k !== 'copy')).toEqual([]);
        expect(got.shape).toEqual([M, N]);
        expectClose(await got.data(), await want.data(), { atol: 4e-6 * Math.sqrt(K) + 1e-6, rtol: 1e-5 }, `linear M=${M} K=${K} N=${N} flags=${flags}`);
        for (const x of [...Object.values(c), ...Object.values(g), want, got]) x.dispose();
      }),
      { ...PROP, numRuns: Math.min(PROP.numRuns, 12) },
    );
  }, 300_000);

  it('keeps the pre-activation when asked, and batch dims pass through', async () => {
    const x = t('webgpu', [2, 5, 7], 1);
    const w = t('webgpu', [9, 7], 2);
    const b = t('webgpu', [9], 3);
    const fused = uhd.linearForward(x, w, b, { activation: 'gelu', keepPreact: true });
    gpuContext().tuning.fused = false;
    const plain = uhd.linearForward(x, w, b, { activation: 'gelu', keepPreact: true });
    expect(fused.out.shape).toEqual([2, 5, 9]);
    expect(fused.preact!.shape).toEqual([2, 5, 9]);
    expectClose(await fused.out.data(), await plain.out.data());
    expectClose(await fused.preact!.data(), await plain.preact!.data());
    for (const z of [x, w, b, fused.out, fused.preact!, plain.out, plain.preact!]) z.dispose();
  });

  it('names the mismatched operand', () => {
    const x = t('cpu', [3, 4], 1);
    const w = t('cpu', [5, 3], 2);
    expect(() => uhd.linear(x, w)).toThrow(/linear: x \[3,4\] and weight \[5,3\] do not match/);
    const w2 = t('cpu', [5, 4], 2);
    expect(() => uhd.linear(x, w2, t('cpu', [4], 3))).toThrow(/bias \[4\] must be \[5\]/);
    expect(() => uhd.linear(x, w2, null, { residual: t('cpu', [3, 4], 4) })).toThrow(/residual \[3,4\] must have the output's shape \[3,5\]/);
  });
});

function hyper(i: number, step: number): AdamWHyper {
  return { lr: 1e-2 * (1 + (i % 3)), beta1: 0.9, beta2: 0.98, eps: 1e-8, weightDecay: i % 2 ? 0.01 : 0, step };
}

/** Parameters of the given sizes with grads, moments, on a device (same values on both). */
function params(device: 'cpu' | 'webgpu', sizes: number[], seed: number) {
  return sizes.map((n, i) => ({
    param: t(device, [n], seed + 10 * i),
    grad: t(device, [n], seed + 10 * i + 1),
    m: t(device, [n], seed + 10 * i + 2, -0.1, 0.1),
    v: t(device, [n], seed + 10 * i + 3, 0, 0.1),
  }));
}

describe('multi-tensor kernels', () => {
  const sizes = fc.array(fc.oneof(fc.integer({ min: 1, max: 3000 }), fc.constantFrom(1, 1024, 1025, 4096)), { minLength: 1, maxLength: 20 });

  for (const lowered of [false, true]) {
    const what = lowered ? ', with a 4 KiB binding limit (tensors cut into windows)' : '';
    it(`adamwMany equals one AdamW step per parameter on the CPU${what}`, async () => {
      await fc.assert(
        fc.asyncProperty(sizes, fc.integer({ min: 1, max: 1e6 }), fc.integer({ min: 1, max: 5 }), async (ns, seed, step) => {
          gpuContext().bindingLimit = lowered ? 4096 : null;
          const cpu = params('cpu', ns, seed);
          const gpu = params('webgpu', ns, seed);
          for (const [i, p] of cpu.entries()) uhd.adamwStep(p.param, p.grad, p.m, p.v, hyper(i, step));
          const { labels } = await counted(() => uhd.adamwSteps(gpu.map((p, i) => ({ ...p, h: hyper(i, step) }))));
          expect(labels.get('adamw') ?? 0).toBe(0);
          // slots per dispatch: as many as the runtime binds alone (the gradients), and the bindings allow
          const per = Math.min(Math.floor(gpuContext().limits.maxStorageBuffersPerShaderStage / 4), gpuContext().soloBindings);
          if (!lowered) expect(labels.get('adamwMany')).toBe(Math.ceil(ns.length / per));
          for (const [i, p] of gpu.entries()) {
            for (const k of ['param', 'm', 'v'] as const) expectClose(await p[k].data(), await cpu[i][k].data(), { atol: 1e-6, rtol: 1e-5 }, `${k} ${i} of ${ns}`);
          }
          for (const p of [...cpu, ...gpu]) for (const x of Object.values(p)) x.dispose();
        }),
        { ...PROP, numRuns: Math.min(PROP.numRuns, 12) },
      );
    });

    it(`sumOfSquares and scaleMany equal their compositions${what}`, async () => {
      await fc.assert(
        fc.asyncProperty(sizes, fc.integer({ min: 1, max: 1e6 }), async (ns, seed) => {
          gpuContext().bindingLimit = lowered ? 4096 : null;
          const cx = ns.map((n, i) => t('cpu', [n], seed + i));
          const gx = ns.map((n, i) => t('webgpu', [n], seed + i));
          const want = uhd.sumOfSquares(cx);
          const { result: got, labels } = await counted(() => uhd.sumOfSquares(gx));
          expect(labels.has('reduce sum')).toBe(false);
          expectClose(await got.data(), await want.data(), { atol: 1e-4, rtol: 1e-5 }, 'sum of squares');
          const cs = uhd.tensor([0.37], { shape: [] });
          const gs = uhd.tensor([0.37], { shape: [], device: 'webgpu' });
          const cw = uhd.scaleMany(cx, cs);
          const gw = uhd.scaleMany(gx, gs);
          for (const [i, g] of gw.entries()) expectClose(await g.data(), await cw[i].data(), undefined, `scaled ${i}`);
          // in place: the same values, in the same buffers, in one dispatch per solo-bound slots
          const buffers = gx.map((x) => bufferOf(x));
          const { labels: inPlace } = await counted(() => uhd.scaleManyInPlace(gx, gs));
          if (!lowered) expect(inPlace.get('scaleMany')).toBe(Math.ceil(ns.length / gpuContext().soloBindings));
          expect(inPlace.has('mul')).toBe(false);
          for (const [i, g] of gx.entries()) {
            expect(bufferOf(g)).toBe(buffers[i]);
            expectClose(await g.data(), await cw[i].data(), undefined, `scaled in place ${i}`);
          }
          for (const x of [...cx, ...gx, want, got, cs, gs, ...cw, ...gw]) x.dispose();
        }),
        { ...PROP, numRuns: Math.min(PROP.numRuns, 12) },
      );
    });
  }

  it('scaleManyInPlace on views of one storage (two writable bindings of a buffer) composes instead, with the same values', async () => {
    const base = t('webgpu', [6, 8], 7);
    const cbase = t('cpu', [6, 8], 7);
    const views = [base.narrow(0, 0, 2), base.narrow(0, 2, 4)];
    const s = uhd.tensor([0.5], { shape: [], device: 'webgpu' });
    const { labels } = await counted(() => uhd.scaleManyInPlace(views, s));
    expect(labels.has('scaleMany')).toBe(false);
    expectClose(await base.data(), await uhd.mul(cbase, 0.5).data());
    for (const x of [base, cbase, ...views, s]) x.dispose();
  });

  it('the optimizer and the clip make no bind groups when the gradients come in other (already seen) buffers', async () => {
    // a training step's gradients land in whatever pooled buffers the backward pass freed: each
    // gradient is bound alone (a bind group per buffer), the parameters and moments together
    const ps = params('webgpu', [300, 300, 300, 300, 300, 300, 300], 3);
    const grads = ps.map((p) => p.grad);
    const s = uhd.tensor([0.5], { shape: [], device: 'webgpu' });
    const step = (order: Tensor[], k: number) => {
      uhd.scaleManyInPlace(order, s);
      uhd.sumOfSquares(order).dispose();
      uhd.adamwSteps(ps.map((p, i) => ({ ...p, grad: order[i], h: hyper(i, k) })));
    };
    step(grads, 1);
    await gpuContext().sync();
    const before = gpuContext().stats.bindGroupsCreated;
    // (each step syncs, as a training step does when it reads its loss: the partials' buffer comes back)
    step([...grads].reverse(), 2);
    await gpuContext().sync();
    step([...grads.slice(3), ...grads.slice(0, 3)], 3);
    await gpuContext().sync();
    expect(gpuContext().stats.bindGroupsCreated - before).toBe(0);
    for (const p of ps) for (const x of Object.values(p)) x.dispose();
    s.dispose();
  });

  it('a gradient view at an offset (a dense window) is read in place', async () => {
    const base = t('webgpu', [10, 8], 5);
    const g = base.narrow(0, 3, 4); // offset 24, dense
    const p = { param: t('webgpu', [4, 8], 6), m: uhd.zeros([4, 8], { device: 'webgpu' }), v: uhd.zeros([4, 8], { device: 'webgpu' }) };
    const ref = { param: t('cpu', [4, 8], 6), m: uhd.zeros([4, 8]), v: uhd.zeros([4, 8]) };
    const cg = t('cpu', [10, 8], 5).narrow(0, 3, 4);
    uhd.adamwSteps([{ ...p, grad: g, h: hyper(0, 1) }]);
    uhd.adamwStep(ref.param, cg, ref.m, ref.v, hyper(0, 1));
    expectClose(await p.param.data(), await ref.param.data(), { atol: 1e-6, rtol: 1e-5 });
    for (const x of [base, g, cg, ...Object.values(p), ...Object.values(ref)]) x.dispose();
  });
});
