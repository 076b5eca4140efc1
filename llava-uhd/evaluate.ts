/**
 * Evaluation: exact-match accuracy of generated answers (overall and per question type), visual
 * tokens per image, visual-encoding FLOPs per image from the FLOPs model, and measured encode
 * time, so users see whether FLOPs savings become time savings.
 */
import * as ag from '../autograd/index.js';
import { getBackend, tidy, type Device } from '../tensor/index.js';
import { viewFlops } from './flops.js';
import { generate } from './generate.js';
import { buildPrompt } from './layout.js';
import type { LlavaUHD } from './model.js';
import { prepareImage, viewPixels } from './preprocess.js';
import type { Tokenizer } from './tokenizer.js';
import type { Dataset, Sample } from './train.js';

export interface EvalOptions {
  device: Device;
  /** Slice budget (default: the config's max_slice_nums). */
  maxSlices?: number;
  /** Evaluate the first `limit` samples (default all). */
  limit?: number;
  maxNewTokens?: number;
  /** Called after each sample (for progress bars). */
  onSample?: (done: number, total: number) => void;
}

export interface EvalResult {
  samples: number;
  accuracy: number;
  byType: Record<string, { correct: number; total: number; accuracy: number }>;
  visualTokensPerImage: number;
  /** Visual encoding (ViT + D + connector) per image, from the FLOPs model. */
  gmacsPerImage: number;
  /** Measured wall time of encodeViews per image (includes the GPU flush when on webgpu). */
  encodeMsPerImage: number;
  answers: { question: string; expected: string; got: string; type: string }[];
}

/** The answer the model gives to a sample's first user question (greedy); a text-only sample has no encode time. */
export async function answer(model: LlavaUHD, tok: Tokenizer, s: Sample, opts: EvalOptions): Promise<{ text: string; encodeMs: number; visualTokens: number; gmacs: number }> {
  const question = s.turns.filter((t) => t.role !== 'assistant').slice(0, 1);
  // the images the first user turn shows: its <image> count, or all of them when it names none
  const shown = question[0]?.content.split('<image>').length - 1 || s.images.length;
  const prepared = s.images.slice(0, shown).map((img) => prepareImage(img, model.config, opts.maxSlices));
  const prompt = buildPrompt(question, prepared.map((p) => p.tokens), tok);
  const views = prepared.flatMap((p) => p.views);
  const pixels = viewPixels(views, opts.device);
  // time the visual encoding alone, then generate (which encodes again, as a user would)
  let encodeMs = 0;
  if (pixels.length) {
    const t0 = performance.now();
    const enc = ag.noGrad(() => tidy(() => model.encodeViews(pixels)));
    await enc.features.slice(null, [0, 1], [0, 1]).data();
    encodeMs = performance.now() - t0;
    enc.features.dispose();
  }
  const g = await generate(model, { ids: Array.from(prompt.ids), unkPositions: prompt.unkPositions }, pixels, {
    maxNewTokens: opts.maxNewTokens ?? 8,
    stopTokens: [tok.special['<|im_end|>'], tok.eosId],
    vocabSize: tok.vocabSize, // a tiny config's head has rows no token decodes to
  });
  for (const p of pixels) p.dispose();
  const ids = g.tokens.filter((t) => t !== tok.special['<|im_end|>'] && t !== tok.eosId);
  const gmacs = views.reduce((n, v) => n + viewFlops(model.config, { width: v.width, height: v.height }).visualEncoding, 0) / 1e9;
  return { text: tok.decode(ids).trim(), encodeMs, visualTokens: prompt.visualTokens, gmacs };
}

export async function evaluate(model: LlavaUHD, tok: Tokenizer, data: Dataset, opts: EvalOptions): Promise<EvalResult> {
  const n = Math.min(opts.limit ?? data.size, data.size);
  if (n === 0) throw new Error('evaluate: the dataset is empty');
  model.eval();
  const res: EvalResult = { samples: n, accuracy: 0, byType: {}, visualTokensPerImage: 0, gmacsPerImage: 0, encodeMsPerImage: 0, answers: [] };
  let correct = 0;
  for (let i = 0; i < n; i++) {
    const s = data.get(i);
    const a = await answer(model, tok, s, opts);
    const ok = a.text === s.answer.trim();
    correct += ok ? 1 : 0;
    const t = (res.byType[s.type] ??= { correct: 0, total: 0, accuracy: 0 });
    t.total++;
    t.correct += ok ? 1 : 0;
    res.visualTokensPerImage += a.visualTokens / n;
    res.gmacsPerImage += a.gmacs / n;
    res.encodeMsPerImage += a.encodeMs / n;
    res.answers.push({ question: s.turns.find((x) => x.role === 'user')?.content ?? '', expected: s.answer, got: a.text, type: s.type });
    opts.onSample?.(i + 1, n);
  }
  await getBackend(opts.device).sync();
  res.accuracy = correct / n;
  for (const t of Object.values(res.byType)) t.accuracy = t.correct / t.total;
  model.train();
  return res;
}
