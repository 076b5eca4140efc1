import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { vlmevalCommand } from '../../../cli/eval.js';
import { CONFIGS } from '../../../llava-uhd/config.js';
import { makeSplit, syntheticOptions, ANSWERS } from '../../../llava-uhd/data/synthetic.js';
import { modelAnswerFn } from '../../../llava-uhd/eval/answer.js';
import { writeVlmevalTsv } from '../../../llava-uhd/eval/export.js';
import { runVlmeval } from '../../../llava-uhd/eval/run.js';
import { readTable } from '../../../llava-uhd/eval/table.js';
import { loadModel, tokenizerFor } from '../../../llava-uhd/load.js';
import { LlavaUHD } from '../../../llava-uhd/model.js';
import { saveWeights } from '../../../llava-uhd/weights.js';
import { manualSeed } from '../../../tensor/index.js';
import { tempDir } from './helpers.js';

const dir = tempDir('answer');
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function stripesTsv(name: string, n: number, form: 'mcq' | 'open'): Promise<string> {
  const split = makeSplit('test', n, syntheticOptions('tiny', { types: ['stripes'] }));
  const path = join(dir, name);
  await writeVlmevalTsv(path, [...split].map((s) => ({ image: s.image, question: s.question, answer: s.answer, type: s.type, classes: ANSWERS[s.type] })), form);
  return path;
}

describe('the synthetic task through the TSV path with a tiny model', () => {
  it('exported, answered by the model, scored: both question forms', async () => {
    manualSeed(0);
    const model = new LlavaUHD(structuredClone(CONFIGS.tiny));
    model.eval();
    const tok = await tokenizerFor(CONFIGS.tiny);
    const answer = modelAnswerFn(model, tok, { device: 'cpu' });
    for (const form of ['mcq', 'open'] as const) {
      const data = await stripesTsv(`stripes_${form}.tsv`, 3, form);
      const r = await runVlmeval({ data, outDir: join(dir, form), answer, settings: { maxNewTokens: 3 } });
      expect(r.benchmark.name).toBe(form === 'mcq' ? 'custom_mcq' : 'custom_vqa');
      expect(r.score!.scored).toBe(3);
      const t = await readTable(r.predictionsPath);
      expect(t.rows.every((x) => typeof x.at(-1) === 'string' || x.at(-1) === null)).toBe(true);
      expect(existsSync(join(dir, form, `uhd_stripes_${form}_acc.csv`))).toBe(true);
    }
    // the input-length limit of the release (max_inp_length) is enforced, naming the row
    const data = await stripesTsv('long.tsv', 1, 'mcq');
    await expect(runVlmeval({ data, outDir: join(dir, 'long'), answer, settings: { maxNewTokens: 1, maxInputLength: 10 } })).rejects.toThrow(/row index 0: the prompt has \d+ tokens, more than the maximum input length 10/);
  });

  // Opt-in (UHD_EVAL_WEIGHTS=runs/.../stage-1-instruction.safetensors): the trained demo model on 60 test questions.
  it.runIf(!!process.env.UHD_EVAL_WEIGHTS)('the trained demo model, both question forms', async () => {
    const { model, tok } = await loadModel({ config: 'tiny', weights: process.env.UHD_EVAL_WEIGHTS! });
    model.eval();
    for (const form of ['mcq', 'open'] as const) {
      const data = await stripesTsv(`demo_${form}.tsv`, 60, form);
      const r = await runVlmeval({ data, outDir: join(dir, `demo-${form}`), answer: modelAnswerFn(model, tok, { device: 'cpu' }), settings: { maxNewTokens: 8 } });
      console.log(`demo model, ${form}: ${r.score!.overall.label} ${r.score!.overall.value.toFixed(1)}%`);
      expect(r.score!.overall.value).toBeGreaterThan(25);
    }
  }, 600_000);
});

describe('uhd eval --data FILE.tsv', () => {
  it('runs on every backend (--device cpu and wasm), and names a bad --device', async () => {
    manualSeed(0);
    const weights = join(dir, 'tiny.safetensors');
    await saveWeights(new LlavaUHD(structuredClone(CONFIGS.tiny)), weights, CONFIGS.tiny);
    const data = await stripesTsv('cli_mcq.tsv', 2, 'mcq');
    const quiet = [vi.spyOn(process.stdout, 'write').mockImplementation(() => true), vi.spyOn(console, 'log').mockImplementation(() => {}), vi.spyOn(console, 'error').mockImplementation(() => {})];
    try {
      for (const device of ['cpu', 'wasm']) {
        const out = join(dir, `cli-${device}`);
        await vlmevalCommand({ weights, data, out, device, maxNewTokens: '2', numBeams: '1' });
        expect(existsSync(join(out, 'uhd_cli_mcq_acc.csv')), device).toBe(true);
      }
      await expect(vlmevalCommand({ weights, data, device: 'gpu' })).rejects.toThrow(/--device: 'gpu'/);
    } finally {
      for (const q of quiet) q.mockRestore();
    }
  }, 60_000);
});
