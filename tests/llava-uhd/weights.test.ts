import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { saveSafetensors } from '../../nn/index.js';
import * as uhd from '../../tensor/index.js';
import { CONFIGS } from '../../llava-uhd/config.js';
import { LlavaUHD } from '../../llava-uhd/model.js';
import { loadWeights, saveWeights } from '../../llava-uhd/weights.js';

const dir = mkdtempSync(join(tmpdir(), 'uhd-weights-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const build = (seed: number, name = 'tiny') => {
  uhd.manualSeed(seed);
  return new LlavaUHD(structuredClone(CONFIGS[name]));
};

async function sameWeights(a: LlavaUHD, b: LlavaUHD): Promise<boolean> {
  const sb = b.stateDict();
  for (const [k, t] of a.stateDict()) {
    if (Array.from(await t.data()).join() !== Array.from(await sb.get(k)!.data()).join()) return false;
  }
  return true;
}

describe('weights in the release layout', () => {
  it('round-trip through one file', async () => {
    const a = build(1);
    const path = join(dir, 'one.safetensors');
    await saveWeights(a, path, a.config);
    const b = build(2);
    expect(await sameWeights(a, b)).toBe(false);
    const report = await loadWeights(b, path);
    expect(report).toEqual({ missing: [], unexpected: [], mismatched: [] });
    expect(await sameWeights(a, b)).toBe(true);
  });

  it('load from a sharded checkpoint (folder or index file), bf16 converted on load', async () => {
    const a = build(3);
    const sd = [...a.stateDict()];
    const half = Math.floor(sd.length / 2);
    const shards = [sd.slice(0, half), sd.slice(half)];
    const weightMap: Record<string, string> = {};
    for (const [i, part] of shards.entries()) {
      const file = `model-0000${i + 1}-of-00002.safetensors`;
      await saveSafetensors(join(dir, file), new Map(part), { dtype: 'BF16' });
      for (const [k] of part) weightMap[k] = file;
    }
    writeFileSync(join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
    const b = build(4);
    await loadWeights(b, dir);
    // bf16 keeps 8 bits of mantissa: relative error below 2^-8
    const sb = b.stateDict();
    for (const [k, t] of a.stateDict()) {
      const [x, y] = [await t.data(), await sb.get(k)!.data()];
      x.forEach((v, i) => expect(Math.abs(y[i] - v)).toBeLessThanOrEqual(Math.abs(v) * 2 ** -8 + 1e-30));
    }
    const c = build(5);
    await loadWeights(c, join(dir, 'model.safetensors.index.json'));
    expect(await sameWeights(b, c)).toBe(true);
  });

  it('strict loading lists missing, unexpected and mismatched keys; non-strict reports them', async () => {
    const base = build(6, 'tiny-baseline'); // no vit_merger, an extra connector round
    const path = join(dir, 'baseline.safetensors');
    await saveWeights(base, path);
    const withD = build(7);
    await expect(loadWeights(withD, path)).rejects.toThrow(/weights: .*baseline\.safetensors: \d+ problem\(s\):[\s\S]*missing vit_merger\.linear_1\.weight[\s\S]*unexpected resampler\.merges\.0\.linear_1\.weight/);
    const report = await loadWeights(withD, path, { strict: false });
    expect(report.missing.some((k) => k.startsWith('vit_merger.'))).toBe(true);
    expect(report.unexpected.some((k) => k.startsWith('resampler.merges.'))).toBe(true);
    await expect(loadWeights(withD, join(dir, 'nope.safetensors'))).rejects.toThrow('weights: ');
  });
});
