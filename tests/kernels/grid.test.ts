/**
 * Token-grid ops (the compressor's and the connector's 2x2 merge): pixelUnshuffle's window
 * order, its inverse, its relation to avgPool2x2, the device under test against the CPU, and bad grids.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import * as uhd from '../../tensor/index.js';
import type { Device, Tensor } from '../../tensor/index.js';
import { agree, DEVICE, expectClose, makeView, PROP, useDevice, type Tolerance, type ViewRecipe } from '../support.js';

useDevice();

const DEVICES: readonly Device[] = [...new Set<Device>(['cpu', DEVICE])];
const EXACT: Tolerance = { atol: 0, rtol: 0 };
/** A mean of four float32 values taken in two ways (rounding differs by a few ulp). */
const MEAN4: Tolerance = { atol: 1e-6, rtol: 1e-6 };

/** The inverse of pixelUnshuffle, by views: [..., (h/r)*(w/r), r*r*d] -> [..., h*w, d]. */
function pixelShuffle(z: Tensor, h: number, w: number, r: number): Tensor {
  const lead = z.shape.slice(0, -2);
  const n = lead.length;
  const d = z.shape[z.rank - 1] / (r * r);
  const win = z.reshape([...lead, h / r, w / r, r, r, d]);
  // [..., h/r, w/r, r, r, d] -> [..., h/r, r, w/r, r, d]: rows of windows back into grid rows
  const perm = win.permute([...lead.keys(), n, n + 2, n + 1, n + 3, n + 4]);
  const out = perm.reshape([...lead, h * w, d]);
  win.dispose();
  perm.dispose();
  return out;
}

/** A token grid [...lead, h*w, d] as a (possibly strided) view recipe. */
const arbGrid = (maxHalf: number, maxD: number) =>
  fc.record({
    lead: fc.array(fc.integer({ min: 1, max: 3 }), { maxLength: 2 }),
    hh: fc.integer({ min: 1, max: maxHalf }),
    hw: fc.integer({ min: 1, max: maxHalf }),
    d: fc.integer({ min: 1, max: maxD }),
    kind: fc.constantFrom<ViewRecipe['kind']>('dense', 'permuted', 'sliced', 'broadcast'),
    seed: fc.integer({ min: 1, max: 2 ** 31 - 1 }),
  });

describe('pixelUnshuffle', () => {
  it('orders r = 2 windows [top-left, top-right, bottom-left, bottom-right], windows row-major (4x4 grid)', async () => {
    // token t of the 4x4 grid (row t/4, column t%4) holds [t, 100 + t]
    const tokens = Array.from({ length: 16 }, (_, t) => [t, 100 + t]);
    const window = (...ts: number[]) => ts.flatMap((t) => [t, 100 + t]);
    const expected = [window(0, 1, 4, 5), window(2, 3, 6, 7), window(8, 9, 12, 13), window(10, 11, 14, 15)];
    for (const device of DEVICES) {
      const x = uhd.tensor(tokens, { device });
      const z = uhd.pixelUnshuffle(x, 4, 4);
      expect(z.shape).toEqual([4, 8]);
      expect(await z.toArray(), device).toEqual(expected);
      x.dispose();
      z.dispose();
    }
  });

  it('followed by its inverse gives back the input (random grids, lead dims, views, r = 2 or 3)', async () => {
    await fc.assert(
      fc.asyncProperty(arbGrid(5, 6), fc.constantFrom(2, 2, 3), async (g, r) => {
        const [h, w] = [g.hh * r, g.hw * r];
        const recipe: ViewRecipe = { shape: [...g.lead, h * w, g.d], kind: g.kind, seed: g.seed };
        for (const device of DEVICES) {
          const x = makeView(recipe, device);
          const z = uhd.pixelUnshuffle(x, h, w, r);
          expect(z.shape).toEqual([...g.lead, g.hh * g.hw, r * r * g.d]);
          const back = pixelShuffle(z, h, w, r);
          expectClose(await back.data(), await x.data(), EXACT, `${device} ${JSON.stringify(recipe)} r ${r}`);
          for (const t of [x, z, back]) t.dispose();
        }
      }),
      { ...PROP, numRuns: 20 },
    );
  });

  it(`on ${DEVICE} equals the CPU on random grids and views`, async () => {
    await fc.assert(
      fc.asyncProperty(arbGrid(6, 9), async (g) => {
        const [h, w] = [2 * g.hh, 2 * g.hw];
        const recipe: ViewRecipe = { shape: [...g.lead, h * w, g.d], kind: g.kind, seed: g.seed };
        await agree((x) => uhd.pixelUnshuffle(x, h, w), [recipe], EXACT, { label: `pixelUnshuffle ${h}x${w}` });
      }),
      { ...PROP, numRuns: 20 },
    );
  });
});

describe('avgPool2x2', () => {
  it('equals the mean of the four d-wide chunks of pixelUnshuffle (both devices)', async () => {
    await fc.assert(
      fc.asyncProperty(arbGrid(5, 7), async (g) => {
        const [h, w] = [2 * g.hh, 2 * g.hw];
        const recipe: ViewRecipe = { shape: [...g.lead, h * w, g.d], kind: g.kind, seed: g.seed };
        for (const device of DEVICES) {
          const x = makeView(recipe, device);
          const pooled = uhd.avgPool2x2(x, h, w);
          const z = uhd.pixelUnshuffle(x, h, w);
          const chunks = z.reshape([...g.lead, g.hh * g.hw, 4, g.d]);
          const meanOfChunks = chunks.mean(-2);
          expect(pooled.shape).toEqual([...g.lead, g.hh * g.hw, g.d]);
          expectClose(await pooled.data(), await meanOfChunks.data(), MEAN4, `${device} ${JSON.stringify(recipe)}`);
          for (const t of [x, pooled, z, chunks, meanOfChunks]) t.dispose();
        }
      }),
      { ...PROP, numRuns: 15 },
    );
  });

  it(`on ${DEVICE} equals the CPU on random grids and views`, async () => {
    await fc.assert(
      fc.asyncProperty(arbGrid(6, 9), async (g) => {
        const [h, w] = [2 * g.hh, 2 * g.hw];
        const recipe: ViewRecipe = { shape: [...g.lead, h * w, g.d], kind: g.kind, seed: g.seed };
        await agree((x) => uhd.avgPool2x2(x, h, w), [recipe], MEAN4, { label: `avgPool2x2 ${h}x${w}` });
      }),
      { ...PROP, numRuns: 20 },
    );
  });
});

describe('bad grids', () => {
  it('throw a message naming the grid', () => {
    const x = uhd.zeros([2, 12, 3]);
    for (const op of [uhd.pixelUnshuffle, uhd.avgPool2x2]) {
      const name = op === uhd.pixelUnshuffle ? 'pixelUnshuffle' : 'avgPool2x2';
      // h*w != tokens
      expect(() => op(x, 3, 5)).toThrow(`${name}: grid 3x5 does not match 12 tokens of x [2,12,3]`);
      expect(() => op(x, -3, -4)).toThrow(`${name}: grid -3x-4 does not match 12 tokens`);
      // odd h (or w)
      expect(() => op(x, 3, 4)).toThrow(`${name}: grid 3x4 is not divisible by 2`);
      expect(() => op(x, 4, 3)).toThrow(`${name}: grid 4x3 is not divisible by 2`);
    }
    expect(() => uhd.pixelUnshuffle(x, 4, 3, 3)).toThrow('pixelUnshuffle: grid 4x3 is not divisible by 3');
    expect(() => uhd.pixelUnshuffle(x, 4, 3, -1)).toThrow('pixelUnshuffle: window size -1 must be a positive integer');
    const flat = uhd.zeros([12]);
    expect(() => uhd.pixelUnshuffle(flat, 3, 4)).toThrow('pixelUnshuffle: x must be [..., h*w, d], got [12]');
    x.dispose();
    flat.dispose();
  });
});
