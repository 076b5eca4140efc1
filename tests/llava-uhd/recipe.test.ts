/** Recipe files: one schema, messages naming the file and the key, comment keys, JSON positions. */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CONFIGS } from '../../llava-uhd/config.js';
import { LlavaUHD } from '../../llava-uhd/model.js';
import { jsonErrorOffset, maxSampleTokens, nonFinitePolicy, parseJsonText, validateRecipe } from '../../llava-uhd/recipe.js';
import { applyTrainable, moduleMatcher, type StageSpec } from '../../llava-uhd/train.js';

const stage: StageSpec = { name: 'a', trainable: ['vit'], lr: 1e-3, min_lr: 0, warmup_steps: 0, steps: 2, max_slices: 1, batch_size: 1 };
const recipe = { name: 'r', stages: [stage] };

describe('recipe schema', () => {
  it('refuses unknown keys, naming the file, the key and the allowed keys', () => {
    expect(() => validateRecipe({ ...recipe, chekpoint_every: 3 }, 'my.json')).toThrow(
      "my.json: the recipe: unknown key 'chekpoint_every' (allowed: name, about, data, stages, eval_every, checkpoint_every, seed, non_finite, on_bad_sample; keys starting with '_' are comments)",
    );
    expect(() => validateRecipe({ ...recipe, stages: [{ ...stage, stepz: 4 }] }, 'my.json')).toThrow("my.json: stages[0]: unknown key 'stepz' (allowed: name, trainable, lr,");
    expect(() => validateRecipe({ ...recipe, non_finite: { action: 'skip', max: 2 } }, 'my.json')).toThrow("my.json: non_finite: unknown key 'max' (allowed: action, max_consecutive, max_total;");
  });

  it("refuses 'constructor' and other Object.prototype names as modules", () => {
    for (const m of ['constructor', 'toString', '__proto__', 'hasOwnProperty']) {
      expect(() => validateRecipe({ ...recipe, stages: [{ ...stage, trainable: [m] }] }, 'r.json')).toThrow(`r.json: stages[0].trainable[0] '${m}' is not a module (one of compressor, connector, vit, vit_position_embedding, llm)`);
      expect(() => moduleMatcher(m)).toThrow(`'${m}' is not a module`);
    }
    // and the lookup itself, for a stage that never went through the schema
    const model = new LlavaUHD(structuredClone(CONFIGS.tiny));
    expect(() => applyTrainable(model, { ...stage, trainable: ['constructor' as never] })).toThrow("stage 'a': 'constructor' is not a module");
  });

  it('refuses values of the wrong type or range, quoting them', () => {
    const bad = (r: unknown) => () => validateRecipe(r, 'r.json');
    expect(bad({ ...recipe, seed: 'abc' })).toThrow('r.json: seed must be an integer >= 0, got "abc"');
    expect(bad({ ...recipe, seed: 1.5 })).toThrow('r.json: seed must be an integer >= 0, got 1.5');
    expect(bad({ ...recipe, checkpoint_every: -1 })).toThrow('r.json: checkpoint_every must be an integer >= 0, got -1');
    expect(bad({ ...recipe, stages: [{ ...stage, lr: '1e-3' }] })).toThrow('r.json: stages[0].lr must be a number >= 0, got "1e-3"');
    expect(bad({ ...recipe, stages: [{ ...stage, batch_size: 0 }] })).toThrow('r.json: stages[0].batch_size must be a positive integer, got 0');
    expect(bad({ ...recipe, stages: [{ ...stage, warmup_steps: 3 }] })).toThrow('r.json: stages[0].warmup_steps must be an integer in 0..steps (2), got 3');
    expect(bad({ ...recipe, stages: [{ ...stage, pack_length: 100, max_sample_tokens: 200 }] })).toThrow('max_sample_tokens (200) exceeds pack_length (100)');
    expect(bad({ ...recipe, on_bad_sample: 'ignore' })).toThrow('r.json: on_bad_sample must be \'skip\' or \'fail\', got "ignore"');
    expect(bad({ ...recipe, non_finite: { action: 'pause' } })).toThrow('r.json: non_finite.action must be \'skip\' or \'stop\', got "pause"');
    expect(bad({ ...recipe, stages: {} })).toThrow('r.json: stages must be a non-empty array of stages');
    expect(bad([])).toThrow('r.json: the recipe must be a JSON object, got []');
  });

  it("keys starting with '_' are comments, at the top and in stages, and leave the recipe", () => {
    const r = validateRecipe({ ...recipe, _comment: 'why', _assumptions: { lr: 'from the paper' }, stages: [{ ...stage, _note: 1 }] }, 'r.json');
    expect(r).toEqual(recipe);
  });

  it('fills in the non-finite policy and the per-sample token limit', () => {
    expect(nonFinitePolicy(validateRecipe(recipe))).toEqual({ action: 'skip', max_consecutive: 3, max_total: 25 });
    expect(nonFinitePolicy(validateRecipe({ ...recipe, non_finite: { max_total: 2 } }))).toEqual({ action: 'skip', max_consecutive: 3, max_total: 2 });
    expect(maxSampleTokens(stage)).toBe(8192);
    expect(maxSampleTokens({ ...stage, pack_length: 512 })).toBe(512);
    expect(maxSampleTokens({ ...stage, pack_length: 512, max_sample_tokens: 300 })).toBe(300);
  });

  it('the shipped recipes are valid', () => {
    const dir = join(import.meta.dirname, '..', '..', 'recipes');
    for (const f of readdirSync(dir).filter((x) => x.endsWith('.json'))) {
      const path = join(dir, f);
      expect(() => validateRecipe(parseJsonText(readFileSync(path, 'utf8'), path), path), f).not.toThrow();
    }
  });
});

describe('JSON text', () => {
  it('a syntax error names the file, line and column', () => {
    expect(() => parseJsonText('{\n  "name": "x",\n  "stages": [1, 2,]\n}', 'r.json')).toThrow(/^r\.json:3:19: not valid JSON \(Unexpected token '\]'\)$/);
    expect(() => parseJsonText('{"a": tru}', 'r.json')).toThrow(/^r\.json:1:7: not valid JSON \(Unexpected token/);
    expect(() => parseJsonText('', 'r.json')).toThrow(/^r\.json:1:1: not valid JSON/);
    expect(() => parseJsonText('{"a": 1} x', 'r.json')).toThrow(/^r\.json:1:10: not valid JSON/);
  });

  it('the scanner finds the offset V8 reports, where V8 reports one', () => {
    const cases = ['{"a":1,}', '[1,2', '[01]', '{"a" 1}', '"\\q"', '{"a":[1,{"b":2}],"c":{}}x', '  [ ]  ', '{"a":-}', '[1e]', '"x'];
    for (const t of cases) {
      let v8: number | null = null;
      try {
        JSON.parse(t);
        v8 = -1;
      } catch (e) {
        const m = /at position (\d+)/.exec((e as Error).message);
        if (m) v8 = Number(m[1]);
      }
      if (v8 !== null) expect(jsonErrorOffset(t), t).toBe(v8);
    }
    expect(jsonErrorOffset('{"a":[1,{"b":"c"}],"d":null}')).toBe(-1);
  });

  it('refuses absurd nesting instead of overflowing the stack later', () => {
    const deep = '{"name":"x","data":' + '['.repeat(100_000) + ']'.repeat(100_000) + '}';
    expect(() => parseJsonText(deep, 'r.json')).toThrow('r.json: JSON nests deeper than 64 levels');
  });
});
