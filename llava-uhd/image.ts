/**
 * Image input (LLaVA-UHD-V4.md, "Slice-based encoding"): decoding PNG and JPEG to 8-bit RGB
 * exactly as Pillow does (JPEG through sharp, PNG through png.ts), with the size checked from the
 * header against a pixel limit first; PIL-compatible bicubic resizing, cropping, and normalisation to the [3, H, W] float tensor
 * that PatchEmbed takes (after unsqueeze to [1, 3, H, W]).
 *
 * Pixels stay 8-bit (`Uint8Array`) until `normalize`, because the reference pipeline resizes
 * 8-bit PIL images: PIL rounds and clamps to 0..255 after each resize pass, and matching it
 * means holding the same integers.
 */
import { readFile, writeFile } from 'node:fs/promises';
import jpeg from 'jpeg-js';
import pngjs from 'pngjs';
import type { Sharp, SharpOptions } from 'sharp';
import { tensor, type Device, type Tensor } from '../tensor/index.js';
import { decodePng, isPng, PngError, readPngHeader } from './png.js';

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

// ---------------------------------------------------------------------------------------------
// Decoding: header first (size and pixel limit before any allocation), then the pixels as
// Pillow's Image.open(f).convert('RGB') gives them, which is how the release reads images
// (itembuilder.py bytes2image; vlmevalkit minicpm_v.py). Neither applies the EXIF orientation
// nor an embedded ICC profile, and neither does this.

/**
 * Pillow's default `Image.MAX_IMAGE_PIXELS` (89,478,485: a quarter GiB of 24-bit pixels).
 * Pillow warns above it and refuses above twice it; decoding here refuses above it. The
 * release's training sets Pillow's limit off (itembuilder.py); set `imageLimits.maxPixels` to
 * Infinity for the same.
 */
export const MAX_IMAGE_PIXELS = 89_478_485;

/** Limits on untrusted images, changeable for the whole process (as Pillow's module globals). */
export const imageLimits = {
  /** Most pixels (width · height) an image may declare in its header. */
  maxPixels: MAX_IMAGE_PIXELS,
};

export type JpegDecoderName = 'sharp' | 'jpeg-js';

export interface DecodeOptions {
  /** Most pixels an image may declare; default `imageLimits.maxPixels`. */
  maxPixels?: number;
  /**
   * 'auto' (default): sharp (libvips with libjpeg-turbo, pixel-identical to Pillow) when it
   * loads, else jpeg-js (pure JS, not identical: see the README). Or one of them by name.
   */
  jpegDecoder?: JpegDecoderName | 'auto';
}

/** What a header says, read without decoding. */
export interface ImageHeader {
  format: 'png' | 'jpeg';
  width: number;
  height: number;
  /** JPEG only: colour components (1 grey, 3 YCbCr/RGB, 4 CMYK/YCCK). */
  components?: number;
}

/** The frame header (SOFn) of a JPEG: size and components, read by walking its segments. */
function readJpegHeader(bytes: Uint8Array): ImageHeader {
  const bad = (what: string): never => {
    throw new Error(`corrupt JPEG: ${what}`);
  };
  let at = 2;
  for (;;) {
    if (at >= bytes.length) bad(`file ends at byte ${bytes.length} before a frame header (SOF) (truncated)`);
    if (bytes[at] !== 0xff) bad(`expected a marker at byte ${at}, found 0x${bytes[at].toString(16)}`);
    while (at < bytes.length && bytes[at] === 0xff) at++; // fill bytes
    if (at >= bytes.length) bad(`file ends at byte ${bytes.length} inside a marker (truncated)`);
    const marker = bytes[at++];
    if (marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) continue; // no length
    if (marker === 0xd9 || marker === 0xda) bad(`${marker === 0xd9 ? 'EOI' : 'SOS'} at byte ${at - 2} before any frame header (SOF)`);
    if (at + 2 > bytes.length) bad(`file ends at byte ${bytes.length} inside a segment header (truncated)`);
    const length = (bytes[at] << 8) | bytes[at + 1];
    if (length < 2) bad(`segment 0xff${marker.toString(16)} at byte ${at - 2} has length ${length}`);
    const isSof = marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc;
    if (isSof) {
      if (length < 8 || at + 8 > bytes.length) bad(`frame header at byte ${at - 2} is cut short (truncated)`);
      const height = (bytes[at + 3] << 8) | bytes[at + 4];
      const width = (bytes[at + 5] << 8) | bytes[at + 6];
      const components = bytes[at + 7];
      if (width === 0 || height === 0) bad(`frame header gives the size ${width}x${height} (a height set later by DNL is not supported)`);
      if (components !== 1 && components !== 3 && components !== 4) bad(`frame header has ${components} components (1, 3 or 4 supported)`);
      return { format: 'jpeg', width, height, components };
    }
    at += length;
  }
}

/**
 * The format and size an image file declares, from its first bytes (PNG IHDR, JPEG SOF), with no
 * pixel decoded: what the pixel limit is checked on. Throws `image: <name>: ...` like decodeImage.
 */
export function readImageHeader(bytes: Uint8Array, name = '(bytes)'): ImageHeader {
  const fail = (what: string): never => {
    throw new Error(`image: ${name}: ${what}`);
  };
  if (bytes.length === 0) fail('empty file');
  // A file cut inside the signature is a truncated PNG/JPEG, not some other format.
  if (bytes.length < PNG_MAGIC.length && startsWith(Uint8Array.from(PNG_MAGIC), [...bytes])) fail(`corrupt PNG: truncated at ${bytes.length} bytes`);
  if (bytes.length < JPEG_MAGIC.length && startsWith(Uint8Array.from(JPEG_MAGIC), [...bytes])) fail(`corrupt JPEG: truncated at ${bytes.length} bytes`);
  try {
    if (isPng(bytes)) {
      const h = readPngHeader(bytes);
      return { format: 'png', width: h.width, height: h.height };
    }
    if (startsWith(bytes, JPEG_MAGIC)) return readJpegHeader(bytes);
  } catch (e) {
    fail(message(e));
  }
  return fail('unsupported format (not PNG or JPEG)');
}

type SharpFn = (input: Uint8Array, options?: SharpOptions) => Sharp;
let sharpLoad: Promise<SharpFn | null> | null = null;

/** sharp, loaded on first use; null where its native library cannot load. */
function loadSharp(): Promise<SharpFn | null> {
  sharpLoad ??= import('sharp').then(
    (m) => {
      const fn = (m.default ?? m) as unknown as SharpFn & { cache(on: boolean): void };
      fn.cache(false); // every image is decoded once: libvips' operation cache only holds memory
      return fn;
    },
    () => null,
  );
  return sharpLoad;
}

/** The JPEG decoder that 'auto' uses here: sharp when it loads, else jpeg-js. */
export async function jpegDecoderInUse(): Promise<JpegDecoderName> {
  return (await loadSharp()) ? 'sharp' : 'jpeg-js';
}

/** Versions of what decodes images, for `uhd info` and bug reports. */
export async function imageDecoders(): Promise<{ png: string; jpeg: string }> {
  const sharp = await loadSharp();
  let jpegName = 'jpeg-js (pure JS fallback: sharp did not load; not pixel-identical to Pillow)';
  if (sharp) {
    const v = (await import('sharp')).default.versions as Record<string, string | undefined>;
    jpegName = `sharp ${v.sharp ?? '?'} (libvips ${v.vips ?? '?'}, mozjpeg ${v.mozjpeg ?? '?'}), pixel-identical to Pillow`;
  }
  return { png: 'built-in (llava-uhd/png.ts), pixel-identical to Pillow', jpeg: jpegName };
}

/** Pillow's CMYK -> RGB (Convert.c cmyk2rgb): each channel (255 − k) − (c·(255 − k))/255, rounded. */
function cmykToRgb(cmyk: Uint8Array, n: number): Uint8Array {
  const out = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) {
    const nk = 255 - cmyk[i * 4 + 3];
    for (let c = 0; c < 3; c++) {
      const t = cmyk[i * 4 + c] * nk + 128;
      out[i * 3 + c] = nk - (((t >> 8) + t) >> 8);
    }
  }
  return out;
}

/**
 * JPEG with sharp as Pillow decodes it: libjpeg-turbo's islow IDCT and fancy upsampling, no ICC
 * transform (ignoreIcc), no EXIF rotation; CMYK comes out as CMYK (Adobe-inverted as Pillow's
 * "CMYK;I") and goes to RGB by Pillow's formula. Warnings (extraneous bytes) pass as in Pillow;
 * errors and truncation throw.
 */
async function decodeJpegSharp(sharp: SharpFn, bytes: Uint8Array, header: ImageHeader, maxPixels: number): Promise<RgbImage> {
  const input: SharpOptions = { failOn: 'error', limitInputPixels: Number.isFinite(maxPixels) ? Math.max(1, Math.floor(maxPixels)) : false, ignoreIcc: true, sequentialRead: true };
  const cmyk = header.components === 4;
  const pipeline = cmyk ? sharp(bytes, input).pipelineColourspace('cmyk').toColourspace('cmyk') : sharp(bytes, input).removeAlpha().toColourspace('srgb');
  const { data, info } = await pipeline.raw().toBuffer({ resolveWithObject: true });
  const channels = cmyk ? 4 : 3;
  if (info.width !== header.width || info.height !== header.height || info.channels !== channels || data.length !== info.width * info.height * channels) {
    throw new Error(`decoder returned ${info.width}x${info.height}x${info.channels} for a ${header.width}x${header.height} header`);
  }
  const n = info.width * info.height;
  const rgb = cmyk ? cmykToRgb(data, n) : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return { width: info.width, height: info.height, data: rgb };
}

/** JPEG with jpeg-js (pure JS): the fallback; its chroma upsampling and IDCT differ from libjpeg's. */
function decodeJpegJs(bytes: Uint8Array, header: ImageHeader): RgbImage {
  const pixels = header.width * header.height;
  // tolerantDecoding off: a truncated or damaged stream throws instead of decoding to grey.
  const img = jpeg.decode(bytes, {
    useTArray: true, formatAsRGBA: false, tolerantDecoding: false,
    maxResolutionInMP: pixels / 1e6 + 1, maxMemoryUsageInMB: Math.ceil((pixels * 16) / 2 ** 20) + 64,
  });
  if (img.width !== header.width || img.height !== header.height || img.data.length !== pixels * 3) {
    throw new Error(`decoder returned ${img.data.length} bytes for ${img.width}x${img.height} RGB (header: ${header.width}x${header.height})`);
  }
  return { width: img.width, height: img.height, data: new Uint8Array(img.data.buffer, img.data.byteOffset, img.data.byteLength) };
}

/**
 * Decodes PNG (every colour type and bit depth) or JPEG (baseline and progressive; grey, YCbCr,
 * CMYK) to 8-bit RGB as Pillow's `Image.open(f).convert('RGB')` does, told apart by their magic
 * bytes. The header is checked first: a declared width·height over `maxPixels` is refused
 * before any pixel is allocated. Anything else, or a file the decoder rejects (truncated, bad
 * CRC, short image data), throws an Error `image: <name>: ...`; nothing here can abort the
 * process.
 */
export async function decodeImage(bytes: Uint8Array, name = '(bytes)', opts: DecodeOptions = {}): Promise<RgbImage> {
  const fail = (what: string): never => {
    throw new Error(`image: ${name}: ${what}`);
  };
  const maxPixels = opts.maxPixels ?? imageLimits.maxPixels;
  if (!(maxPixels >= 1)) throw new Error(`decodeImage: maxPixels must be >= 1 (or Infinity), got ${maxPixels}`);
  const header = readImageHeader(bytes, name);
  const limit = (w: number, h: number) => {
    if (w * h > maxPixels) fail(`${w}x${h} is ${w * h} pixels, over the limit of ${maxPixels} (imageLimits.maxPixels, as Pillow's MAX_IMAGE_PIXELS); refusing to decode`);
  };
  limit(header.width, header.height);
  let img: RgbImage;
  if (header.format === 'png') {
    try {
      img = await decodePng(bytes, limit);
    } catch (e) {
      if (e instanceof PngError) fail(e.message);
      throw e;
    }
  } else {
    const which = opts.jpegDecoder ?? 'auto';
    const sharp = which === 'jpeg-js' ? null : await loadSharp();
    if (which === 'sharp' && !sharp) fail('the sharp JPEG decoder was asked for, but sharp (its native library) does not load here');
    try {
      img = sharp ? await decodeJpegSharp(sharp, bytes, header, maxPixels) : decodeJpegJs(bytes, header);
    } catch (e) {
      return fail(`corrupt JPEG: ${message(e)}`);
    }
  }
  if (!(img.width > 0 && img.height > 0)) fail(`decoded to an empty ${img.width}x${img.height} image`);
  return img;
}

/** Reads and decodes a PNG or JPEG file; errors name the path. */
export async function loadImage(path: string, opts: DecodeOptions = {}): Promise<RgbImage> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(path);
  } catch (e) {
    throw new Error(`image: ${path}: cannot read: ${message(e)}`);
  }
  return decodeImage(bytes, path, opts);
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
 * (p/255 − 0.5)/0.5, so 0 -> −1 and 255 -> 1. Returns float32 [3, H, W] (CHW) on `device`
 * (default the CPU), uploaded straight from the one array it fills.
 */
export function normalize(img: RgbImage, device: Device = 'cpu'): Tensor {
  checkImage(img, 'normalize');
  const { width, height, data } = img;
  const n = width * height;
  const out = normalizeScratch(3 * n);
  for (let i = 0; i < n; i++) {
    for (let c = 0; c < 3; c++) out[c * n + i] = (data[i * 3 + c] / 255 - 0.5) / 0.5;
  }
  return tensor(out, { shape: [3, height, width], dtype: 'float32', device });
}

/**
 * normalize's staging array, reused: every backend's upload copies what it is given, so one
 * array serves every view. A fresh 2.4 MB array per 448x448 view (22 MB per training step of
 * 9 slices) was memory outside V8's heap that V8 still counts towards its next full collection:
 * it set off a mark-compact in nearly every step. Holds the largest view seen (a 980x980 view:
 * 11.5 MB).
 */
let staging = new Float32Array(0);
function normalizeScratch(length: number): Float32Array {
  if (staging.length < length) staging = new Float32Array(length);
  return staging.length === length ? staging : staging.subarray(0, length);
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
