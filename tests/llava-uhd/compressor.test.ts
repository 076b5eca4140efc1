/**
 * The compressor D picks its forward: under no-grad on WebGPU it runs its middle (window
 * attention to pre_norm) as one windowMerge dispatch, which must equal the unfused chain of
 * library ops; while a gradient is recorded through the middle, or at a width the kernel
 * cannot tile, it keeps the unfused chain. Tolerance atol 1e-5, rtol 1e-4: the kernel lab saw
 * 1.4e-6 at this width.
 */
import { describe, expect, it, vi } from 'vitest';
import * as ag from '../../autograd/index.js';
import { ctx } from '../../kernels/runtime.js';
import { windowMergeFits } from '../../kernels/window-merge.js';
import { Compressor, gridRuns } from '../../llava-uhd/compressor.js';
import { CONFIGS, type VisionConfig } from '../../llava-uhd/config.js';
import type { ViewGrid } from '../../llava-uhd/vision.js';
import * as uhd from '../../tensor/index.js';
import type { Tensor } from '../../tensor/index.js';
import { expectClose, useWebGPU, type Tolerance } from '../support.js';

useWebGPU();

const TOL: Tolerance = { atol: 1e-5, rtol: 1e-4 };
const TINY = CONFIGS.tiny.vision_config;

/** D on WebGPU with random LayerNorm affines (weights around 1), so pre_norm is not the identity. */
function compressor(vision: VisionConfig, seed: number): Compressor {
  uhd.manualSeed(seed);
  const d = new Compressor(vision, { device: 'webgpu' });
  ag.noGrad(() =>
    uhd.tidy(() => {
      for (const [name, p] of d.namedParameters()) {
        if (!/norm\d?\.(weight|bias)$/.test(name)) continue;
        const r = uhd.randn(p.shape, { device: 'webgpu' }).mul(0.3);
        uhd.assign(p, name.endsWith('weight') ? r.add(1) : r);
      }
    }),
  );
  return d;
}

/** D's input for these grids: [1, sum(h*w), d]. */
function input(grids: ViewGrid[], d: number): Tensor {
  const tokens = grids.reduce((n, g) => n + g.h * g.w, 0);
  return uhd.randn([1, tokens, d], { device: 'webgpu' });
}

/** fn's result and how many windowMerge dispatches it queued. */
function countWindowMerge<T>(fn: () => T): { result: T; dispatches: number } {
  const spy = vi.spyOn(ctx(), 'dispatch');
  try {
    const result = fn();
    return { result, dispatches: spy.mock.calls.filter(([args]) => args.label === 'windowMerge').length };
  } finally {
    spy.mockRestore();
  }
}

function unfused<T>(fn: () => T): T {
  Compressor.fuseMiddle = false;
  try {
    return fn();
  } finally {
    Compressor.fuseMiddle = true;
  }
}

describe('Compressor.forward with its middle fused (kernels/window-merge.ts)', () => {
  const cases: { label: string; vision: VisionConfig; grids: ViewGrid[] }[] = [
    { label: 'tiny, one 4x6 view', vision: TINY, grids: [{ h: 4, w: 6 }] },
    { label: 'tiny, a 6x4 thumbnail then three 4x4 slices (two runs)', vision: TINY, grids: [{ h: 6, w: 4 }, { h: 4, w: 4 }, { h: 4, w: 4 }, { h: 4, w: 4 }] },
    { label: 'tiny, four runs incl. a lone 2x2 window and 10x10 views', vision: TINY, grids: [{ h: 2, w: 2 }, { h: 8, w: 6 }, { h: 8, w: 6 }, { h: 10, w: 10 }, { h: 4, w: 2 }] },
    { label: 'the vit-encode bench\'s mid width (d 384, 6 heads: heads in chunks), two 4x4 views', vision: { ...TINY, hidden_size: 384, intermediate_size: 1536, num_attention_heads: 6 }, grids: [{ h: 4, w: 4 }, { h: 4, w: 4 }] },
  ];
  for (const c of cases) {
    it(`under no-grad equals the unfused chain, one windowMerge dispatch per grid run: ${c.label}`, async () => {
      const d = compressor(c.vision, 1);
      const x = input(c.grids, c.vision.hidden_size);
      const fused = countWindowMerge(() => ag.noGrad(() => d.forward(x, c.grids)));
      const reference = countWindowMerge(() => unfused(() => ag.noGrad(() => d.forward(x, c.grids))));
      expect(fused.dispatches).toBe(gridRuns(c.grids).length);
      expect(reference.dispatches).toBe(0);
      expect(fused.result.shape).toEqual(reference.result.shape);
      expectClose(await fused.result.data(), await reference.result.data(), TOL, c.label);
      for (const t of [x, fused.result, reference.result]) t.dispose();
      d.dispose();
    });
  }

  it('while a gradient is recorded through the middle, forward keeps the unfused chain and backward reaches x and every parameter', async () => {
    const d = compressor(TINY, 2);
    const grids = [{ h: 4, w: 4 }, { h: 4, w: 4 }, { h: 2, w: 6 }];
    const x = input(grids, TINY.hidden_size);
    x.requiresGrad = true;
    const { result: out, dispatches } = countWindowMerge(() => d.forward(x, grids));
    expect(dispatches).toBe(0);
    ag.sum(out).backward();
    expect(x.grad).not.toBeNull();
    for (const [name, p] of d.namedParameters()) {
      // the release's unused copies of layer k's LN2 and MLP take no part in the forward pass
      const unused = name.startsWith('layer_norm2.') || name.startsWith('mlp.');
      if (unused) expect(p.grad, name).toBeNull();
      else expect(p.grad, name).not.toBeNull();
    }
    // the same values as the fused inference forward
    const inference = ag.noGrad(() => d.forward(x, grids));
    expectClose(await out.data(), await inference.data(), TOL);
    d.dispose();
  });

  it('with grad mode on but nothing in the middle requiring grad (frozen LN1, attention, pre_norm; a constant input), forward fuses and linear_1 and linear_2 still get gradients', () => {
    const d = compressor(TINY, 3);
    for (const m of [d.layer_norm1, d.self_attn, d.pre_norm]) m.requiresGrad(false);
    const grids = [{ h: 4, w: 6 }];
    const x = input(grids, TINY.hidden_size);
    const { result: out, dispatches } = countWindowMerge(() => d.forward(x, grids));
    expect(dispatches).toBe(1);
    ag.sum(out).backward();
    for (const p of [...d.linear_1.parameters(), ...d.linear_2.parameters()]) expect(p.grad).not.toBeNull();
    d.dispose();
  });

  it('at a width the kernel cannot tile (head dim 18, not a multiple of 4), no-grad forward falls back to the unfused chain', () => {
    const vision = { ...TINY, hidden_size: 36, intermediate_size: 72, num_attention_heads: 2 };
    expect(windowMergeFits(36, 2)).toBe(false);
    const d = compressor(vision, 4);
    const grids = [{ h: 4, w: 4 }];
    const { result: out, dispatches } = countWindowMerge(() => ag.noGrad(() => d.forward(input(grids, 36), grids)));
    expect(dispatches).toBe(0);
    expect(out.shape).toEqual([1, 4, 36]);
    d.dispose();
  });
});
