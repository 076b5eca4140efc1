import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import * as uhd from '../../tensor/index.js';
import { useDevice } from '../support.js';
import { CONFIGS } from '../../llava-uhd/config.js';
import type { RgbImage } from '../../llava-uhd/image.js';
import { LlavaUHD } from '../../llava-uhd/model.js';
import { ByteTokenizer } from '../../llava-uhd/tokenizer.js';
import { applyTrainable, batchIndices, train, validateRecipe, type Dataset, type Recipe } from '../../llava-uhd/train.js';

const dir = mkdtempSync(join(tmpdir(), 'uhd-train-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const COLOURS: [string, number[]][] = [['red', [220, 30, 30]], ['green', [30, 200, 40]], ['blue', [30, 40, 220]], ['white', [240, 240, 240]]];

/** Toy data: a flat image of one colour; the answer is its name. */
const toy = (n: number, offset = 0): Dataset => ({
  size: n,
  get(i: number) {
    const [name, rgb] = COLOURS[(i + offset) % 4];
    const image: RgbImage = { width: 112, height: 112, data: new Uint8Array(112 * 112 * 3).map((_, k) => rgb[k % 3]) } as RgbImage;
    return { images: [image], turns: [{ role: 'user', content: '<image>\nColour?' }, { role: 'assistant', content: name }], answer: name, type: 'colour' };
  },
});

const recipe = (steps: number): Recipe => ({
  name: 'toy',
  seed: 1,
  checkpoint_every: 2,
  stages: [
    { name: 'align', trainable: ['compressor', 'connector', 'vit_position_embedding'], lr: 5e-3, min_lr: 1e-3, warmup_steps: 1, steps: 2, max_slices: 1, batch_size: 2 },
    { name: 'finetune', trainable: ['vit', 'compressor', 'connector', 'llm'], lr: 5e-3, min_lr: 1e-3, non_llm_lr_scale: 0.2, warmup_steps: 1, steps, max_slices: 9, batch_size: 2, grad_accum: 2, pack_length: 256 },
  ],
});

const model = (device: 'cpu' | 'wasm' = 'cpu') => {
  uhd.manualSeed(0);
  return new LlavaUHD(structuredClone(CONFIGS.tiny), { device });
};
// training runs on wasm (the loop does not depend on the backend; wasm is the fast one here)
useDevice('wasm');
const tok = new ByteTokenizer();

describe('recipes', () => {
  it('bad fields are named before training starts', () => {
    const r = recipe(3);
    expect(() => validateRecipe({ ...r, stages: [] })).toThrow('recipe: stages must be a non-empty array');
    expect(() => validateRecipe({ ...r, stages: [{ ...r.stages[0], trainable: ['vit', 'eyes' as never] }] })).toThrow("recipe: stages[0].trainable[1] 'eyes' is not a module");
    expect(() => validateRecipe({ ...r, stages: [{ ...r.stages[0], steps: 0 }] })).toThrow('recipe: stages[0].steps must be a positive integer, got 0');
    expect(() => validateRecipe({ ...r, stages: [{ ...r.stages[0], min_lr: 1 }] })).toThrow('recipe: stages[0].min_lr (1) exceeds lr');
    const baseline = new LlavaUHD(structuredClone(CONFIGS['tiny-baseline']));
    expect(() => applyTrainable(baseline, { ...r.stages[0], trainable: ['compressor'] })).toThrow("stage 'align': nothing to train");
  });

  it('batches are a seeded permutation of the data, epoch after epoch', () => {
    const seen = Array.from({ length: 5 }, (_, s) => batchIndices(10, 2, s, 3)).flat();
    expect([...seen].sort((a, b) => a - b)).toEqual([...Array(10).keys()]);
  });
});

describe('training', () => {
  it('a stage trains only its modules: frozen ones get no gradient', async () => {
    const m = model();
    const picked = applyTrainable(m, recipe(1).stages[0]);
    expect(picked.every(([n]) => n.startsWith('vit_merger.') || n.startsWith('resampler.') || n === 'vpm.embeddings.position_embedding.weight')).toBe(true);
    const { crossEntropy } = await import('../../nn/index.js');
    const s = toy(1).get(0);
    const { encodeSample } = await import('../../llava-uhd/train.js');
    const { viewPixels } = await import('../../llava-uhd/preprocess.js');
    const e = encodeSample(m, tok, s, 1);
    const logits = m.forward(uhd.tensor([Array.from(e.layout.ids)], { dtype: 'int32' }), viewPixels(e.pixels, 'cpu'), e.layout.unkPositions);
    crossEntropy(logits.reshape(-1, m.config.text_config.vocab_size), uhd.tensor(e.layout.labels, { dtype: 'int32' })).backward();
    for (const [n, p] of m.namedParameters()) {
      // D's unused copies of layer k's LN2 / MLP (kept for the release's layout) never get a gradient
      const trained = picked.some(([k]) => k === n) && !/^vit_merger\.(layer_norm2|mlp)\./.test(n);
      expect(p.grad === null, n).toBe(!trained);
    }
  });

  it('loss falls, and an interrupted run resumes exactly', async () => {
    // uninterrupted
    const a = model('wasm');
    const runA = join(dir, 'a');
    await train(a, tok, recipe(6), { device: 'wasm', outDir: runA, train: toy(16), val: toy(4, 1), valSamples: 4 });
    const lossesA = readFileSync(join(runA, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((m) => 'loss' in m);
    expect(lossesA).toHaveLength(8);
    expect(lossesA[lossesA.length - 1].loss).toBeLessThan(lossesA[2].loss);
    // curves.svg beside metrics.jsonl: one path point per logged loss, the validation line too
    const curves = readFileSync(join(runA, 'curves.svg'), 'utf8');
    expect(curves).toContain('validation loss');
    expect(curves.match(/<path d="([^"]+)"/)![1].match(/[ML]/g)).toHaveLength(lossesA.length);

    // interrupted after 5 optimizer steps (stage 2, step 3; last checkpoint at stage 2 step 2), then resumed
    const b = model('wasm');
    const runB = join(dir, 'b');
    const first = await train(b, tok, recipe(6), { device: 'wasm', outDir: runB, train: toy(16), stopAfter: 5 });
    expect(first.stopped).toBe(true);
    const c = model('wasm');
    await train(c, tok, recipe(6), { device: 'wasm', outDir: runB, train: toy(16), resume: true });
    const lossesB = readFileSync(join(runB, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((m) => 'loss' in m);
    // the resumed run repeats step 3 of stage 2 (taken after the checkpoint at step 2) and goes on
    const tail = lossesB.slice(5);
    expect(tail.map((m) => [m.stage, m.step])).toEqual(lossesA.slice(4).map((m) => [m.stage, m.step]));
    expect(tail.map((m) => m.loss)).toEqual(lossesA.slice(4).map((m) => m.loss));
  });
});
