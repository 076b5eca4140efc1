/** `uhd pretrain`: the mix is reproducible and labelled; a few steps write a folder that loads back exactly; the seed decides the weights. */
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import * as ag from '../../autograd/index.js';
import { pretrainFlags } from '../../cli/pretrain.js';
import { CONFIGS, type LlavaUHDConfig } from '../../llava-uhd/config.js';
import { MIX_CLASSES, MIX_LABELS, mixSample, MixSplit } from '../../llava-uhd/data/pretrain-mix.js';
import { encodeSample } from '../../llava-uhd/train.js';
import { loadModel } from '../../llava-uhd/load.js';
import type { LlavaUHD } from '../../llava-uhd/model.js';
import { pretrain } from '../../llava-uhd/pretrain.js';
import { viewPixels } from '../../llava-uhd/preprocess.js';
import { tensor } from '../../tensor/index.js';
import type { Tokenizer } from '../../llava-uhd/tokenizer.js';
import { useDevice } from '../support.js';

useDevice('wasm');
const root = mkdtempSync(join(tmpdir(), 'uhd-pretrain-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** A small baseline with the mix's words: the test's stand-in for mini-baseline. */
const small: LlavaUHDConfig = { ...structuredClone(CONFIGS['tiny-baseline']), tokenizer_words: CONFIGS.mini.tokenizer_words, text_config: { ...CONFIGS.tiny.text_config, vocab_size: 320 } };

describe('the pretraining mix', () => {
  it('is a pure function of (index, split, seed), balanced per label, every answer one of its classes', () => {
    const a = mixSample(7, 'train');
    const b = mixSample(7, 'train');
    expect(Buffer.from(a.images[0].data).equals(Buffer.from(b.images[0].data))).toBe(true);
    expect(Buffer.from(mixSample(7, 'val').images[0].data).equals(Buffer.from(a.images[0].data))).toBe(false);
    expect(Buffer.from(mixSample(7, 'train', 1).images[0].data).equals(Buffer.from(a.images[0].data))).toBe(false);
    const split = new MixSplit('train', 40);
    for (const l of MIX_LABELS) {
      const n = MIX_CLASSES[l].length;
      const counts = new Array<number>(n).fill(0);
      for (let i = 0; i < 4 * n; i++) counts[split.get(i).labels[l]]++;
      expect(counts, l).toEqual(new Array(n).fill(4));
    }
    for (const s of split) {
      expect(MIX_CLASSES[s.type as keyof typeof MIX_CLASSES]).toContain(s.answer);
      expect(s.images[0].width % 56 + s.images[0].height % 56).toBe(0);
    }
    expect(() => split.get(40)).toThrow('index 40 out of range 0..39');
  });

  it('draws the shape in the quadrant its label names', () => {
    for (let i = 0; i < 60; i++) {
      const s = mixSample(i, 'test');
      const target = s.scene.shapes.filter((x) => x.role === 'target');
      const xs = target.map((x) => (x.kind === 'disc' ? x.cx : x.kind === 'rect' ? x.x + x.w / 2 : NaN));
      const ys = target.map((x) => (x.kind === 'disc' ? x.cy : x.kind === 'rect' ? x.y + x.h / 2 : NaN));
      const cx = (Math.min(...xs) + Math.max(...xs)) / 2;
      const cy = (Math.min(...ys) + Math.max(...ys)) / 2;
      const q = (cx >= s.scene.width / 2 ? 1 : 0) + (cy >= s.scene.height / 2 ? 2 : 0);
      expect(q, `sample ${i}`).toBe(s.labels.position);
    }
  });
});

async function logitsOf(model: LlavaUHD, tok: Tokenizer): Promise<number[]> {
  const s = mixSample(3, 'test');
  const { layout, pixels } = encodeSample(model, tok, s, 4);
  return ag.noGrad(() => {
    const ids = tensor(Array.from(layout.ids), { dtype: 'int32', shape: [1, layout.ids.length], device: 'wasm' });
    return model.forward(ids, viewPixels(pixels, 'wasm'), layout.unkPositions);
  }).toArray().then((a) => (a as number[][][]).flat(2));
}

describe('pretrain', () => {
  const run = (out: string, seed: number) =>
    pretrain({ config: structuredClone(small), device: 'wasm', out: join(root, out), seed, towerSteps: 3, towerBatch: 4, lmSteps: 2, lmBatch: 2, heldOut: 4 });

  it('writes a baseline checkpoint folder that loads back with identical outputs', async () => {
    const r = await run('a', 5);
    expect(readdirSync(join(root, 'a')).sort()).toEqual(['config.json', 'model.safetensors', 'run']);
    expect(Number.isFinite(r.towerLoss) && Number.isFinite(r.lmLoss)).toBe(true);
    for (const l of MIX_LABELS) expect(r.headAccuracy[l]).toBeGreaterThanOrEqual(0);
    const loaded = await loadModel({ weights: join(root, 'a'), device: 'wasm' });
    expect(loaded.model.vit_merger).toBeNull();
    expect(loaded.config.tokenizer_words).toEqual(small.tokenizer_words);
    const sd = loaded.model.stateDict();
    for (const [k, t] of r.model.stateDict()) expect(Array.from(await sd.get(k)!.data()), k).toEqual(Array.from(await t.data()));
    expect(await logitsOf(loaded.model, loaded.tok)).toEqual(await logitsOf(r.model, loaded.tok));
  }, 60_000);

  it('the same seed gives the same weights, another seed others', async () => {
    const [a, b, c] = [await run('s1', 9), await run('s2', 9), await run('s3', 10)];
    const w = async (m: LlavaUHD, k: string) => Array.from(await m.stateDict().get(k)!.data());
    const keys = [...a.model.stateDict().keys()];
    // the tower (phase 1), the connector and the LLM (phase 2) each depend on the seed
    for (const prefix of ['vpm.encoder.', 'resampler.', 'llm.model.layers.']) {
      const k = keys.find((n) => n.startsWith(prefix) && n.endsWith('weight'))!;
      expect(await w(c.model, k), k).not.toEqual(await w(a.model, k));
    }
    for (const k of keys) expect(await w(b.model, k), k).toEqual(await w(a.model, k));
  }, 90_000);
});

describe('uhd pretrain flags', () => {
  it('names the flag that is wrong', () => {
    expect(pretrainFlags({ config: 'mini-baseline', out: 'x', device: 'wasm' })).toMatchObject({ config: 'mini-baseline', towerSteps: 600, seed: 0 });
    expect(() => pretrainFlags({ config: 'mini', out: 'x', device: 'wasm' })).toThrow("--config: must be one of");
    expect(() => pretrainFlags({ config: 'mini-baseline', out: 'x', device: 'wasm', towerSteps: '1.5' })).toThrow("--tower-steps: must be an integer >= 0, got '1.5'");
    expect(() => pretrainFlags({ config: 'mini-baseline', out: 'x', device: 'wasm', lmBatch: '0' })).toThrow('--lm-batch: must be an integer >= 1');
    expect(() => pretrainFlags({ config: 'mini-baseline', out: 'x', device: 'wasm', towerLr: '0' })).toThrow('--tower-lr: must be a number > 0');
    expect(() => pretrainFlags({ config: 'mini-baseline', out: 'x', device: 'wasm', seed: '-3' })).toThrow('--seed: must be an integer >= 0');
  });
});

describe('a split of chosen question types', () => {
  it('keeps each image with the question its index asks, and refuses unknown types', () => {
    const only = new MixSplit('train', 6, 0, ['colour', 'digit']);
    expect([...only].map((s) => s.type)).toEqual(['colour', 'digit', 'colour', 'digit', 'colour', 'digit']);
    expect(only.get(2).index).toBe(6);
    expect(only.get(3).index).toBe(9);
    expect(() => new MixSplit('train', 2, 0, ['size' as never])).toThrow("'size' is not a question type");
  });
});
