/** Training data: the bitmap font, the synthetic detail-needing Q/A generator, the JSONL loader, `uhd data`. */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { previewData } from '../../cli/data.js';
import { encodePngBytes, resizeBicubic, type RgbImage } from '../../llava-uhd/image.js';
import { sliceImage, type Size } from '../../llava-uhd/slicing.js';
import type { Dataset } from '../../llava-uhd/train.js';
import { FONT_CHARS, GLYPH_HEIGHT, GLYPH_WIDTH, drawText, glyph, textSize } from '../../llava-uhd/data/font.js';
import { formatProblem, loadJsonl, writeJsonl } from '../../llava-uhd/data/jsonl.js';
import {
  ANSWERS, COUNT_MARKS, DETAIL_TYPES, PALETTE, PRESETS, chanceBaseline, exactSliceSizes, generateSample, imageSizes, majorityBaseline, makeSplit,
  questionOf, complement, STRIPES_GREY, renderScene, sampleSpec, shapeBounds, syntheticOptions, type Role, type Scene, type Shape,
} from '../../llava-uhd/data/synthetic.js';

const tiny = PRESETS.tiny;
const blank = (width: number, height: number, v = 255): RgbImage => ({ width, height, data: new Uint8Array(width * height * 3).fill(v) });
const sameBytes = (a: RgbImage, b: RgbImage) => a.width === b.width && a.height === b.height && Buffer.compare(Buffer.from(a.data), Buffer.from(b.data)) === 0;

describe('bitmap font', () => {
  it('has 0-9, A-Z and space, every glyph distinct; digits differ pairwise in at least 2 cells', () => {
    expect(FONT_CHARS.length).toBe(37);
    const keys = FONT_CHARS.map((c) => glyph(c).join(''));
    expect(new Set(keys).size).toBe(FONT_CHARS.length);
    for (let a = 0; a < 10; a++) {
      for (let b = a + 1; b < 10; b++) {
        const ga = glyph(String(a));
        const gb = glyph(String(b));
        expect(ga.reduce((n, v, i) => n + (v !== gb[i] ? 1 : 0), 0), `${a} vs ${b}`).toBeGreaterThanOrEqual(2);
      }
    }
  });

  it('drawText paints each ink cell as a scale x scale block, one blank column between characters', () => {
    const img = blank(40, 20);
    drawText(img, '1A', 3, 2, 2, [10, 20, 30]);
    const size = textSize('1A', 2);
    expect(size).toEqual({ width: (2 * GLYPH_WIDTH + 1) * 2, height: GLYPH_HEIGHT * 2 });
    for (let y = 0; y < 20; y++) {
      for (let x = 0; x < 40; x++) {
        const gx = Math.floor((x - 3) / 2);
        const gy = Math.floor((y - 2) / 2);
        const ch = gx >= 0 && gx < 5 ? '1' : gx >= 6 && gx < 11 ? 'A' : null;
        const ink = ch !== null && gy >= 0 && gy < GLYPH_HEIGHT && glyph(ch)[gy * GLYPH_WIDTH + (gx % 6)] === 1;
        const o = (y * 40 + x) * 3;
        expect([...img.data.subarray(o, o + 3)], `(${x}, ${y})`).toEqual(ink ? [10, 20, 30] : [255, 255, 255]);
      }
    }
  });

  it('digits drawn at scale 1 give ten different images; clipping at the edge; unknown characters throw', () => {
    const drawn = Array.from({ length: 10 }, (_, d) => {
      const img = blank(7, 9);
      drawText(img, String(d), 1, 1, 1, [0, 0, 0]);
      return Buffer.from(img.data).toString('hex');
    });
    expect(new Set(drawn).size).toBe(10);
    const edge = blank(4, 4);
    expect(() => drawText(edge, '8', -2, -3, 1, [0, 0, 0])).not.toThrow();
    expect(() => drawText(blank(8, 8), 'a', 0, 0, 1, [0, 0, 0])).toThrow(/no glyph for "a"/);
    expect(() => drawText(blank(8, 8), '1', 0, 0, 0, [0, 0, 0])).toThrow(/scale/);
  });
});

describe('synthetic samples', () => {
  it('the same (index, split) gives identical pixels, question and answer', () => {
    for (const i of [0, 1, 2, 17]) {
      const a = generateSample(i, 'train', tiny);
      const b = generateSample(i, 'train', tiny);
      expect(sameBytes(a.image, b.image)).toBe(true);
      expect([a.type, a.question, a.answer, a.turns]).toEqual([b.type, b.question, b.answer, b.turns]);
    }
  });

  it('train, val and test differ, and so does another seed', () => {
    const questions = (split: 'train' | 'val' | 'test', o = tiny) => Array.from({ length: 30 }, (_, i) => questionOf(i, split, o).answer).join(',');
    expect(new Set([questions('train'), questions('val'), questions('test'), questions('train', syntheticOptions('tiny', { seed: 1 }))]).size).toBe(4);
    for (const i of [0, 1, 2]) {
      const [tr, va, te] = (['train', 'val', 'test'] as const).map((s) => generateSample(i, s, tiny).image);
      expect(sameBytes(tr, va) || sameBytes(tr, te) || sameBytes(va, te)).toBe(false);
    }
  });

  it('answers are balanced: each type once per block of 3, each class once per block of its class count', () => {
    const split = makeSplit('train', 360, tiny);
    const counts = new Map<string, number>();
    for (const { type, answer } of split.questions()) counts.set(`${type}:${answer}`, (counts.get(`${type}:${answer}`) ?? 0) + 1);
    expect(tiny.types).toEqual(DETAIL_TYPES);
    for (const type of DETAIL_TYPES) for (const a of ANSWERS[type]) expect(counts.get(`${type}:${a}`), `${type} ${a}`).toBe(120 / ANSWERS[type].length);
    // Any prefix is within one of balanced.
    const odd = [...makeSplit('val', 100, tiny).questions()];
    for (const type of DETAIL_TYPES) {
      const ofType = odd.filter((q) => q.type === type);
      expect(Math.abs(ofType.length - 100 / 3)).toBeLessThanOrEqual(1);
      for (const a of ANSWERS[type]) expect(Math.abs(ofType.filter((q) => q.answer === a).length - ofType.length / ANSWERS[type].length)).toBeLessThanOrEqual(1);
    }
  });

  it('chance and majority baselines: 1/4, 1/4, 1/10 per type, 20% overall on a balanced split', () => {
    const train = [...makeSplit('train', 360, tiny).questions()];
    const chance = chanceBaseline(train);
    expect(chance.byType.map((b) => [b.type, b.accuracy])).toEqual([['count', 0.25], ['colour', 0.25], ['read', 0.1]]);
    expect(chance.overall).toBeCloseTo(0.2, 12);
    const majority = majorityBaseline(train);
    expect(majority.overall).toBeCloseTo(0.2, 12);
    expect(majority.byType.map((b) => b.answer)).toEqual(['1', 'red', '0']); // ties go to the first class
    const skewed = [...train, { type: 'count' as const, answer: '3' }];
    const test = [...makeSplit('test', 90, tiny).questions()];
    const onTest = majorityBaseline(skewed, test);
    expect(onTest.byType[0].answer).toBe('3');
    expect(onTest.byType[0].accuracy).toBeCloseTo(test.filter((q) => q.type === 'count' && q.answer === '3').length / 30, 12);
  });

  it('sizes: 13 tiny sizes from 112x336 to 336x336, each shrinking at least 2x per side in the thumbnail', () => {
    const sizes = imageSizes(tiny);
    expect(sizes.length).toBe(13);
    for (const { width, height } of sizes) {
      expect(width >= 112 && width <= 336 && height >= 112 && height <= 336 && width % 56 === 0 && height % 56 === 0).toBe(true);
      const t = sliceImage(width, height, tiny.slice).thumbnail;
      expect(Math.min(width / t.width, height / t.height)).toBeGreaterThanOrEqual(2);
    }
    expect(new Set(sizes.map((s) => (s.width / s.height).toFixed(2))).size).toBeGreaterThanOrEqual(8);
    const paper = sampleSpec(0, 'train', PRESETS.paper);
    expect(Math.min(paper.width, paper.height)).toBeGreaterThanOrEqual(448);
    expect(Math.max(paper.width, paper.height)).toBeLessThanOrEqual(1344);
    expect(() => imageSizes(syntheticOptions('tiny', { maxSide: 168 }))).toThrow(/no size in 112..168/);
    expect(() => sampleSpec(0, 'train', syntheticOptions('tiny', { detail: 0 }))).toThrow(/detail must be a positive integer/);
  });

  it('each answer is what the scene shows', () => {
    for (let i = 0; i < 60; i++) {
      const s = sampleSpec(i, 'test', tiny);
      const role = (r: Role) => s.scene.shapes.filter((x) => x.role === r);
      if (s.type === 'count') {
        expect(role('dot').length).toBe(Number(s.answer));
        expect(role('dot').length + role('ghost').length).toBe(COUNT_MARKS);
      } else if (s.type === 'colour') {
        const [target] = role('target');
        expect(target.kind === 'rect' && target.colour).toEqual(PALETTE[s.answer]);
        const ghosts = role('ghost').map((g) => (g.kind === 'smudge' ? g.colour : null));
        expect(new Set([target.kind === 'rect' ? target.colour : null, ...ghosts]).size).toBe(4); // all four colours as smudges
      } else {
        const [digit] = role('digit');
        expect(digit.kind === 'text' && digit.text).toBe(s.answer);
      }
      expect(generateSample(i, 'test', tiny).turns).toEqual([{ role: 'user', content: `<image>\n${s.question}` }, { role: 'assistant', content: s.answer }]);
    }
  });

  it('a split is lazy, indexable and fits the trainer Dataset', () => {
    const split = makeSplit('val', 1_000_000, tiny);
    const ds: Dataset = split;
    expect(ds.size).toBe(1_000_000);
    const s = ds.get(999_999);
    expect(s.images).toHaveLength(1);
    expect(s.images[0].data.length).toBe(s.images[0].width * s.images[0].height * 3);
    expect(() => split.get(1_000_000)).toThrow(/outside 0..999999/);
  });
});

// --- The detail survives in the slices but not in the thumbnail -----------------------------------

/** Largest channel difference between a and b inside the box [x0, x1) x [y0, y1). */
function peakDiff(a: RgbImage, b: RgbImage, x0: number, y0: number, x1: number, y1: number): number {
  let m = 0;
  for (let y = Math.max(0, y0); y < Math.min(a.height, y1); y++) {
    for (let x = Math.max(0, x0); x < Math.min(a.width, x1); x++) {
      for (let c = 0; c < 3; c++) m = Math.max(m, Math.abs(a.data[(y * a.width + x) * 3 + c] - b.data[(y * a.width + x) * 3 + c]));
    }
  }
  return m;
}

/**
 * What shape k adds to the image at a view's resolution: the scene rendered with and without it,
 * both resized to `view` (bicubic, as the slicing does), compared around where the shape lands.
 */
function contrastAt(scene: Scene, k: number, full: RgbImage, view: Size): number {
  const without = renderScene({ ...scene, shapes: scene.shapes.filter((_, j) => j !== k) });
  const sx = view.width / scene.width;
  const sy = view.height / scene.height;
  const b = shapeBounds(scene.shapes[k]);
  const a = resizeBicubic(full, view.width, view.height);
  const w = resizeBicubic(without, view.width, view.height);
  return peakDiff(a, w, Math.floor(b.x * sx) - 2, Math.floor(b.y * sy) - 2, Math.ceil((b.x + b.w) * sx) + 2, Math.ceil((b.y + b.h) * sy) + 2);
}

const median = (v: number[]) => [...v].sort((a, b) => a - b)[v.length >> 1];

/** Accuracy of the best single threshold that calls a contrast >= t a mark and < t a ghost. */
function bestThreshold(marks: number[], ghosts: number[]): number {
  let best = 0;
  for (const t of [...marks, ...ghosts, Infinity]) {
    const right = marks.filter((v) => v >= t).length + ghosts.filter((v) => v < t).length;
    best = Math.max(best, right / (marks.length + ghosts.length));
  }
  return best;
}

describe('the detail needs the slices', () => {
  /** Per type, real marks and ghosts: contrast (grey levels) in the slices (the refined image) and in the thumbnail. */
  const measured = new Map<string, { slice: number[]; thumb: number[] }>();
  beforeAll(() => {
    for (let i = 0; i < 36; i++) {
      const s = sampleSpec(i, 'train', tiny);
      if (s.type === 'read') continue;
      const plan = sliceImage(s.width, s.height, tiny.slice);
      const full = renderScene(s.scene);
      s.scene.shapes.forEach((shape: Shape, k) => {
        if (shape.role !== 'dot' && shape.role !== 'ghost' && shape.role !== 'target') return;
        const key = `${s.type}:${shape.role === 'ghost' ? 'ghost' : 'mark'}`;
        const m = measured.get(key) ?? { slice: [], thumb: [] };
        m.slice.push(contrastAt(s.scene, k, full, plan.refined ?? plan.thumbnail));
        m.thumb.push(contrastAt(s.scene, k, full, plan.thumbnail));
        measured.set(key, m);
      });
    }
  });

  for (const type of ['count', 'colour'] as const) {
    const what = type === 'count' ? 'dots keep' : 'the small square keeps';
    it(`${type}: ${what} >= 100 grey levels in the slices, under half in the thumbnail, where a contrast threshold cannot tell them from ghosts`, () => {
      const mark = measured.get(`${type}:mark`)!;
      const ghost = measured.get(`${type}:ghost`)!;
      expect(mark.slice.length).toBeGreaterThanOrEqual(8);
      // Slices (full resolution): every real mark is strong, about twice a ghost, and a threshold separates them.
      expect(Math.min(...mark.slice)).toBeGreaterThanOrEqual(100);
      expect(median(mark.slice)).toBeGreaterThanOrEqual(1.5 * median(ghost.slice));
      expect(bestThreshold(mark.slice, ghost.slice)).toBeGreaterThanOrEqual(0.93);
      // Thumbnail: the typical mark keeps under half its contrast, and the best threshold is barely
      // better than always guessing the larger group (the smudges look alike).
      expect(median(mark.thumb)).toBeLessThan(0.5 * median(mark.slice));
      const guess = Math.max(mark.thumb.length, ghost.thumb.length) / (mark.thumb.length + ghost.thumb.length);
      expect(bestThreshold(mark.thumb, ghost.thumb)).toBeLessThan(guess + 0.15);
    });
  }

  it('read: every pair of digits differs by >= 150 grey levels somewhere in the slices; in the thumbnail the closest pair by under a quarter of that', () => {
    let checked = 0;
    for (let i = 0; checked < 3; i++) {
      const s = sampleSpec(i, 'train', tiny);
      if (s.type !== 'read') continue;
      checked++;
      const plan = sliceImage(s.width, s.height, tiny.slice);
      const views = [plan.refined ?? plan.thumbnail, plan.thumbnail].map((size) =>
        ANSWERS.read.map((d) => {
          const img = renderScene({ ...s.scene, shapes: s.scene.shapes.map((x) => (x.role === 'digit' && x.kind === 'text' ? { ...x, text: d } : x)) });
          return resizeBicubic(img, size.width, size.height);
        }),
      );
      const closest = views.map((imgs) => {
        let m = Infinity;
        for (let a = 0; a < 10; a++) for (let b = a + 1; b < 10; b++) m = Math.min(m, peakDiff(imgs[a], imgs[b], 0, 0, imgs[a].width, imgs[a].height));
        return m;
      });
      expect(closest[0], `sample ${i}, slices`).toBeGreaterThanOrEqual(150);
      expect(closest[1], `sample ${i}, thumbnail`).toBeLessThan(0.25 * closest[0]);
    }
  });
});

describe('stripes: the thumbnail is blank, the slices show the stripes', () => {
  const stripes = syntheticOptions('tiny', { types: ['stripes'] });
  /** Mean colour of a box of `img`, per channel. */
  const meanIn = (img: RgbImage, x0: number, y0: number, x1: number, y1: number) => {
    const m = [0, 0, 0];
    let n = 0;
    for (let y = y0; y < y1; y++) for (let x = x0; x < x1; x++, n++) for (let c = 0; c < 3; c++) m[c] += img.data[(y * img.width + x) * 3 + c];
    return m.map((v) => v / n);
  };
  /** Mean absolute difference between vertically adjacent pixels in a box: what 1 px rows add. */
  const rowContrast = (img: RgbImage, x0: number, y0: number, x1: number, y1: number) => {
    let sum = 0;
    let n = 0;
    for (let y = y0; y + 1 < y1; y++) {
      for (let x = x0; x < x1; x++, n++) for (let c = 0; c < 3; c++) sum += Math.abs(img.data[(y * img.width + x) * 3 + c] - img.data[((y + 1) * img.width + x) * 3 + c]) / 3;
    }
    return sum / n;
  };

  it('drawn only where slices are exact crops; one square striped in the answer colour (top row, even) and its complement', () => {
    expect(exactSliceSizes(tiny).map((s) => `${s.width}x${s.height}`)).toEqual(['112x336', '224x224', '224x336', '336x112', '336x224', '336x336']);
    for (let i = 0; i < 24; i++) {
      const s = sampleSpec(i, 'train', stripes);
      expect(s.type).toBe('stripes');
      expect(exactSliceSizes(stripes)).toContainEqual({ width: s.width, height: s.height });
      expect(s.scene.shapes.length).toBe(1);
      const [target] = s.scene.shapes;
      expect(target.kind === 'stripes' && [target.colour, target.other]).toEqual([PALETTE[s.answer], complement(PALETTE[s.answer])]);
      const b = shapeBounds(target);
      expect([b.x % 2, b.y % 2]).toEqual([0, 0]);
      expect(b.x >= 2 && b.y >= 2 && b.x + b.w <= s.width - 2 && b.y + b.h <= s.height - 2 && b.w === Math.min(s.width, s.height) / 2).toBe(true);
      const img = generateSample(i, 'train', stripes).image;
      expect([...img.data.subarray((b.y * s.width + b.x) * 3, (b.y * s.width + b.x) * 3 + 3)]).toEqual([...PALETTE[s.answer]]);
    }
  });

  it('full resolution: >= 100 grey levels between adjacent rows of the square; thumbnail: < 4% of that, and the square is the background grey', () => {
    for (let i = 0; i < 12; i++) {
      const s = sampleSpec(i, 'test', stripes);
      const full = renderScene(s.scene);
      const plan = sliceImage(s.width, s.height, tiny.slice);
      const thumb = resizeBicubic(full, plan.thumbnail.width, plan.thumbnail.height);
      const [kx, ky] = [s.width / plan.thumbnail.width, s.height / plan.thumbnail.height];
      const b = shapeBounds(s.scene.shapes[0]);
      const fullContrast = rowContrast(full, b.x, b.y, b.x + b.w, b.y + b.h);
      // the thumbnail box, shrunk by the bicubic support so that edges do not count
      const [x0, y0, x1, y1] = [Math.ceil(b.x / kx) + 2, Math.ceil(b.y / ky) + 2, Math.floor((b.x + b.w) / kx) - 2, Math.floor((b.y + b.h) / ky) - 2];
      expect(fullContrast, `sample ${i}`).toBeGreaterThanOrEqual(100);
      expect(rowContrast(thumb, x0, y0, x1, y1), `sample ${i}`).toBeLessThan(0.04 * fullContrast);
      for (const v of meanIn(thumb, x0, y0, x1, y1)) expect(Math.abs(v - STRIPES_GREY), `sample ${i}`).toBeLessThan(2);
    }
  });
});

// --- JSONL ----------------------------------------------------------------------------------------

describe('JSONL loader', () => {
  let dir = '';
  const img = generateSample(0, 'train', tiny).image;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'uhd-jsonl-'));
    await writeFile(join(dir, 'a.png'), encodePngBytes(img));
    await writeFile(join(dir, 'broken.png'), Buffer.from('\x89PNG\r\n\x1a\nthis is not a png'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });
  const human = (value: string) => ({ from: 'human', value });
  const gpt = (value: string) => ({ from: 'gpt', value });
  const line = (v: unknown) => JSON.stringify(v);

  it('loads both turn spellings, resolves images against the file, decodes them, keeps type and answer', async () => {
    const file = join(dir, 'good.jsonl');
    await writeFile(file, [
      line({ image: 'a.png', conversations: [human('<image>\nHow many dots are there?'), gpt('3')], type: 'count' }),
      '',
      line({ image: join(dir, 'a.png'), conversations: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Colour?' }, { role: 'assistant', content: 'red' }] }),
    ].join('\r\n') + '\n');
    const { records, problems } = await loadJsonl(file);
    expect(problems).toEqual([]);
    expect(records.map((r) => [r.line, r.answer, r.type, r.turns.length])).toEqual([[1, '3', 'count', 2], [3, 'red', 'jsonl', 3]]);
    expect(records[0].turns).toEqual([{ role: 'user', content: '<image>\nHow many dots are there?' }, { role: 'assistant', content: '3' }]);
    expect(records[0].imagePath).toBe(join(dir, 'a.png'));
    expect(sameBytes(records[0].image, img)).toBe(true);
  });

  const bad: [string, string, RegExp][] = [
    ['invalid JSON', '{"image": "a.png", "conversations": [', /invalid JSON/],
    ['not an object', '[1, 2]', /must be a JSON object/],
    ['no image field', line({ conversations: [human('Q?'), gpt('A')] }), /no "image"/],
    ['image not a string', line({ image: ['a.png'], conversations: [human('Q?'), gpt('A')] }), /"image" must be a non-empty string/],
    ['missing image file', line({ image: 'nowhere.png', conversations: [human('Q?'), gpt('A')] }), /image file not found: .*nowhere\.png/],
    ['undecodable image', line({ image: 'broken.png', conversations: [human('Q?'), gpt('A')] }), /cannot decode image: .*broken\.png/],
    ['conversations not an array', line({ image: 'a.png', conversations: 'Q? A' }), /"conversations" must be a non-empty array/],
    ['turn of the wrong shape', line({ image: 'a.png', conversations: [human('Q?'), { speaker: 'gpt', text: 'A' }] }), /conversations\[1\] needs "from" and "value"/],
    ['unknown speaker', line({ image: 'a.png', conversations: [{ from: 'bot', value: 'Q?' }, gpt('A')] }), /conversations\[0\]\.from must be/],
    ['value not a string', line({ image: 'a.png', conversations: [human('Q?'), { from: 'gpt', value: 3 }] }), /conversations\[1\]: the text .* must be a string/],
    ['no answer turn', line({ image: 'a.png', conversations: [human('<image>\nQ?')] }), /no answer turn/],
    ['empty answer', line({ image: 'a.png', conversations: [human('Q?'), gpt('  ')] }), /no answer turn/],
    ['two images', line({ image: 'a.png', conversations: [human('<image><image>Q?'), gpt('A')] }), /2 <image> placeholders/],
  ];

  it('skip: every kind of bad record is listed with its line number and reason; good ones still load', async () => {
    const file = join(dir, 'mixed.jsonl');
    const good = line({ image: 'a.png', conversations: [human('<image>\nQ?'), gpt('A')] });
    // Line 1 good, then each bad record followed by a blank line, then a good line.
    await writeFile(file, [good, ...bad.flatMap(([, text]) => [text, '']), good].join('\n'));
    const { records, problems } = await loadJsonl(file, { onBad: 'skip' });
    expect(records.map((r) => r.line)).toEqual([1, 2 + 2 * bad.length]);
    expect(problems.map((p) => p.line)).toEqual(bad.map((_, k) => 2 + 2 * k));
    problems.forEach((p, k) => expect(p.reason, bad[k][0]).toMatch(bad[k][2]));
    expect(formatProblem(file, problems[0])).toMatch(new RegExp(`mixed\\.jsonl:2: invalid JSON`));
  });

  it('reject (the default): throws on the first bad record, naming file, line and reason', async () => {
    for (const [what, text, reason] of bad) {
      const file = join(dir, 'one-bad.jsonl');
      await writeFile(file, [line({ image: 'a.png', conversations: [human('Q?'), gpt('A')] }), text].join('\n'));
      await expect(loadJsonl(file, { onBad: 'reject' }), what).rejects.toThrow(new RegExp(`one-bad\\.jsonl:2: .*${reason.source}`));
      if (what === 'no answer turn') await expect(loadJsonl(file)).rejects.toThrow(/:2: no answer turn/);
    }
    await expect(loadJsonl(join(dir, 'absent.jsonl'))).rejects.toThrow(/cannot read/);
  });

  it('export then load round-trips images, turns and types', async () => {
    const samples = Array.from({ length: 4 }, (_, i) => generateSample(i, 'val', tiny));
    const out = join(dir, 'export');
    const { path, count } = await writeJsonl(out, samples);
    expect(count).toBe(4);
    const first = JSON.parse((await readFile(path, 'utf8')).split('\n')[0]) as { image: string; conversations: { from: string }[] };
    expect(first.image).toBe('images/00000.png');
    expect(first.conversations.map((c) => c.from)).toEqual(['human', 'gpt']);
    const { records, problems } = await loadJsonl(path);
    expect(problems).toEqual([]);
    records.forEach((r, i) => {
      expect(sameBytes(r.image, samples[i].image)).toBe(true);
      expect(r.turns).toEqual(samples[i].turns);
      expect([r.answer, r.type]).toEqual([samples[i].answer, samples[i].type]);
    });
  });

  it('uhd data preview writes PNGs, thumbnails and a listing', async () => {
    const out = join(dir, 'preview');
    const { entries } = await previewData({ out, n: '3', split: 'test' });
    expect(entries.map((e) => e.index)).toEqual([0, 1, 2]);
    const listing = JSON.parse(await readFile(join(out, 'samples.json'), 'utf8')) as { entries: { file: string; answer: string }[] };
    expect(listing.entries.map((e) => e.answer)).toEqual([0, 1, 2].map((i) => questionOf(i, 'test', tiny).answer));
    for (const e of entries) {
      expect((await readFile(join(out, e.file))).subarray(1, 4).toString()).toBe('PNG');
      expect((await readFile(join(out, e.thumbnail!))).length).toBeGreaterThan(0);
    }
    await expect(previewData({ out, n: '0' })).rejects.toThrow(/--n: must be an integer >= 1/);
    await expect(previewData({ out, preset: 'huge' })).rejects.toThrow(/--preset/);
  });
});
