/**
 * A checkpoint folder's own tokenizer: its `tokenizer.json` (and `tokenizer_config.json`) run by
 * `@huggingface/tokenizers`, with the markers of LLaVA-UHD's layout looked up by text rather than
 * assumed at fixed ids. A marker that is an ordinary vocabulary token (Qwen's `<unk>`) is made a
 * special token at its id, as the release does, so the text "<unk>" encodes as that one id.
 */
import { Tokenizer as HFTokenizer } from '@huggingface/tokenizers';
import { describeValue } from './schema.js';
import { MARKERS, type Marker, type SpecialTokens, type Tokenizer } from './tokenizer.js';

interface AddedTokenJSON {
  id: number;
  content: string;
  special?: boolean;
  single_word?: boolean;
  lstrip?: boolean;
  rstrip?: boolean;
  normalized?: boolean;
}

interface TokenizerJSON {
  added_tokens?: AddedTokenJSON[];
  model?: { vocab?: Record<string, number> | [string, number][] };
}

/** Pads batches: `<|endoftext|>` (Qwen's), else the config's pad_token. */
function padTokenOf(config: Record<string, unknown>): string | undefined {
  const pad = config.pad_token;
  if (typeof pad === 'string') return pad;
  if (typeof pad === 'object' && pad !== null && typeof (pad as { content?: unknown }).content === 'string') return (pad as { content: string }).content;
  return undefined;
}

export class FileTokenizer implements Tokenizer {
  readonly vocabSize: number;
  readonly special: SpecialTokens;
  readonly eosId: number;
  readonly padId: number;
  private readonly hf: HFTokenizer;

  /**
   * `json`: the parsed tokenizer.json; `config`: the parsed tokenizer_config.json (or {});
   * `source` names the file in errors.
   */
  constructor(json: unknown, config: Record<string, unknown>, readonly source: string) {
    if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new Error(`${source}: not a tokenizer.json object, got ${describeValue(json)}`);
    const j = json as TokenizerJSON;
    if (typeof j.model !== 'object' || j.model === null) throw new Error(`${source}: has no "model" (not a Hugging Face tokenizer.json)`);
    const added = [...(Array.isArray(j.added_tokens) ? j.added_tokens : [])];
    const vocab = new Map<string, number>(Array.isArray(j.model.vocab) ? j.model.vocab.map(([t], i) => [t, i] as [string, number]) : Object.entries(j.model.vocab ?? {}));
    const ids = new Map(added.map((t) => [t.content, t.id]));
    for (const m of [...MARKERS, '<|endoftext|>']) {
      if (ids.has(m) || !vocab.has(m)) continue;
      const id = vocab.get(m)!;
      added.push({ id, content: m, special: true, single_word: false, lstrip: false, rstrip: false, normalized: false });
      ids.set(m, id);
    }
    const missing = MARKERS.filter((m) => !ids.has(m));
    if (missing.length) throw new Error(`${source}: has no ${missing.join(', ')} token: not a tokenizer for LLaVA-UHD's layout (it needs ${MARKERS.join(' ')})`);
    try {
      this.hf = new HFTokenizer({ ...j, added_tokens: added }, config);
    } catch (err) {
      throw new Error(`${source}: @huggingface/tokenizers cannot build it: ${(err as Error).message}`);
    }
    const special = {} as Record<Marker, number>;
    for (const m of MARKERS) special[m] = ids.get(m)!;
    this.special = Object.freeze(special);
    this.eosId = special['<|im_end|>'];
    const padText = ids.has('<|endoftext|>') ? '<|endoftext|>' : padTokenOf(config);
    const pad = padText === undefined ? undefined : (ids.get(padText) ?? vocab.get(padText));
    if (pad === undefined) throw new Error(`${source}: has no <|endoftext|> and tokenizer_config.json names no pad_token: nothing to pad batches with`);
    this.padId = pad;
    this.vocabSize = Math.max(...vocab.values(), ...ids.values()) + 1;
  }

  encode(text: string): number[] {
    return this.hf.encode(text, { add_special_tokens: false }).ids;
  }

  decode(ids: readonly number[]): string {
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) throw new Error(`tokenizer (${this.source}): id ${id} is outside the vocabulary 0..${this.vocabSize - 1}`);
    }
    if (ids.length === 0) return '';
    return this.hf.decode([...ids], { skip_special_tokens: false, clean_up_tokenization_spaces: false });
  }
}
