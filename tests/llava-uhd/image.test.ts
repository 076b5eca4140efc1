import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deflateSync } from 'node:zlib';
import fc from 'fast-check';
import jpeg from 'jpeg-js';
import { describe, expect, it } from 'vitest';
import {
  bicubicKernel, cropImage, decodeImage, encodePng, encodePngBytes, loadImage, normalize, resampleCoeffs, resizeBicubic, type RgbImage,
} from '../../llava-uhd/image.js';
import { PROP } from '../support.js';

/** An image whose pixel (x, y) is f(x, y) = [r, g, b]. */
function makeImage(width: number, height: number, f: (x: number, y: number) => [number, number, number]): RgbImage {
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) data.set(f(x, y), (y * width + x) * 3);
  return { width, height, data };
}

function pixel(img: RgbImage, x: number, y: number): number[] {
  const o = (y * img.width + x) * 3;
  return Array.from(img.data.subarray(o, o + 3));
}

const randomImage = (maxSide: number) =>
  fc.record({ width: fc.integer({ min: 1, max: maxSide }), height: fc.integer({ min: 1, max: maxSide }) }).chain(({ width, height }) =>
    fc.uint8Array({ minLength: width * height * 3, maxLength: width * height * 3 }).map((data) => ({ width, height, data })),
  );

// --- a minimal PNG writer, so the decoder sees colour types and bit depths pngjs cannot write ---

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (const b of bytes) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type: string, body: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + body.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, body.length);
  out.set(Buffer.from(type, 'latin1'), 4);
  out.set(body, 8);
  view.setUint32(8 + body.length, crc32(out.subarray(4, 8 + body.length)));
  return out;
}

/**
 * A PNG from unfiltered scanlines of samples (one array per row, `channels` samples per pixel,
 * packed MSB-first below 8 bits, big-endian at 16).
 */
function handMadePng(opts: { width: number; colorType: number; depth: number; rows: number[][]; plte?: number[]; trns?: number[] }): Uint8Array {
  const { width, colorType, depth, rows } = opts;
  const ihdr = new Uint8Array(13);
  const v = new DataView(ihdr.buffer);
  v.setUint32(0, width);
  v.setUint32(4, rows.length);
  ihdr.set([depth, colorType, 0, 0, 0], 8);
  const scan: number[] = [];
  for (const row of rows) {
    scan.push(0); // filter: none
    if (depth === 16) for (const s of row) scan.push(s >> 8, s & 255);
    else if (depth === 8) scan.push(...row);
    else {
      const perByte = 8 / depth;
      for (let i = 0; i < row.length; i += perByte) {
        let b = 0;
        for (let j = 0; j < perByte; j++) b |= (row[i + j] ?? 0) << (8 - depth * (j + 1));
        scan.push(b);
      }
    }
  }
  const parts = [Uint8Array.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', ihdr)];
  if (opts.plte) parts.push(chunk('PLTE', Uint8Array.from(opts.plte)));
  if (opts.trns) parts.push(chunk('tRNS', Uint8Array.from(opts.trns)));
  parts.push(chunk('IDAT', deflateSync(Uint8Array.from(scan))), chunk('IEND', new Uint8Array(0)));
  return Buffer.concat(parts);
}

describe('decodeImage: PNG', () => {
  it('round trip: encodePngBytes then decodeImage gives the same pixels', async () => {
    await fc.assert(
      fc.asyncProperty(randomImage(24), async (img) => {
        const back = await decodeImage(encodePngBytes(img), 'r.png');
        expect(back.width).toBe(img.width);
        expect(back.height).toBe(img.height);
        expect(back.data).toEqual(img.data);
      }),
      { ...PROP, numRuns: 100 },
    );
  });

  it('reads from a Uint8Array view at an offset (not only from offset 0 of its buffer)', async () => {
    const img = makeImage(3, 2, (x, y) => [x * 80, y * 200, 7]);
    const png = encodePngBytes(img);
    const padded = new Uint8Array(png.length + 10);
    padded.set(png, 5);
    expect((await decodeImage(padded.subarray(5, 5 + png.length))).data).toEqual(img.data);
  });

  it('expands palette (2-bit indices, tRNS ignored), grayscale 1-bit and 16-bit, and drops alpha, as Pillow', async () => {
    const palette = handMadePng({
      width: 5, colorType: 3, depth: 2,
      rows: [[0, 1, 2, 3, 0], [3, 3, 1, 0, 2]],
      plte: [255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30],
      trns: [0, 128], // entries 0 and 1 transparent-ish: alpha is dropped, colours kept
    });
    const p = await decodeImage(palette, 'palette.png');
    expect([p.width, p.height]).toEqual([5, 2]);
    const colours = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]];
    expect([0, 1, 2, 3, 4].map((x) => pixel(p, x, 0))).toEqual([0, 1, 2, 3, 0].map((i) => colours[i]));
    expect([0, 1, 2, 3, 4].map((x) => pixel(p, x, 1))).toEqual([3, 3, 1, 0, 2].map((i) => colours[i]));

    const gray1 = await decodeImage(handMadePng({ width: 9, colorType: 0, depth: 1, rows: [[1, 0, 1, 1, 0, 0, 0, 1, 1]] }), 'g1.png');
    expect(Array.from({ length: 9 }, (_, x) => pixel(gray1, x, 0)[0])).toEqual([255, 0, 255, 255, 0, 0, 0, 255, 255]);
    expect(pixel(gray1, 0, 0)).toEqual([255, 255, 255]);

    // Pillow opens 16-bit grey as mode I and convert('RGB') clips it to 0..255 (not scaled)
    const gray16 = await decodeImage(handMadePng({ width: 4, colorType: 0, depth: 16, rows: [[0, 200, 256, 65535]] }), 'g16.png');
    expect([0, 1, 2, 3].map((x) => pixel(gray16, x, 0))).toEqual([[0, 0, 0], [200, 200, 200], [255, 255, 255], [255, 255, 255]]);
    // other 16-bit samples keep their high byte (25590 = 99·256 + 246 -> 99, not rounded to 100)
    const rgb16 = await decodeImage(handMadePng({ width: 1, colorType: 2, depth: 16, rows: [[257 * 1, 25590, 257 * 250]] }), 'rgb16.png');
    expect(pixel(rgb16, 0, 0)).toEqual([1, 99, 250]);

    const rgba = await decodeImage(handMadePng({ width: 2, colorType: 6, depth: 8, rows: [[10, 20, 30, 0, 40, 50, 60, 255]] }), 'rgba.png');
    expect([pixel(rgba, 0, 0), pixel(rgba, 1, 0)]).toEqual([[10, 20, 30], [40, 50, 60]]);
    const grayAlpha = await decodeImage(handMadePng({ width: 2, colorType: 4, depth: 8, rows: [[77, 0, 200, 9]] }), 'ga.png');
    expect([pixel(grayAlpha, 0, 0), pixel(grayAlpha, 1, 0)]).toEqual([[77, 77, 77], [200, 200, 200]]);
  });
});

describe('decodeImage: JPEG', () => {
  it('decodes a jpeg-js-encoded image to within JPEG error, with either decoder', async () => {
    const w = 40;
    const h = 24;
    const src = makeImage(w, h, (x, y) => [x * 6, y * 10, 128 + ((x + y) % 8)]);
    const rgba = new Uint8Array(w * h * 4);
    for (let i = 0; i < w * h; i++) rgba.set([...src.data.subarray(i * 3, i * 3 + 3), 255], i * 4);
    const bytes = jpeg.encode({ width: w, height: h, data: rgba }, 95).data;
    for (const jpegDecoder of ['sharp', 'jpeg-js'] as const) {
      const img = await decodeImage(bytes, 'gradient.jpg', { jpegDecoder });
      expect([img.width, img.height]).toEqual([w, h]);
      let maxErr = 0;
      let sumErr = 0;
      for (let i = 0; i < src.data.length; i++) {
        const e = Math.abs(img.data[i] - src.data[i]);
        maxErr = Math.max(maxErr, e);
        sumErr += e;
      }
      expect(maxErr, jpegDecoder).toBeLessThanOrEqual(12);
      expect(sumErr / src.data.length, jpegDecoder).toBeLessThan(2);
    }
  });
});

describe('decodeImage: corrupt and unsupported input throws, naming the file', () => {
  const png = encodePngBytes(makeImage(13, 9, (x, y) => [x * 19, y * 28, (x * y) & 255]));

  it('a GIF, random bytes and an empty file are rejected as unsupported or empty', async () => {
    const gif = Buffer.from('GIF89a\x01\x00\x01\x00\x00\x00\x00;', 'latin1');
    await expect(decodeImage(gif, 'photo.gif')).rejects.toThrow('image: photo.gif: unsupported format (not PNG or JPEG)');
    await expect(decodeImage(new Uint8Array(0), 'empty.png')).rejects.toThrow('image: empty.png: empty file');
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ minLength: 1, maxLength: 200 }), async (bytes) => {
        fc.pre(bytes[0] !== 0x89 && bytes[0] !== 0xff);
        await expect(decodeImage(bytes, 'noise.bin')).rejects.toThrow('image: noise.bin: unsupported format (not PNG or JPEG)');
      }),
      PROP,
    );
  });

  it('a PNG cut at any length throws "corrupt PNG" (never returns partial pixels)', async () => {
    await expect(decodeImage(png.subarray(0, 60), 'x.png')).rejects.toThrow(/^image: x\.png: corrupt PNG: /);
    for (let n = 1; n < png.length; n++) {
      await expect(decodeImage(png.subarray(0, n), 'x.png'), `cut at ${n}`).rejects.toThrow(/^image: x\.png: corrupt PNG: /);
    }
  });

  it('a PNG with any one byte after the signature changed throws "corrupt PNG" (CRC, zlib or header checks)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 8, max: png.length - 1 }), fc.integer({ min: 1, max: 255 }), async (at, flip) => {
        const bad = Uint8Array.from(png);
        bad[at] ^= flip;
        await expect(decodeImage(bad, 'flip.png')).rejects.toThrow(/^image: flip\.png: corrupt PNG: /);
      }),
      { ...PROP, numRuns: 200 },
    );
  });

  it('a JPEG cut at any length throws "corrupt JPEG", with either decoder', async () => {
    const rgba = new Uint8Array(16 * 8 * 4).map((_, i) => (i * 37) & 255);
    const jpg = jpeg.encode({ width: 16, height: 8, data: rgba }, 90).data;
    for (const jpegDecoder of ['sharp', 'jpeg-js'] as const) {
      for (let n = 1; n < jpg.length; n++) {
        await expect(decodeImage(jpg.subarray(0, n), 'cut.jpg', { jpegDecoder }), `${jpegDecoder}, cut at ${n}`).rejects.toThrow(/^image: cut\.jpg: corrupt JPEG: /);
      }
    }
  });

  it('loadImage reads PNG files and names a missing path', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'uhd-image-'));
    try {
      const img = makeImage(7, 5, (x, y) => [x, y, x + y]);
      const path = join(dir, 'a.png');
      await encodePng(img, path);
      expect((await loadImage(path)).data).toEqual(img.data);
      const gif = join(dir, 'photo.gif');
      await writeFile(gif, 'GIF89a');
      await expect(loadImage(gif)).rejects.toThrow(`image: ${gif}: unsupported format (not PNG or JPEG)`);
      await expect(loadImage(join(dir, 'missing.png'))).rejects.toThrow(/image: .*missing\.png: cannot read/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

// --- resizing ---

/** Bicubic without antialiasing: the kernel is never stretched (point sampling when shrinking). */
function naiveBicubicRow(row: number[], outW: number): number[] {
  const scale = row.length / outW;
  return Array.from({ length: outW }, (_, i) => {
    const c = (i + 0.5) * scale - 0.5;
    let s = 0;
    let t = 0;
    for (let j = Math.floor(c) - 1; j <= Math.floor(c) + 2; j++) {
      const w = bicubicKernel(j - c);
      s += w * row[Math.min(Math.max(j, 0), row.length - 1)];
      t += w;
    }
    return Math.round(s / t);
  });
}

function mirrorX(img: RgbImage): RgbImage {
  return makeImage(img.width, img.height, (x, y) => pixel(img, img.width - 1 - x, y) as [number, number, number]);
}

function mirrorY(img: RgbImage): RgbImage {
  return makeImage(img.width, img.height, (x, y) => pixel(img, x, img.height - 1 - y) as [number, number, number]);
}

describe('resizeBicubic (PIL BICUBIC semantics)', () => {
  const sizes = fc.record({ w: fc.integer({ min: 1, max: 40 }), h: fc.integer({ min: 1, max: 40 }) });

  it('the cubic kernel (a = −0.5) has its textbook values and sums to 1 over integer shifts', () => {
    expect([0, 0.5, 1, 1.5, 2, 2.5].map((x) => bicubicKernel(x) + 0)).toEqual([1, 0.5625, 0, -0.0625, 0, 0]);
    for (const f of [0, 0.1, 0.25, 0.5, 0.9]) {
      expect([-2, -1, 0, 1, 2].reduce((s, k) => s + bicubicKernel(f + k), 0)).toBeCloseTo(1, 12);
    }
  });

  it('fixed-point weights of every output sum to 2^22 (up to rounding of each tap)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 300 }), fc.integer({ min: 1, max: 300 }), (inSize, outSize) => {
        const { ksize, bounds, weights } = resampleCoeffs(inSize, outSize);
        for (let i = 0; i < outSize; i++) {
          const count = bounds[i * 2 + 1];
          expect(bounds[i * 2]).toBeGreaterThanOrEqual(0);
          expect(bounds[i * 2] + count).toBeLessThanOrEqual(inSize);
          let s = 0;
          for (let t = 0; t < count; t++) s += weights[i * ksize + t];
          expect(Math.abs(s - 2 ** 22)).toBeLessThanOrEqual(count);
        }
      }),
      PROP,
    );
  });

  it('a constant image stays constant at any size', () => {
    fc.assert(
      fc.property(sizes, sizes, fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255)), (from, to, rgb) => {
        const out = resizeBicubic(makeImage(from.w, from.h, () => rgb), to.w, to.h);
        expect([out.width, out.height]).toEqual([to.w, to.h]);
        for (let i = 0; i < out.width * out.height; i++) expect(pixel(out, i % out.width, Math.floor(i / out.width))).toEqual(rgb);
      }),
      PROP,
    );
  });

  it('resizing to the same size is the identity (and a copy)', () => {
    fc.assert(
      fc.property(randomImage(30), (img) => {
        const out = resizeBicubic(img, img.width, img.height);
        expect(out.data).toEqual(img.data);
        expect(out.data).not.toBe(img.data);
      }),
      PROP,
    );
  });

  it('commutes with mirroring (the filter is symmetric about each output centre)', () => {
    fc.assert(
      fc.property(randomImage(20), sizes, (img, to) => {
        expect(resizeBicubic(mirrorX(img), to.w, to.h).data).toEqual(mirrorX(resizeBicubic(img, to.w, to.h)).data);
        expect(resizeBicubic(mirrorY(img), to.w, to.h).data).toEqual(mirrorY(resizeBicubic(img, to.w, to.h)).data);
      }),
      PROP,
    );
  });

  it('2x downscale of vertical stripes matches hand-computed antialiased weights', () => {
    // stripes 0,255,0,255,... (8 wide) -> 4 wide. scale 2, so the kernel is stretched to support
    // 4, and input j weighs k((j + 0.5 − c) / 2) for output centre c = (i + 0.5)·2 = 1, 3, 5, 7;
    // inputs outside the image are dropped and the rest renormalised. With
    //   a = k(0.25) = 0.8671875, b = k(0.75) = 0.2265625, c = k(1.25) = −0.0703125, d = k(1.75) = −0.0234375:
    //   output 0: inputs 0..4 weigh a a b c d on 0 255 0 255 0  -> 255·(a + c)/(2a + b + c + d) = 108.8
    //   output 1: inputs 0..6 weigh c b a a b c d on 0 255 0 255 0 255 0 -> 255·(b + a + c)/(…) = 128.98
    //   output 2: inputs 1..7 weigh d c b a a b c on 255 0 255 0 255 0 255
    //   output 3: inputs 3..7 weigh d c b a a on 255 0 255 0 255
    const k = { a: 0.8671875, b: 0.2265625, c: -0.0703125, d: -0.0234375 };
    const out0 = Math.round((255 * (k.a + k.c)) / (2 * k.a + k.b + k.c + k.d));
    const out1 = Math.round((255 * (k.b + k.a + k.c)) / (2 * k.a + 2 * k.b + 2 * k.c + k.d));
    expect([out0, out1]).toEqual([109, 129]);
    // outputs 2 and 3 mirror 1 and 0 of the reversed stripes (255 at the left edge instead)
    const out3 = Math.round((255 * (k.a + k.b + k.d)) / (2 * k.a + k.b + k.c + k.d));
    const out2 = Math.round((255 * (k.c + k.a + k.b + k.d)) / (2 * k.a + 2 * k.b + 2 * k.c + k.d));
    const stripes = makeImage(8, 3, (x) => (x % 2 ? [255, 255, 255] : [0, 0, 0]));
    const out = resizeBicubic(stripes, 4, 3);
    for (let y = 0; y < 3; y++) expect([0, 1, 2, 3].map((x) => pixel(out, x, y)[0])).toEqual([out0, out1, out2, out3]);
  });

  it('upscaling a 2x2 image gives the symmetric result the kernel predicts', () => {
    // one row [0, 255] -> 4 wide: scale 0.5, support 2, centres 0.25, 0.75, 1.25, 1.75, and input j
    // weighs k(j + 0.5 − c):
    //   output 0: k(0.25) = 0.8671875 on 0, k(1.25) = −0.0703125 on 255 -> 255·c/(a + c) = −22.5 -> clamped to 0
    //   output 1: k(−0.25) = 0.8671875 on 0, k(0.75) = 0.2265625 on 255 -> 255·b/(a + b) = 52.8 -> 53
    //   outputs 2, 3 mirror them: 202, 255
    const a = 0.8671875;
    const b = 0.2265625;
    const c = -0.0703125;
    expect([(255 * c) / (a + c), (255 * b) / (a + b)].map((x) => Math.min(Math.max(Math.round(x), 0), 255))).toEqual([0, 53]);
    const row = resizeBicubic(makeImage(2, 1, (x) => (x ? [255, 255, 255] : [0, 0, 0])), 4, 1);
    expect([0, 1, 2, 3].map((x) => pixel(row, x, 0)[0])).toEqual([0, 53, 202, 255]);
    // the 2x2 checkerboard [[0, 255], [255, 0]] -> 4x4 is symmetric under a 180° turn and
    // complementary (v -> 255 − v) under a mirror, as its input is. It is not symmetric under
    // transposition: rows are resized first and clamped to 0..255 before the columns (as PIL).
    const img = makeImage(2, 2, (x, y) => ((x + y) % 2 ? [255, 255, 255] : [0, 0, 0]));
    const out = resizeBicubic(img, 4, 4);
    const v = (x: number, y: number) => pixel(out, x, y)[0];
    for (let y = 0; y < 4; y++) {
      for (let x = 0; x < 4; x++) {
        expect(v(x, y)).toBe(v(3 - x, 3 - y));
        expect(v(x, y) + v(3 - x, y)).toBe(255);
      }
    }
    // column 0 after the row pass is [0, 255]: down it, output 1 is 53 again; column 1 is
    // [53, 202]: output 0 is (53a + 202c)/(a + c) = 39.86 -> 40, not 53
    expect(v(0, 1)).toBe(53);
    expect(Math.round((53 * a + 202 * c) / (a + c))).toBe(40);
    expect(v(1, 0)).toBe(40);
  });

  it('downscaling a checkerboard 3x antialiases to about 127, which non-antialiased bicubic does not', () => {
    const board = makeImage(60, 60, (x, y) => ((x + y) % 2 ? [255, 255, 255] : [0, 0, 0]));
    const out = resizeBicubic(board, 20, 20);
    for (let y = 0; y < 20; y++) for (let x = 0; x < 20; x++) expect(Math.abs(pixel(out, x, y)[0] - 127.5)).toBeLessThan(30);
    // interior pixels average the board almost exactly
    for (let y = 2; y < 18; y++) for (let x = 2; x < 18; x++) expect(Math.abs(pixel(out, x, y)[0] - 127.5)).toBeLessThanOrEqual(16);
    // the same shrink without stretching the kernel lands on single pixels: 0 or 255
    const naive = naiveBicubicRow(Array.from({ length: 60 }, (_, x) => (x % 2 ? 255 : 0)), 20);
    expect(naive.every((p) => p === 0 || p === 255)).toBe(true);
  });

  it('rejects bad sizes and malformed images, naming the function', () => {
    const img = makeImage(2, 2, () => [0, 0, 0]);
    expect(() => resizeBicubic(img, 0, 3)).toThrow('resizeBicubic: size must be positive integers, got 0x3');
    expect(() => resizeBicubic({ width: 2, height: 2, data: new Uint8Array(5) }, 3, 3)).toThrow('resizeBicubic: a 2x2 RGB image needs 12 bytes, got 5');
  });
});

describe('cropImage and normalize', () => {
  it('cropImage copies the box and rejects boxes outside the image', () => {
    const img = makeImage(5, 4, (x, y) => [x, y, 10 * x + y]);
    const c = cropImage(img, 1, 2, 3, 2);
    expect([c.width, c.height]).toEqual([3, 2]);
    for (let y = 0; y < 2; y++) for (let x = 0; x < 3; x++) expect(pixel(c, x, y)).toEqual(pixel(img, x + 1, y + 2));
    expect(() => cropImage(img, 3, 0, 3, 1)).toThrow('cropImage: box x=3 y=0 3x1 is not inside the 5x4 image');
  });

  it('normalize maps 0 -> −1 and 255 -> 1 into a float32 [3, H, W] (CHW) tensor', async () => {
    const img = makeImage(3, 2, (x, y) => [x === 0 ? 0 : 255, 51 * y, x + 10 * y]);
    const t = normalize(img);
    expect(t.shape).toEqual([3, 2, 3]);
    expect(t.dtype).toBe('float32');
    const d = await t.data();
    const at = (c: number, y: number, x: number) => d[c * 6 + y * 3 + x];
    expect(at(0, 0, 0)).toBe(-1);
    expect(at(0, 1, 2)).toBe(1);
    expect(at(1, 1, 1)).toBeCloseTo(51 / 127.5 - 1, 6);
    for (let y = 0; y < 2; y++) {
      for (let x = 0; x < 3; x++) for (let c = 0; c < 3; c++) expect(at(c, y, x)).toBeCloseTo(pixel(img, x, y)[c] / 127.5 - 1, 6);
    }
  });

  it('normalize stages every view in one reused array, yet no tensor shares it', async () => {
    const a = normalize(makeImage(4, 3, () => [0, 0, 0]));
    const b = normalize(makeImage(2, 2, () => [255, 255, 255])); // smaller: a prefix of the same array
    const c = normalize(makeImage(5, 5, () => [255, 0, 255])); // larger: the array grows
    expect([...(await a.data())]).toEqual(new Array(36).fill(-1));
    expect([...(await b.data())]).toEqual(new Array(12).fill(1));
    expect([...(await c.data())]).toEqual([...new Array(25).fill(1), ...new Array(25).fill(-1), ...new Array(25).fill(1)]);
  });
});
