/**
 * windowMerge (the middle of the compressor D in one dispatch) against the CPU chain of library
 * ops it stands for: 2x2-window attention, the output projection and residual, pixel unshuffle
 * then pre_norm, and the window mean. Tolerance atol 5e-5, rtol 5e-4: f32 sums over d inputs
 * (up to 1152) against the CPU's, on outputs of order 1.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { windowMerge, windowMergeTiles } from '../../kernels/window-merge.js';
import * as uhd from '../../tensor/index.js';
import type { Tensor } from '../../tensor/index.js';
import { expectClose, PROP, useWebGPU, values, type Tolerance } from '../support.js';

useWebGPU();

const TOL: Tolerance = { atol: 5e-5, rtol: 5e-4 };

interface Case {
  views: number;
  h: number;
  w: number;
  heads: number;
  headDim: number;
  seed: number;
}

/** x, q, k, v [views, h*w, d]; out_proj [d, d] scaled by 1/sqrt(d), its bias; pre_norm weight and bias [4d]. */
function inputs(c: Case, device: 'cpu' | 'webgpu'): Tensor[] {
  const d = c.heads * c.headDim;
  const S = c.h * c.w;
  const make = (shape: number[], seed: number, scale = 1) =>
    uhd.tensor(values(shape.reduce((a, b) => a * b, 1), c.seed + seed, -scale, scale), { shape, device, dtype: 'float32' });
  return [
    make([c.views, S, d], 1), make([c.views, S, d], 2), make([c.views, S, d], 3), make([c.views, S, d], 4),
    make([d, d], 5, 1 / Math.sqrt(d)), make([d], 6), make([4 * d], 7), make([4 * d], 8),
  ];
}

/** The unfused chain, as llava-uhd/compressor.ts and nn/attention.ts compose it. */
function cpuChain(c: Case, [x, q, k, v, wo, bo, nw, nb]: Tensor[]): { z: Tensor; mean: Tensor } {
  return uhd.tidy(() => {
    const [B, S, d] = x.shape;
    const split = (t: Tensor) => t.reshape([B, S, c.heads, c.headDim]).permute(0, 2, 1, 3);
    const o = uhd.attention(split(q), split(k), split(v), { window: { h: c.h, w: c.w } });
    const merged = o.permute(0, 2, 1, 3).contiguous().reshape([B, S, d]);
    const y = x.add(merged.matmul(wo.transpose()).add(bo));
    const z = uhd.layerNorm(uhd.pixelUnshuffle(y, c.h, c.w, 2), nw, nb, 1e-6);
    return { z, mean: uhd.avgPool2x2(y, c.h, c.w) };
  });
}

async function check(c: Case): Promise<void> {
  const cpu = inputs(c, 'cpu');
  const gpu = inputs(c, 'webgpu');
  const want = cpuChain(c, cpu);
  const [x, q, k, v, outWeight, outBias, normWeight, normBias] = gpu;
  const got = windowMerge({ x, q, k, v, outWeight, outBias, normWeight, normBias, grid: { h: c.h, w: c.w }, heads: c.heads, eps: 1e-6 });
  expect(got.z.shape).toEqual(want.z.shape);
  expect(got.mean.shape).toEqual(want.mean.shape);
  expectClose(await got.z.data(), await want.z.data(), TOL, `z ${JSON.stringify(c)}`);
  expectClose(await got.mean.data(), await want.mean.data(), TOL, `mean ${JSON.stringify(c)}`);
  for (const t of [...cpu, ...gpu, want.z, want.mean, got.z, got.mean]) t.dispose();
}

describe('windowMerge matches the CPU chain of window attention, projection, unshuffle, pre_norm and window mean', () => {
  it('on random grids, view counts, head counts and head dims (threads per window odd and even, 1, 2 or 4 columns each)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          views: fc.integer({ min: 1, max: 3 }),
          h: fc.integer({ min: 1, max: 5 }).map((n) => 2 * n),
          w: fc.integer({ min: 1, max: 5 }).map((n) => 2 * n),
          heads: fc.integer({ min: 1, max: 3 }),
          headDim: fc.integer({ min: 1, max: 5 }).map((n) => 4 * n),
          seed: fc.integer({ min: 1, max: 2 ** 30 }),
        }),
        check,
      ),
      // each case compiles its own pipeline (1-3 s on llvmpipe): fewer runs than the default
      { ...PROP, numRuns: Math.min(PROP.numRuns, 10) },
    );
  });

  it("at the paper's width (d 1152, 16 heads of 72: 72 threads of 4 windows, heads in chunks of 4), two 4x6 views", async () => {
    expect(windowMergeTiles(1152, 16)).toMatchObject({ tpw: 72, cv: 4, rw: 4, wb: 4, hc: 4 });
    await check({ views: 2, h: 4, w: 6, heads: 16, headDim: 72, seed: 7 });
  });

  it('many windows per workgroup at a small width, with a partial last workgroup', async () => {
    const tiles = windowMergeTiles(32, 2);
    expect(tiles.wb).toBeGreaterThan(1);
    // 3 views of 10x10: 75 windows, not a multiple of the windows per workgroup
    expect(75 % tiles.wb).not.toBe(0);
    await check({ views: 3, h: 10, w: 10, heads: 2, headDim: 16, seed: 11 });
  });

  it('names the input that is wrong', () => {
    const d = 8;
    const t = (shape: number[]) => uhd.zeros(shape, { device: 'webgpu' });
    const args = { x: t([1, 16, d]), q: t([1, 16, d]), k: t([1, 16, d]), v: t([1, 16, d]), outWeight: t([d, d]), outBias: t([d]), normWeight: t([4 * d]), normBias: t([4 * d]), grid: { h: 4, w: 4 }, heads: 2, eps: 1e-6 };
    expect(() => windowMerge({ ...args, normBias: t([d]) })).toThrow('windowMerge: normBias must be [32], got [8]');
    expect(() => windowMerge({ ...args, q: t([1, d, 16]).transpose(1, 2) })).toThrow('windowMerge: q [1,16,8] must be dense');
    expect(() => windowMerge({ ...args, grid: { h: 3, w: 5 } })).toThrow('windowMerge: grid 3x5 (even sides)');
    expect(() => windowMerge({ ...args, heads: 4 })).toThrow('windowMerge: d 8 and head dim 2');
  });
});
