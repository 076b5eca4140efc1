/**
 * The wasm backend's fused ops (backends/wasm/kernels/linear.ts, multi-tensor.ts) against their
 * compositions of plain ops on the CPU reference (tensor/ops/fused.ts), on random shapes and
 * views. Each case checks the fused kernel ran (its run counter moved, the backend method
 * returned true) and no plain elementwise op did.
 */
import fc from 'fast-check';
import { describe, expect, it, vi } from 'vitest';
import { linearRuns } from '../../backends/wasm/kernels/linear.js';
import { multiTensorRuns } from '../../backends/wasm/kernels/multi-tensor.js';
import * as ag from '../../autograd/index.js';
import * as uhd from '../../tensor/index.js';
import type { AdamWHyper, Tensor } from '../../tensor/index.js';
import { expectClose, PROP, useDevice, values } from '../support.js';

useDevice('wasm');

function t(device: 'cpu' | 'wasm', shape: number[], seed: number, lo = -1, hi = 1): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return uhd.tensor(values(n, seed, lo, hi), { shape, dtype: 'float32', device });
}

/** Runs `f` on wasm, returning how many plain unary/binary backend calls it made. */
function plainCalls<T>(f: () => T): { result: T; plain: number } {
  const b = uhd.getBackend('wasm');
  const spies = [vi.spyOn(b, 'unary'), vi.spyOn(b, 'binary')];
  try {
    const result = f();
    return { result, plain: spies.reduce((s, x) => s + x.mock.calls.length, 0) };
  } finally {
    for (const s of spies) s.mockRestore();
  }
}

const ACTS = ['none', 'gelu', 'geluErf'] as const;

describe('linear on wasm: matmul, then bias, activation and residual in one epilogue pass', () => {
  it('equals the composition on the CPU on random shapes and views, and runs fused', async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 70 }), fc.integer({ min: 1, max: 70 }), fc.integer({ min: 1, max: 70 }), fc.integer({ min: 0, max: 31 }), fc.integer({ min: 1, max: 1e6 }), async (M, K, N, flags, seed) => {
        const act = ACTS[flags % 3];
        const withBias = (flags & 4) > 0;
        const withRes = (flags & 8) > 0;
        const transposedX = (flags & 16) > 0;
        const make = (device: 'cpu' | 'wasm') => {
          const xb = transposedX ? t(device, [K, M], seed) : t(device, [M, K], seed);
          const x = transposedX ? xb.transpose() : xb;
          if (x !== xb) xb.dispose();
          return { x, w: t(device, [N, K], seed + 1), b: t(device, [N], seed + 2), r: t(device, [M, N], seed + 3) };
        };
        const c = make('cpu');
        const g = make('wasm');
        const want = uhd.linear(c.x, c.w, withBias ? c.b : null, { activation: act, residual: withRes ? c.r : null });
        const before = linearRuns.n;
        const { result: got, plain } = plainCalls(() => uhd.linear(g.x, g.w, withBias ? g.b : null, { activation: act, residual: withRes ? g.r : null }));
        expect(linearRuns.n).toBe(before + 1);
        expect(plain).toBe(0);
        expect(got.shape).toEqual([M, N]);
        expectClose(await got.data(), await want.data(), { atol: 1e-5 * Math.sqrt(K) + 1e-6, rtol: 1e-4 }, `linear M=${M} K=${K} N=${N} flags=${flags}`);
        for (const x of [...Object.values(c), ...Object.values(g), want, got]) x.dispose();
      }),
      PROP,
    );
  });

  it('keeps the pre-activation when asked (batch dims pass through), and the gradient through it matches the CPU', async () => {
    for (const act of ['gelu', 'geluErf'] as const) {
      const mkAll = (device: 'cpu' | 'wasm') => ({ x: t(device, [2, 5, 7], 1), w: t(device, [9, 7], 2), b: t(device, [9], 3), r: t(device, [2, 5, 9], 4) });
      const c = mkAll('cpu');
      const g = mkAll('wasm');
      const want = uhd.linearForward(c.x, c.w, c.b, { activation: act, residual: c.r, keepPreact: true });
      const before = linearRuns.n;
      const got = uhd.linearForward(g.x, g.w, g.b, { activation: act, residual: g.r, keepPreact: true });
      expect(linearRuns.n).toBe(before + 1);
      expect(got.out.shape).toEqual([2, 5, 9]);
      expect(got.preact!.shape).toEqual([2, 5, 9]);
      expectClose(await got.out.data(), await want.out.data(), undefined, `${act} out`);
      expectClose(await got.preact!.data(), await want.preact!.data(), undefined, `${act} preact`);
      // through autograd: the forward is the fused kernel, the backward uses its pre-activation
      for (const s of [c, g]) for (const x of Object.values(s)) x.requiresGrad = true;
      const lc = ag.sum(ag.mul(ag.linear(c.x, c.w, c.b, { activation: act, residual: c.r }), c.r));
      const n0 = linearRuns.n;
      const lg = ag.sum(ag.mul(ag.linear(g.x, g.w, g.b, { activation: act, residual: g.r }), g.r));
      expect(linearRuns.n).toBe(n0 + 1);
      lc.backward();
      lg.backward();
      for (const k of ['x', 'w', 'b', 'r'] as const) expectClose(await g[k].grad!.data(), await c[k].grad!.data(), { atol: 1e-5, rtol: 1e-4 }, `${act} grad ${k}`);
      for (const x of [...Object.values(c), ...Object.values(g), want.out, want.preact!, got.out, got.preact!, lc, lg]) x.dispose();
    }
  });

  it('under noGrad keeps no pre-activation, though the weights require grad', () => {
    const x = t('wasm', [4, 6], 1);
    const w = t('wasm', [5, 6], 2).requiresGrad_();
    const b = t('wasm', [5], 3).requiresGrad_();
    const spy = vi.spyOn(uhd.getBackend('wasm'), 'linear');
    const y = ag.noGrad(() => ag.linear(x, w, b, { activation: 'gelu' }));
    const z = ag.linear(x, w, b, { activation: 'gelu' });
    expect(spy.mock.calls.map((c) => c[6] === null)).toEqual([true, false]);
    spy.mockRestore();
    for (const u of [x, w, b, y, z]) u.dispose();
  });
});

function hyper(i: number, step: number): AdamWHyper {
  return { lr: 1e-2 * (1 + (i % 3)), beta1: 0.9, beta2: 0.98, eps: 1e-8, weightDecay: i % 2 ? 0.01 : 0, step };
}

function params(device: 'cpu' | 'wasm', sizes: number[], seed: number) {
  return sizes.map((n, i) => ({
    param: t(device, [n], seed + 10 * i),
    grad: t(device, [n], seed + 10 * i + 1),
    m: t(device, [n], seed + 10 * i + 2, -0.1, 0.1),
    v: t(device, [n], seed + 10 * i + 3, 0, 0.1),
  }));
}

describe('multi-tensor kernels on wasm: every tensor in one pool run', () => {
  const sizes = fc.array(fc.oneof(fc.integer({ min: 1, max: 3000 }), fc.constantFrom(1, 4095, 4096, 4097, 70000)), { minLength: 1, maxLength: 12 });

  it('adamwMany equals one AdamW step per parameter on the CPU, in one run', async () => {
    await fc.assert(
      fc.asyncProperty(sizes, fc.integer({ min: 1, max: 1e6 }), fc.integer({ min: 1, max: 5 }), async (ns, seed, step) => {
        const cpu = params('cpu', ns, seed);
        const dev = params('wasm', ns, seed);
        for (const [i, p] of cpu.entries()) uhd.adamwStep(p.param, p.grad, p.m, p.v, hyper(i, step));
        const before = multiTensorRuns.adamwMany;
        const spy = vi.spyOn(uhd.getBackend('wasm'), 'adamw');
        uhd.adamwSteps(dev.map((p, i) => ({ ...p, h: hyper(i, step) })));
        expect(spy.mock.calls.length).toBe(0);
        spy.mockRestore();
        expect(multiTensorRuns.adamwMany).toBe(before + 1);
        for (const [i, p] of dev.entries()) {
          for (const k of ['param', 'm', 'v'] as const) expectClose(await p[k].data(), await cpu[i][k].data(), { atol: 1e-6, rtol: 1e-5 }, `${k} ${i} of ${ns}`);
        }
        for (const p of [...cpu, ...dev]) for (const x of Object.values(p)) x.dispose();
      }),
      { ...PROP, numRuns: Math.min(PROP.numRuns, 15) },
    );
  });

  it('a gradient view at an offset and a transposed gradient are read correctly', async () => {
    const base = t('wasm', [10, 8], 5);
    const g = base.narrow(0, 3, 4); // offset 24, dense
    const gtB = t('wasm', [8, 4], 7);
    const gt = gtB.transpose(); // strided: copied once
    const p = [0, 1].map((i) => ({ param: t('wasm', [4, 8], 6 + i), m: uhd.zeros([4, 8], { device: 'wasm' }), v: uhd.zeros([4, 8], { device: 'wasm' }) }));
    const ref = [0, 1].map((i) => ({ param: t('cpu', [4, 8], 6 + i), m: uhd.zeros([4, 8]), v: uhd.zeros([4, 8]) }));
    const cg = t('cpu', [10, 8], 5).narrow(0, 3, 4);
    const cgt = t('cpu', [8, 4], 7).transpose();
    uhd.adamwSteps([{ ...p[0], grad: g, h: hyper(0, 1) }, { ...p[1], grad: gt, h: hyper(1, 1) }]);
    uhd.adamwStep(ref[0].param, cg, ref[0].m, ref[0].v, hyper(0, 1));
    uhd.adamwStep(ref[1].param, cgt, ref[1].m, ref[1].v, hyper(1, 1));
    for (const i of [0, 1]) expectClose(await p[i].param.data(), await ref[i].param.data(), { atol: 1e-6, rtol: 1e-5 }, `param ${i}`);
    for (const x of [base, g, gtB, gt, cg, cgt, ...p.flatMap(Object.values), ...ref.flatMap(Object.values)]) x.dispose();
  });

  it('sumOfSquares and scaleMany equal their compositions on the CPU, each in one run', async () => {
    await fc.assert(
      fc.asyncProperty(sizes, fc.integer({ min: 1, max: 1e6 }), async (ns, seed) => {
        const cx = ns.map((n, i) => t('cpu', [n], seed + i));
        const gx = ns.map((n, i) => t('wasm', [n], seed + i));
        const want = uhd.sumOfSquares(cx);
        const s0 = multiTensorRuns.sumOfSquares;
        const { result: got, plain } = plainCalls(() => uhd.sumOfSquares(gx));
        expect(multiTensorRuns.sumOfSquares).toBe(s0 + 1);
        expect(plain).toBe(0);
        expectClose(await got.data(), await want.data(), { atol: 1e-4, rtol: 1e-5 }, 'sum of squares');
        const cs = uhd.tensor([0.37], { shape: [] });
        const gs = uhd.tensor([0.37], { shape: [], device: 'wasm' });
        const cw = uhd.scaleMany(cx, cs);
        const c0 = multiTensorRuns.scaleMany;
        const { result: gw, plain: plain2 } = plainCalls(() => uhd.scaleMany(gx, gs));
        expect(multiTensorRuns.scaleMany).toBe(c0 + 1);
        expect(plain2).toBe(0);
        for (const [i, g] of gw.entries()) expectClose(await g.data(), await cw[i].data(), undefined, `scaled ${i}`);
        for (const x of [...cx, ...gx, want, got, cs, gs, ...cw, ...gw]) x.dispose();
      }),
      { ...PROP, numRuns: Math.min(PROP.numRuns, 15) },
    );
  });

  it('a strided x is declined and composed, with the same result', async () => {
    const base = t('wasm', [6, 5], 3);
    const x = base.transpose();
    const cx = t('cpu', [6, 5], 3).transpose();
    const s0 = multiTensorRuns.sumOfSquares;
    const got = uhd.sumOfSquares([x]);
    expect(multiTensorRuns.sumOfSquares).toBe(s0);
    const want = uhd.sumOfSquares([cx]);
    expectClose(await got.data(), await want.data(), { atol: 1e-5, rtol: 1e-5 });
    for (const z of [base, x, cx, got, want]) z.dispose();
  });
});

describe('the multi-tensor front ends check every tensor without spreading them into arguments', () => {
  it('name the op when one tensor of many sits on another device or was disposed', () => {
    const h = { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, step: 1 };
    const item = (device: 'cpu' | 'wasm', seed: number) => ({ param: t(device, [3], seed), grad: t(device, [3], seed + 1), m: uhd.zeros([3], { device }), v: uhd.zeros([3], { device }), h });
    const items = [item('wasm', 1), item('wasm', 3), item('wasm', 5)];
    const wrong = { ...items[2], v: uhd.zeros([3]) }; // the last tensor of the last item on the CPU
    expect(() => uhd.adamwSteps([items[0], items[1], wrong])).toThrow('adamw: tensors are on different devices (wasm and cpu); move one with .to()');
    const xs = items.map((i) => i.grad);
    const cpuX = t('cpu', [3], 9);
    const scale = uhd.full([], 0.5, { device: 'wasm' });
    expect(() => uhd.sumOfSquares([...xs, cpuX])).toThrow('sumOfSquares: tensors are on different devices (wasm and cpu)');
    expect(() => uhd.scaleMany([...xs, cpuX], scale)).toThrow('scaleMany: tensors are on different devices (wasm and cpu)');
    expect(() => uhd.scaleManyInPlace(xs, uhd.full([], 0.5))).toThrow('scaleManyInPlace: tensors are on different devices (cpu and wasm)');
    expect(() => uhd.concat([...xs, cpuX])).toThrow('concat: tensors are on different devices (wasm and cpu)');
    items[1].m.dispose();
    expect(() => uhd.adamwSteps(items)).toThrow(/^adamw: .*disposed/);
    xs[1].dispose();
    expect(() => uhd.sumOfSquares(xs)).toThrow(/^sumOfSquares: .*disposed/);
    expect(() => uhd.concat(xs)).toThrow(/^concat: .*disposed/);
    for (const z of [...items.flatMap((i) => [i.param, i.grad, i.m, i.v]), wrong.v, cpuX, scale]) if (!z.disposed) z.dispose();
  });
});
