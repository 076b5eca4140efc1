/**
 * Text generation: prefill the prompt (visual features written over its placeholders) into a
 * KV cache per layer, then decode one token at a time. Greedy, or sampling with temperature
 * and top-p from a seeded generator; stop tokens, a token budget, a streaming callback.
 */
import * as ag from '../autograd/index.js';
import { KVCache } from '../nn/index.js';
import { manualSeed, tensor, tidy, type Tensor } from '../tensor/index.js';
import { uniform } from '../tensor/random.js';
import type { LlavaUHD } from './model.js';

export interface GenerateOptions {
  maxNewTokens?: number;
  /** 0 (default) is greedy. */
  temperature?: number;
  /** Nucleus sampling: keep the smallest set of tokens whose probability reaches topP. */
  topP?: number;
  /** Seeds the generator for sampling (reproducible answers). */
  seed?: number;
  /** Generation stops after emitting one of these (it is included in the output). */
  stopTokens?: readonly number[];
  /** Called with each new token as it is produced. */
  onToken?: (id: number) => void;
  /** Also return each step's logits (for tests). */
  keepLogits?: boolean;
}

export interface Prompt {
  ids: readonly number[];
  /** Positions of the visual placeholders, in order. */
  unkPositions: readonly number[];
}

export interface Generation {
  tokens: number[];
  /** Per generated token, the logits it was chosen from (when keepLogits). */
  logits: Float32Array[];
}

/** Picks the next token from logits: argmax, or a temperature/top-p sample. */
export function pickToken(logits: ArrayLike<number>, temperature: number, topP: number): number {
  if (temperature <= 0) {
    let best = 0;
    for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
    return best;
  }
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) max = Math.max(max, logits[i]);
  const probs = Array.from(logits, (l, i) => ({ i, p: Math.exp((l - max) / temperature) }));
  const total = probs.reduce((s, x) => s + x.p, 0);
  probs.forEach((x) => (x.p /= total));
  probs.sort((a, b) => b.p - a.p);
  let kept = 0;
  let mass = 0;
  while (kept < probs.length && (kept === 0 || mass < topP)) mass += probs[kept++].p;
  let r = uniform() * mass;
  for (let j = 0; j < kept; j++) {
    r -= probs[j].p;
    if (r <= 0) return probs[j].i;
  }
  return probs[kept - 1].i;
}

/** Generates up to maxNewTokens after the prompt, with images given as normalised views. */
export async function generate(model: LlavaUHD, prompt: Prompt, pixels: Tensor[], opts: GenerateOptions = {}): Promise<Generation> {
  const { maxNewTokens = 64, temperature = 0, topP = 1, stopTokens = [], onToken, keepLogits = false } = opts;
  if (prompt.ids.length === 0) throw new Error('generate: empty prompt');
  if (opts.seed !== undefined) manualSeed(opts.seed);
  const device = model.llm.model.embed_tokens.weight.device;
  const caches = model.llm.model.layers.map(() => new KVCache());
  const out: Generation = { tokens: [], logits: [] };
  try {
    // prefill: the whole prompt at once, keeping only the last position's logits
    let last = ag.noGrad(() =>
      tidy(() => {
        const ids = tensor([Array.from(prompt.ids)], { dtype: 'int32', device });
        const visual = pixels.length ? model.encodeViews(pixels).features : null;
        const h = model.llm.model.forward(model.embed(ids, visual, prompt.unkPositions), { caches });
        return model.llm.logits(ag.narrow(h, 1, h.shape[1] - 1, 1));
      }),
    );
    for (let step = 0; step < maxNewTokens; step++) {
      const logits = Float32Array.from(await last.data());
      last.dispose();
      const next = pickToken(logits, temperature, topP);
      out.tokens.push(next);
      if (keepLogits) out.logits.push(logits);
      onToken?.(next);
      if (stopTokens.includes(next) || step === maxNewTokens - 1) break;
      last = ag.noGrad(() =>
        tidy(() => {
          const ids = tensor([[next]], { dtype: 'int32', device });
          return model.llm.forward(ids, { caches });
        }),
      );
    }
  } finally {
    for (const c of caches) c.dispose();
  }
  return out;
}
