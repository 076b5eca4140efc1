import { describe, expect, it } from 'vitest';
import * as ag from '../../autograd/index.js';
import * as uhd from '../../tensor/index.js';
import { CONFIGS } from '../../llava-uhd/config.js';
import { generateBatch, type GenerateItem } from '../../llava-uhd/generate.js';
import { LlavaUHD } from '../../llava-uhd/model.js';
import { expectClose, useWebGPU } from '../support.js';

useWebGPU();

/** The same model and samples on both devices: mixed prompt lengths, 0, 1 and 2 views. */
async function setup(device: 'cpu' | 'webgpu'): Promise<{ m: LlavaUHD; batch: GenerateItem[] }> {
  uhd.manualSeed(5);
  const m = new LlavaUHD(structuredClone(CONFIGS.tiny));
  ag.noGrad(() => {
    for (const [n, p] of m.namedParameters()) if (n.startsWith('llm.') && p.rank === 2) uhd.assign(p, p.mul(20));
  });
  uhd.manualSeed(21);
  const views = [uhd.randn([3, 112, 112]), uhd.randn([3, 112, 112]), uhd.randn([3, 112, 224])];
  await m.to(device);
  const px = await Promise.all(views.map((v) => uhd.toDevice(v, device)));
  const unk = (n: number, at: number) => Array.from({ length: n }, (_, i) => at + i);
  return {
    m,
    batch: [
      { prompt: { ids: [5, 6, 7, 0, 0, 0, 0, 9, 10], unkPositions: unk(4, 3) }, pixels: [px[0]] },
      { prompt: { ids: [1, 2, 3], unkPositions: [] }, pixels: [] },
      { prompt: { ids: [4, ...new Array<number>(12).fill(0), 8, 8, 30], unkPositions: unk(12, 1) }, pixels: [px[1], px[2]] },
    ],
  };
}

describe('batched generation on WebGPU', () => {
  it('matches the CPU: the same greedy tokens, logits within float32 tolerance; beams too', async () => {
    const cpu = await setup('cpu');
    const gpu = await setup('webgpu');
    const opts = { maxNewTokens: 5, stopTokens: [3], keepLogits: true };
    expect(gpu.m.llm.model.embed_tokens.weight.device).toBe('webgpu');
    const want = await generateBatch(cpu.m, cpu.batch, opts);
    const got = await generateBatch(gpu.m, gpu.batch, opts);
    got.forEach((g, i) => {
      expect(g.tokens, `sample ${i}`).toEqual(want[i].tokens);
      g.logits.forEach((l, t) => expectClose(l, want[i].logits[t], { atol: 1e-4, rtol: 1e-4 }, `sample ${i} step ${t}`));
    });
    const beams = { maxNewTokens: 4, numBeams: 2 };
    const wantB = await generateBatch(cpu.m, cpu.batch, beams);
    const gotB = await generateBatch(gpu.m, gpu.batch, beams);
    expect(gotB.map((g) => g.tokens)).toEqual(wantB.map((g) => g.tokens));
    gpu.m.dispose();
  }, 240_000);
});
