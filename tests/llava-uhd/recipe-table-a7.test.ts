/** recipes/llava-uhd-v4.json is the paper's Table A7; everything else in it is marked as ours. */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { resolveRecipe } from '../../cli/train.js';
import type { StageSpec } from '../../llava-uhd/train.js';

/** The paper's Table A7 (in-house data): trainable modules, LR peak -> min, batch; M = 9 in stages 2-4. */
const TABLE_A7 = [
  { trainable: ['compressor', 'connector'], lr: 1e-4, min_lr: 5e-5, batch_size: 32 },
  { trainable: ['vit'], lr: 1e-5, min_lr: 5e-6, batch_size: 6, max_slices: 9 },
  { trainable: ['vit', 'compressor', 'connector', 'llm'], lr: 5e-5, min_lr: 1e-5, batch_size: 6, max_slices: 9 },
  { trainable: ['vit', 'compressor', 'connector', 'llm'], lr: 1e-5, min_lr: 1e-6, batch_size: 9, max_slices: 9 },
];

describe('recipes/llava-uhd-v4.json', () => {
  const { recipe } = resolveRecipe('llava-uhd-v4');
  // the loader drops comment keys (`_...`), so the assumptions are read from the file itself
  const raw = JSON.parse(readFileSync(new URL('../../recipes/llava-uhd-v4.json', import.meta.url), 'utf8')) as { _assumptions: Record<string, string> };
  const assumptions = raw._assumptions;

  it('has the four stages of Table A7: what they train, their learning rates and batches', () => {
    expect(recipe.stages).toHaveLength(4);
    recipe.stages.forEach((s, i) => {
      const row = TABLE_A7[i];
      expect([...s.trainable].sort(), `stage ${i + 1} trainable`).toEqual([...row.trainable].sort());
      expect([s.lr, s.min_lr, s.batch_size], `stage ${i + 1}`).toEqual([row.lr, row.min_lr, row.batch_size]);
      if (row.max_slices !== undefined) expect(s.max_slices).toBe(row.max_slices);
    });
    // stage 2 trains the ViT at the table's rate: no scale may shrink it
    expect(recipe.stages[1].non_llm_lr_scale ?? 1).toBe(1);
  });

  it('marks every value that is not in the table as an assumption, and every assumption names a real field', () => {
    const fromTable = new Set(['name', 'trainable', 'lr', 'min_lr', 'batch_size']);
    recipe.stages.forEach((s, i) => {
      for (const key of Object.keys(s) as (keyof StageSpec)[]) {
        if (fromTable.has(key) || (key === 'max_slices' && TABLE_A7[i].max_slices !== undefined)) continue;
        expect(assumptions[`stages[*].${key}`] ?? assumptions[`stages[${i}].${key}`], `stages[${i}].${key} is ours: say so`).toBeTruthy();
      }
    });
    for (const key of Object.keys(recipe)) {
      if (['name', 'about', 'stages', '_assumptions'].includes(key)) continue;
      expect(assumptions[key], `${key} is ours: say so`).toBeTruthy();
    }
    for (const path of Object.keys(assumptions)) {
      const m = /^stages\[(\*|\d+)\]\.(\w+)$/.exec(path);
      if (!m) {
        expect(path === 'optimizer' || path in recipe, `${path} is a recipe field`).toBe(true);
        continue;
      }
      const stages = m[1] === '*' ? recipe.stages : [recipe.stages[Number(m[1])]];
      for (const s of stages) expect(s && m[2] in s, `${path} exists`).toBe(true);
    }
  });
});
