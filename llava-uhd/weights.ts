/**
 * Weights in the release's layout (`vpm.`, `vit_merger.`, `resampler.`, `llm.` prefixes, Hugging
 * Face Qwen3 names under `llm.`), from one safetensors file or a sharded checkpoint (a folder or
 * its model.safetensors.index.json). Tensors stream in one at a time (bf16/f16 converted to
 * float32 on load) and are copied into the model's own tensors, so a large checkpoint never sits
 * in memory twice. Strict by default, with a report of missing, unexpected and mismatched keys.
 */
import { stat } from 'node:fs/promises';
import * as ag from '../autograd/index.js';
import type { LoadReport, Module } from '../nn/index.js';
import { saveSafetensors, streamSafetensors, streamShardedSafetensors } from '../nn/safetensors.js';
import { assign } from '../tensor/index.js';
import { fmt } from '../tensor/shape.js';

async function isShardedSource(path: string): Promise<boolean> {
  if (path.endsWith('.index.json')) return true;
  try {
    return (await stat(path)).isDirectory();
  } catch {
    throw new Error(`weights: ${path} does not exist`);
  }
}

/** Loads weights into `model` in place. With strict (default), any problem throws, listing them all. */
export async function loadWeights(model: Module, path: string, opts: { strict?: boolean } = {}): Promise<LoadReport> {
  const strict = opts.strict ?? true;
  const own = model.stateDict();
  const device = own.values().next().value?.device ?? 'cpu';
  const seen = new Set<string>();
  const report: LoadReport = { missing: [], unexpected: [], mismatched: [] };
  const stream = (await isShardedSource(path)) ? streamShardedSafetensors(path, { device }) : streamSafetensors(path, { device });
  for await (const [name, t] of stream) {
    const mine = own.get(name);
    if (!mine) report.unexpected.push(name);
    else if (mine.rank !== t.rank || mine.shape.some((s, i) => s !== t.shape[i])) {
      report.mismatched.push(`${name}: expected ${fmt(mine.shape)}, got ${fmt(t.shape)}`);
    } else {
      ag.noGrad(() => {
        const src = t.dtype === mine.dtype ? t : t.cast(mine.dtype);
        assign(mine, src);
        if (src !== t) src.dispose();
      });
      seen.add(name);
    }
    t.dispose();
  }
  report.missing = [...own.keys()].filter((k) => !seen.has(k) && !report.mismatched.some((m) => m.startsWith(`${k}:`)));
  const problems = [
    ...report.missing.map((k) => `missing ${k}`),
    ...report.unexpected.map((k) => `unexpected ${k}`),
    ...report.mismatched.map((k) => `shape mismatch ${k}`),
  ];
  if (strict && problems.length) {
    const shown = problems.slice(0, 20);
    const more = problems.length > 20 ? `\n  ... and ${problems.length - 20} more` : '';
    throw new Error(`weights: ${path}: ${problems.length} problem(s):\n  ${shown.join('\n  ')}${more}`);
  }
  return report;
}

/** Saves the model's weights in the release layout, with the config as metadata. */
export async function saveWeights(model: Module, path: string, config?: unknown): Promise<void> {
  await saveSafetensors(path, model.stateDict(), { metadata: config === undefined ? {} : { config: JSON.stringify(config) } });
}
