/**
 * The default `AnswerFn`: each prepared row through today's `generate`, one at a time, greedy,
 * up to `settings.maxNewTokens`, stopping at `<|im_end|>`; a prompt longer than
 * `settings.maxInputLength` is an error naming the row (the release's processor would cut it).
 * Beam search (`numBeams`) and the repetition penalty are not applied yet: `HONOURED` lists what
 * is, and the CLI says so. When batched generation lands, this file is the one to change.
 */
import type { Device } from '../../tensor/index.js';
import { generate } from '../generate.js';
import { buildPrompt } from '../layout.js';
import type { LlavaUHD } from '../model.js';
import { prepareImage, viewPixels } from '../preprocess.js';
import type { Tokenizer } from '../tokenizer.js';
import type { GenerationSettings } from './benchmarks.js';
import type { AnswerFn } from './run.js';

/** The generation settings this AnswerFn applies; the others are ignored for now. */
export const HONOURED: readonly (keyof GenerationSettings)[] = ['maxNewTokens', 'maxInputLength'];

export interface AnswerOptions {
  device: Device;
  /** Slice budget per image (default: the config's max_slice_nums). */
  maxSlices?: number;
}

export function modelAnswerFn(model: LlavaUHD, tok: Tokenizer, opts: AnswerOptions): AnswerFn {
  const stop = [tok.special['<|im_end|>'], tok.eosId];
  return async (batch, settings) => {
    const out: string[] = [];
    for (const item of batch) {
      const prepared = item.images.map((img) => prepareImage(img, model.config, opts.maxSlices));
      const prompt = buildPrompt(item.turns, prepared.map((p) => p.tokens), tok);
      if (prompt.ids.length > settings.maxInputLength) {
        throw new Error(`row index ${item.index}: the prompt has ${prompt.ids.length} tokens, more than the maximum input length ${settings.maxInputLength}`);
      }
      const pixels = viewPixels(prepared.flatMap((p) => p.views), opts.device);
      try {
        const g = await generate(model, { ids: Array.from(prompt.ids), unkPositions: prompt.unkPositions }, pixels, { maxNewTokens: settings.maxNewTokens, stopTokens: stop });
        // ids past the tokenizer's vocabulary (the embedding may have spare rows) cannot be decoded;
        // until generate can be told the tokenizer's size (GenerateOptions.vocabSize) they are dropped
        out.push(tok.decode(g.tokens.filter((t) => !stop.includes(t) && t < tok.vocabSize)));
      } finally {
        for (const p of pixels) p.dispose();
      }
    }
    return out;
  };
}
