import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  CONFIGS, configDifferences, connectorMergeRounds, parseConfigJson, readConfig, resolveConfig, toMiniCPMVConfig, validateConfig,
} from '../../llava-uhd/config.js';
import { parseJsonText } from '../../llava-uhd/schema.js';

const dir = mkdtempSync(join(tmpdir(), 'uhd-config-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A MiniCPM-V 4.5-style config.json as the release's folders have it (keys beyond the model's included). */
const minicpmv = () => ({
  architectures: ['MiniCPMV'],
  auto_map: { AutoConfig: 'configuration_minicpm.MiniCPMVConfig', AutoModel: 'modeling_minicpmv.MiniCPMV' },
  model_type: 'minicpmv',
  bos_token_id: 151643,
  eos_token_id: 151645,
  hidden_act: 'silu',
  hidden_size: 4096,
  intermediate_size: 12288,
  max_position_embeddings: 40960,
  num_attention_heads: 32,
  num_hidden_layers: 36,
  num_key_value_heads: 8,
  head_dim: 128,
  rms_norm_eps: 1e-6,
  rope_theta: 1000000,
  rope_scaling: null,
  attention_bias: false,
  use_sliding_window: false,
  tie_word_embeddings: false,
  vocab_size: 151936,
  torch_dtype: 'bfloat16',
  image_size: 448, // MiniCPM-V's own, not the position table's
  query_num: 64,
  batch_vision_input: true,
  drop_vision_last_layer: false,
  use_image_id: true,
  slice_mode: true,
  slice_config: { max_slice_nums: 9, model_type: 'minicpmv', patch_size: 14, scale_resolution: 448 },
  vision_config: { hidden_size: 1152, image_size: 980, intermediate_size: 4304, model_type: 'siglip_vision_model', num_attention_heads: 16, num_hidden_layers: 27, patch_size: 14 },
  insert_layer_id: 6,
  merger_times: 1,
});

describe("MiniCPM-V's config.json (the release's format)", () => {
  it("reads as the paper's model: Qwen3 keys at the top level, position side from vision_config (980/14 = 70), not the top-level image_size", () => {
    const { config, format, torchDType } = parseConfigJson(minicpmv(), 'config.json');
    expect(format).toBe('minicpmv');
    expect(torchDType).toBe('bfloat16');
    expect(config.vision_config.position_embedding_side).toBe(70);
    expect(config.slice_config).toEqual({ scale_resolution: 448, max_slice_nums: 9, align_unit: 56 });
    expect(configDifferences(config, CONFIGS['llava-uhd-v4'])).toEqual([]);
    expect(config.merger_times).toBeUndefined(); // implied by insert_layer_id
  });

  it('insert_layer_id absent or -1 is the baseline; merger_times other than implied is kept; drop_vision_last_layer drops one layer', () => {
    const { insert_layer_id: _, ...noK } = minicpmv();
    for (const j of [{ ...noK, merger_times: 2 }, { ...minicpmv(), insert_layer_id: -1, merger_times: 2 }]) {
      const c = parseConfigJson(j, 'config.json').config;
      expect(configDifferences(c, CONFIGS['llava-uhd-v4-baseline'])).toEqual([]);
    }
    const c = parseConfigJson({ ...minicpmv(), merger_times: 2 }, 'config.json').config;
    expect(c.merger_times).toBe(2);
    expect(connectorMergeRounds(c)).toBe(2);
    expect(parseConfigJson({ ...minicpmv(), drop_vision_last_layer: true }, 'config.json').config.vision_config.num_hidden_layers).toBe(26);
  });

  it('every shipped config survives toMiniCPMVConfig -> parse unchanged', () => {
    for (const [name, c] of Object.entries(CONFIGS)) {
      const back = parseConfigJson(JSON.parse(JSON.stringify(toMiniCPMVConfig(c))) as unknown, name).config;
      expect(configDifferences(back, c), name).toEqual([]);
      expect(back.slice_config, name).toEqual(c.slice_config);
      expect(back.tokenizer_words, name).toEqual(c.tokenizer_words);
    }
  });

  it('what this project does not implement is refused by key, with the allowed values', () => {
    const bad: [Record<string, unknown>, string][] = [
      [{ ...minicpmv(), vision_config: { ...minicpmv().vision_config, hidden_act: 'gelu' } }, 'config.json: vision_config.hidden_act: must be "gelu_pytorch_tanh", got "gelu"'],
      [{ ...minicpmv(), hidden_act: 'gelu' }, 'config.json: hidden_act: must be "silu", got "gelu"'],
      [{ ...minicpmv(), use_sliding_window: true }, 'config.json: use_sliding_window: must be false, got true'],
      [{ ...minicpmv(), rope_scaling: { type: 'yarn' } }, 'config.json: rope_scaling: must be a null, got {"type":"yarn"}'],
      [{ ...minicpmv(), insert_layer_id: 27 }, 'config.json: insert_layer_id: must be -1 (no D) or a layer index 0..26, got 27'],
      [{ ...minicpmv(), torch_dtype: 'int8' }, 'config.json: torch_dtype: must be one of "float32", "bfloat16", "float16", got "int8"'],
      [{ ...minicpmv(), vision_config: { ...minicpmv().vision_config, image_size: 981 } }, 'config.json: vision_config.image_size: 981 is not a multiple of vision_config.patch_size (14)'],
      [{ ...minicpmv(), slice_config: { ...minicpmv().slice_config, patch_size: 16 } }, 'config.json: slice_config.patch_size: 16 differs from vision_config.patch_size (14)'],
      [{ ...minicpmv(), num_key_value_heads: 5 }, 'config.json: num_key_value_heads: 5 does not divide num_attention_heads (32)'],
    ];
    for (const [j, message] of bad) expect(() => parseConfigJson(j, 'config.json'), message).toThrow(message);
  });

  it("MiniCPM-V 4.6's transformers config, and JSON of neither format, say what they are", () => {
    const hf46 = { model_type: 'minicpmv4_6', text_config: { model_type: 'qwen3_5_text', hidden_size: 2048 }, vision_config: {}, insert_layer_id: 6 };
    expect(() => parseConfigJson(hf46, 'c.json')).toThrow(/c\.json: a Hugging Face transformers config \(model_type "minicpmv4_6", text_config\.model_type "qwen3_5_text"\): its language model is another family/);
    expect(() => parseConfigJson({ foo: 1 }, 'c.json')).toThrow(/c\.json: neither this project's config format .* its keys: foo/);
    expect(() => parseConfigJson([1], 'c.json')).toThrow('c.json: the config must be a JSON object, got [1]');
  });
});

describe("the project's own config files", () => {
  it('unknown keys are refused with the allowed ones and the nearest (a typo)', () => {
    expect(() => validateConfig({ ...CONFIGS.tiny, insert_layer: 1 }, 'my.json')).toThrow(/my\.json: \(top level\): unknown key 'insert_layer' \(did you mean 'insert_layer_id'\?\); allowed: vision_config, text_config, insert_layer_id/);
    expect(() => validateConfig({ ...CONFIGS.tiny, text_config: { ...CONFIGS.tiny.text_config, rope_theeta: 1 } }, 'my.json')).toThrow("my.json: text_config: unknown key 'rope_theeta' (did you mean 'rope_theta'?)");
  });

  it('bad values name the key and what was found', () => {
    const t = CONFIGS.tiny;
    const cases: [unknown, string][] = [
      [{ ...t, insert_layer_id: 4 }, 'my.json: insert_layer_id: must be null (no D) or a layer index 0..3, got 4'],
      [{ ...t, insert_layer_id: '1' }, 'my.json: insert_layer_id: must be null (no D) or a layer index >= 0, got "1"'],
      [{ ...t, vision_config: { ...t.vision_config, hidden_size: 33 } }, 'my.json: vision_config.hidden_size: 33 is not divisible by vision_config.num_attention_heads (2)'],
      [{ ...t, text_config: { ...t.text_config, vocab_size: 0 } }, 'my.json: text_config.vocab_size: must be > 0, got 0'],
      [{ ...t, slice_config: { ...t.slice_config, align_unit: 28 } }, 'my.json: slice_config.align_unit: 28 is not a multiple of 4 x patch_size (56)'],
      [{ ...t, tokenizer_words: ['red', 'red'] }, 'my.json: tokenizer_words: lists a word twice'],
      [{ ...t, tokenizer_words: ['re d'] }, 'my.json: tokenizer_words.0: must be letters only'],
      [{ vision_config: t.vision_config, text_config: t.text_config, insert_layer_id: 1 }, 'my.json: slice_config: must be an object, got nothing'],
    ];
    for (const [c, message] of cases) expect(() => validateConfig(c, 'my.json'), message).toThrow(message);
  });

  it('files: by path, by folder (its config.json), a JSON syntax error with line and column', async () => {
    const path = join(dir, 'tiny.json');
    writeFileSync(path, JSON.stringify(CONFIGS.tiny));
    expect(await resolveConfig(path)).toEqual(CONFIGS.tiny);
    writeFileSync(join(dir, 'config.json'), JSON.stringify(toMiniCPMVConfig(CONFIGS['tiny-baseline'], 'float16')));
    const folder = await readConfig(dir);
    expect(folder).toMatchObject({ format: 'minicpmv', torchDType: 'float16' });
    expect(configDifferences(folder.config, CONFIGS['tiny-baseline'])).toEqual([]);
    writeFileSync(path, '{\n  "vision_config": {"hidden_size": 32,}\n}');
    await expect(resolveConfig(path)).rejects.toThrow(`${path}:2:39: not valid JSON`);
    await expect(resolveConfig(join(dir, 'nope.json'))).rejects.toThrow("config: '" + join(dir, 'nope.json') + "' is neither a named config");
    await expect(resolveConfig('constructor')).rejects.toThrow('is neither a named config'); // not Object.prototype's
  });

  it('JSON syntax errors: position found for every kind V8 reports', () => {
    const cases: [string, string][] = [
      ['{"a": 1,}', 'f.json:1:9: not valid JSON'],
      ['{"a": [1, 2,, 3]}', 'f.json:1:13: not valid JSON'],
      ['{\n\n  "a" 1}', 'f.json:3:7: not valid JSON'],
      ['{"a": tru}', 'f.json:1:7: not valid JSON'],
      ['{"a": 1', 'it ends too early'],
      ['[1] x', 'f.json:1:5: not valid JSON'],
    ];
    for (const [text, where] of cases) expect(() => parseJsonText(text, 'f.json'), text).toThrow(where);
  });
});
