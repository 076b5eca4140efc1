/** `uhd generate`: flags checked by name, `--logits` as another implementation can read it, a random tiny model that decodes. */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PNG } from 'pngjs';
import { writeFileSync } from 'node:fs';
import { afterAll, describe, expect, it, vi } from 'vitest';
import * as ag from '../../autograd/index.js';
import { generateCommand, parseGenerateFlags, type GenerateCliOptions } from '../../cli/generate.js';
import { loadModel } from '../../llava-uhd/load.js';
import { manualSeed, tensor } from '../../tensor/index.js';
import { expectClose } from '../support.js';

const dir = mkdtempSync(join(tmpdir(), 'uhd-cli-generate-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const image = join(dir, 'grey.png');
const png = new PNG({ width: 200, height: 150 });
for (let i = 0; i < png.data.length; i++) png.data[i] = (i * 37) % 256;
writeFileSync(image, PNG.sync.write(png));

const base: GenerateCliOptions = { config: 'tiny', randomInit: true, image, prompt: 'what colour is it?', maxNewTokens: '6', temperature: '0', topP: '1', device: 'cpu' };

async function run(o: Partial<GenerateCliOptions>): Promise<string> {
  let text = '';
  const out = vi.spyOn(process.stdout, 'write').mockImplementation((s: string | Uint8Array) => ((text += String(s)), true));
  const err = vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
  try {
    await generateCommand({ ...base, ...o });
  } finally {
    out.mockRestore();
    err.mockRestore();
  }
  return text;
}

describe('uhd generate flags', () => {
  it('refuses bad values, naming the flag and what it accepts', () => {
    const bad = (o: Partial<GenerateCliOptions>) => () => parseGenerateFlags({ ...base, ...o });
    expect(bad({ topP: '7' })).toThrow("--top-p: must be a number in (0, 1], got '7'");
    expect(bad({ topP: '0' })).toThrow('--top-p');
    expect(bad({ topK: '2.5' })).toThrow("--top-k: must be an integer >= 0, got '2.5'");
    expect(bad({ temperature: '-1' })).toThrow('--temperature: must be a number >= 0');
    expect(bad({ temperature: 'hot' })).toThrow("--temperature: must be a number >= 0, got 'hot'");
    expect(bad({ repetitionPenalty: '0' })).toThrow('--repetition-penalty: must be a number > 0');
    expect(bad({ numBeams: '0' })).toThrow('--num-beams: must be an integer >= 1');
    expect(bad({ maxNewTokens: '1e3x' })).toThrow('--max-new-tokens');
    expect(bad({ seed: '-3' })).toThrow('--seed: must be an integer >= 0');
    expect(bad({ stop: [''] })).toThrow('--stop: a stop string must not be empty');
    expect(bad({ numBeams: '3', temperature: '0.7' })).toThrow('--num-beams 3 with --temperature 0.7');
    expect(bad({ device: 'tpu' })).toThrow("--device: 'tpu' is not one of auto, cpu, webgpu, wasm");
    expect(parseGenerateFlags({ ...base, topK: '40', topP: '0.9', temperature: '0.7', repetitionPenalty: '1.05', stop: ['\n\n'] }))
      .toMatchObject({ topK: 40, topP: 0.9, temperature: 0.7, repetitionPenalty: 1.05, stopStrings: ['\n\n'], maxNewTokens: 6 });
  });
});

describe('uhd generate', () => {
  it('a random tiny model answers without emitting an id its tokenizer cannot decode', async () => {
    for (const seed of ['1', '2', '3', '4']) await run({ temperature: '1', seed, maxNewTokens: '24' });
  });

  it('--logits writes the prompt ids and, per step, the raw logits of the whole LM head, as a full forward pass gives them', async () => {
    const file = join(dir, 'logits.json');
    manualSeed(9);
    await run({ logits: file, numBeams: '2', repetitionPenalty: '1.3' });
    const j = JSON.parse(readFileSync(file, 'utf8')) as { input_ids: number[]; steps: { token: number; logits: number[] }[] };
    expect(Object.keys(j)).toEqual(['input_ids', 'steps']);
    manualSeed(9);
    const { model, tok } = await loadModel({ config: 'tiny', randomInit: true });
    expect(j.input_ids.filter((id) => id === tok.special['<unk>']).length).toBeGreaterThan(0); // placeholders included
    expect(j.steps.length).toBeGreaterThan(0);
    // the same image through the same pipeline, then each step's prefix through the whole model
    const { loadImage } = await import('../../llava-uhd/image.js');
    const { prepareImage, viewPixels } = await import('../../llava-uhd/preprocess.js');
    const prepared = prepareImage(await loadImage(image), model.config);
    const pixels = viewPixels(prepared.views, 'cpu');
    const unk = j.input_ids.flatMap((id, i) => (id === tok.special['<unk>'] ? [i] : []));
    for (const [t, step] of j.steps.entries()) {
      expect(step.logits).toHaveLength(model.config.text_config.vocab_size);
      const ids = [...j.input_ids, ...j.steps.slice(0, t).map((s) => s.token)];
      const full = ag.noGrad(() => model.forward(tensor([ids], { dtype: 'int32' }), pixels, unk));
      const last = await full.narrow(1, ids.length - 1, 1).data();
      expectClose(step.logits, last, { atol: 1e-4, rtol: 1e-4 }, `step ${t}`);
    }
  });
});
