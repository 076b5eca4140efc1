import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { readSafetensorsHeader } from '../../nn/safetensors.js';
import { saveCheckpoint } from '../../nn/index.js';
import * as uhd from '../../tensor/index.js';
import { noGrad } from '../../autograd/index.js';
import { saveCheckpointFolder } from '../../llava-uhd/checkpoint-folder.js';
import { CONFIGS, configDifferences, type LlavaUHDConfig } from '../../llava-uhd/config.js';
import { generate } from '../../llava-uhd/generate.js';
import { FileTokenizer } from '../../llava-uhd/hf-tokenizer.js';
import type { RgbImage } from '../../llava-uhd/image.js';
import { buildPrompt } from '../../llava-uhd/layout.js';
import { loadModel } from '../../llava-uhd/load.js';
import { LlavaUHD } from '../../llava-uhd/model.js';
import { prepareImage, viewPixels } from '../../llava-uhd/preprocess.js';
import type { Tokenizer } from '../../llava-uhd/tokenizer.js';
import { saveWeights } from '../../llava-uhd/weights.js';

const dir = mkdtempSync(join(tmpdir(), 'uhd-folder-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let n = 0;
const fresh = (stem: string) => join(dir, `${stem}-${n++}`);

const build = (seed: number, name = 'tiny', patch: Partial<LlavaUHDConfig> = {}) => {
  uhd.manualSeed(seed);
  return new LlavaUHD({ ...structuredClone(CONFIGS[name]), ...patch });
};

/** float32 -> bfloat16 -> float32, round to nearest even. */
function bf16(v: number): number {
  const f = new Float32Array([v]);
  const u = new Uint32Array(f.buffer);
  u[0] = ((u[0] + 0x7fff + ((u[0] >>> 16) & 1)) >>> 16) << 16;
  return f[0];
}

/** Rounds every weight of `m` to bfloat16 in place (what a bf16 folder holds). */
async function roundToBf16(m: LlavaUHD): Promise<void> {
  for (const t of m.stateDict().values()) {
    const r = Float32Array.from(await t.data(), bf16);
    noGrad(() => uhd.assign(t, uhd.tensor(r, { shape: t.shape })));
  }
}

/** A byte-level BPE tokenizer.json with no merges (ids 0..255 = bytes) and the layout's markers. */
function tinyTokenizerJson(): unknown {
  const keep = (b: number) => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  let extra = 0;
  const vocab = Object.fromEntries(Array.from({ length: 256 }, (_, b) => [String.fromCharCode(keep(b) ? b : 256 + extra++), b]));
  const specials = ['<|endoftext|>', '<|im_start|>', '<|im_end|>', '<image>', '</image>', '<slice>', '</slice>', '<image_id>', '</image_id>'];
  return {
    version: '1.0',
    added_tokens: specials.map((content, i) => ({ id: 256 + i, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true })),
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: true },
    post_processor: null,
    decoder: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: true },
    // '<unk>' is an ordinary vocabulary entry here, as in Qwen's: the loader makes it special
    model: { type: 'BPE', dropout: null, unk_token: null, fuse_unk: false, byte_fallback: false, vocab: { ...vocab, '<unk>': 300 }, merges: [] },
  };
}

const image: RgbImage = (() => {
  const w = 200;
  const h = 150;
  const data = new Uint8Array(w * h * 3);
  for (let i = 0; i < data.length; i++) data[i] = (i * 37) % 251;
  return { width: w, height: h, data };
})();

/** Greedy answer tokens of `model` for one question about `image`. */
async function answer(model: LlavaUHD, tok: Tokenizer, config: LlavaUHDConfig): Promise<number[]> {
  const prepared = prepareImage(image, config);
  const prompt = buildPrompt([{ role: 'user', content: '<image>\nWhat colour?' }], [prepared.tokens], tok);
  const pixels = viewPixels(prepared.views, 'cpu');
  const g = await generate(model, { ids: Array.from(prompt.ids), unkPositions: prompt.unkPositions }, pixels, { maxNewTokens: 4 });
  for (const p of pixels) p.dispose();
  return g.tokens;
}

describe('checkpoint folders, written and read', () => {
  it('a bf16, sharded folder in the release layout with a MiniCPM-V config.json loads without --config, bit-equal to bf16, and generates', async () => {
    const a = build(1);
    const out = fresh('release');
    const { files } = await saveCheckpointFolder(a, out, { dtype: 'BF16', maxShardBytes: 40_000 });
    const shards = files.filter((f) => /^model-\d{5}-of-\d{5}\.safetensors$/.test(f));
    expect(shards.length).toBeGreaterThan(2);
    expect(files).toContain('model.safetensors.index.json');
    const index = JSON.parse(readFileSync(join(out, 'model.safetensors.index.json'), 'utf8')) as { weight_map: Record<string, string>; metadata: { total_size: number } };
    expect(Object.keys(index.weight_map).sort()).toEqual([...a.stateDict().keys()].sort());
    expect(index.weight_map['vit_merger.mlp.fc1.weight']).toMatch(/^model-/); // the unused copies travel too
    for (const s of shards) {
      const h = await readSafetensorsHeader(join(out, s));
      expect(h.metadata.format).toBe('pt');
      expect([...h.tensors.values()].every((e) => e.dtype === 'BF16')).toBe(true);
    }
    const cfg = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')) as Record<string, unknown>;
    expect(cfg).toMatchObject({ model_type: 'minicpmv', hidden_size: 48, num_key_value_heads: 2, torch_dtype: 'bfloat16', insert_layer_id: 1, merger_times: 1 });
    expect(cfg.vision_config).toMatchObject({ image_size: 16 * 14, patch_size: 14, hidden_act: 'gelu_pytorch_tanh' });
    expect(cfg.slice_config).toMatchObject({ max_slice_nums: 9, scale_resolution: 112, patch_size: 14 });

    const loaded = await loadModel({ weights: out });
    expect(configDifferences(loaded.config, a.config)).toEqual([]);
    expect(loaded.checkpoint?.config).toMatchObject({ from: join(out, 'config.json'), torchDType: 'bfloat16' });
    await roundToBf16(a);
    const sb = loaded.model.stateDict();
    for (const [k, t] of a.stateDict()) expect(Array.from(await sb.get(k)!.data()), k).toEqual(Array.from(await t.data()));
    const tokens = await answer(loaded.model, loaded.tok, loaded.config);
    expect(tokens.length).toBeGreaterThan(0);
    expect(tokens).toEqual(await answer(a, loaded.tok, a.config));
    // saving again as one file removes the index and shards of the earlier save
    await saveCheckpointFolder(a, out);
    expect(readdirSync(out).sort()).toEqual(['config.json', 'model.safetensors']);
  });

  it('the baseline layout likewise (no vit_merger, merger_times 2), with tokenizer files and generation_config.json', async () => {
    const a = build(2, 'tiny-baseline');
    const out = fresh('baseline');
    mkdirSync(out);
    writeFileSync(join(out, 'tokenizer.json'), JSON.stringify(tinyTokenizerJson()));
    const template = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}";
    writeFileSync(join(out, 'tokenizer_config.json'), JSON.stringify({ chat_template: template, pad_token: '<|endoftext|>', tokenizer_class: 'Qwen2Tokenizer' }));
    writeFileSync(join(out, 'generation_config.json'), JSON.stringify({ do_sample: false, top_k: 20, eos_token_id: [258, 256], transformers_version: '4.56.0' }));
    await saveCheckpointFolder(a, out, { dtype: 'BF16' });
    const cfg = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')) as Record<string, unknown>;
    expect(cfg).toMatchObject({ insert_layer_id: -1, merger_times: 2 });
    const loaded = await loadModel({ weights: out });
    expect(loaded.config.insert_layer_id).toBeNull();
    expect(loaded.model.vit_merger).toBeNull();
    expect(loaded.tok).toBeInstanceOf(FileTokenizer);
    expect(loaded.tok.special['<unk>']).toBe(300);
    expect(loaded.tok.encode('a<unk>b')).toEqual([97, 300, 98]);
    expect(loaded.checkpoint?.chatTemplate).toBe(template);
    expect(loaded.checkpoint?.generationConfig).toMatchObject({ do_sample: false, top_k: 20, eos_token_id: [258, 256] });
    await roundToBf16(a);
    const tokens = await answer(loaded.model, loaded.tok, loaded.config);
    expect(tokens).toEqual(await answer(a, loaded.tok, a.config));
    // without tokenizer files: the built-in tokenizer for the config
    rmSync(join(out, 'tokenizer.json'));
    expect((await loadModel({ weights: out })).tok).not.toBeInstanceOf(FileTokenizer);
  });

  it("the folders `npm start` writes (runs/demo/<model>/final.safetensors beside a training checkpoint) load without --config (issue 12, item 16)", async () => {
    const demo = fresh('demo');
    for (const name of ['tiny', 'tiny-baseline']) {
      const m = build(3, name);
      mkdirSync(join(demo, name), { recursive: true });
      await saveCheckpoint(join(demo, name, 'checkpoint.safetensors'), { model: m, step: 5 });
      await saveWeights(m, join(demo, name, 'final.safetensors'), m.config);
    }
    const base = await loadModel({ weights: join(demo, 'tiny-baseline') });
    expect(base.config.insert_layer_id).toBeNull();
    expect((await loadModel({ weights: join(demo, 'tiny'), config: 'tiny' })).config.insert_layer_id).toBe(1);
    await expect(loadModel({ weights: demo })).rejects.toThrow(/holds no weights itself; its subfolders tiny-baseline\/, tiny\/ do/);
    await expect(loadModel({ weights: join(demo, 'tiny', 'checkpoint.safetensors') })).rejects.toThrow('is a training checkpoint');
  });
});

describe('what goes wrong is named', () => {
  it('--config that does not describe the weights: each key with both values', async () => {
    const out = fresh('mismatch');
    await saveCheckpointFolder(build(4), out);
    await expect(loadModel({ weights: out, config: 'tiny-baseline' })).rejects.toThrow(/--config tiny-baseline does not describe --weights .*: insert_layer_id is 1 in the checkpoint \(.*config\.json\), null in --config tiny-baseline; merger_times is 1 in the checkpoint .*, 2 in --config tiny-baseline/);
    await expect(loadModel({ weights: out, config: 'llava-uhd-v4' })).rejects.toThrow(/vision_config\.hidden_size is 32 in the checkpoint .*, 1152 in --config llava-uhd-v4/);
  });

  it('config.json edited away from the weights it sits beside, a bad value, bad JSON', async () => {
    const out = fresh('edited');
    await saveCheckpointFolder(build(5), out);
    const path = join(out, 'config.json');
    const cfg = JSON.parse(readFileSync(path, 'utf8')) as Record<string, unknown>;
    writeFileSync(path, JSON.stringify({ ...cfg, insert_layer_id: 2 }));
    await expect(loadModel({ weights: out })).rejects.toThrow(/config\.json and the config stored in .*model\.safetensors disagree: insert_layer_id is 2 in config\.json, 1 in the weights/);
    writeFileSync(path, JSON.stringify({ ...cfg, vision_config: { ...(cfg.vision_config as object), hidden_act: 'quick_gelu' } }));
    await expect(loadModel({ weights: out })).rejects.toThrow(`${path}: vision_config.hidden_act: must be "gelu_pytorch_tanh", got "quick_gelu"`);
    writeFileSync(path, '{\n  "hidden_size": 48,\n  "vision_config": {,\n}');
    await expect(loadModel({ weights: out })).rejects.toThrow(`${path}:3:21: not valid JSON`);
  });

  it('weights with no config anywhere; a bad generation_config.json; a tokenizer without the layout\'s markers; one too big for the model', async () => {
    const bare = `${fresh('bare')}.safetensors`;
    await saveWeights(build(6), bare);
    await expect(loadModel({ weights: bare })).rejects.toThrow(/carries no config \(no config\.json beside it, no "config" in its metadata\): pass --config/);
    expect((await loadModel({ weights: bare, config: 'tiny' })).config.insert_layer_id).toBe(1);

    const out = fresh('extras');
    await saveCheckpointFolder(build(7), out);
    writeFileSync(join(out, 'generation_config.json'), JSON.stringify({ top_p: 7 }));
    await expect(loadModel({ weights: out })).rejects.toThrow(`${join(out, 'generation_config.json')}: top_p: must be <= 1, got 7`);
    rmSync(join(out, 'generation_config.json'));
    const tok = tinyTokenizerJson() as { added_tokens: { content: string }[] };
    writeFileSync(join(out, 'tokenizer.json'), JSON.stringify({ ...tok, added_tokens: tok.added_tokens.filter((t) => t.content !== '<slice>') }));
    await expect(loadModel({ weights: out })).rejects.toThrow(`${join(out, 'tokenizer.json')}: has no <slice> token`);
    const big = tinyTokenizerJson() as { model: { vocab: Record<string, number> } };
    big.model.vocab['zzz'] = 500;
    writeFileSync(join(out, 'tokenizer.json'), JSON.stringify(big));
    await expect(loadModel({ weights: out })).rejects.toThrow(/501 ids, more than the model's vocab_size 384/);
  });
});
