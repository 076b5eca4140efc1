import { describe, expect, it } from 'vitest';
import { loadDatasets, validateData, type DataSpec } from '../../llava-uhd/datasets.js';

describe('data specs', () => {
  it('bad fields are named', () => {
    expect(() => validateData(undefined, 'r.json')).toThrow('r.json: data is missing (synthetic or jsonl)');
    expect(() => validateData({ kind: 'pictures' } as unknown as DataSpec, 'r.json')).toThrow("r.json: data.kind must be 'synthetic', 'pretrain-mix' or 'jsonl', got 'pictures'");
    expect(() => validateData({ kind: 'synthetic', train: -1, val: 0, test: 0 }, 'r.json')).toThrow('r.json: data.train must be an integer >= 0');
    expect(() => validateData({ kind: 'synthetic', train: 1, val: 0, test: 0, preset: 'huge' as 'tiny' }, 'r.json')).toThrow("data.preset must be 'tiny' or 'paper', got 'huge'");
    expect(() => validateData({ kind: 'synthetic', train: 1, val: 0, test: 0, detail: 0 }, 'r.json')).toThrow('data.detail must be a positive integer (pixels)');
    expect(() => validateData({ kind: 'jsonl' } as unknown as DataSpec, 'r.json')).toThrow('data.train must be the path of a JSONL file');
  });

  it('synthetic specs become splits of the requested sizes, options passed through', async () => {
    const d = await loadDatasets({ kind: 'synthetic', train: 5, val: 2, test: 3, detail: 3, types: ['colour'] });
    expect([d.train.size, d.val?.size, d.test?.size]).toEqual([5, 2, 3]);
    const s = d.test!.get(0);
    expect(s.type).toBe('colour');
    expect((d.test as unknown as { options: { detail: number } }).options.detail).toBe(3);
  });
});
