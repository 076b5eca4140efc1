/**
 * Image input (LLaVA-UHD-V4.md, "Slice-based encoding"): decoding PNG and JPEG to 8-bit RGB,
 * PIL-compatible bicubic resizing, cropping, and normalisation to the [3, H, W] float tensor
 * that PatchEmbed takes (after unsqueeze to [1, 3, H, W]).
 *
 * Pixels stay 8-bit (`Uint8Array`) until `normalize`, because the reference pipeline resizes
 * 8-bit PIL images: PIL rounds and clamps to 0..255 after each resize pass, and matching it
 * means holding the same integers.
 */
import { readFile, writeFile } from 'node:fs/promises';
import jpeg from 'jpeg-js';
import pngjs from 'pngjs';
import { tensor, type Tensor } from '../tensor/index.js';

const { PNG } = pngjs;

/** An 8-bit RGB image, HWC: the pixel (x, y) has R, G, B at data[(y * width + x) * 3 + 0..2]. */
export interface RgbImage {
  width: number;
  height: number;
  /** width * height * 3 bytes, rows top to bottom, RGB interleaved. */
  data: Uint8Array;
}

const PNG_MAGIC = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
const JPEG_MAGIC = [0xff, 0xd8, 0xff];

function startsWith(bytes: Uint8Array, magic: number[]): boolean {
  return bytes.length >= magic.length && magic.every((b, i) => bytes[i] === b);
}

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** Checks that `img` is a well-formed RgbImage; `where` names the caller in the error. */
export function checkImage(img: RgbImage, where: string): void {
  const { width, height, data } = img;
  if (!Number.isInteger(width) || !Number.isInteger(height) || width <= 0 || height <= 0) {
    throw new Error(`${where}: image size must be positive integers, got ${width}x${height}`);
  }
  if (!(data instanceof Uint8Array) || data.length !== width * height * 3) {
    throw new Error(`${where}: a ${width}x${height} RGB image needs ${width * height * 3} bytes, got ${data?.length}`);
  }
}

function checkSize(w: number, h: number, where: string): void {
  if (!Number.isInteger(w) || !Number.isInteger(h) || w <= 0 || h <= 0) {
    throw new Error(`${where}: size must be positive integers, got ${w}x${h}`);
  }
}

/** RGBA (or RGB) 8-bit pixels to RGB: alpha is dropped, not composited. */
function toRgb(src: Uint8Array, width: number, height: number, channels: 3 | 4): Uint8Array {
  const n = width * height;
  if (channels === 3) return Uint8Array.from(src.subarray(0, n * 3));
  const out = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) {
    out[i * 3] = src[i * 4];
    out[i * 3 + 1] = src[i * 4 + 1];
    out[i * 3 + 2] = src[i * 4 + 2];
  }
  return out;
}

/**
 * Decodes PNG (any bit depth, grayscale, palette; 16-bit scaled to 8; alpha dropped without
 * compositing) or JPEG (baseline and progressive; grayscale, RGB, CMYK), told apart by their
 * magic bytes. Anything else, or a file the decoder rejects, throws an Error naming the file.
 */
export function decodeImage(bytes: Uint8Array, name = '(bytes)'): RgbImage {
  const fail = (what: string): never => {
    throw new Error(`image: ${name}: ${what}`);
  };
  if (bytes.length === 0) fail('empty file');
  // A file cut inside the signature is a truncated PNG/JPEG, not some other format.
  if (bytes.length < PNG_MAGIC.length && startsWith(Uint8Array.from(PNG_MAGIC), [...bytes])) fail(`corrupt PNG: truncated at ${bytes.length} bytes`);
  if (bytes.length < JPEG_MAGIC.length && startsWith(Uint8Array.from(JPEG_MAGIC), [...bytes])) fail(`corrupt JPEG: truncated at ${bytes.length} bytes`);
  let width = 0;
  let height = 0;
  let data: Uint8Array = new Uint8Array(0);
  if (startsWith(bytes, PNG_MAGIC)) {
    try {
      const png = PNG.sync.read(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), { checkCRC: true });
      width = png.width;
      height = png.height;
      if (png.data.length !== width * height * 4) fail(`corrupt PNG: decoder returned ${png.data.length} bytes for ${width}x${height} RGBA`);
      data = toRgb(png.data, width, height, 4);
    } catch (e) {
      if (message(e).startsWith(`image: ${name}:`)) throw e;
      // pngjs reports a file that ends early as a stream with pending reads.
      const ended = /finished stream/.test(message(e)) ? 'file ends early: ' : '';
      fail(`corrupt PNG: ${ended}${message(e)}`);
    }
  } else if (startsWith(bytes, JPEG_MAGIC)) {
    try {
      // tolerantDecoding off: a truncated or damaged stream throws instead of decoding to grey.
      const img = jpeg.decode(bytes, { useTArray: true, formatAsRGBA: false, tolerantDecoding: false });
      width = img.width;
      height = img.height;
      if (img.data.length !== width * height * 3) fail(`corrupt JPEG: decoder returned ${img.data.length} bytes for ${width}x${height} RGB`);
      data = toRgb(img.data, width, height, 3);
    } catch (e) {
      if (message(e).startsWith(`image: ${name}:`)) throw e;
      fail(`corrupt JPEG: ${message(e)}`);
    }
  } else {
    fail('unsupported format (not PNG or JPEG)');
  }
  if (!(width > 0 && height > 0)) fail(`decoded to an empty ${width}x${height} image`);
  return { width, height, data };
}

/** Reads and decodes a PNG or JPEG file; errors name the path. */
export async function loadImage(path: string): Promise<RgbImage> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(path);
  } catch (e) {
    throw new Error(`image: ${path}: cannot read: ${message(e)}`);
  }
  return decodeImage(bytes, path);
}

/** An 8-bit RGB PNG (colour type 2, no alpha) of `img`. */
export function encodePngBytes(img: RgbImage): Uint8Array {
  checkImage(img, 'encodePngBytes');
  const png = new PNG();
  png.width = img.width;
  png.height = img.height;
  png.data = Buffer.from(img.data.buffer, img.data.byteOffset, img.data.byteLength);
  const out = PNG.sync.write(png, { colorType: 2, inputColorType: 2, inputHasAlpha: false, bitDepth: 8 });
  return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
}

/** Writes `img` as an 8-bit RGB PNG file. */
export async function encodePng(img: RgbImage, path: string): Promise<void> {
  await writeFile(path, encodePngBytes(img));
}

/** The w x h region whose top-left pixel is (x, y), as a new image. */
export function cropImage(img: RgbImage, x: number, y: number, w: number, h: number): RgbImage {
  checkImage(img, 'cropImage');
  checkSize(w, h, 'cropImage');
  if (!Number.isInteger(x) || !Number.isInteger(y) || x < 0 || y < 0 || x + w > img.width || y + h > img.height) {
    throw new Error(`cropImage: box x=${x} y=${y} ${w}x${h} is not inside the ${img.width}x${img.height} image`);
  }
  const out = new Uint8Array(w * h * 3);
  for (let r = 0; r < h; r++) {
    const from = ((y + r) * img.width + x) * 3;
    out.set(img.data.subarray(from, from + w * 3), r * w * 3);
  }
  return { width: w, height: h, data: out };
}

/**
 * Per-pixel normalisation ("Slice-based encoding": pixels /255, then mean = std = 0.5):
 * (p/255 − 0.5)/0.5, so 0 -> −1 and 255 -> 1. Returns float32 [3, H, W] (CHW).
 */
export function normalize(img: RgbImage): Tensor {
  checkImage(img, 'normalize');
  const { width, height, data } = img;
  const n = width * height;
  const out = new Float32Array(3 * n);
  for (let i = 0; i < n; i++) {
    for (let c = 0; c < 3; c++) out[c * n + i] = (data[i * 3 + c] / 255 - 0.5) / 0.5;
  }
  return tensor(out, { shape: [3, height, width], dtype: 'float32' });
}

// ---------------------------------------------------------------------------------------------
// Bicubic resize with PIL's semantics (Image.resize(size, BICUBIC) on an 8-bit RGB image).

/** Bits of the fixed-point filter weights for 8-bit images (32 − 8 − 2, as PIL). */
const PRECISION_BITS = 22;
const FIXED_ONE = 2 ** PRECISION_BITS;

/** The cubic convolution kernel with a = −0.5, support 2 (Keys). */
export function bicubicKernel(x: number): number {
  const a = -0.5;
  x = Math.abs(x);
  if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
  if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
  return 0;
}

/** For each output position: the first input index, the tap count, and fixed-point weights. */
interface ResampleCoeffs {
  /** Taps per output (room for the widest). */
  ksize: number;
  /** [first input index, tap count] per output position. */
  bounds: Int32Array;
  /** ksize weights per output position, scaled by 2^22 and rounded half away from zero. */
  weights: Int32Array;
}

/**
 * The filter for resampling `inSize` samples to `outSize`: output i is centred on input
 * coordinate (i + 0.5)·scale, scale = in/out; when shrinking (scale > 1) the kernel is stretched
 * by the scale, which is what antialiases; the weights of each output sum to 1 before they are
 * made fixed-point.
 */
export function resampleCoeffs(inSize: number, outSize: number): ResampleCoeffs {
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1);
  const support = 2 * filterScale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const weights = new Int32Array(outSize * ksize);
  const w = new Float64Array(ksize);
  for (let i = 0; i < outSize; i++) {
    const center = (i + 0.5) * scale;
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const count = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
    let total = 0;
    for (let t = 0; t < count; t++) {
      w[t] = bicubicKernel((t + xmin - center + 0.5) / filterScale);
      total += w[t];
    }
    for (let t = 0; t < count; t++) {
      const v = (total !== 0 ? w[t] / total : w[t]) * FIXED_ONE;
      weights[i * ksize + t] = v < 0 ? Math.trunc(v - 0.5) : Math.trunc(v + 0.5);
    }
    bounds[i * 2] = xmin;
    bounds[i * 2 + 1] = count;
  }
  return { ksize, bounds, weights };
}

/**
 * A fixed-point accumulator back to a byte: drop the fraction (arithmetic shift, i.e. floor),
 * clamp to 0..255. Accumulators fit int32, as in PIL: 255 · 2^22 · (sum of positive weights,
 * under 1.2) < 2^31.
 */
function clip8(acc: number): number {
  const v = acc >> PRECISION_BITS;
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

/** One pass over rows: [h, inW, 3] -> [h, outW, 3]. */
function resampleHorizontal(src: Uint8Array, inW: number, h: number, outW: number): Uint8Array {
  const { ksize, bounds, weights } = resampleCoeffs(inW, outW);
  const out = new Uint8Array(outW * h * 3);
  const half = FIXED_ONE / 2;
  for (let y = 0; y < h; y++) {
    const row = y * inW * 3;
    for (let x = 0; x < outW; x++) {
      const xmin = bounds[x * 2];
      const count = bounds[x * 2 + 1];
      const k = x * ksize;
      let r = half;
      let g = half;
      let b = half;
      for (let t = 0; t < count; t++) {
        const p = row + (xmin + t) * 3;
        const wt = weights[k + t];
        r = (r + src[p] * wt) | 0;
        g = (g + src[p + 1] * wt) | 0;
        b = (b + src[p + 2] * wt) | 0;
      }
      const o = (y * outW + x) * 3;
      out[o] = clip8(r);
      out[o + 1] = clip8(g);
      out[o + 2] = clip8(b);
    }
  }
  return out;
}

/** One pass over columns: [inH, w, 3] -> [outH, w, 3]. */
function resampleVertical(src: Uint8Array, w: number, inH: number, outH: number): Uint8Array {
  const { ksize, bounds, weights } = resampleCoeffs(inH, outH);
  const out = new Uint8Array(w * outH * 3);
  const half = FIXED_ONE / 2;
  const stride = w * 3;
  const acc = new Int32Array(stride); // one output row, accumulated input row by input row
  for (let y = 0; y < outH; y++) {
    const ymin = bounds[y * 2];
    const count = bounds[y * 2 + 1];
    const k = y * ksize;
    acc.fill(half);
    for (let t = 0; t < count; t++) {
      const row = (ymin + t) * stride;
      const wt = weights[k + t];
      for (let i = 0; i < stride; i++) acc[i] = (acc[i] + src[row + i] * wt) | 0;
    }
    for (let i = 0; i < stride; i++) out[y * stride + i] = clip8(acc[i]);
  }
  return out;
}

/**
 * Resizes to w x h as PIL's `Image.resize((w, h), BICUBIC)` does for 8-bit RGB ("Slice-based
 * encoding": bicubic that antialiases when shrinking): separable cubic convolution (a = −0.5),
 * the horizontal pass then the vertical, each rounded and clamped to 0..255; a pass whose size
 * does not change is skipped.
 */
export function resizeBicubic(img: RgbImage, w: number, h: number): RgbImage {
  checkImage(img, 'resizeBicubic');
  checkSize(w, h, 'resizeBicubic');
  let data = img.data;
  if (w !== img.width) data = resampleHorizontal(data, img.width, img.height, w);
  if (h !== img.height) data = resampleVertical(data, w, img.height, h);
  return { width: w, height: h, data: data === img.data ? Uint8Array.from(data) : data };
}
