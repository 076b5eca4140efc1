/**
 * The default `AnswerFn`: a batch of prepared rows through `generateBatch` (one vision pass and
 * one padded decode for the whole batch), with the benchmark's generation settings: beam search
 * (`numBeams`), the repetition penalty, `maxNewTokens`, stopping at `<|im_end|>`; a prompt longer
 * than `settings.maxInputLength` is an error naming the row (the release's processor would cut it).
 */
import type { Device } from '../../tensor/index.js';
import { generateBatch, type GenerateItem } from '../generate.js';
import { buildPrompt } from '../layout.js';
import type { LlavaUHD } from '../model.js';
import { prepareImage, viewPixels } from '../preprocess.js';
import type { Tokenizer } from '../tokenizer.js';
import type { AnswerFn } from './run.js';

export interface AnswerOptions {
  device: Device;
  /** Slice budget per image (default: the config's max_slice_nums). */
  maxSlices?: number;
  /** A checkpoint's own Jinja chat template (tokenizer_config.json), rendered instead of Qwen3's built-in one. */
  chatTemplate?: string;
}

export function modelAnswerFn(model: LlavaUHD, tok: Tokenizer, opts: AnswerOptions): AnswerFn {
  const stop = [tok.special['<|im_end|>'], tok.eosId];
  return async (batch, settings) => {
    const items: GenerateItem[] = [];
    try {
      for (const item of batch) {
        const prepared = item.images.map((img) => prepareImage(img, model.config, opts.maxSlices));
        const prompt = buildPrompt(item.turns, prepared.map((p) => p.tokens), tok, { chatTemplate: opts.chatTemplate });
        if (prompt.ids.length > settings.maxInputLength) {
          throw new Error(`row index ${item.index}: the prompt has ${prompt.ids.length} tokens, more than the maximum input length ${settings.maxInputLength}`);
        }
        items.push({ prompt: { ids: Array.from(prompt.ids), unkPositions: prompt.unkPositions }, pixels: viewPixels(prepared.flatMap((p) => p.views), opts.device) });
      }
      const gens = await generateBatch(model, items, {
        maxNewTokens: settings.maxNewTokens,
        numBeams: settings.numBeams,
        repetitionPenalty: settings.repetitionPenalty,
        // MiniCPM-V's chat() calls llm.generate(inputs_embeds=...) without input ids, so
        // transformers' repetition penalty sees only the generated tokens, never the prompt
        penalizePrompt: false,
        stopTokens: stop,
        vocabSize: tok.vocabSize,
      });
      return gens.map((g) => tok.decode(g.tokens.filter((t) => !stop.includes(t))));
    } finally {
      for (const it of items) for (const p of it.pixels) p.dispose();
    }
  };
}
