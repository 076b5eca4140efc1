import { describe, expect, it } from 'vitest';
import * as ag from '../../autograd/index.js';
import * as uhd from '../../tensor/index.js';
import { CONFIGS } from '../../llava-uhd/config.js';
import { generate, generateBatch, pickToken, type GenerateItem } from '../../llava-uhd/generate.js';
import { tokenizerFor } from '../../llava-uhd/load.js';
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

describe('batched generation', () => {
  /** Mixed prompt lengths; no image, one view, two views of different sizes. */
  function items(): GenerateItem[] {
    uhd.manualSeed(21);
    const unk = (n: number, at: number) => Array.from({ length: n }, (_, i) => at + i);
    const withUnks = (pre: number[], n: number, post: number[]) => ({ ids: [...pre, ...new Array<number>(n).fill(0), ...post], unkPositions: unk(n, pre.length) });
    return [
      { prompt: withUnks([5, 6, 7], 4, [9, 10]), pixels: [uhd.randn([3, 112, 112])] },
      { prompt: { ids: [1, 2, 3], unkPositions: [] }, pixels: [] },
      { prompt: withUnks([4], 12, [8, 8, 30, 31, 12]), pixels: [uhd.randn([3, 112, 112]), uhd.randn([3, 112, 224])] },
      { prompt: { ids: [40, 41, 42, 43, 44, 45, 46], unkPositions: [] }, pixels: [] },
    ];
  }

  it('greedy answers of a batch equal the answers one by one, token for token, with the same logits', async () => {
    const m = model();
    const batch = items();
    const opts = { maxNewTokens: 7, stopTokens: [3], keepLogits: true };
    const together = await generateBatch(m, batch, opts);
    for (const [i, it] of batch.entries()) {
      const alone = await generate(m, it.prompt, it.pixels, opts);
      expect(together[i].tokens, `sample ${i}`).toEqual(alone.tokens);
      expect(together[i].logits).toHaveLength(alone.logits.length);
      alone.logits.forEach((l, t) => expect(together[i].logits[t], `sample ${i} step ${t}`).toEqual(l));
    }
    // the samples really differ in length and answer (else the test would prove little)
    expect(new Set(together.map((g) => g.tokens.join())).size).toBe(batch.length);
  });

  it('beam search per sample in a batch equals beam search one by one', async () => {
    const m = model();
    const batch = items();
    const opts = { maxNewTokens: 5, numBeams: 3, stopTokens: [3], repetitionPenalty: 1.2 };
    const together = await generateBatch(m, batch, opts);
    for (const [i, it] of batch.entries()) {
      const alone = await generate(m, it.prompt, it.pixels, opts);
      expect(together[i].tokens, `sample ${i}`).toEqual(alone.tokens);
      expectClose([together[i].score!], [alone.score!], { atol: 1e-5, rtol: 1e-5 }, `sample ${i} score`);
    }
  });

  it('leaves no tensor behind', async () => {
    const m = model();
    const batch = items();
    await generateBatch(m, batch, { maxNewTokens: 3, numBeams: 2 });
    const before = uhd.memory().cpu.tensors;
    await generateBatch(m, batch, { maxNewTokens: 4 });
    await generateBatch(m, batch, { maxNewTokens: 4, numBeams: 2 });
    expect(uhd.memory().cpu.tensors).toBe(before);
  });

  it('masks ids beyond the tokenizer: a random tiny model emits only ids the tokenizer can decode', async () => {
    uhd.manualSeed(3);
    const m = new LlavaUHD(structuredClone(CONFIGS.tiny));
    const tok = await tokenizerFor(CONFIGS.tiny);
    expect(CONFIGS.tiny.text_config.vocab_size).toBeGreaterThan(tok.vocabSize);
    const prompt = { ids: tok.encode('what colour is the square?'), unkPositions: [] };
    const free = await generate(m, prompt, [], { maxNewTokens: 48, temperature: 1, seed: 1 });
    expect(free.tokens.some((id) => id >= tok.vocabSize), 'without the mask this seed draws an id the tokenizer lacks').toBe(true);
    for (const seed of [1, 2, 3]) {
      const g = await generate(m, prompt, [], { maxNewTokens: 48, temperature: 1, seed, vocabSize: tok.vocabSize, decode: (ids) => tok.decode(ids) });
      expect(g.tokens.every((id) => id < tok.vocabSize)).toBe(true);
      expect(typeof g.text).toBe('string');
    }
  });

  it('stop strings end the answer; the text is cut before them, the tokens keep them', async () => {
    const m = model();
    const decode = (ids: number[]) => ids.map((i) => String.fromCharCode(97 + (i % 26))).join('');
    const free = await generate(m, { ids: [1, 2, 3], unkPositions: [] }, [], { maxNewTokens: 8, decode });
    const stop = free.text!.slice(3, 5);
    const g = await generate(m, { ids: [1, 2, 3], unkPositions: [] }, [], { maxNewTokens: 8, decode, stopStrings: [stop] });
    expect(g.finish).toBe('stop-string');
    expect(g.stopString).toBe(stop);
    expect(decode(g.tokens).endsWith(stop)).toBe(true);
    expect(g.text).toBe(free.text!.slice(0, free.text!.indexOf(stop)));
  });

  it('weights holding NaN: generate says which tensors, instead of decoding garbage', async () => {
    const m = model();
    const w = m.llm.model.layers[1].mlp.down_proj.weight;
    ag.noGrad(() => uhd.assign(w, w.mul(Number.NaN)));
    await expect(generate(m, { ids: [1, 2, 3], unkPositions: [] }, [], { maxNewTokens: 4 }))
      .rejects.toThrow(/logits at the prompt's last position hold \d+ NaN.*1 of \d+ tensors hold NaN\/Inf: llm\.model\.layers\.1\.mlp\.down_proj\.weight \(\d+ NaN, 0 ±Inf\)/);
    const v = uhd.randn([3, 112, 112]);
    const bad = v.mul(Number.POSITIVE_INFINITY);
    await expect(generate(model(), { ids: [5, 0, 0, 0, 0, 6], unkPositions: [1, 2, 3, 4] }, [bad], { maxNewTokens: 2 }))
      .rejects.toThrow('although every weight is finite');
  });
});
