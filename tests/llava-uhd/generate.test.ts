import { describe, expect, it } from 'vitest';
import * as ag from '../../autograd/index.js';
import * as uhd from '../../tensor/index.js';
import { CONFIGS } from '../../llava-uhd/config.js';
import { generate, pickToken } from '../../llava-uhd/generate.js';
import { LlavaUHD } from '../../llava-uhd/model.js';
import { expectClose } from '../support.js';

function model(): LlavaUHD {
  uhd.manualSeed(5);
  const m = new LlavaUHD(structuredClone(CONFIGS.tiny));
  // a larger init than the default 0.02 so that the logits are far from uniform
  ag.noGrad(() => {
    for (const [n, p] of m.namedParameters()) if (n.startsWith('llm.') && p.rank === 2) uhd.assign(p, p.mul(20));
  });
  return m;
}

describe('generation', () => {
  it('incremental decoding with the KV cache gives the logits of a full forward pass', async () => {
    const m = model();
    const view = [uhd.randn([3, 112, 112])];
    const prompt = { ids: [5, 6, 7, 0, 0, 0, 0, 9, 10], unkPositions: [3, 4, 5, 6] };
    const g = await generate(m, prompt, view, { maxNewTokens: 6, keepLogits: true });
    expect(g.tokens).toHaveLength(6);
    for (let t = 0; t < g.tokens.length; t++) {
      const ids = uhd.tensor([[...prompt.ids, ...g.tokens.slice(0, t)]], { dtype: 'int32' });
      const full = ag.noGrad(() => m.forward(ids, view, prompt.unkPositions));
      const last = await full.narrow(1, full.shape[1] - 1, 1).data();
      expectClose(g.logits[t], last, { atol: 1e-4, rtol: 1e-4 }, `step ${t}`);
    }
  });

  it('stops at a stop token, streams tokens, and samples reproducibly with a seed', async () => {
    const m = model();
    const prompt = { ids: [1, 2, 3], unkPositions: [] };
    const greedy = await generate(m, prompt, [], { maxNewTokens: 8 });
    const stop = greedy.tokens[2];
    const streamed: number[] = [];
    const stopped = await generate(m, prompt, [], { maxNewTokens: 8, stopTokens: [stop], onToken: (id) => streamed.push(id) });
    expect(stopped.tokens).toEqual(greedy.tokens.slice(0, greedy.tokens.indexOf(stop) + 1));
    expect(streamed).toEqual(stopped.tokens);
    const a = await generate(m, prompt, [], { maxNewTokens: 8, temperature: 1.5, topP: 0.95, seed: 3 });
    const b = await generate(m, prompt, [], { maxNewTokens: 8, temperature: 1.5, topP: 0.95, seed: 3 });
    expect(a.tokens).toEqual(b.tokens);
  });

  it('pickToken: argmax at temperature 0; top-p keeps only the nucleus', () => {
    expect(pickToken([0.1, 3, 2], 0, 1)).toBe(1);
    uhd.manualSeed(1);
    const seen = new Set<number>();
    for (let i = 0; i < 200; i++) seen.add(pickToken([10, 9.9, -5, -5], 1, 0.9));
    expect([...seen].sort()).toEqual([0, 1]);
  });

  it('refuses an empty prompt', async () => {
    await expect(generate(model(), { ids: [], unkPositions: [] }, [])).rejects.toThrow('generate: empty prompt');
  });
});
