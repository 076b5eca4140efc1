/**
 * Text generation with LLaVA-UHD: prefill the prompts (visual features written over their
 * placeholders) into a KV cache per layer, then decode one token per row at a time. Several
 * samples share each forward pass (`generateBatch`): their views are encoded in one vision pass,
 * their prompts left-padded to one length (the cache hides the padding and starts each row's
 * positions after it, so a row computes what it would alone), and beam search keeps numBeams
 * rows per sample. The search itself (greedy, sampling, beams, processors, stopping) is
 * llava-uhd/decoding.ts; this file is the model side of it.
 */
import * as ag from '../autograd/index.js';
import { KVCache } from '../nn/index.js';
import { manualSeed, tensor, tidy, type Tensor } from '../tensor/index.js';
import {
  argmax, processScores, resolveDecodingOptions, runDecoding, sampleToken, type Decoded, type DecodingOptions, type NextTokenModel,
} from './decoding.js';
import type { LlavaUHD } from './model.js';

export interface GenerateOptions extends DecodingOptions {
  /** Seeds the generator for sampling (reproducible answers). */
  seed?: number;
}

export interface Prompt {
  ids: readonly number[];
  /** Positions of the visual placeholders, in order. */
  unkPositions: readonly number[];
}

/** One sample of a batch: its prompt and its images' normalised views [3, H, W], in order. */
export interface GenerateItem {
  prompt: Prompt;
  pixels: Tensor[];
}

export interface Generation extends Decoded {
  /**
   * With a `decode` option: the answer as text, without the stop token that ended it and cut
   * before the stop string that ended it (transformers keeps both in its output ids, as `tokens`
   * here does; the text is what a user reads).
   */
  text?: string;
}

/** Picks the next token from logits: argmax, or a temperature/top-p sample (transformers' rules). */
export function pickToken(logits: ArrayLike<number>, temperature: number, topP: number): number {
  if (temperature <= 0) return argmax(logits);
  const o = resolveDecodingOptions({ temperature, topP });
  return sampleToken(processScores(Float64Array.from(logits), [], 0, o, true));
}

/**
 * The weights holding NaN or ±Inf, by name with counts (all of them read back: this runs only
 * once the logits are found broken).
 */
export async function nonFiniteParameters(model: LlavaUHD): Promise<{ name: string; nan: number; inf: number }[]> {
  const bad: { name: string; nan: number; inf: number }[] = [];
  for (const [name, p] of model.namedParameters()) {
    const data = await p.data();
    let nan = 0;
    let inf = 0;
    for (let i = 0; i < data.length; i++) {
      const x = data[i];
      if (Number.isNaN(x)) nan++;
      else if (x === Infinity || x === -Infinity) inf++;
    }
    if (nan || inf) bad.push({ name, nan, inf });
  }
  return bad;
}

/** Throws when a row of logits holds NaN/Inf, naming the weights that do (or saying none do). */
async function checkFinite(model: LlavaUHD, rows: Float32Array[], where: string): Promise<void> {
  let nan = 0;
  let inf = 0;
  for (const row of rows) {
    for (let i = 0; i < row.length; i++) {
      const x = row[i];
      if (Number.isNaN(x)) nan++;
      else if (x === Infinity || x === -Infinity) inf++;
    }
  }
  if (!nan && !inf) return;
  const bad = await nonFiniteParameters(model);
  const total = [...model.namedParameters()].length;
  const head = `generate: the logits at ${where} hold ${nan} NaN and ${inf} ±Inf values`;
  if (bad.length === 0) {
    throw new Error(`${head}, although every weight is finite: the input (the image's pixels?) or an overflow produced them`);
  }
  const named = bad.slice(0, 5).map((b) => `${b.name} (${b.nan} NaN, ${b.inf} ±Inf)`).join(', ');
  throw new Error(`${head}: the weights are broken, ${bad.length} of ${total} tensors hold NaN/Inf: ${named}${bad.length > 5 ? ', ...' : ''} (weights saved from a diverged training run?)`);
}

/**
 * The model side of decoding: rows of the batch in one KV cache per layer. `start` prefills every
 * prompt (left-padded to the longest), `step` reorders the cache's rows and feeds one token each.
 */
class LlavaRows implements NextTokenModel {
  readonly caches: KVCache[];
  private readonly device;
  private steps = 0;

  constructor(private readonly model: LlavaUHD, private readonly items: readonly GenerateItem[]) {
    this.device = model.llm.model.embed_tokens.weight.device;
    this.caches = model.llm.model.layers.map(() => new KVCache());
  }

  private async read(logits: Tensor, where: string): Promise<Float32Array[]> {
    const [R, , V] = logits.shape;
    const data = Float32Array.from(await logits.data());
    logits.dispose();
    const rows = Array.from({ length: R }, (_, r) => data.subarray(r * V, (r + 1) * V));
    await checkFinite(this.model, rows, where);
    return rows;
  }

  async start(): Promise<Float32Array[]> {
    const { model, items, device } = this;
    const S = Math.max(...items.map((it) => it.prompt.ids.length));
    const padding = items.map((it) => S - it.prompt.ids.length);
    const logits = ag.noGrad(() =>
      tidy(() => {
        // one vision pass over every view of every sample, then each sample's share of the features
        const views = items.flatMap((it) => it.pixels);
        const visual = views.length ? model.encodeViews(views) : null;
        let view = 0;
        let offset = 0;
        const embeds = items.map((it, b) => {
          let n = 0;
          for (let v = 0; v < it.pixels.length; v++) n += visual!.tokensPerView[view++];
          const features = n ? ag.narrow(visual!.features, 1, offset, n) : null;
          offset += n;
          const ids = tensor([[...new Array<number>(padding[b]).fill(0), ...it.prompt.ids]], { dtype: 'int32', device });
          return model.embed(ids, features, it.prompt.unkPositions.map((p) => p + padding[b]));
        });
        if (padding.some((p) => p > 0)) for (const c of this.caches) c.padding = [...padding];
        const h = model.llm.model.forward(embeds.length === 1 ? embeds[0] : ag.concat(embeds, 0), { caches: this.caches });
        return model.llm.logits(ag.narrow(h, 1, S - 1, 1));
      }),
    );
    return this.read(logits, "the prompt's last position");
  }

  async step(parents: readonly number[], tokens: readonly number[]): Promise<Float32Array[]> {
    for (const c of this.caches) c.select(parents);
    const logits = ag.noGrad(() =>
      tidy(() => {
        const ids = tensor(Int32Array.from(tokens), { shape: [tokens.length, 1], dtype: 'int32', device: this.device });
        return this.model.llm.forward(ids, { caches: this.caches });
      }),
    );
    return this.read(logits, `answer token ${++this.steps}`);
  }

  dispose(): void {
    for (const c of this.caches) c.dispose();
  }
}

function checkItem(it: GenerateItem, i: number, vocab: number): void {
  const { ids, unkPositions } = it.prompt;
  if (ids.length === 0) throw new Error(`generate: empty prompt${i ? ` (sample ${i})` : ''}`);
  ids.forEach((id, k) => {
    if (!(Number.isInteger(id) && id >= 0 && id < vocab)) throw new Error(`generate: sample ${i}: prompt id ${id} at position ${k} is outside the vocabulary 0..${vocab - 1}`);
  });
  unkPositions.forEach((p) => {
    if (!(Number.isInteger(p) && p >= 0 && p < ids.length)) throw new Error(`generate: sample ${i}: placeholder position ${p} is outside the prompt (length ${ids.length})`);
  });
}

/** The answer as text: without the stop token that ended it, cut before the stop string that did. */
function answerText(d: Decoded, decode: (ids: number[]) => string, stopTokens: readonly number[]): string {
  const ids = d.finish === 'stop-token' && stopTokens.includes(d.tokens[d.tokens.length - 1]) ? d.tokens.slice(0, -1) : d.tokens;
  const text = decode(ids);
  if (d.finish !== 'stop-string' || d.stopString === undefined) return text;
  const at = text.lastIndexOf(d.stopString);
  return at >= 0 ? text.slice(0, at) : text;
}

/**
 * Answers for several samples at once (each its prompt and views), in input order. Greedy results
 * equal one-by-one `generate` (tests/llava-uhd/generate.test.ts); `onToken` gets the sample index.
 */
export async function generateBatch(model: LlavaUHD, items: readonly GenerateItem[], opts: GenerateOptions = {}): Promise<Generation[]> {
  if (items.length === 0) return [];
  const vocab = model.config.text_config.vocab_size;
  items.forEach((it, i) => checkItem(it, i, vocab));
  resolveDecodingOptions(opts); // bad options fail before any work
  if (opts.seed !== undefined) manualSeed(opts.seed);
  const rows = new LlavaRows(model, items);
  try {
    const decoded = await runDecoding(rows, items.map((it) => it.prompt.ids), opts);
    const decode = opts.decode;
    return decode ? decoded.map((d) => ({ ...d, text: answerText(d, decode, opts.stopTokens ?? []) })) : decoded;
  } finally {
    rows.dispose();
  }
}

/** Generates up to maxNewTokens after the prompt, with images given as normalised views. */
export async function generate(model: LlavaUHD, prompt: Prompt, pixels: Tensor[], opts: GenerateOptions = {}): Promise<Generation> {
  const [g] = await generateBatch(model, [{ prompt, pixels }], opts);
  return g;
}
