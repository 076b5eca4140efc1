/** `uhd generate`: answer a question about an image, streaming the answer. */
import { createWriteStream } from 'node:fs';
import { once } from 'node:events';
import { chooseDevice, closeDevice as shutdown, parseDevice } from '../backends/index.js';
import { loadImage } from '../llava-uhd/image.js';
import { buildPrompt } from '../llava-uhd/layout.js';
import { generate, type GenerateOptions, type Generation } from '../llava-uhd/generate.js';
import { loadModel } from '../llava-uhd/load.js';
import { prepareImage, viewPixels } from '../llava-uhd/preprocess.js';

/** The options as commander hands them over (strings as typed). */
export interface GenerateCliOptions {
  config?: string;
  weights?: string;
  randomInit?: boolean;
  image: string;
  prompt: string;
  maxNewTokens: string;
  minNewTokens?: string;
  maxSlices?: string;
  temperature: string;
  topP: string;
  topK?: string;
  repetitionPenalty?: string;
  /** commander's `--no-penalize-prompt` sets this false. */
  penalizePrompt?: boolean;
  stop?: string[];
  numBeams?: string;
  lengthPenalty?: string;
  seed?: string;
  logits?: string;
  device: string;
}

/** A number from a flag's text, or an error naming the flag and what it accepts. */
function numberFlag(flag: string, text: string | undefined, want: { integer?: boolean; min?: number; above?: number; max?: number }): number | undefined {
  if (text === undefined) return undefined;
  const kind = want.integer ? 'an integer' : 'a number';
  const range = want.above !== undefined && want.max !== undefined
    ? `${kind} in (${want.above}, ${want.max}]`
    : [kind, want.min !== undefined ? `>= ${want.min}` : '', want.above !== undefined ? `> ${want.above}` : '', want.max !== undefined ? `<= ${want.max}` : ''].filter(Boolean).join(' ');
  const pattern = want.integer ? /^[+-]?\d+$/ : /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i;
  const x = Number(text);
  const ok = pattern.test(text.trim()) && Number.isFinite(x) && (want.min === undefined || x >= want.min) && (want.above === undefined || x > want.above) && (want.max === undefined || x <= want.max);
  if (!ok) throw new Error(`${flag}: must be ${range}, got '${text}'`);
  return x;
}

/** The generation options the flags ask for, every flag checked before the model loads. */
export function parseGenerateFlags(o: GenerateCliOptions): GenerateOptions & { maxSlices?: number; maxNewTokens: number; stopStrings: string[] } {
  if (o.device !== 'auto') parseDevice('--device', o.device, ['auto']);
  const flags = {
    maxNewTokens: numberFlag('--max-new-tokens', o.maxNewTokens, { integer: true, min: 1 })!,
    minNewTokens: numberFlag('--min-new-tokens', o.minNewTokens, { integer: true, min: 0 }),
    maxSlices: numberFlag('--max-slices', o.maxSlices, { integer: true, min: 1 }),
    temperature: numberFlag('--temperature', o.temperature, { min: 0 }),
    topP: numberFlag('--top-p', o.topP, { above: 0, max: 1 }),
    topK: numberFlag('--top-k', o.topK, { integer: true, min: 0 }),
    repetitionPenalty: numberFlag('--repetition-penalty', o.repetitionPenalty, { above: 0 }),
    penalizePrompt: o.penalizePrompt ?? true,
    numBeams: numberFlag('--num-beams', o.numBeams, { integer: true, min: 1 }),
    lengthPenalty: numberFlag('--length-penalty', o.lengthPenalty, {}),
    seed: numberFlag('--seed', o.seed, { integer: true, min: 0 }),
    stopStrings: o.stop ?? [],
  };
  flags.stopStrings.forEach((s) => {
    if (s.length === 0) throw new Error("--stop: a stop string must not be empty, got ''");
  });
  if ((flags.numBeams ?? 1) > 1 && (flags.temperature ?? 0) > 0) {
    throw new Error(`--num-beams ${flags.numBeams} with --temperature ${flags.temperature}: beam search does not sample; drop one of them`);
  }
  return flags;
}

/** A float32 value as the shortest decimal that reads back to it (9 significant digits at most). */
function float32Text(x: number): string {
  for (let p = 6; p < 9; p++) {
    const s = x.toPrecision(p);
    if (Math.fround(Number(s)) === x) return String(Number(s));
  }
  return String(Number(x.toPrecision(9)));
}

/**
 * `--logits FILE`: {"input_ids": [...], "steps": [{"token": id, "logits": [...]}]}: the ids as fed to
 * the LLM (placeholders included), then per answer token the raw LM-head outputs over all rows of
 * the head (the config's vocab_size) it was chosen from (step 0 at the prompt's last position),
 * before any penalty, mask or temperature. Written as it goes: a Qwen3-sized step is ~1.5 MB.
 */
export async function writeLogits(path: string, inputIds: readonly number[], g: Generation): Promise<void> {
  const out = createWriteStream(path);
  const write = async (s: string) => {
    if (!out.write(s)) await once(out, 'drain');
  };
  await write(`{"input_ids": [${inputIds.join(', ')}], "steps": [`);
  for (const [i, token] of g.tokens.entries()) {
    const row = g.logits[i];
    const parts = new Array<string>(row.length);
    for (let j = 0; j < row.length; j++) parts[j] = float32Text(row[j]);
    await write(`${i ? ',' : ''}\n  {"token": ${token}, "logits": [${parts.join(', ')}]}`);
  }
  await write('\n]}\n');
  out.end();
  await once(out, 'finish');
}

export async function generateCommand(o: GenerateCliOptions): Promise<void> {
  const flags = parseGenerateFlags(o);
  try {
    const { model, tok, config, device, checkpoint } = await loadModel({ config: o.config, weights: o.weights, randomInit: o.randomInit, device: await chooseDevice('--device', o.device) });
    const img = await loadImage(o.image);
    const prepared = prepareImage(img, config, flags.maxSlices);
    const plan = prepared.plan;
    process.stderr.write(
      `image ${img.width}x${img.height}: thumbnail ${plan.thumbnail.width}x${plan.thumbnail.height}` +
        (plan.grid ? `, ${plan.grid.cols}x${plan.grid.rows} slices of ${plan.slice!.width}x${plan.slice!.height}` : ', no slices') +
        `; ${device}${o.randomInit && !o.weights ? ', random weights' : ''}\n`,
    );
    const content = o.prompt.includes('<image>') ? o.prompt : `<image>\n${o.prompt}`;
    const prompt = buildPrompt([{ role: 'user', content }], [prepared.tokens], tok, { chatTemplate: checkpoint?.chatTemplate });
    const pixels = viewPixels(prepared.views, device);
    const stop = [tok.special['<|im_end|>'], tok.eosId];
    const decode = (ids: number[]) => tok.decode(ids.filter((id) => !stop.includes(id)));
    // streaming holds back what could still become a stop string, which the answer leaves out
    const holdBack = Math.max(0, ...flags.stopStrings.map((s) => s.length - 1));
    const out: number[] = [];
    let printed = '';
    const g = await generate(model, { ids: Array.from(prompt.ids), unkPositions: prompt.unkPositions }, pixels, {
      ...flags,
      stopTokens: stop,
      // the tokenizer's vocabulary: a config's embedding may have rows no token decodes to
      vocabSize: Math.min(tok.vocabSize, config.text_config.vocab_size),
      decode,
      keepLogits: o.logits !== undefined,
      onToken: (id) => {
        if (stop.includes(id)) return;
        out.push(id);
        const text = decode(out);
        const safe = text.slice(0, Math.max(printed.length, text.length - holdBack));
        if (safe.startsWith(printed)) {
          process.stdout.write(safe.slice(printed.length));
          printed = safe;
        }
      },
    });
    const answer = g.text ?? '';
    process.stdout.write(`${answer.startsWith(printed) ? answer.slice(printed.length) : ''}\n`);
    if (o.logits !== undefined) {
      await writeLogits(o.logits, Array.from(prompt.ids), g);
      process.stderr.write(`logits of ${g.tokens.length} steps x ${config.text_config.vocab_size} written to ${o.logits}\n`);
    }
  } finally {
    shutdown();
  }
}
