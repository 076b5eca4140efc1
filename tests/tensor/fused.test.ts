/**
 * The backend interface: capabilities decide what callers may do (dtypes, synchronous
 * read-back), and fused ops run a backend's kernel when it offers one and no gradient is
 * recorded through them, else their composition of plain ops, which is their reference. Runs on
 * the device under test (UHD_DEVICE) against the CPU reference.
 */
import { describe, expect, it, vi } from 'vitest';
import * as ag from '../../autograd/index.js';
import * as uhd from '../../tensor/index.js';
import type { Device, Tensor, WindowMergeArgs } from '../../tensor/index.js';
import { windowMergeReference } from '../../tensor/ops/window-merge.js';
import { DEVICE, expectClose, useDevice, values, type Tolerance } from '../support.js';

useDevice();

const TOL: Tolerance = { atol: 5e-5, rtol: 5e-4 };

/** windowMerge's arguments for `views` views of an h x w grid at width heads * headDim, on `device`. */
function args(device: Device, views: number, h: number, w: number, heads: number, headDim: number, seed: number): WindowMergeArgs {
  const d = heads * headDim;
  const S = h * w;
  const make = (shape: number[], s: number, scale = 1) =>
    uhd.tensor(values(shape.reduce((a, b) => a * b, 1), seed + s, -scale, scale), { shape, device, dtype: 'float32' });
  return {
    x: make([views, S, d], 1), q: make([views, S, d], 2), k: make([views, S, d], 3), v: make([views, S, d], 4),
    outWeight: make([d, d], 5, 1 / Math.sqrt(d)), outBias: make([d], 6), normWeight: make([4 * d], 7), normBias: make([4 * d], 8),
    grid: { h, w }, heads, eps: 1e-6,
  };
}

const tensorsOf = (a: WindowMergeArgs): Tensor[] => [a.x, a.q, a.k, a.v, a.outWeight, a.outBias, a.normWeight, a.normBias];

describe('windowMerge: the fused op, its composition, and the backend that offers it', () => {
  const cases = [
    { views: 1, h: 4, w: 6, heads: 2, headDim: 16 },
    { views: 3, h: 2, w: 2, heads: 1, headDim: 8 },
    { views: 2, h: 6, w: 4, heads: 6, headDim: 4 },
    { views: 1, h: 4, w: 4, heads: 2, headDim: 18 }, // head dim not a multiple of 4: WebGPU declines
  ];
  for (const c of cases) {
    it(`on ${DEVICE} equals the composition on the CPU: ${JSON.stringify(c)}`, async () => {
      const cpu = args('cpu', c.views, c.h, c.w, c.heads, c.headDim, 11);
      const dev = args(DEVICE, c.views, c.h, c.w, c.heads, c.headDim, 11);
      const want = windowMergeReference(cpu);
      const backend = uhd.getBackend(DEVICE);
      const spy = backend.windowMerge ? vi.spyOn(backend, 'windowMerge') : null;
      const got = uhd.windowMerge(dev);
      const fused = spy ? spy.mock.results.some((r) => r.value === true) : false;
      spy?.mockRestore();
      // WebGPU offers the kernel and runs it where it tiles the head dim
      if (DEVICE === 'webgpu') expect(fused).toBe(c.headDim % 4 === 0);
      expect(got.z.shape).toEqual([c.views, (c.h * c.w) / 4, 4 * c.heads * c.headDim]);
      expectClose(await got.z.data(), await want.z.data(), TOL, 'z');
      expectClose(await got.mean.data(), await want.mean.data(), TOL, 'mean');
      for (const t of [...tensorsOf(cpu), ...tensorsOf(dev), want.z, want.mean, got.z, got.mean]) t.dispose();
    });
  }

  it('while a gradient is recorded through an input, composes (never the kernel) and backpropagates to every input', async () => {
    const a = args(DEVICE, 2, 2, 4, 2, 4, 5);
    for (const t of tensorsOf(a)) t.requiresGrad = true;
    const backend = uhd.getBackend(DEVICE);
    const spy = backend.windowMerge ? vi.spyOn(backend, 'windowMerge') : null;
    const { z, mean } = uhd.windowMerge(a);
    expect(spy?.mock.calls.length ?? 0).toBe(0);
    spy?.mockRestore();
    ag.add(ag.sum(z), ag.sum(ag.mul(mean, 3))).backward();
    for (const [i, t] of tensorsOf(a).entries()) expect(t.grad, `input ${i}`).not.toBeNull();
    // the composition's gradient wrt x: mean's share (3/4 per token) plus z's
    expect(a.x.grad!.shape).toEqual(a.x.shape);
    for (const t of [...tensorsOf(a), z, mean]) t.dispose();
  });

  it('checks its inputs where they enter, naming the op and the shapes', () => {
    const a = args('cpu', 1, 4, 4, 2, 4, 1);
    expect(() => uhd.windowMerge({ ...a, grid: { h: 2, w: 8 } })).not.toThrow();
    expect(() => uhd.windowMerge({ ...a, grid: { h: 3, w: 5 } })).toThrow(/windowMerge: grid 3x5/);
    expect(() => uhd.windowMerge({ ...a, heads: 3 })).toThrow(/windowMerge: 3 heads do not divide d = 8/);
    expect(() => uhd.windowMerge({ ...a, normBias: a.outBias })).toThrow(/windowMerge: normBias must be \[32\], got \[8\]/);
    for (const t of tensorsOf(a)) t.dispose();
  });
});

describe('capabilities, not device names', () => {
  it(`${DEVICE} declares its dtypes and read-back, and what it lacks is refused naming the op`, async () => {
    const caps = uhd.getBackend(DEVICE).capabilities;
    expect(caps.dtypes).toContain('float32');
    expect(caps.dtypes).toContain('int32');
    const x = uhd.tensor([1, 2, 3], { device: DEVICE });
    if (!caps.dtypes.includes('float64')) {
      expect(() => uhd.zeros([2], { dtype: 'float64', device: DEVICE })).toThrow(`float64 is not a dtype of device '${DEVICE}'`);
      expect(() => uhd.tensor([1], { dtype: 'float64' }).to(DEVICE)).toThrow(`to: float64 is not a dtype of device '${DEVICE}'`);
      expect(() => x.cast('float64')).toThrow(`cast: float64 is not a dtype of device '${DEVICE}'`);
    }
    if (caps.syncRead) {
      expect(uhd.getBackend(DEVICE).readSync).toBeDefined();
      expect(Array.from(await x.mul(2).to('cpu').data())).toEqual([2, 4, 6]);
    } else {
      expect(() => x.to('cpu')).toThrow(/needs a read-back; use `await toDevice/);
      expect(Array.from(await (await uhd.toDevice(x, 'cpu')).data())).toEqual([1, 2, 3]);
    }
    expect(uhd.memory(DEVICE).tensors).toBeGreaterThan(0);
    x.dispose();
  });

  it('an unopened device is named in the error with how to open it', () => {
    expect(() => uhd.getBackend('nonesuch' as Device)).toThrow(/device 'nonesuch' is not open .*openDevice\('nonesuch'\)/);
  });
});
