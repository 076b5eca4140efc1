/**
 * Hostile inputs, generated on the fly (nothing bad is committed): recipe files with syntax
 * errors, typos, prototype names, wrong types and absurd nesting; JSONL records with lone
 * surrogates and million-character answers; weights holding NaN; mistyped and out-of-range flags.
 * Each is refused with a message naming the file (or flag), the place and what is allowed; none
 * crashes the process or allocates without bound.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import * as ag from '../autograd/index.js';
import { resolveRecipe } from '../cli/train.js';
import { CONFIGS } from '../llava-uhd/config.js';
import { loadJsonl, MAX_RECORD_CHARS } from '../llava-uhd/data/jsonl.js';
import { encodePngBytes, type RgbImage } from '../llava-uhd/image.js';
import { LlavaUHD } from '../llava-uhd/model.js';
import { saveCheckpoint } from '../nn/checkpoint.js';
import * as uhd from '../tensor/index.js';

const root = resolve(import.meta.dirname, '..');
const dir = mkdtempSync(join(tmpdir(), 'uhd-hostile-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const write = (name: string, text: string | Uint8Array): string => {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
};
const stage = { name: 'a', trainable: ['llm'], lr: 1e-3, min_lr: 0, warmup_steps: 0, steps: 2, max_slices: 1, batch_size: 1 };
const good = { name: 'r', data: { kind: 'synthetic', train: 4, val: 0, test: 0 }, stages: [stage] };

function cli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((done) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'cli/main.ts', ...args], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'], timeout: 120_000 });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b));
    child.stderr.on('data', (b: Buffer) => (stderr += b));
    child.on('close', (code) => done({ code, stdout, stderr }));
  });
}

describe('hostile recipe files', () => {
  it('a JSON syntax error names the file, line and column', () => {
    const path = write('syntax.json', '{\n  "name": "r",\n  "stages": [\n    {"name": "a",}\n  ]\n}\n');
    expect(() => resolveRecipe(path)).toThrow(`${path}:4:18: not valid JSON`);
  });

  it('a typo in a key is an error naming the allowed keys, not a silently disabled feature', () => {
    const path = write('typo.json', JSON.stringify({ ...good, chekpoint_every: 10 }));
    expect(() => resolveRecipe(path)).toThrow(`${path}: the recipe: unknown key 'chekpoint_every' (allowed: name, about, data, stages, eval_every, checkpoint_every,`);
  });

  it("'constructor' as a module, and a seed of \"abc\", are refused", () => {
    const ctor = write('ctor.json', JSON.stringify({ ...good, stages: [{ ...stage, trainable: ['constructor'] }] }));
    expect(() => resolveRecipe(ctor)).toThrow(`${ctor}: stages[0].trainable[0] 'constructor' is not a module (one of compressor, connector, vit, vit_position_embedding, llm)`);
    const seed = write('seed.json', JSON.stringify({ ...good, seed: 'abc' }));
    expect(() => resolveRecipe(seed)).toThrow(`${seed}: seed must be an integer >= 0, got "abc"`);
  });

  it('100,000 levels of nesting are refused before anything recurses', () => {
    const path = write('deep.json', `{"name":"r","about":${'['.repeat(100_000)}${']'.repeat(100_000)},"stages":[]}`);
    expect(() => resolveRecipe(path)).toThrow(`${path}: JSON nests deeper than 64 levels`);
  });

  it('comment keys are welcome', () => {
    const path = write('comments.json', JSON.stringify({ _comment: 'hi', _assumptions: ['a', 'b'], ...good, stages: [{ _why: 'x', ...stage }] }));
    expect(resolveRecipe(path).recipe.stages[0]).toEqual(stage);
  });
});

describe('hostile data records', () => {
  const image: RgbImage = { width: 16, height: 16, data: new Uint8Array(16 * 16 * 3).fill(128) } as RgbImage;
  const record = (answer: string) => JSON.stringify({ image: 'img.png', conversations: [{ from: 'human', value: '<image>\nQ?' }, { from: 'gpt', value: answer }] });

  it('a lone surrogate (a JSON escape) and an over-long record are bad records with their line', async () => {
    mkdirSync(join(dir, 'data'), { recursive: true });
    writeFileSync(join(dir, 'data', 'img.png'), encodePngBytes(image));
    const lines = [record('fine'), record('broken \ud800 text'), record('z'.repeat(MAX_RECORD_CHARS + 1)), record('also \udc00 bad'), record('\ud83d\ude00 paired is fine')];
    const path = join(dir, 'data', 'hostile.jsonl');
    writeFileSync(path, lines.join('\n') + '\n');
    const { records, problems } = await loadJsonl(path, { onBad: 'skip' });
    expect(records.map((r) => r.line)).toEqual([1, 5]);
    expect(problems).toEqual([
      { line: 2, reason: 'conversations[1] (assistant) holds a lone surrogate U+D800 at character 7: not valid Unicode text' },
      { line: 3, reason: `the turns hold ${MAX_RECORD_CHARS + 11} characters, more than the limit ${MAX_RECORD_CHARS} per record` },
      { line: 4, reason: 'conversations[1] (assistant) holds a lone surrogate U+DC00 at character 5: not valid Unicode text' },
    ]);
    await expect(loadJsonl(path)).rejects.toThrow(`loadJsonl: ${path}:2: conversations[1] (assistant) holds a lone surrogate U+D800`);
    // `uhd data check` uses the same validation
    const r = await cli(['data', 'check', path]);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain(`${path}:2: conversations[1] (assistant) holds a lone surrogate U+D800`);
    expect(r.stdout).toContain('2 good records, 3 bad');
  });
});

describe('hostile weights', () => {
  it('a model holding NaN is never saved as a checkpoint; the good one stays as it was', async () => {
    uhd.manualSeed(0);
    const m = new LlavaUHD(structuredClone(CONFIGS.tiny));
    const path = join(dir, 'checkpoint.safetensors');
    await saveCheckpoint(path, { model: m, step: 1 });
    const before = readFileSync(path);
    const w = m.llm.model.layers[1].self_attn.q_proj.weight;
    ag.noGrad(() => uhd.assign(w, w.mul(uhd.tensor(Infinity))));
    await expect(saveCheckpoint(path, { model: m, step: 2 })).rejects.toThrow(
      `saveCheckpoint: not writing ${path}: model.llm.model.layers.1.self_attn.q_proj.weight holds`,
    );
    expect(readFileSync(path).equals(before)).toBe(true);
  });
});

describe('hostile flags', () => {
  it('out-of-range and mistyped flags fail at once, naming the flag', async () => {
    const [n, abc, promt, device] = await Promise.all([
      cli(['eval', '--weights', 'none.safetensors', '--n', '-1']),
      cli(['eval', '--weights', 'none.safetensors', '--n', 'abc']),
      cli(['generate', '--image', 'x.png', '--promt', 'hi']),
      cli(['train', '--device', 'gpu']),
    ]);
    expect([n.code, n.stderr]).toEqual([1, "uhd: --n: must be an integer >= 1, got '-1'\n"]);
    expect([abc.code, abc.stderr]).toEqual([1, "uhd: --n: must be an integer >= 1, got 'abc'\n"]);
    expect([promt.code, promt.stderr]).toEqual([1, "error: unknown option '--promt'\n(Did you mean --prompt?)\n"]);
    expect([device.code, device.stderr]).toEqual([1, "uhd: --device: 'gpu' is not one of auto, cpu, webgpu, wasm\n"]);
  });
});
