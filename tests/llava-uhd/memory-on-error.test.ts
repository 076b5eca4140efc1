/**
 * A failure never leaks device memory: a throw inside `tidy`, a failed `generate` and a failed
 * training step leave `memory()` as it was, on the CPU and on WebGPU.
 */
import { describe, expect, it } from 'vitest';
import { CONFIGS } from '../../llava-uhd/config.js';
import { generateSample } from '../../llava-uhd/data/synthetic.js';
import { generate } from '../../llava-uhd/generate.js';
import { LlavaUHD } from '../../llava-uhd/model.js';
import { ByteTokenizer } from '../../llava-uhd/tokenizer.js';
import { train, type Recipe, type Sample } from '../../llava-uhd/train.js';
import * as uhd from '../../tensor/index.js';
import { useWebGPU } from '../support.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';

const dir = mkdtempSync(join(tmpdir(), 'uhd-memory-on-error-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

useWebGPU();

const DEVICES = ['cpu', 'webgpu'] as const;

describe.each(DEVICES)('memory after an error (%s)', (device) => {
  it('tidy disposes what fn created before it threw, in nested scopes too', () => {
    const m0 = uhd.memory(device);
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
    expect(uhd.memory(device)).toEqual(m0);
  });

  it('a generate that fails after encoding the image leaves memory unchanged', async () => {
    uhd.manualSeed(1);
    const m = new LlavaUHD(structuredClone(CONFIGS.tiny), { device });
    const view = [uhd.randn([3, 112, 112], { device })];
    // 3 placeholders for an image that gives 4 features: the ViT and D run, then embed throws
    const prompt = { ids: [5, 6, 0, 0, 0, 9], unkPositions: [2, 3, 4] };
    const m0 = uhd.memory(device);
    await expect(generate(m, prompt, view, { maxNewTokens: 4 })).rejects.toThrow('3 <unk> placeholders but 4 visual features');
    expect(uhd.memory(device)).toEqual(m0);
  });

  it('a training step that fails midway (after a backward, with optimizer state) leaves memory unchanged', async () => {
    uhd.manualSeed(2);
    const m = new LlavaUHD(structuredClone(CONFIGS.tiny), { device });
    const proto = generateSample(0, 'train');
    const data = { size: 4, get: (i: number): Sample => ({ ...proto, turns: [{ role: 'user', content: '<image>\nColour?' }, { role: 'assistant', content: ['red', 'blue'][i % 2] }], answer: 'red', type: 'c' }) };
    const recipe: Recipe = { name: 'm', stages: [{ name: 's', trainable: ['connector', 'llm'], lr: 1e-3, min_lr: 1e-4, warmup_steps: 0, steps: 3, max_slices: 1, batch_size: 2, grad_accum: 2 }] };
    // 4 forwards a step (2 micro-batches of 2): the 7th is in step 2, after step 1 made optimizer
    // state and step 2's first micro-batch made gradients
    const forward = m.forward.bind(m);
    let calls = 0;
    m.forward = (...args: Parameters<LlavaUHD['forward']>) => {
      const out = forward(...args);
      if (++calls === 7) throw new Error('forward failed');
      return out;
    };
    const m0 = uhd.memory(device);
    await expect(train(m, new ByteTokenizer(), recipe, { device, outDir: join(dir, device), train: data })).rejects.toThrow('forward failed');
    expect(calls).toBe(7);
    expect(uhd.memory(device)).toEqual(m0);
  });
});
