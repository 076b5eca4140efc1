import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { exportCommand } from '../../cli/data.js';
import { CONFIGS } from '../../llava-uhd/config.js';
import { loadConversations } from '../../llava-uhd/data/jsonl.js';
import { loadDatasets } from '../../llava-uhd/datasets.js';
import { encodePngBytes, type RgbImage } from '../../llava-uhd/image.js';
import { readVlmevalTsv } from '../../llava-uhd/eval/vlmeval-tsv.js';
import { tokenizerFor } from '../../llava-uhd/load.js';
import { LlavaUHD } from '../../llava-uhd/model.js';
import { encodeSample, train, type Dataset, type Sample } from '../../llava-uhd/train.js';
import { manualSeed } from '../../tensor/index.js';

const dir = mkdtempSync(join(tmpdir(), 'uhd-conv-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const img = (w: number, h: number, v: number): RgbImage => ({ width: w, height: h, data: new Uint8Array(w * h * 3).fill(v) });
writeFileSync(join(dir, 'a.png'), encodePngBytes(img(112, 112, 10)));
writeFileSync(join(dir, 'b.png'), encodePngBytes(img(224, 112, 200)));
const file = (name: string, text: string) => {
  writeFileSync(join(dir, name), text);
  return join(dir, name);
};
const jsonl = (name: string, recs: unknown[]) => file(name, recs.map((r) => JSON.stringify(r)).join('\n') + '\n');

describe('data files of every format training and evaluation read', () => {
  it("LLaVA's .json array (the file that loaded 0 records before)", async () => {
    const p = file('llava.json', JSON.stringify([
      { id: '1', image: 'a.png', conversations: [{ from: 'human', value: '<image>\nWhat?' }, { from: 'gpt', value: 'dark' }] },
      { id: '2', image: 'b.png', conversations: [{ from: 'human', value: 'And this?' }, { from: 'gpt', value: 'light' }] },
    ]));
    const d = await loadConversations(p);
    expect(d.records.map((r) => [r.line, r.answer, r.images.length, r.imagePaths[0]])).toEqual([[1, 'dark', 1, join(dir, 'a.png')], [2, 'light', 1, join(dir, 'b.png')]]);
    const ds = await loadDatasets({ kind: 'jsonl', train: p });
    expect(ds.train.size).toBe(2);
  });

  it('text-only samples, lists of images, and MiniCPM-V\'s {"<image_00>": path} with the keys in the text', async () => {
    const p = jsonl('mixed.jsonl', [
      { conversations: [{ role: 'user', content: 'Say hi.' }, { role: 'assistant', content: 'hi' }] },
      { image: ['a.png', 'b.png'], conversations: [{ from: 'human', value: '<image> vs <image>?' }, { from: 'gpt', value: 'b' }] },
      { image: { '<image_00>': 'a.png', '<image_01>': 'b.png' }, conversations: [{ role: 'user', content: 'Compare <image_01> and <image_00>.' }, { role: 'assistant', content: 'same size?' }] },
    ]);
    const [text, list, minicpm] = (await loadConversations(p)).records;
    expect(text.images).toEqual([]);
    expect(list.imagePaths.map((x) => x.slice(-5))).toEqual(['a.png', 'b.png']);
    // the images follow the text's order of mention
    expect(minicpm.imagePaths.map((x) => x.slice(-5))).toEqual(['b.png', 'a.png']);
    expect(minicpm.turns[0].content).toBe('Compare <image> and <image>.');
  });

  it('bad records are named by line (JSONL) or position (JSON)', async () => {
    const bad = async (recs: unknown[], re: RegExp) => {
      await expect(loadConversations(jsonl('bad.jsonl', recs))).rejects.toThrow(re);
    };
    const conv = [{ from: 'human', value: 'Q' }, { from: 'gpt', value: 'A' }];
    await bad([{ conversations: [{ from: 'human', value: '<image>\nQ' }, { from: 'gpt', value: 'A' }] }], /bad\.jsonl:1: 1 <image> placeholders but 0 images/);
    await bad([{ image: ['a.png', 'b.png'], conversations: [{ from: 'human', value: '<image> Q' }, { from: 'gpt', value: 'A' }] }], /1 <image> placeholders but 2 images/);
    await bad([{ image: { '<image_00>': 'a.png', '<image_01>': 'b.png' }, conversations: [{ role: 'user', content: 'see <image_00>' }, { role: 'assistant', content: 'x' }] }], /names <image_01>, which no turn mentions/);
    await bad([{ image: { pic: 'a.png' }, conversations: conv }], /"image" key "pic" is not a placeholder/);
    await bad([{ image: 3, conversations: conv }], /"image" must be a path, a list of paths or an object/);
    await bad([{ image: 'nowhere.png', conversations: conv }], /image file not found: .*nowhere\.png/);
    await expect(loadConversations(file('bad.json', JSON.stringify([{ conversations: conv }, { conversations: [] }])))).rejects.toThrow(/bad\.json:2: record 2: "conversations" must be a non-empty array/);
    await expect(loadConversations(file('obj.json', '{"a": 1}'))).rejects.toThrow(/must hold an array of records/);
    const skipped = await loadConversations(jsonl('some.jsonl', [{ conversations: conv }, { image: 7, conversations: conv }]), { onBad: 'skip' });
    expect([skipped.records.length, skipped.problems.map((x) => x.line)]).toEqual([1, [2]]);
  });

  it('a sample of several images encodes every view in order; a text-only one none; both train', async () => {
    manualSeed(0);
    const model = new LlavaUHD(structuredClone(CONFIGS.tiny));
    const tok = await tokenizerFor(CONFIGS.tiny);
    const two: Sample = { images: [img(112, 112, 10), img(224, 112, 200)], turns: [{ role: 'user', content: '<image><image>Which?' }, { role: 'assistant', content: 'red' }], answer: 'red', type: 't' };
    const none: Sample = { images: [], turns: [{ role: 'user', content: 'Colour?' }, { role: 'assistant', content: 'blue' }], answer: 'blue', type: 't' };
    const a = encodeSample(model, tok, two, 9);
    const views = a.pixels.reduce((n, v) => n + (v.width / 14) * (v.height / 14) / 16, 0);
    expect(a.layout.unkPositions.length).toBe(views);
    expect(a.pixels.length).toBeGreaterThan(2);
    const b = encodeSample(model, tok, none, 9);
    expect([b.pixels.length, b.layout.unkPositions.length]).toEqual([0, 0]);
    const data: Dataset = { size: 2, get: (i) => (i === 0 ? two : none) };
    const r = await train(model, tok, { name: 't', seed: 0, stages: [{ name: 's', trainable: ['llm', 'connector'], lr: 1e-3, min_lr: 1e-4, warmup_steps: 0, steps: 1, max_slices: 2, batch_size: 2 }] }, { device: 'cpu', outDir: join(dir, 'run'), train: data });
    expect(Number.isFinite(r.finalLoss[0])).toBe(true);
  });
});

describe('uhd data export --format vlmeval', () => {
  it('writes a benchmark TSV that the evaluation reads: options are the answer classes, answer the letter', async () => {
    const out = join(dir, 'syn.tsv');
    await exportCommand({ out, format: 'vlmeval', n: '5', types: 'count,read' });
    const ds = await readVlmevalTsv(out);
    expect(ds.rows.map((r) => r.index)).toEqual(['0', '1', '2', '3', '4']);
    // count has 4 classes, read 10: ten option columns, a count row leaves E..J empty
    expect(ds.columns).toEqual(['index', 'image', 'question', ...'ABCDEFGHIJ'.split(''), 'answer', 'category']);
    for (const r of ds.rows) {
      expect(r.options.length).toBe(r.values.category === 'count' ? 4 : 10);
      expect(r.options.find((o) => o.letter === r.values.answer)).toBeDefined();
    }
    await expect(exportCommand({ out: join(dir, 'x.jsonl'), format: 'vlmeval' })).rejects.toThrow(/--out: with --format vlmeval, the \.tsv file/);
    await expect(exportCommand({ out, format: 'csv' })).rejects.toThrow(/--format: expected jsonl or vlmeval/);
  });
});
