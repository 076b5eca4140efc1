/**
 * Dispatch plans (kernels/plans.ts): the cache itself, and for every front end that keeps
 * plans, that a call served from a stored plan dispatches exactly what a plan built afresh
 * for it does: label, pipeline key, uniform bytes (the offsets written per call included),
 * workgroups and bindings.
 */
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { attention } from '../../kernels/attention.js';
import { attentionGrad } from '../../kernels/attention-grad.js';
import { binary, copy, fill, unary, where } from '../../kernels/elementwise.js';
import { gpuContext } from '../../kernels/index.js';
import { linear, matmul } from '../../kernels/matmul.js';
import { layerNorm, rmsNorm } from '../../kernels/norm.js';
import { layerNormGrad, rmsNormGrad, softmaxGrad } from '../../kernels/norm-grad.js';
import { coalesce, coalesceInto } from '../../kernels/layout.js';
import { PlanCache, planCaching, Signature } from '../../kernels/plans.js';
import { reduce, softmax } from '../../kernels/reduce.js';
import type { DispatchArgs } from '../../kernels/runtime.js';
import * as uhd from '../../tensor/index.js';
import { Tensor } from '../../tensor/index.js';
import { expectClose, F32, useWebGPU } from '../support.js';

useWebGPU();

describe('coalesceInto', () => {
  it('merges and drops dims as coalesce does, into reused arrays', () => {
    const shapeOut: number[] = [];
    const stridesOut: number[][] = [[], [], [], []];
    const dims = fc.array(fc.integer({ min: 1, max: 4 }), { minLength: 0, maxLength: 6 });
    fc.assert(
      fc.property(dims, fc.integer({ min: 1, max: 4 }), fc.array(fc.integer({ min: 0, max: 3 }), { minLength: 24, maxLength: 24 }), (shape, count, picks) => {
        // each operand: contiguous, or some dims broadcast (stride 0) or transposed-like strides
        const strides = Array.from({ length: count }, (_, k) => {
          let s = 1;
          const out = shape.map(() => 0);
          for (let d = shape.length - 1; d >= 0; d--) {
            const pick = picks[(k * 6 + d) % picks.length];
            out[d] = pick === 0 ? 0 : pick === 3 ? s * 2 : s;
            s *= shape[d] * (pick === 3 ? 2 : 1);
          }
          return out;
        });
        const want = coalesce(shape, strides);
        const views = strides.map((st) => ({ strides: st }));
        const rank = coalesceInto(shape, views.slice(0, -1), views[count - 1], shapeOut, stridesOut);
        expect(rank).toBe(want.shape.length);
        expect(shapeOut).toEqual(want.shape);
        expect(stridesOut.slice(0, count)).toEqual(want.strides);
      }),
      { numRuns: 300 },
    );
  });
});

describe('Signature', () => {
  it('holds exactly what was pushed, 1 to 9 numbers a call, after any clear (its array is reused, not emptied)', () => {
    const sig = new Signature();
    const number = fc.oneof(fc.integer({ min: -1000, max: 1000 }), fc.double({ noNaN: true }), fc.constant(-0));
    fc.assert(
      fc.property(fc.array(fc.array(number, { minLength: 1, maxLength: 9 }), { maxLength: 12 }), (calls) => {
        sig.clear();
        const want: number[] = [];
        for (const args of calls) {
          (sig.push as (...xs: number[]) => void)(...args);
          want.push(...args);
        }
        expect(sig.length).toBe(want.length);
        expect(sig.values.slice(0, sig.length)).toEqual(want);
      }),
      { numRuns: 300 },
    );
  });
});

describe('PlanCache', () => {
  const owner = {};
  const write = (cache: PlanCache<string>, sig: number[]) => {
    const s = cache.start(owner);
    for (const x of sig) s.push(x);
  };
  const lookup = (cache: PlanCache<string>, sig: number[]) => {
    write(cache, sig);
    return cache.find();
  };
  const store = (cache: PlanCache<string>, sig: number[], plan: string) => {
    write(cache, sig);
    return cache.add(plan);
  };

  it('finds a plan under the exact signature it was stored with, and nothing under others', () => {
    const cache = new PlanCache<string>();
    store(cache, [1, 2, 3], 'a');
    expect(lookup(cache, [1, 2, 3])).toBe('a');
    expect(lookup(cache, [1, 2])).toBeUndefined();
    expect(lookup(cache, [1, 2, 3, 0])).toBeUndefined();
    expect(lookup(cache, [3, 2, 1])).toBeUndefined();
  });

  it('keeps apart signatures that hash alike (they differ only in fractions)', () => {
    const cache = new PlanCache<string>();
    store(cache, [7, 0.5], 'half');
    store(cache, [7, 0.25], 'quarter');
    expect(lookup(cache, [7, 0.5])).toBe('half');
    expect(lookup(cache, [7, 0.25])).toBe('quarter');
    expect(lookup(cache, [7, 0])).toBeUndefined();
  });

  it('stays within its bound and forgets everything when its owner changes', () => {
    const cache = new PlanCache<string>(4);
    for (let i = 0; i < 4; i++) store(cache, [i], `p${i}`);
    expect(cache.count).toBe(4);
    store(cache, [9], 'p9');
    expect(cache.count).toBe(1);
    expect(lookup(cache, [0])).toBeUndefined();
    expect(lookup(cache, [9])).toBe('p9');
    cache.start({});
    expect(cache.find()).toBeUndefined();
    expect(cache.count).toBe(0);
  });
});

interface Sent {
  label: string;
  key: string | undefined;
  uniforms: number[];
  workgroups: number[];
  buffers: number;
}

/** Records every dispatch `body` queues (copying the uniforms: plans reuse their buffer). */
function recorded(body: () => void): Sent[] {
  const c = gpuContext();
  const sent: Sent[] = [];
  const original = c.dispatch;
  c.dispatch = (args: DispatchArgs) => {
    sent.push({
      label: args.label,
      key: args.key,
      uniforms: args.uniforms ? Array.from(new Uint32Array(args.uniforms.slice(0))) : [],
      workgroups: [args.workgroups[0], args.workgroups[1] ?? 1, args.workgroups[2] ?? 1],
      buffers: args.buffers.length,
    });
    original.call(c, args);
  };
  try {
    body();
  } finally {
    c.dispatch = original;
  }
  return sent;
}

const gpu = (shape: number[]) => uhd.randn(shape, { device: 'webgpu' });
const empty = (shape: number[], dtype: 'float32' | 'int32' = 'float32') => Tensor.empty(shape, dtype, 'webgpu');

/**
 * Every planned front end, each called on views at two offsets of one storage and twice at the
 * first: with plans on, the second and third calls of each come from the first call's plan.
 */
function everyFrontEnd(): void {
  const wide = gpu([6, 100]);
  const outWide = empty([6, 100]);
  for (const at of [0, 32, 0]) {
    const a = wide.narrow(1, at, 64);
    const b = wide.narrow(1, at + 1, 64);
    const o = outWide.narrow(1, at, 64);
    binary('add', a, b, o);
    binary('sub', gpu([at + 5, 3]), gpu([at + 5, 3]), empty([at + 5, 3])); // dense: sizes written per call
    fill(empty([2, at + 7]), 1.5);
    binary('mul', a, wide.narrow(0, 1, 1).narrow(1, at, 64).expand([6, 64]), o);
    unary('relu', a, o);
    where(a, b, a, o);
    copy(a.transpose(0, 1), empty([64, 6]));
    fill(o, at + 0.5);
    fill(empty([6, 64], 'int32').narrow(1, 1, 60), -at - 3);
    reduce('sum', a, 1, empty([6]));
    reduce('mean', a.transpose(0, 1), 1, empty([64]));
    reduce('max', wide.reshape([600]).narrow(0, at, 512).reshape([1, 512]), 1, empty([1]));
    reduce('argmax', wide.reshape([1, 600]), 1, empty([1], 'int32'));
    reduce('sum', gpu([4, 4096]).narrow(1, at, 4000), 1, empty([4])); // split into chunks
    reduce('argmax', gpu([2, 8000 + at]), 1, empty([2], 'int32')); // split, indices carried
    reduce('sum', gpu([at + 40, 12]).transpose(), 1, empty([12])); // a bias gradient: the token count changes
    reduce('mean', gpu([3, at + 5, 4, 7]).permute(0, 2, 1, 3), 2, empty([3, 4]));
    softmax(a, at > 0, o);
    layerNorm(a, wide.narrow(0, 2, 1).reshape([100]).narrow(0, at, 64), null, 1e-5, o);
    rmsNorm(a, null, 1e-6, o);
    layerNorm(gpu([at + 300, 64]), null, null, 1e-5, empty([at + 300, 64])); // dense rows: their count written per call
    softmax(gpu([2, at + 130, 16]), false, empty([2, at + 130, 16]));
    rmsNormGrad(gpu([at + 260, 32]), null, gpu([at + 260, 32]), 1e-6, empty([at + 260, 32]));
    softmaxGrad(a, b, false, empty([6, 64]));
    layerNormGrad(a, null, b, 1e-5, empty([6, 64]));
    rmsNormGrad(a, wide.narrow(0, 3, 1).reshape([100]).narrow(0, at, 64), b, 1e-6, empty([6, 64]));
    const w = gpu([48, 100]).narrow(1, at, 64);
    matmul(a, w.transpose(), empty([6, 48]));
    matmul(gpu([2, 3, 8, 4]), gpu([2, 3, 4, 5]), empty([2, 3, 8, 5]));
    matmul(gpu([at + 3, 12]), gpu([12, 20]), empty([at + 3, 20])); // sizes written per call
    matmul(gpu([1, at + 3, 12]), gpu([1, 12, 20]), empty([1, at + 3, 20])); // a batch of one
    matmul(gpu([at + 5, 8]).transpose(), gpu([at + 5, 16]), empty([8, 16]));
    linear(gpu([at + 2, 64]), w, null, null, 'geluErf', empty([at + 2, 48]), null);
    linear(a, w, gpu([60]).narrow(0, at / 4, 48), null, 'gelu', empty([6, 48]), empty([6, 48]));
    linear(a, w, null, gpu([6, 60]).narrow(1, at / 4, 48), 'none', empty([6, 48]), null);
    const q = gpu([1, 2, 16, 8]);
    const kv = gpu([1, 2, 16, 20]).narrow(3, at / 8, 8);
    const seg = uhd.tensor([Array.from({ length: 20 }, (_, i) => (i < 7 ? 0 : 1))], { dtype: 'int32', device: 'webgpu' }).narrow(1, at / 8, 16);
    const p = { scale: 0.3, causal: true, segmentIdsQ: seg, segmentIdsK: seg, window: null };
    attention(q, kv, kv, p, empty([1, 2, 16, 8]));
    attention(q, kv, kv, { ...p, causal: false, window: { h: 4, w: 4 } }, empty([1, 2, 16, 8]));
    attentionGrad(q, kv, kv, p, q, empty([1, 2, 16, 8]), empty([1, 2, 16, 8]), empty([1, 2, 16, 8]));
    attentionGrad(q, kv, kv, { ...p, window: { h: 4, w: 4 } }, q, empty([1, 2, 16, 8]), empty([1, 2, 16, 8]), empty([1, 2, 16, 8]));
  }
}

describe('front ends served from a stored plan', () => {
  afterEach(() => {
    planCaching.enabled = true;
  });

  it('dispatch exactly what a plan built afresh dispatches, offsets included', async () => {
    uhd.manualSeed(3);
    planCaching.enabled = false;
    const fresh = uhd.tidy(() => recorded(everyFrontEnd));
    planCaching.enabled = true;
    uhd.manualSeed(3);
    const stored = uhd.tidy(() => recorded(everyFrontEnd));
    await gpuContext().sync();
    expect(stored.length).toBe(fresh.length);
    expect(new Set(stored.map((s) => s.label)).size).toBeGreaterThan(20);
    for (let i = 0; i < fresh.length; i++) expect(stored[i], `dispatch ${i} (${fresh[i].label})`).toEqual(fresh[i]);
  });

  it('on views at other offsets compute what they compute on dense copies of those views', async () => {
    // Host data; each GPU operand is a view (at an offset chosen per round) of an uploaded
    // tensor, and its dense copy is the same view made contiguous on the CPU, then uploaded:
    // no GPU kernel touches the copies, so a wrong offset in a stored plan cannot cancel out.
    uhd.manualSeed(7);
    const host = { x: uhd.randn([6, 100]), w: uhd.randn([48, 100]), v: uhd.randn([3, 100]), r: uhd.randn([6, 60]), kv: uhd.randn([1, 2, 16, 20]) };
    const seg = uhd.tensor([Array.from({ length: 20 }, (_, i) => (i < 9 ? 0 : 1))], { dtype: 'int32' });
    const onGpu = Object.fromEntries(Object.entries(host).map(([k, t]) => [k, t.to('webgpu')])) as typeof host;
    const segGpu = seg.to('webgpu');
    type Views = { a: Tensor; b: Tensor; w: Tensor; wv: Tensor; bv: Tensor; bias: Tensor; res: Tensor; kv: Tensor; seg: Tensor };
    const views = (t: typeof host, s: Tensor, at: number): Views => ({
      a: t.x.narrow(1, at, 64),
      b: t.x.narrow(1, at + 1, 64),
      w: t.w.narrow(1, at, 64),
      wv: t.v.narrow(0, 0, 1).reshape([100]).narrow(0, at, 64),
      bv: t.v.narrow(0, 1, 1).reshape([100]).narrow(0, at + 2, 64),
      bias: t.v.narrow(0, 2, 1).reshape([100]).narrow(0, at, 48),
      res: t.r.narrow(1, at / 4, 48),
      kv: t.kv.narrow(3, at / 8, 8),
      seg: s.narrow(1, at / 8, 16),
    });
    const calls: [string, (v: Views) => Tensor[]][] = [
      ['add', (v) => { const o = empty([6, 64]); binary('add', v.a, v.b, o); return [o]; }],
      ['sum', (v) => { const o = empty([6]); reduce('sum', v.b, 1, o); return [o]; }],
      ['softmax', (v) => { const o = empty([6, 64]); softmax(v.b, false, o); return [o]; }],
      ['layerNorm', (v) => { const o = empty([6, 64]); layerNorm(v.a, v.wv, v.bv, 1e-5, o); return [o]; }],
      ['rmsNormGrad', (v) => { const o = empty([6, 64]); rmsNormGrad(v.b, v.wv, v.a, 1e-6, o); return [o]; }],
      ['matmul', (v) => { const o = empty([6, 48]); matmul(v.b, v.w.transpose(), o); return [o]; }],
      ['linear', (v) => { const o = empty([6, 48]); const pre = empty([6, 48]); linear(v.a, v.w, v.bias, v.res, 'gelu', o, pre); return [o, pre]; }],
      ['attention', (v) => {
        const q = v.kv;
        const p = { scale: 0.3, causal: true, segmentIdsQ: v.seg, segmentIdsK: v.seg, window: null };
        const o = empty([1, 2, 16, 8]);
        attention(q, v.kv, v.kv, p, o);
        const g = [empty([1, 2, 16, 8]), empty([1, 2, 16, 8]), empty([1, 2, 16, 8])] as const;
        attentionGrad(q, v.kv, v.kv, p, q, ...g);
        return [o, ...g];
      }],
    ];
    for (const at of [0, 32, 16]) {
      const gpuViews = views(onGpu, segGpu, at);
      const cpuViews = views(host, seg, at);
      const dense = Object.fromEntries(Object.entries(cpuViews).map(([k, t]) => [k, t.contiguous().to('webgpu')])) as Views;
      for (const [name, call] of calls) {
        const got = call(gpuViews);
        const want = call(dense);
        for (let i = 0; i < got.length; i++) expectClose(await got[i].data(), await want[i].data(), F32, `${name} at ${at}, output ${i}`);
      }
    }
  });

  it('serve dense operands (and dense rows) of every shape from one plan, their sizes written per call', async () => {
    for (const shape of [[5, 3], [37], [13], [2, 1, 4], [1], [300, 2], [40]]) {
      const a = uhd.randn(shape);
      const b = uhd.randn(shape);
      const got = empty(shape);
      binary('mul', a.to('webgpu'), b.to('webgpu'), got);
      expectClose(await got.data(), await a.mul(b).data(), F32, `mul ${JSON.stringify(shape)}`);
      const rows = uhd.randn([...shape, 8]);
      const normed = empty([...shape, 8]);
      layerNorm(rows.to('webgpu'), null, null, 1e-5, normed);
      expectClose(await normed.data(), await uhd.layerNorm(rows, null, null, 1e-5).data(), { atol: 1e-5, rtol: 1e-4 }, `layerNorm ${JSON.stringify(shape)}x8`);
      const cols = uhd.randn([...shape, 6]);
      const colSums = empty([6]);
      reduce('sum', cols.reshape([-1, 6]).to('webgpu').transpose(), 1, colSums);
      expectClose(await colSums.data(), await cols.reshape([-1, 6]).sum(0).data(), { atol: 1e-5, rtol: 1e-4 }, `column sums ${JSON.stringify(shape)}x6`);
      const filled = empty(shape);
      fill(filled, shape[0] + 0.25);
      expect(Array.from(await filled.data())).toEqual(Array(a.size).fill(shape[0] + 0.25));
    }
  });

  it('serve matrix products of other sizes from one plan, M, N and K written per call', async () => {
    for (const [M, K, N] of [[6, 12, 20], [38, 12, 20], [6, 40, 20], [70, 36, 8], [1, 12, 20], [6, 1, 20]]) {
      const a = uhd.randn([M, K]);
      const b = uhd.randn([K, N]);
      const got = empty([M, N]);
      matmul(a.to('webgpu'), b.to('webgpu'), got);
      expectClose(await got.data(), await a.matmul(b).data(), { atol: 1e-5, rtol: 1e-4 }, `matmul ${M}x${K}x${N}`);
      const one = empty([1, M, N]);
      matmul(a.reshape([1, M, K]).to('webgpu'), b.reshape([1, K, N]).to('webgpu'), one);
      expectClose(await one.data(), await a.matmul(b).data(), { atol: 1e-5, rtol: 1e-4 }, `matmul 1x${M}x${K}x${N}`);
      const xt = uhd.randn([K, M]); // aᵀ, as in a weight gradient: K (the tokens) changes, no stride does
      const gotT = empty([M, N]);
      matmul(xt.to('webgpu').transpose(), b.to('webgpu'), gotT);
      expectClose(await gotT.data(), await xt.transpose().matmul(b).data(), { atol: 1e-5, rtol: 1e-4 }, `matmul ${M}x${K}x${N}, a transposed`);
      const w = uhd.randn([N, K]);
      const bias = uhd.randn([N]);
      const y = empty([M, N]);
      linear(a.to('webgpu'), w.to('webgpu'), bias.to('webgpu'), null, 'none', y, null);
      expectClose(await y.data(), await a.matmul(w.transpose()).add(bias).data(), { atol: 1e-5, rtol: 1e-4 }, `linear ${M}x${K}x${N}`);
    }
  });
});
