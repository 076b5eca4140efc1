import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as ag from '../../autograd/index.js';
import * as uhd from '../../tensor/index.js';
import type { Device, Tensor } from '../../tensor/index.js';
import { DEVICE, expectClose, PROP, useDevice, values } from '../support.js';
import { CASES } from './ops.js';

/**
 * Every differentiable op's gradients on the device under test (UHD_DEVICE, tests/support.ts)
 * against the CPU reference's, in float32; and a training loop holding its memory flat.
 */
useDevice();

/** Forward + backward of `c` on `device` (float32) from the same values; returns the input grads. */
async function grads(c: (typeof CASES)[number], shapes: number[][], p: number, seed: number, device: Device): Promise<Float32Array[]> {
  const [lo, hi] = c.range ?? [-1, 1];
  const xs = shapes.map((s, i) => {
    const n = s.reduce((a, b) => a * b, 1);
    return uhd.tensor(values(n, seed + i, lo, hi), { shape: s, device, dtype: 'float32' }).requiresGrad_();
  });
  const y = c.fn(xs, p);
  const w = uhd.tensor(values(y.size, seed + 99), { shape: y.shape, device, dtype: 'float32' });
  ag.sum(ag.mul(y, w)).backward();
  const out = await Promise.all(xs.map(async (x) => Float32Array.from(x.grad ? await x.grad.data() : new Float32Array(x.size))));
  for (const x of xs) {
    x.grad?.dispose();
    x.dispose();
  }
  y.dispose();
  w.dispose();
  return out;
}

describe(`${DEVICE} gradients equal CPU gradients (float32)`, () => {
  for (const c of CASES) {
    it(`${c.name}`, async () => {
      await fc.assert(
        fc.asyncProperty(c.arb, fc.integer({ min: 1, max: 2 ** 30 }), async ({ shapes, p }, seed) => {
          const want = await grads(c, shapes, p, seed, 'cpu');
          const got = await grads(c, shapes, p, seed, DEVICE);
          expect(got.length).toBe(want.length);
          got.forEach((g, i) => expectClose(g, want[i], { atol: 2e-5, rtol: 2e-4 }, `${c.name} input ${i}`));
        }),
        { ...PROP, numRuns: 4 },
      );
    });
  }

  it(`a training loop of 50 steps holds ${DEVICE} memory flat`, async () => {
    const w = uhd.randn([16, 16], { device: DEVICE }).requiresGrad_();
    const x = uhd.randn([8, 16], { device: DEVICE });
    const step = () =>
      uhd.tidy(() => {
        const loss = ag.layerNorm(x.matmul(w).gelu(), null, null).softmax(-1).pow(2).mean();
        loss.backward();
        ag.noGrad(() => uhd.assign(w, w.sub(w.grad!.mul(0.1))));
        ag.zeroGrad([w]);
        return loss;
      });
    const first = step();
    await first.data();
    first.dispose();
    const before = uhd.memory(DEVICE);
    for (let i = 0; i < 50; i++) {
      const l: Tensor = step();
      if (i % 10 === 9) await l.data();
      l.dispose();
    }
    await uhd.getBackend(DEVICE).sync();
    expect(uhd.memory(DEVICE)).toEqual(before);
  });
});
