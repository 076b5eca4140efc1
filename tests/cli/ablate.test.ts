/**
 * `uhd ablate` in-process: a tiny post-ViT baseline (0 steps) saved as a checkpoint folder, a 2x2
 * grid (two variants x two insertion layers) of 2 fine-tune steps each; the table's rows and
 * columns and the JSON.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ablateCommand, ablationGrid } from '../../cli/ablate.js';
import { saveCheckpointFolder } from '../../llava-uhd/checkpoint-folder.js';
import { CONFIGS } from '../../llava-uhd/config.js';
import { LlavaUHD } from '../../llava-uhd/model.js';
import * as uhd from '../../tensor/index.js';

const dir = mkdtempSync(join(tmpdir(), 'uhd-ablate-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const recipe = {
  name: 'ablate-test',
  data: { kind: 'synthetic', preset: 'tiny', train: 16, val: 2, test: 2 },
  eval_every: 0,
  checkpoint_every: 0,
  seed: 0,
  stages: [{ name: 'finetune', trainable: ['vit', 'compressor', 'connector', 'llm'], lr: 1e-3, min_lr: 1e-4, warmup_steps: 1, steps: 50, max_slices: 1, batch_size: 2 }],
};

describe('uhd ablate', () => {
  it('runs a 2x2 grid from a saved baseline and writes the table and the JSON', async () => {
    uhd.manualSeed(0);
    const base = new LlavaUHD(structuredClone(CONFIGS['tiny-baseline']));
    const from = join(dir, 'baseline');
    await saveCheckpointFolder(base, from);
    const recipePath = join(dir, 'recipe.json');
    writeFileSync(recipePath, JSON.stringify(recipe));
    const out = join(dir, 'out');
    const { markdown } = await ablateCommand({ from, variants: 'avg-pool,win-attn-reused', insertLayers: '1,3', init: 'reuse', recipe: recipePath, steps: '2', device: 'cpu', out });
    const labels = ['avg-pool-k1-random', 'avg-pool-k3-random', 'win-attn-reused-k1-reuse', 'win-attn-reused-k3-reuse'];
    const json = JSON.parse(readFileSync(join(out, 'ablation.json'), 'utf8'));
    expect(json.steps).toEqual([2]);
    expect(json.rows.map((r: { label: string }) => r.label)).toEqual(labels);
    for (const r of json.rows) {
      expect(r.accuracy).toBeGreaterThanOrEqual(0);
      expect(r.accuracy).toBeLessThanOrEqual(1);
      expect(r.visualTokens).toBeGreaterThan(0);
      expect(r.gmacs).toBeGreaterThan(0);
      expect(r.step0Cosine).toBeGreaterThan(-1);
      expect(r.step0Cosine).toBeLessThanOrEqual(1 + 1e-6);
      expect(Number.isFinite(r.step0Loss)).toBe(true);
      expect(r.trainSeconds).toBeGreaterThan(0);
      expect(Number.isFinite(r.finalLoss)).toBe(true);
    }
    // the later insertion runs more layers at full resolution: more MACs
    expect(json.rows[3].gmacs).toBeGreaterThan(json.rows[2].gmacs);
    const lines = markdown.trim().split('\n');
    expect(lines).toHaveLength(2 + labels.length);
    const head = lines[0].split('|').map((s) => s.trim()).filter(Boolean);
    expect(head.slice(0, 5)).toEqual(['model', 'variant', 'k', 'init', 'accuracy']);
    expect(head.slice(-6)).toEqual(['visual tokens', 'encode GMACs', 'encode ms', 'step-0 cosine (min)', 'step-0 loss', 'train s']);
    for (const [i, l] of labels.entries()) expect(lines[2 + i].startsWith(`| ${l} |`)).toBe(true);
    expect(readFileSync(join(out, 'ablation.md'), 'utf8')).toBe(markdown);
  }, 120_000);

  it('names a bad flag value', async () => {
    await expect(ablateCommand({ from: dir, variants: 'max-pool' })).rejects.toThrow(/--variants: 'max-pool' is not a compressor; allowed: baseline, avg-pool/);
    await expect(ablateCommand({ from: dir, init: 'zeros' })).rejects.toThrow(/--init: must be reuse or random, got 'zeros'/);
    await expect(ablateCommand({ from: dir, insertLayers: '1,x' })).rejects.toThrow(/--insert-layers: must be an integer >= 0, got 'x'/);
    await expect(ablateCommand({ from: join(dir, 'nowhere') })).rejects.toThrow(/--from: .*nowhere does not exist/);
    await expect(ablateCommand({ from: dir, device: 'gpu' })).rejects.toThrow(/--device: 'gpu'/);
  });

  it('the grid runs a variant without reuse-init once per layer', () => {
    expect(ablationGrid(['baseline', 'avg-pool', 'reused-mlp'], [2], ['reuse', 'random']).map((s) => s.label)).toEqual(['baseline', 'avg-pool-k2-random', 'reused-mlp-k2-reuse', 'reused-mlp-k2-random']);
  });
});
