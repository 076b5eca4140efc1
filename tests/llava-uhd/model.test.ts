import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import * as ag from '../../autograd/index.js';
import { loadSafetensors, saveSafetensors } from '../../nn/index.js';
import * as uhd from '../../tensor/index.js';
import type { Device } from '../../tensor/index.js';
import { CONFIGS, type LlavaUHDConfig } from '../../llava-uhd/config.js';
import { LlavaUHD } from '../../llava-uhd/model.js';
import { positionBucket, positionIds } from '../../llava-uhd/vision.js';
import { expectClose, useWebGPU } from '../support.js';

useWebGPU();
const dir = mkdtempSync(join(tmpdir(), 'uhd-model-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const f64 = { dtype: 'float64' as const };

function tinyModel(name = 'tiny', device: Device = 'cpu', dtype: 'float32' | 'float64' = 'float64'): LlavaUHD {
  uhd.manualSeed(42);
  const m = new LlavaUHD(structuredClone(CONFIGS[name]) as LlavaUHDConfig, { device, dtype });
  // random LayerNorm affines so the D-init property is not trivially satisfied by ones/zeros
  ag.noGrad(() => {
    for (const [n, p] of m.namedParameters()) {
      if (/layer_norm\d\.(weight|bias)$/.test(n)) uhd.assign(p, uhd.randn(p.shape, { device, dtype }).mul(0.3).add(n.endsWith('weight') ? 1 : 0));
    }
  });
  if (m.vit_merger) m.initCompressor();
  return m;
}

describe('position embedding lookup', () => {
  it('buckets count the boundaries b/side <= i/n in float32', () => {
    expect([...Array(4).keys()].map((i) => positionBucket(i, 4, 70))).toEqual([0, 17, 35, 52]);
    expect([...Array(70).keys()].map((i) => positionBucket(i, 70, 70))).toEqual([...Array(70).keys()]);
    expect(positionIds({ h: 2, w: 2 }, 4)).toEqual([0, 2, 8, 10]);
  });
});

describe('the compressor D', () => {
  it('at initialisation, a window of four identical tokens gives layer k applied to that token', async () => {
    const m = tinyModel();
    const k = m.config.insert_layer_id!;
    const d = m.config.vision_config.hidden_size;
    // a 4x4 grid whose 2x2 windows each hold one repeated token
    const tokens = uhd.randn([4, d], f64); // one per window
    const win = [0, 0, 1, 1, 0, 0, 1, 1, 2, 2, 3, 3, 2, 2, 3, 3];
    const x = ag.indexSelect(tokens, 0, uhd.tensor(win, { dtype: 'int32' })).reshape(1, 16, d);
    const out = await m.vit_merger!.forward(x, [{ h: 4, w: 4 }]).data();
    const layer = m.vpm.encoder.layers[k];
    for (let w = 0; w < 4; w++) {
      const t = tokens.narrow(0, w, 1).reshape(1, 1, d);
      const seg = uhd.zeros([1, 1], { dtype: 'int32' });
      const expected = await layer.forward(t, seg).data();
      expectClose(out.slice(w * d, (w + 1) * d), expected, { atol: 1e-10, rtol: 1e-10 }, `window ${w}`);
    }
  });

  it('shrinks each view 4x and keeps views independent', async () => {
    const m = tinyModel();
    uhd.manualSeed(1);
    const a = uhd.randn([3, 112, 168], f64);
    const b = uhd.randn([3, 56, 112], f64);
    const b2 = uhd.randn([3, 56, 112], f64);
    const r1 = m.vpm.forward([a, b], m.vit_merger, m.config.insert_layer_id);
    expect(r1.grids).toEqual([{ h: 4, w: 6 }, { h: 2, w: 4 }]);
    expect(r1.x.shape).toEqual([1, 24 + 8, 32]);
    const r2 = m.vpm.forward([a, b2], m.vit_merger, m.config.insert_layer_id);
    const [d1, d2] = [await r1.x.data(), await r2.x.data()];
    expect(Array.from(d2.slice(0, 24 * 32))).toEqual(Array.from(d1.slice(0, 24 * 32))); // view a untouched
    expect(Array.from(d2.slice(24 * 32))).not.toEqual(Array.from(d1.slice(24 * 32)));
  });

  it('the baseline has no compressor and merges twice in the connector (16x)', () => {
    const m = tinyModel('tiny-baseline');
    expect(m.vit_merger).toBeNull();
    const v = m.encodeViews([uhd.randn([3, 112, 224], f64)]);
    expect(v.tokensPerView).toEqual([8]); // 8x16 patches -> 2x4 after two 2x2 merges
    expect(v.features.shape).toEqual([1, 8, m.config.text_config.hidden_size]);
    expect(() => m.initCompressor()).toThrow(/no compressor/);
  });
});

describe('the whole model', () => {
  const S = 24;
  const ids = (device: Device) => uhd.tensor([Array.from({ length: S }, (_, i) => (i * 37) % 300)], { dtype: 'int32', device });

  it('writes visual features over the placeholders and checks their count', async () => {
    const m = tinyModel();
    const view = uhd.randn([3, 112, 112], f64);
    const v = m.encodeViews([view]);
    expect(v.tokensPerView).toEqual([4]);
    const emb = await m.embed(ids('cpu'), v.features, [3, 4, 5, 6]).data();
    const feats = await v.features.data();
    const W = m.config.text_config.hidden_size;
    expect(Array.from(emb.slice(3 * W, 7 * W))).toEqual(Array.from(feats));
    expect(() => m.embed(ids('cpu'), v.features, [3, 4, 5])).toThrow('layout: 3 <unk> placeholders but 4 visual features');
  });

  it('gradients flow from the loss into every module (ViT, D, connector, LLM)', () => {
    const m = tinyModel('tiny', 'cpu', 'float32');
    const logits = m.forward(ids('cpu'), [uhd.randn([3, 112, 112])], [2, 3, 4, 5]);
    ag.mean(logits).backward();
    for (const name of ['vpm.encoder.layers.0.mlp.fc1.weight', 'vit_merger.linear_1.weight', 'resampler.mlp.0.mlp.2.weight', 'llm.model.layers.1.mlp.up_proj.weight', 'vpm.embeddings.position_embedding.weight']) {
      const p = [...m.namedParameters()].find(([n]) => n === name)![1];
      expect(p.grad, name).not.toBeNull();
    }
  });

  it('CPU and WebGPU agree on the logits for an image and a prompt', async () => {
    const views = (device: Device) => {
      uhd.manualSeed(9);
      return [uhd.randn([3, 112, 168], { device }), uhd.randn([3, 112, 112], { device })];
    };
    for (const name of ['tiny', 'tiny-baseline']) {
      const cpu = tinyModel(name, 'cpu', 'float32');
      const gpu = tinyModel(name, 'webgpu', 'float32');
      const n = name === 'tiny' ? 10 : 0;
      const pos = Array.from({ length: n }, (_, i) => i + 4);
      const pixels = n ? views : () => [];
      const a = ag.noGrad(() => cpu.forward(ids('cpu'), pixels('cpu'), pos));
      const b = ag.noGrad(() => gpu.forward(ids('webgpu'), pixels('webgpu'), pos));
      expectClose(await b.data(), await a.data(), { atol: 2e-4, rtol: 2e-3 }, name);
      cpu.dispose();
      gpu.dispose();
    }
  });

  it('a saved-then-loaded model gives identical logits', async () => {
    const m = tinyModel('tiny', 'cpu', 'float32');
    const view = [uhd.randn([3, 112, 112])];
    const before = await ag.noGrad(() => m.forward(ids('cpu'), view, [1, 2, 3, 4])).data();
    const path = join(dir, 'tiny.safetensors');
    await saveSafetensors(path, m.stateDict());
    uhd.manualSeed(777);
    const fresh = new LlavaUHD(structuredClone(CONFIGS.tiny));
    fresh.loadStateDict(await loadSafetensors(path));
    const after = await ag.noGrad(() => fresh.forward(ids('cpu'), view, [1, 2, 3, 4])).data();
    expect(Array.from(after)).toEqual(Array.from(before));
  });
});
