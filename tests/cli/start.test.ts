/** The main job in-process on a tiny pretrained baseline: D inserted both ways, step 0 measured, three fine-tunes, the table, the folders. */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { startCommand } from '../../cli/start.js';
import { CONFIGS, type LlavaUHDConfig } from '../../llava-uhd/config.js';
import { loadModel } from '../../llava-uhd/load.js';
import { pretrain } from '../../llava-uhd/pretrain.js';
import { openDevice } from '../../backends/index.js';

const root = mkdtempSync(join(tmpdir(), 'uhd-start-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
const small: LlavaUHDConfig = { ...structuredClone(CONFIGS['tiny-baseline']), tokenizer_words: CONFIGS.mini.tokenizer_words, text_config: { ...CONFIGS.tiny.text_config, vocab_size: 320 } };

beforeAll(async () => {
  await openDevice('wasm');
  await pretrain({ config: small, device: 'wasm', out: join(root, 'pre'), seed: 2, towerSteps: 2, towerBatch: 4, lmSteps: 2, lmBatch: 2, heldOut: 4 });
}, 60_000);

describe('uhd start', () => {
  it('prints step 0 for each model, the table, the answers of every model to a fresh question, the report, four folders that load', async () => {
    const lines: string[] = [];
    const log = vi.spyOn(console, 'log').mockImplementation((...a: unknown[]) => void lines.push(a.join(' ')));
    const err = vi.spyOn(console, 'error').mockImplementation(() => undefined);
    try {
      await startCommand({ weights: join(root, 'pre'), steps: '2', test: '5', device: 'wasm', out: join(root, 'demo'), insertLayer: '1' });
    } finally {
      log.mockRestore();
      err.mockRestore();
    }
    const text = lines.join('\n');
    expect(text).toMatch(/D after layer 1, reuse +cosine vs the baseline's 2x2-pooled features -?\d\.\d{3}, answer loss \d+\.\d{3}/);
    expect(text).toMatch(/D after layer 1, random +cosine/);
    for (const t of ['  colour ', 'visual encoding GMACs per image', 'measured encode ms per image', 'step 0: cosine vs baseline features']) expect(text).toContain(t);
    expect(text).toContain("Q: What colour is the large shape?");
    expect(text).toMatch(/fewer visual-encoding MACs/);
    expect(text).toMatch(/Q: .+\? {3}\(truth: ".+"\)\n {2}baseline \(post-ViT 16x\) +".*"\n {2}D after layer 1, reuse +".*"\n {2}D after layer 1, random +".*"\n {2}avg-pool after layer 1 +".*"/);
    const report = readFileSync(join(root, 'demo', 'report.html'), 'utf8');
    expect(text).toContain(`Report: ${join(root, 'demo', 'report.html')}`);
    expect(report).toMatch(/^<!DOCTYPE html>/i);
    expect(report).toContain('</html>');
    for (const label of ['baseline (post-ViT 16x)', 'D after layer 1, reuse', 'D after layer 1, random', 'avg-pool after layer 1']) expect(report).toContain(label);
    expect(report).toContain('<svg');
    expect(existsSync(join(root, 'demo', 'report.png'))).toBe(true);
    for (const name of ['baseline', 'reuse-d', 'random-d', 'avg-pool']) {
      expect(existsSync(join(root, 'demo', name, 'model.safetensors')), name).toBe(true);
      const m = await loadModel({ weights: join(root, 'demo', name), device: 'wasm' });
      expect(m.config.insert_layer_id).toBe(name === 'baseline' ? null : 1);
    }
  }, 120_000);

  it('names a bad flag', async () => {
    await expect(startCommand({ steps: '0', device: 'wasm', out: join(root, 'x') })).rejects.toThrow("--steps: must be an integer >= 1, got '0'");
    await expect(startCommand({ weights: join(root, 'pre'), insertLayer: '9', device: 'wasm', out: join(root, 'x') })).rejects.toThrow('--insert-layer: 9 is past');
  });
});
