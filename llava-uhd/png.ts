/**
 * PNG decoding to 8-bit RGB as Pillow's `Image.open(f).convert('RGB')` gives it (the release's
 * data loaders, itembuilder.py `bytes2image`), checked on every colour type and bit depth
 * against Pillow 9.4 (tests/fixtures/png). Written here rather than taken from pngjs because
 * pngjs computes the row size in int32 (`(width * bpp * depth + 7) >> 3`) and hands the result
 * to Node's private zlib binding, so a 68-byte file claiming a width of 2^31 − 1 aborts the
 * process; and pngjs scales 16-bit samples where Pillow keeps the high byte or clips.
 *
 * Safety: the header is read and checked (size, pixel limit) before anything is allocated; sizes
 * are computed in float64; every chunk's CRC is checked; the image data is inflated by a zlib
 * stream into a buffer of exactly the size the header implies, and a stream that ends early (a
 * short IDAT) is an error, not black rows. Data after the last row is ignored, as Pillow does.
 */
import { createInflate } from 'node:zlib';

export interface PngHeader {
  width: number;
  height: number;
  bitDepth: number;
  colorType: number;
  interlaced: boolean;
}

const SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

/** Samples per pixel by colour type: grey, RGB, palette, grey + alpha, RGBA. */
const CHANNELS: Readonly<Record<number, number>> = { 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 };
const DEPTHS: Readonly<Record<number, readonly number[]>> = { 0: [1, 2, 4, 8, 16], 2: [8, 16], 3: [1, 2, 4, 8], 4: [8, 16], 6: [8, 16] };

const CRC_TABLE = (() => {
  const t = new Int32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c;
  }
  return t;
})();

function crc32(bytes: Uint8Array, from: number, to: number): number {
  let c = -1;
  for (let i = from; i < to; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ -1) >>> 0;
}

const u32 = (b: Uint8Array, at: number) => ((b[at] << 24) | (b[at + 1] << 16) | (b[at + 2] << 8) | b[at + 3]) >>> 0;

/** Throws `corrupt PNG: <what>`; the caller adds the file name. */
export class PngError extends Error {}
const fail = (what: string): never => {
  throw new PngError(`corrupt PNG: ${what}`);
};

/** A chunk: its type and where its data lies in the file. */
interface Chunk {
  type: string;
  start: number;
  end: number;
}

/** Reads the chunk at `at`, checking that it fits in the file and its CRC. */
function chunkAt(bytes: Uint8Array, at: number): Chunk {
  if (at + 8 > bytes.length) fail(`file ends at byte ${bytes.length}, inside a chunk header at ${at} (truncated)`);
  const length = u32(bytes, at);
  const type = String.fromCharCode(bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]);
  if (!/^[A-Za-z]{4}$/.test(type)) fail(`chunk at byte ${at} has an invalid type ${JSON.stringify(type)}`);
  if (length > 0x7fffffff) fail(`chunk ${type} at byte ${at} claims ${length} bytes (over 2^31 − 1)`);
  const end = at + 8 + length;
  if (end + 4 > bytes.length) fail(`file ends at byte ${bytes.length}, inside chunk ${type} of ${length} bytes at ${at} (truncated)`);
  if (crc32(bytes, at + 4, end) !== u32(bytes, end)) fail(`chunk ${type} at byte ${at}: CRC mismatch`);
  return { type, start: at + 8, end };
}

/** True when `bytes` starts with the PNG signature. */
export function isPng(bytes: Uint8Array): boolean {
  return bytes.length >= 8 && SIGNATURE.every((b, i) => bytes[i] === b);
}

/** The IHDR of a PNG, checked (signature, first chunk, CRC, allowed values); reads nothing else. */
export function readPngHeader(bytes: Uint8Array): PngHeader {
  if (!isPng(bytes)) fail('no PNG signature');
  const c = chunkAt(bytes, 8);
  if (c.type !== 'IHDR') fail(`the first chunk is ${c.type}, not IHDR`);
  if (c.end - c.start !== 13) fail(`IHDR has ${c.end - c.start} bytes, not 13`);
  const width = u32(bytes, c.start);
  const height = u32(bytes, c.start + 4);
  const [bitDepth, colorType, compression, filter, interlace] = bytes.subarray(c.start + 8, c.start + 13);
  if (width === 0 || height === 0 || width > 0x7fffffff || height > 0x7fffffff) fail(`IHDR size ${width}x${height}: each side must be 1..2^31 − 1`);
  if (!(colorType in CHANNELS)) fail(`IHDR colour type ${colorType} (allowed: 0, 2, 3, 4, 6)`);
  if (!DEPTHS[colorType].includes(bitDepth)) fail(`IHDR bit depth ${bitDepth} with colour type ${colorType} (allowed: ${DEPTHS[colorType].join(', ')})`);
  if (compression !== 0 || filter !== 0) fail(`IHDR compression ${compression} / filter method ${filter} (only 0 exists)`);
  if (interlace > 1) fail(`IHDR interlace method ${interlace} (allowed: 0, 1)`);
  return { width, height, bitDepth, colorType, interlaced: interlace === 1 };
}

/** One sub-image of the file's image data: all of it, or one Adam7 pass. */
interface Pass {
  /** Where its pixels go: x = x0 + i·dx, y = y0 + j·dy. */
  x0: number;
  y0: number;
  dx: number;
  dy: number;
  width: number;
  height: number;
}

const ADAM7: readonly [number, number, number, number][] = [[0, 0, 8, 8], [4, 0, 8, 8], [0, 4, 4, 8], [2, 0, 4, 4], [0, 2, 2, 4], [1, 0, 2, 2], [0, 1, 1, 2]];

function passes(h: PngHeader): Pass[] {
  if (!h.interlaced) return [{ x0: 0, y0: 0, dx: 1, dy: 1, width: h.width, height: h.height }];
  return ADAM7.map(([x0, y0, dx, dy]) => ({ x0, y0, dx, dy, width: Math.ceil((h.width - x0) / dx), height: Math.ceil((h.height - y0) / dy) }))
    .filter((p) => p.width > 0 && p.height > 0);
}

/** Bytes of one filtered row of `width` pixels (without its filter-type byte). */
function rowBytes(h: PngHeader, width: number): number {
  return Math.ceil((width * CHANNELS[h.colorType] * h.bitDepth) / 8);
}

/** The inflated size the header implies: per pass, rows x (1 + row bytes). Exact in float64. */
export function pngDataSize(h: PngHeader): number {
  return passes(h).reduce((n, p) => n + p.height * (1 + rowBytes(h, p.width)), 0);
}

/**
 * Inflates `parts` (the IDAT data, in order) into exactly `size` bytes; a stream that ends
 * before is an error naming both counts, data past `size` is not read.
 */
function inflateExactly(parts: Uint8Array[], size: number): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    let out: Uint8Array;
    try {
      out = new Uint8Array(size);
    } catch (e) {
      reject(new PngError(`corrupt PNG: cannot allocate ${size} bytes for the image data: ${e instanceof Error ? e.message : String(e)}`));
      return;
    }
    let filled = 0;
    let settled = false;
    const inflate = createInflate();
    const settle = (err: Error | null) => {
      if (settled) return;
      settled = true;
      inflate.removeAllListeners('data');
      inflate.destroy();
      if (err) reject(err);
      else resolve(out);
    };
    inflate.on('data', (chunk: Buffer) => {
      const take = Math.min(chunk.length, size - filled);
      out.set(chunk.subarray(0, take), filled);
      filled += take;
      if (filled === size) settle(null);
    });
    inflate.on('error', (e: Error) => settle(new PngError(filled < size ? `corrupt PNG: image data: zlib: ${e.message} after ${filled} of ${size} bytes` : `corrupt PNG: image data: zlib: ${e.message}`)));
    inflate.on('end', () => settle(filled === size ? null : new PngError(`corrupt PNG: short IDAT: the image data inflates to ${filled} bytes, a ${size}-byte image needs (rows missing)`)));
    for (const p of parts) inflate.write(p);
    inflate.end();
  });
}

/** Reverses the row filters (PNG spec, section 9) of one pass, in place; rows start at `at`. */
function unfilter(data: Uint8Array, at: number, rows: number, stride: number, bpp: number): void {
  let prev = -1; // offset of the previous unfiltered row, -1 for none
  for (let r = 0; r < rows; r++) {
    const f = data[at];
    const row = at + 1;
    if (f > 4) fail(`row ${r} has filter type ${f} (allowed: 0..4)`);
    for (let i = 0; i < stride; i++) {
      const a = i >= bpp ? data[row + i - bpp] : 0;
      const b = prev >= 0 ? data[prev + i] : 0;
      let v = data[row + i];
      if (f === 1) v += a;
      else if (f === 2) v += b;
      else if (f === 3) v += (a + b) >> 1;
      else if (f === 4) {
        const c = prev >= 0 && i >= bpp ? data[prev + i - bpp] : 0;
        const p = a + b - c;
        const pa = Math.abs(p - a);
        const pb = Math.abs(p - b);
        const pc = Math.abs(p - c);
        v += pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      }
      data[row + i] = v & 255;
    }
    prev = row;
    at = row + stride;
  }
}

/**
 * Pixel values to RGB as Pillow's modes and its convert('RGB') give them: grey 1/2/4 bits scaled
 * to 0..255 (×255, ×85, ×17); 16-bit grey opens as mode I and is clipped to 0..255 (values above
 * 255 become 255); other 16-bit samples keep their high byte; palette indices past the PLTE
 * entries are grey (Pillow's palette starts as a grey ramp); alpha is dropped, not composited.
 */
function writeRgb(h: PngHeader, data: Uint8Array, at: number, p: Pass, stride: number, palette: Uint8Array, out: Uint8Array): void {
  const { bitDepth: d, colorType: ct } = h;
  const ch = CHANNELS[ct];
  for (let j = 0; j < p.height; j++) {
    const row = at + j * (stride + 1) + 1;
    let o = ((p.y0 + j * p.dy) * h.width + p.x0) * 3;
    const step = p.dx * 3;
    for (let i = 0; i < p.width; i++, o += step) {
      let r: number;
      let g: number;
      let b: number;
      if (d < 8) {
        const bit = i * d;
        const v = (data[row + (bit >> 3)] >> (8 - d - (bit & 7))) & ((1 << d) - 1);
        if (ct === 3) {
          r = v * 3 < palette.length ? palette[v * 3] : v;
          g = v * 3 < palette.length ? palette[v * 3 + 1] : v;
          b = v * 3 < palette.length ? palette[v * 3 + 2] : v;
        } else r = g = b = d === 1 ? v * 255 : d === 2 ? v * 85 : v * 17;
      } else if (d === 8) {
        const s = row + i * ch;
        if (ct === 3) {
          const v = data[s];
          r = v * 3 < palette.length ? palette[v * 3] : v;
          g = v * 3 < palette.length ? palette[v * 3 + 1] : v;
          b = v * 3 < palette.length ? palette[v * 3 + 2] : v;
        } else if (ct === 0 || ct === 4) r = g = b = data[s];
        else {
          r = data[s];
          g = data[s + 1];
          b = data[s + 2];
        }
      } else {
        const s = row + i * ch * 2;
        if (ct === 0) r = g = b = data[s] > 0 ? 255 : data[s + 1];
        else if (ct === 4) r = g = b = data[s];
        else {
          r = data[s];
          g = data[s + 2];
          b = data[s + 4];
        }
      }
      out[o] = r;
      out[o + 1] = g;
      out[o + 2] = b;
    }
  }
}

export interface PngImage {
  width: number;
  height: number;
  /** RGB, rows top to bottom. */
  data: Uint8Array;
}

/**
 * Decodes a whole PNG to RGB. `checkSize(width, height)` runs on the header before any
 * allocation (the caller's pixel limit); errors are PngError `corrupt PNG: ...`.
 */
export async function decodePng(bytes: Uint8Array, checkSize: (width: number, height: number) => void): Promise<PngImage> {
  const h = readPngHeader(bytes);
  checkSize(h.width, h.height);
  let palette: Uint8Array = new Uint8Array(0);
  const idat: Uint8Array[] = [];
  let at = 8;
  let ended = false;
  let idatDone = false;
  while (!ended) {
    const c = chunkAt(bytes, at);
    if (c.type === 'IHDR' && at !== 8) fail(`a second IHDR at byte ${at}`);
    else if (c.type === 'PLTE') {
      const n = c.end - c.start;
      if (n === 0 || n % 3 !== 0 || n > 768) fail(`PLTE has ${n} bytes (a multiple of 3, 3..768)`);
      palette = bytes.subarray(c.start, c.end);
    } else if (c.type === 'IDAT') {
      if (idatDone) fail(`IDAT at byte ${at} after another chunk ended the image data`);
      idat.push(bytes.subarray(c.start, c.end));
    } else if (c.type === 'IEND') ended = true;
    if (idat.length && c.type !== 'IDAT') idatDone = true;
    at = c.end + 4;
  }
  if (h.colorType === 3 && palette.length === 0) fail('a palette image without PLTE');
  if (idat.length === 0) fail('no IDAT chunk');
  const size = pngDataSize(h);
  const data = await inflateExactly(idat, size);
  let out: Uint8Array;
  try {
    out = new Uint8Array(h.width * h.height * 3);
  } catch (e) {
    return fail(`cannot allocate ${h.width}x${h.height} RGB: ${e instanceof Error ? e.message : String(e)}`);
  }
  const bpp = Math.max(1, (CHANNELS[h.colorType] * h.bitDepth) / 8);
  let offset = 0;
  for (const p of passes(h)) {
    const stride = rowBytes(h, p.width);
    unfilter(data, offset, p.height, stride, bpp);
    writeRgb(h, data, offset, p, stride, palette, out);
    offset += p.height * (stride + 1);
  }
  return { width: h.width, height: h.height, data: out };
}
