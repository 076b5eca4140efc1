/**
 * A training step reads from the GPU once: every micro-batch's loss and the gradient norm are
 * queued first and read together (each read-back drains the queue while the host waits; the
 * per-value reads this replaced made 1 + grad_accum of them). A validation pass reads once too.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { gpuContext } from '../../kernels/index.js';
import { CONFIGS } from '../../llava-uhd/config.js';
import { generateSample } from '../../llava-uhd/data/synthetic.js';
import { LlavaUHD } from '../../llava-uhd/model.js';
import { ByteTokenizer } from '../../llava-uhd/tokenizer.js';
import { train, validationLoss, type Recipe, type Sample } from '../../llava-uhd/train.js';
import * as uhd from '../../tensor/index.js';
import { useWebGPU } from '../support.js';

const dir = mkdtempSync(join(tmpdir(), 'uhd-readbacks-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
useWebGPU();

const proto = generateSample(0, 'train');
const data = { size: 6, get: (i: number): Sample => ({ ...proto, turns: [{ role: 'user', content: '<image>\nColour?' }, { role: 'assistant', content: ['red', 'blue', 'green'][i % 3] }], answer: 'red', type: 'c' }) };

/** Read-backs made while `fn` runs (the runtime's per-label counts, on for the call). */
async function readBacks<T>(fn: (count: () => number) => Promise<T>): Promise<T> {
  const s = gpuContext().stats;
  s.byLabel = new Map();
  try {
    return await fn(() => s.byLabel?.get('readBuffer') ?? 0);
  } finally {
    s.byLabel = null;
  }
}

describe('read-backs of the training loop (webgpu)', () => {
  it('one per step with gradient accumulation, and one per validation pass, with the same loss', async () => {
    uhd.manualSeed(3);
    const m = new LlavaUHD(structuredClone(CONFIGS.tiny), { device: 'webgpu' });
    const recipe: Recipe = { name: 'r', stages: [{ name: 's', trainable: ['connector'], lr: 1e-3, min_lr: 1e-4, warmup_steps: 0, steps: 3, max_slices: 1, batch_size: 2, grad_accum: 3 }] };
    const perStep: number[] = [];
    const losses: number[] = [];
    await readBacks(async (count) => {
      let last = 0;
      const events = {
        stageStart: () => { last = count(); },
        step: (info: { loss: number }) => {
          perStep.push(count() - last);
          last = count();
          losses.push(info.loss);
        },
      };
      await train(m, new ByteTokenizer(), recipe, { device: 'webgpu', outDir: join(dir, 'run'), train: data, events });
    });
    expect(perStep).toEqual([1, 1, 1]);
    for (const l of losses) expect(Number.isFinite(l)).toBe(true);

    const val = await readBacks(async (count) => {
      const v = await validationLoss(m, new ByteTokenizer(), data, recipe.stages[0], 'webgpu', 4);
      expect(count()).toBe(1);
      return v;
    });
    // the same mean as reading each sample's loss on its own
    let sum = 0;
    for (let i = 0; i < 4; i++) sum += await validationLoss(m, new ByteTokenizer(), { size: 1, get: () => data.get(i) }, recipe.stages[0], 'webgpu', 1);
    expect(val).toBeCloseTo(sum / 4, 6);
    for (const p of m.parameters()) p.dispose();
  });
});
