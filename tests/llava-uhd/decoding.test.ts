import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  processScores, resolveDecodingOptions, runDecoding, sequenceModel, stopStringHit, type DecodingOptions, type FinishReason,
} from '../../llava-uhd/decoding.js';
import { manualSeed } from '../../tensor/index.js';
import { expectClose } from '../support.js';

/** Written by fixtures/decoding.py: a PyTorch restatement of transformers' decoding rules. */
interface Fixture {
  vocab: number;
  tables: number[][][];
  text: string[];
  prompts: number[][];
  cases: { name: string; table: number; options: DecodingOptions & { decode?: boolean }; expected: { tokens: number[]; finish: FinishReason; score?: number }[] }[];
  processors: { name: string; options: DecodingOptions & { ids?: number[] }; logits: number[]; expected: (number | null)[] }[];
}
const fx = JSON.parse(readFileSync(new URL('./fixtures/decoding.json', import.meta.url), 'utf8')) as Fixture;
const tables = fx.tables.map((t) => t.map((r) => Float32Array.from(r)));
/** The table model: the next logits are a row of the table picked by the last token. */
const tableModel = (table: number) => (ids: readonly number[]) => tables[table][ids[ids.length - 1]];
const next = tableModel(0);
const decode = (ids: number[]) => ids.map((i) => fx.text[i]).join('');
const options = (o: Fixture['cases'][number]['options']): DecodingOptions => ({ ...o, decode: o.decode ? decode : undefined });

describe('decoding loop against the PyTorch reference (table model)', () => {
  for (const c of fx.cases) {
    it(`${c.name}: all prompts decoded together match the reference`, async () => {
      const got = await runDecoding(sequenceModel(fx.prompts, tableModel(c.table)), fx.prompts, options(c.options));
      got.forEach((g, i) => {
        const e = c.expected[i];
        expect(g.tokens, `prompt ${i}`).toEqual(e.tokens);
        expect(g.finish, `prompt ${i}`).toBe(e.finish);
        if (e.score !== undefined) expectClose([g.score!], [e.score], { atol: 1e-6, rtol: 1e-5 }, `prompt ${i} score`);
      });
    });
  }

  it('decoding prompts one by one gives what decoding them together gives', async () => {
    for (const c of fx.cases) {
      const together = await runDecoding(sequenceModel(fx.prompts, tableModel(c.table)), fx.prompts, options(c.options));
      for (const [i, p] of fx.prompts.entries()) {
        const [alone] = await runDecoding(sequenceModel([p], tableModel(c.table)), [p], options(c.options));
        expect(alone, `${c.name}, prompt ${i}`).toEqual(together[i]);
      }
    }
  });

  for (const p of fx.processors) {
    it(`processors, ${p.name}: the scores the reference leaves`, () => {
      const o = resolveDecodingOptions({ ...p.options, temperature: p.options.temperature ?? 1 });
      const got = processScores(Float64Array.from(Float32Array.from(p.logits)), p.options.ids ?? [], 5, o, true);
      // which tokens are filtered out must agree exactly (expectClose would let -inf match anything)
      expect(Array.from(got, (x) => x === -Infinity), p.name).toEqual(p.expected.map((x) => x === null));
      const kept = p.expected.flatMap((x, i) => (x === null ? [] : [i]));
      expectClose(kept.map((i) => got[i]), kept.map((i) => p.expected[i]!), { atol: 1e-5, rtol: 1e-5 }, p.name);
    });
  }
});

describe('decoding loop', () => {
  const prompts = fx.prompts;

  it('sampling with top-k 1 is greedy; seeded sampling repeats; different seeds differ somewhere', async () => {
    const greedy = await runDecoding(sequenceModel(prompts, next), prompts, { maxNewTokens: 10, stopTokens: [0] });
    const topK1 = await runDecoding(sequenceModel(prompts, next), prompts, { maxNewTokens: 10, stopTokens: [0], temperature: 0.8, topK: 1 });
    expect(topK1.map((d) => d.tokens)).toEqual(greedy.map((d) => d.tokens));
    const run = async (seed: number) => {
      manualSeed(seed);
      return (await runDecoding(sequenceModel(prompts, next), prompts, { maxNewTokens: 10, temperature: 1.5 })).map((d) => d.tokens);
    };
    expect(await run(3)).toEqual(await run(3));
    const seeds = await Promise.all([4, 5, 6].map(run));
    expect(seeds.some((s) => JSON.stringify(s) !== JSON.stringify(seeds[0]))).toBe(true);
  });

  it('sampling never leaves the top-k or the vocabulary', async () => {
    manualSeed(11);
    const prompt = [[3]];
    const allowed = new Set<number>();
    const sorted = (row: Float32Array) => Array.from(row.keys()).filter((i) => i < 9).sort((a, b) => row[b] - row[a]);
    const got = await runDecoding(sequenceModel(prompt, (ids) => {
      const row = next(ids);
      allowed.clear();
      for (const i of sorted(row).slice(0, 3)) allowed.add(i);
      return row;
    }), prompt, {
      maxNewTokens: 40, temperature: 2, topK: 3, vocabSize: 9,
      onToken: (id) => expect(allowed.has(id), `token ${id}`).toBe(true),
    });
    expect(got[0].tokens).toHaveLength(40);
  });

  it('keeps raw logits per step, streams tokens with their sample, and keeps the answer of a beam search with its logits', async () => {
    const streamed: [number, number][] = [];
    const got = await runDecoding(sequenceModel(prompts, next), prompts, { maxNewTokens: 5, keepLogits: true, onToken: (id, s) => streamed.push([s, id]) });
    got.forEach((g, s) => {
      expect(streamed.filter(([x]) => x === s).map(([, id]) => id)).toEqual(g.tokens);
      const seq = [...prompts[s]];
      g.tokens.forEach((t, i) => {
        expect(g.logits[i]).toEqual(next(seq));
        seq.push(t);
      });
    });
    const [beam] = await runDecoding(sequenceModel([prompts[0]], next), [prompts[0]], { maxNewTokens: 6, numBeams: 3, keepLogits: true });
    const seq = [...prompts[0]];
    beam.tokens.forEach((t, i) => {
      expect(beam.logits[i]).toEqual(next(seq));
      seq.push(t);
    });
  });

  it('stop strings: the last token may overhang the string, and it must end inside the last token', () => {
    const o = { stopStrings: ['xy'], decode };
    expect(stopStringHit([5, 8, 9], o)).toBe('xy'); // 'ba' 'x' 'yz': ends inside 'yz'
    expect(stopStringHit([5, 8, 9, 7], o)).toBeUndefined(); // ended one token earlier
    expect(stopStringHit([4, 8], { stopStrings: ['abx'], decode })).toBe('abx'); // across tokens
    expect(stopStringHit([], o)).toBeUndefined();
  });

  it('refuses bad options, naming them', async () => {
    const m = () => sequenceModel(prompts, next);
    await expect(runDecoding(m(), prompts, { topP: 7 })).rejects.toThrow('topP must be a number in (0, 1], got 7');
    await expect(runDecoding(m(), prompts, { numBeams: 0 })).rejects.toThrow('numBeams must be an integer >= 1');
    await expect(runDecoding(m(), prompts, { topK: 1.5 })).rejects.toThrow('topK must be an integer >= 0');
    await expect(runDecoding(m(), prompts, { repetitionPenalty: 0 })).rejects.toThrow('repetitionPenalty must be a number > 0');
    await expect(runDecoding(m(), prompts, { stopStrings: ['x'] })).rejects.toThrow('stopStrings need a decode function');
    await expect(runDecoding(m(), prompts, { numBeams: 2, temperature: 1 })).rejects.toThrow('beam search (numBeams 2) with sampling');
    await expect(runDecoding(m(), prompts, { maxNewTokens: 0 })).rejects.toThrow('maxNewTokens must be an integer >= 1');
  });
});
