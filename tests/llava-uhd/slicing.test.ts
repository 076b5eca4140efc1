import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { SliceConfig } from '../../llava-uhd/config.js';
import { resizeBicubic, type RgbImage } from '../../llava-uhd/image.js';
import { align, bestResize, chooseGrid, logCorrectlyRounded, makeViews, roundHalfEven, sliceImage, type SlicePlan } from '../../llava-uhd/slicing.js';
import { PROP } from '../support.js';

const CFG: SliceConfig = { scale_resolution: 448, max_slice_nums: 9, align_unit: 56 };

/** Every view's size in the plan: the thumbnail, then one entry per slice. */
function viewSizes(plan: SlicePlan): { width: number; height: number }[] {
  const n = plan.grid ? plan.grid.cols * plan.grid.rows : 0;
  return [plan.thumbnail, ...Array.from({ length: n }, () => plan.slice!)];
}

/** Image sizes 1..4000 a side, half of them with extreme aspect ratios (up to 4000:1). */
const imageSize = fc.oneof(
  fc.tuple(fc.integer({ min: 1, max: 4000 }), fc.integer({ min: 1, max: 4000 })),
  fc.tuple(fc.integer({ min: 2000, max: 4000 }), fc.integer({ min: 1, max: 60 })),
  fc.tuple(fc.integer({ min: 1, max: 60 }), fc.integer({ min: 2000, max: 4000 })),
);
const maxSlices = fc.integer({ min: 1, max: 12 });

describe('rounding and alignment (Python semantics)', () => {
  it('roundHalfEven rounds halves to the even neighbour, as Python round()', () => {
    const cases: [number, number][] = [
      [0.5, 0], [1.5, 2], [2.5, 2], [3.5, 4], [-0.5, 0], [-1.5, -2], [-2.5, -2],
      [2.4999999999999996, 2], [2.5000000000000004, 3], [7, 7], [0.49999999999999994, 0],
    ];
    for (const [x, want] of cases) expect(roundHalfEven(x) === want, `roundHalfEven(${x}) = ${roundHalfEven(x)}, want ${want}`).toBe(true);
  });

  it('align uses banker\'s rounding and never goes below the unit', () => {
    expect(align(84, 56)).toBe(112); // 1.5 -> 2
    expect(align(140, 56)).toBe(112); // 2.5 -> 2
    expect(align(196, 56)).toBe(224); // 3.5 -> 4
    expect(align(252, 56)).toBe(224); // 4.5 -> 4
    expect(align(27, 56)).toBe(56); // 0.48 -> 0 -> at least u
    expect(align(1, 56)).toBe(56);
    expect(align(1920, 4)).toBe(1920);
    expect(align(1081, 2)).toBe(1080); // 540.5 -> 540
    expect(align(1083, 2)).toBe(1084); // 541.5 -> 542
  });

  it('bestResize keeps small images (only aligning) unless upscale, and fits large ones to about S²', () => {
    expect(bestResize(300, 200, false, CFG)).toEqual({ width: 280, height: 224 }); // 5.36 -> 5, 3.57 -> 4
    expect(bestResize(300, 200, true, CFG)).toEqual({ width: 560, height: 392 });
    expect(bestResize(1920, 1080, false, CFG)).toEqual({ width: 616, height: 336 });
    expect(bestResize(448, 448, false, CFG)).toEqual({ width: 448, height: 448 });
  });
});

describe('sliceImage: the spec\'s worked examples', () => {
  it('1920x1080 -> thumbnail 616x336, grid 4x2 of 448x448', () => {
    expect(sliceImage(1920, 1080, CFG)).toEqual({
      thumbnail: { width: 616, height: 336 },
      grid: { cols: 4, rows: 2 },
      slice: { width: 448, height: 448 },
      refined: { width: 1792, height: 896 },
    });
  });

  it('800x600 -> thumbnail 504x392, grid 2x2 of 504x392', () => {
    expect(sliceImage(800, 600, CFG)).toEqual({
      thumbnail: { width: 504, height: 392 },
      grid: { cols: 2, rows: 2 },
      slice: { width: 504, height: 392 },
      refined: { width: 1008, height: 784 },
    });
  });

  it('300x200 -> one view 560x392', () => {
    expect(sliceImage(300, 200, CFG)).toEqual({ thumbnail: { width: 560, height: 392 }, grid: null, slice: null, refined: null });
  });

  it('M = 1 (stage 1) gives a single upscaled view for any size', () => {
    const m1 = { ...CFG, max_slice_nums: 1 };
    expect(sliceImage(1920, 1080, m1)).toEqual({ thumbnail: { width: 616, height: 336 }, grid: null, slice: null, refined: null });
    fc.assert(
      fc.property(imageSize, ([W, H]) => {
        const plan = sliceImage(W, H, m1);
        expect(plan.grid).toBeNull();
        expect(plan.thumbnail).toEqual(bestResize(W, H, true, m1));
      }),
      { ...PROP, numRuns: 200 },
    );
  });

  it('rejects sizes and configs that are not positive integers, naming them', () => {
    expect(() => sliceImage(0, 10, CFG)).toThrow('slicing: image size must be positive integers, got 0x10');
    expect(() => sliceImage(10.5, 10, CFG)).toThrow(/got 10.5x10/);
    expect(() => sliceImage(10, 10, { ...CFG, max_slice_nums: 0 })).toThrow(/max_slice_nums must be a positive integer, got 0/);
  });
});

describe('sliceImage properties (sizes 1..4000, aspect ratios up to 4000:1)', () => {
  it('every view side is a multiple of 56 and >= 56, so every patch grid (side/14) divides by 4', () => {
    fc.assert(
      fc.property(imageSize, maxSlices, ([W, H], M) => {
        for (const v of viewSizes(sliceImage(W, H, { ...CFG, max_slice_nums: M }))) {
          for (const side of [v.width, v.height]) {
            expect(side % 56).toBe(0);
            expect(side).toBeGreaterThanOrEqual(56);
            expect((side / 14) % 4).toBe(0);
          }
        }
      }),
      { ...PROP, numRuns: 1000 },
    );
  });

  it('slice count is 0 or between 2 and max_slice_nums; one view exactly when ceil(W·H/S²) or M is 1', () => {
    fc.assert(
      fc.property(imageSize, maxSlices, ([W, H], M) => {
        const plan = sliceImage(W, H, { ...CFG, max_slice_nums: M });
        const count = plan.grid ? plan.grid.cols * plan.grid.rows : 0;
        expect(count).toBeLessThanOrEqual(M);
        expect(count === 0 || count >= 2).toBe(true);
        const single = Math.min(Math.ceil((W * H) / (448 * 448)), M) <= 1;
        expect(plan.grid === null).toBe(single);
        expect(plan.slice === null && plan.refined === null).toBe(single);
      }),
      { ...PROP, numRuns: 1000 },
    );
  });

  it('cols x rows slices of sw x sh tile the refined image exactly: refined = (sw·cols, sh·rows)', () => {
    fc.assert(
      fc.property(imageSize, maxSlices, ([W, H], M) => {
        const plan = sliceImage(W, H, { ...CFG, max_slice_nums: M });
        if (!plan.grid) return;
        expect(plan.refined).toEqual({ width: plan.slice!.width * plan.grid.cols, height: plan.slice!.height * plan.grid.rows });
        // and the slice size is the spec's bestResize of the grid-aligned cell
        const rw = Math.max(roundHalfEven(W / plan.grid.cols), 1) * plan.grid.cols;
        const rh = Math.max(roundHalfEven(H / plan.grid.rows), 1) * plan.grid.rows;
        expect(plan.slice).toEqual(bestResize(rw / plan.grid.cols, rh / plan.grid.rows, true, CFG));
      }),
      { ...PROP, numRuns: 1000 },
    );
  });

  it('the grid minimises |ln(W/H) − ln(cols/rows)| among the candidates (recomputed here, compared exactly)', () => {
    fc.assert(
      fc.property(imageSize, maxSlices, ([W, H], M) => {
        const cfg = { ...CFG, max_slice_nums: M };
        const m = Math.min(Math.ceil((W * H) / (448 * 448)), M);
        const grid = chooseGrid(W, H, cfg);
        if (m <= 1) {
          expect(grid).toBeNull();
          return;
        }
        // every (cols, rows) whose product is m-1, m or m+1, at least 2 and at most M
        const candidates: [number, number][] = [];
        for (let c = 2; c <= M; c++) {
          if (Math.abs(c - m) > 1) continue;
          for (let cols = 1; cols <= c; cols++) if (c % cols === 0) candidates.push([cols, c / cols]);
        }
        // |ln(W/H) − ln(a/b)| = ln(max(W·b, H·a) / min(W·b, H·a)): compare those fractions in
        // integers (cross-multiplied), so the exact minimum is known without rounding
        const frac = ([a, b]: [number, number]) => [Math.max(W * b, H * a), Math.min(W * b, H * a)];
        const less = (g: [number, number], h: [number, number]) => {
          const [gn, gd] = frac(g);
          const [hn, hd] = frac(h);
          return gn * hd < hn * gd; // products < 2^53: exact
        };
        const best = candidates.filter((g) => !candidates.some((h) => less(h, g)));
        expect(best).toContainEqual([grid!.cols, grid!.rows]);
        // when the minimum is unique it is the answer; exact ties are below
        if (best.length === 1) expect(grid).toEqual({ cols: best[0][0], rows: best[0][1] });
      }),
      { ...PROP, numRuns: 1000 },
    );
  });

  it('exact ties are resolved as the reference Python resolves them (float64 logs, first minimum wins)', () => {
    // [W, H, M, Python's (cols, rows)]; each ties two grids exactly (W/H = √(g1·g2))
    const cases: [number, number, number, [number, number]][] = [
      [449, 449, 9, [1, 2]], // 1x2 vs 2x1: ln(1/2) = −ln 2 exactly, the first wins
      [1268, 634, 5, [2, 2]], // 2x2 vs 4x1
      [634, 1902, 7, [1, 6]], // 1x6 vs 2x3
      [1186, 1186, 8, [2, 4]], // 2x4 vs 4x2
      [1002, 1002, 9, [3, 2]], // 2x3 vs 3x2: ln(2/3) rounds to a hair more than ln(3/2), 3x2 wins
      [1098, 1098, 9, [3, 2]],
      [1902, 634, 7, [6, 1]], // 3x2 vs 6x1: decided by the last bit of ln 3 (V8's Math.log differs)
      [2028, 676, 7, [6, 1]],
      [2536, 634, 9, [8, 1]], // 4x2 vs 8x1
      [2102, 1051, 12, [4, 3]], // 6x2 vs 4x3
      [1051, 2102, 12, [3, 4]],
      [1417, 1417, 12, [4, 3]],
    ];
    for (const [W, H, M, [cols, rows]] of cases) {
      expect(chooseGrid(W, H, { ...CFG, max_slice_nums: M }), `${W}x${H}, M=${M}`).toEqual({ cols, rows });
    }
  });

  it('logCorrectlyRounded gives Python\'s math.log bit for bit (where V8\'s Math.log is an ulp off too)', () => {
    const python: [number, number][] = [
      [3, 1.0986122886681098], [2 / 3, -0.40546510810816444], [1.5, 0.4054651081081644], [6, 1.791759469228055],
      [0.5, -0.6931471805599453], [2, 0.6931471805599453], [10, 2.302585092994046], [1 / 3, -1.0986122886681098],
      [4 / 3, 0.28768207245178085], [0.75, -0.2876820724517809], [1e-5, -11.512925464970229], [123456.789, 11.723646487185881], [1, 0],
    ];
    for (const [x, want] of python) expect(logCorrectlyRounded(x), `ln ${x}`).toBe(want);
    expect(Math.log(3)).not.toBe(1.0986122886681098); // why it exists: V8 rounds ln 3 down
    // within one ulp of Math.log everywhere
    fc.assert(
      fc.property(fc.double({ min: 1e-300, max: 1e300, noNaN: true }), (x) => {
        const a = logCorrectlyRounded(x);
        const b = Math.log(x);
        expect(Math.abs(a - b)).toBeLessThanOrEqual(Math.abs(b) * 2 ** -52 + Number.MIN_VALUE);
      }),
      { ...PROP, numRuns: 500 },
    );
  });
});

/** Byte equality without vitest's element-wise diff (slow on megabyte arrays). */
function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength)) === 0;
}

/** A deterministic, non-constant test image. */
function pattern(width: number, height: number): RgbImage {
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const o = (y * width + x) * 3;
      data[o] = (x * 5) & 255;
      data[o + 1] = (y * 3) & 255;
      data[o + 2] = ((x ^ y) * 7) & 255;
    }
  }
  return { width, height, data };
}

describe('makeViews', () => {
  it('800x600: a 504x392 thumbnail and 2x2 row-major slices cut from the 1008x784 resize', () => {
    const img = pattern(800, 600);
    const views = makeViews(img, CFG);
    expect(views.plan).toEqual(sliceImage(800, 600, CFG));
    expect(views.thumbnail.width).toBe(504);
    expect(views.thumbnail.height).toBe(392);
    expect(sameBytes(views.thumbnail.data, resizeBicubic(img, 504, 392).data)).toBe(true);
    expect(views.slices).toHaveLength(4);
    const refined = resizeBicubic(img, 1008, 784);
    views.slices.forEach((s, i) => {
      expect([s.width, s.height]).toEqual([504, 392]);
      const c = i % 2;
      const r = Math.floor(i / 2);
      for (const y of [0, 1, 200, 391]) {
        for (const x of [0, 1, 300, 503]) {
          const got = s.data.subarray((y * 504 + x) * 3, (y * 504 + x) * 3 + 3);
          const o = ((r * 392 + y) * 1008 + c * 504 + x) * 3;
          expect(Array.from(got), `slice ${i} pixel (${x},${y})`).toEqual(Array.from(refined.data.subarray(o, o + 3)));
        }
      }
    });
  });

  it('slices put back row-major reproduce the refined image pixel for pixel', () => {
    const img = pattern(300, 140); // m = ceil(42000/200704) = 1 with M = 9, so use a small S
    const cfg = { scale_resolution: 112, max_slice_nums: 9, align_unit: 56 };
    const views = makeViews(img, cfg);
    const { grid, slice, refined } = views.plan;
    expect(grid).not.toBeNull();
    const whole = resizeBicubic(img, refined!.width, refined!.height);
    const rebuilt = new Uint8Array(whole.data.length);
    views.slices.forEach((s, i) => {
      const c = i % grid!.cols;
      const r = Math.floor(i / grid!.cols);
      for (let y = 0; y < slice!.height; y++) {
        rebuilt.set(s.data.subarray(y * slice!.width * 3, (y + 1) * slice!.width * 3), ((r * slice!.height + y) * refined!.width + c * slice!.width) * 3);
      }
    });
    expect(sameBytes(rebuilt, whole.data)).toBe(true);
  });

  it('M = 1 and small images give the thumbnail only', () => {
    const one = makeViews(pattern(300, 200), CFG);
    expect(one.slices).toEqual([]);
    expect([one.thumbnail.width, one.thumbnail.height]).toEqual([560, 392]);
    const m1 = makeViews(pattern(900, 700), { ...CFG, max_slice_nums: 1 });
    expect(m1.slices).toEqual([]);
    expect(m1.plan.grid).toBeNull();
  });
});
