/** The multimodal token layout: image markers, chat template, answer-only shifted labels, packing. */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { IGNORE_INDEX, buildConversation, buildPrompt, checkPlaceholders, imagePlaceholder, pack, type SampleLayout, type ViewTokens } from '../../llava-uhd/layout.js';
import { ByteTokenizer, Qwen3Tokenizer } from '../../llava-uhd/tokenizer.js';

const tok = new ByteTokenizer();
const bytes = (s: string) => [...Buffer.from(s, 'utf8')];
const IM_START = 256, IM_END = 257, IMG = 259, IMG_END = 260, SLICE = 261, SLICE_END = 262, ID = 263, ID_END = 264, UNK = 265;
const unk = (n: number) => new Array<number>(n).fill(UNK);

/** A thumbnail of 3 tokens and a 2 x 2 grid of slices of 2 tokens: 11 visual tokens. */
const views: ViewTokens = { thumbnailTokens: 3, slices: { rows: 2, cols: 2, tokensPerSlice: 2 } };
const slicedIds = (i: number) => [
  ID, ...bytes(String(i)), ID_END,
  IMG, ...unk(3), IMG_END,
  SLICE, ...unk(2), SLICE_END, SLICE, ...unk(2), SLICE_END,
  10,
  SLICE, ...unk(2), SLICE_END, SLICE, ...unk(2), SLICE_END,
];

describe('imagePlaceholder', () => {
  it('writes image id, thumbnail, then slice rows joined by "\\n" (spec, "Text layout")', () => {
    expect(imagePlaceholder(0, views, tok)).toEqual(slicedIds(0));
  });
  it('the image id is ordinary text: several digits for image 12', () => {
    expect(imagePlaceholder(12, views, tok).slice(0, 4)).toEqual([ID, 49, 50, ID_END]);
  });
  it('a single-view image ends at </image>', () => {
    expect(imagePlaceholder(1, { thumbnailTokens: 4, slices: null }, tok)).toEqual([ID, 49, ID_END, IMG, ...unk(4), IMG_END]);
  });
  it('a 1 x 3 grid has no newline; a 3 x 1 grid has two', () => {
    const row = imagePlaceholder(0, { thumbnailTokens: 1, slices: { rows: 1, cols: 3, tokensPerSlice: 1 } }, tok);
    const col = imagePlaceholder(0, { thumbnailTokens: 1, slices: { rows: 3, cols: 1, tokensPerSlice: 1 } }, tok);
    expect(row.filter((id) => id === 10)).toHaveLength(0);
    expect(col.filter((id) => id === 10)).toHaveLength(2);
    expect(row.filter((id) => id === UNK)).toHaveLength(4);
  });
  it("uses Qwen3's ids around the markers", async () => {
    const q = await Qwen3Tokenizer.load();
    expect(imagePlaceholder(0, { thumbnailTokens: 2, slices: { rows: 2, cols: 1, tokensPerSlice: 1 } }, q)).toEqual([
      151681, 15, 151682, 151669, 128244, 128244, 151670, 151679, 128244, 151680, 198, 151679, 128244, 151680,
    ]);
  });
  it.each([
    ['a negative image index', -1, views, 'imagePlaceholder: image index must be an integer >= 0, got -1'],
    ['no thumbnail tokens', 0, { thumbnailTokens: 0, slices: null }, 'imagePlaceholder: thumbnailTokens must be an integer >= 1, got 0'],
    ['a fractional grid', 0, { thumbnailTokens: 1, slices: { rows: 1.5, cols: 2, tokensPerSlice: 4 } }, 'imagePlaceholder: slices must have integer rows, cols, tokensPerSlice >= 1, got {"rows":1.5,"cols":2,"tokensPerSlice":4}'],
  ])('rejects %s', (_name, i, v, message) => {
    expect(() => imagePlaceholder(i as number, v as ViewTokens, tok)).toThrow(message);
  });
});

describe('buildConversation', () => {
  const turns = [
    { role: 'user' as const, content: '<image>\nWhat?' },
    { role: 'assistant' as const, content: 'A cat.' },
  ];
  // Qwen3's template puts an empty think block before the last answer (not trained on)
  const THINK = '<think>\n\n</think>\n\n';
  const prefix = [IM_START, ...bytes('user\n'), ...slicedIds(0), ...bytes('\nWhat?'), IM_END, ...bytes('\n'), IM_START, ...bytes('assistant\n'), ...bytes(THINK)];
  const answer = [...bytes('A cat.'), IM_END];
  const expected = [...prefix, ...answer, 10];

  it('renders the chat template around the expanded image, id by id', () => {
    const s = buildConversation(turns, [views], tok);
    expect([...s.ids]).toEqual(expected);
    expect(tok.decode([...s.ids])).toBe(
      '<|im_start|>user\n<image_id>0</image_id><image><unk><unk><unk></image><slice><unk><unk></slice><slice><unk><unk></slice>\n'
      + '<slice><unk><unk></slice><slice><unk><unk></slice>\nWhat?<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nA cat.<|im_end|>\n');
  });

  it('labels[i] = ids[i+1] when token i+1 is in the answer (content + <|im_end|>), else -100', () => {
    const { ids, labels } = buildConversation(turns, [views], tok);
    const want = new Array<number>(expected.length).fill(IGNORE_INDEX);
    // The answer occupies positions prefix.length .. prefix.length + answer.length - 1; each is
    // predicted from the position before it.
    for (let k = 0; k < answer.length; k++) want[prefix.length - 1 + k] = answer[k];
    expect([...labels]).toEqual(want);
    expect(labels[prefix.length - 1]).toBe('A'.charCodeAt(0)); // the think block's last "\n" predicts the first answer byte
    expect(labels.slice(0, prefix.length - 1).every((l) => l === IGNORE_INDEX)).toBe(true); // header and think block: context
    expect(labels[prefix.length + answer.length - 2]).toBe(IM_END); // the last content byte predicts <|im_end|>
    expect(labels[prefix.length + answer.length - 1]).toBe(IGNORE_INDEX); // <|im_end|> -> "\n" is not trained
    expect(labels[ids.length - 1]).toBe(IGNORE_INDEX);
    expect(tok.decode([...labels].filter((l) => l !== IGNORE_INDEX))).toBe('A cat.<|im_end|>');
  });

  it('unkPositions are exactly the <unk> ids, in order', () => {
    const s = buildConversation(turns, [views], tok);
    const found = [...s.ids].flatMap((id, i) => (id === UNK ? [i] : []));
    expect(s.unkPositions).toEqual(found);
    expect(s.visualTokens).toBe(11);
    expect(s.unkPositions[0]).toBe(1 + 5 + 3 + 1); // <|im_start|> "user\n" <image_id>0</image_id> <image>
  });

  it('labels every answer of a multi-turn sample and nothing the user or system wrote', () => {
    const s = buildConversation([
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'Hi' },
      { role: 'assistant', content: 'Hello' },
      { role: 'user', content: 'Bye' },
      { role: 'assistant', content: 'Ciao' },
    ], [], tok);
    const targets = [...s.labels].filter((l) => l !== IGNORE_INDEX);
    expect(tok.decode(targets)).toBe('Hello<|im_end|>Ciao<|im_end|>');
    expect(tok.decode([...s.ids])).toBe('<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n'
      + '<|im_start|>assistant\nHello<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nCiao<|im_end|>\n');
    expect(s.unkPositions).toEqual([]);
  });

  it('with no <image> in the text, the images open the first user turn, each followed by "\\n"', () => {
    const single: ViewTokens = { thumbnailTokens: 2, slices: null };
    const s = buildConversation([{ role: 'user', content: 'Compare.' }, { role: 'assistant', content: 'Same.' }], [single, single], tok);
    expect(tok.decode([...s.ids])).toBe('<|im_start|>user\n<image_id>0</image_id><image><unk><unk></image>\n'
      + '<image_id>1</image_id><image><unk><unk></image>\nCompare.<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nSame.<|im_end|>\n');
    expect(s.visualTokens).toBe(4);
  });

  it('puts images where the user turns say, in order, across turns', () => {
    const a: ViewTokens = { thumbnailTokens: 1, slices: null };
    const b: ViewTokens = { thumbnailTokens: 2, slices: null };
    const s = buildConversation([
      { role: 'user', content: 'A: <image>' },
      { role: 'assistant', content: 'ok' },
      { role: 'user', content: '<image> and B' },
      { role: 'assistant', content: 'ok' },
    ], [a, b], tok);
    expect(tok.decode([...s.ids])).toContain('user\nA: <image_id>0</image_id><image><unk></image><|im_end|>');
    expect(tok.decode([...s.ids])).toContain('user\n<image_id>1</image_id><image><unk><unk></image> and B<|im_end|>');
    expect(s.visualTokens).toBe(3);
  });

  it.each([
    ['more placeholders than images', [{ role: 'user', content: '<image><image>' }], 1, 'buildConversation: 2 <image> placeholders in the user turns but 1 images'],
    ['a placeholder but no image', [{ role: 'user', content: '<image>' }], 0, 'buildConversation: 1 <image> placeholders in the user turns but 0 images'],
    ['an image in an answer', [{ role: 'user', content: 'x' }, { role: 'assistant', content: '<image>' }], 0, 'buildConversation: turn 1 (assistant) contains <image>; images go in user turns'],
    ['<unk> written in the text', [{ role: 'user', content: 'a <unk> b' }], 0, 'layout: turn 0 (user) contains <unk>, which only the image layout may hold'],
    ['a late system turn', [{ role: 'user', content: 'x' }, { role: 'system', content: 'y' }], 0, 'buildConversation: a system turn must come first, found one at turn 1'],
    ['images without a user turn', [{ role: 'system', content: 'x' }], 1, 'buildConversation: 1 images but no user turn to put them in'],
    ['no turns', [], 0, 'buildConversation: no turns'],
  ])('rejects %s', (_name, turns, nImages, message) => {
    const imgs = new Array<ViewTokens>(nImages as number).fill({ thumbnailTokens: 1, slices: null });
    expect(() => buildConversation(turns as { role: 'user' | 'assistant' | 'system'; content: string }[], imgs, tok)).toThrow(message);
  });

  it('with Qwen3, the pieces give the ids of the rendered text encoded in one go', async () => {
    const q = await Qwen3Tokenizer.load();
    const s = buildConversation(turns, [views], q);
    const text = q.decode([...s.ids]);
    expect(text.startsWith('<|im_start|>user\n<image_id>0</image_id><image><unk><unk><unk></image><slice>')).toBe(true);
    expect([...s.ids]).toEqual(q.encode(text));
    expect(s.unkPositions).toEqual([...s.ids].flatMap((id, i) => (id === 128244 ? [i] : [])));
    expect(q.decode([...s.labels].filter((l) => l !== IGNORE_INDEX))).toBe('A cat.<|im_end|>');
  });
});

describe('buildPrompt', () => {
  it('ends with <|im_start|>assistant\\n and an empty think block (thinking disabled, as the release) and carries the placeholders', () => {
    const p = buildPrompt([{ role: 'user', content: '<image>\nWhat?' }], [views], tok);
    expect([...p.ids.slice(-30)]).toEqual([IM_START, ...bytes('assistant\n<think>\n\n</think>\n\n')]);
    expect(tok.decode([...p.ids])).toBe(tok.decode([...buildConversation([{ role: 'user', content: '<image>\nWhat?' }], [views], tok).ids]) + '<|im_start|>assistant\n<think>\n\n</think>\n\n');
    const thinking = buildPrompt([{ role: 'user', content: '<image>\nWhat?' }], [views], tok, { enableThinking: true });
    expect([...thinking.ids.slice(-11)]).toEqual([IM_START, ...bytes('assistant\n')]);
    expect(p.visualTokens).toBe(11);
    expect('labels' in p).toBe(false);
  });
  it('refuses a conversation that already ends with an answer', () => {
    expect(() => buildPrompt([{ role: 'user', content: 'x' }, { role: 'assistant', content: 'y' }], [], tok))
      .toThrow('buildPrompt: the last turn is an answer already; the prompt asks for the next one');
  });
});

describe('checkPlaceholders', () => {
  it('passes equal counts and names both counts otherwise', () => {
    expect(() => checkPlaceholders(96, 96)).not.toThrow();
    expect(() => checkPlaceholders(120, 96)).toThrow('layout: 120 <unk> placeholders but 96 visual features');
  });
});

describe('pack', () => {
  /** A sample of n tokens whose ids are base + position, with <unk>s at the given positions and a final answer token. */
  const sample = (n: number, base: number, unks: number[] = []): SampleLayout => {
    const ids = Int32Array.from({ length: n }, (_, i) => (unks.includes(i) ? UNK : base + i));
    const labels = new Int32Array(n).fill(IGNORE_INDEX);
    labels[n - 2] = ids[n - 1];
    return { ids, labels, unkPositions: unks, visualTokens: unks.length };
  };

  it('fills sequences greedily in order, with segment ids and offset placeholders', () => {
    const s = [sample(5, 0, [1, 2]), sample(4, 10, [0]), sample(3, 20, [2])];
    const packed = pack(s, 10);
    expect(packed).toHaveLength(2);
    const [a, b] = packed;
    expect([...a.ids]).toEqual([...s[0].ids, ...s[1].ids]);
    expect([...a.labels]).toEqual([...s[0].labels, ...s[1].labels]);
    expect([...a.segmentIds]).toEqual([0, 0, 0, 0, 0, 1, 1, 1, 1]);
    expect(a.samples).toEqual([
      { index: 0, offset: 0, length: 5, unkPositions: [1, 2] },
      { index: 1, offset: 5, length: 4, unkPositions: [5] },
    ]);
    expect(a.unkPositions).toEqual([1, 2, 5]);
    expect(a.unkPositions.every((p) => a.ids[p] === UNK)).toBe(true);
    expect(a.labels[4]).toBe(IGNORE_INDEX); // no target crosses the seam
    expect([...b.segmentIds]).toEqual([0, 0, 0]);
    expect(b.samples).toEqual([{ index: 2, offset: 0, length: 3, unkPositions: [2] }]);
  });

  it('a sample of exactly maxLength fills a sequence alone', () => {
    expect(pack([sample(3, 0), sample(4, 0), sample(1, 0)], 4).map((p) => p.samples.map((x) => x.index))).toEqual([[0], [1], [2]]);
  });

  it('keeps every token, in order, within maxLength, with segments counting up from 0', () => {
    fc.assert(fc.property(fc.array(fc.integer({ min: 2, max: 12 }), { maxLength: 20 }), fc.integer({ min: 12, max: 40 }), (lengths, maxLength) => {
      const s = lengths.map((n, k) => sample(n, 100 * k, [0]));
      const packed = pack(s, maxLength);
      const all = packed.flatMap((p) => [...p.ids]);
      const segmentsOk = packed.every((p) => p.ids.length <= maxLength && p.segmentIds[0] === 0
        && p.segmentIds.every((g, i) => i === 0 || g === p.segmentIds[i - 1] || g === p.segmentIds[i - 1] + 1));
      const unkOk = packed.every((p) => p.unkPositions.length === p.samples.length && p.unkPositions.every((u) => p.ids[u] === UNK));
      return segmentsOk && unkOk && JSON.stringify(all) === JSON.stringify(s.flatMap((x) => [...x.ids]));
    }));
  });

  it('names a sample longer than maxLength', () => {
    expect(() => pack([sample(4, 0), sample(12, 0)], 10)).toThrow('pack: sample 1 has 12 tokens, more than maxLength 10');
    expect(() => pack([], 0)).toThrow('pack: maxLength must be an integer >= 1, got 0');
    expect(pack([], 8)).toEqual([]);
  });
});
