/**
 * Every compressor variant on the device under test (UHD_DEVICE: webgpu by default, wasm, cpu)
 * gives the CPU's output, input gradient and parameter gradients: the variants compose library ops only, so
 * each backend's forward and backward must agree. float32, the tiny width, two grid runs.
 */
import { describe, it } from 'vitest';
import * as ag from '../../autograd/index.js';
import * as uhd from '../../tensor/index.js';
import type { Device, Tensor } from '../../tensor/index.js';
import { COMPRESSOR_NAMES, compressorVariant } from '../../llava-uhd/compressors.js';
import { CONFIGS } from '../../llava-uhd/config.js';
import { EncoderLayer, type ViewGrid } from '../../llava-uhd/vision.js';
import { DEVICE, expectClose, useDevice } from '../support.js';

useDevice();

const TOL = { atol: 2e-5, rtol: 2e-4 };
const V = CONFIGS.tiny.vision_config;
const grids: ViewGrid[] = [{ h: 4, w: 6 }, { h: 4, w: 4 }, { h: 4, w: 4 }];
const N = grids.reduce((n, g) => n + g.h * g.w, 0);

async function run(name: string, device: Device): Promise<{ y: Float32Array; grads: Map<string, Float32Array> }> {
  uhd.manualSeed(11);
  const layer = new EncoderLayer(V, { device });
  const c = compressorVariant(name).create(V, { device });
  c.initFromLayer?.(layer);
  // random affines and a non-zero input (seeded draws are identical on every device)
  uhd.manualSeed(12);
  ag.noGrad(() => {
    for (const [n, p] of c.namedParameters()) {
      if (/norm\d?\.(weight|bias)$/.test(n)) uhd.assign(p, uhd.randn(p.shape, { device }).mul(0.3).add(n.endsWith('weight') ? 1 : 0));
    }
  });
  const x = uhd.randn([1, N, V.hidden_size], { device }).requiresGrad_();
  const y = c.forward(x, grids);
  const w = uhd.randn(y.shape, { device });
  const loss = ag.sum(ag.mul(y, w));
  loss.backward();
  const grads = new Map<string, Float32Array>();
  grads.set('input', Float32Array.from(await x.grad!.data()));
  for (const [n, p] of c.namedParameters()) if (p.grad) grads.set(n, Float32Array.from(await (p.grad as Tensor).data()));
  return { y: Float32Array.from(await y.data()), grads };
}

describe(`compressor variants on ${DEVICE} match the CPU`, () => {
  for (const name of COMPRESSOR_NAMES) {
    it(`${name}: output and parameter gradients`, async () => {
      const cpu = await run(name, 'cpu');
      const dev = await run(name, DEVICE);
      expectClose(dev.y, cpu.y, TOL, 'output');
      for (const [n, g] of cpu.grads) expectClose(dev.grads.get(n)!, g, TOL, n);
      if ([...dev.grads.keys()].join() !== [...cpu.grads.keys()].join()) throw new Error(`gradients on ${[...dev.grads.keys()]} vs ${[...cpu.grads.keys()]}`);
    });
  }
});
