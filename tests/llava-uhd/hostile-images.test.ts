/**
 * Hostile image files (issue 12, item 7), generated here, never committed: headers that claim
 * absurd sizes, decompression bombs, short image data, an extreme aspect ratio. Each is refused
 * with an error naming the file and the limit, from the header where the header suffices, and
 * nothing aborts the process or allocates what the file claims.
 */
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { constants, deflateRawSync, deflateSync } from 'node:zlib';
import fc from 'fast-check';
import jpeg from 'jpeg-js';
import pngjs from 'pngjs';
import { describe, expect, it } from 'vitest';
import { CONFIGS } from '../../llava-uhd/config.js';
import { MAX_IMAGE_PIXELS, decodeImage, encodePngBytes, loadImage, readImageHeader } from '../../llava-uhd/image.js';
import { MAX_ASPECT_RATIO, checkAspectRatio, prepareImage } from '../../llava-uhd/preprocess.js';
import { sliceImage } from '../../llava-uhd/slicing.js';
import { PROP } from '../support.js';

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
function chunk(type: string, body: Uint8Array): Buffer {
  const out = Buffer.alloc(12 + body.length);
  out.writeUInt32BE(body.length, 0);
  out.write(type, 4, 'latin1');
  out.set(body, 8);
  out.writeUInt32BE(crc32(out.subarray(4, 8 + body.length)), 8 + body.length);
  return out;
}
const SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

/** A PNG with the given IHDR (8-bit, colour type `ct`) and zlib data `idat`. */
function png(width: number, height: number, idat: Uint8Array, ct = 2): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.set([8, ct, 0, 0, 0], 8);
  return Buffer.concat([SIGNATURE, chunk('IHDR', ihdr), chunk('IDAT', idat), chunk('IEND', new Uint8Array(0))]);
}

/**
 * A real decompression bomb: a zlib stream of `rows` all-zero rows of `rowBytes` (+1 filter byte)
 * built from one row compressed once and repeated (a full flush makes each copy stand alone), so
 * a 16000² bomb is about 1 MB to write and 768 MB to inflate.
 */
function zeroRowsZlib(rows: number, rowBytes: number): Buffer {
  const one = deflateRawSync(Buffer.alloc(rowBytes + 1), { level: 9, finishFlush: constants.Z_FULL_FLUSH });
  const n = rows * (rowBytes + 1);
  const adler = Buffer.alloc(4);
  adler.writeUInt32BE((((n % 65521) << 16) | 1) >>> 0); // adler32 of n zero bytes: a = 1, b = n
  return Buffer.concat([Buffer.from([0x78, 0xda]), ...new Array<Buffer>(rows).fill(one), Buffer.from([0x03, 0x00]), adler]);
}

describe('a PNG header claiming 2^31 − 1 pixels across', () => {
  const bomb = png(2 ** 31 - 1, 1, deflateSync(Buffer.alloc(10)), 6);

  it('is 68 bytes, and aborts Node inside pngjs (the decoder used before): why it must never reach it', () => {
    expect(bomb.length).toBe(68);
    // pngjs computes the row size in int32, ((width·bpp·depth + 7) >> 3), and passes the
    // wrapped value to Node's private zlib binding, whose bounds assertion aborts the process.
    const script = `const { PNG } = require('pngjs'); try { PNG.sync.read(Buffer.from('${bomb.toString('hex')}', 'hex')); } catch (e) { process.exit(3); }`;
    const r = spawnSync(process.execPath, ['-e', script], { cwd: process.cwd(), encoding: 'utf8' });
    expect(r.signal ?? r.status).toBe('SIGABRT');
    expect(r.stderr).toMatch(/Assertion failed/);
  });

  it('is refused from its header, by the pixel limit, naming the file and the limit', async () => {
    await expect(decodeImage(bomb, 'wide.png')).rejects.toThrow(`image: wide.png: 2147483647x1 is 2147483647 pixels, over the limit of ${MAX_IMAGE_PIXELS}`);
  });

  it('with the limit off it is still only an error (the image data is short), in this process', async () => {
    await expect(decodeImage(bomb, 'wide.png', { maxPixels: Infinity })).rejects.toThrow(/^image: wide\.png: corrupt PNG: (short IDAT|cannot allocate)/);
  });
});

describe('decompression bombs', () => {
  it('a header claiming 20000 x 20000 is refused before anything is allocated', async () => {
    const claim = png(20000, 20000, deflateSync(Buffer.alloc(100)));
    const before = process.memoryUsage().rss;
    await expect(decodeImage(claim, 'claim.png')).rejects.toThrow('image: claim.png: 20000x20000 is 400000000 pixels, over the limit of 89478485');
    expect(process.memoryUsage().rss - before).toBeLessThan(64 * 2 ** 20);
  });

  it('a real 16000 x 16000 bomb (about 1 MB, 768 MB inflated) is refused from its header, fast', async () => {
    const bomb = png(16000, 16000, zeroRowsZlib(16000, 16000 * 3));
    expect(bomb.length).toBeLessThan(2 * 2 ** 20);
    const t0 = performance.now();
    await expect(decodeImage(bomb, 'bomb.png')).rejects.toThrow(/16000x16000 is 256000000 pixels, over the limit/);
    expect(performance.now() - t0).toBeLessThan(1000);
  });

  it('a real bomb within the limit decodes (as Pillow would), and the limit is configurable', async () => {
    const bomb = png(2000, 1500, zeroRowsZlib(1500, 2000 * 3));
    const img = await decodeImage(bomb, 'zeros.png');
    expect([img.width, img.height, img.data.length]).toEqual([2000, 1500, 2000 * 1500 * 3]);
    expect(img.data.every((v) => v === 0)).toBe(true);
    await expect(decodeImage(bomb, 'zeros.png', { maxPixels: 1_000_000 })).rejects.toThrow('image: zeros.png: 2000x1500 is 3000000 pixels, over the limit of 1000000');
  });

  it('a JPEG frame header claiming 65535 x 65535 is refused from the header, with either decoder', async () => {
    const rgba = new Uint8Array(8 * 8 * 4).fill(128);
    const small = Buffer.from(jpeg.encode({ width: 8, height: 8, data: rgba }, 90).data);
    const sof = small.indexOf(Buffer.from([0xff, 0xc0]));
    small.writeUInt16BE(65535, sof + 5); // height
    small.writeUInt16BE(65535, sof + 7); // width
    expect(readImageHeader(small, 'huge.jpg')).toEqual({ format: 'jpeg', width: 65535, height: 65535, components: 3 });
    for (const jpegDecoder of ['sharp', 'jpeg-js'] as const) {
      await expect(decodeImage(small, 'huge.jpg', { jpegDecoder })).rejects.toThrow('image: huge.jpg: 65535x65535 is 4294836225 pixels, over the limit');
    }
  });
});

describe('short image data is an error, not a black image', () => {
  const rows = (w: number, h: number) => Buffer.concat(Array.from({ length: h }, (_, y) => Buffer.from([0, ...Array.from({ length: w * 3 }, (_, i) => (i * 7 + y) & 255)])));

  it('a complete zlib stream holding fewer rows than the header says', async () => {
    const short = png(8, 8, deflateSync(rows(8, 3)));
    await expect(decodeImage(short, 'short.png')).rejects.toThrow('image: short.png: corrupt PNG: short IDAT: the image data inflates to 75 bytes, a 200-byte image needs (rows missing)');
    // pngjs, before: black rows where the data ran out
    const before = pngjs.PNG.sync.read(short);
    expect(before.data.subarray(4 * 8 * 3 * 4).every((v, i) => (i % 4 === 3 ? v === 255 : v === 0))).toBe(true);
  });

  it('a zlib stream cut short (IDAT chunk complete, its data truncated)', async () => {
    const full = deflateSync(rows(8, 8));
    await expect(decodeImage(png(8, 8, full.subarray(0, full.length - 20)), 'cut.png')).rejects.toThrow(/^image: cut\.png: corrupt PNG: image data: zlib: unexpected end of file/);
  });

  it('the intact file decodes', async () => {
    const img = await decodeImage(png(8, 8, deflateSync(rows(8, 8))), 'ok.png');
    const want = Buffer.concat(Array.from({ length: 8 }, (_, y) => rows(8, 8).subarray(y * 25 + 1, y * 25 + 25)));
    expect(Buffer.from(img.data).equals(want)).toBe(true);
  });
});

describe('an extreme aspect ratio is refused before slicing', () => {
  it('a 1 x 100000 PNG decodes, and would be one 56 x 141680 view (40,480 patches): prepareImage refuses it', async () => {
    const img = await decodeImage(png(1, 100000, deflateSync(Buffer.alloc(100000 * 4))), 'line.png');
    expect([img.width, img.height]).toEqual([1, 100000]);
    expect(sliceImage(1, 100000, CONFIGS['llava-uhd-v4'].slice_config).thumbnail).toEqual({ width: 56, height: 141680 });
    expect(() => prepareImage(img, CONFIGS['llava-uhd-v4'])).toThrow('prepareImage: a 1x100000 image has aspect ratio 100000.0, over the limit 64');
  });

  it('up to the limit images pass; the limit is configurable', () => {
    expect(() => checkAspectRatio(64 * 7, 7)).not.toThrow();
    expect(() => checkAspectRatio(7, 64 * 7 + 1)).toThrow(/over the limit 64/);
    expect(() => checkAspectRatio(1000, 10, 200)).not.toThrow();
    expect(MAX_ASPECT_RATIO).toBe(64);
    // at the limit, the paper's views stay near S²: the short side is one unit (56) at ratio 64
    const plan = sliceImage(64 * 56, 56, CONFIGS['llava-uhd-v4'].slice_config);
    expect(Math.min(plan.thumbnail.width, plan.thumbnail.height)).toBe(56);
  });
});

describe('no mutation of a PNG crashes the decoder', () => {
  it('random header sizes and byte changes decode or throw "image: ...", never anything else', async () => {
    const base = encodePngBytes({ width: 9, height: 5, data: new Uint8Array(9 * 5 * 3).map((_, i) => (i * 31) & 255) });
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 0, max: 2 ** 32 - 1 }), fc.integer({ min: 0, max: 2 ** 32 - 1 }),
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })), { maxLength: 4 }),
        async (w, h, flips) => {
          const bytes = Uint8Array.from(base);
          const view = new DataView(bytes.buffer);
          view.setUint32(16, w);
          view.setUint32(20, h);
          view.setUint32(29, crc32(bytes.subarray(12, 29))); // keep the IHDR CRC valid: the size checks run
          for (const [at, x] of flips) bytes[8 + (at % (bytes.length - 8))] ^= x;
          try {
            const img = await decodeImage(bytes, 'm.png');
            expect(img.data.length).toBe(img.width * img.height * 3);
          } catch (e) {
            expect(String(e)).toMatch(/^Error: image: m\.png: /);
          }
        },
      ),
      { ...PROP, numRuns: 300 },
    );
  });

  it('loadImage on such a file in a data folder rejects it by path', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'uhd-hostile-'));
    try {
      const path = join(dir, 'bomb.png');
      await writeFile(path, png(20000, 20000, deflateSync(Buffer.alloc(10))));
      await expect(loadImage(path)).rejects.toThrow(`image: ${path}: 20000x20000 is 400000000 pixels`);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
