import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { saveCheckpoint } from '../../nn/index.js';
import { readSafetensorsHeader, saveSafetensors } from '../../nn/safetensors.js';
import * as uhd from '../../tensor/index.js';
import type { Tensor } from '../../tensor/index.js';
import { CONFIGS, type LlavaUHDConfig } from '../../llava-uhd/config.js';
import { LlavaUHD } from '../../llava-uhd/model.js';
import { loadWeights, locateWeights, saveWeights } from '../../llava-uhd/weights.js';
import { Compressor } from '../../llava-uhd/compressor.js';

const dir = mkdtempSync(join(tmpdir(), 'uhd-weights-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
const fresh = (stem: string) => join(dir, `${stem}-${n++}`);

const build = (seed: number, name = 'tiny', patch: Partial<LlavaUHDConfig> = {}) => {
  uhd.manualSeed(seed);
  return new LlavaUHD({ ...structuredClone(CONFIGS[name]), ...patch });
};

/** Every tensor's bits, by name. */
async function bits(m: LlavaUHD): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const [k, t] of m.stateDict()) out.set(k, Buffer.from((await t.data()).buffer).toString('base64'));
  return out;
}

async function expectSame(a: LlavaUHD, b: LlavaUHD, filter: (k: string) => boolean = () => true): Promise<void> {
  const [x, y] = [await bits(a), await bits(b)];
  for (const [k, v] of x) if (filter(k)) expect(y.get(k), k).toBe(v);
}

/** The model's state dict renamed (for writing other layouts). */
function renamed(m: LlavaUHD, rename: (k: string) => string | null): Map<string, Tensor> {
  const out = new Map<string, Tensor>();
  for (const [k, t] of m.stateDict()) {
    const r = rename(k);
    if (r !== null) out.set(r, t);
  }
  return out;
}

describe('the release layout is the model\'s own', () => {
  it('names follow the release: vpm, vit_merger with its unused copies, resampler.mlp.{i}.{pre_norm,mlp.0,mlp.2}, llm', () => {
    const names = [...build(1).stateDict().keys()];
    for (const k of [
      'vpm.embeddings.patch_embedding.weight', 'vpm.embeddings.position_embedding.weight', 'vpm.encoder.layers.3.mlp.fc2.bias', 'vpm.post_layernorm.weight',
      'vit_merger.self_attn.q_proj.weight', 'vit_merger.layer_norm1.bias', 'vit_merger.pre_norm.weight', 'vit_merger.linear_1.weight', 'vit_merger.linear_2.bias',
      'vit_merger.layer_norm2.weight', 'vit_merger.mlp.fc1.weight', 'vit_merger.mlp.fc2.bias',
      'resampler.mlp.0.pre_norm.weight', 'resampler.mlp.0.mlp.0.weight', 'resampler.mlp.0.mlp.2.bias',
      'llm.model.embed_tokens.weight', 'llm.model.layers.1.self_attn.q_norm.weight', 'llm.model.norm.weight',
    ]) expect(names, k).toContain(k);
    expect(names.filter((k) => k.startsWith('resampler.mlp.1.'))).toEqual([]);
    const base = [...build(1, 'tiny-baseline').stateDict().keys()];
    expect(base.some((k) => k.startsWith('vit_merger.'))).toBe(false);
    expect(base).toContain('resampler.mlp.1.mlp.2.weight');
    const untied = [...build(1, 'tiny', { text_config: { ...CONFIGS.tiny.text_config, tie_word_embeddings: false } }).stateDict().keys()];
    expect(untied).toContain('llm.lm_head.weight');
  });

  it("D's unused layer_norm2 / mlp are layer k's, copied at initialisation (as the release's parameter reuse does)", async () => {
    const m = build(2);
    const k = m.config.insert_layer_id!;
    const layer = m.vpm.encoder.layers[k];
    const d = m.vit_merger as Compressor;
    for (const [a, b] of [[d.layer_norm2.weight, layer.layer_norm2.weight], [d.mlp.fc1.weight, layer.mlp.fc1.weight], [d.mlp.fc2.bias!, layer.mlp.fc2.bias!]] as const) {
      expect(Array.from(await a.data())).toEqual(Array.from(await b.data()));
    }
  });
});

describe('loading and saving in the release layout', () => {
  it('round-trip through one file: every tensor bit-equal, the file holds the release names, format pt and the config', async () => {
    const a = build(1);
    const path = `${fresh('one')}.safetensors`;
    await saveWeights(a, path, a.config);
    const header = await readSafetensorsHeader(path);
    expect(header.metadata.format).toBe('pt');
    expect(JSON.parse(header.metadata.config)).toEqual(a.config);
    expect([...header.tensors.keys()].sort()).toEqual([...a.stateDict().keys()].sort());
    const b = build(2);
    const report = await loadWeights(b, path);
    expect(report).toEqual({ missing: [], unexpected: [], mismatched: [], layout: 'release', files: [path] });
    await expectSame(a, b);
  });

  it('load from a sharded checkpoint (folder or index file), bf16 widened on load', async () => {
    const a = build(3);
    const sub = fresh('sharded');
    mkdirSync(sub);
    const sd = [...a.stateDict()];
    const half = Math.floor(sd.length / 2);
    const weightMap: Record<string, string> = {};
    for (const [i, part] of [sd.slice(0, half), sd.slice(half)].entries()) {
      const file = `model-0000${i + 1}-of-00002.safetensors`;
      await saveSafetensors(join(sub, file), new Map(part), { dtype: 'BF16', metadata: { format: 'pt' } });
      for (const [k] of part) weightMap[k] = file;
    }
    writeFileSync(join(sub, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
    const b = build(4);
    await loadWeights(b, sub);
    const sb = b.stateDict();
    for (const [k, t] of a.stateDict()) {
      const [x, y] = [await t.data(), await sb.get(k)!.data()];
      // exactly float32 -> bf16 round-to-nearest-even
      x.forEach((v, i) => expect(y[i], k).toBe(bf16(v)));
    }
    const c = build(5);
    await loadWeights(c, join(sub, 'model.safetensors.index.json'));
    await expectSame(b, c);
  });

  it('a tied LM head saved anyway (torch.save keeps both keys) is accepted when equal to the embedding, refused when not', async () => {
    const a = build(6);
    const embed = a.llm.model.embed_tokens.weight;
    const good = `${fresh('tied')}.safetensors`;
    await saveSafetensors(good, new Map([...a.stateDict(), ['llm.lm_head.weight', embed]]));
    const b = build(7);
    await loadWeights(b, good);
    await expectSame(a, b);
    const bad = `${fresh('untied')}.safetensors`;
    await saveSafetensors(bad, new Map([...a.stateDict(), ['llm.lm_head.weight', embed.mul(2)]]));
    await expect(loadWeights(build(8), bad)).rejects.toThrow(/ties its LM head.*llm\.lm_head\.weight differs from llm\.model\.embed_tokens\.weight: it needs tie_word_embeddings false/);
  });
});

describe('a failed load changes nothing (issue 12, item 6) and says why', () => {
  it('one bad tensor among all the good ones: nothing is assigned', async () => {
    const a = build(10);
    const sd = a.stateDict();
    // the last tensor in file order has the wrong shape; the loader used to assign all the others first
    const names = [...sd.keys()].sort();
    const lastName = names[names.length - 1];
    const path = `${fresh('one-bad')}.safetensors`;
    await saveSafetensors(path, new Map([...sd].map(([k, t]) => [k, k === lastName ? uhd.zeros([t.size + 1]) : t])));
    const b = build(11);
    const before = await bits(b);
    await expect(loadWeights(b, path)).rejects.toThrow(`shape mismatch ${lastName}: expected`);
    expect(await bits(b)).toEqual(before);
  });

  it('a baseline checkpoint into a model with D: every problem listed, with what it means', async () => {
    const base = build(12, 'tiny-baseline');
    const path = `${fresh('baseline')}.safetensors`;
    await saveWeights(base, path); // no config: the names alone tell
    const withD = build(13);
    const before = await bits(withD);
    await expect(loadWeights(withD, path)).rejects.toThrow(/weights: .*baseline-\d+\.safetensors \(release layout\): \d+ problem\(s\), nothing loaded:[\s\S]*missing vit_merger\.layer_norm1\.weight[\s\S]*and 14 more missing[\s\S]*unexpected resampler\.mlp\.1\.mlp\.0\.weight[\s\S]*looks like the post-ViT baseline/);
    expect(await bits(withD)).toEqual(before);
    const report = await loadWeights(withD, path, { strict: false });
    expect(report.missing.some((k) => k.startsWith('vit_merger.'))).toBe(true);
    expect(report.unexpected.some((k) => k.startsWith('resampler.mlp.1.'))).toBe(true);
  });

  it("the config stored with the weights is compared with the model's (issue 12, item 14): the key and both values named", async () => {
    const a = build(14); // D after layer 1
    const path = `${fresh('k1')}.safetensors`;
    await saveWeights(a, path, a.config);
    const k2 = build(15, 'tiny', { insert_layer_id: 2 }); // same shapes: only the config tells
    const before = await bits(k2);
    await expect(loadWeights(k2, path)).rejects.toThrow(/the checkpoint's config differs from the model's: insert_layer_id is 1 in the checkpoint \(the "config" metadata of .*k1-\d+\.safetensors\), 2 in the model/);
    expect(await bits(k2)).toEqual(before);
    const words = build(16, 'tiny', { tokenizer_words: ['red'] });
    await expect(loadWeights(words, path)).rejects.toThrow(/tokenizer_words is \["red","green","blue","yellow"\] in the checkpoint .*, \["red"\] in the model/);
    await loadWeights(k2, path, { checkConfig: false }); // asked for
    await expectSame(a, k2);
  });

  it('a non-float tensor where a float one belongs is refused', async () => {
    const a = build(17);
    const path = `${fresh('int')}.safetensors`;
    const sd = new Map(a.stateDict());
    sd.set('vpm.post_layernorm.bias', uhd.zeros([32], { dtype: 'int32' }));
    await saveSafetensors(path, sd);
    await expect(loadWeights(build(18), path, { strict: false })).rejects.toThrow('dtype vpm.post_layernorm.bias: stored as I32, expected a float type');
  });
});

describe('other layouts map onto the release names', () => {
  it("this project's first layout (resampler.norm / merges.N, no unused D copies) loads, the copies filled from layer k", async () => {
    for (const name of ['tiny', 'tiny-baseline']) {
      const a = build(20, name);
      const rounds = name === 'tiny' ? 1 : 2;
      const old = renamed(a, (k) => {
        if (k.startsWith('vit_merger.layer_norm2.') || k.startsWith('vit_merger.mlp.')) return null;
        const m = /^resampler\.mlp\.(\d+)\.(pre_norm|mlp\.0|mlp\.2)\.(.+)$/.exec(k);
        if (!m) return k;
        const part = m[2] === 'pre_norm' ? 'norm' : m[2] === 'mlp.0' ? 'linear_1' : 'linear_2';
        return Number(m[1]) === rounds - 1 ? `resampler.${part}.${m[3]}` : `resampler.merges.${m[1]}.${part}.${m[3]}`;
      });
      const path = `${fresh('v0')}.safetensors`;
      await saveSafetensors(path, old);
      const b = build(21, name);
      expect((await loadWeights(b, path)).layout).toBe('uhd-v0');
      await expectSame(a, b);
    }
  });

  it("MiniCPM-V 4.6's transformers layout: vision tower, D and connector map; its LLM is refused by name, or skipped with parts: 'vision'", async () => {
    const a = build(22);
    const hf = renamed(a, (k) => {
      if (k.startsWith('vit_merger.layer_norm2.') || k.startsWith('vit_merger.mlp.')) return null; // transformers' merger has no unused copies
      if (k.startsWith('vit_merger.')) return `model.vision_tower.${k}`;
      if (k.startsWith('vpm.')) return `model.vision_tower.${k.slice(4)}`;
      const m = /^resampler\.mlp\.(\d+)\.(pre_norm|mlp\.0|mlp\.2)\.(.+)$/.exec(k);
      if (m) return `model.merger.mlp.${m[1]}.${m[2] === 'pre_norm' ? 'pre_norm' : m[2] === 'mlp.0' ? 'linear_1' : 'linear_2'}.${m[3]}`;
      return null; // the LLM: written below under the other family's names
    });
    hf.set('model.language_model.embed_tokens.weight', uhd.zeros([8, 4]));
    hf.set('model.language_model.layers.0.linear_attn.in_proj_qkvz.weight', uhd.zeros([4, 4]));
    hf.set('lm_head.weight', uhd.zeros([8, 4]));
    const path = `${fresh('hf46')}.safetensors`;
    await saveSafetensors(path, hf);
    const b = build(23);
    const before = await bits(b);
    await expect(loadWeights(b, path)).rejects.toThrow(/MiniCPM-V 4\.6's transformers layout, whose language model \(3 tensors under model\.language_model\.\*, lm_head\.weight\) is another family .* parts: 'vision'/);
    expect(await bits(b)).toEqual(before);
    const report = await loadWeights(b, path, { parts: 'vision' });
    expect(report).toMatchObject({ layout: 'minicpm-v-4.6-hf', missing: [], unexpected: [], mismatched: [] });
    await expectSame(a, b, (k) => !k.startsWith('llm.')); // D's copies are layer k's again, as a's are
    const after = await bits(b);
    for (const [k, v] of before) if (k.startsWith('llm.')) expect(after.get(k), k).toBe(v);
  });
});

describe('what is not model weights says what it is', () => {
  it('a training checkpoint', async () => {
    const m = build(30);
    const path = join(mkdtempSync(join(dir, 'run-')), 'checkpoint.safetensors');
    await saveCheckpoint(path, { model: m, step: 12, extra: { recipe: 'tiny-demo' } });
    await expect(loadWeights(build(31), path)).rejects.toThrow(/is a training checkpoint \(uhd-training-checkpoint-v1, step 12 of recipe tiny-demo: .*uhd train --resume --out/);
  });

  it("MiniCPM-V's perceiver resampler, a text-only LM, an unrelated file, a PyTorch pickle", async () => {
    const cases: [Record<string, Tensor>, RegExp][] = [
      [{ 'vpm.post_layernorm.weight': uhd.zeros([2]), 'resampler.query': uhd.zeros([64, 2]), 'resampler.attn.in_proj_weight': uhd.zeros([6, 2]) }, /perceiver resampler/],
      [{ 'model.embed_tokens.weight': uhd.zeros([4, 2]), 'model.layers.0.mlp.up_proj.weight': uhd.zeros([2, 2]) }, /a text-only language model/],
      [{ 'conv1.weight': uhd.zeros([2]) }, /not a LLaVA-UHD v4 checkpoint \(none of its 1 tensors .*first: conv1\.weight/],
    ];
    for (const [tensors, pattern] of cases) {
      const path = `${fresh('foreign')}.safetensors`;
      await saveSafetensors(path, tensors);
      await expect(loadWeights(build(32), path)).rejects.toThrow(pattern);
    }
    const pt = `${fresh('release')}.pt`;
    writeFileSync(pt, Buffer.from([0x50, 0x4b, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0]));
    await expect(loadWeights(build(33), pt)).rejects.toThrow(/is a PyTorch pickle .*save_file/);
  });
});

describe('locating weights in folders', () => {
  it("a run folder of `uhd start` (runs/demo): each model's subfolder loads, the parent lists them", async () => {
    const demo = fresh('demo');
    for (const name of ['tiny', 'tiny-baseline']) {
      const m = build(40, name);
      mkdirSync(join(demo, name), { recursive: true });
      await saveCheckpoint(join(demo, name, 'checkpoint.safetensors'), { model: m, step: 3 });
      await saveWeights(m, join(demo, name, 'stage-0-align.safetensors'), m.config);
      await saveWeights(m, join(demo, name, 'final.safetensors'), m.config);
    }
    await expect(locateWeights(demo)).rejects.toThrow(/holds no weights itself; its subfolders tiny-baseline\/, tiny\/ do|its subfolders tiny\/, tiny-baseline\/ do/);
    expect((await locateWeights(join(demo, 'tiny'))).files.map((f) => f.path)).toEqual([join(demo, 'tiny', 'final.safetensors')]);
    rmSync(join(demo, 'tiny', 'final.safetensors'));
    await saveWeights(build(41), join(demo, 'tiny', 'stage-2-sft.safetensors'));
    expect((await locateWeights(join(demo, 'tiny'))).files[0].path).toBe(join(demo, 'tiny', 'stage-2-sft.safetensors'));
    const only = fresh('only-ckpt');
    mkdirSync(only);
    await saveCheckpoint(join(only, 'checkpoint.safetensors'), { model: build(42), step: 1 });
    await expect(loadWeights(build(42), only)).rejects.toThrow('is a training checkpoint');
    await expect(locateWeights(join(dir, 'nope'))).rejects.toThrow(`weights: ${join(dir, 'nope')} does not exist`);
  });
});

/** float32 -> bfloat16 -> float32, round to nearest even (as safetensors.ts writes). */
function bf16(v: number): number {
  const f = new Float32Array([v]);
  const u = new Uint32Array(f.buffer);
  u[0] = ((u[0] + 0x7fff + ((u[0] >>> 16) & 1)) >>> 16) << 16;
  return f[0];
}
