/**
 * A failure never leaks device memory: a throw inside `tidy`, a failed `generate` and a failed
 * training step leave `memory()` as it was, on the CPU and on WebGPU.
 */
import { describe, expect, it } from 'vitest';
import { CONFIGS } from '../../llava-uhd/config.js';
import { generate } from '../../llava-uhd/generate.js';
import { LlavaUHD } from '../../llava-uhd/model.js';
import * as uhd from '../../tensor/index.js';
import { useWebGPU } from '../support.js';

useWebGPU();

const DEVICES = ['cpu', 'webgpu'] as const;

describe.each(DEVICES)('memory after an error (%s)', (device) => {
  it('tidy disposes what fn created before it threw, in nested scopes too', () => {
    const m0 = uhd.memory()[device];
    const a = uhd.ones([4, 4], { device });
    expect(() =>
      uhd.tidy(() => {
        const b = a.add(1).mul(2);
        uhd.tidy(() => b.exp().sum());
        uhd.tidy(() => {
          b.matmul(b);
          throw new Error('inner');
        });
        return b;
      }),
    ).toThrow('inner');
    a.dispose();
    expect(uhd.memory()[device]).toEqual(m0);
  });

  it('a generate that fails after encoding the image leaves memory unchanged', async () => {
    uhd.manualSeed(1);
    const m = new LlavaUHD(structuredClone(CONFIGS.tiny), { device });
    const view = [uhd.randn([3, 112, 112], { device })];
    // 3 placeholders for an image that gives 4 features: the ViT and D run, then embed throws
    const prompt = { ids: [5, 6, 0, 0, 0, 9], unkPositions: [2, 3, 4] };
    const m0 = uhd.memory()[device];
    await expect(generate(m, prompt, view, { maxNewTokens: 4 })).rejects.toThrow('3 <unk> placeholders but 4 visual features');
    expect(uhd.memory()[device]).toEqual(m0);
  });
});
